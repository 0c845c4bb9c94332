/*
 * itas-args: an ordinary L4Re C program that prints what it was started
 * with: its arguments and whether it has the capabilities a loader was
 * asked to hand on (`ext-loader --arg=… --cap=…`).
 */
#include <l4/re/env.h>
#include <l4/sys/types.h>
#include <stdio.h>

int main(int argc, char **argv)
{
  printf("args: %d:", argc);
  for (int i = 0; i < argc; ++i)
    printf(" [%s]", argv[i]);
  printf("\n");
  char const *names[] = { "rom", "fs", "nothing" };
  for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); ++i)
    printf("args: capability %s: %s\n", names[i],
           l4_is_valid_cap(l4re_env_get_cap(names[i])) ? "present" : "absent");
  return argc - 1;
}
