//! Owned memory mappings of this process: the host's counterpart of memory
//! attached to a task's address space (`mmap`, `munmap`, `mprotect`,
//! `madvise`, `mincore`).
//!
//! A [`Mapping`] owns its address range from creation until it is dropped
//! (which unmaps it) or [leaked](Mapping::leak). It never hands out Rust
//! references into its memory: the memory may be shared with other
//! processes, filled by a pager through userfaultfd or replaced by other
//! mappings, so it is reached through volatile byte accesses or the raw
//! pointer. That is what makes replacing, protecting and discarding parts
//! of it safe operations: no Rust value of this process lives there.

use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags};

/// Memory protection of a mapping (`PROT_READ`, `PROT_WRITE`,
/// `PROT_EXEC`; empty: `PROT_NONE`).
pub use rustix::mm::ProtFlags as Prot;

/// What a mapping maps.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Private anonymous memory, zero-filled
    /// (`MAP_PRIVATE | MAP_ANONYMOUS`).
    Anonymous,
    /// Private anonymous memory without swap reservation
    /// (`MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`): address space
    /// reserved for later use.
    AnonymousNoReserve,
    /// The file `fd` from `offset` on, shared with every other mapping of
    /// it (`MAP_SHARED`).
    Shared(BorrowedFd<'a>, u64),
    /// The file `fd` from `offset` on, copy on write (`MAP_PRIVATE`).
    Private(BorrowedFd<'a>, u64),
}

/// Where [`map`] places a mapping.
#[derive(Clone, Copy)]
enum Place {
    /// Where the kernel chooses.
    Anywhere,
    /// Exactly there if that range is free (`MAP_FIXED_NOREPLACE`).
    Free(usize),
    /// Exactly there, replacing what is mapped (`MAP_FIXED`): only over
    /// ranges this process owns and holds no Rust data in.
    Over(usize),
}

/// `mmap(2)`: the start of the new mapping.
fn map(place: Place, len: usize, prot: Prot, src: Source<'_>) -> Result<usize, Errno> {
    let (hint, fixed) = match place {
        Place::Anywhere => (0, MapFlags::empty()),
        Place::Free(a) => (a, MapFlags::FIXED_NOREPLACE),
        Place::Over(a) => (a, MapFlags::FIXED),
    };
    // SAFETY: `Anywhere` and `Free` never replace an existing mapping (the
    // kernel picks a free range, or fails if the range is not free), so no
    // memory of this process changes. `Over` is only used on ranges owned
    // by a `Mapping` (checked by its callers to lie inside it), which holds
    // no Rust data (see the module docs).
    let p = unsafe {
        match src {
            Source::Anonymous | Source::AnonymousNoReserve => {
                let mut flags = MapFlags::PRIVATE | fixed;
                if matches!(src, Source::AnonymousNoReserve) {
                    flags |= MapFlags::NORESERVE;
                }
                rustix::mm::mmap_anonymous(hint as *mut _, len, prot, flags)
            }
            Source::Shared(fd, offset) => rustix::mm::mmap(
                hint as *mut _,
                len,
                prot,
                MapFlags::SHARED | fixed,
                fd,
                offset,
            ),
            Source::Private(fd, offset) => rustix::mm::mmap(
                hint as *mut _,
                len,
                prot,
                MapFlags::PRIVATE | fixed,
                fd,
                offset,
            ),
        }
    }? as usize;
    if let Place::Free(a) = place {
        if p != a {
            // A kernel older than 4.17 takes MAP_FIXED_NOREPLACE for a
            // hint: the range was not free.
            // SAFETY: the mapping was made just above, elsewhere.
            let _ = unsafe { rustix::mm::munmap(p as *mut _, len) };
            return Err(Errno::EXIST);
        }
    }
    Ok(p)
}

/// An owned mapping of this process's address space: unmapped on drop
/// (unless [leaked](Self::leak)).
///
/// It never hands out Rust references into its memory: the memory may be
/// shared with other processes, filled by a pager through userfaultfd or
/// replaced by other mappings, so it is reached through volatile byte
/// accesses or the raw pointer. That is what makes replacing, protecting
/// and discarding parts of it safe operations: no Rust value lives there.
pub struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `src` with `prot` where the kernel chooses.
    /// Corresponds to `mmap(NULL, len, prot, flags, fd, offset)`.
    pub fn new(len: usize, prot: Prot, src: Source<'_>) -> std::io::Result<Mapping> {
        let addr = map(Place::Anywhere, len, prot, src)?;
        Ok(Mapping { addr, len })
    }

    /// Maps `len` bytes of `src` with `prot` exactly at `addr`, if nothing
    /// is mapped in that range (else `EEXIST`). Corresponds to
    /// `mmap(addr, len, prot, flags | MAP_FIXED_NOREPLACE, fd, offset)`.
    pub fn new_at(
        addr: usize,
        len: usize,
        prot: Prot,
        src: Source<'_>,
    ) -> std::io::Result<Mapping> {
        let addr = map(Place::Free(addr), len, prot, src)?;
        Ok(Mapping { addr, len })
    }

    /// Takes ownership of the mapping `[addr, addr + len)`.
    ///
    /// # Safety
    ///
    /// The range must be mapped, page-aligned, owned by nothing else (no
    /// other `Mapping`, allocator or Rust value uses it), and hold no Rust
    /// data: dropping the result unmaps it.
    pub unsafe fn from_raw(addr: usize, len: usize) -> Mapping {
        Mapping { addr, len }
    }

    /// Gives up ownership without unmapping: the range stays mapped for the
    /// rest of the process's life (or until its new owner unmaps it).
    /// Returns the start.
    pub fn leak(self) -> usize {
        let addr = self.addr;
        core::mem::forget(self);
        addr
    }

    /// Keeps `[offset, offset + len)` and unmaps the rest. Corresponds to
    /// `munmap(2)` of the head and the tail.
    ///
    /// # Panics
    ///
    /// If the range is not inside the mapping.
    pub fn trim(self, offset: usize, len: usize) -> Mapping {
        let at = self.part(offset, len);
        let (start, end) = (self.addr, self.addr + self.len);
        core::mem::forget(self);
        // SAFETY: the head and the tail are parts of our mapping, which
        // holds no Rust data; the rest stays owned by the result.
        unsafe {
            if at > start {
                let _ = rustix::mm::munmap(start as *mut _, at - start);
            }
            if end > at + len {
                let _ = rustix::mm::munmap((at + len) as *mut _, end - (at + len));
            }
        }
        Mapping { addr: at, len }
    }

    /// Start address.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: the kernel refuses those).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start as a raw pointer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// The part `[offset, offset + len)`, checked to lie inside.
    fn part(&self, offset: usize, len: usize) -> usize {
        assert!(
            offset.checked_add(len).is_some_and(|e| e <= self.len),
            "{offset:#x}+{len:#x} is outside {self:?}"
        );
        self.addr + offset
    }

    /// Reads the byte at `offset` (a volatile read: the memory may change
    /// under us). An access the protection forbids, or to a page that
    /// cannot be supplied, raises `SIGSEGV`/`SIGBUS` as for any load.
    ///
    /// # Panics
    ///
    /// If `offset` is outside the mapping.
    pub fn read_byte(&self, offset: usize) -> u8 {
        let at = self.part(offset, 1);
        // SAFETY: inside our mapping (checked), which holds no Rust data;
        // volatile, as other processes or a pager may write it.
        unsafe { core::ptr::read_volatile(at as *const u8) }
    }

    /// Writes the byte at `offset` (a volatile write); faults as
    /// [`read_byte`](Self::read_byte).
    ///
    /// # Panics
    ///
    /// If `offset` is outside the mapping.
    pub fn write_byte(&self, offset: usize, v: u8) {
        let at = self.part(offset, 1);
        // SAFETY: as in `read_byte`.
        unsafe { core::ptr::write_volatile(at as *mut u8, v) }
    }

    /// Replaces `[offset, offset + len)` with `len` bytes of `src`.
    /// Corresponds to `mmap(addr + offset, len, prot, flags | MAP_FIXED,
    /// fd, offset)`.
    ///
    /// # Panics
    ///
    /// If the range is not inside the mapping.
    pub fn replace(
        &self,
        offset: usize,
        len: usize,
        prot: Prot,
        src: Source<'_>,
    ) -> std::io::Result<()> {
        let at = self.part(offset, len);
        map(Place::Over(at), len, prot, src)?;
        Ok(())
    }

    /// Changes the protection of `[offset, offset + len)`. Corresponds to
    /// `mprotect(2)`.
    ///
    /// # Panics
    ///
    /// If the range is not inside the mapping.
    pub fn protect(&self, offset: usize, len: usize, prot: Prot) -> std::io::Result<()> {
        let at = self.part(offset, len);
        let flags = MprotectFlags::from_bits_truncate(prot.bits());
        // SAFETY: inside our mapping, which holds no Rust data: a changed
        // protection only makes later raw accesses fault.
        unsafe { rustix::mm::mprotect(at as *mut _, len, flags) }?;
        Ok(())
    }

    /// Drops the pages of `[offset, offset + len)`: the next access faults
    /// them in again (zeros for private anonymous memory, the file's pages
    /// for file mappings; a userfaultfd-registered range raises a fault).
    /// Corresponds to `madvise(MADV_DONTNEED)`.
    ///
    /// # Panics
    ///
    /// If the range is not inside the mapping.
    pub fn discard(&self, offset: usize, len: usize) -> std::io::Result<()> {
        self.advise(offset, len, rustix::mm::Advice::LinuxDontNeed)
    }

    /// Faults in the pages of `[offset, offset + len)` as reads would,
    /// without reading them. Corresponds to `madvise(MADV_POPULATE_READ)`
    /// (Linux 5.14).
    ///
    /// # Panics
    ///
    /// If the range is not inside the mapping.
    pub fn populate_read(&self, offset: usize, len: usize) -> std::io::Result<()> {
        self.advise(offset, len, rustix::mm::Advice::LinuxPopulateRead)
    }

    fn advise(&self, offset: usize, len: usize, advice: rustix::mm::Advice) -> std::io::Result<()> {
        let at = self.part(offset, len);
        // SAFETY: inside our mapping, which holds no Rust data: dropping or
        // populating its pages changes nothing a Rust value relies on.
        unsafe { rustix::mm::madvise(at as *mut _, len, advice) }?;
        Ok(())
    }

    /// How many pages from `offset` on, of the `len` bytes there, are
    /// resident, counting up to the first that is not (for a file mapping:
    /// in the file's page cache, whether this process touched them or not).
    /// Corresponds to `mincore(2)`.
    ///
    /// # Panics
    ///
    /// If the range is not inside the mapping.
    pub fn resident_pages(&self, offset: usize, len: usize) -> std::io::Result<usize> {
        let at = self.part(offset, len);
        let page = crate::fpage::PAGE_SIZE as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: mincore reads the page tables of our own range (checked
        // inside the mapping) and writes one byte per page into `vec`,
        // which has that many.
        let r = unsafe { libc::mincore(at as *mut _, len, vec.as_mut_ptr()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(vec.iter().take_while(|&&b| b & 1 != 0).count())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range is ours (made by `new`/`new_at`, or handed
        // over through `from_raw`) and holds no Rust data.
        let _ = unsafe { rustix::mm::munmap(self.addr as *mut _, self.len) };
    }
}

impl core::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Mapping({:#x}+{:#x})", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_reads_writes_discards_and_places() {
        let m = Mapping::new(2 * 4096, Prot::READ | Prot::WRITE, Source::Anonymous).unwrap();
        m.write_byte(4097, 7);
        assert_eq!(m.read_byte(4097), 7);
        assert_eq!(m.resident_pages(4096, 4096).unwrap(), 1);
        m.discard(4096, 4096).unwrap();
        assert_eq!(
            m.read_byte(4097),
            0,
            "private anonymous memory reads zeros again"
        );
        // Nothing is mapped over an existing mapping by `new_at`.
        let e = Mapping::new_at(m.addr(), 4096, Prot::READ, Source::Anonymous).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(Errno::EXIST.raw_os_error()));
        m.replace(0, 4096, Prot::READ, Source::Anonymous).unwrap();
        assert_eq!(m.read_byte(0), 0);
        let t = m.trim(4096, 4096);
        assert_eq!(t.read_byte(1), 0);
    }
}
