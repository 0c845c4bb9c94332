//! `L4Re::Dataspace` (protocol `L4RE_PROTO_DATASPACE`, 0x4000).
//!
//! | op | operation | in | out |
//! |----|-----------|----|-----|
//! | 0 | `map` | `u64 offset, u64 spot, ulong flags` + receive window | one memory item |
//! | 1 | `clear` | `u64 offset, u64 size` | |
//! | 2 | `info` | | `Stats { u64 size; ulong flags }` |
//! | 3 | `copy_in` | `u64 dst_offs, u64 src_offs, u64 size` + cap item `src` | |
//! | 4 | `allocate` | `u64 offset, u64 size` | |
//! | 5 | `map_info` | | `addr start, addr end` |

use bitflags::bitflags;

use crate::error::Result;
use crate::fpage::{RcvBuf, Rights, SndFpage};
use crate::msg::{Marshal, MsgReader, MsgWriter};
use crate::protocol;

bitflags! {
    /// `L4Re::Dataspace::F::Flags`: the rights (bits 0-3: `R` 4, `W` 2,
    /// `X` 1) and caching (bits 4-5) of a `map` request, and the rights a
    /// dataspace's capability grants (`Stats::flags`). A request with any
    /// other bit is refused with `-L4_EINVAL` when it is decoded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Flags: u64 {
        /// `X`: executable mapping.
        const X = 1;
        /// `W`: writable mapping.
        const W = 2;
        /// `R` (`Ro`): readable mapping.
        const R = 4;
        /// `RW`.
        const RW = Self::R.bits() | Self::W.bits();
        /// `RX`.
        const RX = Self::R.bits() | Self::X.bits();
        /// `RWX`.
        const RWX = Self::R.bits() | Self::W.bits() | Self::X.bits();
        /// `Rights_mask`: all rights bits.
        const RIGHTS_MASK = 0x0f;
        /// `Bufferable`: write-combined memory.
        const BUFFERABLE = 0x10;
        /// `Uncacheable`: uncached memory.
        const UNCACHEABLE = 0x20;
        /// `Caching_mask`: the caching bits.
        const CACHING_MASK = 0x30;
    }
}

impl Flags {
    /// The rights bits as flexpage rights (`fpage_rights()`).
    pub fn rights(self) -> Rights {
        Rights::from_bits_truncate((self.bits() & 7) as u8)
    }
}

impl From<Rights> for Flags {
    fn from(r: Rights) -> Flags {
        Flags::from_bits_retain(u64::from(r.bits()))
    }
}

crate::wire_flags!(Flags: u64);

/// `L4Re::Dataspace::Stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Size in bytes.
    pub size: u64,
    /// Dataspace flags: the rights the caller's capability grants, and
    /// whatever else the server sets (moe: its `Cow_enabled`, 0x100).
    pub flags: Flags,
}

impl Marshal for Stats {
    type Decoded = Stats;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        self.size.write(w)?;
        self.flags.write(w)
    }
    fn read(r: &mut MsgReader<'_>) -> Result<Stats> {
        let size = u64::read(r)?;
        // A reply: the flags as the server sent them, bits of its own
        // included (only requests refuse unknown bits).
        let flags = Flags::from_bits_retain(u64::read(r)?);
        Ok(Stats { size, flags })
    }
}

protocol! {
    /// A dataspace: memory (a file, anonymous memory, a device) that can be
    /// mapped page-wise.
    pub protocol Dataspace: client DataspaceClient, server DataspaceServer, label 0x4000, opcode i32 {
        /// Maps the page(s) at `offset` into the receive window; `spot` is the
        /// address in the window the caller wants (the hot spot), `flags` the
        /// rights and caching. The server may send a larger aligned flexpage.
        0 => fn map(offset: u64, spot: u64, flags: Flags) buffers(window: RcvBuf) -> SndFpage;
        /// Zero-fills `size` bytes from `offset`.
        1 => fn clear(offset: u64, size: u64) -> ();
        /// Size and flags.
        2 => fn info() -> Stats;
        /// Copies `size` bytes from dataspace `src` at `src_offs` to `dst_offs`.
        3 => fn copy_in(dst_offs: u64, src: crate::msg::SendCap<Dataspace>, src_offs: u64, size: u64) -> ();
        /// Allocates backing memory for a range in advance.
        4 => fn allocate(offset: u64, size: u64) -> ();
        /// Physical/virtual range information (when the dataspace has one).
        5 => fn map_info() -> (u64, u64);
    }
}
