//! The test protocol between `rust-ipc-server` and its client suite.

use l4re::fpage::{RcvBuf, SndFpage};
use l4re::msg::SendCap;
use l4re::proto::Dataspace;
use l4re::protocol;

/// Protocol label of [`Probe`] (outside L4Re's range of protocol numbers).
pub const PROBE_LABEL: i64 = 0x7100;

protocol! {
    /// Operations that exercise each kind of argument.
    pub protocol Probe: client ProbeClient, server ProbeServer, label 0x7100, opcode i32 {
        /// `a + b`; `Range` on overflow.
        0 => fn add(a: u64, b: u64) -> u64;
        /// Scalars of every size, a string and an array: returns a checksum
        /// of the scalars and array, the string reversed, and `!c`.
        1 => fn mixed(a: u8, b: u16, c: bool, d: u32, e: u64, s: &str, v: &[u16]) -> (u64, alloc::string::String, bool);
        /// Receives a dataspace capability and returns its size, asked of
        /// the dataspace by the server (capability transfer client → server,
        /// then a call from the server through it).
        2 => fn ds_size(ds: SendCap<Dataspace>) -> u64;
        /// Returns a capability to the server's memory dataspace into the
        /// caller's slot `slot` (capability transfer server → client).
        3 => fn get_ds() buffers(slot: RcvBuf) -> SndFpage;
        /// Fails with `code` (a handler error becomes the reply label).
        4 => fn fail(code: i32) -> ();
        /// Ends the server loop after this request: the reply is sent
        /// without waiting for another request (`ipc::reply`).
        5 => fn shutdown() -> ();
    }
}

/// The checksum `mixed` computes.
pub fn mixed_sum(a: u8, b: u16, c: bool, d: u32, e: u64, v: &[u16]) -> u64 {
    let mut sum = a as u64 + ((b as u64) << 8) + c as u64 + ((d as u64) << 16);
    sum = sum.wrapping_add(e);
    for (i, x) in v.iter().enumerate() {
        sum = sum.wrapping_add((*x as u64) << (i % 48));
    }
    sum
}
