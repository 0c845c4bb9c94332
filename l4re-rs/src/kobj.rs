//! Operations on kernel objects: the factory, IPC gates, threads, tasks,
//! the scheduler and the KIP.
//!
//! Every method is one invocation of the object its capability names and
//! says which L4 call it corresponds to; all fail with [`Error`] (an IPC
//! error, or the negative code the kernel or server answered). Thread,
//! task and scheduler invocations exist only on Fiasco: on the host a task
//! is a process and a thread an OS thread, made by `l4re::host`.

use crate::cap::{self, Cap, Factory, IpcGate, OwnedCap, Thread};
use crate::error::{Error, Result};
use crate::platform;

impl Cap<Factory> {
    /// Creates an IPC gate (`l4_factory_create_gate`), bound to `thread` with
    /// `label` if a thread is given. Labels must be 4-aligned: the kernel
    /// puts the caller's rights into the low two bits.
    pub fn create_gate(self, thread: Option<Cap<Thread>>, label: u64) -> Result<OwnedCap<IpcGate>> {
        if label & 3 != 0 {
            return Err(Error::Inval);
        }
        let gate = cap::alloc::<IpcGate>()?;
        platform::create_gate(gate.idx(), thread.map(|t| t.idx()), label)?;
        Ok(gate)
    }
}

impl Cap<IpcGate> {
    /// Binds the gate to `thread` with `label` (`l4_ipc_gate_bind_thread`):
    /// from now on calls through the gate arrive at that thread.
    pub fn bind_thread(self, thread: Cap<Thread>, label: u64) -> Result<()> {
        crate::ipc::bind_gate(self.idx(), thread.idx(), label)
    }
}

impl Cap<Thread> {
    /// Sets the thread's pager (`l4_thread_control_pager` +
    /// `l4_thread_control_commit`): the capability its page faults are sent
    /// to, looked up in the thread's own task.
    pub fn set_pager<T: crate::cap::CapKind>(self, pager: Cap<T>) -> Result<()> {
        platform::thread_set_pager(self.idx(), pager.idx())
    }
}

/// The calling thread's capability.
pub fn current_thread() -> Cap<Thread> {
    Cap::from_idx(platform::current_thread())
}

/// What [`Cap::<Thread>::control`] changes (`l4_thread_control_*`):
/// unset fields stay as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadAttr {
    /// The capability page faults are sent to, in the thread's task.
    pub pager: Option<crate::cap::CapIdx>,
    /// The capability exceptions are sent to, in the thread's task.
    pub exc_handler: Option<crate::cap::CapIdx>,
    /// Bind the thread to a task, with its UTCB at this address of it.
    pub bind: Option<(u64, crate::cap::CapIdx)>,
}

/// What a page-fault trampoline handler did with a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PfOutcome {
    /// The page is mapped: the faulting instruction runs again
    /// (`l4_thread_pf_trampoline_resume`).
    Resolved,
    /// The fault goes to the thread's exception handler as an exception
    /// IPC (`l4_thread_pf_trampoline_reflect`).
    Reflect,
    /// Resume the thread at this instruction with its other registers as
    /// they were (what an exception handler's reply does for L4Re's rescue
    /// jumps, `L4Re::Rm::add_rescue_jump`).
    ResumeAt(u64),
}

/// A page-fault handler run by the faulting thread itself (Fiasco's
/// page-fault trampoline, [`Cap::<Thread>::pf_trampoline_setup`]).
///
/// It runs on a stack of its own, in the faulting thread, while the code
/// it interrupted waits; it runs concurrently with every other thread of
/// the task, hence `Sync`. What it must keep to:
///
/// * **UTCB.** The first 8 message registers, the buffer descriptor, the
///   first 4 buffer registers and the error register are saved around it
///   (with this crate's UTCB borrow), so it may make IPC calls whose
///   messages, replies and receive buffers fit in those. A handler that
///   needs more must not return (it ends the program); the registers
///   beyond are the interrupted code's.
/// * **Faults.** A page fault it takes itself goes to the thread's pager
///   as IPC: it must not hold a lock that pager needs while it may fault
///   (touching memory not yet mapped, code or data), or the two wait for
///   each other.
/// * **FPU.** Set up with `PfTrampolineState::prepare`, the FPU and SSE
///   registers are saved around it; with
///   `PfTrampolineState::prepare_fpu_free` they are not, and it must
///   not touch them (cheaper: no lazy FPU switch on every fault).
pub trait PfHandler: Sync {
    /// Resolves the fault at `pfa` of the instruction at `ip`. `pfa` is
    /// the word of the page-fault protocol
    /// ([`Fault::from_pfa`](crate::proto::pager::Fault::from_pfa)
    /// decodes it), as in page-fault IPC.
    fn page_fault(&self, pfa: u64, ip: u64) -> PfOutcome;
}

/// `L4RE_MAIN_THREAD_PRIO`: the priority L4Re gives a program's first
/// thread.
pub const MAIN_THREAD_PRIO: u32 = 2;

#[cfg(feature = "fiasco")]
mod fiasco_objects {
    use super::{PfHandler, ThreadAttr};
    use crate::cap::{self, Cap, CapIdx, Factory, OwnedCap, Scheduler, Task, Thread};
    use crate::error::Result;
    use crate::fpage::Fpage;
    use crate::platform::fiasco::kobj as k;
    use crate::platform::fiasco::pf_trampoline::FpuUse;
    use crate::proto::Dataspace;

    /// `L4_PROTO_THREAD`, `L4RE_PROTO_DATASPACE`: what a factory makes.
    const PROTO_DATASPACE: i64 = 0x4000;

    impl Cap<Factory> {
        /// Creates a task whose UTCB area is `utcb_area`
        /// (`l4_factory_create_task`); returns it with the area the kernel
        /// chose.
        pub fn create_task(self, utcb_area: Fpage) -> Result<(OwnedCap<Task>, Fpage)> {
            let task = cap::alloc::<Task>()?;
            let area = k::factory_create_task(self.idx(), task.idx(), utcb_area)?;
            Ok((task, area))
        }

        /// Creates a thread, not yet bound to a task
        /// (`l4_factory_create_thread`).
        pub fn create_thread(self) -> Result<OwnedCap<Thread>> {
            let t = cap::alloc::<Thread>()?;
            k::factory_create_thread(self.idx(), t.idx())?;
            Ok(t)
        }

        /// Allocates a dataspace of `size` bytes from a memory allocator
        /// (`L4Re::Mem_alloc::alloc`: a factory `create` of protocol
        /// `L4RE_PROTO_DATASPACE` with size, flags and alignment order).
        pub fn alloc_dataspace(
            self,
            size: u64,
            flags: u64,
            align: u8,
        ) -> Result<OwnedCap<Dataspace>> {
            let ds = cap::alloc::<Dataspace>()?;
            k::factory_create(
                self.idx(),
                PROTO_DATASPACE,
                ds.idx(),
                &[size as i64, flags as i64, align as i64],
            )?;
            Ok(ds)
        }
    }

    impl Cap<Thread> {
        /// Changes the thread's pager, exception handler or binding
        /// (`l4_thread_control_start` … `_commit`).
        pub fn control(self, attr: &ThreadAttr) -> Result<()> {
            k::thread_control(self.idx(), attr)
        }

        /// Sets the thread's instruction and stack pointer
        /// (`l4_thread_ex_regs`); a bound thread that was never run starts
        /// there once the scheduler runs it.
        pub fn ex_regs(self, ip: u64, sp: u64, flags: u64) -> Result<()> {
            k::thread_ex_regs(self.idx(), ip, sp, flags)
        }

        /// Lets the thread handle its own page faults
        /// (`l4_thread_pf_trampoline_setup`, kernel feature `pf_tramp`):
        /// from now on a fault runs `handler` in the faulting thread, on
        /// `stack`, instead of sending page-fault IPC to its pager (which
        /// still gets the faults the handler itself takes). The thread
        /// must be bound to this task. See [`PfHandler`] for what a
        /// handler may do.
        pub fn pf_trampoline_setup(
            self,
            state: PfTrampolineState,
            stack: &'static mut [u64],
            handler: &'static dyn PfHandler,
        ) -> Result<()> {
            let prepared = state.prepare(stack, handler)?;
            self.pf_trampoline_enable(prepared)
        }

        /// Lets the thread take its page faults through a trampoline state
        /// prepared in its own task ([`PfTrampolineState::prepare`], by
        /// code running there), from any task that holds the thread
        /// (`l4_thread_pf_trampoline_setup`). The kernel checks that the
        /// state is kernel-user memory of the thread's task, which must be
        /// bound already.
        pub fn pf_trampoline_enable(self, state: PreparedPfTrampoline) -> Result<()> {
            k::pf_trampoline_enable(self.idx(), state.0)
        }
    }

    /// Kernel-user memory for one thread's page-fault trampoline state
    /// (`l4_pf_trampoline_t`), taken like a UTCB from the task's UTCB area
    /// (`l4re_env()->first_free_utcb`), as `l4re_itas` places it.
    #[derive(Debug)]
    pub struct PfTrampolineState(u64);

    impl PfTrampolineState {
        /// Takes the next free UTCB slot of this task for a trampoline
        /// state.
        pub fn take() -> Self {
            PfTrampolineState(crate::platform::fiasco::take_utcb())
        }

        /// Bytes one state takes ([`in_ku_mem`](Self::in_ku_mem) places
        /// them this far apart).
        pub const SIZE: u64 = crate::platform::fiasco::pf_trampoline::STATE_SIZE as u64;

        /// The state at `address`, in kernel-user memory that the caller
        /// added to this task (`Cap<Task>::add_ku_mem`), as
        /// `l4re_itas` keeps the states of the threads a program creates.
        ///
        /// # Safety
        ///
        /// `address` is 8-aligned, and the [`SIZE`](Self::SIZE) bytes from
        /// it are kernel-user memory of this task that no other state or
        /// thread uses while the one made of this is in use.
        pub unsafe fn in_ku_mem(address: u64) -> Self {
            PfTrampolineState(address)
        }

        /// Writes the state: faults of the thread it will be enabled for
        /// run `handler` on `stack`, in this task.
        pub fn prepare(
            self,
            stack: &'static mut [u64],
            handler: &'static dyn PfHandler,
        ) -> Result<PreparedPfTrampoline> {
            self.prepare_with(stack, handler, FpuUse::Saved)
        }

        /// As [`prepare`](Self::prepare), for a handler that never uses the
        /// FPU, SSE or AVX registers: they are not saved around it (L4Re's
        /// `l4re_itas` is built without FPU for the same reason). With
        /// Fiasco's lazy FPU switching, any FPU instruction in a handler
        /// makes the kernel switch the FPU to this thread and back when
        /// the server the handler calls uses it too (moe does, on every
        /// `Dataspace::map`): two traps per fault, about 250 instructions.
        ///
        /// # Safety
        ///
        /// Nothing `handler.page_fault` runs, on any path, may write an FPU,
        /// MMX, SSE or AVX register: the interrupted code's values are in
        /// them, and it resumes with what the handler left there. Compiled
        /// Rust uses SSE registers for block copies and vectorized
        /// arithmetic, so the handler's code must be written (and checked,
        /// e.g. by running it under code that keeps values in every vector
        /// register) to avoid them.
        pub unsafe fn prepare_fpu_free(
            self,
            stack: &'static mut [u64],
            handler: &'static dyn PfHandler,
        ) -> Result<PreparedPfTrampoline> {
            self.prepare_with(stack, handler, FpuUse::None)
        }

        fn prepare_with(
            self,
            stack: &'static mut [u64],
            handler: &'static dyn PfHandler,
            fpu: FpuUse,
        ) -> Result<PreparedPfTrampoline> {
            // The top of the stack, kept 16-aligned by the entry stub.
            let top = stack.as_mut_ptr_range().end as u64;
            k::pf_trampoline_prepare(self.0, top, handler, fpu)?;
            Ok(PreparedPfTrampoline(self.0))
        }
    }

    /// A trampoline state written in this task, to be enabled for a
    /// thread of it ([`Cap::<Thread>::pf_trampoline_enable`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PreparedPfTrampoline(u64);

    impl PreparedPfTrampoline {
        /// Its address in the task (what a loader in another task passes to
        /// the kernel).
        pub fn address(self) -> u64 {
            self.0
        }

        /// The state at `address` of the task of a thread that another
        /// task prepared there (see [`PfTrampolineState::prepare`]).
        pub fn at(address: u64) -> Self {
            PreparedPfTrampoline(address)
        }
    }

    impl Cap<Scheduler> {
        /// Lets `thread` run at priority `prio` on the default CPU set
        /// (`l4_scheduler_run_thread` with `l4_sched_param(prio, 0)`).
        pub fn run_thread(self, thread: Cap<Thread>, prio: u32) -> Result<()> {
            k::scheduler_run_thread(self.idx(), thread.idx(), prio)
        }
    }

    impl Cap<Task> {
        /// Maps `fpage` of task `src` into this task at `snd_base`
        /// (`l4_task_map`; memory or capabilities, as the flexpage says).
        pub fn map_from(self, src: Cap<Task>, fpage: Fpage, snd_base: u64) -> Result<()> {
            k::task_map(self.idx(), src.idx(), fpage, snd_base)
        }

        /// Revokes `fpage` from this task and, with `all_spaces`, from it
        /// and every task it was mapped on to (`l4_task_unmap` with
        /// `L4_FP_ALL_SPACES`, else `L4_FP_OTHER_SPACES`).
        pub fn unmap(self, fpage: Fpage, all_spaces: bool) -> Result<()> {
            k::task_unmap(self.idx(), fpage, all_spaces)
        }

        /// Adds kernel-user memory (memory that the kernel and this task
        /// share, for UTCBs and page-fault trampoline states) at `fpage`,
        /// a free range of this task's address space
        /// (`l4_task_add_ku_mem`): the kernel allocates and maps it.
        pub fn add_ku_mem(self, fpage: Fpage) -> Result<()> {
            k::task_add_ku_mem(self.idx(), fpage)
        }

        /// Deletes the object in slot `obj` of this task
        /// (`l4_task_delete_obj`, which is [`delete_objs`](Self::delete_objs)
        /// of one: an unmap with `L4_FP_DELETE_OBJ`).
        pub fn delete_obj(self, obj: CapIdx) -> Result<()> {
            self.delete_objs(&[obj])
        }

        /// Deletes the objects in the slots `objs` of this task
        /// (`l4_task_unmap_batch` with `L4_FP_DELETE_OBJ`, up to 61 per
        /// call). A call that destroys objects waits for an RCU grace
        /// period of the kernel before it returns (about 3 M instructions
        /// under QEMU): deleting a task's objects together waits once.
        pub fn delete_objs(self, objs: &[CapIdx]) -> Result<()> {
            k::task_delete_objs(self.idx(), objs)
        }

        /// Whether slot `obj` of this task holds a capability
        /// (`l4_task_cap_valid`).
        pub fn cap_valid(self, obj: CapIdx) -> Result<bool> {
            k::task_cap_valid(self.idx(), obj)
        }
    }

    impl Cap<Task> {
        /// Maps capability `obj` of task `src` into slot `dst` of this
        /// task with at most `rights` (`l4_task_map` with
        /// `l4_obj_fpage(obj, 0, rights)` and `l4_map_obj_control(dst,
        /// L4_MAP_ITEM_MAP)`).
        pub fn map_obj(
            self,
            src: Cap<Task>,
            obj: CapIdx,
            rights: crate::cap::CapRights,
            dst: CapIdx,
        ) -> Result<()> {
            let base = crate::fpage::ITEM_MAP | (dst.0 & !((1 << crate::cap::CAP_SHIFT) - 1));
            self.map_from(src, Fpage::obj(obj, 0, rights), base)
        }
    }

    /// The kernel info page.
    pub struct Kip;

    impl Kip {
        /// Its address in this task (`l4re_kip`).
        pub fn address() -> u64 {
            k::kip_address()
        }

        /// Its page in this task, made present (read once), so that it
        /// can be mapped on to another task.
        pub fn present_page() -> u64 {
            let kip = k::kip_address();
            // SAFETY: the KIP is mapped read-only in every L4Re program for
            // its whole life; reading its first byte only faults it in.
            let _ = unsafe { core::ptr::read_volatile(kip as *const u8) };
            kip & !0xfff
        }

        /// Whether the kernel announces `feature` (`l4_kip_kernel_has_feature`,
        /// e.g. `"pf_tramp"`).
        pub fn has_feature(feature: &str) -> bool {
            k::kip_has_feature(feature)
        }
    }
}

#[cfg(feature = "fiasco")]
pub use fiasco_objects::{Kip, PfTrampolineState, PreparedPfTrampoline};
