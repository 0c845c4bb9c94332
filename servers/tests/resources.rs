//! The server's resources over a long life (issue 14, defect 6): objects
//! nobody holds are released (their descriptors, memfd and cache, written
//! back first), and one client cannot take every object of the server.
//! Real server process under a low descriptor limit, real IPC, real files.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use l4fs::client::{open, query};
use l4fs::proto::mode;
use l4re::cap::IpcGate;
use l4re::env::env;
use l4re::host::spawn;
use l4re::proto::Namespace;
use l4re::{CapRights, Error};

/// Starts `l4fs serve ARGS` under `ulimit -n NOFILE` (soft and hard).
fn serve_limited(nofile: u32, args: &[&str]) -> Served {
    let gate = env().factory().create_gate(None, 0).expect("gate");
    let script = format!("ulimit -n {nofile} && exec \"$0\" \"$@\"");
    let mut a = vec!["-c", script.as_str(), L4FS, "serve"];
    a.extend_from_slice(args);
    let task = spawn(
        Path::new("/bin/sh"),
        &a,
        &[("server", gate.idx(), CapRights::RWS)],
        "l4fs",
    )
    .expect("spawn l4fs");
    Served { task, gate }
}

/// Descriptors the process `pid` has open.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until `cond` holds (up to 10 s).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn five_thousand_distinct_files_one_after_another_under_256_descriptors() {
    let dir = TempDir::new("res-many");
    const N: usize = 5000;
    for i in 0..N {
        std::fs::write(dir.path().join(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    let s = serve_limited(256, &["--root", dir.path().to_str().unwrap()]);
    let ns: l4re::Cap<Namespace> = s.root().cast();
    let mut peak = 0;
    for i in 0..N {
        let f = query(ns, &format!("f{i}")).unwrap_or_else(|e| panic!("query f{i}: {e}"));
        let data = f.read(0, 64).unwrap_or_else(|e| panic!("read f{i}: {e}"));
        assert_eq!(data, format!("file {i}\n").as_bytes(), "content of f{i}");
        drop(f);
        if i % 500 == 0 {
            peak = peak.max(fds_of(s.task.pid()));
        }
    }
    // Still served, and with a bounded number of descriptors.
    let f = query(ns, "f0").expect("query after the run");
    assert_eq!(f.read(0, 64).unwrap(), b"file 0\n");
    drop(f);
    assert!(peak < 200, "server held {peak} descriptors");
    eprintln!("5000 files under ulimit -n 256: peak {peak} server descriptors");
}

#[test]
fn one_client_at_its_limit_gets_a_clear_error_and_others_are_still_served() {
    let dir = TempDir::new("res-limit");
    const N: usize = 600;
    for i in 0..N {
        std::fs::write(dir.path().join(format!("f{i}")), [b'a'; 10]).unwrap();
    }
    std::fs::write(dir.path().join("other"), [0u8; 4096]).unwrap();
    // 1,024 descriptors: each client may hold 128 objects.
    let s = serve_limited(1024, &["--root", dir.path().to_str().unwrap()]);
    let root: l4re::Cap<IpcGate> = s.root();
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..N {
        match open(root, &format!("f{i}"), mode::RO) {
            Ok(f) => {
                // A channel too, per object.
                f.read(0, 1).unwrap_or_else(|e| panic!("read f{i}: {e}"));
                held.push(f);
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some(Error::TooManyOpen),
        "after {} objects",
        held.len()
    );
    assert_eq!(held.len(), 128, "the per-client limit under ulimit -n 1024");
    assert_eq!(Error::TooManyOpen.code(), -24);
    // Another client is served meanwhile: open RW, map, write.
    let out = dir.path().join("out");
    let c = client(
        root,
        &["share-write", "other", "100", "7", out.to_str().unwrap()],
        "client",
    );
    exits_ok(&c, "the second client");
    // What the first client holds still works.
    assert_eq!(held[0].read(0, 10).unwrap(), [b'a'; 10]);
    // Letting go makes room again.
    held.truncate(64);
    eventually("released objects are counted out", || {
        match open(root, "f599", mode::RO) {
            Ok(f) => {
                held.push(f);
                true
            }
            Err(Error::TooManyOpen) => false,
            Err(e) => panic!("open after release: {e}"),
        }
    });
}

#[test]
fn a_file_written_through_a_mapping_reaches_the_host_file_when_its_last_client_lets_go() {
    let dir = TempDir::new("res-writeback");
    let path = dir.path().join("data");
    std::fs::write(&path, vec![0u8; 3 * 4096]).unwrap();
    let s = serve(&["--root", dir.path().to_str().unwrap()]);
    let out = dir.path().join("out");
    // The client opens the file read-write, writes 0x5a at 5000 through a
    // writable mapping and ends (no sync).
    let c = client(
        s.root(),
        &["share-write", "data", "5000", "90", out.to_str().unwrap()],
        "client",
    );
    exits_ok(&c, "the writing client");
    eventually(
        "the byte written through the mapping is in the host file",
        || std::fs::read(&path).unwrap()[5000] == 90,
    );
    let data = std::fs::read(&path).unwrap();
    assert_eq!(data.len(), 3 * 4096);
    assert!(
        data.iter()
            .enumerate()
            .all(|(i, &b)| b == if i == 5000 { 90 } else { 0 })
    );
}

#[test]
fn channels_past_the_per_client_limit_are_answered_but_not_kept() {
    let dir = TempDir::new("res-chan");
    for i in 0..8 {
        std::fs::write(dir.path().join(format!("f{i}")), [b'0' + i as u8; 8]).unwrap();
    }
    let s = serve(&[
        "--root",
        dir.path().to_str().unwrap(),
        "--max-open-per-client",
        "8",
    ]);
    let root: l4re::Cap<IpcGate> = s.root();
    let files: Vec<_> = (0..8)
        .map(|i| open(root, &format!("f{i}"), mode::RO).expect("open"))
        .collect();
    // This thread's channels to the 8 objects (and the root's) are kept...
    for f in &files {
        f.read(0, 1).expect("read");
    }
    let before = fds_of(s.task.pid());
    // ...others' beyond the limit are not: 4 threads, 8 objects each.
    let caps: Vec<l4re::Cap<l4re::cap::Untyped>> = files.iter().map(|f| f.cap()).collect();
    // Counted while the threads (and so their channels) live.
    let done = std::sync::Barrier::new(5);
    let counted = std::sync::Barrier::new(5);
    let mut after = 0;
    std::thread::scope(|sc| {
        for t in 0..4 {
            let caps = &caps;
            let (done, counted) = (&done, &counted);
            sc.spawn(move || {
                for _ in 0..3 {
                    for (i, c) in caps.iter().enumerate() {
                        let f: l4re::Cap<l4fs::proto::FileOps> = c.cast();
                        let data = l4fs::proto::FileOpsClient::read(&f, 0, 8)
                            .unwrap_or_else(|e| panic!("thread {t}, f{i}: {e}"));
                        assert_eq!(data, [b'0' + i as u8; 8]);
                    }
                }
                done.wait();
                counted.wait();
            });
        }
        done.wait();
        // The server takes each new channel with the request it brings.
        std::thread::sleep(Duration::from_millis(200));
        after = fds_of(s.task.pid());
        counted.wait();
    });
    assert!(
        after <= before + 1,
        "the server keeps {} more descriptors for 32 more channels of one client",
        after.saturating_sub(before)
    );
}
