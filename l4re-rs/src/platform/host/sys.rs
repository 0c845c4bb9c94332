//! Process-level system calls of the host that `rustix` does not offer.

use std::os::fd::{AsRawFd, BorrowedFd};

/// The value of entry `kind` (`AT_*`) of this process's auxiliary vector,
/// 0 if there is none. Corresponds to `getauxval(3)`.
pub fn auxval(kind: u64) -> u64 {
    // SAFETY: getauxval only reads the process's own auxiliary vector.
    unsafe { libc::getauxval(kind as _) }
}

/// Whether this process may write the file `fd` refers to (an `O_PATH`
/// descriptor will do), by its effective ids. Corresponds to
/// `faccessat2(fd, "", W_OK, AT_EACCESS | AT_EMPTY_PATH)`.
pub fn may_write(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: faccessat2 with a valid descriptor and an empty
    // NUL-terminated path; it only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::W_OK,
            libc::AT_EACCESS | libc::AT_EMPTY_PATH,
        )
    };
    r == 0
}

/// Ends the process at once, every thread of it, with `status`, without
/// running exit handlers or flushing buffers. Corresponds to
/// `exit_group(2)`.
pub fn exit_group(status: i32) -> ! {
    // SAFETY: a system call with an integer argument only; it does not
    // return.
    unsafe { libc::syscall(libc::SYS_exit_group, status) };
    unreachable!("exit_group returned")
}

/// Has the kernel write 0 to `word` and wake one futex waiter on it when
/// the calling thread ends (its `clear_child_tid`; a C library that
/// starts later in this thread may set its own). Corresponds to
/// `set_tid_address(2)`.
pub fn clear_on_exit(word: &'static std::sync::atomic::AtomicU32) {
    // SAFETY: the kernel keeps the address and writes a u32 there when
    // this thread ends; `word` is a static u32 that lives as long as the
    // process.
    unsafe { libc::syscall(libc::SYS_set_tid_address, word.as_ptr()) };
}

/// Linux's resource limits: `RLIMIT_CPU` (0) to `RLIMIT_RTTIME` (15).
pub const RLIMITS: u32 = 16;

/// This process's resource limits: `(resource, soft, hard)` for each of
/// the [`RLIMITS`] (`u64::MAX`: unlimited; a resource the kernel does not
/// know is left out). Corresponds to `prlimit64(0, resource, NULL, &old)`
/// of each.
pub fn rlimits() -> Vec<(u32, u64, u64)> {
    (0..RLIMITS)
        .filter_map(|res| {
            let mut old = [0u64; 2];
            // SAFETY: no new limit; the kernel writes one `struct
            // rlimit64` (two u64) into `old`.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    res,
                    core::ptr::null::<u64>(),
                    old.as_mut_ptr(),
                )
            };
            (r == 0).then_some((res, old[0], old[1]))
        })
        .collect()
}

/// Sets this process's resource limits to `limits` (as [`rlimits`] gives
/// them); returns the resources the kernel refused (a hard limit above
/// ours without `CAP_SYS_RESOURCE`, a soft one above the hard one), which
/// keep their limits. Corresponds to `prlimit64(0, resource, &new, NULL)`
/// of each.
pub fn set_rlimits(limits: &[(u32, u64, u64)]) -> Vec<u32> {
    limits
        .iter()
        .filter(|&&(res, soft, hard)| {
            let new = [soft, hard];
            // SAFETY: the kernel reads one `struct rlimit64` from `new`
            // and writes nothing.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    res,
                    new.as_ptr(),
                    core::ptr::null_mut::<u64>(),
                )
            };
            r != 0
        })
        .map(|&(res, _, _)| res)
        .collect()
}

/// A thread's scheduling, as a program inherits it across `execve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scheduling {
    /// `SCHED_*` (with `SCHED_RESET_ON_FORK` if set).
    pub policy: u32,
    /// The real-time priority (0 for the normal policies).
    pub priority: u32,
    /// The nice value (-20 to 19).
    pub nice: i32,
}

/// The calling thread's scheduling. Corresponds to
/// `sched_getscheduler(0)`, `sched_getparam(0)` and
/// `getpriority(PRIO_PROCESS, 0)`.
pub fn scheduling() -> Scheduling {
    let mut param = 0i32;
    // SAFETY: system calls on the calling thread with an integer argument
    // or a live `int` (struct sched_param) to write.
    let (policy, nice) = unsafe {
        let policy = libc::syscall(libc::SYS_sched_getscheduler, 0);
        libc::syscall(libc::SYS_sched_getparam, 0, &mut param as *mut i32);
        // The system call returns 20 - nice (1 to 40).
        let p = libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, 0);
        (policy, if p > 0 { 20 - p as i32 } else { 0 })
    };
    Scheduling {
        policy: u32::try_from(policy).unwrap_or(0),
        priority: u32::try_from(param).unwrap_or(0),
        nice,
    }
}

/// Gives the calling thread scheduling `s`: its policy and priority
/// first, then its nice value; returns whether the kernel took both (an
/// unprivileged thread may not raise its priority: what is refused stays
/// as it was). Corresponds to `sched_setscheduler(0, …)` and
/// `setpriority(PRIO_PROCESS, 0, nice)`.
pub fn set_scheduling(s: &Scheduling) -> bool {
    let param = s.priority as i32;
    // SAFETY: system calls on the calling thread with integer arguments
    // and a live `int` (struct sched_param) to read.
    unsafe {
        let a = libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            s.policy as i32,
            &param as *const i32,
        );
        let b = libc::syscall(libc::SYS_setpriority, libc::PRIO_PROCESS, 0, s.nice);
        a == 0 && b == 0
    }
}

/// Where a thread (of any process) runs: its `/proc/TID/stat`, kept open,
/// so that each look is one `pread` (about 1 µs) rather than an open, a
/// read and a close.
#[derive(Debug)]
pub struct ThreadCpu {
    tid: u32,
    stat: std::fs::File,
}

impl ThreadCpu {
    /// Opens `/proc/TID/stat` of thread `tid`.
    pub fn open(tid: u32) -> std::io::Result<ThreadCpu> {
        let stat = std::fs::File::open(format!("/proc/{tid}/stat"))?;
        Ok(ThreadCpu { tid, stat })
    }

    /// The thread.
    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// The CPU the thread last ran on (the 39th field of its `stat`,
    /// `processor`); `None` if the thread is gone or the field cannot be
    /// read.
    pub fn cpu(&self) -> Option<usize> {
        let mut buf = [0u8; 1024];
        let n = rustix::io::pread(&self.stat, &mut buf, 0).ok()?;
        let stat = core::str::from_utf8(&buf[..n]).ok()?;
        // The name (field 2) may hold spaces and parentheses: fields 3 on
        // follow the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(39 - 3)?.parse().ok()
    }
}

/// Restricts the calling thread to CPU `cpu`. Corresponds to
/// `sched_setaffinity(0, {cpu})`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threads_scheduling_is_read_and_lowered() {
        std::thread::spawn(|| {
            let mine = scheduling();
            assert_eq!(mine.policy, libc::SCHED_OTHER as u32);
            assert!(set_scheduling(&mine));
            let lower = Scheduling {
                policy: libc::SCHED_BATCH as u32,
                priority: 0,
                nice: (mine.nice + 3).min(19),
            };
            assert!(set_scheduling(&lower));
            assert_eq!(scheduling(), lower);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn limits_are_read_and_set_back() {
        let mine = rlimits();
        assert_eq!(mine.len(), RLIMITS as usize, "{mine:?}");
        // Setting them as they are changes nothing and is never refused.
        assert!(set_rlimits(&mine).is_empty());
        assert_eq!(rlimits(), mine);
        // A soft limit above the hard one is refused and changes nothing.
        let (res, _, hard) = mine[libc::RLIMIT_NOFILE as usize];
        if hard != u64::MAX {
            assert_eq!(set_rlimits(&[(res, hard + 1, hard)]), [res]);
            assert_eq!(rlimits(), mine);
        }
    }
}
