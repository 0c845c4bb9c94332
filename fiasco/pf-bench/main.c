/*
 * pf-bench: the baseline for our pagers. Measures what a first touch of a
 * page of a rom dataspace (a boot module, served by moe) costs when the page
 * is brought in by L4Re's own in-task pager (the region map of `l4re`): the
 * module is attached with l4re_rm_attach and every page is touched once,
 * each touch timed with rdtsc. Under QEMU with `-icount shift=0` the guest
 * TSC advances one tick per guest instruction, so the figures are
 * instruction counts and repeat exactly from boot to boot.
 *
 * Two runs over the same 16 MiB module, attached at a 2 MiB boundary plus
 * 0 and plus 4 KiB. L4Re maps 2^k pages per fault where the virtual and the
 * physical address (where bootstrap put the module) agree in their low k+12
 * bits, so one of the two runs maps one page per fault and the other may map
 * more; each run reports the pages per fault it saw.
 * For each run: the median touch (over all pages), the number of touches
 * that faulted (> 1000 cycles), the median cost of a faulting touch, and
 * the total divided by the number of pages; then the median touch of a
 * page that is already mapped.
 */
#include <l4/re/env.h>
#include <l4/re/c/dataspace.h>
#include <l4/re/c/namespace.h>
#include <l4/re/c/rm.h>
#include <l4/re/c/util/cap_alloc.h>
#include <stdio.h>
#include <stdlib.h>

#define PAGE 4096UL
#define FAULT_THRESHOLD 1000

static inline unsigned long long tsc(void)
{
  unsigned lo, hi;
  __asm__ __volatile__("lfence; rdtsc; lfence" : "=a"(lo), "=d"(hi) :: "memory");
  return ((unsigned long long)hi << 32) | lo;
}

static int cmp(void const *a, void const *b)
{
  unsigned long long x = *(unsigned long long const *)a;
  unsigned long long y = *(unsigned long long const *)b;
  return x < y ? -1 : x > y;
}

static unsigned long long median(unsigned long long *v, unsigned long n)
{
  if (!n)
    return 0;
  qsort(v, n, sizeof(*v), cmp);
  return v[n / 2];
}

static void run(char const *name, l4re_ds_t ds, unsigned long size,
                unsigned long shift, unsigned long long *t,
                unsigned long long *f)
{
  unsigned long pages = size / PAGE;
  void *reserved = 0;
  /* Find 2 MiB-aligned room, then attach at +shift inside it. */
  if (l4re_rm_reserve_area((l4_addr_t *)&reserved, size + (4UL << 20),
                           L4RE_RM_F_SEARCH_ADDR, 21) < 0)
    {
      printf("pf-bench: %s: cannot reserve address space\n", name);
      return;
    }
  l4re_rm_free_area((l4_addr_t)reserved);
  void *addr = (char *)reserved + shift;
  long r = l4re_rm_attach(&addr, size, L4RE_RM_F_R, ds, 0, L4_PAGESHIFT);
  if (r < 0)
    {
      printf("pf-bench: %s: attach failed: %ld\n", name, r);
      return;
    }
  volatile char const *p = addr;
  unsigned long long total = 0, sum = 0;
  for (unsigned long i = 0; i < pages; ++i)
    {
      unsigned long long a = tsc();
      (void)p[i * PAGE];
      unsigned long long b = tsc();
      t[i] = b - a;
      total += t[i];
    }
  unsigned long faults = 0;
  for (unsigned long i = 0; i < pages; ++i)
    if (t[i] > FAULT_THRESHOLD)
      {
        f[faults++] = t[i];
        sum += t[i];
      }
  unsigned long long fault_median = median(f, faults);
  unsigned long long touch_median = median(t, pages);
  for (unsigned long i = 0; i < pages; ++i)
    {
      unsigned long long a = tsc();
      (void)p[i * PAGE];
      t[i] = tsc() - a;
    }
  unsigned long long mapped_median = median(t, pages);
  printf("pf-bench: %-8s %lu pages at %p: touch median %llu, faults %lu "
         "(%lu.%02lu pages/fault), fault median %llu, fault mean %llu, "
         "total/page %llu, mapped touch median %llu cycles\n",
         name, pages, addr, touch_median, faults,
         faults ? pages / faults : 0,
         faults ? (pages * 100 / faults) % 100 : 0,
         fault_median, faults ? sum / faults : 0, total / pages,
         mapped_median);
  l4re_rm_detach(addr);
}

int main(void)
{
  l4re_namespace_t rom = l4re_env_get_cap("rom");
  l4re_ds_t ds = l4re_util_cap_alloc();
  if (l4_is_invalid_cap(rom) || l4re_ns_query_srv(rom, "pf-bench.data", ds) < 0)
    {
      puts("pf-bench: no rom/pf-bench.data");
      return 1;
    }
  unsigned long size = l4re_ds_size(ds) & ~(PAGE - 1);
  unsigned long pages = size / PAGE;
  unsigned long long *t = malloc(pages * sizeof(*t));
  unsigned long long *f = malloc(pages * sizeof(*f));
  if (!t || !f)
    return 1;
  printf("pf-bench: rom/pf-bench.data, %lu KiB, through L4Re's region map "
         "(cycles = guest TSC; instructions under -icount shift=0)\n",
         size >> 10);
  run("va+0", ds, size, 0, t, f);
  run("va+4K", ds, size, PAGE, t, f);
  puts("pf-bench: done");
  return 0;
}
