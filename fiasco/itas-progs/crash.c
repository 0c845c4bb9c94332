/*
 * itas-crash: an ordinary L4Re C program with an invalid access. Its
 * in-task pager must end it with a report (address, access, pc, nearest
 * region) and make ned's wait see a failure, while everything else goes
 * on.
 */
#include <stdio.h>

int main(void)
{
  printf("crash: writing to 0x10\n");
  fflush(stdout);
  *(volatile int *)0x10 = 1;
  printf("crash: still alive\n");
  return 0;
}
