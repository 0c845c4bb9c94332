//! Memory of this task, for servers that hand out pages (public as
//! `l4re::fiasco::mem`, Fiasco only).
//!
//! * [`alloc`]: a dataspace from the environment's memory allocator
//!   (`l4re_ma_alloc`); [`alloc_with`] with [`AllocFlags`] (contiguous,
//!   super pages);
//! * [`Region`]: anonymous memory from that allocator, attached by L4Re's
//!   region map (`l4re_rm_attach`) and touched page by page, so that every
//!   page is present in this task and can be mapped to others; read and
//!   written by copying ([`Region::read`], [`Region::write`],
//!   [`Region::fill`]), never through references, because other tasks may
//!   write its pages through their mappings at any time;
//!   [`Region::superpages`] the same in 2 MiB super pages, which can be
//!   mapped on in super pages;
//! * [`attach`]: a dataspace received from elsewhere (a boot module from
//!   ned's `caps`), attached read-only or read-write; [`Attachment`]: one
//!   attached as long as it lives, readable as bytes (read-only) or by
//!   copying ([`Attachment::read`], [`Attachment::write`]);
//! * [`reserve_area`]: address space that L4Re's region map keeps free, for
//!   mappings this task makes itself ([`map_local`]);
//! * [`map_local`] / [`unmap`]: `l4_task_map` inside this task and
//!   `l4_task_unmap`, which revokes a page from every mapping derived from
//!   it and reports whether it was referenced or written
//!   ([`UnmapStatus`]).
//!
//! The C functions behind these use the calling thread's message
//! registers: every call here holds the UTCB borrow (`Utcb::with`) while
//! it runs, so they must not be called inside `Utcb::with`.

use core::cell::Cell;
use core::marker::PhantomData;

use l4_sys as sys;

use crate::cap::{Cap, CapIdx, OwnedCap};
use crate::error::{Error, Result};
use crate::fpage::Rights;
use crate::proto::Dataspace;
use crate::utcb::Utcb;

/// log2 of the page size.
pub const PAGE_SHIFT: u8 = 12;
/// The page size.
pub use crate::fpage::PAGE_SIZE;

fn code(r: i64) -> Result<()> {
    if r < 0 {
        Err(Error::from_code(r))
    } else {
        Ok(())
    }
}

fn task() -> sys::l4_cap_idx_t {
    crate::cap::well_known::TASK.0 as _
}

/// Anonymous memory of this task: a dataspace from the memory allocator,
/// attached read-write and made present page by page. Dropping it detaches
/// the region and releases the dataspace (and with it every mapping that
/// was made from its pages); keep it alive as long as its pages are in use,
/// or `core::mem::forget` it to keep it for the program's life.
///
/// Not `Sync`: [`read`](Self::read) and [`write`](Self::write) copy through
/// `&self`, so only one thread of this task may use a region.
pub struct Region {
    addr: u64,
    size: u64,
    ds: OwnedCap<Dataspace>,
    not_sync: PhantomData<Cell<()>>,
}

bitflags::bitflags! {
    /// How the memory allocator is to allocate
    /// (`L4Re::Mem_alloc::Mem_alloc_flags`, `L4RE_MA_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AllocFlags: u64 {
        /// Physically contiguous memory (`L4RE_MA_CONTINUOUS`).
        const CONTINUOUS = sys::L4RE_MA_CONTINUOUS as u64;
        /// Super pages: the allocator aligns the memory to the super page
        /// size (2 MiB) and maps it in super pages, so that it can be
        /// mapped on in super pages too (`L4RE_MA_SUPER_PAGES`; moe honours
        /// it for contiguous memory only, see [`AllocFlags::SUPER_PAGES_CONTINUOUS`]).
        const SUPER_PAGES = sys::L4RE_MA_SUPER_PAGES as u64;
        /// Both: what moe needs to hand out super pages.
        const SUPER_PAGES_CONTINUOUS = Self::CONTINUOUS.bits() | Self::SUPER_PAGES.bits();
    }
}

/// log2 of the super page size (2 MiB on amd64).
pub const SUPERPAGE_SHIFT: u8 = 21;

/// Allocates a dataspace of `size` bytes from the environment's memory
/// allocator (corresponds to `l4re_ma_alloc(size, mem, 0)`: a factory
/// `create` of `L4RE_PROTO_DATASPACE` on `l4re_env()->mem_alloc`).
pub fn alloc(size: u64) -> Result<OwnedCap<Dataspace>> {
    alloc_with(size, AllocFlags::empty())
}

/// Allocates a dataspace of `size` bytes from the environment's memory
/// allocator as `flags` say (corresponds to `l4re_ma_alloc(size, mem,
/// flags)`).
pub fn alloc_with(size: u64, flags: AllocFlags) -> Result<OwnedCap<Dataspace>> {
    let ds = crate::cap::alloc::<Dataspace>()?;
    Utcb::with(|_| {
        // SAFETY: `ds` is a free slot of ours; the allocator puts the new
        // dataspace there. The borrow makes us the UTCB's only user.
        code(unsafe { sys::l4re_ma_alloc(size as _, ds.idx().0 as _, flags.bits() as _) } as i64)
    })?;
    Ok(ds)
}

impl Region {
    /// Allocates `size` bytes (rounded up to pages), attaches them
    /// read-write-execute at an address aligned to `2^align_order` bytes,
    /// and touches every page. (X because a server maps this memory on,
    /// e.g. file pages holding program code, and a mapping passed on has
    /// at most the rights of its source.)
    pub fn new(size: u64, align_order: u8) -> Result<Self> {
        Self::new_with(size, align_order, AllocFlags::empty())
    }

    /// Like [`Region::new`], in super pages: `size` rounded up to 2 MiB,
    /// physically contiguous, attached at a 2 MiB boundary, so that this
    /// task holds it in super page mappings and can map it on in super
    /// pages (one page-table entry for 512 pages in the receiver). Fails
    /// (`Error::NoMem`) when the allocator has no contiguous memory of
    /// that size.
    pub fn superpages(size: u64) -> Result<Self> {
        let size = size.max(1).next_multiple_of(1 << SUPERPAGE_SHIFT);
        Self::new_with(size, SUPERPAGE_SHIFT, AllocFlags::SUPER_PAGES_CONTINUOUS)
    }

    fn new_with(size: u64, align_order: u8, flags: AllocFlags) -> Result<Self> {
        let size = size.max(1).next_multiple_of(PAGE_SIZE);
        let ds = alloc_with(size, flags)?;
        let mut addr: *mut core::ffi::c_void = core::ptr::null_mut();
        Utcb::with(|_| -> Result<()> {
            // SAFETY: `addr` is a valid out-pointer; the region map picks a
            // free range of `size` bytes for the dataspace.
            code(unsafe {
                sys::l4re_rm_attach(
                    &mut addr,
                    size as _,
                    (sys::L4RE_RM_F_SEARCH_ADDR | sys::L4RE_RM_F_RWX) as _,
                    ds.idx().0 as _,
                    0,
                    align_order.max(PAGE_SHIFT),
                )
            } as i64)
        })?;
        let region = Region {
            addr: addr as u64,
            size,
            ds,
            not_sync: PhantomData,
        };
        region.touch_all();
        Ok(region)
    }

    fn touch_all(&self) {
        let mut off = 0;
        while off < self.size {
            // SAFETY: inside the attached read-write region; a write fault
            // makes L4Re's region map map the page.
            unsafe {
                let p = (self.addr + off) as *mut u8;
                p.write_volatile(p.read_volatile());
            }
            off += PAGE_SIZE;
        }
    }

    /// Start address in this task.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Size in bytes (whole pages).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The dataspace behind the region.
    pub fn ds(&self) -> Cap<Dataspace> {
        self.ds.cap()
    }

    /// Copies `out.len()` bytes from `offset` of the region into `out`
    /// (`Error::Range` past its end).
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        // SAFETY: the region is attached and present for `self`'s life; no
        // reference to its bytes exists (the region hands none out), and
        // `Region` is not `Sync`.
        unsafe { copy_out(self.addr, self.size, offset, out) }
    }

    /// Copies `data` to `offset` of the region (`Error::Range` past its
    /// end).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        // SAFETY: as in `read`; the region is attached writable.
        unsafe { copy_in(self.addr, self.size, offset, data) }
    }

    /// Sets `len` bytes from `offset` of the region to `byte`.
    pub fn fill(&self, offset: u64, len: usize, byte: u8) -> Result<()> {
        let at = span(self.addr, self.size, offset, len)?;
        // SAFETY: as in `write`.
        unsafe { core::ptr::write_bytes(at as *mut u8, byte, len) };
        Ok(())
    }
}

/// The address of `[offset, offset + len)` of the `size` bytes at `base`,
/// if it lies inside (`Error::Range` if not).
fn span(base: u64, size: u64, offset: u64, len: usize) -> Result<u64> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(base + offset),
        _ => Err(Error::Range),
    }
}

/// Copies `out.len()` bytes from `offset` of the `size` bytes at `base`.
///
/// # Safety
///
/// The `size` bytes at `base` are mapped readable in this task, and no
/// reference of ours to them is written meanwhile.
unsafe fn copy_out(base: u64, size: u64, offset: u64, out: &mut [u8]) -> Result<()> {
    let at = span(base, size, offset, out.len())?;
    // SAFETY: inside the range (checked), readable (the caller's contract);
    // `out` is ours.
    unsafe { copy_bytes(at as *const u8, out.as_mut_ptr(), out.len()) };
    Ok(())
}

/// Copies `len` bytes from `src` to `dst`: when both addresses are
/// multiples of 8, the whole words with one `rep movsq` (page copies: 512
/// string steps a page, where L4Re's `memcpy` runs 11 instructions per 32
/// bytes, 1,408 a page) and the rest with `memcpy`; else all with `memcpy`.
///
/// # Safety
///
/// As for `core::ptr::copy_nonoverlapping`: `src` readable and `dst`
/// writable for `len` bytes, the two not overlapping.
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    let words = if (src as usize | dst as usize) & 7 == 0 {
        len / 8
    } else {
        0
    };
    if words > 0 {
        // SAFETY: the caller's contract covers these `8 * words <= len`
        // bytes; the direction flag is clear at every call (SysV ABI).
        unsafe {
            core::arch::asm!(
                "rep movsq",
                inout("rcx") words => _,
                inout("rsi") src => _,
                inout("rdi") dst => _,
                options(nostack, preserves_flags)
            )
        };
    }
    let done = words * 8;
    // SAFETY: the caller's contract, for the bytes after the words.
    unsafe { core::ptr::copy_nonoverlapping(src.add(done), dst.add(done), len - done) };
}

/// Copies `data` to `offset` of the `size` bytes at `base`.
///
/// # Safety
///
/// The `size` bytes at `base` are mapped writable in this task, and no
/// reference of ours to them is alive.
unsafe fn copy_in(base: u64, size: u64, offset: u64, data: &[u8]) -> Result<()> {
    let at = span(base, size, offset, data.len())?;
    // SAFETY: inside the range (checked), writable and unreferenced (the
    // caller's contract).
    unsafe { copy_bytes(data.as_ptr(), at as *mut u8, data.len()) };
    Ok(())
}

impl Drop for Region {
    fn drop(&mut self) {
        Utcb::with(|_| {
            // SAFETY: the region was attached at `addr` by `new`; nothing
            // of ours refers to it any more (we are being dropped).
            unsafe { sys::l4re_rm_detach(self.addr as *mut core::ffi::c_void) };
        });
    }
}

/// A dataspace attached in this task (`l4re_rm_attach` with
/// `L4RE_RM_F_R` or `L4RE_RM_F_RW`); dropping it detaches the region
/// (`l4re_rm_detach`). A read-only one is readable as bytes
/// ([`bytes`](Self::bytes)); a writable one only by copying
/// ([`read`](Self::read), [`write`](Self::write)).
pub struct Attachment {
    addr: u64,
    size: u64,
    writable: bool,
}

impl Attachment {
    /// Attaches the first `size` bytes of `ds` read-only.
    pub fn read_only(ds: CapIdx, size: u64) -> Result<Self> {
        Self::new(ds, size, false)
    }

    /// Attaches the first `size` bytes of `ds`, read-write if `writable`.
    pub fn new(ds: CapIdx, size: u64, writable: bool) -> Result<Self> {
        let addr = attach(ds, size, writable)?;
        Ok(Attachment {
            addr,
            size,
            writable,
        })
    }

    /// Attaches the first `size` bytes of `ds` at an address aligned to
    /// `2^align_order`, readable and executable (and writable if
    /// `writable`), and makes every page present in this task: L4Re's
    /// region map maps the region eagerly (`L4RE_RM_F_EAGER_MAP`) where
    /// it can, and every page is read once besides. For a server that
    /// maps these pages on to other tasks (a map item sends only what is
    /// present in the sender; the mappings sent are children of these in
    /// the kernel's mapping database, so [`unmap`] of a page here takes
    /// them back). X because a mapping passed on has at most the rights of
    /// its source.
    pub fn present(ds: CapIdx, size: u64, writable: bool, align_order: u8) -> Result<Self> {
        let rights = if writable {
            sys::L4RE_RM_F_RWX
        } else {
            sys::L4RE_RM_F_RX
        };
        let mut addr: *mut core::ffi::c_void = core::ptr::null_mut();
        Utcb::with(|_| {
            // SAFETY: `addr` is a valid out-pointer; the region map checks
            // the capability and the rights, and maps the region in.
            code(unsafe {
                sys::l4re_rm_attach(
                    &mut addr,
                    size.max(1).next_multiple_of(PAGE_SIZE) as _,
                    (sys::L4RE_RM_F_SEARCH_ADDR | sys::L4RE_RM_F_EAGER_MAP | rights) as _,
                    ds.0 as _,
                    0,
                    align_order.max(PAGE_SHIFT),
                )
            } as i64)
        })?;
        let a = Attachment {
            addr: addr as u64,
            size,
            writable,
        };
        let mut off = 0;
        while off < size {
            // SAFETY: inside the region attached readable just now; a read
            // fault makes L4Re's region map map the page.
            unsafe { ((a.addr + off) as *const u8).read_volatile() };
            off += PAGE_SIZE;
        }
        Ok(a)
    }

    /// Its size in bytes, as asked for.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether it is attached writable.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Copies `out.len()` bytes from `offset` into `out` (`Error::Range`
    /// past the end).
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        // SAFETY: attached readable for `self`'s life; writes of ours need
        // `&mut self`, so none runs meanwhile.
        unsafe { copy_out(self.addr, self.size, offset, out) }
    }

    /// Copies `data` to `offset` (`Error::Access` if attached read-only,
    /// `Error::Range` past the end).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::Access);
        }
        // SAFETY: attached writable; `&mut self` excludes every slice from
        // `bytes`.
        unsafe { copy_in(self.addr, self.size, offset, data) }
    }

    /// Start address in this task.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The attached bytes. (Whoever holds the dataspace writable may
    /// change them meanwhile: read them as a snapshot, e.g. an ELF file
    /// to validate once.)
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `size` bytes are attached readable at `addr` for as long
        // as `self` lives (L4Re's region manager pages them in on access).
        unsafe { core::slice::from_raw_parts(self.addr as *const u8, self.size as usize) }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        Utcb::with(|_| {
            // SAFETY: attached at `addr` by `read_only`; the slices handed
            // out borrowed `self`, so none is left.
            unsafe { sys::l4re_rm_detach(self.addr as *mut core::ffi::c_void) };
        });
    }
}

/// Attaches `size` bytes of dataspace `ds` from offset 0, read-only or
/// read-write; returns the address. The region stays attached.
pub fn attach(ds: CapIdx, size: u64, writable: bool) -> Result<u64> {
    let mut addr: *mut core::ffi::c_void = core::ptr::null_mut();
    let rights = if writable {
        sys::L4RE_RM_F_RW
    } else {
        sys::L4RE_RM_F_R
    };
    Utcb::with(|_| {
        // SAFETY: `addr` is a valid out-pointer; the region map checks the
        // capability and the rights.
        code(unsafe {
            sys::l4re_rm_attach(
                &mut addr,
                size.max(1).next_multiple_of(PAGE_SIZE) as _,
                (sys::L4RE_RM_F_SEARCH_ADDR | rights) as _,
                ds.0 as _,
                0,
                PAGE_SHIFT,
            )
        } as i64)
    })?;
    Ok(addr as u64)
}

/// Reserves `size` bytes of address space (rounded up to pages), aligned
/// to `2^align_order`, in L4Re's region map: nothing is attached there, and
/// the caller may map pages into it with [`map_local`]. Returns the start.
/// (Touching an unmapped page of the area is a fatal fault.)
pub fn reserve_area(size: u64, align_order: u8) -> Result<u64> {
    let mut addr: sys::l4_addr_t = 0;
    Utcb::with(|_| {
        // SAFETY: `addr` is a valid in/out pointer; the region map only
        // records the area.
        code(unsafe {
            sys::l4re_rm_reserve_area(
                &mut addr,
                size.max(1).next_multiple_of(PAGE_SIZE) as _,
                sys::L4RE_RM_F_SEARCH_ADDR as _,
                align_order.max(PAGE_SHIFT),
            )
        } as i64)
    })?;
    Ok(addr as u64)
}

fn check_tag(t: sys::l4_msgtag_t) -> Result<()> {
    let tag = crate::msg::MsgTag(t.raw as u64);
    if tag.has_error() {
        // SAFETY: reads this thread's UTCB error register.
        let e = unsafe { sys::l4_ipc_error(t, sys::l4_utcb()) };
        return Err(Error::Ipc(crate::error::IpcError::from_raw(e as u64)));
    }
    if tag.label() < 0 {
        return Err(Error::from_code(tag.label()));
    }
    Ok(())
}

/// Maps the `2^order` bytes at `src` of this task to `dst` of this task
/// (`l4_task_map` with this task as source and destination), with at most
/// `rights`. The new mapping is a child of the one at `src` in the
/// kernel's mapping database: [`unmap`] of `src` removes it too, together
/// with every mapping sent onwards from it.
pub fn map_local(src: u64, dst: u64, order: u8, rights: Rights) -> Result<()> {
    Utcb::with(|_| {
        // SAFETY: pure kernel invocation on our own task; the kernel checks
        // that `src` is mapped and `dst` lies in user space. The borrow
        // makes us the UTCB's only user.
        check_tag(unsafe {
            let fp = sys::l4_fpage(src as _, order as _, rights.bits());
            let base = sys::l4_map_control(dst as _, 0, sys::L4_MAP_ITEM_MAP as _);
            sys::l4_task_map(task(), task(), fp, base)
        })
    })
}

/// What `l4_task_unmap` reports of the revoked mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnmapStatus {
    /// Some mapping was accessed since the last unmap.
    pub referenced: bool,
    /// Some mapping was written since the last unmap.
    pub dirty: bool,
}

/// Revokes `rights` of the `2^order` bytes at `addr` of this task from
/// every mapping derived from it (`l4_task_unmap`; `all_spaces` adds this
/// task's own mapping, `L4_FP_ALL_SPACES`, else `L4_FP_OTHER_SPACES`).
/// Revoking R removes the mappings; revoking only W makes them read-only.
/// Returns the referenced/dirty bits the kernel collected from the
/// revoked mappings.
pub fn unmap(addr: u64, order: u8, rights: Rights, all_spaces: bool) -> Result<UnmapStatus> {
    let mask = if all_spaces {
        sys::L4_FP_ALL_SPACES
    } else {
        sys::L4_FP_OTHER_SPACES
    };
    Utcb::with(|_| {
        // SAFETY: kernel invocation on our own task; the borrow makes us
        // the UTCB's only user, and the reply (the flexpage with the status
        // bits in its rights field, Fiasco's `Page::Flags`: 1 referenced,
        // 2 dirty) is read from message register 2 before it is released.
        unsafe {
            let fp = sys::l4_fpage(addr as _, order as _, rights.bits());
            check_tag(sys::l4_task_unmap(task(), fp, mask as _))?;
            let mr = sys::l4_utcb_mr_u(sys::l4_utcb());
            let st = (*mr).mr[2] & 0xf;
            Ok(UnmapStatus {
                referenced: st & 1 != 0,
                dirty: st & 2 != 0,
            })
        }
    })
}

/// Frees an area reserved with [`reserve_area`] (`l4re_rm_free_area`).
pub fn free_area(addr: u64) -> Result<()> {
    Utcb::with(|_| {
        // SAFETY: the region map only forgets the area; nothing is mapped
        // or unmapped.
        code(unsafe { sys::l4re_rm_free_area(addr as _) } as i64)
    })
}

/// Unmaps `[start, start + size)` of this task, in naturally aligned
/// flexpages, from this task and from every task it was mapped on to
/// (nothing to report where nothing was mapped).
pub fn unmap_range(start: u64, size: u64) {
    let mut a = start & !(PAGE_SIZE - 1);
    let end = start.saturating_add(size);
    while a < end {
        let mut order = PAGE_SHIFT;
        while order < 40 && a % (1 << (order + 1)) == 0 && a + (1 << (order + 1)) <= end {
            order += 1;
        }
        let _ = unmap(a, order, Rights::RWX, true);
        a += 1 << order;
    }
}
