//! The region map a load plan describes, shared by the host loader and the
//! Fiasco loader (`fiasco/loader-progs`).

use alloc::format;
use alloc::string::String;

use l4pager::region::{Backing, RegionMap};
use l4re::cap::CapIdx;
use l4re::fpage::Rights;

use crate::elf::{self, Plan};

/// The regions of `plan` (file-backed ones backed by dataspace `ds`) plus
/// an anonymous read-write stack of `stack_size` bytes ending at
/// `stack_top`.
pub fn region_map(
    plan: &Plan,
    ds: CapIdx,
    stack_top: u64,
    stack_size: u64,
) -> Result<RegionMap, String> {
    let mut m = RegionMap::new(0x10000, elf::USER_END);
    attach_plan(&mut m, plan, ds)?;
    m.attach_at(
        stack_top - stack_size,
        stack_size,
        Rights::RW,
        Backing::Anon,
        true,
        "stack",
    )
    .map_err(|e| format!("stack: {e:?}"))?;
    Ok(m)
}

/// Attaches the regions of `plan` (file-backed ones backed by dataspace
/// `ds`) into `m`, which may already hold others (an in-task pager's own
/// memory): a program that overlaps them is refused, naming the region.
pub fn attach_plan(m: &mut RegionMap, plan: &Plan, ds: CapIdx) -> Result<(), String> {
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
            .map_err(|e| {
                format!(
                    "region {} [{:#x}-{:#x}): {e:?}",
                    r.name,
                    r.start,
                    r.start + r.size
                )
            })?;
    }
    Ok(())
}
