//! The internal pager's program (see the crate documentation).

use alloc::format;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use l4pager::fault::{self, Access, Decision};
use l4pager::region::{Region, RegionMap};
use l4pager::rm::{RmBackend, RmService};
use l4pager::sync::SpinLock;
use l4pager::task::{self, PagerStats, TaskSetup, TaskSetupClient, layout};
use l4re::cap::{self, CapIdx, CapRights, IpcGate, OwnedCap};
use l4re::env::{env, log_line};
use l4re::fpage::{Fpage, RcvBuf, Rights};
use l4re::kobj::PfTrampolineState;
use l4re::msg::MsgTag;
use l4re::proto::dataspace::Flags as DsFlags;
use l4re::proto::parent::SIGNAL_EXIT;
use l4re::proto::rm::PageIn;
use l4re::proto::{Dataspace, DataspaceClient, PageFault, Parent, ParentClient, ParentServer, Rm};
use l4re::proto::{PageFaultClient, PageFaultServer, pager};
use l4re::rpc::{Protocol, Request};
use l4re::server::{Server, ServerObject};
use l4re::{Cap, Error, Result};
use l4re_rt::Args;

use crate::window::{self, PAGE};

pub(crate) fn line(text: &str) {
    log_line(&format!("inpager: {text}"));
}

/// Unmaps `[start, start + size)` from this task (and whatever was mapped
/// on from it).
pub(crate) fn unmap_range(start: u64, size: u64) {
    l4re::fiasco::mem::unmap_range(start, size)
}

/// Removes the write right from the page at `page` (mapped writable only
/// to be filled).
fn write_protect(page: u64) {
    let _ = env().task().unmap(Fpage::mem(page, 12, Rights::W), true);
}

/// What a detach means here: the pages go.
pub(crate) struct Unmapper;

impl RmBackend for Unmapper {
    fn attached(&self, _: &Region) -> Result<()> {
        Ok(())
    }
    fn detached(&self, _: &Region, start: u64, size: u64) {
        unmap_range(start, size);
    }
    fn unmaps_on_detach(&self) -> bool {
        true
    }
    fn page_in(&self, _: u64, _: u64, _: Rights) -> Result<PageIn> {
        // The program shares this task: its own thread touches the pages
        // (L4Re's in-task `page_in_fn` convention), so every fault comes
        // here the usual way.
        Ok(PageIn {
            fp: l4re::fpage::SndFpage::NONE,
            helper: page_in_helper as *const () as usize as u64,
        })
    }
}

/// `L4Re::Rm::page_in_fn`, run by the program's thread that asked for
/// `page_in`: touches every page of `[min, max]` with the access `rights`
/// asks for (a write that stores what it read, atomically, for W), so the
/// faults map them. Uses no UTCB and no memory of the pager but its code.
extern "C" fn page_in_helper(min: u64, max: u64, rights: u16) -> i64 {
    let mut a = min & !(PAGE - 1);
    while a <= max {
        if rights & 2 != 0 {
            // SAFETY: the region map checked that `[min, max]` is attached
            // writable; an atomic add of 0 faults the page in writable and
            // leaves its contents as they are.
            unsafe { core::sync::atomic::AtomicU8::from_ptr(a as *mut u8) }
                .fetch_add(0, core::sync::atomic::Ordering::Relaxed);
        } else {
            // SAFETY: checked readable by the region map.
            unsafe { core::ptr::read_volatile(a as *const u8) };
        }
        match a.checked_add(PAGE) {
            Some(n) => a = n,
            None => break,
        }
    }
    0
}

/// Anonymous memory handed out page by page: the loader's one dataspace,
/// or (started by ned) chunks the pager allocates from the program's
/// memory allocator as they fill up.
pub(crate) struct Anon {
    pub(crate) ds: Cap<Dataspace>,
    pub(crate) size: u64,
    pub(crate) next: u64,
    /// Where more comes from (`None`: the loader's memory is all there is).
    pub(crate) more: Option<Cap<l4re::cap::Factory>>,
    /// Bytes allocated in all.
    pub(crate) total: u64,
}

impl Anon {
    /// The next page of the current chunk (its dataspace and offset), if
    /// the chunk has room.
    fn take_page(&mut self) -> Option<(Cap<Dataspace>, u64)> {
        if self.next + PAGE > self.size {
            return None;
        }
        self.next += PAGE;
        Some((self.ds, self.next - PAGE))
    }
}

/// Bytes of anonymous memory allocated at a time from a memory allocator.
pub(crate) const ANON_CHUNK: u64 = 16 << 20;
/// Most anonymous memory the pager allocates for one program.
const ANON_LIMIT: u64 = 1 << 30;

/// Whom the pager tells that the program ended.
#[derive(Clone, Copy)]
pub(crate) enum Ending {
    /// The loader that started the task (`TaskSetup::ended`): it deletes
    /// the task.
    Loader(Cap<TaskSetup>),
    /// The program's parent (ned): `L4Re::Parent` `signal(0, status)`, as
    /// the program's own exit would.
    Parent(Cap<Parent>),
}

/// Who asks [`InPager::resolve`] to resolve a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Page-fault IPC to the gate.
    Ipc,
    /// The faulting thread itself, through the kernel's page-fault
    /// trampoline.
    Trampoline,
    /// The pager, mapping pages it writes itself (not a fault of the
    /// program).
    Pager,
}

/// The pager's statistics ([`PagerStats`]'s fields), counted with
/// atomics: one instruction each, no lock, and no vector register on the
/// page-fault trampoline's path (see [`crate::itas`]).
#[derive(Default)]
pub(crate) struct Counters {
    faults: AtomicU64,
    shared: AtomicU64,
    shared_pages: AtomicU64,
    copied: AtomicU64,
    zero: AtomicU64,
    invalid: AtomicU64,
    rm_requests: AtomicU64,
    anon_pages: AtomicU64,
    in_thread: AtomicU64,
}

impl Counters {
    /// The counts so far.
    pub(crate) fn snapshot(&self) -> PagerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PagerStats {
            faults: get(&self.faults),
            shared: get(&self.shared),
            shared_pages: get(&self.shared_pages),
            copied: get(&self.copied),
            zero: get(&self.zero),
            invalid: get(&self.invalid),
            rm_requests: get(&self.rm_requests),
            anon_pages: get(&self.anon_pages),
            in_thread: get(&self.in_thread),
        }
    }
}

/// Has `anon`'s server copy `valid` bytes at `offset` of `src` to `off`
/// of `anon` (`Dataspace::copy_in`). A function of its own, not inlined:
/// it runs in the page-fault trampoline's handler, which must not touch
/// a vector register (see `crate::itas::prepare_for`), and inlined into
/// the large `InPager::resolve` the message set-up was compiled with SSE
/// stores (the harness test itas-fpu caught it: xmm0 zeroed).
#[inline(never)]
fn copy_page_in(
    anon: Cap<Dataspace>,
    off: u64,
    src: Cap<Dataspace>,
    offset: u64,
    valid: u64,
) -> Result<()> {
    anon.copy_in(off, src.send(CapRights::R), offset, valid)
}

/// Adds `n` to the counter `c`.
fn count(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The object behind the gate `"server"`.
///
/// Faults are resolved by the gate's thread (page-fault IPC) and, in an
/// in-task pager with the kernel's page-fault trampoline, by the program's
/// threads themselves ([`l4re::kobj::PfHandler`]): every field is safe to
/// share. No lock is held across a call that can fault (see
/// [`crate::itas`] on why that matters).
pub(crate) struct InPager {
    pub(crate) rm: RmService<Unmapper>,
    pub(crate) anon: SpinLock<Anon>,
    pub(crate) stats: Counters,
    pub(crate) ending: Ending,
    /// A page of the task where file pages are read for private copies;
    /// the lock serializes its users.
    pub(crate) scratch: SpinLock<u64>,
    /// The gate this pager serves (where the trampoline sends what the
    /// faulting thread does not resolve itself).
    pub(crate) gate: CapIdx,
    /// The last dataspaces whose server refused to copy a page into our
    /// anonymous memory (`Dataspace::copy_in`: moe copies only between
    /// its own dataspaces): their private copies go to the gate's thread.
    copy_refused: [AtomicU64; 4],
    /// Where the next refusal is noted in `copy_refused`.
    copy_refused_next: AtomicU64,
}

impl InPager {
    /// A pager for `map` that takes anonymous memory from `anon`.
    pub(crate) fn new(
        map: RegionMap,
        anon: Anon,
        ending: Ending,
        scratch: u64,
        gate: CapIdx,
    ) -> Self {
        InPager {
            gate,
            rm: RmService::new(Arc::new(SpinLock::new(map)), Unmapper),
            anon: SpinLock::new(anon),
            stats: Counters::default(),
            ending,
            scratch: SpinLock::new(scratch),
            copy_refused: Default::default(),
            copy_refused_next: AtomicU64::new(0),
        }
    }

    /// Maps a fresh page of anonymous memory at `page` with `rights`.
    fn anon_page(&self, page: u64, rights: Rights) -> Result<()> {
        let (ds, off) = {
            let mut a = self.anon.lock();
            if let Some(fresh) = a.take_page() {
                fresh
            } else {
                match a.more {
                    Some(alloc) if a.total < ANON_LIMIT => {
                        let ds = alloc.alloc_dataspace(ANON_CHUNK, 0, 12).inspect_err(|e| {
                            line(&format!("no more anonymous memory at {page:#x}: {e}"))
                        })?;
                        a.ds = ds.into_cap();
                        a.size = ANON_CHUNK;
                        a.next = 0;
                        a.total += ANON_CHUNK;
                        a.take_page().ok_or(Error::NoMem)?
                    }
                    _ => {
                        line(&format!(
                            "out of anonymous memory ({} KiB) at {page:#x}",
                            a.total >> 10
                        ));
                        return Err(Error::NoMem);
                    }
                }
            }
        };
        self.map_anon(ds, off, page, rights)
    }

    /// A fresh page of anonymous memory (its dataspace and offset) for
    /// a faulting thread that resolves a zero-fill fault itself: only
    /// when the current chunk has room and no one else holds the lock
    /// (no waiting, no allocation, no IPC in the handler; otherwise the
    /// gate's thread does it). Two threads faulting on one page at once
    /// take a page each: the kernel keeps the first mapping and skips
    /// the second (`Insert_err_exists`), so nothing written is lost; one
    /// page of the chunk goes unused.
    fn take_anon_page(&self) -> Option<(Cap<Dataspace>, u64)> {
        self.anon.try_lock()?.take_page()
    }

    /// Makes a private copy of `valid` bytes at `offset` of `ds` at `page`
    /// with `rights`, through the scratch page (the gate's thread, and the
    /// pager itself): a fresh anonymous page mapped writable at `page`,
    /// the file page read through the scratch window, the rest zeroed.
    fn copy_in_place(
        &self,
        ds: Cap<Dataspace>,
        offset: u64,
        valid: u64,
        page: u64,
        rights: Rights,
    ) -> Result<()> {
        // The copy is written in place: writable first.
        self.anon_page(page, rights | Rights::R | Rights::W)?;
        let scratch = self.scratch.lock();
        let at = *scratch;
        ds.map(offset, at, DsFlags::R, RcvBuf::window(at, 12))?;
        // SAFETY: `page` was just mapped writable here from our anonymous
        // memory and nothing else uses it yet (the faulting thread waits
        // for us); `at` holds the dataspace page, readable, ours while the
        // lock is held; `valid <= PAGE`.
        unsafe {
            core::ptr::copy_nonoverlapping(at as *const u8, page as *mut u8, valid as usize);
            core::ptr::write_bytes((page + valid) as *mut u8, 0, (PAGE - valid) as usize);
        }
        unmap_range(at, PAGE);
        drop(scratch);
        if !rights.contains(Rights::W) {
            write_protect(page);
        }
        Ok(())
    }

    /// Notes that `ds`'s server refused to copy for us (see
    /// [`copy_refused`](Self::copy_refused)).
    fn note_copy_refused(&self, ds: CapIdx) {
        let at = self.copy_refused_next.fetch_add(1, Ordering::Relaxed);
        self.copy_refused[at as usize % self.copy_refused.len()].store(ds.0 | 1, Ordering::Relaxed);
    }

    /// Hands the fault at `pfa` of the instruction at `pc` on to the gate's
    /// thread as page-fault IPC (from the faulting thread's trampoline
    /// handler: what it does not resolve itself); that thread counts it.
    fn to_gate(&self, pfa: u64, pc: u64) -> Result<()> {
        let gate: Cap<PageFault> = Cap::from_idx(self.gate);
        gate.page_fault(pfa, pc, RcvBuf::window(pfa & !(PAGE - 1), 12))?;
        Ok(())
    }

    /// Whether `ds`'s server refused to copy for us before (its entries
    /// are stored with bit 0 set, which no capability index has, so that
    /// the zeroed table matches nothing).
    fn copy_refused(&self, ds: CapIdx) -> bool {
        self.copy_refused
            .iter()
            .any(|r| r.load(Ordering::Relaxed) == ds.0 | 1)
    }

    /// Maps page `off` of the anonymous memory `ds` at `page`.
    fn map_anon(&self, ds: Cap<Dataspace>, off: u64, page: u64, rights: Rights) -> Result<()> {
        ds.map(off, page, DsFlags::from(rights), RcvBuf::window(page, 12))?;
        count(&self.stats.anon_pages, 1);
        Ok(())
    }

    /// Resolves the fault at `pfa` of the instruction at `pc`, as
    /// `origin` says who asks.
    ///
    /// The faulting thread itself ([`Origin::Trampoline`]) resolves only
    /// what may be done twice for one page: mapping a shared dataspace
    /// page (another thread may have mapped it meanwhile: the kernel keeps
    /// the first mapping) or the outer pager's, and a zero-fill page when
    /// it can take one without waiting ([`take_anon_page`](Self::take_anon_page):
    /// a second thread's page for the same address is not mapped, the
    /// kernel keeps the first). Private copies must happen once per page,
    /// and an invalid access ends the program: those it sends to the
    /// gate's thread as page-fault IPC, which serializes them with the
    /// faults of the program's other threads, as without the trampoline.
    pub(crate) fn resolve(&self, pfa: u64, pc: u64, origin: Origin) -> Result<()> {
        let fault = u64::from(origin != Origin::Pager);
        let in_thread = u64::from(origin == Origin::Trampoline);
        let access = Access::from_pfa(pfa);
        let addr = pfa & !7;
        let (decision, bounds, generation) = {
            let map = self.rm.map().lock();
            // The faulting thread must not allocate with the map locked (a
            // fresh heap page would be a fault of its own, which the gate's
            // thread could not serve without this lock): no report here.
            let d = match origin {
                Origin::Trampoline => fault::decide(&map, addr, access).ok(),
                _ => Some(fault::resolve(&map, addr, access, pc)),
            };
            let bounds = match &d {
                Some(Decision::MapShared { region, .. }) => {
                    map.get(*region).map(|r| (r.start, r.end()))
                }
                _ => None,
            };
            (d, bounds, self.rm.generation())
        };
        // A zero-fill page the faulting thread takes itself, if it can
        // without waiting (see `take_anon_page`).
        let fresh = match (&decision, origin) {
            (Some(Decision::Zero { .. }), Origin::Trampoline) => self.take_anon_page(),
            (Some(Decision::CopyPrivate { ds, .. }), Origin::Trampoline)
                if !self.copy_refused(*ds) =>
            {
                self.take_anon_page()
            }
            _ => None,
        };
        let decision = match decision {
            Some(d @ (Decision::MapShared { .. } | Decision::Forward { .. })) => d,
            Some(d @ (Decision::Zero { .. } | Decision::CopyPrivate { .. })) if fresh.is_some() => {
                d
            }
            Some(d) if origin != Origin::Trampoline => d,
            _ => {
                // Invalid accesses, and zero-fill or private copies when
                // the anonymous memory needs more from the allocator or
                // another thread is taking a page: the gate's thread.
                return self.to_gate(pfa, pc);
            }
        };
        // What was mapped into which window: unmapped again below if its
        // region was detached meanwhile (the map is not locked here).
        let window = match decision {
            Decision::Error(_) if self.rm.rescue_for(pc).is_some() => {
                // A rescue jump covers the instruction: a negative reply
                // makes the kernel raise an exception, whose handler
                // (below) resumes the thread at the rescue address.
                count(&self.stats.faults, fault);
                return Err(Error::Fault);
            }
            Decision::Error(report) => {
                // The faulting thread stays blocked until the loader
                // deletes the task.
                count(&self.stats.faults, fault);
                count(&self.stats.invalid, 1);
                self.end(task::STATUS_KILLED, &format!("invalid access: {report}"))
            }
            Decision::Forward { pager, page, .. } => {
                // The outer region manager's memory (ours): it maps into
                // this task through the window.
                let p: Cap<PageFault> = Cap::from_idx(pager);
                p.page_fault(pfa, pc, RcvBuf::window(page, 12))?;
                count(&self.stats.faults, fault);
                count(&self.stats.in_thread, in_thread);
                return Ok(());
            }
            Decision::MapShared {
                ds,
                offset,
                page,
                rights,
                ..
            } => {
                let (start, end) = bounds.unwrap_or((page, page + PAGE));
                let (base, order) = window::around(page, start, end);
                let ds: Cap<Dataspace> = Cap::from_idx(ds);
                let item = ds.map(
                    offset,
                    page,
                    DsFlags::from(rights),
                    RcvBuf::window(base, order),
                )?;
                // Pages mapped: the smaller of what the server sent and
                // the window.
                let got = item.received_order().unwrap_or(12).clamp(12, order);
                count(&self.stats.faults, fault);
                count(&self.stats.in_thread, in_thread);
                count(&self.stats.shared, 1);
                count(&self.stats.shared_pages, 1 << (got - 12));
                (base, 1u64 << order)
            }
            Decision::CopyPrivate {
                ds,
                offset,
                valid,
                page,
                rights,
                ..
            } => {
                let ds: Cap<Dataspace> = Cap::from_idx(ds);
                match fresh {
                    // In the faulting thread: the anonymous memory's
                    // server copies the file page into a fresh page,
                    // which is then mapped. The page is complete before
                    // it is mapped, so a second thread copying the same
                    // page at once cannot overwrite what the first one's
                    // thread wrote since (its mapping is skipped, see
                    // `take_anon_page`).
                    Some((anon, off)) => {
                        if copy_page_in(anon, off, ds, offset, valid).is_err() {
                            // Not the allocator's dataspace (e.g. an l4fs
                            // file): the gate's thread copies, now and
                            // from now on.
                            self.note_copy_refused(ds.idx());
                            return self.to_gate(pfa, pc);
                        }
                        self.map_anon(anon, off, page, rights)?;
                    }
                    None => self.copy_in_place(ds, offset, valid, page, rights)?,
                }
                count(&self.stats.faults, fault);
                count(&self.stats.in_thread, in_thread);
                count(&self.stats.copied, 1);
                (page, PAGE)
            }
            Decision::Zero { page, rights, .. } => {
                match fresh {
                    Some((ds, off)) => self.map_anon(ds, off, page, rights)?,
                    None => self.anon_page(page, rights)?,
                }
                count(&self.stats.faults, fault);
                count(&self.stats.in_thread, in_thread);
                count(&self.stats.zero, 1);
                (page, PAGE)
            }
        };
        if self.rm.generation() != generation {
            // Detached while we mapped: what we mapped may be a page of
            // the region that is gone. Unmap it; if the address is still
            // attached, the next access faults again.
            unmap_range(window.0, window.1);
        }
        Ok(())
    }

    /// The program ended: statistics, then whoever started the task
    /// deletes it.
    fn end(&self, status: i64, why: &str) -> ! {
        let stats = self.stats.snapshot();
        line(&format!("program {why}"));
        line(&format!("fault statistics: {}", stats.line()));
        let told = match self.ending {
            Ending::Loader(loader) => loader.ended(status, stats, why),
            // ned reads the status as an exit code: a killed program
            // must not look like a success.
            Ending::Parent(parent) => parent.signal(SIGNAL_EXIT, if status == 0 { 0 } else { 1 }),
        };
        if let Err(e) = told {
            line(&format!("reporting the end: {e}"));
        }
        l4re::fiasco::sleep_forever()
    }
}

impl PageFaultServer for InPager {
    fn page_fault(
        &self,
        _: &mut Request<'_>,
        pfa: u64,
        pc: u64,
    ) -> Result<Option<l4re::fpage::SndFpage>> {
        // The mapping is made into this task by the dataspace's server;
        // the reply carries nothing.
        self.resolve(pfa, pc, Origin::Ipc).map(|()| None)
    }
}

impl ParentServer for InPager {
    fn signal(&self, _: &mut Request<'_>, sig: u64, val: u64) -> Result<()> {
        if sig != SIGNAL_EXIT {
            return Ok(());
        }
        self.end(val as i64, &format!("exited with status {}", val as i64))
    }
}

impl InPager {
    /// Maps the pages of `[start, end)` writable as the program's first
    /// write would (so the pager can write the program's initial stack).
    pub(crate) fn fault_in_for_write(&self, start: u64, end: u64) -> Result<()> {
        let mut a = start & !(PAGE - 1);
        while a < end {
            self.resolve(a | pager::PFA_WRITE, 0, Origin::Pager)?;
            a += PAGE;
        }
        Ok(())
    }
}

const PROTOCOLS: &[(i64, &str)] = &[
    (pager::LABEL, "page-fault"),
    (pager::EXCEPTION_LABEL, "exception"),
    (<Rm as Protocol>::LABEL, "L4Re::Rm"),
    (<Parent as Protocol>::LABEL, "L4Re::Parent"),
];

impl ServerObject for InPager {
    fn protocols(&self) -> &[(i64, &'static str)] {
        PROTOCOLS
    }

    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        match req.tag().label() {
            pager::LABEL => PageFault::dispatch(self, req),
            pager::EXCEPTION_LABEL => {
                let regs = l4re::fiasco::exception_regs();
                match self.rm.rescue_for(regs.ip) {
                    // `Rm::add_rescue_jump`: resume at the rescue address.
                    Some(jump) => Ok(l4re::fiasco::exception_resume_at(jump.rescue)),
                    None => self.end(task::STATUS_KILLED, &l4re::fiasco::exception_report()),
                }
            }
            l if l == <Rm as Protocol>::LABEL => {
                count(&self.stats.rm_requests, 1);
                Rm::dispatch(&self.rm, req)
            }
            _ => Parent::dispatch(self, req),
        }
    }
}

/// Pulls the program's regions and the anonymous memory from the loader.
fn set_up(loader: Cap<TaskSetup>) -> Result<InPager> {
    let map = Arc::new(SpinLock::new(RegionMap::new(0x1000, 1 << 47)));
    let rm = RmService::new(map, Unmapper);
    let mut index = 0;
    loop {
        let slot = cap::alloc::<Dataspace>()?;
        let (info, item, name) = match loader.region(index, RcvBuf::cap(slot.idx())) {
            Ok(x) => x,
            Err(Error::NoEnt) => break,
            Err(e) => return Err(e),
        };
        let ds: Option<CapIdx> = match item {
            Some(i) if i.cap_received() => Some(slot.into_cap().idx()),
            _ => None,
        };
        let start = rm
            .attach_region(
                info.start,
                info.size,
                info.flags,
                ds,
                info.offset,
                12,
                &name,
            )
            .inspect_err(|e| line(&format!("region {name} at {:#x}: {e}", info.start)))?;
        if ds.is_some() {
            rm.map().lock().set_file_len(start, info.file_len);
        }
        index += 1;
    }
    let slot: OwnedCap<Dataspace> = cap::alloc()?;
    let (size, _) = loader.memory(RcvBuf::cap(slot.idx()))?;
    let anon = Anon {
        ds: slot.into_cap(),
        size,
        next: 0,
        more: None,
        total: size,
    };
    let regions = rm.map().lock().len();
    line(&format!(
        "{regions} regions, {} KiB of anonymous memory",
        size >> 10
    ));
    Ok(InPager {
        rm,
        anon: SpinLock::new(anon),
        stats: Counters::default(),
        ending: Ending::Loader(loader),
        scratch: SpinLock::new(layout::SCRATCH),
        gate: env()
            .get_cap::<IpcGate>("server")
            .ok_or(Error::NoEnt)?
            .idx(),
        copy_refused: Default::default(),
        copy_refused_next: AtomicU64::new(0),
    })
}

fn inpager(_: Args) -> i32 {
    // Started by ned in place of L4Re's `l4re_itas`: the binary to load is
    // named in the `l4re_aux_t`.
    let info = l4re_rt::freestanding::start_info();
    if info.aux().is_some() {
        return crate::itas::run(info);
    }
    let e = env();
    let loader: Cap<TaskSetup> = e.parent().cast();
    if e.get_cap::<IpcGate>("server").is_none() {
        line("no capability \"server\"");
        return 1;
    }
    let pager = match set_up(loader) {
        Ok(p) => p,
        Err(err) => {
            line(&format!("set-up failed: {err}"));
            return 1;
        }
    };
    let mut server = Server::new();
    // The program sends its dataspaces from this very task.
    server.receive_local_ids(true);
    let pager = Arc::new(pager);
    if let Err(err) = server.adopt_gate(task::SERVER_LABEL, pager.clone()) {
        line(&format!("serving the gate \"server\": {err}"));
        return 1;
    }
    // The program's thread takes its faults through the page-fault
    // trampoline: the state in the UTCB slot after the program's, which
    // the loader enables when it starts the thread if its kernel has the
    // trampoline (the KIP is not mapped in this task).
    let trampoline = match crate::itas::prepare(PfTrampolineState::take(), &pager) {
        Ok(prepared) => prepared.address(),
        Err(err) => {
            line(&format!("page-fault trampoline: {err}"));
            return 1;
        }
    };
    if let Err(err) = loader.ready(trampoline) {
        line(&format!("ready: {err}"));
        return 1;
    }
    match server.run() {
        Ok(()) => 0,
        Err(err) => {
            line(&format!("server loop: {err}"));
            1
        }
    }
}

l4re_rt::entry!(main = inpager);
