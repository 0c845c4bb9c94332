//! Loading a program from inside its own task, as L4Re's in-task pager
//! (`l4re_itas`) does when ned starts a program: the pager is already in
//! the task, paged by the task's outer region map (moe's), and lays the
//! program out around itself.
//!
//! The steps that decide addresses are here, shared and host-tested; the
//! Fiasco program that carries them out (`fiasco/inpager/src/itas.rs`)
//! only reads the outer map and the files and creates the thread:
//!
//! 1. [`import_outer`]: the outer region map's regions and areas enter the
//!    task's region map — the pager's own memory as [`Backing::Pager`]
//!    (faults there go to the outer pager), the KIP and the UTCB area as
//!    [`Backing::Kernel`], reservations as [`Backing::Reserved`];
//! 2. [`place`]: the program is planned ([`elf::plan_dynamic`]); a
//!    position-independent one goes to the first free [`PIE_ALIGN`]-aligned
//!    range from a hint on, as L4Re's loader reserves it;
//! 3. [`attach`]: its regions, those of its interpreter, a stack of
//!    [`STACK_SIZE`] (at [`STACK_TOP`], or the next free range above) and
//!    a scratch page for the pager's private copies.

use l4pager::region::{Backing, MapError, RegionMap};
use l4re::cap::CapIdx;
use l4re::fpage::Rights;
use l4re::proto::rm::{Flags as RmFlags, RangeEntry};

use crate::elf::{self, ElfError, Plan};
use crate::layout::{self, LayoutError};

use l4re::fpage::PAGE_SIZE as PAGE;
/// Stack of the program's first thread (L4Re's default:
/// `Default_stack_words` of `libloader/include/elf`, 0x40000 words).
pub const STACK_SIZE: u64 = 0x40000 * 8;
/// The top of that stack by default (L4Re's `stack_addr` 0x80000000).
pub const STACK_TOP: u64 = 0x8000_0000;
/// Where a position-independent program goes when no load address is
/// given (`ldr_base` 0), and where the search for its place starts.
pub const PIE_BASE: u64 = 0x0100_0000;
/// Alignment of a position-independent program's load address (L4Re's
/// loader reserves it with `L4_SUPERPAGESHIFT`).
pub const PIE_ALIGN: u64 = 2 << 20;
/// Lowest address of the task's region map.
pub const MAP_MIN: u64 = 0x1000;
/// A flag of the `l4re_aux_t`'s `ldr_flags` beyond L4Re's own
/// (`L4RE_AUX_LDR_FLAG_*`, bits 0-2): the capability named `"server"` is an
/// IPC gate the creating task made and bound to the in-task pager's
/// thread with [`l4pager::task::SERVER_LABEL`] (the seeds' arrangement);
/// the pager serves the program through it instead of making its own.
pub const LDR_FLAG_SERVER_GATE: u64 = 1 << 31;

/// A new region map for a task, for addresses from [`MAP_MIN`] to
/// [`elf::USER_END`].
pub fn new_map() -> RegionMap {
    RegionMap::new(MAP_MIN, elf::USER_END)
}

/// Enters the outer region map's `regions` and `areas` (as its
/// `get_regions` and `get_areas` list them) into `map`; faults in its
/// ordinary regions go to `outer`. Returns the number of regions.
pub fn import_outer(
    map: &mut RegionMap,
    regions: &[RangeEntry],
    areas: &[RangeEntry],
    outer: CapIdx,
) -> Result<usize, LayoutError> {
    for r in regions {
        let fl = r.flags;
        let backing = if fl.contains(RmFlags::KERNEL) {
            Backing::Kernel
        } else if fl.contains(RmFlags::RESERVED) {
            Backing::Reserved
        } else {
            Backing::Pager { pager: outer }
        };
        let refused = |error| LayoutError {
            name: "[outer]".into(),
            start: r.start,
            end: r.end.wrapping_add(1),
            error,
        };
        let size = r
            .end
            .checked_sub(r.start)
            .and_then(|s| s.checked_add(1))
            .ok_or(refused(MapError::Invalid))?;
        let rights = fl.rights();
        map.attach_at(r.start, size, rights, backing, false, "[outer]")
            .map_err(refused)?;
    }
    for a in areas {
        // The regions inside were entered above; the area only keeps
        // searches out.
        if let Some(size) = a.end.checked_sub(a.start).and_then(|s| s.checked_add(1)) {
            let _ = map.reserve_area(a.start, size, false, PAGE);
        }
    }
    Ok(regions.len())
}

/// Plans the program in `bytes`: at its own addresses, or — a
/// position-independent one — at the first free [`PIE_ALIGN`]-aligned
/// range of `map` from `hint` on.
pub fn place(map: &mut RegionMap, bytes: &[u8], hint: u64) -> Result<Plan, ElfError> {
    // A first plan at a probe address gives a position-independent
    // program's span.
    let probe = elf::plan_dynamic(bytes, PIE_BASE)?;
    if !probe.pie {
        return Ok(probe);
    }
    let size = (probe.span.1 - probe.span.0).next_multiple_of(PIE_ALIGN);
    let from = hint.max(MAP_MIN).next_multiple_of(PIE_ALIGN);
    let at = map
        .reserve_area(from, size, true, PIE_ALIGN)
        .map_err(|_| ElfError::Malformed("no room for the program in the address space".into()))?;
    let _ = map.free_area(at);
    // The span's start lies as far above the load base as at the probe.
    elf::plan_dynamic(bytes, at - (probe.span.0 - PIE_BASE))
}

/// Where [`attach`] put things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Start of the stack region ([`STACK_SIZE`] bytes).
    pub stack: u64,
    /// A reserved page for the pager's own use (reading file pages for
    /// private copies).
    pub scratch: u64,
    /// Where the program's thread starts: the interpreter's entry for a
    /// dynamically linked program, else the program's.
    pub entry: u64,
    /// For a dynamically linked program: its entry (`AT_ENTRY`) and the
    /// interpreter's load address (`AT_BASE`).
    pub dynamic: Option<(u64, u64)>,
}

/// Attaches `program` (its file regions backed by `ds`), its interpreter
/// (`Some((plan, dataspace))`), a stack and a scratch page to `map`.
pub fn attach(
    map: &mut RegionMap,
    program: &Plan,
    ds: CapIdx,
    interp: Option<(&Plan, CapIdx)>,
) -> Result<Layout, LayoutError> {
    layout::attach_plan(map, program, ds)?;
    if let Some((plan, ids)) = interp {
        layout::attach_plan(map, plan, ids).map_err(|e| LayoutError {
            name: alloc::format!("interpreter's {}", e.name),
            ..e
        })?;
    }
    let no_room = |name: &'static str, start: u64, size: u64| {
        move |error| LayoutError {
            name: name.into(),
            start,
            end: start + size,
            error,
        }
    };
    let stack = map
        .attach(
            STACK_TOP - STACK_SIZE,
            STACK_SIZE,
            Rights::RW,
            Backing::Anon,
            true,
            "[stack]",
            true,
            false,
            PAGE,
        )
        .map_err(no_room("[stack]", STACK_TOP - STACK_SIZE, STACK_SIZE))?;
    let scratch = map
        .attach(
            PIE_BASE,
            PAGE,
            Rights::empty(),
            Backing::Reserved,
            false,
            "[pager scratch]",
            true,
            false,
            PAGE,
        )
        .map_err(no_room("[pager scratch]", PIE_BASE, PAGE))?;
    Ok(Layout {
        stack,
        scratch,
        entry: interp.map_or(program.entry, |(i, _)| i.entry),
        dynamic: interp.map(|(i, _)| (program.entry, i.bias)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::tiny;
    use l4pager::fault::{self, Access, Decision};

    const OUTER: CapIdx = CapIdx::from_slot(0x20);
    const DS: CapIdx = CapIdx::from_slot(0x400);
    const INTERP_DS: CapIdx = CapIdx::from_slot(0x401);

    /// What moe's region map holds for a task ned started on the pager:
    /// the pager's own text and data, its stack at L4Re's default place,
    /// the KIP and the UTCB area, and an area.
    fn outer() -> ([RangeEntry; 5], [RangeEntry; 1]) {
        let r = |start: u64, end: u64, flags: RmFlags| RangeEntry { start, end, flags };
        (
            [
                r(0x6000_0000, 0x6003_ffff, RmFlags::RX),
                r(0x6004_0000, 0x6044_ffff, RmFlags::RW),
                r(0x6fff_f000, 0x6fff_ffff, RmFlags::R | RmFlags::KERNEL),
                r(0x7fe0_0000, 0x7fff_ffff, RmFlags::RW),
                r(
                    0x7ff0_0000_0000 - 0x10_0000,
                    0x7ff0_0000_0000 - 1,
                    RmFlags::RW | RmFlags::KERNEL,
                ),
            ],
            [r(0x5000_0000, 0x50ff_ffff, RmFlags::empty())],
        )
    }

    fn imported() -> RegionMap {
        let (regions, areas) = outer();
        let mut m = new_map();
        assert_eq!(import_outer(&mut m, &regions, &areas, OUTER), Ok(5));
        m
    }

    #[test]
    fn outer_regions_keep_their_pager_and_kind() {
        let m = imported();
        // The pager's own memory: faults go to the outer pager.
        assert_eq!(
            fault::resolve(&m, 0x6000_1000, Access::Exec, 0),
            Decision::Forward {
                pager: OUTER,
                page: 0x6000_1000,
                region: 0
            }
        );
        // The KIP: only the kernel maps it.
        assert!(matches!(
            fault::resolve(&m, 0x6fff_f010, Access::Read, 0),
            Decision::Error(r) if r.cause == fault::FaultCause::Kernel
        ));
        // The area keeps searches out.
        assert!(m.areas().contains(&(0x5000_0000, 0x5100_0000)));
        // A malformed entry is refused, not wrapped.
        let mut m2 = new_map();
        let bad = [RangeEntry {
            start: 0x2000,
            end: 0x1000,
            flags: RmFlags::R,
        }];
        assert!(import_outer(&mut m2, &bad, &[], OUTER).is_err());
    }

    #[test]
    fn static_program_stays_where_it_was_linked() {
        let mut m = imported();
        let e = tiny(2, &[(5, 0, 0x40_0000, 0x1800, 0x1800)], 0x40_0100);
        let p = place(&mut m, &e, 0).unwrap();
        assert!(!p.pie);
        assert_eq!(p.entry, 0x40_0100);
        let l = attach(&mut m, &p, DS, None).unwrap();
        assert_eq!(l.entry, 0x40_0100);
        assert_eq!(l.dynamic, None);
        // L4Re's default stack place is the pager's own (outer) stack: the
        // program's goes to the next free range above.
        assert!(l.stack >= 0x8000_0000, "{:#x}", l.stack);
        assert!(m.lookup(l.scratch).is_some());
        assert!(matches!(
            fault::resolve(&m, 0x40_0000, Access::Exec, 0),
            Decision::MapShared { ds: DS, .. }
        ));
    }

    #[test]
    fn position_independent_program_goes_to_a_free_aligned_range() {
        let mut m = imported();
        // Something of the outer map where the hint points.
        m.attach_at(
            0x0120_0000,
            0x1000,
            Rights::R,
            Backing::Reserved,
            false,
            "x",
        )
        .unwrap();
        let e = tiny(
            3,
            &[(5, 0, 0, 0x1800, 0x1800), (6, 0x2000, 0x3000, 0x100, 0x200)],
            0x100,
        );
        let p = place(&mut m, &e, 0x0100_0123).unwrap();
        assert!(p.pie);
        assert_eq!(p.bias % PIE_ALIGN, 0);
        assert!(
            p.span.0 >= 0x0120_1000 || p.span.1 <= 0x0120_0000,
            "{:?}",
            p.span
        );
        assert_eq!(p.entry, p.bias + 0x100);
        attach(&mut m, &p, DS, None).unwrap();
    }

    #[test]
    fn dynamic_program_starts_at_its_interpreter() {
        let mut m = imported();
        let mut e = tiny(
            2,
            &[
                (5, 0, 0x40_0000, 0x1800, 0x1800),
                (4, 0x1000, 0x40_1000, 0x20, 0x20),
            ],
            0x40_0100,
        );
        let p = 64 + 56;
        e[p..p + 4].copy_from_slice(&3u32.to_le_bytes());
        e[0x1000..0x1000 + 19].copy_from_slice(b"/rom/libld-l4.so.1\0");
        let prog = place(&mut m, &e, 0).unwrap();
        assert_eq!(prog.interp.as_deref(), Some("/rom/libld-l4.so.1"));
        let ld = tiny(3, &[(5, 0, 0, 0x1800, 0x1800)], 0x80);
        let interp = place(&mut m, &ld, prog.span.1).unwrap();
        assert!(interp.interp.is_none());
        let l = attach(&mut m, &prog, DS, Some((&interp, INTERP_DS))).unwrap();
        assert_eq!(l.entry, interp.bias + 0x80);
        assert_eq!(l.dynamic, Some((0x40_0100, interp.bias)));
        assert!(matches!(
            fault::resolve(&m, interp.bias, Access::Exec, 0),
            Decision::MapShared { ds: INTERP_DS, .. }
        ));
    }

    #[test]
    fn program_over_the_pagers_memory_is_refused() {
        let mut m = imported();
        let e = tiny(2, &[(5, 0, 0x6000_0000, 0x1800, 0x1800)], 0x6000_0100);
        let p = place(&mut m, &e, 0).unwrap();
        let err = attach(&mut m, &p, DS, None).unwrap_err();
        assert_eq!((err.start, err.error), (0x6000_0000, MapError::Overlap));
        assert!(alloc::format!("{err}").contains("0x60000000"), "{err}");
    }
}
