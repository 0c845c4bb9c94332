//! The parts of the runtime that stand on L4Re's libc (every program but
//! freestanding ones): the allocator over `malloc`, `exit`, the panic
//! handler.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_int, c_void};
use core::fmt;

use crate::LogWriter;

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
