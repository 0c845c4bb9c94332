//! Loader programs booted under Fiasco.OC/L4Re.
//!
//! `ext-loader` (module `fiasco`, feature `fiasco`, BID directory
//! `fiasco/ext-loader`) looks static x86-64 programs up in l4fs, validates
//! them with [`loader::elf`], creates a task and a thread for each and is
//! their external pager: it receives their page-fault IPCs, resolves them
//! with an [`l4pager::region::RegionMap`] of the program's segments and
//! [`l4pager::fault::resolve`], fills a page of its own memory (a copy of
//! the file page, or zeros) and answers with a map item of that page. An
//! invalid access ends the task with a report; a program ends with an IPC
//! to its pager (see [`EXIT_LABEL`]) and the loader prints its fault
//! statistics ([`stats::FaultStats`]).
//!
//! The statistics and the argument parsing are ordinary shared code,
//! built and tested on the host too.
#![cfg_attr(not(feature = "host"), no_std)]

extern crate alloc;

pub mod check;
pub mod stats;

#[cfg(feature = "fiasco")]
pub mod fiasco;

/// Message label of a program's exit call to its pager (status in mr0);
/// `fiasco/ext-loader/prog/pagetest.c` uses the same value.
pub const EXIT_LABEL: i64 = 0x4558;

/// Capability slot (index) of the log capability in a loaded task.
pub const CHILD_LOG_SLOT: u64 = 5;
/// Capability slot of the task's own task capability.
pub const CHILD_TASK_SLOT: u64 = 1;
/// Capability slot of the gate that reaches the loader's pager thread
/// (the thread's pager and exception handler).
pub const CHILD_PAGER_SLOT: u64 = 10;
