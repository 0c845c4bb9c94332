//! The host's page-fault mechanism: a typed, safe wrapper over Linux
//! `userfaultfd(2)` (what fault IPC to a pager is on Fiasco). Each method
//! names the system call or `ioctl` it corresponds to.
//!
//! Opened with the system call (as root or with `vm.unprivileged_userfaultfd
//! = 1`), falling back to `/dev/userfaultfd` (needs read-write access to
//! it). Kernel-mode faults (a system call touching an unpopulated page) are
//! only delivered without `UFFD_USER_MODE_ONLY`, which a demand-paged
//! program needs (its `write()` from an untouched buffer would fail with
//! `EFAULT` otherwise): [`Uffd::open`] says exactly which of these is
//! missing when it cannot proceed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use rustix::io::Errno;

/// Most events [`Uffd::read_events`] reads at once.
pub const MAX_EVENTS: usize = 16;

/// `UFFD_API` (the API version of the `UFFDIO_API` handshake).
const UFFD_API: u64 = 0xaa;
const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (0xaa << 8) | nr
}
const fn ior(nr: u64, size: u64) -> u64 {
    (2 << 30) | (size << 16) | (0xaa << 8) | nr
}
const UFFDIO_API: u64 = iowr(0x3f, 24);
const UFFDIO_REGISTER: u64 = iowr(0x00, 32);
const UFFDIO_UNREGISTER: u64 = ior(0x01, 16);
const UFFDIO_WAKE: u64 = ior(0x02, 16);
const UFFDIO_COPY: u64 = iowr(0x03, 40);
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, 32);
const UFFDIO_CONTINUE: u64 = iowr(0x07, 32);
/// `UFFDIO_COPY_MODE_DONTWAKE`.
const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1;
/// `UFFDIO_CONTINUE_MODE_DONTWAKE`.
const UFFDIO_CONTINUE_MODE_DONTWAKE: u64 = 1;
/// `UFFDIO_ZEROPAGE_MODE_DONTWAKE`.
const UFFDIO_ZEROPAGE_MODE_DONTWAKE: u64 = 1;
/// `_IO(0xAA, 0x00)` of `/dev/userfaultfd`: `USERFAULTFD_IOC_NEW` (the
/// flags are the plain integer argument; no size is encoded).
pub const USERFAULTFD_IOC_NEW: u64 = 0xaa << 8;

/// Feature bits (`UFFD_FEATURE_*`).
pub mod features {
    /// Fork events: the child's registered ranges get a new uffd.
    pub const EVENT_FORK: u64 = 1 << 1;
    /// Missing-page faults on shared memory (memfd, tmpfs).
    pub const MISSING_SHMEM: u64 = 1 << 5;
    /// The faulting thread's id in page-fault messages.
    pub const THREAD_ID: u64 = 1 << 8;
    /// Minor faults (page in the page cache, not mapped) on shared memory.
    pub const MINOR_SHMEM: u64 = 1 << 10;
}

/// Registration modes.
pub mod mode {
    /// Faults on pages not present at all.
    pub const MISSING: u64 = 1;
    /// Faults on pages present in the page cache but not mapped.
    pub const MINOR: u64 = 4;
}

/// A page-fault event (`struct uffd_msg` of `UFFD_EVENT_PAGEFAULT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFault {
    /// The faulting address (exact, not page-aligned).
    pub addr: u64,
    /// A write access.
    pub write: bool,
    /// A minor fault (the page is in the page cache).
    pub minor: bool,
    /// The faulting thread (if `THREAD_ID` was negotiated).
    pub tid: u32,
}

/// An event read from a uffd (`struct uffd_msg`).
#[derive(Debug)]
pub enum Event {
    /// A page fault.
    Fault(PageFault),
    /// The process forked (`UFFD_EVENT_FORK`): the child's registered
    /// ranges are served through this new uffd.
    Fork(Uffd),
    /// An event we do not act upon.
    Other(u8),
}

/// Outcome of a resolving ioctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Done: the page is mapped, the thread woken.
    Done,
    /// The page was already mapped (another thread's fault, or a
    /// duplicate event): the thread was woken.
    Exists,
    /// The range went away or the page vanished (a revocation raced):
    /// the thread was woken and will fault again.
    Retry,
}

/// A userfaultfd: the descriptor and the features negotiated on it.
///
/// Every range registered with it and every page it maps belong to the
/// address space that opened it (or, for a uffd of a fork event, to the
/// child): resolving ioctls only fill pages that are missing there, so no
/// memory this process already uses as Rust data is changed by them.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    features: u64,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `ioctl(fd, req, arg)` on a uffd, `arg` being the request's structure
/// (all of whose fields are 64-bit) as an array of words; `Err(errno)` on
/// failure.
fn ioctl<const N: usize>(fd: &OwnedFd, req: u64, arg: &mut [u64; N]) -> Result<(), i32> {
    // The size the request number encodes is that of the array: the
    // kernel reads and writes exactly the structure it names.
    debug_assert_eq!((req >> 16) & 0x3fff, (N * 8) as u64);
    // SAFETY: `arg` is a live, exclusively borrowed array of the size
    // encoded in `req` (checked above), which is that request's argument
    // structure; the kernel accesses nothing else of ours, except for
    // `UFFDIO_COPY`'s source, which `copy`/`copy_nowake` take as a slice.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg.as_mut_ptr()) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// What a ranged `UFFDIO_COPY`/`UFFDIO_CONTINUE` did: the bytes resolved
/// from the start of the range (the kernel stops at the first page it
/// cannot resolve) and, when that is not all of them, why: the error of
/// the first page when not even it was resolved, else `EAGAIN` (the kernel
/// does not say what stopped a partial run; ask for that page alone).
fn ranged(r: Result<(), i32>, reported: i64, len: u64) -> (u64, Result<(), i32>) {
    match r {
        Ok(()) => (len, Ok(())),
        Err(e) if reported > 0 => ((reported as u64).min(len), Err(e)),
        Err(e) => (0, Err(e)),
    }
}

impl Uffd {
    /// Opens a uffd with the features `want` (`features::*`); all of them
    /// must be available. Kernel-mode faults are always requested (a loaded
    /// program's system calls touch its untouched pages).
    ///
    /// The error text says what is missing and what to change.
    ///
    /// Corresponds to `userfaultfd(O_CLOEXEC)`, else
    /// `ioctl(USERFAULTFD_IOC_NEW)` on `/dev/userfaultfd`, then
    /// `ioctl(UFFDIO_API)`.
    pub fn open(want: u64) -> Result<Uffd, String> {
        let flags = libc::O_CLOEXEC;
        // SAFETY: the system call only creates a descriptor; what it can do
        // to memory is done through the methods of `Uffd`, each of which
        // only fills pages missing in ranges registered with it.
        let sys = unsafe { rustix::mm::userfaultfd(rustix::mm::UserfaultfdFlags::CLOEXEC) };
        let fd = match sys {
            Ok(fd) => fd,
            Err(sys_err) => match Self::open_dev(flags) {
                Ok(fd) => fd,
                Err(dev_err) => {
                    return Err(format!(
                        "userfaultfd is not available with kernel-mode faults: the system call failed \
                         ({}) and /dev/userfaultfd could not be used ({}). Demand-paged programs need \
                         faults raised inside system calls, which unprivileged users only get with \
                         `sysctl vm.unprivileged_userfaultfd=1`, with read-write access to \
                         /dev/userfaultfd (e.g. `chmod 0666 /dev/userfaultfd` or a group owning it), \
                         or with CAP_SYS_PTRACE; UFFD_USER_MODE_ONLY is not enough because a \
                         program's write() from an untouched buffer would fail with EFAULT",
                        std::io::Error::from(sys_err),
                        dev_err
                    ));
                }
            },
        };
        // The answer's feature word lists what the kernel *supports*, not
        // what this uffd has: exactly the features asked for are enabled.
        let mut api = [UFFD_API, want, 0u64];
        if let Err(e) = ioctl(&fd, UFFDIO_API, &mut api) {
            let why = if e == libc::EPERM && want & features::EVENT_FORK != 0 {
                " (fork events need CAP_SYS_PTRACE or root)"
            } else {
                " (minor faults on shared memory need Linux 5.13)"
            };
            return Err(format!(
                "UFFDIO_API with features {want:#x} failed: {}{why}",
                std::io::Error::from_raw_os_error(e)
            ));
        }
        Ok(Uffd { fd, features: want })
    }

    fn open_dev(flags: i32) -> Result<OwnedFd, String> {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/userfaultfd")
            .map_err(|e| e.to_string())?;
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags as an integer
        // argument and returns a new descriptor, which we then own.
        unsafe {
            let raw = libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as _, flags);
            if raw < 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            Ok(OwnedFd::from_raw_fd(raw))
        }
    }

    /// Whether `fd` is a userfaultfd (its `/proc/self/fd` link names the
    /// anonymous inode `[userfaultfd]`): descriptors received from
    /// another process are checked before they are served.
    pub fn is_uffd(fd: &OwnedFd) -> bool {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .is_ok_and(|l| l.as_os_str() == "anon_inode:[userfaultfd]")
    }

    /// Wraps a uffd received from elsewhere (another process, or a fork
    /// event), on which `UFFDIO_API` was already done.
    pub fn from_fd(fd: OwnedFd, features: u64) -> Uffd {
        Uffd { fd, features }
    }

    /// The features negotiated.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The descriptor.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Registers `[start, start + len)` with `mode` (`mode::*`).
    /// Corresponds to `ioctl(UFFDIO_REGISTER)`.
    pub fn register(&self, start: u64, len: u64, mode: u64) -> Result<(), i32> {
        let mut reg = [start, len, mode, 0u64];
        ioctl(&self.fd, UFFDIO_REGISTER, &mut reg)
    }

    /// Unregisters a range. Corresponds to `ioctl(UFFDIO_UNREGISTER)`.
    pub fn unregister(&self, start: u64, len: u64) -> Result<(), i32> {
        let mut r = [start, len];
        ioctl(&self.fd, UFFDIO_UNREGISTER, &mut r)
    }

    /// Wakes the threads waiting on faults in a range. Corresponds to
    /// `ioctl(UFFDIO_WAKE)`.
    pub fn wake(&self, start: u64, len: u64) {
        let mut r = [start, len];
        let _ = ioctl(&self.fd, UFFDIO_WAKE, &mut r);
    }

    fn outcome(&self, r: Result<(), i32>, start: u64, len: u64) -> Result<Resolved, i32> {
        let Err(e) = r else {
            return Ok(Resolved::Done);
        };
        let o = Self::classify(e)?;
        self.wake(start, len);
        Ok(o)
    }

    /// Copies `src` to `dst` in the registered range and wakes the
    /// faulting threads. Corresponds to `ioctl(UFFDIO_COPY)` of
    /// `src.len()` bytes (whole pages).
    pub fn copy(&self, dst: u64, src: &[u8]) -> Result<Resolved, i32> {
        let len = src.len() as u64;
        let mut c = [dst, src.as_ptr() as u64, len, 0u64, 0u64];
        let r = ioctl(&self.fd, UFFDIO_COPY, &mut c);
        self.outcome(r, dst, len)
    }

    /// Maps zero pages at `[dst, dst + len)`. Corresponds to
    /// `ioctl(UFFDIO_ZEROPAGE)`.
    pub fn zeropage(&self, dst: u64, len: u64) -> Result<Resolved, i32> {
        let mut z = [dst, len, 0u64, 0u64];
        let r = ioctl(&self.fd, UFFDIO_ZEROPAGE, &mut z);
        self.outcome(r, dst, len)
    }

    /// Maps the page-cache pages behind `[dst, dst + len)` of a shared
    /// mapping. Corresponds to `ioctl(UFFDIO_CONTINUE)`.
    pub fn continue_(&self, dst: u64, len: u64) -> Result<Resolved, i32> {
        let mut c = [dst, len, 0u64, 0u64];
        let r = ioctl(&self.fd, UFFDIO_CONTINUE, &mut c);
        self.outcome(r, dst, len)
    }

    /// The outcome for one faulting page of an error `errno` of a
    /// resolving ioctl that did not resolve it, without waking anyone
    /// (the caller wakes): `EEXIST` → [`Resolved::Exists`]; `EFAULT`
    /// (not in the page cache: a hole, or revoked), `ENOENT`/`ESRCH` (the
    /// range or the address space went away) and `EAGAIN` (the address
    /// space is changing) → [`Resolved::Retry`]; anything else is an error.
    pub fn classify(errno: i32) -> Result<Resolved, i32> {
        match errno {
            libc::EEXIST => Ok(Resolved::Exists),
            libc::EFAULT | libc::ENOENT | libc::EAGAIN | libc::ESRCH => Ok(Resolved::Retry),
            e => Err(e),
        }
    }

    /// Maps as much as it can of `[dst, dst + len)` of a shared mapping
    /// from the page cache (`UFFDIO_CONTINUE`) **without waking** anyone,
    /// stopping at the first page that is not in the page cache (never
    /// allocating one: holes stay holes) or already mapped. Returns the
    /// bytes mapped from `dst` on and, if not all, why: the errno of the
    /// page at `dst` when nothing was mapped, else `EAGAIN` (the kernel
    /// does not say what stopped a partial run: ask for that page alone).
    /// The caller wakes the threads it resolved faults for
    /// ([`wake`](Self::wake)); a thread that faulted on another of these
    /// pages meanwhile has its event queued, and resolving it finds the
    /// page mapped (`EEXIST`) and wakes it.
    pub fn continue_nowake(&self, dst: u64, len: u64) -> (u64, Result<(), i32>) {
        let mut c = [dst, len, UFFDIO_CONTINUE_MODE_DONTWAKE, 0u64];
        let r = ioctl(&self.fd, UFFDIO_CONTINUE, &mut c);
        ranged(r, c[3] as i64, len)
    }

    /// Copies as much as it can of `src` to `dst` **without waking**
    /// anyone, stopping at the first page already mapped; returns as
    /// [`continue_nowake`](Self::continue_nowake). Corresponds to
    /// `ioctl(UFFDIO_COPY)` with `UFFDIO_COPY_MODE_DONTWAKE`.
    pub fn copy_nowake(&self, dst: u64, src: &[u8]) -> (u64, Result<(), i32>) {
        let len = src.len() as u64;
        let mut c = [
            dst,
            src.as_ptr() as u64,
            len,
            UFFDIO_COPY_MODE_DONTWAKE,
            0u64,
        ];
        let r = ioctl(&self.fd, UFFDIO_COPY, &mut c);
        ranged(r, c[4] as i64, len)
    }

    /// Maps the zero page at as much as it can of `[dst, dst + len)` of
    /// an anonymous mapping **without waking** anyone, stopping at the
    /// first page already mapped; returns as
    /// [`continue_nowake`](Self::continue_nowake). The first write to
    /// such a page is the kernel's own copy-on-write fault (a fresh page,
    /// no userfault): pages that are only ever read cost no memory.
    /// Corresponds to `ioctl(UFFDIO_ZEROPAGE)` with
    /// `UFFDIO_ZEROPAGE_MODE_DONTWAKE`.
    pub fn zeropage_nowake(&self, dst: u64, len: u64) -> (u64, Result<(), i32>) {
        let mut z = [dst, len, UFFDIO_ZEROPAGE_MODE_DONTWAKE, 0u64];
        let r = ioctl(&self.fd, UFFDIO_ZEROPAGE, &mut z);
        ranged(r, z[3] as i64, len)
    }

    /// Makes reads non-blocking (for [`wait_readable`](Self::wait_readable)
    /// and [`try_read_event`](Self::try_read_event); `poll` on a blocking
    /// uffd always reports `POLLERR`). Corresponds to
    /// `fcntl(F_SETFL, O_NONBLOCK)`.
    pub fn set_nonblocking(&self) -> Result<(), i32> {
        let fl = rustix::fs::fcntl_getfl(&self.fd).map_err(Errno::raw_os_error)?;
        rustix::fs::fcntl_setfl(&self.fd, fl | OFlags::NONBLOCK).map_err(Errno::raw_os_error)
    }

    /// Waits at most `timeout_ms` (negative: forever) for an event (the
    /// uffd must be non-blocking); `true` when one is pending.
    /// Corresponds to `poll(POLLIN)`.
    pub fn wait_readable(&self, timeout_ms: i32) -> bool {
        let mut p = [PollFd::new(&self.fd, PollFlags::IN)];
        let timeout = (timeout_ms >= 0).then(|| Timespec {
            tv_sec: i64::from(timeout_ms / 1000),
            tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
        });
        let r = rustix::event::poll(&mut p, timeout.as_ref());
        r.is_ok_and(|n| n > 0) && p[0].revents().contains(PollFlags::IN)
    }

    /// Reads one `struct uffd_msg` (32 bytes): the byte count, or the
    /// errno. Corresponds to `read(2)`.
    fn read_msg(&self, msg: &mut [u8; 32]) -> Result<usize, i32> {
        rustix::io::read(&self.fd, msg).map_err(Errno::raw_os_error)
    }

    /// Reads the next event if one is pending (non-blocking uffd):
    /// `Ok(None)` when there is none.
    pub fn try_read_event(&self) -> Result<Option<Event>, i32> {
        let mut msg = [0u8; 32];
        loop {
            let n = match self.read_msg(&mut msg) {
                Ok(n) => n,
                Err(libc::EINTR) => continue,
                Err(libc::EAGAIN) => return Ok(None),
                Err(e) => return Err(e),
            };
            if n != 32 {
                return Err(libc::EIO);
            }
            return Ok(Some(self.decode(&msg)));
        }
    }

    /// Whether the address space this uffd serves still exists: `false`
    /// once every process using it has exited or called `execve`.
    ///
    /// Probes with `UFFDIO_ZEROPAGE` of the page at `unregistered`, which
    /// must lie outside every range registered with this uffd (and with
    /// any other uffd of that address space): a live address space
    /// answers `ENOENT` (nothing registered there, nothing changes), a
    /// dead one `ESRCH`.
    pub fn mm_alive(&self, unregistered: u64) -> bool {
        let mut z = [unregistered & !0xfff, 4096u64, 0u64, 0u64];
        // Anything but the answers of a live address space (ESRCH, or
        // ENOTTY/EINVAL/EBADF from a descriptor that is no uffd) ends the
        // service: it must never wait forever.
        matches!(
            ioctl(&self.fd, UFFDIO_ZEROPAGE, &mut z),
            Ok(()) | Err(libc::ENOENT | libc::EEXIST | libc::EAGAIN)
        )
    }

    /// Reads the next event (blocking). `Ok(None)` when the uffd is closed
    /// on the other side (the process is gone).
    pub fn read_event(&self) -> Result<Option<Event>, i32> {
        let mut msg = [0u8; 32];
        loop {
            let n = match self.read_msg(&mut msg) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(libc::EINTR | libc::EAGAIN) => continue,
                Err(libc::EBADF) => return Ok(None),
                Err(e) => return Err(e),
            };
            if n != 32 {
                return Err(libc::EIO);
            }
            break;
        }
        Ok(Some(self.decode(&msg)))
    }

    /// Reads the pending events, at least one (blocking), at most
    /// [`MAX_EVENTS`], with one `read(2)`, appending them to `out` (the
    /// caller's, reused: nothing is allocated once it has the room).
    /// `Ok(false)` when the uffd is closed on the other side (the process
    /// is gone). Several threads faulting at once are served with one
    /// system call.
    pub fn read_events(&self, out: &mut Vec<Event>) -> Result<bool, i32> {
        let mut msgs = [0u8; 32 * MAX_EVENTS];
        let n = loop {
            match rustix::io::read(&self.fd, &mut msgs).map_err(Errno::raw_os_error) {
                Ok(0) => return Ok(false),
                Ok(n) => break n,
                Err(libc::EINTR | libc::EAGAIN) => continue,
                Err(libc::EBADF) => return Ok(false),
                Err(e) => return Err(e),
            }
        };
        if n % 32 != 0 {
            return Err(libc::EIO);
        }
        for m in msgs[..n].chunks_exact(32) {
            out.push(self.decode(m.try_into().expect("32 bytes")));
        }
        Ok(true)
    }

    fn decode(&self, bytes: &[u8; 32]) -> Event {
        let mut msg = [0u64; 4];
        for (w, b) in msg.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        }
        let event = (msg[0] & 0xff) as u8;
        match event {
            0x12 => Event::Fault(PageFault {
                addr: msg[2],
                write: msg[1] & 1 != 0,
                minor: msg[1] & 4 != 0,
                tid: msg[3] as u32,
            }),
            0x13 => {
                let raw = msg[1] as u32 as i32;
                // SAFETY: a fork event carries a new uffd installed into our
                // descriptor table for us, which nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                Event::Fork(Uffd {
                    fd,
                    features: self.features,
                })
            }
            e => Event::Other(e),
        }
    }
}

/// Whether this process may use userfaultfd with kernel-mode faults and
/// the given features (opens and closes one, as [`Uffd::open`]); the error
/// says why not.
pub fn available(want: u64) -> Result<(), String> {
    Uffd::open(want).map(|_| ())
}
