/*
 * The benchmark page of the pager-bench entry (conf/pager-bench.cfg): one
 * page of a dataspace that ned creates and hands to every program of the
 * benchmark, so that figures measured under ned and L4Re's pager reach the
 * program measured under our loader and internal pager in the same boot,
 * which prints both and their ratio.
 *
 * Used by pf-bench (an ordinary L4Re program, L4Re's in-task pager) and by
 * the freestanding programs exitmark and faultbench in ext-loader.img (our
 * internal pager). All figures are guest TSC cycles (instructions under
 * QEMU's -icount shift=0).
 */
#pragma once

#define BENCH_MAGIC 0x50414745424e4348ULL /* "PAGEBNCH" */

/* One pass over the data: every page touched once, each touch timed. */
struct bench_run
{
  unsigned long long pages;         /* pages touched */
  unsigned long long faults;        /* touches slower than FAULT_THRESHOLD */
  unsigned long long fault_median;  /* median cycles of a faulting touch */
  unsigned long long per_page;      /* all touches' cycles / pages */
  unsigned long long mapped_median; /* median touch of a mapped page */
};

enum { BENCH_RUN_ALIGNED, BENCH_RUN_SHIFTED, BENCH_RUNS };

/* Runs over pf-bench's own memory: first touches of its bss (zero-fill)
 * and first writes to its data segment (private copies of file pages). */
enum { BENCH_ANON_ZERO, BENCH_ANON_COPY, BENCH_ANON_RUNS };

struct bench_page
{
  unsigned long long magic;       /* BENCH_MAGIC once pf-bench wrote it */
  unsigned long long data_size;   /* bytes of rom/pf-bench.data */
  /* TSC of the last instruction of a marker program before its exit. */
  unsigned long long exit_tsc;
  /* Under ned: from a marker's exit to pf-bench's first instruction. */
  unsigned long long ned_start;
  /* L4Re's in-task pager (pf-bench). */
  struct bench_run l4re[BENCH_RUNS];
  /* pf-bench --itas: the same program started by ned on our in-task
   * pager (l4re_loader = "rom/inpager"); valid once itas_valid is 1. */
  unsigned long long itas_valid;
  unsigned long long itas_start;
  struct bench_run itas[BENCH_RUNS];
  /* The bss and data runs, under L4Re's pager and under ours. */
  struct bench_run l4re_anon[BENCH_ANON_RUNS];
  struct bench_run itas_anon[BENCH_ANON_RUNS];
};

/* A touch slower than this took a page fault. */
#define FAULT_THRESHOLD 1000

/* Where faultbench finds its regions (ext-loader --attach, see
 * conf/pager-bench.cfg): the benchmark page and the data twice, once at a
 * 2 MiB boundary and once 4 KiB past one, as pf-bench attaches it. */
#define BENCH_PAGE_ADDR     0x30000000UL
#define BENCH_DATA_ALIGNED  0x10000000UL
#define BENCH_DATA_SHIFTED  0x20001000UL

static inline unsigned long long bench_tsc(void)
{
  unsigned lo, hi;
  __asm__ __volatile__("lfence; rdtsc; lfence" : "=a"(lo), "=d"(hi) :: "memory");
  return ((unsigned long long)hi << 32) | lo;
}

/* Sorts v[0..n) (heapsort: no library needed) and returns its median. */
static inline unsigned long long bench_median(unsigned long long *v, unsigned long n)
{
  if (!n)
    return 0;
  for (unsigned long k = n / 2; k-- > 0;)
    for (unsigned long i = k, c; (c = 2 * i + 1) < n; i = c)
      {
        if (c + 1 < n && v[c + 1] > v[c])
          c++;
        if (v[i] >= v[c])
          break;
        unsigned long long t = v[i]; v[i] = v[c]; v[c] = t;
      }
  for (unsigned long end = n; --end > 0;)
    {
      unsigned long long t = v[0]; v[0] = v[end]; v[end] = t;
      for (unsigned long i = 0, c; (c = 2 * i + 1) < end; i = c)
        {
          if (c + 1 < end && v[c + 1] > v[c])
            c++;
          if (v[i] >= v[c])
            break;
          t = v[i]; v[i] = v[c]; v[c] = t;
        }
    }
  return v[n / 2];
}

/* Touches each of `pages` pages at `base` once, timing every touch (t[i]),
 * then each again (already mapped); f is scratch of `pages` entries. */
static inline struct bench_run bench_touch_how(volatile char *base, unsigned long pages,
                                               int write, unsigned long long *t,
                                               unsigned long long *f)
{
  struct bench_run r = { .pages = pages };
  unsigned long long total = 0;
  for (unsigned long i = 0; i < pages; ++i)
    {
      unsigned long long a = bench_tsc();
      if (write)
        base[i * 4096] += 1;
      else
        (void)base[i * 4096];
      unsigned long long b = bench_tsc();
      t[i] = b - a;
    }
  unsigned long faults = 0;
  for (unsigned long i = 0; i < pages; ++i)
    {
      total += t[i];
      if (t[i] > FAULT_THRESHOLD)
        f[faults++] = t[i];
    }
  r.faults = faults;
  r.fault_median = bench_median(f, faults);
  r.per_page = pages ? total / pages : 0;
  for (unsigned long i = 0; i < pages; ++i)
    {
      unsigned long long a = bench_tsc();
      (void)base[i * 4096];
      t[i] = bench_tsc() - a;
    }
  r.mapped_median = bench_median(t, pages);
  return r;
}

/* Reads each of `pages` pages at `base` once (see bench_touch_how). */
static inline struct bench_run bench_touch(volatile char const *base, unsigned long pages,
                                           unsigned long long *t, unsigned long long *f)
{
  return bench_touch_how((volatile char *)base, pages, 0, t, f);
}
