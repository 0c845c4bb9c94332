//! The user thread control block: message, buffer and thread control
//! registers.
//!
//! Every thread has one UTCB. A message is written into its message
//! registers before an IPC and read from them after; receive buffers are
//! announced in its buffer registers; the kernel leaves the IPC error code in
//! a thread control register. On Fiasco the UTCB is memory the kernel shares
//! with the thread; on the host it is a per-thread block owned by this crate.
//!
//! Access is only through [`Utcb::with`], which hands out a unique borrow for
//! the length of a closure: a second, nested borrow on the same thread panics
//! instead of aliasing the registers (the mistake the C API makes easy).

use core::cell::Cell;

/// `L4_UTCB_GENERIC_DATA_SIZE` on amd64: number of message registers.
pub const MR_WORDS: usize = 63;
/// Bytes available in the message registers.
pub const MR_BYTES: usize = MR_WORDS * 8;
/// `L4_UTCB_GENERIC_BUFFERS_SIZE` on amd64: number of buffer registers.
pub const BR_WORDS: usize = 58;

/// The registers of a UTCB as this crate sees them, laid out as Fiasco's
/// amd64 UTCB is: `l4_msg_regs_t`, a reserved word, `l4_buf_regs_t` at
/// `L4_UTCB_BUF_REGS_OFFSET` and the error register at
/// `L4_UTCB_THREAD_REGS_OFFSET` (checked by the Fiasco platform), so that
/// one pointer reaches every register.
#[repr(C)]
pub struct UtcbRegs {
    /// Message registers.
    pub mr: [u64; MR_WORDS],
    /// The word between the message and the buffer registers.
    pub reserved: u64,
    /// Buffer descriptor register (`bdr`).
    pub bdr: u64,
    /// Buffer registers.
    pub br: [u64; BR_WORDS],
    /// The IPC error code of the last failed IPC (`l4_thread_regs_t::error`).
    pub error: u64,
}

impl UtcbRegs {
    /// A zeroed register block.
    pub const fn new() -> Self {
        UtcbRegs {
            mr: [0; MR_WORDS],
            reserved: 0,
            bdr: 0,
            br: [0; BR_WORDS],
            error: 0,
        }
    }
}

impl Default for UtcbRegs {
    fn default() -> Self {
        Self::new()
    }
}

/// A unique borrow of the current thread's UTCB.
pub struct Utcb {
    regs: *mut UtcbRegs,
}

impl Utcb {
    /// Runs `f` with the current thread's UTCB.
    ///
    /// # Panics
    ///
    /// If the UTCB is already borrowed on this thread (a nested `with`):
    /// decode what you need, return from the closure, and only then make
    /// another call.
    pub fn with<R>(f: impl FnOnce(&mut Utcb) -> R) -> R {
        let (regs, flag) = crate::platform::current_utcb();
        // SAFETY: the platform returns a flag that lives as long as the
        // current thread, and we use it only during this call.
        let flag: &Cell<bool> = unsafe { &*flag };
        assert!(
            !flag.get(),
            "UTCB borrowed twice on one thread (nested Utcb::with)"
        );
        flag.set(true);
        struct Release<'a>(&'a Cell<bool>);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _release = Release(flag);
        // `platform::current_utcb` returns this thread's registers, valid
        // for the thread's lifetime; the borrow flag just set guarantees no
        // other `Utcb` exists on this thread, and no other thread uses this
        // thread's UTCB.
        let mut utcb = Utcb { regs };
        f(&mut utcb)
    }

    /// Wraps a register block that is not a thread's UTCB (for tests,
    /// fuzzing and the host platform's message transport).
    pub fn from_regs<R>(regs: &mut UtcbRegs, f: impl FnOnce(&mut Utcb) -> R) -> R {
        let mut utcb = Utcb { regs };
        f(&mut utcb)
    }

    /// The message registers.
    pub fn mr(&mut self) -> &mut [u64; MR_WORDS] {
        // SAFETY: the pointer is valid (see `with`/`from_regs`) and `&mut self`
        // makes this the only reference derived from it.
        unsafe { &mut (*self.regs).mr }
    }

    /// The message registers, to read.
    pub fn mr_ref(&self) -> &[u64; MR_WORDS] {
        // SAFETY: the pointer is valid (see `with`/`from_regs`); the shared
        // borrow of `self` keeps every `&mut` derived from it away.
        unsafe { &(*self.regs).mr }
    }

    /// The buffer registers.
    pub fn br(&mut self) -> &mut [u64; BR_WORDS] {
        // SAFETY: as for `mr`.
        unsafe { &mut (*self.regs).br }
    }

    /// The buffer descriptor register.
    pub fn bdr(&mut self) -> &mut u64 {
        // SAFETY: as for `mr`.
        unsafe { &mut (*self.regs).bdr }
    }

    /// The error register (kernel IPC error code of the last failed IPC).
    pub fn error(&mut self) -> &mut u64 {
        // SAFETY: as for `mr`.
        unsafe { &mut (*self.regs).error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "UTCB borrowed twice")]
    fn nested_borrow_panics() {
        Utcb::with(|_| Utcb::with(|_| ()));
    }

    #[test]
    fn sequential_borrows_see_the_same_registers() {
        Utcb::with(|u| u.mr()[3] = 0xabc);
        assert_eq!(Utcb::with(|u| u.mr()[3]), 0xabc);
    }
}
