//! Region map, fault resolution, the `L4Re::Rm` server, and (on the Linux
//! host) userfaultfd-based paging.
//!
//! * [`region`]: the region map of a task — regions with start, size,
//!   rights, backing (a dataspace and offset, anonymous zero-fill, or
//!   reserved), private or shared; areas; lookup in O(log n).
//! * [`fault`]: given a fault address, the access and the pc, decides what
//!   resolves the fault (map a shared file page, copy a private page, zero
//!   fill) or produces the report that ends the task.
//! * [`rm`]: serves `L4Re::Rm` (protocol 0x4005) over a region map, so that
//!   attach, detach, find and reserve work through IPC.
//! * [`task`]: how the internal pager on Fiasco gets its task's regions
//!   from the loader and reports the end of the program.
//! * `host` (feature `host`): userfaultfd, used by the internal pager in a
//!   new task and by the external pager in the creating task.
//!
//! [`region`], [`fault`] and [`rm`] are `no_std` + `alloc` and shared by
//! both platforms.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod fault;
pub mod region;
pub mod rm;
pub mod sync;
pub mod task;

#[cfg(feature = "host")]
pub mod host;

pub use fault::{Access, Decision, FaultReport};
pub use region::{Backing, Region, RegionMap};
