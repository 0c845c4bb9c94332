//! The protocols of the filesystem server l4fs (crate `l4fs`, `servers/`)
//! beyond L4Re's Dataspace and Namespace, as a client needs them: the
//! client stubs and server traits ([`FileOpsClient`], [`FsOpsClient`],
//! [`FileOpsServer`], [`FsOpsServer`]) and the wire types. `no_std`, and
//! without the server: a client depends on this crate alone, as Hubris's
//! `-api` crates; the server implements the traits declared here.
//!
//! File operations (`l4fs.file`, 0x4F00) are served on file objects,
//! filesystem operations (`l4fs.fs`, 0x4F01) on the root object.
//!
//! | label | op | operation | in | out |
//! |---|---|---|---|---|
//! | 0x4F00 | 0 | `read` | `u64 offset, u64 len` | bytes (at most [`MAX_IO`]; fewer at the end) |
//! | 0x4F00 | 1 | `write` | `u64 offset`, bytes | `u64` written (RW objects only) |
//! | 0x4F00 | 2 | `size` | | `u64` |
//! | 0x4F00 | 3 | `sync` | | |
//! | 0x4F00 | 4 | `truncate` | `u64 size` (≤ capacity) | |
//! | 0x4F00 | 5 | `stats` | | [`CacheStats`] of the file |
//! | 0x4F00 | 6 | `capacity` | | `u64` |
//! | 0x4F00 | 7 | `pin` | `u64 offset, u64 len` | |
//! | 0x4F00 | 8 | `unpin` | `u64 offset, u64 len` | |
//! | 0x4F01 | 0 | `open` | path, `u32 mode` ([`mode`]) + cap buffer | file capability |
//! | 0x4F01 | 1 | `stats` | | [`CacheStats`] of all files |
//! | 0x4F01 | 2 | `pool` | | [`PoolInfo`] |
//! | 0x4F01 | 3 | `sync_all` | | |
//! | 0x4F01 | 4 | `print_stats` | | (logs the statistics) |
//! | 0x4F01 | 5 | `clean` | `u64 free` | `u64` frames evicted until `free` frames are free |

#![no_std]

use l4re::fpage::{RcvBuf, SndFpage};
use l4re::msg::{LongBytes, LongBytesBuf};
use l4re::protocol;

/// Largest payload of one `read` or `write` (message registers are 504
/// bytes; the rest carries opcode, offset and length).
pub const MAX_IO: usize = 448;

l4re::wire_struct! {
    /// Cache counters, per file and in total.
    pub struct CacheStats {
        /// Accesses that found the page active in the cache.
        pub hits: u64,
        /// Accesses that had to read the page from the backing store.
        pub misses: u64,
        /// Hits on pages that read-ahead brought in (first hit only).
        pub readahead_hits: u64,
        /// Pages read by read-ahead.
        pub readahead_pages: u64,
        /// Accesses that found the page in the free pool (reclaimed without I/O).
        pub reclaims: u64,
        /// Frames moved out of the active set by the cleaning policy.
        pub evictions: u64,
        /// Pages written back to the backing store.
        pub writebacks: u64,
        /// Pages removed from every client mapping.
        pub revocations: u64,
        /// Pages mapped to clients straight from the backing store's
        /// memory, not through the cache (direct mapping, Fiasco).
        pub direct_pages: u64,
        /// Directly mapped pages taken back from clients before they
        /// changed.
        pub direct_revocations: u64,
    }
}

l4re::wire_struct! {
    /// The state of the frame pool.
    pub struct PoolInfo {
        /// Frames in the pool.
        pub frames: u64,
        /// Active frames.
        pub active: u64,
        /// Frames in the free pool that still hold a page.
        pub free_cached: u64,
        /// Empty frames.
        pub empty: u64,
        /// Pinned frames.
        pub pinned: u64,
        /// The low watermark of free frames.
        pub low_watermark: u64,
    }
}

/// Open modes of `open`.
pub mod mode {
    /// Read-only: a capability whose mappings are read-only.
    pub const RO: u32 = 0;
    /// Read-write.
    pub const RW: u32 = 1;
}

/// Protocol label of [`FileOps`].
pub const FILE_LABEL: i64 = 0x4F00;
/// Protocol label of [`FsOps`].
pub const FS_LABEL: i64 = 0x4F01;

protocol! {
    /// File operations that L4Re's Dataspace lacks.
    pub protocol FileOps: client FileOpsClient, server FileOpsServer, label 0x4F00, opcode i32 {
        /// Reads up to `len` bytes (at most [`MAX_IO`]) at `offset`.
        0 => fn read(offset: u64, len: u64) -> LongBytesBuf;
        /// Writes `data` at `offset`; the file grows up to its capacity.
        1 => fn write(offset: u64, data: LongBytes<'_>) -> u64;
        /// The file size.
        2 => fn size() -> u64;
        /// Writes the file's dirty pages back.
        3 => fn sync() -> ();
        /// Sets the size (at most the capacity).
        4 => fn truncate(size: u64) -> ();
        /// Cache counters of this file.
        5 => fn stats() -> CacheStats;
        /// Largest size the file can have through this server.
        6 => fn capacity() -> u64;
        /// Pins the pages of a range in the cache.
        7 => fn pin(offset: u64, len: u64) -> ();
        /// Unpins them.
        8 => fn unpin(offset: u64, len: u64) -> ();
    }
}

protocol! {
    /// Filesystem operations, on the root object.
    pub protocol FsOps: client FsOpsClient, server FsOpsServer, label 0x4F01, opcode i32 {
        /// Opens `path` with `mode`; the capability arrives in `cap`.
        0 => fn open(path: LongBytes<'_>, mode: u32) buffers(cap: RcvBuf) -> SndFpage;
        /// Cache counters of all files.
        1 => fn stats() -> CacheStats;
        /// The frame pool.
        2 => fn pool() -> PoolInfo;
        /// Syncs every file.
        3 => fn sync_all() -> ();
        /// Logs the statistics.
        4 => fn print_stats() -> ();
        /// Runs the cleaning policy until `free` frames are free (bounded
        /// by the pool); returns the frames evicted.
        5 => fn clean(free: u64) -> u64;
    }
}
