//! The Linux host platform: tasks are processes, IPC gates are Unix
//! sockets, capabilities travel as file descriptors, memory items as
//! shared-memory mappings.
//!
//! # Model
//!
//! * **Capability table.** Each process has one table (a global mutex)
//!   from slot to object: IPC gate, thread, task, the own task, the
//!   factory, the log. The fixed slots of L4Re are filled at start-up
//!   ([`well_known`] `TASK`, `FACTORY`, `THREAD` for the main thread,
//!   `LOG`); named initial capabilities from the creator
//!   are at `FIRST_NAMED` (0x15) upward in the order given; slots from
//!   0x100 on are allocated (4096 of them).
//! * **IPC gates** are `SOCK_SEQPACKET` socket pairs (the `objects`
//!   and `wire` submodules document the details and the packet format). Sending a
//!   capability sends its fds; the receiver installs the object into the
//!   slot its receive buffer names.
//! * **Calls** travel on *private channels*: a thread's first call to a
//!   gate goes through the gate and brings a socket pair's far end, which
//!   the server keeps next to the gate; the reply and the thread's later
//!   calls to that gate use it (one `sendmsg` + one `recvmsg` per side and
//!   no descriptor passing). The server holds the only copy of the far end,
//!   so its death, or a request dropped unanswered, is end of file for the
//!   caller, as with a reply capability (the `transport` submodule has the
//!   details: sequence numbers, the per-thread cache, `fork`).
//! * **Threads.** Every thread that uses IPC has an endpoint: an epoll set
//!   over the server ends of the gates bound to it and their channels,
//!   plus its own gate so that the thread capability can be called. The
//!   main thread's capability is `THREAD`; other threads get a slot on
//!   first use (released when the thread exits), or from [`spawn_thread`].
//! * **Tasks.** [`spawn`] starts a program as a child process and hands it
//!   its named capabilities through a bootstrap socket; [`fork_task`]
//!   makes a task that is a copy of a still single-threaded creator (no
//!   program executed: ready at once), which gets capabilities over a
//!   socket ([`send_caps`]/[`recv_caps`]).
//! * **Memory items** carry memfd-backed memory ([`SharedMem`], or memory
//!   received through memory items) and are mapped `MAP_SHARED` into the
//!   receiver's receive window.
//! * **Memory and page faults.** A [`Mapping`] owns a range of the
//!   address space (`mmap`/`mprotect`/`madvise`/`mincore`, volatile byte
//!   access); [`ReservedRange`] and [`SharedMem`] are built on it. The
//!   [`uffd`] module is the host's page-fault mechanism (userfaultfd and
//!   its ioctls), which the pagers serve as they serve fault IPC on
//!   Fiasco. [`signal`] and [`sys`] wrap the process-level calls the
//!   host's tasks need that `rustix` lacks.
//!
//! # Differences from Fiasco, and what servers must know
//!
//! * **Gate labels and rights.** The receiver ORs the W/S rights of the
//!   sender's gate capability into the low two bits of the label, as the
//!   kernel does, but on the host the rights are *reported by the sending
//!   process* in the packet header: a hostile process that holds the gate
//!   can claim any rights. Servers must therefore not rely on those bits
//!   for access control; encode access modes in the object (a separate
//!   gate and label per access mode), as ours do. Capability rights
//!   carried in items are likewise only as good as the sender.
//! * **Server death** is seen by clients when the gate's server end is
//!   closed in every process: calls then fail with
//!   [`IpcError::NotExistent`], including
//!   calls already queued or being served. A call on a channel fails so
//!   when the process that kept the channel dies, even if another task
//!   still holds the server end (the next call goes through the gate). A task that keeps the server end
//!   keeps the gate alive: calls then queue until someone binds it again.
//!   Therefore [`spawn`] *hands over* the server end of a gate it gives with
//!   the S right (the creator keeps calling rights only, unless it has the
//!   gate bound to one of its own threads). Capabilities sent in IPC keep
//!   L4's copy semantics (the sender keeps its server end); call
//!   [`release_server_end`] after handing a gate on that way to get the
//!   same effect.
//! * **Unbound gates queue.** Fiasco fails a call to an unbound gate; the
//!   host queues it until a thread binds the gate (or the gate is closed).
//!   When a thread other than the main thread exits, the requests queued on
//!   the gates bound to it and on their channels are dropped (their callers
//!   see `NotExistent`) and the gates are unbound.
//! * **Memory items and receive windows.** Only memfd-backed memory can be
//!   sent ([`SharedMem`], or pages received through memory items: the
//!   registry of such ranges lets a task pass on what it received). The
//!   receiver maps the item `MAP_SHARED | MAP_FIXED` into the receive
//!   window it announced in its buffer registers, at the place
//!   [`fit_into_window`](crate::fpage::fit_into_window) computes, with the
//!   item's rights (a read-only item carries a read-only fd, so the
//!   receiver cannot upgrade it). Announcing a window hands that address
//!   range over to incoming mappings: a program must only announce ranges
//!   it owns and holds no Rust references into, e.g. a [`ReservedRange`]
//!   (a pager announcing the whole address space trusts its senders with
//!   all of it, as on L4). A memory item that finds no window is dropped
//!   (in a reply, the call fails with
//!   [`IpcError::MapFailed`]).
//! * **Memory grants** are maps (the sender keeps the memory); capability
//!   grants release the sender's slot after the send.
//! * The factory, the log, the scheduler and task objects cannot be
//!   invoked by IPC (the platform functions cover what the crate needs).

mod mapping;
mod objects;
mod shm;
pub mod signal;
pub mod sys;
mod task;
mod transport;
pub mod uffd;
mod wire;

#[cfg(test)]
mod tests;

use core::cell::{Cell, RefCell, UnsafeCell};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

pub use mapping::{Mapping, Prot, Source};
use objects::{Entry, GateObj, Object, ThreadEndpoint};
pub use shm::{ReservedRange, SharedMem, forget_mappings, memfd_behind};
pub use task::{
    BOOTSTRAP_ENV, ChildTask, Forked, ForkedProcess, SpawnOptions, fork_process, fork_task,
    recv_caps, send_caps, spawn, spawn_with,
};
pub(crate) use transport::{ipc_call, ipc_reply, ipc_reply_and_wait, ipc_send, ipc_wait};

use crate::cap::{Cap, CapIdx, CapRights, SlotBitmap, Thread, well_known};
use crate::error::{Error, IpcError, Result};
use crate::utcb::UtcbRegs;

/// Locks a mutex, ignoring poisoning (the tables stay consistent: no
/// critical section leaves them half-updated when it panics).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Maps a system error to the nearest L4 error.
fn errno_to_error(e: rustix::io::Errno) -> Error {
    use rustix::io::Errno;
    match e {
        Errno::MFILE | Errno::NFILE => Error::TableFull,
        Errno::NOMEM | Errno::NOBUFS => Error::NoMem,
        Errno::ACCESS => Error::Access,
        Errno::PERM => Error::Perm,
        Errno::INVAL => Error::Inval,
        Errno::NOENT | Errno::SRCH => Error::NoEnt,
        Errno::AGAIN => Error::Again,
        Errno::BADF | Errno::NOTSOCK => Error::Inval,
        _ => Error::Io,
    }
}

// ---------------------------------------------------------------------------
// The capability table.

/// First allocatable slot.
const FIRST_ALLOC_SLOT: u64 = 0x100;
/// Allocatable slots / 64.
const ALLOC_WORDS: usize = 64;

/// A task's capability table.
struct Table {
    slots: HashMap<u64, Entry>,
    alloc: SlotBitmap<ALLOC_WORDS>,
}

impl Table {
    fn new() -> Table {
        Table {
            slots: HashMap::new(),
            alloc: SlotBitmap::new(FIRST_ALLOC_SLOT),
        }
    }

    /// The entry in slot `idx`.
    fn get(&self, idx: CapIdx) -> Option<&Entry> {
        if !idx.is_valid() {
            return None;
        }
        self.slots.get(&idx.slot())
    }

    /// Puts `e` into slot `idx`; returns what was there (drop it after
    /// unlocking the table).
    fn install(&mut self, idx: CapIdx, e: Entry) -> Option<Entry> {
        if !idx.is_valid() {
            return Some(e);
        }
        self.slots.insert(idx.slot(), e)
    }

    /// Empties slot `idx`; returns what was there (drop it after unlocking
    /// the table).
    fn remove(&mut self, idx: CapIdx) -> Option<Entry> {
        if !idx.is_valid() {
            return None;
        }
        self.slots.remove(&idx.slot())
    }
}

/// The state of this process.
struct Process {
    /// The capability table.
    table: Mutex<Table>,
    /// The log tag.
    log_tag: String,
    /// Named initial capabilities.
    named: Vec<(String, CapIdx)>,
    /// The main thread's endpoint.
    main: Arc<ThreadEndpoint>,
    /// The bootstrap socket (kept, close-on-exec, so its number is not
    /// reused while the environment may still name it).
    _bootstrap: Option<OwnedFd>,
}

static PROCESS: OnceLock<Process> = OnceLock::new();
/// Set while `PROCESS` is being initialized (a log line written then must
/// not wait for it).
static INITIALIZING: AtomicBool = AtomicBool::new(false);

/// This process's state, set up (and the bootstrap from the creator read)
/// on first use.
fn process() -> &'static Process {
    PROCESS.get_or_init(|| {
        INITIALIZING.store(true, Ordering::Relaxed);
        let main =
            ThreadEndpoint::new().expect("l4re host: cannot create the main thread's endpoint");
        let mut table = Table::new();
        table.install(
            well_known::TASK,
            Entry {
                obj: Object::SelfTask,
                rights: CapRights::RWSD,
            },
        );
        table.install(
            well_known::FACTORY,
            Entry {
                obj: Object::Factory,
                rights: CapRights::RWSD,
            },
        );
        table.install(
            well_known::THREAD,
            Entry {
                obj: Object::Thread(main.clone()),
                rights: CapRights::RWSD,
            },
        );
        table.install(
            well_known::LOG,
            Entry {
                obj: Object::Log,
                rights: CapRights::RWSD,
            },
        );
        let boot = task::read_bootstrap(&mut table);
        let log_tag = boot
            .log_tag
            .filter(|t| !t.is_empty())
            .unwrap_or_else(program_name);
        INITIALIZING.store(false, Ordering::Relaxed);
        Process {
            table: Mutex::new(table),
            log_tag,
            named: boot.named,
            main,
            _bootstrap: boot.fd,
        }
    })
}

fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "l4re".into())
}

/// Allocates an empty slot.
pub(crate) fn cap_alloc() -> Result<CapIdx> {
    lock(&process().table).alloc.alloc().ok_or(Error::NoMem)
}

/// Returns a slot to the allocator.
pub(crate) fn cap_free(idx: CapIdx) {
    lock(&process().table).alloc.free(idx);
}

/// Drops the object reference held in a slot.
pub(crate) fn cap_release(idx: CapIdx) {
    let old = lock(&process().table).remove(idx);
    drop(old);
}

/// `l4_factory_create_gate`: a new IPC gate in slot `target`, bound to
/// `thread` with `label` if given.
pub(crate) fn create_gate(target: CapIdx, thread: Option<CapIdx>, label: u64) -> Result<()> {
    if !target.is_valid() || label & 3 != 0 {
        return Err(Error::Inval);
    }
    let ep = match thread {
        Some(t) => Some(thread_endpoint(t)?),
        None => None,
    };
    let gate = GateObj::create(None)?;
    if let Some(ep) = ep {
        gate.bind(&ep, label)?;
    }
    let old = lock(&process().table).install(
        target,
        Entry {
            obj: Object::Gate(gate),
            rights: CapRights::RWSD,
        },
    );
    drop(old);
    Ok(())
}

fn thread_endpoint(thread: CapIdx) -> Result<Arc<ThreadEndpoint>> {
    match lock(&process().table).get(thread) {
        Some(Entry {
            obj: Object::Thread(ep),
            ..
        }) => Ok(ep.clone()),
        Some(_) => Err(Error::Inval),
        None => Err(Error::NoEnt),
    }
}

/// `l4_ipc_gate_bind_thread`.
pub(crate) fn gate_bind_thread(gate: CapIdx, thread: CapIdx, label: u64) -> Result<()> {
    if label & 3 != 0 {
        return Err(Error::Inval);
    }
    let ep = thread_endpoint(thread)?;
    let g = match lock(&process().table).get(gate) {
        Some(Entry {
            obj: Object::Gate(g),
            rights,
        }) if rights.contains(CapRights::S) => g.clone(),
        Some(Entry {
            obj: Object::Gate(_),
            ..
        }) => return Err(Error::Perm),
        Some(_) => return Err(Error::Inval),
        None => return Err(Error::NoEnt),
    };
    g.bind(&ep, label)
}

/// Sets the pager of `thread` to the object in slot `pager`
/// (`l4_thread_control_pager`); the thread's page faults will be sent there.
pub(crate) fn thread_set_pager(thread: CapIdx, pager: CapIdx) -> Result<()> {
    let ep = thread_endpoint(thread)?;
    let obj = lock(&process().table)
        .get(pager)
        .map(|e| e.obj.clone())
        .ok_or(Error::NoEnt)?;
    *lock(&ep.pager) = Some(obj);
    Ok(())
}

/// The gate object in slot `gate` (`Error::Inval` for another object,
/// `Error::NoEnt` for an empty slot).
fn gate_obj(gate: CapIdx) -> Result<Arc<objects::GateObj>> {
    match lock(&process().table).get(gate) {
        Some(Entry {
            obj: Object::Gate(g),
            ..
        }) => Ok(g.clone()),
        Some(_) => Err(Error::Inval),
        None => Err(Error::NoEnt),
    }
}

/// Gives up this task's server end of IPC gate `gate` (it can no longer
/// be bound here; capabilities to it sent from here carry no S right).
///
/// Call it after handing the gate with the S right to the task that serves
/// it: as long as any task keeps the server end, calls queue instead of
/// failing with [`IpcError::NotExistent`]
/// when that server dies.
pub fn release_server_end(gate: CapIdx) -> Result<()> {
    let g = gate_obj(gate)?;
    g.drop_server();
    Ok(())
}

/// Gives up this task's client end of IPC gate `gate` (bound here): the
/// gate stays bound and answers the holders it was given to, and once
/// every one of them has closed its capability (released it, or ended)
/// the server end reads end of file, the gate is unbound and its label is
/// reported by [`take_unreachable`] on the thread it was bound to.
///
/// Call it only after the capability has been sent (a reply that carries
/// it has gone out): this task can neither call the gate nor pass it on
/// afterwards. Returns `false` (and keeps the client end) if another slot
/// of this task holds the gate too — a client in this process, which
/// calls it through the same end; a copy of the gate received later
/// brings the client end back. Either way such a gate is never reported.
pub fn release_client_end(gate: CapIdx) -> Result<bool> {
    let g = gate_obj(gate)?;
    if g.server().is_none() {
        // Without either end the gate would be gone here.
        return Err(Error::Perm);
    }
    // The slot's reference and `g`: anything more is another holder here.
    if Arc::strong_count(&g) > 2 {
        return Ok(false);
    }
    g.drop_client();
    Ok(true)
}

/// The labels of the gates bound to the calling thread that lost their
/// last client end since the last call (see [`release_client_end`]):
/// nobody can call them any more, and they are no longer bound.
pub fn take_unreachable() -> Vec<u64> {
    with_thread(|t| core::mem::take(&mut *lock(&t.ep.unreachable))).unwrap_or_default()
}

/// The process id of the caller of the request the calling thread is
/// serving: the process that made the caller's channel (`SO_PEERCRED`).
/// `None` outside a request, or for a send (no reply channel).
///
/// A caller can make the channel in another process it controls, so this
/// identifies a client for accounting, not for access control.
pub fn caller_pid() -> Option<u32> {
    with_thread(|t| t.reply.as_ref().and_then(transport::ReplyTo::peer_pid))
        .ok()
        .flatten()
}

/// Sets the most private channels this task keeps for one calling process,
/// over all its gates (default 256). A caller past the limit is still
/// answered, on a channel used for that one reply; its next call goes
/// through the gate again. This bounds the descriptors one client can make
/// a server hold through channels.
pub fn set_channel_limit(n: usize) {
    objects::set_channel_limit(n);
}

/// Private channels this task keeps for process `pid` (see
/// [`set_channel_limit`]).
pub fn channels_of(pid: u32) -> usize {
    objects::channels_of(pid)
}

/// A named initial capability.
pub(crate) fn env_get_cap(name: &str) -> Option<CapIdx> {
    process()
        .named
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| *c)
}

/// Writes `text` to stderr as `tag     | text` lines.
pub(crate) fn log_write(text: &str) {
    use std::io::Write;
    let fallback;
    let tag = match PROCESS.get() {
        Some(p) => &p.log_tag,
        // A log line from the start-up itself (e.g. through a `log`
        // backend that calls us): do not wait for it.
        None if INITIALIZING.load(Ordering::Relaxed) => {
            fallback = program_name();
            &fallback
        }
        None => &process().log_tag,
    };
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
        out.push_str(&format!("{tag:<8}| {line}\n"));
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

// ---------------------------------------------------------------------------
// Threads.

/// A thread's UTCB: register block and borrow flag. No destructor, so it
/// stays usable until the thread is gone (even from other TLS destructors).
struct UtcbBlock {
    regs: UnsafeCell<UtcbRegs>,
    busy: Cell<bool>,
}

thread_local! {
    static UTCB: UtcbBlock = const { UtcbBlock { regs: UnsafeCell::new(UtcbRegs::new()), busy: Cell::new(false) } };
}

/// This thread's registers and borrow flag.
///
/// The block lives in the thread's static TLS (about 1 KiB per thread),
/// created with the thread and freed when it exits.
pub(crate) fn current_utcb() -> (*mut UtcbRegs, *const Cell<bool>) {
    // `b.regs` is a live `UtcbRegs` for as long as this thread runs
    // (thread-local, no destructor).
    UTCB.with(|b| (b.regs.get(), &b.busy as *const Cell<bool>))
}

/// A thread's IPC state.
struct ThreadCtx {
    /// Its thread capability.
    cap: CapIdx,
    /// Its endpoint.
    ep: Arc<ThreadEndpoint>,
    /// The caller's channel of the request being served.
    reply: Option<transport::ReplyTo>,
    /// Whether the slot was allocated on first use (released at exit).
    owns_slot: bool,
    /// Whether this thread state is torn down at thread exit.
    is_main: bool,
}

impl Drop for ThreadCtx {
    fn drop(&mut self) {
        self.reply = None;
        if self.is_main {
            return;
        }
        // The thread is gone: drop what is queued for it and unbind its gates.
        let gates: Vec<Arc<GateObj>> = lock(&self.ep.entries)
            .values()
            .filter_map(|e| e.gate.upgrade())
            .collect();
        for g in gates {
            if let Some(s) = g.server() {
                while let Ok(Some(_)) = transport::recv_packet(s.as_fd(), true) {}
            }
            g.unbind();
        }
        if self.owns_slot {
            let mut table = lock(&process().table);
            let old = table.remove(self.cap);
            table.alloc.free(self.cap);
            drop(table);
            drop(old);
        }
    }
}

thread_local! {
    static THREAD: RefCell<Option<ThreadCtx>> = const { RefCell::new(None) };
}

fn is_main_thread() -> bool {
    rustix::thread::gettid() == rustix::process::getpid()
}

/// Runs `f` on this thread's IPC state, creating it on first use.
fn with_thread<R>(f: impl FnOnce(&mut ThreadCtx) -> R) -> core::result::Result<R, IpcError> {
    THREAD
        .try_with(|t| {
            let mut t = t.try_borrow_mut().map_err(|_| IpcError::Aborted)?;
            if t.is_none() {
                *t = Some(new_thread_ctx().map_err(|_| IpcError::Aborted)?);
            }
            Ok(f(t.as_mut().expect("set above")))
        })
        .unwrap_or(Err(IpcError::Aborted))
}

fn new_thread_ctx() -> Result<ThreadCtx> {
    let p = process();
    if is_main_thread() {
        return Ok(ThreadCtx {
            cap: well_known::THREAD,
            ep: p.main.clone(),
            reply: None,
            owns_slot: false,
            is_main: true,
        });
    }
    let ep = ThreadEndpoint::new()?;
    let mut table = lock(&p.table);
    let cap = table.alloc.alloc().ok_or(Error::NoMem)?;
    table.install(
        cap,
        Entry {
            obj: Object::Thread(ep.clone()),
            rights: CapRights::RWSD,
        },
    );
    Ok(ThreadCtx {
        cap,
        ep,
        reply: None,
        owns_slot: true,
        is_main: false,
    })
}

/// The thread capability of the calling thread (`THREAD` on the main
/// thread; a slot allocated on first use on others; invalid while the
/// thread is being torn down).
pub(crate) fn current_thread() -> CapIdx {
    with_thread(|t| t.cap).unwrap_or(CapIdx::INVALID)
}

/// Starts `f` on a new thread whose thread capability is a fresh slot,
/// returned with the join handle.
///
/// The slot belongs to the caller, like a thread capability made by the
/// factory on Fiasco: it stays valid after the thread ends (gates can still
/// be bound to it, and calls to it queue); release it with
/// [`OwnedCap::from_cap`](crate::cap::OwnedCap::from_cap) when done.
pub fn spawn_thread(
    f: impl FnOnce() + Send + 'static,
) -> Result<(Cap<Thread>, std::thread::JoinHandle<()>)> {
    let ep = ThreadEndpoint::new()?;
    let cap = cap_alloc()?;
    let old = lock(&process().table).install(
        cap,
        Entry {
            obj: Object::Thread(ep.clone()),
            rights: CapRights::RWSD,
        },
    );
    drop(old);
    let spawned = std::thread::Builder::new().spawn(move || {
        THREAD.with(|t| {
            *t.borrow_mut() = Some(ThreadCtx {
                cap,
                ep,
                reply: None,
                owns_slot: false,
                is_main: false,
            });
        });
        f()
    });
    match spawned {
        Ok(h) => Ok((Cap::from_idx(cap), h)),
        Err(_) => {
            cap_release(cap);
            cap_free(cap);
            Err(Error::NoMem)
        }
    }
}
