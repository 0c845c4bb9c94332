/*
 * faultbench: our internal pager's cost per page fault, next to L4Re's in
 * the same boot (entry pager-bench, conf/pager-bench.cfg). A freestanding
 * program that ext-loader starts under the internal pager with three
 * extra regions (ext-loader --attach): the benchmark page (a dataspace
 * that ned created, read-write, shared) at BENCH_PAGE_ADDR, and the rom
 * module pf-bench.data (moe's dataspace, read-only, shared) at a 2 MiB
 * boundary and 4 KiB past one, where pf-bench measured L4Re's pager on the
 * same dataspace before (bench.h).
 *
 * Each page of the data is touched once and each touch timed with the
 * guest's timestamp counter, exactly as pf-bench does (bench_touch); the
 * program prints its figures, L4Re's from the benchmark page, and their
 * ratios. It also prints how long it took from the end of the previous
 * program (exitmark, which ext-loader ran just before under the internal
 * pager too, with --sequential) to faultbench's first instruction, next
 * to the same interval under ned.
 *
 * Then it touches the same 16 MiB once more, as a file of l4fs
 * (data/pf-bench.data of bench.img, ext-loader --attach=fs:… at
 * BENCH_L4FS_ADDR, a 2 MiB boundary): l4fs sends up to 2 MiB per fault
 * straight from the image (the file lies contiguously from a 2 MiB
 * boundary of bench.img), and the internal pager asks with the largest
 * window the region allows. Its total per page touched is compared with
 * L4Re's pager touching the boot module from moe: its run at one page per
 * fault and its cheaper run.
 *
 * Built twice: faultbench, and with -DEXIT_MARK, exitmark, which only
 * writes the time of its end into the benchmark page and exits.
 */
#include "freestanding.h"
#include "bench.h"

#define PAGE 4096UL
/* Where ext-loader attaches data/pf-bench.data of l4fs (conf/pager-bench.cfg). */
#define BENCH_L4FS_ADDR 0x40000000UL
/* Up to 32 MiB of data. */
#define MAX_PAGES 8192

static struct bench_page *const page = (struct bench_page *)BENCH_PAGE_ADDR;

#ifndef EXIT_MARK
static unsigned long long times[MAX_PAGES];
static unsigned long long faults[MAX_PAGES];

/* Prints "pre N.NN post", N.NN = a / b. */
static void put_ratio(char const *pre, unsigned long long a, unsigned long long b,
                      char const *post)
{
  unsigned long long hundredths = b ? (a * 100 + b / 2) / b : 0;
  char frac[4] = { '.', '0' + (char)(hundredths / 10 % 10), '0' + (char)(hundredths % 10), 0 };
  put_num(pre, hundredths / 100, 0, "");
  puts_(frac);
  puts_(post);
}

static void put_run(char const *name, struct bench_run const *r)
{
  puts_(name);
  put_num(" ", r->pages, 0, " pages: faults ");
  put_num("", r->faults, 0, "");
  put_ratio(" (", r->pages, r->faults, " pages/fault), fault median ");
  put_num("", r->fault_median, 0, ", total/page ");
  put_num("", r->per_page, 0, ", mapped touch median ");
  put_num("", r->mapped_median, 0, " cycles\n");
}

static void compare(char const *what, unsigned long long ours, unsigned long long l4re)
{
  puts_("faultbench: ");
  puts_(what);
  put_num(": internal pager ", ours, 0, ", L4Re ");
  put_num("", l4re, 0, " cycles");
  put_ratio(", ratio ", ours, l4re, "\n");
}
#endif

void cmain(unsigned long *sp, unsigned long long start_tsc)
{
  (void)sp;
#ifdef EXIT_MARK
  (void)start_tsc;
  if (page->magic != BENCH_MAGIC)
    {
      puts_("exitmark: no figures of pf-bench in the benchmark page\n");
      exit_(1);
    }
  page->exit_tsc = bench_tsc();
  exit_(0);
#else
  if (page->magic != BENCH_MAGIC || !page->exit_tsc || start_tsc < page->exit_tsc)
    {
      puts_("faultbench: the benchmark page lacks pf-bench's figures or exitmark's time\n");
      exit_(1);
    }
  unsigned long long started = start_tsc - page->exit_tsc;
  unsigned long pages = page->data_size / PAGE;
  if (pages > MAX_PAGES)
    pages = MAX_PAGES;
  /* Bring the result arrays in first: their faults stay out of the runs. */
  for (unsigned long i = 0; i < MAX_PAGES; i += PAGE / sizeof(times[0]))
    times[i] = faults[i] = 0;
  puts_("faultbench: rom/pf-bench.data through the internal pager, ");
  put_num("", pages * 4, 0, " KiB");
  puts_(" (cycles = guest TSC; instructions under -icount shift=0)\n");
  struct bench_run aligned =
    bench_touch((volatile char const *)BENCH_DATA_ALIGNED, pages, times, faults);
  put_run("faultbench: va+0 ", &aligned);
  struct bench_run shifted =
    bench_touch((volatile char const *)BENCH_DATA_SHIFTED, pages, times, faults);
  put_run("faultbench: va+4K", &shifted);
  struct bench_run const *l4re = page->l4re;
  put_run("faultbench: L4Re va+0 ", &l4re[BENCH_RUN_ALIGNED]);
  put_run("faultbench: L4Re va+4K", &l4re[BENCH_RUN_SHIFTED]);
  compare("fault median, va+4K", shifted.fault_median, l4re[BENCH_RUN_SHIFTED].fault_median);
  compare("fault median, va+0", aligned.fault_median, l4re[BENCH_RUN_ALIGNED].fault_median);
  compare("total per page, va+4K", shifted.per_page, l4re[BENCH_RUN_SHIFTED].per_page);
  compare("total per page, va+0", aligned.per_page, l4re[BENCH_RUN_ALIGNED].per_page);
  puts_("faultbench: from a program's exit to the next one's first instruction: ");
  put_num("ext-loader ", started, 0, ", ned ");
  put_num("", page->ned_start, 0, " cycles");
  put_ratio(", ratio ", started, page->ned_start, "\n");
  struct bench_run l4fs =
    bench_touch((volatile char const *)BENCH_L4FS_ADDR, pages, times, faults);
  put_run("faultbench: l4fs va+0 ", &l4fs);
  /* L4Re's figure depends on where bootstrap put the module: the run
   * whose addresses agree with the module's physical ones in more low
   * bits gets more pages per fault. Compared with both: the run at one
   * page per fault (the more faults) and the cheaper run per page. */
  struct bench_run const *one =
    l4re[BENCH_RUN_ALIGNED].faults >= l4re[BENCH_RUN_SHIFTED].faults
    ? &l4re[BENCH_RUN_ALIGNED] : &l4re[BENCH_RUN_SHIFTED];
  struct bench_run const *best =
    l4re[BENCH_RUN_ALIGNED].per_page <= l4re[BENCH_RUN_SHIFTED].per_page
    ? &l4re[BENCH_RUN_ALIGNED] : &l4re[BENCH_RUN_SHIFTED];
  compare("l4fs file (ours) vs boot module from moe (L4Re) at one page per fault, total per page",
          l4fs.per_page, one->per_page);
  compare("l4fs file (ours) vs boot module from moe (L4Re), its cheaper run, total per page",
          l4fs.per_page, best->per_page);
  if (page->itas_valid)
    {
      /* pf-bench itself started by ned on our in-task pager. */
      struct bench_run const *it = page->itas;
      put_run("faultbench: in-task pager under ned va+0 ", &it[BENCH_RUN_ALIGNED]);
      put_run("faultbench: in-task pager under ned va+4K", &it[BENCH_RUN_SHIFTED]);
      compare("in-task pager under ned, fault median, va+4K",
              it[BENCH_RUN_SHIFTED].fault_median, l4re[BENCH_RUN_SHIFTED].fault_median);
      compare("in-task pager under ned, fault median, va+0",
              it[BENCH_RUN_ALIGNED].fault_median, l4re[BENCH_RUN_ALIGNED].fault_median);
      compare("in-task pager under ned, total per page, va+4K",
              it[BENCH_RUN_SHIFTED].per_page, l4re[BENCH_RUN_SHIFTED].per_page);
      compare("in-task pager under ned, total per page, va+0",
              it[BENCH_RUN_ALIGNED].per_page, l4re[BENCH_RUN_ALIGNED].per_page);
      compare("in-task pager under ned, zero-fill (bss), fault median",
              page->itas_anon[BENCH_ANON_ZERO].fault_median,
              page->l4re_anon[BENCH_ANON_ZERO].fault_median);
      compare("in-task pager under ned, private copy (data write), fault median",
              page->itas_anon[BENCH_ANON_COPY].fault_median,
              page->l4re_anon[BENCH_ANON_COPY].fault_median);
      puts_("faultbench: exit to the next program's first instruction under ned: ");
      put_num("rom/inpager ", page->itas_start, 0, ", l4re_itas ");
      put_num("", page->ned_start, 0, " cycles");
      put_ratio(", ratio ", page->itas_start, page->ned_start, "\n");
    }
  exit_(aligned.faults && shifted.faults && l4fs.faults ? 0 : 1);
#endif
}
