//! The threads a program creates, as `l4re_itas` keeps them: the program's
//! `l4re_env()->itas` is a gate of this pager that speaks `L4Re::Itas`
//! ([`l4re::proto::itas`]).
//!
//! L4Re's pthreads hand every new thread to `register_thread`. [`Threads`]
//! binds it to the task with its UTCB, makes the pager's gate its pager
//! and exception handler, and, where the kernel has the page-fault
//! trampoline, gives it a trampoline of its own: its faults on shared
//! pages are then resolved in the thread itself, as the program's first
//! thread's are ([`crate::itas::prepare`]), not by page-fault IPC to the
//! gate. A trampoline state is kernel-user memory: the states live in
//! pages this pager adds to the task (`l4_task_add_ku_mem`, 18 states a
//! page), each with a handler stack from the pager's heap; a thread's
//! state and stack go back to a free list at `unregister_thread` (pthreads
//! call it after the thread has ended, before deleting it), so a program
//! that creates and ends threads again and again reuses them.
//!
//! The signal operations of `L4Re::Itas` are answered with `-L4_ENOSYS`
//! (the protocol's default for operations a server does not declare):
//! L4Re's libc then fails `sigaction`, `raise`, … with `ENOSYS`, as it
//! does without an `itas` capability.
//!
//! With `l4re_dbg` including `Dbg.Server` (0x10) in the ned script, each
//! registration and unregistration is logged, with the faults the thread
//! resolved through its trampoline.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use l4pager::region::Backing;
use l4pager::sync::SpinLock;
use l4re::cap::{CapIdx, well_known};
use l4re::fpage::{Fpage, Rights};
use l4re::kobj::{PfHandler, PfOutcome, PfTrampolineState, ThreadAttr};
use l4re::msg::{MsgTag, ReceivedCap};
use l4re::proto::{Itas, ItasServer};
use l4re::rpc::{Protocol, Request};
use l4re::server::ServerObject;
use l4re::{Cap, Error, Result};

use crate::fiasco::{InPager, line};
use crate::itas::HANDLER_STACK_WORDS;
use crate::window::PAGE;

/// `Dbg.Server` of ned's `l4re_dbg`: log the threads' comings and goings.
pub(crate) const DBG_SERVER: u64 = 0x10;

/// One thread's page-fault trampoline: its state, its handler stack and
/// the handler, which counts the faults the thread resolved itself.
/// Leaked once made (the kernel and the handler refer to it); reused for
/// the next thread when its thread is unregistered.
struct Trampoline {
    state: u64,
    stack: u64,
    handler: ThreadHandler,
}

/// A thread's page-fault handler: the pager's, counted per thread and
/// for all of them.
struct ThreadHandler {
    pager: &'static InPager,
    faults: AtomicU64,
    all: &'static AtomicU64,
}

impl PfHandler for ThreadHandler {
    fn page_fault(&self, pfa: u64, ip: u64) -> PfOutcome {
        self.faults.fetch_add(1, Ordering::Relaxed);
        self.all.fetch_add(1, Ordering::Relaxed);
        self.pager.page_fault(pfa, ip)
    }
}

/// What the registry holds.
#[derive(Default)]
struct Registry {
    /// Registered threads (the program's capability index) and their
    /// trampolines, if any.
    threads: Vec<(CapIdx, Option<&'static Trampoline>)>,
    /// Trampolines of unregistered threads.
    free: Vec<&'static Trampoline>,
    /// Unused states in the last kernel-user page: `[next, end)`.
    ku_next: u64,
    ku_end: u64,
    /// Trampolines made so far (the most threads alive at once, plus one
    /// at most where a thread is registered before the last one ended).
    made: u64,
}

/// The object behind the program's `itas` gate.
pub(crate) struct Threads {
    pager: &'static InPager,
    /// The gate the threads get as pager and exception handler.
    gate: CapIdx,
    /// Whether the kernel has the page-fault trampoline.
    trampoline: bool,
    /// Log each registration (`Dbg.Server`).
    verbose: bool,
    registry: SpinLock<Registry>,
    /// Faults through the trampolines of all registered threads so far.
    faults: &'static AtomicU64,
}

impl Threads {
    /// The registry of `pager`'s program, whose threads get `gate` as
    /// pager and exception handler and, with `trampoline`, a page-fault
    /// trampoline each.
    pub(crate) fn new(
        pager: &'static InPager,
        gate: CapIdx,
        trampoline: bool,
        verbose: bool,
    ) -> Self {
        Threads {
            pager,
            gate,
            trampoline,
            verbose,
            registry: SpinLock::new(Registry::default()),
            faults: Box::leak(Box::new(AtomicU64::new(0))),
        }
    }

    /// A trampoline for a new thread: a free one, or a new state (a new
    /// page of kernel-user memory when the last one is used up) with a
    /// new stack.
    fn take_trampoline(&self) -> Result<&'static Trampoline> {
        let mut reg = self.registry.lock();
        if let Some(t) = reg.free.pop() {
            t.handler.faults.store(0, Ordering::Relaxed);
            return Ok(t);
        }
        if reg.ku_next + PfTrampolineState::SIZE > reg.ku_end {
            let page = self
                .pager
                .rm
                .map()
                .lock()
                .attach(
                    0,
                    PAGE,
                    Rights::RW,
                    Backing::Kernel,
                    false,
                    "trampolines",
                    true,
                    false,
                    PAGE,
                )
                .map_err(|_| Error::NoMem)?;
            let task: Cap<l4re::cap::Task> = Cap::from_idx(well_known::TASK);
            if let Err(e) = task.add_ku_mem(Fpage::mem(page, 12, Rights::RW)) {
                let _ = self.pager.rm.map().lock().detach(page, PAGE);
                return Err(e);
            }
            reg.ku_next = page;
            reg.ku_end = page + PAGE;
        }
        let state = reg.ku_next;
        reg.ku_next += PfTrampolineState::SIZE.next_multiple_of(16);
        reg.made += 1;
        let stack = Vec::leak(alloc::vec![0u64; HANDLER_STACK_WORDS]);
        // Written page by page now: the handler must not fault on its own
        // stack while it holds the region map's lock (the gate's thread
        // resolves such a fault, and needs that lock).
        for w in stack.iter_mut().step_by(PAGE as usize / 8) {
            *w = 0;
        }
        core::hint::black_box(&mut *stack);
        Ok(Box::leak(Box::new(Trampoline {
            state,
            stack: stack.as_mut_ptr() as u64,
            handler: ThreadHandler {
                pager: self.pager,
                faults: AtomicU64::new(0),
                all: self.faults,
            },
        })))
    }

    /// Gives `thread` the trampoline `t`.
    fn enable(&self, thread: Cap<l4re::cap::Thread>, t: &'static Trampoline) -> Result<()> {
        // SAFETY: `t.state` lies in kernel-user memory this registry added
        // to the task, `PfTrampolineState::SIZE` bytes 16 apart; it is
        // `t`'s alone, and `t` is either new or was given back by
        // `unregister_thread` for a thread that has ended.
        let state = unsafe { PfTrampolineState::in_ku_mem(t.state) };
        // SAFETY: `t.stack` is the start of `HANDLER_STACK_WORDS` words
        // leaked for `t` alone; the thread that used it before (if any) has
        // ended (see above), so no one else uses them now.
        let stack =
            unsafe { core::slice::from_raw_parts_mut(t.stack as *mut u64, HANDLER_STACK_WORDS) };
        let prepared = crate::itas::prepare_for(state, stack, &t.handler)?;
        thread.pf_trampoline_enable(prepared)
    }
}

impl ItasServer for Threads {
    fn register_thread(
        &self,
        _: &mut Request<'_>,
        _parent: ReceivedCap,
        thread: ReceivedCap,
        utcb: u64,
    ) -> Result<()> {
        let cap: Cap<l4re::cap::Thread> = thread.cap();
        if self
            .registry
            .lock()
            .threads
            .iter()
            .any(|(c, _)| *c == thread.idx)
        {
            return Ok(());
        }
        cap.control(&ThreadAttr {
            pager: Some(self.gate),
            exc_handler: Some(self.gate),
            bind: Some((utcb, well_known::TASK)),
        })?;
        let tramp = if self.trampoline {
            let t = self.take_trampoline()?;
            if let Err(e) = self.enable(cap, t) {
                self.registry.lock().free.push(t);
                return Err(e);
            }
            Some(t)
        } else {
            None
        };
        let made = {
            let mut reg = self.registry.lock();
            reg.threads.push((thread.idx, tramp));
            reg.made
        };
        if self.verbose {
            let how = if tramp.is_some() {
                "page-fault trampoline"
            } else {
                "page-fault IPC"
            };
            line(&format!(
                "thread {:#x} registered ({how}); faults through the threads' trampolines so far: {}; trampolines made: {}",
                thread.idx.0,
                self.faults.load(Ordering::Relaxed),
                made
            ));
        }
        Ok(())
    }

    fn unregister_thread(&self, _: &mut Request<'_>, thread: ReceivedCap) -> Result<()> {
        let tramp = {
            let mut reg = self.registry.lock();
            let at = reg
                .threads
                .iter()
                .position(|(c, _)| *c == thread.idx)
                .ok_or(Error::Inval)?;
            let (_, tramp) = reg.threads.swap_remove(at);
            if let Some(t) = tramp {
                reg.free.push(t);
            }
            tramp
        };
        if self.verbose {
            let faults = tramp.map_or(0, |t| t.handler.faults.load(Ordering::Relaxed));
            line(&format!(
                "thread {:#x} unregistered: {faults} faults through its trampoline",
                thread.idx.0
            ));
        }
        Ok(())
    }
}

const PROTOCOLS: &[(i64, &str)] = &[(<Itas as Protocol>::LABEL, "L4Re::Itas")];

impl ServerObject for Threads {
    fn protocols(&self) -> &[(i64, &'static str)] {
        PROTOCOLS
    }

    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        Itas::dispatch(self, req)
    }
}
