//! Fiasco's page-fault trampoline (kernel feature `pf_tramp`, l4sys
//! `pf_trampoline.h`): a page fault of a thread that has one set up is not
//! sent to its pager as IPC; the kernel saves the thread's registers into
//! the thread's [`l4_pf_trampoline_t`](TrampolineState) (kernel-user
//! memory) and lets the thread itself continue at the state's `handler_ip`
//! with `rdi` = the state's address and `rsi` = the fault address word of
//! the page-fault protocol (`thread-pf_trampoline-ia32.cpp`). The handler
//! resolves the fault and ends with `pf_trampoline_resume` (the kernel
//! restores the saved registers: the faulting instruction runs again) or
//! `pf_trampoline_reflect` (the fault goes to the thread's exception
//! handler as an exception IPC). A fault while the handler runs goes to the
//! pager as IPC, as without a trampoline.
//!
//! Conventions of this crate, which `l4re_itas`'s `thread_pf_handler` does
//! in C++ (`region.cc`):
//!
//! * `handler_ip` is the entry stub `l4re_rs_pf_trampoline_entry`. It
//!   switches to a stack of the handler's own (`user_data[0]`: so that a
//!   fault on the thread's stack, or a thread near its stack's end, never
//!   runs the handler on unmapped memory), saves the FPU and SSE
//!   registers there (`fxsave64`: compiled Rust uses them) and calls
//!   [`dispatch`], which finds the [`PfHandler`](crate::kobj::PfHandler)
//!   through `user_data[1]` and restores them (`fxrstor64`) before
//!   resuming. A handler that never touches those registers (L4Re builds
//!   `l4re_itas` without FPU) gets the stub
//!   `l4re_rs_pf_trampoline_entry_nofpu`, which saves nothing: with
//!   Fiasco's lazy FPU switching, every FPU instruction of the handler
//!   costs the fault a switch of the FPU's owner when the server it calls
//!   used the FPU last (moe does, on each `map`: two traps per fault,
//!   ~250 instructions, measured in pager-bench).
//! * [`dispatch`] saves the registers of the thread's UTCB a handler's
//!   IPC may change (the interrupted code may be in the middle of writing
//!   a message): the first [`SAVED_MRS`] message registers, the buffer
//!   descriptor and the first [`SAVED_BRS`] buffer registers, the error
//!   register, and this crate's UTCB borrow flag; it calls the handler and
//!   restores them before resuming. `l4re_itas` saves all 124 words; the
//!   handler's calls need 14, and each word is an instruction on every
//!   fault. The contract on handlers is in [`PfHandler`].

use core::arch::global_asm;

use l4_sys as sys;

use super::current_utcb;
use crate::error::{Error, Result};
use crate::kobj::{PfHandler, PfOutcome};
use crate::utcb::Utcb;

/// `l4_pf_trampoline_regs_t` on amd64 (opaque in l4sys but for `pfa` and
/// `ip`); layout checked in `ffi/shims.c`.
#[repr(C)]
struct TrampolineRegs {
    reserved1: [u64; 11],
    pfa: u64,
    reserved2: [u64; 4],
    reserved3: [u64; 2],
    ip: u64,
    reserved4: [u64; 4],
}

/// `l4_pf_trampoline_t`; layout checked in `ffi/shims.c`.
#[repr(C)]
struct TrampolineState {
    handler_ip: u64,
    user_data: [u64; 2],
    saved_mr0: u64,
    flags: u64,
    state: TrampolineRegs,
}

/// Bytes of kernel-user memory a trampoline state takes: one UTCB slot
/// holds it ([`PfTrampolineState::take`](crate::kobj::PfTrampolineState::take)).
pub(crate) const STATE_SIZE: usize = core::mem::size_of::<TrampolineState>();
const _: () = assert!(STATE_SIZE <= sys::L4_UTCB_OFFSET as usize);

/// Message registers saved around a handler.
pub(crate) const SAVED_MRS: usize = 8;
/// Buffer registers saved around a handler (after the buffer descriptor).
pub(crate) const SAVED_BRS: usize = 4;
/// UTCB word of the buffer descriptor register.
const BDR_WORD: usize = sys::L4_UTCB_BUF_REGS_OFFSET as usize / 8;
/// UTCB word of the error register.
const ERROR_WORD: usize = sys::L4_UTCB_THREAD_REGS_OFFSET as usize / 8;

/// The UTCB words a handler's calls may change, saved while it runs.
struct SavedRegs {
    mr: [u64; SAVED_MRS],
    br: [u64; 1 + SAVED_BRS],
    error: u64,
}

impl SavedRegs {
    /// # Safety
    /// `utcb` is the current thread's UTCB, nobody else's in use.
    unsafe fn save(utcb: *const u64) -> Self {
        let mut saved = SavedRegs {
            mr: [0; SAVED_MRS],
            br: [0; 1 + SAVED_BRS],
            error: 0,
        };
        // Word by word, volatile: a block copy would use SSE registers,
        // which an FPU-free handler must not touch (see `prepare`).
        // SAFETY: the caller's guarantee; every index lies below
        // `L4_UTCB_OFFSET` bytes.
        unsafe {
            for (i, w) in saved.mr.iter_mut().enumerate() {
                *w = utcb.add(i).read_volatile();
            }
            for (i, w) in saved.br.iter_mut().enumerate() {
                *w = utcb.add(BDR_WORD + i).read_volatile();
            }
            saved.error = utcb.add(ERROR_WORD).read_volatile();
        }
        saved
    }

    /// # Safety
    /// As for [`save`](Self::save).
    unsafe fn restore(&self, utcb: *mut u64) {
        // SAFETY: as in `save`.
        unsafe {
            for (i, w) in self.mr.iter().enumerate() {
                utcb.add(i).write_volatile(*w);
            }
            for (i, w) in self.br.iter().enumerate() {
                utcb.add(BDR_WORD + i).write_volatile(*w);
            }
            utcb.add(ERROR_WORD).write_volatile(self.error);
        }
    }
}

/// Bytes `fxsave64` writes (16-aligned).
const FXSAVE_BYTES: usize = 512;

// The entry stubs: `rdi` = state, `rsi` = fault address word. They switch
// to the handler stack kept in `user_data[0]` (offset 8) and call
// `dispatch(state, pfa, fpu)`, which never returns.
// `l4re_rs_pf_trampoline_entry` first saves the FPU and SSE registers
// there (`fxsave64`: the interrupted code's, which the kernel leaves in
// place and compiled code uses freely) and passes where; dispatch restores
// them. `l4re_rs_pf_trampoline_entry_nofpu` (handlers that never touch
// those registers, as L4Re builds l4re_itas without FPU) passes null.
global_asm!(
    ".globl l4re_rs_pf_trampoline_entry",
    ".type l4re_rs_pf_trampoline_entry, @function",
    "l4re_rs_pf_trampoline_entry:",
    "mov rsp, [rdi + 8]",
    "and rsp, -16",
    "sub rsp, {fxsave}",
    "fxsave64 [rsp]",
    "mov rdx, rsp",
    "cld",
    "call {dispatch}",
    "ud2",
    ".globl l4re_rs_pf_trampoline_entry_nofpu",
    ".type l4re_rs_pf_trampoline_entry_nofpu, @function",
    "l4re_rs_pf_trampoline_entry_nofpu:",
    "mov rsp, [rdi + 8]",
    "and rsp, -16",
    "xor edx, edx",
    "cld",
    "call {dispatch}",
    "ud2",
    dispatch = sym dispatch,
    fxsave = const FXSAVE_BYTES,
);

unsafe extern "C" {
    fn l4re_rs_pf_trampoline_entry();
    fn l4re_rs_pf_trampoline_entry_nofpu();
}

/// Whether the entry stub saves the interrupted code's FPU and SSE
/// registers around the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FpuUse {
    /// The handler may use them: saved and restored (`fxsave64`).
    Saved,
    /// The handler never touches them: nothing is saved, so a fault costs
    /// the FPU nothing (no lazy-FPU switch by the kernel).
    None,
}

/// The address of the entry stub for `fpu`: what `handler_ip` holds.
pub(crate) fn entry(fpu: FpuUse) -> u64 {
    match fpu {
        FpuUse::Saved => l4re_rs_pf_trampoline_entry as *const () as u64,
        FpuUse::None => l4re_rs_pf_trampoline_entry_nofpu as *const () as u64,
    }
}

/// Runs the handler for one trampoline fault and resumes the thread.
///
/// # Safety
///
/// Called only by an entry stub, on the handler stack, with the state the
/// kernel handed over, whose `user_data[1]` [`prepare`] set, and the
/// interrupted code's FPU and SSE registers at `fpu` (null: not saved; the
/// handler does not touch them).
///
/// Uses no FPU or SSE register itself (word-by-word copies).
unsafe extern "C" fn dispatch(state: *const TrampolineState, pfa: u64, fpu: *const u8) -> ! {
    // SAFETY: `state` is this thread's trampoline state (kernel-user
    // memory, mapped for the task's life); `user_data[1]` points to the
    // handler reference `prepare` leaked, which lives for ever.
    let (handler, ip): (&'static dyn PfHandler, u64) = unsafe {
        let s = &*state;
        (
            *(s.user_data[1] as *const &'static dyn PfHandler),
            s.state.ip,
        )
    };
    let (regs, flag) = current_utcb();
    let utcb = regs as *mut u64;
    // SAFETY: the UTCB is this thread's; `flag` is this thread's borrow
    // flag. The interrupted code cannot run until we resume it, so nothing
    // else uses either.
    let (saved, borrowed) = unsafe { (SavedRegs::save(utcb), (*flag).replace(false)) };
    let outcome = handler.page_fault(pfa, ip);
    // SAFETY: as above; `fpu`, if not null, is what the stub's `fxsave64`
    // wrote. No code that uses FPU or SSE registers runs after the
    // restore: the resume call below only stores a word and enters the
    // kernel.
    unsafe {
        saved.restore(utcb);
        (*flag).set(borrowed);
    }
    if !fpu.is_null() {
        // SAFETY: as above.
        unsafe {
            core::arch::asm!(
                "fxrstor64 [{}]",
                in(reg) fpu,
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
                options(nostack, readonly, preserves_flags),
            );
        }
    }
    // The kernel puts MR0 back itself (`saved_mr0`); the other registers
    // the calls below write are the ones restored above but MR0.
    let invalid = sys::L4_INVALID_CAP as sys::l4_cap_idx_t;
    // SAFETY: the invalid capability names the invoking thread ("self"):
    // the kernel resumes it from the saved state, or raises the exception;
    // `state` is this thread's trampoline state (as above).
    unsafe {
        match outcome {
            PfOutcome::Resolved => sys::l4_thread_pf_trampoline_resume(invalid),
            PfOutcome::ResumeAt(ip) => {
                // The kernel resumes from the state it saved, ours to
                // change while the fault is in progress.
                (*(state as *mut TrampolineState)).state.ip = ip;
                sys::l4_thread_pf_trampoline_resume(invalid)
            }
            PfOutcome::Reflect => sys::l4_thread_pf_trampoline_reflect(invalid),
        };
    }
    // Only an invalid state gets here (the kernel refuses resume when no
    // trampoline fault is in progress): nothing to go back to.
    super::sleep_forever()
}

/// Writes the trampoline state at `state` (kernel-user memory of this
/// task, [`STATE_SIZE`] bytes, 16-aligned, not in use by the kernel yet):
/// `handler` running on the stack that ends at `stack_top`, with the entry
/// stub for `fpu`.
pub(crate) fn prepare(
    state: u64,
    stack_top: u64,
    handler: &'static dyn PfHandler,
    fpu: FpuUse,
) -> Result<()> {
    if state & 15 != 0 || state == 0 {
        return Err(Error::Inval);
    }
    let handler: &'static &'static dyn PfHandler =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(handler));
    let s = state as *mut TrampolineState;
    // SAFETY: the caller hands us `STATE_SIZE` bytes of kernel-user
    // memory at `state`, not yet in use by the kernel.
    unsafe {
        core::ptr::write(
            s,
            TrampolineState {
                handler_ip: entry(fpu),
                user_data: [stack_top, handler as *const _ as u64],
                saved_mr0: 0,
                flags: 0,
                state: core::mem::zeroed(),
            },
        );
    }
    Ok(())
}

/// Lets `thread` take its faults through the state at `state`, prepared
/// in the thread's task (`l4_thread_pf_trampoline_setup`).
pub(crate) fn enable(thread: sys::l4_cap_idx_t, state: u64) -> Result<()> {
    Utcb::with(|_| {
        // SAFETY: the borrow makes us the UTCB's only user; the kernel
        // checks that `state` is kernel-user memory of the thread's task.
        super::l4_result(unsafe { sys::l4_thread_pf_trampoline_setup(thread, state as _) })
    })
}
