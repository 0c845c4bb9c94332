//! The control channel between the loader and a task's stub: a
//! `SOCK_SEQPACKET` Unix socket pair made before the loader forks the
//! task, carrying small messages with file descriptors (`SCM_RIGHTS`),
//! and once the program file's capability in the format of
//! [`l4re::host::send_caps`].
//!
//! This is the host's stand-in for what Fiasco does with kernel objects
//! the loader maps into the new task: the userfaultfd of the task's memory
//! (for the external pager) and the statistics page travel here. Capability
//! transfer (the IPC gate, the file's dataspace) goes through L4 IPC.

use l4re::host::signal::Inherited;
use l4re::host::sys::Scheduling;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// Message kinds.
pub mod kind {
    /// stub → loader: pid, arena range; fds: counters memfd, arena uffd,
    /// program uffd (external mode).
    pub const HELLO: u32 = 1;
    /// loader → stub: start the program (see [`super::Start`]). The next
    /// packet carries the program file's capability (`"file"`,
    /// [`l4re::host::send_caps`] format) if a region is file-backed.
    pub const START: u32 = 2;
    /// stub → loader: the program runs (its thread id).
    pub const STARTED: u32 = 3;
    /// stub → loader: setup failed (text).
    pub const ERROR: u32 = 4;
    /// stub → loader: the program forked; the child's userfaultfd (one
    /// descriptor, no payload). The loader serves the child from now on.
    pub const FORK: u32 = 5;
    /// stub → loader: the regions of START are attached (sent only when
    /// START asks to await [`GO`]).
    pub const ATTACHED: u32 = 6;
    /// loader → stub: enter the program (the loader's external pager has
    /// mapped what it prefetches first).
    pub const GO: u32 = 7;
}

/// Message kinds on a connection to `loader serve` (its socket) and
/// between its processes (see [`super::ready`]).
pub mod serve_kind {
    /// client → server: send me the root's capability (the answer is a
    /// [`l4re::host::send_caps`] packet).
    pub const CAPS: u32 = 20;
    /// client → server: run a program in a ready task ([`super::RunRequest`];
    /// fds: stdin, stdout, stderr, the working directory).
    pub const RUN: u32 = 21;
    /// server → client: refused (text): another user, or no ready tasks
    /// ([`NO_READY`]).
    pub const REFUSED: u32 = 22;
    /// runner → client: the program runs (its pid; fd: its pidfd, for
    /// forwarding signals).
    pub const STARTED: u32 = 23;
    /// runner → client: the program's status as a shell reports it (code,
    /// or 128 + signal).
    pub const EXIT: u32 = 24;
    /// runner → client: the run failed before the program ran (text).
    pub const FAILED: u32 = 25;
    /// server → client: this server keeps no ready tasks (`--ready 0`):
    /// run with [`CAPS`] instead.
    pub const NO_READY: u32 = 26;
    /// server → runner: a client (fd: its connection, the [`RUN`] message
    /// still unread on it).
    pub const CLIENT: u32 = 27;
    /// server → zygote: fork a runner.
    pub const SPAWN: u32 = 28;
    /// zygote → server: a new runner (its pid; fd: the server's end of its
    /// channel).
    pub const RUNNER: u32 = 29;
    /// server → zygote: the thread id of the server's l4fs thread, which
    /// a runner moves to its client's CPU with itself and its task.
    pub const FS_THREAD: u32 = 30;
}

/// What a client of `loader serve` asks it to run ([`serve_kind::RUN`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunRequest {
    /// `L4_TRACE` of the client: its start (`CLOCK_MONOTONIC`, ns); 0: off.
    pub trace: u64,
    /// The client's umask.
    pub umask: u64,
    /// `--prefetch` (`u64::MAX`, here and in the next two: the server's
    /// default).
    pub prefetch: u64,
    /// `--fault-around`.
    pub fault_around: u64,
    /// `--premap-pages`.
    pub premap_pages: u64,
    /// Learned prefetch on.
    pub profile: bool,
    /// `--stats` (empty: none; `-`: the client's standard output).
    pub stats: Vec<u8>,
    /// `L4_PROFILE_HEAD` of the client (`u64::MAX`: unset).
    pub profile_head: u64,
    /// The program (as the client named it).
    pub program: Vec<u8>,
    /// Its arguments, without `argv[0]`.
    pub args: Vec<Vec<u8>>,
    /// The client's environment.
    pub envp: Vec<Vec<u8>>,
    /// The CPU the client sent the request from (`u64::MAX`: unknown): the
    /// runner and the task's first thread move there until the program
    /// starts (a wake-up on another CPU costs 0.1-0.5 ms on the
    /// development VM).
    pub cpu: u64,
    /// What the client's program inherits of it, as if the client had
    /// executed it.
    pub inherit: Inheritance,
}

/// What a program inherits of its caller's process state across `execve`
/// besides its arguments, environment, descriptors, directory and umask:
/// sent by a client of `loader serve` (RUN) and to a task (START), where
/// the stub gives it to the program before its first instruction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inheritance {
    /// The CPUs it may run on ([`cpu_mask`]; empty: the task's).
    pub cpus: Vec<u8>,
    /// The signals it ignores and its mask.
    pub signals: Inherited,
    /// Its resource limits (`resource, soft, hard`, as
    /// [`l4re::host::sys::rlimits`] gives them; empty: the task's, which a
    /// one-shot run's task inherited from its caller).
    pub rlimits: Vec<(u32, u64, u64)>,
    /// Its scheduling (`None`: the task's, a one-shot run's caller's).
    pub sched: Option<Scheduling>,
}

impl Inheritance {
    /// This process's: its CPUs, the signal state it inherited
    /// ([`l4re::host::signal::inherited`]; nothing ignored or blocked if
    /// that is unknown), its limits and scheduling (a client of `loader
    /// serve`).
    pub fn of_this_process() -> Inheritance {
        Inheritance {
            cpus: rustix::thread::sched_getaffinity(None)
                .map(|s| cpu_mask(&s))
                .unwrap_or_default(),
            signals: l4re::host::signal::inherited().unwrap_or_default(),
            rlimits: l4re::host::sys::rlimits(),
            sched: Some(l4re::host::sys::scheduling()),
        }
    }

    /// Encodes (`l4run` writes the same words).
    fn put(&self, e: &mut Enc) {
        e.bytes(&self.cpus)
            .u64(self.signals.ignored)
            .u64(self.signals.blocked);
        put_rlimits(e, &self.rlimits);
        put_sched(e, self.sched);
    }

    /// Decodes what [`put`](Self::put) wrote.
    fn get(d: &mut Dec<'_>) -> std::io::Result<Inheritance> {
        Ok(Inheritance {
            cpus: d.bytes()?.to_vec(),
            signals: Inherited {
                ignored: d.u64()?,
                blocked: d.u64()?,
            },
            rlimits: get_rlimits(d)?,
            sched: get_sched(d)?,
        })
    }
}

impl RunRequest {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u64(self.trace)
            .u64(self.umask)
            .u64(self.prefetch)
            .u64(self.fault_around)
            .u64(self.premap_pages)
            .u64(u64::from(self.profile))
            .bytes(&self.stats)
            .u64(self.profile_head)
            .bytes(&self.program);
        for list in [&self.args, &self.envp] {
            e.u64(list.len() as u64);
            for a in list {
                e.bytes(a);
            }
        }
        e.u64(self.cpu);
        self.inherit.put(&mut e);
        e.0
    }

    /// Decodes.
    pub fn decode(b: &[u8]) -> std::io::Result<RunRequest> {
        let mut d = Dec(b);
        let mut r = RunRequest {
            trace: d.u64()?,
            umask: d.u64()?,
            prefetch: d.u64()?,
            fault_around: d.u64()?,
            premap_pages: d.u64()?,
            profile: d.u64()? != 0,
            stats: d.bytes()?.to_vec(),
            profile_head: d.u64()?,
            program: d.bytes()?.to_vec(),
            ..Default::default()
        };
        for list in [&mut r.args, &mut r.envp] {
            let n = d.u64()?.min(1 << 20);
            for _ in 0..n {
                list.push(d.bytes()?.to_vec());
            }
        }
        r.cpu = d.u64()?;
        r.inherit = Inheritance::get(&mut d)?;
        Ok(r)
    }
}

/// A new `SOCK_SEQPACKET` Unix socket (close-on-exec).
pub fn seqpacket_socket() -> std::io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A connected control channel.
pub struct Channel {
    fd: OwnedFd,
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Channel {
    /// The channel on a connected `SOCK_SEQPACKET` socket.
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    /// The socket.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The kind of the next message, which stays unread (`None`: end of
    /// file or a short message).
    pub fn peek_kind(&self) -> std::io::Result<Option<u32>> {
        let mut b = [0u8; 4];
        loop {
            match rustix::net::recv(&self.fd, &mut b, RecvFlags::PEEK) {
                Ok((4, _)) => return Ok(Some(u32::from_le_bytes(b))),
                Ok(_) => return Ok(None),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A connected pair of channels (close-on-exec): one end for the
    /// loader, one for the task it forks.
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Sends a message with descriptors.
    pub fn send(&self, kind: u32, payload: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(4 + payload.len());
        buf.extend_from_slice(&kind.to_le_bytes());
        buf.extend_from_slice(payload);
        let mut space = [MaybeUninit::<u8>::uninit(); 128];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(
                control.push(SendAncillaryMessage::ScmRights(fds)),
                "too many fds"
            );
        }
        let iov = [std::io::IoSlice::new(&buf)];
        rustix::net::sendmsg(&self.fd, &iov, &mut control, SendFlags::NOSIGNAL)?;
        Ok(())
    }

    /// Receives a message: kind, payload, descriptors. End of file (the
    /// peer is gone) is an error of kind `UnexpectedEof`.
    pub fn recv(&self) -> std::io::Result<(u32, Vec<u8>, Vec<OwnedFd>)> {
        // The next message's length (a peek: the message stays), so that
        // the buffer is as large as it and no larger (a fresh 64 KiB
        // buffer was 16 page faults per message).
        let len = loop {
            match rustix::net::recv(&self.fd, &mut [0u8; 0], RecvFlags::PEEK | RecvFlags::TRUNC) {
                Ok((_, n)) => break n,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut buf = vec![0u8; len.max(4)];
        let mut space = [MaybeUninit::<u8>::uninit(); 128];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let n = loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            match rustix::net::recvmsg(&self.fd, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
                Ok(r) => break r.bytes,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = m {
                fds.extend(rights);
            }
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the task is gone",
            ));
        }
        if n < 4 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "short control message",
            ));
        }
        let kind = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
        buf.truncate(n);
        buf.drain(..4);
        Ok((kind, buf, fds))
    }
}

/// A little encoder for control payloads: words and byte strings.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// Appends a word.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a byte string (length word + bytes).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
}

/// The matching decoder.
pub struct Dec<'a>(pub &'a [u8]);

impl<'a> Dec<'a> {
    /// Takes a word.
    pub fn u64(&mut self) -> std::io::Result<u64> {
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "short payload");
        let (h, t) = self.0.split_at_checked(8).ok_or_else(bad)?;
        self.0 = t;
        Ok(u64::from_le_bytes(h.try_into().map_err(|_| bad())?))
    }
    /// Takes a byte string.
    pub fn bytes(&mut self) -> std::io::Result<&'a [u8]> {
        let n = self.u64()? as usize;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "short payload");
        let (h, t) = self.0.split_at_checked(n).ok_or_else(bad)?;
        self.0 = t;
        Ok(h)
    }
}

/// A region of the program that the stub attaches to the task's region
/// map (as an `L4Re::Rm` attach would) when it gets [`Start`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attach {
    /// Start address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// L4Re's attach and region flags (`l4re::proto::rm::Flags` bits).
    pub flags: u32,
    /// Offset in the program file (file-backed regions).
    pub offset: u64,
    /// Backed by the program file (the capability sent after [`Start`]),
    /// else anonymous.
    pub file: bool,
    /// The region's name.
    pub name: Vec<u8>,
}

/// What the loader tells the stub to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Start {
    /// The program's regions, attached in one go by the stub (one
    /// message instead of a region-map call per region).
    pub regions: Vec<Attach>,
    /// Entry point.
    pub entry: u64,
    /// `AT_PHDR`, `AT_PHNUM`, `AT_PHENT`.
    pub phdr: (u64, u64, u64),
    /// Top of the stack region and its size.
    pub stack: (u64, u64),
    /// First page after the image (heap start).
    pub brk: u64,
    /// Code and data ranges (for `/proc/PID/stat` and `PR_SET_MM`).
    pub code: (u64, u64),
    /// Data range.
    pub data: (u64, u64),
    /// Pages to map ahead around the entry point and the stack top.
    pub prefetch: u64,
    /// The internal pager's fault-around window in pages
    /// ([`Pager::set_fault_around`](l4pager::host::Pager::set_fault_around)).
    pub fault_around: u64,
    /// Map all of the program's file pages (and its bss) before it starts
    /// if they are at most this many (0: never; see
    /// [`Pager::premap_runs`](l4pager::host::Pager::premap_runs)).
    pub premap_pages: u64,
    /// Regions whose file data ends inside them: (start, file bytes).
    pub file_limits: Vec<(u64, u64)>,
    /// Learned prefetch: log the pages mapped at faults (recording run).
    pub record: bool,
    /// Learned prefetch: the profile to replay (entries as in
    /// [`l4pager::host::PageLog`]; empty: none).
    pub profile: Vec<u64>,
    /// Learned prefetch: pages of the profile mapped before the program
    /// starts (the rest are mapped while it runs).
    pub profile_head: u64,
    /// After attaching the regions, report [`kind::ATTACHED`] and wait for
    /// [`kind::GO`] before the program starts (the external pager replays
    /// a profile).
    pub await_go: bool,
    /// `AT_EXECFN`.
    pub execfn: Vec<u8>,
    /// Arguments.
    pub argv: Vec<Vec<u8>>,
    /// Environment.
    pub envp: Vec<Vec<u8>>,
    /// `--confine`: the confinement as arguments
    /// ([`Confinement::to_args`](super::confine::Confinement::to_args));
    /// empty: not confined.
    pub confine: Vec<Vec<u8>>,
    /// The program gets other standard descriptors and working directory
    /// than the task's (a client of `loader serve`): the first four fds
    /// sent with START are its stdin, stdout, stderr and working
    /// directory; the program file's (for `/proc/self/exe`) follows.
    pub stdio: bool,
    /// The program's umask (`u64::MAX`: the task's).
    pub umask: u64,
    /// `L4_TRACE`: the run's start (`CLOCK_MONOTONIC`, ns) for the task's
    /// trace lines; 0: as the task had it.
    pub trace: u64,
    /// What the program inherits of its caller (a client's of `loader
    /// serve`, or the one-shot loader's own).
    pub inherit: Inheritance,
}

/// Encodes a scheduling: a word saying whether there is one, then its
/// policy, priority and nice value.
fn put_sched(e: &mut Enc, s: Option<Scheduling>) {
    match s {
        Some(s) => e
            .u64(1)
            .u64(u64::from(s.policy))
            .u64(u64::from(s.priority))
            .u64(i64::from(s.nice) as u64),
        None => e.u64(0),
    };
}

/// Decodes what [`put_sched`] wrote.
fn get_sched(d: &mut Dec<'_>) -> std::io::Result<Option<Scheduling>> {
    if d.u64()? == 0 {
        return Ok(None);
    }
    let bad = |_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad scheduling");
    Ok(Some(Scheduling {
        policy: u32::try_from(d.u64()?).map_err(bad)?,
        priority: u32::try_from(d.u64()?).map_err(bad)?,
        nice: i32::try_from(d.u64()? as i64).map_err(bad)?,
    }))
}

/// Encodes resource limits: their number, then each as three words.
fn put_rlimits(e: &mut Enc, limits: &[(u32, u64, u64)]) {
    e.u64(limits.len() as u64);
    for &(res, soft, hard) in limits {
        e.u64(u64::from(res)).u64(soft).u64(hard);
    }
}

/// Decodes what [`put_rlimits`] wrote (at most
/// [`RLIMITS`](l4re::host::sys::RLIMITS) of them).
fn get_rlimits(d: &mut Dec<'_>) -> std::io::Result<Vec<(u32, u64, u64)>> {
    let n = d.u64()?;
    if n > u64::from(l4re::host::sys::RLIMITS) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "too many resource limits",
        ));
    }
    (0..n)
        .map(|_| {
            let res = u32::try_from(d.u64()?).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad resource")
            })?;
            Ok((res, d.u64()?, d.u64()?))
        })
        .collect()
}

/// A CPU set as the kernel's affinity mask: byte `i / 8`, bit `i % 8`
/// for CPU `i`, up to the last CPU in the set.
pub fn cpu_mask(set: &rustix::thread::CpuSet) -> Vec<u8> {
    let mut m = Vec::new();
    for cpu in (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c)) {
        m.resize(m.len().max(cpu / 8 + 1), 0);
        m[cpu / 8] |= 1 << (cpu % 8);
    }
    m
}

/// The CPU set of a [`cpu_mask`] (CPUs past
/// [`CpuSet::MAX_CPU`](rustix::thread::CpuSet::MAX_CPU) left out), or
/// `None` if it names none.
pub fn cpu_set(mask: &[u8]) -> Option<rustix::thread::CpuSet> {
    let mut set = rustix::thread::CpuSet::new();
    let mut any = false;
    for (i, b) in mask.iter().enumerate() {
        for bit in 0..8 {
            let cpu = i * 8 + bit;
            if b & (1 << bit) != 0 && cpu < rustix::thread::CpuSet::MAX_CPU {
                set.set(cpu);
                any = true;
            }
        }
    }
    any.then_some(set)
}

impl Start {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u64(self.regions.len() as u64);
        for r in &self.regions {
            e.u64(r.start)
                .u64(r.size)
                .u64(u64::from(r.flags))
                .u64(r.offset)
                .u64(u64::from(r.file))
                .bytes(&r.name);
        }
        e.u64(self.entry)
            .u64(self.phdr.0)
            .u64(self.phdr.1)
            .u64(self.phdr.2)
            .u64(self.stack.0)
            .u64(self.stack.1)
            .u64(self.brk)
            .u64(self.code.0)
            .u64(self.code.1)
            .u64(self.data.0)
            .u64(self.data.1)
            .u64(self.prefetch)
            .u64(self.fault_around)
            .u64(self.premap_pages)
            .u64(self.file_limits.len() as u64);
        for (s, l) in &self.file_limits {
            e.u64(*s).u64(*l);
        }
        e.u64(self.record as u64)
            .u64(self.profile_head)
            .u64(u64::from(self.await_go))
            .u64(self.profile.len() as u64);
        for p in &self.profile {
            e.u64(*p);
        }
        e.bytes(&self.execfn).u64(self.argv.len() as u64);
        for a in &self.argv {
            e.bytes(a);
        }
        for list in [&self.envp, &self.confine] {
            e.u64(list.len() as u64);
            for a in list {
                e.bytes(a);
            }
        }
        e.u64(u64::from(self.stdio)).u64(self.umask).u64(self.trace);
        self.inherit.put(&mut e);
        e.0
    }

    /// Decodes.
    pub fn decode(b: &[u8]) -> std::io::Result<Start> {
        let mut d = Dec(b);
        let mut regions = Vec::new();
        let n = d.u64()?.min(1 << 12);
        for _ in 0..n {
            let (start, size) = (d.u64()?, d.u64()?);
            let flags = u32::try_from(d.u64()?).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad region flags")
            })?;
            regions.push(Attach {
                start,
                size,
                flags,
                offset: d.u64()?,
                file: d.u64()? != 0,
                name: d.bytes()?.to_vec(),
            });
        }
        let mut s = Start {
            regions,
            entry: d.u64()?,
            phdr: (d.u64()?, d.u64()?, d.u64()?),
            stack: (d.u64()?, d.u64()?),
            brk: d.u64()?,
            code: (d.u64()?, d.u64()?),
            data: (d.u64()?, d.u64()?),
            prefetch: d.u64()?,
            fault_around: d.u64()?,
            premap_pages: d.u64()?,
            ..Default::default()
        };
        let n = d.u64()?.min(1 << 16);
        for _ in 0..n {
            s.file_limits.push((d.u64()?, d.u64()?));
        }
        s.record = d.u64()? != 0;
        s.profile_head = d.u64()?;
        s.await_go = d.u64()? != 0;
        let n = d.u64()?.min(l4pager::host::LOG_ENTRIES as u64);
        for _ in 0..n {
            s.profile.push(d.u64()?);
        }
        s.execfn = d.bytes()?.to_vec();
        let n = d.u64()?.min(1 << 20);
        for _ in 0..n {
            s.argv.push(d.bytes()?.to_vec());
        }
        for list in [&mut s.envp, &mut s.confine] {
            let n = d.u64()?.min(1 << 20);
            for _ in 0..n {
                list.push(d.bytes()?.to_vec());
            }
        }
        s.stdio = d.u64()? != 0;
        s.umask = d.u64()?;
        s.trace = d.u64()?;
        s.inherit = Inheritance::get(&mut d)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_round_trips() {
        let s = Start {
            regions: vec![
                Attach {
                    start: 0x40_0000,
                    size: 0x2000,
                    flags: 5,
                    offset: 0x1000,
                    file: true,
                    name: b"text".to_vec(),
                },
                Attach {
                    start: 0x7000,
                    size: 0x1000,
                    flags: 3,
                    offset: 0,
                    file: false,
                    name: b"stack".to_vec(),
                },
            ],
            entry: 1,
            phdr: (2, 3, 56),
            stack: (0x7000, 0x1000),
            brk: 9,
            code: (1, 2),
            data: (3, 4),
            prefetch: 8,
            fault_around: 4,
            premap_pages: 512,
            file_limits: vec![(0x1000, 0x123)],
            record: true,
            profile: vec![0x40_1000 | 0x800, 0x40_2000 | 15],
            profile_head: 64,
            await_go: true,
            execfn: b"/bin/x".to_vec(),
            argv: vec![b"x".to_vec(), b"y z".to_vec()],
            envp: vec![b"A=B".to_vec()],
            confine: vec![b"--confine".to_vec()],
            stdio: true,
            umask: 0o22,
            trace: 7,
            inherit: Inheritance {
                cpus: vec![0b101],
                signals: Inherited {
                    ignored: 1 << 12,
                    blocked: 1 << 9,
                },
                rlimits: vec![(7, 512, 4096), (4, 0, u64::MAX)],
                sched: Some(Scheduling {
                    policy: 3,
                    priority: 0,
                    nice: -5,
                }),
            },
        };
        assert_eq!(Start::decode(&s.encode()).unwrap(), s);
        assert!(Start::decode(&s.encode()[..20]).is_err());
    }

    #[test]
    fn run_request_round_trips() {
        let r = RunRequest {
            trace: 1,
            umask: 0o27,
            prefetch: 2,
            fault_around: 16,
            premap_pages: 1024,
            profile: true,
            stats: b"-".to_vec(),
            profile_head: u64::MAX,
            program: b"/bin/x".to_vec(),
            args: vec![b"a".to_vec(), b"".to_vec()],
            envp: vec![b"A=B".to_vec()],
            cpu: 1,
            inherit: Inheritance {
                cpus: vec![0, 0b10],
                signals: Inherited {
                    ignored: 3,
                    blocked: 1 << 63,
                },
                rlimits: vec![(3, 8 << 20, u64::MAX)],
                sched: None,
            },
        };
        let b = r.encode();
        assert_eq!(RunRequest::decode(&b).unwrap(), r);
        assert!(RunRequest::decode(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn cpu_masks_are_the_kernels() {
        let mut set = rustix::thread::CpuSet::new();
        set.set(0);
        set.set(9);
        let m = cpu_mask(&set);
        assert_eq!(m, [0b1, 0b10]);
        assert_eq!(cpu_set(&m), Some(set));
        assert_eq!(cpu_set(&[0, 0]), None, "no CPU");
        assert_eq!(cpu_set(&[]), None);
        // What sched_getaffinity reports comes back as it was.
        let mine = rustix::thread::sched_getaffinity(None).unwrap();
        assert_eq!(cpu_set(&cpu_mask(&mine)), Some(mine));
    }

    #[test]
    fn channel_carries_fds() {
        let (a, b) = Channel::pair().unwrap();
        let t = std::thread::spawn(move || {
            let f = std::fs::File::open("/proc/self/exe").unwrap();
            a.send(kind::HELLO, b"hi", &[AsFd::as_fd(&f)]).unwrap();
        });
        let (k, p, fds) = b.recv().unwrap();
        assert_eq!(
            (k, p.as_slice(), fds.len()),
            (kind::HELLO, b"hi".as_slice(), 1)
        );
        t.join().unwrap();
        // The peer's end is gone: end of file.
        let e = b.recv().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
