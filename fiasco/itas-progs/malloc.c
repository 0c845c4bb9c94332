/*
 * itas-malloc: an ordinary L4Re C program that works its heap hard:
 * thousands of blocks of random sizes (16 B to 256 KiB) allocated, filled
 * with a pattern derived from their number, grown and shrunk with realloc
 * (which must keep the old contents) and freed in random order; then a few
 * blocks of megabytes, up to 48 MiB at once. L4Re's libc gets the memory
 * from its region manager (Rm attach of dataspaces from the memory
 * allocator), so every byte written here went through the program's pager.
 * The output does not depend on the pager: the harness compares it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long rng = 0x9e3779b97f4a7c15ULL;

static unsigned long next(void)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (unsigned long)rng;
}

struct block
{
  unsigned char *p;
  size_t size;
  unsigned tag;
};

enum { Slots = 512, Rounds = 6000 };
static struct block slots[Slots];
static unsigned long bad;

static unsigned char pat(unsigned tag, size_t i)
{
  return (unsigned char)(tag * 131 + i * 7 + (i >> 9));
}

static void fill(struct block *b, size_t from)
{
  for (size_t i = from; i < b->size; ++i)
    b->p[i] = pat(b->tag, i);
}

static void check(struct block const *b, size_t upto)
{
  for (size_t i = 0; i < upto && i < b->size; ++i)
    if (b->p[i] != pat(b->tag, i))
      {
        ++bad;
        return;
      }
}

int main(void)
{
  unsigned long allocs = 0, reallocs = 0, frees = 0;
  size_t live = 0, peak = 0;
  unsigned long long sum = 0;

  for (unsigned r = 0; r < Rounds; ++r)
    {
      struct block *b = &slots[next() % Slots];
      unsigned action = next() % 4;
      if (!b->p)
        {
          b->size = 16 + next() % (next() % 8 == 0 ? 256 * 1024 : 4096);
          b->tag = r;
          b->p = malloc(b->size);
          if (!b->p)
            {
              printf("malloc: out of memory at %zu bytes\n", b->size);
              return 1;
            }
          fill(b, 0);
          live += b->size;
          ++allocs;
        }
      else if (action == 0)
        {
          check(b, b->size);
          size_t n = 16 + next() % (128 * 1024);
          unsigned char *q = realloc(b->p, n);
          if (!q)
            {
              printf("malloc: realloc to %zu failed\n", n);
              return 1;
            }
          size_t old = b->size;
          b->p = q;
          b->size = n;
          check(b, old < n ? old : n);
          fill(b, old < n ? old : n);
          live = live - old + n;
          ++reallocs;
        }
      else
        {
          check(b, b->size);
          for (size_t i = 0; i < b->size; i += 64)
            sum += b->p[i];
          free(b->p);
          b->p = NULL;
          live -= b->size;
          ++frees;
        }
      if (live > peak)
        peak = live;
    }
  for (unsigned i = 0; i < Slots; ++i)
    if (slots[i].p)
      {
        check(&slots[i], slots[i].size);
        free(slots[i].p);
        ++frees;
      }
  printf("malloc: %lu allocations, %lu reallocations, %lu frees, peak %zu KiB live, sum %llu\n",
         allocs, reallocs, frees, peak >> 10, sum);

  /* Large blocks: 3 x 8 MiB, one grown to 24 MiB: 48 MiB at once. */
  enum { Mib = 1 << 20 };
  struct block big[3];
  for (unsigned i = 0; i < 3; ++i)
    {
      big[i].size = 8 * Mib;
      big[i].tag = 1000 + i;
      big[i].p = malloc(big[i].size);
      if (!big[i].p)
        {
          printf("malloc: 8 MiB block %u failed\n", i);
          return 1;
        }
      fill(&big[i], 0);
    }
  unsigned char *q = realloc(big[1].p, 24 * Mib);
  if (!q)
    {
      printf("malloc: realloc to 24 MiB failed\n");
      return 1;
    }
  big[1].p = q;
  check(&big[1], 8 * Mib);
  big[1].size = 24 * Mib;
  fill(&big[1], 8 * Mib);
  unsigned long long bigsum = 0;
  for (unsigned i = 0; i < 3; ++i)
    {
      check(&big[i], big[i].size);
      for (size_t k = 0; k < big[i].size; k += 4096)
        bigsum += big[i].p[k];
      free(big[i].p);
    }
  printf("malloc: 40 MiB in large blocks, sum %llu\n", bigsum);
  printf("malloc: %s\n", bad ? "PATTERN DAMAGED" : "all patterns intact");
  return bad ? 1 : 0;
}
