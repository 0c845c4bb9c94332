//! Receive windows for mapping a region's pages around a fault.

/// Page size.
pub use l4re::fpage::PAGE_SIZE as PAGE;
/// Largest window asked for (2 MiB: a superpage).
pub const MAX_ORDER: u8 = 21;

/// The largest naturally aligned window (as `(base, order)`, at most
/// [`MAX_ORDER`]) that contains `page` and lies inside `[start, end)`: the
/// receive window of a map request for a fault at `page` in the region
/// `[start, end)`, so that a server may send more than one page (as L4Re's
/// own region manager lets it, with the region as bounds).
pub fn around(page: u64, start: u64, end: u64) -> (u64, u8) {
    let page = page & !(PAGE - 1);
    if page < start || page >= end {
        return (page, 12);
    }
    // The window of order k is `page` with its low k bits cleared, up to
    // `page` with them set. It starts at or above `start` for every k up
    // to the highest bit in which `page` and `start - 1` differ, and ends
    // at or below `end - 1` for every k up to the highest bit in which
    // `page` and `end - 1` differ, or up to the trailing ones of
    // `end - 1` (a fault is on every path, so no loop over the orders).
    let highest_difference = |a: u64, b: u64| match a ^ b {
        0 => 0,
        x => 63 - x.leading_zeros(),
    };
    let low = match start {
        0 => 64,
        s => highest_difference(page, s - 1),
    };
    let last = end - 1;
    let high = highest_difference(page, last).max(last.trailing_ones());
    let order = low.min(high).clamp(12, u32::from(MAX_ORDER)) as u8;
    (page & !((1u64 << order) - 1), order)
}

/// [`around`] as a search over the orders, kept to check it against.
#[cfg(test)]
fn around_by_search(page: u64, start: u64, end: u64) -> (u64, u8) {
    let page = page & !(PAGE - 1);
    let mut best = (page, 12);
    for order in 13..=MAX_ORDER {
        let size = 1u64 << order;
        let base = page & !(size - 1);
        match base.checked_add(size) {
            Some(top) if base >= start && top <= end => best = (base, order),
            _ => break,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_page_regions_get_one_page() {
        assert_eq!(around(0x5000, 0x5000, 0x6000), (0x5000, 12));
    }

    #[test]
    fn window_grows_while_aligned_and_inside() {
        // [0x400000, 0x800000): the 2 MiB window around 0x456000.
        assert_eq!(around(0x456123, 0x40_0000, 0x80_0000), (0x40_0000, 21));
        // Region [0x403000, 0x480000) around 0x408000: the 32 KiB window at
        // 0x408000 fits, the 64 KiB one at 0x400000 starts too low.
        assert_eq!(around(0x40_8000, 0x40_3000, 0x48_0000), (0x40_8000, 15));
        // Never above MAX_ORDER, even in a huge region.
        assert_eq!(around(0x1234_5000, 0, 1 << 40).1, MAX_ORDER);
    }

    #[test]
    fn closed_form_equals_the_search() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200_000 {
            let bits = 12 + next() % 36;
            let start = (next() % (1 << bits)) & !(PAGE - 1);
            let len = PAGE * (1 + next() % (1 << (next() % 14)));
            let Some(end) = start.checked_add(len) else {
                continue;
            };
            let page = (start + next() % len) & !(PAGE - 1);
            assert_eq!(
                around(page, start, end),
                around_by_search(page, start, end),
                "page {page:#x} in [{start:#x}, {end:#x})"
            );
        }
        assert_eq!(around(0, 0, 1 << 40), around_by_search(0, 0, 1 << 40));
    }

    #[test]
    fn window_never_leaves_the_region() {
        for (start, end) in [
            (0x1000u64, 0x9000u64),
            (0x7000, 0x20_0000),
            (0x40_0000, 0x40_3000),
        ] {
            let mut p = start;
            while p < end {
                let (base, order) = around(p, start, end);
                assert!(base >= start && base + (1 << order) <= end);
                assert!(base <= p && p < base + (1 << order));
                assert_eq!(base % (1 << order), 0);
                p += PAGE;
            }
        }
    }
}
