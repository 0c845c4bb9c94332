//! Paging on the Linux host: real page faults through userfaultfd.
//!
//! A [`Pager`] resolves the faults of a task whose regions are registered
//! with a [`uffd::Uffd`], following the decisions of
//! [`fault::resolve`](crate::fault::resolve):
//!
//! * **shared file pages** (internal pager): the region is a `MAP_SHARED`
//!   mapping of the file's memfd (the filesystem server's page cache).
//!   A page the server has cached is mapped by the kernel at the task's
//!   fault, as a page of its own page cache (read-only regions: no pager
//!   call); where the pager must see every first touch (writable shared
//!   regions, and every file region of a learned-prefetch recording run)
//!   the region is also registered for MINOR faults, resolved with
//!   `UFFDIO_CONTINUE`, which maps the server's page itself: zero copy,
//!   one physical page for every task. A MISSING
//!   fault (a hole: never loaded, or revoked by the server) first asks the
//!   server with a Dataspace `map` into the pager's view of the file, which
//!   makes the server load the page (and sends the whole aligned block
//!   around it that it has cached), then continues. Read-only pages come
//!   with fault-around (see [`Pager::set_fault_around`]): the cached pages
//!   of the aligned window around the fault are mapped with it, never a
//!   hole, and a sequential stream's window grows forward up to 2 MiB
//!   while the server is asked to read ahead of it after each answer;
//!   writable pages go one by one, each announced to the server;
//! * **private file pages**: copied at first touch (read or write) from the
//!   pager's view of the file with `UFFDIO_COPY`, the part beyond the
//!   region's file data zeroed (this is "copy at first touch", not a
//!   deferred copy-on-write: a private page is never shared);
//! * **anonymous pages**: `UFFDIO_ZEROPAGE`;
//! * the external pager brings each file page into its own memory once
//!   (a private copy of each page of the block the server maps in answer
//!   to a Dataspace `map`) and answers every fault on it with `UFFDIO_COPY`
//!   from there, with fault-around: it "returns flexpages from its own
//!   memory". Its copies are snapshots: later changes of the file do not
//!   reach pages it has copied.
//!
//! Duplicate events (several threads on one page) end in `EEXIST`, which
//! wakes the threads; a revocation racing an answer ends in `EFAULT`,
//! which wakes the thread to fault again.

pub mod uffd;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use l4re::cap::{Cap, CapIdx};
use l4re::fpage::{PAGE_SIZE, RcvBuf, Rights};
use l4re::host::{Mapping, Prot, ReservedRange, Source, memfd_behind};
use l4re::proto::dataspace::Flags as DsFlags;
use l4re::proto::{Dataspace, DataspaceClient};
use l4re::{Error, Result};

use crate::fault::{self, Access, Decision, FaultReport};
use crate::region::RegionMap;
use crate::sync::SpinLock;
use uffd::{Event, PageFault, Resolved, Uffd};

/// Most regions counted separately in [`Counters::region_faults`].
pub const MAX_REGIONS: usize = 32;
/// Marks an initialized [`Counters`] block.
pub const COUNTERS_MAGIC: u64 = 0x4c34_5047_5354_0001;

/// Paging statistics and the crash record of one task, kept in memory
/// shared between the task and its creator (so they survive the task).
#[repr(C)]
#[derive(Debug)]
pub struct Counters {
    /// [`COUNTERS_MAGIC`] once set up.
    pub magic: AtomicU64,
    /// Faults served.
    pub faults: AtomicU64,
    /// Of which minor (page cached, not mapped).
    pub minor: AtomicU64,
    /// Of which missing.
    pub missing: AtomicU64,
    /// Shared file pages mapped (`UFFDIO_CONTINUE`).
    pub shared_maps: AtomicU64,
    /// Private copies of file pages (copy at first touch).
    pub private_copies: AtomicU64,
    /// Zero-filled pages.
    pub zero_pages: AtomicU64,
    /// Invalid accesses found by the pager.
    pub errors: AtomicU64,
    /// Duplicate events and revocation races (woken, no page mapped).
    pub retries: AtomicU64,
    /// Pages mapped in total.
    pub pages_mapped: AtomicU64,
    /// Dataspace `map` calls to the server.
    pub server_maps: AtomicU64,
    /// Bytes the server mapped to us.
    pub bytes_from_server: AtomicU64,
    /// Distinct pages of files touched.
    pub file_pages_touched: AtomicU64,
    /// Pages mapped ahead of any fault (prefetch).
    pub prefetched: AtomicU64,
    /// Fork events.
    pub forks: AtomicU64,
    /// Faults per region (in address order).
    pub region_faults: [AtomicU64; MAX_REGIONS],
    /// Crash record: signal number (0: none).
    pub crash_signo: AtomicU64,
    /// Crash record: `si_code`.
    pub crash_code: AtomicU64,
    /// Crash record: faulting address.
    pub crash_addr: AtomicU64,
    /// Crash record: pc.
    pub crash_pc: AtomicU64,
    /// Crash record: page-fault error code (bit 1 write, bit 4 fetch).
    pub crash_err: AtomicU64,
    /// Pager-detected invalid access: address + 1 (0: none).
    pub pager_error_addr: AtomicU64,
    /// Pager-detected invalid access: 0 read, 1 write, 2 exec.
    pub pager_error_access: AtomicU64,
    /// Of [`faults`](Self::faults), those of forked descendants (served by
    /// a pager made with [`Pager::for_children`]).
    pub child_faults: AtomicU64,
    /// Distinct file pages touched by the pager of forked descendants (its
    /// own count: pages the task touched too are counted again).
    pub child_file_pages_touched: AtomicU64,
    /// The first fault that found the filesystem server gone: its address
    /// plus 1 (0: none). The faulting thread got `SIGBUS`, as a mapped
    /// file's I/O error gives natively.
    pub server_lost_addr: AtomicU64,
    /// Faults answered with `SIGBUS` because the server was gone.
    pub server_lost: AtomicU64,
    /// Learned prefetch: pages in the profile being replayed.
    pub profile_pages: AtomicU64,
    /// Learned prefetch: pages the prefetcher brought in from the
    /// profile: mapped, or (read-only shared file pages where the kernel
    /// maps what the server has cached) brought into the server's cache.
    pub profile_prefetched: AtomicU64,
    /// Learned prefetch: of those, pages the recording run faulted on
    /// (the program touched them first-hand there).
    pub profile_used: AtomicU64,
    /// Learned prefetch: the first fault on a page outside the profile
    /// (the run left the recorded path; the prefetcher stopped), plus 1
    /// (0: none).
    pub profile_diverged: AtomicU64,
    /// Read-ahead requests to the server (Dataspace `allocate`), made
    /// after a fault that continued a forward scan of a file was answered
    /// (see [`Pager::set_fault_around`]).
    pub read_aheads: AtomicU64,
}

/// Entries of a [`PageLog`].
pub const LOG_ENTRIES: usize = (256 << 10) / 8 - 1;
/// Bytes of the memory shared between a task and its creator: the
/// [`Counters`] page, then the [`PageLog`].
pub const SHARED_BYTES: usize = 4096 + core::mem::size_of::<PageLog>();
/// A [`PageLog`] entry's flag: the page of a fault (not one mapped around
/// it).
pub const LOG_FAULT: u64 = 1 << 11;
/// A [`PageLog`] entry's page count minus one (bits 0..11).
pub const LOG_COUNT_MASK: u64 = LOG_FAULT - 1;

/// The order in which a task's pages were first mapped at its faults (the
/// recording run of learned prefetch), kept next to the [`Counters`] in
/// memory shared with the creator. An entry is a page address with
/// [`LOG_FAULT`] if the run starts with a faulting page, and the run's
/// page count minus one in the low bits ([`LOG_COUNT_MASK`]).
#[repr(C)]
#[derive(Debug)]
pub struct PageLog {
    /// Entries pushed (more than [`LOG_ENTRIES`]: the rest were lost).
    pub len: AtomicU64,
    /// The entries.
    pub entries: [AtomicU64; LOG_ENTRIES],
}

// The counters fit the page before the log.
const _: () = assert!(core::mem::size_of::<Counters>() <= 4096);

/// The memory a task shares with its creator ([`SHARED_BYTES`]): the
/// [`Counters`] page, then the [`PageLog`]. It stays mapped for the rest
/// of the process's life, so the references are `'static`.
#[derive(Debug, Clone, Copy)]
pub struct SharedStats {
    /// The counters (the first page).
    pub counters: &'static Counters,
    /// The page log (after the first page).
    pub log: &'static PageLog,
}

impl SharedStats {
    /// Makes the memory: a memfd of [`SHARED_BYTES`] (zeros), mapped
    /// shared, its counters marked with [`COUNTERS_MAGIC`]. Returns the
    /// memfd, for the creator to [`open`](Self::open).
    pub fn create() -> std::io::Result<(std::os::fd::OwnedFd, SharedStats)> {
        let fd = rustix::fs::memfd_create("l4task-stats", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, SHARED_BYTES as u64)?;
        let s = SharedStats::open(std::os::fd::AsFd::as_fd(&fd))?;
        s.counters.magic.store(COUNTERS_MAGIC, Ordering::Relaxed);
        Ok((fd, s))
    }

    /// Maps the memory a task made ([`create`](Self::create)) from its
    /// memfd, shared, for the rest of the process's life.
    pub fn open(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<SharedStats> {
        let prot = Prot::READ | Prot::WRITE;
        let map = Mapping::new(SHARED_BYTES, prot, Source::Shared(fd, 0))?;
        let at = map.leak();
        // SAFETY: `[at, at + SHARED_BYTES)` is a page-aligned mapping that
        // is never unmapped (leaked above), large enough for both (the
        // counters fit the first page), and both types consist of atomics
        // only, for which every byte pattern another process may write is
        // a valid value. (Stays here: the layout is the pager's.)
        let (counters, log) =
            unsafe { (&*(at as *const Counters), &*((at + 4096) as *const PageLog)) };
        Ok(SharedStats { counters, log })
    }
}

impl PageLog {
    /// Appends a run of `pages` pages from `addr` (`fault`: it starts with
    /// the faulting page).
    pub fn push(&self, addr: u64, pages: u64, fault: bool) {
        let mut a = addr & !(PAGE_SIZE - 1);
        let mut left = pages;
        let mut f = fault;
        while left > 0 {
            let n = left.min(LOG_COUNT_MASK + 1);
            let i = self.len.fetch_add(1, Ordering::Relaxed) as usize;
            if i >= LOG_ENTRIES {
                return;
            }
            let e = a | (n - 1) | if f { LOG_FAULT } else { 0 };
            self.entries[i].store(e, Ordering::Relaxed);
            a += n * PAGE_SIZE;
            left -= n;
            f = false;
        }
    }

    /// The entries pushed so far.
    pub fn snapshot(&self) -> Vec<u64> {
        let n = (Counters::get(&self.len) as usize).min(LOG_ENTRIES);
        self.entries[..n]
            .iter()
            .map(|e| e.load(Ordering::Relaxed))
            .collect()
    }
}

/// A learned-prefetch profile being replayed by a [`Pager`] (see
/// [`Pager::replay`]).
struct Replay {
    /// Every page of the profile.
    pages: HashSet<u64>,
    /// Set at the first fault on a page outside it.
    stop: std::sync::atomic::AtomicBool,
}

impl Counters {
    /// A zeroed block, ready for use.
    pub fn new() -> Counters {
        Counters {
            magic: AtomicU64::new(COUNTERS_MAGIC),
            faults: AtomicU64::new(0),
            minor: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            shared_maps: AtomicU64::new(0),
            private_copies: AtomicU64::new(0),
            zero_pages: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            pages_mapped: AtomicU64::new(0),
            server_maps: AtomicU64::new(0),
            bytes_from_server: AtomicU64::new(0),
            file_pages_touched: AtomicU64::new(0),
            prefetched: AtomicU64::new(0),
            forks: AtomicU64::new(0),
            region_faults: [const { AtomicU64::new(0) }; MAX_REGIONS],
            crash_signo: AtomicU64::new(0),
            crash_code: AtomicU64::new(0),
            crash_addr: AtomicU64::new(0),
            crash_pc: AtomicU64::new(0),
            crash_err: AtomicU64::new(0),
            pager_error_addr: AtomicU64::new(0),
            pager_error_access: AtomicU64::new(0),
            child_faults: AtomicU64::new(0),
            child_file_pages_touched: AtomicU64::new(0),
            server_lost_addr: AtomicU64::new(0),
            server_lost: AtomicU64::new(0),
            profile_pages: AtomicU64::new(0),
            profile_prefetched: AtomicU64::new(0),
            profile_used: AtomicU64::new(0),
            profile_diverged: AtomicU64::new(0),
            read_aheads: AtomicU64::new(0),
        }
    }

    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

/// The pager's own view of a dataspace (a file): the file's memfd mapped
/// read-only into a reserved range of the pager, page `i` at `base + i`.
///
/// The pager learns which pages the server has from its answers to
/// Dataspace `map` and reads their content with `pread` (never through the
/// mapping: touching a page the server has not loaded, or has revoked
/// meanwhile, would make the kernel insert a zero page into the shared
/// page cache, which every task would then see as the file's content).
pub struct DsView {
    ds: Cap<Dataspace>,
    size: u64,
    range: ReservedRange,
    /// Two pages where pages asked for writing arrive (see
    /// [`load_block`](Self::load_block)).
    scratch: ReservedRange,
    /// The memfd (and whether we have it read-write), after the first map.
    memfd: OnceLock<(std::os::fd::OwnedFd, bool)>,
    /// The end (file offset) of the range a stream's read-ahead last
    /// asked the server for (see [`read_ahead`](Self::read_ahead)).
    ahead_end: AtomicU64,
}

/// A block of a file the server mapped in answer to a Dataspace `map`:
/// file offsets `[first, first + len)`, all of it in the server's page
/// cache at the time of the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// File offset of the first byte (page-aligned).
    pub first: u64,
    /// Length in bytes (a power-of-two number of pages).
    pub len: u64,
}

impl Block {
    /// File offset of the end of the block.
    pub fn end(&self) -> u64 {
        self.first + self.len
    }
}

impl DsView {
    /// A view of `ds`.
    pub fn new(ds: Cap<Dataspace>) -> Result<DsView> {
        let st = ds.info()?;
        let size = st.size.max(PAGE_SIZE);
        let range = ReservedRange::new(size.next_multiple_of(PAGE_SIZE) as usize)?;
        let scratch = ReservedRange::new(2 * PAGE_SIZE as usize)?;
        Ok(DsView {
            ds,
            size: st.size,
            range,
            scratch,
            memfd: OnceLock::new(),
            ahead_end: AtomicU64::new(0),
        })
    }

    /// The dataspace's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The dataspace.
    pub fn ds(&self) -> Cap<Dataspace> {
        self.ds
    }

    /// Asks the server for the page at `offset` (it loads it into its page
    /// cache and maps it into our view); returns the bytes it mapped.
    pub fn load(&self, offset: u64) -> Result<u64> {
        self.load_flags(offset, DsFlags::R)
    }

    /// As [`load`](Self::load), with Dataspace map flags (`DsFlags::RW`
    /// for a page that will be written through a shared mapping: the
    /// server then treats it as dirty until it writes it back).
    pub fn load_flags(&self, offset: u64, flags: DsFlags) -> Result<u64> {
        Ok(self.load_block(offset, flags)?.len)
    }

    /// As [`load_flags`](Self::load_flags), returning the block the server
    /// mapped.
    ///
    /// Read-only: the receive window is the naturally aligned block of up
    /// to 2 MiB of our view around the page, so the server's answer — the
    /// largest aligned block around the page that it has fully cached —
    /// arrives whole, with one round trip.
    ///
    /// Writable (`flags` has `W`): exactly the page. The server counts all
    /// of the block it sends as mapped writable, i.e. dirty until it
    /// writes it back, and cannot know how much of it our window took;
    /// so the hot spot is put where only a single page agrees with it in
    /// alignment (the other page of a two-page scratch window: the server
    /// then sends one page, as L4Re's `dataspace_svr` would).
    pub fn load_block(&self, offset: u64, flags: DsFlags) -> Result<Block> {
        let offset = offset & !(PAGE_SIZE - 1);
        if offset >= self.size.next_multiple_of(PAGE_SIZE) {
            return Err(Error::Range);
        }
        let writable = flags.contains(DsFlags::W);
        let (spot, window, order) = if writable {
            let s = self.scratch.addr() as u64;
            (s + (!offset & PAGE_SIZE), s, self.scratch.order())
        } else {
            // The range is naturally aligned to its power-of-two size, so
            // an aligned block of at most its size around `spot` lies
            // inside it.
            let spot = self.range.addr() as u64 + offset;
            let order = self.range.order().clamp(12, MAX_BLOCK_ORDER);
            (spot, spot & !((1u64 << order) - 1), order)
        };
        let item = self
            .ds
            .map(offset, spot, flags, RcvBuf::window(window, order))?;
        if self.memfd.get().is_none() {
            let (fd, at, writable) = memfd_behind(spot, PAGE_SIZE).ok_or(Error::Fault)?;
            if at != offset {
                log::warn!("pager: file page {offset:#x} arrived at memfd offset {at:#x}");
                return Err(Error::Inval);
            }
            // Map the whole file into the view once; later items land on
            // the same file pages.
            let len = self.range.len();
            let file = Source::Shared(std::os::fd::AsFd::as_fd(&fd), 0);
            if self.range.replace(0, len, Prot::READ, file).is_err() {
                return Err(Error::NoMem);
            }
            let _ = self.memfd.set((fd, writable));
        }
        // What landed in the window: the flexpage, cut to the window around
        // the hot spot (file offsets and view addresses agree in alignment).
        let len = if writable {
            PAGE_SIZE
        } else {
            item.fpage.size().clamp(PAGE_SIZE, 1 << order)
        };
        let first = offset & !(len - 1);
        Ok(Block { first, len })
    }

    /// Read-ahead for a stream that has reached file offset `from`: makes
    /// sure the server has `[from, from + len)` (clipped to the file) in
    /// its cache, so that the stream's next faults find it there and map
    /// it whole without a round trip. What an earlier call asked for is
    /// not asked again, and a continuing stream asks once half the window
    /// is new; what the server has cached already (`mincore` on our view)
    /// is not asked for; the rest is one Dataspace `allocate`
    /// (the server reads it in runs). Returns whether the server was
    /// asked. Meant to run after the faulting thread was woken: the server
    /// reads while the program works through the pages it has.
    pub fn read_ahead(&self, from: u64, len: u64) -> Result<bool> {
        let file_end = self.size.next_multiple_of(PAGE_SIZE);
        let from = from & !(PAGE_SIZE - 1);
        let end = from.saturating_add(len).min(file_end);
        let asked = self.ahead_end.load(Ordering::Relaxed);
        // Continue where the last request of this stream ended (at most
        // two windows ahead of it); one far away (another stream, or this
        // one started again) does not count.
        let window = MAX_STREAM_PAGES * PAGE_SIZE;
        let start = if asked > from && asked - from <= 2 * window {
            asked.min(end)
        } else {
            from
        };
        // Continuing, it asks once half the window is new: requests come
        // in large blocks, and early enough.
        if start >= end
            || (start > from && end - start < (end - from) / 2)
            || self.memfd.get().is_none()
        {
            return Ok(false);
        }
        self.ahead_end.store(end, Ordering::Relaxed);
        let cached = self
            .range
            .resident_pages(start as usize, (end - start) as usize)
            .unwrap_or(0) as u64;
        let first = start + cached * PAGE_SIZE;
        if first >= end {
            return Ok(false);
        }
        self.ds.allocate(first, end - first)?;
        Ok(true)
    }

    /// Copies the first `valid` bytes of the page at `offset` into `out`
    /// (a page) and zeroes the rest; `false` if the server revoked the
    /// page before the copy was done (the copy is then not the file's
    /// content: load it again). The page must have been
    /// [`load`](Self::load)ed.
    pub fn read_page(&self, offset: u64, valid: u64, out: &mut [u8]) -> bool {
        let len = out.len().min(PAGE_SIZE as usize);
        let ok = self.read_pages(offset, &mut [&mut out[..len]]) > 0;
        let valid = (valid as usize).min(len);
        out[valid..].fill(0);
        ok
    }

    /// Copies the consecutive pages from `offset` on into `pages` (a page
    /// each; bytes past the end of the file as zeros), which the server
    /// must have mapped to us, with one `preadv` (which, unlike a read
    /// through the view, never inserts a page into the server's cache).
    /// Returns how many of them, from the first on, were copied whole and
    /// still in the server's cache after the copy (`mincore`): a page it
    /// revoked meanwhile may have been read as zeros, so it and the pages
    /// after it are not to be used. (A page revoked and loaded again
    /// between the copy and the check is taken: then the server evicted
    /// and reloaded a page it had just mapped, within microseconds.)
    pub fn read_pages(&self, offset: u64, pages: &mut [&mut [u8]]) -> u64 {
        let Some((fd, _)) = self.memfd.get() else {
            return 0;
        };
        let n = pages.len().min(1024); // IOV_MAX
        let pages = &mut pages[..n];
        // The part of each page to read (the rest, past the end of the
        // file, is zeros), as what is left of it to read.
        let mut left: Vec<&mut [u8]> = Vec::with_capacity(pages.len());
        let mut want = 0;
        for (i, p) in pages.iter_mut().enumerate() {
            let file = self.size.saturating_sub(offset + i as u64 * PAGE_SIZE);
            let n = (file as usize).min(p.len());
            p[n..].fill(0);
            want += n;
            left.push(&mut p[..n]);
        }
        let (mut done, mut first) = (0, 0);
        while done < want {
            let mut iov: Vec<std::io::IoSliceMut<'_>> = left[first..]
                .iter_mut()
                .map(|p| std::io::IoSliceMut::new(p))
                .collect();
            let r = match rustix::io::preadv(fd, &mut iov, offset + done as u64) {
                Ok(0) => break,
                Ok(r) => r,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            };
            drop(iov);
            let mut r = r;
            done += r;
            while r > 0 && first < left.len() {
                let take = r.min(left[first].len());
                let rest = core::mem::take(&mut left[first]);
                left[first] = &mut rest[take..];
                r -= take;
                if left[first].is_empty() {
                    first += 1;
                }
            }
            while first < left.len() && left[first].is_empty() {
                first += 1;
            }
        }
        // Pages copied whole: those before the first one left unfinished.
        let whole = left.iter().take_while(|p| p.is_empty()).count();
        if whole == 0 {
            return 0;
        }
        // Which are still there: the pages of a file mapping that are in
        // its page cache, whether this process touched them or not.
        let len = whole * PAGE_SIZE as usize;
        match self.range.resident_pages(offset as usize, len) {
            Ok(n) => n as u64,
            Err(_) => 0,
        }
    }

    /// Whether we hold the memfd read-write.
    pub fn writable(&self) -> bool {
        self.memfd.get().is_some_and(|(_, w)| *w)
    }

    /// The memfd behind the file, if a page was loaded already.
    pub fn memfd(&self) -> Option<&std::os::fd::OwnedFd> {
        self.memfd.get().map(|(fd, _)| fd)
    }

    /// Whether the server has every page of file range `[first, end)`
    /// (up to the end of the file) in its cache: no hole in its memfd
    /// there (`SEEK_HOLE`, no call to the server). `false` before the
    /// first map brought the memfd.
    pub fn cached(&self, first: u64, end: u64) -> bool {
        let end = end.min(self.size);
        if first >= end {
            return true;
        }
        let Some(fd) = self.memfd() else {
            return false;
        };
        // The memfd may be longer than the file (whole pages); the
        // implicit hole at its end lies past `end` then.
        matches!(
            rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(first)),
            Ok(hole) if hole >= end
        )
    }
}

/// The error of a resolving ioctl that failed on `page` for a reason other
/// than a duplicate event or a revocation race (logged with its errno).
fn ioctl_error(what: &str, page: u64, errno: i32) -> Error {
    log::warn!(
        "pager: {what} of page {page:#x} failed: {}",
        std::io::Error::from_raw_os_error(errno)
    );
    Error::Io
}

/// Who resolves faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The internal pager, inside the task: shared file pages are mapped
    /// (zero copy) with `UFFDIO_CONTINUE`.
    Internal,
    /// The external pager, in the creating task: every page is copied from
    /// its own memory.
    External,
}

/// Largest block asked of the server at once (2 MiB, its largest map
/// reply).
const MAX_BLOCK_ORDER: u8 = 21;

/// Pages mapped around a shared file page at a fault when the server has
/// them cached (the kernel's default `fault_around_bytes`, 64 KiB): the
/// naturally aligned window of this many pages around the fault, clipped
/// to the region.
pub const FAULT_AROUND_PAGES: u64 = 16;

/// Most pages mapped at one fault of a sequential stream (2 MiB, the
/// server's largest block): a fault that continues a stream — at the end
/// of the pages mapped at the stream's previous fault — doubles the
/// window mapped forward from it, from the fault-around window up to this.
pub const MAX_STREAM_PAGES: u64 = 512;

// A stream's read-ahead starts at two fault-around windows.
const _: () = assert!(2 * FAULT_AROUND_PAGES <= MAX_STREAM_PAGES);

/// One page of content.
type Page = [u8; PAGE_SIZE as usize];

/// What a pager does when it finds an invalid access.
pub type OnError = Box<dyn Fn(&FaultReport, &PageFault) + Send + Sync>;

/// What a pager does with the uffd of a forked child (see
/// [`Pager::set_on_fork`]).
pub type OnFork = Box<dyn Fn(Uffd) + Send + Sync>;

/// How long a pager of forked children waits for an event before it checks
/// whether the child's address space still exists.
pub const CHILD_POLL_MS: i32 = 10;

/// A fault resolver for one task (and the children it forks).
pub struct Pager {
    map: Arc<SpinLock<RegionMap>>,
    views: Mutex<HashMap<u64, Arc<DsView>>>,
    counters: &'static Counters,
    touched: Mutex<HashSet<(u64, u64)>>,
    /// The external pager's own copies of file pages (dataspace, offset).
    own: Mutex<HashMap<(u64, u64), Box<Page>>>,
    mode: Mode,
    on_error: OnError,
    /// Pages mapped around a shared file page (see
    /// [`set_fault_around`](Self::set_fault_around)).
    fault_around: AtomicU64,
    /// The end of the last run of pages mapped forward from a fault (a
    /// fault there continues a sequential stream).
    last_end: AtomicU64,
    /// The window of the current sequential stream in pages (see
    /// [`window`](Self::window)).
    stream_pages: AtomicU64,
    /// The read-ahead window of the current forward progress in pages
    /// (0: none).
    ahead_pages: AtomicU64,
    on_fork: OnceLock<OnFork>,
    /// Serves forked descendants (counts [`Counters::child_faults`]).
    children: bool,
    /// Where the pages mapped at faults are logged (recording run).
    log: OnceLock<&'static PageLog>,
    /// The profile being replayed.
    replay: OnceLock<Replay>,
    /// See [`set_sees_cached`](Self::set_sees_cached).
    sees_cached: std::sync::atomic::AtomicBool,
}

impl Pager {
    /// A pager for the regions in `map`.
    pub fn new(
        map: Arc<SpinLock<RegionMap>>,
        counters: &'static Counters,
        mode: Mode,
        on_error: OnError,
    ) -> Pager {
        Pager {
            map,
            views: Mutex::new(HashMap::new()),
            counters,
            touched: Mutex::new(HashSet::new()),
            own: Mutex::new(HashMap::new()),
            mode,
            on_error,
            fault_around: AtomicU64::new(FAULT_AROUND_PAGES),
            last_end: AtomicU64::new(0),
            stream_pages: AtomicU64::new(0),
            ahead_pages: AtomicU64::new(0),
            on_fork: OnceLock::new(),
            children: false,
            log: OnceLock::new(),
            replay: OnceLock::new(),
            sees_cached: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A pager for the forked descendants of a task: the same resolution
    /// over `map` (the task's region layout, which a child inherits at
    /// fork), its faults also counted in [`Counters::child_faults`]. Serve
    /// each child with [`serve_child`](Self::serve_child).
    pub fn for_children(
        map: Arc<SpinLock<RegionMap>>,
        counters: &'static Counters,
        mode: Mode,
        on_error: OnError,
    ) -> Pager {
        Pager {
            children: true,
            ..Pager::new(map, counters, mode, on_error)
        }
    }

    /// What to do with the uffd of a child the task forks (a fork event):
    /// by default a new thread of this process serves it, which ends with
    /// this process; a handler can hand it to a longer-lived process.
    /// Only the first call counts.
    pub fn set_on_fork(&self, f: OnFork) {
        let _ = self.on_fork.set(f);
    }

    /// The region map.
    pub fn map(&self) -> &Arc<SpinLock<RegionMap>> {
        &self.map
    }

    /// The counters.
    pub fn counters(&self) -> &'static Counters {
        self.counters
    }

    /// The view of dataspace `ds` (made on first use).
    pub fn view(&self, ds: CapIdx) -> Result<Arc<DsView>> {
        let mut v = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(x) = v.get(&ds.0) {
            return Ok(x.clone());
        }
        let view = Arc::new(DsView::new(Cap::from_idx(ds))?);
        v.insert(ds.0, view.clone());
        Ok(view)
    }

    fn load(&self, view: &DsView, offset: u64) -> Result<Block> {
        self.load_flags(view, offset, DsFlags::R)
    }

    fn load_flags(&self, view: &DsView, offset: u64, flags: DsFlags) -> Result<Block> {
        let b = view.load_block(offset, flags)?;
        Counters::add(&self.counters.server_maps, 1);
        Counters::add(&self.counters.bytes_from_server, b.len);
        Ok(b)
    }

    fn touch(&self, ds: CapIdx, offset: u64) {
        let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        if t.insert((ds.0, offset)) {
            let c = if self.children {
                &self.counters.child_file_pages_touched
            } else {
                &self.counters.file_pages_touched
            };
            c.store(t.len() as u64, Ordering::Relaxed);
        }
    }

    /// Resolves one fault. `Err` only for failures of the machinery (the
    /// server is gone, an ioctl failed unexpectedly); invalid accesses are
    /// reported through the error callback and end the task.
    pub fn handle(&self, uffd: &Uffd, f: PageFault) -> Result<()> {
        let c = self.counters;
        Counters::add(&c.faults, 1);
        Counters::add(if f.minor { &c.minor } else { &c.missing }, 1);
        if self.children {
            Counters::add(&c.child_faults, 1);
        }
        if let Some(r) = self.replay.get()
            && !self.children
            && !r.pages.contains(&(f.addr & !(PAGE_SIZE - 1)))
        {
            // Off the recorded path: the prefetcher stops.
            r.stop.store(true, Ordering::Relaxed);
            let _ = c.profile_diverged.compare_exchange(
                0,
                f.addr + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let access = if f.write { Access::Write } else { Access::Read };
        let decision = {
            let map = self.map.lock();
            let mut d = fault::resolve(&map, f.addr, access, 0);
            // An instruction fetch reaches us as a read; a region that may
            // be executed but not read is still resolved.
            if let Decision::Error(r) = &d
                && r.cause == fault::FaultCause::Forbidden
                && !f.write
            {
                let x = fault::resolve(&map, f.addr, Access::Exec, 0);
                if !matches!(x, Decision::Error(_)) {
                    d = x;
                }
            }
            d
        };
        self.apply(uffd, decision, &f, false).map(|_| ())
    }

    /// Logs a run of pages mapped at a fault (recording run only).
    fn record(&self, addr: u64, pages: u64, fault: bool) {
        if !self.children
            && pages > 0
            && let Some(l) = self.log.get()
        {
            l.push(addr, pages, fault);
        }
    }

    /// From now on, logs the pages mapped at faults in `log`, in order
    /// (the recording run of learned prefetch). Only the first call
    /// counts. Call it before the regions are realized: only those
    /// realized after it bring faults on cached pages to the pager.
    pub fn set_log(&self, log: &'static PageLog) {
        let _ = self.log.set(log);
        self.set_sees_cached();
    }

    /// From now on, file regions realized by [`realize_region`] bring
    /// faults on pages the server has cached to this pager too (uffd
    /// MINOR faults), not only holes: every first touch of a file page is
    /// then seen (and counted, logged, mapped with the pager's
    /// fault-around). Writable shared regions always do; a recording run
    /// ([`set_log`](Self::set_log)) sets it for all. Elsewhere the kernel
    /// maps a cached page itself.
    pub fn set_sees_cached(&self) {
        self.sees_cached.store(true, Ordering::Relaxed);
    }

    /// Whether file regions realized now bring faults on cached pages to
    /// this pager (see [`set_sees_cached`](Self::set_sees_cached)).
    pub fn sees_cached(&self) -> bool {
        self.sees_cached.load(Ordering::Relaxed)
    }

    /// Replays a learned-prefetch profile (entries as in [`PageLog`]):
    /// maps its pages ahead of the program, in order, until the end or the
    /// first fault on a page outside the profile. First the server is
    /// asked (Dataspace `allocate`) to bring the file ranges the profile
    /// needs into its cache, a few round trips for all those it lacks.
    /// Runs of read-only shared file pages are then mapped with one
    /// `UFFDIO_CONTINUE` each (internal pager) where the pager sees cached
    /// pages, and left to the kernel where it sees only holes
    /// ([`set_sees_cached`](Self::set_sees_cached)). Counted in
    /// [`Counters::profile_prefetched`] and
    /// [`profile_used`](Counters::profile_used).
    ///
    /// `ready` is called once the first `head` pages are mapped (or the
    /// replay ended earlier): the caller may start the program then and
    /// let the rest be mapped while it runs.
    pub fn replay(&self, uffd: &Uffd, entries: &[u64], head: u64, ready: &mut dyn FnMut()) {
        let mut ready = Some(ready);
        self.replay_inner(uffd, entries, head, &mut ready);
        if let Some(r) = ready.take() {
            r();
        }
    }

    fn replay_inner(
        &self,
        uffd: &Uffd,
        entries: &[u64],
        head: u64,
        ready: &mut Option<&mut dyn FnMut()>,
    ) {
        let c = self.counters;
        let runs: Vec<(u64, u64, bool)> = entries
            .iter()
            .map(|e| {
                (
                    e & !(PAGE_SIZE - 1),
                    (e & LOG_COUNT_MASK) + 1,
                    e & LOG_FAULT != 0,
                )
            })
            .collect();
        let mut pages = HashSet::new();
        for (a, n, _) in &runs {
            for i in 0..*n {
                pages.insert(a + i * PAGE_SIZE);
            }
        }
        c.profile_pages.store(pages.len() as u64, Ordering::Relaxed);
        if self
            .replay
            .set(Replay {
                pages,
                stop: std::sync::atomic::AtomicBool::new(false),
            })
            .is_err()
        {
            return;
        }
        let stop = || {
            self.replay
                .get()
                .is_some_and(|r| r.stop.load(Ordering::Relaxed))
        };
        self.warm_server(&runs);
        let mut done = HashSet::new();
        for (addr, n, fault) in runs {
            if stop() {
                break;
            }
            let mut p = addr;
            let end = addr + n * PAGE_SIZE;
            while p < end {
                if !done.insert(p) {
                    p += PAGE_SIZE;
                    continue;
                }
                // Warmed above and mapped by the kernel at the touch:
                // brought in, counted as prefetched.
                let mapped = match self.left_to_kernel(p, end) {
                    Some(e) => (e - p) / PAGE_SIZE,
                    None => self.prefetch_run(uffd, p, end),
                };
                let got = mapped.max(1);
                for q in (p..p + got * PAGE_SIZE).step_by(PAGE_SIZE as usize) {
                    done.insert(q);
                }
                if mapped > 0 {
                    Counters::add(&c.profile_prefetched, mapped);
                    if fault && p == addr {
                        Counters::add(&c.profile_used, 1);
                    }
                }
                p += got * PAGE_SIZE;
                if done.len() as u64 >= head
                    && let Some(r) = ready.take()
                {
                    r();
                }
            }
        }
    }

    /// Asks the server to bring the file ranges behind the profile's
    /// file-backed pages into its cache (Dataspace `allocate`, one call per
    /// range of consecutive pages that is not cached already, see
    /// [`DsView::cached`]). `runs`: (first page, pages, whether it
    /// was a fault's page). Public so that a loader that reads the profile
    /// before the task replays it can warm the server meanwhile.
    pub fn warm_server(&self, runs: &[(u64, u64, bool)]) {
        let mut want: Vec<(u64, u64, u64)> = Vec::new(); // (ds, first, end)
        {
            let map = self.map.lock();
            for (a, n, _) in runs {
                let Some(r) = map.lookup(*a) else { continue };
                if let crate::region::Backing::File {
                    ds,
                    offset,
                    file_len,
                } = r.backing
                {
                    let first = offset + (a - r.start);
                    let end =
                        (first + n * PAGE_SIZE).min(offset + file_len.next_multiple_of(PAGE_SIZE));
                    if end > first {
                        want.push((ds.0, first, end));
                    }
                }
            }
        }
        want.sort_unstable();
        let mut merged: Vec<(u64, u64, u64)> = Vec::new();
        for (ds, f, e) in want {
            match merged.last_mut() {
                // Gaps of up to 64 KiB are read too (fewer calls).
                Some(m) if m.0 == ds && f <= m.2 + (16 * PAGE_SIZE) => m.2 = m.2.max(e),
                _ => merged.push((ds, f, e)),
            }
        }
        for (ds, f, e) in merged {
            // Ranges the server has cached cost no round trip (a warm
            // server: all of them). Only a view we have can tell: making
            // one for it would cost a round trip of its own.
            let view = self
                .views
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&ds)
                .cloned();
            if view.is_some_and(|v| v.cached(f, e)) {
                continue;
            }
            let cap: Cap<Dataspace> = Cap::from_idx(CapIdx(ds));
            if let Err(err) = cap.allocate(f, e - f) {
                log::debug!("pager: allocate of {f:#x}..{e:#x} failed: {err}");
            }
        }
    }

    /// The pages of the task's program to map before it starts: each
    /// file-backed region that is not writable-shared (text, read-only
    /// data, private data) up to the end of its file data, and each
    /// anonymous region (bss) but the one holding `except` (the stack), as
    /// `(first page, pages)`. `None` if the file pages are more than
    /// `limit` (or `limit` is 0): then [`premap`](Self::premap) would map
    /// more than a program touches. Anonymous regions are left out when
    /// larger than `limit` pages.
    pub fn premap_runs(&self, limit: u64, except: u64) -> Option<Vec<(u64, u64)>> {
        let map = self.map.lock();
        let mut runs = Vec::new();
        let mut file_pages = 0;
        for r in map.iter() {
            let pages = match r.backing {
                crate::region::Backing::File { file_len, .. }
                    if r.private || !r.rights.contains(Rights::W) =>
                {
                    let n = file_len.min(r.size).div_ceil(PAGE_SIZE);
                    file_pages += n;
                    n
                }
                crate::region::Backing::Anon if !r.contains(except) => {
                    let n = r.size / PAGE_SIZE;
                    if n > limit { 0 } else { n }
                }
                _ => 0,
            };
            if pages > 0 {
                runs.push((r.start, pages));
            }
        }
        (limit > 0 && file_pages <= limit).then_some(runs)
    }

    /// Maps the pages of `runs` (`(first page, pages)`) before the program
    /// touches them. File pages: the server reads them into its cache
    /// first (one Dataspace `allocate` per stretch of the file,
    /// [`warm_server`](Self::warm_server)), then each run goes in with one
    /// `UFFDIO_CONTINUE` (read-only shared pages) or a few `UFFDIO_COPY`s
    /// (private copies). Anonymous pages: one `UFFDIO_ZEROPAGE` per run
    /// (the kernel copies a page at its first write). Pages already
    /// mapped are skipped. Counted as prefetched; returns the pages
    /// mapped.
    pub fn premap(&self, uffd: &Uffd, runs: &[(u64, u64)]) -> u64 {
        let warm: Vec<(u64, u64, bool)> = runs.iter().map(|&(a, n)| (a, n, false)).collect();
        self.warm_server(&warm);
        let mut mapped = 0;
        for &(addr, n) in runs {
            let end = addr + n * PAGE_SIZE;
            let anon = matches!(
                self.map.lock().lookup(addr).map(|r| &r.backing),
                Some(crate::region::Backing::Anon)
            );
            if anon && uffd.zeropage(addr, end - addr).is_ok() {
                Counters::add(&self.counters.zero_pages, n);
                Counters::add(&self.counters.pages_mapped, n);
                Counters::add(&self.counters.prefetched, n);
                mapped += n;
                continue;
            }
            let mut p = addr;
            while p < end {
                let k = self.prefetch_run(uffd, p, end);
                mapped += k;
                p += k.max(1) * PAGE_SIZE;
            }
        }
        mapped
    }

    /// The end of the run of read-only shared file pages from `p` (up to
    /// `end`) that the kernel maps itself at the program's touch, if `p`
    /// starts one: internal mode, regions that see only holes (see
    /// [`set_sees_cached`](Self::set_sees_cached)). A replay does not map
    /// them ahead: it would only repeat the kernel's work while the
    /// program runs (after [`warm_server`](Self::warm_server) they are
    /// cached; a warm server's bash replay: 1 ms less). `None` for every
    /// other page.
    fn left_to_kernel(&self, p: u64, end: u64) -> Option<u64> {
        if self.mode != Mode::Internal || self.sees_cached() {
            return None;
        }
        self.shared_ro_run(p, end)
    }

    /// The end of the run from `p` (up to `end`) within `p`'s region if
    /// that is a read-only shared file region, else `None`.
    fn shared_ro_run(&self, p: u64, end: u64) -> Option<u64> {
        let map = self.map.lock();
        let r = map.lookup(p)?;
        (!r.private
            && !r.rights.contains(Rights::W)
            && matches!(r.backing, crate::region::Backing::File { .. }))
        .then(|| end.min(r.end()))
    }

    /// Maps the page at `p` ahead of any fault, and in internal mode the
    /// run of read-only shared file pages from it up to `end` that the
    /// server has cached; returns the pages mapped (0: none).
    fn prefetch_run(&self, uffd: &Uffd, p: u64, end: u64) -> u64 {
        if self.mode == Mode::Internal {
            if let Some(e) = self.shared_ro_run(p, end) {
                let (done, _) = uffd.continue_nowake(p, e - p);
                if done > 0 {
                    let n = done / PAGE_SIZE;
                    Counters::add(&self.counters.pages_mapped, n);
                    Counters::add(&self.counters.prefetched, n);
                    return n;
                }
            }
        }
        if let Some(n) = self.prefetch_private_run(uffd, p, end) {
            return n;
        }
        u64::from(self.prefetch_page(uffd, p))
    }

    /// Prefetch of a run of private file pages (copied from the pager's
    /// view, internal mode, pages the server has cached) with one
    /// `UFFDIO_COPY`; `None` if `p` is no such page (or nothing could be
    /// copied): then it goes page by page.
    fn prefetch_private_run(&self, uffd: &Uffd, p: u64, end: u64) -> Option<u64> {
        if self.mode != Mode::Internal {
            return None;
        }
        let (ds, off, valid_end, e) = {
            let map = self.map.lock();
            let r = map.lookup(p)?;
            match r.backing {
                crate::region::Backing::File {
                    ds,
                    offset,
                    file_len,
                } if r.private => (
                    ds,
                    offset + (p - r.start),
                    r.start + file_len,
                    end.min(r.end()),
                ),
                _ => return None,
            }
        };
        let view = self.view(ds).ok()?;
        view.memfd()?;
        let n = ((e - p) / PAGE_SIZE).min(256) as usize;
        let mut buf = vec![0u8; n * PAGE_SIZE as usize];
        let good = {
            let mut pages: Vec<&mut [u8]> = buf.chunks_mut(PAGE_SIZE as usize).collect();
            view.read_pages(off, &mut pages) as usize
        };
        if good == 0 {
            return None;
        }
        // Bytes past the region's file data read as zeros.
        for (i, page) in buf.chunks_mut(PAGE_SIZE as usize).take(good).enumerate() {
            let at = p + i as u64 * PAGE_SIZE;
            let valid = valid_end.saturating_sub(at).min(PAGE_SIZE) as usize;
            page[valid..].fill(0);
        }
        let (done, _) = uffd.copy_nowake(p, &buf[..good * PAGE_SIZE as usize]);
        let k = done / PAGE_SIZE;
        if k == 0 {
            return None;
        }
        Counters::add(&self.counters.private_copies, k);
        Counters::add(&self.counters.pages_mapped, k);
        Counters::add(&self.counters.prefetched, k);
        Some(k)
    }

    fn apply(&self, uffd: &Uffd, d: Decision, f: &PageFault, prefetch: bool) -> Result<bool> {
        let c = self.counters;
        let region = match d {
            Decision::MapShared { region, .. }
            | Decision::CopyPrivate { region, .. }
            | Decision::Zero { region, .. } => region,
            Decision::Forward { .. } | Decision::Error(_) => 0,
        };
        if !prefetch && !matches!(d, Decision::Error(_)) && region < MAX_REGIONS {
            Counters::add(&c.region_faults[region], 1);
        }
        // Logged (recording run) before the ioctl that wakes the thread,
        // as the counters.
        if !prefetch && !matches!(d, Decision::Error(_) | Decision::Forward { .. }) {
            self.record(f.addr, 1, true);
        }
        // Counters are updated before the ioctl that wakes the faulting
        // thread (and taken back if nothing was mapped): a program may end
        // right after its last fault, and with it the internal pager.
        let (kind, outcome) = match d {
            Decision::MapShared {
                ds,
                offset,
                page,
                rights,
                ..
            } if self.mode == Mode::Internal => {
                let view = self.view(ds)?;
                let writable = rights.contains(Rights::W);
                // A round trip to the server for a page that will be
                // written (it must count it as dirty) and for one it does
                // not have cached (MISSING); a fault on a cached page is
                // answered without.
                let asked = if writable {
                    self.load_flags(&view, offset, DsFlags::RW)?;
                    true
                } else if !f.minor {
                    self.load(&view, offset)?;
                    true
                } else {
                    false
                };
                self.touch(ds, offset);
                Counters::add(&c.shared_maps, 1);
                Counters::add(&c.pages_mapped, 1);
                // Fault-around after a round trip, or when the fault
                // continues a sequential stream. Never for writable pages:
                // CONTINUE maps a page of a writable shared mapping
                // writable, and the server must hear of each such page.
                let last_end = self.last_end.load(Ordering::Relaxed);
                let stream = !writable && !prefetch && page == last_end;
                // Forward progress: at most a fault-around window after the
                // previous fault's pages (a stream, or a strided scan).
                let forward = !writable
                    && !prefetch
                    && page >= last_end
                    && page - last_end < FAULT_AROUND_PAGES * PAGE_SIZE;
                let around = if writable || prefetch || !(asked || stream) {
                    // The stream, if any, is broken.
                    self.stream_pages.store(0, Ordering::Relaxed);
                    None
                } else {
                    self.window(page, stream)
                };
                let (r, run_end) = match around {
                    Some(w) => self.continue_around(uffd, w, page)?,
                    None => {
                        let r = uffd
                            .continue_(page, PAGE_SIZE)
                            .map_err(|e| ioctl_error("UFFDIO_CONTINUE", page, e))?;
                        (r, page + PAGE_SIZE)
                    }
                };
                if r == Resolved::Done {
                    self.last_end.store(run_end, Ordering::Relaxed);
                }
                // The thread is running again: the file ahead of a forward
                // progress is asked of the server now (a window that grows
                // with each such fault), while the thread works through
                // what it has.
                let ahead = if forward && r == Resolved::Done {
                    let a = self.ahead_pages.load(Ordering::Relaxed) * 2;
                    a.clamp(2 * FAULT_AROUND_PAGES, MAX_STREAM_PAGES)
                } else {
                    0
                };
                self.ahead_pages.store(ahead, Ordering::Relaxed);
                if ahead > 0 {
                    let from = offset + (run_end - page);
                    match view.read_ahead(from, ahead * PAGE_SIZE) {
                        Ok(true) => Counters::add(&c.read_aheads, 1),
                        Ok(false) => {}
                        Err(e) => log::debug!("pager: read-ahead at {from:#x} failed: {e}"),
                    }
                }
                (&c.shared_maps, r)
            }
            Decision::MapShared {
                ds, offset, page, ..
            } => {
                // External: a copy from our own memory ("returns a flexpage
                // from its own memory"), counted as a shared-file fault,
                // with fault-around on the same terms as the internal
                // pager's (from the copies it holds).
                let seq = page == self.last_end.load(Ordering::Relaxed);
                let around = if prefetch {
                    None
                } else {
                    self.window(page, seq)
                };
                let r = self.copy_in(
                    uffd,
                    ds,
                    offset,
                    PAGE_SIZE,
                    page,
                    &c.shared_maps,
                    Some((around, seq)),
                )?;
                (&c.shared_maps, r)
            }
            Decision::CopyPrivate {
                ds,
                offset,
                valid,
                page,
                ..
            } => (
                &c.private_copies,
                self.copy_in(uffd, ds, offset, valid, page, &c.private_copies, None)?,
            ),
            Decision::Zero { page, .. } => {
                Counters::add(&c.zero_pages, 1);
                Counters::add(&c.pages_mapped, 1);
                (
                    &c.zero_pages,
                    uffd.zeropage(page, PAGE_SIZE)
                        .map_err(|e| ioctl_error("UFFDIO_ZEROPAGE", page, e))?,
                )
            }
            Decision::Forward { page, .. } => {
                // The host's region maps have no outer pagers.
                log::warn!("pager: no outer pager on the host (fault at {page:#x})");
                Counters::add(&c.errors, 1);
                uffd.wake(page, PAGE_SIZE);
                return Ok(false);
            }
            Decision::Error(report) => {
                Counters::add(&c.errors, 1);
                c.pager_error_access.store(
                    match report.access {
                        Access::Read => 0,
                        Access::Write => 1,
                        Access::Exec => 2,
                    },
                    Ordering::Relaxed,
                );
                c.pager_error_addr.store(report.addr + 1, Ordering::Relaxed);
                (self.on_error)(&report, f);
                uffd.wake(f.addr & !(PAGE_SIZE - 1), PAGE_SIZE);
                return Ok(false);
            }
        };
        match outcome {
            Resolved::Done => {
                if prefetch {
                    Counters::add(&c.prefetched, 1);
                }
                Ok(true)
            }
            Resolved::Exists | Resolved::Retry => {
                kind.fetch_sub(1, Ordering::Relaxed);
                c.pages_mapped.fetch_sub(1, Ordering::Relaxed);
                Counters::add(&c.retries, 1);
                Ok(false)
            }
        }
    }

    /// Sets how many pages around a shared file page are mapped with it
    /// at a fault when the server has them cached: the naturally aligned
    /// window of `pages` pages around the fault, clipped to the region, as
    /// the kernel's fault-around does for file mappings (0 or 1: none;
    /// default [`FAULT_AROUND_PAGES`]; rounded down to a power of two).
    /// Writable shared pages are never mapped around (each must be
    /// announced to the server as written).
    ///
    /// A fault that continues a sequential stream (at the end of the pages
    /// mapped at the previous fault) maps a window forward from it that
    /// doubles with each such fault, up to [`MAX_STREAM_PAGES`]; after
    /// answering it, the internal pager asks the server to read the next
    /// window ahead ([`DsView::read_ahead`]). Any other fault starts over
    /// at `pages`.
    ///
    /// None (0 or 1) also means that each page comes at a fault of its
    /// own: file regions realized from then on bring faults on cached
    /// pages to the pager ([`set_sees_cached`](Self::set_sees_cached)),
    /// or the kernel would map the cached neighbours of a fault itself.
    pub fn set_fault_around(&self, pages: u64) {
        let p = if pages <= 1 {
            self.set_sees_cached();
            0
        } else {
            1 << (63 - pages.leading_zeros())
        };
        self.fault_around.store(p, Ordering::Relaxed);
    }

    /// The pages to map at a fault on `page`, clipped to its region, as a
    /// `(start, end)` address range; `None` without fault-around. A fault
    /// that continues a sequential stream (`stream`) gets the stream's
    /// window, doubled (up to [`MAX_STREAM_PAGES`]), forward from `page`;
    /// any other fault the naturally aligned window of
    /// [`set_fault_around`](Self::set_fault_around) pages around it, and
    /// the stream starts over.
    fn window(&self, page: u64, stream: bool) -> Option<(u64, u64)> {
        let base = self.fault_around.load(Ordering::Relaxed);
        if base < 2 {
            return None;
        }
        let (rs, re) = {
            let map = self.map.lock();
            let r = map.lookup(page)?;
            (r.start, r.end())
        };
        let n = if stream {
            let grown = (self.stream_pages.load(Ordering::Relaxed) * 2)
                .clamp(base, MAX_STREAM_PAGES.max(base));
            self.stream_pages.store(grown, Ordering::Relaxed);
            grown
        } else {
            self.stream_pages.store(base, Ordering::Relaxed);
            base
        };
        let w = n * PAGE_SIZE;
        if stream {
            return Some((page, page.saturating_add(w).min(re)));
        }
        let start = (page & !(w - 1)).max(rs);
        let end = (page & !(w - 1)).saturating_add(w).min(re);
        Some((start, end))
    }

    /// Maps the faulting page `page` and the pages of `[start, end)` around
    /// it that the server has cached and the task has not mapped, in runs
    /// (`UFFDIO_CONTINUE` never allocates a page: holes stay holes and
    /// fault as MISSING), without waking anyone; then wakes the threads
    /// waiting on `page`, so they resume with the window mapped rather
    /// than fault again on pages being mapped. Returns the outcome for
    /// `page` and the end of the run mapped from `page` on.
    fn continue_around(
        &self,
        uffd: &Uffd,
        (start, end): (u64, u64),
        page: u64,
    ) -> Result<(Resolved, u64)> {
        let mut outcome = Ok(Resolved::Retry);
        let mut around = 0;
        let mut run_end = page;
        let mut p = start;
        while p < end {
            let (done, r) = uffd.continue_nowake(p, end - p);
            if done > 0 {
                self.record(p, done / PAGE_SIZE, false);
                let stop = p + done;
                around += done / PAGE_SIZE;
                if (p..stop).contains(&page) {
                    outcome = Ok(Resolved::Done);
                    run_end = stop;
                    around -= 1;
                }
                // Ask for the page that stopped the run alone: its error
                // says why (mapped already, or a hole).
                p = stop;
                continue;
            }
            if p == page {
                outcome = r.map_or_else(Uffd::classify, |()| Ok(Resolved::Retry));
            }
            p += PAGE_SIZE;
        }
        // Counted before the wake (the program may end right after it).
        if around > 0 {
            Counters::add(&self.counters.pages_mapped, around);
            Counters::add(&self.counters.prefetched, around);
        }
        uffd.wake(page, PAGE_SIZE);
        let outcome = outcome.map_err(|e| ioctl_error("UFFDIO_CONTINUE", page, e))?;
        Ok((outcome, run_end))
    }

    /// Fault-around for the external pager: copies the pages of `[start,
    /// end)` but `page` (file page `offset`) that it holds copies of, in
    /// runs of consecutive pages (one `UFFDIO_COPY` each), without waking
    /// anyone. Returns the end of the run copied after `page`.
    fn copy_around(
        &self,
        uffd: &Uffd,
        ds: CapIdx,
        offset: u64,
        page: u64,
        (start, end): (u64, u64),
    ) -> u64 {
        let mut buf: Vec<u8> = Vec::new();
        let mut n = 0;
        let mut run_end = page + PAGE_SIZE;
        let mut p = start;
        while p < end {
            if p == page {
                p += PAGE_SIZE;
                continue;
            }
            // The run of pages from p we hold copies of (up to `page`).
            buf.clear();
            {
                let own = self.own.lock().unwrap_or_else(|e| e.into_inner());
                let mut q = p;
                while q < end && q != page {
                    match own.get(&(ds.0, offset + q - page)) {
                        Some(pg) => buf.extend_from_slice(&pg[..]),
                        None => break,
                    }
                    q += PAGE_SIZE;
                }
            }
            if buf.is_empty() {
                p += PAGE_SIZE;
                continue;
            }
            let (done, _) = uffd.copy_nowake(p, &buf);
            self.record(p, done / PAGE_SIZE, false);
            n += done / PAGE_SIZE;
            if p == run_end {
                run_end = p + done;
            }
            // A run that stopped early goes on from the page that stopped
            // it (mapped already), which then makes no run and is skipped.
            p += if done > 0 { done } else { PAGE_SIZE };
        }
        if n > 0 {
            Counters::add(&self.counters.pages_mapped, n);
            Counters::add(&self.counters.prefetched, n);
        }
        run_end
    }

    /// The content of file page `offset` of `ds`, and whether the server
    /// was asked for it; `None` if the server revoked it before it could
    /// be copied. The external pager answers from its own copies; it makes
    /// them of all of a block the server maps to it (all of it cached, as
    /// the page is), so that the neighbours need no round trip of their
    /// own.
    fn file_page(&self, ds: CapIdx, offset: u64) -> Result<(Option<Box<Page>>, bool)> {
        if self.mode == Mode::External {
            let own = self.own.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = own.get(&(ds.0, offset)) {
                return Ok((Some(p.clone()), false));
            }
        }
        let view = self.view(ds)?;
        if self.mode == Mode::Internal && view.memfd().is_some() {
            // Cached already (the server's page, still there after the
            // copy): no round trip.
            let mut buf = Box::new([0u8; PAGE_SIZE as usize]);
            if view.read_page(offset, PAGE_SIZE, &mut buf[..]) {
                return Ok((Some(buf), false));
            }
        }
        let block = self.load(&view, offset)?;
        if self.mode == Mode::Internal {
            let mut buf = Box::new([0u8; PAGE_SIZE as usize]);
            let ok = view.read_page(offset, PAGE_SIZE, &mut buf[..]);
            return Ok((ok.then_some(buf), true));
        }
        // The pages of the block we have no copy of, read run by run.
        let end = block.end().min(view.size().next_multiple_of(PAGE_SIZE));
        let missing: Vec<u64> = {
            let own = self.own.lock().unwrap_or_else(|p| p.into_inner());
            (block.first..end)
                .step_by(PAGE_SIZE as usize)
                .filter(|o| !own.contains_key(&(ds.0, *o)))
                .collect()
        };
        let mut got: Vec<(u64, Box<Page>)> = Vec::with_capacity(missing.len());
        let mut i = 0;
        while i < missing.len() {
            let mut j = i + 1;
            while j < missing.len() && missing[j] == missing[j - 1] + PAGE_SIZE {
                j += 1;
            }
            let mut pages: Vec<Box<Page>> = (i..j)
                .map(|_| Box::new([0u8; PAGE_SIZE as usize]))
                .collect();
            let good = {
                let mut refs: Vec<&mut [u8]> = pages.iter_mut().map(|p| &mut p[..]).collect();
                view.read_pages(missing[i], &mut refs) as usize
            };
            got.extend(missing[i..i + good].iter().copied().zip(pages));
            i = j;
        }
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        for (o, pg) in got {
            own.entry((ds.0, o)).or_insert(pg);
        }
        Ok((own.get(&(ds.0, offset)).cloned(), true))
    }

    /// Resolves a fault on `page` with a copy of file page `offset` (its
    /// first `valid` bytes, zeros after them), counted in `kind`. A shared
    /// file page (external pager) comes with its fault-around window and
    /// whether the fault continues a stream: the pages of the window it
    /// holds copies of are copied too when the fault continues a stream or
    /// needed a round trip to the server.
    #[allow(clippy::too_many_arguments)]
    fn copy_in(
        &self,
        uffd: &Uffd,
        ds: CapIdx,
        offset: u64,
        valid: u64,
        page: u64,
        kind: &AtomicU64,
        shared: Option<(Option<(u64, u64)>, bool)>,
    ) -> Result<Resolved> {
        let (content, asked) = self.file_page(ds, offset)?;
        self.touch(ds, offset);
        Counters::add(kind, 1);
        Counters::add(&self.counters.pages_mapped, 1);
        let Some(mut buf) = content else {
            // Revoked while we copied it: the thread faults again.
            uffd.wake(page, PAGE_SIZE);
            return Ok(Resolved::Retry);
        };
        buf[(valid.min(PAGE_SIZE)) as usize..].fill(0);
        let run_end = match shared {
            Some((Some(w), seq)) if seq || asked => self.copy_around(uffd, ds, offset, page, w),
            _ => page + PAGE_SIZE,
        };
        let r = uffd
            .copy(page, &buf[..PAGE_SIZE as usize])
            .map_err(|e| ioctl_error("UFFDIO_COPY", page, e))?;
        if r == Resolved::Done && shared.is_some() {
            self.last_end.store(run_end, Ordering::Relaxed);
        }
        Ok(r)
    }

    /// Maps the page at `addr` ahead of any fault (prefetch); invalid or
    /// already mapped pages are skipped.
    pub fn prefetch(&self, uffd: &Uffd, addr: u64) {
        self.prefetch_page(uffd, addr);
    }

    /// As [`prefetch`](Self::prefetch); whether a page was mapped.
    fn prefetch_page(&self, uffd: &Uffd, addr: u64) -> bool {
        let d = {
            let map = self.map.lock();
            let Some(r) = map.lookup(addr) else {
                return false;
            };
            let access = if r.rights.contains(Rights::R) {
                Access::Read
            } else {
                Access::Exec
            };
            fault::resolve(&map, addr, access, 0)
        };
        if matches!(d, Decision::Error(_)) {
            return false;
        }
        let f = PageFault {
            addr,
            write: false,
            minor: false,
            tid: 0,
        };
        match self.apply(uffd, d, &f, true) {
            Ok(m) => m,
            Err(e) => {
                log::debug!("pager: prefetch of {addr:#x} failed: {e}");
                false
            }
        }
    }

    /// Serves faults on `uffd` until the task is gone, reading all the
    /// pending events with one `read(2)` ([`Uffd::read_events`]). Children
    /// forked by the task (fork events) are served by new threads.
    pub fn serve(self: &Arc<Self>, uffd: Arc<Uffd>) {
        let mut pin = Pin::default();
        let mut events = Vec::with_capacity(uffd::MAX_EVENTS);
        loop {
            match uffd.read_events(&mut events) {
                Ok(true) => {
                    for ev in events.drain(..) {
                        if let Event::Fault(f) = &ev {
                            pin.follow(f.tid);
                        }
                        self.on_event(&uffd, ev)
                    }
                }
                Ok(false) => return,
                Err(e) => {
                    log::debug!("pager: uffd read failed: errno {e}");
                    return;
                }
            }
        }
    }

    /// Handles one event of `uffd`: a fault is resolved (if that fails, the
    /// thread is woken to fault again rather than hang), a fork hands the
    /// child's userfaultfd on.
    fn on_event(self: &Arc<Self>, uffd: &Uffd, ev: Event) {
        match ev {
            Event::Fault(f) => match self.handle(uffd, f) {
                Ok(()) => {}
                // The server cannot be reached (it died): the page can
                // never be loaded. Waking the thread would only make it
                // fault again at once, forever; it gets SIGBUS instead,
                // as for a mapped file whose page cannot be read.
                Err(Error::Ipc(e)) => self.server_lost(&f, e),
                Err(e) => {
                    log::warn!("pager: fault at {:#x} not resolved: {e}", f.addr);
                    uffd.wake(f.addr & !(PAGE_SIZE - 1), PAGE_SIZE);
                }
            },
            Event::Fork(child) => self.forked(child),
            Event::Other(_) => {}
        }
    }

    /// A fault that needs the filesystem server, which is gone: records
    /// it and sends `SIGBUS` to the faulting thread (not woken: the signal
    /// ends its wait).
    fn server_lost(&self, f: &PageFault, e: l4re::IpcError) {
        let c = self.counters;
        if c.server_lost_addr
            .compare_exchange(0, f.addr + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            log::error!(
                "pager: the filesystem server is gone ({e:?}): page {:#x} cannot be loaded; \
                 SIGBUS to thread {}",
                f.addr,
                f.tid
            );
        }
        Counters::add(&c.server_lost, 1);
        signal_thread(f.tid, libc::SIGBUS);
    }

    fn forked(self: &Arc<Self>, child: Uffd) {
        Counters::add(&self.counters.forks, 1);
        if let Some(f) = self.on_fork.get() {
            return f(child);
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("pager-fork".into())
            .spawn(move || {
                block_signals();
                me.serve(Arc::new(child))
            });
        if let Err(e) = spawned {
            log::warn!("pager: cannot serve a forked child: {e}");
        }
    }

    /// A page outside every region of the map (for [`Uffd::mm_alive`]):
    /// the first page after the highest region, else the first gap.
    pub fn unregistered_page(&self) -> u64 {
        let map = self.map.lock();
        let top = map.iter().map(|r| r.end()).max().unwrap_or(0x10000);
        if top < 0x7fff_ffff_f000 - PAGE_SIZE {
            return top.next_multiple_of(PAGE_SIZE);
        }
        let mut p = 0x10000;
        for r in map.iter() {
            if p + PAGE_SIZE <= r.start {
                break;
            }
            p = p.max(r.end().next_multiple_of(PAGE_SIZE));
        }
        p
    }

    /// Serves the faults of a forked child on `uffd` for as long as the
    /// child's address space exists (until the child and every thread of
    /// it exited or called `execve`; [`Uffd::mm_alive`] is asked after
    /// each [`CHILD_POLL_MS`] without events). The child's own forks go to
    /// the fork handler (or new threads).
    pub fn serve_child(self: &Arc<Self>, uffd: Arc<Uffd>) {
        if let Err(e) = uffd.set_nonblocking() {
            log::warn!("pager: child uffd: errno {e}; serving it blocking");
            return self.serve(uffd);
        }
        let probe = self.unregistered_page();
        loop {
            if !uffd.wait_readable(CHILD_POLL_MS) {
                if !uffd.mm_alive(probe) {
                    return;
                }
                continue;
            }
            loop {
                match uffd.try_read_event() {
                    Ok(Some(ev)) => self.on_event(&uffd, ev),
                    Ok(None) => break,
                    Err(e) => {
                        log::debug!("pager: child uffd read failed: errno {e}");
                        return;
                    }
                }
            }
        }
    }
}

/// Keeps the pager thread on the CPU of the thread whose faults it
/// serves: a fault is then two context switches on one CPU, never a
/// wake-up of the other CPU (an inter-processor interrupt, tens of µs in a
/// virtual machine whose other CPU is idle). The faulting thread's CPU is
/// looked up at its first fault and again every [`PIN_RECHECK`] faults
/// (one `pread` of its `/proc` stat, ~1 µs): the scheduler moves it, the
/// external pager's program (another process) often.
#[derive(Default)]
struct Pin {
    /// The CPU this thread is pinned to.
    cpu: Option<usize>,
    /// The thread looked at last.
    thread: Option<l4re::host::sys::ThreadCpu>,
    /// Faults since the last look.
    since: u32,
}

/// Faults between two looks at the faulting thread's CPU (with 256,
/// the external pager's cached faults still fell into the slow mode in
/// some runs; with 8, in none of 12).
const PIN_RECHECK: u32 = 8;

impl Pin {
    /// Called at each fault of thread `tid` (0: unknown).
    fn follow(&mut self, tid: u32) {
        if tid == 0 || (self.cpu.is_some() && self.since < PIN_RECHECK) {
            self.since = self.since.saturating_add(1);
            return;
        }
        self.since = 0;
        if self.thread.as_ref().is_none_or(|t| t.tid() != tid) {
            self.thread = l4re::host::sys::ThreadCpu::open(tid).ok();
        }
        let Some(cpu) = self.thread.as_ref().and_then(|t| t.cpu()) else {
            return;
        };
        if self.cpu != Some(cpu) && l4re::host::sys::pin_current_thread(cpu).is_ok() {
            self.cpu = Some(cpu);
        }
    }
}

/// The `mmap` protection of `rights`.
pub fn prot_of(rights: Rights) -> Prot {
    let mut p = Prot::empty();
    if rights.contains(Rights::R) {
        p |= Prot::READ;
    }
    if rights.contains(Rights::W) {
        p |= Prot::WRITE;
    }
    if rights.contains(Rights::X) {
        p |= Prot::EXEC;
    }
    p
}

/// Makes `region` exist in this process's address space and registers it
/// with `uffd`, so that its pages are paged in by a [`Pager`] in `mode`:
///
/// * reserved: `PROT_NONE`, not registered (every access is a `SIGSEGV`);
/// * shared file region, internal mode: the file's memfd mapped
///   `MAP_SHARED` over the region, registered for MISSING faults (and
///   MINOR ones where the pager must see cached pages: writable, or a
///   recording run)
///   (the view's first load gets the memfd from the server);
/// * everything else: private anonymous memory, registered for MISSING
///   faults.
///
/// The range must be free: it is mapped with `MAP_FIXED_NOREPLACE`.
pub fn realize_region(pager: &Pager, uffd: &Uffd, r: &crate::region::Region) -> Result<()> {
    use crate::region::Backing;
    let prot = prot_of(r.rights);
    let (addr, len) = (r.start as usize, r.size as usize);
    let view = match r.backing {
        Backing::File { ds, offset, .. } if !r.private && pager.mode == Mode::Internal => {
            let view = pager.view(ds)?;
            if view.memfd().is_none() {
                let flags = if r.rights.contains(Rights::W) {
                    DsFlags::RW
                } else {
                    DsFlags::R
                };
                pager.load_flags(&view, offset, flags)?;
            }
            if r.rights.contains(Rights::W) && !view.writable() {
                log::warn!(
                    "pager: region {r} is writable but the dataspace was received read-only"
                );
                return Err(Error::Access);
            }
            Some((view, offset))
        }
        _ => None,
    };
    let shared_file = match &view {
        Some((view, offset)) => {
            let fd = std::os::fd::AsFd::as_fd(view.memfd().ok_or(Error::Fault)?);
            // uffd registration needs VM_MAYWRITE: a read-only memfd can
            // only be registered as a MAP_PRIVATE mapping. Without write
            // rights nothing is ever copied: CONTINUE maps the page-cache
            // page itself, shared with every other task.
            Some(if r.rights.contains(Rights::W) && view.writable() {
                Source::Shared(fd, *offset)
            } else {
                Source::Private(fd, *offset)
            })
        }
        None => None,
    };
    // MAP_FIXED_NOREPLACE: nothing of ours is replaced; the mapping is
    // owned by the region map from now on (leaked below, unmapped by
    // `unrealize` at detach).
    let mapped = match (r.backing, shared_file) {
        (_, Some(file)) => Mapping::new_at(addr, len, prot, file),
        (Backing::Reserved, _) => {
            Mapping::new_at(addr, len, Prot::empty(), Source::AnonymousNoReserve)
        }
        _ => Mapping::new_at(addr, len, prot, Source::Anonymous),
    };
    let mapping = match mapped {
        Ok(m) => m,
        Err(e) => {
            log::warn!("pager: cannot map region {r}: {e}");
            return Err(Error::AddrNotAvail);
        }
    };
    if r.backing == Backing::Reserved {
        mapping.leak();
        return Ok(());
    }
    // A fault on a page the server has cached reaches the pager (MINOR)
    // only where the pager must see it: a writable shared page (the
    // server must hear of each before it is written) and, in a recording
    // run, every file page (learned prefetch logs first touches in
    // order). Elsewhere the kernel maps a cached page itself, with its own
    // fault-around, as it maps a page of its own page cache: the pager
    // sees the holes (MISSING), the pages the server has not loaded or
    // has revoked. `UFFDIO_CONTINUE` (premap, prefetch, the answer to a
    // hole) works on both.
    let mode = match shared_file {
        Some(_) if r.rights.contains(Rights::W) || pager.sees_cached() => {
            uffd::mode::MISSING | uffd::mode::MINOR
        }
        _ => uffd::mode::MISSING,
    };
    if let Err(e) = uffd.register(r.start, r.size, mode) {
        log::warn!(
            "pager: cannot register region {r}: {}",
            std::io::Error::from_raw_os_error(e)
        );
        // Dropping the mapping unmaps it.
        return Err(Error::Io);
    }
    mapping.leak();
    Ok(())
}

/// Removes `[start, start + size)` from this process's address space
/// (after a detach).
pub fn unrealize(start: u64, size: u64) {
    // SAFETY: the range was mapped by `realize_region` for a region of the
    // region map, which owns it (the mapping was leaked to it) and which
    // only the paged program uses; the region is gone. (Stays here: the
    // region map, not a Rust value, owns the range.)
    drop(unsafe { Mapping::from_raw(start as usize, size as usize) });
}

/// The uffd features the pagers use: minor and missing faults on shared
/// memory, thread ids, and fork events when `fork` is asked.
pub fn wanted_features(fork: bool) -> u64 {
    let f = uffd::features::MISSING_SHMEM | uffd::features::MINOR_SHMEM | uffd::features::THREAD_ID;
    if fork {
        f | uffd::features::EVENT_FORK
    } else {
        f
    }
}

/// Sends `sig` to thread `tid` (of any process: its thread group is read
/// from `/proc`), falling back to the process-directed `kill`.
pub fn signal_thread(tid: u32, sig: i32) {
    let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
        });
    let sent = tgid.is_some_and(|g| l4re::host::signal::signal_thread(g, tid as i32, sig).is_ok());
    if !sent {
        let _ = l4re::host::signal::kill(tid as i32, sig);
    }
}

/// Blocks every signal in the calling thread (pager threads must not
/// take the program's signals).
pub fn block_signals() {
    l4re::host::signal::block_all();
}

#[cfg(test)]
mod tests;
