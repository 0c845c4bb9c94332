//! Tasks: child processes and their bootstrap.
//!
//! [`spawn`] starts a program with `std::process::Command`. Before that it
//! makes a socket pair, sends the child's named capabilities and log tag
//! as one *bootstrap packet* on it, and lets the child inherit the other
//! end, whose number it passes in the environment variable
//! `L4RE_HOST_BOOTSTRAP_FD`. The child reads the packet when it first uses
//! the platform.
//!
//! Bootstrap packet (native-endian words, fds as `SCM_RIGHTS`):
//!
//! ```text
//! BOOT_MAGIC ("L4RB" | version << 32)
//! log tag    (length word, bytes padded to words)
//! N          (number of capabilities)
//! N times:   name (length word, bytes padded), descriptor (2 words,
//!            as in the IPC packet format)
//! ```
//!
//! The child checks the socket (a `SOCK_SEQPACKET` socket whose next
//! message starts with the magic: it only peeks until it is sure, so a
//! stale variable naming someone else's descriptor steals nothing), takes
//! the descriptor over (close-on-exec from then on), and removes the
//! variable from its environment if it is still single-threaded (the only
//! time that is sound; otherwise the stale variable is harmless: it names
//! a descriptor that is close-on-exec here, and [`spawn`] always sets a
//! fresh one).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::{Errno, FdFlags};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketType};
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};

use super::objects::{Entry, Object, TaskHandle, export, import, seqpacket_pair};
use super::transport::{Deadline, send_packet};
use super::wire::{WordReader, Words};
use super::{Table, cap_alloc, cap_free, cap_release, errno_to_error, lock, process};
use crate::cap::{Cap, CapIdx, CapRights, Task, well_known};
use crate::error::{Error, Result};
use crate::ipc::Timeout;

/// The environment variable that names the bootstrap descriptor.
pub const BOOTSTRAP_ENV: &str = "L4RE_HOST_BOOTSTRAP_FD";
const BOOT_MAGIC: u64 = 0x4252_344c | 1 << 32;
/// Longest capability name (L4Re allows 15 characters; be generous).
const MAX_NAME: usize = 64;
/// Named capabilities fit between `FIRST_NAMED` and the allocator.
const MAX_NAMED: usize = (super::FIRST_ALLOC_SLOT - well_known::FIRST_NAMED.slot()) as usize;
/// Most fds in one message (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// How [`spawn_with`] starts a task beyond its program and capabilities.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnOptions {
    /// The task is killed (`SIGKILL`) when this process dies, however it
    /// dies (`PR_SET_PDEATHSIG`, set before the program starts and checked
    /// against a parent that died meanwhile). The death signal follows the
    /// *thread* that spawns: spawn from a thread that lives as long as the
    /// task should (the main thread).
    pub die_with_parent: bool,
    /// The task's standard output is our standard error (for helpers that
    /// must not keep a caller's pipe on our standard output open).
    pub stdout_to_stderr: bool,
}

/// A child task started by [`spawn`].
pub struct ChildTask {
    handle: Arc<TaskHandle>,
    slot: CapIdx,
    status: Mutex<Option<ExitStatus>>,
}

/// Starts `program` with `args` as a new task.
///
/// `caps` become its named initial capabilities, in order (`name`, a slot
/// of this task, the rights to give: at most those of the slot); `log_tag`
/// prefixes its log lines. Its stdin, stdout and stderr are ours.
///
/// An IPC gate given with the S right (to be served by the child) is
/// *handed over*: unless the gate is bound to a thread of this task, this
/// task gives up its own server end (as [`release_server_end`] does), so
/// that when the child dies, calls through the gate fail with
/// [`IpcError::NotExistent`](crate::IpcError::NotExistent) instead of
/// queueing forever. This task keeps the gate for calling; it can no longer
/// bind it or hand the S right on.
///
/// [`release_server_end`]: super::release_server_end
pub fn spawn(
    program: &Path,
    args: &[&str],
    caps: &[(&str, CapIdx, CapRights)],
    log_tag: &str,
) -> Result<ChildTask> {
    spawn_with(program, args, caps, log_tag, SpawnOptions::default())
}

/// [`spawn`] with [`SpawnOptions`].
pub fn spawn_with(
    program: &Path,
    args: &[&str],
    caps: &[(&str, CapIdx, CapRights)],
    log_tag: &str,
    opts: SpawnOptions,
) -> Result<ChildTask> {
    if caps.len() > MAX_NAMED || log_tag.len() > MAX_NAME {
        return Err(Error::TooBig);
    }
    let mut w = Words::default();
    w.word(BOOT_MAGIC);
    w.bytes(log_tag.as_bytes());
    w.word(caps.len() as u64);
    let mut fds = Vec::new();
    // Gates whose server end goes to the child.
    let mut handover = Vec::new();
    {
        let table = lock(&process().table);
        for (name, idx, rights) in caps {
            if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
                return Err(Error::Inval);
            }
            let e = table.get(*idx).ok_or(Error::NoEnt)?;
            let desc = export(&e.obj, *rights & e.rights, &mut fds)?;
            if let (Object::Gate(g), 2) = (&e.obj, desc.nfds) {
                handover.push(g.clone());
            }
            w.bytes(name.as_bytes());
            w.desc(desc);
        }
    }
    if fds.len() > SCM_MAX_FD {
        return Err(Error::TooBig);
    }
    let (parent_end, child_end) = seqpacket_pair()?;
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|a| a.fd()).collect();
    send_packet(
        parent_end.as_fd(),
        &w.to_bytes(),
        &borrowed,
        Deadline::new(Timeout::Never),
    )
    .map_err(|e| {
        log::warn!("l4re host: cannot send the bootstrap packet: {e}");
        Error::Io
    })?;
    drop(borrowed);
    drop(fds);
    drop(parent_end);

    let child_fd = child_end.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args).env(BOOTSTRAP_ENV, child_fd.to_string());
    if opts.stdout_to_stderr {
        let err = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| {
                log::warn!("l4re host: cannot duplicate standard error: {e}");
                Error::Io
            })?;
        cmd.stdout(err);
    }
    let parent = std::process::id() as i32;
    let die = opts.die_with_parent;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes system calls (async-signal-safe, no allocation, no locks).
    // `child_fd` is open there: the child inherits it from us, who keep
    // `child_end` open until `spawn` returns.
    unsafe {
        cmd.pre_exec(move || {
            if die {
                // The death signal survives execve. A parent that died
                // before the prctl is seen as a changed parent.
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                    .map_err(std::io::Error::from)?;
                if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(parent) {
                    return Err(std::io::Error::other("the parent died"));
                }
            }
            // SAFETY: see above: the fd is open in the child.
            let fd = BorrowedFd::borrow_raw(child_fd);
            rustix::io::fcntl_setfd(fd, FdFlags::empty()).map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().map_err(|e| {
        log::warn!("l4re host: cannot start {}: {e}", program.display());
        match e.kind() {
            std::io::ErrorKind::NotFound => Error::NoEnt,
            std::io::ErrorKind::PermissionDenied => Error::Perm,
            _ => Error::Io,
        }
    })?;
    drop(child_end);
    for g in handover {
        if !g.is_bound_here() {
            g.drop_server();
        }
    }
    adopt_child(child.id() as i32)
}

/// The [`ChildTask`] of our child process `pid` (not yet reaped).
fn adopt_child(pid: i32) -> Result<ChildTask> {
    // Not reaped until we wait, so the pid still names our child.
    let pidfd = Pid::from_raw(pid).ok_or(Error::Io).and_then(|p| {
        rustix::process::pidfd_open(p, PidfdFlags::empty()).map_err(errno_to_error)
    })?;
    let handle = Arc::new(TaskHandle {
        pid,
        pidfd: Arc::new(pidfd),
    });
    let slot = match cap_alloc() {
        Ok(s) => s,
        Err(e) => {
            let _ = rustix::process::pidfd_send_signal(&*handle.pidfd, Signal::KILL);
            return Err(e);
        }
    };
    let old = lock(&process().table).install(
        slot,
        Entry {
            obj: Object::Task(handle.clone()),
            rights: CapRights::RWSD,
        },
    );
    drop(old);
    Ok(ChildTask {
        handle,
        slot,
        status: Mutex::new(None),
    })
}

/// Which side of [`fork_task`] a process is on.
#[derive(Debug)]
pub enum Forked {
    /// The creator, with its new task.
    Parent(ChildTask),
    /// The new task: a copy of the creator's process (its memory, its
    /// descriptors, its one thread), with a fresh capability table.
    Child,
}

/// Starts a new task as a copy of this process (`fork` without `exec`):
/// a task that is ready at once, without loading a program.
///
/// Only a process that is still single-threaded and has not used the
/// platform yet may fork a task (`Error::Inval` otherwise): the child then
/// starts with no thread but the caller, no lock held, and a capability
/// table of its own that it sets up on first use; it shares no gate with
/// its creator until capabilities are passed (e.g. with [`send_caps`] over
/// a socket pair made before the fork). `opts.die_with_parent` sets the
/// child's death signal as [`spawn_with`] does (a child whose creator died
/// before that exits at once with status 127); `opts.stdout_to_stderr`
/// makes its standard output our standard error.
pub fn fork_task(opts: SpawnOptions) -> Result<Forked> {
    match fork_checked(opts)? {
        Some(pid) => adopt_child(pid).map(Forked::Parent),
        None => Ok(Forked::Child),
    }
}

/// Which side of [`fork_process`] a process is on.
#[derive(Debug)]
pub enum ForkedProcess {
    /// The creator: the new process's id and a pidfd of it (it is no task
    /// of ours: no capability names it; wait for it with `waitid`).
    Parent {
        /// Its process id.
        pid: i32,
        /// Its pidfd.
        pidfd: OwnedFd,
    },
    /// The new process: a copy of the creator's, as after [`fork_task`].
    Child,
}

/// [`fork_task`] for a process that must keep the right to fork: the new
/// process is not made a task of the creator (no capability slot, the
/// platform stays unused), so the creator can fork again — a zygote that
/// forks processes which then use the platform themselves. The same
/// conditions as for [`fork_task`] hold (single-threaded, the platform
/// not used yet).
pub fn fork_process(opts: SpawnOptions) -> Result<ForkedProcess> {
    let Some(pid) = fork_checked(opts)? else {
        return Ok(ForkedProcess::Child);
    };
    // Not reaped until the creator waits, so the pid still names our child.
    let pidfd = Pid::from_raw(pid).ok_or(Error::Io).and_then(|p| {
        rustix::process::pidfd_open(p, PidfdFlags::empty()).map_err(errno_to_error)
    })?;
    Ok(ForkedProcess::Parent { pid, pidfd })
}

/// The fork of [`fork_task`] and [`fork_process`], after their checks:
/// the child's pid in the parent, `None` in the child.
fn fork_checked(opts: SpawnOptions) -> Result<Option<i32>> {
    if super::PROCESS.get().is_some() || !single_threaded() {
        return Err(Error::Inval);
    }
    let parent = std::process::id() as i32;
    // SAFETY: the process has one thread (checked above), so the child
    // gets a consistent copy of every lock and allocator state, and it
    // runs ordinary code afterwards. (Stays here: the one fork of the
    // platform, behind these checks.)
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno_to_error(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        )));
    }
    if pid > 0 {
        return Ok(Some(pid));
    }
    if opts.die_with_parent {
        let set = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).is_ok();
        if !set || rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(parent) {
            // The creator is gone (or cannot take us along): nobody waits.
            super::sys::exit_group(127);
        }
    }
    if opts.stdout_to_stderr {
        let _ = rustix::stdio::dup2_stdout(std::io::stderr());
    }
    Ok(None)
}

impl ChildTask {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.handle.pid as u32
    }

    /// A pidfd of the task's process (to send it signals, or to hand to a
    /// process that should: `pidfd_send_signal`).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.handle.pidfd.as_fd()
    }

    /// The task capability (valid while this value lives).
    pub fn cap(&self) -> Cap<Task> {
        Cap::from_idx(self.slot)
    }

    /// Waits for the task to end, at most `timeout` (`None`: as long as it
    /// takes); `Ok(None)` if it still runs. Once it has ended every call
    /// returns its status.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
        let mut status = lock(&self.status);
        if let Some(s) = *status {
            return Ok(Some(s));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let left = match (timeout, deadline) {
                (None, _) | (Some(_), None) => None,
                (Some(_), Some(at)) => Some(
                    Timespec::try_from(at.saturating_duration_since(Instant::now())).unwrap_or(
                        Timespec {
                            tv_sec: i64::MAX,
                            tv_nsec: 0,
                        },
                    ),
                ),
            };
            let mut pfd = [PollFd::new(&*self.handle.pidfd, PollFlags::IN)];
            match rustix::event::poll(&mut pfd, left.as_ref()) {
                Ok(0) => {
                    if deadline.is_some_and(|at| Instant::now() >= at) {
                        return Ok(None);
                    }
                    continue;
                }
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(errno_to_error(e)),
            }
            match rustix::process::waitid(
                WaitId::PidFd(self.handle.pidfd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(Some(s)) => {
                    let raw = if let Some(code) = s.exit_status() {
                        (code & 0xff) << 8
                    } else {
                        s.terminating_signal().unwrap_or(0) | if s.dumped() { 0x80 } else { 0 }
                    };
                    let st = ExitStatus::from_raw(raw);
                    *status = Some(st);
                    return Ok(Some(st));
                }
                Ok(None) => continue,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(errno_to_error(e)),
            }
        }
    }

    /// Kills the task (`SIGKILL`); a task that has already ended is not an
    /// error.
    pub fn kill(&self) -> Result<()> {
        match rustix::process::pidfd_send_signal(&*self.handle.pidfd, Signal::KILL) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(errno_to_error(e)),
        }
    }
}

impl Drop for ChildTask {
    fn drop(&mut self) {
        cap_release(self.slot);
        cap_free(self.slot);
    }
}

impl core::fmt::Debug for ChildTask {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ChildTask(pid {}, {:?})", self.handle.pid, self.slot)
    }
}

/// What the creator handed over.
#[derive(Default)]
pub(super) struct Bootstrap {
    /// The log tag.
    pub log_tag: Option<String>,
    /// Named capabilities, installed from `FIRST_NAMED` on.
    pub named: Vec<(String, CapIdx)>,
    /// The bootstrap socket.
    pub fd: Option<OwnedFd>,
}

/// Whether this process has a single thread (the caller).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// Reads the bootstrap packet, if this process was started by [`spawn`],
/// installing the named capabilities into `table`.
pub(super) fn read_bootstrap(table: &mut Table) -> Bootstrap {
    let Some(val) = std::env::var_os(BOOTSTRAP_ENV) else {
        return Bootstrap::default();
    };
    let Some(raw) = val
        .to_str()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|n| *n > 2)
    else {
        log::warn!("l4re host: ignoring a bad {BOOTSTRAP_ENV}");
        return Bootstrap::default();
    };
    if single_threaded() {
        // SAFETY: no other thread exists that could read or write the
        // environment concurrently (we are the only thread of the process,
        // and we do not start one before this returns).
        unsafe { std::env::remove_var(BOOTSTRAP_ENV) };
    } else {
        log::debug!(
            "l4re host: {BOOTSTRAP_ENV} left in the environment (process already multi-threaded)"
        );
    }
    // SAFETY: the borrow is used only for the checks below, during which
    // nothing of ours closes fds. If the variable is stale and the number
    // is not open, the calls fail with EBADF; if it belongs to someone
    // else, we only inspect and peek (no data is consumed) and give up.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    if !rustix::net::sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::SEQPACKET)
        || !peek_magic(fd)
    {
        log::debug!("l4re host: {BOOTSTRAP_ENV}={raw} is not a bootstrap socket");
        return Bootstrap::default();
    }
    // SAFETY: the descriptor is open and carries our bootstrap packet: it
    // is the one our creator passed to this process for the library, and
    // nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    let _ = rustix::io::fcntl_setfd(&owned, FdFlags::CLOEXEC);
    let mut boot = Bootstrap::default();
    match parse_bootstrap(owned.as_fd(), table) {
        Some((tag, named)) => {
            boot.log_tag = Some(tag);
            boot.named = named;
        }
        None => log::warn!("l4re host: malformed bootstrap packet ignored"),
    }
    boot.fd = Some(owned);
    boot
}

fn peek_magic(fd: BorrowedFd<'_>) -> bool {
    let mut w = [0u8; 8];
    let mut pfd = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if !matches!(rustix::event::poll(&mut pfd, Some(&zero)), Ok(1)) {
        return false;
    }
    // Peek without fds: MSG_PEEK with no control buffer leaves them queued.
    matches!(
        rustix::net::recv(fd, &mut w, RecvFlags::PEEK | RecvFlags::DONTWAIT),
        Ok((8.., _))
    ) && u64::from_ne_bytes(w) == BOOT_MAGIC
}

/// Reads one packet in the bootstrap format (what [`send_caps`] writes)
/// from `fd`, without waiting: the tag and, per named capability, its
/// description and its descriptors. The socket's error, or
/// [`Error::Inval`] for a short, truncated or malformed packet or
/// descriptors that do not add up.
#[allow(clippy::type_complexity)]
fn read_caps_packet(
    fd: BorrowedFd<'_>,
) -> Result<(String, Vec<(String, crate::host::wire::Desc, Vec<OwnedFd>)>)> {
    // The packet's length first (a peek), so that the buffer is only as
    // large as the packet: a fresh 64 KiB buffer costs 16 page faults.
    let (_, len) = rustix::net::recv(
        fd,
        &mut [0u8; 0],
        RecvFlags::PEEK | RecvFlags::TRUNC | RecvFlags::DONTWAIT,
    )
    .map_err(errno_to_error)?;
    if len > 1 << 16 {
        return Err(Error::Inval);
    }
    let mut buf = vec![0u8; len.max(1)];
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(SCM_MAX_FD))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [rustix::io::IoSliceMut::new(&mut buf)];
    let r = rustix::net::recvmsg(
        fd,
        &mut iov,
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(errno_to_error)?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(f) = msg {
            fds.extend(f);
        }
    }
    if r.bytes == 0
        || r.flags
            .intersects(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC)
    {
        return Err(Error::Inval);
    }
    let parsed = || {
        let mut rd = WordReader::new(&buf[..r.bytes]);
        if rd.word()? != BOOT_MAGIC {
            return None;
        }
        let tag = String::from_utf8(rd.bytes(MAX_NAME)?.to_vec()).ok()?;
        let n = usize::try_from(rd.word()?)
            .ok()
            .filter(|n| *n <= MAX_NAMED)?;
        let mut items = Vec::with_capacity(n);
        let mut total = 0usize;
        for _ in 0..n {
            let name = String::from_utf8(rd.bytes(MAX_NAME)?.to_vec()).ok()?;
            let desc = rd.desc()?;
            total += desc.nfds as usize;
            items.push((name, desc));
        }
        (rd.at_end() && total == fds.len()).then_some((tag, items))
    };
    let (tag, items) = parsed().ok_or(Error::Inval)?;
    let mut fds = fds.into_iter();
    let items = items
        .into_iter()
        .map(|(name, desc)| {
            let item_fds = fds.by_ref().take(desc.nfds as usize).collect();
            (name, desc, item_fds)
        })
        .collect();
    Ok((tag, items))
}

fn parse_bootstrap(
    fd: BorrowedFd<'_>,
    table: &mut Table,
) -> Option<(String, Vec<(String, CapIdx)>)> {
    let (tag, items) = read_caps_packet(fd).ok()?;
    let mut named = Vec::with_capacity(items.len());
    for (i, (name, desc, item_fds)) in items.into_iter().enumerate() {
        let idx = CapIdx::from_slot(well_known::FIRST_NAMED.slot() + i as u64);
        match import(desc, item_fds) {
            Some(entry) => {
                table.install(idx, entry);
                named.push((name, idx));
            }
            None => log::warn!("l4re host: initial capability {name:?} could not be received"),
        }
    }
    Some((tag, named))
}

/// Sends capabilities (each under a name, with at most `rights`; never
/// the server end of a gate) and a short text `tag` over the connected
/// `SOCK_SEQPACKET` socket `sock`, in the format of the bootstrap packet.
/// With [`recv_caps`], an unrelated process (a client that finds a
/// long-lived server through a socket path) gets capabilities of ours.
pub fn send_caps(
    sock: BorrowedFd<'_>,
    tag: &str,
    caps: &[(&str, CapIdx, CapRights)],
) -> Result<()> {
    if caps.len() > MAX_NAMED || tag.len() > MAX_NAME {
        return Err(Error::TooBig);
    }
    let mut w = Words::default();
    w.word(BOOT_MAGIC);
    w.bytes(tag.as_bytes());
    w.word(caps.len() as u64);
    let mut fds = Vec::new();
    {
        let table = lock(&process().table);
        for (name, idx, rights) in caps {
            if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
                return Err(Error::Inval);
            }
            let e = table.get(*idx).ok_or(Error::NoEnt)?;
            let desc = export(&e.obj, (*rights & e.rights) - CapRights::S, &mut fds)?;
            w.bytes(name.as_bytes());
            w.desc(desc);
        }
    }
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|a| a.fd()).collect();
    send_packet(
        sock,
        &w.to_bytes(),
        &borrowed,
        Deadline::new(Timeout::Never),
    )
    .map_err(|_| Error::Io)
}

/// Receives what [`send_caps`] sent on `sock` (waiting at most
/// `timeout`): the tag and the capabilities, each installed in a newly
/// allocated slot of ours.
pub fn recv_caps(
    sock: BorrowedFd<'_>,
    timeout: Duration,
) -> Result<(String, Vec<(String, CapIdx)>)> {
    let mut pfd = [PollFd::from_borrowed_fd(sock, PollFlags::IN)];
    let ts = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    if !matches!(rustix::event::poll(&mut pfd, Some(&ts)), Ok(1)) {
        return Err(Error::Ipc(crate::error::IpcError::RecvTimeout));
    }
    let (tag, items) = read_caps_packet(sock)?;
    let mut out = Vec::with_capacity(items.len());
    for (name, desc, item_fds) in items {
        let entry = import(desc, item_fds).ok_or(Error::Inval)?;
        let slot = cap_alloc()?;
        drop(lock(&process().table).install(slot, entry));
        out.push((name, slot));
    }
    Ok((tag, out))
}
