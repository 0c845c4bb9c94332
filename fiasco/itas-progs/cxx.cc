/*
 * itas-cxx: an ordinary L4Re C++ program: exceptions thrown through
 * several frames and caught by base class, threads (std::thread, which is
 * L4Re's pthreads: every new thread takes the program's region manager as
 * its pager), thread-local storage, std::string/std::vector work, and a
 * rescue jump registered with the region manager (Rm::add_rescue_jump): a
 * load from an unmapped address inside the registered code resumes at the
 * rescue address instead of ending the program.
 * The output does not depend on the pager: the harness compares it.
 */
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <l4/re/env>
#include <l4/re/rm>

// probe(addr): returns the word at addr; on a fault inside [probe,
// probe_end) the region manager resumes at probe_rescue, which returns -1.
extern "C" long probe(long const *addr);
extern "C" char probe_end[], probe_rescue[];
asm(".text\n"
    ".global probe, probe_end, probe_rescue\n"
    "probe:\n"
    "  mov (%rdi), %rax\n"
    "  ret\n"
    "probe_end:\n"
    "probe_rescue:\n"
    "  mov $-1, %rax\n"
    "  ret\n");

static thread_local unsigned long tls_counter = 7;

struct Depth_error : std::runtime_error
{
  int depth;
  Depth_error(int d) : std::runtime_error("depth " + std::to_string(d)), depth(d) {}
};

static int descend(int d)
{
  std::vector<int> frame(64, d);  // unwinding must run destructors
  if (d == 12)
    throw Depth_error(d);
  return descend(d + 1) + frame[0];
}

static unsigned long work(unsigned id, std::vector<unsigned> const &v)
{
  // Each thread touches its own stack and heap, and its own TLS copy.
  std::vector<unsigned long> mine(v.begin(), v.end());
  for (auto &x : mine)
    x = x * (id + 1) + tls_counter++;
  return std::accumulate(mine.begin(), mine.end(), 0UL) + tls_counter;
}

int main()
{
  int fails = 0;

  // Exceptions.
  int caught = 0;
  for (int i = 0; i < 3; ++i)
    try
      {
        descend(0);
      }
    catch (std::runtime_error const &e)
      {
        if (std::string(e.what()) == "depth 12")
          ++caught;
      }
  std::printf("cxx: exceptions: caught %d of 3\n", caught);
  fails += caught != 3;

  // Threads and thread-local storage.
  std::vector<unsigned> v(50000);
  std::iota(v.begin(), v.end(), 1u);
  std::vector<unsigned long> results(6);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < results.size(); ++t)
    threads.emplace_back([t, &v, &results] { results[t] = work(t, v); });
  for (auto &t : threads)
    t.join();
  unsigned long total = 0;
  for (unsigned t = 0; t < results.size(); ++t)
    {
      std::printf("cxx: thread %u: %lu\n", t, results[t]);
      total += results[t];
    }
  std::printf("cxx: main thread's TLS counter still %lu\n", tls_counter);
  fails += tls_counter != 7;

  // A rescue jump.
  auto rm = L4Re::Env::env()->rm();
  long added = rm->add_rescue_jump(reinterpret_cast<l4_addr_t>(&probe),
                                   reinterpret_cast<l4_addr_t>(probe_end),
                                   reinterpret_cast<l4_addr_t>(probe_rescue));
  static long const word = 42;
  long good = probe(&word);
  long bad = probe(reinterpret_cast<long const *>(0x10));
  long removed = rm->remove_rescue_jump(reinterpret_cast<l4_addr_t>(&probe));
  std::printf("cxx: rescue jump: add %ld, probe %ld, faulting probe %ld, remove %ld\n",
              added, good, bad, removed);
  fails += added != 0 || good != 42 || bad != -1 || removed != 0;

  // Strings and vectors.
  std::vector<std::string> words;
  for (unsigned i = 0; i < 2000; ++i)
    words.push_back("w" + std::to_string((i * 7919) % 2000));
  std::sort(words.begin(), words.end());
  std::string joined;
  for (unsigned i = 0; i < words.size(); i += 250)
    joined += words[i] + ",";
  std::printf("cxx: sorted %zu words: %s\n", words.size(), joined.c_str());
  std::printf("cxx: %s\n", fails ? "FAILED" : "all checks passed");
  return fails ? 1 : 0;
}
