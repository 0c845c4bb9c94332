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
