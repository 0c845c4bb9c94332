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
//! program exits with an IPC of label [`EXIT_LABEL`](crate::EXIT_LABEL)
//! (status in mr0), which is never answered: the loader deletes its thread
//! and task and prints the fault statistics. When no program is left the
//! loader prints a summary and exits.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use l4_sys as sys;
use l4pager::fault::{self, Access, Decision};
use l4pager::region::RegionMap;
use l4re::cap::{self, CapIdx, IpcGate, OwnedCap, Untyped};
use l4re::env::{env, log_line};
use l4re::fiasco::mem;
use l4re::fpage::{Fpage, MapType, RcvBuf, Rights, SndFpage};
use l4re::ipc::{self, Received, Timeout};
use l4re::msg::{LongBytes, MsgTag};
use l4re::proto::{Dataspace, DataspaceClient, Namespace, NamespaceClient};
use l4re::utcb::Utcb;
use l4re::{Cap, Error, IpcError};
use l4re_rt::Args;
use loader::elf;

use crate::check::{End, Record, checks, parse_arg, tap_block};
use crate::stats::{FaultStats, Resolved};
use crate::{CHILD_LOG_SLOT, CHILD_PAGER_SLOT, CHILD_TASK_SLOT, EXIT_LABEL};

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

/// The task, thread and gate of a loaded program.
type TaskCaps = (OwnedCap<Untyped>, OwnedCap<Untyped>, OwnedCap<IpcGate>);

/// Creates the task, the gate (label `label`, bound to this thread) and
/// the thread of a program with entry `entry`, and starts it.
fn start_task(label: u64, entry: u64) -> Result<TaskCaps, String> {
    let e = env();
    let me = l4re::kobj::current_thread();
    let alloc = || cap::alloc::<Untyped>().map_err(|e| format!("cap alloc: {e:?}"));
    let task = alloc()?;
    let thread = alloc()?;
    let gate = alloc()?.cast::<IpcGate>();
    let this_task = idx(e.task().idx());
    Utcb::with(|_| -> Result<(), String> {
        // SAFETY: kernel invocations on capabilities of ours (factory,
        // scheduler, log, this task) and on the free slots just allocated;
        // the UTCB borrow makes us the UTCB's only user, and `check` reads
        // each call's result from it.
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
            check("create gate", tag)?;
            let rights = sys::L4_CAP_FPAGE_RWS as u8;
            for (src, dst, what) in [
                (idx(gate.idx()), CHILD_PAGER_SLOT, "map gate"),
                (idx(e.log().idx()), CHILD_LOG_SLOT, "map log"),
                (idx(task.idx()), CHILD_TASK_SLOT, "map task"),
            ] {
                let tag = sys::l4_task_map(
                    idx(task.idx()),
                    this_task,
                    sys::l4_obj_fpage(src, 0, rights),
                    sys::l4_map_obj_control(slot(dst) as _, sys::L4_MAP_ITEM_MAP as _),
                );
                check(what, tag)?;
            }
            let tag = sys::l4_factory_create_thread(idx(e.factory().idx()), idx(thread.idx()));
            check("create thread", tag)?;
            sys::l4_thread_control_start();
            sys::l4_thread_control_pager(slot(CHILD_PAGER_SLOT));
            sys::l4_thread_control_exc_handler(slot(CHILD_PAGER_SLOT));
            sys::l4_thread_control_bind(UTCB_AREA as *mut sys::l4_utcb_t, idx(task.idx()));
            check(
                "thread control",
                sys::l4_thread_control_commit(idx(thread.idx())),
            )?;
            check(
                "ex_regs",
                sys::l4_thread_ex_regs(idx(thread.idx()), entry, STACK_TOP, 0),
            )?;
            let sp = sys::l4_sched_param(2, 0);
            check(
                "run thread",
                sys::l4_scheduler_run_thread(idx(e.scheduler().idx()), idx(thread.idx()), &sp),
            )?;
        }
        Ok(())
    })?;
    Ok((task, thread, gate))
}

/// Loads `path` and starts it with gate label `label`.
fn load(ns: Cap<Namespace>, path: &str, label: u64) -> Result<Child, String> {
    let image = open_image(ns, path)?;
    let plan = elf::plan(image.bytes(), PIE_BASE).map_err(|e| format!("{path}: refused: {e}"))?;
    let map = loader::layout::region_map(&plan, image.ds.idx(), STACK_TOP, STACK_SIZE)
        .map_err(|e| format!("{path}: {e}"))?;
    let regions: Vec<String> = map.iter().map(|r| format!("{r}")).collect();
    line(&format!(
        "{path}: entry {:#x}, {} loadable file pages, regions: {}",
        plan.entry,
        plan.loadable_pages,
        regions.join("; ")
    ));
    let (task, thread, gate) = start_task(label, plan.entry).map_err(|e| format!("{path}: {e}"))?;
    line(&format!("{path}: started in a new task"));
    Ok(Child {
        name: path.to_string(),
        task,
        thread,
        gate,
        image,
        map,
        frames: Vec::new(),
        stats: FaultStats::new(plan.loadable_pages),
        last_fault: (u64::MAX, 0),
    })
}

/// Deletes the program's thread and task (and with them every mapping of
/// our pages into it) and the gate; returns its pages to the pool.
fn end_task(mut child: Child, pool: &mut Pool) {
    let this_task = idx(env().task().idx());
    Utcb::with(|_| {
        for c in [child.thread.idx(), child.task.idx(), child.gate.idx()] {
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
    // SAFETY: `own` is a whole page of the pool, present and writable in
    // this task and mapped nowhere else yet; `img[from..from + n]` lies in
    // the attached image and `n <= PAGE`.
    unsafe {
        let dst = own as *mut u8;
        core::ptr::copy_nonoverlapping(img[from..].as_ptr(), dst, n);
        core::ptr::write_bytes(dst.add(n), 0, PAGE as usize - n);
    }
    child.frames.push(own);
    child.stats.record(page, how);
    Outcome::Map { own, page, rights }
}

fn exception_text() -> String {
    Utcb::with(|u| {
        // SAFETY: an exception IPC carries the thread's registers in the
        // message registers, laid out as `l4_exc_regs_t`.
        let regs = unsafe { &*(u.mr().as_ptr() as *const sys::l4_exc_regs_t) };
        format!(
            "exception: trap {} (error {:#x}) at pc {:#x}, sp {:#x}",
            regs.trapno, regs.err, regs.ip, regs.sp
        )
    })
}

fn ext_loader(args: Args) -> i32 {
    let Some(gate) = env().get_cap::<IpcGate>("fs") else {
        line("no capability \"fs\" (the l4fs gate)");
        return 1;
    };
    let ns: Cap<Namespace> = gate.cast();
    let mut pool = match Pool::new(POOL_PAGES) {
        Ok(p) => p,
        Err(e) => {
            line(&e);
            return 1;
        }
    };
    let mut tap = false;
    let mut records: Vec<Record> = Vec::new();
    let mut children: BTreeMap<u64, (Child, usize)> = BTreeMap::new();
    for i in 1..args.len() {
        let Some(arg) = args.get(i) else { continue };
        if arg == "--tap" {
            tap = true;
            continue;
        }
        let (path, expect) = match parse_arg(arg) {
            Ok(x) => x,
            Err(e) => {
                line(&e);
                return 1;
            }
        };
        let label = (i as u64) << 4;
        let end = match load(ns, path, label) {
            Ok(c) => {
                children.insert(label, (c, records.len()));
                End::Running
            }
            Err(e) => {
                line(&e);
                End::Refused(e)
            }
        };
        records.push(Record {
            path: path.to_string(),
            expect,
            end,
            stats: FaultStats::new(0),
        });
    }
    // The pager loop: this thread is bound to every program's gate.
    let mut reply: Option<SndFpage> = None;
    while !children.is_empty() {
        let received = Utcb::with(|u| -> l4re::Result<(Received, [u64; 2])> {
            let r = if let Some(item) = reply.take() {
                u.mr()[0] = item.base;
                u.mr()[1] = item.fpage.0;
                ipc::reply_and_wait(u, MsgTag::new(0, 0, 1, 0), Timeout::Never)?
            } else {
                ipc::wait(u, Timeout::Never)?
            };
            Ok((r, [u.mr()[0], u.mr()[1]]))
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
                    reply = Some(item);
                    continue;
                }
                Outcome::Kill(report) => End::Ended(format!("invalid access: {report}")),
            },
            LABEL_EXCEPTION => End::Ended(exception_text()),
            EXIT_LABEL => End::Exited(words[0]),
            other => End::Ended(format!("unexpected message label {other}")),
        };
        let (c, at) = children.remove(&label).expect("child present");
        match &end {
            End::Exited(status) => line(&format!("{}: exited with status {status}", c.name)),
            End::Ended(why) | End::Refused(why) => line(&format!("{}: {why}; task ended", c.name)),
            End::Running => {}
        }
        line(&format!("{}: {}", c.name, c.stats.line()));
        records[at].end = end;
        records[at].stats = c.stats.clone();
        end_task(c, &mut pool);
    }
    let count = |f: fn(&End) -> bool| records.iter().filter(|r| f(&r.end)).count();
    line(&format!(
        "done: {} exited with 0, {} ended otherwise, {} refused",
        count(|e| *e == End::Exited(0)),
        count(|e| matches!(e, End::Exited(s) if *s != 0) || matches!(e, End::Ended(_))),
        count(|e| matches!(e, End::Refused(_)))
    ));
    if tap {
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
