//! The region map a load plan describes, shared by the host loader
//! ([`crate::host`]), the Fiasco loader ([`crate::fiasco`]) and the
//! internal pager, and how a region is named to `L4Re::Rm`.

use core::fmt;

use l4pager::region::{Backing, MapError, Region, RegionMap};
use l4re::cap::CapIdx;
use l4re::fpage::Rights;
use l4re::proto::rm::Flags as RmFlags;

use crate::elf::{self, Plan};

/// A region of a plan that does not fit into the region map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError {
    /// The region's name (`stack` for the stack).
    pub name: alloc::string::String,
    /// Its start.
    pub start: u64,
    /// Its end (exclusive).
    pub end: u64,
    /// Why the region map refused it.
    pub error: MapError,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "region {} [{:#x}-{:#x}): {:?}",
            self.name, self.start, self.end, self.error
        )
    }
}

/// The regions of `plan` (file-backed ones backed by dataspace `ds`) plus
/// an anonymous read-write stack of `stack_size` bytes ending at
/// `stack_top`.
pub fn region_map(
    plan: &Plan,
    ds: CapIdx,
    stack_top: u64,
    stack_size: u64,
) -> Result<RegionMap, LayoutError> {
    let mut m = RegionMap::new(0x10000, elf::USER_END);
    attach_plan(&mut m, plan, ds)?;
    let start = stack_top - stack_size;
    m.attach_at(start, stack_size, Rights::RW, Backing::Anon, true, "stack")
        .map_err(|error| LayoutError {
            name: "stack".into(),
            start,
            end: stack_top,
            error,
        })?;
    Ok(m)
}

/// Attaches the regions of `plan` (file-backed ones backed by dataspace
/// `ds`) into `m`, which may already hold others (an in-task pager's own
/// memory): a program that overlaps them is refused, naming the region.
pub fn attach_plan(m: &mut RegionMap, plan: &Plan, ds: CapIdx) -> Result<(), LayoutError> {
    for r in &plan.regions {
        let backing = match r.file {
            Some((offset, file_len)) => Backing::File {
                ds,
                offset,
                file_len,
            },
            None => Backing::Anon,
        };
        let rights = Rights::from_bits_truncate(r.prot.rm_flags() as u8);
        m.attach_at(r.start, r.size, rights, backing, r.private, &r.name)
            .map_err(|error| LayoutError {
                name: r.name.clone(),
                start: r.start,
                end: r.start + r.size,
                error,
            })?;
    }
    Ok(())
}

/// The `L4Re::Rm` flags with which a loader attaches `r` in a task's region
/// map: its rights, and `PRIVATE` for a private (copy-on-write) region.
pub fn attach_flags(r: &Region) -> RmFlags {
    let mut fl = RmFlags::from(r.rights);
    if r.private {
        fl |= RmFlags::PRIVATE;
    }
    fl
}
