/*
 * What the freestanding test programs of ext-loader.img share: they need
 * no L4Re environment and no libc, only the tree's l4sys headers. The
 * loader maps the log capability at slot 5 and the program's pager, which
 * is also its parent, at slot 10 (ext-loader itself as external pager, or
 * the internal pager of the task's gate "server"). l4_utcb() works from
 * the first instruction: the kernel points the thread's gs base at the
 * UTCB pointer when the thread is bound.
 *
 * A program defines cmain(sp, start_tsc): sp is the initial stack
 * pointer, start_tsc the timestamp counter read by the first instruction.
 */
#pragma once

#include <l4/sys/ipc.h>
#include <l4/sys/utcb.h>
#include <l4/sys/vcon.h>

/* Capability slots the loader maps into the task: the log, and the
 * program's pager, which is also its parent. */
#define LOG_CAP    (5UL << L4_CAP_SHIFT)
#define PARENT_CAP (10UL << L4_CAP_SHIFT)
/* L4RE_PROTO_PARENT (l4re/protocols.h); its only operation, signal, has
 * opcode 0; signal 0 means "exited", with the status as value. */
#define PROTO_PARENT 0x4002

void _start(void);
void cmain(unsigned long *sp, unsigned long long start_tsc);

static inline void out(char const *s, unsigned n)
{
  l4_vcon_write(LOG_CAP, s, n);
}

static inline unsigned len(char const *s)
{
  unsigned n = 0;
  while (s[n])
    n++;
  return n;
}

static inline void puts_(char const *s)
{
  out(s, len(s));
}

static inline void put_num(char const *pre, unsigned long v, int hex, char const *post)
{
  char buf[64];
  unsigned n = 0;
  char tmp[24];
  unsigned t = 0;
  unsigned base = hex ? 16 : 10;
  while (*pre && n < 30)
    buf[n++] = *pre++;
  if (hex)
    {
      buf[n++] = '0';
      buf[n++] = 'x';
    }
  do
    {
      unsigned d = v % base;
      tmp[t++] = d < 10 ? '0' + d : 'a' + d - 10;
      v /= base;
    }
  while (v);
  while (t)
    buf[n++] = tmp[--t];
  while (*post && n < sizeof(buf))
    buf[n++] = *post++;
  out(buf, n);
}

/* Ends the program as every L4Re program does: L4Re::Parent signal(0,
 * status) to the parent, which never answers (the task is deleted). */
static inline void __attribute__((noreturn)) exit_(unsigned long status)
{
  l4_utcb_t *u = l4_utcb();
  l4_utcb_mr_u(u)->mr[0] = 0;      /* opcode: signal */
  l4_utcb_mr_u(u)->mr[1] = 0;      /* signal 0: exit */
  l4_utcb_mr_u(u)->mr[2] = status;
  l4_ipc_call(PARENT_CAP, u, l4_msgtag(PROTO_PARENT, 3, 0, 0), L4_IPC_NEVER);
  for (;;)
    __asm__ volatile ("ud2");
}

/* Entry: the loader starts the thread here; the first instruction reads
 * the timestamp counter, then cmain runs on a 16-byte-aligned stack. */
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  lfence\n"
        "  rdtsc\n"
        "  shl $32, %rdx\n"
        "  or %rax, %rdx\n"
        "  mov %rdx, %rsi\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call cmain\n"
        "  ud2\n");
