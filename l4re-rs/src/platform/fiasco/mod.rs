//! The Fiasco.OC platform: the shared code's operations mapped onto the
//! kernel's and L4Re's C API through the raw `l4-sys` bindings.
//!
//! Most of that API is `static inline` in the headers; `l4-sys` gives those
//! functions real symbols (bindgen's `wrap_static_fns`, compiled by `cc`),
//! so everything here is a direct call.

use core::cell::Cell;
use core::ffi::c_char;

use l4_sys as sys;

pub(crate) mod kobj;
pub mod mem;
pub(crate) mod pf_trampoline;

use crate::cap::CapIdx;
use crate::error::{Error, IpcError, Result};
use crate::ipc::{Received, Timeout};
use crate::msg::MsgTag;
use crate::utcb::{BR_WORDS, MR_WORDS, Utcb, UtcbRegs};

unsafe extern "C" {
    /// A thread-local flag in `ffi/shims.c` (C `__thread`, L4Re's libc
    /// provides TLS): whether the thread's UTCB is borrowed by `Utcb::with`.
    /// The UTCB's user TCR words are all taken by L4Re's pthread library.
    fn l4re_rs_utcb_borrow_flag() -> *mut u8;
}

/// This thread's UTCB (`l4_utcb`). On amd64 it is what l4sys's
/// `l4_utcb_direct` reads, the first word of the `gs` segment, read here
/// without a call: every IPC and every trampoline fault needs it.
#[inline(always)]
pub(crate) fn utcb() -> *mut sys::l4_utcb_t {
    #[cfg(target_arch = "x86_64")]
    {
        let u: *mut sys::l4_utcb_t;
        // SAFETY: Fiasco points `gs` of every thread of an amd64 task at a
        // word holding the thread's UTCB address (l4sys
        // `ARCH-amd64/arch/utcb.h`); reading it has no side effect.
        unsafe {
            core::arch::asm!("mov {}, gs:[0]", out(reg) u, options(nostack, readonly, preserves_flags));
        }
        u
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: `l4_utcb` only reads the thread's UTCB pointer.
        unsafe { sys::l4_utcb() }
    }
}

/// This thread's registers and UTCB borrow flag.
pub(crate) fn current_utcb() -> (*mut UtcbRegs, *const Cell<bool>) {
    // `UtcbRegs` is laid out as the UTCB's registers are (checked below):
    // `l4_utcb_mr_u`, `l4_utcb_br_u` and `l4_utcb_tcr_u` are offsets from
    // the UTCB, computed without calls (they are on every IPC's path).
    // SAFETY: the C flag is this thread's (TLS, or its UTCB slot's),
    // zero-initialised; a `Cell<bool>` has the layout of a `bool`.
    let flag = unsafe { l4re_rs_utcb_borrow_flag() };
    (utcb() as *mut UtcbRegs, flag as *const Cell<bool>)
}

// The UTCB's register blocks where `UtcbRegs` has them.
const _: () = {
    assert!(core::mem::offset_of!(UtcbRegs, mr) == sys::L4_UTCB_MSG_REGS_OFFSET as usize);
    assert!(core::mem::offset_of!(UtcbRegs, bdr) == sys::L4_UTCB_BUF_REGS_OFFSET as usize);
    assert!(core::mem::offset_of!(UtcbRegs, br) == sys::L4_UTCB_BUF_REGS_OFFSET as usize + 8);
    assert!(core::mem::offset_of!(UtcbRegs, error) == sys::L4_UTCB_THREAD_REGS_OFFSET as usize);
    assert!(MR_WORDS == sys::L4_UTCB_GENERIC_DATA_SIZE as usize);
    assert!(BR_WORDS == sys::L4_UTCB_GENERIC_BUFFERS_SIZE as usize);
};

fn timeout(t: Timeout) -> sys::l4_timeout_t {
    match t {
        // L4_IPC_NEVER.
        Timeout::Never => sys::l4_timeout_t { raw: 0 },
        // L4_IPC_BOTH_TIMEOUT_0.
        Timeout::Zero => sys::l4_timeout_t { raw: 0x0400_0400 },
        Timeout::Micros(us) => {
            // SAFETY: pure computations on values.
            unsafe {
                let rel = sys::l4_timeout_from_us(us);
                sys::l4_timeout(rel, rel)
            }
        }
    }
}

fn tag_in(t: MsgTag) -> sys::l4_msgtag_t {
    sys::l4_msgtag_t { raw: t.0 as _ }
}

fn check(t: sys::l4_msgtag_t) -> core::result::Result<MsgTag, IpcError> {
    let tag = MsgTag(t.raw as u64);
    if tag.has_error() {
        // SAFETY: reads this thread's UTCB error register.
        let code = unsafe { sys::l4_ipc_error(t, utcb()) };
        Err(IpcError::from_raw(code as u64))
    } else {
        Ok(tag)
    }
}

pub(crate) fn ipc_call(
    dest: CapIdx,
    _: &mut Utcb,
    tag: MsgTag,
    to: Timeout,
) -> core::result::Result<MsgTag, IpcError> {
    // SAFETY: the message is in this thread's UTCB (the `&mut Utcb` proves
    // nobody else uses it); the kernel validates the capability.
    check(unsafe { sys::l4_ipc_call(dest.0 as _, utcb(), tag_in(tag), timeout(to)) })
}

pub(crate) fn ipc_send(
    dest: CapIdx,
    _: &mut Utcb,
    tag: MsgTag,
    to: Timeout,
) -> core::result::Result<(), IpcError> {
    // SAFETY: as for `ipc_call`.
    check(unsafe { sys::l4_ipc_send(dest.0 as _, utcb(), tag_in(tag), timeout(to)) }).map(|_| ())
}

pub(crate) fn ipc_wait(_: &mut Utcb, to: Timeout) -> core::result::Result<Received, IpcError> {
    let mut label: sys::l4_umword_t = 0;
    // SAFETY: as for `ipc_call`; `label` is a valid out-pointer.
    let t = check(unsafe { sys::l4_ipc_wait(utcb(), &mut label, timeout(to)) })?;
    Ok(Received {
        tag: t,
        label: label as u64,
    })
}

pub(crate) fn ipc_reply_and_wait(
    _: &mut Utcb,
    reply: MsgTag,
    to: Timeout,
) -> core::result::Result<Received, IpcError> {
    let mut label: sys::l4_umword_t = 0;
    // SAFETY: as for `ipc_wait`.
    let t = check(unsafe {
        sys::l4_ipc_reply_and_wait(utcb(), tag_in(reply), &mut label, timeout(to))
    })?;
    Ok(Received {
        tag: t,
        label: label as u64,
    })
}

pub(crate) fn ipc_reply(_: &mut Utcb, reply: MsgTag) -> core::result::Result<(), IpcError> {
    // SAFETY: as for `ipc_call`. `l4_ipc_reply` with `L4_INVALID_CAP`
    // replies through the thread's implicit reply capability (that of the
    // last received call); the send must not block.
    check(unsafe {
        sys::l4_ipc_reply(
            sys::L4_INVALID_CAP,
            utcb(),
            tag_in(reply),
            timeout(Timeout::Zero),
        )
    })
    .map(|_| ())
}

pub(crate) fn cap_alloc() -> Result<CapIdx> {
    // SAFETY: L4Re's capability allocator is thread-safe.
    let idx = CapIdx(unsafe { sys::l4re_util_cap_alloc() } as u64);
    if idx.is_valid() {
        Ok(idx)
    } else {
        Err(Error::NoMem)
    }
}

pub(crate) fn cap_free(idx: CapIdx) {
    // SAFETY: returns a slot we own to L4Re's allocator.
    unsafe { sys::l4re_util_cap_free(idx.0 as _) }
}

pub(crate) fn cap_release(idx: CapIdx) {
    // SAFETY: unmaps the capability from our own task; the kernel checks it.
    unsafe {
        sys::l4_task_release_cap(crate::cap::well_known::TASK.0 as _, idx.0 as _);
    }
}

fn l4_result(t: sys::l4_msgtag_t) -> Result<()> {
    match check(t) {
        Err(e) => Err(Error::Ipc(e)),
        Ok(tag) if tag.label() < 0 => Err(Error::from_code(tag.label())),
        Ok(_) => Ok(()),
    }
}

pub(crate) fn create_gate(target: CapIdx, thread: Option<CapIdx>, label: u64) -> Result<()> {
    let thread = thread.unwrap_or(CapIdx::INVALID);
    // SAFETY: a kernel invocation with capability indices and a label.
    l4_result(unsafe {
        sys::l4_factory_create_gate(
            crate::cap::well_known::FACTORY.0 as _,
            target.0 as _,
            thread.0 as _,
            label as _,
        )
    })
}

pub(crate) fn gate_bind_thread(gate: CapIdx, thread: CapIdx, label: u64) -> Result<()> {
    // SAFETY: a kernel invocation with capability indices and a label.
    l4_result(unsafe { sys::l4_ipc_gate_bind_thread(gate.0 as _, thread.0 as _, label as _) })
}

pub(crate) fn thread_set_pager(thread: CapIdx, pager: CapIdx) -> Result<()> {
    // The thread-control calls write this thread's message registers: hold
    // the UTCB borrow while they do.
    Utcb::with(|_| {
        // SAFETY: the borrow above makes us the only user of the UTCB; the
        // kernel checks the capabilities.
        l4_result(unsafe {
            sys::l4_thread_control_start();
            sys::l4_thread_control_pager(pager.0 as _);
            sys::l4_thread_control_commit(thread.0 as _)
        })
    })
}

pub(crate) fn env_get_cap(name: &str) -> Option<CapIdx> {
    let mut buf = [0u8; 64];
    if name.len() >= buf.len() || name.as_bytes().contains(&0) {
        return None;
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `buf` is NUL-terminated; the environment is set up by the
    // loader before `main` and never changes.
    let idx = CapIdx(unsafe { sys::l4re_env_get_cap(buf.as_ptr() as *const c_char) } as u64);
    idx.is_valid().then_some(idx)
}

pub(crate) fn log_write(text: &str) {
    // SAFETY: the environment pointer is valid for the program's life.
    let log = unsafe { (*sys::l4re_env()).log };
    // The newline goes out in the same write as the end of the text: the
    // log server interleaves the writes of different programs, and a
    // separate newline write lets another program's line land in the
    // middle of ours (which breaks TAP parsing in L4Re's harness).
    const MAX: usize = sys::L4_VCON_WRITE_SIZE as usize;
    let mut buf = [0u8; MAX];
    let mut rest = text.as_bytes();
    loop {
        let n = rest.len().min(MAX);
        let (chunk, tail) = rest.split_at(n);
        let len = if tail.is_empty() && n < MAX {
            buf[..n].copy_from_slice(chunk);
            buf[n] = b'\n';
            n + 1
        } else {
            buf[..n].copy_from_slice(chunk);
            n
        };
        // SAFETY: writes `buf[..len]` through the log capability's vcon
        // protocol; the kernel copies the bytes out of our UTCB.
        unsafe {
            sys::l4_vcon_write(log, buf.as_ptr() as *const c_char, len as _);
        }
        rest = tail;
        if rest.is_empty() {
            if len == n {
                // The text filled the last write exactly: newline on its own.
                // SAFETY: as above.
                unsafe {
                    sys::l4_vcon_write(log, c"\n".as_ptr(), 1);
                }
            }
            break;
        }
    }
}

unsafe extern "C" {
    /// L4Re's libpthread (`pthread-l4.h`): the kernel thread capability of
    /// a POSIX thread. Every thread of an L4Re program, the main thread
    /// included, is a pthread.
    fn pthread_l4_cap(t: core::ffi::c_ulong) -> sys::l4_cap_idx_t;
    fn pthread_self() -> core::ffi::c_ulong;
}

/// The calling thread's capability.
///
/// Not `L4_BASE_THREAD_CAP`: in an L4Re program that slot holds the first
/// thread of the task, which is the in-task region manager (`l4re`), and
/// the program's threads are created later into other slots. A gate bound
/// to slot 3 delivers to L4Re's pager thread, which takes our label for a
/// pointer.
pub(crate) fn current_thread() -> CapIdx {
    // SAFETY: plain libpthread calls; `pthread_self` is valid on every
    // thread of the program.
    CapIdx(unsafe { pthread_l4_cap(pthread_self()) } as u64)
}

/// The program's main thread (`l4re_env()->main_thread`).
pub(crate) fn main_thread() -> CapIdx {
    // SAFETY: the environment is set up before the program runs.
    CapIdx(unsafe { (*sys::l4re_env()).main_thread } as u64)
}

/// The region map of the program (`l4re_env()->rm`).
pub(crate) fn env_rm() -> CapIdx {
    // SAFETY: the environment is set up before the program runs.
    CapIdx(unsafe { (*sys::l4re_env()).rm } as u64)
}

/// `l4re_env()->parent`.
pub(crate) fn env_parent() -> CapIdx {
    // SAFETY: the environment is set up before the program runs.
    CapIdx(unsafe { (*sys::l4re_env()).parent } as u64)
}

/// The report of an exception IPC just received by this thread (label
/// `L4_PROTO_EXCEPTION`): trap number, error code, pc and sp, as
/// `exception: trap N (error 0x..) at pc 0x.., sp 0x..`.
pub fn exception_report() -> alloc::string::String {
    Utcb::with(|u| {
        // SAFETY: an exception IPC carries the thread's registers in the
        // message registers, laid out as `l4_exc_regs_t`, which fits in them.
        let regs = unsafe { &*(u.mr().as_ptr() as *const sys::l4_exc_regs_t) };
        alloc::format!(
            "exception: trap {} (error {:#x}) at pc {:#x}, sp {:#x}",
            regs.trapno,
            regs.err,
            regs.ip,
            regs.sp
        )
    })
}

/// This program's environment (`l4re_env_t`) as plain values: what an
/// in-task pager copies into the environment of the program it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSnapshot {
    /// `parent`.
    pub parent: CapIdx,
    /// `rm`.
    pub rm: CapIdx,
    /// `mem_alloc`.
    pub mem_alloc: CapIdx,
    /// `log`.
    pub log: CapIdx,
    /// `main_thread`.
    pub main_thread: CapIdx,
    /// `factory`.
    pub factory: CapIdx,
    /// `scheduler`.
    pub scheduler: CapIdx,
    /// `itas`.
    pub itas: CapIdx,
    /// `dbg_events`.
    pub dbg_events: CapIdx,
    /// `first_free_cap` (a slot number).
    pub first_free_cap: u64,
    /// `first_free_reply_cap`.
    pub first_free_reply_cap: u64,
    /// `utcb_area` (an `l4_fpage_t` word).
    pub utcb_area: u64,
    /// `first_free_utcb`.
    pub first_free_utcb: u64,
    /// The named initial capabilities: name (NUL-padded), capability,
    /// flags.
    pub caps: alloc::vec::Vec<([u8; 16], CapIdx, u64)>,
}

/// Reads this program's environment.
pub fn env_snapshot() -> EnvSnapshot {
    // SAFETY: the loader set the environment up before the program ran;
    // it lives as long as the task. The caps array ends with an entry
    // whose flags are ~0.
    unsafe {
        let e = &*sys::l4re_env();
        let mut caps = alloc::vec::Vec::new();
        let mut p = e.caps;
        while !p.is_null() && (*p).flags != !0 {
            let mut name = [0u8; 16];
            for (i, c) in (*p).name.iter().enumerate().take(16) {
                name[i] = *c as u8;
            }
            caps.push((name, CapIdx((*p).cap as u64), (*p).flags as u64));
            p = p.add(1);
        }
        let c = |x: sys::l4_cap_idx_t| CapIdx(x);
        EnvSnapshot {
            parent: c(e.parent),
            rm: c(e.rm),
            mem_alloc: c(e.mem_alloc),
            log: c(e.log),
            main_thread: c(e.main_thread),
            factory: c(e.factory),
            scheduler: c(e.scheduler),
            itas: c(e.itas),
            dbg_events: c(e.dbg_events),
            first_free_cap: e.first_free_cap as u64,
            first_free_reply_cap: e.first_free_reply_cap as u64,
            utcb_area: e.utcb_area.raw as u64,
            first_free_utcb: e.first_free_utcb as u64,
            caps,
        }
    }
}

/// Takes the next free UTCB of this task (`l4re_env()->first_free_utcb`,
/// advanced by one UTCB) for a thread about to be created; returns its
/// address.
pub fn take_utcb() -> u64 {
    // SAFETY: the environment is this program's, written here only by the
    // thread creating threads (L4Re's own code does the same).
    unsafe {
        let e = sys::l4re_env();
        let u = (*e).first_free_utcb as u64;
        (*e).first_free_utcb = (u + sys::L4_UTCB_OFFSET as u64) as _;
        u
    }
}

/// Sleeps `ms` milliseconds (`l4_ipc_sleep_ms`: a receive from nobody
/// with that timeout).
pub fn sleep_ms(ms: u32) {
    // SAFETY: an IPC without partner: blocks this thread until the timeout.
    unsafe { sys::l4_ipc_sleep_ms(ms) };
}

/// Sleeps for ever (a receive from nobody without timeout).
pub fn sleep_forever() -> ! {
    loop {
        // SAFETY: an IPC without partner: blocks this thread.
        unsafe { sys::l4_ipc_sleep(sys::l4_timeout_t { raw: 0 }) };
    }
}

/// The registers of a thread whose exception IPC this thread just
/// received (label `L4_PROTO_EXCEPTION`; `l4_exc_regs_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionRegs {
    /// Trap number (14: page fault).
    pub trapno: u64,
    /// Error code.
    pub err: u64,
    /// Faulting address of a page fault.
    pub pfa: u64,
    /// Instruction pointer.
    pub ip: u64,
    /// Stack pointer.
    pub sp: u64,
}

/// Reads the registers of the exception IPC just received.
pub fn exception_regs() -> ExceptionRegs {
    Utcb::with(|u| {
        // SAFETY: an exception IPC carries the thread's registers in the
        // message registers, laid out as `l4_exc_regs_t`, which fits in them.
        let r = unsafe { &*(u.mr().as_ptr() as *const sys::l4_exc_regs_t) };
        ExceptionRegs {
            trapno: r.trapno,
            err: r.err,
            pfa: r.pfa,
            ip: r.ip,
            sp: r.sp,
        }
    })
}

/// The reply to the exception IPC just received that resumes the thread
/// at `ip` with its other registers as they were: the registers go back
/// in the message registers, and the tag says how many words they are.
pub fn exception_resume_at(ip: u64) -> MsgTag {
    const WORDS: usize = core::mem::size_of::<sys::l4_exc_regs_t>() / 8;
    Utcb::with(|u| {
        // SAFETY: as in `exception_regs`; only `ip` changes.
        let r = unsafe { &mut *(u.mr().as_mut_ptr() as *mut sys::l4_exc_regs_t) };
        r.ip = ip;
    });
    MsgTag::new(0, WORDS, 0, 0)
}
