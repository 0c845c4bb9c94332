//! The internal pager as L4Re's in-task pager: what `l4re_itas` does when
//! ned (or moe) starts a program with `l4re_loader = "rom/inpager"`.
//!
//! ned's loader puts this program into the new task with the program's
//! arguments, environment variables and initial capabilities, an
//! `l4re_aux_t` naming the binary (`rom/hello`), and the task's outer
//! region map (moe's, `l4re_env()->rm`) as its pager. From there, as
//! `l4re_itas`'s `main.cc` and `loader.cc` do:
//!
//! 1. take over the outer region map's regions and areas
//!    (`get_regions`/`get_areas`, [`in_task::import_outer`]): this
//!    program's own memory, the KIP and the UTCB area stay with the outer
//!    pager (faults there are forwarded), and nothing of the program is
//!    placed over them;
//! 2. open the binary through the namespace ([`l4re::env::query_path`]),
//!    read it through a temporary attach in the outer region map, and
//!    place it ([`in_task::place`]: the planning of every loader of the
//!    project); a dynamically linked program's interpreter the same way;
//! 3. attach the program's segments, its interpreter's, a stack and a
//!    scratch page to the task's region map ([`in_task::attach`]);
//! 4. make the IPC gate that is the program's region map, pager and
//!    exception handler, bound to this thread;
//! 5. lay out the program's initial stack as L4Re's loader does
//!    ([`loader::l4re_start::build`]) with a copy of this program's
//!    environment in which `rm` is that gate and `main_thread` the
//!    program's thread ([`L4reEnv::for_program`]), and write it into the
//!    stack's first pages, faulted in here;
//! 6. create the program's thread on the next free UTCB, with the gate as
//!    pager and exception handler and, where the kernel has it, the
//!    page-fault trampoline (the state in the UTCB slot after the
//!    thread's; [`prepare`]): the thread maps shared pages itself, as
//!    under `l4re_itas`; start it at the entry point;
//! 7. serve the gate: page faults and `L4Re::Rm` of every thread of the
//!    program (threads a program creates are registered with the
//!    program's `itas`, [`crate::threads`], which makes the gate their
//!    pager), exceptions.
//!
//! The program's exit goes to its parent (ned) directly, as under
//! `l4re_itas`; an invalid access or an exception ends it with a report
//! and `signal(0, 1)` to the parent.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;

use alloc::vec::Vec;
use l4pager::region::RegionMap;
use l4pager::task::SERVER_LABEL;
use l4re::Cap;
use l4re::cap::{CapIdx, CapRights, well_known};
use l4re::env::env;
use l4re::kobj::{
    Kip, MAIN_THREAD_PRIO, PfHandler, PfOutcome, PfTrampolineState, PreparedPfTrampoline,
    ThreadAttr,
};
use l4re::proto::rm::{Flags as RmFlags, RangeEntry, RangeList};
use l4re::proto::{Dataspace, DataspaceClient, RmClient};
use l4re::server::Server;
use l4re_rt::freestanding::StartInfo;
use loader::in_task;
use loader::l4re_start::{self, CapEntry, L4reAux, L4reEnv, Phdrs, StartSpec, UtcbArea};

use crate::fiasco::{ANON_CHUNK, Anon, Ending, InPager, Origin, line};
use crate::window::PAGE;

/// Words of the stack the page-fault trampoline handler runs on.
pub(crate) const HANDLER_STACK_WORDS: usize = 4096;

/// The program's threads with a trampoline resolve their own faults
/// ([`InPager::resolve`], the same as for page-fault IPC).
impl PfHandler for InPager {
    fn page_fault(&self, pfa: u64, ip: u64) -> PfOutcome {
        match self.resolve(pfa, ip, Origin::Trampoline) {
            Ok(()) => PfOutcome::Resolved,
            Err(_) => match self.rm.rescue_for(ip) {
                // `Rm::add_rescue_jump` covers the instruction: on at the
                // rescue address, as the gate's exception handling does.
                Some(jump) => PfOutcome::ResumeAt(jump.rescue),
                // As a negative reply to page-fault IPC: an exception for
                // the gate, which ends the program with a report.
                None => PfOutcome::Reflect,
            },
        }
    }
}

/// Writes a trampoline state for the program's thread at `state`: its
/// faults run [`InPager::resolve`] in the thread itself. All our code and
/// data are mapped first (faults the handler takes itself go to the gate,
/// and a fault on our own memory there would be nobody's): the handler
/// then takes none while it holds a lock the gate's thread needs.
pub(crate) fn prepare(
    state: PfTrampolineState,
    pager: &Arc<InPager>,
) -> l4re::Result<PreparedPfTrampoline> {
    let stack: &'static mut [u64] = Vec::leak(alloc::vec![0u64; HANDLER_STACK_WORDS]);
    let handler: &'static Arc<InPager> =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(pager.clone()));
    prepare_for(state, stack, &**handler)
}

/// Writes a trampoline state at `state` whose faults run `handler` (the
/// pager's [`InPager::resolve`], perhaps counted per thread) on `stack`;
/// see [`prepare`].
pub(crate) fn prepare_for(
    state: PfTrampolineState,
    stack: &'static mut [u64],
    handler: &'static dyn PfHandler,
) -> l4re::Result<PreparedPfTrampoline> {
    l4re_rt::freestanding::touch_image();
    // SAFETY: the handler's path (`InPager::resolve` for
    // `Origin::Trampoline`: the region lookup, `Dataspace::map`, page-fault
    // IPC to the gate, atomic counters, the rescue lookup) is written to
    // keep to general-purpose registers, so the program's FPU/SSE state
    // need not be saved, and with it the kernel's lazy FPU switch to the
    // handler and back on every fault goes. The harness test
    // `itas-fpu` keeps values in every vector register across faults of
    // each kind the handler resolves or sends on and checks them.
    // A `handler` other than the pager adds only atomic counting
    // (`crate::threads`).
    unsafe { state.prepare_fpu_free(stack, handler) }
}

/// Runs the in-task pager; returns only on failure (the exit status).
pub(crate) fn run(info: StartInfo) -> i32 {
    match start(info) {
        Ok((pager, mut server)) => {
            let _ = &pager;
            match server.run() {
                Ok(()) => 0,
                Err(err) => {
                    line(&format!("server loop: {err}"));
                    1
                }
            }
        }
        Err(why) => {
            line(&why);
            1
        }
    }
}

/// Where the binary is readable in this task while it is planned.
enum BinaryView {
    /// Attached in the outer region map, which pages it.
    Outer(u64),
    /// Mapped here page block by page block from the dataspace, in an
    /// area reserved in the task's region map.
    Mapped(u64),
}

/// Makes `file` (`len` bytes, page-rounded) readable in this task: through
/// the outer region map (as `l4re_itas` does: only the pages read come
/// in), or, if the outer region map does not attach (a loader that is
/// only this task's pager), by mapping it here from the dataspace in the
/// largest blocks its server sends.
fn view_binary(
    file: Cap<Dataspace>,
    len: u64,
    map: &mut RegionMap,
) -> Result<BinaryView, l4re::Error> {
    let outer = env().rm();
    let attached = outer.attach(
        0,
        len,
        RmFlags::R | RmFlags::SEARCH_ADDR,
        Some(file.send(CapRights::R)),
        0,
        12,
        CapIdx::INVALID.0,
        "[binary]",
        0,
    );
    match attached {
        Ok(at) => return Ok(BinaryView::Outer(at)),
        Err(l4re::Error::NoSys) => {}
        Err(e) => return Err(e),
    }
    let at = map
        .reserve_area(in_task::PIE_BASE, len, true, 2 << 20)
        .map_err(l4re::Error::from)?;
    let mut off = 0;
    while off < len {
        let (base, order) = crate::window::around(at + off, at, at + len);
        let item = file.map(
            off,
            at + off,
            l4re::proto::dataspace::Flags::R,
            l4re::fpage::RcvBuf::window(base, order),
        );
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                crate::fiasco::unmap_range(at, off);
                let _ = map.free_area(at);
                return Err(e);
            }
        };
        // What arrived: the block of 2^got bytes around the page asked for.
        let got = item.received_order().unwrap_or(12).clamp(12, order);
        let block_end = ((at + off) & !((1u64 << got) - 1)) + (1 << got);
        off = block_end.max(at + off + PAGE) - at;
    }
    Ok(BinaryView::Mapped(at))
}

/// Reads the whole binary ([`view_binary`]) and places it
/// ([`in_task::place`]).
fn plan_binary(
    file: Cap<Dataspace>,
    name: &str,
    map: &mut RegionMap,
    pie_hint: u64,
) -> Result<loader::elf::Plan, String> {
    let size = file
        .info()
        .map_err(|e| format!("{name}: cannot read its size: {e}"))?
        .size;
    if size == 0 {
        return Err(format!("{name}: empty file"));
    }
    let len = size.next_multiple_of(PAGE);
    let view = view_binary(file, len, map).map_err(|e| format!("{name}: cannot read it: {e}"))?;
    let at = match view {
        BinaryView::Outer(at) | BinaryView::Mapped(at) => at,
    };
    // SAFETY: `[at, at + size)` is the file, readable in this task (paged
    // by the outer region map, or mapped above) until it is unmapped
    // below, after the last use of `bytes`.
    let bytes = unsafe { core::slice::from_raw_parts(at as *const u8, size as usize) };
    let plan = in_task::place(map, bytes, pie_hint).map_err(|e| format!("{name}: {e}"));
    match view {
        BinaryView::Outer(at) => {
            let _ = env().rm().detach(at, len, 0);
        }
        BinaryView::Mapped(at) => {
            let _ = map.free_area(at);
        }
    }
    crate::fiasco::unmap_range(at, len);
    plan
}

/// Reads all of a list the outer region map hands out a reply at a time
/// (`get_regions`, `get_areas`).
fn read_all(
    what: &str,
    get: impl Fn(u64) -> l4re::Result<RangeList>,
) -> Result<Vec<RangeEntry>, String> {
    let mut all = Vec::new();
    let mut at = 0u64;
    loop {
        let RangeList(list) = get(at).map_err(|e| format!("cannot read the outer {what}: {e}"))?;
        let full = list.len() == RangeList::MAX;
        let next = list.last().and_then(|r| r.end.checked_add(1));
        all.extend(list);
        match next {
            Some(n) if full && n > at => at = n,
            _ => return Ok(all),
        }
    }
}

/// Our own environment as an [`L4reEnv`] (caps by slot).
fn own_env() -> L4reEnv {
    let e = l4re::fiasco::env_snapshot();
    let slot = |c: CapIdx| c.is_valid().then_some(c.slot());
    L4reEnv {
        parent: slot(e.parent),
        rm: slot(e.rm),
        mem_alloc: slot(e.mem_alloc),
        log: slot(e.log),
        main_thread: slot(e.main_thread),
        factory: slot(e.factory),
        scheduler: slot(e.scheduler),
        itas: slot(e.itas),
        dbg_events: slot(e.dbg_events),
        first_free_cap: e.first_free_cap,
        first_free_reply_cap: e.first_free_reply_cap,
        utcb_area: UtcbArea {
            start: e.utcb_area & !0xfff,
            log2_size: ((e.utcb_area >> 6) & 0x3f) as u8,
        },
        first_free_utcb: e.first_free_utcb,
        caps: e
            .caps
            .iter()
            .map(|(name, cap, flags)| CapEntry {
                name: *name,
                slot: cap.slot(),
                flags: *flags,
            })
            .collect(),
    }
}

fn start(info: StartInfo) -> Result<(Arc<InPager>, Server), String> {
    let aux = info.aux().ok_or("no aux vector from the loader")?;
    let name = core::str::from_utf8(aux.binary)
        .map_err(|_| String::from("the binary's name is not UTF-8"))?;
    if name.is_empty() {
        return Err("no binary named in the aux vector".into());
    }
    let file = l4re::env::query_path::<Dataspace>(name)
        .map_err(|e| format!("cannot open {name}: {e}"))?
        .into_cap();
    // The task's region map: the outer map's regions, then the program.
    let mut map = in_task::new_map();
    let rm = env().rm();
    let regions = read_all("regions", |a| rm.get_regions(a))?;
    let areas = read_all("areas", |a| rm.get_areas(a))?;
    let outer = in_task::import_outer(&mut map, &regions, &areas, rm.idx())
        .map_err(|e| format!("the outer region map: {e}"))?;
    let pie_hint = if aux.ldr_base != 0 {
        aux.ldr_base
    } else {
        in_task::PIE_BASE
    };
    let plan = plan_binary(file, name, &mut map, pie_hint)?;
    // A dynamically linked program starts at its interpreter (L4Re's
    // ld-l4.so), loaded next to it, as l4re_itas does.
    let interp = match &plan.interp {
        None => None,
        Some(path) => {
            let ifile = l4re::env::query_path::<Dataspace>(path)
                .map_err(|e| format!("{name}: cannot open its interpreter {path}: {e}"))?
                .into_cap();
            let mut iplan = plan_binary(ifile, path, &mut map, plan.span.1)?;
            if iplan.interp.is_some() {
                return Err(format!(
                    "{name}: its interpreter {path} needs an interpreter itself"
                ));
            }
            for r in &mut iplan.regions {
                r.name = format!("{path}:{}", r.name);
            }
            Some((ifile, iplan))
        }
    };
    let layout = in_task::attach(
        &mut map,
        &plan,
        file.idx(),
        interp.as_ref().map(|(f, p)| (p, f.idx())),
    )
    .map_err(|e| format!("{name}: {e}"))?;
    let (stack, scratch) = (layout.stack, layout.scratch);
    let regions = map.len();

    // Anonymous memory from the program's allocator, as it fills up.
    let mem = env().mem_alloc();
    if !mem.idx().is_valid() {
        return Err("no memory allocator in the environment".into());
    }
    let first = mem
        .alloc_dataspace(ANON_CHUNK, 0, 12)
        .map_err(|e| format!("no anonymous memory: {e}"))?;
    let anon = Anon {
        ds: first.into_cap(),
        size: ANON_CHUNK,
        next: 0,
        more: Some(mem),
        total: ANON_CHUNK,
    };

    // The gate: the program's region map, pager and exception handler.
    // A creator that made it already (the seeds' arrangement: the gate
    // named "server", bound to this thread) says so in `ldr_flags`.
    let gate: Cap<l4re::cap::IpcGate> = match env().get_cap("server") {
        Some(g) if aux.ldr_flags & in_task::LDR_FLAG_SERVER_GATE != 0 => g,
        _ => env()
            .factory()
            .create_gate(Some(env().main_thread()), SERVER_LABEL)
            .map_err(|e| format!("cannot create the region-map gate: {e}"))?
            .into_cap(),
    };
    let parent: Cap<l4re::proto::Parent> = env().parent().cast();
    let pager = Arc::new(InPager::new(
        map,
        anon,
        Ending::Parent(parent),
        scratch,
        gate.idx(),
    ));
    let mut server = Server::new();
    // The program sends its dataspaces from this very task.
    server.receive_local_ids(true);
    server
        .adopt_gate(SERVER_LABEL, pager.clone())
        .map_err(|e| format!("serving the region-map gate: {e}"))?;

    // The program's thread and its environment.
    let thread = env()
        .factory()
        .create_thread()
        .map_err(|e| format!("cannot create the program's thread: {e}"))?
        .into_cap();
    let utcb = l4re::fiasco::take_utcb();
    // The trampoline state goes next to the thread's UTCB, before the
    // program's environment records the first free UTCB.
    let trampoline = Kip::has_feature("pf_tramp").then(PfTrampolineState::take);
    // The program's `itas`: its threads are registered here
    // (`crate::threads`), each with a trampoline where the kernel has it.
    let static_pager: &'static InPager =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(pager.clone()));
    let threads = crate::threads::Threads::new(
        static_pager,
        gate.idx(),
        trampoline.is_some(),
        aux.dbg_lvl & crate::threads::DBG_SERVER != 0,
    );
    let (itas_gate, _) = server
        .register(Arc::new(threads))
        .map_err(|e| format!("cannot create the itas gate: {e}"))?;
    let itas_gate = itas_gate.into_cap();
    let mut penv = own_env().for_program(gate.idx().slot(), thread.idx().slot(), utcb);
    penv.itas = Some(itas_gate.idx().slot());
    let (argv, envp) = (info.args(), info.vars());
    // The program gets our `l4re_aux_t` too: ned reads the KIP's
    // dataspace from it to hand the KIP on to the programs it starts.
    let kip_ds = aux.kip_ds;
    let spec = StartSpec {
        argv,
        envp,
        env: &penv,
        aux: Some(L4reAux {
            binary: name.as_bytes(),
            kip_ds: CapIdx(kip_ds)
                .is_valid()
                .then_some(kip_ds >> l4re_start::CAP_SHIFT),
            dbg_lvl: aux.dbg_lvl,
            ldr_flags: aux.ldr_flags,
            ldr_base: aux.ldr_base,
        }),
        kip: info.kip,
        phdrs: (plan.phnum > 0).then_some(Phdrs {
            addr: plan.phdr,
            num: plan.phnum,
            entsize: plan.phent,
        }),
        dynamic: layout.dynamic,
    };
    let top = stack + in_task::STACK_SIZE;
    let built = l4re_start::build(top, &spec).map_err(|e| format!("initial stack: {e:?}"))?;
    let bytes = &built.stack.bytes;
    let low = top - bytes.len() as u64;
    pager
        .fault_in_for_write(low, top)
        .map_err(|e| format!("initial stack pages: {e}"))?;
    // SAFETY: `[low, top)` lies in the stack region, whose pages were just
    // mapped writable into this task from our anonymous memory; nothing
    // else uses them yet (the program's thread does not exist yet).
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), low as *mut u8, bytes.len()) };

    thread
        .control(&ThreadAttr {
            pager: Some(gate.idx()),
            exc_handler: Some(gate.idx()),
            bind: Some((utcb, well_known::TASK)),
        })
        .map_err(|e| format!("cannot set up the program's thread: {e}"))?;
    if let Some(state) = trampoline {
        // The thread resolves its own faults (no page-fault IPC), as under
        // `l4re_itas`.
        let prepared = prepare(state, &pager)
            .map_err(|e| format!("cannot prepare the page-fault trampoline: {e}"))?;
        thread
            .pf_trampoline_enable(prepared)
            .map_err(|e| format!("cannot set up the page-fault trampoline: {e}"))?;
    }
    env()
        .scheduler()
        .run_thread(thread, MAIN_THREAD_PRIO)
        .map_err(|e| format!("cannot schedule the program's thread: {e}"))?;
    let entry = layout.entry;
    thread
        .ex_regs(entry, built.stack.sp, 0)
        .map_err(|e| format!("cannot start the program: {e}"))?;
    line(&format!(
        "{name}: {regions} regions ({outer} of the outer region map), entry {entry:#x}, stack {stack:#x}{}",
        plan.interp
            .as_ref()
            .map(|i| format!(", interpreter {i}"))
            .unwrap_or_default()
    ));
    Ok((pager, server))
}
