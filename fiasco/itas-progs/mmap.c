/*
 * itas-mmap: an ordinary L4Re C program mapping memory and files:
 *
 *   - anonymous mmap of 4 MiB, written, a hole punched into the middle
 *     with munmap (the region manager splits the region), the rest checked
 *     and unmapped; 300 rounds of mmap/munmap of 64 KiB (address reuse);
 *   - files of the l4fs server (capability "fs", a namespace) through
 *     L4Re's C API: l4re_ns_query_srv and l4re_rm_attach of hello.txt and
 *     of big.bin (1 MiB, a known pattern), the latter also detached and
 *     attached again at another offset;
 *   - the same text file through L4Re's libc (open/read/mmap on
 *     "/fs/hello.txt" and fstat);
 *   - requests the region manager must refuse, leaving everything else
 *     as it was: detach of what was never attached, an attach of size 0,
 *     with unknown flags or over an existing region, an absurdly large
 *     area; eager mapping (L4RE_RM_F_EAGER_MAP) of an anonymous dataspace.
 *
 * The output does not depend on the pager: the harness compares it.
 */
#define _GNU_SOURCE
#include <l4/re/env.h>
#include <l4/re/c/dataspace.h>
#include <l4/re/c/mem_alloc.h>
#include <l4/re/c/namespace.h>
#include <l4/re/c/rm.h>
#include <l4/re/c/util/cap_alloc.h>
#include <l4/sys/err.h>
#include <l4/sys/ipc.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char const hello_text[] =
  "Hello from l4fs, an ext2 image served by a Rust server on Fiasco.OC!\n";

static int fails;

static void report(int ok, char const *what)
{
  printf("mmap: %s: %s\n", what, ok ? "ok" : "FAILED");
  if (!ok)
    ++fails;
}

static unsigned char pattern_byte(unsigned long i)
{
  return (unsigned char)i ^ (unsigned char)((i >> 12) * 31);
}

static long query(l4re_namespace_t ns, char const *name, l4re_ds_t ds)
{
  long r = -L4_ENOENT;
  for (int i = 0; i < 500; ++i)
    {
      r = l4re_ns_query_srv(ns, name, ds);
      if (r != -(L4_EIPC_LO + L4_IPC_ENOT_EXISTENT))
        break;
      l4_ipc_sleep_ms(10);
    }
  return r;
}

static void anonymous(void)
{
  size_t const sz = 4 << 20;
  unsigned char *p = mmap(NULL, sz, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    {
      report(0, "anonymous mmap of 4 MiB");
      return;
    }
  int zero = 1;
  for (size_t i = 0; i < sz; i += 4096)
    zero &= p[i] == 0;
  for (size_t i = 0; i < sz; ++i)
    p[i] = (unsigned char)(i * 13 + (i >> 16));
  report(zero, "anonymous memory reads as zeros");
  int hole = munmap(p + (1 << 20), 1 << 20) == 0;
  int intact = 1;
  for (size_t i = 0; i < sz; ++i)
    {
      if (i == (1 << 20))
        i = 2 << 20;
      intact &= p[i] == (unsigned char)(i * 13 + (i >> 16));
    }
  report(hole && intact, "munmap of the middle MiB keeps both sides");
  report(munmap(p, 1 << 20) == 0 && munmap(p + (2 << 20), 2 << 20) == 0,
         "munmap of the rest");

  int rounds = 0;
  for (int r = 0; r < 300; ++r)
    {
      unsigned char *q = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (q == MAP_FAILED)
        break;
      int clean = q[4096] == 0;
      memset(q, r, 64 << 10);
      clean &= q[(64 << 10) - 1] == (unsigned char)r;
      if (munmap(q, 64 << 10) != 0 || !clean)
        break;
      ++rounds;
    }
  printf("mmap: %d of 300 mmap/munmap rounds of 64 KiB\n", rounds);
  fails += rounds != 300;
}

static void l4fs_files(void)
{
  l4re_namespace_t fs = l4re_env_get_cap("fs");
  if (l4_is_invalid_cap(fs))
    {
      report(0, "capability fs");
      return;
    }
  l4re_ds_t ds = l4re_util_cap_alloc();
  long r = query(fs, "hello.txt", ds);
  void *addr = 0;
  if (r < 0)
    printf("mmap: # hello.txt: query: %ld\n", r);
  if (r >= 0)
    r = l4re_rm_attach(&addr, l4re_ds_size(ds), L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_R,
                       ds, 0, L4_PAGESHIFT);
  if (r < 0)
    printf("mmap: # hello.txt: query/attach: %ld\n", r);
  report(r >= 0 && memcmp(addr, hello_text, sizeof(hello_text) - 1) == 0,
         "l4fs hello.txt attached through the region manager");
  if (r >= 0)
    l4re_rm_detach(addr);

  l4re_ds_t big = l4re_util_cap_alloc();
  r = query(fs, "big.bin", big);
  unsigned long size = r >= 0 ? l4re_ds_size(big) : 0;
  int same = r >= 0 && size == (1 << 20);
  for (int pass = 0; pass < 2 && same; ++pass)
    {
      unsigned long off = pass ? 256 << 10 : 0;
      addr = 0;
      r = l4re_rm_attach(&addr, size - off, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_R,
                         big, off, L4_PAGESHIFT);
      if (r < 0)
        {
          same = 0;
          break;
        }
      unsigned char const *b = addr;
      for (unsigned long i = 0; i < size - off; ++i)
        if (b[i] != pattern_byte(i + off))
          {
            same = 0;
            break;
          }
      l4re_rm_detach(addr);
    }
  report(same, "l4fs big.bin attached whole and from 256 KiB on");
}

static void libc_files(void)
{
  int fd = open("/fs/hello.txt", O_RDONLY);
  char buf[128] = { 0 };
  struct stat st;
  int ok = fd >= 0 && fstat(fd, &st) == 0 && st.st_size == sizeof(hello_text) - 1
           && read(fd, buf, sizeof(buf)) == (ssize_t)(sizeof(hello_text) - 1)
           && strcmp(buf, hello_text) == 0;
  report(ok, "open/fstat/read of /fs/hello.txt");
  if (fd >= 0)
    {
      void *m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
      report(m != MAP_FAILED && memcmp(m, hello_text, sizeof(hello_text) - 1) == 0,
             "mmap of /fs/hello.txt");
      if (m != MAP_FAILED)
        munmap(m, 4096);
      close(fd);
    }
}

static void refusals(void)
{
  l4re_ds_t ds = l4re_util_cap_alloc();
  if (l4re_ma_alloc(64 << 10, ds, 0) < 0)
    {
      report(0, "a dataspace for the refusals");
      return;
    }
  void *addr = 0;
  long r = l4re_rm_attach(&addr, 64 << 10, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW
                          | L4RE_RM_F_EAGER_MAP, ds, 0, L4_PAGESHIFT);
  report(r == 0, "attach with eager mapping");
  if (r)
    return;
  unsigned char *p = addr;
  p[0] = 1;
  p[(64 << 10) - 1] = 2;

  report(l4re_rm_detach((void *)0x100000000000UL) < 0, "detach of nothing refused");
  void *z = 0;
  report(l4re_rm_attach(&z, 0, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 0,
                        L4_PAGESHIFT) < 0, "attach of size 0 refused");
  z = 0;
  report(l4re_rm_attach(&z, 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW | 0x00200000,
                        ds, 0, L4_PAGESHIFT) < 0, "attach with unknown flags refused");
  z = addr;
  report(l4re_rm_attach(&z, 4096, L4RE_RM_F_RW, ds, 0, L4_PAGESHIFT) < 0,
         "attach over an attached region refused");
  l4_addr_t area = 0;
  report(l4re_rm_reserve_area(&area, 1UL << 62, L4RE_RM_F_SEARCH_ADDR, 12) < 0,
         "absurd area refused");
  report(p[0] == 1 && p[(64 << 10) - 1] == 2, "the region is untouched by all that");
  report(l4re_rm_detach(addr) >= 0, "detach");
}

int main(void)
{
  anonymous();
  l4fs_files();
  libc_files();
  refusals();
  printf("mmap: %s\n", fails ? "FAILED" : "all checks passed");
  return fails ? 1 : 0;
}
