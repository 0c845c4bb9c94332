//! The page-fault protocol (`L4_PROTO_PAGE_FAULT`, -2), spoken by the kernel
//! on behalf of a faulting thread to its pager.
//!
//! The request has no opcode: two words, `pfa` (fault address with bit 1 set
//! for a write and bit 2 for an instruction fetch; `(pfa & !7) | W(2) |
//! X(4)`) and the faulting `pc`. A reply with label >= 0 resolves the fault;
//! its memory items are mapped into the faulting task (the kernel's receive
//! window is the whole address space). A negative label turns the fault into
//! an exception for the thread's exception handler.

use crate::fpage::{RcvBuf, SndFpage};
use crate::protocol;

/// `L4_PROTO_PAGE_FAULT`.
pub const LABEL: i64 = -2;

/// `L4_PROTO_EXCEPTION`: what the kernel sends a thread's exception
/// handler (the thread's registers, `l4_exc_regs_t`, in the message
/// registers), also after a page fault answered with a negative label.
pub const EXCEPTION_LABEL: i64 = -5;

/// Bit of `pfa` set for a write access.
pub const PFA_WRITE: u64 = 2;
/// Bit of `pfa` set for an instruction fetch.
pub const PFA_EXEC: u64 = 4;

/// A decoded fault address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The faulting address (low three bits cleared).
    pub addr: u64,
    /// Whether it was a write.
    pub write: bool,
    /// Whether it was an instruction fetch.
    pub exec: bool,
}

impl Fault {
    /// Decodes the `pfa` word.
    pub const fn from_pfa(pfa: u64) -> Self {
        Fault {
            addr: pfa & !7,
            write: pfa & PFA_WRITE != 0,
            exec: pfa & PFA_EXEC != 0,
        }
    }

    /// Encodes the `pfa` word.
    pub const fn pfa(self) -> u64 {
        (self.addr & !7)
            | if self.write { PFA_WRITE } else { 0 }
            | if self.exec { PFA_EXEC } else { 0 }
    }
}

protocol! {
    /// What a pager answers.
    pub protocol PageFault: client PageFaultClient, server PageFaultServer, label -2, opcode none {
        /// Resolves a fault at `pfa` (see [`Fault`]) raised at `pc`; the
        /// reply carries the mapping, if any.
        0 => fn page_fault(pfa: u64, pc: u64) buffers(window: RcvBuf) -> Option<SndFpage>;
    }
}
