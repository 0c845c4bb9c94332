//! Between a loader and the internal pager of a task it creates on Fiasco:
//! the pager pulls the task's regions from the loader, says when it serves,
//! and reports how the program ended.
//!
//! On Fiasco the loader is the *external* pager of the internal pager (it
//! answers the internal pager's own page faults from its memory). A loader
//! blocked in a call to the internal pager (say an `L4Re::Rm` attach) could
//! not answer the faults the internal pager takes while serving that very
//! call, so the direction is reversed: the internal pager is the client and
//! asks for its setup ([`TaskSetup`]); the loader's single pager loop serves
//! these calls between page faults. (On the Linux host the kernel pages the
//! internal pager, and the loader attaches the regions through `L4Re::Rm`.)
//!
//! Once set up, the internal pager serves `L4Re::Rm` (the program may
//! attach and detach at will), page faults and the program's exceptions
//! and `L4Re::Parent` exit on the task's gate `"server"`, and the loader
//! hears from it only at the end ([`TaskSetupClient::ended`]).

use alloc::string::String;

use l4re::fpage::{RcvBuf, SndFpage};
use l4re::protocol;

/// Protocol label of [`TaskSetup`].
pub const LABEL: i64 = 0x4F11;

/// Label of the gate `"server"`: the loader creates it bound to the
/// internal pager's thread with this label.
pub const SERVER_LABEL: u64 = 0x10;

/// Exit status the internal pager reports for a program it ended because
/// of an invalid access or an exception (the report is in its log).
pub const STATUS_KILLED: i64 = -14;

l4re::wire_struct! {
    /// A region of the program, as [`crate::rm::RmService::attach_region`]
    /// takes it.
    pub struct RegionInfo {
        /// Start address.
        pub start: u64,
        /// Size in bytes (page multiple).
        pub size: u64,
        /// `L4Re::Rm` flags (rights, `PRIVATE`; no dataspace means
        /// anonymous memory).
        pub flags: l4re::proto::rm::Flags,
        /// Offset in the dataspace.
        pub offset: u64,
        /// Bytes of the region that come from the dataspace (the rest of a
        /// private region is zero: `.bss` after `.data`).
        pub file_len: u64,
    }
}

l4re::wire_struct! {
    /// What the internal pager did for one program.
    pub struct PagerStats {
        /// Page faults received.
        pub faults: u64,
        /// Faults resolved by mapping a dataspace's pages (shared).
        pub shared: u64,
        /// Pages those mappings brought (a large flexpage brings many).
        pub shared_pages: u64,
        /// Faults resolved with a private copy of a dataspace page.
        pub copied: u64,
        /// Faults resolved with a zero-filled page.
        pub zero: u64,
        /// Invalid accesses (the program was ended).
        pub invalid: u64,
        /// `L4Re::Rm` requests served.
        pub rm_requests: u64,
        /// Pages of anonymous memory in use.
        pub anon_pages: u64,
        /// Faults the faulting thread resolved itself, through the
        /// kernel's page-fault trampoline (counted in `faults` too).
        pub in_thread: u64,
    }
}

protocol! {
    /// The internal pager's calls to its loader.
    pub protocol TaskSetup: client TaskSetupClient, server TaskSetupServer, label 0x4F11, opcode i32 {
        /// Region `index` of the program (its dataspace, if any, arrives
        /// in `ds`) and its name; `Error::NoEnt` past the last one.
        0 => fn region(index: u64) buffers(ds: RcvBuf) -> (RegionInfo, Option<SndFpage>, String);
        /// Anonymous memory for zero-fill and private copies: a dataspace
        /// (in `ds`) and its size.
        1 => fn memory() buffers(ds: RcvBuf) -> (u64, SndFpage);
        /// The pager is bound to the gate and serves: start the program.
        /// `pf_trampoline` (0: none) is the address of a page-fault
        /// trampoline state the pager prepared in the task for the
        /// program's thread (`l4re::kobj::PfTrampolineState::prepare`):
        /// the loader enables it before the thread runs.
        2 => fn ready(pf_trampoline: u64) -> ();
        /// The program ended with `status` ([`STATUS_KILLED`] if the pager
        /// ended it), `why` in words ("exited with status 0", "invalid
        /// access: …", "exception: trap …"). The loader deletes the task;
        /// the call never returns.
        3 => fn ended(status: i64, stats: PagerStats, why: &str) -> ();
    }
}

impl PagerStats {
    /// One line for the log.
    pub fn line(&self) -> String {
        alloc::format!(
            "{} faults: {} shared ({} pages), {} private copies, {} zero-filled, {} invalid; {} Rm requests, {} anonymous pages; {} in the faulting thread",
            self.faults,
            self.shared,
            self.shared_pages,
            self.copied,
            self.zero,
            self.invalid,
            self.rm_requests,
            self.anon_pages,
            self.in_thread
        )
    }
}

/// Where a loader places the internal pager in a task on Fiasco (the
/// program's regions must stay out of `[BASE, END)`, which the loader
/// reserves in the task's region map).
pub mod layout {
    /// Link address of the internal pager (`-Ttext-segment`).
    pub const BASE: u64 = 0x6000_0000;
    /// Top of the internal pager's stack.
    pub const STACK_TOP: u64 = 0x6fe0_0000;
    /// Size of its stack.
    pub const STACK_SIZE: u64 = 64 << 10;
    /// A page where it receives a dataspace page to copy from.
    pub const SCRATCH: u64 = 0x6ff0_0000;
    /// End of its range.
    pub const END: u64 = 0x7000_0000;
}
