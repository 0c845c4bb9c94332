//! The loader: starts programs in new tasks, demand-paged from the
//! filesystem server.
//!
//! * [`elf`]: ELF parsing and validation (goblin) and the load plan;
//! * [`stack`]: the initial stack (argc, argv, envp, auxv);
//! * [`layout`]: the region map a load plan describes;
//! * [`in_task`]: loading a program from inside its own task, as L4Re's
//!   in-task pager does (the internal pager started by ned);
//! * [`l4re_start`]: an L4Re program's initial stack and environment;
//! * `host` (feature `host`): the Linux realization — the task stub
//!   (`loader task-stub`) with the internal pager, the external pager,
//!   the control channel between them, and `loader run`;
//! * [`fiasco`]: the Fiasco.OC realization — `ext-loader`, which creates
//!   tasks and is their external pager or loads an internal pager into
//!   them (its task creation and pager loop need the feature `fiasco`;
//!   its options and checks are shared code).
//!
//! [`elf`], [`layout`], [`stack`], [`in_task`] and [`l4re_start`] are `no_std` + `alloc`
//! and shared by both platforms.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod demo;
pub mod elf;
pub mod fiasco;
pub mod in_task;
pub mod l4re_start;
pub mod layout;
pub mod stack;

#[cfg(feature = "host")]
pub mod bench;
#[cfg(feature = "host")]
pub mod host;
