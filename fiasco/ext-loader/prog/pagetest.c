/*
 * pagetest: a freestanding static x86-64 program for Fiasco that needs no
 * L4Re environment.  ext-loader (fiasco/ext-loader) loads it into a new
 * task and is its external pager: every page it touches arrives through a
 * page-fault IPC.  It prints through the log capability at slot 5 with
 * l4_vcon_write (the kernel points the thread's gs base at its UTCB
 * pointer when the thread is bound, so l4_utcb() works from the first
 * instruction) and ends as every L4Re program does: L4Re::Parent
 * signal(0, status) to its parent, slot 10 (the loader as external pager,
 * or the internal pager of its task), which never answers: the task is
 * deleted.
 *
 * Built three times: pagetest (touches code, data, bss and stack across
 * many pages and exits 0); with -DBAD_ACCESS, badaccess (reads an address
 * no region covers: the loader ends it with a report); with -DBAD_INSN,
 * badinsn (executes ud2: the exception IPC goes to the loader, which ends
 * it with a report).
 */
#include "freestanding.h"

#define PAGE 4096
#define DATA_PAGES 8
#define BSS_PAGES 64
#define UNUSED_PAGES 32

/* Initialized data: one marker word at the start of each page. */
#define MARK(i) [(i) * (PAGE / 8)] = 0x1000 + (i)
static volatile unsigned long table[DATA_PAGES * PAGE / 8] = {
  MARK(0), MARK(1), MARK(2), MARK(3), MARK(4), MARK(5), MARK(6), MARK(7),
};
/* Zero-filled memory. */
static volatile unsigned char big[BSS_PAGES * PAGE];
/* Read-only data that is never touched: loadable, never faulted. */
const unsigned char unused_blob[UNUSED_PAGES * PAGE] = { 1 };

#if !defined(BAD_ACCESS) && !defined(BAD_INSN)
/* Functions on pages of their own. */
#define SPREAD __attribute__((noinline, aligned(PAGE)))
SPREAD static unsigned long sum_data(void)
{
  unsigned long s = 0;
  for (unsigned i = 0; i < DATA_PAGES; i++)
    s += table[i * (PAGE / 8)];
  return s;
}

SPREAD static unsigned long fill_bss(void)
{
  unsigned long s = 0;
  for (unsigned i = 0; i < BSS_PAGES; i += 2)
    big[i * PAGE + 7] = (unsigned char)i;
  for (unsigned i = 0; i < BSS_PAGES; i += 2)
    s += big[i * PAGE + 7] + big[i * PAGE];
  return s;
}

SPREAD static unsigned long deep_stack(unsigned depth)
{
  volatile unsigned char frame[3000];
  frame[0] = (unsigned char)depth;
  frame[2999] = 1;
  if (depth == 0)
    return frame[0] + frame[2999];
  return deep_stack(depth - 1) + frame[0];
}

#endif

void cmain(unsigned long *sp, unsigned long long start_tsc)
{
  (void)sp;
  (void)start_tsc;
#ifdef BAD_ACCESS
  puts_("badaccess: hello, reading an address no region covers\n");
  volatile unsigned long *p = (volatile unsigned long *)0x10000000UL;
  put_num("badaccess: read ", *p, 1, " (not reached)\n");
  exit_(1);
#elif defined(BAD_INSN)
  puts_("badinsn: hello, executing an invalid instruction\n");
  __asm__ volatile ("ud2");
  exit_(1);
#else
  puts_("pagetest: hello from a task paged by ext-loader\n");
  put_num("pagetest: utcb ", (unsigned long)l4_utcb(), 1, "\n");
  unsigned long d = sum_data();
  put_num("pagetest: data sum ", d, 1, "\n");
  unsigned long b = fill_bss();
  put_num("pagetest: bss sum ", b, 0, "\n");
  unsigned long s = deep_stack(8);
  put_num("pagetest: stack sum ", s, 0, "\n");
  int ok = d == 0x1000 * DATA_PAGES + 28 && b == 992 && s == 37;
  puts_(ok ? "pagetest: all values ok\n" : "pagetest: WRONG values\n");
  exit_(ok ? 0 : 2);
#endif
}
