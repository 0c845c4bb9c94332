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

use crate::fpage::{RcvBuf, SndFpage};
use crate::protocol;

/// Dataspace map flags (`L4Re::Dataspace::F::Flags`): rights in bits 0-3
/// (R=4, W=2, X=1), caching in bits 4-5.
pub mod map_flags {
    /// Executable mapping.
    pub const X: u64 = 1;
    /// Writable mapping.
    pub const W: u64 = 2;
    /// Readable mapping.
    pub const R: u64 = 4;
    /// Read-write.
    pub const RW: u64 = R | W;
    /// Read-execute.
    pub const RX: u64 = R | X;
    /// All rights bits.
    pub const RIGHTS_MASK: u64 = 0x0f;
    /// Bufferable (write-combined) memory.
    pub const BUFFERABLE: u64 = 0x10;
    /// Uncached memory.
    pub const UNCACHEABLE: u64 = 0x20;
    /// Caching bits.
    pub const CACHING_MASK: u64 = 0x30;
}

crate::wire_struct! {
    /// `L4Re::Dataspace::Stats`.
    pub struct Stats {
        /// Size in bytes.
        pub size: u64,
        /// Dataspace flags (rights the caller's capability grants: `map_flags`).
        pub flags: u64,
    }
}

protocol! {
    /// A dataspace: memory (a file, anonymous memory, a device) that can be
    /// mapped page-wise.
    pub protocol Dataspace: client DataspaceClient, server DataspaceServer, label 0x4000, opcode i32 {
        /// Maps the page(s) at `offset` into the receive window; `spot` is the
        /// address in the window the caller wants (the hot spot), `flags` the
        /// rights and caching. The server may send a larger aligned flexpage.
        0 => fn map(offset: u64, spot: u64, flags: u64) buffers(window: RcvBuf) -> SndFpage;
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
