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
//! to its parent (`L4Re::Parent` `signal(0, status)`, as every L4Re
//! program) and the loader prints its fault statistics
//! ([`stats::FaultStats`]).
//!
//! With `--inpager=PATH` the programs that follow run under the *internal
//! pager* instead (crate `l4re-inpager`, loaded from PATH into each task):
//! the loader is then the external pager of the internal pager only, and
//! hands it the program's regions and anonymous memory
//! ([`l4pager::task::TaskSetup`]); the internal pager pages the program.
//!
//! `--attach` gives a program dataspaces besides its own file (a boot
//! module, an l4fs file, a capability of the loader), `--sequential`
//! runs one program at a time ([`options`]).
//!
//! The statistics and the argument parsing are ordinary shared code,
//! built and tested on the host too.
#![cfg_attr(not(feature = "host"), no_std)]

extern crate alloc;

pub mod check;
pub mod options;
pub mod stats;

#[cfg(feature = "fiasco")]
pub mod fiasco;

/// Capability slot (index) of the log capability in a loaded task.
pub const CHILD_LOG_SLOT: u64 = 5;
/// Capability slot of the task's own task capability.
pub const CHILD_TASK_SLOT: u64 = 1;
/// Capability slot of the program's pager, exception handler and parent
/// (`L4Re::Parent`): a gate to the loader (external pager), or the task's
/// gate `"server"` served by the internal pager.
pub const CHILD_PAGER_SLOT: u64 = 10;
/// With an internal pager: slot of the gate to the loader through which
/// the internal pager's own faults, exceptions and set-up calls arrive
/// (its pager, exception handler and parent).
pub const INPAGER_PAGER_SLOT: u64 = 12;
/// With an internal pager: slot of the internal pager's thread (its
/// `main_thread`).
pub const INPAGER_THREAD_SLOT: u64 = 3;
/// With an internal pager: slot of the program's thread.
pub const PROGRAM_THREAD_SLOT: u64 = 4;
