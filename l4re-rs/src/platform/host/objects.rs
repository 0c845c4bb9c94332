//! The kernel objects of the host platform and how they travel.
//!
//! * An IPC gate ([`GateObj`]) is a `SOCK_SEQPACKET` socket pair. Every
//!   holder of the capability sends on the *client* end; the *server* end
//!   is held only by tasks that got the gate with the S right (the right to
//!   bind it). Binding a gate to a thread registers its server end in the
//!   thread's epoll set with the gate's label. A gate whose server end is
//!   closed in every process fails sends with `EPIPE`/`ECONNREFUSED`, and
//!   the messages still queued in it are freed, closing the channels they
//!   carry: that is how clients see a server's death as
//!   [`IpcError::NotExistent`](crate::IpcError::NotExistent).
//! * A gate bound here also owns the *private channels* its callers opened
//!   (see the `transport` module): they sit in the same epoll set, with the
//!   gate's label, move with the gate when it is bound to another thread,
//!   and are shut down when it is unbound (the thread ended, the server end
//!   was given up, the gate was dropped), which their callers see as
//!   `NotExistent`.
//! * A thread ([`ThreadEndpoint`]) is an epoll set plus the thread's own
//!   gate (label 0), so that a thread capability can be called, like on L4.
//! * A task is a pidfd ([`TaskHandle`]).
//!
//! Objects are found again when they come back: every gate is registered by
//! the inode of its client socket, so a gate received into a task that
//! already holds it maps to the same [`GateObj`] (one binding per gate per
//! task, and local ids work).

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rustix::event::epoll;
use rustix::fs::FileType;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::wire::{Desc, Kind};
use super::{errno_to_error, lock};
use crate::cap::CapRights;
use crate::error::{Error, Result};

/// A capability table entry.
pub(super) struct Entry {
    /// The object.
    pub obj: Object,
    /// The rights this slot has on it.
    pub rights: CapRights,
}

/// An object a capability slot can refer to.
#[derive(Clone)]
pub(super) enum Object {
    /// An IPC gate.
    Gate(Arc<GateObj>),
    /// A thread of this task.
    Thread(Arc<ThreadEndpoint>),
    /// Another task (process).
    Task(Arc<TaskHandle>),
    /// This task.
    SelfTask,
    /// The factory.
    Factory,
    /// The log.
    Log,
}

impl Object {
    /// A name for messages.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Object::Gate(_) => "gate",
            Object::Thread(_) => "thread",
            Object::Task(_) => "task",
            Object::SelfTask => "own task",
            Object::Factory => "factory",
            Object::Log => "log",
        }
    }
}

/// Where a gate is bound in this task.
struct Binding {
    endpoint: Weak<ThreadEndpoint>,
    key: u64,
    /// The private channels of the gate's callers: epoll key, our end and
    /// the process that made the channel (its caller, counted in
    /// [`PEER_CHANNELS`]).
    chans: Vec<(u64, Arc<OwnedFd>, Option<u32>)>,
}

/// Channels kept in this task, by the process that made them.
static PEER_CHANNELS: Mutex<Option<HashMap<u32, usize>>> = Mutex::new(None);

/// Most channels this task keeps for one calling process (all its gates
/// together); see [`set_channel_limit`].
static CHANNEL_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_CHANNEL_LIMIT);

/// The default of [`CHANNEL_LIMIT`].
pub(super) const DEFAULT_CHANNEL_LIMIT: usize = 256;

/// Sets the most channels kept for one calling process; a caller past it
/// is still answered, on a channel used for that one reply (its next call
/// goes through the gate again).
pub(super) fn set_channel_limit(n: usize) {
    CHANNEL_LIMIT.store(n.max(1), Ordering::Relaxed);
}

/// Channels kept in this task for process `pid`.
pub(super) fn channels_of(pid: u32) -> usize {
    lock(&PEER_CHANNELS)
        .as_ref()
        .and_then(|m| m.get(&pid).copied())
        .unwrap_or(0)
}

/// The process that made the socket pair `fd` belongs to (`SO_PEERCRED`
/// of a socket pair names its creator).
pub(super) fn peer_pid(fd: BorrowedFd<'_>) -> Option<u32> {
    let cred = rustix::net::sockopt::socket_peercred(fd).ok()?;
    Some(cred.pid.as_raw_nonzero().get() as u32)
}

/// Counts a kept channel of `pid`; `false` (nothing counted) if `pid` is at
/// the limit.
fn count_channel(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return true };
    let mut m = lock(&PEER_CHANNELS);
    let n = m.get_or_insert_with(HashMap::new).entry(pid).or_insert(0);
    if *n >= CHANNEL_LIMIT.load(Ordering::Relaxed) {
        return false;
    }
    *n += 1;
    true
}

/// Forgets a kept channel of `pid`.
fn uncount_channel(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let mut m = lock(&PEER_CHANNELS);
    if let Some(map) = m.as_mut()
        && let Some(n) = map.get_mut(&pid)
    {
        *n -= 1;
        if *n == 0 {
            map.remove(&pid);
        }
    }
}

/// Shuts a channel down both ways: its caller reads end of file (a call
/// waiting there fails with `NotExistent`) and can send no more.
pub(super) fn shut_down(fd: &OwnedFd) {
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
}

/// Registers `fd` in `ep`'s epoll set under a new key.
fn ep_add(ep: &ThreadEndpoint, fd: BorrowedFd<'_>, entry: EpEntry) -> Result<u64> {
    let key = ep.next_key.fetch_add(1, Ordering::Relaxed);
    lock(&ep.entries).insert(key, entry);
    if let Err(e) = epoll::add(
        &ep.epoll,
        fd,
        epoll::EventData::new_u64(key),
        epoll::EventFlags::IN,
    ) {
        lock(&ep.entries).remove(&key);
        return Err(errno_to_error(e));
    }
    Ok(key)
}

/// Removes key `key` (for `fd`) from `ep`'s epoll set.
fn ep_remove(ep: &ThreadEndpoint, fd: BorrowedFd<'_>, key: u64) {
    let _ = epoll::delete(&ep.epoll, fd);
    lock(&ep.entries).remove(&key);
}

/// An IPC gate as this task holds it.
pub(super) struct GateObj {
    /// Inode of the client socket: the gate's identity.
    ino: u64,
    /// The end every holder sends on; `None` once this task gave its copy
    /// up ([`GateObj::drop_client`]), so that the server end sees end of
    /// file when every other holder has closed theirs.
    client: Mutex<Option<Arc<OwnedFd>>>,
    /// The end the bound thread receives on (only with the S right).
    server: Mutex<Option<Arc<OwnedFd>>>,
    /// Set if this is a thread's own gate.
    thread: Option<Weak<ThreadEndpoint>>,
    binding: Mutex<Option<Binding>>,
}

/// Gates of this task by client-socket inode.
static GATES: Mutex<Option<HashMap<u64, Weak<GateObj>>>> = Mutex::new(None);

fn ino_of(fd: BorrowedFd<'_>) -> Result<u64> {
    let st = rustix::fs::fstat(fd).map_err(errno_to_error)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Err(Error::Inval);
    }
    Ok(st.st_ino)
}

pub(super) fn is_seqpacket(fd: BorrowedFd<'_>) -> bool {
    ino_of(fd).is_ok()
        && rustix::net::sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::SEQPACKET)
}

/// A new `SOCK_SEQPACKET` socket pair, close-on-exec.
pub(super) fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(errno_to_error)
}

impl GateObj {
    /// Creates a gate (both ends).
    pub(super) fn create(thread: Option<Weak<ThreadEndpoint>>) -> Result<Arc<GateObj>> {
        let (client, server) = seqpacket_pair()?;
        let ino = ino_of(client.as_fd())?;
        let g = Arc::new(GateObj {
            ino,
            client: Mutex::new(Some(Arc::new(client))),
            server: Mutex::new(Some(Arc::new(server))),
            thread,
            binding: Mutex::new(None),
        });
        lock(&GATES)
            .get_or_insert_with(HashMap::new)
            .insert(ino, Arc::downgrade(&g));
        Ok(g)
    }

    /// Takes a gate received as fds, merging it with the gate object this
    /// task already has for the same socket.
    pub(super) fn import(client: OwnedFd, server: Option<OwnedFd>) -> Result<Arc<GateObj>> {
        if !is_seqpacket(client.as_fd())
            || server.as_ref().is_some_and(|s| !is_seqpacket(s.as_fd()))
        {
            return Err(Error::Inval);
        }
        let ino = ino_of(client.as_fd())?;
        let mut gates = lock(&GATES);
        let gates = gates.get_or_insert_with(HashMap::new);
        if let Some(g) = gates.get(&ino).and_then(Weak::upgrade) {
            if let Some(s) = server {
                lock(&g.server).get_or_insert_with(|| Arc::new(s));
            }
            lock(&g.client).get_or_insert_with(|| Arc::new(client));
            return Ok(g);
        }
        let g = Arc::new(GateObj {
            ino,
            client: Mutex::new(Some(Arc::new(client))),
            server: Mutex::new(server.map(Arc::new)),
            thread: None,
            binding: Mutex::new(None),
        });
        gates.insert(ino, Arc::downgrade(&g));
        Ok(g)
    }

    /// Binds the gate to `ep` with `label` (rebinding it if it was bound
    /// elsewhere in this task; its channels move with it).
    pub(super) fn bind(self: &Arc<Self>, ep: &Arc<ThreadEndpoint>, label: u64) -> Result<()> {
        let server = self.server().ok_or(Error::Perm)?;
        let mut binding = lock(&self.binding);
        let mut chans = Vec::new();
        if let Some(old) = binding.take() {
            if let Some(old_ep) = old.endpoint.upgrade() {
                if Arc::ptr_eq(&old_ep, ep) {
                    let mut entries = lock(&ep.entries);
                    for key in core::iter::once(old.key).chain(old.chans.iter().map(|c| c.0)) {
                        if let Some(e) = entries.get_mut(&key) {
                            e.label = label;
                        }
                    }
                    drop(entries);
                    *binding = Some(old);
                    return Ok(());
                }
                ep_remove(&old_ep, server.as_fd(), old.key);
                for (key, fd, _) in &old.chans {
                    ep_remove(&old_ep, fd.as_fd(), *key);
                }
            }
            chans = old.chans;
        }
        let entry = |chan: Option<Arc<OwnedFd>>| EpEntry {
            gate: Arc::downgrade(self),
            label,
            chan,
        };
        let key = match ep_add(ep, server.as_fd(), entry(None)) {
            Ok(key) => key,
            Err(e) => {
                chans.iter().for_each(|(_, fd, pid)| {
                    shut_down(fd);
                    uncount_channel(*pid);
                });
                return Err(e);
            }
        };
        let mut moved = Vec::with_capacity(chans.len());
        for (_, fd, pid) in chans {
            match ep_add(ep, fd.as_fd(), entry(Some(fd.clone()))) {
                Ok(k) => moved.push((k, fd, pid)),
                Err(_) => {
                    shut_down(&fd);
                    uncount_channel(pid);
                }
            }
        }
        *binding = Some(Binding {
            endpoint: Arc::downgrade(ep),
            key,
            chans: moved,
        });
        Ok(())
    }

    /// Takes a caller's new private channel: if the gate is bound to `ep`
    /// and the caller's process is below its channel limit
    /// ([`set_channel_limit`]), the channel joins `ep`'s epoll set with the
    /// gate's label and the gate keeps it (`true`); otherwise it is only
    /// good for the reply to the request that brought it (`false`).
    pub(super) fn add_chan(self: &Arc<Self>, ep: &Arc<ThreadEndpoint>, fd: &Arc<OwnedFd>) -> bool {
        let mut binding = lock(&self.binding);
        let Some(b) = binding.as_mut() else {
            return false;
        };
        if !b.endpoint.upgrade().is_some_and(|e| Arc::ptr_eq(&e, ep)) {
            return false;
        }
        let label = match lock(&ep.entries).get(&b.key) {
            Some(e) => e.label,
            None => return false,
        };
        let pid = peer_pid(fd.as_fd());
        if !count_channel(pid) {
            return false;
        }
        let entry = EpEntry {
            gate: Arc::downgrade(self),
            label,
            chan: Some(fd.clone()),
        };
        match ep_add(ep, fd.as_fd(), entry) {
            Ok(key) => {
                b.chans.push((key, fd.clone(), pid));
                true
            }
            Err(_) => {
                uncount_channel(pid);
                false
            }
        }
    }

    /// Drops a channel of this gate (its caller closed it, or a request on
    /// it is dropped unanswered) and shuts it down.
    pub(super) fn remove_chan(&self, fd: &Arc<OwnedFd>) {
        shut_down(fd);
        let mut binding = lock(&self.binding);
        let Some(b) = binding.as_mut() else { return };
        let Some(i) = b.chans.iter().position(|(_, c, _)| Arc::ptr_eq(c, fd)) else {
            return;
        };
        let (key, _, pid) = b.chans.swap_remove(i);
        uncount_channel(pid);
        if let Some(ep) = b.endpoint.upgrade() {
            ep_remove(&ep, fd.as_fd(), key);
        }
    }

    /// How many caller channels the gate keeps here.
    #[cfg(test)]
    pub(super) fn channels(&self) -> usize {
        lock(&self.binding).as_ref().map_or(0, |b| b.chans.len())
    }

    /// The client end, if this task has it.
    pub(super) fn client(&self) -> Option<Arc<OwnedFd>> {
        lock(&self.client).clone()
    }

    /// Gives up this task's client end: once every other holder has
    /// closed its copy, the server end reads end of file.
    pub(super) fn drop_client(&self) {
        let old = lock(&self.client).take();
        drop(old);
    }

    /// The server end, if this task has it.
    pub(super) fn server(&self) -> Option<Arc<OwnedFd>> {
        lock(&self.server).clone()
    }

    /// Whether the gate is bound to a (live) thread of this task.
    pub(super) fn is_bound_here(&self) -> bool {
        lock(&self.binding)
            .as_ref()
            .is_some_and(|b| b.endpoint.strong_count() > 0)
    }

    /// Gives up this task's server end (unbinding the gate first).
    pub(super) fn drop_server(&self) {
        self.unbind();
        let old = lock(&self.server).take();
        drop(old);
    }

    /// Removes the gate from the epoll set it is bound to (the gate stays
    /// alive; it can be bound again) and shuts its channels down.
    pub(super) fn unbind(&self) {
        let Some(old) = lock(&self.binding).take() else {
            return;
        };
        let ep = old.endpoint.upgrade();
        if let Some(ep) = &ep {
            match self.server() {
                Some(server) => ep_remove(ep, server.as_fd(), old.key),
                None => {
                    lock(&ep.entries).remove(&old.key);
                }
            }
        }
        for (key, fd, pid) in &old.chans {
            if let Some(ep) = &ep {
                ep_remove(ep, fd.as_fd(), *key);
            }
            shut_down(fd);
            uncount_channel(*pid);
        }
    }

    /// The label of the local binding if the gate is bound to a thread of
    /// this task (for `L4_RCV_ITEM_LOCAL_ID`).
    pub(super) fn local_label(&self) -> Option<u64> {
        let binding = lock(&self.binding);
        let b = binding.as_ref()?;
        let ep = b.endpoint.upgrade()?;
        let entries = lock(&ep.entries);
        entries.get(&b.key).map(|e| e.label)
    }
}

impl Drop for GateObj {
    fn drop(&mut self) {
        // Deregister explicitly before the fd closes: an epoll registration
        // outlives our fd while another process keeps the socket open.
        self.unbind();
        if let Some(gates) = lock(&GATES).as_mut() {
            if gates.get(&self.ino).is_some_and(|w| w.strong_count() == 0) {
                gates.remove(&self.ino);
            }
        }
    }
}

/// A gate, or a channel of a gate, in an endpoint's epoll set.
pub(super) struct EpEntry {
    /// The gate (weak: releasing the capability closes it).
    pub gate: Weak<GateObj>,
    /// Its label.
    pub label: u64,
    /// `None`: the gate's server end; else this private channel of it.
    pub chan: Option<Arc<OwnedFd>>,
}

/// A thread as an IPC endpoint: the epoll set over the server ends of the
/// gates bound to it and their channels.
pub(super) struct ThreadEndpoint {
    /// The epoll set; event data is a key into `entries`.
    pub epoll: OwnedFd,
    /// Bound gates by key.
    pub entries: Mutex<HashMap<u64, EpEntry>>,
    next_key: AtomicU64,
    /// The thread's own gate (calls to the thread capability, label 0).
    pub own_gate: OnceLock<Arc<GateObj>>,
    /// The thread's pager (`l4_thread_control_pager`): where its page faults
    /// go. Page faults are delivered by the pager work (userfaultfd).
    pub pager: Mutex<Option<super::Object>>,
    /// Labels of gates bound here that lost their last client end (and
    /// were unbound), not yet taken by [`super::take_unreachable`].
    pub unreachable: Mutex<Vec<u64>>,
}

impl ThreadEndpoint {
    /// Creates an endpoint with its own gate bound with label 0.
    pub(super) fn new() -> Result<Arc<ThreadEndpoint>> {
        let ep = Arc::new(ThreadEndpoint {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC).map_err(errno_to_error)?,
            entries: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            own_gate: OnceLock::new(),
            pager: Mutex::new(None),
            unreachable: Mutex::new(Vec::new()),
        });
        let gate = GateObj::create(Some(Arc::downgrade(&ep)))?;
        gate.bind(&ep, 0)?;
        let _ = ep.own_gate.set(gate);
        Ok(ep)
    }

    /// The gate to send to when the thread capability is invoked.
    pub(super) fn gate(&self) -> &Arc<GateObj> {
        self.own_gate.get().expect("set by ThreadEndpoint::new")
    }
}

/// Another process.
pub(super) struct TaskHandle {
    /// Its pid.
    pub pid: i32,
    /// A pidfd for it.
    pub pidfd: Arc<OwnedFd>,
}

/// The pid a pidfd refers to (from `/proc/self/fdinfo`), `None` if the fd
/// is not a pidfd.
fn pid_of_pidfd(fd: BorrowedFd<'_>) -> Option<i32> {
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// An fd to attach to a packet, kept alive until the send is done.
pub(super) enum Attach {
    /// An fd shared with an object.
    Shared(Arc<OwnedFd>),
    /// An fd made for this send.
    Owned(OwnedFd),
}

impl Attach {
    /// The fd.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Attach::Shared(f) => f.as_fd(),
            Attach::Owned(f) => f.as_fd(),
        }
    }
}

/// Turns an object into what a packet carries: the descriptor (rights
/// `rights`, already reduced by the caller) and fds appended to `fds`.
pub(super) fn export(obj: &Object, rights: CapRights, fds: &mut Vec<Attach>) -> Result<Desc> {
    let (kind, n) = match obj {
        Object::Gate(g) => {
            // A gate whose client end this task gave up cannot be passed on.
            fds.push(Attach::Shared(g.client().ok_or(Error::NoEnt)?));
            match g.server() {
                Some(s) if rights.contains(CapRights::S) => {
                    fds.push(Attach::Shared(s));
                    (Kind::Gate, 2)
                }
                _ => (Kind::Gate, 1),
            }
        }
        Object::Thread(ep) => {
            fds.push(Attach::Shared(ep.gate().client().ok_or(Error::NoEnt)?));
            (Kind::Thread, 1)
        }
        Object::Task(t) => {
            fds.push(Attach::Shared(t.pidfd.clone()));
            (Kind::Task, 1)
        }
        Object::SelfTask => {
            let fd = rustix::process::pidfd_open(
                rustix::process::getpid(),
                rustix::process::PidfdFlags::empty(),
            )
            .map_err(errno_to_error)?;
            fds.push(Attach::Owned(fd));
            (Kind::Task, 1)
        }
        Object::Factory => (Kind::Factory, 0),
        Object::Log => (Kind::Log, 0),
    };
    let rights = if kind == Kind::Gate && n == 1 {
        rights - CapRights::S
    } else {
        rights
    };
    Ok(Desc {
        kind,
        nfds: n,
        rights: rights.bits(),
        arg: 0,
    })
}

/// Turns a received object descriptor and its fds (exactly the item's)
/// back into a table entry. `None` if the descriptor is not an object or
/// the fds are not what it claims; unused fds are closed.
pub(super) fn import(desc: Desc, fds: Vec<OwnedFd>) -> Option<Entry> {
    let mut rights = CapRights::from_bits_truncate(desc.rights);
    let mut fds = fds.into_iter();
    let mut take = || fds.next();
    let obj = match desc.kind {
        Kind::Gate => {
            let client = take()?;
            let server = if desc.nfds == 2 { Some(take()?) } else { None };
            if server.is_none() {
                rights -= CapRights::S;
            }
            Object::Gate(GateObj::import(client, server).ok()?)
        }
        Kind::Thread => {
            let gate = GateObj::import(take()?, None).ok()?;
            match gate.thread.as_ref().and_then(Weak::upgrade) {
                Some(ep) => Object::Thread(ep),
                None => {
                    // A thread of another task: callable, nothing more.
                    rights -= CapRights::S;
                    Object::Gate(gate)
                }
            }
        }
        Kind::Task => {
            let pidfd = take()?;
            let pid = pid_of_pidfd(pidfd.as_fd())?;
            if pid == rustix::process::getpid().as_raw_nonzero().get() {
                Object::SelfTask
            } else {
                Object::Task(Arc::new(TaskHandle {
                    pid,
                    pidfd: Arc::new(pidfd),
                }))
            }
        }
        Kind::Factory => Object::Factory,
        Kind::Log => Object::Log,
        Kind::Memory | Kind::None => return None,
    };
    Some(Entry { obj, rights })
}

/// The local label of the gate whose client socket is `client`, if this
/// task has that gate and it is bound to one of its threads.
pub(super) fn local_label_of(client: BorrowedFd<'_>) -> Option<u64> {
    let ino = ino_of(client).ok()?;
    let gate = lock(&GATES).as_ref()?.get(&ino)?.upgrade()?;
    gate.local_label()
}
