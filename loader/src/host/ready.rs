//! Ready tasks of `loader serve`: a run through a running file server
//! without the loader's own start-up on the request's path.
//!
//! Processes (all on the host):
//!
//! * the **server** (`loader serve`): l4fs on a thread, the socket, and a
//!   [`Pool`] of ready runners;
//! * the **zygote**: forked from the server before it uses the platform
//!   or starts a thread, in a session of its own; on the server's
//!   [`SPAWN`](serve_kind::SPAWN) it forks a runner
//!   ([`l4re::host::fork_process`]) and sends the server its end of the
//!   runner's channel ([`RUNNER`](serve_kind::RUNNER));
//! * a **runner** (one per run): forks its task and readies it as a
//!   one-shot `loader run` would ([`super::run::prepare`]: the stub's
//!   pagers, its hello, the connection to the server's l4fs, the stub's
//!   copy of the executable for `/proc/self/exe`), then waits for a
//!   client; then it runs the client's program in that task
//!   ([`super::run::finish`]) with the client's descriptors, directory,
//!   umask, arguments and environment, sends the client the task's pidfd
//!   ([`STARTED`](serve_kind::STARTED)) and at the end its status
//!   ([`EXIT`](serve_kind::EXIT)), and exits.
//!
//! A client (`loader run` finding the server, or the small `l4run`)
//! connects and sends [`RUN`](serve_kind::RUN) with its stdin, stdout,
//! stderr and working directory; the server checks that the client is of
//! its own user (`SO_PEERCRED`), hands the connection to a ready runner
//! ([`CLIENT`](serve_kind::CLIENT)) and asks the zygote for a
//! replacement: the next run finds a task ready again.
//!
//! Each process dies with its parent (`PR_SET_PDEATHSIG`): when the server
//! dies, so do the zygote, the runners and their tasks, and a waiting
//! client sees its connection end.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use l4re::host::signal::SigSet;

use super::ctl::{Channel, Dec, Enc, RunRequest, serve_kind};
use super::run::{Client, RunOpts, finish, prepare, set_trace, trace};

/// Ready runners that `loader serve` keeps by default (`--ready N`).
pub const DEFAULT_READY: usize = 2;

/// How long a client's request waits for a runner before it fails.
const RUNNER_WAIT: Duration = Duration::from_secs(10);

/// The signals a client forwards to its program.
pub const FORWARDED: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Forks the zygote of `loader serve` (whose runners reach the server at
/// `socket`): must be called before the server uses the platform or
/// starts a thread. Returns the server's end of its channel.
pub fn start_zygote(
    arena: &'static super::arena::Arena,
    socket: &Path,
    opts: &RunOpts,
) -> Result<Channel, String> {
    let (server_end, zygote_end) = Channel::pair().map_err(|e| format!("zygote channel: {e}"))?;
    let forked = l4re::host::fork_process(l4re::host::SpawnOptions {
        die_with_parent: true,
        stdout_to_stderr: false,
    })
    .map_err(|e| format!("cannot fork the zygote: {e}"))?;
    match forked {
        l4re::host::ForkedProcess::Child => {
            drop(server_end);
            zygote(arena, zygote_end, socket.to_path_buf(), opts.clone())
        }
        l4re::host::ForkedProcess::Parent { .. } => Ok(server_end),
    }
}

/// Moves every thread of process `pid` to the CPUs of `set` (those that
/// end meanwhile are passed over).
fn move_threads(pid: u32, set: &rustix::thread::CpuSet) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for tid in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let _ = rustix::thread::sched_setaffinity(rustix::process::Pid::from_raw(tid), set);
    }
}

/// Reaps the runners that ended.
fn reap() {
    while let Ok(Some(_)) = rustix::process::waitid(
        rustix::process::WaitId::All,
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
    ) {}
}

/// The zygote: forks a runner for each SPAWN until the server is gone.
fn zygote(arena: &'static super::arena::Arena, ch: Channel, socket: PathBuf, opts: RunOpts) -> ! {
    // Out of the server's session: a terminal's Ctrl-C meant for the
    // server's foreground group must not reach the clients' programs.
    let _ = rustix::process::setsid();
    // Once for every task: our executable's mappings replaced by
    // anonymous copies (so that a task's /proc/self/exe can name its
    // program), shared copy-on-write by every runner and task forked from
    // here; a task's own copy (~0.65 ms of CPU) then has nothing to do.
    if super::stub::may_set_exe() {
        use super::stub::{ExeMappings, detach_from_exe};
        let _ = detach_from_exe(ExeMappings::Writable) && detach_from_exe(ExeMappings::ReadOnly);
    }
    // The server's l4fs thread (see `serve_kind::FS_THREAD`).
    let mut fs_thread = None;
    loop {
        reap();
        match ch.recv() {
            Ok((serve_kind::SPAWN, _, _)) => {}
            Ok((serve_kind::FS_THREAD, p, _)) => {
                fs_thread = Dec(&p).u64().ok().and_then(|t| i32::try_from(t).ok());
                continue;
            }
            // The server is gone.
            _ => std::process::exit(0),
        }
        reap();
        let (server_end, runner_end) = match Channel::pair() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("loader serve: zygote: runner channel: {e}");
                continue;
            }
        };
        let forked = l4re::host::fork_process(l4re::host::SpawnOptions {
            die_with_parent: true,
            stdout_to_stderr: false,
        });
        match forked {
            Ok(l4re::host::ForkedProcess::Child) => {
                drop(ch);
                drop(server_end);
                runner(arena, runner_end, &socket, opts, fs_thread)
            }
            Ok(l4re::host::ForkedProcess::Parent { pid, .. }) => {
                drop(runner_end);
                let mut e = Enc::default();
                e.u64(pid as u64);
                if ch
                    .send(serve_kind::RUNNER, &e.0, &[server_end.as_fd()])
                    .is_err()
                {
                    std::process::exit(0);
                }
            }
            Err(e) => eprintln!("loader serve: zygote: cannot fork a runner: {e}"),
        }
    }
}

/// A runner: readies a task, waits for a client on `ch`, runs its
/// program, reports to it, exits. `fs_thread`: the server's l4fs thread.
fn runner(
    arena: &'static super::arena::Arena,
    ch: Channel,
    socket: &Path,
    mut opts: RunOpts,
    fs_thread: Option<i32>,
) -> ! {
    opts.server = Some(socket.to_path_buf());
    opts.server_optional = false;
    // The channel to the server stays ours: its end tells the server
    // that this run is over (the program must not hold it).
    let ch_fd = match ch.as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("loader serve: a ready task could not be made: {e}");
            std::process::exit(1)
        }
    };
    drop(ch);
    let prepared = match prepare(arena, &opts, vec![ch_fd]) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("loader serve: a ready task could not be made: {e}");
            std::process::exit(1)
        }
    };
    trace(
        "loader serve",
        &format!(
            "task {} ready (runner {})",
            prepared.task_pid(),
            std::process::id()
        ),
    );
    let ch = Channel::from_fd(
        prepared
            .kept()
            .first()
            .and_then(|f| f.try_clone().ok())
            .unwrap_or_else(|| std::process::exit(1)),
    );
    let conn = loop {
        match ch.recv() {
            Ok((serve_kind::CLIENT, _, mut fds)) if fds.len() == 1 => {
                break Channel::from_fd(fds.pop().expect("one fd"));
            }
            Ok(_) => continue,
            // The server is gone: so is this ready task.
            Err(_) => std::process::exit(0),
        }
    };
    let t0 = Instant::now();
    let fail = |conn: &Channel, msg: &str| -> ! {
        let _ = conn.send(serve_kind::FAILED, msg.as_bytes(), &[]);
        std::process::exit(0)
    };
    let (req, fds) = match conn.recv() {
        Ok((serve_kind::RUN, p, fds)) if fds.len() == 4 => match RunRequest::decode(&p) {
            Ok(r) => (r, fds),
            Err(e) => fail(&conn, &format!("bad request: {e}")),
        },
        Ok(_) => fail(&conn, "bad request"),
        Err(_) => std::process::exit(0),
    };
    set_trace(req.trace);
    // Our reports and statistics go where the client's would, and a
    // relative program or statistics path is the client's.
    let took = rustix::stdio::dup2_stdout(&fds[1])
        .and_then(|()| rustix::stdio::dup2_stderr(&fds[2]))
        .and_then(|()| rustix::process::fchdir(&fds[3]));
    if let Err(e) = took {
        fail(&conn, &format!("cannot take the client's descriptors: {e}"));
    }
    if let Ok(m) = u32::try_from(req.umask) {
        rustix::process::umask(rustix::fs::Mode::from_bits_truncate(m));
    }
    // Where the client runs: our threads (this one, the external pager
    // of the task's arena) and the task's (the first restores its own
    // mask before it enters the program; the pager's stays) move there,
    // so that the hand-offs of the start and the program's faults wake a
    // thread on the same CPU, and the task's address space is in use on
    // one CPU only when it ends (its teardown then frees the page tables
    // without waiting for the other CPU to flush its TLB).
    if let Ok(cpu) = usize::try_from(req.cpu) {
        let mut set = rustix::thread::CpuSet::new();
        if cpu < rustix::thread::CpuSet::MAX_CPU {
            set.set(cpu);
            // Ours again once the program runs (see `run::finish`).
            if let Ok(all) = rustix::thread::sched_getaffinity(None) {
                let _ = super::run::START_AFFINITY.set(all);
            }
            move_threads(std::process::id(), &set);
            move_threads(prepared.task_pid(), &set);
            // The server's l4fs thread too, which the run calls (open, the
            // ELF headers, the attach's map, the premap): with several
            // clients at once on different CPUs it follows the latest.
            if let Some(t) = fs_thread {
                let _ = rustix::thread::sched_setaffinity(rustix::process::Pid::from_raw(t), &set);
            }
        }
    }
    trace("loader", "request taken by a ready task");
    opts.program = String::from_utf8_lossy(&req.program).into_owned();
    opts.args = req
        .args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // u64::MAX: the server's default.
    for (mine, asked) in [
        (&mut opts.prefetch, req.prefetch),
        (&mut opts.fault_around, req.fault_around),
        (&mut opts.premap_pages, req.premap_pages),
    ] {
        if asked != u64::MAX {
            *mine = asked;
        }
    }
    opts.profile = req.profile;
    opts.stats = (!req.stats.is_empty()).then(|| String::from_utf8_lossy(&req.stats).into_owned());
    let client = Client { conn, fds, req };
    match finish(prepared, &opts, Some(&client), t0) {
        Ok(out) => {
            let mut e = Enc::default();
            e.u64(out.status as u64);
            let _ = client.conn.send(serve_kind::EXIT, &e.0, &[]);
            std::process::exit(0)
        }
        Err(e) => fail(&client.conn, &e.0),
    }
}

/// The ready runners of a server, and the channel to its zygote.
pub struct Pool {
    zygote: Channel,
    state: Mutex<State>,
    cv: Condvar,
}

/// The runners of a [`Pool`].
#[derive(Default)]
struct State {
    /// Ready (or still readying) runners, oldest first.
    ready: VecDeque<(u32, Channel)>,
    /// Runners asked of the zygote and not yet received.
    asked: usize,
}

impl Pool {
    /// A pool that keeps `n` runners ready, made by the zygote at the
    /// other end of `zygote` (see [`start_zygote`]).
    pub fn new(zygote: Channel, n: usize) -> std::io::Result<Arc<Pool>> {
        let reader = Channel::from_fd(zygote.as_fd().try_clone_to_owned()?);
        let pool = Arc::new(Pool {
            zygote,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let p = pool.clone();
        std::thread::Builder::new()
            .name("runners".into())
            .spawn(move || p.take_runners(reader))?;
        for _ in 0..n {
            pool.spawn();
        }
        Ok(pool)
    }

    /// Asks the zygote for a runner.
    fn spawn(&self) {
        self.lock().asked += 1;
        if let Err(e) = self.zygote.send(serve_kind::SPAWN, &[], &[]) {
            eprintln!("loader serve: the zygote is gone ({e}): no ready tasks");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the zygote's new runners into the pool.
    fn take_runners(&self, reader: Channel) {
        while let Ok((k, p, mut fds)) = reader.recv() {
            if k != serve_kind::RUNNER || fds.len() != 1 {
                continue;
            }
            let pid = Dec(&p).u64().unwrap_or(0) as u32;
            let ch = Channel::from_fd(fds.pop().expect("one fd"));
            let mut st = self.lock();
            st.asked = st.asked.saturating_sub(1);
            st.ready.push_back((pid, ch));
            drop(st);
            self.cv.notify_one();
        }
        eprintln!("loader serve: the zygote ended: no more ready tasks");
    }

    /// Hands the client on `conn` (its RUN unread) to a ready runner,
    /// whose replacement is asked for once its run has ended (so that the
    /// replacement's start does not take CPU from the program on a small
    /// machine) — or at once when no runner is ready or coming; tells the
    /// client if none comes in time.
    pub fn hand_over(self: &Arc<Self>, conn: Channel) {
        let deadline = Instant::now() + RUNNER_WAIT;
        loop {
            let next = {
                let mut q = self.lock();
                loop {
                    if let Some(r) = q.ready.pop_front() {
                        break Some(r);
                    }
                    if q.asked == 0 {
                        drop(q);
                        self.spawn();
                        q = self.lock();
                        continue;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break None;
                    }
                    q = self
                        .cv
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            };
            let Some((pid, runner)) = next else {
                let _ = conn.recv();
                let _ = conn.send(
                    serve_kind::FAILED,
                    b"loader serve: no ready task came in time",
                    &[],
                );
                return;
            };
            match runner.send(serve_kind::CLIENT, &[], &[conn.as_fd()]) {
                Ok(()) => {
                    trace("loader serve", &format!("client handed to runner {pid}"));
                    // Its replacement once it has ended (this thread is
                    // the client's own).
                    while runner.recv().is_ok() {}
                    self.spawn();
                    return;
                }
                // It died (its task could not be made): its replacement,
                // and the next one.
                Err(_) => self.spawn(),
            }
        }
    }
}

/// What of its confinement a process's `/proc/PID/status` shows:
/// `no_new_privs` and the number of seccomp filters (before Linux 5.9,
/// which has no `Seccomp_filters`: 1 if it is in seccomp filter mode).
fn confinement_of(status: &str) -> Option<(bool, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let filters =
        field("Seccomp_filters:").or_else(|| field("Seccomp:").map(|m| u64::from(m != 0)));
    Some((field("NoNewPrivs:")? != 0, filters?))
}

/// Why the client (process `pid` of our user, `None`: not known) must not
/// be served beyond its confinement, if it must not: it runs under
/// restrictions this server does not (`no_new_privs`, which seccomp
/// filters and Landlock domains of unprivileged processes require, or
/// more seccomp filters than ours), or its status cannot be read (another
/// PID namespace). A ready task would run its program, and the root's
/// capability would read and write files, with the server's freedom, not
/// the client's: such a client gets neither, and runs its programs with
/// a server of its own, inside its confinement.
pub fn confined_client(pid: Option<u32>) -> Option<String> {
    // Ours does not change: read once.
    static OURS: std::sync::OnceLock<Option<(bool, u64)>> = std::sync::OnceLock::new();
    let ours = *OURS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(confinement_of)
    });
    let theirs = pid
        .filter(|&p| p != 0)
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .as_deref()
        .and_then(confinement_of);
    match (ours, theirs) {
        (Some((our_nnp, our_filters)), Some((nnp, filters))) => {
            if nnp && !our_nnp {
                Some(format!(
                    "the client (pid {}) has no_new_privs set",
                    pid.unwrap_or(0)
                ))
            } else if filters > our_filters {
                Some(format!(
                    "the client (pid {}) runs under {filters} seccomp filters, this server under {our_filters}",
                    pid.unwrap_or(0)
                ))
            } else {
                None
            }
        }
        _ => Some(format!(
            "the client's confinement cannot be read (pid {:?})",
            pid
        )),
    }
}

/// The answer to a RUN from a client of another user than `server_uid`.
pub fn refusal(server_uid: u32, client_uid: Option<u32>) -> String {
    format!(
        "loader serve (uid {server_uid}) runs programs only for its own user, with its own \
         credentials; this client is {}: not run (use a server of your own: loader serve \
         --socket PATH)",
        match client_uid {
            Some(u) => format!("uid {u}"),
            None => "of unknown uid".into(),
        }
    )
}

/// Why [`run_via_server`] did not run the program.
#[derive(Debug)]
pub enum NotRun {
    /// The server cannot be reached (the text says why).
    Unreachable(String),
    /// The server keeps no ready tasks: run with its capability.
    NoReady,
}

/// `loader run` as a client of a running `loader serve` at `sock` with
/// ready tasks: sends the program, arguments, environment, working
/// directory, umask and standard descriptors, forwards SIGINT, SIGTERM,
/// SIGHUP and SIGQUIT to the program and returns its status (128 + signal
/// if it was killed; 127 when the run failed before the program ran, 1
/// when the server ended during the run). Must be called while the
/// process is single-threaded: on [`NotRun`] it still is, and the
/// signals are as before.
pub fn run_via_server(opts: &RunOpts, sock: &Path) -> Result<i32, NotRun> {
    let start = super::run::monotonic_ns();
    let traced = std::env::var_os("L4_TRACE").is_some();
    if traced {
        set_trace(start);
    }
    let set = SigSet::of(&FORWARDED);
    set.block();
    let unblock = || SigSet::empty().set_mask();
    let conn = match connect(sock) {
        Ok(c) => c,
        Err(e) => {
            unblock();
            return Err(NotRun::Unreachable(e));
        }
    };
    trace("client", "connected");
    let req = RunRequest {
        trace: if traced { start } else { 0 },
        umask: u64::from(current_umask()),
        prefetch: opts.prefetch,
        fault_around: opts.fault_around,
        premap_pages: opts.premap_pages,
        profile: opts.profile,
        stats: opts.stats.clone().unwrap_or_default().into_bytes(),
        profile_head: std::env::var("L4_PROFILE_HEAD")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX),
        program: opts.program.clone().into_bytes(),
        args: opts.args.iter().map(|a| a.clone().into_bytes()).collect(),
        envp: std::env::vars_os()
            .filter(|(k, _)| k != l4re::host::BOOTSTRAP_ENV)
            .map(|(k, v)| {
                use std::os::unix::ffi::OsStrExt;
                let mut e = k.as_bytes().to_vec();
                e.push(b'=');
                e.extend_from_slice(v.as_bytes());
                e
            })
            .collect(),
        cpu: rustix::thread::sched_getcpu() as u64,
        inherit: super::ctl::Inheritance::of_this_process(),
    };
    let cwd = match rustix::fs::open(
        ".",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) => {
            unblock();
            return Err(NotRun::Unreachable(format!(
                "the working directory: {}",
                std::io::Error::from(e)
            )));
        }
    };
    let fds = [
        rustix::stdio::stdin(),
        rustix::stdio::stdout(),
        rustix::stdio::stderr(),
        cwd.as_fd(),
    ];
    if let Err(e) = conn.send(serve_kind::RUN, &req.encode(), &fds) {
        unblock();
        return Err(NotRun::Unreachable(format!("{}: {e}", sock.display())));
    }
    drop(cwd);
    trace("client", "RUN sent");
    let gone = |started: bool| {
        eprintln!(
            "loader: the file server (loader serve at {}) ended during the run{}",
            sock.display(),
            if started {
                ": its program was killed with it"
            } else {
                ""
            }
        );
        1
    };
    // The first answer decides whether the program runs here.
    match conn.recv() {
        Ok((serve_kind::STARTED, _, mut fds)) if fds.len() == 1 => {
            forward_signals(set, fds.pop().expect("one fd"));
        }
        Ok((serve_kind::NO_READY, _, _)) => {
            unblock();
            return Err(NotRun::NoReady);
        }
        Ok((serve_kind::REFUSED | serve_kind::FAILED, m, _)) => {
            eprintln!("loader: {}", String::from_utf8_lossy(&m));
            return Ok(127);
        }
        Ok((serve_kind::EXIT, p, _)) => return Ok(Dec(&p).u64().unwrap_or(1) as i32),
        Ok(_) => {
            eprintln!("loader: {}: a bad answer", sock.display());
            return Ok(127);
        }
        Err(_) => return Ok(gone(false)),
    }
    trace("client", "started");
    let status = loop {
        match conn.recv() {
            Ok((serve_kind::EXIT, p, _)) => break Dec(&p).u64().unwrap_or(1) as i32,
            Ok((serve_kind::FAILED, m, _)) => {
                eprintln!("loader: {}", String::from_utf8_lossy(&m));
                break 127;
            }
            Ok(_) => continue,
            Err(_) => break gone(true),
        }
    };
    trace("client", "exit status received");
    Ok(status)
}

/// Connects to the server at `sock`.
fn connect(sock: &Path) -> Result<Channel, String> {
    let what = |e: String| format!("file server socket {}: {e}", sock.display());
    let s = super::ctl::seqpacket_socket().map_err(|e| what(e.to_string()))?;
    let addr = rustix::net::SocketAddrUnix::new(sock).map_err(|e| what(e.to_string()))?;
    rustix::net::connect(&s, &addr).map_err(|e| what(std::io::Error::from(e).to_string()))?;
    Ok(Channel::from_fd(s))
}

/// This process's umask (read by setting it, and set back).
fn current_umask() -> u32 {
    let m = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o022));
    rustix::process::umask(m);
    m.bits()
}

/// Forwards the signals of `set` (blocked in every thread) that reach this
/// process to the program behind `pidfd`, from a thread of its own.
fn forward_signals(set: SigSet, pidfd: OwnedFd) {
    let spawned = std::thread::Builder::new()
        .name("forward".into())
        .spawn(move || {
            loop {
                let sig = set.wait();
                let Some(s) = rustix::process::Signal::from_named_raw(sig) else {
                    continue;
                };
                let _ = rustix::process::pidfd_send_signal(&pidfd, s);
            }
        });
    if spawned.is_err() {
        eprintln!("loader: cannot forward signals to the program");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement_is_read_from_a_status() {
        let st = "Name:\tx\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\n";
        assert_eq!(confinement_of(st), Some((true, 3)));
        let st = "NoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n";
        assert_eq!(confinement_of(st), Some((false, 0)));
        // A kernel before 5.9: the seccomp mode.
        let st = "NoNewPrivs:\t1\nSeccomp:\t2\n";
        assert_eq!(confinement_of(st), Some((true, 1)));
        // A kernel without the fields: unknown.
        assert_eq!(confinement_of("Name:\tx\n"), None);
    }

    #[test]
    fn a_client_is_confined_beyond_us_only_by_what_we_lack() {
        // This process is not confined beyond itself.
        assert_eq!(confined_client(Some(std::process::id())), None);
        // Unknown or unreadable: confined.
        assert!(confined_client(None).is_some());
        assert!(confined_client(Some(0)).is_some());
        assert!(confined_client(Some(u32::MAX >> 2)).is_some());
    }
}
