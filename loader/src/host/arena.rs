//! An mmap-backed arena allocator for the task stub.
//!
//! The stub shares its process with the program. The program's C library
//! owns the heap break (`brk`): if the stub's allocator moved the break
//! after the program started, it would cut into the program's heap. This
//! allocator never calls `brk`: it carves blocks out of one big
//! `MAP_NORESERVE` reservation, keeps freed blocks of power-of-two size
//! classes on free lists, and gives large blocks their own mappings.
//!
//! The untouched part of the arena is registered with a userfaultfd whose
//! faults the loader's external pager serves ([`Arena::untouched`]): the
//! internal pager's own memory is paged by the external pager.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use l4re::host::{Mapping, Prot, Source};

/// Size of the arena reservation.
pub const ARENA_SIZE: usize = 1 << 30;
/// Largest block served from size classes; larger ones are mapped.
const MAX_CLASS: usize = 1 << 16;
const CLASSES: usize = 13; // 16 B .. 64 KiB

/// The allocator.
pub struct Arena {
    base: AtomicUsize,
    next: AtomicUsize,
    lock: AtomicBool,
    free: [AtomicUsize; CLASSES],
}

impl Arena {
    /// An arena that reserves its memory on first use.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Arena {
        Arena {
            base: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            lock: AtomicBool::new(false),
            free: [const { AtomicUsize::new(0) }; CLASSES],
        }
    }

    fn class(size: usize, align: usize) -> usize {
        let s = size.max(align).max(16).next_power_of_two();
        s.trailing_zeros() as usize - 4
    }

    fn lock(&self) {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
    }

    fn unlock(&self) {
        self.lock.store(false, Ordering::Release);
    }

    fn reserve(&self) -> bool {
        if self.base.load(Ordering::Relaxed) != 0 {
            return true;
        }
        // The arena owns the reservation for the process's life (no
        // allocation on this path: `Mapping` makes the system call only).
        let Ok(m) = Mapping::new(
            ARENA_SIZE,
            Prot::READ | Prot::WRITE,
            Source::AnonymousNoReserve,
        ) else {
            return false;
        };
        let p = m.leak();
        self.base.store(p, Ordering::Relaxed);
        self.next.store(p, Ordering::Relaxed);
        true
    }

    /// The part of the arena not handed out yet, page-aligned:
    /// `(start, len)`. Memory there has never been touched.
    pub fn untouched(&self) -> (usize, usize) {
        self.lock();
        let ok = self.reserve();
        // Move the bump pointer to a page boundary so that nothing below
        // it shares a page with what is above.
        let next = self.next.load(Ordering::Relaxed).next_multiple_of(4096);
        self.next.store(next, Ordering::Relaxed);
        let end = self.base.load(Ordering::Relaxed) + ARENA_SIZE;
        self.unlock();
        if !ok { (0, 0) } else { (next, end - next) }
    }
}

// SAFETY: every block handed out is carved from memory only this
// allocator manages, aligned to at least the layout's alignment (size
// classes are powers of two at least as large as the alignment and carved
// at multiples of their size; large blocks are page-aligned mappings), and
// is not handed out again before it is freed.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if size.max(align) > MAX_CLASS {
            // A large block is a mapping of its own, owned by the caller
            // until `dealloc`.
            let len = size.next_multiple_of(4096);
            return match Mapping::new(len, Prot::READ | Prot::WRITE, Source::Anonymous) {
                Ok(m) if align <= 4096 => m.leak() as *mut u8,
                _ => core::ptr::null_mut(),
            };
        }
        let c = Self::class(size, align);
        let bs = 16usize << c;
        self.lock();
        if !self.reserve() {
            self.unlock();
            return core::ptr::null_mut();
        }
        let head = self.free[c].load(Ordering::Relaxed);
        let p = if head != 0 {
            // SAFETY: `head` is a freed block of this class; its first word
            // holds the next free block. (Stays here: the allocator's own
            // free list.)
            let next = unsafe { (head as *const usize).read() };
            self.free[c].store(next, Ordering::Relaxed);
            head
        } else {
            let at = self.next.load(Ordering::Relaxed).next_multiple_of(bs);
            let end = self.base.load(Ordering::Relaxed) + ARENA_SIZE;
            if at + bs > end {
                self.unlock();
                return core::ptr::null_mut();
            }
            self.next.store(at + bs, Ordering::Relaxed);
            at
        };
        self.unlock();
        p as *mut u8
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout is passed on unchanged.
        let p = unsafe { self.alloc(layout) };
        // A large block is a fresh anonymous mapping: zero already, and
        // left untouched (a buffer the size of a program file costs only
        // the pages that are written).
        if !p.is_null() && layout.size().max(layout.align()) <= MAX_CLASS {
            // SAFETY: `p` is a block of at least `layout.size()` bytes that
            // `alloc` just handed out. (Stays here: `GlobalAlloc` hands out
            // raw blocks.)
            unsafe { p.write_bytes(0, layout.size()) };
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let (size, align) = (layout.size(), layout.align());
        if size.max(align) > MAX_CLASS {
            // SAFETY: large blocks are whole mappings made (and leaked) by
            // `alloc` with this length, which the caller no longer uses.
            // (Stays here: `GlobalAlloc` hands out raw blocks.)
            drop(unsafe { Mapping::from_raw(ptr as usize, size.next_multiple_of(4096)) });
            return;
        }
        let c = Self::class(size, align);
        self.lock();
        // SAFETY: the block is ours, at least 16 bytes, and no longer used
        // by the caller: its first word links the free list. (Stays here:
        // the allocator's own free list.)
        unsafe { (ptr as *mut usize).write(self.free[c].load(Ordering::Relaxed)) };
        self.free[c].store(ptr as usize, Ordering::Relaxed);
        self.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_distinct_and_reused() {
        let a = Arena::new();
        let l = Layout::from_size_align(24, 8).unwrap();
        // SAFETY: layouts are valid; blocks are freed with the same layout.
        // (Stays here: `GlobalAlloc`'s methods are unsafe to call.)
        unsafe {
            let p = a.alloc(l);
            let q = a.alloc(l);
            assert!(!p.is_null() && p != q && p as usize % 8 == 0);
            a.dealloc(p, l);
            assert_eq!(a.alloc(l), p, "freed block reused");
            let big = Layout::from_size_align(1 << 20, 64).unwrap();
            let b = a.alloc(big);
            assert!(!b.is_null() && b as usize % 4096 == 0);
            b.write_bytes(1, 1 << 20);
            a.dealloc(b, big);
            // Zeroed blocks read as zeros, small ones after reuse too.
            for l in [big, l] {
                let z = a.alloc_zeroed(l);
                let bytes = core::slice::from_raw_parts(z, l.size());
                assert!(bytes.iter().all(|b| *b == 0));
                z.write_bytes(7, l.size());
                a.dealloc(z, l);
                let z = a.alloc_zeroed(l);
                let bytes = core::slice::from_raw_parts(z, l.size());
                assert!(bytes.iter().all(|b| *b == 0), "reused block zeroed");
                a.dealloc(z, l);
            }
            let al = Layout::from_size_align(100, 256).unwrap();
            let x = a.alloc(al);
            assert_eq!(x as usize % 256, 0);
        }
        let (s, n) = a.untouched();
        assert_eq!(s % 4096, 0);
        assert!(n > 0);
    }
}
