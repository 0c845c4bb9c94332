//! `L4Re::Namespace` (protocol `L4RE_PROTO_NAMESPACE`, 0x4001).
//!
//! | op | operation | in | out |
//! |----|-----------|----|-----|
//! | 0 | `query` | `Array<char, ulong> name` + cap receive buffer | cap item, `int` dummy, `Array<char, ulong>` rest of the name; label `0x20` if partly resolved |
//! | 1 | `register_obj` | `unsigned flags, Array<char, ulong> name`, optional cap item | |
//! | 3 | `unlink` | `Array<char, ulong> name` | |
//!
//! A name with slashes is resolved one component per query: the server
//! answers with the capability for the first component, the rest of the
//! name, and the [`PARTLY_RESOLVED`] flag; the client continues at the
//! returned capability.

use crate::fpage::{RcvBuf, SndFpage};
use crate::msg::{LongBytes, LongBytesBuf};
use crate::protocol;
use crate::rpc::WithCode;

/// Reply-label flag of `query`: only a prefix of the name was resolved.
pub const PARTLY_RESOLVED: i64 = 0x20;

/// `register_obj` flags (`L4Re::Namespace::Register_flags`).
pub mod register_flags {
    /// Read-only.
    pub const RO: u32 = 0x4;
    /// Read-write.
    pub const RW: u32 = 0x5;
    /// Strong.
    pub const STRONG: u32 = 0x2;
    /// Replace an existing entry.
    pub const OVERWRITE: u32 = 0x200;
}

protocol! {
    /// A directory of named capabilities.
    pub protocol Namespace: client NamespaceClient, server NamespaceServer, label 0x4001, opcode i32 {
        /// Looks up `name`; the capability arrives in the buffer `cap`.
        0 => fn query(name: LongBytes<'_>) buffers(cap: RcvBuf)
            -> WithCode<(SndFpage, Option<i32>, Option<LongBytesBuf>)>;
        /// Registers `obj` under `name` (no object: a placeholder).
        1 => fn register_obj(flags: u32, name: LongBytes<'_>, obj: Option<crate::msg::SendCap<crate::cap::Untyped>>) -> ();
        /// Removes `name`.
        3 => fn unlink(name: LongBytes<'_>) -> ();
    }
}
