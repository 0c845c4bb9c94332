/*
 * itas-threads: an ordinary L4Re C program whose pthreads take page faults
 * of each kind a pager resolves: each of four threads reads its quarter of
 * a read-only array (shared pages of the binary's dataspace), adds to its
 * quarter of an initialised array (private copies) and writes its quarter
 * of a bss array (zero pages), all at once. The main thread then checks
 * every page. L4Re's pthreads register each thread with the program's
 * `itas` (`L4Re::Itas::register_thread`); our in-task pager gives it its
 * own page-fault trampoline there. A fifth thread follows once the four
 * have ended, then 50 threads one after another, each writing a fresh
 * page, and a last one (our pager reuses the trampolines of ended
 * threads: it reports how many it made). The output does not depend on
 * the pager: the harness compares it with l4re_itas's.
 */
#include <pthread.h>
#include <stdio.h>

#define PAGE 4096UL
#define THREADS 4UL
#define PAGES_EACH 64UL
#define PAGES (THREADS * PAGES_EACH)
#define SIZE (PAGES * PAGE)

static unsigned char const ro[SIZE] __attribute__((aligned(4096))) =
  { [0] = 1, [PAGE] = 2, [SIZE / 2] = 3, [SIZE - 1] = 4 };
static unsigned char rw[SIZE] __attribute__((aligned(4096))) =
  { [0] = 5, [PAGE] = 6, [SIZE / 2] = 7, [SIZE - 1] = 8 };
static unsigned char zero[SIZE] __attribute__((aligned(4096)));

static unsigned long sums[THREADS];

#define SERIES 50UL
static unsigned char series[SERIES * PAGE] __attribute__((aligned(4096)));

static void *one_page(void *arg)
{
  unsigned long k = (unsigned long)arg;
  series[k * PAGE + k % PAGE] = (unsigned char)(k + 1);
  return 0;
}

static void *work(void *arg)
{
  unsigned long t = (unsigned long)arg;
  unsigned long sum = 0;
  for (unsigned long p = t * PAGES_EACH; p < (t + 1) * PAGES_EACH; ++p)
    {
      unsigned long off = p * PAGE;
      /* The last byte of a page too, so that the array's last byte counts. */
      sum += *(unsigned char const volatile *)&ro[off]
             + *(unsigned char const volatile *)&ro[off + PAGE - 1];
      rw[off] += 1;
      zero[off + t] = (unsigned char)(p + 1);
    }
  sums[t] = sum;
  return 0;
}

int main(void)
{
  pthread_t th[THREADS];
  int fails = 0;
  for (unsigned long t = 0; t < THREADS; ++t)
    if (pthread_create(&th[t], 0, work, (void *)t))
      {
        printf("threads: pthread_create %lu failed\n", t);
        return 1;
      }
  for (unsigned long t = 0; t < THREADS; ++t)
    pthread_join(th[t], 0);

  for (unsigned long t = 0; t < THREADS; ++t)
    printf("threads: thread %lu: read-only sum %lu\n", t, sums[t]);
  for (unsigned long p = 0; p < PAGES; ++p)
    {
      unsigned long off = p * PAGE;
      unsigned long t = p / PAGES_EACH;
      unsigned char want_rw = (unsigned char)(1 + (p == 0 ? 5 : p == 1 ? 6
                                                   : off == SIZE / 2 ? 7 : 0));
      if (rw[off] != want_rw || zero[off + t] != (unsigned char)(p + 1))
        {
          if (fails++ < 5)
            printf("threads: page %lu: rw %u (want %u), bss %u (want %u)\n", p,
                   rw[off], want_rw, zero[off + t], (unsigned char)(p + 1));
        }
    }
  printf("threads: %lu pages each in %lu threads: %s\n", PAGES_EACH, THREADS,
         fails ? "FAILED" : "ok");

  /* One more thread once the others are gone (our pager reports, when it
     registers it, how many faults went through the other threads'
     trampolines). */
  pthread_t last;
  if (pthread_create(&last, 0, work, (void *)0) || pthread_join(last, 0))
    {
      printf("threads: a fifth thread failed\n");
      return 1;
    }
  printf("threads: a fifth thread after them: read-only sum %lu\n", sums[0]);

  for (unsigned long k = 0; k < SERIES; ++k)
    {
      pthread_t x;
      if (pthread_create(&x, 0, one_page, (void *)k) || pthread_join(x, 0))
        {
          printf("threads: thread %lu of the series failed\n", k);
          return 1;
        }
    }
  unsigned long wrong = 0;
  for (unsigned long k = 0; k < SERIES; ++k)
    if (series[k * PAGE + k % PAGE] != (unsigned char)(k + 1))
      ++wrong;
  printf("threads: %lu threads one after another: %s\n", SERIES, wrong ? "FAILED" : "ok");
  if (pthread_create(&last, 0, one_page, (void *)0) || pthread_join(last, 0))
    {
      printf("threads: the last thread failed\n");
      return 1;
    }
  printf("threads: a last thread: ok\n");
  return fails || wrong ? 1 : 0;
}
