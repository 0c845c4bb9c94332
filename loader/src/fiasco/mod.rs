//! The Fiasco.OC realization of the loader: `ext-loader`, which starts
//! static x86-64 programs from l4fs in new tasks and pages them, as their
//! external pager or through an internal pager it loads into each task.
//!
//! Usage (ned): `rom/ext-loader [--tap] [--sequential] ([--inpager=PATH]
//! [--attach=...]... PATH)...` with the l4fs gate as `"fs"` ([`options`]).
//! Every PATH is looked up in l4fs (`L4Re::Namespace` query → a
//! `L4Re::Dataspace`), attached read-only here and validated with
//! [`crate::elf::plan`]; a file that is not a static x86-64 program is
//! refused with the reason ([`LoaderError`]) and the loader goes on with
//! the next. For a valid one it creates, through the typed kernel objects
//! of [`l4re::kobj`] ([`task`]):
//!
//! 1. a task (UTCB area of one page at [`UTCB_AREA`]), an IPC gate bound to
//!    this thread with a label of its own, mapped into the task at
//!    [`CHILD_PAGER_SLOT`], the log capability ([`CHILD_LOG_SLOT`]) and the
//!    task's own capability ([`CHILD_TASK_SLOT`]);
//! 2. a thread whose pager and exception handler are the gate's slot *in
//!    the new task* (the kernel looks them up in the faulting thread's
//!    task), bound to the task with its UTCB at [`UTCB_AREA`] (the kernel
//!    points the thread's gs base at the UTCB pointer, so `l4_utcb()`
//!    works in the program), started at the entry with sp = [`STACK_TOP`].
//!
//! Each task's gate is an object of the loader's [`l4re::server::Server`]
//! ([`ext_loader`]): a page fault (`L4_PROTO_PAGE_FAULT`) is resolved with
//! the program's region map (its ELF segments and a stack) and
//! [`l4pager::fault::resolve`]; the loader fills a page of its pool (a
//! copy of the file page, or zeros) and answers with a map item of it. An
//! invalid access or an exception ends the task with a report; a program
//! exits with `L4Re::Parent` `signal(0, status)`. Neither is answered: the
//! loader deletes the task and prints its fault statistics
//! ([`check::FaultStats`]). When no program is left it prints a summary
//! (and with `--tap` the checks of [`check`]) and exits.
//!
//! `--inpager=PATH` makes the programs after it run under the internal
//! pager (the freestanding program PATH, crate `l4re-inpager`). For each,
//! the loader creates the task with two gates: `"server"` (slot
//! [`CHILD_PAGER_SLOT`], bound at creation to the internal pager's thread,
//! label [`l4pager::task::SERVER_LABEL`]) and one bound to this thread
//! (slot [`INPAGER_PAGER_SLOT`]: the internal pager's pager, exception
//! handler and parent). It loads the internal pager like any program (an
//! L4Re initial stack with its `l4re_env_t`, served from the pool on
//! fault) and starts its thread. The internal pager pulls the program's
//! regions and an anonymous-memory dataspace through
//! [`l4pager::task::TaskSetup`] and says `ready`; only then does the
//! loader start the program's thread with `"server"` as its pager and
//! exception handler. The internal pager reports the end with the
//! program's fault statistics; the loader deletes the task.
//!
//! [`options`] and [`check`] are ordinary shared code, built and tested on
//! the host too; [`task`] and [`ext_loader`] need the feature `fiasco`.

pub mod check;
pub mod options;

#[cfg(feature = "fiasco")]
pub mod ext_loader;
#[cfg(feature = "fiasco")]
pub mod task;

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

use l4re::Error;

use crate::elf::ElfError;
use crate::l4re_start::StartError;
use crate::layout::LayoutError;

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

/// Where the loaded task's UTCB area lies (one page: the internal pager's
/// UTCB and the program's; [`L4RE_UTCB_LOG2`] for an ordinary L4Re
/// program, whose threads take theirs from it).
pub const UTCB_AREA: u64 = 0x7ff0_0000;
/// log2 of the UTCB area of a task running an ordinary L4Re program
/// (`--l4re`): 64 KiB, 64 threads.
pub const L4RE_UTCB_LOG2: u8 = 16;
/// Slots of an ordinary L4Re program's environment the loader maps into
/// its task (`--l4re`), as L4Re's `Remote_app_std_caps` numbers them:
/// the factory, the scheduler, the memory allocator; the namespace `fs`
/// the program came from and the capabilities handed on follow.
pub mod l4re_slots {
    /// The factory (also `l4re::env::env().factory()`).
    pub const FACTORY: u64 = 2;
    /// The program's thread (its `main_thread`) when the loader pages it.
    pub const THREAD: u64 = 3;
    /// The scheduler.
    pub const SCHEDULER: u64 = 7;
    /// The memory allocator.
    pub const MEM_ALLOC: u64 = 0x11;
    /// The namespace `fs` (l4fs).
    pub const FS: u64 = 0x20;
    /// The first of the capabilities handed on with `--cap`.
    pub const HANDED_ON: u64 = 0x21;
    /// Most capabilities handed on.
    pub const MAX_HANDED_ON: usize = 16;
}
/// Where the program's UTCB lies under an internal pager (after the
/// internal pager's, which is first in the area).
pub const PROGRAM_UTCB: u64 = UTCB_AREA + crate::l4re_start::UTCB_OFFSET;
/// Where the internal pager puts the page-fault trampoline state of the
/// program's thread (the UTCB slot after the program's: the first free one
/// of the pager's environment), which `TaskSetup::ready` names.
pub const PROGRAM_PF_TRAMPOLINE: u64 = PROGRAM_UTCB + crate::l4re_start::UTCB_OFFSET;
/// Top of the loaded program's stack (the initial stack pointer).
pub const STACK_TOP: u64 = 0x7fe0_0000;
/// Size of the stack region.
pub const STACK_SIZE: u64 = 256 << 10;
/// Load address of a static-pie program.
pub const PIE_BASE: u64 = 0x0040_0000;
/// Pages of the loader's memory pool from which faults are answered.
pub const POOL_PAGES: u64 = 1024;
/// Anonymous memory given to an internal pager (its program's zero-fill
/// and private pages).
pub const ANON_SIZE: u64 = 8 << 20;

/// Why a program was not loaded (or its task not set up).
#[derive(Debug, Clone, PartialEq)]
pub enum LoaderError {
    /// A kernel or L4Re call failed: what was being done, and the error.
    Call(&'static str, Error),
    /// A name was not found (in l4fs, the namespace `"rom"`, the
    /// environment).
    NotFound(String, Option<Error>),
    /// A dataspace that cannot serve: what it is, and why.
    Unusable(String, &'static str),
    /// The file is not a program the loader runs.
    Elf(ElfError),
    /// A region of the program does not fit into its region map.
    Layout(LayoutError),
    /// A region of the program lies where the loader needs room.
    Overlap(String),
    /// The internal pager's initial stack cannot be built.
    Stack(StartError),
    /// While loading or attaching the first part: the error.
    In(String, Box<LoaderError>),
}

impl LoaderError {
    /// This error, said of `what` (a path, an `--attach`).
    pub fn of(self, what: &str) -> Self {
        LoaderError::In(what.into(), Box::new(self))
    }
}

impl fmt::Display for LoaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoaderError::Call(what, e) => write!(f, "{what}: {e}"),
            LoaderError::NotFound(name, None) => write!(f, "{name} not found"),
            LoaderError::NotFound(name, Some(e)) => write!(f, "{name} not found ({e})"),
            LoaderError::Unusable(what, why) => write!(f, "{what}: {why}"),
            LoaderError::Elf(e) => write!(f, "refused: {e}"),
            LoaderError::Layout(e) => write!(f, "refused: {e}"),
            LoaderError::Overlap(why) => write!(f, "refused: {why}"),
            LoaderError::Stack(e) => write!(f, "internal pager stack: {e:?}"),
            LoaderError::In(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl From<ElfError> for LoaderError {
    fn from(e: ElfError) -> Self {
        LoaderError::Elf(e)
    }
}

impl From<LayoutError> for LoaderError {
    fn from(e: LayoutError) -> Self {
        LoaderError::Layout(e)
    }
}

/// `map_err` for a failed call: `.map_err(call("create task"))`.
pub fn call(what: &'static str) -> impl FnOnce(Error) -> LoaderError {
    move |e| LoaderError::Call(what, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_failed() {
        let e = LoaderError::Call("create task", Error::NoMem).of("bin/a");
        assert_eq!(
            e.to_string(),
            alloc::format!("bin/a: create task: {}", Error::NoMem)
        );
        let e = LoaderError::from(ElfError::NotElf).of("bin/notelf");
        assert_eq!(
            e.to_string(),
            "bin/notelf: refused: not an ELF file (bad magic)"
        );
    }
}
