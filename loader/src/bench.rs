//! The paging benchmark (`pager-bench`), printed in one run as ratios:
//!
//! 1. median page-fault service time, seen by the faulting program, under
//!    each pager mode vs a kernel page-cache fault (the same static program
//!    run natively from tmpfs: its read-only data is a file mapping in the
//!    kernel's page cache). Pages are touched 17 apart, so neither the
//!    kernel's fault-around (16 pages) nor the pagers' (16 pages, growing
//!    for a fault where the last one's pages ended) hides faults; a first
//!    pass brings the
//!    pages into the caches, `MADV_DONTNEED` drops the mappings, and the
//!    second pass is measured (the first is reported too);
//! 2. start-to-exit time of a small static program under the loader vs
//!    native `execve` (premapped, the default; demand paged; replaying its
//!    learned profile);
//!    and with a running file server (`loader serve`, whose ready tasks
//!    run it: `loader run` and the small client `l4run`, alternated with
//!    native runs); first vs later
//!    runs (learned prefetch) of `bash-static` and `busybox sh` scripts,
//!    demand paged and premapped (the default),
//!    one-shot and with a running server (`loader run` and `l4run`), with
//!    their faults;
//! 3. a whole-file sequential read (32 MiB of read-only data, page by page)
//!    through the program's mapping, under each pager, and under the
//!    internal pager without fault-around and with the file already in a
//!    running server's cache (as the kernel's page cache holds it), vs the
//!    kernel's mmap.
//!
//! The programs are C, built with `cc -static` (gcc and libc6-dev).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const PFBENCH: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#define SZ (32 << 20)
#define STRIDE (17 * 4096L)
static const unsigned char ro[SZ] __attribute__((aligned(4096))) = {1, [SZ - 1] = 2};
static long ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000L + t.tv_nsec; }
static int cmp(const void *a, const void *b) { long x = *(const long *)a, y = *(const long *)b; return x < y ? -1 : x > y; }
static volatile unsigned s;
static long pass(long *t, int n) {
    for (int i = 0; i < n; i++) { long a = ns(); s += ro[(long)i * STRIDE]; t[i] = ns() - a; }
    qsort(t, n, sizeof(long), cmp);
    return t[n / 2];
}
int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "faults")) {
        int n = SZ / STRIDE;
        long *t = malloc(n * sizeof(long));
        long cold = pass(t, n);
        /* Drop the mappings; the pages stay in the page cache. */
        madvise((void *)ro, SZ, MADV_DONTNEED);
        long warm = pass(t, n);
        printf("%ld %ld\n", warm, cold);
    } else {
        long a = ns();
        for (long i = 0; i < SZ; i += 4096) s += ro[i];
        printf("%ld\n", ns() - a);
    }
    return 0;
}
"#;

const HELLO: &str = "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n";

/// A program without a C library: its only instruction of note is the
/// `exit` system call (of its only thread).
const BARE: &str =
    "void _start(void) { __asm__ volatile(\"mov $60, %eax\\n xor %edi, %edi\\n syscall\"); }\n";

fn build(dir: &Path, name: &str, src: &str) -> Result<PathBuf, String> {
    build_with(dir, name, src, &[])
}

/// As [`build`], with `extra` flags for `cc`.
fn build_with(dir: &Path, name: &str, src: &str, extra: &[&str]) -> Result<PathBuf, String> {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).map_err(|e| e.to_string())?;
    let out = dir.join(name);
    let o = Command::new("cc")
        .args(extra)
        .args(["-O1", "-static", "-o"])
        .arg(&out)
        .arg(&c)
        .output()
        .map_err(|e| format!("cc: {e} (install gcc and libc6-dev)"))?;
    if !o.status.success() {
        return Err(format!("cc {name}: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `cmd` and parses its first output line as nanoseconds.
fn ns_of(cmd: &mut Command) -> Result<f64, String> {
    let o = cmd.output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<f64>().ok())
        .ok_or_else(|| "no figure printed".to_string())
}

/// Runs `cmd` and parses the two numbers of its first line.
fn ns2_of(cmd: &mut Command) -> Result<(f64, f64), String> {
    let o = cmd.output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let out = String::from_utf8_lossy(&o.stdout);
    let v: Vec<f64> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [a, b] => Ok((a, b)),
        _ => Err("no figures printed".into()),
    }
}

/// `loader run` of `prog` with the pager `mode` and a fault-around
/// window of `fault_around` pages (0: none).
fn loader_cmd(loader: &Path, mode: &str, fault_around: u64, prog: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(loader);
    // Learned prefetch off: these figures are of demand paging.
    c.env_remove("L4FS_SOCKET")
        .args([
            "run",
            "--no-prefetch-profile",
            "--pager",
            mode,
            "--fault-around",
        ])
        .arg(fault_around.to_string())
        .arg(prog)
        .args(args);
    c
}

/// The pagers' default fault-around window.
const FA: u64 = l4pager::host::FAULT_AROUND_PAGES;

/// Median of `n` runs of the program printing nanoseconds.
fn runs(n: usize, mut f: impl FnMut() -> Result<f64, String>) -> Result<f64, String> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(f()?);
    }
    Ok(median(v))
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} µs", ns / 1e3)
    }
}

fn run() -> Result<(), String> {
    // tmpfs if there is one: the kernel maps its pages one by one (no
    // large folios), which is the fault the pagers are compared with.
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("pager-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _cleanup = Cleanup(dir.clone());
    // This executable: the benchmark is the `bench` role of `loader`.
    let loader = std::env::current_exe().map_err(|e| e.to_string())?;
    let pf = build(&dir, "pfbench", PFBENCH)?;
    let hello = build(&dir, "hello", HELLO)?;
    let reps = 7;
    println!("pager-bench: {reps} runs each, medians; ratios are to the kernel / native figure");

    // 1. Fault service time.
    let _ = ns2_of(Command::new(&pf).arg("faults"))?; // warm the page cache
    let pair = |mk: &dyn Fn() -> Command| -> Result<(f64, f64), String> {
        let mut w = Vec::new();
        let mut c = Vec::new();
        for _ in 0..reps {
            let (a, b) = ns2_of(&mut mk())?;
            w.push(a);
            c.push(b);
        }
        Ok((median(w), median(c)))
    };
    let (kernel, kernel_first) = pair(&|| {
        let mut c = Command::new(&pf);
        c.arg("faults");
        c
    })?;
    let (internal, internal_cold) =
        pair(&|| loader_cmd(&loader, "internal", FA, &pf, &["faults"]))?;
    // Without fault-around every first touch reaches the pager, cached or
    // not (as in a learned-prefetch recording run).
    let (internal_minor, _) = pair(&|| loader_cmd(&loader, "internal", 0, &pf, &["faults"]))?;
    let (external, external_cold) =
        pair(&|| loader_cmd(&loader, "external", FA, &pf, &["faults"]))?;
    println!(
        "page-fault service time, median of 481 faults 17 pages apart, as the program sees it"
    );
    println!(
        "(second pass after MADV_DONTNEED: the pages are in the page cache / the server's cache):"
    );
    println!("  kernel page-cache fault   {:>10}   1.00×", fmt_ns(kernel));
    println!(
        "  internal pager            {:>10}  {:>5.2}×  (the kernel maps the server's cached page: no pager call)",
        fmt_ns(internal),
        internal / kernel
    );
    println!(
        "  internal, sees each touch {:>10}  {:>5.2}×  (--fault-around 0, as a recording run: minor fault, UFFDIO_CONTINUE)",
        fmt_ns(internal_minor),
        internal_minor / kernel
    );
    println!(
        "  external pager            {:>10}  {:>5.2}×  (UFFDIO_COPY from its own copy, no server call)",
        fmt_ns(external),
        external / kernel
    );
    println!(
        "first touch (pages not yet in the server's cache: a Dataspace map round trip to it):"
    );
    println!(
        "  kernel                    {:>10}   1.00×",
        fmt_ns(kernel_first)
    );
    println!(
        "  internal pager            {:>10}  {:>5.2}×",
        fmt_ns(internal_cold),
        internal_cold / kernel_first
    );
    println!(
        "  external pager            {:>10}  {:>5.2}×",
        fmt_ns(external_cold),
        external_cold / kernel_first
    );

    // 2. Start to exit.
    let time = |c: &mut Command| -> Result<f64, String> {
        let t = Instant::now();
        let o = c.output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("{c:?} failed"));
        }
        Ok(t.elapsed().as_nanos() as f64)
    };
    let native = runs(reps, || time(&mut Command::new(&hello)))?;
    let li = runs(reps, || {
        time(&mut loader_cmd(&loader, "internal", FA, &hello, &[]))
    })?;
    let ld = runs(reps, || {
        let mut c = loader_cmd(&loader, "internal", FA, &hello, &[]);
        c.args(["--premap-pages", "0"]);
        time(&mut c)
    })?;
    let le = runs(reps, || {
        time(&mut loader_cmd(&loader, "external", FA, &hello, &[]))
    })?;
    // The same with the learned profile a first (untimed) run recorded.
    let cache = dir.join("cache-hello");
    let profiled = || {
        let mut c = Command::new(&loader);
        c.env("XDG_CACHE_HOME", &cache)
            .env_remove("L4FS_SOCKET")
            .args(["run", "--premap-pages", "0"])
            .arg(&hello);
        c
    };
    time(&mut profiled())?;
    let lp = runs(reps, || time(&mut profiled()))?;
    println!(
        "start to exit of a static hello (one-shot: the loader serves the files from a thread \
         and forks the task):"
    );
    println!("  native execve             {:>10}   1.00×", fmt_ns(native));
    println!(
        "  loader, internal pager    {:>10}  {:>5.2}×  (its file pages and bss mapped before it starts)",
        fmt_ns(li),
        li / native
    );
    println!(
        "  internal, demand paged    {:>10}  {:>5.2}×  (--premap-pages 0)",
        fmt_ns(ld),
        ld / native
    );
    println!(
        "  loader, external pager    {:>10}  {:>5.2}×",
        fmt_ns(le),
        le / native
    );
    println!(
        "  internal, learned profile {:>10}  {:>5.2}×  (demand paged, a later run: the recorded pages mapped first)",
        fmt_ns(lp),
        lp / native
    );
    // Most of a static hello's native run is its C library's start-up:
    // without one, what a start costs the loader stands out.
    let bare = build_with(&dir, "bare", BARE, &["-nostdlib"])?;
    let nb = runs(reps, || time(&mut Command::new(&bare)))?;
    let lb = runs(reps, || {
        time(&mut loader_cmd(&loader, "internal", FA, &bare, &[]))
    })?;
    println!(
        "  native, no C library      {:>10}   1.00×  (a program that makes the exit system call: the hello's C library start-up is {} of its {})",
        fmt_ns(nb),
        fmt_ns((native - nb).max(0.0)),
        fmt_ns(native)
    );
    println!(
        "  loader, no C library      {:>10}  {:>5.2}×  (the loader's own cost of a start and an exit: {})",
        fmt_ns(lb),
        lb / nb,
        fmt_ns(lb - nb)
    );

    // 2b. With a running file server (`loader serve`): its ready tasks
    // run the program; the commands a user runs: `loader run` finding the
    // server, and the small client `l4run`. Alternated with native runs.
    let sock = dir.join("fs.sock");
    let _server = Server::start(&loader, &sock)?;
    let l4run = l4run_path(&loader);
    let (mut nat2, mut ls, mut lr, mut lrb) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 * reps {
        nat2.push(time(&mut Command::new(&hello))?);
        let mut c = loader_cmd(&loader, "internal", FA, &hello, &[]);
        c.env("L4FS_SOCKET", &sock);
        ls.push(time(&mut c)?);
        if let Some(r) = &l4run {
            lr.push(time(
                Command::new(r).arg("--server").arg(&sock).arg(&hello),
            )?);
            time(&mut Command::new(&bare))?;
            lrb.push(time(Command::new(r).arg("--server").arg(&sock).arg(&bare))?);
        }
    }
    let (nat2, ls) = (median(nat2), median(ls));
    println!(
        "start to exit of a static hello with a running file server (loader serve: a ready task \
         runs it; {} runs alternated with native; ratios to the native figure above, measured \
         back to back):",
        3 * reps
    );
    println!(
        "  native, alternated        {:>10}  {:>5.2}×  (after a loader run: the server readies the \
         next task meanwhile)",
        fmt_ns(nat2),
        nat2 / native
    );
    println!(
        "  loader, internal pager    {:>10}  {:>5.2}×  (loader run finding the server: its client)",
        fmt_ns(ls),
        ls / native
    );
    match l4run {
        Some(_) => {
            let lr = median(lr);
            println!(
                "  l4run                     {:>10}  {:>5.2}×  (the small client, no C library)",
                fmt_ns(lr),
                lr / native
            );
            let lrb = median(lrb);
            println!(
                "  l4run, no C library      {:>10}  {:>5.2}×  (to that program's native figure above: a served run's own cost {})",
                fmt_ns(lrb),
                lrb / nb,
                fmt_ns(lrb - nb)
            );
        }
        None => println!("  l4run: not built, skipped"),
    }

    // 2c. Learned prefetch: first run (records) vs later runs (replay).
    let scripts: [(&str, &[&str]); 2] = [
        (
            "/bin/bash-static",
            &[
                "-c",
                "for i in 1 2 3; do x=$((x+i)); done; echo $x; printf '%s\\n' a b | while read l; do echo $l; done",
            ],
        ),
        (
            "/bin/busybox",
            &[
                "sh",
                "-c",
                "for i in 1 2 3; do x=$((x+i)); done; echo $x; echo a b c | wc -w",
            ],
        ),
    ];
    println!(
        "learned prefetch: first run (no profile: recorded) vs later runs (replayed), medians; \
         one-shot and server demand paged (--premap-pages 0), premapped: the default (all file \
         pages and bss mapped before the program starts):"
    );
    for (prog, args) in scripts {
        if !Path::new(prog).exists() {
            println!("  {prog}: not installed, skipped");
            continue;
        }
        let nat = runs(reps, || time(Command::new(prog).args(args)))?;
        for (server, premap, small) in [
            (false, false, false),
            (true, false, false),
            (true, false, true),
            (false, true, false),
        ] {
            if small && l4run.is_none() {
                continue;
            }
            let one = |fresh: bool, k: usize| -> Result<(f64, f64), String> {
                let cache = dir.join(format!("cache-{k}"));
                if fresh {
                    let _ = std::fs::remove_dir_all(&cache);
                }
                let st = dir.join("st.json");
                let mut c = match (&l4run, small) {
                    (Some(r), true) => Command::new(r),
                    _ => {
                        let mut c = Command::new(&loader);
                        c.arg("run");
                        c
                    }
                };
                c.env("XDG_CACHE_HOME", &cache).env_remove("L4FS_SOCKET");
                if server {
                    c.env("L4FS_SOCKET", &sock);
                }
                c.arg("--stats").arg(&st);
                if !premap {
                    c.args(["--premap-pages", "0"]);
                }
                c.arg(prog).args(args);
                let t = time(&mut c)?;
                let j = std::fs::read_to_string(&st).map_err(|e| e.to_string())?;
                Ok((t, json_num(&j, "total")))
            };
            let (mut ft, mut ff, mut lt, mut lf) = (vec![], vec![], vec![], vec![]);
            for k in 0..reps {
                let (t, f) = one(true, k)?;
                ft.push(t);
                ff.push(f);
                for _ in 0..2 {
                    let (t, f) = one(false, k)?;
                    lt.push(t);
                    lf.push(f);
                }
            }
            let (ft, ff, lt, lf) = (median(ft), median(ff), median(lt), median(lf));
            println!(
                "  {:<16} {:<10} native {:>9}; first {:>9} {:>5.2}× {:>4} faults; later {:>9} {:>5.2}× {:>4} faults ({:.2}× faster, {:.0}% of the faults)",
                prog.rsplit('/').next().unwrap_or(prog),
                match (server, premap, small) {
                    (true, _, true) => "l4run",
                    (true, _, false) => "server",
                    (false, false, _) => "one-shot",
                    (false, true, _) => "premapped",
                },
                fmt_ns(nat),
                fmt_ns(ft),
                ft / nat,
                ff,
                fmt_ns(lt),
                lt / nat,
                lf,
                ft / lt,
                100.0 * lf / ff.max(1.0)
            );
        }
    }

    // 3. Sequential read.
    let kseq = runs(reps, || ns_of(Command::new(&pf).arg("seq")))?;
    let i16 = runs(reps, || {
        ns_of(&mut loader_cmd(&loader, "internal", FA, &pf, &["seq"]))
    })?;
    let i0 = runs(reps, || {
        ns_of(&mut loader_cmd(&loader, "internal", 0, &pf, &["seq"]))
    })?;
    let e16 = runs(reps, || {
        ns_of(&mut loader_cmd(&loader, "external", FA, &pf, &["seq"]))
    })?;
    // The file in a running server's cache, as the kernel's page cache
    // holds it for the baseline: one run to fill it, then the measured ones.
    let warm = || {
        let mut c = loader_cmd(&loader, "internal", FA, &pf, &["seq"]);
        c.env("L4FS_SOCKET", &sock);
        c
    };
    ns_of(&mut warm())?;
    let w16 = runs(reps, || ns_of(&mut warm()))?;
    println!("sequential read of 32 MiB through a mapping (8192 pages):");
    println!("  kernel mmap               {:>10}   1.00×", fmt_ns(kseq));
    println!(
        "  internal pager            {:>10}  {:>5.2}×  (fault-around {FA} pages)",
        fmt_ns(i16),
        i16 / kseq
    );
    println!(
        "  internal, no fault-around {:>10}  {:>5.2}×",
        fmt_ns(i0),
        i0 / kseq
    );
    println!(
        "  internal, server warm     {:>10}  {:>5.2}×  (loader serve's cache holds the file)",
        fmt_ns(w16),
        w16 / kseq
    );
    println!(
        "  external pager            {:>10}  {:>5.2}×  (fault-around {FA} pages)",
        fmt_ns(e16),
        e16 / kseq
    );
    Ok(())
}

/// The small client of `loader serve` (`l4run`, built by the loader's
/// build script): next to `loader`, else where the build put it.
fn l4run_path(loader: &Path) -> Option<PathBuf> {
    let next = loader.with_file_name("l4run");
    if next.is_file() {
        return Some(next);
    }
    option_env!("L4RUN_PATH")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

/// The number after `"key":` in a statistics line.
fn json_num(j: &str, key: &str) -> f64 {
    let k = format!("\"{key}\":");
    j.find(&k)
        .and_then(|at| {
            j[at + k.len()..]
                .split([',', '}'])
                .next()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// A `loader serve` for the benchmark, stopped at the end.
struct Server(std::process::Child);

impl Server {
    fn start(loader: &Path, sock: &Path) -> Result<Server, String> {
        let child = Command::new(loader)
            .args(["serve", "--socket"])
            .arg(sock)
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        for _ in 0..500 {
            if sock.exists() {
                return Ok(Server(child));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err("loader serve did not start".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = l4re::host::signal::kill(self.0.id() as i32, libc::SIGTERM);
        let _ = self.0.wait();
    }
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark.
pub fn main() {
    if let Err(e) = run() {
        eprintln!("pager-bench: {e}");
        std::process::exit(1);
    }
}
