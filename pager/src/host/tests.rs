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

/// A file as a dataspace: a memfd whose pages are filled on `map` (as the
/// filesystem server does), counting the loads.
struct TestFile {
    mem: SharedMem,
    size: u64,
    loads: AtomicU64,
}

fn pattern(off: u64) -> u8 {
    (off.wrapping_mul(7) ^ (off >> 12)) as u8 | 1
}

impl TestFile {
    fn fill(&self, page: u64) {
        let data: Vec<u8> = (page..page + PAGE_SIZE).map(pattern).collect();
        self.mem.write(page as usize, &data);
    }
}

impl DataspaceServer for TestFile {
    fn map(&self, _: &mut Request<'_>, offset: u64, spot: u64, _flags: u64) -> Result<SndFpage> {
        let page = offset & !(PAGE_SIZE - 1);
        if page >= self.size {
            return Err(Error::Range);
        }
        // Load the page if it is a hole (never loaded or punched).
        // A hole: lseek(SEEK_DATA) on the memfd skips it.
        let hole = rustix::fs::seek(self.mem.fd(), rustix::fs::SeekFrom::Data(page))
            .map(|d| d != page)
            .unwrap_or(true);
        if hole {
            self.fill(page);
            self.loads.fetch_add(1, Ordering::Relaxed);
        }
        let fp = self
            .mem
            .fpage(page as usize, 12, Rights::R)
            .ok_or(Error::Range)?;
        Ok(SndFpage::mem(fp, spot, MapType::Map))
    }
    fn clear(&self, _: &mut Request<'_>, _: u64, _: u64) -> Result<()> {
        Err(Error::NoSys)
    }
    fn info(&self, _: &mut Request<'_>) -> Result<Stats> {
        Ok(Stats {
            size: self.size,
            flags: 4,
        })
    }
    fn copy_in(&self, _: &mut Request<'_>, _: u64, _: ReceivedCap, _: u64, _: u64) -> Result<()> {
        Err(Error::NoSys)
    }
    fn allocate(&self, _: &mut Request<'_>, _: u64, _: u64) -> Result<()> {
        Err(Error::NoSys)
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
    let mem = SharedMem::new((pages * PAGE_SIZE) as usize).unwrap();
    let fd = rustix::io::fcntl_dupfd_cloexec(mem.fd(), 0).unwrap();
    let file = Arc::new(TestFile {
        mem,
        size: pages * PAGE_SIZE - 100,
        loads: AtomicU64::new(0),
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

fn read_byte(addr: u64) -> u8 {
    // SAFETY: the address lies in a region mapped by `realize_region`,
    // readable, whose pages the pager supplies on fault.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
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
    // Make the pager's view of the file now, so that it does not take the
    // address range freed below.
    pager.view(ds.idx()).unwrap().load(0).unwrap();
    let base = ReservedRange::new(64 * PAGE_SIZE as usize).unwrap();
    let b = base.addr() as u64;
    // Free the reservation so the regions can be mapped there.
    // SAFETY: the range is ours and unused.
    unsafe { libc::munmap(b as usize as *mut _, base.len()) };
    let file = |offset, file_len| Backing::File {
        ds: ds.idx(),
        offset,
        file_len,
    };
    {
        let mut m = map.lock();
        m.attach(
            b,
            4 * PAGE_SIZE,
            Rights::RX,
            file(0, 4 * PAGE_SIZE),
            false,
            "text",
            false,
            false,
            0,
        )
        .unwrap();
        m.attach(
            b + 8 * PAGE_SIZE,
            2 * PAGE_SIZE,
            Rights::RW,
            file(4 * PAGE_SIZE, PAGE_SIZE + 10),
            true,
            "data",
            false,
            false,
            0,
        )
        .unwrap();
        m.attach(
            b + 12 * PAGE_SIZE,
            4 * PAGE_SIZE,
            Rights::RW,
            Backing::Anon,
            true,
            "bss",
            false,
            false,
            0,
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
    // SAFETY: the data region is writable and private.
    unsafe { core::ptr::write_volatile(d as *mut u8, 0xee) };
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
    use l4re::proto::rm::flags;
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
            flags::RW | flags::SEARCH_ADDR,
            Some(file.send(l4re::CapRights::RW)),
            PAGE_SIZE,
            12,
            0,
            "shared",
            0,
        )
        .unwrap();
    let (s, z, fl, off, _) = rm.find(at + 10, 1).unwrap();
    assert_eq!(
        (s, z, fl & 7, off),
        (at, 2 * PAGE_SIZE, flags::RW, PAGE_SIZE)
    );
    // Write through the mapping (real faults, resolved by the pager).
    let msg = b"written through Rm";
    for (i, b) in msg.iter().enumerate() {
        // SAFETY: the region is mapped writable and shared by the pager.
        unsafe { core::ptr::write_volatile((at + 100 + i as u64) as *mut u8, *b) };
    }
    assert_eq!(read_byte(at + 100), b'w');
    assert_eq!(read_byte(at + PAGE_SIZE), b'.', "file content visible");
    // The server writes dirty pages back when it syncs.
    l4fs::FsOpsClient::sync_all(&fs).unwrap();
    let data = std::fs::read(dir.join("f")).unwrap();
    let o = PAGE_SIZE as usize + 100;
    assert_eq!(&data[o..o + msg.len()], msg);
    // Detach through Rm unmaps.
    let l4re::rpc::WithCode(code, (ds, dz, _)) = rm.detach(at, 2 * PAGE_SIZE, 0).unwrap();
    assert_eq!((code, ds, dz), (0, at, 2 * PAGE_SIZE));
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
    pager.view(ds.idx()).unwrap().load(0).unwrap();
    let base = ReservedRange::new(64 * PAGE_SIZE as usize).unwrap();
    let b = base.addr() as u64;
    // SAFETY: the range is ours and unused.
    unsafe { libc::munmap(b as usize as *mut _, base.len()) };
    {
        let mut m = map.lock();
        let file = Backing::File {
            ds: ds.idx(),
            offset: 0,
            file_len: 16 * PAGE_SIZE,
        };
        m.attach(
            b,
            16 * PAGE_SIZE,
            Rights::R,
            file,
            false,
            "text",
            false,
            false,
            0,
        )
        .unwrap();
        m.attach(
            b + 32 * PAGE_SIZE,
            16 * PAGE_SIZE,
            Rights::RW,
            Backing::Anon,
            true,
            "bss",
            false,
            false,
            0,
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
    drop(base);
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
    // SAFETY: a fresh private anonymous mapping at an address of the
    // kernel's choosing, used only through raw reads below.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as u64;
    assert_ne!(base, libc::MAP_FAILED as u64);
    u.register(base, len, uffd::mode::MISSING).unwrap();
    let mut map = RegionMap::new(0x10000, 0x7fff_ffff_f000);
    map.attach(
        base,
        len,
        Rights::RW,
        crate::region::Backing::Anon,
        true,
        "anon",
        false,
        false,
        0,
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
    let (mut to_child, mut from_child) = ([0i32; 2], [0i32; 2]);
    // SAFETY: plain pipe creation, then the fork system call (not glibc's
    // fork, which holds the allocator's locks until the kernel's fork
    // returns, i.e. until the reader thread, perhaps still starting and
    // allocating, has read the fork event): the child only reads memory
    // and makes raw system calls (no allocation, no locks) before _exit.
    let pid = unsafe {
        assert_eq!(libc::pipe(to_child.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(from_child.as_mut_ptr()), 0);
        let pid = libc::syscall(libc::SYS_fork) as i32;
        if pid == 0 {
            let b = core::ptr::read_volatile((base + PAGE_SIZE + 5) as *const u8) + 1;
            libc::write(from_child[1], (&b as *const u8).cast(), 1);
            libc::close(to_child[1]);
            let mut x = 0u8;
            libc::read(to_child[0], (&mut x as *mut u8).cast(), 1);
            libc::_exit(0);
        }
        pid
    };
    assert!(pid > 0);
    let child = Arc::new(rx.recv().unwrap());
    let _u = reader.join().unwrap();
    let (p, c) = (pager.clone(), child.clone());
    let server = std::thread::spawn(move || p.serve_child(c));
    let mut b = 0u8;
    // SAFETY: reads one byte from our pipe into `b`.
    let n = unsafe { libc::read(from_child[0], (&mut b as *mut u8).cast(), 1) };
    assert_eq!(n, 1);
    assert_eq!(b, 1, "the child read a zero page");
    assert!(child.mm_alive(pager.unregistered_page()));
    assert_eq!(Counters::get(&counters.child_faults), 1);
    // SAFETY: closing our pipe end lets the child exit; we reap it.
    unsafe {
        libc::close(to_child[1]);
        let mut st = 0;
        assert_eq!(libc::waitpid(pid, &mut st, 0), pid);
    }
    let t = std::time::Instant::now();
    while !server.is_finished() {
        assert!(t.elapsed().as_secs() < 5, "serve_child did not end");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!child.mm_alive(pager.unregistered_page()));
    // SAFETY: our mapping and pipe ends.
    unsafe {
        libc::munmap(base as *mut _, len as usize);
        for fd in [to_child[0], from_child[0], from_child[1]] {
            libc::close(fd);
        }
    }
}
