//! The runtime on Fiasco.OC/L4Re (feature `fiasco`).

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_char, c_int, c_void};
use core::fmt;

use l4_sys as sys;

unsafe extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn calloc(n: usize, size: usize) -> *mut c_void;
    fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
    fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int;
    fn exit(status: c_int) -> !;
    fn _exit(status: c_int) -> !;
}

/// Alignment every `malloc` result has (uClibc-ng on 64-bit targets:
/// `2 * sizeof(size_t)`).
const MALLOC_ALIGN: usize = 16;

/// A [`GlobalAlloc`] over L4Re's libc allocator (`malloc`, `calloc`,
/// `realloc`, `free`; `posix_memalign` for alignments above 16 bytes). The
/// libc's heap grows through L4Re's region map and memory allocator, and is
/// thread-safe.
pub struct L4ReAlloc;

// SAFETY: every pointer handed out comes from the libc allocator with at
// least the requested size and alignment, and is given back to `free` or
// `realloc` only.
unsafe impl GlobalAlloc for L4ReAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: plain libc call; a null result is passed on as failure.
            unsafe { malloc(layout.size()) as *mut u8 }
        } else {
            let mut p = core::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer; the alignment is a power of
            // two (Layout guarantees it) and a multiple of the pointer size
            // (it is above 16).
            match unsafe { posix_memalign(&mut p, layout.align(), layout.size()) } {
                0 => p as *mut u8,
                _ => core::ptr::null_mut(),
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: plain libc call.
            unsafe { calloc(1, layout.size()) as *mut u8 }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            let p = unsafe { self.alloc(layout) };
            if !p.is_null() {
                // SAFETY: `p` points to `layout.size()` fresh bytes.
                unsafe { core::ptr::write_bytes(p, 0, layout.size()) };
            }
            p
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc contract).
        unsafe { free(ptr as *mut c_void) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: `ptr` came from `malloc`/`calloc` (alignment <= 16).
            unsafe { realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            // SAFETY: GlobalAlloc contract: `new_size` with the old alignment
            // is a valid layout.
            let new =
                unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
            if !new.is_null() {
                // SAFETY: both blocks are valid for the smaller size and do
                // not overlap; the old one is freed afterwards.
                unsafe {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
            }
            new
        }
    }
}

#[cfg(feature = "global-allocator")]
#[global_allocator]
static ALLOCATOR: L4ReAlloc = L4ReAlloc;

/// Writes `bytes` to the program's log capability as they are (no newline
/// added), in chunks of at most `L4_VCON_WRITE_SIZE` bytes.
///
/// This uses the calling thread's message registers: do not call it while
/// `l4re::Utcb::with` holds them.
pub fn log_bytes(bytes: &[u8]) {
    // SAFETY: the environment page is set up by the loader before any
    // program code runs and stays valid.
    let log = unsafe { (*sys::l4re_env()).log };
    for chunk in bytes.chunks(sys::L4_VCON_WRITE_SIZE as usize) {
        // SAFETY: the kernel copies at most `L4_VCON_WRITE_SIZE` bytes of
        // `chunk` out of our message registers; an invalid capability makes
        // the send fail, nothing else.
        unsafe {
            sys::l4_vcon_write(log, chunk.as_ptr() as *const c_char, chunk.len() as _);
        }
    }
}

/// A [`fmt::Write`] to the log capability through a fixed buffer (no heap):
/// text is sent whenever the buffer is full and when the writer is dropped.
pub struct LogWriter {
    buf: [u8; 256],
    len: usize,
}

impl LogWriter {
    /// An empty writer.
    pub const fn new() -> Self {
        LogWriter {
            buf: [0; 256],
            len: 0,
        }
    }

    /// Sends what is buffered.
    pub fn flush(&mut self) {
        if self.len > 0 {
            log_bytes(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Default for LogWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for LogWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Ends the program with `status` through the libc's `exit` (atexit
/// handlers run, the parent is told).
pub fn exit_program(status: i32) -> ! {
    // SAFETY: plain libc call; it does not return.
    unsafe { exit(status) }
}

#[cfg(feature = "panic-handler")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::sync::atomic::{AtomicBool, Ordering};
    static PANICKING: AtomicBool = AtomicBool::new(false);
    if PANICKING.swap(true, Ordering::SeqCst) {
        // A panic while reporting a panic: leave at once.
        // SAFETY: plain libc call; it does not return.
        unsafe { _exit(102) }
    }
    {
        let mut w = LogWriter::new();
        let _ = fmt::Write::write_fmt(&mut w, format_args!("panic: {info}\n"));
    }
    exit_program(101)
}

/// Referenced by the prebuilt `core` for unwinding; programs are built with
/// `panic = "abort"`, so it is never called.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// The command-line arguments a program's entry receives (`argv`, without
/// `argv[0]` skipped: the first is the program name, as in C).
#[derive(Clone, Copy)]
pub struct Args {
    argc: usize,
    argv: *const *const c_char,
}

impl Args {
    /// Wraps C `main`'s arguments.
    ///
    /// # Safety
    ///
    /// `argv` must hold `argc` pointers to NUL-terminated strings that live
    /// as long as the program (as C `main`'s arguments do).
    pub unsafe fn new(argc: c_int, argv: *const *const c_char) -> Self {
        Args {
            argc: if argv.is_null() {
                0
            } else {
                argc.max(0) as usize
            },
            argv,
        }
    }

    /// Number of arguments (including the program name).
    pub fn len(&self) -> usize {
        self.argc
    }

    /// Whether there are no arguments at all.
    pub fn is_empty(&self) -> bool {
        self.argc == 0
    }

    /// Argument `i` as text (`None` if out of range or not UTF-8).
    pub fn get(&self, i: usize) -> Option<&'static str> {
        if i >= self.argc {
            return None;
        }
        // SAFETY: `i < argc`, and the pointers are valid NUL-terminated
        // strings for the program's life (contract of `new`).
        let s = unsafe { core::ffi::CStr::from_ptr(*self.argv.add(i)) };
        s.to_str().ok()
    }

    /// The arguments after the program name.
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        (1..self.argc).filter_map(|i| self.get(i))
    }
}

/// What an entry function may return; turned into the exit status.
pub trait Termination {
    /// The exit status.
    fn report(self) -> i32;
}

impl Termination for () {
    fn report(self) -> i32 {
        0
    }
}

impl Termination for i32 {
    fn report(self) -> i32 {
        self
    }
}

impl<E: fmt::Debug> Termination for Result<(), E> {
    fn report(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                let mut w = LogWriter::new();
                let _ = fmt::Write::write_fmt(&mut w, format_args!("error: {e:?}\n"));
                1
            }
        }
    }
}

/// Exports a C function that runs a Rust entry function.
///
/// `entry!(main = run)` makes the staticlib export `main` itself, so the
/// L4Re program needs no C source; `entry!(rust_ipc_server = run)` exports
/// `int rust_ipc_server(int argc, char **argv)` for a C `main` to call (one
/// staticlib can then hold several programs). `run` takes [`Args`] and
/// returns `()`, `i32` or `Result<(), impl Debug>` ([`Termination`]).
///
/// ```ignore
/// fn run(args: l4re_rt::Args) -> Result<(), l4re::Error> { … }
/// l4re_rt::entry!(main = run);
/// ```
#[macro_export]
macro_rules! entry {
    ($sym:ident = $f:path) => {
        /// Program entry, called by the C runtime (or by C `main`).
        ///
        /// # Safety
        ///
        /// `argv` must hold `argc` valid C strings for the program's life,
        /// as C `main`'s arguments do.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $sym(
            argc: ::core::ffi::c_int,
            argv: *const *const ::core::ffi::c_char,
        ) -> ::core::ffi::c_int {
            // SAFETY: the C runtime passes `main`'s own arguments.
            let args = unsafe { $crate::Args::new(argc, argv) };
            $crate::Termination::report($f(args))
        }
    };
}
