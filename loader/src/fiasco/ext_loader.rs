//! `ext-loader`'s pager loop (see [the module](super)): every loaded task
//! is an object of one [`Server`], reached through the gate in the task's
//! pager slot; the gate's label names the task. The object speaks the
//! page-fault protocol, exceptions, `L4Re::Parent` and (from an internal
//! pager) [`TaskSetup`]. What ends a task is not answered
//! ([`Error::NoReply`]); the loop's hook then deletes the task and starts
//! the next program of a `--sequential` run.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::RefCell;

use l4fs_api::{FsOps, FsOpsClient, mode as fs_mode};
use l4pager::fault::{self, Access, Decision};
use l4pager::region::{Backing, RegionMap};
use l4pager::task::{self, PagerStats, RegionInfo, TaskSetup, TaskSetupServer, layout};
use l4re::cap::{self, CapIdx, CapRights, IpcGate, OwnedCap, Task, Thread, Untyped};
use l4re::env::{env, log_line};
use l4re::fiasco::mem::Region;
use l4re::fpage::{Fpage, MapType, RcvBuf, Rights, SndFpage};
use l4re::ipc::Timeout;
use l4re::msg::ReceivedCap;
use l4re::msg::{LongBytes, MsgTag};
use l4re::proto::dataspace::Flags as DsFlags;
use l4re::proto::parent::SIGNAL_EXIT;
use l4re::proto::rm::{Flags as RmFlags, PageIn, RangeEntry, RangeList};
use l4re::proto::{Dataspace, DataspaceClient, Namespace, PageFault, PageFaultServer, Parent};
use l4re::proto::{ParentServer, pager};
use l4re::proto::{Rm, RmServer};
use l4re::rpc::{Protocol, Request};
use l4re::server::{Server, ServerObject};
use l4re::{Cap, Error};

use super::check::{End, FaultStats, Record, checks, tap_block};
use super::options::{self, Attach, Job, Source};
use super::task::{Image, Planned, inpager_stack, map_cap, query, regions_line, start_thread};
use super::{
    ANON_SIZE, CHILD_PAGER_SLOT, INPAGER_PAGER_SLOT, INPAGER_THREAD_SLOT, L4RE_UTCB_LOG2,
    LoaderError, POOL_PAGES, PROGRAM_PF_TRAMPOLINE, PROGRAM_THREAD_SLOT, PROGRAM_UTCB, STACK_SIZE,
    STACK_TOP, UTCB_AREA, call,
};
use crate::elf::PAGE;
use l4re::kobj::{Kip, PreparedPfTrampoline};

/// A program that faults this often on one page without progress is
/// ended (a mapping the kernel keeps refusing).
const MAX_REPEATS: u32 = 8;

fn line(text: &str) {
    log_line(&format!("ext-loader: {text}"));
}

/// Memory of this task to answer faults from, handed out page by page: a
/// [`Region`] (every page present, attached with X: a mapping passed on
/// has at most the rights of its source, and programs execute their text
/// from it).
struct Pool {
    region: Region,
    free: Vec<u64>,
}

impl Pool {
    fn new(pages: u64) -> Result<Self, LoaderError> {
        let region = Region::new(pages * PAGE, 12).map_err(call("memory pool"))?;
        let free = (0..pages).rev().map(|i| region.addr() + i * PAGE).collect();
        Ok(Pool { region, free })
    }

    fn full(&self) -> bool {
        self.free.len() as u64 == self.region.size() / PAGE
    }
}

/// One loaded program.
struct Child {
    name: String,
    task: OwnedCap<Task>,
    thread: OwnedCap<Thread>,
    gate: OwnedCap<IpcGate>,
    image: Image,
    map: RegionMap,
    /// Pool pages mapped into the task (returned when it ends).
    frames: Vec<u64>,
    stats: FaultStats,
    last_fault: (u64, u32),
    /// Pages with initial content (an L4Re stack), by address.
    prefilled: BTreeMap<u64, Vec<u8>>,
    /// The program, when an internal pager pages it.
    internal: Option<Internal>,
    /// An ordinary L4Re program paged by the loader itself, which is then
    /// also its region map.
    external: Option<External>,
}

/// What the loader keeps for an ordinary L4Re program it pages itself
/// (`--l4re` without `--inpager`): the dataspaces the program attached
/// through `L4Re::Rm` are mirrored in areas of this task, whose pages the
/// loader maps on to the program (shared: the same pages), or copies for
/// private regions.
#[derive(Default)]
struct External {
    /// Region start → where its mirror begins in this task.
    mirrors: BTreeMap<u64, u64>,
    /// The areas of this task reserved for mirrors, with their sizes
    /// (unmapped and freed with the task).
    areas: Vec<(u64, u64)>,
    /// The dataspace capabilities the program attached (released with the
    /// task).
    caps: Vec<OwnedCap<Untyped>>,
    /// Pool frames mapped into the program, by the program's page.
    frames: BTreeMap<u64, u64>,
    /// Rescue jumps the program registered (`Rm::add_rescue_jump`).
    rescue: l4pager::rm::RescueJumps,
}

impl External {
    /// The rescue address for a fault of the instruction at `pc`, if a
    /// rescue jump covers it.
    fn rescue_for(&self, pc: u64) -> Option<u64> {
        self.rescue.covering(pc).map(|j| j.rescue)
    }

    /// Where the mirror of the program's page `page` lies in this task.
    fn mirror_page(&self, map: &RegionMap, page: u64) -> Result<u64, String> {
        let r = map
            .lookup(page)
            .ok_or_else(|| format!("no region at {page:#x}"))?;
        let base = self
            .mirrors
            .get(&r.start)
            .ok_or_else(|| format!("region {r} has no mirror"))?;
        Ok(base + (page - r.start))
    }
}

/// A program paged by an internal pager (which is what [`Child`]'s own
/// image, region map and thread then are).
struct Internal {
    /// The program's file (the internal pager has its own capability of
    /// it; detached here when the task ends); `None` for an ordinary L4Re
    /// program, which the internal pager opens itself.
    _program: Option<Image>,
    /// An ordinary L4Re program (`--l4re`): the internal pager runs as
    /// L4Re's in-task pager, this loader is its outer region map.
    l4re: bool,
    entry: u64,
    /// File pages the program could fault.
    loadable_pages: u64,
    /// Its regions, the dataspace behind each (its file, or one of
    /// `attached`), and their names.
    regions: Vec<(RegionInfo, Option<CapIdx>, String)>,
    /// Dataspaces attached with `--attach` that the loader looked up,
    /// held until the task ends (those of its own environment are not
    /// here).
    _attached: Vec<OwnedCap<Untyped>>,
    /// Anonymous memory for the internal pager.
    anon: OwnedCap<Dataspace>,
    /// The gate "server".
    server: OwnedCap<IpcGate>,
    /// The program's thread, once started.
    thread: Option<OwnedCap<Thread>>,
    /// What the internal pager reported at the end.
    pager_stats: Option<PagerStats>,
}

impl Child {
    /// A program started as `name` in its task, paged by this loader from
    /// the planned file (nothing prefilled, no internal pager).
    fn new(
        name: &str,
        (task, thread, gate): (OwnedCap<Task>, OwnedCap<Thread>, OwnedCap<IpcGate>),
        planned: Planned,
    ) -> Self {
        let Planned { image, plan, map } = planned;
        Child {
            name: name.to_string(),
            task,
            thread,
            gate,
            image,
            map,
            frames: Vec::new(),
            stats: FaultStats::new(plan.loadable_pages),
            last_fault: (u64::MAX, 0),
            prefilled: BTreeMap::new(),
            internal: None,
            external: None,
        }
    }

    /// Resolves a fault at `pfa` (raised at `pc`) with a page of `pool`
    /// filled for it: returns the page and where it goes with which
    /// rights, or the report that ends the task.
    fn resolve(&mut self, pool: &mut Pool, pfa: u64, pc: u64) -> Result<SndFpage, String> {
        let access = Access::from_pfa(pfa);
        let addr = pfa & !7;
        let page = addr & !(PAGE - 1);
        if self.last_fault.0 == pfa {
            self.last_fault.1 += 1;
            if self.last_fault.1 >= MAX_REPEATS {
                self.stats.record_invalid();
                return Err(format!(
                    "{access} fault at {addr:#x} (pc {pc:#x}) repeats {MAX_REPEATS} times: the mapping does not hold"
                ));
            }
        } else {
            self.last_fault = (pfa, 0);
        }
        let decision = fault::resolve(&self.map, addr, access, pc);
        let own_file = self.image.ds.idx();
        let mut mirror_src = None;
        if let Some(ext) = &self.external {
            match decision {
                Decision::MapShared {
                    ds, offset, rights, ..
                } if ds != own_file => {
                    let at = ext.mirror_page(&self.map, page)?;
                    Cap::<Dataspace>::from_idx(ds)
                        .map(offset, at, DsFlags::from(rights), RcvBuf::window(at, 12))
                        .map_err(|e| {
                            format!("{access} fault at {addr:#x}: the dataspace's map failed: {e}")
                        })?;
                    self.stats.record(page, true);
                    return Ok(SndFpage::mem(
                        Fpage::mem(at, 12, rights),
                        page,
                        MapType::Map,
                    ));
                }
                Decision::CopyPrivate { ds, offset, .. } if ds != own_file => {
                    let at = ext.mirror_page(&self.map, page)?;
                    Cap::<Dataspace>::from_idx(ds)
                        .map(offset, at, DsFlags::R, RcvBuf::window(at, 12))
                        .map_err(|e| {
                            format!("{access} fault at {addr:#x}: the dataspace's map failed: {e}")
                        })?;
                    mirror_src = Some(at);
                }
                _ => {}
            }
        }
        let (valid, offset, rights, from_file) = match decision {
            Decision::Error(report) => {
                self.stats.record_invalid();
                return Err(report.to_string());
            }
            Decision::Forward { page, .. } => {
                self.stats.record_invalid();
                return Err(format!("fault at {page:#x} in a region of another pager"));
            }
            Decision::Zero { rights, .. } => (0, 0, rights, false),
            Decision::MapShared { offset, rights, .. } => (PAGE, offset, rights, true),
            Decision::CopyPrivate {
                offset,
                valid,
                rights,
                ..
            } => (valid, offset, rights, true),
        };
        let Some(own) = pool.free.pop() else {
            self.stats.record_invalid();
            return Err(format!(
                "out of memory at {addr:#x} (pool of {POOL_PAGES} pages)"
            ));
        };
        let img = self.image.bytes();
        let from = (offset as usize).min(img.len());
        let n = (valid as usize).min(img.len() - from);
        // SAFETY: a mirror page was just mapped readable in this task from
        // the dataspace, and stays mapped while the copy is made.
        let mirrored = mirror_src
            .map(|at| unsafe { core::slice::from_raw_parts(at as *const u8, valid as usize) });
        let src = match (mirrored, self.prefilled.get(&page)) {
            (Some(m), _) => m,
            (None, Some(content)) if !from_file => &content[..],
            _ => &img[from..from + n],
        };
        let at = own - pool.region.addr();
        pool.region
            .write(at, src)
            .and_then(|()| {
                pool.region
                    .fill(at + src.len() as u64, PAGE as usize - src.len(), 0)
            })
            .map_err(|e| format!("filling a pool page failed: {e}"))?;
        self.frames.push(own);
        if let Some(ext) = &mut self.external {
            ext.frames.insert(page, own);
        }
        self.stats.record(page, from_file);
        Ok(SndFpage::mem(
            Fpage::mem(own, 12, rights),
            page,
            MapType::Map,
        ))
    }

    /// Deletes the program's thread and task (and with them every mapping
    /// of our pages into it) and the gates; returns its pages to the pool.
    /// Its images are detached and its capability slots freed when it is
    /// dropped.
    fn delete(&mut self, pool: &mut Pool) {
        let mut objects = alloc::vec![self.thread.idx(), self.task.idx(), self.gate.idx()];
        if let Some(inner) = &self.internal {
            objects.push(inner.server.idx());
            objects.push(inner.anon.idx());
            objects.extend(inner.thread.as_ref().map(|t| t.idx()));
        }
        // All at once: the kernel waits for a grace period once per call
        // that destroys objects (six calls took 18 M instructions, each
        // time a program ended). Nothing to do about an object that is
        // gone already.
        let _ = env().task().delete_objs(&objects);
        pool.free.append(&mut self.frames);
        if let Some(ext) = self.external.take() {
            for (a, size) in ext.areas {
                l4re::fiasco::mem::unmap_range(a, size);
                let _ = l4re::fiasco::mem::free_area(a);
            }
        }
    }
}

/// What every task's object shares with the loop.
struct Shared {
    pool: RefCell<Pool>,
    /// Tasks that ended since the loop's hook last looked (by label).
    ended: RefCell<Vec<(u64, End)>>,
}

/// A loaded task as an object of the loader's server.
struct Loaded {
    label: u64,
    child: RefCell<Child>,
    shared: Rc<Shared>,
}

impl Loaded {
    /// Ends the task (the hook deletes it): the request is not answered.
    fn end(&self, end: End) -> Error {
        self.shared.ended.borrow_mut().push((self.label, end));
        Error::NoReply
    }
}

impl PageFaultServer for Loaded {
    fn page_fault(&self, _: &mut Request<'_>, pfa: u64, pc: u64) -> l4re::Result<Option<SndFpage>> {
        let resolved = self
            .child
            .borrow_mut()
            .resolve(&mut self.shared.pool.borrow_mut(), pfa, pc);
        match resolved {
            Ok(item) => Ok(Some(item)),
            // Inside a registered rescue range: a negative answer makes the
            // kernel raise an exception, which resumes the thread there.
            Err(_)
                if self
                    .child
                    .borrow()
                    .external
                    .as_ref()
                    .is_some_and(|x| x.rescue_for(pc).is_some()) =>
            {
                Err(Error::Fault)
            }
            Err(report) => Err(self.end(End::Ended(format!("invalid access: {report}")))),
        }
    }
}

impl ParentServer for Loaded {
    fn signal(&self, _: &mut Request<'_>, sig: u64, val: u64) -> l4re::Result<()> {
        if sig != SIGNAL_EXIT {
            return Ok(());
        }
        Err(self.end(End::Exited(val)))
    }
}

impl TaskSetupServer for Loaded {
    fn region(
        &self,
        _: &mut Request<'_>,
        index: u64,
    ) -> l4re::Result<(RegionInfo, Option<SndFpage>, String)> {
        let child = self.child.borrow();
        let inner = child.internal.as_ref().ok_or(Error::BadProto)?;
        let (info, ds, name) = inner.regions.get(index as usize).ok_or(Error::NoEnt)?;
        let item = ds.map(|ds| SndFpage::cap(ds, CapRights::RWS, MapType::Map));
        Ok((*info, item, name.clone()))
    }

    fn memory(&self, _: &mut Request<'_>) -> l4re::Result<(u64, SndFpage)> {
        let child = self.child.borrow();
        let inner = child.internal.as_ref().ok_or(Error::BadProto)?;
        Ok((
            ANON_SIZE,
            SndFpage::cap(inner.anon.idx(), CapRights::RWS, MapType::Map),
        ))
    }

    fn ready(&self, _: &mut Request<'_>, pf_trampoline: u64) -> l4re::Result<()> {
        let mut child = self.child.borrow_mut();
        let task = child.task.cap();
        let inner = child.internal.as_mut().ok_or(Error::BadProto)?;
        if inner.thread.is_some() {
            return Err(Error::Exist);
        }
        // The trampoline state may only be the UTCB slot after the
        // program's (the pager took it from its environment); it is used
        // where the kernel has the trampoline.
        let trampoline = match pf_trampoline {
            0 => None,
            PROGRAM_PF_TRAMPOLINE => {
                Kip::has_feature("pf_tramp").then(|| PreparedPfTrampoline::at(pf_trampoline))
            }
            _ => return Err(Error::Inval),
        };
        let thread = start_thread(
            task,
            CHILD_PAGER_SLOT,
            PROGRAM_UTCB,
            trampoline,
            inner.entry,
            STACK_TOP,
        )
        .map_err(|_| Error::NoMem)?;
        map_cap(
            task,
            thread.idx(),
            PROGRAM_THREAD_SLOT,
            "map program thread",
        )
        .map_err(|_| Error::NoMem)?;
        inner.thread = Some(thread);
        Ok(())
    }

    fn ended(
        &self,
        _: &mut Request<'_>,
        status: i64,
        stats: PagerStats,
        why: String,
    ) -> l4re::Result<()> {
        let mut child = self.child.borrow_mut();
        let inner = child.internal.as_mut().ok_or(Error::BadProto)?;
        inner.pager_stats = Some(stats);
        drop(child);
        Err(self.end(if why.starts_with("exited") {
            End::Exited(status as u64)
        } else {
            End::Ended(why)
        }))
    }
}

/// The region map of a task: for an ordinary L4Re program the loader
/// pages itself (`--l4re` without `--inpager`) the program's own
/// (`l4pager::rm` rules over the task's region map, with mirrors of the
/// attached dataspaces); for an internal pager running as L4Re's in-task
/// pager (`--l4re` with `--inpager`) the outer region map, which lists the
/// internal pager's own regions, the KIP and the UTCB area and changes
/// nothing. Other tasks have none.
impl RmServer for Loaded {
    #[allow(clippy::too_many_arguments)]
    fn attach(
        &self,
        _: &mut Request<'_>,
        start: u64,
        size: u64,
        fl: RmFlags,
        mem: Option<ReceivedCap>,
        offs: u64,
        align: u8,
        client_cap: u64,
        name: String,
        _: u64,
    ) -> l4re::Result<u64> {
        let mut child = self.child.borrow_mut();
        let child = &mut *child;
        let ext = child.external.as_mut().ok_or(Error::NoSys)?;
        let mut ds = mem.map(|c| c.idx);
        let wants_ds = !fl
            .intersects(RmFlags::RESERVED | RmFlags::KERNEL | RmFlags::PAGER | RmFlags::ANONYMOUS)
            && fl.intersects(RmFlags::RWX);
        if ds.is_none() && wants_ds && CapIdx(client_cap).is_valid() {
            // L4Re's C API sent the dataspace without rights, so no
            // capability came: take it from the program's own slot
            // (`client_cap`), which this loader can map out of its task.
            let slot = cap::alloc::<Untyped>()?;
            env()
                .task()
                .map_obj(
                    child.task.cap(),
                    CapIdx(client_cap),
                    CapRights::RWS,
                    slot.idx(),
                )
                .map_err(|_| Error::Inval)?;
            ds = Some(slot.into_cap().idx());
        }
        let mut fl = fl;
        let mut offs = offs;
        let plain = !fl.intersects(RmFlags::RESERVED | RmFlags::KERNEL | RmFlags::PAGER);
        if plain && (ds.is_none() || fl.contains(RmFlags::ANONYMOUS)) && fl.intersects(RmFlags::RWX)
        {
            // Anonymous memory: a dataspace of its own from our allocator,
            // not the pool (which is for the loader's small programs).
            let bytes = size.checked_next_multiple_of(PAGE).ok_or(Error::Inval)?;
            let anon = env().mem_alloc().alloc_dataspace(bytes, 0, 12)?;
            ds = Some(anon.into_cap().idx());
            fl &= !(RmFlags::ANONYMOUS | RmFlags::PRIVATE);
            offs = 0;
        }
        let at =
            match l4pager::rm::attach_to(&mut child.map, start, size, fl, ds, offs, align, &name) {
                Ok(at) => at,
                Err(e) => {
                    // A dataspace made above (or received) is not kept.
                    if let Some(ds) = ds {
                        drop(OwnedCap::<Untyped>::from_cap(Cap::from_idx(ds)));
                    }
                    return Err(e);
                }
            };
        let region = child.map.lookup(at).cloned().ok_or(Error::Fault)?;
        if let Backing::File { ds, .. } = region.backing {
            // The dataspace's pages come to the program through a mirror
            // in this task.
            match l4re::fiasco::mem::reserve_area(region.size, 12) {
                Ok(area) => {
                    ext.mirrors.insert(region.start, area);
                    ext.areas.push((area, region.size));
                    // The server handed us the slot it received the cap in.
                    ext.caps.push(OwnedCap::from_cap(Cap::from_idx(ds)));
                }
                Err(e) => {
                    let _ = child.map.detach(region.start, region.size);
                    return Err(e);
                }
            }
        }
        Ok(at)
    }
    fn detach(
        &self,
        _: &mut Request<'_>,
        addr: u64,
        size: u64,
        _: u32,
    ) -> l4re::Result<l4re::rpc::WithCode<l4re::proto::rm::DetachedRange>> {
        let mut child = self.child.borrow_mut();
        let child = &mut *child;
        let ext = child.external.as_mut().ok_or(Error::NoSys)?;
        let d = child.map.detach(addr, size)?;
        let end = d.start + d.size;
        // The pool's pages there: revoked from the program, back to the pool.
        let pages: Vec<(u64, u64)> = ext
            .frames
            .range(d.start..end)
            .map(|(p, f)| (*p, *f))
            .collect();
        let mut pool = self.shared.pool.borrow_mut();
        for (p, frame) in pages {
            ext.frames.remove(&p);
            let _ = l4re::fiasco::mem::unmap(frame, 12, Rights::RWX, false);
            if let Some(i) = child.frames.iter().position(|f| *f == frame) {
                child.frames.swap_remove(i);
            }
            pool.free.push(frame);
        }
        // The mirror's pages there: unmapped here and so from the program.
        if let Some(base) = ext.mirrors.remove(&d.region.start) {
            l4re::fiasco::mem::unmap_range(base + (d.start - d.region.start), d.size);
            // What is left of the region keeps its part of the mirror.
            for piece in child.map.iter() {
                if piece.start >= d.region.start
                    && piece.end() <= d.region.end()
                    && !ext.mirrors.contains_key(&piece.start)
                {
                    ext.mirrors
                        .insert(piece.start, base + (piece.start - d.region.start));
                }
            }
        }
        let code = l4pager::rm::detach_code(&d, true);
        let mem = match d.region.backing {
            Backing::File { ds, .. } => ds.0,
            _ => CapIdx::INVALID.0,
        };
        Ok(l4re::rpc::WithCode(
            code,
            l4re::proto::rm::DetachedRange {
                start: d.start,
                size: d.size,
                mem,
            },
        ))
    }
    fn find(&self, _: &mut Request<'_>, addr: u64, _: u64) -> l4re::Result<l4re::proto::rm::Found> {
        let child = self.child.borrow();
        if child.external.is_none() {
            return Err(Error::NoSys);
        }
        let r = child.map.lookup(addr).ok_or(Error::NoEnt)?;
        Ok(l4pager::rm::found(r))
    }
    fn reserve_area(
        &self,
        _: &mut Request<'_>,
        start: u64,
        size: u64,
        fl: RmFlags,
        align: u8,
    ) -> l4re::Result<u64> {
        let mut child = self.child.borrow_mut();
        if child.external.is_none() {
            return Err(Error::NoSys);
        }
        l4pager::rm::reserve_area_in(&mut child.map, start, size, fl, align)
    }
    fn free_area(&self, _: &mut Request<'_>, addr: u64) -> l4re::Result<()> {
        let mut child = self.child.borrow_mut();
        if child.external.is_none() {
            return Err(Error::NoSys);
        }
        Ok(child.map.free_area(addr)?)
    }
    fn get_regions(&self, _: &mut Request<'_>, start: u64) -> l4re::Result<RangeList> {
        let child = self.child.borrow();
        if child.external.is_some() {
            return Ok(l4pager::rm::regions_from(&child.map, start));
        }
        if !child.internal.as_ref().is_some_and(|i| i.l4re) {
            return Err(Error::NoSys);
        }
        let entry = |s: u64, size: u64, flags: RmFlags| RangeEntry {
            start: s,
            end: s + size - 1,
            flags,
        };
        let mut list: Vec<RangeEntry> = child
            .map
            .iter()
            .map(|r| entry(r.start, r.size, RmFlags::from(r.rights)))
            .collect();
        list.push(entry(
            crate::l4re_start::DEFAULT_KIP_ADDR,
            PAGE,
            RmFlags::R | RmFlags::KERNEL,
        ));
        list.push(entry(
            UTCB_AREA,
            1 << L4RE_UTCB_LOG2,
            RmFlags::RW | RmFlags::KERNEL,
        ));
        list.sort_by_key(|e| e.start);
        Ok(RangeList(
            list.into_iter()
                .filter(|e| e.start >= start)
                .take(RangeList::MAX)
                .collect(),
        ))
    }
    fn get_areas(&self, _: &mut Request<'_>, start: u64) -> l4re::Result<RangeList> {
        let child = self.child.borrow();
        if child.external.is_none() {
            return Ok(RangeList(Vec::new()));
        }
        Ok(l4pager::rm::areas_from(&child.map, start))
    }
    fn get_info(&self, _: &mut Request<'_>, addr: u64) -> l4re::Result<(String, u64)> {
        let child = self.child.borrow();
        if child.external.is_none() {
            return Err(Error::NoSys);
        }
        l4pager::rm::info(&child.map, addr)
    }
    fn add_rescue_jump(
        &self,
        _: &mut Request<'_>,
        begin: u64,
        end: u64,
        rescue: u64,
    ) -> l4re::Result<()> {
        let mut child = self.child.borrow_mut();
        let ext = child.external.as_mut().ok_or(Error::NoSys)?;
        ext.rescue.add(begin, end, rescue)
    }
    fn remove_rescue_jump(&self, _: &mut Request<'_>, pc: u64) -> l4re::Result<()> {
        let mut child = self.child.borrow_mut();
        let ext = child.external.as_mut().ok_or(Error::NoSys)?;
        ext.rescue.remove(pc)
    }
    fn page_in(&self, _: &mut Request<'_>, _: u64, _: u64, _: u16) -> l4re::Result<PageIn> {
        Err(Error::NoSys)
    }
}

const PROTOCOLS: &[(i64, &str)] = &[
    (pager::LABEL, "page-fault"),
    (pager::EXCEPTION_LABEL, "exception"),
    (<Parent as Protocol>::LABEL, "L4Re::Parent"),
    (task::LABEL, "TaskSetup"),
    (<Rm as Protocol>::LABEL, "L4Re::Rm"),
];

impl ServerObject for Loaded {
    fn protocols(&self) -> &[(i64, &'static str)] {
        PROTOCOLS
    }

    fn dispatch(&self, req: &mut Request<'_>) -> l4re::Result<MsgTag> {
        match req.tag().label() {
            pager::LABEL => PageFault::dispatch(self, req),
            pager::EXCEPTION_LABEL => {
                let regs = l4re::fiasco::exception_regs();
                let rescue = self
                    .child
                    .borrow()
                    .external
                    .as_ref()
                    .and_then(|x| x.rescue_for(regs.ip));
                match rescue {
                    Some(at) => Ok(l4re::fiasco::exception_resume_at(at)),
                    None => Err(self.end(End::Ended(l4re::fiasco::exception_report()))),
                }
            }
            task::LABEL => TaskSetup::dispatch(self, req),
            l if l == <Rm as Protocol>::LABEL => Rm::dispatch(self, req),
            _ => Parent::dispatch(self, req),
        }
    }
}

/// Loads `path` and starts it with gate label `label`.
fn load(ns: Cap<Namespace>, path: &str, label: u64) -> Result<Child, LoaderError> {
    let planned = Planned::open(ns, path, STACK_TOP, STACK_SIZE)?;
    line(&format!(
        "{path}: entry {:#x}, {} loadable file pages, regions: {}",
        planned.plan.entry,
        planned.plan.loadable_pages,
        regions_line(&planned.map)
    ));
    let start = || {
        let (task, gate) = super::task::create_task(label, CHILD_PAGER_SLOT, 12)?;
        let thread = start_thread(
            task.cap(),
            CHILD_PAGER_SLOT,
            UTCB_AREA,
            None,
            planned.plan.entry,
            STACK_TOP,
        )?;
        Ok((task, thread, gate))
    };
    let caps = start().map_err(|e: LoaderError| e.of(path))?;
    line(&format!("{path}: started in a new task"));
    Ok(Child::new(path, caps, planned))
}

/// The program's regions as the internal pager attaches them, plus what
/// it must keep free: its own range and the UTCB area.
fn program_regions(map: &RegionMap) -> Vec<(RegionInfo, Option<CapIdx>, String)> {
    let mut out = Vec::new();
    for r in map.iter() {
        let (ds, offset, file_len) = match r.backing {
            Backing::File {
                ds,
                offset,
                file_len,
            } => (Some(ds), offset, file_len),
            _ => (None, 0, 0),
        };
        let info = RegionInfo {
            start: r.start,
            size: r.size,
            flags: crate::layout::attach_flags(r),
            offset,
            file_len,
        };
        out.push((info, ds, r.name.clone()));
    }
    for (start, end, name) in [
        (layout::BASE, layout::END, "internal pager"),
        (UTCB_AREA, UTCB_AREA + PAGE, "utcb area"),
    ] {
        let info = RegionInfo {
            start,
            size: end - start,
            flags: RmFlags::RESERVED,
            ..RegionInfo::default()
        };
        out.push((info, None, name.to_string()));
    }
    out
}

/// The dataspace of an `--attach`, and its capability if it was looked up
/// here (and is to be freed with the task).
fn lookup(
    ns: Cap<Namespace>,
    a: &Attach<'_>,
) -> Result<(Option<OwnedCap<Untyped>>, CapIdx), LoaderError> {
    let not_found = |name: String, e| LoaderError::NotFound(name, e);
    let owned = match a.source {
        Source::Rom(name) => {
            let rom = env()
                .get_cap::<Namespace>("rom")
                .ok_or_else(|| not_found("capability \"rom\"".into(), None))?;
            query(rom, name).map_err(|e| not_found(name.into(), Some(e)))?
        }
        // The namespace hands out files read-only; l4fs's own `open`
        // read-write.
        Source::Fs(path) if a.writable => {
            let ds = cap::alloc::<Untyped>().map_err(call("capability slot"))?;
            ns.cast::<FsOps>()
                .open(
                    LongBytes::new(path.as_bytes()),
                    fs_mode::RW,
                    RcvBuf::cap(ds.idx()),
                )
                .map_err(call("open read-write in l4fs"))?;
            ds
        }
        Source::Fs(path) => {
            query(ns, path).map_err(|e| not_found(format!("{path} in l4fs"), Some(e)))?
        }
        Source::Cap(name) => {
            let c = env().get_cap::<Untyped>(name);
            return Ok((
                None,
                c.ok_or_else(|| not_found(format!("capability {name:?}"), None))?
                    .idx(),
            ));
        }
    };
    let idx = owned.idx();
    Ok((Some(owned), idx))
}

/// Looks up the dataspace of an `--attach` and adds it to the program's
/// region map (which refuses an overlap with the program). Returns the
/// capability if it was looked up here (and is to be freed with the task).
fn attach_source(
    ns: Cap<Namespace>,
    map: &mut RegionMap,
    a: &Attach<'_>,
) -> Result<Option<OwnedCap<Untyped>>, LoaderError> {
    let what = format!("--attach={}@{:#x}", a.source, a.addr);
    let (owned, ds) = lookup(ns, a).map_err(|e| e.of(&what))?;
    let stats = Cap::<Dataspace>::from_idx(ds)
        .info()
        .map_err(|e| LoaderError::Call("not a dataspace: info", e).of(&what))?;
    if stats.size == 0 {
        return Err(LoaderError::Unusable(what, "empty dataspace"));
    }
    if a.writable && !stats.flags.contains(DsFlags::W) {
        return Err(LoaderError::Unusable(what, "the dataspace is read-only"));
    }
    let rights = if a.writable { Rights::RW } else { Rights::R };
    let size = stats.size.div_ceil(PAGE) * PAGE;
    let backing = Backing::File {
        ds,
        offset: 0,
        file_len: stats.size,
    };
    map.attach_at(a.addr, size, rights, backing, false, &what)
        .map_err(|e| {
            LoaderError::Overlap(format!(
                "{what}: {size:#x} bytes there: {e:?} (the program's regions: {})",
                regions_line(map)
            ))
        })?;
    Ok(owned)
}

/// Opens the internal pager `inpager` and checks that it stays in its
/// range ([`layout::BASE`], [`layout::END`]).
fn open_inpager(ns: Cap<Namespace>, inpager: &str) -> Result<Planned, LoaderError> {
    let ipager = Planned::open(ns, inpager, layout::STACK_TOP, layout::STACK_SIZE)
        .map_err(|e| e.of("internal pager"))?;
    if let Some(r) = ipager
        .map
        .iter()
        .find(|r| r.start < layout::BASE || r.end() > layout::END)
    {
        return Err(LoaderError::Overlap(format!(
            "region {r} lies outside [{:#x}, {:#x})",
            layout::BASE,
            layout::END
        ))
        .of(&format!("{inpager}: internal pager")));
    }
    Ok(ipager)
}

/// A task with an internal pager: the task, the internal pager's thread,
/// the gate to the loader and the gate "server".
type InpagerTask = (
    OwnedCap<Task>,
    OwnedCap<Thread>,
    OwnedCap<IpcGate>,
    OwnedCap<IpcGate>,
);

/// Creates the task (UTCB area of `2^utcb_log2` bytes) with its gate to
/// the loader and the gate "server" bound to the internal pager's thread,
/// lets `more` map what else the task gets, and starts the internal pager
/// at `sp`.
fn start_inpager(
    label: u64,
    utcb_log2: u8,
    ipager: &Planned,
    sp: u64,
    more: impl FnOnce(Cap<Task>) -> Result<(), LoaderError>,
) -> Result<InpagerTask, LoaderError> {
    let (task, gate) = super::task::create_task(label, INPAGER_PAGER_SLOT, utcb_log2)?;
    let factory = env().factory();
    let thread = factory.create_thread().map_err(call("create thread"))?;
    // Bound at creation: a later `bind` by the internal pager itself
    // would wait for an RCU grace period, which the new task's thread
    // did not see end.
    let server = factory
        .create_gate(Some(thread.cap()), task::SERVER_LABEL)
        .map_err(call("create gate \"server\""))?;
    map_cap(
        task.cap(),
        server.idx(),
        CHILD_PAGER_SLOT,
        "map gate \"server\"",
    )?;
    map_cap(task.cap(), thread.idx(), INPAGER_THREAD_SLOT, "map thread")?;
    more(task.cap())?;
    super::task::run_thread(
        thread.cap(),
        task.cap(),
        INPAGER_PAGER_SLOT,
        UTCB_AREA,
        None,
        ipager.plan.entry,
        sp,
    )
    .map_err(|e| e.of("internal pager"))?;
    Ok((task, thread, gate, server))
}

/// Anonymous memory for an internal pager, from our allocator.
fn anon_memory(path: &str) -> Result<OwnedCap<Dataspace>, LoaderError> {
    env()
        .mem_alloc()
        .alloc_dataspace(ANON_SIZE, 0, 0)
        .map_err(|e| LoaderError::Call("anonymous memory", e).of(path))
}

/// Loads the job's program to run under the internal pager loaded from
/// `inpager`: validates both, adds the job's `--attach` regions, creates
/// the task with its two gates, and starts the internal pager (the
/// program starts when it is `ready`). An ordinary L4Re program
/// (`--l4re`) goes to [`load_l4re`].
fn load_internal(
    ns: Cap<Namespace>,
    job: &Job<'_>,
    inpager: &str,
    label: u64,
) -> Result<Child, LoaderError> {
    if job.l4re {
        return load_l4re(ns, job, inpager, label);
    }
    let path = job.path;
    let Planned {
        image: program,
        plan,
        map: mut prog_map,
    } = Planned::open(ns, path, STACK_TOP, STACK_SIZE)?;
    let mut attached = Vec::new();
    for a in &job.attach {
        attached.extend(attach_source(ns, &mut prog_map, a).map_err(|e| e.of(path))?);
    }
    let regions = program_regions(&prog_map);
    for (taken, _, what) in regions
        .iter()
        .filter(|r| r.0.flags.contains(RmFlags::RESERVED))
    {
        let end = taken.start + taken.size;
        if let Some(r) = prog_map
            .iter()
            .find(|r| r.start < end && r.end() > taken.start)
        {
            return Err(LoaderError::Overlap(format!(
                "region {r} overlaps the {what} [{:#x}, {end:#x})",
                taken.start
            ))
            .of(path));
        }
    }
    let ipager = open_inpager(ns, inpager)?;
    let (prefilled, sp) = inpager_stack()?;
    let anon = anon_memory(path)?;
    line(&format!(
        "{path}: entry {:#x}, {} loadable file pages, {} regions for the internal pager {inpager}",
        plan.entry,
        plan.loadable_pages,
        regions.len()
    ));
    let (task, thread, gate, server) =
        start_inpager(label, 12, &ipager, sp, |_| Ok(())).map_err(|e| e.of(path))?;
    line(&format!("{path}: internal pager started in a new task"));
    let mut child = Child::new(path, (task, thread, gate), ipager);
    child.prefilled = prefilled;
    child.internal = Some(Internal {
        _program: Some(program),
        l4re: false,
        entry: plan.entry,
        loadable_pages: plan.loadable_pages,
        regions,
        _attached: attached,
        anon,
        server,
        thread: None,
        pager_stats: None,
    });
    Ok(child)
}

/// Loads an ordinary L4Re program (`--l4re`) as ned does: the internal
/// pager starts in a new task as L4Re's in-task pager
/// (`loader::in_task`), with an L4Re environment (our factory, scheduler
/// and memory allocator, the log, the namespace `fs` with the program,
/// the capabilities of `--cap`), the KIP mapped, the gate "server" made
/// here, and this loader as its parent and outer region map; it opens,
/// loads and starts the program itself, whose exit comes here through
/// `L4Re::Parent`.
fn load_l4re(
    ns: Cap<Namespace>,
    job: &Job<'_>,
    inpager: &str,
    label: u64,
) -> Result<Child, LoaderError> {
    let path = job.path;
    if !job.attach.is_empty() {
        return Err(LoaderError::Unusable(
            path.into(),
            "--attach is for the loader's own programs; an L4Re program attaches what it needs",
        ));
    }
    let handed_on = handed_on(job)?;
    let binary = format!("fs/{}", path.trim_start_matches('/'));
    let ipager = open_inpager(ns, inpager)?;
    let names: Vec<(&str, u64)> = handed_on.iter().map(|(n, _, s)| (*n, *s)).collect();
    let (prefilled, sp) = super::task::l4re_inpager_stack(&binary, &job.args, &names)?;
    let anon = anon_memory(path)?;
    let more = |task: Cap<Task>| map_l4re_caps(task, ns, &handed_on);
    line(&format!(
        "{path}: an L4Re program, started by the internal pager {inpager} as L4Re's in-task pager"
    ));
    let (task, thread, gate, server) =
        start_inpager(label, L4RE_UTCB_LOG2, &ipager, sp, more).map_err(|e| e.of(path))?;
    let mut child = Child::new(path, (task, thread, gate), ipager);
    child.prefilled = prefilled;
    child.internal = Some(Internal {
        _program: None,
        l4re: true,
        entry: 0,
        loadable_pages: 0,
        regions: Vec::new(),
        _attached: Vec::new(),
        anon,
        server,
        thread: None,
        pager_stats: None,
    });
    Ok(child)
}

/// The capabilities `--cap` hands on, from our own environment, with the
/// slots they get in the task.
fn handed_on<'a>(job: &Job<'a>) -> Result<Vec<(&'a str, CapIdx, u64)>, LoaderError> {
    use super::l4re_slots as slots;
    if job.caps.len() > slots::MAX_HANDED_ON {
        return Err(LoaderError::Unusable(job.path.into(), "too many --cap"));
    }
    let mut out = Vec::new();
    for (i, name) in job.caps.iter().enumerate() {
        let c = env()
            .get_cap::<Untyped>(name)
            .ok_or_else(|| LoaderError::NotFound(format!("capability {name:?}"), None))?;
        out.push((*name, c.idx(), slots::HANDED_ON + i as u64));
    }
    Ok(out)
}

/// Maps an ordinary L4Re program's standard capabilities into `task`:
/// factory, scheduler, memory allocator, the namespace `fs`, those handed
/// on, and the KIP at its default address.
fn map_l4re_caps(
    task: Cap<Task>,
    ns: Cap<Namespace>,
    handed_on: &[(&str, CapIdx, u64)],
) -> Result<(), LoaderError> {
    use super::l4re_slots as slots;
    map_cap(task, env().factory().idx(), slots::FACTORY, "map factory")?;
    map_cap(
        task,
        env().scheduler().idx(),
        slots::SCHEDULER,
        "map scheduler",
    )?;
    map_cap(
        task,
        env().mem_alloc().idx(),
        slots::MEM_ALLOC,
        "map memory allocator",
    )?;
    map_cap(task, ns.idx(), slots::FS, "map fs")?;
    for (_, c, slot) in handed_on {
        map_cap(task, *c, *slot, "map a handed-on capability")?;
    }
    task.map_from(
        env().task(),
        Fpage::mem(l4re::kobj::Kip::present_page(), 12, Rights::R),
        crate::l4re_start::DEFAULT_KIP_ADDR,
    )
    .map_err(call("map KIP"))
}

/// Loads an ordinary L4Re program (`--l4re` without `--inpager`) that the
/// loader pages itself and whose region map it is: its file's pages come
/// from the pool as for the loader's own programs; the dataspaces it
/// attaches (memory from its allocator, files) are mirrored here and
/// mapped on. Static programs only (the external pager loads no
/// interpreter).
fn load_l4re_external(ns: Cap<Namespace>, job: &Job<'_>, label: u64) -> Result<Child, LoaderError> {
    let path = job.path;
    if !job.attach.is_empty() {
        return Err(LoaderError::Unusable(
            path.into(),
            "--attach is for the loader's own programs; an L4Re program attaches what it needs",
        ));
    }
    let handed_on = handed_on(job)?;
    let mut planned = Planned::open(ns, path, STACK_TOP, STACK_SIZE)?;
    // The KIP and the UTCB area: the kernel's, kept out of the program's
    // searches.
    for (start, size, name) in [
        (crate::l4re_start::DEFAULT_KIP_ADDR, PAGE, "[kip]"),
        (UTCB_AREA, 1u64 << L4RE_UTCB_LOG2, "[utcb]"),
    ] {
        planned
            .map
            .attach_at(start, size, Rights::R, Backing::Kernel, false, name)
            .map_err(|e| {
                LoaderError::Overlap(format!("{name} [{start:#x}, {:#x}): {e:?}", start + size))
                    .of(path)
            })?;
    }
    let binary = format!("fs/{}", path.trim_start_matches('/'));
    let names: Vec<(&str, u64)> = handed_on.iter().map(|(n, _, s)| (*n, *s)).collect();
    let (prefilled, sp) =
        super::task::l4re_program_stack(&planned.plan, &binary, &job.args, &names, STACK_TOP)?;
    line(&format!(
        "{path}: an L4Re program, entry {:#x}, paged and served here (external pager)",
        planned.plan.entry
    ));
    let entry = planned.plan.entry;
    let start = || {
        let (task, gate) = super::task::create_task(label, CHILD_PAGER_SLOT, L4RE_UTCB_LOG2)?;
        map_l4re_caps(task.cap(), ns, &handed_on)?;
        let thread = env()
            .factory()
            .create_thread()
            .map_err(call("create thread"))?;
        map_cap(
            task.cap(),
            thread.idx(),
            super::l4re_slots::THREAD,
            "map thread",
        )?;
        super::task::run_thread(
            thread.cap(),
            task.cap(),
            CHILD_PAGER_SLOT,
            UTCB_AREA,
            None,
            entry,
            sp,
        )?;
        Ok((task, thread, gate))
    };
    let caps = start().map_err(|e: LoaderError| e.of(path))?;
    let mut child = Child::new(path, caps, planned);
    child.prefilled = prefilled;
    child.external = Some(External::default());
    Ok(child)
}

/// The programs of a run and what became of them.
struct Run<J> {
    ns: Cap<Namespace>,
    shared: Rc<Shared>,
    /// The jobs not started yet, with their gate labels.
    jobs: J,
    sequential: bool,
    records: Vec<Record>,
    /// The running tasks by label, with their record's index.
    running: BTreeMap<u64, (Arc<Loaded>, usize)>,
}

impl<'a, J: Iterator<Item = (&'a Job<'a>, u64)>> Run<J> {
    /// Starts the next job (all of them unless `sequential`) that loads.
    fn start_jobs(&mut self, server: &mut Server) {
        while let Some((job, label)) = self.jobs.next() {
            if self.start(server, job, label) && self.sequential {
                break;
            }
        }
    }

    /// Starts job `job` with gate label `label` and records it; returns
    /// whether it runs.
    fn start(&mut self, server: &mut Server, job: &Job<'_>, label: u64) -> bool {
        let loaded = match job.inpager {
            Some(pager) => load_internal(self.ns, job, pager, label),
            None if job.l4re => load_l4re_external(self.ns, job, label),
            None => load(self.ns, job.path, label),
        };
        let end = match loaded {
            Ok(child) => {
                #[allow(clippy::arc_with_non_send_sync)] // one thread
                let obj = Arc::new(Loaded {
                    label,
                    child: RefCell::new(child),
                    shared: self.shared.clone(),
                });
                server
                    .adopt_gate(label, obj.clone())
                    .expect("labels are new and 4-aligned");
                self.running.insert(label, (obj, self.records.len()));
                End::Running
            }
            Err(e) => {
                let e = e.to_string();
                line(&e);
                End::Refused(e)
            }
        };
        let running = end == End::Running;
        self.records.push(Record {
            path: job.path.to_string(),
            expect: job.expect.clone(),
            end,
            stats: FaultStats::new(0),
            pager: None,
        });
        running
    }

    /// The server loop's hook: deletes the tasks that ended, starts what
    /// comes next; returns whether any task is left.
    fn reap(&mut self, server: &mut Server) -> bool {
        let ended = core::mem::take(&mut *self.shared.ended.borrow_mut());
        for (label, end) in ended {
            server.unregister(label);
            let Some((obj, at)) = self.running.remove(&label) else {
                continue;
            };
            let mut c = obj.child.borrow_mut();
            match &end {
                End::Exited(status) => line(&format!("{}: exited with status {status}", c.name)),
                End::Ended(why) | End::Refused(why) => {
                    line(&format!("{}: {why}; task ended", c.name))
                }
                End::Running => {}
            }
            let pager = c.internal.as_ref().and_then(|i| i.pager_stats);
            match pager {
                Some(ps) => {
                    line(&format!("{}: internal pager: {}", c.name, ps.line()));
                    line(&format!(
                        "{}: the internal pager's own faults (served here): {}",
                        c.name,
                        c.stats.line()
                    ));
                }
                None => line(&format!("{}: {}", c.name, c.stats.line())),
            }
            let record = &mut self.records[at];
            record.end = end;
            record.stats = c.stats.clone();
            record.pager = c
                .internal
                .as_ref()
                .and_then(|i| Some((i.pager_stats?, i.loadable_pages)));
            c.delete(&mut self.shared.pool.borrow_mut());
            drop(c);
            // Dropping the object detaches its images and frees its slots.
            drop(obj);
            if self.sequential {
                self.start_jobs(server);
            }
        }
        !self.running.is_empty()
    }
}

/// `ext-loader`'s main: `args` are its arguments after the program name.
pub fn run<'a>(args: impl IntoIterator<Item = &'a str>) -> i32 {
    let Some(gate) = env().get_cap::<IpcGate>("fs") else {
        line("no capability \"fs\" (the l4fs gate)");
        return 1;
    };
    let options = match options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            line(&e.to_string());
            return 1;
        }
    };
    let pool = match Pool::new(POOL_PAGES) {
        Ok(p) => p,
        Err(e) => {
            line(&e.to_string());
            return 1;
        }
    };
    let mut run = Run {
        ns: gate.cast(),
        shared: Rc::new(Shared {
            pool: RefCell::new(pool),
            ended: RefCell::new(Vec::new()),
        }),
        // Each job's gate label: its number, above the two bits of rights.
        jobs: options
            .jobs
            .iter()
            .enumerate()
            .map(|(i, job)| (job, (i as u64 + 1) << 4)),
        sequential: options.sequential,
        records: Vec::new(),
        running: BTreeMap::new(),
    };
    let mut server = Server::new();
    run.start_jobs(&mut server);
    while !run.running.is_empty() {
        if let Err(e) = server.serve(Timeout::Never, |s| run.reap(s)) {
            line(&format!("wait: {e}"));
        }
    }
    let records = &run.records;
    let count = |f: fn(&End) -> bool| records.iter().filter(|r| f(&r.end)).count();
    line(&format!(
        "done: {} exited with 0, {} ended otherwise, {} refused",
        count(|e| *e == End::Exited(0)),
        count(|e| matches!(e, End::Exited(s) if *s != 0) || matches!(e, End::Ended(_))),
        count(|e| matches!(e, End::Refused(_)))
    ));
    if options.tap {
        let pool = run.shared.pool.borrow();
        let mut c = checks(records);
        c.push((
            pool.full(),
            format!(
                "every page returned to the loader's pool ({} of {POOL_PAGES})",
                pool.free.len()
            ),
        ));
        for l in tap_block(&c) {
            log_line(&l);
        }
    }
    0
}
