//! Host paging tests: a memfd dataspace served by a thread, regions
//! registered with a real userfaultfd, a pager thread, real faults.

use super::*;
use crate::region::{Backing, RegionMap};
use l4re::env::env;
use l4re::fpage::{MapType, SndFpage};
use l4re::host::SharedMem;
use l4re::msg::{MsgTag, ReceivedCap};
use l4re::proto::DataspaceServer;
use l4re::proto::dataspace::Stats;
use l4re::rpc::Request;
use l4re::server::{Server, ServerObject};
use std::os::fd::AsRawFd;

/// A file as a dataspace: a memfd whose pages are filled on `map` (as the
/// filesystem server does), counting the loads.
struct TestFile {
    mem: SharedMem,
    size: u64,
    loads: AtomicU64,
    /// Pages loaded and mapped per miss (an aligned cluster; 1: the page).
    cluster: u64,
    /// A page a cluster load leaves out (loaded only when asked for).
    skip: Option<u64>,
    /// Whether `allocate` loads the range (read-ahead); else it is
    /// refused, and only `map` loads pages.
    read_ahead: bool,
}

fn pattern(off: u64) -> u8 {
    (off.wrapping_mul(7) ^ (off >> 12)) as u8 | 1
}

impl TestFile {
    /// Whether the page at `page` is a hole (never loaded, or punched):
    /// `lseek(SEEK_DATA)` on the memfd skips it.
    fn is_hole(&self, page: u64) -> bool {
        rustix::fs::seek(self.mem.fd(), rustix::fs::SeekFrom::Data(page))
            .map(|d| d != page)
            .unwrap_or(true)
    }

    fn fill(&self, page: u64) {
        let data: Vec<u8> = (page..page + PAGE_SIZE).map(pattern).collect();
        self.mem.write(page as usize, &data);
    }
}

impl DataspaceServer for TestFile {
    fn map(
        &self,
        _: &mut Request<'_>,
        offset: u64,
        spot: u64,
        _flags: DsFlags,
    ) -> Result<SndFpage> {
        let page = offset & !(PAGE_SIZE - 1);
        if page >= self.size {
            return Err(Error::Range);
        }
        // Load the page if it is a hole (never loaded or punched).
        if self.is_hole(page) {
            self.fill(page);
            self.loads.fetch_add(1, Ordering::Relaxed);
        }
        let c = self.cluster * PAGE_SIZE;
        if self.cluster > 1 {
            let first = page & !(c - 1);
            for p in (first..first + c).step_by(PAGE_SIZE as usize) {
                if p != page && Some(p) != self.skip && p < self.size {
                    self.fill(p);
                }
            }
        }
        // The whole cluster when every page of it is there.
        let whole = self.cluster > 1 && self.skip.is_none_or(|s| s & !(c - 1) != page & !(c - 1));
        let fp = if whole {
            self.mem.fpage(
                (page & !(c - 1)) as usize,
                c.trailing_zeros() as u8,
                Rights::R,
            )
        } else {
            self.mem.fpage(page as usize, 12, Rights::R)
        }
        .ok_or(Error::Range)?;
        Ok(SndFpage::mem(fp, spot, MapType::Map))
    }
    fn clear(&self, _: &mut Request<'_>, _: u64, _: u64) -> Result<()> {
        Err(Error::NoSys)
    }
    fn info(&self, _: &mut Request<'_>) -> Result<Stats> {
        Ok(Stats {
            size: self.size,
            flags: DsFlags::R,
        })
    }
    fn copy_in(&self, _: &mut Request<'_>, _: u64, _: ReceivedCap, _: u64, _: u64) -> Result<()> {
        Err(Error::NoSys)
    }
    fn allocate(&self, _: &mut Request<'_>, offset: u64, size: u64) -> Result<()> {
        if !self.read_ahead {
            return Err(Error::NoSys);
        }
        // Loads the holes of the range, as the server's read-ahead does.
        let end = offset.saturating_add(size).min(self.size);
        let mut page = offset & !(PAGE_SIZE - 1);
        while page < end {
            if self.is_hole(page) {
                self.fill(page);
            }
            page += PAGE_SIZE;
        }
        Ok(())
    }
    fn map_info(&self, _: &mut Request<'_>) -> Result<(u64, u64)> {
        Err(Error::NoSys)
    }
}

impl ServerObject for TestFile {
    fn protocols(&self) -> &[(i64, &'static str)] {
        &[(0x4000, "L4Re::Dataspace")]
    }
    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        Dataspace::dispatch(self, req)
    }
}

/// Starts a server thread for a file of `pages` pages; returns the
/// dataspace capability and the file's memfd (for punching holes).
fn serve_file(pages: u64) -> (Cap<Dataspace>, std::os::fd::OwnedFd) {
    serve_file_clustered(pages, 1, None)
}

/// As [`serve_file`], loading aligned clusters of `cluster` pages per miss
/// (leaving out the page at offset `skip`) and answering with the whole
/// cluster when it is complete.
fn serve_file_clustered(
    pages: u64,
    cluster: u64,
    skip: Option<u64>,
) -> (Cap<Dataspace>, std::os::fd::OwnedFd) {
    serve_file_with(pages, cluster, skip, false)
}

/// As [`serve_file_clustered`], with `allocate` loading the range asked
/// for if `read_ahead`.
fn serve_file_with(
    pages: u64,
    cluster: u64,
    skip: Option<u64>,
    read_ahead: bool,
) -> (Cap<Dataspace>, std::os::fd::OwnedFd) {
    let mem = SharedMem::new((pages * PAGE_SIZE) as usize).unwrap();
    let fd = rustix::io::fcntl_dupfd_cloexec(mem.fd(), 0).unwrap();
    let file = Arc::new(TestFile {
        mem,
        size: pages * PAGE_SIZE - 100,
        loads: AtomicU64::new(0),
        cluster,
        skip,
        read_ahead,
    });
    let gate = env().factory().create_gate(None, 0).unwrap();
    let g = gate.cap();
    l4re::host::spawn_thread(move || {
        let mut s = Server::new();
        s.register_gate(g, file).unwrap();
        let _ = s.run();
    })
    .unwrap();
    (gate.into_cap().cast(), fd)
}

// Raw access to the regions under test. They are owned by the region map
// (`realize_region` leaks their mappings to it), not by a Rust value that
// could offer these accesses safely: so they stay here, as the program's
// own loads and stores would be.

fn read_byte(addr: u64) -> u8 {
    // SAFETY: the address lies in a region mapped by `realize_region`,
    // readable, whose pages the pager supplies on fault.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn write_byte(addr: u64, v: u8) {
    // SAFETY: the address lies in a region mapped writable by
    // `realize_region`, whose pages the pager supplies on fault; no Rust
    // value lives there.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

/// Drops the pages of `[addr, addr + len)` of a region: the next accesses
/// fault again (`MADV_DONTNEED`).
fn discard(addr: u64, len: u64) {
    // SAFETY: the range lies in a region mapped by `realize_region`, which
    // holds no Rust data: dropping its pages only makes the next accesses
    // fault again.
    unsafe {
        rustix::mm::madvise(
            addr as usize as *mut _,
            len as usize,
            rustix::mm::Advice::LinuxDontNeed,
        )
    }
    .unwrap();
}

#[test]
fn real_faults_shared_private_anonymous_and_revocation() {
    let Ok(u) = uffd::Uffd::open(wanted_features(false)) else {
        eprintln!("userfaultfd unavailable: test skipped");
        return;
    };
    let (ds, memfd) = serve_file(8);
    let counters: &'static Counters = Box::leak(Box::new(Counters::new()));
    let map = Arc::new(SpinLock::new(RegionMap::new(0, 1 << 47)));
    let pager = Arc::new(Pager::new(
        map.clone(),
        counters,
        Mode::Internal,
        Box::new(|r, _| panic!("unexpected invalid access: {r}")),
    ));
    // Every first touch to the pager, cached or not (each kind counted).
    pager.set_sees_cached();
    // Make the pager's view of the file now, so that it does not take the
    // address range freed below.
    pager.view(ds.idx()).unwrap().load(0).unwrap();
    // Free a reservation so the regions can be mapped there.
    let b = ReservedRange::new(64 * PAGE_SIZE as usize)
        .unwrap()
        .release() as u64;
    let file = |offset, file_len| Backing::File {
        ds: ds.idx(),
        offset,
        file_len,
    };
    {
        let mut m = map.lock();
        m.attach_at(
            b,
            4 * PAGE_SIZE,
            Rights::RX,
            file(0, 4 * PAGE_SIZE),
            false,
            "text",
        )
        .unwrap();
        m.attach_at(
            b + 8 * PAGE_SIZE,
            2 * PAGE_SIZE,
            Rights::RW,
            file(4 * PAGE_SIZE, PAGE_SIZE + 10),
            true,
            "data",
        )
        .unwrap();
        m.attach_at(
            b + 12 * PAGE_SIZE,
            4 * PAGE_SIZE,
            Rights::RW,
            Backing::Anon,
            true,
            "bss",
        )
        .unwrap();
    }
    let regions: Vec<_> = map.lock().iter().cloned().collect();
    for r in &regions {
        realize_region(&pager, &u, r).unwrap();
    }
    let p2 = pager.clone();
    let u = Arc::new(u);
    let u2 = u.clone();
    std::thread::spawn(move || p2.serve(u2));

    // Shared text: the file's bytes.
    for i in 0..4 * PAGE_SIZE {
        if i % 997 == 0 {
            assert_eq!(read_byte(b + i), pattern(i), "text byte {i:#x}");
        }
    }
    // Private data: file bytes, zeros after the file data, writable.
    let d = b + 8 * PAGE_SIZE;
    assert_eq!(read_byte(d + 5), pattern(4 * PAGE_SIZE + 5));
    assert_eq!(read_byte(d + PAGE_SIZE + 9), pattern(5 * PAGE_SIZE + 9));
    assert_eq!(read_byte(d + PAGE_SIZE + 10), 0);
    // The data region is writable and private.
    write_byte(d, 0xee);
    assert_eq!(read_byte(d), 0xee);
    // Anonymous: zeros.
    assert_eq!(read_byte(b + 13 * PAGE_SIZE + 77), 0);
    let c = |x: &AtomicU64| Counters::get(x);
    // The pager counts after its ioctl woke us: let it finish.
    let t0 = std::time::Instant::now();
    while c(&counters.pages_mapped) < 7 && t0.elapsed().as_secs() < 5 {
        std::thread::yield_now();
    }
    assert_eq!(c(&counters.shared_maps), 4);
    assert_eq!(c(&counters.private_copies), 2);
    assert_eq!(c(&counters.zero_pages), 1);
    assert_eq!(c(&counters.file_pages_touched), 6);
    assert_eq!(c(&counters.region_faults[0]), 4);

    // Revocation: the server punches page 1 out of its cache; the next
    // touch faults again (missing), the server reloads, the content is back.
    let faults = c(&counters.faults);
    rustix::fs::fallocate(
        &memfd,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        PAGE_SIZE,
        PAGE_SIZE,
    )
    .unwrap();
    assert_eq!(read_byte(b + PAGE_SIZE + 3), pattern(PAGE_SIZE + 3));
    let t0 = std::time::Instant::now();
    while c(&counters.pages_mapped) < 8 && t0.elapsed().as_secs() < 5 {
        std::thread::yield_now();
    }
    assert!(c(&counters.faults) > faults, "revoked page faulted back");
    assert!(c(&counters.missing) >= 1);
}

#[test]
fn uffd_open_explains_itself() {
    // As root this works; the message path is checked for content.
    match uffd::Uffd::open(wanted_features(true)) {
        Ok(u) => assert!(u.features() & uffd::features::MINOR_SHMEM != 0),
        Err(e) => assert!(e.contains("userfaultfd"), "{e}"),
    }
}

#[test]
fn shared_writable_file_region_through_rm_reaches_the_file() {
    use crate::rm::{RmBackend, RmService};
    use l4re::msg::LongBytes;
    use l4re::proto::rm::Flags as RmFlags;
    use l4re::proto::{Rm, RmClient};

    let Ok(u) = uffd::Uffd::open(wanted_features(false)) else {
        eprintln!("userfaultfd unavailable: test skipped");
        return;
    };
    let u = Arc::new(u);
    // The filesystem server on a temporary directory, in a thread.
    let dir = std::env::temp_dir().join(format!("l4pager-rw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), vec![b'.'; 3 * PAGE_SIZE as usize]).unwrap();
    let fsg = env().factory().create_gate(None, 0).unwrap();
    let g = fsg.cap();
    let root = dir.clone();
    l4re::host::spawn_thread(move || {
        let _ = l4fs::serve(g, l4fs::FsConfig::host_dir(root));
    })
    .unwrap();
    let fs: Cap<l4fs::FsOps> = fsg.cap().cast();
    let slot = l4re::cap::alloc::<l4re::cap::Untyped>().unwrap();
    let item = l4fs::FsOpsClient::open(
        &fs,
        LongBytes::new(b"f"),
        l4fs::proto::mode::RW,
        RcvBuf::cap(slot.idx()),
    )
    .unwrap();
    assert!(item.cap_received());
    let file: Cap<Dataspace> = slot.cap().cast();

    // The task's region map behind an Rm gate; attaching realizes regions.
    struct Backend {
        pager: Arc<Pager>,
        uffd: Arc<uffd::Uffd>,
    }
    impl RmBackend for Backend {
        fn attached(&self, r: &crate::region::Region) -> Result<()> {
            realize_region(&self.pager, &self.uffd, r)
        }
        fn detached(&self, _: &crate::region::Region, s: u64, z: u64) {
            let _ = self.uffd.unregister(s, z);
            unrealize(s, z);
        }
    }
    let counters: &'static Counters = Box::leak(Box::new(Counters::new()));
    let map = Arc::new(SpinLock::new(RegionMap::new(
        0x1000_0000_0000,
        0x1100_0000_0000,
    )));
    let pager = Arc::new(Pager::new(
        map.clone(),
        counters,
        Mode::Internal,
        Box::new(|r, _| panic!("unexpected invalid access: {r}")),
    ));
    let svc = Arc::new(RmService::new(
        map,
        Backend {
            pager: pager.clone(),
            uffd: u.clone(),
        },
    ));
    let rmg = env().factory().create_gate(None, 0).unwrap();
    let g = rmg.cap();
    l4re::host::spawn_thread(move || {
        let mut s = Server::new();
        s.register_gate(g, svc).unwrap();
        let _ = s.run();
    })
    .unwrap();
    let (p2, u2) = (pager.clone(), u.clone());
    std::thread::spawn(move || p2.serve(u2));

    // A program's mmap(MAP_SHARED, PROT_READ|PROT_WRITE) of the file,
    // through Rm: shared, writable, searched address.
    let rm: Cap<Rm> = rmg.cap().cast();
    let at = rm
        .attach(
            0x1000_0000_0000,
            2 * PAGE_SIZE,
            RmFlags::RW | RmFlags::SEARCH_ADDR,
            Some(file.send(l4re::CapRights::RW)),
            PAGE_SIZE,
            12,
            0,
            "shared",
            0,
        )
        .unwrap();
    let f = rm.find(at + 10, 1).unwrap();
    assert_eq!(
        (f.start, f.size, f.flags & RmFlags::RWX, f.offset),
        (at, 2 * PAGE_SIZE, RmFlags::RW, PAGE_SIZE)
    );
    // Write through the mapping (real faults, resolved by the pager).
    let msg = b"written through Rm";
    for (i, b) in msg.iter().enumerate() {
        // The region is mapped writable and shared by the pager.
        write_byte(at + 100 + i as u64, *b);
    }
    assert_eq!(read_byte(at + 100), b'w');
    assert_eq!(read_byte(at + PAGE_SIZE), b'.', "file content visible");
    // The server writes dirty pages back when it syncs.
    l4fs::FsOpsClient::sync_all(&fs).unwrap();
    let data = std::fs::read(dir.join("f")).unwrap();
    let o = PAGE_SIZE as usize + 100;
    assert_eq!(&data[o..o + msg.len()], msg);
    // Detach through Rm unmaps.
    let l4re::rpc::WithCode(code, d) = rm.detach(at, 2 * PAGE_SIZE, 0).unwrap();
    assert_eq!((code, d.start, d.size), (0, at, 2 * PAGE_SIZE));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn many_threads_on_the_same_pages_duplicate_events_are_woken() {
    let Ok(u) = uffd::Uffd::open(wanted_features(false)) else {
        eprintln!("userfaultfd unavailable: test skipped");
        return;
    };
    let (ds, _memfd) = serve_file(16);
    let counters: &'static Counters = Box::leak(Box::new(Counters::new()));
    let map = Arc::new(SpinLock::new(RegionMap::new(0, 1 << 47)));
    let pager = Arc::new(Pager::new(
        map.clone(),
        counters,
        Mode::Internal,
        Box::new(|r, _| panic!("unexpected invalid access: {r}")),
    ));
    // Minor faults too: the threads race on cached pages as well.
    pager.set_sees_cached();
    pager.view(ds.idx()).unwrap().load(0).unwrap();
    let b = ReservedRange::new(64 * PAGE_SIZE as usize)
        .unwrap()
        .release() as u64;
    {
        let mut m = map.lock();
        let file = Backing::File {
            ds: ds.idx(),
            offset: 0,
            file_len: 16 * PAGE_SIZE,
        };
        m.attach_at(b, 16 * PAGE_SIZE, Rights::R, file, false, "text")
            .unwrap();
        m.attach_at(
            b + 32 * PAGE_SIZE,
            16 * PAGE_SIZE,
            Rights::RW,
            Backing::Anon,
            true,
            "bss",
        )
        .unwrap();
    }
    let u = Arc::new(u);
    let regions: Vec<_> = map.lock().iter().cloned().collect();
    for r in &regions {
        realize_region(&pager, &u, r).unwrap();
    }
    let (p2, u2) = (pager.clone(), u.clone());
    std::thread::spawn(move || p2.serve(u2));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for i in 0..16 * PAGE_SIZE / 512 {
                    let o = i * 512;
                    let text = read_byte(b + o);
                    assert_eq!(text, pattern(o));
                    assert_eq!(read_byte(b + 32 * PAGE_SIZE + o), 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let t0 = std::time::Instant::now();
    while Counters::get(&counters.pages_mapped) < 32 && t0.elapsed().as_secs() < 5 {
        std::thread::yield_now();
    }
    // Every page mapped exactly once, however many threads faulted on it.
    assert_eq!(Counters::get(&counters.pages_mapped), 32);
    assert_eq!(Counters::get(&counters.shared_maps), 16);
    assert_eq!(Counters::get(&counters.zero_pages), 16);
}

#[test]
fn forked_child_is_served_until_it_is_gone() {
    // A fork event gives the child's uffd; `serve_child` pages the child
    // (a zero page here) and ends once the child has exited.
    let Ok(u) = uffd::Uffd::open(wanted_features(true)) else {
        eprintln!("userfaultfd with fork events unavailable: test skipped");
        return;
    };
    let len = 4 * PAGE_SIZE;
    let mapping = Mapping::new(len as usize, Prot::READ | Prot::WRITE, Source::Anonymous).unwrap();
    let base = mapping.addr() as u64;
    u.register(base, len, uffd::mode::MISSING).unwrap();
    let mut map = RegionMap::new(0x10000, 0x7fff_ffff_f000);
    map.attach_at(
        base,
        len,
        Rights::RW,
        crate::region::Backing::Anon,
        true,
        "anon",
    )
    .unwrap();
    let counters: &'static Counters = Box::leak(Box::new(Counters::new()));
    let pager = Arc::new(Pager::for_children(
        Arc::new(SpinLock::new(map)),
        counters,
        Mode::Internal,
        Box::new(|r, _| panic!("unexpected report {r}")),
    ));
    // The fork event must be read for fork() to return.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        loop {
            if let Ok(Some(uffd::Event::Fork(child))) = u.read_event() {
                tx.send(child).unwrap();
                return u;
            }
        }
    });
    let (to_child, from_child) = (rustix::pipe::pipe().unwrap(), rustix::pipe::pipe().unwrap());
    let to_child_w = to_child.1.as_raw_fd();
    // SAFETY: the fork system call (not glibc's fork, which holds the
    // allocator's locks until the kernel's fork returns, i.e. until the
    // reader thread, perhaps still starting and allocating, has read the
    // fork event): the child only reads memory and makes raw system calls
    // (no allocation, no locks) before _exit. (Stays here: a fork of a
    // multi-threaded process, which no safe wrapper can offer.)
    let pid = unsafe {
        let pid = libc::syscall(libc::SYS_fork) as i32;
        if pid == 0 {
            let b = core::ptr::read_volatile((base + PAGE_SIZE + 5) as *const u8) + 1;
            libc::write(from_child.1.as_raw_fd(), (&b as *const u8).cast(), 1);
            libc::close(to_child_w);
            let mut x = 0u8;
            libc::read(to_child.0.as_raw_fd(), (&mut x as *mut u8).cast(), 1);
            libc::_exit(0);
        }
        pid
    };
    assert!(pid > 0);
    let child = Arc::new(rx.recv().unwrap());
    let _u = reader.join().unwrap();
    let (p, c) = (pager.clone(), child.clone());
    let server = std::thread::spawn(move || p.serve_child(c));
    let mut b = [0u8];
    let n = rustix::io::read(&from_child.0, &mut b).unwrap();
    assert_eq!(n, 1);
    assert_eq!(b[0], 1, "the child read a zero page");
    assert!(child.mm_alive(pager.unregistered_page()));
    assert_eq!(Counters::get(&counters.child_faults), 1);
    // Closing our pipe end lets the child exit; we reap it.
    drop(to_child.1);
    let child_pid = rustix::process::Pid::from_raw(pid).unwrap();
    let reaped = rustix::process::waitpid(Some(child_pid), rustix::process::WaitOptions::empty());
    assert_eq!(reaped.unwrap().map(|(p, _)| p), Some(child_pid));
    let t = std::time::Instant::now();
    while !server.is_finished() {
        assert!(t.elapsed().as_secs() < 5, "serve_child did not end");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!child.mm_alive(pager.unregistered_page()));
    drop(mapping);
}

/// A pager in `mode` serving one read-only shared file region of 64 pages
/// (at a 64-page-aligned address) of a 64-page file served by a
/// [`TestFile`] server that loads aligned clusters of 16 pages and leaves
/// page 53 out of its clusters.
struct Fixture {
    pager: Arc<Pager>,
    /// The file's dataspace.
    ds: CapIdx,
    counters: &'static Counters,
    /// The region's start.
    b: u64,
    /// The file's memfd (to punch pages and find holes).
    memfd: std::os::fd::OwnedFd,
    /// Pages of the region and the file.
    pages: u64,
}

/// The page the [`Fixture`]'s server leaves out of its clusters.
const HOLE: u64 = 53;

fn fixture(mode: Mode) -> Option<Fixture> {
    fixture_of(mode, 64, Some(HOLE), false)
}

/// As [`fixture`], with a region and file of `pages` pages (a power of
/// two, the region aligned to it), the page `skip` left out of the
/// server's clusters, and a server that reads ahead when asked
/// (`read_ahead`, see [`serve_file_with`]).
fn fixture_of(mode: Mode, pages: u64, skip: Option<u64>, read_ahead: bool) -> Option<Fixture> {
    fixture_with(mode, pages, skip, read_ahead, true)
}

/// As [`fixture_of`]; `sees_cached`: the pager is set to see faults on
/// cached pages too ([`Pager::set_sees_cached`]; `false`: the default,
/// the kernel maps them).
fn fixture_with(
    mode: Mode,
    pages: u64,
    skip: Option<u64>,
    read_ahead: bool,
    sees_cached: bool,
) -> Option<Fixture> {
    let Ok(u) = uffd::Uffd::open(wanted_features(false)) else {
        eprintln!("userfaultfd unavailable: test skipped");
        return None;
    };
    let (ds, memfd) = serve_file_with(pages, 16, skip.map(|p| p * PAGE_SIZE), read_ahead);
    let counters: &'static Counters = Box::leak(Box::new(Counters::new()));
    let map = Arc::new(SpinLock::new(RegionMap::new(0, 1 << 47)));
    let pager = Arc::new(Pager::new(
        map.clone(),
        counters,
        mode,
        Box::new(|r, _| panic!("unexpected invalid access: {r}")),
    ));
    if sees_cached {
        pager.set_sees_cached();
    }
    // The view's first map now, so that it does not happen between
    // freeing the region's range and mapping the region.
    pager.view(ds.idx()).unwrap().load(0).unwrap();
    let u = Arc::new(u);
    // Tests run in parallel threads, which may map something into the
    // range freed for the region before it is mapped: then try again.
    let b = (0..10)
        .find_map(|_| {
            // A free range for the region.
            let range = ReservedRange::new((2 * pages * PAGE_SIZE) as usize).unwrap();
            let b = (range.release() as u64).next_multiple_of(pages * PAGE_SIZE);
            let file = Backing::File {
                ds: ds.idx(),
                offset: 0,
                file_len: pages * PAGE_SIZE,
            };
            let r = {
                let mut m = map.lock();
                m.attach_at(b, pages * PAGE_SIZE, Rights::R, file, false, "rodata")
                    .unwrap();
                m.lookup(b).cloned().unwrap()
            };
            if realize_region(&pager, &u, &r).is_ok() {
                return Some(b);
            }
            map.lock().detach(b, pages * PAGE_SIZE).unwrap();
            None
        })
        .expect("a free range for the region");
    let p2 = pager.clone();
    std::thread::spawn(move || p2.serve(u));
    Some(Fixture {
        pager,
        ds: ds.idx(),
        counters,
        b,
        memfd,
        pages,
    })
}

impl Fixture {
    fn c(&self, x: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        Counters::get(x(self.counters))
    }

    /// Reads page `p` of the region (a few bytes) and checks the content.
    fn check_page(&self, p: u64) {
        for i in [0, 1, 2049, PAGE_SIZE - 1] {
            let off = p * PAGE_SIZE + i;
            if off < self.pages * PAGE_SIZE - 100 {
                assert_eq!(read_byte(self.b + off), pattern(off), "byte {off:#x}");
            }
        }
    }

    /// Whether file page `p` is a hole in the server's memfd.
    fn is_hole(&self, p: u64) -> bool {
        rustix::fs::seek(&self.memfd, rustix::fs::SeekFrom::Data(p * PAGE_SIZE))
            .map(|d| d != p * PAGE_SIZE)
            .unwrap_or(true)
    }

    /// Revokes file page `p`, as the server does.
    fn punch(&self, p: u64) {
        rustix::fs::fallocate(
            &self.memfd,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            p * PAGE_SIZE,
            PAGE_SIZE,
        )
        .unwrap();
    }
}

#[test]
fn fault_around_maps_cached_neighbours_never_holes() {
    let Some(t) = fixture(Mode::Internal) else {
        return;
    };
    // (Attaching loaded the first cluster.) One missing fault maps the
    // 16-page window around it, which the server loaded with it; the
    // faulting thread resumes only once all of it is mapped.
    t.check_page(19);
    assert_eq!((t.c(|c| &c.faults), t.c(|c| &c.missing)), (1, 1));
    assert_eq!(t.c(|c| &c.prefetched), 15);
    for p in 16..32 {
        t.check_page(p);
    }
    assert_eq!(t.c(|c| &c.faults), 1, "pages 16-31 were mapped around");

    // A cluster with a hole: the neighbours on both sides of it are
    // mapped, the hole stays a hole (no page of zeros in the file): it
    // faults as missing and the server loads it.
    t.check_page(50);
    assert_eq!(t.c(|c| &c.faults), 2);
    for p in (48..64).filter(|&p| p != HOLE) {
        t.check_page(p);
    }
    assert_eq!(t.c(|c| &c.faults), 2, "pages 48-63 but 53 mapped around");
    assert!(t.is_hole(HOLE), "fault-around filled the hole");
    let missing = t.c(|c| &c.missing);
    t.check_page(HOLE);
    assert_eq!(t.c(|c| &c.faults), 3);
    assert_eq!(t.c(|c| &c.missing), missing + 1);

    // The server revokes a page mapped around: it is gone from the task
    // too, and comes back (missing fault, reloaded) with its content.
    t.punch(20);
    let (faults, missing) = (t.c(|c| &c.faults), t.c(|c| &c.missing));
    t.check_page(20);
    assert_eq!(t.c(|c| &c.faults), faults + 1);
    assert_eq!(t.c(|c| &c.missing), missing + 1);

    // Cached pages, mappings dropped: an isolated minor fault maps its page
    // alone, without asking the server; a fault continuing a sequential
    // stream maps the rest of its window.
    // The region is ours; dropping its mappings only makes the next
    // accesses fault again.
    discard(t.b, 64 * PAGE_SIZE);
    let (f0, maps) = (t.c(|c| &c.faults), t.c(|c| &c.server_maps));
    t.check_page(8);
    assert_eq!(t.c(|c| &c.faults), f0 + 1);
    t.check_page(10);
    assert_eq!(
        t.c(|c| &c.faults),
        f0 + 2,
        "an isolated minor fault maps one page"
    );
    t.check_page(11);
    assert_eq!(t.c(|c| &c.faults), f0 + 3);
    for p in 11..16 {
        t.check_page(p);
    }
    assert_eq!(t.c(|c| &c.faults), f0 + 3, "a stream maps its window ahead");
    assert_eq!(t.c(|c| &c.server_maps), maps, "cached: no round trip");
    assert_eq!(t.c(|c| &c.errors), 0);
}

#[test]
fn cached_read_only_pages_are_mapped_by_the_kernel_holes_by_the_pager() {
    let Some(t) = fixture_with(Mode::Internal, 64, Some(HOLE), false, false) else {
        return;
    };
    // Attaching loaded the first cluster (pages 0-15): the server has them
    // cached, and reading them never reaches the pager.
    for p in 0..16 {
        t.check_page(p);
    }
    assert_eq!(t.c(|c| &c.faults), 0, "cached pages reached the pager");
    // A page the server has not loaded: a missing fault; the server loads
    // its cluster and the pager maps the window around it.
    t.check_page(19);
    assert_eq!((t.c(|c| &c.faults), t.c(|c| &c.missing)), (1, 1));
    for p in 16..32 {
        t.check_page(p);
    }
    assert_eq!(t.c(|c| &c.faults), 1);
    // A cluster with a hole: its neighbours come without the pager, the
    // hole is a missing fault of its own and stays a hole until then.
    t.check_page(50);
    for p in (48..64).filter(|&p| p != HOLE) {
        t.check_page(p);
    }
    assert_eq!(t.c(|c| &c.faults), 2);
    assert!(t.is_hole(HOLE), "the kernel filled the hole");
    t.check_page(HOLE);
    assert_eq!((t.c(|c| &c.faults), t.c(|c| &c.missing)), (3, 3));
    // The server revokes a page: gone from the task too; it comes back
    // through the pager (missing, reloaded) with its content.
    t.punch(20);
    t.check_page(20);
    assert_eq!((t.c(|c| &c.faults), t.c(|c| &c.missing)), (4, 4));
    // Mappings dropped, pages still cached (all but the untouched cluster
    // 32-47): they come back without a fault reaching the pager, and
    // without a server call.
    discard(t.b, 64 * PAGE_SIZE);
    let (faults, maps) = (t.c(|c| &c.faults), t.c(|c| &c.server_maps));
    for p in (0..32).chain(48..64).filter(|p| p % 3 == 0 || *p == HOLE) {
        t.check_page(p);
    }
    assert_eq!(t.c(|c| &c.faults), faults, "cached pages reached the pager");
    assert_eq!(t.c(|c| &c.server_maps), maps);
    assert_eq!((t.c(|c| &c.minor), t.c(|c| &c.errors)), (0, 0));
}

#[test]
fn view_knows_which_ranges_the_server_has_cached() {
    let Some(t) = fixture(Mode::Internal) else {
        return;
    };
    let p = |n: u64| n * PAGE_SIZE;
    let view = t.pager.view(t.ds).unwrap();
    // Attaching loaded the first cluster (pages 0-15), no other.
    assert!(view.cached(0, p(16)));
    assert!(view.cached(p(3), p(5)));
    assert!(!view.cached(p(15), p(17)));
    assert!(!view.cached(p(20), p(21)));
    // A fault there loads its cluster: cached from then on.
    t.check_page(20);
    assert!(view.cached(0, p(32)));
    // The cluster of pages 48-63 comes without page 53 (a hole).
    t.check_page(50);
    assert!(view.cached(p(48), p(HOLE)));
    assert!(!view.cached(p(48), p(64)));
    assert!(view.cached(p(HOLE + 1), p(64)));
    // Past the end of the file: nothing to load.
    assert!(view.cached(p(64), p(80)));
    // Revoked pages are no longer cached.
    t.punch(5);
    assert!(!view.cached(0, p(16)));
    assert_eq!(t.c(|c| &c.errors), 0);
}

#[test]
fn sequential_stream_grows_its_window_and_reads_ahead() {
    const PAGES: u64 = 4096; // 16 MiB
    let Some(t) = fixture_of(Mode::Internal, PAGES, None, true) else {
        return;
    };
    // (Attaching loaded the first cluster.) Reading the whole region page
    // by page: each fault at the end of what the previous one mapped
    // doubles the window mapped forward, up to 2 MiB, and the server is
    // asked to read ahead after each, so the stream finds the next window
    // cached.
    for p in 0..PAGES {
        t.check_page(p);
    }
    let faults = t.c(|c| &c.faults);
    assert!(
        faults <= 16,
        "{faults} faults for {PAGES} pages: the window did not grow (16-page fault-around alone: {})",
        PAGES / FAULT_AROUND_PAGES
    );
    assert!(
        t.c(|c| &c.read_aheads) > 0,
        "the server was never asked to read ahead"
    );
    assert_eq!(t.c(|c| &c.pages_mapped), PAGES);
    // After the ramp-up, whole 2 MiB windows: fewer faults than windows
    // of the largest size plus the ramp.
    assert!(faults <= PAGES / MAX_STREAM_PAGES + 8, "{faults} faults");

    // A second pass over cached pages, mappings dropped: the same.
    discard(t.b, PAGES * PAGE_SIZE);
    let (f0, maps) = (t.c(|c| &c.faults), t.c(|c| &c.server_maps));
    for p in 0..PAGES {
        t.check_page(p);
    }
    assert!(t.c(|c| &c.faults) - f0 <= PAGES / MAX_STREAM_PAGES + 8);
    assert_eq!(t.c(|c| &c.server_maps), maps, "cached: no round trip");
    assert_eq!(t.c(|c| &c.errors), 0);
}

#[test]
fn random_faults_map_their_own_window_never_megabytes() {
    const PAGES: u64 = 4096;
    let Some(t) = fixture_of(Mode::Internal, PAGES, None, true) else {
        return;
    };
    // Load the whole file into the server's cache, then drop the mappings:
    // every page is cached, so a stream would find its windows whole.
    for p in (0..PAGES).step_by(16) {
        t.check_page(p);
    }
    discard(t.b, PAGES * PAGE_SIZE);
    let (f0, m0, r0) = (
        t.c(|c| &c.faults),
        t.c(|c| &c.pages_mapped),
        t.c(|c| &c.read_aheads),
    );
    // Pages in a scrambled order (an odd multiplier modulo a power of
    // two visits each once), none right after the one before it.
    let order: Vec<u64> = (0..256u64)
        .map(|i| (i * 2_654_435_761 + 17) % PAGES)
        .collect();
    for w in order.windows(2) {
        assert!(w[1] != w[0] + 1, "not random enough: {w:?}");
    }
    for &p in &order {
        t.check_page(p);
    }
    let faults = t.c(|c| &c.faults) - f0;
    let mapped = t.c(|c| &c.pages_mapped) - m0;
    // Isolated faults on cached pages map one page each (a page already
    // mapped by an earlier one is no fault at all).
    assert!(faults > 200, "{faults} faults");
    assert_eq!(mapped, faults, "random faults mapped more than their pages");
    assert_eq!(
        t.c(|c| &c.read_aheads),
        r0,
        "random faults asked for read-ahead"
    );
    assert_eq!(t.c(|c| &c.errors), 0);
}

#[test]
fn external_pager_keeps_whole_blocks_and_copies_around() {
    let Some(t) = fixture(Mode::External) else {
        return;
    };
    // A missing fault: the server maps the cluster of 16 pages, the pager
    // keeps a copy of all of it and copies the window into the task.
    t.check_page(19);
    assert_eq!(t.c(|c| &c.faults), 1);
    let maps = t.c(|c| &c.server_maps);
    assert_eq!(t.c(|c| &c.prefetched), 15);
    for p in 16..32 {
        t.check_page(p);
    }
    assert_eq!(t.c(|c| &c.faults), 1, "pages 16-31 were copied around");
    // Its copies are its own: a revocation does not take them away, and
    // a fault on them needs no round trip.
    t.punch(21);
    // The region is ours; dropping its pages only makes the next
    // accesses fault again.
    discard(t.b + 16 * PAGE_SIZE, 16 * PAGE_SIZE);
    for p in 16..32 {
        t.check_page(p);
    }
    assert_eq!(t.c(|c| &c.server_maps), maps);
    // A cluster with a hole: the server maps the page alone; the pager
    // copies only what the server mapped, never its other cached pages:
    // each of them is a round trip of its own.
    t.check_page(50);
    let maps = t.c(|c| &c.server_maps);
    let faults = t.c(|c| &c.faults);
    t.check_page(49);
    assert_eq!(t.c(|c| &c.faults), faults + 1);
    assert_eq!(t.c(|c| &c.server_maps), maps + 1);
    t.check_page(HOLE);
    assert!(!t.is_hole(HOLE), "loaded when asked for");
    assert_eq!(t.c(|c| &c.errors), 0);
}

#[test]
fn view_reads_never_fill_holes_and_see_revocations() {
    let Some(t) = fixture(Mode::Internal) else {
        return;
    };
    let view = t
        .pager
        .views
        .lock()
        .unwrap()
        .values()
        .next()
        .cloned()
        .unwrap();
    assert_eq!(
        view.load_block(0, DsFlags::R).unwrap(),
        Block {
            first: 0,
            len: 16 * PAGE_SIZE
        }
    );
    // The server revokes page 5 of the block it mapped, before we read it.
    t.punch(5);
    let mut pages = vec![[0u8; PAGE_SIZE as usize]; 16];
    let n = {
        let mut refs: Vec<&mut [u8]> = pages.iter_mut().map(|p| &mut p[..]).collect();
        view.read_pages(0, &mut refs)
    };
    assert_eq!(n, 5, "the pages before the revoked one");
    for (i, p) in pages.iter().take(5).enumerate() {
        let off = i as u64 * PAGE_SIZE;
        assert_eq!(p[7], pattern(off + 7));
    }
    let mut page = [0u8; PAGE_SIZE as usize];
    assert!(!view.read_page(5 * PAGE_SIZE, PAGE_SIZE, &mut page));
    assert!(view.read_page(6 * PAGE_SIZE, 10, &mut page));
    assert_eq!(page[9], pattern(6 * PAGE_SIZE + 9));
    assert_eq!(page[10], 0, "bytes past `valid` are zeros");
    // Reading it did not put a page of zeros into the server's cache.
    assert!(t.is_hole(5));
}

#[test]
fn writable_shared_pages_go_one_by_one_and_only_they_are_dirty() {
    use crate::rm::{RmBackend, RmService};
    use l4re::msg::LongBytes;
    use l4re::proto::rm::Flags as RmFlags;
    use l4re::proto::{Rm, RmClient};

    let Ok(u) = uffd::Uffd::open(wanted_features(false)) else {
        eprintln!("userfaultfd unavailable: test skipped");
        return;
    };
    let u = Arc::new(u);
    // l4fs on a temporary directory with a 32-page file.
    let dir = std::env::temp_dir().join(format!("l4pager-dirty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), vec![b'.'; 32 * PAGE_SIZE as usize]).unwrap();
    let fsg = env().factory().create_gate(None, 0).unwrap();
    let g = fsg.cap();
    let root = dir.clone();
    l4re::host::spawn_thread(move || {
        let _ = l4fs::serve(g, l4fs::FsConfig::host_dir(root));
    })
    .unwrap();
    let fs: Cap<l4fs::FsOps> = fsg.cap().cast();
    let slot = l4re::cap::alloc::<l4re::cap::Untyped>().unwrap();
    l4fs::FsOpsClient::open(
        &fs,
        LongBytes::new(b"f"),
        l4fs::proto::mode::RW,
        RcvBuf::cap(slot.idx()),
    )
    .unwrap();
    let file: Cap<Dataspace> = slot.cap().cast();
    let counters: &'static Counters = Box::leak(Box::new(Counters::new()));
    let map = Arc::new(SpinLock::new(RegionMap::new(
        0x1200_0000_0000,
        0x1300_0000_0000,
    )));
    let pager = Arc::new(Pager::new(
        map.clone(),
        counters,
        Mode::Internal,
        Box::new(|r, _| panic!("unexpected invalid access: {r}")),
    ));
    // All of the file in the server's cache (two clusters read around
    // read-only maps, through a view of our own: the pager's must see the
    // file writable first): a writable map could be answered with all of
    // it.
    let other = DsView::new(file).unwrap();
    other.load(0).unwrap();
    other.load(31 * PAGE_SIZE).unwrap();
    assert_eq!(other.load_block(0, DsFlags::R).unwrap().len, 32 * PAGE_SIZE);

    struct Backend {
        pager: Arc<Pager>,
        uffd: Arc<uffd::Uffd>,
    }
    impl RmBackend for Backend {
        fn attached(&self, r: &crate::region::Region) -> Result<()> {
            realize_region(&self.pager, &self.uffd, r)
        }
        fn detached(&self, _: &crate::region::Region, s: u64, z: u64) {
            let _ = self.uffd.unregister(s, z);
            unrealize(s, z);
        }
    }
    let svc = Arc::new(RmService::new(
        map,
        Backend {
            pager: pager.clone(),
            uffd: u.clone(),
        },
    ));
    let rmg = env().factory().create_gate(None, 0).unwrap();
    let g = rmg.cap();
    l4re::host::spawn_thread(move || {
        let mut s = Server::new();
        s.register_gate(g, svc).unwrap();
        let _ = s.run();
    })
    .unwrap();
    let (p2, u2) = (pager.clone(), u.clone());
    std::thread::spawn(move || p2.serve(u2));
    let rm: Cap<Rm> = rmg.cap().cast();
    let at = rm
        .attach(
            0x1200_0000_0000,
            32 * PAGE_SIZE,
            RmFlags::RW | RmFlags::SEARCH_ADDR,
            Some(file.send(l4re::CapRights::RW)),
            0,
            16,
            0,
            "shared",
            0,
        )
        .unwrap();
    let faults = Counters::get(&counters.faults);
    // Read page 3, write page 7, read page 4 and write it: each page is a
    // fault of its own (nothing is mapped around a writable page), and a
    // write needs no second fault (the page is mapped writable).
    assert_eq!(read_byte(at + 3 * PAGE_SIZE), b'.');
    // The region is mapped writable and shared by the pager.
    write_byte(at + 7 * PAGE_SIZE, b'7');
    assert_eq!(read_byte(at + 4 * PAGE_SIZE + 1), b'.');
    write_byte(at + 4 * PAGE_SIZE, b'4');
    assert_eq!(read_byte(at + 5 * PAGE_SIZE), b'.');
    assert_eq!(Counters::get(&counters.faults), faults + 4);
    assert_eq!(Counters::get(&counters.server_maps), 1 + 4);
    assert_eq!(Counters::get(&counters.prefetched), 0);
    // The server counts exactly the pages mapped writable as dirty — the
    // four of the task and page 0, which attaching the region asked for
    // writable to get the file's memfd — and writes back those, not the
    // 32-page block it has cached.
    let before = l4fs::FileOpsClient::stats(&file.cast::<l4fs::FileOps>())
        .unwrap()
        .writebacks;
    l4fs::FsOpsClient::sync_all(&fs).unwrap();
    let after = l4fs::FileOpsClient::stats(&file.cast::<l4fs::FileOps>())
        .unwrap()
        .writebacks;
    assert_eq!(after - before, 5, "pages written back");
    let data = std::fs::read(dir.join("f")).unwrap();
    assert_eq!(data[7 * PAGE_SIZE as usize], b'7');
    assert_eq!(data[4 * PAGE_SIZE as usize], b'4');
    let _ = std::fs::remove_dir_all(&dir);
}
