//! `l4run`: the small client of `loader serve` — `loader run` through a
//! ready task without the loader's own start-up.
//!
//! ```text
//! l4run [--server SOCKET] [--stats FILE|-] [--premap-pages N] [--fault-around N]
//!       [--no-prefetch-profile] PROGRAM [ARGS...]
//! ```
//!
//! A freestanding static program (no C library, raw system calls; built
//! by `loader/build.rs` with `panic=abort`): the C library's start alone
//! (CPU feature probing, ~0.55 ms on the development VM) costs more than
//! the whole request, and the loader binary's exec and exit ~1.1 ms.
//! It finds the server as `loader run` does (`--server`, `$L4FS_SOCKET`,
//! else `loader serve`'s default socket), sends RUN (see
//! `loader::host::ctl::RunRequest`, all options at the server's defaults)
//! with its stdin, stdout, stderr and working directory, forwards
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT to the program through the pidfd
//! the server sends, and exits with the program's status (128 + signal
//! when it was killed). Without a reachable server with ready tasks, or
//! with any other option, it executes `loader run` with the same
//! arguments (the `loader` next to it, or `$L4_LOADER`).
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call l4run_main",
    "ud2",
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(127)
}

// The memory functions the compiler may call (no C library here).

/// # Safety
/// As C's `memcpy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; `rep movsb` copies n bytes forward.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") d => _, inout("rsi") s => _,
             options(nostack, preserves_flags));
    }
    d
}

/// # Safety
/// As C's `memmove`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    if (d as usize) <= (s as usize) || (d as usize) >= (s as usize).wrapping_add(n) {
        // SAFETY: forward copy is correct when d is below s or apart.
        return unsafe { memcpy(d, s, n) };
    }
    // SAFETY: overlapping with d above s: copy backwards (direction flag
    // set for the copy, cleared after, as the ABI wants it).
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") d.add(n - 1) => _, inout("rsi") s.add(n - 1) => _,
             options(nostack));
    }
    d
}

/// # Safety
/// As C's `memset`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; `rep stosb` writes n bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") d => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    d
}

/// # Safety
/// As C's `memcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller's contract: both are readable for n bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// # Safety
/// As C's `bcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// As C's `strlen` (the compiler turns the scan of a C string into it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(p: *const u8) -> usize {
    let n: usize;
    // SAFETY: the caller's contract: p is NUL-terminated; `repne scasb`
    // scans to the NUL without a loop the compiler could turn into a call.
    unsafe {
        asm!("xor eax, eax", "mov rcx, -1", "repne scasb", "not rcx", "dec rcx",
             inout("rdi") p => _, out("rcx") n, out("rax") _, options(nostack));
    }
    n
}

/// Referenced by the precompiled `core` (built to unwind); nothing unwinds
/// here (`panic=abort`).
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

// System calls (x86-64 Linux).

unsafe fn sys(n: usize, a: [usize; 6]) -> isize {
    let r: isize;
    // SAFETY: the caller passes a valid system call and arguments.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => r, in("rdi") a[0], in("rsi") a[1],
             in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    r
}

fn exit(code: i32) -> ! {
    // SAFETY: exit_group does not return.
    unsafe { sys(231, [code as usize, 0, 0, 0, 0, 0]) };
    loop {
        core::hint::spin_loop();
    }
}

fn write_all(fd: i32, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: b is readable.
        let n = unsafe { sys(1, [fd as usize, b.as_ptr() as usize, b.len(), 0, 0, 0]) };
        if n == -4 {
            continue;
        }
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

fn close(fd: i32) {
    // SAFETY: closes one of our descriptors.
    unsafe { sys(3, [fd as usize, 0, 0, 0, 0, 0]) };
}

/// The C string at `p` (without its NUL).
fn cstr<'a>(p: *const u8) -> &'a [u8] {
    let mut n = 0;
    // SAFETY: p is a NUL-terminated string of the initial stack, which
    // lives as long as the process.
    unsafe {
        while *p.add(n) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(p, n)
    }
}

fn getenv<'a>(envp: &[*const u8], name: &[u8]) -> Option<&'a [u8]> {
    envp.iter().find_map(|&e| {
        let s = cstr(e);
        (s.len() > name.len() && &s[..name.len()] == name && s[name.len()] == b'=')
            .then(|| &s[name.len() + 1..])
    })
}

/// A fixed buffer with a length.
struct Buf<const N: usize> {
    b: [u8; N],
    n: usize,
    over: bool,
}

impl<const N: usize> Buf<N> {
    const fn new() -> Self {
        Buf {
            b: [0; N],
            n: 0,
            over: false,
        }
    }
    fn put(&mut self, s: &[u8]) -> &mut Self {
        if self.n + s.len() > N {
            self.over = true;
        } else {
            self.b[self.n..self.n + s.len()].copy_from_slice(s);
            self.n += s.len();
        }
        self
    }
    fn word(&mut self, v: u64) -> &mut Self {
        self.put(&v.to_le_bytes())
    }
    fn bytes(&mut self, s: &[u8]) -> &mut Self {
        self.word(s.len() as u64).put(s)
    }
    fn get(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

/// The request (env and args included): at most 192 KiB, a socket
/// message's usual limit.
static mut REQ: Buf<{ 192 << 10 }> = Buf::new();

const RUN: u32 = 21;
const REFUSED: u32 = 22;
const STARTED: u32 = 23;
const EXIT: u32 = 24;
const FAILED: u32 = 25;
const NO_READY: u32 = 26;
const BOOTSTRAP_ENV: &[u8] = b"L4RE_HOST_BOOTSTRAP_FD";
const FORWARDED: [u32; 4] = [2, 15, 1, 3];

/// The signal mask we were started with (before we blocked the signals
/// we forward): the program's, as `execve` would pass it on.
static CALLER_MASK: AtomicU64 = AtomicU64::new(0);

/// Reads the mask we were started with into [`CALLER_MASK`] (before
/// anything blocks a signal).
fn keep_caller_mask() {
    let mut mask = 0u64;
    // SAFETY: no new mask (how is ignored then); the kernel writes 8 bytes.
    unsafe { sys(14, [0, 0, &mut mask as *mut u64 as usize, 8, 0, 0]) };
    CALLER_MASK.store(mask, Ordering::Relaxed);
}

/// The signals we were started ignoring (`SIG_IGN`), which `execve` would
/// pass on to the program: `rt_sigaction(sig, NULL, &old)` of each.
fn ignored_signals() -> u64 {
    let mut ignored = 0u64;
    for sig in 1..=64usize {
        // struct kernel_sigaction: handler, flags, restorer, mask.
        let mut old = [0u64; 4];
        // SAFETY: no new action; the kernel writes one 32-byte action.
        let r = unsafe { sys(13, [sig, 0, old.as_mut_ptr() as usize, 8, 0, 0]) };
        if r == 0 && old[0] == 1 {
            ignored |= 1 << (sig - 1);
        }
    }
    ignored
}

/// Executes `loader run` with our arguments (`args`: without argv[0]).
fn exec_loader(args: &[*const u8], envp: &[*const u8]) -> ! {
    // The signals were blocked for forwarding: an exec keeps the mask, so
    // the caller's goes back.
    let mask = CALLER_MASK.load(Ordering::Relaxed);
    // SAFETY: sets the mask from a readable sigset.
    unsafe { sys(14, [2, &mask as *const u64 as usize, 0, 8, 0, 0]) };
    let mut path = Buf::<4096>::new();
    match getenv(envp, b"L4_LOADER") {
        Some(p) => {
            path.put(p);
        }
        None => {
            let mut exe = [0u8; 4000];
            // SAFETY: readlink writes at most exe.len() bytes.
            let n = unsafe {
                sys(
                    89,
                    [
                        c"/proc/self/exe".as_ptr() as usize,
                        exe.as_mut_ptr() as usize,
                        exe.len(),
                        0,
                        0,
                        0,
                    ],
                )
            };
            let exe = if n > 0 { &exe[..n as usize] } else { &exe[..0] };
            let dir = exe
                .iter()
                .rposition(|c| *c == b'/')
                .map_or(&exe[..0], |i| &exe[..=i]);
            path.put(dir).put(b"loader");
        }
    }
    path.put(b"\0");
    let mut argv = [core::ptr::null::<u8>(); 4096];
    if args.len() + 3 > argv.len() {
        write_all(2, b"l4run: too many arguments\n");
        exit(127)
    }
    argv[0] = path.get().as_ptr();
    argv[1] = c"run".as_ptr().cast();
    argv[2..2 + args.len()].copy_from_slice(args);
    let mut env = [core::ptr::null::<u8>(); 8192];
    let n = envp.len().min(env.len() - 1);
    env[..n].copy_from_slice(&envp[..n]);
    // SAFETY: NUL-terminated path, NULL-terminated argv and envp.
    unsafe {
        sys(
            59,
            [
                path.get().as_ptr() as usize,
                argv.as_ptr() as usize,
                env.as_ptr() as usize,
                0,
                0,
                0,
            ],
        )
    };
    write_all(2, b"l4run: cannot execute ");
    write_all(2, &path.get()[..path.n - 1]);
    write_all(2, b" (set L4_LOADER)\n");
    exit(127)
}

#[repr(C)]
struct MsgHdr {
    name: usize,
    namelen: u32,
    iov: *const [usize; 2],
    iovlen: usize,
    control: *mut u8,
    controllen: usize,
    flags: i32,
}

/// Receives one message: kind, payload length (in `buf`), the first fd.
fn recv(sock: i32, buf: &mut [u8]) -> Option<(u32, usize, i32)> {
    let mut ctl = [0u64; 8];
    let iov = [buf.as_mut_ptr() as usize, buf.len()];
    let mut m = MsgHdr {
        name: 0,
        namelen: 0,
        iov: &iov,
        iovlen: 1,
        control: ctl.as_mut_ptr() as *mut u8,
        controllen: 64,
        flags: 0,
    };
    let n = loop {
        // SAFETY: m describes our buffers (MSG_CMSG_CLOEXEC).
        let n = unsafe {
            sys(
                47,
                [
                    sock as usize,
                    &mut m as *mut MsgHdr as usize,
                    0x4000_0000,
                    0,
                    0,
                    0,
                ],
            )
        };
        if n != -4 {
            break n;
        }
    };
    if n < 4 {
        return None;
    }
    let kind = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    // One SCM_RIGHTS header: len, level 1, type 1, then the fds.
    let fd = if m.controllen >= 20 && ctl[1] == (1 | 1 << 32) {
        (ctl[2] & 0xffff_ffff) as i32
    } else {
        -1
    };
    Some((kind, n as usize, fd))
}

/// Our entry (from `_start`, with the initial stack).
///
/// # Safety
/// `sp` is the initial stack pointer the kernel set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4run_main(sp: *const usize) -> ! {
    // SAFETY: the initial stack: argc, argv[argc], NULL, envp..., NULL.
    let (args, envp) = unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        let envp = argv.add(argc + 1);
        let mut k = 0;
        while !(*envp.add(k)).is_null() {
            k += 1;
        }
        (
            core::slice::from_raw_parts(argv.add(1), argc.saturating_sub(1)),
            core::slice::from_raw_parts(envp, k),
        )
    };
    main(args, envp)
}

/// A decimal number.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

fn main(all: &[*const u8], envp: &[*const u8]) -> ! {
    keep_caller_mask();
    let mut args = all;
    let mut server: Option<&[u8]> = None;
    let (mut premap, mut fault_around, mut profile, mut stats) = (u64::MAX, u64::MAX, 1, &b""[..]);
    // The options a ready task honours; any other is loader run's.
    while let Some(&a) = args.first() {
        let a = cstr(a);
        let val = args.get(1).map(|&v| cstr(v));
        match (a, val) {
            (b"--server", Some(v)) => server = Some(v),
            (b"--stats", Some(v)) => stats = v,
            (b"--premap-pages", Some(v)) => match number(v) {
                Some(n) => premap = n,
                None => exec_loader(all, envp),
            },
            (b"--fault-around", Some(v)) => match number(v) {
                Some(n) => fault_around = n,
                None => exec_loader(all, envp),
            },
            (b"--no-prefetch-profile", _) => {
                profile = 0;
                args = &args[1..];
                continue;
            }
            (b"--", _) => {
                args = &args[1..];
                break;
            }
            _ if a.starts_with(b"-") => exec_loader(all, envp),
            _ => break,
        }
        args = &args[2..];
    }
    if args.is_empty() {
        write_all(
            2,
            b"usage: l4run [--server SOCKET] [--stats FILE|-] [--premap-pages N] \
              [--fault-around N] [--no-prefetch-profile] PROGRAM [ARGS...]\n",
        );
        exit(2)
    }
    // The socket: as loader run and loader serve find it.
    let mut path = Buf::<108>::new();
    match server.or_else(|| getenv(envp, b"L4FS_SOCKET").filter(|v| !v.is_empty())) {
        Some(p) => {
            path.put(p);
        }
        None => match getenv(envp, b"XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            Some(d) => {
                path.put(d).put(b"/l4fs.sock");
            }
            None => {
                // SAFETY: getuid has no arguments.
                let mut uid = unsafe { sys(102, [0; 6]) } as u64;
                let mut digits = [0u8; 20];
                let mut i = digits.len();
                loop {
                    i -= 1;
                    digits[i] = b'0' + (uid % 10) as u8;
                    uid /= 10;
                    if uid == 0 {
                        break;
                    }
                }
                path.put(b"/tmp/l4fs-").put(&digits[i..]).put(b".sock");
            }
        },
    }
    if path.over || path.n == 0 {
        exec_loader(all, envp)
    }
    // Block the signals we forward; a signalfd reads them.
    let mut set = 0u64;
    for s in FORWARDED {
        set |= 1 << (s - 1);
    }
    // SAFETY: blocks from a readable sigset; signalfd4 of it.
    let sfd = unsafe {
        sys(14, [0, &set as *const u64 as usize, 0, 8, 0, 0]);
        sys(
            289,
            [usize::MAX, &set as *const u64 as usize, 8, 0o2000000, 0, 0],
        ) as i32
    };
    // SAFETY: socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC).
    let sock = unsafe { sys(41, [1, 5 | 0x80000, 0, 0, 0, 0]) } as i32;
    let mut addr = [0u8; 110];
    addr[0] = 1;
    addr[2..2 + path.n].copy_from_slice(path.get());
    // SAFETY: addr is a sockaddr_un of 2 + path bytes.
    let c = unsafe {
        sys(
            42,
            [sock as usize, addr.as_ptr() as usize, 2 + path.n, 0, 0, 0],
        )
    };
    if sock < 0 || c < 0 {
        if server.is_some() {
            write_all(2, b"l4run: cannot reach the file server at ");
            write_all(2, path.get());
            write_all(2, b"\n");
            exit(127)
        }
        exec_loader(all, envp)
    }
    // SAFETY: openat(AT_FDCWD, ".", O_PATH | O_DIRECTORY | O_CLOEXEC).
    let cwd = unsafe {
        sys(
            257,
            [
                -100isize as usize,
                c".".as_ptr() as usize,
                0o10000000 | 0o200000 | 0o2000000,
                0,
                0,
                0,
            ],
        )
    } as i32;
    // SAFETY: umask is set and read back.
    let umask = unsafe {
        let m = sys(95, [0o022, 0, 0, 0, 0, 0]);
        sys(95, [m as usize, 0, 0, 0, 0, 0]);
        m as u64
    };
    // The request (RunRequest's encoding): trace (our start if L4_TRACE is
    // set), umask, prefetch, fault-around, premap (u64::MAX: the server's
    // defaults), profile, stats, profile head unset, program, args,
    // environment, our CPU and CPU mask, the signals we ignore and our
    // caller's signal mask, our resource limits and scheduling.
    // SAFETY: the one user of REQ, single-threaded.
    let req = unsafe { &mut *core::ptr::addr_of_mut!(REQ) };
    req.put(&RUN.to_le_bytes());
    let trace = getenv(envp, b"L4_TRACE").is_some();
    let mut ts = [0u64; 2];
    if trace {
        // SAFETY: clock_gettime(CLOCK_MONOTONIC) into ts.
        unsafe { sys(228, [1, ts.as_mut_ptr() as usize, 0, 0, 0, 0]) };
    }
    req.word(ts[0] * 1_000_000_000 + ts[1])
        .word(umask)
        .word(u64::MAX)
        .word(fault_around)
        .word(premap)
        .word(profile)
        .bytes(stats)
        .word(u64::MAX)
        .bytes(cstr(args[0]))
        .word(args.len() as u64 - 1);
    for &a in &args[1..] {
        req.bytes(cstr(a));
    }
    let env: &[*const u8] = envp;
    let keep = |e: &&*const u8| {
        let s = cstr(**e);
        !(s.len() > BOOTSTRAP_ENV.len()
            && s.starts_with(BOOTSTRAP_ENV)
            && s[BOOTSTRAP_ENV.len()] == b'=')
    };
    req.word(env.iter().filter(keep).count() as u64);
    for e in env.iter().filter(keep) {
        req.bytes(cstr(*e));
    }
    // The CPU we run on (getcpu): the server's task moves there.
    let mut cpu: u32 = u32::MAX;
    // SAFETY: getcpu writes one u32.
    let r = unsafe { sys(309, [&mut cpu as *mut u32 as usize, 0, 0, 0, 0, 0]) };
    req.word(if r == 0 { u64::from(cpu) } else { u64::MAX });
    // The CPUs we may run on (sched_getaffinity): the program's, as if we
    // had executed it.
    let mut mask = [0u8; 128];
    // SAFETY: sched_getaffinity(0, len, mask) writes at most `len` bytes
    // of `mask` and returns how many.
    let n = unsafe { sys(204, [0, mask.len(), mask.as_mut_ptr() as usize, 0, 0, 0]) };
    req.bytes(&mask[..usize::try_from(n).unwrap_or(0).min(mask.len())]);
    // The signals we ignore and our mask as we were started with them.
    req.word(ignored_signals())
        .word(CALLER_MASK.load(Ordering::Relaxed));
    // Our resource limits (prlimit64 of each of Linux's 16): the
    // program's, as if we had executed it.
    let mut limits = [[0u64; 3]; 16];
    let mut n = 0;
    for res in 0..16usize {
        let mut old = [0u64; 2];
        // SAFETY: no new limit; the kernel writes one struct rlimit64.
        let r = unsafe { sys(302, [0, res, 0, old.as_mut_ptr() as usize, 0, 0]) };
        if r == 0 {
            limits[n] = [res as u64, old[0], old[1]];
            n += 1;
        }
    }
    req.word(n as u64);
    for l in &limits[..n] {
        req.word(l[0]).word(l[1]).word(l[2]);
    }
    // Our scheduling (sched_getscheduler, sched_getparam, getpriority):
    // the program's.
    let mut param = 0i32;
    // SAFETY: system calls on this thread with integer arguments or a
    // writable int (struct sched_param).
    let (policy, prio) = unsafe {
        let policy = sys(145, [0; 6]);
        sys(143, [0, &mut param as *mut i32 as usize, 0, 0, 0, 0]);
        (policy, sys(140, [0, 0, 0, 0, 0, 0]))
    };
    if policy >= 0 && prio > 0 {
        // getpriority's system call returns 20 - nice.
        req.word(1)
            .word(policy as u64)
            .word(param.max(0) as u64)
            .word((20 - prio) as i64 as u64);
    } else {
        req.word(0);
    }
    if req.over || cwd < 0 {
        close(sock);
        exec_loader(all, envp)
    }
    // RUN with stdin, stdout, stderr, the directory.
    let mut ctl = [0u64; 4];
    ctl[0] = 16 + 16;
    ctl[1] = 1 | 1 << 32;
    ctl[2] = 1 << 32; // fds 0, 1
    ctl[3] = 2 | (cwd as u64) << 32;
    let iov = [req.get().as_ptr() as usize, req.n];
    let m = MsgHdr {
        name: 0,
        namelen: 0,
        iov: &iov,
        iovlen: 1,
        control: ctl.as_mut_ptr() as *mut u8,
        controllen: 32,
        flags: 0,
    };
    // SAFETY: m describes readable buffers (MSG_NOSIGNAL).
    let sent = unsafe {
        sys(
            46,
            [sock as usize, &m as *const MsgHdr as usize, 0x4000, 0, 0, 0],
        )
    };
    close(cwd);
    if sent < 0 {
        close(sock);
        exec_loader(all, envp)
    }
    let mut buf = [0u8; 4096];
    let mut pidfd = -1;
    loop {
        // pollfds: fd, events POLLIN (bits 32..48), revents (48..64).
        let mut pfd = [sock as u32 as u64 | 1 << 32, sfd as u32 as u64 | 1 << 32];
        let nfds = if pidfd >= 0 && sfd >= 0 { 2 } else { 1 };
        // SAFETY: pfd holds nfds pollfds.
        let r = unsafe { sys(7, [pfd.as_mut_ptr() as usize, nfds, usize::MAX, 0, 0, 0]) };
        if r == -4 {
            continue;
        }
        if nfds == 2 && pfd[1] >> 48 != 0 {
            let mut si = [0u32; 32];
            // SAFETY: reads one signalfd_siginfo.
            let n = unsafe { sys(0, [sfd as usize, si.as_mut_ptr() as usize, 128, 0, 0, 0]) };
            if n == 128 {
                // SAFETY: pidfd_send_signal(pidfd, signo, NULL, 0).
                unsafe { sys(424, [pidfd as usize, si[0] as usize, 0, 0, 0, 0]) };
            }
            if pfd[0] >> 48 == 0 {
                continue;
            }
        }
        let Some((kind, n, fd)) = recv(sock, &mut buf) else {
            write_all(
                2,
                b"l4run: the file server (loader serve) ended during the run\n",
            );
            exit(1)
        };
        match kind {
            STARTED => pidfd = fd,
            EXIT if n >= 12 => {
                let mut w = [0u8; 8];
                w.copy_from_slice(&buf[4..12]);
                exit(u64::from_le_bytes(w) as i32)
            }
            REFUSED | FAILED => {
                write_all(2, b"loader: ");
                write_all(2, &buf[4..n]);
                write_all(2, b"\n");
                exit(127)
            }
            NO_READY => {
                close(sock);
                exec_loader(all, envp)
            }
            _ => {}
        }
    }
}
