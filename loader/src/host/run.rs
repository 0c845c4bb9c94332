//! `loader run`: start a program in a new task, demand-paged from the
//! filesystem server, and wait for it.
//!
//! The creating task (this process):
//!
//! 1. forks the task (the `l4task` stub, [`l4re::host::fork_task`]): it
//!    readies its pagers while this process goes on;
//! 2. serves the files: from a thread of its own running `l4fs` on
//!    `--root` (one-shot), or through a running `loader serve`; opens
//!    PROGRAM there (a read-only file capability that speaks Dataspace),
//!    reads the ELF headers through its own view of the file (Dataspace
//!    `map` into a receive window) and validates them ([`crate::elf`]);
//! 3. takes the task's hello; on the host the task's internal pager keeps
//!    its region map (`L4Re::Rm` service) to itself: a Linux program
//!    cannot call it, and the loader's regions arrive with START (below);
//! 4. serves, as the external pager, the internal pager's own memory (the
//!    stub's allocator arena) with pages from its own memory — and in
//!    `--pager external` mode all of the program's faults;
//! 5. tells the stub to start the program: START names the program's
//!    regions and its stack, which the stub attaches to the task's region
//!    map itself (the file's capability follows START), one message
//!    instead of an `L4Re::Rm` call per region;
//! 6. waits; reports invalid accesses; writes the statistics; syncs the
//!    filesystem; exits with the program's status (128 + signal if it was
//!    killed).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use l4pager::fault::{self, Access, FaultCause};
use l4pager::host::uffd::{Event, Uffd};
use l4pager::host::{self as ph, Counters, DsView, MAX_REGIONS, Mode, Pager};
use l4pager::region::{Backing, RegionMap};
use l4pager::sync::SpinLock;
use l4re::CapRights;
use l4re::cap::{Cap, IpcGate, OwnedCap, Untyped};
use l4re::env::env;
use l4re::fpage::{RcvBuf, Rights};
use l4re::msg::LongBytes;
use l4re::proto::Dataspace;

use super::children::Children;
use super::ctl::{Attach, Channel, Dec, Start, kind, seqpacket_socket};
use super::profile;
use crate::elf::{self, PAGE, Plan};

/// Where a static-pie program is placed.
pub const PIE_BASE: u64 = 0x2000_0000_0000;
/// Top of the program's stack.
pub const STACK_TOP: u64 = 0x3000_0000_0000;
/// Size of the program's stack region.
pub const STACK_SIZE: u64 = 8 << 20;

/// Options of `loader run`.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Who resolves the program's faults.
    pub mode: Mode,
    /// The directory the filesystem server serves.
    pub root: PathBuf,
    /// An ext2 image the filesystem server serves instead of `root`.
    pub ext2: Option<PathBuf>,
    /// Pages to map ahead around the entry point and the stack top.
    pub prefetch: u64,
    /// The pagers' fault-around window in pages (0: none; see
    /// [`Pager::set_fault_around`]).
    pub fault_around: u64,
    /// Map all of the program's file pages before it starts when they are
    /// at most this many (0: demand paging only; see [`PREMAP_PAGES`]).
    pub premap_pages: u64,
    /// Frames of the filesystem server's page pool (`None`: its default).
    pub fs_pool_pages: Option<usize>,
    /// Learned prefetch: record a profile of the program's first run,
    /// replay it on later runs (see [`super::profile`]).
    pub profile: bool,
    /// A long-lived file server's socket (`loader serve`) to use instead
    /// of starting one.
    pub server: Option<PathBuf>,
    /// Whether a failure to reach `server` only warns (it came from the
    /// environment) rather than ends the run.
    pub server_optional: bool,
    /// Where to write the statistics (`-`: standard output).
    pub stats: Option<String>,
    /// The program, as looked up through the filesystem server.
    pub program: String,
    /// Its arguments (without `argv[0]`).
    pub args: Vec<String>,
    /// `--confine`: restrict what the program itself opens to the served
    /// directory (read, execute) and these extra directories
    /// ([`super::confine`]); `None`: not confined.
    pub confine: Option<super::confine::Confinement>,
}

/// A failure before the program ran.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(s: impl Into<String>) -> RunError {
    RunError(s.into())
}

/// What the filesystem server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// A host directory (`--root`).
    Dir(PathBuf),
    /// An ext2 image file (`--ext2`).
    Ext2(PathBuf),
}

impl Store {
    /// The store `opts` name.
    pub fn of(opts: &RunOpts) -> Store {
        match &opts.ext2 {
            Some(img) => Store::Ext2(img.clone()),
            None => Store::Dir(opts.root.clone()),
        }
    }

    /// An error naming a store that is not there (or not of its kind).
    pub fn check(&self) -> Result<(), RunError> {
        match self {
            Store::Dir(root) => match std::fs::metadata(root) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(err(format!("--root {}: not a directory", root.display()))),
                Err(e) => Err(err(format!("--root {}: {e}", root.display()))),
            },
            Store::Ext2(img) => match std::fs::metadata(img) {
                Ok(m)
                    if m.is_file()
                        || std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()) =>
                {
                    Ok(())
                }
                Ok(_) => Err(err(format!("--ext2 {}: not a file", img.display()))),
                Err(e) => Err(err(format!("--ext2 {}: {e}", img.display()))),
            },
        }
    }
}

/// The filesystem server of a run and the client side of its root.
pub struct FsTask {
    server: FsServer,
    gate: OwnedCap<IpcGate>,
    /// What it serves.
    store: Option<Store>,
}

/// Where the filesystem server runs.
enum FsServer {
    /// A thread of this process (a one-shot run); the reason it stopped,
    /// if it has.
    Thread(Arc<std::sync::OnceLock<String>>),
    /// A long-lived server (`loader serve`) in process `pid`, watched
    /// through its pidfd (`None`: it could not be opened).
    Remote { pid: u32, pidfd: Option<OwnedFd> },
}

impl FsTask {
    /// Starts the server on `root`.
    pub fn start(root: &Path) -> Result<FsTask, RunError> {
        Self::start_store(&Store::Dir(root.to_path_buf()), None)
    }

    /// Starts the server on `store` with a page pool of `pool_pages`
    /// frames (`None`: its default), on a thread of this process: a
    /// one-shot run needs no server process of its own (the task's pager
    /// calls it through the gate as it would call a server task).
    pub fn start_store(store: &Store, pool_pages: Option<usize>) -> Result<FsTask, RunError> {
        store.check()?;
        let gate = env()
            .factory()
            .create_gate(None, 0)
            .map_err(|e| err(format!("cannot create the filesystem gate: {e}")))?;
        let (cfg, what) = fs_config(store, pool_pages);
        let stopped = Arc::new(std::sync::OnceLock::new());
        let (server_gate, why) = (gate.cap(), stopped.clone());
        std::thread::Builder::new()
            .name("l4fs".into())
            .spawn(move || {
                ph::block_signals();
                let e = match l4fs::serve(server_gate, cfg) {
                    Ok(()) => "it stopped".to_string(),
                    Err(e) => format!("{what}: {e}"),
                };
                eprintln!("loader: the filesystem server: {e}");
                let _ = why.set(e);
                // Calls fail from now on instead of waiting for a server.
                let _ = l4re::host::release_server_end(server_gate.idx());
            })
            .map_err(|e| err(format!("cannot start the filesystem server: {e}")))?;
        Ok(FsTask {
            server: FsServer::Thread(stopped),
            gate,
            store: Some(store.clone()),
        })
    }

    /// Connects to a long-lived server (`loader serve`) through its socket
    /// at `path`.
    pub fn connect(path: &Path) -> Result<FsTask, RunError> {
        use std::os::fd::AsFd;
        let what = |e: String| err(format!("file server socket {}: {e}", path.display()));
        let sock = seqpacket_socket().map_err(|e| what(e.to_string()))?;
        let addr = unix_addr(path).map_err(|e| what(e.to_string()))?;
        rustix::net::connect(&sock, &addr)
            .map_err(|e| what(std::io::Error::from(e).to_string()))?;
        let sock = Channel::from_fd(sock);
        sock.send(super::ctl::serve_kind::CAPS, &[], &[])
            .map_err(|e| what(e.to_string()))?;
        // A refusal (a client confined beyond the server) says why.
        let mut p = [rustix::event::PollFd::new(
            &sock,
            rustix::event::PollFlags::IN,
        )];
        let five = rustix::event::Timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        if !matches!(rustix::event::poll(&mut p, Some(&five)), Ok(1)) {
            return Err(what("no answer within 5 s".into()));
        }
        if let Ok(Some(super::ctl::serve_kind::REFUSED)) = sock.peek_kind() {
            let why = sock.recv().map(|(_, m, _)| m).unwrap_or_default();
            return Err(what(format!("refused: {}", String::from_utf8_lossy(&why))));
        }
        let (tag, caps) = l4re::host::recv_caps(sock.as_fd(), Duration::from_secs(5))
            .map_err(|e| what(format!("no answer: {e}")))?;
        let Some((_, idx)) = caps.into_iter().find(|(n, _)| n == "fs") else {
            return Err(what("no file server capability".into()));
        };
        let store = match tag.split_once(':') {
            Some(("dir", p)) => Some(Store::Dir(p.into())),
            Some(("ext2", p)) => Some(Store::Ext2(p.into())),
            _ => None,
        };
        // Its death is reported as a server task's would be.
        let pid = rustix::net::sockopt::socket_peercred(&sock)
            .map(|c| c.pid.as_raw_nonzero().get() as u32)
            .unwrap_or(0);
        let pidfd = rustix::process::Pid::from_raw(pid as i32).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        Ok(FsTask {
            server: FsServer::Remote { pid, pidfd },
            gate: OwnedCap::from_cap(Cap::from_idx(idx)),
            store,
        })
    }

    /// Opens `path` (relative to the served root) read-only.
    pub fn open(&self, path: &str) -> Result<OwnedCap<Dataspace>, RunError> {
        let name = path.trim_start_matches('/');
        let slot =
            l4re::cap::alloc::<Untyped>().map_err(|e| err(format!("no capability slot: {e}")))?;
        let fs: Cap<l4fs::FsOps> = self.gate.cap().cast();
        let item = l4fs::FsOpsClient::open(
            &fs,
            LongBytes::new(name.as_bytes()),
            l4fs::proto::mode::RO,
            RcvBuf::cap(slot.idx()),
        )
        .map_err(|e| err(format!("{path}: {e}")))?;
        if !item.cap_received() {
            return Err(err(format!(
                "{path}: the filesystem server sent no capability"
            )));
        }
        Ok(slot.cast())
    }

    /// How the server ended, in words, if it has (it should live as long
    /// as the run).
    pub fn ended(&self) -> Option<String> {
        match &self.server {
            FsServer::Thread(why) => why.get().cloned(),
            FsServer::Remote { pidfd, .. } => {
                let fd = pidfd.as_ref()?;
                let mut p = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                matches!(rustix::event::poll(&mut p, Some(&zero)), Ok(1))
                    .then(|| "it ended".to_string())
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        match &self.server {
            FsServer::Thread(_) => std::process::id(),
            FsServer::Remote { pid, .. } => *pid,
        }
    }

    /// Asks the server to write every dirty page back.
    pub fn sync(&self) {
        let fs: Cap<l4fs::FsOps> = self.gate.cap().cast();
        if let Err(e) = l4fs::FsOpsClient::sync_all(&fs) {
            log::debug!("loader: sync failed: {e}");
        }
    }
}

/// l4fs's configuration for `store` (with a page pool of `pool_pages`
/// frames if given), and the store in words.
fn fs_config(store: &Store, pool_pages: Option<usize>) -> (l4fs::FsConfig, String) {
    let (mut cfg, what) = match store {
        Store::Dir(root) => (l4fs::FsConfig::host_dir(root), root.display().to_string()),
        Store::Ext2(img) => (l4fs::FsConfig::ext2_image(img), img.display().to_string()),
    };
    if let Some(n) = pool_pages {
        cfg = cfg.pool_pages(n);
    }
    (cfg, what)
}

/// The socket address of `path`.
fn unix_addr(path: &Path) -> std::io::Result<rustix::net::SocketAddrUnix> {
    use std::os::unix::ffi::OsStrExt;
    let b = path.as_os_str().as_bytes();
    // sun_path has 108 bytes, with the NUL.
    if b.is_empty() || b.len() >= 108 {
        return Err(std::io::Error::other("socket path empty or too long"));
    }
    Ok(rustix::net::SocketAddrUnix::new(path)?)
}

/// The default socket of `loader serve`: `$L4FS_SOCKET` if set, else
/// `$XDG_RUNTIME_DIR/l4fs.sock`, else `/tmp/l4fs-UID.sock`.
pub fn default_socket() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("l4fs.sock"),
        None => PathBuf::from(format!(
            "/tmp/l4fs-{}.sock",
            rustix::process::getuid().as_raw()
        )),
    }
}

/// The environment variable that names a long-lived file server's socket
/// for `loader run` (and the default of `loader serve --socket`).
pub const SOCKET_ENV: &str = "L4FS_SOCKET";

/// Set by SIGTERM/SIGINT/SIGHUP in `loader serve`.
static SERVE_STOP: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Options of `loader serve`.
#[derive(Debug, Clone)]
pub struct ServeOpts {
    /// What it serves.
    pub store: Store,
    /// Its socket.
    pub socket: PathBuf,
    /// Frames of l4fs's page pool (`None`: its default).
    pub pool_pages: Option<usize>,
    /// Ready tasks kept for clients ([`super::ready`]; 0: none, clients
    /// then run with the root's capability).
    pub ready: usize,
    /// The socket file's permission bits (default 0600: the owner only).
    pub socket_mode: u32,
    /// The options of the runs in ready tasks that a request does not set
    /// (pager mode: internal).
    pub run: RunOpts,
}

/// The default permission bits of `loader serve`'s socket: only its
/// owner may connect (a ready task runs programs with the server's
/// credentials).
pub const SOCKET_MODE: u32 = 0o600;

/// `loader serve`: serves `opts.store` with l4fs as a long-lived task
/// that `loader run` uses (through the socket at `opts.socket`: a
/// connection asks for the root's capability, or has a ready task run a
/// program, [`super::ready`]), so that runs share its page cache. Ends on
/// SIGTERM, SIGINT or SIGHUP, after writing every dirty page back and
/// removing the socket.
pub fn serve(arena: &'static super::arena::Arena, opts: &ServeOpts) -> i32 {
    let (store, socket, pool_pages) = (&opts.store, opts.socket.as_path(), opts.pool_pages);
    if let Err(e) = store.check() {
        eprintln!("loader serve: {e}");
        return 2;
    }
    let fail = |what: String| {
        eprintln!("loader serve: {what}");
        1
    };
    // The zygote of the ready tasks first: while this process is still
    // single-threaded and has not used the platform.
    let zygote = if opts.ready > 0 {
        match super::ready::start_zygote(arena, socket, &opts.run) {
            Ok(z) => Some(z),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    // A socket file nobody answers on is stale: replaced; a live one is
    // another server's.
    if socket.exists() {
        if FsTask::connect(socket).is_ok() {
            return fail(format!("{} is already served", socket.display()));
        }
        let _ = std::fs::remove_file(socket);
    }
    let gate = match env().factory().create_gate(None, 0) {
        Ok(g) => g,
        Err(e) => return fail(format!("cannot create the gate: {e}")),
    };
    let (cfg, _) = fs_config(store, pool_pages);
    let tag = match store {
        Store::Dir(root) => format!("dir:{}", root.display()),
        Store::Ext2(img) => format!("ext2:{}", img.display()),
    };
    // Longer than a capability name may be: the store stays unnamed.
    let tag = if tag.len() > 64 { "other".into() } else { tag };
    // Every thread blocks the stop signals (the mask is inherited); the
    // main thread waits for them.
    let set = l4re::host::signal::SigSet::of(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    set.block();
    let server_gate = gate.cap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let server = std::thread::Builder::new()
        .name("l4fs".into())
        .spawn(move || {
            let _ = tid_tx.send(rustix::thread::gettid());
            l4fs::serve(server_gate, cfg)
        });
    if let Err(e) = server {
        return fail(format!("thread: {e}"));
    }
    // The runners move the l4fs thread to their client's CPU (their
    // calls to it are then hand-offs on one CPU).
    if let (Some(z), Ok(tid)) = (&zygote, tid_rx.recv()) {
        let mut e = super::ctl::Enc::default();
        e.u64(tid.as_raw_nonzero().get() as u64);
        let _ = z.send(super::ctl::serve_kind::FS_THREAD, &e.0, &[]);
    }
    let listener = match seqpacket_socket() {
        Ok(s) => s,
        Err(e) => return fail(format!("socket: {e}")),
    };
    let addr = match unix_addr(socket) {
        Ok(a) => a,
        Err(e) => return fail(format!("{}: {e}", socket.display())),
    };
    // Owner only unless told otherwise, set before anyone can connect
    // (listen).
    let bound = rustix::net::bind(&listener, &addr)
        .and_then(|()| {
            rustix::fs::chmod(
                socket,
                rustix::fs::Mode::from_bits_truncate(opts.socket_mode),
            )
        })
        .and_then(|()| rustix::net::listen(&listener, 64));
    if let Err(e) = bound {
        return fail(format!("{}: {}", socket.display(), std::io::Error::from(e)));
    }
    let pool = match zygote.map(|z| super::ready::Pool::new(z, opts.ready)) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return fail(format!("ready tasks: {e}")),
        None => None,
    };
    let gate_idx = gate.idx();
    let uid = rustix::process::getuid().as_raw();
    let acceptor = std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            let tag: Arc<str> = tag.into();
            loop {
                let Ok(c) = rustix::net::accept_with(&listener, rustix::net::SocketFlags::CLOEXEC)
                else {
                    continue;
                };
                let (tag, pool) = (tag.clone(), pool.clone());
                let handler = std::thread::Builder::new()
                    .name("client".into())
                    .spawn(move || serve_client(Channel::from_fd(c), &tag, gate_idx, pool, uid));
                if let Err(e) = handler {
                    log::debug!("loader serve: no thread for a client: {e}");
                }
            }
        });
    if let Err(e) = acceptor {
        return fail(format!("thread: {e}"));
    }
    eprintln!(
        "loader serve: serving {} on {} (pid {})",
        match store {
            Store::Dir(p) => format!("directory {}", p.display()),
            Store::Ext2(p) => format!("ext2 image {}", p.display()),
        },
        socket.display(),
        std::process::id()
    );
    let sig = set.wait();
    SERVE_STOP.store(sig, Ordering::Relaxed);
    let _ = std::fs::remove_file(socket);
    let fs: Cap<l4fs::FsOps> = gate.cap().cast();
    let code = match l4fs::FsOpsClient::sync_all(&fs) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("loader serve: writing dirty pages back failed: {e}");
            1
        }
    };
    eprintln!("loader serve: stopped by signal {sig}, dirty pages written back");
    code
}

/// Answers one connection to `loader serve`: the root's capability
/// (CAPS), or the client's program run in a ready task of `pool` (RUN,
/// only for a client of the server's own user `uid`); neither for a
/// client confined beyond the server ([`super::ready::confined_client`]).
fn serve_client(
    conn: Channel,
    tag: &str,
    gate: l4re::cap::CapIdx,
    pool: Option<Arc<super::ready::Pool>>,
    uid: u32,
) {
    use super::ctl::serve_kind;
    let creds = rustix::net::sockopt::socket_peercred(&conn).ok();
    let confined = super::ready::confined_client(
        creds
            .as_ref()
            .map(|c| c.pid.as_raw_nonzero().get().unsigned_abs()),
    );
    match conn.peek_kind() {
        Ok(Some(serve_kind::CAPS)) => {
            let _ = conn.recv();
            if let Some(why) = confined {
                // The client runs with a server of its own.
                let why = format!("no capability for a confined client: {why}");
                eprintln!("loader serve: {why}");
                let _ = conn.send(serve_kind::REFUSED, why.as_bytes(), &[]);
                return;
            }
            let caps = [("fs", gate, CapRights::RW)];
            if let Err(e) = l4re::host::send_caps(conn.as_fd(), tag, &caps) {
                log::debug!("loader serve: a client got nothing: {e}");
            }
        }
        Ok(Some(serve_kind::RUN)) => {
            let peer = creds.map(|c| c.uid.as_raw());
            // An answer other than a hand-over reads the request first:
            // a connection closed with unread data resets, and the client
            // would not see the answer.
            if peer != Some(uid) {
                let _ = conn.recv();
                let why = super::ready::refusal(uid, peer);
                eprintln!("loader serve: refused: {why}");
                let _ = conn.send(serve_kind::REFUSED, why.as_bytes(), &[]);
                return;
            }
            match pool {
                Some(p) if confined.is_none() => p.hand_over(conn),
                _ => {
                    // No ready task: the client runs the program itself
                    // (a confined one inside its confinement).
                    if let Some(why) = &confined {
                        eprintln!("loader serve: no ready task for a confined client: {why}");
                    }
                    let _ = conn.recv();
                    let _ = conn.send(serve_kind::NO_READY, &[], &[]);
                }
            }
        }
        _ => {}
    }
}

/// Reads `[off, off + len)` of the file through `view` into `buf`.
fn read_range(view: &DsView, buf: &mut [u8], off: u64, len: u64) -> Result<(), RunError> {
    let end = (off.saturating_add(len)).min(buf.len() as u64);
    let mut p = off & !(PAGE - 1);
    while p < end {
        let n = (buf.len() as u64 - p).min(PAGE) as usize;
        let mut page = [0u8; PAGE as usize];
        // The server may revoke the page between its answer and our copy
        // (it is short of frames): ask again.
        let mut tries = 0;
        loop {
            view.load(p)
                .map_err(|e| err(format!("reading the program: {e}")))?;
            if view.read_page(p, n as u64, &mut page) {
                break;
            }
            tries += 1;
            if tries == 3 {
                return Err(err(format!(
                    "reading the program: the filesystem server revoked page {p:#x} \
                     {tries} times before it could be copied (its page pool is too small?)"
                )));
            }
        }
        buf[p as usize..p as usize + n].copy_from_slice(&page[..n]);
        p += PAGE;
    }
    Ok(())
}

/// The program's plan, the pages read for it, and its first page (or
/// the whole file if shorter).
pub struct Planned {
    /// The load plan.
    pub plan: Plan,
    /// Pages of the file read to make it.
    pub header_pages: u64,
    /// The file's first page.
    pub first_page: Vec<u8>,
}

/// Reads what validation needs of the program (header, program headers,
/// interpreter name, dynamic section) and plans it.
pub fn read_and_plan(view: &DsView) -> Result<Planned, RunError> {
    let size = view.size();
    if size == 0 {
        return Err(err("empty file: not an ELF file"));
    }
    if size > elf::MAX_SEGMENT {
        return Err(err("file too large"));
    }
    let mut buf = vec![0u8; size as usize];
    read_range(view, &mut buf, 0, PAGE)?;
    let mut read_pages = PAGE.min(size).div_ceil(PAGE);
    if buf.len() >= 64 && &buf[..4] == b"\x7fELF" {
        let phoff = u64::from_le_bytes(buf[32..40].try_into().expect("8 bytes"));
        let phnum = u16::from_le_bytes(buf[56..58].try_into().expect("2 bytes")) as u64;
        let ph_len = phnum.saturating_mul(56);
        if phoff.saturating_add(ph_len) > PAGE {
            read_range(view, &mut buf, phoff, ph_len)?;
            read_pages += ph_len.div_ceil(PAGE);
        }
        // PT_INTERP and PT_DYNAMIC contents.
        for i in 0..phnum.min(elf::MAX_PHNUM as u64) {
            let p = (phoff + i * 56) as usize;
            if p + 56 > buf.len() {
                break;
            }
            let ty = u32::from_le_bytes(buf[p..p + 4].try_into().expect("4 bytes"));
            if ty == 2 || ty == 3 {
                let off = u64::from_le_bytes(buf[p + 8..p + 16].try_into().expect("8 bytes"));
                let len = u64::from_le_bytes(buf[p + 32..p + 40].try_into().expect("8 bytes"))
                    .min(1 << 20);
                if off < size {
                    read_range(view, &mut buf, off, len)?;
                    read_pages += len.div_ceil(PAGE);
                }
            }
        }
    }
    let plan = elf::plan(&buf, PIE_BASE).map_err(|e| err(e.to_string()))?;
    buf.truncate(PAGE.min(size) as usize);
    Ok(Planned {
        plan,
        header_pages: read_pages,
        first_page: buf,
    })
}

/// Pages the external pager maps at once into the stub's allocator arena:
/// a bump allocator's next pages are the next it touches.
const ARENA_AROUND: u64 = 64;

/// Serves the faults of the stub's own arena `[.., end)` (the external
/// pager for the internal pager): the faulting page and up to
/// [`ARENA_AROUND`] - 1 after it (those not yet mapped) get the zero page
/// (`UFFDIO_ZEROPAGE`), whose first write is the task's own copy-on-write
/// fault in its kernel: a page comes into being where the stub writes it,
/// not 64 at a time in our ioctl (a copy of 64 zero pages took ~0.1 ms,
/// mostly allocating pages the stub mostly never touched); `count`
/// counts the faults.
fn serve_arena(uffd: Uffd, end: u64, count: Arc<AtomicU64>) {
    while let Ok(Some(ev)) = uffd.read_event() {
        if let Event::Fault(f) = ev {
            let page = f.addr & !(PAGE - 1);
            let n = (end.saturating_sub(page) / PAGE).clamp(1, ARENA_AROUND);
            let (mapped, _) = uffd.zeropage_nowake(page, n * PAGE);
            // Mapped meanwhile (or not at all): wake the thread either way.
            uffd.wake(page, mapped.max(PAGE));
            if mapped > 0 {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Serves the child whose uffd came with a FORK message — if the message
/// can be one: the control channel ends in the task's process, where the
/// program could write to it too. A FORK is only expected from the
/// internal pager of a task with fork events (`forks`), with no payload
/// and exactly one descriptor, which must be a userfaultfd; anything else
/// is dropped with a warning. (A genuine-looking uffd that the program
/// made itself is served until its address space ends, like a child's:
/// it cannot hold the loader longer than the program's own process.)
fn adopt(children: &Arc<Children>, forks: bool, payload: &[u8], mut fds: Vec<OwnedFd>) {
    let ok = forks && payload.is_empty() && fds.len() == 1 && Uffd::is_uffd(&fds[0]);
    if !ok {
        eprintln!("loader: ignored a FORK control message that no fork sent");
        return;
    }
    if let Some(fd) = fds.pop() {
        children.add(Uffd::from_fd(fd, ph::wanted_features(true)));
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit status as a shell reports it (code, or 128 + signal).
    pub status: i32,
    /// The report of an invalid access, if the task died of one.
    pub report: Option<String>,
}

/// The task stub's confinement arguments for `opts`: the served directory
/// (if it is a host directory) readable, plus what the options allow;
/// nothing (after saying so) where the kernel has no Landlock.
fn confinement(opts: &RunOpts, store: &Store) -> Vec<String> {
    let Some(c) = &opts.confine else {
        return Vec::new();
    };
    if let Err(e) = super::confine::probe() {
        eprintln!("loader: --confine: {e}: the program runs UNCONFINED");
        return Vec::new();
    }
    let mut c = c.clone();
    if let Store::Dir(root) = store {
        c.read.insert(0, root.clone());
    }
    c.to_args()
}

/// Runs a program; returns its status. Errors before it runs are
/// [`RunError`]s.
pub fn run(arena: &'static super::arena::Arena, opts: &RunOpts) -> Result<Outcome, RunError> {
    let t0 = Instant::now();
    trace_from_now();
    pin_start_to_this_cpu();
    let p = prepare(arena, opts, Vec::new())?;
    finish(p, opts, None, t0)
}

/// The standard descriptors, working directory and request of a client
/// of `loader serve` whose program a ready task runs ([`super::ready`]).
pub struct Client {
    /// The connection (STARTED goes there once the program runs).
    pub conn: Channel,
    /// The program's stdin, stdout, stderr and working directory (the
    /// client's).
    pub fds: Vec<OwnedFd>,
    /// What the client asked for.
    pub req: super::ctl::RunRequest,
}

/// A task made ready for a program: forked, its hello taken, the file
/// server reached (the first steps of [`run`], done ahead of the request
/// by a ready task of `loader serve`).
pub struct Prepared {
    ch: Channel,
    task: l4re::host::ChildTask,
    fs: FsTask,
    store: Store,
    pid: i32,
    features: u64,
    counters: &'static Counters,
    page_log: &'static ph::PageLog,
    self_faults: Arc<AtomicU64>,
    /// The program's uffd (external mode).
    fds: Vec<OwnedFd>,
    /// What [`prepare`] kept from the task.
    kept: Vec<OwnedFd>,
}

impl Prepared {
    /// The task's process id.
    pub fn task_pid(&self) -> u32 {
        self.task.pid()
    }

    /// The descriptors kept from the task ([`prepare`]'s `keep`).
    pub fn kept(&self) -> &[OwnedFd] {
        &self.kept
    }
}

/// Forks the task for a run of `opts`, reaches the file server, takes
/// the task's hello and serves its allocator arena. `keep`: descriptors
/// of this process that the task (and the program) must not inherit:
/// closed in the task, kept here until the run is over. Must be called
/// while this process is single-threaded and has not used the platform.
pub fn prepare(
    arena: &'static super::arena::Arena,
    opts: &RunOpts,
    keep: Vec<OwnedFd>,
) -> Result<Prepared, RunError> {
    ph::uffd::available(ph::wanted_features(false)).map_err(err)?;
    // The task first: a copy of this process, still single-threaded,
    // which readies its pagers while we reach the file server and read
    // the program (on the other CPU, if there is one).
    let (ch, task_end) = Channel::pair().map_err(|e| err(format!("control channel: {e}")))?;
    let forked = l4re::host::fork_task(l4re::host::SpawnOptions {
        die_with_parent: true,
        stdout_to_stderr: false,
    })
    .map_err(|e| err(format!("cannot start the task: {e}")))?;
    let task = match forked {
        l4re::host::Forked::Child => {
            drop(ch);
            drop(keep);
            super::stub::run_task(arena, task_end, opts.mode)
        }
        l4re::host::Forked::Parent(task) => task,
    };
    drop(task_end);
    // SIGTERM (timeout(1), service managers) goes to the program, as it
    // would natively; the run then ends with its status.
    forward_sigterm(task.pid() as i32);
    trace("loader", "task-forked");
    let (fs, store) = match &opts.server {
        Some(sock) => match FsTask::connect(sock) {
            Ok(f) => {
                let st = f.store.clone();
                (f, st)
            }
            Err(e) if opts.server_optional => {
                eprintln!("loader: warning: {e}: starting a file server of our own");
                let st = Store::of(opts);
                (
                    FsTask::start_store(&st, one_shot_pool(opts, &st))?,
                    Some(st),
                )
            }
            Err(e) => return Err(e),
        },
        None => {
            let st = Store::of(opts);
            (
                FsTask::start_store(&st, one_shot_pool(opts, &st))?,
                Some(st),
            )
        }
    };
    // A server that serves something we cannot name: no host file for
    // /proc/self/exe, no profile.
    let store = store.unwrap_or(Store::Ext2(PathBuf::new()));
    trace("loader", "fs-reached");
    // The task's hello (its pagers wait for the arena's external pager
    // before they can allocate), then the capability of its region map.
    let (k, hello, mut fds) = ch
        .recv()
        .map_err(|e| err(format!("the task did not start: {e}")))?;
    if k == kind::ERROR {
        return Err(err(String::from_utf8_lossy(&hello).into_owned()));
    }
    if k != kind::HELLO || fds.len() < 2 {
        return Err(err("the task sent a bad hello"));
    }
    let mut d = Dec(&hello);
    let pid = d.u64().map_err(|e| err(e.to_string()))? as i32;
    // The arena's range, then the features of the program's uffd.
    let (arena_start, arena_len, features) = d
        .u64()
        .and_then(|a| Ok((a, d.u64()?, d.u64()?)))
        .map_err(|e| err(e.to_string()))?;
    let counters_fd: OwnedFd = fds.remove(0);
    // The stub's statistics page and page log, mapped for our life.
    let ph::SharedStats {
        counters,
        log: page_log,
    } = ph::SharedStats::open(counters_fd.as_fd())
        .map_err(|_| err("cannot map the task's statistics page"))?;
    let self_faults = Arc::new(AtomicU64::new(0));
    {
        let arena = Uffd::from_fd(fds.remove(0), 0);
        let c = self_faults.clone();
        std::thread::Builder::new()
            .name("ext-pager-arena".into())
            .spawn(move || serve_arena(arena, arena_start.saturating_add(arena_len), c))
            .map_err(|e| err(format!("thread: {e}")))?;
    }
    trace("loader", "hello");
    Ok(Prepared {
        ch,
        task,
        fs,
        store,
        pid,
        features,
        counters,
        page_log,
        self_faults,
        fds,
        kept: keep,
    })
}

/// The rest of a run after [`prepare`]: opens and plans the program,
/// sends START, waits for the program and what it forked, reports,
/// writes the statistics. With `client`, the program gets the client's
/// descriptors, directory, umask, arguments and environment, and the
/// client gets STARTED with the task's pidfd once it runs.
pub fn finish(
    p: Prepared,
    opts: &RunOpts,
    client: Option<&Client>,
    t0: Instant,
) -> Result<Outcome, RunError> {
    let Prepared {
        ch,
        task,
        fs,
        store,
        pid,
        features,
        counters,
        page_log,
        self_faults,
        mut fds,
        kept: _kept,
    } = p;
    // FORK messages come only from an internal pager with fork events.
    let forks = opts.mode == Mode::Internal && features & ph::uffd::features::EVENT_FORK != 0;
    // A relative name is relative to our directory when we serve all of /
    // (as execve would take it); under another root, relative to the root.
    let lookup = lookup_name(&store, &opts.program);
    let file = fs.open(&lookup)?;
    trace("loader", "opened");
    let view = DsView::new(file.cap()).map_err(|e| err(format!("{}: {e}", opts.program)))?;
    let Planned {
        plan,
        header_pages,
        first_page,
    } = read_and_plan(&view).map_err(|e| err(format!("{}: {e}", opts.program)))?;
    trace("loader", "planned");
    // While the task gets ready: our copy of its region map and the
    // learned-prefetch profile.
    let loader_map = crate::layout::region_map(&plan, file.idx(), STACK_TOP, STACK_SIZE)
        .map_err(|e| err(format!("{}: {e}", opts.program)))?;
    // Learned prefetch: record, or replay what an earlier run recorded.
    let exe = match &store {
        Store::Dir(root) => open_beneath(root, &lookup),
        // Not a host file: a copy of it (read through the server).
        Store::Ext2(_) => exe_copy(&view, &opts.program),
    };
    let prof = if opts.profile {
        learned_profile(
            client.map(|c| c.req.envp.as_slice()),
            &store,
            exe.as_ref(),
            &first_page,
            &opts.program,
            &loader_map,
        )
    } else {
        Prof::Off
    };
    trace("loader", "profile read");

    let loader_map = Arc::new(SpinLock::new(loader_map));
    // Forked descendants: served here for as long as they live (the
    // internal pager hands them over; the external pager's fork events
    // come here directly).
    let children = Children::new(Pager::for_children(
        loader_map.clone(),
        counters,
        opts.mode,
        Box::new(|r, f| {
            eprintln!("loader: {r}");
            // Signals the forked descendant (thread `f.tid`) whose access
            // was invalid; kill() of a thread id reaches its process.
            let _ = l4re::host::signal::kill(f.tid as i32, libc::SIGSEGV);
        }),
    ));
    children.pager().set_fault_around(opts.fault_around);
    // Replaying starts with the server reading what the profile names
    // into its cache: ask it now, while the regions are attached and the
    // task gets ready, through our copy of the region map (the task's
    // replay finds the pages cached).
    if let Prof::Replay(_, p) = &prof {
        let (pager, runs) = (children.pager().clone(), p.runs());
        std::thread::Builder::new()
            .name("warm-server".into())
            .spawn(move || pager.warm_server(&runs))
            .map_err(|e| err(format!("thread: {e}")))?;
    }
    let mut ext_pager = None;
    if opts.mode == Mode::External {
        let Some(ufd) = fds.pop() else {
            return Err(err("the task sent no userfaultfd"));
        };
        let uffd = Arc::new(Uffd::from_fd(ufd, features));
        let pager = Arc::new(Pager::new(
            loader_map.clone(),
            counters,
            Mode::External,
            Box::new(move |r, _| {
                eprintln!("loader: {r}");
                // Signals the task (our child) whose access was invalid.
                let _ = l4re::host::signal::kill(pid, libc::SIGSEGV);
            }),
        ));
        pager.set_fault_around(opts.fault_around);
        pager.set_on_fork(Children::handler(&children));
        if let Prof::Record(..) = prof {
            pager.set_log(page_log);
        }
        ext_pager = Some((pager.clone(), uffd.clone()));
        std::thread::Builder::new()
            .name("ext-pager".into())
            .spawn(move || pager.serve(uffd))
            .map_err(|e| err(format!("thread: {e}")))?;
    }

    trace("loader", "pagers set up");
    // The regions, attached by the task itself when it gets START (with
    // the file's capability, sent after it): one message instead of a
    // region-map call per region.
    let regions: Vec<_> = loader_map.lock().iter().cloned().collect();
    let mut file_limits = Vec::new();
    let attach = regions
        .iter()
        .map(|r| {
            let (file, offset) = match r.backing {
                Backing::File {
                    offset, file_len, ..
                } => {
                    if file_len < r.size {
                        file_limits.push((r.start, file_len));
                    }
                    (true, offset)
                }
                _ => (false, 0),
            };
            Attach {
                start: r.start,
                size: r.size,
                flags: crate::layout::attach_flags(r).bits(),
                offset,
                file,
                name: r.name.clone().into_bytes(),
            }
        })
        .collect();

    // Start.
    let code = regions
        .iter()
        .filter(|r| r.rights.contains(Rights::X))
        .fold((u64::MAX, 0), |(a, b), r| (a.min(r.start), b.max(r.end())));
    let data = regions
        .iter()
        .filter(|r| r.rights.contains(Rights::W) && r.name != "stack")
        .fold((u64::MAX, 0), |(a, b), r| (a.min(r.start), b.max(r.end())));
    let data = if data.0 == u64::MAX {
        (plan.brk, plan.brk)
    } else {
        data
    };
    let (argv, envp) = match client {
        Some(c) => {
            let mut argv = vec![c.req.program.clone()];
            argv.extend(c.req.args.iter().cloned());
            (argv, c.req.envp.clone())
        }
        None => {
            let mut argv = vec![opts.program.clone().into_bytes()];
            argv.extend(opts.args.iter().map(|a| a.clone().into_bytes()));
            let envp = std::env::vars_os()
                .filter(|(k, _)| k != l4re::host::BOOTSTRAP_ENV)
                .map(|(k, v)| {
                    use std::os::unix::ffi::OsStrExt;
                    let mut e = k.as_bytes().to_vec();
                    e.push(b'=');
                    e.extend_from_slice(v.as_bytes());
                    e
                })
                .collect();
            (argv, envp)
        }
    };
    let start = Start {
        regions: attach,
        entry: plan.entry,
        phdr: (plan.phdr, plan.phnum, plan.phent),
        stack: (STACK_TOP, STACK_SIZE),
        brk: plan.brk,
        code: (code.0.min(code.1), code.1),
        data: (data.0.min(data.1), data.1),
        prefetch: opts.prefetch,
        fault_around: opts.fault_around,
        premap_pages: opts.premap_pages,
        file_limits,
        record: matches!(prof, Prof::Record(..)) && opts.mode == Mode::Internal,
        profile: match &prof {
            Prof::Replay(_, p) if opts.mode == Mode::Internal => p.entries.clone(),
            _ => Vec::new(),
        },
        await_go: matches!(prof, Prof::Replay(..)) && opts.mode == Mode::External,
        profile_head: match client {
            Some(c) if c.req.profile_head != u64::MAX => c.req.profile_head,
            Some(_) => PROFILE_HEAD,
            None => std::env::var("L4_PROFILE_HEAD")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(PROFILE_HEAD),
        },
        execfn: match client {
            Some(c) => c.req.program.clone(),
            None => opts.program.clone().into_bytes(),
        },
        argv,
        envp,
        confine: confinement(opts, &store)
            .into_iter()
            .map(String::into_bytes)
            .collect(),
        stdio: client.is_some(),
        umask: client.map_or(u64::MAX, |c| c.req.umask),
        trace: client.map_or(0, |c| c.req.trace),
        inherit: match client {
            Some(c) => c.req.inherit.clone(),
            // The task inherited the rest from us, as we did from our
            // caller; its CPUs and signal state are what we started with.
            None => super::ctl::Inheritance {
                cpus: START_AFFINITY
                    .get()
                    .map(super::ctl::cpu_mask)
                    .unwrap_or_default(),
                signals: l4re::host::signal::inherited().unwrap_or_default(),
                ..Default::default()
            },
        },
    };
    // A client's stdin, stdout, stderr and directory first; then the
    // program's file itself, for /proc/self/exe in the task (if we can
    // open it; resolved beneath the root as the server does).
    let mut exe_fds: Vec<_> = client
        .map(|c| c.fds.iter().map(|f| f.as_fd()).collect())
        .unwrap_or_default();
    exe_fds.extend(exe.iter().map(|f| f.as_fd()));
    let gone = |e: String| err(format!("the task is gone: {e}"));
    ch.send(kind::START, &start.encode(), &exe_fds)
        .map_err(|e| gone(e.to_string()))?;
    l4re::host::send_caps(ch.as_fd(), "file", &[("file", file.idx(), CapRights::R)])
        .map_err(|e| gone(e.to_string()))?;
    trace("loader", "START sent");
    // A premapped program: the server reads its pages now, while the task
    // attaches the regions (its own `allocate` calls then find them
    // cached).
    if let Some(runs) = children
        .pager()
        .premap_runs(opts.premap_pages, STACK_TOP - 1)
    {
        let warm: Vec<(u64, u64, bool)> = runs.iter().map(|&(a, n)| (a, n, false)).collect();
        children.pager().warm_server(&warm);
        trace("loader", "server warmed");
    }
    // The external pager replays the profile from here once the task has
    // attached the regions: the program starts once the first pages are
    // mapped, as in the task.
    if let (Prof::Replay(_, p), Some((pager, uffd))) = (&prof, ext_pager) {
        match ch.recv() {
            Ok((kind::ATTACHED, _, _)) => {}
            Ok((kind::ERROR, m, _)) => return Err(err(String::from_utf8_lossy(&m).into_owned())),
            Ok(_) => return Err(err("the task sent a bad answer")),
            Err(e) => return Err(gone(e.to_string())),
        }
        let entries = p.entries.clone();
        let head = start.profile_head;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || {
                pager.replay(&uffd, &entries, head, &mut || {
                    let _ = tx.send(());
                })
            })
            .map_err(|e| err(format!("thread: {e}")))?;
        let _ = rx.recv_timeout(Duration::from_millis(100));
        ch.send(kind::GO, &[], &[])
            .map_err(|e| gone(e.to_string()))?;
    }
    drop(exe);
    // The program may fork before the stub reports STARTED.
    loop {
        match ch.recv() {
            Ok((kind::STARTED, _, _)) => {
                if let Some(c) = client {
                    let mut e = super::ctl::Enc::default();
                    e.u64(u64::from(task.pid()));
                    // A client gone meanwhile: its program still runs to
                    // its end (as a native one whose parent died).
                    let _ = c
                        .conn
                        .send(super::ctl::serve_kind::STARTED, &e.0, &[task.pidfd()]);
                }
                break;
            }
            Ok((kind::FORK, p, fds)) => adopt(&children, forks, &p, fds),
            Ok((kind::ERROR, m, _)) => {
                return Err(err(String::from_utf8_lossy(&m).into_owned()));
            }
            Ok(_) => return Err(err("the task sent a bad answer")),
            Err(e) => return Err(err(format!("the task died while starting: {e}"))),
        }
    }
    // Children handed over while the task runs; the channel ends with the
    // task (messages sent before are still read).
    let control = {
        let children = children.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                while let Ok((k, p, fds)) = ch.recv() {
                    if k == kind::FORK {
                        adopt(&children, forks, &p, fds);
                    }
                }
            })
            .map_err(|e| err(format!("thread: {e}")))?
    };

    trace("loader", "started");
    // This thread only waits from now on: back on all its CPUs, so that
    // reaping the task does not compete with the task's last threads on
    // the program's CPU (the kernel's reaping spins until they are done
    // with their /proc entries).
    if let Some(all) = START_AFFINITY.get() {
        let _ = rustix::thread::sched_setaffinity(None, all);
    }
    let st = task
        .wait(None)
        .map_err(|e| err(format!("waiting for the task: {e}")))?
        .ok_or_else(|| err("the task did not end"))?;
    forward_sigterm(0);
    trace("loader", "task ended");
    // Back beside the file server's thread for the end of the run (the
    // sync, a round trip: 0.32 ms across CPUs, 0.02 ms on its CPU).
    if let Some(one) = START_CPU.get() {
        let _ = rustix::thread::sched_setaffinity(None, one);
    }
    use std::os::unix::process::ExitStatusExt;
    let (mut status, signal) = match (st.code(), st.signal()) {
        (Some(c), _) => (c, None),
        (None, Some(s)) => (128 + s, Some(s)),
        _ => (1, None),
    };
    let mut report = None;
    if let Some(sig) = signal
        && (sig == libc::SIGSEGV || sig == libc::SIGBUS)
    {
        let r = crash_report(&loader_map.lock(), counters, sig, fs.ended().is_some());
        eprintln!("loader: {}: {r}", opts.program);
        report = Some(r);
    }
    // Then the descendants it left behind that we still page: every uffd
    // handed over before the task ended is in by the end of the channel.
    let _ = control.join();
    children.wait();
    // A server that died under the program: its last writes may be lost,
    // whatever the program's status says.
    if let Some(fst) = fs.ended() {
        eprintln!(
            "loader: {}: the filesystem server (pid {}) died during the run ({}): \
             pages it had not loaded could not be given to the program, and \
             writes to shared files it had not written back are lost",
            opts.program,
            fs.pid(),
            fst
        );
        if status == 0 {
            status = 1;
        }
    }
    let wall = t0.elapsed();
    let g = Counters::get;
    match &prof {
        Prof::Record(path, id) if status < 128 => {
            let faults = g(&counters.faults) - g(&counters.child_faults);
            let p = profile::from_log(*id, faults, &page_log.snapshot(), &loader_map.lock());
            if !p.entries.is_empty()
                && let Err(e) = p.save(path)
            {
                eprintln!(
                    "loader: cannot write the prefetch profile {}: {e}",
                    path.display()
                );
            }
        }
        Prof::Replay(path, _) if g(&counters.profile_diverged) != 0 => {
            // Off the recorded path: the next run records again.
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    }
    trace("loader", "descendants done, profile kept");
    fs.sync();
    trace("loader", "synced");
    if let Some(dest) = &opts.stats {
        let json = stats_json(
            opts,
            &plan,
            &regions,
            counters,
            &self_faults,
            header_pages,
            status,
            wall,
            &prof,
        );
        let res = if dest == "-" {
            writeln!(std::io::stdout(), "{json}")
        } else {
            std::fs::write(dest, format!("{json}\n"))
        };
        if let Err(e) = res {
            eprintln!("loader: cannot write statistics to {dest}: {e}");
        }
    }
    Ok(Outcome { status, report })
}

/// The name the program is looked up by in `store`: a relative name is
/// relative to our directory when we serve all of / (as execve would take
/// it); under another root, relative to the root.
fn lookup_name(store: &Store, program: &str) -> String {
    if !program.starts_with('/') && *store == Store::Dir("/".into()) {
        std::env::current_dir()
            .map(|d| d.join(program).to_string_lossy().into_owned())
            .unwrap_or_else(|_| program.to_string())
    } else {
        program.to_string()
    }
}

/// Fewest frames of a one-shot run's file server's page pool.
const ONE_SHOT_MIN_POOL: usize = 1024;

/// The page pool of the file server of a one-shot run on `store`: what
/// `--fs-pool-pages` says, else, for a host directory, twice the program
/// file's pages plus [`ONE_SHOT_MIN_POOL`] (at most l4fs's default): that
/// server serves the program file alone, and a pool much larger than it
/// only costs its set-up (l4fs's default of 16384 frames: ~200 page
/// faults of its frame table, ~0.5 ms, in every run). `None`: l4fs's
/// default.
fn one_shot_pool(opts: &RunOpts, store: &Store) -> Option<usize> {
    if opts.fs_pool_pages.is_some() {
        return opts.fs_pool_pages;
    }
    let Store::Dir(root) = store else {
        return None;
    };
    let default = l4fs::FsConfig::host_dir(root).pool_pages;
    let name = lookup_name(store, &opts.program);
    let size = open_beneath(root, &name)
        .and_then(|fd| rustix::fs::fstat(&fd).ok())
        .map(|st| st.st_size as u64)?;
    let pages = usize::try_from(size.div_ceil(PAGE)).ok()?;
    // Twice the file: the server keeps free frames above a watermark
    // (evicting), and reads ahead.
    let want = pages.saturating_mul(2).saturating_add(ONE_SHOT_MIN_POOL);
    Some(want.min(default.max(ONE_SHOT_MIN_POOL)))
}

/// Opens `path` read-only beneath `root` (`openat2(RESOLVE_BENEATH)`, as
/// the file server resolves names); `None` if that fails.
fn open_beneath(root: &Path, path: &str) -> Option<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = std::fs::File::open(root).ok()?;
    let rel = std::ffi::CString::new(path.trim_start_matches('/')).ok()?;
    rustix::fs::openat2(
        &dir,
        rel.as_c_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()
}

/// The task to which SIGTERM is forwarded (0: none; then SIGTERM ends
/// the loader as usual).
static SIGTERM_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Forwards SIGTERM to `pid` from now on (0: stop forwarding: SIGTERM
/// ends us, and our tasks with us, `PR_SET_PDEATHSIG`).
fn forward_sigterm(pid: i32) {
    SIGTERM_TO.store(pid, Ordering::Relaxed);
    if pid > 0 {
        l4re::host::signal::forward(libc::SIGTERM, &SIGTERM_TO);
    }
}

/// The report of the invalid access that killed the task.
///
/// The records it reads are in the statistics page, which lives in the
/// task's process: the program can write them too. So each is checked
/// against what the loader knows for itself before it is believed: the
/// signal that killed the task, whether the server really died, and the
/// loader's own copy of the region map (an access the map allows cannot
/// have been found invalid by the pager). A record that fails is named as
/// such, not reported as fact.
fn crash_report(map: &RegionMap, c: &Counters, sig: i32, server_dead: bool) -> String {
    let name = if sig == libc::SIGBUS {
        "SIGBUS"
    } else {
        "SIGSEGV"
    };
    let allowed = |addr: u64, access: Access| {
        matches!(map.lookup(addr), Some(r) if r.rights.contains(access.right())
            && r.backing != Backing::Reserved)
    };
    let untrusted = |what: &str| {
        format!(
            "killed by {name}; the task's {what} does not match what the loader knows: not trusted"
        )
    };
    let lost = Counters::get(&c.server_lost_addr);
    if lost != 0 {
        if !server_dead || sig != libc::SIGBUS {
            return untrusted("record of a lost file server");
        }
        return format!(
            "killed by {name}: the filesystem server is gone: the page at {:#x} could not be loaded",
            lost - 1
        );
    }
    let perr = Counters::get(&c.pager_error_addr);
    if perr != 0 {
        let access = match Counters::get(&c.pager_error_access) {
            1 => Access::Write,
            2 => Access::Exec,
            _ => Access::Read,
        };
        if sig != libc::SIGSEGV || allowed(perr - 1, access) {
            return untrusted("pager's record of an invalid access");
        }
        let r = fault::report(map, perr - 1, access, 0, FaultCause::Forbidden);
        return format!("killed by {name} (found by the pager): {r}");
    }
    let signo = Counters::get(&c.crash_signo);
    if signo == 0 {
        return format!("killed by {name} (no fault record)");
    }
    if signo != sig as u64 {
        return untrusted("fault record");
    }
    let addr = Counters::get(&c.crash_addr);
    let pc = Counters::get(&c.crash_pc);
    let e = Counters::get(&c.crash_err);
    let access = if e & 16 != 0 {
        Access::Exec
    } else if e & 2 != 0 {
        Access::Write
    } else {
        Access::Read
    };
    let code = Counters::get(&c.crash_code) as i64;
    if code <= 0 {
        return format!("killed by {name} sent by another process");
    }
    let cause = match map.lookup(addr) {
        None => FaultCause::NoRegion,
        Some(r) if !r.rights.contains(access.right()) => FaultCause::Forbidden,
        Some(r) if r.backing == Backing::Reserved => FaultCause::Reserved,
        // An access the region allows: SIGBUS past the end of a file is
        // genuine; a SIGSEGV there means the program changed its memory
        // itself (mprotect, munmap) — or wrote the record.
        Some(_) if sig == libc::SIGBUS => FaultCause::Forbidden,
        Some(r) => {
            return format!(
                "killed by {name} at {addr:#x} (pc {pc:#x}): a {} access that region {} allows; \
                 the program changed that memory itself, or forged the fault record",
                match access {
                    Access::Read => "read",
                    Access::Write => "write",
                    Access::Exec => "execute",
                },
                r.name
            );
        }
    };
    let r = fault::report(map, addr, access, pc, cause);
    format!("killed by {name}: {r}")
}

#[allow(clippy::too_many_arguments)]
fn stats_json(
    opts: &RunOpts,
    plan: &Plan,
    regions: &[l4pager::Region],
    c: &Counters,
    self_faults: &AtomicU64,
    header_pages: u64,
    status: i32,
    wall: Duration,
    prof: &Prof,
) -> String {
    let g = Counters::get;
    let (state, recorded) = match prof {
        Prof::Off => ("off", 0),
        Prof::Record(..) => ("recorded", 0),
        Prof::Replay(_, p) => ("replayed", p.faults),
    };
    let faults_now = g(&c.faults) - g(&c.child_faults);
    let profile_json = format!(
        concat!(
            "{{\"state\":\"{}\",\"pages\":{},\"prefetched\":{},\"used\":{},",
            "\"recorded_faults\":{},\"faults_avoided\":{},\"diverged_at\":{}}}"
        ),
        state,
        g(&c.profile_pages),
        g(&c.profile_prefetched),
        g(&c.profile_used),
        recorded,
        if recorded > 0 {
            recorded.saturating_sub(faults_now)
        } else {
            0
        },
        match g(&c.profile_diverged) {
            0 => "null".to_string(),
            a => (a - 1).to_string(),
        }
    );
    let mut by_region = String::new();
    for (i, r) in regions.iter().enumerate().take(MAX_REGIONS) {
        if i > 0 {
            by_region.push(',');
        }
        by_region.push_str(&format!(
            "{{\"name\":\"{}\",\"start\":{},\"size\":{},\"rights\":\"{}\",\"faults\":{}}}",
            r.name,
            r.start,
            r.size,
            r.rights_str(),
            g(&c.region_faults[i])
        ));
    }
    format!(
        concat!(
            "{{\"program\":\"{}\",\"pager\":\"{}\",\"status\":{},\"wall_ms\":{:.3},",
            "\"faults\":{{\"total\":{},\"minor\":{},\"missing\":{},",
            "\"by_kind\":{{\"shared_file\":{},\"private_copy\":{},\"zero_fill\":{},\"invalid\":{},\"duplicate_or_retry\":{}}},",
            "\"by_region\":[{}]}},",
            "\"pages_mapped\":{},\"prefetched\":{},\"file_pages_touched\":{},\"file_pages_loadable\":{},",
            "\"loader_header_pages\":{},\"bytes_from_server\":{},\"server_maps\":{},\"zero_filled_pages\":{},",
            "\"cow_copies\":{},\"forks\":{},\"child_faults\":{},\"child_file_pages_touched\":{},\"pager_self_faults\":{},\"pie\":{},\"entry\":{},",
            "\"prefetch_profile\":{}}}"
        ),
        opts.program.replace('\\', "\\\\").replace('"', "\\\""),
        match opts.mode {
            Mode::Internal => "internal",
            Mode::External => "external",
        },
        status,
        wall.as_secs_f64() * 1000.0,
        g(&c.faults),
        g(&c.minor),
        g(&c.missing),
        g(&c.shared_maps),
        g(&c.private_copies),
        g(&c.zero_pages),
        g(&c.errors),
        g(&c.retries),
        by_region,
        g(&c.pages_mapped),
        g(&c.prefetched),
        g(&c.file_pages_touched),
        plan.loadable_pages,
        header_pages,
        g(&c.bytes_from_server),
        g(&c.server_maps),
        g(&c.zero_pages),
        g(&c.private_copies),
        g(&c.forks),
        g(&c.child_faults),
        g(&c.child_file_pages_touched),
        self_faults.load(Ordering::Relaxed),
        plan.pie,
        plan.entry,
        profile_json,
    )
}

/// The default of [`RunOpts::premap_pages`]: programs whose file pages
/// are at most this many (4 MiB) have all of them mapped before they
/// start (bash-static, 2.3 MiB: its first run as fast as a replay of its
/// learned profile, 35 % faster than demand paging).
pub const PREMAP_PAGES: u64 = 1024;

/// Learned prefetch: pages of the profile mapped before the program
/// starts (all: a program that streams through its pages, the worst case,
/// overtakes a prefetcher that runs beside it; `L4_PROFILE_HEAD=N` lets
/// the rest be mapped while it runs).
pub const PROFILE_HEAD: u64 = u64::MAX;

/// The start of the run (`CLOCK_MONOTONIC`, ns) for [`trace`] (the forked
/// task inherits it); 0: not yet known.
static TRACE_BASE: AtomicU64 = AtomicU64::new(0);
/// Whether [`trace`] prints: 0 not yet known (`L4_TRACE` decides), 1
/// yes, 2 no.
static TRACE_ON: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// `CLOCK_MONOTONIC` in ns.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// Starts [`trace`]'s clock now, unless it runs already.
fn trace_from_now() {
    let _ = TRACE_BASE.compare_exchange(0, monotonic_ns(), Ordering::Relaxed, Ordering::Relaxed);
}

/// Sets [`trace`] for the rest of the process: times since `base`
/// (`CLOCK_MONOTONIC` ns, e.g. a client's start); 0: no trace.
pub fn set_trace(base: u64) {
    TRACE_ON.store(if base == 0 { 2 } else { 1 }, Ordering::Relaxed);
    TRACE_BASE.store(base, Ordering::Relaxed);
}

/// With `L4_TRACE` set: the time since the run started at a step of the
/// run (`who`: the loader or its task), on standard error (where the
/// start-up time goes).
pub fn trace(who: &str, what: &str) {
    let on = match TRACE_ON.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os("L4_TRACE").is_some();
            TRACE_ON.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
        v => v == 1,
    };
    if on {
        trace_from_now();
        let ns = monotonic_ns().saturating_sub(TRACE_BASE.load(Ordering::Relaxed));
        eprintln!("{who}: {:8.3} ms {what}", ns as f64 / 1e6);
    }
}

/// What learned prefetch does in this run.
pub enum Prof {
    /// Nothing (`--no-prefetch-profile`, or no cache directory).
    Off,
    /// Record a profile at this path.
    Record(PathBuf, profile::Identity),
    /// Replay this profile (read from this path).
    Replay(PathBuf, profile::Profile),
}

/// The learned-prefetch step of a run: the program's identity, and its
/// profile if there is a good one (a bad one is named and ignored, and
/// replaced by this run's recording).
fn learned_profile(
    envp: Option<&[Vec<u8>]>,
    store: &Store,
    exe: Option<&OwnedFd>,
    first: &[u8],
    program: &str,
    map: &RegionMap,
) -> Prof {
    // A client's profiles are in its cache directory.
    let dir = match envp {
        Some(envp) => profile::dir_with(|k| {
            use std::os::unix::ffi::OsStrExt;
            envp.iter().find_map(|e| {
                let v = e.strip_prefix(k.as_bytes())?.strip_prefix(b"=")?;
                Some(std::ffi::OsStr::from_bytes(v).to_os_string())
            })
        }),
        None => profile::dir(),
    };
    let Some(dir) = dir else {
        return Prof::Off;
    };
    let meta = match store {
        Store::Dir(_) => exe.and_then(|fd| {
            let f = std::fs::File::from(fd.try_clone().ok()?);
            f.metadata().ok()
        }),
        Store::Ext2(img) => std::fs::metadata(img).ok(),
    };
    let Some(meta) = meta else { return Prof::Off };
    let in_image = match store {
        Store::Ext2(_) => Some(program),
        Store::Dir(_) => None,
    };
    let id = profile::Identity::new(&meta, first, in_image);
    let path = id.path_in(&dir, program);
    match std::fs::read(&path) {
        Ok(b) => match profile::Profile::decode(&b, &id, map) {
            Ok(p) => Prof::Replay(path, p),
            Err(why) => {
                eprintln!(
                    "loader: warning: prefetch profile {}: {why}: ignored",
                    path.display()
                );
                Prof::Record(path, id)
            }
        },
        Err(_) => Prof::Record(path, id),
    }
}

/// A memfd holding a copy of the program read through `view`, for
/// `/proc/self/exe` when the program is no host file (an ext2 image's):
/// programs such as busybox run their applets by executing it.
fn exe_copy(view: &DsView, name: &str) -> Option<OwnedFd> {
    let mut buf = vec![0u8; view.size() as usize];
    read_range(view, &mut buf, 0, view.size()).ok()?;
    let base = Path::new(name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "program".into());
    let cname = std::ffi::CString::new(base).ok()?;
    let fd = rustix::fs::memfd_create(cname.as_c_str(), rustix::fs::MemfdFlags::CLOEXEC).ok()?;
    let f = std::fs::File::from(fd);
    use std::os::unix::fs::FileExt;
    f.write_all_at(&buf, 0).ok()?;
    Some(f.into())
}

/// The CPU [`pin_start_to_this_cpu`] pinned a one-shot run to (its file
/// server's thread stays there).
static START_CPU: std::sync::OnceLock<rustix::thread::CpuSet> = std::sync::OnceLock::new();

/// The CPUs a one-shot `loader run` might use before
/// [`pin_start_to_this_cpu`]: the program's, restored by the task's first
/// thread before it enters the program, and ours once it runs (a runner of
/// `loader serve`, moved to its client's CPU, keeps its own here).
pub static START_AFFINITY: std::sync::OnceLock<rustix::thread::CpuSet> = std::sync::OnceLock::new();

/// Pins this thread, and so every thread and task it makes from now on
/// (the file server's thread, the task with its pagers), to the CPU it
/// runs on, remembering the CPUs it might use in [`START_AFFINITY`].
///
/// A start is a chain of hand-offs between the loader, its file server
/// and the task, each waiting for the other: on two CPUs each hand-off
/// wakes the other, idle CPU (on a 2-vCPU VM a round trip over a socket
/// took 64-70 µs across CPUs, 2.8-3.3 µs on one; a static hello's
/// one-shot run 3.9-4.2 ms unpinned, 3.5-3.7 ms pinned). The program gets
/// the CPUs back; the file server's thread stays where the program
/// starts, so its faults that reach the server are hand-offs on its CPU
/// too (as `loader serve`'s runner moves itself, its task and the
/// server's l4fs thread to its client's CPU); our waiting thread leaves
/// while the program runs (see `finish`).
fn pin_start_to_this_cpu() {
    let Ok(all) = rustix::thread::sched_getaffinity(None) else {
        return;
    };
    let cpu = rustix::thread::sched_getcpu();
    if cpu >= rustix::thread::CpuSet::MAX_CPU || !all.is_set(cpu) {
        return;
    }
    let mut one = rustix::thread::CpuSet::new();
    one.set(cpu);
    if START_AFFINITY.set(all).is_ok() {
        let _ = rustix::thread::sched_setaffinity(None, &one);
        let _ = START_CPU.set(one);
    }
}
