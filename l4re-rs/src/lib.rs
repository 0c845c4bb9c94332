//! Safe Rust API over L4Re, on Fiasco.OC and on the Linux host.
//!
//! The crate is layered like L4Re itself:
//!
//! * [`cap`], [`fpage`], [`msg`], [`utcb`]: typed capabilities, flexpages and
//!   items, message tags and the exact marshalling of L4Re's C++ IPC
//!   framework, the UTCB behind a unique borrow;
//! * [`ipc`]: call / send / wait / reply-and-wait with timeouts;
//! * [`rpc`] and [`protocol!`]: declare an IPC protocol once and get typed
//!   client stubs and server dispatch; [`proto`] holds L4Re's protocols
//!   (Dataspace, Namespace, Rm, the page-fault protocol, `L4::Meta`) defined
//!   that way;
//! * [`server`]: a server loop that dispatches by gate label, protocol and
//!   opcode and answers `L4::Meta` for every object;
//! * [`env`]: the program environment (initial capabilities by name);
//! * [`pages`]: page-aligned memory a server maps to its clients.
//!
//! Beneath one public surface sits a thin platform layer: `fiasco` (over the
//! raw `l4-sys` bindings) or `host` (Linux: tasks are processes, IPC gates are
//! Unix sockets, capabilities travel as file descriptors, memory items as
//! shared-memory mappings). Pick one with the cargo features of the same
//! names; `host` is the default.
//!
//! The crate is `no_std` + `alloc` on Fiasco; the host platform uses `std`.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod cap;
pub mod env;
pub mod error;
pub mod fpage;
pub mod ipc;
pub mod kobj;
pub mod msg;
pub mod pages;
pub mod platform;
pub mod proto;
pub mod rpc;
pub mod server;
pub mod tap;
pub mod utcb;

pub use cap::{Cap, CapIdx, CapKind, CapRights, OwnedCap};
pub use error::{Error, IpcError, Result};
pub use fpage::{Fpage, RcvBuf, Rights, SndFpage};
pub use ipc::Timeout;
pub use msg::{Marshal, MsgTag};
pub use utcb::Utcb;

#[cfg(feature = "fiasco")]
pub use platform::fiasco;
#[cfg(feature = "host")]
pub use platform::host;
