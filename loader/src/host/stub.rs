//! The task stub (`l4task`): the first program of a new task on the host.
//!
//! The loader forks it from itself at the start of a run
//! ([`l4re::host::fork_task`]: no program is executed, so the task is
//! ready at once) with one end of the control channel, and calls
//! [`run_task`] in it. The stub then:
//!
//! 1. makes the statistics page, opens the program's userfaultfd and one
//!    for the untouched part of its own allocator arena and sends HELLO:
//!    the statistics page, the arena's uffd (the loader's external pager
//!    serves the internal pager's own memory), in external mode the
//!    program's uffd; it registers the arena;
//! 2. starts the internal pager: the task's region map with its
//!    `L4Re::Rm` service (attaching maps the region and registers it for
//!    faults; the loader's regions come with START, so no thread serves
//!    it on a gate) and, in
//!    internal mode, a thread resolving the program's faults; meanwhile it
//!    replaces its mappings of the loader executable with anonymous copies
//!    (so that `/proc/self/exe` can name the program);
//! 3. on the loader's START: attaches the program's regions that START
//!    names to the region map (as Rm attaches would: one message rather
//!    than a call per region), maps all file pages of a small program,
//!    builds the initial stack (argc, argv, envp,
//!    auxv with its own vDSO and hardware capabilities), maps it, prefetches,
//!    sets the process's memory layout (brk, arguments: `PR_SET_MM_MAP`),
//!    starts a watcher thread, gives the process its caller's signal state
//!    (ignored signals and mask, as across `execve`) and enters the
//!    program at its entry point on the first thread (the thread-group
//!    leader, as after `execve`; its rseq area unregistered, the program's
//!    C library sets up its own TLS and rseq);
//! 4. keeps its threads blocked for all signals, so signals go to the
//!    program; the process ends when the program calls `exit_group`, or
//!    (the watcher) when the program's last thread called `exit`;
//! 5. hands the uffd of every child the program forks to the loader
//!    (internal mode; see [`fork_barrier`]), which serves it for as long
//!    as the child lives.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use l4pager::host::uffd::{Event, Uffd, features};
use l4pager::host::{self as ph, Mode, Pager, SharedStats};
use l4pager::region::{Region, RegionMap};
use l4pager::rm::{RmBackend, RmService};
use l4pager::sync::SpinLock;
use l4re::Result;
use l4re::host::signal::{self, CrashRecord, SigSet};
use l4re::host::{Mapping, Prot, Source};

use super::arena::Arena;
use super::ctl::{Attach, Channel, Enc, Start, kind};
use super::run::trace;
use crate::elf::{PAGE, USER_END};
use crate::stack::{self, StackSpec, at};
use l4re::proto::rm::Flags as RmFlags;

/// The Rm backend of the stub: attaching maps and registers the region.
struct Backend {
    pager: Arc<Pager>,
    uffd: Arc<Uffd>,
}

impl RmBackend for Backend {
    fn attached(&self, r: &Region) -> Result<()> {
        ph::realize_region(&self.pager, &self.uffd, r)
    }
    fn detached(&self, _: &Region, start: u64, size: u64) {
        let _ = self.uffd.unregister(start, size);
        ph::unrealize(start, size);
    }
}

fn fail(ch: &Channel, msg: &str) -> ! {
    let _ = ch.send(kind::ERROR, msg.as_bytes(), &[]);
    eprintln!("l4task: {msg}");
    std::process::exit(127)
}

/// Runs the stub in a task the loader has just forked ([`l4re::host::fork_task`]):
/// `ch` is the task's end of the control channel, `mode` who pages the
/// program. Never returns: the process becomes the program, or ends.
///
/// The process must use `arena` as its global allocator: the program's C
/// library owns the heap break. Must be called while the process is still
/// single-threaded (it replaces its own mappings of the executable).
pub fn run_task(arena: &'static Arena, ch: Channel, mode: Mode) -> ! {
    trace("l4task", "forked");
    // The CPUs the program may use: restored before it starts (a one-shot
    // run pins its start to one CPU, see `run::pin_start_to_this_cpu`; a
    // ready task of `loader serve` is moved to its client's CPU).
    let cpus = super::run::START_AFFINITY
        .get()
        .cloned()
        .or_else(|| rustix::thread::sched_getaffinity(None).ok());
    ph::block_signals();
    let ch = Arc::new(ch);

    // The statistics page, shared with the loader.
    let (counters_fd, stats) = match SharedStats::create() {
        Ok(x) => x,
        Err(e) => fail(&ch, &format!("statistics page: {e}")),
    };

    // The program's uffd: fork events if we may.
    let uffd = match Uffd::open(ph::wanted_features(true)) {
        Ok(u) => u,
        Err(_) => match Uffd::open(ph::wanted_features(false)) {
            Ok(u) => {
                eprintln!(
                    "l4task: no userfaultfd fork events (they need CAP_SYS_PTRACE): forks are not \
                     paged, a child the program forks sees unloaded pages as zeros"
                );
                u
            }
            Err(e) => fail(&ch, &e),
        },
    };
    let uffd = Arc::new(uffd);
    // The arena's uffd (served by the external pager in the loader).
    let self_uffd = match Uffd::open(0) {
        Ok(u) => u,
        Err(e) => fail(&ch, &e),
    };
    let (astart, alen) = arena.untouched();
    let mut hello = Enc::default();
    hello
        .u64(std::process::id() as u64)
        .u64(astart as u64)
        .u64(alen as u64)
        .u64(uffd.features());
    let mut fds = vec![counters_fd.as_fd(), self_uffd.fd().as_fd()];
    if mode == Mode::External {
        fds.push(uffd.fd().as_fd());
    }
    if ch.send(kind::HELLO, &hello.0, &fds).is_err() {
        eprintln!("l4task: cannot reach the loader");
        std::process::exit(127);
    }
    trace("l4task", "hello sent");
    // Registered only now that the loader holds the uffd: from here on the
    // external pager serves the arena's new pages.
    if let Err(e) = self_uffd.register(
        astart as u64,
        alen as u64,
        l4pager::host::uffd::mode::MISSING,
    ) {
        fail(&ch, &format!("cannot register the arena: errno {e}"));
    }
    drop(self_uffd);
    // So that /proc/self/exe can name the program later (see
    // `detach_from_exe`): the writable mappings while still
    // single-threaded, the rest (most) once the pagers run, while the
    // loader opens and plans the program.
    let may_detach = may_set_exe() && detach_from_exe(ExeMappings::Writable);

    // The internal pager: region map, its Rm service (the regions of
    // START are attached through it), fault thread.
    let map = Arc::new(SpinLock::new(RegionMap::new(0x10000, USER_END)));
    let pid = std::process::id() as i32;
    let pager = Arc::new(Pager::new(
        map.clone(),
        stats.counters,
        mode,
        Box::new(move |report, _| {
            eprintln!("l4task: {report}");
            // SIGSEGV to our own process (the program thread's invalid
            // access ends the task).
            let _ = signal::kill(pid, libc::SIGSEGV);
        }),
    ));
    // Forked children are served by the loader, which outlives this task:
    // the internal pager hands their uffds over (in external mode the
    // loader reads the fork events itself).
    if mode == Mode::Internal && uffd.features() & features::EVENT_FORK != 0 {
        match fork_barrier() {
            Ok(barrier) => pager.set_on_fork(hand_over(ch.clone(), barrier)),
            Err(e) => fail(&ch, &format!("fork barrier: {e}")),
        }
    }
    let rm = RmService::new(
        map.clone(),
        Backend {
            pager: pager.clone(),
            uffd: uffd.clone(),
        },
    );
    if mode == Mode::Internal {
        let (p, u) = (pager.clone(), uffd.clone());
        let t = std::thread::Builder::new()
            .name("pager".into())
            .spawn(move || {
                ph::block_signals();
                p.serve(u)
            });
        if t.is_err() {
            fail(&ch, "cannot start the pager thread");
        }
    }

    trace("l4task", "pagers ready");
    let exe_detached = may_detach && detach_from_exe(ExeMappings::ReadOnly);
    trace("l4task", "detached from the executable");
    // Wait for START.
    let (start, exe_fd) = match ch.recv() {
        Ok((kind::START, p, fds)) => match Start::decode(&p) {
            Ok(s) => {
                let mut fds = fds.into_iter();
                if s.stdio {
                    // A client's run: its descriptors, directory, umask
                    // and trace from here on.
                    super::run::set_trace(s.trace);
                    let io: Vec<OwnedFd> = fds.by_ref().take(4).collect();
                    if let Err(e) = take_client_io(&io, s.umask) {
                        fail(&ch, &e)
                    }
                }
                (s, fds.next().filter(|_| exe_detached))
            }
            Err(e) => fail(&ch, &format!("bad START: {e}")),
        },
        Ok((k, _, _)) => fail(&ch, &format!("unexpected control message {k}")),
        Err(_) => std::process::exit(127),
    };
    trace("l4task", "START");
    // The program's CPUs: the client's or the caller's, as START says; the
    // task's own if the kernel refuses those (a client whose CPUs the
    // server may not use).
    let cpus: Vec<_> = super::ctl::cpu_set(&start.inherit.cpus)
        .into_iter()
        .chain(cpus)
        .collect();
    // A recording run sees every first touch, and so does a run without
    // fault-around: set before the regions are realized (see
    // `Pager::set_sees_cached`).
    pager.set_fault_around(start.fault_around);
    if start.record {
        pager.set_log(stats.log);
    }
    // The program's regions: attached here, as the loader's L4Re::Rm
    // attaches would be, the file's capability coming right after START.
    if let Err(e) = attach_regions(&ch, &rm, &start.regions) {
        fail(&ch, &e);
    }
    trace("l4task", "regions attached");
    {
        let mut m = map.lock();
        for (s, l) in &start.file_limits {
            m.set_file_len(*s, *l);
        }
    }
    if start.await_go {
        let _ = ch.send(kind::ATTACHED, &[], &[]);
        match ch.recv() {
            Ok((kind::GO, _, _)) => {}
            Ok((k, _, _)) => fail(&ch, &format!("unexpected control message {k}")),
            Err(_) => std::process::exit(127),
        }
    }
    let (entry, sp) = match launch(&start, &pager, &uffd, exe_fd.as_ref()) {
        Ok(t) => t,
        Err(e) => fail(&ch, &e),
    };
    // This thread (the process's first, the thread-group leader) becomes
    // the program's main thread, as after execve: gettid() == getpid(),
    // the process is named after the program, and a program whose last
    // thread ends with the plain `exit` system call leaves its status in
    // the leader. Name it before the watcher looks at thread names.
    let base = start
        .execfn
        .rsplit(|c| *c == b'/')
        .next()
        .unwrap_or(b"program");
    set_thread_name(if STUB_THREADS.iter().any(|n| n.as_bytes() == base) {
        b"program"
    } else {
        base
    });
    // The confinement's directories are opened now (a missing one ends
    // the run with its name); it is enforced right before the jump.
    let confine_args: Vec<String> = start
        .confine
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let confine = super::confine::Confinement::from_args(&confine_args)
        .and_then(|c| c.map(|c| c.prepare()).transpose());
    let confine = match confine {
        Ok(c) => c,
        Err(e) => fail(&ch, &e),
    };
    // Reported before the program runs (it may end at once).
    let mut e = Enc::default();
    e.u64(std::process::id() as u64);
    let _ = ch.send(kind::STARTED, &e.0, &[]);
    // The watcher keeps the control channel open until the end: the
    // program's exit_group ends the process. A program whose last thread
    // ends with the plain `exit` system call would leave the stub's
    // threads behind: when no program thread is left, it ends the task
    // with the status the leader (the program's main thread) left. That
    // is the native status when the main thread leaves last; natively the
    // last thread's status is reported, which a non-leader thread takes
    // with it here.
    //
    // It looks when the leader ends (the kernel clears `LEADER_ALIVE`, its
    // `clear_child_tid`, and wakes the watcher: a program without a C
    // library that ends with `exit` ends at once) and otherwise at
    // growing intervals, 1 ms to 200 ms (other threads of the program
    // ending last; a C library that set its own `clear_child_tid`). (A
    // pidfd of the leader thread does not do: the kernel does not wake
    // its pollers when a leader with live threads exits.)
    let leader = std::process::id();
    LEADER_ALIVE.store(leader, Ordering::SeqCst);
    l4re::host::sys::clear_on_exit(&LEADER_ALIVE);
    let watcher = std::thread::Builder::new()
        .name("l4task".into())
        .spawn(move || {
            let _keep = ch;
            let mut wait = std::time::Duration::from_millis(1);
            loop {
                // A leader whose word is cleared is ending (its exit code
                // is set by then), whether or not it is a zombie yet.
                let leader_gone = LEADER_ALIVE.load(Ordering::SeqCst) == 0;
                if !program_threads_left(leader_gone.then_some(leader)) {
                    // Nothing of the program is left.
                    l4re::host::sys::exit_group(leader_exit_status() as i32);
                }
                if leader_gone {
                    std::thread::sleep(wait);
                } else {
                    let t = rustix::thread::futex::Timespec {
                        tv_sec: wait.as_secs() as i64,
                        tv_nsec: wait.subsec_nanos() as i64,
                    };
                    // Not FUTEX_PRIVATE: the kernel's wake at a
                    // thread's end is a shared one.
                    let _ = rustix::thread::futex::wait(
                        &LEADER_ALIVE,
                        rustix::thread::futex::Flags::empty(),
                        leader,
                        Some(&t),
                    );
                }
                wait = (wait * 2).min(std::time::Duration::from_millis(200));
            }
        });
    if watcher.is_err() {
        eprintln!("l4task: cannot start the watcher thread");
        std::process::exit(127);
    }
    // Only this thread (the program's) and what it starts are confined.
    if let Some(c) = confine {
        match c.enforce() {
            Ok(super::confine::Enforced::Not) => eprintln!(
                "l4task: --confine: this kernel enforces no Landlock rules: the program runs UNCONFINED"
            ),
            Ok(_) => {}
            Err(e) => {
                eprintln!("l4task: {e}");
                std::process::exit(127)
            }
        }
    }
    set_first_allowed_cpus(&cpus);
    // After the stub's last thread is made: the C library takes SIGSETXID
    // over when the process gets its first thread.
    reset_signals(pager.counters(), &start.inherit.signals);
    // A client's resource limits (those the kernel refuses, a hard limit
    // above the server's, stay the server's).
    let _ = l4re::host::sys::set_rlimits(&start.inherit.rlimits);
    // A client's scheduling, on the thread that becomes the program's
    // (what the kernel refuses, a higher priority than ours without
    // privilege, stays ours).
    if let Some(s) = &start.inherit.sched {
        let _ = l4re::host::sys::set_scheduling(s);
    }
    unregister_rseq();
    trace("l4task", "entering the program");
    // SAFETY: the program is mapped and its stack built by `launch`; from
    // here on this thread runs only program code. (Stays here: entering
    // the program is the stub's own `execve`.)
    unsafe { enter(entry, sp, SigSet::from_bits(start.inherit.signals.blocked)) }
}

/// Makes `io` (stdin, stdout, stderr, working directory: a client's of
/// `loader serve`) the process's standard descriptors and directory, and
/// `umask` (unless `u64::MAX`) its umask, as the program's would be had
/// the client executed it.
fn take_client_io(io: &[OwnedFd], umask: u64) -> std::result::Result<(), String> {
    let [stdin, stdout, stderr, cwd] = io else {
        return Err("START without the client's descriptors".into());
    };
    let bad = |what: &str, e: rustix::io::Errno| format!("cannot take the client's {what}: {e}");
    rustix::stdio::dup2_stdin(stdin).map_err(|e| bad("stdin", e))?;
    rustix::stdio::dup2_stdout(stdout).map_err(|e| bad("stdout", e))?;
    rustix::stdio::dup2_stderr(stderr).map_err(|e| bad("stderr", e))?;
    rustix::process::fchdir(cwd).map_err(|e| bad("working directory", e))?;
    if let Ok(m) = u32::try_from(umask) {
        rustix::process::umask(rustix::fs::Mode::from_bits_truncate(m));
    }
    Ok(())
}

/// The exit status the thread-group leader left when it ended with the
/// plain `exit` system call (`exit_code` of `/proc/self/stat`, field 52,
/// in the form `waitpid` reports), 0 if it is not known.
fn leader_exit_status() -> i64 {
    let Ok(st) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some(at) = st.rfind(')') else { return 0 };
    // Fields after the name start with field 3 (state).
    st[at + 1..]
        .split_whitespace()
        .nth(52 - 3)
        .and_then(|v| v.parse::<i64>().ok())
        .map(|v| (v >> 8) & 0xff)
        .unwrap_or(0)
}

unsafe extern "C" {
    /// glibc (2.35+): offset of this thread's rseq area from the thread
    /// pointer.
    static __rseq_offset: isize;
    /// glibc (2.35+): size of the rseq area, 0 if rseq is not registered.
    static __rseq_size: u32;
}

/// Unregisters the rseq area our C library registered for this thread, so
/// that the program's C library can register its own.
fn unregister_rseq() {
    const RSEQ_SIG: u32 = 0x5305_3053;
    const RSEQ_FLAG_UNREGISTER: i32 = 1;
    // SAFETY: reads two glibc variables and the thread pointer (fs:0 holds
    // the TCB's own address on x86-64); the rseq system call only compares
    // the area and signature with what the kernel registered. (Stays
    // here: glibc's private rseq variables, read only by this stub.)
    unsafe {
        let size = __rseq_size;
        if size == 0 {
            return;
        }
        let tp: u64;
        core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly));
        let area = (tp as i64 + __rseq_offset as i64) as u64;
        for len in [32, size, size.next_multiple_of(32)] {
            if libc::syscall(libc::SYS_rseq, area, len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) == 0 {
                return;
            }
        }
    }
    log::debug!("l4task: rseq not unregistered: the program runs without rseq");
}

/// The fork barrier: one page of the stub registered with a second uffd
/// that has fork events.
///
/// A fork of the program sends one fork event per uffd of the task, one
/// after the other, in the address order of each uffd's first registered
/// range, and `fork` returns in the parent only after the last was read.
/// The program's regions come first (the barrier page is placed by the
/// kernel, near the top of the address space, above them); so while the
/// internal pager hands the child's uffd to the loader, the parent is
/// still held in `fork` by the barrier's event, which the pager reads only
/// afterwards ([`hand_over`]). Without the barrier a parent that exits
/// right after `fork` could end the task — and with it the only descriptor
/// of the child's uffd, which unregisters the child's memory — before the
/// handover.
fn fork_barrier() -> std::result::Result<Uffd, String> {
    let b = Uffd::open(features::EVENT_FORK)?;
    // A page nothing reads or writes (it is only registered), kept for the
    // life of the task.
    let p = Mapping::new(PAGE as usize, Prot::READ, Source::Anonymous)
        .map_err(|e| e.to_string())?
        .leak();
    b.register(p as u64, PAGE, l4pager::host::uffd::mode::MISSING)
        .map_err(|e| format!("register: errno {e}"))?;
    b.set_nonblocking()
        .map_err(|e| format!("non-blocking: errno {e}"))?;
    Ok(b)
}

/// The internal pager's fork handler: sends the child's uffd to the loader
/// (which serves the child for as long as it lives), then reads the
/// barrier's fork event, which lets the parent's `fork` return.
fn hand_over(ch: Arc<Channel>, barrier: Uffd) -> l4pager::host::OnFork {
    Box::new(move |child: Uffd| {
        if let Err(e) = ch.send(kind::FORK, &[], &[child.fd().as_fd()]) {
            eprintln!("l4task: cannot hand a forked child to the loader: {e}");
        }
        drop(child);
        for _ in 0..50 {
            if !barrier.wait_readable(100) {
                continue;
            }
            match barrier.try_read_event() {
                // The child's copy of the barrier page needs no pager.
                Ok(Some(Event::Fork(b))) => return drop(b),
                Ok(_) => {}
                Err(e) => {
                    log::debug!("l4task: fork barrier: errno {e}");
                    return;
                }
            }
        }
        log::warn!("l4task: no fork event on the barrier");
    })
}

/// Gives the calling thread the first of `sets` the kernel accepts (it
/// refuses a set without a CPU this thread may use); returns its index.
fn set_first_allowed_cpus(sets: &[rustix::thread::CpuSet]) -> Option<usize> {
    sets.iter()
        .position(|c| rustix::thread::sched_setaffinity(None, c).is_ok())
}

/// Thread names of the stub (the program's threads carry the program's).
const STUB_THREADS: &[&str] = &["l4task", "pager", "pager-fork"];

/// The program's main thread (the thread-group leader) is alive: its
/// thread id until it ends, when the kernel clears it (see
/// [`l4re::host::sys::clear_on_exit`]) and wakes the watcher.
static LEADER_ALIVE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether a thread of the program still runs in this process (a leader
/// that called `exit` stays listed as a zombie until the process ends;
/// `ended`: a thread known to be ending, not counted).
fn program_threads_left(ended: Option<u32>) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return true;
    };
    let ended = ended.map(|t| t.to_string());
    dir.flatten().any(|t| {
        if ended.as_deref().is_some_and(|e| t.file_name() == e) {
            return false;
        }
        let program = std::fs::read_to_string(t.path().join("comm"))
            .map(|c| !STUB_THREADS.contains(&c.trim_end()))
            .unwrap_or(false);
        program
            && std::fs::read_to_string(t.path().join("stat"))
                .map(|st| {
                    let state = st
                        .rfind(')')
                        .and_then(|at| st[at + 1..].split_whitespace().next());
                    !matches!(state, Some("Z") | Some("X"))
                })
                .unwrap_or(false)
    })
}

/// Sets the calling thread's name (`comm`).
fn set_thread_name(name: &[u8]) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    if let Ok(name) = std::ffi::CStr::from_bytes_until_nul(&buf) {
        let _ = rustix::thread::set_name(name);
    }
}

/// Resets the signal state the stub's runtime left (Rust ignores SIGPIPE
/// and handles SIGSEGV/SIGBUS for stack overflows; the main thread has an
/// alternate stack), ignores what the program's caller ignored (as
/// `execve` leaves it) and installs the crash recorder for SIGSEGV/SIGBUS
/// (which a fault raises even where they are ignored).
fn reset_signals(c: &'static l4pager::host::Counters, inherited: &signal::Inherited) {
    signal::reset_dispositions();
    signal::ignore(inherited.ignored);
    signal::record_crashes(
        &[libc::SIGSEGV, libc::SIGBUS],
        CrashRecord {
            signo: &c.crash_signo,
            code: &c.crash_code,
            addr: &c.crash_addr,
            pc: &c.crash_pc,
            err: &c.crash_err,
        },
    );
}

/// `struct prctl_mm_map`.
#[repr(C)]
struct PrctlMmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: *const u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// Stack pages below the initial stack that are zero-filled with a
/// premapped program (see [`Start::premap_pages`]).
const PREMAP_STACK_PAGES: u64 = 8;

/// Builds the stack, prefetches and starts the program thread.
fn launch(
    s: &Start,
    pager: &Arc<Pager>,
    uffd: &Arc<Uffd>,
    exe: Option<&OwnedFd>,
) -> std::result::Result<(u64, u64), String> {
    let mut random = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty());
    let aux = l4re::host::sys::auxval;
    let mut auxv = vec![
        (at::SYSINFO_EHDR, aux(at::SYSINFO_EHDR)),
        (at::MINSIGSTKSZ, aux(at::MINSIGSTKSZ)),
        (at::HWCAP, aux(at::HWCAP)),
        (at::PAGESZ, PAGE),
        (at::CLKTCK, aux(at::CLKTCK)),
        (at::PHDR, s.phdr.0),
        (at::PHENT, s.phdr.2),
        (at::PHNUM, s.phdr.1),
        (at::BASE, 0),
        (at::FLAGS, 0),
        (at::ENTRY, s.entry),
        (at::UID, aux(at::UID)),
        (at::EUID, aux(at::EUID)),
        (at::GID, aux(at::GID)),
        (at::EGID, aux(at::EGID)),
        (at::SECURE, 0),
        (at::HWCAP2, aux(at::HWCAP2)),
    ];
    auxv.retain(|(t, v)| {
        *v != 0
            || matches!(
                *t,
                at::BASE | at::FLAGS | at::SECURE | at::UID | at::EUID | at::GID | at::EGID
            )
    });
    let spec = StackSpec {
        argv: s.argv.iter().map(|a| a.as_slice()).collect(),
        envp: s.envp.iter().map(|a| a.as_slice()).collect(),
        execfn: &s.execfn,
        platform: b"x86_64",
        random,
        auxv,
    };
    let (top, size) = s.stack;
    let st = stack::build(top, &spec);
    if st.bytes.len() as u64 > size / 2 {
        return Err("arguments and environment do not fit the stack".into());
    }
    // Map the stack's pages with the image (UFFDIO_COPY into the
    // registered stack region).
    let first = st.sp & !(PAGE - 1);
    let mut page = vec![0u8; PAGE as usize];
    let mut a = first;
    while a < top {
        page.fill(0);
        let base = top - st.bytes.len() as u64;
        for (i, b) in page.iter_mut().enumerate() {
            let x = a + i as u64;
            if x >= base && x < top {
                *b = st.bytes[(x - base) as usize];
            }
        }
        uffd.copy(a, &page)
            .map_err(|e| format!("cannot map the initial stack at {a:#x}: errno {e}"))?;
        pager
            .counters()
            .pages_mapped
            .fetch_add(1, Ordering::Relaxed);
        a += PAGE;
    }
    // A small program's file pages (and bss) all go in now, in a few
    // large runs: cheaper than the faults (each a round trip to the pager
    // thread, a file page's also to the server) that would bring most of
    // them.
    let mut premapped = pager
        .premap_runs(s.premap_pages, top - 1)
        .unwrap_or_default();
    if !premapped.is_empty() {
        // And the stack pages right below the arguments.
        let below = first
            .saturating_sub(PREMAP_STACK_PAGES * PAGE)
            .max(top - size);
        premapped.push((below, (first - below) / PAGE));
        pager.premap(uffd, &premapped);
        trace("l4task", "program pages mapped");
    }
    // Learned prefetch: the profile is replayed ahead of the program
    // while it runs (what was just mapped left out).
    // The program starts once the first `profile_head` pages are mapped.
    let profile = profile_beyond(&s.profile, &premapped);
    if !profile.is_empty() {
        let (p, u, prof, head) = (pager.clone(), uffd.clone(), profile, s.profile_head);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || {
                ph::block_signals();
                p.replay(&u, &prof, head, &mut || {
                    let _ = tx.send(());
                })
            })
            .map_err(|e| format!("cannot start the prefetcher: {e}"))?;
        let _ = rx.recv_timeout(std::time::Duration::from_millis(100));
    }
    // Prefetch around the entry point and below the stack.
    for i in 0..s.prefetch {
        let half = s.prefetch / 2;
        let at = (s.entry & !(PAGE - 1)).wrapping_add(i.wrapping_sub(half).wrapping_mul(PAGE));
        pager.prefetch(uffd, at);
        let below = first.wrapping_sub((i + 1) * PAGE);
        if below >= top - size {
            pager.prefetch(uffd, below);
        }
    }
    // The process's memory layout as execve would have set it.
    let auxv_words: Vec<u64> = {
        let base = top - st.bytes.len() as u64;
        let off = (st.auxv.0 - base) as usize;
        st.bytes[off..off + st.auxv.1 as usize]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    };
    let mut mm = PrctlMmMap {
        start_code: s.code.0,
        end_code: s.code.1,
        start_data: s.data.0,
        end_data: s.data.1,
        start_brk: s.brk,
        brk: s.brk,
        start_stack: st.sp,
        arg_start: st.args.0,
        arg_end: st.args.1,
        env_start: st.env.0,
        env_end: st.env.1,
        auxv: auxv_words.as_ptr(),
        auxv_size: (auxv_words.len() * 8) as u32,
        exe_fd: u32::MAX,
    };
    // /proc/self/exe names the program (busybox runs its applets by
    // executing it), if the loader sent the file and we may: else (or if
    // the kernel refuses) the rest is set alone.
    let set = |mm: &PrctlMmMap| {
        // SAFETY: PR_SET_MM_MAP reads `mm` and the auxv words it points to.
        // (Stays here: it moves the heap break and the argument area, which
        // is only sound right before the program is entered.)
        unsafe {
            libc::prctl(
                libc::PR_SET_MM,
                libc::PR_SET_MM_MAP,
                mm as *const PrctlMmMap,
                core::mem::size_of::<PrctlMmMap>(),
                0,
            )
        }
    };
    let mut r = -1;
    if let Some(fd) = exe {
        mm.exe_fd = fd.as_raw_fd() as u32;
        r = set(&mm);
        if r != 0 {
            log::debug!(
                "l4task: /proc/self/exe not set to the program: {}",
                std::io::Error::last_os_error()
            );
        }
        mm.exe_fd = u32::MAX;
    }
    if r != 0 {
        r = set(&mm);
    }
    if r != 0 {
        log::debug!(
            "l4task: PR_SET_MM_MAP failed ({}): the heap starts after the stub",
            std::io::Error::last_os_error()
        );
    }
    Ok((s.entry, st.sp))
}

/// Attaches `regions` to the task's region map through `rm` (mapping and
/// registering each), file-backed ones to the program file whose
/// capability the loader sends on `ch` when any region needs it.
fn attach_regions(
    ch: &Channel,
    rm: &RmService<Backend>,
    regions: &[Attach],
) -> std::result::Result<(), String> {
    let file = if regions.iter().any(|r| r.file) {
        match l4re::host::recv_caps(ch.as_fd(), std::time::Duration::from_secs(20)) {
            Ok((_, caps)) if caps.len() == 1 && caps[0].0 == "file" => Some(caps[0].1),
            Ok(_) => return Err("the loader sent a bad file capability".into()),
            Err(e) => return Err(format!("the loader sent no file capability: {e}")),
        }
    } else {
        None
    };
    for r in regions {
        let name = String::from_utf8_lossy(&r.name);
        let fl = RmFlags::from_bits(r.flags)
            .ok_or_else(|| format!("region {name}: bad flags {:#x}", r.flags))?;
        rm.attach_region(
            r.start,
            r.size,
            fl,
            file.filter(|_| r.file),
            r.offset,
            12,
            &name,
        )
        .map_err(|e| {
            format!(
                "cannot attach region {name} [{:#x}, {:#x}): {e}",
                r.start,
                r.start.saturating_add(r.size)
            )
        })?;
    }
    Ok(())
}

/// The entries of a learned-prefetch profile (as in
/// [`PageLog`](l4pager::host::PageLog)) that name pages outside `runs`
/// (`(first page, pages)`, mapped already).
fn profile_beyond(profile: &[u64], runs: &[(u64, u64)]) -> Vec<u64> {
    profile
        .iter()
        .copied()
        .filter(|e| {
            let (a, n) = (e & !(PAGE - 1), (e & ph::LOG_COUNT_MASK) + 1);
            !runs
                .iter()
                .any(|&(s, k)| a >= s && a + n * PAGE <= s + k * PAGE)
        })
        .collect()
}

/// Whether we may replace the process's executable file
/// (`PR_SET_MM_MAP`'s `exe_fd` needs CAP_SYS_ADMIN or
/// CAP_CHECKPOINT_RESTORE).
pub(crate) fn may_set_exe() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_CHECKPOINT_RESTORE: u32 = 40;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|c| c & (1 << CAP_SYS_ADMIN | 1 << CAP_CHECKPOINT_RESTORE) != 0)
}

/// Which mappings of our executable [`detach_from_exe`] replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExeMappings {
    /// The writable ones (data, bss): only while the process has a single
    /// thread.
    Writable,
    /// The others (text, read-only data): at any time.
    ReadOnly,
}

/// Replaces the `which` mappings of our own executable (the loader
/// binary) with an anonymous copy of them, at the same address with the
/// same protection: the kernel changes a process's executable file
/// (`/proc/self/exe`) only when the old one is no longer mapped (both
/// kinds must be replaced). Text is replaced while it runs: `mremap`
/// swaps the pages atomically and their bytes are the same, so other
/// threads may run meanwhile. Writable data is copied: nothing may write
/// it between the copy and the swap, so those must be replaced while the
/// process has a single thread (the loop below does not allocate).
/// Returns whether it worked, or nothing of the kind was mapped (on
/// failure part of the executable may be anonymous: harmless).
pub(crate) fn detach_from_exe(which: ExeMappings) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = std::fs::metadata("/proc/self/exe").map(|m| m.ino()) else {
        return false;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    // start, end, protection.
    let mut ranges: Vec<(usize, usize, i32)> = Vec::new();
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || f[4].parse::<u64>().ok() != Some(ino) {
            continue;
        }
        let Some((a, b)) = f[0].split_once('-') else {
            return false;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            return false;
        };
        let p = f[1].as_bytes();
        if (p[1] == b'w') != (which == ExeMappings::Writable) {
            continue;
        }
        let mut prot = libc::PROT_NONE;
        if p[0] == b'r' {
            prot |= libc::PROT_READ;
        }
        if p[1] == b'w' {
            prot |= libc::PROT_WRITE;
        }
        if p[2] == b'x' {
            prot |= libc::PROT_EXEC;
        }
        ranges.push((a, b, prot));
    }
    if ranges.is_empty() {
        // Nothing of the executable is mapped: done before us (the zygote
        // of `loader serve` detaches once for every task it forks).
        return true;
    }
    for &(a, b, prot) in &ranges {
        let len = b - a;
        // SAFETY: a fresh anonymous mapping, filled from our own mapping
        // of the same length at `a` (readable when `prot` says so), then
        // moved over it; the bytes at `a` stay what they were (writable
        // ones only while the stub is single-threaded, see above). Both
        // ranges are populated up front (one call each instead of a page
        // fault per page). (Stays here: it swaps the running executable's
        // own text and data.)
        unsafe {
            let n = libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            );
            if n == libc::MAP_FAILED {
                return false;
            }
            if prot & libc::PROT_READ != 0 {
                // Best effort (Linux 5.14+): faults do the rest.
                libc::madvise(a as *mut libc::c_void, len, libc::MADV_POPULATE_READ);
                core::ptr::copy_nonoverlapping(a as *const u8, n as *mut u8, len);
            }
            if libc::mprotect(n, len, prot) != 0 {
                libc::munmap(n, len);
                return false;
            }
            let m = libc::mremap(
                n,
                len,
                len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                a as *mut libc::c_void,
            );
            if m != a as *mut libc::c_void {
                libc::munmap(n, len);
                return false;
            }
        }
    }
    true
}

/// Enters the program at `entry` with stack pointer `sp`, with signal
/// mask `mask` (its caller's: `execve` keeps the mask), `rdx` 0 (no exit
/// handler) and the other callee-saved registers cleared.
///
/// # Safety
///
/// `entry` must be the entry point of a program mapped in this process and
/// `sp` its initial stack as [`stack::build`] lays it out; nothing of the
/// calling thread's stack or state is used again.
unsafe fn enter(entry: u64, sp: u64, mask: SigSet) -> ! {
    mask.set_mask();
    // SAFETY: see the function's contract. (Stays here: a jump into the
    // program, the stub's own exec.)
    unsafe {
        core::arch::asm!(
            "mov rsp, rdi",
            "xor edx, edx",
            "xor ebp, ebp",
            "xor ebx, ebx",
            "xor r12d, r12d",
            "xor r13d, r13d",
            "xor r14d, r14d",
            "xor r15d, r15d",
            "jmp rsi",
            in("rdi") sp,
            in("rsi") entry,
            options(noreturn)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cpu_set_the_kernel_accepts_is_taken() {
        // On a thread of its own: the test changes its CPUs.
        std::thread::spawn(|| {
            let mine = rustix::thread::sched_getaffinity(None).unwrap();
            // A CPU no machine this runs on has.
            let mut absent = rustix::thread::CpuSet::new();
            absent.set(rustix::thread::CpuSet::MAX_CPU - 1);
            assert_eq!(set_first_allowed_cpus(&[absent, mine]), Some(1));
            assert_eq!(rustix::thread::sched_getaffinity(None).unwrap(), mine);
            assert_eq!(set_first_allowed_cpus(&[absent]), None);
            assert_eq!(rustix::thread::sched_getaffinity(None).unwrap(), mine);
        })
        .join()
        .unwrap();
    }
}
