//! The server over a host directory, with real server and client tasks.

mod common;

use common::*;
use l4fs::client::{Window, open, query};
use l4fs::proto::{FileOpsClient, FsOpsClient, mode};
use l4re::host::{Prot, Source};
use l4re::proto::dataspace::Flags as DsFlags;
use l4re::proto::{DataspaceClient, Namespace};
use l4re::{Cap, Error, Result};

#[test]
fn query_gives_read_only_dataspace_that_maps_file_pages() -> Result<()> {
    let dir = TempDir::new("query");
    let data = pattern(1, 5 * 4096 + 100);
    std::fs::create_dir_all(dir.path().join("sub/dir")).unwrap();
    std::fs::write(dir.path().join("sub/dir/file"), &data).unwrap();
    let srv = serve(&["--root", dir.path().to_str().unwrap()]);
    let ns: Cap<Namespace> = srv.root().cast();

    let f = query(ns, "sub/dir/file")?;
    let st = f.ds().info()?;
    assert_eq!(st.size, data.len() as u64);
    assert!(!st.flags.contains(DsFlags::W), "read-only object");

    let w = Window::new(8 * 4096)?;
    for page in 0..6u64 {
        let order = w.map(f.ds(), page * 4096, DsFlags::R)?;
        assert!(order >= 12);
    }
    for (i, &b) in data.iter().enumerate() {
        assert_eq!(w.read_byte(i), b, "byte {i}");
    }
    // The tail of the last page reads as zeros.
    assert_eq!(w.read_byte(data.len() + 5), 0);
    // Through the file protocol too.
    assert_eq!(f.read(4000, 1000)?, data[4000..5000]);
    // A read-only capability refuses a writable mapping and writes.
    assert_eq!(w.map(f.ds(), 0, DsFlags::RW), Err(Error::Access));
    assert_eq!(
        f.file().write(0, l4re::msg::LongBytes::new(b"x")),
        Err(Error::Access)
    );
    // L4::Meta, answered for every object.
    use l4re::proto::{Meta, MetaClient};
    let meta: Cap<Meta> = f.cap().cast();
    assert_eq!(meta.supports(0x4000)?.0, 1, "file speaks Dataspace");
    assert_eq!(meta.supports(0x4F00)?.0, 1, "and l4fs.file");
    assert_eq!(meta.supports(0x4001)?.0, 0);
    let root_meta: Cap<Meta> = srv.root().cast();
    assert_eq!(root_meta.supports(0x4001)?.0, 1, "root speaks Namespace");
    // A directory answers with a namespace that resolves further.
    let d = query(ns, "sub")?;
    let f2 = query(d.cap().cast(), "dir/file")?;
    assert_eq!(f2.ds().info()?.size, data.len() as u64);
    let fs: Cap<l4fs::FsOps> = srv.root().cast();
    let s = fs.stats()?;
    assert!(s.misses >= 1, "{s:?}");
    Ok(())
}

#[test]
fn open_read_write_sync_reach_the_host_file() -> Result<()> {
    let dir = TempDir::new("rw");
    let data = pattern(2, 3 * 4096);
    std::fs::write(dir.path().join("f"), &data).unwrap();
    let srv = serve(&["--root", dir.path().to_str().unwrap()]);
    let rw = open(srv.root(), "f", mode::RW)?;
    let st = rw.ds().info()?;
    assert!(st.flags.contains(DsFlags::W));
    rw.write(100, b"hello through the protocol")?;
    // Through a writable mapping.
    let w = Window::new(4 * 4096)?;
    w.map(rw.ds(), 8192, DsFlags::RW)?;
    for (i, &b) in b"mapped write".iter().enumerate() {
        w.write_byte(8192 + 7 + i, b);
    }
    // Grows the file.
    rw.write(3 * 4096, b"appended")?;
    assert_eq!(rw.file().size()?, 3 * 4096 + 8);
    rw.file().sync()?;
    let mut expect = data.clone();
    expect[100..126].copy_from_slice(b"hello through the protocol");
    expect[8199..8211].copy_from_slice(b"mapped write");
    expect.extend_from_slice(b"appended");
    assert!(std::fs::read(dir.path().join("f")).unwrap() == expect);
    // The read-only object of the same file shares the cache.
    let ro = query(srv.root().cast(), "f")?;
    assert_eq!(ro.read(8199, 12)?, b"mapped write");
    // Truncate within the capacity.
    rw.file().truncate(5000)?;
    rw.file().sync()?;
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), expect[..5000]);
    let cap = rw.file().capacity()?;
    assert_eq!(rw.file().truncate(cap + 1), Err(Error::NoSpace));
    let st = rw.file().stats()?;
    assert!(st.writebacks >= 1, "{st:?}");
    Ok(())
}

#[test]
fn two_clients_share_one_frame_and_see_each_others_writes() -> Result<()> {
    let dir = TempDir::new("share");
    let data = pattern(3, 4 * 4096);
    std::fs::write(dir.path().join("shared"), &data).unwrap();
    let srv = serve(&["--root", dir.path().to_str().unwrap()]);
    // This task maps the file read-only first.
    let ro = query(srv.root().cast(), "shared")?;
    let w = Window::new(4 * 4096)?;
    w.map(ro.ds(), 4096, DsFlags::R)?;
    assert_eq!(w.read_byte(4096 + 10), data[4096 + 10]);
    // Another task maps it writable and writes through its mapping.
    let out = dir.path().join("client.out");
    let c = client(
        srv.root(),
        &["share-write", "shared", "4106", "77", out.to_str().unwrap()],
        "writer",
    );
    exits_ok(&c, "writer");
    // Seen here at once, through our own mapping, without a new map.
    assert_eq!(w.read_byte(4096 + 10), 77);
    // The same frame: same physical page (pagemap, as root) and the same
    // memfd page (device, inode, offset).
    let text = std::fs::read_to_string(&out).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    let their_pfn: u64 = f[0].parse().unwrap();
    let ours = w.backing_identity(4096 + 10).unwrap();
    assert_eq!(
        (f[1], f[2].parse::<u64>().unwrap()),
        (ours.0.as_str(), ours.1),
        "same memfd"
    );
    assert_eq!(
        f[3].parse::<u64>().unwrap() & !0xfff,
        ours.2 & !0xfff,
        "same page of it"
    );
    if let Some(pfn) = w.pfn(4096 + 10) {
        assert_eq!(pfn, their_pfn, "same physical frame");
    } else {
        eprintln!("not root: physical frame numbers not compared");
    }
    // And the write reaches the file after a sync.
    let fs: Cap<l4fs::FsOps> = srv.root().cast();
    fs.sync_all()?;
    assert_eq!(std::fs::read(dir.path().join("shared")).unwrap()[4106], 77);
    Ok(())
}

#[test]
fn private_copies_never_reach_the_file() -> Result<()> {
    // On the host a private (copy-on-write) mapping is made by the client's
    // pager: it maps the page read-only from the server, and on the first
    // write copies it into private memory. This test does what that pager
    // does and checks the server side of the contract: the read-only
    // mapping cannot be made writable, and the private copy's writes reach
    // neither the file nor other mappings.
    let dir = TempDir::new("private");
    let data = pattern(4, 2 * 4096);
    std::fs::write(dir.path().join("elf"), &data).unwrap();
    let srv = serve(&["--root", dir.path().to_str().unwrap()]);
    let ro = query(srv.root().cast(), "elf")?;
    let w = Window::new(2 * 4096)?;
    w.map(ro.ds(), 0, DsFlags::R)?;
    let rw = Prot::READ | Prot::WRITE;
    // mprotect on a page of our own window; expected to fail.
    let r = w.mapping().protect(0, 4096, rw);
    assert!(r.is_err(), "a read-only mapping must not become writable");
    // Copy-on-write as the pager does it: copy, replace by private memory.
    let copy: Vec<u8> = (0..4096).map(|i| w.read_byte(i)).collect();
    // Replaces one page of our own window with private memory.
    let p = w.mapping().replace(0, 4096, rw, Source::Anonymous);
    assert!(p.is_ok(), "{p:?}");
    for (i, &b) in copy.iter().enumerate() {
        w.write_byte(i, b);
    }
    w.write_byte(5, !data[5]);
    assert_eq!(w.read_byte(5), !data[5]);
    // Another mapping and the file are unchanged.
    let w2 = Window::new(2 * 4096)?;
    w2.map(ro.ds(), 0, DsFlags::R)?;
    assert_eq!(w2.read_byte(5), data[5]);
    let fs: Cap<l4fs::FsOps> = srv.root().cast();
    fs.sync_all()?;
    assert_eq!(std::fs::read(dir.path().join("elf")).unwrap(), data);
    Ok(())
}

#[test]
fn bad_input_gets_clear_errors_and_the_server_keeps_serving() -> Result<()> {
    use l4re::Timeout;
    use l4re::msg::LongBytes;
    let dir = TempDir::new("bad");
    let outside = TempDir::new("outside");
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    let data = pattern(5, 3 * 4096);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/f"), &data).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
    std::os::unix::fs::symlink("../..", dir.path().join("sub/up")).unwrap();
    std::os::unix::fs::symlink("sub", dir.path().join("inside")).unwrap();
    let srv = serve(&["--root", dir.path().to_str().unwrap()]);
    let ns: Cap<Namespace> = srv.root().cast();
    let err = |p: &str| query(ns, p).err();
    assert_eq!(err("../x"), Some(Error::Perm));
    assert_eq!(err("sub/../../etc/passwd"), Some(Error::Perm));
    assert_eq!(
        err("escape/secret"),
        Some(Error::Perm),
        "symlink out of the root"
    );
    assert_eq!(
        err("sub/up/etc/passwd"),
        Some(Error::Perm),
        "relative symlink out"
    );
    assert_eq!(err("absent"), Some(Error::NoEnt));
    assert_eq!(err("sub/f/x"), Some(Error::NotDir));
    assert_eq!(err(&"n".repeat(300)), Some(Error::NameTooLong));
    assert_eq!(err("a\0b"), Some(Error::Inval));
    // A symlink that stays inside is followed.
    assert!(query(ns, "inside/f").is_ok());
    // Opening a directory writable, unknown modes.
    assert_eq!(open(srv.root(), "sub", mode::RW).err(), Some(Error::Inval));
    assert_eq!(open(srv.root(), "sub/f", 7).err(), Some(Error::Inval));

    let rw = open(srv.root(), "sub/f", mode::RW)?;
    let w = Window::new(4 * 4096)?;
    let ds = rw.ds();
    let base = w.addr() as u64;
    // Past the end, huge offsets.
    assert_eq!(
        ds.map(3 * 4096, base, DsFlags::R, w_window(&w)),
        Err(Error::Range)
    );
    assert_eq!(
        ds.map(!0xfff, base, DsFlags::R, w_window(&w)),
        Err(Error::Range)
    );
    // Misaligned spot: the byte at the offset cannot land there. (An
    // unaligned fault address with a page-aligned offset, or the reverse,
    // is taken by page.)
    assert!(ds.map(0, base + 8, DsFlags::R, w_window(&w)).is_ok());
    assert!(ds.map(0x10, base, DsFlags::R, w_window(&w)).is_ok());
    assert_eq!(
        ds.map(4, base + 8, DsFlags::R, w_window(&w)),
        Err(Error::Inval)
    );
    // A map asking for no access at all.
    assert_eq!(
        ds.map(0, base, DsFlags::empty(), w_window(&w)),
        Err(Error::Inval)
    );
    // Zero-sized clear is a no-op.
    ds.clear(0, 0)?;
    // Reads and writes past the end or too large.
    assert_eq!(rw.file().read(3 * 4096 + 1, 10), Err(Error::Range));
    assert_eq!(rw.file().read(0, 0)?.len(), 0);
    assert_eq!(rw.file().read(0, u64::MAX)?.len(), l4fs::proto::MAX_IO);
    assert_eq!(
        rw.file().write(u64::MAX - 2, LongBytes::new(b"abcd")),
        Err(Error::Range)
    );
    assert_eq!(
        rw.file().write(1 << 40, LongBytes::new(b"abcd")),
        Err(Error::NoSpace)
    );
    assert_eq!(rw.file().truncate(u64::MAX), Err(Error::NoSpace));
    assert_eq!(rw.file().pin(0, 0), Err(Error::Range));
    assert_eq!(rw.file().pin(0, u64::MAX), Err(Error::Range));
    assert_eq!(rw.file().unpin(0, 4096), Err(Error::Inval));
    assert_eq!(ds.clear(1 << 40, 1), Err(Error::Range));
    // Unknown opcodes and protocols.
    let raw = |label: i64, op: i32| {
        l4re::rpc::call::<()>(rw.cap().idx(), label, Some(op), Timeout::Never, |_| Ok(()))
    };
    assert_eq!(raw(0x4000, 99), Err(Error::NoSys));
    assert_eq!(raw(0x4F00, -1), Err(Error::NoSys));
    assert_eq!(raw(0x4005, 0), Err(Error::BadProto));
    assert_eq!(
        l4re::rpc::call::<()>(
            srv.root().idx(),
            0x4F01,
            Some(1234),
            Timeout::Never,
            |_| Ok(())
        ),
        Err(Error::NoSys)
    );
    // A message too short for its arguments.
    assert_eq!(raw(0x4F00, 0), Err(Error::MsgTooShort));
    // Still serving, with correct data.
    assert_eq!(rw.read(100, 200)?, data[100..300]);
    w.map(ds, 4096, DsFlags::R)?;
    assert_eq!(w.read_byte(4096 + 3), data[4096 + 3]);
    let c = client(
        srv.root(),
        &[
            "share-write",
            "sub/f",
            "0",
            "1",
            dir.path().join("o").to_str().unwrap(),
        ],
        "after",
    );
    exits_ok(&c, "client after the bad requests");
    Ok(())
}

fn w_window(w: &Window) -> l4re::fpage::RcvBuf {
    l4re::fpage::RcvBuf::window(w.addr() as u64, w.len().trailing_zeros() as u8)
}

#[test]
fn map_replies_use_large_flexpages_for_cached_runs() -> Result<()> {
    let dir = TempDir::new("large");
    let data = pattern(6, 64 * 4096);
    std::fs::write(dir.path().join("big"), &data).unwrap();
    let srv = serve(&["--root", dir.path().to_str().unwrap(), "--readahead", "32"]);
    let f = query(srv.root().cast(), "big")?;
    // Sequential reads bring in the file with read-ahead...
    for p in 0..64u64 {
        f.read(p * 4096, 1)?;
    }
    let st = f.file().stats()?;
    assert!(st.readahead_hits > 0 && st.readahead_pages > 0, "{st:?}");
    // ...so a map of a cached, aligned block sends one large flexpage.
    let w = Window::new(64 * 4096)?;
    let order = w.map(f.ds(), 5 * 4096, DsFlags::R)?;
    assert!(order >= 16, "order {order}");
    for i in (0..1usize << order).step_by(997) {
        assert_eq!(w.read_byte(i), data[i]);
    }
    Ok(())
}
