//! `L4Re::Rm` over a [`RegionMap`]: attach, detach, find, reserve and free
//! areas through IPC.
//!
//! A [`RmService`] is a server object (put it behind a gate with
//! [`l4re::server::Server`]). What an attach means for the address space
//! is platform work, delegated to an [`RmBackend`]: on the host it makes
//! the mapping and registers it for page faults; on Fiasco nothing needs to
//! happen until the first fault.

use alloc::string::String;
use alloc::sync::Arc;

use l4re::cap::CapIdx;
use l4re::fpage::{PAGE_SIZE, Rights};
use l4re::msg::{MsgTag, ReceivedCap};
use l4re::proto::rm::{detach_result, flags};
use l4re::proto::{Rm, RmServer};
use l4re::rpc::{Request, WithCode};
use l4re::server::ServerObject;
use l4re::{Error, Result};

use crate::region::{Backing, Region, RegionMap};
use crate::sync::SpinLock;

/// What the platform does when the region map changes.
pub trait RmBackend: Send + Sync {
    /// A region was attached; make it usable (or fail, and the attach is
    /// undone).
    fn attached(&self, region: &Region) -> Result<()>;
    /// `[start, start + size)` of `region` was detached.
    fn detached(&self, region: &Region, start: u64, size: u64);
}

/// A backend that does nothing (Fiasco: the first fault does the work).
pub struct NoBackend;

impl RmBackend for NoBackend {
    fn attached(&self, _: &Region) -> Result<()> {
        Ok(())
    }
    fn detached(&self, _: &Region, _: u64, _: u64) {}
}

/// The region map of a task, served through `L4Re::Rm`.
pub struct RmService<B: RmBackend> {
    map: Arc<SpinLock<RegionMap>>,
    backend: B,
}

impl<B: RmBackend> RmService<B> {
    /// Serves `map`, realizing changes with `backend`.
    pub fn new(map: Arc<SpinLock<RegionMap>>, backend: B) -> Self {
        RmService { map, backend }
    }

    /// The region map.
    pub fn map(&self) -> &Arc<SpinLock<RegionMap>> {
        &self.map
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Attaches a region directly (what an `attach` request does, without
    /// IPC): used by a pager to set up its own task.
    #[allow(clippy::too_many_arguments)]
    pub fn attach_region(
        &self,
        start: u64,
        size: u64,
        fl: u32,
        ds: Option<CapIdx>,
        offs: u64,
        align: u8,
        name: &str,
    ) -> Result<u64> {
        let rights = Rights::from_bits_truncate((fl & 7) as u8);
        let size = size
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(Error::Inval)?;
        let backing = if fl & flags::RESERVED != 0 {
            Backing::Reserved
        } else {
            match ds {
                Some(ds) => Backing::File {
                    ds,
                    offset: offs,
                    file_len: size,
                },
                None => Backing::Anon,
            }
        };
        // Anonymous memory is private by nature.
        let private = fl & flags::PRIVATE != 0 || ds.is_none();
        let align = 1u64.checked_shl(align as u32).unwrap_or(PAGE_SIZE);
        let start = self.map.lock().attach(
            start,
            size,
            rights,
            backing,
            private,
            name,
            fl & flags::SEARCH_ADDR != 0,
            fl & flags::IN_AREA != 0,
            align,
        )?;
        let region = self.map.lock().lookup(start).cloned().ok_or(Error::Fault)?;
        if let Err(e) = self.backend.attached(&region) {
            let _ = self.map.lock().detach(start, size);
            return Err(e);
        }
        Ok(start)
    }
}

impl<B: RmBackend> RmServer for RmService<B> {
    fn attach(
        &self,
        _: &mut Request<'_>,
        start: u64,
        size: u64,
        fl: u32,
        mem: Option<ReceivedCap>,
        offs: u64,
        align: u8,
        _client_cap: u64,
        name: String,
        backing_offset: u64,
    ) -> Result<u64> {
        if mem.is_none() && fl & (flags::RESERVED | flags::ANONYMOUS) == 0 && fl & 7 != 0 {
            // L4Re needs a dataspace unless the region is reserved; we
            // accept anonymous memory as zero-fill.
            log::debug!("rm: attach without dataspace: anonymous memory");
        }
        let offs = offs.checked_add(backing_offset).ok_or(Error::Inval)?;
        self.attach_region(start, size, fl, mem.map(|c| c.idx), offs, align, &name)
    }

    fn detach(
        &self,
        _: &mut Request<'_>,
        addr: u64,
        size: u64,
        _flags: u32,
    ) -> Result<WithCode<(u64, u64, u64)>> {
        let d = self.map.lock().detach(addr, size)?;
        self.backend.detached(&d.region, d.start, d.size);
        let mut code = if d.split {
            detach_result::SPLIT_DS
        } else if d.kept {
            detach_result::KEPT_DS
        } else {
            detach_result::DETACHED_DS
        };
        if d.again {
            code |= detach_result::DETACH_AGAIN;
        }
        let mem = match d.region.backing {
            Backing::File { ds, .. } => ds.0,
            _ => CapIdx::INVALID.0,
        };
        Ok(WithCode(code, (d.start, d.size, mem)))
    }

    fn find(&self, _: &mut Request<'_>, addr: u64, size: u64) -> Result<(u64, u64, u32, u64, u64)> {
        let map = self.map.lock();
        let r = map.lookup(addr).ok_or(Error::NoEnt)?;
        if addr.saturating_add(size) > r.end() && size > 0 && !r.contains(addr + size - 1) {
            // L4Re's find reports the region that contains `addr`.
            log::trace!("rm: find range exceeds the region");
        }
        let mut fl = r.rights.bits() as u32;
        let (offset, mem) = match r.backing {
            Backing::File { ds, offset, .. } => (offset, ds.0),
            Backing::Anon => {
                fl |= flags::ANONYMOUS;
                (0, CapIdx::INVALID.0)
            }
            Backing::Reserved => {
                fl |= flags::RESERVED;
                (0, CapIdx::INVALID.0)
            }
        };
        if r.private {
            fl |= flags::PRIVATE;
        }
        Ok((r.start, r.size, fl, offset, mem))
    }

    fn reserve_area(
        &self,
        _: &mut Request<'_>,
        start: u64,
        size: u64,
        fl: u32,
        align: u8,
    ) -> Result<u64> {
        let size = size
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(Error::Inval)?;
        let align = 1u64.checked_shl(align as u32).unwrap_or(PAGE_SIZE);
        Ok(self
            .map
            .lock()
            .reserve_area(start, size, fl & flags::SEARCH_ADDR != 0, align)?)
    }

    fn free_area(&self, _: &mut Request<'_>, addr: u64) -> Result<()> {
        Ok(self.map.lock().free_area(addr)?)
    }
}

const PROTOCOLS: &[(i64, &str)] = &[(0x4005, "L4Re::Rm")];

impl<B: RmBackend + 'static> ServerObject for RmService<B> {
    fn protocols(&self) -> &[(i64, &'static str)] {
        PROTOCOLS
    }
    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        Rm::dispatch(self, req)
    }
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;
    use l4re::env::env;
    use l4re::proto::RmClient;
    use l4re::server::Server;
    use std::sync::Mutex;

    /// Records what the backend was told.
    #[derive(Default)]
    struct Log(Mutex<std::vec::Vec<String>>);
    impl RmBackend for Arc<Log> {
        fn attached(&self, r: &Region) -> Result<()> {
            if r.name == "refuse" {
                return Err(Error::NoMem);
            }
            self.0
                .lock()
                .unwrap()
                .push(alloc::format!("+{:#x}", r.start));
            Ok(())
        }
        fn detached(&self, _: &Region, s: u64, z: u64) {
            self.0
                .lock()
                .unwrap()
                .push(alloc::format!("-{s:#x}+{z:#x}"));
        }
    }

    #[test]
    fn rm_protocol_through_ipc() -> Result<()> {
        let map = Arc::new(SpinLock::new(RegionMap::new(0x1000, 1 << 47)));
        let log = Arc::new(Log::default());
        let svc = Arc::new(RmService::new(map.clone(), log.clone()));
        let gate = env().factory().create_gate(None, 0)?;
        let g = gate.cap();
        let (_t, h) = l4re::host::spawn_thread(move || {
            let mut s = Server::new();
            s.register_gate(g, svc).unwrap();
            let mut n = 0;
            s.serve(l4re::Timeout::Never, |_| {
                n += 1;
                n < 9
            })
            .unwrap();
        })?;
        let rm: l4re::Cap<Rm> = gate.cap().cast();
        // Fixed attach of anonymous memory.
        let a = rm.attach(0x10_0000, 0x3000, flags::RW, None, 0, 12, 0, "heap", 0)?;
        assert_eq!(a, 0x10_0000);
        // Overlap refused.
        assert_eq!(
            rm.attach(0x10_1000, 0x1000, flags::RW, None, 0, 12, 0, "x", 0),
            Err(Error::AddrNotAvail)
        );
        // Search.
        let b = rm.attach(
            0x10_0000,
            0x1000,
            flags::R | flags::SEARCH_ADDR,
            None,
            0,
            12,
            0,
            "s",
            0,
        )?;
        assert_eq!(b, 0x10_3000);
        // Backend refusal undoes the attach.
        assert_eq!(
            rm.attach(0x20_0000, 0x1000, flags::R, None, 0, 12, 0, "refuse", 0),
            Err(Error::NoMem)
        );
        let (s, z, fl, _, mem) = rm.find(0x10_1234, 1)?;
        assert_eq!((s, z), (0x10_0000, 0x3000));
        assert_eq!(fl & 7, flags::RW);
        assert!(!CapIdx(mem).is_valid());
        assert_eq!(rm.find(0x20_0000, 1), Err(Error::NoEnt));
        // Detach the middle page: split.
        let WithCode(code, (ds, dz, _)) = rm.detach(0x10_1000, 0x1000, 0)?;
        assert_eq!(code, detach_result::SPLIT_DS);
        assert_eq!((ds, dz), (0x10_1000, 0x1000));
        let area = rm.reserve_area(0x40_0000, 0x10_0000, 0, 12)?;
        assert_eq!(area, 0x40_0000);
        rm.free_area(area)?;
        h.join().unwrap();
        assert_eq!(
            *log.0.lock().unwrap(),
            ["+0x100000", "+0x103000", "-0x101000+0x1000"]
        );
        assert!(map.lock().lookup(0x10_2000).is_some());
        Ok(())
    }
}
