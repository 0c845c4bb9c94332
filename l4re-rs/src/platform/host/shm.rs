//! Shared memory and the registry of memory that memory items can carry.
//!
//! Linux cannot map one process's anonymous memory into another, so on the
//! host only memory backed by a memfd can be sent in a memory item. A
//! [`SharedMem`] is such memory; the process-global registry maps every
//! address range that is backed by a memfd (our own [`SharedMem`]s, and
//! mappings received through memory items) to the memfd and the file
//! offset, so a sender can turn a flexpage into "this memfd, this offset"
//! and a receiver that got a mapping can pass it on, as L4 allows.
//!
//! The memfd of a [`SharedMem`] is sealed against shrinking and growing:
//! the receiver checks the seal before it maps, so a sender cannot make the
//! receiver's mapping fault (`SIGBUS`) by truncating the file afterwards.
//! Read-only items carry a read-only file descriptor (the memfd reopened
//! through `/proc/self/fd`), so a receiver cannot map writable what it was
//! given read-only.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::mapping::{Mapping, Prot, Source};
use super::{errno_to_error, lock};
use crate::error::{Error, Result};
use crate::fpage::{Fpage, PAGE_SIZE, Rights};
use rustix::fs::{FileType, MemfdFlags, Mode, OFlags, SealFlags};

/// A memfd as the registry knows it.
///
/// One per file and access mode per process: memory items that arrive
/// with the same memfd share one fd (a pager's client receives thousands
/// of pages of one file and must not keep thousands of fds).
pub(super) struct MemFile {
    /// The fd we have; read-write if `writable`.
    fd: Arc<OwnedFd>,
    writable: bool,
    /// A read-only reopening of a writable `fd`, made on first need.
    ro: OnceLock<Arc<OwnedFd>>,
    /// (device, inode, writable): the key in `FILES`.
    key: (u64, u64, bool),
    /// Whether the file was found sealed against shrinking (seals are
    /// never removed, so this holds for good).
    sealed: bool,
}

type FileKey = (u64, u64, bool);

/// The memfds we hold, by device, inode and access mode.
static FILES: Mutex<Option<HashMap<FileKey, Weak<MemFile>>>> = Mutex::new(None);

impl Drop for MemFile {
    fn drop(&mut self) {
        if let Some(files) = lock(&FILES).as_mut() {
            if files.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
                files.remove(&self.key);
            }
        }
    }
}

impl MemFile {
    /// The `MemFile` for memfd `fd`: the one we already have for the same
    /// file and access mode (then `fd` is closed), or a new one.
    pub(super) fn intern(fd: OwnedFd, writable: bool) -> Result<Arc<MemFile>> {
        let st = rustix::fs::fstat(&fd).map_err(errno_to_error)?;
        let key = (st.st_dev, st.st_ino, writable);
        let mut files = lock(&FILES);
        let files = files.get_or_insert_with(HashMap::new);
        if let Some(f) = files.get(&key).and_then(Weak::upgrade) {
            return Ok(f);
        }
        let f = Arc::new(MemFile {
            fd: Arc::new(fd),
            writable,
            ro: OnceLock::new(),
            key,
            sealed: false,
        });
        files.insert(key, Arc::downgrade(&f));
        Ok(f)
    }

    /// The `MemFile` for a received memfd that [`check_memfd`] accepted:
    /// the one we already have (then `fd` is closed), or a new one.
    pub(super) fn adopt(fd: OwnedFd, checked: Checked) -> Arc<MemFile> {
        if let Some(f) = checked.known {
            return f;
        }
        let mut files = lock(&FILES);
        let files = files.get_or_insert_with(HashMap::new);
        if let Some(f) = files.get(&checked.key).and_then(Weak::upgrade) {
            return f;
        }
        let f = Arc::new(MemFile {
            fd: Arc::new(fd),
            writable: checked.key.2,
            ro: OnceLock::new(),
            key: checked.key,
            sealed: true,
        });
        files.insert(checked.key, Arc::downgrade(&f));
        f
    }

    /// The fd to send for an item with `rights`: the read-write fd if the
    /// item grants W, else a read-only one. Fails if W is asked of a file
    /// we only have read-only.
    pub(super) fn fd_for(&self, rights: Rights) -> Result<Arc<OwnedFd>> {
        if rights.contains(Rights::W) {
            return if self.writable {
                Ok(self.fd.clone())
            } else {
                Err(Error::Access)
            };
        }
        if !self.writable {
            return Ok(self.fd.clone());
        }
        if let Some(ro) = self.ro.get() {
            return Ok(ro.clone());
        }
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&*self.fd)
        );
        let ro = rustix::fs::open(
            path.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_to_error)?;
        // Another thread may have won the race; either fd will do.
        let _ = self.ro.set(Arc::new(ro));
        Ok(self.ro.get().expect("set above").clone())
    }

    /// The fd.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

struct Region {
    end: u64,
    file: Arc<MemFile>,
    /// File offset of the region's first byte.
    offset: u64,
}

/// Non-overlapping ranges `[start, end)` → memfd and offset.
static REGIONS: Mutex<BTreeMap<u64, Region>> = Mutex::new(BTreeMap::new());

/// Removes `[start, end)` from `map`, trimming regions that overlap it.
fn punch(map: &mut BTreeMap<u64, Region>, start: u64, end: u64) {
    let overlapping: Vec<u64> = map
        .range(..end)
        .rev()
        .take_while(|(_, r)| r.end > start)
        .map(|(s, _)| *s)
        .collect();
    for s in overlapping {
        let r = map.remove(&s).expect("key just listed");
        if s < start {
            map.insert(
                s,
                Region {
                    end: start,
                    file: r.file.clone(),
                    offset: r.offset,
                },
            );
        }
        if r.end > end {
            map.insert(
                end,
                Region {
                    end: r.end,
                    file: r.file,
                    offset: r.offset + (end - s),
                },
            );
        }
    }
}

/// Records that `[start, start + len)` is backed by `file` at `offset`.
pub(super) fn register(start: u64, len: u64, file: Arc<MemFile>, offset: u64) {
    let mut map = lock(&REGIONS);
    punch(&mut map, start, start + len);
    map.insert(
        start,
        Region {
            end: start + len,
            file,
            offset,
        },
    );
}

/// Forgets `[start, start + len)`.
pub(super) fn unregister(start: u64, len: u64) {
    punch(&mut lock(&REGIONS), start, start.saturating_add(len));
}

/// The memfd and file offset behind `[start, start + len)`, if the whole
/// range lies in one registered region.
pub(super) fn lookup(start: u64, len: u64) -> Option<(Arc<MemFile>, u64)> {
    let end = start.checked_add(len)?;
    let map = lock(&REGIONS);
    let (s, r) = map.range(..=start).next_back()?;
    (end <= r.end).then(|| (r.file.clone(), r.offset + (start - s)))
}

/// The memfd behind `[addr, addr + len)` (memory received through memory
/// items, or a [`SharedMem`]) if the whole range lies in one mapping: a new
/// descriptor for it (close-on-exec; read-write only if we hold the file
/// read-write, which the third value says) and the file offset of `addr`.
///
/// Paging support: a pager that received one page of a file's memfd maps
/// further parts of the same memfd itself (e.g. all of a program's text
/// over its region, registered for page faults) instead of receiving each
/// page as a separate mapping.
pub fn memfd_behind(addr: u64, len: u64) -> Option<(OwnedFd, u64, bool)> {
    let (file, offset) = lookup(addr, len)?;
    let fd = rustix::io::fcntl_dupfd_cloexec(file.fd(), 0).ok()?;
    Some((fd, offset, file.writable))
}

/// Tells the platform that memory received through memory items in
/// `[addr, addr + len)` was unmapped or reused, so it is no longer sent
/// from there. (Sending from a forgotten range fails with
/// [`IpcError::MapFailed`](crate::IpcError::MapFailed); sending from a
/// range that was unmapped but not forgotten sends the pages it had.)
pub fn forget_mappings(addr: u64, len: u64) {
    unregister(addr, len);
}

/// A received memfd that may be mapped.
pub(super) struct Checked {
    key: FileKey,
    /// The `MemFile` we already hold for the same file and access mode,
    /// if it was checked before.
    known: Option<Arc<MemFile>>,
}

/// Checks a received memfd (held read-write if `writable`) before mapping
/// `[offset, offset + size)` of it: a regular file, long enough, sealed
/// against shrinking. The seal is looked up only for a file not seen
/// before: a file once sealed stays sealed, so one `fstat` does for the
/// pages of a file that keep arriving.
pub(super) fn check_memfd(
    fd: BorrowedFd<'_>,
    offset: u64,
    size: u64,
    writable: bool,
) -> Option<Checked> {
    let st = rustix::fs::fstat(fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    let end = offset.checked_add(size)?;
    if (st.st_size as u64) < end || offset % PAGE_SIZE != 0 {
        return None;
    }
    let key = (st.st_dev, st.st_ino, writable);
    let known = lock(&FILES)
        .as_ref()
        .and_then(|f| f.get(&key))
        .and_then(Weak::upgrade)
        .filter(|f| f.sealed);
    if known.is_none()
        && !rustix::fs::fcntl_get_seals(fd).is_ok_and(|s| s.contains(SealFlags::SHRINK))
    {
        return None;
    }
    Some(Checked { key, known })
}

/// Memory that can be sent in memory items: a memfd mapped shared into this
/// process and registered, naturally aligned (to its size rounded up to a
/// power of two, at most 2 MiB) so that flexpages of it can be formed.
///
/// The memory is shared with every process it is sent to, which may write
/// it at any time: Rust references into it would be unsound, so access is
/// through [`read`](Self::read)/[`write`](Self::write) (volatile copies) or
/// the raw pointer. [`as_slice`](Self::as_slice) and
/// [`as_mut_slice`](Self::as_mut_slice) are for memory that no other task
/// writes at the time (e.g. to fill it before it is sent, or memory sent
/// read-only): like every shared file mapping (`memmap2` has the same
/// caveat), the compiler cannot see writes made by other processes.
pub struct SharedMem {
    addr: u64,
    len: usize,
    file: Arc<MemFile>,
    /// The memfd's mapping (unmapped on drop, after `unregister`).
    _map: Mapping,
}

impl SharedMem {
    /// Creates `len` bytes (rounded up to whole pages) of zeroed shared
    /// memory.
    pub fn new(len: usize) -> Result<SharedMem> {
        if len == 0 {
            return Err(Error::Inval);
        }
        let page = PAGE_SIZE as usize;
        let len = len.checked_next_multiple_of(page).ok_or(Error::NoMem)?;
        let align = len
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .min(2 << 20);
        let fd =
            rustix::fs::memfd_create("l4re-shm", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .map_err(errno_to_error)?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(errno_to_error)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(errno_to_error)?;
        let total = len.checked_add(align - page).ok_or(Error::NoMem)?;
        let base = reserve(total)?;
        let head = base.addr().next_multiple_of(align) - base.addr();
        let map = base.trim(head, len);
        map.replace(
            0,
            len,
            Prot::READ | Prot::WRITE,
            Source::Shared(fd.as_fd(), 0),
        )
        .map_err(io_to_error)?;
        let start = map.addr();
        let file = MemFile::intern(fd, true)?;
        register(start as u64, len as u64, file.clone(), 0);
        Ok(SharedMem {
            addr: start as u64,
            len,
            file,
            _map: map,
        })
    }

    /// Start address.
    pub fn addr(&self) -> usize {
        self.addr as usize
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: shared memory is at least a page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The start as a raw pointer. Other processes the memory was sent to
    /// may write it concurrently.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// The memory as bytes. Other tasks that were sent this memory with
    /// write rights may change it behind the slice's back.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes, page-aligned, alive
        // as long as `self`; within this process it is only written through
        // `&mut self` (`as_mut_slice`) or `write`, which takes `&self` but
        // writes volatile bytes (see the type's docs for other processes).
        unsafe { core::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The memory as mutable bytes (see [`as_slice`](Self::as_slice) about
    /// other tasks).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only access
        // from this process while the slice lives.
        unsafe { core::slice::from_raw_parts_mut(self.as_ptr(), self.len) }
    }

    /// The flexpage of `2^order` bytes at `offset` with `rights`, if it is
    /// aligned and lies inside this memory.
    pub fn fpage(&self, offset: usize, order: u8, rights: Rights) -> Option<Fpage> {
        let size = 1usize.checked_shl(order as u32)?;
        let addr = (self.addr as usize).checked_add(offset)?;
        if order < 12 || addr % size != 0 || offset.checked_add(size)? > self.len {
            return None;
        }
        Some(Fpage::mem(addr as u64, order, rights))
    }

    /// Copies `out.len()` bytes from `offset` (volatile reads).
    ///
    /// # Panics
    ///
    /// If the range is not inside the memory.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset.checked_add(out.len()).is_some_and(|e| e <= self.len),
            "SharedMem::read out of range"
        );
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: in range (checked above) of a mapping that lives as
            // long as `self`; volatile because other processes may write.
            *b = unsafe { core::ptr::read_volatile(self.as_ptr().add(offset + i)) };
        }
    }

    /// Copies `data` to `offset` (volatile writes).
    ///
    /// # Panics
    ///
    /// If the range is not inside the memory.
    pub fn write(&self, offset: usize, data: &[u8]) {
        assert!(
            offset
                .checked_add(data.len())
                .is_some_and(|e| e <= self.len),
            "SharedMem::write out of range"
        );
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in `read`; the mapping is writable.
            unsafe { core::ptr::write_volatile(self.as_ptr().add(offset + i), *b) };
        }
    }

    /// The memfd behind the memory.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.fd()
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // The mapping itself goes with the `_map` field (`read`/`write`
        // borrow `self`, so no access is in progress).
        unregister(self.addr, self.len as u64);
    }
}

/// An address range reserved for receive windows: mapped `PROT_NONE`, no
/// memory behind it, naturally aligned to its size (a power of two), so
/// that [`window`](Self::window) can announce all of it. Memory items
/// received into it replace parts of the reservation; dropping it unmaps the
/// whole range (and forgets the received mappings).
///
/// This is how a program owns a window range as the receive path requires
/// (see "Memory items and receive windows" in the [module docs](super)).
///
/// It dereferences to its [`Mapping`], through which the range is reached
/// (volatile bytes, protection, discarding pages, residency).
pub struct ReservedRange {
    map: Mapping,
    order: u8,
}

/// The nearest L4 error of a failed memory system call.
fn io_to_error(e: std::io::Error) -> Error {
    errno_to_error(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
}

/// Reserves `len` bytes of address space (`PROT_NONE`, no memory behind
/// it) where the kernel chooses.
fn reserve(len: usize) -> Result<Mapping> {
    Mapping::new(len, Prot::empty(), Source::AnonymousNoReserve).map_err(io_to_error)
}

impl ReservedRange {
    /// Reserves at least `len` bytes (rounded up to a power of two of at
    /// least a page).
    pub fn new(len: usize) -> Result<ReservedRange> {
        let size = len
            .max(PAGE_SIZE as usize)
            .checked_next_power_of_two()
            .ok_or(Error::NoMem)?;
        let total = size.checked_mul(2).ok_or(Error::NoMem)?;
        let base = reserve(total)?;
        let head = base.addr().next_multiple_of(size) - base.addr();
        Ok(ReservedRange {
            map: base.trim(head, size),
            order: size.trailing_zeros() as u8,
        })
    }

    /// Gives the range up: unmaps it and returns its start. The range is
    /// then free (until something else maps there): for mapping at a
    /// fixed address that must not replace anything (`MAP_FIXED_NOREPLACE`,
    /// [`Mapping::new_at`]), which fails safely if the range was taken
    /// meanwhile.
    pub fn release(self) -> usize {
        self.addr()
    }

    /// Start address.
    pub fn addr(&self) -> usize {
        self.map.addr()
    }

    /// log2 of the size.
    pub fn order(&self) -> u8 {
        self.order
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        1 << self.order
    }

    /// Always false: a reservation is at least a page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole range as a memory receive window.
    pub fn window(&self) -> crate::fpage::RcvBuf {
        crate::fpage::RcvBuf::window(self.addr() as u64, self.order)
    }
}

impl core::ops::Deref for ReservedRange {
    type Target = Mapping;
    fn deref(&self) -> &Mapping {
        &self.map
    }
}

impl Drop for ReservedRange {
    fn drop(&mut self) {
        // The range (reserved by `new`, then filled only by mappings we
        // received into it or put there through the `Mapping`) goes with
        // the `map` field.
        unregister(self.addr() as u64, self.len() as u64);
    }
}

impl core::fmt::Debug for ReservedRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ReservedRange({:#x}+{:#x})", self.addr(), self.len())
    }
}

impl core::fmt::Debug for SharedMem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SharedMem({:#x}+{:#x})", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_range_is_aligned() {
        let r = ReservedRange::new(24 * 4096).unwrap();
        assert_eq!(r.order(), 17);
        assert_eq!(r.addr() % r.len(), 0);
    }

    #[test]
    fn registry_trims_overlaps() {
        let fd = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        let dup = rustix::io::fcntl_dupfd_cloexec(&fd, 3).unwrap();
        let f = MemFile::intern(fd, true).unwrap();
        // The same file again is the same `MemFile`.
        assert!(Arc::ptr_eq(&f, &MemFile::intern(dup, true).unwrap()));
        let base = 0x7f00_dead_0000u64;
        register(base, 0x4000, f.clone(), 0);
        register(base + 0x1000, 0x1000, f.clone(), 0x9000);
        assert_eq!(lookup(base, 0x1000).map(|x| x.1), Some(0));
        assert_eq!(lookup(base + 0x1000, 0x1000).map(|x| x.1), Some(0x9000));
        assert_eq!(lookup(base + 0x2000, 0x2000).map(|x| x.1), Some(0x2000));
        assert!(lookup(base, 0x2000).is_none());
        unregister(base, 0x4000);
        assert!(lookup(base + 0x2000, 0x1000).is_none());
    }

    #[test]
    fn shared_mem_is_aligned_and_registered() {
        let m = SharedMem::new(3 * 4096).unwrap();
        assert_eq!(m.len(), 3 * 4096);
        assert_eq!(m.addr() % (4 * 4096), 0);
        m.write(100, b"abc");
        let mut b = [0u8; 3];
        m.read(100, &mut b);
        assert_eq!(&b, b"abc");
        assert!(lookup(m.addr() as u64, 3 * 4096).is_some());
        assert!(
            m.fpage(0, 14, Rights::R).is_none(),
            "16 KiB flexpage exceeds 12 KiB"
        );
        assert!(m.fpage(4096, 12, Rights::R).is_some());
        assert!(check_memfd(m.fd(), 0, 3 * 4096, true).is_some());
        assert!(check_memfd(m.fd(), 0, 4 * 4096, true).is_none());
        // Unsealed memory is refused.
        let fd = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        assert!(check_memfd(fd.as_fd(), 0, 4096, true).is_none());
        let a = m.addr() as u64;
        drop(m);
        assert!(lookup(a, 4096).is_none());
    }
}
