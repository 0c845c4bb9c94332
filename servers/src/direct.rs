//! Direct mapping: file pages that lie whole and page-aligned in memory
//! of the server that may be mapped on to clients as it is (on Fiasco the
//! pages of the ext2 image, a boot module or its copy) are sent to clients
//! straight from there, without being copied into the page cache.
//! Shared code (`core` + `alloc`); the platform says whether it can do
//! this and how it takes such pages back
//! ([`FrameFactory::revoker`](crate::fs::FrameFactory::revoker)), the
//! backing store where a file's bytes lie
//! ([`Backing::extents`](crate::backend::Backing::extents)).
//!
//! The rules (`docs/l4fs.md`, "Direct mapping"):
//!
//! * only read-only requests are served so, and only for pages that are
//!   not in the page cache: a cached page (clean or dirty) is always sent
//!   from the cache, so nobody sees the image where the cache may be
//!   newer;
//! * only whole pages inside the file (the last, partial page comes from
//!   the cache, zero-filled past the end);
//! * a block of `2^k` pages is sent in one flexpage when its pages lie
//!   contiguously in memory at an address aligned to its size, and the
//!   client's `spot` agrees in alignment (the kernel's flexpage rule);
//! * before a page may change (written through `l4fs.file`, mapped
//!   writable, cleared, truncated), every direct mapping of it is revoked
//!   ([`DirectMap::revoke`]): the client faults again and gets the cache's
//!   page from then on.

use alloc::boxed::Box;
use alloc::vec::Vec;

use l4re::Result;

use crate::cache::{PAGE_SHIFT, PAGE_SIZE};

/// Where a file's bytes lie in the server's own memory.
pub trait Extents {
    /// The address in this task of file byte `offset` and how many bytes
    /// from there (at most `max`) follow it contiguously in memory as the
    /// file's next bytes; `None` where that byte is not in such memory (a
    /// hole of the file).
    fn extent(&mut self, offset: u64, max: u64) -> Result<Option<(u64, u64)>>;
}

/// Removes every client mapping derived from this task's page at the
/// given address (this task's own mapping stays): the platform's part.
pub type Revoker = fn(u64);

/// A block of pages to send straight from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectBlock {
    /// Its first page (file page number).
    pub first: u64,
    /// log2 of its size in bytes.
    pub order: u8,
    /// The address of its first page in this task.
    pub addr: u64,
}

/// The largest naturally aligned block of pages around `page` that can be
/// sent straight from memory, or `None` if not even `page` can:
///
/// * the block lies inside the file's first `pages` (whole) pages;
/// * its order is at most `max_order` and `spot` (where the client wants
///   the page) agrees with the file offset in the bits below it;
/// * `memory(first, n)` gives the address of page `first` if the `n`
///   pages from there lie contiguously in memory, and that address is
///   aligned to the block's size;
/// * `cached(first, end)` says no page of `[first, end)` is in the cache.
///
/// A block that fails one of these has no larger aligned block around it
/// that passes, so the search stops at the first failure.
pub fn direct_block(
    page: u64,
    spot: u64,
    pages: u64,
    max_order: u8,
    mut memory: impl FnMut(u64, u64) -> Option<u64>,
    mut cached: impl FnMut(u64, u64) -> bool,
) -> Option<DirectBlock> {
    let mut best = None;
    let mut order = PAGE_SHIFT;
    while order <= max_order.max(PAGE_SHIFT) {
        let n = 1u64 << (order - PAGE_SHIFT);
        let first = page & !(n - 1);
        let size = 1u64 << order;
        // Bits of the offset within the block: the spot must agree (page
        // granularity: the offset inside a page is the client's business).
        let mask = (size - 1) & !(PAGE_SIZE - 1);
        if first + n > pages || ((page << PAGE_SHIFT) ^ spot) & mask != 0 {
            break;
        }
        match memory(first, n) {
            Some(addr) if addr % size == 0 && !cached(first, first + n) => {
                best = Some(DirectBlock { first, order, addr });
            }
            _ => break,
        }
        order += 1;
    }
    best
}

/// One file's direct mappings: where its pages lie, which were sent (so
/// that a write revokes only those), and counters.
pub struct DirectMap {
    extents: Box<dyn Extents>,
    revoker: Revoker,
    /// Bit `p`: page `p` was sent directly since it was last revoked.
    sent: Vec<u64>,
    /// Pages sent directly (counted per reply).
    pub pages_sent: u64,
    /// Pages whose direct mappings were revoked.
    pub pages_revoked: u64,
}

impl DirectMap {
    /// Direct mappings of the file whose bytes lie as `extents` says,
    /// taken back with `revoker`.
    pub fn new(extents: Box<dyn Extents>, revoker: Revoker) -> Self {
        DirectMap {
            extents,
            revoker,
            sent: Vec::new(),
            pages_sent: 0,
            pages_revoked: 0,
        }
    }

    /// The address of page `first` if `n` pages from there lie
    /// contiguously in memory, page-aligned.
    fn memory(&mut self, first: u64, n: u64) -> Option<u64> {
        let want = n * PAGE_SIZE;
        match self.extents.extent(first * PAGE_SIZE, want) {
            Ok(Some((addr, len))) if len >= want && addr % PAGE_SIZE == 0 => Some(addr),
            _ => None,
        }
    }

    /// The block to send for a read-only request of `page` ([`direct_block`]),
    /// recorded as sent; `None`: serve it from the cache.
    pub fn block(
        &mut self,
        page: u64,
        spot: u64,
        pages: u64,
        max_order: u8,
        cached: impl FnMut(u64, u64) -> bool,
    ) -> Option<DirectBlock> {
        let b = direct_block(
            page,
            spot,
            pages,
            max_order,
            |f, n| self.memory(f, n),
            cached,
        )?;
        let n = 1u64 << (b.order - PAGE_SHIFT);
        for p in b.first..b.first + n {
            self.mark(p);
        }
        self.pages_sent += n;
        Some(b)
    }

    fn mark(&mut self, p: u64) {
        let (w, bit) = ((p / 64) as usize, p % 64);
        if self.sent.len() <= w {
            self.sent.resize(w + 1, 0);
        }
        self.sent[w] |= 1 << bit;
    }

    /// Takes the direct mappings of the pages of `[first, end)` away from
    /// every client (those sent since they were last revoked); returns how
    /// many pages that was.
    pub fn revoke(&mut self, first: u64, end: u64) -> u64 {
        let end = end.min(self.sent.len() as u64 * 64);
        let mut n = 0;
        let mut p = first;
        while p < end {
            let (w, bit) = ((p / 64) as usize, p % 64);
            if self.sent[w] == 0 && bit == 0 {
                p += 64;
                continue;
            }
            if self.sent[w] & (1 << bit) != 0 {
                self.sent[w] &= !(1 << bit);
                if let Some(addr) = self.memory(p, 1) {
                    (self.revoker)(addr);
                }
                n += 1;
            }
            p += 1;
        }
        self.pages_revoked += n;
        n
    }

    /// Takes every direct mapping of the file away (the file is closed).
    pub fn revoke_all(&mut self) -> u64 {
        self.revoke(0, u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;
    use std::collections::BTreeSet;

    const MIB2: u64 = 2 << 20;

    /// A file laid out in memory in runs: (first file page, pages,
    /// address of the first).
    struct Runs(Vec<(u64, u64, u64)>);

    impl Extents for Runs {
        fn extent(&mut self, offset: u64, max: u64) -> Result<Option<(u64, u64)>> {
            let page = offset / PAGE_SIZE;
            Ok(self
                .0
                .iter()
                .find(|(f, n, _)| (*f..f + n).contains(&page))
                .map(|&(f, n, a)| {
                    let at = offset - f * PAGE_SIZE;
                    (a + at, (n * PAGE_SIZE - at).min(max))
                }))
        }
    }

    fn memory(runs: &mut Runs) -> impl FnMut(u64, u64) -> Option<u64> + '_ {
        move |f, n| match runs.extent(f * PAGE_SIZE, n * PAGE_SIZE) {
            Ok(Some((a, len))) if len >= n * PAGE_SIZE && a % PAGE_SIZE == 0 => Some(a),
            _ => None,
        }
    }

    fn none_cached(_: u64, _: u64) -> bool {
        false
    }

    #[test]
    fn aligned_contiguous_pages_go_in_one_2_mib_block() {
        // 1024 pages (4 MiB) contiguous at a 2 MiB boundary.
        let mut runs = Runs(vec![(0, 1024, 0x4000_0000)]);
        let b = direct_block(
            700,
            0x9000_0000 + 700 * PAGE_SIZE,
            1024,
            21,
            memory(&mut runs),
            none_cached,
        );
        assert_eq!(
            b,
            Some(DirectBlock {
                first: 512,
                order: 21,
                addr: 0x4000_0000 + MIB2
            })
        );
        // The largest order the cache allows, not more.
        let b = direct_block(
            700,
            700 * PAGE_SIZE,
            1024,
            16,
            memory(&mut runs),
            none_cached,
        );
        assert_eq!(b.map(|b| (b.first, b.order)), Some((688, 16)));
    }

    #[test]
    fn the_spot_limits_the_block() {
        let mut runs = Runs(vec![(0, 1024, 0x4000_0000)]);
        // A spot 4 KiB off a 2 MiB boundary relative to the offset: pages
        // only.
        let b = direct_block(
            700,
            0x1000_1000 + 700 * PAGE_SIZE,
            1024,
            21,
            memory(&mut runs),
            none_cached,
        );
        assert_eq!(b.map(|b| (b.first, b.order)), Some((700, 12)));
        // 64 KiB agreement: 16-page blocks. (The offset inside the page
        // does not matter.)
        let b = direct_block(
            700,
            0x1001_0000 + 700 * PAGE_SIZE + 0x123,
            1024,
            21,
            memory(&mut runs),
            none_cached,
        );
        assert_eq!(b.map(|b| (b.first, b.order)), Some((688, 16)));
    }

    #[test]
    fn memory_alignment_and_contiguity_limit_the_block() {
        // ext2's layout without care: 12 pages, one pointer block, the
        // rest. Page 0 lies 1000 pages past a 2 MiB boundary.
        let base = 0x4000_0000 + 1000 * PAGE_SIZE;
        let mut runs = Runs(vec![(0, 12, base), (12, 1024, base + 13 * PAGE_SIZE)]);
        // Page 9 (memory page 1009): the 4-page block 8..12 at 1008 is
        // aligned; 8..16 is not contiguous (the jump after page 11).
        let b = direct_block(9, 9 * PAGE_SIZE, 2048, 21, memory(&mut runs), none_cached);
        assert_eq!(
            b.map(|b| (b.first, b.order, b.addr)),
            Some((8, 14, base + 8 * PAGE_SIZE))
        );
        // Pages from 12 on lie one page off: single pages only.
        for p in [12u64, 13, 100, 700] {
            let b = direct_block(p, p * PAGE_SIZE, 2048, 21, memory(&mut runs), none_cached);
            assert_eq!(
                b.map(|b| (b.first, b.order, b.addr)),
                Some((p, 12, base + (p + 1) * PAGE_SIZE))
            );
        }
        // An unaligned memory page (not page-aligned at all): nothing.
        let mut odd = Runs(vec![(0, 16, 0x4000_0800)]);
        assert_eq!(
            direct_block(3, 3 * PAGE_SIZE, 16, 21, memory(&mut odd), none_cached),
            None
        );
        // A hole: nothing.
        let mut holes = Runs(vec![(0, 4, 0x4000_0000)]);
        assert_eq!(
            direct_block(5, 5 * PAGE_SIZE, 16, 21, memory(&mut holes), none_cached),
            None
        );
        assert_eq!(
            direct_block(2, 2 * PAGE_SIZE, 16, 21, memory(&mut holes), none_cached)
                .map(|b| b.order),
            Some(14)
        );
    }

    #[test]
    fn cached_pages_and_the_end_of_the_file_limit_the_block() {
        let mut runs = Runs(vec![(0, 1024, 0x4000_0000)]);
        // Page 5 is in the cache: the fault at 100 gets 64..128, the fault
        // at 5 nothing.
        let cached = |a: u64, b: u64| (a..b).contains(&5);
        let b = direct_block(100, 100 * PAGE_SIZE, 1024, 21, memory(&mut runs), cached);
        assert_eq!(b.map(|b| (b.first, b.order)), Some((64, 18)));
        assert_eq!(
            direct_block(5, 5 * PAGE_SIZE, 1024, 21, memory(&mut runs), cached),
            None
        );
        assert_eq!(
            direct_block(4, 4 * PAGE_SIZE, 1024, 21, memory(&mut runs), cached)
                .map(|b| (b.first, b.order)),
            Some((4, 12))
        );
        // Only whole pages of the file: 600 of them; page 600 itself not.
        let b = direct_block(
            580,
            580 * PAGE_SIZE,
            600,
            21,
            memory(&mut runs),
            none_cached,
        );
        assert_eq!(b.map(|b| (b.first, b.order)), Some((576, 16)));
        assert_eq!(
            direct_block(
                600,
                600 * PAGE_SIZE,
                600,
                21,
                memory(&mut runs),
                none_cached
            ),
            None
        );
    }

    thread_local! {
        static REVOKED: RefCell<BTreeSet<u64>> = const { RefCell::new(BTreeSet::new()) };
    }

    fn record(addr: u64) {
        REVOKED.with(|r| r.borrow_mut().insert(addr));
    }

    #[test]
    fn only_pages_sent_are_revoked_once() {
        let base = 0x4000_0000;
        let mut d = DirectMap::new(Box::new(Runs(vec![(0, 1024, base)])), record);
        let b = d.block(70, 70 * PAGE_SIZE, 1024, 18, none_cached).unwrap();
        assert_eq!((b.first, b.order), (64, 18));
        assert_eq!(d.pages_sent, 64);
        // A write to pages 60..66: 64 and 65 were sent.
        assert_eq!(d.revoke(60, 66), 2);
        let got: Vec<u64> = REVOKED.with(|r| r.borrow().iter().copied().collect());
        assert_eq!(got, vec![base + 64 * PAGE_SIZE, base + 65 * PAGE_SIZE]);
        // Again: nothing left to revoke there.
        assert_eq!(d.revoke(60, 66), 0);
        // Closing the file revokes the rest.
        assert_eq!(d.revoke_all(), 62);
        assert_eq!(d.pages_revoked, 64);
        assert_eq!(REVOKED.with(|r| r.borrow().len()), 64);
        // Nothing sent: nothing revoked, whatever the range.
        let mut e = DirectMap::new(Box::new(Runs(vec![])), record);
        assert_eq!(e.block(0, 0, 16, 21, none_cached), None);
        assert_eq!(e.revoke(0, u64::MAX), 0);
    }
}
