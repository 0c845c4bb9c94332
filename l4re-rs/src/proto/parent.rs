//! `L4Re::Parent` (protocol `L4RE_PROTO_PARENT`, 0x4002): how a task tells
//! the program that started it that it ends.
//!
//! | op | operation | in | out |
//! |----|-----------|----|-----|
//! | 0 | `signal` | `ulong sig, ulong val` | |
//!
//! L4Re's `_exit` (l4re-core `libc/common/_exit.cc`) sends `signal(0,
//! status)` to `l4re_env()->parent` and then sleeps; the parent (ned, moe,
//! our loader, the internal pager for its program) deletes the task.

use crate::protocol;

/// Signal number of "the program exited" (`val` is the exit status).
pub const SIGNAL_EXIT: u64 = 0;

protocol! {
    /// The parent of a task.
    pub protocol Parent: client ParentClient, server ParentServer, label 0x4002, opcode i32 {
        /// Signal `sig` with value `val` ([`SIGNAL_EXIT`]: exit status).
        0 => fn signal(sig: u64, val: u64) -> ();
    }
}
