//! What the loader makes of a program on Fiasco: its file opened and
//! planned, its task, gates and threads (through [`l4re::kobj`]), and the
//! internal pager's initial stack.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use l4pager::region::RegionMap;
use l4pager::task::layout;
use l4re::cap::{self, CapIdx, CapRights, IpcGate, OwnedCap, Task, Thread, Untyped};
use l4re::env::env;
use l4re::fiasco::mem::Attachment;
use l4re::fpage::{Fpage, RcvBuf, Rights};
use l4re::kobj::{MAIN_THREAD_PRIO, PreparedPfTrampoline, ThreadAttr, current_thread};
use l4re::msg::LongBytes;
use l4re::proto::{Dataspace, DataspaceClient, Namespace, NamespaceClient};
use l4re::{Cap, Error, IpcError};

use super::{
    CHILD_LOG_SLOT, CHILD_PAGER_SLOT, CHILD_TASK_SLOT, INPAGER_PAGER_SLOT, INPAGER_THREAD_SLOT,
    LoaderError, PIE_BASE, PROGRAM_PF_TRAMPOLINE, UTCB_AREA, call,
};
use crate::elf::{self, PAGE};
use crate::l4re_start::{self, CapEntry, L4reEnv, StartSpec, UtcbArea};

/// Queries `path` in the namespace until the server has bound its gate
/// (ned starts l4fs and the loader together).
pub fn query(ns: Cap<Namespace>, path: &str) -> l4re::Result<OwnedCap<Untyped>> {
    let mut tries = 0;
    loop {
        let slot = cap::alloc::<Untyped>()?;
        match ns.query(LongBytes::new(path.as_bytes()), RcvBuf::cap(slot.idx())) {
            Ok(_) => return Ok(slot),
            Err(Error::Ipc(IpcError::NotExistent)) if tries < 500 => {
                tries += 1;
                l4re::fiasco::sleep_ms(10);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A file of l4fs: its dataspace, attached read-only in this task.
pub struct Image {
    /// The dataspace.
    pub ds: OwnedCap<Untyped>,
    /// Where it is attached (detached when the image is dropped).
    pub mem: Attachment,
}

impl Image {
    /// Looks `path` up in l4fs and attaches it.
    pub fn open(ns: Cap<Namespace>, path: &str) -> Result<Self, LoaderError> {
        let ds = query(ns, path)
            .map_err(|e| LoaderError::NotFound(format!("{path} in l4fs"), Some(e)))?;
        let stats = ds
            .cap()
            .cast::<Dataspace>()
            .info()
            .map_err(call("dataspace info"))?;
        if stats.size == 0 {
            return Err(LoaderError::Unusable(path.into(), "empty file"));
        }
        let mem = Attachment::read_only(ds.idx(), stats.size).map_err(call("attach"))?;
        Ok(Image { ds, mem })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.mem.bytes()
    }
}

/// A file opened in l4fs, validated as a program, and its regions.
pub struct Planned {
    /// The file.
    pub image: Image,
    /// Its load plan.
    pub plan: elf::Plan,
    /// Its regions and a stack ending at the given top.
    pub map: RegionMap,
}

impl Planned {
    /// Opens `path`, validates it ([`elf::plan`]) and lays out its regions
    /// with a stack ending at `stack_top`.
    pub fn open(
        ns: Cap<Namespace>,
        path: &str,
        stack_top: u64,
        stack_size: u64,
    ) -> Result<Self, LoaderError> {
        let run = || {
            let image = Image::open(ns, path)?;
            let plan = elf::plan(image.bytes(), PIE_BASE)?;
            let map = crate::layout::region_map(&plan, image.ds.idx(), stack_top, stack_size)?;
            Ok(Planned { image, plan, map })
        };
        run().map_err(|e: LoaderError| e.of(path))
    }
}

/// Maps our capability `src` into `task` at slot `dst` (with all rights
/// but delete).
pub fn map_cap(
    task: Cap<Task>,
    src: CapIdx,
    dst: u64,
    what: &'static str,
) -> Result<(), LoaderError> {
    task.map_obj(env().task(), src, CapRights::RWS, CapIdx::from_slot(dst))
        .map_err(call(what))
}

/// Creates a task (UTCB area at [`UTCB_AREA`]) with the log capability
/// and its own capability, and a gate bound to this thread with `label`,
/// mapped into the task at `gate_slot`.
pub fn create_task(
    label: u64,
    gate_slot: u64,
    utcb_log2: u8,
) -> Result<(OwnedCap<Task>, OwnedCap<IpcGate>), LoaderError> {
    let factory = env().factory();
    let (task, _) = factory
        .create_task(Fpage::mem(UTCB_AREA, utcb_log2, Rights::RW))
        .map_err(call("create task"))?;
    let gate = factory
        .create_gate(Some(current_thread()), label)
        .map_err(call("create gate"))?;
    map_cap(task.cap(), gate.idx(), gate_slot, "map gate")?;
    map_cap(task.cap(), env().log().idx(), CHILD_LOG_SLOT, "map log")?;
    map_cap(task.cap(), task.idx(), CHILD_TASK_SLOT, "map task")?;
    Ok((task, gate))
}

/// Makes `thread` a thread of `task` whose pager and exception handler
/// are the task's slot `pager_slot` (the kernel looks them up in the
/// faulting thread's task), with its UTCB at `utcb` and, if given, the
/// page-fault trampoline prepared in the task, and starts it at `entry`
/// with stack pointer `sp`.
pub fn run_thread(
    thread: Cap<Thread>,
    task: Cap<Task>,
    pager_slot: u64,
    utcb: u64,
    trampoline: Option<PreparedPfTrampoline>,
    entry: u64,
    sp: u64,
) -> Result<(), LoaderError> {
    let pager = CapIdx::from_slot(pager_slot);
    let attr = ThreadAttr {
        pager: Some(pager),
        exc_handler: Some(pager),
        bind: Some((utcb, task.idx())),
    };
    thread.control(&attr).map_err(call("thread control"))?;
    if let Some(t) = trampoline {
        thread
            .pf_trampoline_enable(t)
            .map_err(call("page-fault trampoline"))?;
    }
    thread.ex_regs(entry, sp, 0).map_err(call("ex_regs"))?;
    env()
        .scheduler()
        .run_thread(thread, MAIN_THREAD_PRIO)
        .map_err(call("run thread"))
}

/// Creates a thread and [`run_thread`]s it.
pub fn start_thread(
    task: Cap<Task>,
    pager_slot: u64,
    utcb: u64,
    trampoline: Option<PreparedPfTrampoline>,
    entry: u64,
    sp: u64,
) -> Result<OwnedCap<Thread>, LoaderError> {
    let thread = env()
        .factory()
        .create_thread()
        .map_err(call("create thread"))?;
    run_thread(thread.cap(), task, pager_slot, utcb, trampoline, entry, sp)?;
    Ok(thread)
}

/// The `l4re_env_t` a loader gives an ordinary L4Re program or the
/// in-task pager that starts one: parent and region map in
/// `pager_slot`, the thread in `thread_slot`, the standard slots
/// ([`super::l4re_slots`]), the log, the UTCB area of
/// [`super::L4RE_UTCB_LOG2`] with its first UTCB taken, and the caps
/// `first` (if any), `fs` and `handed_on`.
fn l4re_env(
    pager_slot: u64,
    thread_slot: u64,
    first: Option<(&str, u64)>,
    handed_on: &[(&str, u64)],
) -> Result<L4reEnv, LoaderError> {
    use super::l4re_slots as slots;
    let caps = first
        .into_iter()
        .chain([("fs", slots::FS)])
        .chain(handed_on.iter().copied())
        .map(|(name, slot)| {
            CapEntry::new(name.as_bytes(), slot).ok_or(LoaderError::Unusable(
                format!("capability {name:?}"),
                "bad name",
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(L4reEnv {
        parent: Some(pager_slot),
        rm: Some(pager_slot),
        mem_alloc: Some(slots::MEM_ALLOC),
        log: Some(CHILD_LOG_SLOT),
        main_thread: Some(thread_slot),
        factory: Some(slots::FACTORY),
        scheduler: Some(slots::SCHEDULER),
        itas: None,
        dbg_events: None,
        first_free_cap: 0x40,
        first_free_reply_cap: 0,
        utcb_area: UtcbArea {
            start: UTCB_AREA,
            log2_size: super::L4RE_UTCB_LOG2,
        },
        first_free_utcb: UTCB_AREA + l4re_start::UTCB_OFFSET,
        caps,
    })
}

/// argv: the binary's name, then `args`.
fn argv_of<'a>(binary: &'a str, args: &[&'a str]) -> Vec<&'a [u8]> {
    core::iter::once(binary)
        .chain(args.iter().copied())
        .map(str::as_bytes)
        .collect()
}

/// The pages of the internal pager's initial stack for an ordinary L4Re
/// program (`--l4re`): what ned's loader gives L4Re's in-task pager —
/// argv (the program's name and `args`), an `l4re_env_t` with the loader
/// as parent and outer region map, the standard slots
/// ([`super::l4re_slots`]), the caps `server`, `fs` and `handed_on`, the
/// UTCB area of [`super::L4RE_UTCB_LOG2`], and an `l4re_aux_t` naming
/// `binary` with [`crate::in_task::LDR_FLAG_SERVER_GATE`] (the gate
/// "server" is made here). Returns the pages by address and the stack
/// pointer.
pub fn l4re_inpager_stack(
    binary: &str,
    args: &[&str],
    handed_on: &[(&str, u64)],
) -> Result<(BTreeMap<u64, Vec<u8>>, u64), LoaderError> {
    let env = l4re_env(
        INPAGER_PAGER_SLOT,
        INPAGER_THREAD_SLOT,
        Some(("server", CHILD_PAGER_SLOT)),
        handed_on,
    )?;
    let argv = argv_of(binary, args);
    let spec = StartSpec {
        argv,
        envp: Vec::new(),
        env: &env,
        aux: Some(l4re_start::L4reAux {
            binary: binary.as_bytes(),
            kip_ds: None,
            dbg_lvl: 0,
            ldr_flags: crate::in_task::LDR_FLAG_SERVER_GATE,
            ldr_base: 0,
        }),
        kip: l4re_start::DEFAULT_KIP_ADDR,
        phdrs: None,
        dynamic: None,
    };
    stack_pages(&spec)
}

/// The pages of an ordinary L4Re program's initial stack when the loader
/// pages it itself (`--l4re` without `--inpager`): argv (`binary` and
/// `args`), an `l4re_env_t` with the loader (the task's slot
/// [`CHILD_PAGER_SLOT`]) as parent and region map, its thread in slot 3,
/// the standard slots ([`super::l4re_slots`]), the caps `fs` and
/// `handed_on`, and the program headers of `plan`. Returns them by address
/// (below `stack_top`) and the stack pointer.
pub fn l4re_program_stack(
    plan: &elf::Plan,
    binary: &str,
    args: &[&str],
    handed_on: &[(&str, u64)],
    stack_top: u64,
) -> Result<(BTreeMap<u64, Vec<u8>>, u64), LoaderError> {
    let env = l4re_env(CHILD_PAGER_SLOT, super::l4re_slots::THREAD, None, handed_on)?;
    let argv = argv_of(binary, args);
    let spec = StartSpec {
        argv,
        envp: Vec::new(),
        env: &env,
        aux: None,
        kip: l4re_start::DEFAULT_KIP_ADDR,
        phdrs: (plan.phnum > 0).then_some(l4re_start::Phdrs {
            addr: plan.phdr,
            num: plan.phnum,
            entsize: plan.phent,
        }),
        dynamic: None,
    };
    stack_pages_at(&spec, stack_top)
}

/// The pages of the initial stack `spec` describes, below
/// `layout::STACK_TOP` (the internal pager's), by address, and the stack
/// pointer.
fn stack_pages(spec: &StartSpec<'_>) -> Result<(BTreeMap<u64, Vec<u8>>, u64), LoaderError> {
    stack_pages_at(spec, layout::STACK_TOP)
}

/// The pages of the initial stack `spec` describes, below the
/// page-aligned `top`, by address, and the stack pointer.
fn stack_pages_at(
    spec: &StartSpec<'_>,
    top: u64,
) -> Result<(BTreeMap<u64, Vec<u8>>, u64), LoaderError> {
    let built = l4re_start::build(top, spec).map_err(LoaderError::Stack)?;
    // The stack from the start of its lowest page.
    let bottom = top - built.stack.bytes.len() as u64;
    let first = bottom & !(PAGE - 1);
    let mut padded = alloc::vec![0u8; (bottom - first) as usize];
    padded.extend_from_slice(&built.stack.bytes);
    let pages = padded.chunks(PAGE as usize).enumerate();
    let pages = pages
        .map(|(i, c)| (first + i as u64 * PAGE, c.to_vec()))
        .collect();
    Ok((pages, built.stack.sp))
}

/// The pages of the internal pager's initial stack: argv `inpager`, its
/// `l4re_env_t` (parent and pager: the loader; the gate "server"; log; its
/// thread) found through `AT_L4_ENV`. Returns them by address and the
/// stack pointer.
pub fn inpager_stack() -> Result<(BTreeMap<u64, Vec<u8>>, u64), LoaderError> {
    let server = CapEntry::new(b"server", CHILD_PAGER_SLOT).expect("a short name");
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
        first_free_utcb: PROGRAM_PF_TRAMPOLINE,
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
    stack_pages(&spec)
}

/// The program's regions in one line.
pub fn regions_line(map: &RegionMap) -> String {
    let regions: Vec<String> = map.iter().map(|r| format!("{r}")).collect();
    regions.join("; ")
}
