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
//!
//! Opcodes 5-10 (`get_regions` … `page_in`) are not declared yet.

use crate::protocol;
use crate::rpc::WithCode;

use super::dataspace::Dataspace;

/// Attach and region flags (`L4Re::Rm::F`).
pub mod flags {
    /// Region is readable.
    pub const R: u32 = 4;
    /// Region is writable.
    pub const W: u32 = 2;
    /// Region is executable.
    pub const X: u32 = 1;
    /// Read-write.
    pub const RW: u32 = R | W;
    /// Read-execute.
    pub const RX: u32 = R | X;
    /// Kernel-provided memory (e.g. the KIP).
    pub const KERNEL: u32 = 0x100;
    /// Faults are forwarded to the capability given as `client_cap` (a pager).
    pub const PAGER: u32 = 0x400;
    /// Reserved (no dataspace; faults are errors).
    pub const RESERVED: u32 = 0x800;
    /// Private (copy-on-write) mapping.
    pub const PRIVATE: u32 = 0x1000;
    /// Anonymous memory.
    pub const ANONYMOUS: u32 = 0x2000;
    /// Search for a free address.
    pub const SEARCH_ADDR: u32 = 0x20000;
    /// Only inside an area.
    pub const IN_AREA: u32 = 0x40000;
    /// Map eagerly.
    pub const EAGER_MAP: u32 = 0x80000;
}

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
}

protocol! {
    /// The region map of a task.
    pub protocol Rm: client RmClient, server RmServer, label 0x4005, opcode i32 {
        /// Attaches `size` bytes of `mem` from `offs` at `start` (or
        /// anywhere, with `SEARCH_ADDR`); returns the start address.
        0 => fn attach(start: u64, size: u64, flags: u32, mem: Option<crate::msg::SendCap<Dataspace>>,
                       offs: u64, align: u8, client_cap: u64, name: &str, backing_offset: u64) -> u64;
        /// Detaches the region(s) in `[addr, addr+size)`.
        1 => fn detach(addr: u64, size: u64, flags: u32) -> WithCode<(u64, u64, u64)>;
        /// Finds the region containing `[addr, addr+size)`.
        2 => fn find(addr: u64, size: u64) -> (u64, u64, u32, u64, u64);
        /// Reserves an area; returns its start.
        3 => fn reserve_area(start: u64, size: u64, flags: u32, align: u8) -> u64;
        /// Frees an area.
        4 => fn free_area(addr: u64) -> ();
    }
}
