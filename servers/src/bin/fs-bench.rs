//! Benchmark: pages per second mapped through l4fs (a server task, real
//! IPC, memfd-backed page cache) next to reading the same file through the
//! kernel's page cache with `mmap`, in the same run; sequential and random
//! order, cold and warm caches, on a file of at least 64 MiB.
//!
//! `fs-bench [--mib N] [--dir DIR] [--readahead N]`
//!
//! Cold means: the server task was just started (its cache is empty) and
//! the kernel was asked to drop the file's pages (`posix_fadvise
//! DONTNEED`) before the run; the kernel mmap run drops them the same way.
//! Warm means: the caches hold the file; every run maps into a fresh
//! window / fresh `mmap`, so each page is still faulted or mapped once.
//! One byte of every page is read through the mapping. "Populated" runs
//! populate each map reply's range at once (`MADV_POPULATE_READ`), as an L4
//! map installs the page-table entries; the plain runs take one kernel
//! fault per page in the client after the map (the host platform maps
//! memory items without populating them). Each figure is the median of
//! three runs; the kernel mmap runs touch the pages in the same order.

use std::os::fd::AsFd;

use l4re::host::{Mapping, Prot, Source};
use std::path::{Path, PathBuf};
use std::time::Instant;

use l4fs::client::{Window, query};
use l4re::CapRights;
use l4re::cap::IpcGate;
use l4re::env::env;
use l4re::host::{ChildTask, spawn};
use l4re::proto::Namespace;
use l4re::proto::dataspace::Flags as DsFlags;

struct Args {
    mib: usize,
    dir: PathBuf,
    readahead: u32,
}

fn parse() -> Args {
    let mut a = Args {
        mib: 64,
        dir: std::env::temp_dir(),
        readahead: 64,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--mib" => a.mib = v[i + 1].parse().expect("--mib N"),
            "--dir" => a.dir = PathBuf::from(&v[i + 1]),
            "--readahead" => a.readahead = v[i + 1].parse().expect("--readahead N"),
            _ => panic!("usage: fs-bench [--mib N] [--dir DIR] [--readahead N]"),
        }
        i += 2;
    }
    a.mib = a.mib.max(64);
    a
}

fn drop_kernel_cache(path: &Path) {
    let f = std::fs::File::open(path).expect("open");
    let _ = rustix::fs::fdatasync(&f);
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
}

fn order(pages: usize, random: bool) -> Vec<usize> {
    let mut v: Vec<usize> = (0..pages).collect();
    if random {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for i in (1..v.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }
    v
}

/// Touches every page of the file through the kernel's mmap; pages/s.
fn kernel_mmap(path: &Path, pages: &[usize]) -> f64 {
    let f = std::fs::File::open(path).expect("open");
    let len = pages.len() * 4096;
    let t = Instant::now();
    // A read-only shared mapping of our file, unmapped below.
    let m = Mapping::new(len, Prot::READ, Source::Shared(f.as_fd(), 0)).expect("mmap");
    let mut sum = 0u64;
    for &pg in pages {
        sum += m.read_byte(pg * 4096) as u64;
    }
    let dt = t.elapsed().as_secs_f64();
    drop(m);
    std::hint::black_box(sum);
    pages.len() as f64 / dt
}

/// Touches every page through mappings from the server; pages/s, map
/// calls. With `populate`, every map reply's range is populated at once
/// (`MADV_POPULATE_READ`), as an L4 map installs the page-table entries;
/// without it the client takes one kernel fault per page after the map.
fn through_server(
    ns: l4re::Cap<Namespace>,
    name: &str,
    pages: &[usize],
    populate: bool,
) -> (f64, u64) {
    let f = query(ns, name).expect("query");
    let w = Window::new(pages.len() * 4096).expect("window");
    let mut mapped = vec![false; pages.len()];
    let mut calls = 0u64;
    let mut sum = 0u64;
    let t = Instant::now();
    for &pg in pages {
        if !mapped[pg] {
            let order = w.map(f.ds(), (pg * 4096) as u64, DsFlags::R).expect("map");
            calls += 1;
            let n = 1usize << (order - 12);
            let first = pg & !(n - 1);
            let last = (first + n).min(pages.len());
            for m in &mut mapped[first..last] {
                *m = true;
            }
            if populate {
                // Advice on a range of our own window that was just mapped.
                let _ = w
                    .mapping()
                    .populate_read(first * 4096, (last - first) * 4096);
            }
        }
        sum += w.read_byte(pg * 4096) as u64;
    }
    let dt = t.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    (pages.len() as f64 / dt, calls)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Server {
    task: ChildTask,
    gate: l4re::cap::OwnedCap<IpcGate>,
}

fn start_server(dir: &Path, pool: usize, readahead: u32) -> Server {
    let gate = env().factory().create_gate(None, 0).expect("gate");
    let exe = std::env::current_exe().expect("exe");
    let l4fs = exe.with_file_name("l4fs");
    let task = spawn(
        &l4fs,
        &[
            "serve",
            "--root",
            dir.to_str().expect("utf-8 path"),
            "--pool-pages",
            &pool.to_string(),
            "--readahead",
            &readahead.to_string(),
        ],
        &[("server", gate.idx(), CapRights::RWS)],
        "l4fs",
    )
    .expect("spawn l4fs (build it: cargo build --release -p l4fs)");
    Server { task, gate }
}

fn main() {
    let a = parse();
    let dir = a.dir.join(format!("l4fs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("big");
    let size = a.mib << 20;
    let pages = size / 4096;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let mut x = 88172645463325252u64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..a.mib {
            for b in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf).expect("write");
        }
    }
    println!(
        "fs-bench: file {} MiB ({} pages) in {}, server pool {} pages, read-ahead up to {} pages",
        a.mib,
        pages,
        dir.display(),
        pages + 1024,
        a.readahead
    );
    println!(
        "{:<30} {:>14} {:>10} {:>14} {:>8}",
        "run (median of 3)", "l4fs pages/s", "map calls", "mmap pages/s", "ratio"
    );
    for random in [false, true] {
        let ord = order(pages, random);
        let kind = if random { "random" } else { "sequential" };
        // name -> (l4fs runs, map calls, kernel runs)
        let mut rows: Vec<(String, Vec<f64>, u64, Vec<f64>)> = ["cold", "warm", "warm, populated"]
            .iter()
            .map(|n| (format!("{kind} {n}"), Vec::new(), 0, Vec::new()))
            .collect();
        let mut counters = String::new();
        for _ in 0..3 {
            // Cold: fresh server, kernel cache dropped.
            drop_kernel_cache(&path);
            let srv = start_server(&dir, pages + 1024, a.readahead);
            let ns: l4re::Cap<Namespace> = srv.gate.cap().cast();
            let (s, c) = through_server(ns, "big", &ord, false);
            rows[0].1.push(s);
            rows[0].2 = c;
            drop_kernel_cache(&path);
            rows[0].3.push(kernel_mmap(&path, &ord));
            // Warm: both caches hold the file.
            for (i, populate) in [(1, false), (2, true)] {
                let (s, c) = through_server(ns, "big", &ord, populate);
                rows[i].1.push(s);
                rows[i].2 = c;
                rows[i].3.push(kernel_mmap(&path, &ord));
            }
            let fs: l4re::Cap<l4fs::FsOps> = srv.gate.cap().cast();
            if let Ok(st) = l4fs::FsOpsClient::stats(&fs) {
                counters = format!(
                    "  server counters (last run): hits {} misses {} read-ahead pages {} read-ahead hits {}",
                    st.hits, st.misses, st.readahead_pages, st.readahead_hits
                );
            }
            let _ = srv.task.kill();
            let _ = srv.task.wait(None);
        }
        for (name, s, calls, k) in rows {
            let (s, k) = (median(s), median(k));
            println!(
                "{:<30} {:>14.0} {:>10} {:>14.0} {:>8.3}",
                name,
                s,
                calls,
                k,
                s / k
            );
        }
        println!("{counters}");
    }
    println!("ratio = l4fs pages/s / kernel mmap pages/s (higher is better for l4fs)");
    let _ = std::fs::remove_dir_all(&dir);
}
