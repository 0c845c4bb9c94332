//! Runtime for Rust programs on L4Re.
//!
//! A Rust component becomes an L4Re program as a `no_std` **staticlib**
//! linked by L4Re's build system (a BID `prog.mk` Makefile) together with
//! L4Re's libc, its C runtime start files and the libraries of
//! `REQUIRES_LIBS`. L4Re's libc starts the program and calls C `main`; this
//! crate supplies what the Rust side needs around that:
//!
//! * `L4ReAlloc`, a [`GlobalAlloc`](core::alloc::GlobalAlloc) over the
//!   libc's `malloc`/`free`/`posix_memalign`, installed as the global
//!   allocator with the `global-allocator` feature (so `alloc` works);
//! * with the `panic-handler` feature, the `#[panic_handler]`: it prints the
//!   panic message through the program's log capability and exits the
//!   program with status 101 (L4Re's parent, e.g. ned, sees the exit);
//! * the `rust_eh_personality` symbol that the prebuilt `core` refers to
//!   (never called: programs are built with `panic = "abort"`);
//! * `entry!`, which exports a C function (`main` itself, or a name the
//!   program's C `main` calls) that runs a Rust function with the program's
//!   arguments and turns its result into an exit status;
//! * `log_bytes` and `LogWriter`: raw output through the log
//!   capability, usable before any allocator or logger exists.
//!
//! With the `freestanding` feature the runtime replaces L4Re's libc
//! instead ([`freestanding`]): entry point, heap, capability slots and
//! exit for programs that run before or without L4Re's in-task services
//! (the internal pager).
//!
//! Without the `fiasco` feature (the host platform) the crate is empty: host
//! programs have `std`.
#![no_std]

#[cfg(feature = "freestanding")]
extern crate alloc;

#[cfg(feature = "fiasco")]
mod fiasco;
#[cfg(feature = "fiasco")]
pub use fiasco::*;
#[cfg(all(feature = "fiasco", not(feature = "freestanding")))]
mod libc;
#[cfg(all(feature = "fiasco", not(feature = "freestanding")))]
pub use libc::*;
#[cfg(feature = "freestanding")]
pub mod freestanding;
#[cfg(feature = "freestanding")]
pub use freestanding::exit_program;
