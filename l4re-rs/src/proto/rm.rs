//! `L4Re::Rm`, the region map (protocol `L4RE_PROTO_RM`, 0x4005). A region
//! map is also the pager of the threads of its task
//! ([`PageFault`](super::PageFault)).
//!
//! The signatures are those of l4re-core `b6f7495b` (the `attach` of 2024/25,
//! with region name and backing offset):
//!
//! | op | operation | in | out |
//! |----|-----------|----|-----|
//! | 0 | `attach` | `addr start, ulong size, u32 flags`, optional dataspace cap item, `u64 offs, u8 align, cap_idx client_cap, String name, u64 backing_offset` | `addr start` |
//! | 1 | `detach` | `addr, ulong size, unsigned flags` | `addr start, addr size, cap_idx mem`; label: detach result |
//! | 2 | `find` | `addr, ulong size` | `addr, ulong size, u32 flags, u64 offset, cap_idx mem` |
//! | 3 | `reserve_area` | `addr start, ulong size, u32 flags, u8 align` | `addr start` |
//! | 4 | `free_area` | `addr` | |
//! | 5 | `get_regions` | `addr start` | `Ret_array<Region>`: count in the label, entries from the next 8-byte boundary |
//! | 6 | `get_areas` | `addr start` | `Ret_array<Area>`, as `get_regions` |
//! | 7 | `get_info` | `addr` | `String name, u64 backing_offset` |
//! | 8 | `add_rescue_jump` | `addr pc_begin, addr pc_end, addr rescue_pc` | |
//! | 9 | `remove_rescue_jump` | `addr pc` | |
//! | 10 | `page_in` | `addr min, addr max, u16 rights`, receive window | `Snd_fpage fp, addr helper` |

use alloc::vec::Vec;

use bitflags::bitflags;

use crate::error::{Error, Result};
use crate::fpage::{RcvBuf, Rights, SndFpage};
use crate::msg::{Marshal, MsgReader, MsgWriter};
use crate::protocol;
use crate::rpc::WithCode;

use super::dataspace::{Dataspace, Flags as DsFlags};

bitflags! {
    /// `L4Re::Rm::F::Flags`: the region flags (`Region_flags`, the low 16
    /// bits: rights, caching, `KERNEL`, `PAGER`, `RESERVED`, `PRIVATE`,
    /// `ANONYMOUS`) and the attach flags (`Attach_flags`) of `attach`,
    /// `reserve_area` and `find`, with L4Re's bit values. A request with
    /// any other bit is refused with `-L4_EINVAL` when it is decoded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Flags: u32 {
        // The rights and caching bits are the Dataspace map flags', as in
        // L4Re (`R = Dataspace::F::R`, …).
        /// `X`: executable region.
        const X = DsFlags::X.bits() as u32;
        /// `W`: writable region.
        const W = DsFlags::W.bits() as u32;
        /// `R`: readable region.
        const R = DsFlags::R.bits() as u32;
        /// `RW`: readable and writable region.
        const RW = DsFlags::RW.bits() as u32;
        /// `RX`: readable and executable region.
        const RX = DsFlags::RX.bits() as u32;
        /// `RWX`: readable, writable and executable region.
        const RWX = DsFlags::RWX.bits() as u32;
        /// `Rights_mask`.
        const RIGHTS_MASK = DsFlags::RIGHTS_MASK.bits() as u32;
        /// `Cache_buffered` (`Dataspace::F::Bufferable`).
        const CACHE_BUFFERED = DsFlags::BUFFERABLE.bits() as u32;
        /// `Cache_uncached` (`Dataspace::F::Uncacheable`).
        const CACHE_UNCACHED = DsFlags::UNCACHEABLE.bits() as u32;
        /// `Caching_mask`.
        const CACHING_MASK = DsFlags::CACHING_MASK.bits() as u32;
        /// `Ds_map_mask`: the bits that are Dataspace map flags (rights and
        /// caching).
        const DS_MAP_MASK = 0xff;
        /// `Kernel`: kernel-provided memory (e.g. the KIP).
        const KERNEL = 0x100;
        /// `Pager`: faults are forwarded to the capability given as
        /// `client_cap` (a pager).
        const PAGER = 0x400;
        /// `Reserved`: no dataspace; faults are errors.
        const RESERVED = 0x800;
        /// `Private`: a copy-on-write mapping.
        const PRIVATE = 0x1000;
        /// `Anonymous`: anonymous memory from the region manager.
        const ANONYMOUS = 0x2000;
        /// `Search_addr`: search for a free address.
        const SEARCH_ADDR = 0x20000;
        /// `In_area`: only inside an area.
        const IN_AREA = 0x40000;
        /// `Eager_map`: map eagerly.
        const EAGER_MAP = 0x80000;
        /// `No_eager_map`: never map eagerly.
        const NO_EAGER_MAP = 0x10_0000;
        /// `Attach_mask`: the attach flags.
        const ATTACH_MASK = 0x1f_0000;
    }
}

impl Flags {
    /// `Region_flags_mask`: the region flags (not a flag: it covers
    /// unassigned bits too).
    pub const REGION_FLAGS_MASK: u32 = 0xffff;

    /// The rights bits as flexpage rights (`r()`, `w()`, `x()`).
    pub fn rights(self) -> Rights {
        Rights::from_bits_truncate((self.bits() & 7) as u8)
    }

    /// The region flags (`region_flags()`: the low 16 bits).
    pub fn region_flags(self) -> Flags {
        Flags::from_bits_retain(self.bits() & Self::REGION_FLAGS_MASK)
    }

    /// The Dataspace map flags of a region (`map_flags()`: rights and
    /// caching).
    pub fn map_flags(self) -> DsFlags {
        DsFlags::from_bits_truncate(u64::from(self.bits() & Self::DS_MAP_MASK.bits()))
    }
}

impl From<Rights> for Flags {
    fn from(r: Rights) -> Flags {
        Flags::from_bits_retain(u32::from(r.bits()))
    }
}

/// Detach flags (`L4Re::Rm::Detach_flags`). (Still plain integers on the
/// wire: callers pass 0.)
pub mod detach_flags {
    /// Unmap the exact range given; parts of regions may stay.
    pub const EXACT: u32 = 1;
    /// Detach every region overlapping the range.
    pub const OVERLAP: u32 = 2;
}

crate::wire_flags!(Flags: u32);

/// Result of `detach` (label bits).
pub mod detach_result {
    /// The dataspace was detached completely.
    pub const DETACHED_DS: i64 = 0;
    /// Part of the region remains.
    pub const KEPT_DS: i64 = 1;
    /// The region was split.
    pub const SPLIT_DS: i64 = 2;
    /// Call again: more regions are in the range.
    pub const DETACH_AGAIN: i64 = 4;
    /// The region manager has already unmapped the pages (an in-task
    /// region manager): the client need not unmap them again.
    pub const UNMAPPED_RANGE: i64 = 8;
}

/// What `find` answers: the region (or area) that contains the address
/// (L4Re's out-parameters `addr, size, flags, offset, m`, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Found {
    /// Its start.
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its region flags (rights, `PRIVATE`, `ANONYMOUS`, …), as the
    /// region manager sent them.
    pub flags: Flags,
    /// Offset of its start in the dataspace.
    pub offset: u64,
    /// The dataspace's capability index (as the region manager holds it),
    /// or `L4_INVALID_CAP`.
    pub mem: u64,
}

impl Marshal for Found {
    type Decoded = Found;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        self.start.write(w)?;
        self.size.write(w)?;
        self.flags.write(w)?;
        self.offset.write(w)?;
        self.mem.write(w)
    }
    fn read(r: &mut MsgReader<'_>) -> Result<Found> {
        let start = u64::read(r)?;
        let size = u64::read(r)?;
        // A reply: unknown bits are the region manager's business.
        let flags = Flags::from_bits_retain(u32::read(r)?);
        let offset = u64::read(r)?;
        let mem = u64::read(r)?;
        Ok(Found {
            start,
            size,
            flags,
            offset,
            mem,
        })
    }
}

crate::wire_struct! {
    /// What `detach` answers besides its result code: the range that was
    /// detached and the dataspace that was behind it.
    pub struct DetachedRange {
        /// Start of the detached range.
        pub start: u64,
        /// Its size.
        pub size: u64,
        /// The dataspace's capability index, or `L4_INVALID_CAP`.
        pub mem: u64,
    }
}

/// One entry of `get_regions` (`L4Re::Rm::Region`) or `get_areas`
/// (`L4Re::Rm::Area`): 24 bytes on the wire, `end` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeEntry {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
    /// Region flags (rights, `KERNEL`, `PAGER`, `RESERVED`, `PRIVATE`,
    /// `ANONYMOUS`; 16 bits on the wire).
    pub flags: Flags,
}

/// `L4::Ipc::Ret_array<Region>` / `<Area>`: the number of entries is the
/// reply's label, the entries follow from the next 8-byte boundary (an
/// `l4_addr_t` start and end and a 16-bit flags word padded to 24 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeList(pub Vec<RangeEntry>);

impl RangeList {
    /// How many entries fit into one reply (the C++ side's
    /// `Max_num_regions`: the message registers divided by 24 bytes).
    pub const MAX: usize = crate::utcb::MR_WORDS / 3;
}

impl Marshal for RangeList {
    type Decoded = RangeList;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        for e in &self.0 {
            e.start.write(w)?;
            e.end.write(w)?;
            u64::from(e.flags.region_flags().bits()).write(w)?;
        }
        Ok(())
    }
    fn read(r: &mut MsgReader<'_>) -> Result<RangeList> {
        let n = usize::try_from(r.label()).map_err(|_| Error::Inval)?;
        if n > Self::MAX {
            return Err(Error::MsgTooLong);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let start = u64::read(r)?;
            let end = u64::read(r)?;
            // A reply: the flags as the region manager sent them.
            let flags = Flags::from_bits_retain(u32::from(u64::read(r)? as u16));
            v.push(RangeEntry { start, end, flags });
        }
        Ok(RangeList(v))
    }
    fn reply_label(&self) -> i64 {
        self.0.len() as i64
    }
}

/// The reply of `page_in`: the first part mapped (`fp`, whose order tells
/// the client how far it got) or, from an in-task region manager, the
/// address of a function in the same task that the calling thread runs
/// over the whole range instead (`helper`, 0 if none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageIn {
    /// What was mapped ([`SndFpage::NONE`] with a helper).
    pub fp: SndFpage,
    /// `page_in_fn`: `long helper(l4_addr_t min, l4_addr_t max, u16 rights)`.
    pub helper: u64,
}

impl Marshal for PageIn {
    type Decoded = PageIn;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        self.helper.write(w)?;
        self.fp.write(w)
    }
    fn read(r: &mut MsgReader<'_>) -> Result<PageIn> {
        let helper = u64::read(r)?;
        let fp = SndFpage::read(r)?;
        Ok(PageIn { fp, helper })
    }
}

protocol! {
    /// The region map of a task.
    pub protocol Rm: client RmClient, server RmServer, label 0x4005, opcode i32 {
        /// Attaches `size` bytes of `mem` from `offs` at `start` (or
        /// anywhere, with `SEARCH_ADDR`); returns the start address.
        0 => fn attach(start: u64, size: u64, flags: Flags, mem: Option<crate::msg::SendCap<Dataspace>>,
                       offs: u64, align: u8, client_cap: u64, name: &str, backing_offset: u64) -> u64;
        /// Detaches the region(s) in `[addr, addr+size)`.
        1 => fn detach(addr: u64, size: u64, flags: u32) -> WithCode<DetachedRange>;
        /// Finds the region containing `[addr, addr+size)`.
        2 => fn find(addr: u64, size: u64) -> Found;
        /// Reserves an area; returns its start.
        3 => fn reserve_area(start: u64, size: u64, flags: Flags, align: u8) -> u64;
        /// Frees an area.
        4 => fn free_area(addr: u64) -> ();
        /// Regions starting at or above `start` (as many as fit).
        5 => fn get_regions(start: u64) -> RangeList;
        /// Areas starting at or above `start` (as many as fit).
        6 => fn get_areas(start: u64) -> RangeList;
        /// The name and backing offset of the region at `addr`.
        7 => fn get_info(addr: u64) -> (alloc::string::String, u64);
        /// Faults with a pc in `[pc_begin, pc_end)` resume at `rescue_pc`.
        8 => fn add_rescue_jump(pc_begin: u64, pc_end: u64, rescue_pc: u64) -> ();
        /// Removes the rescue jump covering `pc`.
        9 => fn remove_rescue_jump(pc: u64) -> ();
        /// Maps `[min_addr, max_addr]` (inclusive, page-aligned) with
        /// `rights` ahead of any fault.
        10 => fn page_in(min_addr: u64, max_addr: u64, rights: u16) buffers(window: RcvBuf) -> PageIn;
    }
}
