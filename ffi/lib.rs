//! Raw bindings to the L4Re C API: the Fiasco kernel interface (`l4/sys/…`)
//! and the C interface of the L4Re runtime (`l4/re/…`, `l4/re/c/…`).
//!
//! # Only with the `fiasco` feature
//!
//! The bindings exist only when the crate is built with the `fiasco`
//! feature. Its build script then finds an L4Re build tree (`L4RE_OBJ`, or
//! the conventional `/opt/l4re/build-amd64`; see `ffi/README.md`), generates
//! the bindings with bindgen from the headers named in `ffi/wrapper.h`, and
//! compiles a small C library that gives every `static inline` function of
//! those headers (`l4_ipc_call`, `l4_utcb`, `l4re_env`, …) a real symbol.
//! Without the feature (the host platform) this crate is empty, and
//! building it needs neither an L4Re tree nor libclang.
//!
//! # What is here
//!
//! - Everything bindgen generates for names matching
//!   `l4_.*|L4_.*|l4re_.*|L4RE_.*`: types, functions (extern ones and the
//!   wrapped `static inline` ones alike), and C enum constants as plain
//!   constants of the enum's integer type (no Rust enums: any value the
//!   kernel sends is representable).
//! - Typed constants for the value macros bindgen cannot translate
//!   faithfully, defined below: [`L4_IPC_NEVER`] and the other timeouts,
//!   [`L4_INVALID_CAP`], the page masks, and a few more.
//!
//! Everything is as unsafe as the C API it mirrors: the safe layer lives in
//! other crates of the workspace.
//!
//! Functions of `l4/re/c/…` live in L4Re's libraries: a program that calls
//! them links `l4re_c` (and `l4re_c-util` for the capability allocator), e.g.
//! through `REQUIRES_LIBS` in its BID Makefile.
#![no_std]

/// The bindgen output (and the names of its wrapped `static inline`
/// functions), re-exported at the crate root.
#[cfg(feature = "fiasco")]
#[allow(
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    improper_ctypes,
    unsafe_op_in_unsafe_fn,
    rustdoc::all,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]
mod raw {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

#[cfg(feature = "fiasco")]
pub use raw::*;

#[cfg(feature = "fiasco")]
pub use typed::*;

/// Typed constants for macros of the C headers, with the values clang
/// computed from the tree's headers (see the `L4SYS_*` lines of
/// `ffi/wrapper.h`).
#[cfg(feature = "fiasco")]
mod typed {
    use crate::raw;
    use crate::raw::{l4_cap_idx_t, l4_timeout_s, l4_timeout_t, l4_uint64_t, l4_umword_t};

    /// IPC timeout pair: never time out, neither sending nor receiving
    /// (`L4_IPC_NEVER`).
    pub const L4_IPC_NEVER: l4_timeout_t = l4_timeout_t {
        raw: raw::l4sys_timeout_L4_IPC_NEVER,
    };
    /// IPC timeout pair: receive timeout 0, send never times out
    /// (`L4_IPC_RECV_TIMEOUT_0`).
    pub const L4_IPC_RECV_TIMEOUT_0: l4_timeout_t = l4_timeout_t {
        raw: raw::l4sys_timeout_L4_IPC_RECV_TIMEOUT_0,
    };
    /// IPC timeout pair: send timeout 0, receive never times out
    /// (`L4_IPC_SEND_TIMEOUT_0`).
    pub const L4_IPC_SEND_TIMEOUT_0: l4_timeout_t = l4_timeout_t {
        raw: raw::l4sys_timeout_L4_IPC_SEND_TIMEOUT_0,
    };
    /// IPC timeout pair: both send and receive timeout 0
    /// (`L4_IPC_BOTH_TIMEOUT_0`).
    pub const L4_IPC_BOTH_TIMEOUT_0: l4_timeout_t = l4_timeout_t {
        raw: raw::l4sys_timeout_L4_IPC_BOTH_TIMEOUT_0,
    };
    /// A single timeout of 0 (`L4_IPC_TIMEOUT_0`).
    pub const L4_IPC_TIMEOUT_0: l4_timeout_s = l4_timeout_s {
        t: raw::l4sys_timeout_s_L4_IPC_TIMEOUT_0,
    };
    /// A single timeout that never expires (`L4_IPC_TIMEOUT_NEVER`).
    pub const L4_IPC_TIMEOUT_NEVER: l4_timeout_s = l4_timeout_s {
        t: raw::l4sys_timeout_s_L4_IPC_TIMEOUT_NEVER,
    };

    /// The invalid capability index (`L4_INVALID_CAP`).
    pub const L4_INVALID_CAP: l4_cap_idx_t = !raw::l4sys_const_not_L4_INVALID_CAP;
    /// The bit that marks a capability index as invalid
    /// (`L4_INVALID_CAP_BIT`).
    pub const L4_INVALID_CAP_BIT: l4_umword_t = raw::l4sys_const_L4_INVALID_CAP_BIT;
    /// The invalid reply capability (`L4_INVALID_REPLY_CAP`).
    pub const L4_INVALID_REPLY_CAP: l4_cap_idx_t = !raw::l4sys_const_not_L4_INVALID_REPLY_CAP;
    /// The bit that marks a reply capability (`L4_REPLY_CAP_BIT`).
    pub const L4_REPLY_CAP_BIT: l4_umword_t = raw::l4sys_const_L4_REPLY_CAP_BIT;
    /// Mask of the slot part of a capability index (`L4_CAP_MASK`).
    pub const L4_CAP_MASK: l4_umword_t = !raw::l4sys_const_not_L4_CAP_MASK;
    /// Distance between two capability indices (`L4_CAP_OFFSET`).
    pub const L4_CAP_OFFSET: l4_umword_t = raw::l4sys_const_L4_CAP_OFFSET;
    /// Size of one capability slot in index units (`L4_CAP_SIZE`).
    pub const L4_CAP_SIZE: l4_umword_t = raw::l4sys_const_L4_CAP_SIZE;

    /// Size of a page in bytes (`L4_PAGESIZE`).
    pub const L4_PAGESIZE: l4_umword_t = raw::l4sys_const_L4_PAGESIZE;
    /// Mask that rounds an address down to its page (`L4_PAGEMASK`).
    pub const L4_PAGEMASK: l4_umword_t = !raw::l4sys_const_not_L4_PAGEMASK;
    /// Size of a superpage in bytes (`L4_SUPERPAGESIZE`).
    pub const L4_SUPERPAGESIZE: l4_umword_t = raw::l4sys_const_L4_SUPERPAGESIZE;
    /// Mask that rounds an address down to its superpage
    /// (`L4_SUPERPAGEMASK`).
    pub const L4_SUPERPAGEMASK: l4_umword_t = !raw::l4sys_const_not_L4_SUPERPAGEMASK;

    /// Byte offset of the buffer registers in the UTCB
    /// (`L4_UTCB_BUF_REGS_OFFSET`).
    pub const L4_UTCB_BUF_REGS_OFFSET: l4_umword_t = raw::l4sys_const_L4_UTCB_BUF_REGS_OFFSET;
    /// Byte offset of the thread control registers in the UTCB
    /// (`L4_UTCB_THREAD_REGS_OFFSET`).
    pub const L4_UTCB_THREAD_REGS_OFFSET: l4_umword_t = raw::l4sys_const_L4_UTCB_THREAD_REGS_OFFSET;
    /// Size of the exception state in words (`L4_UTCB_EXCEPTION_REGS_SIZE`).
    pub const L4_UTCB_EXCEPTION_REGS_SIZE: l4_umword_t =
        raw::l4sys_const_L4_UTCB_EXCEPTION_REGS_SIZE;
    /// Buffer-descriptor flag: pass the FPU state along
    /// (`L4_UTCB_INHERIT_FPU`).
    pub const L4_UTCB_INHERIT_FPU: l4_umword_t = raw::l4sys_const_L4_UTCB_INHERIT_FPU;

    /// A timeout in microseconds that never expires (`L4_TIMEOUT_US_NEVER`).
    pub const L4_TIMEOUT_US_NEVER: l4_uint64_t = !raw::l4sys_const_not_L4_TIMEOUT_US_NEVER;
    /// The largest finite timeout in microseconds (`L4_TIMEOUT_US_MAX`).
    pub const L4_TIMEOUT_US_MAX: l4_uint64_t = raw::l4sys_const_L4_TIMEOUT_US_MAX;
}
