//! IPC: call, send, wait, reply-and-wait, with timeouts.
//!
//! These are the kernel's operations over the current thread's UTCB, with the
//! kernel's error reporting turned into [`Error::Ipc`]. The label of a
//! reply is returned untouched: RPC-level code (see [`crate::rpc`]) turns a
//! negative label into an error.

use crate::cap::{Cap, CapIdx, CapKind};
use crate::error::{Error, Result};
use crate::msg::MsgTag;
use crate::platform;
use crate::utcb::Utcb;

/// How long an IPC phase may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// Wait as long as it takes (`L4_IPC_NEVER`).
    Never,
    /// Do not wait at all (`L4_IPC_BOTH_TIMEOUT_0`): succeed only if the
    /// partner is ready.
    Zero,
    /// Wait at most this many microseconds.
    Micros(u64),
}

impl Timeout {
    /// A timeout of `ms` milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Timeout::Micros(ms * 1000)
    }
}

/// A received request: its tag and the label of the gate it came through
/// (with the sender's W/S rights in the low two bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The message tag.
    pub tag: MsgTag,
    /// The gate label.
    pub label: u64,
}

/// Sends the message in `utcb` to `dest` and waits for the reply
/// (`l4_ipc_call`).
pub fn call<T: CapKind>(
    dest: Cap<T>,
    utcb: &mut Utcb,
    tag: MsgTag,
    timeout: Timeout,
) -> Result<MsgTag> {
    platform::ipc_call(dest.idx(), utcb, tag, timeout).map_err(Error::Ipc)
}

/// Sends the message in `utcb` to `dest` without waiting for a reply
/// (`l4_ipc_send`).
pub fn send<T: CapKind>(
    dest: Cap<T>,
    utcb: &mut Utcb,
    tag: MsgTag,
    timeout: Timeout,
) -> Result<()> {
    platform::ipc_send(dest.idx(), utcb, tag, timeout).map_err(Error::Ipc)
}

/// Waits for a request on any gate bound to the current thread
/// (`l4_ipc_wait`).
pub fn wait(utcb: &mut Utcb, timeout: Timeout) -> Result<Received> {
    platform::ipc_wait(utcb, timeout).map_err(Error::Ipc)
}

/// Replies to the last caller with the message in `utcb` and waits for the
/// next request (`l4_ipc_reply_and_wait`). If the reply cannot be delivered
/// (the caller is gone), the error is logged and the wait still happens, as
/// a server must go on serving others.
pub fn reply_and_wait(utcb: &mut Utcb, reply: MsgTag, timeout: Timeout) -> Result<Received> {
    platform::ipc_reply_and_wait(utcb, reply, timeout).map_err(Error::Ipc)
}

/// Replies to the last caller with the message in `utcb` without waiting
/// for anything (`l4_ipc_send` to the reply capability).
pub fn reply(utcb: &mut Utcb, reply: MsgTag) -> Result<()> {
    platform::ipc_reply(utcb, reply).map_err(Error::Ipc)
}

/// Binds IPC gate `gate` to thread `thread` with `label` (the low two bits
/// must be zero: the kernel puts the sender's rights there).
pub fn bind_gate(gate: CapIdx, thread: CapIdx, label: u64) -> Result<()> {
    if label & 3 != 0 {
        return Err(Error::Inval);
    }
    platform::gate_bind_thread(gate, thread, label)
}
