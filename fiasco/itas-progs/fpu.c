/*
 * itas-fpu: an ordinary L4Re C program keeping values in all sixteen SSE
 * registers while it takes page faults of each kind a pager resolves:
 * pages of a read-only segment (shared pages of the binary's dataspace),
 * of the initialised data segment (private copies) and of the bss (zero
 * pages). The faults run the pager's code (our in-task pager resolves them
 * in the faulting thread, through the kernel's page-fault trampoline);
 * afterwards every register must hold what it held before, and the pages
 * what the binary says. The output does not depend on the pager: the
 * harness compares it with l4re_itas's.
 */
#include <stdio.h>

#define PAGE 4096UL
#define PAGES 64UL
#define SIZE (PAGES * PAGE)

static unsigned char const ro[SIZE] __attribute__((aligned(4096))) =
  { [0] = 1, [PAGE] = 2, [SIZE - 1] = 3 };
static unsigned char rw[SIZE] __attribute__((aligned(4096))) =
  { [0] = 4, [PAGE] = 5, [SIZE - 1] = 6 };
static unsigned char zero[SIZE] __attribute__((aligned(4096)));

/* What goes into xmm0..xmm15 (two words each). */
static unsigned long long const pattern[32] __attribute__((aligned(16))) = {
  0x0123456789abcdefULL, 0xfedcba9876543210ULL, 0x1111111122222222ULL,
  0x3333333344444444ULL, 0x5555555566666666ULL, 0x7777777788888888ULL,
  0x99999999aaaaaaaaULL, 0xbbbbbbbbccccccccULL, 0xddddddddeeeeeeeeULL,
  0xffffffff00000000ULL, 0x0f0f0f0ff0f0f0f0ULL, 0x00ff00ffff00ff00ULL,
  0x13579bdf2468ace0ULL, 0xdeadbeefcafebabeULL, 0x8badf00d0ddba11ULL,
  0xfeedfacec0ffee00ULL, 0x1000000000000001ULL, 0x2000000000000002ULL,
  0x3000000000000003ULL, 0x4000000000000004ULL, 0x5000000000000005ULL,
  0x6000000000000006ULL, 0x7000000000000007ULL, 0x8000000000000008ULL,
  0x9000000000000009ULL, 0xa00000000000000aULL, 0xb00000000000000bULL,
  0xc00000000000000cULL, 0xd00000000000000dULL, 0xe00000000000000eULL,
  0xf00000000000000fULL, 0x0102030405060708ULL,
};

static int fails;

/*
 * Loads the pattern into xmm0..xmm15, touches every page of
 * [base, base + SIZE) from the last to the first (a read, or for `write` a
 * locked add of 0, which keeps the byte) and stores the registers to
 * `out`. Nothing but this code runs in the thread between the load and the
 * store, apart from the pager's handling of the faults.
 */
static void touch(unsigned char const *base, long write, unsigned long long *out)
{
  unsigned long n = PAGES;
  unsigned char const *p = base + SIZE - PAGE;
  __asm__ volatile(
    "movdqa   0(%[pat]), %%xmm0\n\t"  "movdqa  16(%[pat]), %%xmm1\n\t"
    "movdqa  32(%[pat]), %%xmm2\n\t"  "movdqa  48(%[pat]), %%xmm3\n\t"
    "movdqa  64(%[pat]), %%xmm4\n\t"  "movdqa  80(%[pat]), %%xmm5\n\t"
    "movdqa  96(%[pat]), %%xmm6\n\t"  "movdqa 112(%[pat]), %%xmm7\n\t"
    "movdqa 128(%[pat]), %%xmm8\n\t"  "movdqa 144(%[pat]), %%xmm9\n\t"
    "movdqa 160(%[pat]), %%xmm10\n\t" "movdqa 176(%[pat]), %%xmm11\n\t"
    "movdqa 192(%[pat]), %%xmm12\n\t" "movdqa 208(%[pat]), %%xmm13\n\t"
    "movdqa 224(%[pat]), %%xmm14\n\t" "movdqa 240(%[pat]), %%xmm15\n\t"
    "1:\n\t"
    "test %[w], %[w]\n\t"
    "jz 2f\n\t"
    "lock addb $0, (%[p])\n\t"
    "jmp 3f\n"
    "2:\n\t"
    "movzbl (%[p]), %%eax\n"
    "3:\n\t"
    "sub $4096, %[p]\n\t"
    "dec %[n]\n\t"
    "jnz 1b\n\t"
    "movdqu %%xmm0,    0(%[out])\n\t" "movdqu %%xmm1,   16(%[out])\n\t"
    "movdqu %%xmm2,   32(%[out])\n\t" "movdqu %%xmm3,   48(%[out])\n\t"
    "movdqu %%xmm4,   64(%[out])\n\t" "movdqu %%xmm5,   80(%[out])\n\t"
    "movdqu %%xmm6,   96(%[out])\n\t" "movdqu %%xmm7,  112(%[out])\n\t"
    "movdqu %%xmm8,  128(%[out])\n\t" "movdqu %%xmm9,  144(%[out])\n\t"
    "movdqu %%xmm10, 160(%[out])\n\t" "movdqu %%xmm11, 176(%[out])\n\t"
    "movdqu %%xmm12, 192(%[out])\n\t" "movdqu %%xmm13, 208(%[out])\n\t"
    "movdqu %%xmm14, 224(%[out])\n\t" "movdqu %%xmm15, 240(%[out])\n\t"
    : [p] "+r"(p), [n] "+r"(n)
    : [pat] "r"(pattern), [out] "r"(out), [w] "r"(write)
    : "rax", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
      "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
      "xmm14", "xmm15");
}

static void check(char const *what, unsigned char const *base, long write,
                  unsigned char const expect[3])
{
  unsigned long long out[32];
  touch(base, write, out);
  int bad = 0;
  for (int i = 0; i < 32; ++i)
    if (out[i] != pattern[i])
      {
        printf("fpu: %s: xmm%d changed: %016llx, was %016llx\n", what, i / 2,
               out[i], pattern[i]);
        ++bad;
      }
  printf("fpu: %s: vector registers across %lu page faults: %s\n", what,
         PAGES, bad ? "CHANGED" : "intact");
  int contents = base[0] == expect[0] && base[PAGE] == expect[1]
                 && base[SIZE - 1] == expect[2];
  printf("fpu: %s: contents: %s\n", what, contents ? "ok" : "WRONG");
  fails += bad + !contents;
}

int main(void)
{
  static unsigned char const ro_expect[3] = { 1, 2, 3 };
  static unsigned char const rw_expect[3] = { 4, 5, 6 };
  static unsigned char const zero_expect[3] = { 0, 0, 0 };
  check("read-only segment (shared pages)", ro, 0, ro_expect);
  check("data segment (private copies)", rw, 1, rw_expect);
  check("bss (zero pages)", zero, 1, zero_expect);
  printf("fpu: %s\n", fails ? "FAILED" : "all ok");
  return fails ? 1 : 0;
}
