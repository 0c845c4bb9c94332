//! Freestanding programs (feature `freestanding`): L4Re programs without
//! L4Re's libc, its start code or its in-task region manager, for code that
//! must run before any of that exists in a task — the internal pager.
//!
//! What L4Re's libc would do, done here:
//!
//! * **Entry.** `_start` (the ELF entry point) receives the initial stack a
//!   loader lays out as Linux and L4Re do: `argc`, `argv[]`, `envp[]`, the
//!   auxiliary vector. The entry in `AT_L4_ENV` (`0xf1`, as L4Re's libc
//!   start code reads it) points to the program's `l4re_env_t` (capability
//!   slots of parent, log, factory, main thread, the named initial
//!   capabilities, the first free slot). It becomes `l4re_global_env`, so
//!   `l4re_env()` and everything built on it (`l4re::env`) work unchanged.
//!   Without such an entry the program gets [`fallback_env`]'s slots.
//! * **Heap.** A [`linked_list_allocator`] heap over a static arena of
//!   [`HEAP_SIZE`] bytes in `.bss` (its pages arrive on first touch from the
//!   program's pager, like any other).
//! * **Capability slots.** `l4re_util_cap_alloc`/`l4re_util_cap_free`
//!   (which `l4re::cap::alloc` calls) over a bitmap of [`CAP_SLOTS`] slots
//!   from the environment's `first_free_cap` on; the environment's
//!   `first_free_cap` then moves past them, so that a program started from
//!   a copy of it in the same task (as an in-task pager starts one) takes
//!   its slots elsewhere, as `l4re_itas` reserves its own.
//! * **Start information.** [`start_info`]: `argv`, `envp`, the
//!   `l4re_aux_t` (`AT_L4_AUX`: the binary an in-task pager is to load)
//!   and the KIP (`AT_L4_KIP`, also in `l4_global_kip`, which `l4re_kip()`
//!   reads).
//! * **Threads.** One: `pthread_self`/`pthread_l4_cap` (which
//!   `l4re::kobj::current_thread` calls) answer the environment's
//!   `main_thread`. The UTCB borrow flag of `l4re` is a plain static
//!   (`l4-sys` feature `single-threaded`): no TLS is set up.
//! * **Exit.** [`exit_program`] sends `L4Re::Parent` `signal(0, status)` to
//!   the environment's parent (what L4Re's `_exit` does) and then sleeps;
//!   the parent deletes the task.
//! * **Panics** print `panic: …` through the log capability and exit with
//!   status 101.

use core::ffi::{c_char, c_int, c_ulong};
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU64, Ordering};

use l4_sys as sys;
use linked_list_allocator::LockedHeap;

use crate::LogWriter;

/// Bytes of the static heap.
pub const HEAP_SIZE: usize = 4 << 20;
/// Capability slots the slot allocator hands out.
pub const CAP_SLOTS: usize = 1024;
/// `AT_L4_ENV`: auxiliary vector entry holding the `l4re_env_t` address.
pub const AT_L4_ENV: u64 = 0xf1;
/// `AT_L4_AUX`: the `l4re_aux_t` address.
pub const AT_L4_AUX: u64 = 0xf0;
/// `AT_L4_KIP`: the KIP address.
pub const AT_L4_KIP: u64 = 0xf2;

/// The `l4re_aux_t` a loader passes to an in-task pager (`AT_L4_AUX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuxInfo {
    /// The binary to load (e.g. `rom/hello`), without its NUL.
    pub binary: &'static [u8],
    /// The KIP's dataspace capability (an index, possibly invalid).
    pub kip_ds: u64,
    /// Debug level.
    pub dbg_lvl: u64,
    /// `l4re_aux_ldr_flags_t`.
    pub ldr_flags: u64,
    /// Load address for position-independent programs.
    pub ldr_base: u64,
}

/// What the initial stack told the program besides its environment.
#[derive(Debug, Clone, Copy)]
pub struct StartInfo {
    /// `argv` (`argc` entries, then NULL).
    pub argv: *const *const c_char,
    /// Number of arguments.
    pub argc: usize,
    /// `envp` (NULL-terminated).
    pub envp: *const *const c_char,
    /// The `l4re_aux_t` (`AT_L4_AUX`), or null.
    pub aux: *const sys::l4re_aux_t,
    /// The KIP's address (`AT_L4_KIP`), or 0.
    pub kip: u64,
}

static mut START_INFO: StartInfo = StartInfo {
    argv: core::ptr::null(),
    argc: 0,
    envp: core::ptr::null(),
    aux: core::ptr::null(),
    kip: 0,
};

/// The KIP pointer `l4re_kip()`/`l4_kip()` read (L4Re's libc sets it from
/// `AT_L4_KIP` in other programs).
#[unsafe(no_mangle)]
pub static mut l4_global_kip: *const sys::l4_kernel_info_t = core::ptr::null();

/// The first slot of the slot allocator (the environment's
/// `first_free_cap` at start).
static FIRST_CAP: AtomicU64 = AtomicU64::new(0);

/// What the initial stack held (set before `main` runs).
pub fn start_info() -> StartInfo {
    // SAFETY: written once by `freestanding_start` before `main`; read
    // only afterwards.
    unsafe { *addr_of_mut!(START_INFO) }
}

/// The strings of a NULL-terminated vector of the initial stack.
///
/// # Safety
/// `v` is null or a NULL-terminated array of NUL-terminated strings that
/// live as long as the program.
unsafe fn strings(v: *const *const c_char) -> alloc::vec::Vec<&'static [u8]> {
    let mut out = alloc::vec::Vec::new();
    if v.is_null() {
        return out;
    }
    // SAFETY: the caller's guarantee.
    unsafe {
        let mut p = v;
        while !(*p).is_null() {
            out.push(core::ffi::CStr::from_ptr(*p).to_bytes());
            p = p.add(1);
        }
    }
    out
}

impl StartInfo {
    /// The arguments (`argv[0]` first).
    pub fn args(&self) -> alloc::vec::Vec<&'static [u8]> {
        // SAFETY: `argv` comes from the initial stack, which lives as long
        // as the program (read by `read_stack`).
        unsafe { strings(self.argv) }
    }

    /// The environment variables (`NAME=value`).
    pub fn vars(&self) -> alloc::vec::Vec<&'static [u8]> {
        // SAFETY: as for `args`.
        unsafe { strings(self.envp) }
    }

    /// The `l4re_aux_t`, if the loader passed one.
    pub fn aux(&self) -> Option<AuxInfo> {
        if self.aux.is_null() {
            return None;
        }
        // SAFETY: a loader's `l4re_aux_t` on the initial stack (non-null),
        // its binary name a NUL-terminated string beside it; both live as
        // long as the program.
        unsafe {
            let a = &*self.aux;
            let binary = if a.binary.is_null() {
                &[][..]
            } else {
                core::ffi::CStr::from_ptr(a.binary).to_bytes()
            };
            Some(AuxInfo {
                binary,
                kip_ds: a.kip_ds,
                dbg_lvl: a.dbg_lvl,
                ldr_flags: a.ldr_flags,
                ldr_base: a.ldr_base,
            })
        }
    }
}
/// `L4RE_PROTO_PARENT`.
const PROTO_PARENT: i64 = 0x4002;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// The heap's memory.
static mut ARENA: MaybeUninit<[u8; HEAP_SIZE]> = MaybeUninit::uninit();

/// The environment used when the stack brings none.
static mut FALLBACK_ENV: MaybeUninit<sys::l4re_env_t> = MaybeUninit::uninit();
/// The empty list of named capabilities of [`FALLBACK_ENV`].
static mut NO_CAPS: [MaybeUninit<sys::l4re_env_cap_entry_t>; 1] = [MaybeUninit::uninit()];

/// The environment every `l4re_env()` call reads (L4Re's libc defines it
/// in other programs).
#[unsafe(no_mangle)]
pub static mut l4re_global_env: *mut sys::l4re_env_t = core::ptr::null_mut();

/// Used slots, one bit each, from `first_free_cap` on.
static CAP_BITMAP: [AtomicU64; CAP_SLOTS / 64] = [const { AtomicU64::new(0) }; CAP_SLOTS / 64];

fn slot(n: u64) -> sys::l4_cap_idx_t {
    (n << sys::L4_CAP_SHIFT) as _
}

/// The slots a freestanding program assumes when its stack brings no
/// environment: task 1, factory 2, its thread 3, log 5, scheduler 7,
/// parent 10, no region map or memory allocator, no named capabilities,
/// free slots from 0x40 on.
pub fn fallback_env() -> sys::l4re_env_t {
    // SAFETY: `l4re_env_t` is plain data (capability indices, words and a
    // pointer) for which all-zero bytes are valid.
    let mut e: sys::l4re_env_t = unsafe { core::mem::zeroed() };
    e.parent = slot(10);
    e.rm = sys::L4_INVALID_CAP as _;
    e.mem_alloc = sys::L4_INVALID_CAP as _;
    e.log = slot(5);
    e.main_thread = slot(3);
    e.factory = slot(2);
    e.scheduler = slot(7);
    e.itas = sys::L4_INVALID_CAP as _;
    e.dbg_events = sys::L4_INVALID_CAP as _;
    e.first_free_cap = 0x40;
    e
}

/// Reads the initial stack at `sp`: the start information and the
/// `AT_L4_ENV` entry.
///
/// # Safety
/// `sp` must point to an initial stack laid out as described in the module
/// documentation (argc, argv NULL-terminated, envp NULL-terminated, auxv
/// ending with `AT_NULL`), or to zeros.
unsafe fn read_stack(sp: *const u64) -> (StartInfo, Option<u64>) {
    // SAFETY: the caller guarantees the layout; every read below stays in
    // the vector it walks, each of which ends with a zero word.
    unsafe {
        let argc = *sp;
        let argv = sp.add(1);
        let envp = argv.add(argc as usize + 1);
        let mut p = envp;
        while *p != 0 {
            p = p.add(1);
        }
        p = p.add(1);
        let mut env = None;
        let mut info = StartInfo {
            argv: argv as *const *const c_char,
            argc: argc as usize,
            envp: envp as *const *const c_char,
            aux: core::ptr::null(),
            kip: 0,
        };
        while *p != 0 {
            match *p {
                AT_L4_ENV => env = Some(*p.add(1)),
                AT_L4_AUX => info.aux = *p.add(1) as *const sys::l4re_aux_t,
                AT_L4_KIP => info.kip = *p.add(1),
                _ => {}
            }
            p = p.add(2);
        }
        (info, env)
    }
}

unsafe extern "C" {
    /// The program's `main`, exported by [`entry!`](crate::entry)
    /// (`l4re_rt::entry!(main = function)`).
    fn main(argc: c_int, argv: *const *const c_char) -> c_int;
}

/// Called by `_start` with the initial stack pointer.
///
/// # Safety
/// Only `_start` calls it, once, with the stack the loader laid out.
unsafe extern "C" fn freestanding_start(sp: *const u64) -> ! {
    // SAFETY: the loader laid out the stack (module documentation); nothing
    // else runs yet, so the statics are ours alone.
    unsafe {
        let (info, env) = read_stack(sp);
        START_INFO = info;
        l4_global_kip = info.kip as *const sys::l4_kernel_info_t;
        let (argc, argv) = (info.argc as c_int, info.argv);
        match env {
            Some(addr) => l4re_global_env = addr as *mut sys::l4re_env_t,
            None => {
                let caps = addr_of_mut!(NO_CAPS) as *mut sys::l4re_env_cap_entry_t;
                caps.write(core::mem::zeroed());
                (*caps).cap = sys::L4_INVALID_CAP as _;
                (*caps).flags = !0;
                let mut e = fallback_env();
                e.caps = caps;
                let fallback = addr_of_mut!(FALLBACK_ENV) as *mut sys::l4re_env_t;
                fallback.write(e);
                l4re_global_env = fallback;
            }
        }
        // Our slots, and the environment's first free one past them.
        let env = l4re_global_env;
        FIRST_CAP.store((*env).first_free_cap, Ordering::Relaxed);
        (*env).first_free_cap += CAP_SLOTS as sys::l4_cap_idx_t;
        HEAP.lock().init(addr_of_mut!(ARENA) as *mut u8, HEAP_SIZE);
        let status = main(argc, argv);
        exit_program(status)
    }
}

core::arch::global_asm!(
    ".globl _start",
    ".type _start, @function",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym freestanding_start,
);

fn env() -> &'static sys::l4re_env_t {
    // SAFETY: set once by `freestanding_start` before `main` runs and never
    // changed; it points to memory that lives as long as the program.
    unsafe { &*l4re_global_env }
}

/// Ends the program: `L4Re::Parent` `signal(0, status)` to the parent (the
/// loader deletes the task), then sleeps for ever should the parent answer.
pub fn exit_program(status: i32) -> ! {
    let parent = env().parent;
    // SAFETY: the message registers of this thread's UTCB are free here
    // (no `Utcb::with` borrow can be active while the program ends: a
    // panic inside one aborts through this path only after printing, which
    // uses the registers too, as L4Re's own `_exit` does); the call only
    // passes words to the parent.
    unsafe {
        let u = sys::l4_utcb();
        let mr = sys::l4_utcb_mr_u(u);
        (*mr).mr[0] = 0; // opcode `signal`
        (*mr).mr[1] = 0; // signal 0: exit
        (*mr).mr[2] = status as i64 as u64 as _;
        let tag = sys::l4_msgtag(PROTO_PARENT as _, 3, 0, 0);
        sys::l4_ipc_call(parent, u, tag, sys::l4_timeout_t { raw: 0 });
        loop {
            sys::l4_ipc_sleep(sys::l4_timeout_t { raw: 0 });
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    {
        let mut w = LogWriter::new();
        let _ = fmt::Write::write_fmt(&mut w, format_args!("panic: {info}\n"));
    }
    exit_program(101)
}

/// `l4re_util_cap_alloc` of L4Re's C library: a free slot, or
/// `L4_INVALID_CAP`.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_util_cap_alloc() -> sys::l4_cap_idx_t {
    // A slot number, not an index (L4Re's convention).
    let first = FIRST_CAP.load(Ordering::Relaxed);
    for (w, word) in CAP_BITMAP.iter().enumerate() {
        let mut cur = word.load(Ordering::Relaxed);
        while cur != u64::MAX {
            let bit = (!cur).trailing_zeros() as u64;
            match word.compare_exchange(cur, cur | 1 << bit, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return slot(first + w as u64 * 64 + bit),
                Err(now) => cur = now,
            }
        }
    }
    sys::L4_INVALID_CAP as _
}

/// `l4re_util_cap_free` of L4Re's C library: gives a slot back (slots not
/// handed out here are ignored).
#[unsafe(no_mangle)]
pub extern "C" fn l4re_util_cap_free(cap: sys::l4_cap_idx_t) {
    let first = FIRST_CAP.load(Ordering::Relaxed);
    let n = cap >> sys::L4_CAP_SHIFT;
    if n < first || n - first >= CAP_SLOTS as u64 {
        return;
    }
    let i = (n - first) as usize;
    CAP_BITMAP[i / 64].fetch_and(!(1 << (i % 64)), Ordering::AcqRel);
}

/// `pthread_self`: the one thread.
#[unsafe(no_mangle)]
pub extern "C" fn pthread_self() -> c_ulong {
    1
}

/// `pthread_l4_cap`: the capability of the one thread (the environment's
/// `main_thread`).
#[unsafe(no_mangle)]
pub extern "C" fn pthread_l4_cap(_thread: c_ulong) -> sys::l4_cap_idx_t {
    env().main_thread
}

// The C library functions the compiler emits calls to (`core` and `alloc`
// are prebuilt against them). Written with string instructions, so that
// the compiler cannot turn them back into calls of themselves; eight bytes
// a step (`movsq`/`stosq`) and the rest byte by byte, as C libraries do
// (an emulator counts each step of a `rep` as one instruction).

/// `memcpy`.
///
/// # Safety
/// As C's: `n` bytes readable at `src`, writable at `dst`, no overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's guarantees; `rep movsq` copies `n / 8` words
    // upwards (the direction flag is clear, as the ABI requires) and
    // leaves rdi/rsi after them, where `rep movsb` copies the `n % 8`
    // bytes left.
    unsafe {
        core::arch::asm!("rep movsq", "mov rcx, {rest}", "rep movsb",
                         rest = in(reg) n % 8,
                         inout("rcx") n / 8 => _, inout("rdi") dst => _,
                         inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dst
}

/// `memmove`.
///
/// # Safety
/// As C's: `n` bytes readable at `src`, writable at `dst`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: copying upwards never reads a byte already overwritten
        // when `dst` is below `src` or the ranges are apart.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: `dst` lies above `src` inside the source: copy downwards from
    // the last byte (direction flag set for the copy and cleared again).
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _,
                         inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
                         options(nostack));
    }
    dst
}

/// `memset`.
///
/// # Safety
/// As C's: `n` bytes writable at `dst`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: c_int, n: usize) -> *mut u8 {
    let word = (c as u8 as u64) * 0x0101_0101_0101_0101;
    // SAFETY: the caller's guarantee; `rep stosq` stores the byte repeated
    // eight times `n / 8` times upwards, then `rep stosb` the `n % 8`
    // bytes left (al is the low byte of rax).
    unsafe {
        core::arch::asm!("rep stosq", "mov rcx, {rest}", "rep stosb",
                         rest = in(reg) n % 8,
                         inout("rcx") n / 8 => _, inout("rdi") dst => _,
                         in("rax") word, options(nostack, preserves_flags));
    }
    dst
}

/// `memcmp`.
///
/// # Safety
/// As C's: `n` bytes readable at `a` and `b`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> c_int {
    for i in 0..n {
        // SAFETY: `i < n`, inside both ranges.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return x as c_int - y as c_int;
        }
    }
    0
}

/// `strlen`.
///
/// # Safety
/// As C's: `s` points to a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: the caller's guarantee: every byte up to the NUL is
    // readable. Volatile reads keep the compiler from turning the loop
    // into a call of `strlen` itself.
    while unsafe { s.add(n).read_volatile() } != 0 {
        n += 1;
    }
    n
}

/// `strcmp` (`l4_kip_kernel_has_feature` compares the KIP's feature
/// strings with it).
///
/// # Safety
/// As C's: `a` and `b` point to NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strcmp(a: *const c_char, b: *const c_char) -> c_int {
    let mut i = 0;
    loop {
        // SAFETY: the caller's guarantee; we stop at the first NUL of
        // either string. Volatile reads keep the loop from becoming a call
        // of `strcmp` itself.
        let (x, y) = unsafe {
            (
                a.add(i).read_volatile() as u8,
                b.add(i).read_volatile() as u8,
            )
        };
        if x != y || x == 0 {
            return c_int::from(x) - c_int::from(y);
        }
        i += 1;
    }
}

/// `bcmp` (equality only).
///
/// # Safety
/// As C's: `n` bytes readable at `a` and `b`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> c_int {
    // SAFETY: forwarded with the caller's guarantee.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the prebuilt `alloc` for unwinding; the program is built
/// with `panic = "abort"`, so nothing unwinds.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    exit_program(102)
}

unsafe extern "C" {
    /// The program's ELF header, mapped with its first segment (GNU ld's
    /// and lld's `__ehdr_start`).
    static __ehdr_start: [u8; 64];
}

/// Reads one byte of every page of this program's loaded segments but the
/// heap arena, so that all its code and data are mapped in the task. A
/// thread whose page faults this program's code handles on the thread
/// itself (a page-fault trampoline) must not fault on the code that
/// handles them while it holds a lock the program's pager thread needs.
/// Returns the number of pages read.
pub fn touch_image() -> usize {
    let ehdr = addr_of!(__ehdr_start) as *const u8;
    let arena = addr_of!(ARENA) as u64;
    let arena = arena..arena + HEAP_SIZE as u64;
    // SAFETY: the ELF header and the program headers it points to are
    // part of the first loaded segment (the linker placed them there for
    // `__ehdr_start` to exist); unaligned reads take them as they are.
    let (phoff, phentsize, phnum) = unsafe {
        (
            (ehdr.add(32) as *const u64).read_unaligned(),
            (ehdr.add(54) as *const u16).read_unaligned() as usize,
            (ehdr.add(56) as *const u16).read_unaligned() as usize,
        )
    };
    let mut pages = 0;
    for i in 0..phnum {
        // SAFETY: as above: program header `i` of `phnum`.
        let (kind, vaddr, memsz) = unsafe {
            let ph = ehdr.add(phoff as usize + i * phentsize);
            (
                (ph as *const u32).read_unaligned(),
                (ph.add(16) as *const u64).read_unaligned(),
                (ph.add(40) as *const u64).read_unaligned(),
            )
        };
        const PT_LOAD: u32 = 1;
        if kind != PT_LOAD {
            continue;
        }
        let mut page = vaddr & !0xfff;
        while page < vaddr + memsz {
            if !arena.contains(&page) || !arena.contains(&(page + 0xfff)) {
                // SAFETY: `page` lies in a loaded segment of this program,
                // mapped (on first touch) for its whole life.
                unsafe { core::ptr::read_volatile(page.max(vaddr) as *const u8) };
                pages += 1;
            }
            page += 0x1000;
        }
    }
    pages
}
