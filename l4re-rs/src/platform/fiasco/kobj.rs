//! Kernel-object invocations on Fiasco: the bodies of the typed methods
//! in [`crate::kobj`]. Each function is one kernel (or L4Re factory) call
//! through `l4-sys`; the thread-control and factory calls marshal into the
//! caller's UTCB, so they run inside a [`Utcb::with`] borrow.

use l4_sys as sys;

use super::{check, l4_result, utcb};
use crate::cap::CapIdx;
use crate::error::{Error, Result};
use crate::fpage::Fpage;
use crate::kobj::ThreadAttr;
use crate::utcb::Utcb;

fn fpage(f: Fpage) -> sys::l4_fpage_t {
    sys::l4_fpage_t { raw: f.0 as _ }
}

pub(crate) fn factory_create_task(
    factory: CapIdx,
    target: CapIdx,
    utcb_area: Fpage,
) -> Result<Fpage> {
    let mut area = fpage(utcb_area);
    Utcb::with(|_| {
        // SAFETY: the borrow makes us the UTCB's only user; `area` is a
        // valid in/out pointer; the kernel checks the capabilities.
        l4_result(unsafe { sys::l4_factory_create_task(factory.0 as _, target.0 as _, &mut area) })
    })?;
    // SAFETY: `l4_fpage_t` is a union of words; `raw` covers all of it.
    Ok(Fpage(unsafe { area.raw }))
}

pub(crate) fn factory_create_thread(factory: CapIdx, target: CapIdx) -> Result<()> {
    Utcb::with(|_| {
        // SAFETY: as for `factory_create_task`.
        l4_result(unsafe { sys::l4_factory_create_thread(factory.0 as _, target.0 as _) })
    })
}

pub(crate) fn factory_create(
    factory: CapIdx,
    protocol: i64,
    target: CapIdx,
    args: &[i64],
) -> Result<()> {
    Utcb::with(|_| {
        let u = utcb();
        // SAFETY: the borrow makes us the UTCB's only user; each call
        // appends one argument to the message in it, and fails (leaving
        // it unchanged) when it is full.
        unsafe {
            let mut tag = sys::l4_factory_create_start_u(protocol as _, target.0 as _, u);
            for &a in args {
                if sys::l4_factory_create_add_int_u(a as _, &mut tag, u) == 0 {
                    return Err(Error::MsgTooLong);
                }
            }
            l4_result(sys::l4_factory_create_commit_u(factory.0 as _, tag, u))
        }
    })
}

pub(crate) fn thread_control(thread: CapIdx, attr: &ThreadAttr) -> Result<()> {
    Utcb::with(|_| {
        // SAFETY: the borrow makes us the UTCB's only user; the calls
        // write the thread-control words into it and commit them; the
        // kernel checks capabilities and the UTCB address.
        l4_result(unsafe {
            sys::l4_thread_control_start();
            if let Some(p) = attr.pager {
                sys::l4_thread_control_pager(p.0 as _);
            }
            if let Some(e) = attr.exc_handler {
                sys::l4_thread_control_exc_handler(e.0 as _);
            }
            if let Some((utcb_addr, task)) = attr.bind {
                sys::l4_thread_control_bind(utcb_addr as *mut sys::l4_utcb_t, task.0 as _);
            }
            sys::l4_thread_control_commit(thread.0 as _)
        })
    })
}

pub(crate) fn thread_ex_regs(thread: CapIdx, ip: u64, sp: u64, flags: u64) -> Result<()> {
    Utcb::with(|_| {
        // SAFETY: the borrow makes us the UTCB's only user.
        l4_result(unsafe { sys::l4_thread_ex_regs(thread.0 as _, ip as _, sp as _, flags as _) })
    })
}

pub(crate) fn scheduler_run_thread(scheduler: CapIdx, thread: CapIdx, prio: u32) -> Result<()> {
    Utcb::with(|_| {
        // SAFETY: the borrow makes us the UTCB's only user; `param` lives
        // across the call.
        l4_result(unsafe {
            let param = sys::l4_sched_param(prio as _, 0);
            sys::l4_scheduler_run_thread(scheduler.0 as _, thread.0 as _, &param)
        })
    })
}

pub(crate) fn task_map(dst: CapIdx, src: CapIdx, fp: Fpage, snd_base: u64) -> Result<()> {
    Utcb::with(|_| {
        // SAFETY: the borrow makes us the UTCB's only user; the kernel
        // checks both tasks and the flexpage.
        l4_result(unsafe { sys::l4_task_map(dst.0 as _, src.0 as _, fpage(fp), snd_base as _) })
    })
}

pub(crate) fn task_unmap(task: CapIdx, fp: Fpage, all_spaces: bool) -> Result<()> {
    let mask = if all_spaces {
        sys::L4_FP_ALL_SPACES
    } else {
        sys::L4_FP_OTHER_SPACES
    };
    Utcb::with(|_| {
        // SAFETY: the borrow makes us the UTCB's only user.
        l4_result(unsafe { sys::l4_task_unmap(task.0 as _, fpage(fp), mask as _) })
    })
}

/// Adds kernel-user memory at `fp` to `task` (`l4_task_add_ku_mem`): the
/// kernel allocates it and maps it there.
pub(crate) fn task_add_ku_mem(task: CapIdx, fp: Fpage) -> Result<()> {
    let mut raw = fpage(fp);
    Utcb::with(|_| {
        // SAFETY: `raw` is a valid flexpage we own for the call; the borrow
        // makes us the UTCB's only user.
        l4_result(unsafe { sys::l4_task_add_ku_mem(task.0 as _, &mut raw) })
    })
}

/// Deletes the objects in `objs` with one `l4_task_unmap_batch` per
/// [`MAX_UNMAP_BATCH`] of them: the kernel waits for one RCU grace period
/// per call that destroys objects, not one per object.
pub(crate) fn task_delete_objs(task: CapIdx, objs: &[CapIdx]) -> Result<()> {
    for chunk in objs.chunks(MAX_UNMAP_BATCH) {
        let mut fps = [sys::l4_fpage_t { raw: 0 }; MAX_UNMAP_BATCH];
        for (f, o) in fps.iter_mut().zip(chunk) {
            *f = fpage(Fpage::obj(*o, 0, crate::cap::CapRights::RWSD));
        }
        Utcb::with(|_| {
            // SAFETY: the borrow makes us the UTCB's only user; `fps`
            // holds `chunk.len()` flexpages, at most
            // `L4_UTCB_GENERIC_DATA_SIZE - 2`.
            l4_result(unsafe {
                sys::l4_task_unmap_batch(
                    task.0 as _,
                    fps.as_ptr(),
                    chunk.len() as _,
                    sys::L4_FP_DELETE_OBJ as _,
                )
            })
        })?;
    }
    Ok(())
}

/// Flexpages one `l4_task_unmap_batch` takes (`L4_UTCB_GENERIC_DATA_SIZE
/// - 2`).
const MAX_UNMAP_BATCH: usize = sys::L4_UTCB_GENERIC_DATA_SIZE as usize - 2;

pub(crate) fn task_cap_valid(task: CapIdx, obj: CapIdx) -> Result<bool> {
    Utcb::with(|_| {
        // SAFETY: the borrow makes us the UTCB's only user; the answer is
        // the tag's label.
        let t = unsafe { sys::l4_task_cap_valid(task.0 as _, obj.0 as _) };
        check(t).map(|tag| tag.label() > 0).map_err(Error::Ipc)
    })
}

pub(crate) fn kip_address() -> u64 {
    // SAFETY: `l4re_kip` reads the environment's KIP pointer, valid for
    // the program's life.
    unsafe { sys::l4re_kip() as u64 }
}

pub(crate) fn kip_has_feature(name: &str) -> bool {
    let mut buf = [0u8; 32];
    if name.len() >= buf.len() {
        return false;
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    let kip = kip_address();
    if kip == 0 {
        return false;
    }
    // SAFETY: the KIP is mapped read-only for the program's life; `buf`
    // is NUL-terminated.
    unsafe {
        sys::l4_kip_kernel_has_feature(kip as *const sys::l4_kernel_info_t, buf.as_ptr() as _) != 0
    }
}

pub(crate) fn pf_trampoline_prepare(
    state: u64,
    stack_top: u64,
    handler: &'static dyn crate::kobj::PfHandler,
    fpu: super::pf_trampoline::FpuUse,
) -> Result<()> {
    super::pf_trampoline::prepare(state, stack_top, handler, fpu)
}

pub(crate) fn pf_trampoline_enable(thread: CapIdx, state: u64) -> Result<()> {
    super::pf_trampoline::enable(thread.0 as _, state)
}
