//! `ext-loader` under Fiasco: programs in new tasks, paged by this
//! program's main thread as their external pager.
//!
//! Usage (ned): `rom/ext-loader PATH...` with the l4fs gate as `"fs"`.
//! Every PATH is looked up in l4fs (`L4Re::Namespace` query → a
//! `L4Re::Dataspace`), attached read-only here (L4Re's region manager maps
//! its pages from l4fs) and validated with [`loader::elf::plan`]; a file
//! that is not a static x86-64 program is refused with the reason and the
//! loader goes on with the next. For a valid one it
//!
//! 1. creates a task (`l4_factory_create_task`, UTCB area of one page at
//!    [`UTCB_AREA`]), an IPC gate bound to this thread with a label of its
//!    own, and maps into the task: the gate (slot
//!    [`CHILD_PAGER_SLOT`](crate::CHILD_PAGER_SLOT)), the log capability
//!    (slot 5) and the task's own capability (slot 1);
//! 2. creates a thread (`l4_factory_create_thread`), sets its pager and
//!    exception handler to the gate's slot *in the new task* (the kernel
//!    looks them up in the faulting thread's task), binds it to the task
//!    with the UTCB at [`UTCB_AREA`] (`l4_thread_control_bind`; the kernel
//!    points the thread's gs base at the UTCB pointer, so `l4_utcb()`
//!    works in the program), sets ip = entry and sp = [`STACK_TOP`]
//!    (`l4_thread_ex_regs`) and runs it (`l4_scheduler_run_thread`);
//!
//! and then serves the page faults of all programs started so far: a
//! fault (label -2, `pfa`, `pc`) is resolved with the program's region map
//! (its ELF segments and a stack region) and [`l4pager::fault::resolve`];
//! the loader fills a page of its own memory (a copy of the file page, or
//! zeros) and replies with a map item of that page at the fault address.
//! An invalid access ends the task with a report (address, access, pc,
//! nearest region); an exception (label -5, e.g. `ud2`) ends it too. A
//! program exits with `L4Re::Parent` `signal(0, status)` to slot
//! [`CHILD_PAGER_SLOT`](crate::CHILD_PAGER_SLOT), which is never answered:
//! the loader deletes its thread and task and prints the fault statistics.
//! When no program is left the loader prints a summary and exits.
//!
//! `--inpager=PATH` makes the programs after it run under the internal
//! pager (the freestanding program PATH, crate `l4re-inpager`). For each,
//! the loader validates the program, then creates the task with two gates:
//! `"server"` (unbound, slot [`CHILD_PAGER_SLOT`](crate::CHILD_PAGER_SLOT),
//! named in the internal pager's initial capabilities) and one bound to
//! this thread (slot [`INPAGER_PAGER_SLOT`](crate::INPAGER_PAGER_SLOT), the
//! internal pager's pager, exception handler and parent). It loads the
//! internal pager like any program (regions here, an L4Re initial stack
//! with its `l4re_env_t`, served from the pool on fault) and starts its
//! thread. The internal pager pulls the program's regions (with the file's
//! dataspace capability) and an anonymous-memory dataspace through
//! [`l4pager::task::TaskSetup`], binds `"server"` and says `ready`; only
//! then does the loader start the program's thread, with `"server"` as its
//! pager and exception handler. The internal pager reports the end with
//! the program's fault statistics; the loader deletes the task.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use core::cell::{Cell, RefCell};
use l4_sys as sys;
use l4pager::fault::{self, Access, Decision};

use l4fs::proto::{FsOps, FsOpsClient, mode as fs_mode};
use l4pager::region::{Backing, RegionMap};
use l4pager::task::{self, PagerStats, RegionInfo, TaskSetup, TaskSetupServer, layout};
use l4re::cap::{self, CapIdx, CapRights, IpcGate, OwnedCap, Untyped};
use l4re::env::{env, log_line};
use l4re::fiasco::mem;
use l4re::fpage::{Fpage, MapType, RcvBuf, Rights, SndFpage};
use l4re::ipc::{self, Received, Timeout};
use l4re::msg::{LongBytes, MsgTag, RcvCapSlots};
use l4re::proto::dataspace::map_flags;
use l4re::proto::parent::SIGNAL_EXIT;
use l4re::proto::rm::flags as rm_flags;
use l4re::proto::{Dataspace, DataspaceClient, Namespace, NamespaceClient, Parent};
use l4re::rpc::{Protocol, Request};
use l4re::utcb::Utcb;
use l4re::{Cap, Error, IpcError};
use l4re_rt::Args;
use loader::elf;
use loader::l4re_start::{self, CapEntry, L4reEnv, StartSpec, UtcbArea};

use crate::check::{End, Record, checks, tap_block};
use crate::options::{self, Attach, Job, Source};
use crate::stats::{FaultStats, Resolved};
use crate::{
    CHILD_LOG_SLOT, CHILD_PAGER_SLOT, CHILD_TASK_SLOT, INPAGER_PAGER_SLOT, INPAGER_THREAD_SLOT,
    PROGRAM_THREAD_SLOT,
};

/// Page size.
const PAGE: u64 = 4096;
/// Where the loaded task's UTCB area (one page) lies.
pub const UTCB_AREA: u64 = 0x7ff0_0000;
/// Top of the loaded program's stack (the initial stack pointer).
pub const STACK_TOP: u64 = 0x7fe0_0000;
/// Size of the stack region.
pub const STACK_SIZE: u64 = 256 << 10;
/// Load address of a static-pie program.
const PIE_BASE: u64 = 0x0040_0000;
/// Pages of this task's memory pool from which faults are answered.
const POOL_PAGES: u64 = 1024;
/// Anonymous memory given to an internal pager (its program's zero-fill
/// and private pages).
const ANON_SIZE: u64 = 8 << 20;
/// Where the program's UTCB lies (after the internal pager's).
const PROGRAM_UTCB: u64 = UTCB_AREA + l4re_start::UTCB_OFFSET;
/// A program that faults this often on one page without progress is
/// ended (a mapping the kernel keeps refusing).
const MAX_REPEATS: u32 = 8;

/// `L4_PROTO_PAGE_FAULT`.
const LABEL_PAGE_FAULT: i64 = -2;
/// `L4_PROTO_EXCEPTION`.
const LABEL_EXCEPTION: i64 = -5;

fn line(text: &str) {
    log_line(&format!("ext-loader: {text}"));
}

fn idx(i: CapIdx) -> sys::l4_cap_idx_t {
    i.0 as _
}

fn slot(n: u64) -> sys::l4_cap_idx_t {
    (n << sys::L4_CAP_SHIFT) as _
}

/// Turns a system call's tag into a result (`l4_error`). Call it inside the
/// UTCB borrow that made the call (the error code is in the UTCB).
///
/// # Safety
/// The calling thread's UTCB must hold the result of the call of `tag`.
unsafe fn check(what: &str, tag: sys::l4_msgtag_t) -> Result<(), String> {
    // SAFETY: reads the tag and, on an IPC error, the UTCB's error word.
    let r = unsafe { sys::l4_error(tag) };
    if r < 0 {
        Err(format!("{what}: error {r}"))
    } else {
        Ok(())
    }
}

/// Memory of this task to answer faults from: a dataspace of the memory
/// allocator attached read-write-execute (onward mappings can carry at
/// most the rights of the source mapping; `l4re::fiasco::mem::Region`
/// attaches without X), every page present, handed out page by page.
struct Pool {
    free: Vec<u64>,
}

impl Pool {
    fn new(pages: u64) -> Result<Self, String> {
        let size = pages * PAGE;
        let ds = cap::alloc::<Dataspace>().map_err(|e| format!("cap alloc: {e:?}"))?;
        let mut addr: *mut core::ffi::c_void = core::ptr::null_mut();
        let r = Utcb::with(|_| {
            // SAFETY: `ds` is a free slot of ours for the new dataspace.
            let r = unsafe { sys::l4re_ma_alloc(size as _, idx(ds.idx()), 0) };
            if r < 0 {
                return r as i64;
            }
            // SAFETY: `addr` is a valid out-pointer; the region map picks
            // a free range for the dataspace.
            let r = unsafe {
                sys::l4re_rm_attach(
                    &mut addr,
                    size as _,
                    (sys::L4RE_RM_F_SEARCH_ADDR | sys::L4RE_RM_F_RWX) as _,
                    idx(ds.idx()),
                    0,
                    sys::L4_PAGESHIFT as _,
                )
            };
            r as i64
        });
        if r < 0 {
            return Err(format!("pool of {pages} pages: error {r}"));
        }
        // The dataspace lives as long as the program: its pages are mapped
        // into the loaded tasks.
        core::mem::forget(ds);
        let base = addr as u64;
        let mut free = Vec::with_capacity(pages as usize);
        for i in (0..pages).rev() {
            let p = base + i * PAGE;
            // SAFETY: inside the region just attached read-write: the write
            // makes L4Re's region manager map the page here.
            unsafe { (p as *mut u8).write_volatile(0) };
            free.push(p);
        }
        Ok(Pool { free })
    }

    fn take(&mut self) -> Option<u64> {
        self.free.pop()
    }

    fn give_back(&mut self, pages: Vec<u64>) {
        self.free.extend(pages);
    }
}

/// The loaded file: its dataspace, attached read-only in this task.
struct Image {
    ds: OwnedCap<Untyped>,
    addr: u64,
    size: u64,
}

impl Image {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `size` bytes are attached read-only at `addr` for the
        // image's life (L4Re's region manager pages them from l4fs).
        unsafe { core::slice::from_raw_parts(self.addr as *const u8, self.size as usize) }
    }
}

/// One loaded program.
struct Child {
    name: String,
    task: OwnedCap<Untyped>,
    thread: OwnedCap<Untyped>,
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
}

/// A program paged by an internal pager (which is what [`Child`]'s own
/// image, region map and thread then are).
struct Internal {
    /// The program's file.
    program: Image,
    entry: u64,
    /// File pages the program could fault.
    loadable_pages: u64,
    /// Its regions, the dataspace behind each (its file, or one of
    /// `attached`), and their names.
    regions: Vec<(RegionInfo, Option<CapIdx>, String)>,
    /// Dataspaces attached with `--attach` that the loader looked up,
    /// held until the task ends (those of its own environment are not
    /// here). Dropping them releases the capabilities.
    _attached: Vec<OwnedCap<Untyped>>,
    /// Anonymous memory for the internal pager.
    anon: OwnedCap<Untyped>,
    /// The gate "server".
    server: OwnedCap<IpcGate>,
    /// The program's thread, once started.
    thread: Option<OwnedCap<Untyped>>,
    /// What the internal pager reported at the end.
    pager_stats: Option<PagerStats>,
}

/// Queries `path` in the namespace until the server has bound its gate
/// (ned starts l4fs and the loader together).
fn query(ns: Cap<Namespace>, path: &str) -> l4re::Result<OwnedCap<Untyped>> {
    let mut tries = 0;
    loop {
        let slot = cap::alloc::<Untyped>()?;
        match ns.query(LongBytes::new(path.as_bytes()), RcvBuf::cap(slot.idx())) {
            Ok(_) => return Ok(slot),
            Err(Error::Ipc(IpcError::NotExistent)) if tries < 500 => {
                tries += 1;
                // SAFETY: a receive from nobody with a timeout: a sleep.
                unsafe { sys::l4_ipc_sleep_ms(10) };
            }
            Err(e) => return Err(e),
        }
    }
}

fn open_image(ns: Cap<Namespace>, path: &str) -> Result<Image, String> {
    let ds = query(ns, path).map_err(|e| format!("{path}: not found in l4fs ({e:?})"))?;
    let stats = ds
        .cap()
        .cast::<Dataspace>()
        .info()
        .map_err(|e| format!("{path}: dataspace info: {e:?}"))?;
    if stats.size == 0 {
        return Err(format!("{path}: empty file"));
    }
    let addr =
        mem::attach(ds.idx(), stats.size, false).map_err(|e| format!("{path}: attach: {e:?}"))?;
    Ok(Image {
        ds,
        addr,
        size: stats.size,
    })
}

/// A file opened in l4fs, validated as a program, and its regions.
struct Planned {
    image: Image,
    plan: elf::Plan,
    map: RegionMap,
}

/// Opens `path`, validates it ([`elf::plan`]) and lays out its regions
/// with a stack ending at `stack_top`.
fn open_planned(
    ns: Cap<Namespace>,
    path: &str,
    stack_top: u64,
    stack_size: u64,
) -> Result<Planned, String> {
    let image = open_image(ns, path)?;
    let plan = elf::plan(image.bytes(), PIE_BASE).map_err(|e| format!("{path}: refused: {e}"))?;
    let map = loader::layout::region_map(&plan, image.ds.idx(), stack_top, stack_size)
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(Planned { image, plan, map })
}

/// The task, thread and gate of a loaded program.
type TaskCaps = (OwnedCap<Untyped>, OwnedCap<Untyped>, OwnedCap<IpcGate>);

fn alloc_slot() -> Result<OwnedCap<Untyped>, String> {
    cap::alloc::<Untyped>().map_err(|e| format!("cap alloc: {e:?}"))
}

/// Maps our capability `src` into `task` at `dst` (with all rights).
fn map_cap(task: CapIdx, src: CapIdx, dst: u64, what: &str) -> Result<(), String> {
    let this_task = idx(env().task().idx());
    Utcb::with(|_| {
        // SAFETY: a map of one of our capabilities into a task we created;
        // the UTCB borrow makes us the UTCB's only user.
        unsafe {
            let tag = sys::l4_task_map(
                idx(task),
                this_task,
                sys::l4_obj_fpage(idx(src), 0, sys::L4_CAP_FPAGE_RWS as _),
                sys::l4_map_obj_control(slot(dst) as _, sys::L4_MAP_ITEM_MAP as _),
            );
            check(what, tag)
        }
    })
}

/// Creates a task (UTCB area at [`UTCB_AREA`]) with the log capability
/// (slot 5) and its own capability (slot 1), and a gate bound to this
/// thread with `label`, mapped into the task at `gate_slot`.
fn create_task(
    label: u64,
    gate_slot: u64,
) -> Result<(OwnedCap<Untyped>, OwnedCap<IpcGate>), String> {
    let e = env();
    let me = l4re::kobj::current_thread();
    let task = alloc_slot()?;
    let gate = alloc_slot()?.cast::<IpcGate>();
    Utcb::with(|_| -> Result<(), String> {
        // SAFETY: kernel invocations on our factory and on free slots just
        // allocated; the UTCB borrow makes us the UTCB's only user, and
        // `check` reads each call's result from it.
        unsafe {
            let mut area = sys::l4_fpage(UTCB_AREA, sys::L4_PAGESHIFT as _, sys::L4_FPAGE_RW as _);
            let tag =
                sys::l4_factory_create_task(idx(e.factory().idx()), idx(task.idx()), &mut area);
            check("create task", tag)?;
            let tag = sys::l4_factory_create_gate(
                idx(e.factory().idx()),
                idx(gate.idx()),
                idx(me.idx()),
                label,
            );
            check("create gate", tag)
        }
    })?;
    map_cap(task.idx(), gate.idx(), gate_slot, "map gate")?;
    map_cap(task.idx(), e.log().idx(), CHILD_LOG_SLOT, "map log")?;
    map_cap(task.idx(), task.idx(), CHILD_TASK_SLOT, "map task")?;
    Ok((task, gate))
}

/// Creates a gate bound to `thread` with `label` (the kernel binds it at
/// creation: a later `bind` by the internal pager itself would wait for an
/// RCU grace period, which the new task's thread did not see end).
fn create_gate_for(thread: CapIdx, label: u64) -> Result<OwnedCap<IpcGate>, String> {
    let gate = alloc_slot()?.cast::<IpcGate>();
    let factory = idx(env().factory().idx());
    Utcb::with(|_| {
        // SAFETY: creates a gate in a free slot of ours; the UTCB borrow
        // makes us the UTCB's only user.
        unsafe {
            let tag = sys::l4_factory_create_gate(factory, idx(gate.idx()), idx(thread), label);
            check("create gate \"server\"", tag)
        }
    })?;
    Ok(gate)
}

/// Creates a thread (not yet bound to a task or started).
fn create_thread() -> Result<OwnedCap<Untyped>, String> {
    let factory = idx(env().factory().idx());
    let thread = alloc_slot()?;
    Utcb::with(|_| {
        // SAFETY: creates a thread in a free slot of ours; the UTCB borrow
        // makes us the UTCB's only user.
        unsafe {
            let tag = sys::l4_factory_create_thread(factory, idx(thread.idx()));
            check("create thread", tag)
        }
    })?;
    Ok(thread)
}

/// Makes `thread` a thread of `task` whose pager and exception handler
/// are the task's slot `pager_slot` (the kernel looks them up in the
/// faulting thread's task), with its UTCB at `utcb`, and starts it at
/// `entry` with stack pointer `sp`.
fn run_thread(
    thread: CapIdx,
    task: CapIdx,
    pager_slot: u64,
    utcb: u64,
    entry: u64,
    sp: u64,
) -> Result<(), String> {
    let scheduler = idx(env().scheduler().idx());
    Utcb::with(|_| -> Result<(), String> {
        // SAFETY: kernel invocations on our scheduler, the task we created
        // and a thread we created; the UTCB borrow makes us the UTCB's
        // only user.
        unsafe {
            sys::l4_thread_control_start();
            sys::l4_thread_control_pager(slot(pager_slot));
            sys::l4_thread_control_exc_handler(slot(pager_slot));
            sys::l4_thread_control_bind(utcb as *mut sys::l4_utcb_t, idx(task));
            check("thread control", sys::l4_thread_control_commit(idx(thread)))?;
            check("ex_regs", sys::l4_thread_ex_regs(idx(thread), entry, sp, 0))?;
            let sp = sys::l4_sched_param(2, 0);
            check(
                "run thread",
                sys::l4_scheduler_run_thread(scheduler, idx(thread), &sp),
            )
        }
    })
}

/// [`create_thread`] and [`run_thread`].
fn start_thread(
    task: CapIdx,
    pager_slot: u64,
    utcb: u64,
    entry: u64,
    sp: u64,
) -> Result<OwnedCap<Untyped>, String> {
    let thread = create_thread()?;
    run_thread(thread.idx(), task, pager_slot, utcb, entry, sp)?;
    Ok(thread)
}

/// Creates the task, the gate (label `label`, bound to this thread) and
/// the thread of a program with entry `entry`, and starts it.
fn start_task(label: u64, entry: u64) -> Result<TaskCaps, String> {
    let (task, gate) = create_task(label, CHILD_PAGER_SLOT)?;
    let thread = start_thread(task.idx(), CHILD_PAGER_SLOT, UTCB_AREA, entry, STACK_TOP)?;
    Ok((task, thread, gate))
}

/// Loads `path` and starts it with gate label `label`.
fn load(ns: Cap<Namespace>, path: &str, label: u64) -> Result<Child, String> {
    let Planned { image, plan, map } = open_planned(ns, path, STACK_TOP, STACK_SIZE)?;
    line(&format!(
        "{path}: entry {:#x}, {} loadable file pages, regions: {}",
        plan.entry,
        plan.loadable_pages,
        regions_line(&map)
    ));
    let (task, thread, gate) = start_task(label, plan.entry).map_err(|e| format!("{path}: {e}"))?;
    line(&format!("{path}: started in a new task"));
    Ok(Child::new(
        path,
        (task, thread, gate),
        Planned { image, plan, map },
    ))
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
        let mut flags = r.rights.bits() as u32;
        if r.private {
            flags |= rm_flags::PRIVATE;
        }
        let info = RegionInfo {
            start: r.start,
            size: r.size,
            flags,
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
            flags: rm_flags::RESERVED,
            ..RegionInfo::default()
        };
        out.push((info, None, name.to_string()));
    }
    out
}

/// Looks up the dataspace of an `--attach` and adds it to the program's
/// region map (which refuses an overlap with the program). Returns the
/// capability if it was looked up here (and is to be freed with the task).
fn attach_source(
    ns: Cap<Namespace>,
    map: &mut RegionMap,
    a: &Attach<'_>,
) -> Result<Option<OwnedCap<Untyped>>, String> {
    let what = format!("--attach={}@{:#x}", a.source, a.addr);
    let (owned, ds) = match a.source {
        Source::Rom(name) => {
            let rom = env()
                .get_cap::<Namespace>("rom")
                .ok_or_else(|| format!("{what}: no capability \"rom\""))?;
            let ds = query(rom, name).map_err(|e| format!("{what}: not found ({e:?})"))?;
            let idx = ds.idx();
            (Some(ds), idx)
        }
        // The namespace hands out files read-only; l4fs's own `open`
        // read-write.
        Source::Fs(path) if a.writable => {
            let ds = alloc_slot()?;
            ns.cast::<FsOps>()
                .open(
                    LongBytes::new(path.as_bytes()),
                    fs_mode::RW,
                    RcvBuf::cap(ds.idx()),
                )
                .map_err(|e| format!("{what}: open read-write in l4fs: {e:?}"))?;
            let idx = ds.idx();
            (Some(ds), idx)
        }
        Source::Fs(path) => {
            let ds = query(ns, path).map_err(|e| format!("{what}: not found in l4fs ({e:?})"))?;
            let idx = ds.idx();
            (Some(ds), idx)
        }
        Source::Cap(name) => {
            let cap = env()
                .get_cap::<Untyped>(name)
                .ok_or_else(|| format!("{what}: no capability {name:?}"))?;
            (None, cap.idx())
        }
    };
    let stats = Cap::<Dataspace>::from_idx(ds)
        .info()
        .map_err(|e| format!("{what}: not a dataspace ({e:?})"))?;
    if stats.size == 0 {
        return Err(format!("{what}: empty dataspace"));
    }
    if a.writable && stats.flags & map_flags::W == 0 {
        return Err(format!("{what}: the dataspace is read-only"));
    }
    let rights = if a.writable {
        Rights::R | Rights::W
    } else {
        Rights::R
    };
    let size = stats.size.div_ceil(PAGE) * PAGE;
    let backing = Backing::File {
        ds,
        offset: 0,
        file_len: stats.size,
    };
    map.attach_at(a.addr, size, rights, backing, false, &what)
        .map_err(|e| {
            format!(
                "{what}: {size:#x} bytes there: {e:?} (the program's regions: {})",
                regions_line(map)
            )
        })?;
    Ok(owned)
}

fn regions_line(map: &RegionMap) -> String {
    let regions: Vec<String> = map.iter().map(|r| format!("{r}")).collect();
    regions.join("; ")
}

/// The pages of the internal pager's initial stack: argv `inpager`, its
/// `l4re_env_t` (parent and pager: the loader; the gate "server"; log; its
/// thread) found through `AT_L4_ENV`. Returns them by address and the
/// stack pointer.
fn inpager_stack() -> Result<(BTreeMap<u64, Vec<u8>>, u64), String> {
    let server = CapEntry::new(b"server", CHILD_PAGER_SLOT).ok_or("cap name")?;
    let env = L4reEnv {
        parent: Some(INPAGER_PAGER_SLOT),
        rm: None,
        mem_alloc: None,
        log: Some(CHILD_LOG_SLOT),
        main_thread: Some(INPAGER_THREAD_SLOT),
        factory: None,
        scheduler: None,
        itas: None,
        dbg_events: None,
        first_free_cap: 0x40,
        first_free_reply_cap: 0,
        utcb_area: UtcbArea {
            start: UTCB_AREA,
            log2_size: 12,
        },
        first_free_utcb: PROGRAM_UTCB + l4re_start::UTCB_OFFSET,
        caps: alloc::vec![server],
    };
    let spec = StartSpec {
        argv: alloc::vec![b"inpager".as_slice()],
        envp: Vec::new(),
        env: &env,
        aux: None,
        kip: l4re_start::DEFAULT_KIP_ADDR,
        phdrs: None,
        dynamic: None,
    };
    let built = l4re_start::build(layout::STACK_TOP, &spec)
        .map_err(|e| format!("internal pager stack: {e:?}"))?;
    let bytes = &built.stack.bytes;
    let bottom = layout::STACK_TOP - bytes.len() as u64;
    let mut pages = BTreeMap::new();
    let mut page = bottom & !(PAGE - 1);
    while page < layout::STACK_TOP {
        let mut content = alloc::vec![0u8; PAGE as usize];
        for (i, b) in content.iter_mut().enumerate() {
            let a = page + i as u64;
            if a >= bottom && a < layout::STACK_TOP {
                *b = bytes[(a - bottom) as usize];
            }
        }
        pages.insert(page, content);
        page += PAGE;
    }
    Ok((pages, built.stack.sp))
}

/// Loads the job's program to run under the internal pager loaded from
/// `inpager`: validates both, adds the job's `--attach` regions, creates
/// the task with its two gates, and starts the internal pager (the
/// program starts when it is `ready`).
fn load_internal(
    ns: Cap<Namespace>,
    job: &Job<'_>,
    inpager: &str,
    label: u64,
) -> Result<Child, String> {
    let path = job.path;
    let Planned {
        image: program,
        plan,
        map: mut prog_map,
    } = open_planned(ns, path, STACK_TOP, STACK_SIZE)?;
    let mut attached = Vec::new();
    for a in &job.attach {
        attached.extend(attach_source(ns, &mut prog_map, a).map_err(|e| format!("{path}: {e}"))?);
    }
    let regions = program_regions(&prog_map);
    for (taken, _, what) in regions
        .iter()
        .filter(|r| r.0.flags & rm_flags::RESERVED != 0)
    {
        let end = taken.start + taken.size;
        if let Some(r) = prog_map
            .iter()
            .find(|r| r.start < end && r.end() > taken.start)
        {
            return Err(format!(
                "{path}: refused: region {r} overlaps the {what} [{:#x}, {end:#x})",
                taken.start
            ));
        }
    }
    let Planned {
        image,
        plan: iplan,
        map,
    } = open_planned(ns, inpager, layout::STACK_TOP, layout::STACK_SIZE)
        .map_err(|e| format!("internal pager {e}"))?;
    if let Some(r) = map
        .iter()
        .find(|r| r.start < layout::BASE || r.end() > layout::END)
    {
        return Err(format!(
            "{inpager}: internal pager refused: region {r} lies outside [{:#x}, {:#x})",
            layout::BASE,
            layout::END
        ));
    }
    let (prefilled, sp) = inpager_stack()?;
    let anon = alloc_slot()?;
    let r = Utcb::with(|_| {
        // SAFETY: allocates a dataspace into a free slot of ours.
        unsafe { sys::l4re_ma_alloc(ANON_SIZE as _, idx(anon.idx()), 0) }
    });
    if r < 0 {
        return Err(format!(
            "{path}: anonymous memory of {ANON_SIZE} bytes: error {r}"
        ));
    }
    line(&format!(
        "{path}: entry {:#x}, {} loadable file pages, {} regions for the internal pager {inpager}",
        plan.entry,
        plan.loadable_pages,
        regions.len()
    ));
    let (task, gate) =
        create_task(label, INPAGER_PAGER_SLOT).map_err(|e| format!("{path}: {e}"))?;
    let thread = create_thread().map_err(|e| format!("{path}: {e}"))?;
    let server =
        create_gate_for(thread.idx(), task::SERVER_LABEL).map_err(|e| format!("{path}: {e}"))?;
    map_cap(
        task.idx(),
        server.idx(),
        CHILD_PAGER_SLOT,
        "map gate \"server\"",
    )
    .map_err(|e| format!("{path}: {e}"))?;
    map_cap(task.idx(), thread.idx(), INPAGER_THREAD_SLOT, "map thread")
        .map_err(|e| format!("{path}: {e}"))?;
    run_thread(
        thread.idx(),
        task.idx(),
        INPAGER_PAGER_SLOT,
        UTCB_AREA,
        iplan.entry,
        sp,
    )
    .map_err(|e| format!("{path}: internal pager: {e}"))?;
    line(&format!("{path}: internal pager started in a new task"));
    let mut child = Child::new(
        path,
        (task, thread, gate),
        Planned {
            image,
            plan: iplan,
            map,
        },
    );
    child.prefilled = prefilled;
    child.internal = Some(Internal {
        program,
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

impl Child {
    /// A program started as `name` in its task, paged by this loader from
    /// the planned file (nothing prefilled, no internal pager).
    fn new(name: &str, (task, thread, gate): TaskCaps, planned: Planned) -> Self {
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
        }
    }
}

/// The loader's side of [`TaskSetup`] for one child.
struct Setup<'a> {
    child: &'a Child,
    /// The program's thread, started on `ready`.
    started: RefCell<Option<OwnedCap<Untyped>>>,
    /// What `ended` reported.
    ended: RefCell<Option<(i64, PagerStats, String)>>,
    /// Whether the request was `ended` (no reply then).
    no_reply: Cell<bool>,
}

impl Setup<'_> {
    fn internal(&self) -> l4re::Result<&Internal> {
        self.child.internal.as_ref().ok_or(Error::BadProto)
    }
}

impl TaskSetupServer for Setup<'_> {
    fn region(
        &self,
        _: &mut Request<'_>,
        index: u64,
    ) -> l4re::Result<(RegionInfo, Option<SndFpage>, String)> {
        let inner = self.internal()?;
        let (info, ds, name) = inner.regions.get(index as usize).ok_or(Error::NoEnt)?;
        let item = ds.map(|ds| SndFpage::cap(ds, CapRights::RWS, MapType::Map));
        Ok((*info, item, name.clone()))
    }

    fn memory(&self, _: &mut Request<'_>) -> l4re::Result<(u64, SndFpage)> {
        let inner = self.internal()?;
        Ok((
            ANON_SIZE,
            SndFpage::cap(inner.anon.idx(), CapRights::RWS, MapType::Map),
        ))
    }

    fn ready(&self, _: &mut Request<'_>) -> l4re::Result<()> {
        let inner = self.internal()?;
        if inner.thread.is_some() || self.started.borrow().is_some() {
            return Err(Error::Exist);
        }
        let task = self.child.task.idx();
        let thread = start_thread(task, CHILD_PAGER_SLOT, PROGRAM_UTCB, inner.entry, STACK_TOP)
            .map_err(|_| Error::NoMem)?;
        map_cap(
            task,
            thread.idx(),
            PROGRAM_THREAD_SLOT,
            "map program thread",
        )
        .map_err(|_| Error::NoMem)?;
        *self.started.borrow_mut() = Some(thread);
        Ok(())
    }

    fn ended(
        &self,
        _: &mut Request<'_>,
        status: i64,
        stats: PagerStats,
        why: String,
    ) -> l4re::Result<()> {
        self.internal()?;
        *self.ended.borrow_mut() = Some((status, stats, why));
        self.no_reply.set(true);
        Ok(())
    }
}

/// Deletes the program's thread and task (and with them every mapping of
/// our pages into it) and the gate; returns its pages to the pool.
fn end_task(mut child: Child, pool: &mut Pool) {
    let this_task = idx(env().task().idx());
    let mut objects = alloc::vec![child.thread.idx(), child.task.idx(), child.gate.idx()];
    if let Some(inner) = &child.internal {
        objects.push(inner.server.idx());
        objects.push(inner.anon.idx());
        objects.extend(inner.thread.as_ref().map(|t| t.idx()));
    }
    Utcb::with(|_| {
        for c in objects {
            // SAFETY: deletes an object we created (we hold the delete
            // right); the UTCB borrow makes us its only user.
            unsafe { sys::l4_task_delete_obj(this_task, idx(c)) };
        }
    });
    pool.give_back(core::mem::take(&mut child.frames));
    Utcb::with(|_| {
        // SAFETY: the image was attached at `addr` by `open_image`; the
        // task that used it is gone and nothing refers to it any more.
        unsafe { sys::l4re_rm_detach(child.image.addr as *mut core::ffi::c_void) };
        if let Some(inner) = &child.internal {
            // SAFETY: as above, for the program's file.
            unsafe { sys::l4re_rm_detach(inner.program.addr as *mut core::ffi::c_void) };
        }
    });
    // Dropping the capabilities frees their slots.
}

/// What became of a fault.
enum Outcome {
    /// Answer with this page of ours, mapped with these rights at `page`.
    Map { own: u64, page: u64, rights: Rights },
    /// End the task with this report.
    Kill(String),
}

fn resolve(child: &mut Child, pool: &mut Pool, pfa: u64, pc: u64) -> Outcome {
    let access = Access::from_pfa(pfa);
    let addr = pfa & !7;
    let page = addr & !(PAGE - 1);
    if child.last_fault.0 == pfa {
        child.last_fault.1 += 1;
        if child.last_fault.1 >= MAX_REPEATS {
            child.stats.record_invalid();
            return Outcome::Kill(format!(
                "{access} fault at {addr:#x} (pc {pc:#x}) repeats {MAX_REPEATS} times: the mapping does not hold"
            ));
        }
    } else {
        child.last_fault = (pfa, 0);
    }
    let (valid, offset, rights, how) = match fault::resolve(&child.map, addr, access, pc) {
        Decision::Error(report) => {
            child.stats.record_invalid();
            return Outcome::Kill(report.to_string());
        }
        Decision::Forward { page, .. } => {
            child.stats.record_invalid();
            return Outcome::Kill(format!("fault at {page:#x} in a region of another pager"));
        }
        Decision::Zero { rights, .. } => (0, 0, rights, Resolved::Zero),
        Decision::MapShared { offset, rights, .. } => (PAGE, offset, rights, Resolved::File),
        Decision::CopyPrivate {
            offset,
            valid,
            rights,
            ..
        } => (valid, offset, rights, Resolved::File),
    };
    let Some(own) = pool.take() else {
        child.stats.record_invalid();
        return Outcome::Kill(format!(
            "out of memory at {addr:#x} (pool of {POOL_PAGES} pages)"
        ));
    };
    let img = child.image.bytes();
    let from = (offset as usize).min(img.len());
    let n = (valid as usize).min(img.len() - from);
    let src = match (&how, child.prefilled.get(&page)) {
        (Resolved::Zero, Some(content)) => &content[..],
        _ => &img[from..from + n],
    };
    // SAFETY: `own` is a whole page of the pool, present and writable in
    // this task and mapped nowhere else yet; `src` is at most a page.
    unsafe {
        let dst = own as *mut u8;
        core::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
        core::ptr::write_bytes(dst.add(src.len()), 0, PAGE as usize - src.len());
    }
    child.frames.push(own);
    child.stats.record(page, how);
    Outcome::Map { own, page, rights }
}

/// A reply waiting to be sent with the next wait.
enum Pending {
    /// A page for a fault.
    Item(SndFpage),
    /// A reply already written into the message registers.
    Tag(MsgTag),
}

/// Starts job `index` with gate label `label` and records it; returns
/// whether it runs.
fn start_job(
    ns: Cap<Namespace>,
    job: &Job<'_>,
    label: u64,
    records: &mut Vec<Record>,
    children: &mut BTreeMap<u64, (Child, usize)>,
) -> bool {
    let loaded = match job.inpager {
        Some(pager) => load_internal(ns, job, pager, label),
        None => load(ns, job.path, label),
    };
    let end = match loaded {
        Ok(c) => {
            children.insert(label, (c, records.len()));
            End::Running
        }
        Err(e) => {
            line(&e);
            End::Refused(e)
        }
    };
    let running = end == End::Running;
    records.push(Record {
        path: job.path.to_string(),
        expect: job.expect.clone(),
        end,
        stats: FaultStats::new(0),
        pager: None,
    });
    running
}

fn ext_loader(args: Args) -> i32 {
    let Some(gate) = env().get_cap::<IpcGate>("fs") else {
        line("no capability \"fs\" (the l4fs gate)");
        return 1;
    };
    let ns: Cap<Namespace> = gate.cast();
    let options = match options::parse((1..args.len()).filter_map(|i| args.get(i))) {
        Ok(o) => o,
        Err(e) => {
            line(&e);
            return 1;
        }
    };
    let mut pool = match Pool::new(POOL_PAGES) {
        Ok(p) => p,
        Err(e) => {
            line(&e);
            return 1;
        }
    };
    let mut records: Vec<Record> = Vec::new();
    let mut children: BTreeMap<u64, (Child, usize)> = BTreeMap::new();
    // Each job's gate label: its number, above the two bits of rights.
    let mut jobs = options
        .jobs
        .iter()
        .enumerate()
        .map(|(i, job)| (job, (i as u64 + 1) << 4));
    // All at once, or the first that starts.
    for (job, label) in jobs.by_ref() {
        if start_job(ns, job, label, &mut records, &mut children) && options.sequential {
            break;
        }
    }
    // The pager loop: this thread is bound to every program's gate.
    let mut reply: Option<Pending> = None;
    while !children.is_empty() {
        let received = Utcb::with(|u| -> l4re::Result<(Received, [u64; 3])> {
            let r = match reply.take() {
                Some(Pending::Item(item)) => {
                    u.mr()[0] = item.base;
                    u.mr()[1] = item.fpage.0;
                    ipc::reply_and_wait(u, MsgTag::new(0, 0, 1, 0), Timeout::Never)?
                }
                // The reply is in the message registers already.
                Some(Pending::Tag(tag)) => ipc::reply_and_wait(u, tag, Timeout::Never)?,
                None => ipc::wait(u, Timeout::Never)?,
            };
            Ok((r, [u.mr()[0], u.mr()[1], u.mr()[2]]))
        });
        let (r, words) = match received {
            Ok(x) => x,
            Err(e) => {
                line(&format!("wait: {e:?}"));
                continue;
            }
        };
        let label = r.label & !3;
        let Some((child, _)) = children.get_mut(&label) else {
            line(&format!("message from unknown label {label:#x}, ignored"));
            continue;
        };
        let end = match r.tag.label() {
            LABEL_PAGE_FAULT => match resolve(child, &mut pool, words[0], words[1]) {
                Outcome::Map { own, page, rights } => {
                    let item = SndFpage::mem(Fpage::mem(own, 12, rights), page, MapType::Map);
                    reply = Some(Pending::Item(item));
                    continue;
                }
                Outcome::Kill(report) => End::Ended(format!("invalid access: {report}")),
            },
            LABEL_EXCEPTION => End::Ended(l4re::fiasco::exception_report()),
            // L4Re::Parent signal(sig, val): opcode, sig, val.
            l if l == <Parent as Protocol>::LABEL => {
                if words[1] != SIGNAL_EXIT {
                    reply = Some(Pending::Tag(MsgTag::new(0, 0, 0, 0)));
                    continue;
                }
                End::Exited(words[2])
            }
            l if l == <TaskSetup as Protocol>::LABEL => {
                let setup = Setup {
                    child: &*child,
                    started: RefCell::new(None),
                    ended: RefCell::new(None),
                    no_reply: Cell::new(false),
                };
                let mut rcv = RcvCapSlots::new(&[]);
                let mut req = Request::new(r.tag, r.label, &mut rcv);
                let tag = TaskSetup::dispatch(&setup, &mut req)
                    .unwrap_or_else(|e| MsgTag::new(e.code(), 0, 0, 0));
                let (started, ended, no_reply) = (
                    setup.started.into_inner(),
                    setup.ended.into_inner(),
                    setup.no_reply.get(),
                );
                // No UTCB use from here to the reply (it is in the MRs).
                if let (Some(t), Some(inner)) = (started, child.internal.as_mut()) {
                    inner.thread = Some(t);
                }
                match ended {
                    None => {
                        if !no_reply {
                            reply = Some(Pending::Tag(tag));
                        }
                        continue;
                    }
                    Some((status, stats, why)) => {
                        if let Some(inner) = child.internal.as_mut() {
                            inner.pager_stats = Some(stats);
                        }
                        if why.starts_with("exited") {
                            End::Exited(status as u64)
                        } else {
                            End::Ended(why)
                        }
                    }
                }
            }
            other => End::Ended(format!("unexpected message label {other}")),
        };
        let (c, at) = children.remove(&label).expect("child present");
        match &end {
            End::Exited(status) => line(&format!("{}: exited with status {status}", c.name)),
            End::Ended(why) | End::Refused(why) => line(&format!("{}: {why}; task ended", c.name)),
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
        records[at].end = end;
        records[at].stats = c.stats.clone();
        records[at].pager = c
            .internal
            .as_ref()
            .and_then(|i| Some((i.pager_stats?, i.loadable_pages)));
        end_task(c, &mut pool);
        if options.sequential {
            for (job, label) in jobs.by_ref() {
                if start_job(ns, job, label, &mut records, &mut children) {
                    break;
                }
            }
        }
    }
    let count = |f: fn(&End) -> bool| records.iter().filter(|r| f(&r.end)).count();
    line(&format!(
        "done: {} exited with 0, {} ended otherwise, {} refused",
        count(|e| *e == End::Exited(0)),
        count(|e| matches!(e, End::Exited(s) if *s != 0) || matches!(e, End::Ended(_))),
        count(|e| matches!(e, End::Refused(_)))
    ));
    if options.tap {
        let mut c = checks(&records);
        c.push((
            pool.free.len() as u64 == POOL_PAGES,
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

l4re_rt::entry!(ext_loader_main = ext_loader);
