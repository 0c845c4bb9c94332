//! Rust programs booted under Fiasco.OC/L4Re, and the server objects they
//! serve.
//!
//! The objects and the test protocol ([`proto`], [`objects`]) are ordinary
//! shared code: they build and are unit-tested on the host. The programs
//! (module `fiasco`, feature `fiasco`) are exported as C functions from the
//! staticlib that L4Re's build system links into each program (see
//! `fiasco/mk/rust.mk` and the `fiasco/*/Makefile`s):
//!
//! | C function | program | what it does |
//! |---|---|---|
//! | `rust_ipc_server` | `rust-ipc-server` | serves [`proto::Probe`] on the `"server"` gate and a memory dataspace on a gate of its own |
//! | `rust_ipc_client` | `rust-ipc-client` (harness test `test_rust_ipc`) | the client suite: prints TAP (`ok`/`not ok` lines) |
//! | `rust_nsds_server` | `rust-nsds-server` | a namespace (`L4Re::Namespace`) of read-only files served as dataspaces (`L4Re::Dataspace`) on the `"fs"` gate |
//! | `rust_panic` | `rust-panic` | checks the allocator of `l4re-rt`, then panics: the panic handler prints and exits with 101 |
#![cfg_attr(not(feature = "host"), no_std)]

extern crate alloc;

pub mod objects;
pub mod proto;
pub mod suite;
pub use l4re::tap;

#[cfg(feature = "fiasco")]
pub mod fiasco;
