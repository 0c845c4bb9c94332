//! The internal pager's program (see the crate documentation).

use alloc::format;
use alloc::sync::Arc;
use core::cell::{Cell, RefCell};

use l4_sys as sys;
use l4pager::fault::{self, Access, Decision};
use l4pager::region::{Region, RegionMap};
use l4pager::rm::{RmBackend, RmService};
use l4pager::sync::SpinLock;
use l4pager::task::{self, PagerStats, TaskSetup, TaskSetupClient, layout};
use l4re::cap::{self, CapIdx, IpcGate, OwnedCap};
use l4re::env::{env, log_line};
use l4re::fpage::{RcvBuf, Rights};
use l4re::msg::MsgTag;
use l4re::proto::dataspace::map_flags;
use l4re::proto::parent::SIGNAL_EXIT;
use l4re::proto::{Dataspace, DataspaceClient, PageFault, Parent, ParentServer, Rm};
use l4re::proto::{PageFaultServer, pager};
use l4re::rpc::{Protocol, Request};
use l4re::server::{Server, ServerObject};
use l4re::utcb::Utcb;
use l4re::{Cap, Error, Result};
use l4re_rt::Args;

use crate::window::{self, PAGE};

/// `L4_PROTO_EXCEPTION`.
const LABEL_EXCEPTION: i64 = -5;

fn line(text: &str) {
    log_line(&format!("inpager: {text}"));
}

/// Unmaps `[start, start + size)` from this task (and whatever was mapped
/// on from it), in naturally aligned flexpages.
fn unmap_range(start: u64, size: u64) {
    let mut addr = start & !(PAGE - 1);
    let end = start.saturating_add(size);
    while addr < end {
        let mut order = 12u32;
        while order < 40 && addr % (1 << (order + 1)) == 0 && addr + (1 << (order + 1)) <= end {
            order += 1;
        }
        Utcb::with(|_| {
            // SAFETY: an unmap in our own task of a range the region map
            // no longer covers; the UTCB borrow makes us its only user.
            unsafe {
                sys::l4_task_unmap(
                    sys::L4_BASE_TASK_CAP as _,
                    sys::l4_fpage(addr, order, sys::L4_FPAGE_RWX as _),
                    sys::L4_FP_ALL_SPACES as _,
                )
            };
        });
        addr += 1 << order;
    }
}

/// Removes the write right from the page at `page` (mapped writable only
/// to be filled).
fn write_protect(page: u64) {
    Utcb::with(|_| {
        // SAFETY: revokes only the W right of one page of our own task.
        unsafe {
            sys::l4_task_unmap(
                sys::L4_BASE_TASK_CAP as _,
                sys::l4_fpage(page, 12, sys::L4_FPAGE_W as _),
                sys::L4_FP_ALL_SPACES as _,
            )
        };
    });
}

/// What a detach means here: the pages go.
struct Unmapper;

impl RmBackend for Unmapper {
    fn attached(&self, _: &Region) -> Result<()> {
        Ok(())
    }
    fn detached(&self, _: &Region, start: u64, size: u64) {
        unmap_range(start, size);
    }
}

/// Anonymous memory from the loader, handed out page by page.
struct Anon {
    ds: Cap<Dataspace>,
    size: u64,
    next: u64,
}

/// The object behind the gate `"server"`.
struct InPager {
    rm: RmService<Unmapper>,
    anon: RefCell<Anon>,
    stats: Cell<PagerStats>,
    loader: Cap<TaskSetup>,
}

impl InPager {
    fn update(&self, f: impl FnOnce(&mut PagerStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Maps a fresh page of anonymous memory at `page` with `rights`.
    fn anon_page(&self, page: u64, rights: Rights) -> Result<()> {
        let (ds, off) = {
            let mut a = self.anon.borrow_mut();
            if a.next + PAGE > a.size {
                line(&format!(
                    "out of anonymous memory ({} KiB) at {page:#x}",
                    a.size >> 10
                ));
                return Err(Error::NoMem);
            }
            a.next += PAGE;
            (a.ds, a.next - PAGE)
        };
        ds.map(off, page, rights.bits() as u64, RcvBuf::window(page, 12))?;
        self.update(|s| s.anon_pages += 1);
        Ok(())
    }

    fn resolve(&self, pfa: u64, pc: u64) -> Result<()> {
        let access = Access::from_pfa(pfa);
        let addr = pfa & !7;
        let (decision, bounds) = {
            let map = self.rm.map().lock();
            let d = fault::resolve(&map, addr, access, pc);
            let bounds = map.lookup(addr).map(|r| (r.start, r.end()));
            (d, bounds)
        };
        match decision {
            Decision::Error(report) => {
                // The faulting thread stays blocked until the loader
                // deletes the task.
                self.update(|s| s.invalid += 1);
                self.end(task::STATUS_KILLED, &format!("invalid access: {report}"))
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
                    rights.bits() as u64,
                    RcvBuf::window(base, order),
                )?;
                // Pages mapped: the smaller of what the server sent and
                // the window.
                let got = item.received_order().unwrap_or(12).clamp(12, order);
                self.update(|s| {
                    s.shared += 1;
                    s.shared_pages += 1 << (got - 12);
                });
                Ok(())
            }
            Decision::CopyPrivate {
                ds,
                offset,
                valid,
                page,
                rights,
                ..
            } => {
                // The copy is written in place: writable first.
                self.anon_page(page, rights | Rights::R | Rights::W)?;
                let ds: Cap<Dataspace> = Cap::from_idx(ds);
                ds.map(
                    offset,
                    layout::SCRATCH,
                    map_flags::R,
                    RcvBuf::window(layout::SCRATCH, 12),
                )?;
                // SAFETY: `page` was just mapped writable here from our
                // anonymous memory and nothing else uses it yet (the
                // faulting thread waits for our reply); SCRATCH holds the
                // dataspace page, readable; `valid <= PAGE`.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        layout::SCRATCH as *const u8,
                        page as *mut u8,
                        valid as usize,
                    );
                    core::ptr::write_bytes((page + valid) as *mut u8, 0, (PAGE - valid) as usize);
                }
                unmap_range(layout::SCRATCH, PAGE);
                if !rights.contains(Rights::W) {
                    write_protect(page);
                }
                self.update(|s| s.copied += 1);
                Ok(())
            }
            Decision::Zero { page, rights, .. } => {
                self.anon_page(page, rights)?;
                self.update(|s| s.zero += 1);
                Ok(())
            }
        }
    }

    /// The program ended: statistics, then the loader deletes the task.
    fn end(&self, status: i64, why: &str) -> ! {
        let stats = self.stats.get();
        line(&format!("program {why}"));
        line(&format!("fault statistics: {}", stats.line()));
        if let Err(e) = self.loader.ended(status, stats, why) {
            line(&format!("reporting the end to the loader: {e}"));
        }
        loop {
            // SAFETY: a receive from nobody without timeout: sleeps.
            unsafe { sys::l4_ipc_sleep(sys::l4_timeout_t { raw: 0 }) };
        }
    }
}

impl PageFaultServer for InPager {
    fn page_fault(
        &self,
        _: &mut Request<'_>,
        pfa: u64,
        pc: u64,
    ) -> Result<Option<l4re::fpage::SndFpage>> {
        self.update(|s| s.faults += 1);
        // The mapping is made into this task by the dataspace's server;
        // the reply carries nothing.
        self.resolve(pfa, pc).map(|()| None)
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

const PROTOCOLS: &[(i64, &str)] = &[
    (pager::LABEL, "page-fault"),
    (LABEL_EXCEPTION, "exception"),
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
            LABEL_EXCEPTION => self.end(task::STATUS_KILLED, &l4re::fiasco::exception_report()),
            l if l == <Rm as Protocol>::LABEL => {
                self.update(|s| s.rm_requests += 1);
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
    };
    let regions = rm.map().lock().len();
    line(&format!(
        "{regions} regions, {} KiB of anonymous memory",
        size >> 10
    ));
    Ok(InPager {
        rm,
        anon: RefCell::new(anon),
        stats: Cell::new(PagerStats::default()),
        loader,
    })
}

fn inpager(_: Args) -> i32 {
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
    // The registry takes `Arc`s; this program has one thread, and the
    // object never leaves it.
    #[allow(clippy::arc_with_non_send_sync)]
    let pager = Arc::new(pager);
    if let Err(err) = server.adopt_gate(task::SERVER_LABEL, pager) {
        line(&format!("serving the gate \"server\": {err}"));
        return 1;
    }
    if let Err(err) = loader.ready() {
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
