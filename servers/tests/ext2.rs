//! The server over an ext2 image made by `mke2fs -d` in the test (needs
//! e2fsprogs: mke2fs, debugfs, e2fsck).

mod common;

use std::process::Command;

use common::*;
use l4fs::client::{Window, open, query};
use l4fs::proto::{FileOpsClient, FsOpsClient, mode};
use l4re::proto::dataspace::Flags as DsFlags;
use l4re::proto::{DataspaceClient, Namespace};
use l4re::{Cap, Error, Result};

fn debugfs_cat(img: &std::path::Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(img)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(out.status.success());
    out.stdout
}

#[test]
fn ext2_image_open_map_read_write_sync() -> Result<()> {
    let dir = TempDir::new("ext2");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::create_dir_all(src.join("etc/deep")).unwrap();
    let prog = pattern(10, 1 << 20);
    let data = pattern(11, 200 * 1024 + 123);
    std::fs::write(src.join("bin/prog"), &prog).unwrap();
    std::fs::write(src.join("etc/deep/conf"), b"key=value\n").unwrap();
    std::fs::write(src.join("data"), &data).unwrap();
    let img = dir.path().join("fs.img");
    if mkext2(&src, &img, "16M").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "mke2fs missing in CI: install e2fsprogs"
        );
        eprintln!("mke2fs not found: install e2fsprogs; test skipped");
        return Ok(());
    }
    // A small pool, so that the big file cycles through it.
    let srv = serve(&["--ext2", img.to_str().unwrap(), "--pool-pages", "64"]);
    let ns: Cap<Namespace> = srv.root().cast();

    // Read-only, through mappings: the whole 1 MiB program.
    let f = query(ns, "bin/prog")?;
    assert_eq!(f.ds().info()?.size, prog.len() as u64);
    let w = Window::new(prog.len())?;
    for p in 0..(prog.len() / 4096) {
        w.map(f.ds(), (p * 4096) as u64, DsFlags::R)?;
        for i in (p * 4096..(p + 1) * 4096).step_by(331) {
            assert_eq!(w.read_byte(i), prog[i], "byte {i}");
        }
    }
    assert_eq!(f.read(777_777, 300)?, prog[777_777..778_077]);
    assert_eq!(w.map(f.ds(), 0, DsFlags::RW), Err(Error::Access));
    // Directories, component errors.
    let d = query(ns, "etc")?;
    let c = query(d.cap().cast(), "deep/conf")?;
    assert_eq!(c.read(0, 100)?, b"key=value\n");
    assert_eq!(query(ns, "etc/nope").err(), Some(Error::NoEnt));
    assert_eq!(query(ns, "../etc").err(), Some(Error::Perm));
    assert_eq!(query(ns, "data/x").err(), Some(Error::NotDir));

    // Read-write in place, through the protocol and a mapping.
    let rw = open(srv.root(), "data", mode::RW)?;
    let mut expect = data.clone();
    rw.write(5000, b"written through l4fs")?;
    expect[5000..5020].copy_from_slice(b"written through l4fs");
    let wm = Window::new(data.len())?;
    wm.map(rw.ds(), 40 * 4096, DsFlags::RW)?;
    for i in 0..64 {
        wm.write_byte(40 * 4096 + 100 + i, i as u8);
        expect[40 * 4096 + 100 + i] = i as u8;
    }
    // The last, partial block.
    let end = data.len() as u64;
    rw.write(end - 3, b"END")?;
    expect[data.len() - 3..].copy_from_slice(b"END");
    // Limits: no allocation.
    let cap = rw.file().capacity()?;
    assert_eq!(cap, end.next_multiple_of(4096));
    assert_eq!(rw.write(cap, b"x").err(), Some(Error::NoSpace));
    assert_eq!(rw.file().truncate(4096), Err(Error::NoSpace));
    let fs: Cap<l4fs::FsOps> = srv.root().cast();
    fs.sync_all()?;
    assert!(
        debugfs_cat(&img, "/data") == expect,
        "image content after sync"
    );
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let st = fs.stats()?;
    assert!(st.evictions > 0 && st.writebacks > 0, "{st:?}");
    Ok(())
}
