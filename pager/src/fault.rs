//! Fault resolution: what a pager does about a page fault.
//!
//! [`resolve`] looks the address up in the region map, checks the access
//! against the region's rights and returns a [`Decision`]: map a page of a
//! shared dataspace, copy a page of a private one (the part beyond the
//! region's file data zeroed), zero-fill an anonymous page, or a
//! [`FaultReport`] that ends the task. The same logic serves the internal
//! and the external pager on both platforms; only carrying the decision
//! out is platform code.

use alloc::string::String;
use core::fmt;

use l4re::cap::CapIdx;
use l4re::fpage::{PAGE_SIZE, Rights};

use crate::region::{Backing, RegionMap, rights_str};

/// The kind of access that faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Exec,
}

impl Access {
    /// The right the access needs.
    pub fn right(self) -> Rights {
        match self {
            Access::Read => Rights::R,
            Access::Write => Rights::W,
            Access::Exec => Rights::X,
        }
    }

    /// From the page-fault protocol's `pfa` bits.
    pub fn from_pfa(pfa: u64) -> Self {
        let f = l4re::proto::pager::Fault::from_pfa(pfa);
        if f.exec {
            Access::Exec
        } else if f.write {
            Access::Write
        } else {
            Access::Read
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Exec => "execute",
        })
    }
}

/// What resolves a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Map the dataspace's page at `offset` itself at `page` (shared).
    MapShared {
        /// The dataspace.
        ds: CapIdx,
        /// Page-aligned offset in the dataspace.
        offset: u64,
        /// Page-aligned address in the task.
        page: u64,
        /// Rights of the mapping.
        rights: Rights,
        /// Index of the region in address order (for statistics).
        region: usize,
    },
    /// Give the task its own copy of the dataspace's page at `offset`, of
    /// which only the first `valid` bytes come from the dataspace (the
    /// rest is zero).
    CopyPrivate {
        /// The dataspace.
        ds: CapIdx,
        /// Page-aligned offset in the dataspace.
        offset: u64,
        /// Bytes of the page taken from the dataspace (0..=page size).
        valid: u64,
        /// Page-aligned address in the task.
        page: u64,
        /// Rights of the mapping.
        rights: Rights,
        /// Index of the region.
        region: usize,
    },
    /// Map a zero-filled page at `page`.
    Zero {
        /// Page-aligned address in the task.
        page: u64,
        /// Rights of the mapping.
        rights: Rights,
        /// Index of the region.
        region: usize,
    },
    /// The region belongs to another pager: send it the fault (with a
    /// receive window at `page`).
    Forward {
        /// The pager.
        pager: CapIdx,
        /// Page-aligned address in the task.
        page: u64,
        /// Index of the region.
        region: usize,
    },
    /// The access is invalid: end the task with this report.
    Error(FaultReport),
}

/// Why an access is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCause {
    /// No region covers the address.
    NoRegion,
    /// The region does not allow the access.
    Forbidden,
    /// The address is in a reserved region.
    Reserved,
    /// The address is in memory only the kernel maps (KIP, UTCBs).
    Kernel,
}

/// The report of an invalid access: it names the address, the access, the
/// pc and the nearest region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultReport {
    /// Faulting address.
    pub addr: u64,
    /// The access.
    pub access: Access,
    /// The instruction pointer.
    pub pc: u64,
    /// Why it is invalid.
    pub cause: FaultCause,
    /// The region containing the address, or the closest one, described
    /// (`name [start-end) rwx kind`), with the distance to it.
    pub nearest: Option<(String, u64)>,
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.cause {
            FaultCause::NoRegion => "no region there",
            FaultCause::Forbidden => "the region forbids it",
            FaultCause::Reserved => "reserved region",
            FaultCause::Kernel => "kernel memory (not paged)",
        };
        write!(
            f,
            "invalid {} access at {:#x} (pc {:#x}): {why}",
            self.access, self.addr, self.pc
        )?;
        match &self.nearest {
            Some((r, 0)) => write!(f, "; region {r}"),
            Some((r, d)) => write!(f, "; nearest region {r}, {d:#x} bytes away"),
            None => write!(f, "; no regions"),
        }
    }
}

/// Builds the report for an invalid access at `addr`.
pub fn report(
    map: &RegionMap,
    addr: u64,
    access: Access,
    pc: u64,
    cause: FaultCause,
) -> FaultReport {
    FaultReport {
        addr,
        access,
        pc,
        cause,
        nearest: map.nearest(addr).map(|(r, d)| (alloc::format!("{r}"), d)),
    }
}

/// Decides how to resolve a fault at `addr` with `access` raised at `pc`.
pub fn resolve(map: &RegionMap, addr: u64, access: Access, pc: u64) -> Decision {
    decide(map, addr, access)
        .unwrap_or_else(|cause| Decision::Error(report(map, addr, access, pc, cause)))
}

/// [`resolve`] without the report of an invalid access, only why it is
/// invalid: it never allocates, so a pager may call it where a fault of
/// its own (a fresh heap page) must not happen, e.g. in the faulting
/// thread with the region map locked.
pub fn decide(map: &RegionMap, addr: u64, access: Access) -> Result<Decision, FaultCause> {
    let Some((region, r)) = map.lookup_indexed(addr) else {
        return Err(FaultCause::NoRegion);
    };
    if !r.rights.contains(access.right()) {
        return Err(FaultCause::Forbidden);
    }
    let page = addr & !(PAGE_SIZE - 1);
    let delta = page - r.start;
    Ok(match r.backing {
        Backing::Reserved => return Err(FaultCause::Reserved),
        Backing::Kernel => return Err(FaultCause::Kernel),
        Backing::Pager { pager } => Decision::Forward {
            pager,
            page,
            region,
        },
        Backing::Anon => Decision::Zero {
            page,
            rights: r.rights,
            region,
        },
        Backing::File {
            ds,
            offset,
            file_len,
        } => {
            let valid = file_len.saturating_sub(delta).min(PAGE_SIZE);
            if !r.private {
                // A shared region shows the dataspace's pages as they are
                // (as a kernel file mapping shows a whole last page).
                Decision::MapShared {
                    ds,
                    offset: offset + delta,
                    page,
                    rights: r.rights,
                    region,
                }
            } else if valid == 0 {
                Decision::Zero {
                    page,
                    rights: r.rights,
                    region,
                }
            } else {
                Decision::CopyPrivate {
                    ds,
                    offset: offset + delta,
                    valid,
                    page,
                    rights: r.rights,
                    region,
                }
            }
        }
    })
}

/// `rwx`-style text of a region's rights (re-exported for reports).
pub fn rights_text(r: Rights) -> String {
    rights_str(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Backing;

    const P: u64 = PAGE_SIZE;
    const DS: CapIdx = CapIdx::from_slot(0x300);

    fn map() -> RegionMap {
        let mut m = RegionMap::new(0x1000, 1 << 47);
        let f = |o, l| Backing::File {
            ds: DS,
            offset: o,
            file_len: l,
        };
        m.attach_at(0x40_0000, 2 * P, Rights::RX, f(0, 2 * P), false, "text")
            .unwrap();
        m.attach_at(
            0x40_3000,
            2 * P,
            Rights::RW,
            f(0x2000, P + 0x123),
            true,
            "data",
        )
        .unwrap();
        m.attach_at(0x40_5000, P, Rights::RW, Backing::Anon, true, "bss")
            .unwrap();
        m.attach_at(
            0x50_0000,
            P,
            Rights::empty(),
            Backing::Reserved,
            false,
            "guard",
        )
        .unwrap();
        m
    }

    #[test]
    fn decisions_by_backing() {
        let m = map();
        assert_eq!(
            resolve(&m, 0x40_1008, Access::Exec, 0),
            Decision::MapShared {
                ds: DS,
                offset: 0x1000,
                page: 0x40_1000,
                rights: Rights::RX,
                region: 0
            }
        );
        assert_eq!(
            resolve(&m, 0x40_3010, Access::Write, 0),
            Decision::CopyPrivate {
                ds: DS,
                offset: 0x2000,
                valid: P,
                page: 0x40_3000,
                rights: Rights::RW,
                region: 1
            }
        );
        // The page with the end of the file data: partly valid.
        assert_eq!(
            resolve(&m, 0x40_4ff8, Access::Read, 0),
            Decision::CopyPrivate {
                ds: DS,
                offset: 0x3000,
                valid: 0x123,
                page: 0x40_4000,
                rights: Rights::RW,
                region: 1
            }
        );
        assert_eq!(
            resolve(&m, 0x40_5000, Access::Write, 0),
            Decision::Zero {
                page: 0x40_5000,
                rights: Rights::RW,
                region: 2
            }
        );
    }

    #[test]
    fn invalid_accesses_are_reported() {
        let m = map();
        let Decision::Error(r) = resolve(&m, 0x40_0010, Access::Write, 0x40_0123) else {
            panic!("write to text accepted");
        };
        assert_eq!(r.cause, FaultCause::Forbidden);
        let text = alloc::format!("{r}");
        assert!(text.contains("invalid write access at 0x400010"), "{text}");
        assert!(text.contains("pc 0x400123"), "{text}");
        assert!(text.contains("text [0x400000-0x402000) r-x"), "{text}");
        let Decision::Error(r) = resolve(&m, 0x40_3000, Access::Exec, 0x40_3000) else {
            panic!("exec of data accepted");
        };
        assert_eq!(r.cause, FaultCause::Forbidden);
        let Decision::Error(r) = resolve(&m, 0, Access::Write, 0x40_0000) else {
            panic!("null write accepted");
        };
        assert_eq!(r.cause, FaultCause::NoRegion);
        assert!(alloc::format!("{r}").contains("nearest region text"));
        let Decision::Error(r) = resolve(&m, 0x40_6000, Access::Read, 1) else {
            panic!("past the end accepted");
        };
        assert_eq!(r.nearest.as_ref().unwrap().1, 1);
        assert!(r.nearest.as_ref().unwrap().0.starts_with("bss"));
        let Decision::Error(r) = resolve(&m, 0x50_0000, Access::Read, 1) else {
            panic!("reserved accepted");
        };
        assert_eq!(r.cause, FaultCause::Forbidden);
    }

    #[test]
    fn pfa_bits() {
        assert_eq!(Access::from_pfa(0x1000), Access::Read);
        assert_eq!(Access::from_pfa(0x1002), Access::Write);
        assert_eq!(Access::from_pfa(0x1004), Access::Exec);
    }
}
