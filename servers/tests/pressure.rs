//! Memory pressure: a pool far below the working set, several client tasks
//! doing thousands of random reads and writes through the protocol and
//! through mappings; afterwards the files equal the model, and the counters
//! show that the cleaning policy ran.

mod common;

use common::*;
use l4fs::FsOpsClient;
use l4re::Cap;

fn run_pressure(extra: &[&str], clients: u64, ops: u64, ext2: bool) {
    let dir = TempDir::new("pressure");
    let out = TempDir::new("pressure-out");
    let (nfiles, size) = (3u64, 256 * 4096u64);
    for f in 0..nfiles {
        std::fs::write(
            dir.path().join(format!("f{f}")),
            pattern(100 + f, size as usize),
        )
        .unwrap();
    }
    let img = out.path().join("fs.img");
    if ext2 && mkext2(dir.path(), &img, "8M").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "mke2fs missing in CI: install e2fsprogs"
        );
        eprintln!("mke2fs not found: install e2fsprogs; test skipped");
        return;
    }
    // 768 pages of working set, 48 frames.
    let store = if ext2 {
        ["--ext2", img.to_str().unwrap()]
    } else {
        ["--root", dir.path().to_str().unwrap()]
    };
    let mut args = vec![store[0], store[1], "--pool-pages", "48"];
    args.extend_from_slice(extra);
    let srv = serve(&args);
    let tasks: Vec<_> = (0..clients)
        .map(|k| {
            client(
                srv.root(),
                &[
                    "pressure",
                    &k.to_string(),
                    &clients.to_string(),
                    &(1000 + k).to_string(),
                    &ops.to_string(),
                    &nfiles.to_string(),
                    &size.to_string(),
                    out.path().to_str().unwrap(),
                ],
                &format!("client{k}"),
            )
        })
        .collect();
    for (k, t) in tasks.iter().enumerate() {
        exits_ok(t, &format!("client {k}"));
    }
    let fs: Cap<l4fs::FsOps> = srv.root().cast();
    fs.sync_all().unwrap();
    let stats = fs.stats().unwrap();
    let pool = fs.pool().unwrap();
    fs.print_stats().unwrap();
    eprintln!("{stats:?}\n{pool:?}");
    assert!(stats.evictions > 500, "{stats:?}");
    assert!(stats.writebacks > 100, "{stats:?}");
    assert!(stats.revocations > 100, "{stats:?}");
    assert_eq!(pool.frames, 48);
    assert_eq!(pool.pinned, 0);
    // Every file equals the model: each client's slices from its model.
    let slice = (4096 / clients) as usize;
    for f in 0..nfiles {
        let mut expect = pattern(100 + f, size as usize);
        for k in 0..clients as usize {
            let m = std::fs::read(out.path().join(format!("model-{k}-{f}"))).unwrap();
            for p in 0..(size as usize / 4096) {
                let r = p * 4096 + k * slice..p * 4096 + (k + 1) * slice;
                expect[r.clone()].copy_from_slice(&m[r]);
            }
        }
        let got = if ext2 {
            let o = std::process::Command::new("debugfs")
                .arg("-R")
                .arg(format!("cat /f{f}"))
                .arg(&img)
                .output()
                .expect("debugfs (e2fsprogs)");
            o.stdout
        } else {
            std::fs::read(dir.path().join(format!("f{f}"))).unwrap()
        };
        assert_eq!(got.len(), expect.len());
        let bad = got.iter().zip(&expect).position(|(a, b)| a != b);
        assert!(
            bad.is_none(),
            "file f{f} differs from the model at byte {bad:?}"
        );
    }
    if ext2 {
        let fsck = std::process::Command::new("e2fsck")
            .args(["-f", "-n"])
            .arg(&img)
            .output()
            .expect("e2fsck (e2fsprogs)");
        assert!(fsck.status.success(), "e2fsck after the run");
    }
    // Clients saw their mapped pages revoked (mincore) and got large
    // flexpages at times.
    let mut revoked = 0;
    for k in 0..clients {
        let r = std::fs::read_to_string(out.path().join(format!("result-{k}"))).unwrap();
        let v: Vec<u64> = r.split_whitespace().map(|x| x.parse().unwrap()).collect();
        revoked += v[0];
        assert!(v[2] > 0);
    }
    assert!(revoked > 0, "no client saw a revocation");
}

#[test]
fn four_clients_thousands_of_ops_on_a_tiny_pool_lose_nothing() {
    run_pressure(&[], 4, 3000, false);
}

#[test]
fn pressure_on_an_ext2_image_loses_nothing() {
    run_pressure(&[], 3, 2000, true);
}

#[test]
fn the_fifo_policy_also_keeps_the_files_right() {
    run_pressure(&["--policy", "fifo", "--readahead", "0"], 3, 1500, false);
}
