//! The region map of a task.
//!
//! A *region* is a page-aligned range of the task's address space with
//! rights and a backing: a dataspace at an offset (file pages), anonymous
//! zero-filled memory, or a reservation where every access is an error. A
//! file-backed region is *shared* (the task sees the dataspace's pages
//! themselves, e.g. read-only program text) or *private* (the task gets
//! its own copy of each page on first touch, e.g. initialized data).
//! *Areas* are reserved address ranges that regions can later be attached
//! into (`reserve_area` / `IN_AREA`).
//!
//! Regions are kept in a vector sorted by start address: lookup of the
//! region containing an address is a binary search, O(log n), and gives
//! the region's index (its number in address order) with it; attach and
//! detach, much rarer than faults, move the entries behind.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use l4re::cap::CapIdx;
use l4re::fpage::{PAGE_SIZE, Rights};

/// What is behind a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A dataspace: the region's first byte is the dataspace's byte
    /// `offset`. Only the first `file_len` bytes of the region come from
    /// the dataspace; the rest reads as zeros (an ELF segment's page that
    /// holds both the end of the file data and the start of bss).
    File {
        /// The dataspace capability.
        ds: CapIdx,
        /// Offset into the dataspace of the region's start.
        offset: u64,
        /// Bytes of the region, from its start, backed by the dataspace.
        file_len: u64,
    },
    /// Anonymous memory, zero-filled on first touch.
    Anon,
    /// Reserved: no memory; every access is an error.
    Reserved,
    /// Memory the kernel provides (the KIP, the UTCB area: L4Re's
    /// `F::Kernel`): the kernel maps it, so a fault there is an error.
    Kernel,
    /// Faults are forwarded to another pager (L4Re's `F::Pager`): an
    /// in-task region manager leaves its own memory to the task's outer
    /// region manager this way.
    Pager {
        /// The pager's capability (receives page-fault IPC).
        pager: CapIdx,
    },
}

/// One region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Start address (page-aligned).
    pub start: u64,
    /// Size in bytes (a multiple of the page size).
    pub size: u64,
    /// What accesses are allowed.
    pub rights: Rights,
    /// What is behind it.
    pub backing: Backing,
    /// Private (copy on first touch) rather than shared.
    pub private: bool,
    /// A name for reports (e.g. the ELF segment or section).
    pub name: String,
}

impl Region {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end()
    }

    /// Rights as `rwx`.
    pub fn rights_str(&self) -> String {
        rights_str(self.rights)
    }
}

/// `rwx`-style text of `r`.
pub fn rights_str(r: Rights) -> String {
    let mut s = String::new();
    s.push(if r.contains(Rights::R) { 'r' } else { '-' });
    s.push(if r.contains(Rights::W) { 'w' } else { '-' });
    s.push(if r.contains(Rights::X) { 'x' } else { '-' });
    s
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.backing {
            Backing::File { .. } if self.private => "private file",
            Backing::File { .. } => "shared file",
            Backing::Anon => "anonymous",
            Backing::Reserved => "reserved",
            Backing::Kernel => "kernel",
            Backing::Pager { .. } => "outer pager",
        };
        write!(
            f,
            "{} [{:#x}-{:#x}) {} {}",
            if self.name.is_empty() {
                "(unnamed)"
            } else {
                &self.name
            },
            self.start,
            self.end(),
            self.rights_str(),
            kind
        )
    }
}

/// Why a region-map operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// Not page-aligned, zero-sized, or wrapping around.
    Invalid,
    /// Overlaps an existing region (or area, for `reserve_area`).
    Overlap,
    /// No free range of that size (with `search`).
    NoSpace,
    /// No region or area there.
    NotFound,
    /// `in_area` was asked but the range is not inside one area.
    NotInArea,
}

impl From<MapError> for l4re::Error {
    fn from(e: MapError) -> Self {
        match e {
            MapError::Invalid => l4re::Error::Inval,
            MapError::Overlap => l4re::Error::AddrNotAvail,
            MapError::NoSpace => l4re::Error::NoMem,
            MapError::NotFound => l4re::Error::NoEnt,
            MapError::NotInArea => l4re::Error::NoEnt,
        }
    }
}

/// Result of detaching one region (or part of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// The range that was removed.
    pub start: u64,
    /// Its size.
    pub size: u64,
    /// The region as it was before (its backing names the dataspace).
    pub region: Region,
    /// Part of the region remains attached (it was split or trimmed).
    pub kept: bool,
    /// The region was split in two.
    pub split: bool,
    /// More regions overlap the range: call again.
    pub again: bool,
}

/// The region map.
#[derive(Debug, Clone)]
pub struct RegionMap {
    /// Sorted by `start`; never overlapping.
    regions: Vec<Region>,
    /// Areas: start → end.
    areas: BTreeMap<u64, u64>,
    /// Lowest address regions may use.
    min: u64,
    /// One past the highest address regions may use.
    max: u64,
}

fn page_aligned(x: u64) -> bool {
    x % PAGE_SIZE == 0
}

impl RegionMap {
    /// An empty map for addresses in `[min, max)`.
    pub fn new(min: u64, max: u64) -> Self {
        RegionMap {
            regions: Vec::new(),
            areas: BTreeMap::new(),
            min,
            max,
        }
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether there are no regions.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The regions in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter()
    }

    /// Index of the last region starting below `end`, if any.
    fn last_below(&self, end: u64) -> Option<usize> {
        self.regions
            .partition_point(|r| r.start < end)
            .checked_sub(1)
    }

    /// The region at `index` in address order (the index a
    /// [`Decision`](crate::fault::Decision) names).
    pub fn get(&self, index: usize) -> Option<&Region> {
        self.regions.get(index)
    }

    /// The region containing `addr`, in O(log n).
    pub fn lookup(&self, addr: u64) -> Option<&Region> {
        self.lookup_indexed(addr).map(|(_, r)| r)
    }

    /// The region containing `addr` and its index in address order, in
    /// O(log n).
    pub fn lookup_indexed(&self, addr: u64) -> Option<(usize, &Region)> {
        let i = self.last_below(addr.checked_add(1)?)?;
        let r = &self.regions[i];
        r.contains(addr).then_some((i, r))
    }

    /// The region containing `addr`, or else the closest one (below or
    /// above), with the distance in bytes (0 if inside).
    pub fn nearest(&self, addr: u64) -> Option<(&Region, u64)> {
        let split = self.regions.partition_point(|r| r.start <= addr);
        let below = split.checked_sub(1).map(|i| &self.regions[i]);
        if let Some(r) = below.filter(|r| r.contains(addr)) {
            return Some((r, 0));
        }
        let above = self.regions.get(split);
        let db = below.map(|r| addr - (r.end() - 1));
        let da = above.map(|r| r.start - addr);
        match (below, above) {
            (Some(b), Some(a)) => {
                if db.unwrap_or(u64::MAX) <= da.unwrap_or(u64::MAX) {
                    Some((b, db.unwrap_or(0)))
                } else {
                    Some((a, da.unwrap_or(0)))
                }
            }
            (Some(b), None) => Some((b, db.unwrap_or(0))),
            (None, Some(a)) => Some((a, da.unwrap_or(0))),
            (None, None) => None,
        }
    }

    /// Whether `[start, end)` overlaps a region.
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.last_below(end)
            .is_some_and(|i| self.regions[i].end() > start)
    }

    /// The area that contains all of `[start, end)`.
    fn area_of(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        self.areas
            .range(..=start)
            .next_back()
            .filter(|(_, e)| **e >= end)
            .map(|(s, e)| (*s, *e))
    }

    fn check_range(&self, start: u64, size: u64) -> Result<u64, MapError> {
        if size == 0 || !page_aligned(start) || !page_aligned(size) {
            return Err(MapError::Invalid);
        }
        let end = start.checked_add(size).ok_or(MapError::Invalid)?;
        if start < self.min || end > self.max {
            return Err(MapError::Invalid);
        }
        Ok(end)
    }

    /// Finds a free, `align`-aligned (a power of two, at least a page)
    /// range of `size` bytes in `[from, to)` that overlaps no region and,
    /// unless `in_area`, no area.
    fn search(&self, size: u64, align: u64, from: u64, to: u64, in_area: bool) -> Option<u64> {
        let align = align.max(PAGE_SIZE);
        let mut at = from.checked_next_multiple_of(align)?;
        loop {
            let end = at.checked_add(size)?;
            if end > to {
                return None;
            }
            // The first region or foreign area in the way, if any.
            let blocker = self
                .last_below(end)
                .map(|i| &self.regions[i])
                .filter(|r| r.end() > at)
                .map(|r| r.end());
            let blocker = blocker.or_else(|| {
                if in_area {
                    None
                } else {
                    self.areas
                        .range(..end)
                        .next_back()
                        .filter(|(_, e)| **e > at)
                        .map(|(_, e)| *e)
                }
            });
            match blocker {
                None => return Some(at),
                Some(next) => at = next.checked_next_multiple_of(align)?,
            }
        }
    }

    /// Attaches a region of `size` bytes at `start`, or (with `search`) at
    /// the first free `align`-aligned address at or above `start`. With
    /// `in_area` the region must lie inside a reserved area; otherwise it
    /// must not overlap one. Returns the start address.
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        &mut self,
        start: u64,
        size: u64,
        rights: Rights,
        backing: Backing,
        private: bool,
        name: &str,
        search: bool,
        in_area: bool,
        align: u64,
    ) -> Result<u64, MapError> {
        if size == 0 || !page_aligned(size) {
            return Err(MapError::Invalid);
        }
        let start = if search {
            let (from, to) = if in_area {
                let (s, e) = self
                    .areas
                    .range(..=start.max(self.min))
                    .next_back()
                    .map(|(s, e)| (*s, *e))
                    .filter(|(_, e)| *e > start)
                    .ok_or(MapError::NotInArea)?;
                (start.max(s), e)
            } else {
                (start.max(self.min), self.max)
            };
            self.search(size, align, from, to, in_area)
                .ok_or(MapError::NoSpace)?
        } else {
            start
        };
        let end = self.check_range(start, size)?;
        if self.overlaps(start, end) {
            return Err(MapError::Overlap);
        }
        match self.area_of(start, end) {
            Some(_) if !in_area => return Err(MapError::Overlap),
            None if in_area => return Err(MapError::NotInArea),
            None if self
                .areas
                .range(..end)
                .next_back()
                .is_some_and(|(_, e)| *e > start) =>
            {
                return Err(MapError::Overlap);
            }
            _ => {}
        }
        let at = self.regions.partition_point(|r| r.start < start);
        self.regions.insert(
            at,
            Region {
                start,
                size,
                rights,
                backing,
                private,
                name: name.into(),
            },
        );
        Ok(start)
    }

    /// Attaches a region of `size` bytes at exactly `start`, outside every
    /// reserved area: [`attach`](Self::attach) without search or area, as
    /// a loader lays out a program. Returns `start`.
    pub fn attach_at(
        &mut self,
        start: u64,
        size: u64,
        rights: Rights,
        backing: Backing,
        private: bool,
        name: &str,
    ) -> Result<u64, MapError> {
        self.attach(start, size, rights, backing, private, name, false, false, 0)
    }

    /// Detaches the first region overlapping `[addr, addr + size)`: the
    /// whole region if it lies inside the range, else the overlapping part
    /// (the rest stays attached, split in two if the range is in its
    /// middle).
    pub fn detach(&mut self, addr: u64, size: u64) -> Result<Detached, MapError> {
        let end = addr.checked_add(size.max(1)).ok_or(MapError::Invalid)?;
        // The first region overlapping: the one containing `addr`, else
        // the first starting inside the range.
        let from = self.regions.partition_point(|r| r.end() <= addr);
        let first = from;
        if self.regions.get(first).is_none_or(|r| r.start >= end) {
            return Err(MapError::NotFound);
        }
        let r = self.regions.remove(first);
        let cut_start = addr.max(r.start) / PAGE_SIZE * PAGE_SIZE;
        let cut_end = end
            .min(r.end())
            .checked_next_multiple_of(PAGE_SIZE)
            .unwrap_or(r.end())
            .min(r.end());
        let mut kept = false;
        let mut pieces = 0;
        if cut_start > r.start {
            let mut head = r.clone();
            head.size = cut_start - r.start;
            self.insert_sorted(head);
            kept = true;
            pieces += 1;
        }
        if cut_end < r.end() {
            let mut tail = r.clone();
            let delta = cut_end - r.start;
            tail.start = cut_end;
            tail.size = r.end() - cut_end;
            if let Backing::File {
                ds,
                offset,
                file_len,
            } = r.backing
            {
                tail.backing = Backing::File {
                    ds,
                    offset: offset + delta,
                    file_len: file_len.saturating_sub(delta),
                };
            }
            self.insert_sorted(tail);
            kept = true;
            pieces += 1;
        }
        // The kept pieces lie outside `[addr, end)`: anything else there
        // is another region.
        let again = self
            .regions
            .iter()
            .take_while(|r| r.start < end)
            .any(|r| r.end() > addr);
        Ok(Detached {
            start: cut_start,
            size: cut_end - cut_start,
            region: r,
            kept,
            split: pieces == 2,
            again,
        })
    }

    fn insert_sorted(&mut self, r: Region) {
        let at = self.regions.partition_point(|x| x.start < r.start);
        self.regions.insert(at, r);
    }

    /// Limits the file data of the file-backed region starting at `start`
    /// to its first `file_len` bytes (the rest reads as zeros): for an
    /// ELF segment whose file data ends inside a page. Returns whether
    /// such a region exists.
    pub fn set_file_len(&mut self, start: u64, file_len: u64) -> bool {
        let i = self.regions.partition_point(|r| r.start < start);
        match self.regions.get_mut(i).filter(|r| r.start == start) {
            Some(Region {
                backing: Backing::File { file_len: l, .. },
                ..
            }) => {
                *l = file_len;
                true
            }
            _ => false,
        }
    }

    /// Reserves an area of `size` bytes at `start` (or searched, aligned to
    /// `align`); regions attached with `in_area` go there. Returns the
    /// start.
    pub fn reserve_area(
        &mut self,
        start: u64,
        size: u64,
        search: bool,
        align: u64,
    ) -> Result<u64, MapError> {
        let start = if search {
            self.search(size, align, start.max(self.min), self.max, false)
                .ok_or(MapError::NoSpace)?
        } else {
            start
        };
        let end = self.check_range(start, size)?;
        if self.overlaps(start, end)
            || self
                .areas
                .range(..end)
                .next_back()
                .is_some_and(|(_, e)| *e > start)
        {
            return Err(MapError::Overlap);
        }
        self.areas.insert(start, end);
        Ok(start)
    }

    /// Frees the area starting at `addr` (regions in it stay attached).
    pub fn free_area(&mut self, addr: u64) -> Result<(), MapError> {
        self.areas
            .remove(&addr)
            .map(|_| ())
            .ok_or(MapError::NotFound)
    }

    /// The areas as `(start, end)`.
    pub fn areas(&self) -> Vec<(u64, u64)> {
        self.areas.iter().map(|(s, e)| (*s, *e)).collect()
    }

    /// The regions starting at or above `start`, in address order.
    pub fn regions_from(&self, start: u64) -> impl Iterator<Item = &Region> {
        let i = self.regions.partition_point(|r| r.start < start);
        self.regions[i..].iter()
    }

    /// The areas starting at or above `start` as `(start, end)`, in
    /// address order.
    pub fn areas_from(&self, start: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.areas.range(start..).map(|(s, e)| (*s, *e))
    }

    /// Index of the region starting at `start` in address order (the
    /// statistics' region number).
    pub fn index_of(&self, start: u64) -> usize {
        self.regions.partition_point(|r| r.start < start)
    }

    /// Whether every byte of `[start, end)` lies in some region.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        while at < end {
            match self.lookup(at) {
                Some(r) => at = r.end(),
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    fn file(off: u64) -> Backing {
        Backing::File {
            ds: CapIdx::from_slot(0x200),
            offset: off,
            file_len: u64::MAX,
        }
    }

    fn map() -> RegionMap {
        let mut m = RegionMap::new(0x1000, 0x7fff_0000_0000);
        m.attach_at(0x40_0000, 4 * P, Rights::RX, file(0), false, "text")
            .unwrap();
        m.attach_at(0x40_6000, 2 * P, Rights::RW, file(0x5000), true, "data")
            .unwrap();
        m.attach_at(0x40_8000, 8 * P, Rights::RW, Backing::Anon, true, "bss")
            .unwrap();
        m
    }

    #[test]
    fn lookup_finds_containing_region() {
        let m = map();
        assert_eq!(m.lookup(0x40_0000).unwrap().name, "text");
        assert_eq!(m.lookup(0x40_3fff).unwrap().name, "text");
        assert!(m.lookup(0x40_4000).is_none());
        assert_eq!(m.lookup(0x40_7abc).unwrap().name, "data");
        assert_eq!(m.lookup(0x40_ffff).unwrap().name, "bss");
        assert!(m.lookup(0x41_0000).is_none());
        assert!(m.lookup(0).is_none());
    }

    #[test]
    fn nearest_region_for_reports() {
        let m = map();
        let (r, d) = m.nearest(0x41_0000).unwrap();
        assert_eq!((r.name.as_str(), d), ("bss", 1));
        let (r, d) = m.nearest(0x0).unwrap();
        assert_eq!((r.name.as_str(), d), ("text", 0x40_0000));
        let (r, d) = m.nearest(0x40_4001).unwrap();
        assert_eq!((r.name.as_str(), d), ("text", 2));
        let (r, d) = m.nearest(0x40_5fff).unwrap();
        assert_eq!((r.name.as_str(), d), ("data", 1));
        assert!(RegionMap::new(0, 1 << 40).nearest(5).is_none());
    }

    #[test]
    fn overlapping_and_bad_attaches_refused() {
        let mut m = map();
        let r = |m: &mut RegionMap, s, z| m.attach_at(s, z, Rights::R, Backing::Anon, true, "x");
        assert_eq!(r(&mut m, 0x40_3000, 2 * P), Err(MapError::Overlap));
        assert_eq!(r(&mut m, 0x3f_f000, 2 * P), Err(MapError::Overlap));
        assert_eq!(r(&mut m, 0x40_0000, 100 * P), Err(MapError::Overlap));
        assert_eq!(r(&mut m, 0x40_4001, P), Err(MapError::Invalid));
        assert_eq!(r(&mut m, 0x40_4000, 0), Err(MapError::Invalid));
        assert_eq!(r(&mut m, u64::MAX - P + 1, P), Err(MapError::Invalid));
        assert_eq!(r(&mut m, 0, P), Err(MapError::Invalid), "below min");
        assert_eq!(r(&mut m, 0x40_4000, 2 * P), Ok(0x40_4000), "exact gap");
    }

    #[test]
    fn search_finds_aligned_gap() {
        let mut m = map();
        let s = m
            .attach(
                0x40_0000,
                2 * P,
                Rights::RW,
                Backing::Anon,
                true,
                "s",
                true,
                false,
                0,
            )
            .unwrap();
        assert_eq!(s, 0x40_4000);
        let s = m
            .attach(
                0x40_0000,
                P,
                Rights::RW,
                Backing::Anon,
                true,
                "t",
                true,
                false,
                0x10_0000,
            )
            .unwrap();
        assert_eq!(s, 0x50_0000);
    }

    #[test]
    fn detach_whole_and_split() {
        let mut m = map();
        let d = m.detach(0x40_8000 + 2 * P, 2 * P).unwrap();
        assert!(d.kept && d.split);
        assert_eq!((d.start, d.size), (0x40_a000, 2 * P));
        assert_eq!(m.lookup(0x40_8000).unwrap().size, 2 * P);
        assert_eq!(m.lookup(0x40_c000).unwrap().start, 0x40_c000);
        assert!(m.lookup(0x40_a000).is_none());
        // A split file region keeps the right offset.
        let d = m.detach(0x40_6000, P).unwrap();
        assert!(d.kept && !d.split);
        match m.lookup(0x40_7000).unwrap().backing {
            Backing::File { offset, .. } => assert_eq!(offset, 0x6000),
            b => panic!("{b:?}"),
        }
        // Whole region.
        let d = m.detach(0x40_0000, 4 * P).unwrap();
        assert!(!d.kept && d.region.name == "text");
        assert_eq!(m.detach(0x40_0000, P), Err(MapError::NotFound));
        // A range covering several regions says "again".
        let d = m.detach(0x40_7000, 0x10_0000).unwrap();
        assert!(d.again);
        let d = m.detach(0x40_7000, 0x10_0000).unwrap();
        assert!(d.again);
        let d = m.detach(0x40_7000, 0x10_0000).unwrap();
        assert!(!d.again);
        assert!(m.is_empty());
    }

    #[test]
    fn areas_hold_regions() {
        let mut m = map();
        let a = m.reserve_area(0x100_0000, 0x10_0000, false, 0).unwrap();
        assert_eq!(
            m.reserve_area(0x100_8000, P, false, 0),
            Err(MapError::Overlap)
        );
        // Outside-area attach into the area is refused, in-area works.
        assert_eq!(
            m.attach_at(a, P, Rights::R, Backing::Anon, true, "x"),
            Err(MapError::Overlap)
        );
        assert_eq!(
            m.attach(a, P, Rights::R, Backing::Anon, true, "x", false, true, 0),
            Ok(a)
        );
        let s = m
            .attach(a, P, Rights::R, Backing::Anon, true, "y", true, true, 0)
            .unwrap();
        assert_eq!(s, a + P);
        assert_eq!(
            m.attach(
                0x40_4000,
                P,
                Rights::R,
                Backing::Anon,
                true,
                "z",
                false,
                true,
                0
            ),
            Err(MapError::NotInArea)
        );
        m.free_area(a).unwrap();
        assert_eq!(m.free_area(a), Err(MapError::NotFound));
    }

    #[test]
    fn many_regions_random_consistency() {
        // Attach/detach pseudo-randomly and compare lookup with a linear scan.
        let mut m = RegionMap::new(0, 1 << 32);
        let mut seed = 0x1234_5678u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let s = (rnd() % 4096) * P;
            let z = (rnd() % 8 + 1) * P;
            if rnd() % 3 == 0 {
                let _ = m.detach(s, z);
            } else {
                let _ = m.attach_at(s, z, Rights::R, Backing::Anon, true, "");
            }
            let a = (rnd() % (4200 * P)) & !7;
            let lin = m.iter().find(|r| r.contains(a)).map(|r| r.start);
            assert_eq!(m.lookup(a).map(|r| r.start), lin);
        }
        // No two regions overlap.
        let v: Vec<_> = m.iter().collect();
        for w in v.windows(2) {
            assert!(w[0].end() <= w[1].start);
        }
    }
}
