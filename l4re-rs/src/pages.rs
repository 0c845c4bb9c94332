//! [`PageBuf`]: page-aligned memory of this task that a server sends to
//! clients as memory items (a dataspace over the server's own heap), on
//! both platforms.

use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::fpage::PAGE_SIZE;

/// One page of a [`PageBuf`]: the alignment is what makes each page a
/// valid flexpage.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; PAGE_SIZE as usize]);

const _: () = assert!(core::mem::size_of::<Page>() == PAGE_SIZE as usize);

/// Read-only contents in whole, page-aligned pages, every one present in
/// this task (written once when made), so that each can be mapped to
/// another task at once. The bytes are fixed after [`new`](Self::new):
/// clients get them read-only.
pub struct PageBuf {
    pages: Vec<Page>,
    len: usize,
}

impl PageBuf {
    /// `contents`, padded with zeros to whole pages (at least `min_len`
    /// bytes, at least one page); [`len`](Self::len) is the larger of the
    /// two lengths (at least 1). `Error::NoMem` if the heap has no room.
    pub fn new(contents: &[u8], min_len: usize) -> Result<Self> {
        let len = contents.len().max(min_len).max(1);
        let n = len.div_ceil(PAGE_SIZE as usize);
        let mut pages = Vec::new();
        pages.try_reserve_exact(n).map_err(|_| Error::NoMem)?;
        pages.resize(n, Page([0; PAGE_SIZE as usize]));
        for (page, chunk) in pages.iter_mut().zip(contents.chunks(PAGE_SIZE as usize)) {
            page.0[..chunk.len()].copy_from_slice(chunk);
        }
        // Write every page once more, as the compiler may not elide:
        // zeroing fresh heap memory may otherwise become an allocation of
        // zeroed memory whose pages are not mapped yet.
        for page in &mut pages {
            let first = page.0[0];
            // SAFETY: a valid, aligned `u8` inside the page we own.
            unsafe { core::ptr::write_volatile(&mut page.0[0], first) };
        }
        Ok(PageBuf { pages, len })
    }

    /// Start address in this task (page-aligned).
    pub fn addr(&self) -> u64 {
        self.pages.as_ptr() as u64
    }

    /// The length in bytes given to [`new`](Self::new) (the memory holds
    /// whole pages beyond it, zeroed).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes (never: at least one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `len` bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the pages are `len.div_ceil(PAGE_SIZE)` contiguous,
        // initialised arrays of bytes without padding (the size assertion
        // above), borrowed from `self`.
        unsafe { core::slice::from_raw_parts(self.pages.as_ptr() as *const u8, self.len) }
    }
}
