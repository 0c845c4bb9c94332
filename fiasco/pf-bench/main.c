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
 * that faulted (> FAULT_THRESHOLD cycles), the median cost of a faulting
 * touch, and the total divided by the number of pages; then the median
 * touch of a page that is already mapped.
 *
 * With a capability "bench" (a dataspace of one page, struct bench_page in
 * bench.h; entry pager-bench, conf/pager-bench.cfg) the figures are also
 * written there for faultbench, which measures our internal pager in the
 * same boot and prints the ratio. `pf-bench --itas` is the same run
 * started by ned on our in-task pager (`l4re_loader = "rom/inpager"`): its
 * figures go to their own fields of the page, which faultbench compares
 * with L4Re's too. `pf-bench --mark` only writes the time
 * of its end into that page and exits: ned then starts pf-bench, whose
 * first instruction (bench_entry, before L4Re's start code) reads the
 * time again, which gives ned's time from one program's exit to the next
 * one's first instruction.
 */
#include <l4/re/env.h>
#include <l4/re/c/dataspace.h>
#include <l4/re/c/namespace.h>
#include <l4/re/c/rm.h>
#include <l4/re/c/util/cap_alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define PAGE 4096UL
/* Pages of the bss and data runs (4 MiB each). */
#define ANON_PAGES 1024UL

static char anon_zero[ANON_PAGES * PAGE] __attribute__((aligned(4096)));
/* Initialised: in the data segment, backed by the binary. */
static char anon_data[ANON_PAGES * PAGE] __attribute__((aligned(4096))) = { 1 };

/* The TSC at the program's first instruction (see bench_entry). */
unsigned long long entry_tsc;

/* The ELF entry (LDFLAGS -e bench_entry): reads the TSC, then goes on to
 * L4Re's start code with every register as the loader set it. */
__asm__(".text\n"
        ".global bench_entry\n"
        "bench_entry:\n"
        "  mov %rax, %r10\n"
        "  mov %rdx, %r11\n"
        "  lfence\n"
        "  rdtsc\n"
        "  shl $32, %rdx\n"
        "  or %rdx, %rax\n"
        "  mov %rax, entry_tsc(%rip)\n"
        "  mov %r10, %rax\n"
        "  mov %r11, %rdx\n"
        "  jmp _start\n");

static struct bench_run run(char const *name, l4re_ds_t ds, unsigned long size,
                            unsigned long shift, unsigned long long *t,
                            unsigned long long *f)
{
  struct bench_run none = { 0 };
  unsigned long pages = size / PAGE;
  void *reserved = 0;
  /* Find 2 MiB-aligned room, then attach at +shift inside it. */
  if (l4re_rm_reserve_area((l4_addr_t *)&reserved, size + (4UL << 20),
                           L4RE_RM_F_SEARCH_ADDR, 21) < 0)
    {
      printf("pf-bench: %s: cannot reserve address space\n", name);
      return none;
    }
  l4re_rm_free_area((l4_addr_t)reserved);
  void *addr = (char *)reserved + shift;
  long r = l4re_rm_attach(&addr, size, L4RE_RM_F_R, ds, 0, L4_PAGESHIFT);
  if (r < 0)
    {
      printf("pf-bench: %s: attach failed: %ld\n", name, r);
      return none;
    }
  struct bench_run b = bench_touch(addr, pages, t, f);
  printf("pf-bench: %-8s %lu pages at %p: faults %llu (%llu.%02llu pages/fault), "
         "fault median %llu, total/page %llu, mapped touch median %llu cycles\n",
         name, pages, addr, b.faults,
         b.faults ? b.pages / b.faults : 0,
         b.faults ? (b.pages * 100 / b.faults) % 100 : 0,
         b.fault_median, b.per_page, b.mapped_median);
  l4re_rm_detach(addr);
  return b;
}

/* Attaches the benchmark page, if this program has one. */
static struct bench_page *bench_page(void)
{
  l4re_ds_t ds = l4re_env_get_cap("bench");
  if (l4_is_invalid_cap(ds))
    return 0;
  void *addr = 0;
  if (l4re_rm_attach(&addr, PAGE, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 0,
                     L4_PAGESHIFT) < 0)
    {
      puts("pf-bench: cannot attach the capability \"bench\"");
      return 0;
    }
  return addr;
}

int main(int argc, char **argv)
{
  unsigned long long started = entry_tsc;
  struct bench_page *page = bench_page();
  int ours = argc > 1 && !strcmp(argv[1], "--itas");
  if (argc > 1 && !strcmp(argv[1], "--mark"))
    {
      if (!page)
        return 1;
      page->exit_tsc = bench_tsc();
      return 0;
    }
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
  memset(t, 0, pages * sizeof(*t));
  memset(f, 0, pages * sizeof(*f));
  printf("pf-bench: rom/pf-bench.data, %lu KiB, through %s "
         "(cycles = guest TSC; instructions under -icount shift=0)\n",
         size >> 10, ours ? "our in-task pager (rom/inpager)" : "L4Re's region map");
  struct bench_run aligned = run("va+0", ds, size, 0, t, f);
  struct bench_run shifted = run("va+4K", ds, size, PAGE, t, f);
  /* The pager's own kinds of fault: zero-fill (first touch of the bss)
     and private copies (first write to the data segment). */
  struct bench_run anon[BENCH_ANON_RUNS];
  anon[BENCH_ANON_ZERO] = bench_touch(anon_zero, ANON_PAGES, t, f);
  anon[BENCH_ANON_COPY] = bench_touch_how(anon_data, ANON_PAGES, 1, t, f);
  printf("pf-bench: bss  (zero-fill)     %lu pages: faults %llu, fault median %llu, "
         "total/page %llu cycles\n", ANON_PAGES, anon[BENCH_ANON_ZERO].faults,
         anon[BENCH_ANON_ZERO].fault_median, anon[BENCH_ANON_ZERO].per_page);
  printf("pf-bench: data (private copy)  %lu pages: faults %llu, fault median %llu, "
         "total/page %llu cycles\n", ANON_PAGES, anon[BENCH_ANON_COPY].faults,
         anon[BENCH_ANON_COPY].fault_median, anon[BENCH_ANON_COPY].per_page);
  if (page && ours)
    {
      if (page->exit_tsc && started > page->exit_tsc)
        {
          page->itas_start = started - page->exit_tsc;
          printf("pf-bench: ned + inpager: %llu cycles from a program's exit to the "
                 "next one's first instruction\n", page->itas_start);
        }
      page->exit_tsc = 0;
      page->itas[BENCH_RUN_ALIGNED] = aligned;
      page->itas[BENCH_RUN_SHIFTED] = shifted;
      page->itas_anon[BENCH_ANON_ZERO] = anon[BENCH_ANON_ZERO];
      page->itas_anon[BENCH_ANON_COPY] = anon[BENCH_ANON_COPY];
      page->itas_valid = 1;
    }
  else if (page)
    {
      if (page->exit_tsc && started > page->exit_tsc)
        {
          page->ned_start = started - page->exit_tsc;
          printf("pf-bench: ned: %llu cycles from a program's exit to the next "
                 "one's first instruction\n", page->ned_start);
        }
      /* Used: the next interval needs a mark of its own (exitmark's). */
      page->exit_tsc = 0;
      page->data_size = size;
      page->l4re[BENCH_RUN_ALIGNED] = aligned;
      page->l4re[BENCH_RUN_SHIFTED] = shifted;
      page->l4re_anon[BENCH_ANON_ZERO] = anon[BENCH_ANON_ZERO];
      page->l4re_anon[BENCH_ANON_COPY] = anon[BENCH_ANON_COPY];
      page->magic = BENCH_MAGIC;
    }
  puts("pf-bench: done");
  return 0;
}
