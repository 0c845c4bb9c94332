//! The thin platform layer: the only code that differs between Fiasco.OC and
//! the Linux host.
//!
//! Each platform module provides the same free functions (checked by the
//! compiler through the `use` below): access to the current thread's UTCB,
//! the IPC operations, capability-slot management, IPC-gate creation and
//! binding, and the program environment. Everything else in the crate is
//! written once over these.

#[cfg(all(feature = "fiasco", feature = "host"))]
compile_error!(
    "features `fiasco` and `host` are mutually exclusive: build for Fiasco with --no-default-features --features fiasco"
);

#[cfg(not(any(feature = "fiasco", feature = "host")))]
compile_error!("choose a platform: feature `host` (default) or `fiasco`");

#[cfg(feature = "fiasco")]
pub mod fiasco;
#[cfg(feature = "fiasco")]
pub(crate) use fiasco::*;

#[cfg(feature = "host")]
pub mod host;
#[cfg(feature = "host")]
pub(crate) use host::{
    cap_alloc, cap_free, cap_release, create_gate, current_thread, current_utcb, env_get_cap,
    gate_bind_thread, ipc_call, ipc_reply, ipc_reply_and_wait, ipc_send, ipc_wait, log_write,
    thread_set_pager,
};
