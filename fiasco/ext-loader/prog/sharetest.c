/*
 * sharetest: two tasks share a mapping of one l4fs file. ext-loader runs
 * sharewrite and shareread at the same time, each in its own task under
 * its own internal pager, with the same file attached read-write and
 * shared at SHARE_ADDR (ext-loader --attach=fs:data/shared@ADDR:rw; test
 * demand-paging.cfg). Both internal pagers map the file's page from l4fs,
 * so both tasks see the same frame:
 *
 *  - sharewrite writes a token that is new in every run (from the
 *    timestamp counter) into the first word, and a pattern derived from
 *    it into the second page, then waits for the answer;
 *  - shareread waits for the token, checks the pattern, and answers with
 *    token + 1 in the second word;
 *  - each exits with 0 only if it saw the other's write, 1 if it gave up
 *    waiting (after about SHARE_WAIT_MS), 2 on a wrong pattern.
 *
 * A private copy on either side would leave the other waiting: the test
 * shows the frame is shared in both directions, while both tasks run.
 */
#include "freestanding.h"

#define SHARE_ADDR    0x30000000UL
#define SHARE_WAIT_MS 20000

static volatile unsigned long long *const word = (volatile unsigned long long *)SHARE_ADDR;
static volatile unsigned long long *const second =
  (volatile unsigned long long *)(SHARE_ADDR + 4096);

static unsigned long long pattern(unsigned long long token, unsigned i)
{
  return token * 0x9e3779b97f4a7c15ULL + i;
}

/* Waits until word[at] is not `old`; returns its value, or `old` on timeout. */
static unsigned long long wait_change(unsigned at, unsigned long long old)
{
  for (unsigned ms = 0; ms < SHARE_WAIT_MS; ++ms)
    {
      unsigned long long v = word[at];
      if (v != old)
        return v;
      l4_ipc_sleep_ms(1);
    }
  return old;
}

void cmain(unsigned long *sp, unsigned long long start_tsc)
{
  (void)sp;
#ifdef SHARE_READ
  (void)start_tsc;
  puts_("shareread: waiting for sharewrite's token in the shared file\n");
  unsigned long long token = wait_change(0, 0);
  if (!token)
    {
      puts_("shareread: no token: the mapping is not shared\n");
      exit_(1);
    }
  for (unsigned i = 0; i < 512; ++i)
    if (second[i] != pattern(token, i))
      {
        put_num("shareread: wrong pattern at word ", i, 0, " of the second page\n");
        exit_(2);
      }
  word[1] = token + 1;
  put_num("shareread: token ", token, 1, " and its pattern seen, answered\n");
  exit_(0);
#else
  unsigned long long token = start_tsc | 1;
  for (unsigned i = 0; i < 512; ++i)
    second[i] = pattern(token, i);
  word[1] = 0;
  word[0] = token;
  put_num("sharewrite: token ", token, 1, " written, waiting for the answer\n");
  unsigned long long answer = wait_change(1, 0);
  if (answer != token + 1)
    {
      put_num("sharewrite: answer ", answer, 1, " is not token + 1\n");
      exit_(1);
    }
  puts_("sharewrite: shareread's answer seen in the shared file\n");
  exit_(0);
#endif
}
