//! The paging benchmark (`pager-bench`), printed in one run as ratios:
//!
//! 1. median page-fault service time, seen by the faulting program, under
//!    each pager mode vs a kernel page-cache fault (the same static program
//!    run natively from tmpfs: its read-only data is a file mapping in the
//!    kernel's page cache). Pages are touched 16 apart, so the kernel's
//!    fault-around (16 pages) does not hide faults; a first pass brings the
//!    pages into the caches, `MADV_DONTNEED` drops the mappings, and the
//!    second pass is measured (the first is reported too);
//! 2. start-to-exit time of a small static program under the loader vs
//!    native `execve`;
//! 3. a whole-file sequential read (32 MiB of read-only data, page by page)
//!    through the program's mapping, under each pager, and under the
//!    internal pager without fault-around, vs the kernel's mmap.
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
static const unsigned char ro[SZ] __attribute__((aligned(4096))) = {1, [SZ - 1] = 2};
static long ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000L + t.tv_nsec; }
static int cmp(const void *a, const void *b) { long x = *(const long *)a, y = *(const long *)b; return x < y ? -1 : x > y; }
static volatile unsigned s;
static long pass(long *t, int n) {
    for (int i = 0; i < n; i++) { long a = ns(); s += ro[(long)i * 65536]; t[i] = ns() - a; }
    qsort(t, n, sizeof(long), cmp);
    return t[n / 2];
}
int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "faults")) {
        int n = SZ / 65536;
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

fn build(dir: &Path, name: &str, src: &str) -> Result<PathBuf, String> {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).map_err(|e| e.to_string())?;
    let out = dir.join(name);
    let o = Command::new("cc")
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
    c.args(["run", "--pager", mode, "--fault-around"])
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
    let (external, external_cold) =
        pair(&|| loader_cmd(&loader, "external", FA, &pf, &["faults"]))?;
    println!(
        "page-fault service time, median of 512 faults 16 pages apart, as the program sees it"
    );
    println!(
        "(second pass after MADV_DONTNEED: the pages are in the page cache / the server's cache):"
    );
    println!("  kernel page-cache fault   {:>10}   1.00×", fmt_ns(kernel));
    println!(
        "  internal pager            {:>10}  {:>5.2}×  (minor fault, UFFDIO_CONTINUE)",
        fmt_ns(internal),
        internal / kernel
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
    let le = runs(reps, || {
        time(&mut loader_cmd(&loader, "external", FA, &hello, &[]))
    })?;
    println!("start to exit of a static hello (includes starting the filesystem server task):");
    println!("  native execve             {:>10}   1.00×", fmt_ns(native));
    println!(
        "  loader, internal pager    {:>10}  {:>5.2}×",
        fmt_ns(li),
        li / native
    );
    println!(
        "  loader, external pager    {:>10}  {:>5.2}×",
        fmt_ns(le),
        le / native
    );

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
        "  external pager            {:>10}  {:>5.2}×  (fault-around {FA} pages)",
        fmt_ns(e16),
        e16 / kseq
    );
    Ok(())
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
