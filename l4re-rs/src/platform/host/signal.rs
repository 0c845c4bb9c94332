//! Signals on the host: masks, waiting, dispositions, and the two signal
//! handlers the host's tasks need (recording a crash, forwarding a
//! termination request). Signal numbers are Linux's (`libc::SIG*`).
//!
//! The handlers installed here only touch atomics and make
//! async-signal-safe system calls, which is why installing them is safe.

use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Highest signal number (real-time signals included).
const MAX_SIGNAL: i32 = 64;

/// A set of signals (`sigset_t`).
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl SigSet {
    /// The empty set. Corresponds to `sigemptyset`.
    pub fn empty() -> SigSet {
        // SAFETY: all-zero is a valid `sigset_t`, which sigemptyset then
        // initializes properly.
        let mut s: libc::sigset_t = unsafe { core::mem::zeroed() };
        // SAFETY: `s` is a live `sigset_t`.
        unsafe { libc::sigemptyset(&mut s) };
        SigSet(s)
    }

    /// Every signal. Corresponds to `sigfillset`.
    pub fn full() -> SigSet {
        let mut s = SigSet::empty();
        // SAFETY: `s.0` is a live, initialized `sigset_t`.
        unsafe { libc::sigfillset(&mut s.0) };
        s
    }

    /// The set of `signals`. Corresponds to `sigaddset` of each.
    pub fn of(signals: &[i32]) -> SigSet {
        let mut s = SigSet::empty();
        for &sig in signals {
            // SAFETY: `s.0` is a live, initialized `sigset_t`; an invalid
            // number is refused with EINVAL.
            unsafe { libc::sigaddset(&mut s.0, sig) };
        }
        s
    }

    /// Adds these signals to the calling thread's mask. Corresponds to
    /// `pthread_sigmask(SIG_BLOCK)`.
    pub fn block(&self) {
        self.mask(libc::SIG_BLOCK);
    }

    /// Makes this set the calling thread's mask. Corresponds to
    /// `pthread_sigmask(SIG_SETMASK)`.
    pub fn set_mask(&self) {
        self.mask(libc::SIG_SETMASK);
    }

    fn mask(&self, how: i32) {
        // SAFETY: a valid set; only the calling thread's mask changes.
        unsafe { libc::pthread_sigmask(how, &self.0, core::ptr::null_mut()) };
    }

    /// The set whose bit `n - 1` stands for signal `n` (the kernel's
    /// `sigset_t` word, as `/proc/PID/status` shows it in hex).
    pub fn from_bits(bits: u64) -> SigSet {
        let signals: Vec<i32> = (1..=MAX_SIGNAL)
            .filter(|s| bits & 1 << (s - 1) != 0)
            .collect();
        SigSet::of(&signals)
    }

    /// The set as in [`from_bits`](Self::from_bits).
    pub fn bits(&self) -> u64 {
        (1..=MAX_SIGNAL)
            // SAFETY: a valid set.
            .filter(|&s| unsafe { libc::sigismember(&self.0, s) } == 1)
            .fold(0, |b, s| b | 1 << (s - 1))
    }

    /// The calling thread's mask. Corresponds to `pthread_sigmask(0,
    /// NULL, &set)`.
    pub fn current() -> SigSet {
        let mut s = SigSet::empty();
        // SAFETY: no new mask, a live output set.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, core::ptr::null(), &mut s.0) };
        s
    }

    /// Waits for one of these signals (which must be blocked in every
    /// thread) and returns its number. Corresponds to `sigwait`.
    pub fn wait(&self) -> i32 {
        let mut sig = 0;
        // SAFETY: a valid set and a live output integer.
        unsafe { libc::sigwait(&self.0, &mut sig) };
        sig
    }
}

impl core::fmt::Debug for SigSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let members: Vec<i32> = (1..=MAX_SIGNAL)
            // SAFETY: a valid set.
            .filter(|&s| unsafe { libc::sigismember(&self.0, s) } == 1)
            .collect();
        write!(f, "SigSet{members:?}")
    }
}

/// Blocks every signal in the calling thread (threads that must not take
/// the signals meant for a program sharing their process).
pub fn block_all() {
    SigSet::full().block();
}

/// Sets `action` for `sig`; `handler` is a `sa_sigaction` value.
fn set_action(sig: i32, handler: usize, flags: i32) {
    // SAFETY: all-zero is a valid `sigaction`; the fields are then set, and
    // `handler` is `SIG_DFL` or one of this module's handlers, which only
    // touch atomics and make async-signal-safe calls.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, core::ptr::null_mut());
    }
}

/// Resets the process's signal state: the default disposition for every
/// signal (but `SIGKILL` and `SIGSTOP`, and including the two real-time
/// signals the C library reserves: the program's own takes them over) and
/// no alternate signal stack for the calling thread. Corresponds to `sigaction(SIG_DFL)` of each and
/// `sigaltstack(SS_DISABLE)`. (`execve` leaves ignored signals ignored:
/// [`ignore`] those the program is to inherit afterwards.)
///
/// Rust's runtime handlers (stack-overflow reports) are gone afterwards: a
/// stack overflow is then a plain `SIGSEGV`.
pub fn reset_dispositions() {
    for sig in (1..=MAX_SIGNAL).filter(|&s| settable(s)) {
        set_disposition(sig, libc::SIG_DFL);
    }
    let ss = libc::stack_t {
        ss_sp: core::ptr::null_mut(),
        ss_flags: libc::SS_DISABLE,
        ss_size: 0,
    };
    // SAFETY: disabling the alternate stack reads only `ss`.
    unsafe { libc::sigaltstack(&ss, core::ptr::null_mut()) };
}

/// Whether `sig` may be given a disposition: not `SIGKILL` or `SIGSTOP`.
fn settable(sig: i32) -> bool {
    sig != libc::SIGKILL && sig != libc::SIGSTOP
}

/// Sets `sig` to `SIG_DFL` or `SIG_IGN` (`disposition`). The two
/// real-time signals the C library reserves for itself (32 and 33, which
/// its `sigaction` refuses) through the system call: a program inherits
/// them ignored as any other across `execve`, and its own C library
/// takes them over when it starts. Corresponds to `sigaction(2)`.
fn set_disposition(sig: i32, disposition: libc::sighandler_t) {
    if !(32..=33).contains(&sig) {
        set_action(sig, disposition, 0);
        return;
    }
    // The kernel's `struct sigaction`: handler, flags, restorer, mask.
    let act: [u64; 4] = [disposition as u64, 0, 0, 0];
    // SAFETY: rt_sigaction reads one kernel sigaction of 8-byte sigsets
    // and writes nothing (no old action asked for).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            act.as_ptr(),
            core::ptr::null_mut::<u64>(),
            8usize,
        )
    };
}

/// The signals this process ignores (`SIG_IGN`), as a word whose bit
/// `n - 1` stands for signal `n` (the form of `SigIgn` in
/// `/proc/PID/status`; the C library's reserved signals 32 and 33
/// included, which its `sigset_t` cannot hold). Corresponds to
/// `sigaction(sig, NULL, &old)` of each.
pub fn ignored() -> u64 {
    (1..=MAX_SIGNAL)
        .filter(|&sig| {
            // The kernel's `struct sigaction`: handler, flags, restorer,
            // mask.
            let mut old = [0u64; 4];
            // SAFETY: no new action; the kernel writes one kernel
            // sigaction of 8-byte sigsets into `old`.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    core::ptr::null::<u64>(),
                    old.as_mut_ptr(),
                    8usize,
                )
            };
            r == 0 && old[0] == libc::SIG_IGN as u64
        })
        .fold(0, |b, sig| b | 1 << (sig - 1))
}

/// Makes the process ignore the signals of `signals` (bit `n - 1`:
/// signal `n`, as [`ignored`] gives them; those that cannot be ignored
/// are passed over), as a caller's ignored signals stay ignored across
/// `execve`. Corresponds to `sigaction(SIG_IGN)` of each.
pub fn ignore(signals: u64) {
    for sig in (1..=MAX_SIGNAL).filter(|&s| settable(s) && signals & 1 << (s - 1) != 0) {
        set_disposition(sig, libc::SIG_IGN);
    }
}

/// What a program inherits of its caller's signal state across `execve`
/// (bit `n - 1` of a word stands for signal `n`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inherited {
    /// The signals ignored ([`ignored`]).
    pub ignored: u64,
    /// The main thread's mask.
    pub blocked: u64,
}

/// What this process inherited from the program that executed it (see
/// [`Inherited`]), as it was before any code of this process ran (before
/// Rust's runtime ignores `SIGPIPE`): read by a constructor in
/// `.init_array`. `None` if the constructor did not run.
pub fn inherited() -> Option<Inherited> {
    // Named here so that the linker keeps the constructor with this
    // function.
    core::hint::black_box(&READ_INHERITED);
    let ignored = INHERITED_IGNORED.load(Ordering::Relaxed);
    (ignored != u64::MAX).then(|| Inherited {
        ignored,
        blocked: INHERITED_BLOCKED.load(Ordering::Relaxed),
    })
}

/// See [`inherited`] (`u64::MAX`: not read).
static INHERITED_IGNORED: AtomicU64 = AtomicU64::new(u64::MAX);
static INHERITED_BLOCKED: AtomicU64 = AtomicU64::new(0);

/// Reads what [`inherited`] returns, before `main` and before the Rust
/// runtime's set-up.
extern "C" fn read_inherited() {
    INHERITED_BLOCKED.store(SigSet::current().bits(), Ordering::Relaxed);
    INHERITED_IGNORED.store(ignored(), Ordering::Relaxed);
}

// SAFETY: a function pointer in `.init_array` is called once by the C
// library before `main`, with no arguments, as its type says; it only
// queries signal state and stores two atomics.
#[used]
#[unsafe(link_section = ".init_array")]
static READ_INHERITED: extern "C" fn() = read_inherited;

/// Where [`record_crashes`] writes what it learns of a crash: counters in
/// memory that outlives the process (shared with its creator).
#[derive(Debug, Clone, Copy)]
pub struct CrashRecord {
    /// The signal number; written last, and only while it is 0 (the first
    /// crash is kept).
    pub signo: &'static AtomicU64,
    /// `si_code` (sign-extended).
    pub code: &'static AtomicU64,
    /// `si_addr`: the faulting address.
    pub addr: &'static AtomicU64,
    /// The program counter (`REG_RIP`).
    pub pc: &'static AtomicU64,
    /// The page-fault error code (`REG_ERR`: bit 1 write, bit 4 fetch).
    pub err: &'static AtomicU64,
}

static CRASH_RECORD: OnceLock<CrashRecord> = OnceLock::new();

/// Records a crash, then lets it happen for real.
extern "C" fn on_crash(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext to an
    // SA_SIGINFO handler. Only atomics and async-signal-safe calls follow.
    let (code, addr, pc, err) = unsafe {
        let g = &(*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs;
        (
            (*info).si_code,
            (*info).si_addr() as u64,
            g[libc::REG_RIP as usize] as u64,
            g[libc::REG_ERR as usize] as u64,
        )
    };
    if let Some(r) = CRASH_RECORD.get() {
        if r.signo.load(Ordering::Relaxed) == 0 {
            r.code.store(code as i64 as u64, Ordering::Relaxed);
            r.addr.store(addr, Ordering::Relaxed);
            r.pc.store(pc, Ordering::Relaxed);
            r.err.store(err, Ordering::Relaxed);
            r.signo.store(sig as u64, Ordering::Relaxed);
        }
    }
    // The handler was reset on entry (SA_RESETHAND): a fault raised by the
    // kernel happens again on return and ends the process; a signal sent by
    // someone is raised again.
    if code <= 0 {
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
}

/// Installs, for each of `signals` (`SIGSEGV`, `SIGBUS`…), a one-shot
/// handler that writes the first crash into `record`, then lets the
/// signal take its default effect. The record is set once per process
/// (later calls install the handler with the first record). Corresponds
/// to `sigaction(SA_SIGINFO | SA_RESETHAND | SA_NODEFER)`.
pub fn record_crashes(signals: &[i32], record: CrashRecord) {
    let _ = CRASH_RECORD.set(record);
    for &sig in signals {
        set_action(
            sig,
            on_crash as *const () as usize,
            libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_NODEFER,
        );
    }
}

/// The process [`forward`] sends each signal to, by signal number.
static FORWARD_TO: [AtomicPtr<AtomicI32>; MAX_SIGNAL as usize + 1] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_SIGNAL as usize + 1];

extern "C" fn on_forward(sig: i32) {
    let to = FORWARD_TO
        .get(sig as usize)
        .map(|p| p.load(Ordering::Relaxed))
        .filter(|p| !p.is_null());
    // SAFETY: the pointer came from a `&'static AtomicI32` in `forward`.
    let pid = to.map_or(0, |p| unsafe { &*p }.load(Ordering::Relaxed));
    // SAFETY: kill, signal and raise are async-signal-safe.
    unsafe {
        if pid > 0 {
            libc::kill(pid, sig);
        } else {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Forwards `sig` to the process whose id `to` holds when the signal
/// arrives; while `to` holds no process (0 or less) the signal takes its
/// default effect here. Corresponds to `signal(sig, handler)` with a
/// handler that calls `kill(to, sig)`.
pub fn forward(sig: i32, to: &'static AtomicI32) {
    let Some(slot) = FORWARD_TO.get(sig as usize) else {
        return;
    };
    slot.store(to as *const AtomicI32 as *mut AtomicI32, Ordering::Relaxed);
    set_action(sig, on_forward as *const () as usize, libc::SA_RESTART);
}

/// Sends `sig` to thread `tid` of thread group `tgid`. Corresponds to
/// `tgkill(2)`.
pub fn signal_thread(tgid: i32, tid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: a system call with integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends `sig` to process `pid` (or, for a thread id, that thread's
/// process). Corresponds to `kill(2)`.
pub fn kill(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: a system call with integer arguments only.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_as_words_are_the_kernels() {
        // SIGHUP (1), SIGUSR1 (10), SIGRTMIN+3 of the kernel (37), 64.
        let bits = 1 | 1 << 9 | 1 << 36 | 1 << 63;
        assert_eq!(SigSet::from_bits(bits).bits(), bits);
        assert_eq!(SigSet::of(&[libc::SIGINT]).bits(), 1 << 1);
        assert_eq!(SigSet::empty().bits(), 0);
    }

    #[test]
    fn what_this_process_inherited_was_read_before_main() {
        // The constructor ran in this test program too; Rust's runtime
        // ignores SIGPIPE after it, which `ignored` now shows.
        assert!(inherited().is_some());
        assert_ne!(ignored() & 1 << (libc::SIGPIPE - 1), 0);
    }

    #[test]
    fn the_mask_of_a_thread_is_read_back() {
        std::thread::spawn(|| {
            SigSet::of(&[libc::SIGUSR2]).block();
            assert_eq!(
                SigSet::current().bits() & 1 << (libc::SIGUSR2 - 1),
                1 << (libc::SIGUSR2 - 1)
            );
        })
        .join()
        .unwrap();
    }
}
