//! `l4fs-client`: a Rust client of l4fs under Fiasco that uses the
//! server's own protocols (`l4fs.fs`, `l4fs.file`) besides L4Re's, and
//! prints TAP for L4Re's test harness (test `test_l4fs_client`).
//!
//! It expects the image of `fiasco/l4fs/mkimage.sh` (`hello.txt`,
//! `rw.bin`, `big.bin`, `direct.bin`, `sub/dir/nested.txt`), served with a
//! pool smaller than `big.bin` and `--copy` (writable), on its capability
//! `"fs"`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use l4re::tap::Tap;

use l4re::cap::{self, IpcGate, OwnedCap, Untyped};
use l4re::env::{env, log_line};
use l4re::fiasco::mem;
use l4re::fpage::RcvBuf;
use l4re::msg::LongBytes;
use l4re::proto::dataspace::Flags as DsFlags;
use l4re::proto::{Dataspace, DataspaceClient, Namespace, NamespaceClient};
use l4re::{Cap, Error, IpcError, Result};
use l4re_rt::Args;

use crate::cache::{CacheStats, PAGE_SIZE};
use crate::proto::{FileOps, FileOpsClient, FsOps, FsOpsClient, MAX_IO, mode};

/// The text of `hello.txt` in the test image.
pub const HELLO: &[u8] = b"Hello from l4fs, an ext2 image served by a Rust server on Fiasco.OC!\n";
/// Size of `big.bin` (pattern bytes), larger than the test's pool.
pub const BIG_SIZE: u64 = 1 << 20;
/// Size of `rw.bin` (pattern bytes).
pub const RW_SIZE: u64 = 64 << 10;
/// Size of `direct.bin` (pattern bytes, 2 MiB-aligned in the image: l4fs
/// maps it straight from the image).
pub const DIRECT_SIZE: u64 = 2 << 20;

/// Byte `i` of the pattern files (as `mkimage.sh` writes them).
pub fn pattern_byte(i: u64) -> u8 {
    (i as u8) ^ ((i >> 12) as u8).wrapping_mul(31)
}

struct File {
    cap: OwnedCap<Untyped>,
}

impl File {
    fn ops(&self) -> Cap<FileOps> {
        self.cap.cap().cast()
    }

    fn ds(&self) -> Cap<Dataspace> {
        self.cap.cap().cast()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = (len - out.len()).min(MAX_IO) as u64;
            let chunk = self.ops().read(offset + out.len() as u64, want)?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        for (i, c) in data.chunks(MAX_IO).enumerate() {
            let n = self
                .ops()
                .write(offset + (i * MAX_IO) as u64, LongBytes::new(c))?;
            if n != c.len() as u64 {
                return Err(Error::Io);
            }
        }
        Ok(())
    }
}

fn query(ns: Cap<Namespace>, path: &str) -> Result<File> {
    let slot = cap::alloc::<Untyped>()?;
    ns.query(LongBytes::new(path.as_bytes()), RcvBuf::cap(slot.idx()))?;
    Ok(File { cap: slot })
}

fn open(root: Cap<FsOps>, path: &str, m: u32) -> Result<File> {
    let slot = cap::alloc::<Untyped>()?;
    root.open(LongBytes::new(path.as_bytes()), m, RcvBuf::cap(slot.idx()))?;
    Ok(File { cap: slot })
}

/// Queries `path` until the server has bound its gate (ned starts server
/// and client together).
fn first_query(ns: Cap<Namespace>, path: &str) -> Result<File> {
    let mut tries = 0;
    loop {
        match query(ns, path) {
            Err(Error::Ipc(IpcError::NotExistent)) if tries < 500 => {
                tries += 1;
                l4re::fiasco::sleep_ms(10);
            }
            r => return r,
        }
    }
}

fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(pattern_byte).collect()
}

/// Copies `len` bytes at `offset` out of a mapping (page faults on the way
/// go to this program's region map, which asks l4fs).
fn mapped(m: &mem::Attachment, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut v = alloc::vec![0u8; len];
    m.read(offset, &mut v).ok().map(|()| v)
}

/// Pages of `direct.bin` the checks read through the read-only mapping.
const DIRECT_PAGES: [u64; 4] = [0, 5, 300, 511];

/// Maps `direct.bin` read-only (2 MiB-aligned, made present at once) and
/// checks that its pages came straight from the image: the right bytes,
/// counted as direct pages, and nothing read into the cache. Returns the
/// file and its mapping.
fn map_direct(t: &mut Tap, ns: Cap<Namespace>) -> Option<(File, mem::Attachment)> {
    let ro = query(ns, "direct.bin");
    t.ok(ro.is_ok(), "query direct.bin");
    let ro = ro.ok()?;
    let m = mem::Attachment::present(ro.ds().idx(), DIRECT_SIZE, false, 21);
    t.ok(m.is_ok(), "direct.bin mapped read-only (Rm attach, eager)");
    let m = m.ok()?;
    let good = DIRECT_PAGES.iter().all(|&p| {
        let off = p * PAGE_SIZE;
        mapped(&m, off, PAGE_SIZE as usize).is_some_and(|v| v == pattern(off, v.len()))
    });
    t.ok(good, "direct.bin read through the mapping: the pattern");
    let st: CacheStats = ro.ops().stats().unwrap_or_default();
    log_line(&format!("# direct.bin stats after mapping: {st:?}"));
    t.ok(
        st.direct_pages >= DIRECT_SIZE / PAGE_SIZE && st.misses == 0 && st.readahead_pages == 0,
        "its pages were mapped straight from the image, none read into the cache",
    );
    Some((ro, m))
}

fn l4fs_client_main(args: Args) -> i32 {
    let mut t = Tap::new();
    if args.iter().any(|a| a == "--read-only") {
        run_read_only(&mut t);
    } else {
        run(&mut t);
    }
    // Let the server (started with --log-stats 1) log its statistics.
    l4re::fiasco::sleep_ms(300);
    for line in t.lines() {
        log_line(&line);
    }
    i32::from(!t.all_passed())
}
l4re_rt::entry!(l4fs_client = l4fs_client_main);

fn run(t: &mut Tap) {
    let Some(gate) = env().get_cap::<IpcGate>("fs") else {
        t.ok(false, "capability \"fs\" in the environment");
        return;
    };
    let ns: Cap<Namespace> = gate.cast();
    let root: Cap<FsOps> = gate.cast();

    // Namespace query + Dataspace info + l4fs.file read.
    let hello = first_query(ns, "hello.txt");
    t.ok(
        hello.is_ok(),
        &format!("Namespace query of hello.txt ({:?})", hello.as_ref().err()),
    );
    let Ok(hello) = hello else { return };
    let info = hello.ds().info();
    t.ok(
        info.is_ok_and(|s| s.size == HELLO.len() as u64 && !s.flags.contains(DsFlags::W)),
        "Dataspace info: size of hello.txt, read-only",
    );
    t.eq(
        "l4fs.file read of hello.txt",
        hello.read(0, 4096).ok().as_deref(),
        Some(HELLO),
    );
    t.eq(
        "nested path sub/dir/nested.txt",
        query(ns, "sub/dir/nested.txt")
            .and_then(|f| f.read(0, 100))
            .map(|v| String::from_utf8_lossy(&v).into_owned()),
        Ok(String::from("nested file\n")),
    );

    // Open read-write, write, sync, read back.
    let rw = open(root, "rw.bin", mode::RW);
    t.ok(
        rw.is_ok(),
        "l4fs.fs open rw.bin read-write (image copied: writable)",
    );
    let Ok(rw) = rw else { return };
    t.eq("rw.bin size", rw.ops().size(), Ok(RW_SIZE));
    t.ok(
        rw.read(0, RW_SIZE as usize)
            .is_ok_and(|v| v == pattern(0, RW_SIZE as usize)),
        "rw.bin holds the pattern",
    );
    let data: Vec<u8> = (0..3000u32).map(|i| (i as u8) ^ 0xA5).collect();
    t.eq("write 3000 bytes at 5000", rw.write(5000, &data), Ok(()));
    t.eq("sync", rw.ops().sync(), Ok(()));
    t.ok(
        rw.read(5000, data.len()).is_ok_and(|v| v == data),
        "read back what was written",
    );
    t.ok(
        rw.read(4000, 1000).is_ok_and(|v| v == pattern(4000, 1000)),
        "bytes before the write unchanged",
    );

    // Writable mapping: write into the mapped page; the page cache learns
    // of it from the kernel's dirty bit when it takes the page away.
    let before = root.stats().unwrap_or_default();
    let window = mem::reserve_area(1 << 21, 21);
    t.ok(window.is_ok(), "reserve a 2 MiB receive window");
    let Ok(win) = window else { return };
    let off2 = 2 * PAGE_SIZE;
    let off5 = 5 * PAGE_SIZE;
    let m2 = rw
        .ds()
        .map(off2, win + off2, DsFlags::RW, RcvBuf::window(win, 21));
    let m5 = rw
        .ds()
        .map(off5, win + off5, DsFlags::RW, RcvBuf::window(win, 21));
    t.ok(
        m2.is_ok() && m5.is_ok(),
        "Dataspace map of pages 2 and 5 of rw.bin writable",
    );
    if m2.is_err() || m5.is_err() {
        return;
    }
    let msg = b"written through a mapping";
    // SAFETY: page 2 of the window was mapped writable just now (the reply
    // covers at least that page); nothing else uses the window.
    let seen = unsafe {
        let p = (win + off2 + 100) as *mut u8;
        let old = *p;
        core::ptr::copy_nonoverlapping(msg.as_ptr(), p, msg.len());
        old
    };
    t.eq("mapped page shows the file", seen, pattern_byte(off2 + 100));
    t.ok(
        rw.read(off2 + 100, msg.len()).is_ok_and(|v| v == msg),
        "the server sees the mapped write at once (same frame)",
    );
    let pool = root.pool().map(|p| p.frames).unwrap_or(0);
    t.ok(
        root.clean(pool).is_ok_and(|n| n > 0),
        "l4fs.fs clean: every frame to the free pool",
    );
    let after = root.stats().unwrap_or_default();
    t.eq(
        "exactly one write-back: the page written through the mapping, not the one only mapped writable",
        after.writebacks - before.writebacks,
        1,
    );

    // The same through sync: map writable again (the pages come back from
    // the free pool), write one page, sync.
    let off3 = 3 * PAGE_SIZE;
    let m3 = rw
        .ds()
        .map(off3, win + off3, DsFlags::RW, RcvBuf::window(win, 21));
    t.ok(m3.is_ok(), "Dataspace map of page 3 writable (again)");
    if m3.is_err() {
        return;
    }
    // SAFETY: page 3 of the window was mapped writable just now.
    unsafe {
        core::ptr::copy_nonoverlapping(msg.as_ptr(), (win + off3) as *mut u8, msg.len());
    }
    let before = root.stats().unwrap_or_default();
    t.eq("sync", rw.ops().sync(), Ok(()));
    let after = root.stats().unwrap_or_default();
    t.eq(
        "sync writes back only the page written through the mapping",
        after.writebacks - before.writebacks,
        1,
    );
    t.ok(root.clean(pool).is_ok(), "l4fs.fs clean after the sync");
    t.eq(
        "no write-back on eviction after the sync (pages write-protected, clean)",
        root.stats().unwrap_or_default().writebacks - after.writebacks,
        0,
    );

    // Direct mapping, then a write through another, writable mapping of
    // the same file: the reader's image page is revoked, and it sees the
    // cache's page with the new bytes from then on.
    let Some((direct, ro_map)) = map_direct(t, ns) else {
        return;
    };
    let rw_direct = open(root, "direct.bin", mode::RW);
    t.ok(rw_direct.is_ok(), "open direct.bin read-write");
    let Ok(rw_direct) = rw_direct else { return };
    let rw_map = mem::Attachment::new(rw_direct.ds().idx(), DIRECT_SIZE, true);
    t.ok(rw_map.is_ok(), "direct.bin mapped writable (Rm attach)");
    let Ok(mut rw_map) = rw_map else { return };
    let news = b"new bytes through the writable mapping";
    let at = 5 * PAGE_SIZE + 10;
    t.eq(
        "write through the writable mapping",
        rw_map.write(at, news),
        Ok(()),
    );
    t.ok(
        mapped(&ro_map, at, news.len()).is_some_and(|v| v == news),
        "the read-only mapping shows the new bytes",
    );
    t.ok(
        mapped(&ro_map, at - 10, 10).is_some_and(|v| v == pattern(at - 10, 10))
            && mapped(&ro_map, 300 * PAGE_SIZE, 64)
                .is_some_and(|v| v == pattern(300 * PAGE_SIZE, 64)),
        "and the old bytes around them and elsewhere",
    );
    let st: CacheStats = direct.ops().stats().unwrap_or_default();
    log_line(&format!("# direct.bin stats after the write: {st:?}"));
    t.ok(
        st.direct_revocations > 0,
        "the directly mapped pages under the writable mapping were revoked",
    );
    t.ok(
        direct.read(at, news.len()).is_ok_and(|v| v == news),
        "l4fs.file read sees the new bytes too",
    );

    // A file larger than the pool: everything is evicted and read again.
    let big = query(ns, "big.bin");
    t.ok(big.is_ok(), "query big.bin");
    let Ok(big) = big else { return };
    let mut good = true;
    let mut off = 0;
    while good && off < BIG_SIZE {
        let n = (16 * MAX_IO).min((BIG_SIZE - off) as usize);
        good = big.read(off, n).is_ok_and(|v| v == pattern(off, n));
        off += n as u64;
    }
    t.ok(
        good,
        "big.bin (1 MiB, pool 64 frames) read through l4fs.file",
    );
    // rw.bin's pages were evicted for big.bin: these come from the image.
    t.ok(
        rw.read(off2 + 100, msg.len()).is_ok_and(|v| v == msg),
        "the mapped write reached the image (read again after eviction)",
    );
    t.ok(
        rw.read(off3, msg.len()).is_ok_and(|v| v == msg),
        "the mapped write synced reached the image",
    );
    t.ok(
        rw.read(5000, data.len()).is_ok_and(|v| v == data),
        "the protocol write reached the image",
    );
    let total = root.stats().unwrap_or_default();
    log_line(&format!("# total stats: {total:?}"));
    t.ok(
        total.evictions > 0 && total.misses > 0 && total.revocations > 0,
        "stats: misses, evictions and revocations counted",
    );
    let big_stats: CacheStats = big.ops().stats().unwrap_or_default();
    t.ok(
        big_stats.misses + big_stats.readahead_pages >= BIG_SIZE / PAGE_SIZE,
        "big.bin stats: every page read from the image",
    );
    t.eq("print_stats", root.print_stats(), Ok(()));

    // Bad input.
    t.eq(
        "query of an absent name: -ENOENT",
        query(ns, "no-such-file").err(),
        Some(Error::NoEnt),
    );
    t.eq(
        "query with ..: -EPERM",
        query(ns, "sub/../hello.txt").err(),
        Some(Error::Perm),
    );
    t.eq(
        "open ../x: -EPERM",
        open(root, "../x", mode::RO).err(),
        Some(Error::Perm),
    );
    t.eq(
        "open of a directory read-write: -EINVAL",
        open(root, "sub", mode::RW).err(),
        Some(Error::Inval),
    );
    t.eq(
        "write through the read-only object: -EACCES",
        hello.ops().write(0, LongBytes::new(b"x")).err(),
        Some(Error::Access),
    );
    t.eq(
        "writable map of the read-only object: -EACCES",
        hello
            .ds()
            .map(0, win, DsFlags::RW, RcvBuf::window(win, 21))
            .err(),
        Some(Error::Access),
    );
    t.eq(
        "read past the end: -ERANGE",
        hello.ops().read(1 << 20, 10).err(),
        Some(Error::Range),
    );
    t.eq(
        "write past the capacity: -ENOSPC",
        rw.ops().write(1 << 30, LongBytes::new(b"x")).err(),
        Some(Error::NoSpace),
    );
    t.ok(
        hello.read(0, 5).is_ok_and(|v| v == b"Hello"),
        "the server still serves after the errors",
    );
}

/// The checks against a server whose image is read-only (a boot module
/// served without `--copy`).
fn run_read_only(t: &mut Tap) {
    let Some(gate) = env().get_cap::<IpcGate>("fs") else {
        t.ok(false, "capability \"fs\" in the environment");
        return;
    };
    let ns: Cap<Namespace> = gate.cast();
    let root: Cap<FsOps> = gate.cast();
    let hello = first_query(ns, "hello.txt");
    t.ok(hello.is_ok(), "Namespace query of hello.txt");
    t.eq(
        "read hello.txt",
        hello.and_then(|f| f.read(0, 4096)).ok().as_deref(),
        Some(HELLO),
    );
    t.eq(
        "open rw.bin read-write: -EACCES (the boot module is read-only)",
        open(root, "rw.bin", mode::RW).err(),
        Some(Error::Access),
    );
    let rw = open(root, "rw.bin", mode::RO);
    t.ok(rw.is_ok(), "open rw.bin read-only");
    let Ok(rw) = rw else { return };
    t.eq(
        "its Dataspace info says read-only",
        rw.ds().info().map(|s| s.flags.contains(DsFlags::W)),
        Ok(false),
    );
    t.eq(
        "write through it: -EACCES",
        rw.ops().write(0, LongBytes::new(b"x")).err(),
        Some(Error::Access),
    );
    t.ok(
        rw.read(0, RW_SIZE as usize)
            .is_ok_and(|v| v == pattern(0, RW_SIZE as usize)),
        "rw.bin holds the pattern",
    );
    // The boot module's own pages, mapped straight to this program.
    map_direct(t, ns);
}
