//! The page cache: one cache per file over one bounded pool of page frames,
//! with a cleaning daemon, a pluggable replacement policy, adaptive
//! read-ahead and write-back. Platform-neutral (`core` + `alloc`); the
//! platform supplies the frame memory and the backing I/O through
//! [`PageIo`].
//!
//! # Frames
//!
//! The pool has `pool_pages` frames. A frame is
//!
//! * **empty** — holds nothing;
//! * **active** — holds a page of a file, may be mapped by clients;
//! * **free (cached)** — in the free pool (counted as free) but still
//!   holding a clean page of a file, not mapped writable. A fault on that
//!   page *reclaims* the frame without I/O (seed 001, "cleaning policy");
//!   only when the frame is handed out for another page is the old page
//!   revoked ([`PageIo::revoke`]).
//!
//! The cleaning daemon ([`PageCache::clean`], run by the server between
//! requests and when a request needs a frame) keeps the number of free
//! frames at or above the low watermark: the [`ReplacementPolicy`] picks an
//! unpinned active frame (clock / second chance by default), which is written
//! back if it is dirty and moved to the free pool. A page that is (or was)
//! mapped writable cannot be kept in the free pool on the host, because the
//! host cannot take write access away from a client without removing the
//! page: it is written back and revoked at once (on Fiasco, `l4_task_unmap`
//! takes the access away and returns the dirty bits).
//!
//! # Dirty pages
//!
//! A page is written back if it was written through the protocol (`dirty`)
//! or has been mapped writable since it was last revoked (`wmapped`): clients
//! write straight into the frame, so the server cannot know whether they
//! did. A sync writes such pages back but keeps them dirty candidates while
//! they stay mapped writable.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use l4re::{Error, Result};

/// The page size the cache works in.
pub use l4re::fpage::PAGE_SIZE;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u8 = 12;

/// Index of a frame in the pool.
pub type FrameIdx = usize;

/// Identifies a file in the cache.
pub type FileId = u32;

pub use l4fs_api::{CacheStats, PoolInfo};

/// The platform side of one file's cache: frame memory and backing I/O.
///
/// On the host a file's frames are the pages of its memfd (the page of
/// file offset `O` lives at memfd offset `O`, whatever the frame index); on
/// Fiasco a frame index names a physical page of the pool.
pub trait PageIo {
    /// Fills the frames `frames` with the consecutive pages from `first`:
    /// the first `valid` bytes from the backing store, zeros after.
    fn fill(&mut self, first: u64, frames: &[FrameIdx], valid: u64) -> Result<()>;
    /// Writes the first `valid` bytes of page `page` (in `frame`) back.
    fn write_back(&mut self, page: u64, frame: FrameIdx, valid: usize) -> Result<()>;
    /// Removes page `page` (in `frame`) from every mapping and frees its
    /// memory; its content is lost.
    fn revoke(&mut self, page: u64, frame: FrameIdx);
    /// Copies bytes out of a cached page.
    fn read(&mut self, page: u64, frame: FrameIdx, offset: usize, out: &mut [u8]);
    /// Copies bytes into a cached page.
    fn write(&mut self, page: u64, frame: FrameIdx, offset: usize, data: &[u8]);
    /// Takes write access to page `page` (in `frame`) away from every
    /// mapping and says whether any of them wrote it since it was last
    /// write-protected (the kernel's dirty bit), or `None` if the platform
    /// cannot (the host: the page then counts as written and is revoked
    /// when it leaves the active set). Fiasco: `l4_task_unmap` of W.
    fn write_protect(&mut self, page: u64, frame: FrameIdx) -> Option<bool> {
        let _ = (page, frame);
        None
    }
    /// Sets the size of the backing file (after a truncate or a sync).
    fn set_backing_size(&mut self, size: u64) -> Result<()>;
    /// Flushes the backing store.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a replacement policy sees of the pool.
pub trait FrameView {
    /// Number of frames.
    fn len(&self) -> usize;
    /// Whether the view is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether frame `i` may be evicted (active and not pinned).
    fn candidate(&self, i: FrameIdx) -> bool;
    /// Returns and clears the referenced bit of frame `i`.
    fn take_referenced(&mut self, i: FrameIdx) -> bool;
}

/// A replacement policy: picks the active frame to move to the free pool.
/// Policy apart from mechanism: the cache does the write-back, revocation
/// and accounting.
pub trait ReplacementPolicy {
    /// A name for statistics output.
    fn name(&self) -> &'static str;
    /// Picks a victim among the candidates, or `None` if there is none.
    fn select_victim(&mut self, frames: &mut dyn FrameView) -> Option<FrameIdx>;
}

/// Clock (second chance): a hand sweeps the frames; a referenced frame
/// loses its bit and is passed over once.
#[derive(Debug, Default)]
pub struct Clock {
    hand: usize,
}

impl ReplacementPolicy for Clock {
    fn name(&self) -> &'static str {
        "clock"
    }
    fn select_victim(&mut self, frames: &mut dyn FrameView) -> Option<FrameIdx> {
        let n = frames.len();
        for _ in 0..2 * n + 1 {
            let i = self.hand % n.max(1);
            self.hand = (i + 1) % n.max(1);
            if n == 0 || !frames.candidate(i) {
                continue;
            }
            if frames.take_referenced(i) {
                continue;
            }
            return Some(i);
        }
        None
    }
}

/// FIFO by frame position (clock without the second chance), for
/// comparison and to show that the policy is pluggable.
#[derive(Debug, Default)]
pub struct Fifo {
    hand: usize,
}

impl ReplacementPolicy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }
    fn select_victim(&mut self, frames: &mut dyn FrameView) -> Option<FrameIdx> {
        let n = frames.len();
        for _ in 0..n {
            let i = self.hand;
            self.hand = (i + 1) % n;
            if frames.candidate(i) {
                let _ = frames.take_referenced(i);
                return Some(i);
            }
        }
        None
    }
}

/// Tunables of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Frames in the pool (the limit counts across all files).
    pub pool_pages: usize,
    /// The cleaning daemon keeps at least this many frames free.
    pub low_watermark: usize,
    /// Largest read-ahead window in pages (0: no read-ahead).
    pub readahead_max: u32,
    /// First window when sequential access is detected.
    pub readahead_min: u32,
    /// On a miss that is not sequential, the aligned cluster of this many
    /// pages around it is read too (read-around, as the kernel does for
    /// mapped files), if free frames allow; 0 or 1: off.
    pub readaround: u32,
    /// Largest flexpage order a map reply may use.
    pub max_map_order: u8,
}

impl CacheConfig {
    /// A configuration with `pool_pages` frames and defaults for the rest:
    /// low watermark 1/16 of the pool (at least 1), read-ahead 4..64 pages,
    /// flexpages up to 2 MiB.
    pub fn new(pool_pages: usize) -> Self {
        let pool_pages = pool_pages.max(2);
        CacheConfig {
            pool_pages,
            low_watermark: (pool_pages / 16).max(1),
            readahead_max: 64,
            readahead_min: 4,
            readaround: 16,
            max_map_order: 21,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    Active,
    Free,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    state: State,
    owner: (FileId, u64),
    referenced: bool,
    dirty: bool,
    wmapped: bool,
    readahead: bool,
    pins: u32,
    free_seq: u64,
}

impl Frame {
    const EMPTY: Frame = Frame {
        state: State::Empty,
        owner: (0, 0),
        referenced: false,
        dirty: false,
        wmapped: false,
        readahead: false,
        pins: 0,
        free_seq: 0,
    };
}

struct Frames<'a>(&'a mut [Frame]);

impl FrameView for Frames<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn candidate(&self, i: FrameIdx) -> bool {
        let f = &self.0[i];
        f.state == State::Active && f.pins == 0
    }
    fn take_referenced(&mut self, i: FrameIdx) -> bool {
        core::mem::replace(&mut self.0[i].referenced, false)
    }
}

struct ReadAhead {
    last: Option<u64>,
    window: u32,
}

struct CachedFile {
    io: Box<dyn PageIo>,
    pages: BTreeMap<u64, FrameIdx>,
    size: u64,
    capacity: u64,
    stats: CacheStats,
    ra: ReadAhead,
}

impl CachedFile {
    fn valid_in(&self, page: u64) -> usize {
        self.size.saturating_sub(page * PAGE_SIZE).min(PAGE_SIZE) as usize
    }
}

/// The page cache of all files.
pub struct PageCache {
    cfg: CacheConfig,
    frames: Vec<Frame>,
    empty: Vec<FrameIdx>,
    /// Free frames that still hold a page, oldest first, as (frame, seq);
    /// entries whose seq no longer matches are stale.
    free_queue: VecDeque<(FrameIdx, u64)>,
    free_cached: usize,
    seq: u64,
    files: BTreeMap<FileId, CachedFile>,
    next_file: FileId,
    policy: Box<dyn ReplacementPolicy>,
    total: CacheStats,
}

fn pages_of(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE_SIZE)
}

impl PageCache {
    /// A cache with the clock policy.
    pub fn new(cfg: CacheConfig) -> Self {
        Self::with_policy(cfg, Box::new(Clock::default()))
    }

    /// A cache with `policy`.
    pub fn with_policy(cfg: CacheConfig, policy: Box<dyn ReplacementPolicy>) -> Self {
        let n = cfg.pool_pages.max(2);
        PageCache {
            cfg: CacheConfig {
                pool_pages: n,
                low_watermark: cfg.low_watermark.min(n / 2),
                ..cfg
            },
            frames: alloc::vec![Frame::EMPTY; n],
            empty: (0..n).rev().collect(),
            free_queue: VecDeque::new(),
            free_cached: 0,
            seq: 0,
            files: BTreeMap::new(),
            next_file: 1,
            policy,
            total: CacheStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// The name of the replacement policy.
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Adds a file of `size` bytes whose cache may hold `capacity` bytes.
    pub fn add_file(&mut self, io: Box<dyn PageIo>, size: u64, capacity: u64) -> FileId {
        let id = self.next_file;
        self.next_file += 1;
        self.files.insert(
            id,
            CachedFile {
                io,
                pages: BTreeMap::new(),
                size,
                capacity: capacity.max(size),
                stats: CacheStats::default(),
                ra: ReadAhead {
                    last: None,
                    window: 0,
                },
            },
        );
        id
    }

    fn file(&self, id: FileId) -> Result<&CachedFile> {
        self.files.get(&id).ok_or(Error::NoEnt)
    }

    fn file_mut(&mut self, id: FileId) -> Result<&mut CachedFile> {
        self.files.get_mut(&id).ok_or(Error::NoEnt)
    }

    /// The file's size.
    pub fn size(&self, id: FileId) -> Result<u64> {
        Ok(self.file(id)?.size)
    }

    /// The file's capacity (largest size a write or truncate may reach).
    pub fn capacity(&self, id: FileId) -> Result<u64> {
        Ok(self.file(id)?.capacity)
    }

    /// Counters of one file.
    pub fn file_stats(&self, id: FileId) -> Result<CacheStats> {
        Ok(self.file(id)?.stats)
    }

    /// Counters of all files.
    pub fn total_stats(&self) -> CacheStats {
        self.total
    }

    /// The state of the pool.
    pub fn pool_info(&self) -> PoolInfo {
        let mut p = PoolInfo {
            frames: self.frames.len() as u64,
            low_watermark: self.cfg.low_watermark as u64,
            ..PoolInfo::default()
        };
        for f in &self.frames {
            match f.state {
                State::Empty => p.empty += 1,
                State::Active => p.active += 1,
                State::Free => p.free_cached += 1,
            }
            if f.pins > 0 {
                p.pinned += 1;
            }
        }
        p
    }

    /// Free frames (empty or in the free pool).
    pub fn free_frames(&self) -> usize {
        self.empty.len() + self.free_cached
    }

    /// Whether page `page` of the file is in the cache (active or in the
    /// free pool).
    pub fn is_cached(&self, id: FileId, page: u64) -> bool {
        self.files
            .get(&id)
            .is_some_and(|f| f.pages.contains_key(&page))
    }

    /// Whether any page of `[first, end)` of the file is in the cache
    /// (one ordered walk, not a lookup per page).
    pub fn any_cached(&self, id: FileId, first: u64, end: u64) -> bool {
        self.files
            .get(&id)
            .is_some_and(|f| f.pages.range(first..end).next().is_some())
    }

    fn count(&mut self, id: FileId, f: impl Fn(&mut CacheStats) + Copy) {
        f(&mut self.total);
        if let Some(file) = self.files.get_mut(&id) {
            f(&mut file.stats);
        }
    }

    // ---- frames -----------------------------------------------------------

    /// Takes a frame out of the free pool for reuse: revokes the page it
    /// still holds.
    fn take_free_cached(&mut self) -> Option<FrameIdx> {
        while let Some((i, seq)) = self.free_queue.pop_front() {
            let f = self.frames[i];
            if f.state != State::Free || f.free_seq != seq {
                continue;
            }
            self.free_cached -= 1;
            let (fid, page) = f.owner;
            if let Some(file) = self.files.get_mut(&fid) {
                file.pages.remove(&page);
                file.io.revoke(page, i);
            }
            self.count(fid, |s| s.revocations += 1);
            self.frames[i] = Frame::EMPTY;
            return Some(i);
        }
        None
    }

    /// A frame without content, without evicting anything.
    fn alloc_frame_nowait(&mut self) -> Option<FrameIdx> {
        self.empty.pop().or_else(|| self.take_free_cached())
    }

    /// A frame without content; evicts one if the pool is exhausted.
    fn alloc_frame(&mut self) -> Result<FrameIdx> {
        if let Some(i) = self.alloc_frame_nowait() {
            return Ok(i);
        }
        // Direct reclaim: the daemon fell behind.
        for _ in 0..4 {
            self.evict_one()?;
            if let Some(i) = self.alloc_frame_nowait() {
                return Ok(i);
            }
        }
        Err(Error::NoMem)
    }

    /// Lets the policy pick a victim and moves it out of the active set.
    fn evict_one(&mut self) -> Result<()> {
        let victim = self
            .policy
            .select_victim(&mut Frames(&mut self.frames))
            .ok_or(Error::NoMem)?;
        self.evict(victim)
    }

    /// Moves active frame `i` to the free pool (written back first if
    /// dirty); a page mapped writable is write-protected where the platform
    /// can ([`PageIo::write_protect`]: written back only if a client wrote
    /// it), else written back, revoked and the frame emptied.
    fn evict(&mut self, i: FrameIdx) -> Result<()> {
        let mut f = self.frames[i];
        debug_assert_eq!(f.state, State::Active);
        let (fid, page) = f.owner;
        let file = self.files.get_mut(&fid).ok_or(Error::NoEnt)?;
        if f.wmapped {
            if let Some(written) = file.io.write_protect(page, i) {
                f.wmapped = false;
                f.dirty |= written;
                self.frames[i].wmapped = false;
            }
        }
        if f.dirty || f.wmapped {
            let valid = file.valid_in(page);
            if valid > 0 {
                file.io.write_back(page, i, valid)?;
                self.count(fid, |s| s.writebacks += 1);
            }
        }
        self.count(fid, |s| s.evictions += 1);
        if f.wmapped {
            let file = self.files.get_mut(&fid).ok_or(Error::NoEnt)?;
            file.pages.remove(&page);
            file.io.revoke(page, i);
            self.count(fid, |s| s.revocations += 1);
            self.frames[i] = Frame::EMPTY;
            self.empty.push(i);
        } else {
            self.seq += 1;
            let fr = &mut self.frames[i];
            fr.state = State::Free;
            fr.dirty = false;
            fr.referenced = false;
            fr.readahead = false;
            fr.free_seq = self.seq;
            self.free_queue.push_back((i, self.seq));
            self.free_cached += 1;
            if self.free_queue.len() > 2 * self.frames.len() + 16 {
                let frames = &self.frames;
                self.free_queue
                    .retain(|&(j, s)| frames[j].state == State::Free && frames[j].free_seq == s);
            }
        }
        Ok(())
    }

    /// The cleaning daemon's step: evicts until the free frames reach the
    /// low watermark (or nothing is evictable). Returns the frames evicted.
    pub fn clean(&mut self) -> usize {
        self.clean_to(self.cfg.low_watermark)
    }

    /// Evicts until `target` frames are free (at most the pool) or nothing
    /// is evictable. Returns the frames evicted.
    pub fn clean_to(&mut self, target: usize) -> usize {
        let target = target.min(self.frames.len());
        let mut n = 0;
        while self.free_frames() < target {
            match self.evict_one() {
                Ok(()) => n += 1,
                Err(e) => {
                    log::warn!("l4fs: cleaning stopped: {e}");
                    break;
                }
            }
        }
        n
    }

    /// Whether the daemon has work to do.
    pub fn needs_cleaning(&self) -> bool {
        self.free_frames() < self.cfg.low_watermark
    }

    // ---- faulting pages in ------------------------------------------------

    /// Makes page `page` of the file present and active; returns its frame.
    /// `fill` is false when the caller overwrites the whole page (no read).
    fn fault_in(&mut self, id: FileId, page: u64, fill: bool) -> Result<FrameIdx> {
        let file = self.file_mut(id)?;
        if page >= pages_of(file.capacity) {
            return Err(Error::Range);
        }
        let seq = file
            .ra
            .last
            .is_some_and(|l| page == l || page == l.wrapping_add(1));
        file.ra.last = Some(page);
        if let Some(&i) = file.pages.get(&page) {
            let f = &mut self.frames[i];
            f.referenced = true;
            if f.state == State::Free {
                f.state = State::Active;
                self.free_cached -= 1;
                self.count(id, |s| s.reclaims += 1);
            } else {
                let ra = core::mem::replace(&mut f.readahead, false);
                self.count(id, |s| s.hits += 1);
                if ra {
                    self.count(id, |s| s.readahead_hits += 1);
                    // The stream reached read-ahead pages: when less than
                    // half a window is left ahead, read further with a
                    // larger window.
                    let max = self.cfg.readahead_max;
                    if let Some(file) = self.files.get_mut(&id) {
                        let w = file.ra.window as u64;
                        if w > 0 && !file.pages.contains_key(&(page + (w / 2).max(1))) {
                            file.ra.window = file.ra.window.saturating_mul(2).min(max);
                            self.read_ahead(id, page + 1);
                        }
                    }
                }
            }
            return Ok(i);
        }
        // A miss.
        self.count(id, |s| s.misses += 1);
        let i = self.alloc_frame()?;
        let file = self.file_mut(id)?;
        let valid = if fill {
            file.size.saturating_sub(page * PAGE_SIZE).min(PAGE_SIZE)
        } else {
            0
        };
        if let Err(e) = file.io.fill(page, &[i], valid) {
            self.empty.push(i);
            return Err(e);
        }
        file.pages.insert(page, i);
        self.frames[i] = Frame {
            state: State::Active,
            owner: (id, page),
            referenced: true,
            ..Frame::EMPTY
        };
        let (min, max) = (self.cfg.readahead_min, self.cfg.readahead_max);
        let file = self.file_mut(id)?;
        file.ra.window = if !seq || max == 0 {
            0
        } else if file.ra.window == 0 {
            min.min(max)
        } else {
            file.ra.window.saturating_mul(2).min(max)
        };
        if fill && seq {
            self.read_ahead(id, page + 1);
        } else if fill && self.cfg.readaround > 1 {
            let c = self.cfg.readaround.next_power_of_two() as u64;
            let start = page & !(c - 1);
            if self.free_frames() > self.cfg.low_watermark + c as usize {
                self.fill_range(id, start, start + c);
            }
        }
        Ok(i)
    }

    /// Reads the missing pages of the window from `from` into free frames
    /// (never evicting for it), in runs of consecutive pages.
    fn read_ahead(&mut self, id: FileId, from: u64) {
        let Some(file) = self.files.get(&id) else {
            return;
        };
        let window = file.ra.window as u64;
        if window == 0 {
            return;
        }
        // Align the end of the window so that map replies can use large
        // flexpages.
        let end = (from + window).next_multiple_of(window.next_power_of_two());
        self.fill_range(id, from, end);
    }

    /// Reads the missing pages of `[from, end)` (clipped to the file) into
    /// free frames, never evicting for it, in runs of consecutive pages.
    fn fill_range(&mut self, id: FileId, from: u64, end: u64) {
        let Some(file) = self.files.get(&id) else {
            return;
        };
        let end = end.min(pages_of(file.size));
        let mut page = from;
        while page < end {
            let Some(file) = self.files.get(&id) else {
                return;
            };
            if file.pages.contains_key(&page) {
                page += 1;
                continue;
            }
            let mut run: Vec<FrameIdx> = Vec::new();
            let first = page;
            while page < end
                && !self.files[&id].pages.contains_key(&page)
                && self.free_frames() > self.cfg.low_watermark
            {
                match self.alloc_frame_nowait() {
                    Some(i) => run.push(i),
                    None => break,
                }
                page += 1;
            }
            if run.is_empty() {
                return;
            }
            let file = self.files.get_mut(&id).expect("checked above");
            let valid = file.size.saturating_sub(first * PAGE_SIZE);
            if file.io.fill(first, &run, valid).is_err() {
                self.empty.extend(run);
                return;
            }
            let n = run.len() as u64;
            for (k, &i) in run.iter().enumerate() {
                let p = first + k as u64;
                file.pages.insert(p, i);
                self.frames[i] = Frame {
                    state: State::Active,
                    owner: (id, p),
                    readahead: true,
                    ..Frame::EMPTY
                };
            }
            self.count(id, |s| s.readahead_pages += n);
            if page < end && self.free_frames() <= self.cfg.low_watermark {
                return;
            }
        }
    }

    // ---- operations -------------------------------------------------------

    /// Brings the pages of `[offset, offset + len)` (clipped to the file)
    /// into the cache ahead of use: the missing ones are read in runs of
    /// consecutive pages, one [`PageIo::fill`] each, into free frames only
    /// (never evicting for it, so it stops at the low watermark); the
    /// cached ones are kept (a free-cached one is taken back).
    pub fn prefetch(&mut self, id: FileId, offset: u64, len: u64) -> Result<()> {
        let file = self.file(id)?;
        if offset > file.size {
            return Err(Error::Range);
        }
        let (from, end) = (
            offset / PAGE_SIZE,
            pages_of(offset.saturating_add(len).min(file.size)),
        );
        let reclaim: Vec<FrameIdx> = file
            .pages
            .range(from..end)
            .map(|(_, &i)| i)
            .filter(|&i| self.frames[i].state == State::Free)
            .collect();
        for i in reclaim {
            self.frames[i].state = State::Active;
            self.free_cached -= 1;
            self.count(id, |s| s.reclaims += 1);
        }
        self.fill_range(id, from, end);
        Ok(())
    }

    /// Reads up to `out.len()` bytes at `offset` (fewer at the end of the
    /// file); returns the number read.
    pub fn read(&mut self, id: FileId, offset: u64, out: &mut [u8]) -> Result<usize> {
        let size = self.size(id)?;
        if offset > size {
            return Err(Error::Range);
        }
        let n = (out.len() as u64).min(size - offset) as usize;
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            let page = pos / PAGE_SIZE;
            let in_page = (pos % PAGE_SIZE) as usize;
            let len = (PAGE_SIZE as usize - in_page).min(n - done);
            let i = self.fault_in(id, page, true)?;
            self.file_mut(id)?
                .io
                .read(page, i, in_page, &mut out[done..done + len]);
            done += len;
        }
        Ok(n)
    }

    /// Writes `data` at `offset` (growing the file up to its capacity).
    pub fn write(&mut self, id: FileId, offset: u64, data: &[u8]) -> Result<usize> {
        let file = self.file(id)?;
        let end = offset.checked_add(data.len() as u64).ok_or(Error::Range)?;
        if end > file.capacity {
            return Err(Error::NoSpace);
        }
        let old_size = file.size;
        let mut done = 0;
        while done < data.len() {
            let pos = offset + done as u64;
            let page = pos / PAGE_SIZE;
            let in_page = (pos % PAGE_SIZE) as usize;
            let len = (PAGE_SIZE as usize - in_page).min(data.len() - done);
            // No read for pages past the old end or overwritten entirely.
            let whole = in_page == 0 && len == PAGE_SIZE as usize;
            let fill = page * PAGE_SIZE < old_size && !whole;
            let i = self.fault_in(id, page, fill)?;
            self.file_mut(id)?
                .io
                .write(page, i, in_page, &data[done..done + len]);
            self.frames[i].dirty = true;
            done += len;
            let file = self.file_mut(id)?;
            file.size = file.size.max(pos + len as u64);
        }
        Ok(data.len())
    }

    /// Zero-fills `[offset, offset + len)` within the file.
    pub fn clear(&mut self, id: FileId, offset: u64, len: u64) -> Result<()> {
        let size = self.size(id)?;
        if offset > size {
            return Err(Error::Range);
        }
        let end = offset.saturating_add(len).min(size);
        let zeros = [0u8; PAGE_SIZE as usize];
        let mut pos = offset;
        while pos < end {
            let n = (PAGE_SIZE - pos % PAGE_SIZE).min(end - pos) as usize;
            self.write(id, pos, &zeros[..n])?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Makes `page` present for a mapping and returns the largest aligned
    /// block of pages `(first page, order)` around it that is present, inside
    /// the file and agrees with `spot` in its alignment; marks the block
    /// referenced (and mapped writable if `writable`).
    pub fn map(&mut self, id: FileId, page: u64, spot: u64, writable: bool) -> Result<(u64, u8)> {
        let file = self.file(id)?;
        let limit = pages_of(file.size.max(1)).min(pages_of(file.capacity));
        if page >= limit {
            return Err(Error::Range);
        }
        self.fault_in(id, page, true)?;
        let file = self.files.get_mut(&id).ok_or(Error::NoEnt)?;
        let mut order = PAGE_SHIFT;
        while order < self.cfg.max_map_order {
            let next = order + 1;
            let n = 1u64 << (next - PAGE_SHIFT);
            let first = page & !(n - 1);
            let mask = (1u64 << next) - 1;
            if first + n > limit || ((page << PAGE_SHIFT) ^ spot) & mask != 0 {
                break;
            }
            // The half holding `page` is the block of `order`, present;
            // the other half must be too: as many pages in the map as the
            // range has (one ordered walk, not a lookup per page).
            let half = n / 2;
            let other = if page & !(half - 1) == first {
                first + half
            } else {
                first
            };
            if file.pages.range(other..other + half).count() as u64 != half {
                break;
            }
            order = next;
        }
        let n = 1u64 << (order - PAGE_SHIFT);
        let first = page & !(n - 1);
        // The client has the whole block: a stream continues after it.
        file.ra.last = Some(first + n - 1);
        for (_, &i) in file.pages.range(first..first + n) {
            let f = &mut self.frames[i];
            if f.state == State::Free {
                f.state = State::Active;
                self.free_cached -= 1;
            }
            f.referenced = true;
            f.readahead = false;
            if writable {
                f.wmapped = true;
            }
        }
        Ok((first, order))
    }

    /// Pins the pages of `[offset, offset + len)` (faulting them in): they
    /// are never evicted until unpinned.
    pub fn pin(&mut self, id: FileId, offset: u64, len: u64) -> Result<()> {
        let cap = self.capacity(id)?;
        let end = offset.checked_add(len).ok_or(Error::Range)?;
        if end > cap || len == 0 {
            return Err(Error::Range);
        }
        let (first, last) = (offset / PAGE_SIZE, (end - 1) / PAGE_SIZE);
        let pinned = self.frames.iter().filter(|f| f.pins > 0).count() as u64;
        if pinned + (last - first + 1) > (self.frames.len() / 2) as u64 {
            return Err(Error::NoMem);
        }
        for p in first..=last {
            match self.fault_in(id, p, true) {
                Ok(i) => self.frames[i].pins += 1,
                Err(e) => {
                    if p > first {
                        let _ = self.unpin(id, offset, (p - first) * PAGE_SIZE);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Undoes [`pin`](Self::pin).
    pub fn unpin(&mut self, id: FileId, offset: u64, len: u64) -> Result<()> {
        let end = offset.checked_add(len).ok_or(Error::Range)?;
        if len == 0 {
            return Err(Error::Range);
        }
        let file = self.file(id)?;
        let frames: Vec<FrameIdx> = (offset / PAGE_SIZE..=(end - 1) / PAGE_SIZE)
            .map(|p| file.pages.get(&p).copied().ok_or(Error::Inval))
            .collect::<Result<_>>()?;
        if frames.iter().any(|&i| self.frames[i].pins == 0) {
            return Err(Error::Inval);
        }
        for i in frames {
            self.frames[i].pins -= 1;
        }
        Ok(())
    }

    /// Writes the file's dirty pages back and flushes the backing store.
    /// Pages mapped writable are written back and stay dirty candidates,
    /// unless the platform can write-protect them and read their dirty bit
    /// ([`PageIo::write_protect`]).
    pub fn sync(&mut self, id: FileId) -> Result<()> {
        let file = self.files.get_mut(&id).ok_or(Error::NoEnt)?;
        let mut written = 0;
        for (&page, &i) in &file.pages {
            let f = &mut self.frames[i];
            if f.state == State::Active && (f.dirty || f.wmapped) {
                // Where the platform reads dirty bits, a page mapped
                // writable is written back only if a client wrote it, and
                // is write-protected (a further write maps it again).
                let mut dirty = f.dirty;
                if f.wmapped {
                    match file.io.write_protect(page, i) {
                        Some(d) => {
                            dirty |= d;
                            f.wmapped = false;
                        }
                        None => dirty = true,
                    }
                }
                let valid = file.size.saturating_sub(page * PAGE_SIZE).min(PAGE_SIZE) as usize;
                if dirty && valid > 0 {
                    file.io.write_back(page, i, valid)?;
                    written += 1;
                }
                f.dirty = false;
            }
        }
        let size = file.size;
        file.io.set_backing_size(size)?;
        file.io.flush()?;
        self.count(id, |s| s.writebacks += written);
        Ok(())
    }

    /// Removes a file nobody holds any more: writes its dirty pages back
    /// ([`sync`](Self::sync)), revokes its pages and returns their frames
    /// to the pool (pins included), and drops its [`PageIo`] (its memory
    /// and descriptors). If the write-back fails, nothing is removed and
    /// the error is returned.
    pub fn remove_file(&mut self, id: FileId) -> Result<()> {
        self.sync(id)?;
        let mut file = self.files.remove(&id).ok_or(Error::NoEnt)?;
        for (&page, &i) in &file.pages {
            file.io.revoke(page, i);
            if self.frames[i].state == State::Free {
                self.free_cached -= 1;
            }
            self.frames[i] = Frame::EMPTY;
            self.empty.push(i);
        }
        Ok(())
    }

    /// Files in the cache.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Syncs every file.
    pub fn sync_all(&mut self) -> Result<()> {
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            self.sync(id)?;
        }
        Ok(())
    }

    /// Sets the file's size (within its capacity): pages past the new end
    /// are dropped (revoked), the tail of the last page is zeroed.
    pub fn truncate(&mut self, id: FileId, size: u64) -> Result<()> {
        let file = self.file(id)?;
        if size > file.capacity {
            return Err(Error::NoSpace);
        }
        let old = file.size;
        // The backing store first: if it refuses, nothing changes.
        self.file_mut(id)?.io.set_backing_size(size)?;
        if size < old {
            // Zero the tail of the new last page, so that growing again
            // shows zeros.
            if size % PAGE_SIZE != 0 {
                let zeros = [0u8; PAGE_SIZE as usize];
                let n = (PAGE_SIZE - size % PAGE_SIZE).min(old - size) as usize;
                self.write(id, size, &zeros[..n])?;
            }
            let keep = pages_of(size);
            let file = self.files.get_mut(&id).ok_or(Error::NoEnt)?;
            let gone: Vec<(u64, FrameIdx)> =
                file.pages.range(keep..).map(|(&p, &i)| (p, i)).collect();
            let mut revoked = 0;
            for (p, i) in gone {
                file.pages.remove(&p);
                file.io.revoke(p, i);
                revoked += 1;
                let f = self.frames[i];
                if f.state == State::Free {
                    self.free_cached -= 1;
                }
                self.frames[i] = Frame::EMPTY;
                self.empty.push(i);
            }
            self.count(id, |s| s.revocations += revoked);
        }
        self.file_mut(id)?.size = size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use core::cell::RefCell;
    use std::collections::HashMap;

    /// A backing store and frame memory in plain vectors, with an I/O log.
    #[derive(Default)]
    struct MemState {
        backing: Vec<u8>,
        frames: HashMap<u64, Vec<u8>>,
        reads: u64,
        writes: u64,
        revoked: Vec<u64>,
    }

    #[derive(Clone, Default)]
    struct MemIo(Rc<RefCell<MemState>>);

    impl PageIo for MemIo {
        fn fill(&mut self, first: u64, frames: &[FrameIdx], valid: u64) -> Result<()> {
            let mut s = self.0.borrow_mut();
            for k in 0..frames.len() as u64 {
                let mut page = alloc::vec![0u8; PAGE_SIZE as usize];
                let start = ((first + k) * PAGE_SIZE) as usize;
                let v = valid.saturating_sub(k * PAGE_SIZE).min(PAGE_SIZE) as usize;
                for (j, b) in page.iter_mut().enumerate().take(v) {
                    *b = s.backing.get(start + j).copied().unwrap_or(0);
                }
                s.frames.insert(first + k, page);
            }
            s.reads += 1;
            Ok(())
        }
        fn write_back(&mut self, page: u64, _: FrameIdx, valid: usize) -> Result<()> {
            let mut s = self.0.borrow_mut();
            let data = s.frames[&page][..valid].to_vec();
            let start = (page * PAGE_SIZE) as usize;
            if s.backing.len() < start + valid {
                s.backing.resize(start + valid, 0);
            }
            s.backing[start..start + valid].copy_from_slice(&data);
            s.writes += 1;
            Ok(())
        }
        fn revoke(&mut self, page: u64, _: FrameIdx) {
            let mut s = self.0.borrow_mut();
            s.frames.remove(&page);
            s.revoked.push(page);
        }
        fn read(&mut self, page: u64, _: FrameIdx, offset: usize, out: &mut [u8]) {
            let s = self.0.borrow();
            out.copy_from_slice(&s.frames[&page][offset..offset + out.len()]);
        }
        fn write(&mut self, page: u64, _: FrameIdx, offset: usize, data: &[u8]) {
            let mut s = self.0.borrow_mut();
            s.frames.get_mut(&page).unwrap()[offset..offset + data.len()].copy_from_slice(data);
        }
        fn set_backing_size(&mut self, size: u64) -> Result<()> {
            self.0.borrow_mut().backing.resize(size as usize, 0);
            Ok(())
        }
    }

    fn file(cache: &mut PageCache, size: usize) -> (FileId, MemIo) {
        let io = MemIo::default();
        io.0.borrow_mut().backing = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let id = cache.add_file(Box::new(io.clone()), size as u64, size as u64 + 65536);
        (id, io)
    }

    fn cfg(pool: usize) -> CacheConfig {
        CacheConfig {
            readahead_max: 0,
            readaround: 0,
            ..CacheConfig::new(pool)
        }
    }

    #[test]
    fn removing_a_file_writes_it_back_and_frees_its_frames() {
        let mut c = PageCache::new(cfg(8));
        let (f, io) = file(&mut c, 10000);
        let (g, _) = file(&mut c, 10000);
        c.write(f, 5000, b"kept").unwrap();
        c.pin(f, 0, 10).unwrap();
        let mut b = [0u8; 1];
        c.read(f, 9000, &mut b).unwrap();
        c.read(g, 0, &mut b).unwrap();
        let free = c.free_frames();
        c.remove_file(f).unwrap();
        assert_eq!(&io.0.borrow().backing[5000..5004], b"kept");
        assert_eq!(
            c.free_frames(),
            free + 3,
            "the 3 pages of f (one pinned) are free"
        );
        assert_eq!(c.files(), 1);
        assert_eq!(c.size(f), Err(Error::NoEnt));
        assert_eq!(io.0.borrow().revoked.len(), 3);
        // The other file is untouched, and the pool is whole.
        c.read(g, 0, &mut b).unwrap();
        assert_eq!(c.pool_info().pinned, 0);
        assert_eq!(c.remove_file(f), Err(Error::NoEnt));
    }

    #[test]
    fn prefetch_reads_runs_and_keeps_written_pages() {
        let mut c = PageCache::new(cfg(64));
        let (f, io) = file(&mut c, 40000); // 10 pages, the last one short
        // A page written (dirty, not yet written back) before the
        // read-ahead reaches it.
        c.write(f, 3 * 4096 + 10, b"mine").unwrap();
        let reads = io.0.borrow().reads;
        c.prefetch(f, 0, 1 << 20).unwrap();
        // Two runs around the cached page, one fill each, clipped to the
        // file.
        assert_eq!(io.0.borrow().reads, reads + 2);
        assert_eq!(c.file_stats(f).unwrap().readahead_pages, 9);
        let mut b = [0u8; 4];
        c.read(f, 3 * 4096 + 10, &mut b).unwrap();
        assert_eq!(&b, b"mine", "the read-ahead overwrote a written page");
        c.read(f, 9 * 4096, &mut b).unwrap();
        assert_eq!(b[0], (9 * 4096 * 7 % 251) as u8);
        let s = c.file_stats(f).unwrap();
        assert_eq!(s.misses, 1, "only the write missed: {s:?}");
        // Nothing more to read; past the end is an error.
        c.prefetch(f, 0, 40000).unwrap();
        assert_eq!(io.0.borrow().reads, reads + 2);
        assert_eq!(c.prefetch(f, 50000, 1), Err(Error::Range));
        c.sync(f).unwrap();
        assert_eq!(
            &io.0.borrow().backing[3 * 4096 + 10..3 * 4096 + 14],
            b"mine"
        );
    }

    #[test]
    fn read_hits_after_miss() {
        let mut c = PageCache::new(cfg(8));
        let (f, io) = file(&mut c, 10000);
        let mut b = [0u8; 100];
        assert_eq!(c.read(f, 4096, &mut b).unwrap(), 100);
        assert_eq!(b[0], (4096 * 7 % 251) as u8);
        c.read(f, 4200, &mut b).unwrap();
        let s = c.file_stats(f).unwrap();
        assert_eq!((s.misses, s.hits), (1, 1));
        assert_eq!(io.0.borrow().reads, 1);
        // Short read at the end, error past it.
        assert_eq!(c.read(f, 9950, &mut b).unwrap(), 50);
        assert_eq!(c.read(f, 10000, &mut b).unwrap(), 0);
        assert_eq!(c.read(f, 10001, &mut b), Err(Error::Range));
    }

    #[test]
    fn pool_limit_holds_and_dirty_pages_survive_eviction() {
        let mut c = PageCache::new(cfg(4));
        let (f, io) = file(&mut c, 64 * 4096);
        for p in 0..64u64 {
            c.write(f, p * 4096 + 1, &[p as u8 + 1]).unwrap();
            c.clean();
            let info = c.pool_info();
            assert_eq!(info.active + info.free_cached + info.empty, 4);
        }
        c.sync(f).unwrap();
        let s = io.0.borrow();
        for p in 0..64usize {
            assert_eq!(s.backing[p * 4096 + 1], p as u8 + 1, "page {p}");
            assert_eq!(s.backing[p * 4096 + 2], ((p * 4096 + 2) * 7 % 251) as u8);
        }
        let st = c.total_stats();
        assert!(st.evictions >= 60 && st.writebacks >= 60, "{st:?}");
    }

    #[test]
    fn free_pool_reclaims_without_io() {
        let mut c = PageCache::new(cfg(8));
        let (f, io) = file(&mut c, 8 * 4096);
        let mut b = [0u8; 1];
        c.read(f, 0, &mut b).unwrap();
        // The daemon moves the page to the free pool (watermark = 4).
        c.cfg.low_watermark = 8;
        c.clean();
        assert_eq!(c.pool_info().free_cached, 1);
        let reads = io.0.borrow().reads;
        c.read(f, 0, &mut b).unwrap();
        assert_eq!(io.0.borrow().reads, reads, "no I/O");
        assert_eq!(c.file_stats(f).unwrap().reclaims, 1);
        assert!(io.0.borrow().revoked.is_empty());
    }

    #[test]
    fn pinned_frames_are_never_evicted() {
        let mut c = PageCache::new(cfg(4));
        let (f, io) = file(&mut c, 32 * 4096);
        c.pin(f, 0, 4096 * 2).unwrap();
        let mut b = [0u8; 1];
        for p in 2..32 {
            c.read(f, p * 4096, &mut b).unwrap();
        }
        assert!(!io.0.borrow().revoked.contains(&0));
        assert!(!io.0.borrow().revoked.contains(&1));
        assert!(c.is_cached(f, 0) && c.is_cached(f, 1));
        // More pins than half the pool are refused; unpinning what is not
        // pinned is an error.
        assert_eq!(c.pin(f, 8192, 4096), Err(Error::NoMem));
        assert_eq!(c.unpin(f, 8192 * 4, 1), Err(Error::Inval));
        c.unpin(f, 0, 8192).unwrap();
        for p in 2..32 {
            c.read(f, p * 4096, &mut b).unwrap();
        }
        assert!(!c.is_cached(f, 0));
    }

    #[test]
    fn clock_gives_second_chance() {
        let mut c = PageCache::new(cfg(4));
        let (f, _) = file(&mut c, 32 * 4096);
        let mut b = [0u8; 1];
        for p in 0..4 {
            c.read(f, p * 4096, &mut b).unwrap();
        }
        // All referenced; the clock clears bits and evicts page 0 first.
        c.read(f, 4 * 4096, &mut b).unwrap();
        assert!(!c.is_cached(f, 0) || c.pool_info().free_cached > 0);
        // Touch page 1 again: it survives the next round.
        c.read(f, 4096, &mut b).unwrap();
        c.read(f, 5 * 4096, &mut b).unwrap();
        assert!(c.is_cached(f, 1));
    }

    #[test]
    fn fifo_policy_is_pluggable() {
        let mut c = PageCache::with_policy(cfg(4), Box::new(Fifo::default()));
        assert_eq!(c.policy_name(), "fifo");
        let (f, io) = file(&mut c, 32 * 4096);
        let mut b = [0u8; 1];
        for p in 0..32 {
            c.write(f, p * 4096, &[9]).unwrap();
            c.read(f, p * 4096, &mut b).unwrap();
        }
        c.sync(f).unwrap();
        assert!((0..32).all(|p| io.0.borrow().backing[p * 4096] == 9));
    }

    #[test]
    fn sequential_reads_trigger_adaptive_read_ahead() {
        let mut c = PageCache::new(CacheConfig {
            readahead_max: 16,
            readahead_min: 2,
            readaround: 0,
            ..CacheConfig::new(256)
        });
        let (f, io) = file(&mut c, 128 * 4096);
        let mut b = [0u8; 4096];
        for p in 0..128 {
            c.read(f, p * 4096, &mut b).unwrap();
        }
        let s = c.file_stats(f).unwrap();
        assert!(s.readahead_hits > 100, "{s:?}");
        assert!(s.misses < 10, "{s:?}");
        assert!(io.0.borrow().reads < 20);
        // Random access does not read ahead.
        let (g, _) = file(&mut c, 128 * 4096);
        for p in [5u64, 77, 31, 100, 3, 64] {
            c.read(g, p * 4096, &mut b).unwrap();
        }
        assert_eq!(c.file_stats(g).unwrap().readahead_pages, 0);
    }

    #[test]
    fn random_misses_read_the_aligned_cluster_around() {
        let mut c = PageCache::new(CacheConfig {
            readaround: 8,
            ..CacheConfig::new(256)
        });
        let (f, io) = file(&mut c, 64 * 4096);
        let mut b = [0u8; 1];
        c.read(f, 21 * 4096, &mut b).unwrap();
        assert!((16..24).all(|p| c.is_cached(f, p)));
        assert!(!c.is_cached(f, 24) && !c.is_cached(f, 15));
        // Two fills: the page, then the rest of the cluster in runs.
        assert!(io.0.borrow().reads <= 3);
        assert_eq!(c.file_stats(f).unwrap().readahead_pages, 7);
        // A full pool does not read around.
        let mut small = PageCache::new(CacheConfig {
            readaround: 8,
            ..CacheConfig::new(8)
        });
        let (g, _) = file(&mut small, 64 * 4096);
        small.read(g, 21 * 4096, &mut b).unwrap();
        assert_eq!(small.file_stats(g).unwrap().readahead_pages, 0);
    }

    #[test]
    fn map_sends_largest_resident_aligned_block() {
        let mut c = PageCache::new(CacheConfig {
            readahead_max: 16,
            readahead_min: 16,
            ..CacheConfig::new(256)
        });
        let (f, _) = file(&mut c, 64 * 4096);
        let mut b = [0u8; 1];
        for p in 0..32 {
            c.read(f, p * 4096, &mut b).unwrap();
        }
        // Page 5, spot aligned like the offset: the 32-page block is cached.
        assert_eq!(c.map(f, 5, 0x1000_5000, false).unwrap(), (0, 17));
        // A spot with another alignment limits the order.
        assert_eq!(c.map(f, 5, 0x1000_1000, false).unwrap(), (4, 14));
        // No read-ahead: pages 0-15 and 32-47 cached, the rest not.
        let mut c = PageCache::new(CacheConfig {
            readahead_max: 0,
            readaround: 0,
            ..CacheConfig::new(256)
        });
        let (f, _) = file(&mut c, 64 * 4096);
        for p in (0..16).chain(32..48) {
            c.read(f, p * 4096, &mut b).unwrap();
        }
        assert_eq!(c.map(f, 40, 0x1002_8000, false).unwrap(), (32, 16));
        assert_eq!(c.map(f, 5, 0x1000_5000, false).unwrap(), (0, 16));
        // Page 20 alone (its buddy 21 is not cached).
        assert_eq!(c.map(f, 20, 0x1001_4000, false).unwrap(), (20, 12));
        // Its buddy too: the 2-page block, not more (22-23 missing).
        c.read(f, 21 * 4096, &mut b).unwrap();
        assert_eq!(c.map(f, 21, 0x1001_5000, false).unwrap(), (20, 13));
        // Past the end.
        assert_eq!(c.map(f, 64, 0, false), Err(Error::Range));
    }

    #[test]
    fn writable_mapped_pages_are_written_back_and_revoked() {
        let mut c = PageCache::new(cfg(4));
        let (f, io) = file(&mut c, 16 * 4096);
        c.map(f, 0, 0, true).unwrap();
        // A client writes through the mapping.
        io.0.borrow_mut().frames.get_mut(&0).unwrap()[10] = 0xEE;
        c.sync(f).unwrap();
        assert_eq!(io.0.borrow().backing[10], 0xEE);
        // Still a dirty candidate after the sync.
        io.0.borrow_mut().frames.get_mut(&0).unwrap()[11] = 0xDD;
        let mut b = [0u8; 1];
        for p in 1..16 {
            c.read(f, p * 4096, &mut b).unwrap();
        }
        assert!(io.0.borrow().revoked.contains(&0));
        assert_eq!(io.0.borrow().backing[11], 0xDD);
    }

    /// Frames of a platform that can write-protect a page and read its
    /// dirty bit (as Fiasco's `l4_task_unmap`): the test says which pages
    /// a client wrote.
    struct DirtyBitIo {
        mem: MemIo,
        written: Rc<RefCell<Vec<u64>>>,
    }

    impl PageIo for DirtyBitIo {
        fn fill(&mut self, first: u64, frames: &[FrameIdx], valid: u64) -> Result<()> {
            self.mem.fill(first, frames, valid)
        }
        fn write_back(&mut self, page: u64, frame: FrameIdx, valid: usize) -> Result<()> {
            self.mem.write_back(page, frame, valid)
        }
        fn revoke(&mut self, page: u64, frame: FrameIdx) {
            self.mem.revoke(page, frame)
        }
        fn write_protect(&mut self, page: u64, _: FrameIdx) -> Option<bool> {
            let mut w = self.written.borrow_mut();
            let dirty = w.contains(&page);
            w.retain(|&p| p != page);
            Some(dirty)
        }
        fn read(&mut self, page: u64, frame: FrameIdx, offset: usize, out: &mut [u8]) {
            self.mem.read(page, frame, offset, out)
        }
        fn write(&mut self, page: u64, frame: FrameIdx, offset: usize, data: &[u8]) {
            self.mem.write(page, frame, offset, data)
        }
        fn set_backing_size(&mut self, size: u64) -> Result<()> {
            self.mem.set_backing_size(size)
        }
    }

    #[test]
    fn dirty_bits_spare_clean_writable_pages() {
        let mut c = PageCache::new(cfg(4));
        let mem = MemIo::default();
        mem.0.borrow_mut().backing = alloc::vec![1u8; 8 * 4096];
        let written = Rc::new(RefCell::new(Vec::new()));
        let io = DirtyBitIo {
            mem: mem.clone(),
            written: written.clone(),
        };
        let f = c.add_file(Box::new(io), 8 * 4096, 8 * 4096);
        // Pages 0 and 1 mapped writable; a client writes only page 1.
        c.map(f, 0, 0, true).unwrap();
        c.map(f, 1, 4096, true).unwrap();
        mem.0.borrow_mut().frames.get_mut(&1).unwrap()[5] = 0xAB;
        written.borrow_mut().push(1);
        assert_eq!(c.clean_to(4), 2);
        // One write-back (page 1), nothing revoked: both pages stay in the
        // free pool, write-protected, and come back without I/O.
        assert_eq!(c.total_stats().writebacks, 1);
        assert_eq!(mem.0.borrow().writes, 1);
        assert_eq!(mem.0.borrow().backing[4096 + 5], 0xAB);
        assert!(mem.0.borrow().revoked.is_empty());
        assert_eq!(c.pool_info().free_cached, 2);
        let reads = mem.0.borrow().reads;
        let mut b = [0u8; 1];
        c.read(f, 4096 + 5, &mut b).unwrap();
        assert_eq!(b[0], 0xAB);
        assert_eq!(mem.0.borrow().reads, reads);
        assert_eq!(c.total_stats().reclaims, 1);
    }

    #[test]
    fn truncate_and_grow() {
        let mut c = PageCache::new(cfg(8));
        let (f, io) = file(&mut c, 3 * 4096);
        let mut b = [0u8; 4096];
        c.read(f, 8192, &mut b).unwrap();
        c.truncate(f, 4096 + 10).unwrap();
        assert!(!c.is_cached(f, 2));
        assert_eq!(c.size(f).unwrap(), 4106);
        c.truncate(f, 3 * 4096).unwrap();
        assert_eq!(c.read(f, 4096, &mut b).unwrap(), 4096);
        assert!(b[10..].iter().all(|&x| x == 0));
        assert_eq!(b[9], ((4096 + 9) * 7 % 251) as u8);
        assert_eq!(c.truncate(f, 1 << 40), Err(Error::NoSpace));
        c.write(f, 3 * 4096, b"tail").unwrap();
        assert_eq!(c.size(f).unwrap(), 3 * 4096 + 4);
        c.sync(f).unwrap();
        assert_eq!(&io.0.borrow().backing[3 * 4096..], b"tail");
        assert_eq!(c.write(f, 1 << 30, b"x"), Err(Error::NoSpace));
    }

    #[test]
    fn random_ops_match_a_model() {
        let mut c = PageCache::new(CacheConfig {
            readahead_max: 8,
            ..CacheConfig::new(6)
        });
        let size = 40 * 4096;
        let (f, io) = file(&mut c, size);
        let mut model: Vec<u8> = io.0.borrow().backing.clone();
        let mut x: u64 = 12345;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5000 {
            let off = (rnd() % (size as u64 - 600)) as usize;
            let len = (rnd() % 600) as usize;
            match rnd() % 5 {
                0 | 1 => {
                    let data: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
                    c.write(f, off as u64, &data).unwrap();
                    model[off..off + len].copy_from_slice(&data);
                }
                2 => {
                    c.clean();
                }
                _ => {
                    let mut b = alloc::vec![0u8; len];
                    c.read(f, off as u64, &mut b).unwrap();
                    assert_eq!(b, model[off..off + len]);
                }
            }
        }
        c.sync(f).unwrap();
        assert_eq!(io.0.borrow().backing, model);
    }
}
