//! The internal pager on Fiasco.OC: a freestanding program (no L4Re libc,
//! no L4Re in-task services: [`l4re_rt::freestanding`]) that a loader
//! places into a new task next to the program it pages.
//!
//! It serves the task's gate `"server"` (named in its initial
//! capabilities), which is the program's pager, exception handler, region
//! map and parent:
//!
//! * **page faults** (`L4_PROTO_PAGE_FAULT`): [`l4pager::fault::resolve`]
//!   over the task's [`l4pager::region::RegionMap`] decides; the pager then
//!   asks the region's dataspace to map its pages *into this very task*
//!   through a receive window around the fault ([`window`]) — shared file
//!   pages go straight to the faulting address; private copies and zero
//!   pages come from anonymous memory the loader gave it, filled in place
//!   (the file page is read through a scratch window) — and answers with an
//!   empty reply: the mapping is already there;
//! * **`L4Re::Rm`** ([`l4pager::rm::RmService`]): the program may attach,
//!   detach, find and reserve; detaching unmaps;
//! * **exceptions** of the program and invalid accesses (which it answers
//!   with an error, so the kernel raises an exception) and **`L4Re::Parent`
//!   `signal(0, status)`** end the program: it prints the fault statistics
//!   and reports the end to the loader, which deletes the task.
//!
//! Its own page faults go to the loader, the task's external pager. It
//! gets the program's regions from the loader through
//! [`l4pager::task::TaskSetup`] (see there why it asks rather than being
//! told).
#![cfg_attr(not(feature = "host"), no_std)]

extern crate alloc;

pub mod window;

#[cfg(feature = "fiasco")]
mod fiasco;
#[cfg(feature = "fiasco")]
mod itas;
#[cfg(feature = "fiasco")]
mod threads;

/// `L4RE_ELF_AUX_T_KIP_ADDR` (l4re-core `l4re/include/elf_aux.h`).
#[cfg(feature = "fiasco")]
const ELF_AUX_KIP_ADDR: u64 = 4;

/// Where a loader that starts this pager (ned, moe: L4Re's libloader reads
/// the `PT_L4_AUX` program header) maps the KIP into the task, as
/// `l4re_itas` asks (`l4re_elf_aux_mword_t`: type, length, value). Without
/// it the KIP lands where the loader has its own, and the program learns
/// that address from us and puts its children's KIP there: under moe
/// 0x600000, inside a static program larger than 2 MiB linked at 0x400000
/// (seen with ned itself on this pager: its children's data segments
/// collided with it).
#[cfg(feature = "fiasco")]
#[used]
#[unsafe(link_section = ".rol4re_elf_aux")]
static KIP_ADDRESS: [u64; 3] = [ELF_AUX_KIP_ADDR, 24, 0x6fff_f000];
