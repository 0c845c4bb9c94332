/*
 * l4fs-stock: an ordinary L4Re program, built with L4Re's tools and
 * unaware of the Rust filesystem server it talks to. It reads files of the
 * ext2 image that l4fs serves through L4Re's own C API only:
 *
 *   l4re_ns_query_srv   Namespace::query  (protocol 0x4001), whole paths
 *   l4re_ds_info/size   Dataspace::info   (protocol 0x4000, opcode 2)
 *   l4re_rm_attach      L4Re's region map: every first touch of a page makes
 *                       it call Dataspace::map (opcode 0) with a receive window
 *
 * big.bin (1 MiB) is larger than the server's page pool (64 frames in the
 * test), so reading it evicts pages that this program has mapped: l4fs
 * revokes them (l4_task_unmap), the next touch faults again and L4Re's region
 * map asks for the page again. Reading the file twice checks that.
 * Output: TAP for L4Re's test harness.
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

static char const hello_text[] =
  "Hello from l4fs, an ext2 image served by a Rust server on Fiasco.OC!\n";

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

/* Queries `name`; waits for the server to bind its gate on the first call
 * (ned starts both programs at once). */
static long query(l4re_namespace_t ns, char const *name, l4re_ds_t ds)
{
  long r;
  for (int i = 0; i < 500; ++i)
    {
      r = l4re_ns_query_srv(ns, name, ds);
      if (r != -(L4_EIPC_LO + L4_IPC_ENOT_EXISTENT))
        break;
      l4_ipc_sleep_ms(10);
    }
  return r;
}

/* Attaches file `name` read-only; returns its address or 0. */
static unsigned char const *open_file(l4re_namespace_t ns, char const *name,
                                      l4re_ds_t *ds, l4re_ds_size_t *size)
{
  void *addr = 0;
  *ds = l4re_util_cap_alloc();
  if (l4_is_invalid_cap(*ds))
    return 0;
  long r = query(ns, name, *ds);
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

static int check_pattern(unsigned char const *p, unsigned long size)
{
  for (unsigned long i = 0; i < size; ++i)
    if (p[i] != pattern_byte(i))
      {
        printf("# byte %lu: %u, want %u\n", i, p[i], pattern_byte(i));
        return 0;
      }
  return 1;
}

int main(void)
{
  l4re_namespace_t ns = l4re_env_get_cap("fs");
  l4re_ds_t ds;
  l4re_ds_size_t size = 0;
  l4re_ds_stats_t stats;

  puts("TAP TEST START");
  check(l4_is_valid_cap(ns), "namespace capability \"fs\" in the environment");

  unsigned char const *hello = open_file(ns, "hello.txt", &ds, &size);
  check(hello != 0, "hello.txt: Namespace query, Dataspace size, Rm attach");
  if (hello)
    {
      check(size == strlen(hello_text)
            && memcmp(hello, hello_text, size) == 0,
            "hello.txt: contents read through the region map");
      check(l4re_ds_info(ds, &stats) == 0 && stats.size == size
            && !(stats.flags & L4_FPAGE_W),
            "hello.txt: Dataspace info says read-only");
    }

  unsigned char const *nested = open_file(ns, "sub/dir/nested.txt", &ds, &size);
  check(nested && size == 12 && memcmp(nested, "nested file\n", 12) == 0,
        "sub/dir/nested.txt: a path with directories in one query");

  unsigned char const *rw = open_file(ns, "rw.bin", &ds, &size);
  check(rw && size == 64 * 1024 && check_pattern(rw, size),
        "rw.bin: 64 KiB, pattern");

  unsigned char const *big = open_file(ns, "big.bin", &ds, &size);
  check(big && size == 1024 * 1024 && check_pattern(big, size),
        "big.bin: 1 MiB (more than the server's pool), pattern");
  check(big && check_pattern(big, size),
        "big.bin again: evicted pages revoked and faulted back in");
  check(rw && check_pattern(rw, 64 * 1024),
        "rw.bin again, after big.bin evicted it");

  l4re_ds_t none = l4re_util_cap_alloc();
  check(query(ns, "no-such-file", none) == -L4_ENOENT,
        "query of an absent name: -L4_ENOENT");
  check(query(ns, "sub/no-such-file", none) == -L4_ENOENT,
        "query of an absent name in a directory: -L4_ENOENT");
  check(query(ns, "../hello.txt", none) == -L4_EPERM,
        "query of ../hello.txt: -L4_EPERM");
  check(query(ns, "sub/../hello.txt", none) == -L4_EPERM,
        "query of sub/../hello.txt: -L4_EPERM");
  check(query(ns, "hello.txt", none) == 0
        && l4re_ds_size(none) == (l4re_ds_size_t)strlen(hello_text),
        "the server still answers: hello.txt again");
  /* Give the server (started with --log-stats 1) an idle interval to log
   * its statistics line (evictions, revocations) into the output. */
  l4_ipc_sleep_ms(300);
  printf("1..%d\n", tests);
  puts("TAP TEST FINISH");
  printf("l4fs-stock: %d of %d checks passed\n", tests - failed, tests);
  return failed != 0;
}
