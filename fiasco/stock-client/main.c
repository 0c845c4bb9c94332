/*
 * stock-client: an ordinary L4Re program, built with L4Re's tools and
 * unaware of the Rust servers it talks to. It reads files through L4Re's
 * Namespace and Dataspace protocols only:
 *
 *   l4re_ns_query_srv   Namespace::query  (protocol 0x4001, opcode 0)
 *   l4re_ds_info        Dataspace::info   (protocol 0x4000, opcode 2)
 *   l4re_rm_attach      L4Re's region map (the program's own pager); the
 *                       first touch of each page makes it call
 *                       Dataspace::map (opcode 0) with a receive window
 *
 * on the namespace capability "fs" from its environment, and prints the
 * results as TAP (ok / not ok lines), which L4Re's test harness reads.
 */
#include <l4/re/env.h>
#include <l4/re/c/dataspace.h>
#include <l4/re/c/namespace.h>
#include <l4/re/c/rm.h>
#include <l4/re/c/util/cap_alloc.h>
#include <l4/sys/err.h>
#include <l4/sys/ipc.h>
#include <stdio.h>
#include <string.h>

static int tests, failed;

static void check(int ok, char const *what)
{
  ++tests;
  if (!ok)
    ++failed;
  printf("%s %d - %s\n", ok ? "ok" : "not ok", tests, what);
}

static unsigned char pattern_byte(unsigned long i)
{
  return (unsigned char)i ^ (unsigned char)((i >> 12) * 31);
}

/* Attaches file `name` of namespace `ns` read-only; returns its address. */
static char const *open_file(l4re_namespace_t ns, char const *name,
                             l4re_ds_t *ds, l4re_ds_size_t *size)
{
  void *addr = 0;
  *ds = l4re_util_cap_alloc();
  if (l4_is_invalid_cap(*ds))
    return 0;
  long r;
  /* The server may not have bound its gate yet when we start (ned starts
   * both at once): an unbound gate answers "does not exist". */
  for (int i = 0; i < 500; ++i)
    {
      r = l4re_ns_query_srv(ns, name, *ds);
      if (r != -(L4_EIPC_LO + L4_IPC_ENOT_EXISTENT))
        break;
      l4_ipc_sleep_ms(10);
    }
  if (r < 0)
    {
      printf("# query %s: %ld\n", name, r);
      return 0;
    }
  *size = l4re_ds_size(*ds);
  r = l4re_rm_attach(&addr, *size, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_R,
                     *ds, 0, L4_PAGESHIFT);
  if (r < 0)
    {
      printf("# attach %s: %ld\n", name, r);
      return 0;
    }
  return addr;
}

int main(void)
{
  l4re_namespace_t ns = l4re_env_get_cap("fs");
  l4re_ds_t ds;
  l4re_ds_size_t size = 0;
  l4re_ds_stats_t stats;

  puts("TAP TEST START");
  puts("1..7");
  check(l4_is_valid_cap(ns), "namespace capability \"fs\" in the environment");

  char const *hello = open_file(ns, "hello.txt", &ds, &size);
  check(hello != 0, "hello.txt: Namespace query, Dataspace size, Rm attach");
  if (hello)
    {
      printf("# hello.txt (%lu bytes): %.*s", (unsigned long)size, (int)size, hello);
      check(size > 6 && memcmp(hello, "Hello ", 6) == 0,
            "hello.txt: contents read through the region map");
      check(l4re_ds_info(ds, &stats) == 0 && stats.size == size
            && !(stats.flags & L4_FPAGE_W),
            "hello.txt: Dataspace info says read-only");
    }
  else
    {
      check(0, "hello.txt: contents");
      check(0, "hello.txt: info");
    }

  char const *pat = open_file(ns, "pattern.bin", &ds, &size);
  int good = pat != 0 && size == 64 * 1024;
  for (unsigned long i = 0; good && i < size; ++i)
    good = pat[i] == (char)pattern_byte(i);
  check(good, "pattern.bin: 16 pages, each paged in through Dataspace map");

  l4re_ds_t none = l4re_util_cap_alloc();
  check(l4re_ns_query_srv(ns, "no-such-file", none) == -L4_ENOENT,
        "query of a missing name fails with -L4_ENOENT");
  check(l4re_ns_query_srv(ns, "hello.txt", none) == 0
        && l4re_ds_size(none) == (l4re_ds_size_t)strlen("Hello from a Rust dataspace server on Fiasco.OC!\n"),
        "second query of the same name");
  puts("TAP TEST FINISH");
  printf("stock-client: %d of %d checks passed\n", tests - failed, tests);
  return failed != 0;
}
