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
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use l4re::cap::CapIdx;
use l4re::fpage::{PAGE_SIZE, Rights};
use l4re::msg::{MsgTag, ReceivedCap};
use l4re::proto::rm::{DetachedRange, Flags, Found, PageIn, RangeEntry, RangeList, detach_result};
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
    /// Whether [`detached`](Self::detached) unmaps the pages itself (an
    /// in-task region manager): detach then tells the client so
    /// (`Unmapped_range`).
    fn unmaps_on_detach(&self) -> bool {
        false
    }
    /// Maps `[min, max]` (inclusive, page-aligned, covered by regions that
    /// allow `rights`) ahead of faults: `page_in`, and attach with
    /// `EAGER_MAP`. An in-task region manager answers with a helper the
    /// calling thread runs itself. The default refuses (`-L4_ENOSYS`).
    fn page_in(&self, min: u64, max: u64, rights: Rights) -> Result<PageIn> {
        let _ = (min, max, rights);
        Err(Error::NoSys)
    }
}

/// A backend that does nothing (Fiasco: the first fault does the work).
pub struct NoBackend;

impl RmBackend for NoBackend {
    fn attached(&self, _: &Region) -> Result<()> {
        Ok(())
    }
    fn detached(&self, _: &Region, _: u64, _: u64) {}
}

/// A rescue jump (`add_rescue_jump`): a fault of an instruction in
/// `[begin, end)` resumes at `rescue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RescueJump {
    /// First pc covered.
    pub begin: u64,
    /// One past the last pc covered.
    pub end: u64,
    /// Where execution resumes.
    pub rescue: u64,
}

/// Most rescue jumps one region map keeps (L4Re registers one per
/// library that copies across protection boundaries).
pub const MAX_RESCUE_JUMPS: usize = 64;

/// What an `attach` request does to a region map: checks L4Re's flags
/// (unknown bits, alignment, offset), picks the backing (`RESERVED`,
/// `KERNEL`, `PAGER` with `ds` as the pager, a dataspace, or anonymous
/// memory) and attaches at `start` or, with `SEARCH_ADDR`, the first free
/// aligned range from there. Returns the start. The one place these rules
/// live, for [`RmService`] and for a loader that is a task's region map
/// without one.
#[allow(clippy::too_many_arguments)]
pub fn attach_to(
    map: &mut RegionMap,
    start: u64,
    size: u64,
    fl: Flags,
    ds: Option<CapIdx>,
    offs: u64,
    align: u8,
    name: &str,
) -> Result<u64> {
    // Unknown bits are refused when the request is decoded; these may be
    // made from raw bits.
    if fl.bits() & !Flags::all().bits() != 0 || align >= 64 || offs % PAGE_SIZE != 0 {
        return Err(Error::Inval);
    }
    let rights = fl.rights();
    let size = size
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(Error::Inval)?;
    let backing = if fl.contains(Flags::RESERVED) {
        Backing::Reserved
    } else if fl.contains(Flags::KERNEL) {
        Backing::Kernel
    } else if fl.contains(Flags::PAGER) {
        Backing::Pager {
            pager: ds.ok_or(Error::Inval)?,
        }
    } else {
        match ds {
            Some(ds) if !fl.contains(Flags::ANONYMOUS) => Backing::File {
                ds,
                offset: offs,
                file_len: size,
            },
            _ => Backing::Anon,
        }
    };
    // Anonymous memory is private by nature.
    let private = fl.contains(Flags::PRIVATE) || backing == Backing::Anon;
    let align = 1u64.checked_shl(align as u32).unwrap_or(PAGE_SIZE);
    Ok(map.attach(
        start,
        size,
        rights,
        backing,
        private,
        name,
        fl.contains(Flags::SEARCH_ADDR),
        fl.contains(Flags::IN_AREA),
        align,
    )?)
}

/// The result code of `detach` for `d` (L4Re's `Detach_result`), with
/// `Unmapped_range` when the region manager unmapped the pages itself.
pub fn detach_code(d: &crate::region::Detached, unmapped: bool) -> i64 {
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
    if unmapped {
        code |= detach_result::UNMAPPED_RANGE;
    }
    code
}

/// The rescue jumps of a task (`add_rescue_jump`): non-overlapping pc
/// ranges, at most [`MAX_RESCUE_JUMPS`].
#[derive(Debug, Default, Clone)]
pub struct RescueJumps(Vec<RescueJump>);

impl RescueJumps {
    /// Registers `[begin, end)` → `rescue` (`-EINVAL` for an empty range,
    /// `-EEXIST` for an overlap, `-ENOMEM` past the limit).
    pub fn add(&mut self, begin: u64, end: u64, rescue: u64) -> Result<()> {
        if begin >= end {
            return Err(Error::Inval);
        }
        if self.0.iter().any(|j| begin < j.end && j.begin < end) {
            return Err(Error::Exist);
        }
        if self.0.len() >= MAX_RESCUE_JUMPS {
            return Err(Error::NoMem);
        }
        self.0.push(RescueJump { begin, end, rescue });
        Ok(())
    }

    /// Removes the jump covering `pc` (`-ENOENT` if none does).
    pub fn remove(&mut self, pc: u64) -> Result<()> {
        let i = self
            .0
            .iter()
            .position(|j| pc >= j.begin && pc < j.end)
            .ok_or(Error::NoEnt)?;
        self.0.swap_remove(i);
        Ok(())
    }

    /// The jump covering `pc`.
    pub fn covering(&self, pc: u64) -> Option<RescueJump> {
        self.0.iter().find(|j| pc >= j.begin && pc < j.end).copied()
    }
}

/// What a `reserve_area` request does to a region map: checks the
/// alignment order, rounds the size to pages and reserves at `start` or,
/// with `SEARCH_ADDR`, the first free aligned range from there.
pub fn reserve_area_in(
    map: &mut RegionMap,
    start: u64,
    size: u64,
    fl: Flags,
    align: u8,
) -> Result<u64> {
    if align >= 64 {
        return Err(Error::Inval);
    }
    let size = size
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(Error::Inval)?;
    let align = 1u64.checked_shl(align as u32).unwrap_or(PAGE_SIZE);
    Ok(map.reserve_area(start, size, fl.contains(Flags::SEARCH_ADDR), align)?)
}

/// The `get_areas` answer of `map` from `start` on.
pub fn areas_from(map: &RegionMap, start: u64) -> RangeList {
    RangeList(
        map.areas_from(start)
            .take(RangeList::MAX)
            .map(|(s, e)| RangeEntry {
                start: s,
                end: e - 1,
                flags: Flags::RESERVED,
            })
            .collect(),
    )
}

/// The `get_info` answer for the region at `addr`: its name and the
/// offset of its start in its dataspace.
pub fn info(map: &RegionMap, addr: u64) -> Result<(String, u64)> {
    let r = map.lookup(addr).ok_or(Error::NoEnt)?;
    let offset = match r.backing {
        Backing::File { offset, .. } => offset,
        _ => 0,
    };
    Ok((r.name.clone(), offset))
}

/// The answer of `find` for region `r`.
pub fn found(r: &Region) -> Found {
    let (offset, mem) = match r.backing {
        Backing::File { ds, offset, .. } => (offset, ds.0),
        Backing::Pager { pager } => (0, pager.0),
        _ => (0, CapIdx::INVALID.0),
    };
    Found {
        start: r.start,
        size: r.size,
        flags: region_flags(r),
        offset,
        mem,
    }
}

/// The `get_regions` answer of `map` from `start` on.
pub fn regions_from(map: &RegionMap, start: u64) -> RangeList {
    RangeList(
        map.regions_from(start)
            .take(RangeList::MAX)
            .map(|r| RangeEntry {
                start: r.start,
                end: r.end() - 1,
                flags: region_flags(r),
            })
            .collect(),
    )
}

/// The region flags L4Re reports for `r` (`L4Re::Rm::Region::flags`).
pub fn region_flags(r: &Region) -> Flags {
    let mut fl = Flags::from(r.rights);
    match r.backing {
        Backing::File { .. } => {}
        Backing::Anon => fl |= Flags::ANONYMOUS,
        Backing::Reserved => fl |= Flags::RESERVED,
        Backing::Kernel => fl |= Flags::KERNEL,
        Backing::Pager { .. } => fl |= Flags::PAGER,
    }
    if r.private {
        fl |= Flags::PRIVATE;
    }
    fl
}

/// The region map of a task, served through `L4Re::Rm`.
pub struct RmService<B: RmBackend> {
    map: Arc<SpinLock<RegionMap>>,
    backend: B,
    rescue: SpinLock<RescueJumps>,
    /// Detaches carried out (see [`generation`](Self::generation)).
    detaches: AtomicU64,
}

impl<B: RmBackend> RmService<B> {
    /// Serves `map`, realizing changes with `backend`.
    pub fn new(map: Arc<SpinLock<RegionMap>>, backend: B) -> Self {
        RmService {
            map,
            backend,
            rescue: SpinLock::new(RescueJumps::default()),
            detaches: AtomicU64::new(0),
        }
    }

    /// How many detaches this service carried out. Counted under the
    /// map's lock, before the detached pages are unmapped: a pager that
    /// maps a page after looking its region up (the map unlocked in
    /// between) reads it with the lookup and again after mapping; if it
    /// changed, the page may belong to a detached region and must be
    /// unmapped again.
    pub fn generation(&self) -> u64 {
        self.detaches.load(Ordering::SeqCst)
    }

    /// The region map.
    pub fn map(&self) -> &Arc<SpinLock<RegionMap>> {
        &self.map
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The rescue jump covering `pc`, if one was registered.
    pub fn rescue_for(&self, pc: u64) -> Option<RescueJump> {
        self.rescue.lock().covering(pc)
    }

    /// Attaches a region directly (what an `attach` request does, without
    /// IPC): used by a pager to set up its own task. `fl` are L4Re's
    /// attach and region flags; with `PAGER`, `ds` is the pager faults in
    /// the region go to.
    #[allow(clippy::too_many_arguments)]
    pub fn attach_region(
        &self,
        start: u64,
        size: u64,
        fl: Flags,
        ds: Option<CapIdx>,
        offs: u64,
        align: u8,
        name: &str,
    ) -> Result<u64> {
        let start = attach_to(&mut self.map.lock(), start, size, fl, ds, offs, align, name)?;
        let size = size.next_multiple_of(PAGE_SIZE);
        let region = self.map.lock().lookup(start).cloned().ok_or(Error::Fault)?;
        if let Err(e) = self.backend.attached(&region) {
            let _ = self.map.lock().detach(start, size);
            return Err(e);
        }
        Ok(start)
    }

    /// Checks a `page_in` range: inside regions (`-L4_ENOENT`), with
    /// memory behind them (`-L4_ENODEV`) and the rights asked for
    /// (`-L4_EACCESS`).
    fn check_page_in(&self, min: u64, max: u64, rights: Rights) -> Result<()> {
        if min % PAGE_SIZE != 0 || max < min {
            return Err(Error::Inval);
        }
        let map = self.map.lock();
        let mut at = min;
        while at <= max {
            let r = map.lookup(at).ok_or(Error::NoEnt)?;
            if matches!(
                r.backing,
                Backing::Reserved | Backing::Kernel | Backing::Pager { .. }
            ) {
                return Err(Error::NoDev);
            }
            if !r.rights.contains(rights) {
                return Err(Error::Access);
            }
            match r.end().checked_sub(1) {
                Some(last) if last < max => at = r.end(),
                _ => break,
            }
        }
        Ok(())
    }
}

impl<B: RmBackend> RmServer for RmService<B> {
    fn attach(
        &self,
        _: &mut Request<'_>,
        start: u64,
        size: u64,
        fl: Flags,
        mem: Option<ReceivedCap>,
        offs: u64,
        align: u8,
        _client_cap: u64,
        name: String,
        backing_offset: u64,
    ) -> Result<u64> {
        // `backing_offset` only names the file offset for debuggers; the
        // dataspace offset is `offs`. `EAGER_MAP` is carried out by L4Re's
        // client, which calls `page_in` after the attach.
        let _ = backing_offset;
        self.attach_region(start, size, fl, mem.map(|c| c.idx), offs, align, &name)
    }

    fn detach(
        &self,
        _: &mut Request<'_>,
        addr: u64,
        size: u64,
        _flags: u32,
    ) -> Result<WithCode<DetachedRange>> {
        let d = {
            let mut map = self.map.lock();
            let d = map.detach(addr, size)?;
            self.detaches.fetch_add(1, Ordering::SeqCst);
            d
        };
        self.backend.detached(&d.region, d.start, d.size);
        let code = detach_code(&d, self.backend.unmaps_on_detach());
        let mem = match d.region.backing {
            Backing::File { ds, .. } => ds.0,
            _ => CapIdx::INVALID.0,
        };
        Ok(WithCode(
            code,
            DetachedRange {
                start: d.start,
                size: d.size,
                mem,
            },
        ))
    }

    fn find(&self, _: &mut Request<'_>, addr: u64, size: u64) -> Result<Found> {
        let map = self.map.lock();
        let r = map.lookup(addr).ok_or(Error::NoEnt)?;
        // `addr + size` may pass the end of the address space (a client's
        // numbers): saturate rather than overflow.
        if size > 0 && !r.contains(addr.saturating_add(size - 1)) {
            // L4Re's find reports the region that contains `addr`.
            log::trace!("rm: find range exceeds the region");
        }
        Ok(found(r))
    }

    fn reserve_area(
        &self,
        _: &mut Request<'_>,
        start: u64,
        size: u64,
        fl: Flags,
        align: u8,
    ) -> Result<u64> {
        reserve_area_in(&mut self.map.lock(), start, size, fl, align)
    }

    fn free_area(&self, _: &mut Request<'_>, addr: u64) -> Result<()> {
        Ok(self.map.lock().free_area(addr)?)
    }

    fn get_regions(&self, _: &mut Request<'_>, start: u64) -> Result<RangeList> {
        Ok(regions_from(&self.map.lock(), start))
    }

    fn get_areas(&self, _: &mut Request<'_>, start: u64) -> Result<RangeList> {
        Ok(areas_from(&self.map.lock(), start))
    }

    fn get_info(&self, _: &mut Request<'_>, addr: u64) -> Result<(String, u64)> {
        info(&self.map.lock(), addr)
    }

    fn add_rescue_jump(
        &self,
        _: &mut Request<'_>,
        pc_begin: u64,
        pc_end: u64,
        rescue_pc: u64,
    ) -> Result<()> {
        self.rescue.lock().add(pc_begin, pc_end, rescue_pc)
    }

    fn remove_rescue_jump(&self, _: &mut Request<'_>, pc: u64) -> Result<()> {
        self.rescue.lock().remove(pc)
    }

    fn page_in(
        &self,
        _: &mut Request<'_>,
        min_addr: u64,
        max_addr: u64,
        rights: u16,
    ) -> Result<PageIn> {
        if rights & !7 != 0 {
            return Err(Error::Inval);
        }
        let rights = Rights::from_bits_truncate(rights as u8);
        // `max_addr` is the last byte: page-aligned down by the client.
        self.check_page_in(min_addr, max_addr, rights)?;
        self.backend.page_in(min_addr, max_addr, rights)
    }
}

const PROTOCOLS: &[(i64, &str)] = &[(<Rm as l4re::rpc::Protocol>::LABEL, "L4Re::Rm")];

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

    /// Serves `svc` on a new gate in a thread of its own for `requests`
    /// requests; returns the gate and the thread to join.
    fn serve<B: RmBackend + 'static>(
        svc: Arc<RmService<B>>,
        requests: usize,
    ) -> Result<(
        l4re::OwnedCap<l4re::cap::IpcGate>,
        std::thread::JoinHandle<()>,
    )> {
        let gate = env().factory().create_gate(None, 0)?;
        let g = gate.cap();
        let (_t, h) = l4re::host::spawn_thread(move || {
            let mut s = Server::new();
            s.register_gate(g, svc).unwrap();
            let mut n = 0;
            s.serve(l4re::Timeout::Never, |_| {
                n += 1;
                n < requests
            })
            .unwrap();
        })?;
        Ok((gate, h))
    }

    #[test]
    fn rm_protocol_through_ipc() -> Result<()> {
        let map = Arc::new(SpinLock::new(RegionMap::new(0x1000, 1 << 47)));
        let log = Arc::new(Log::default());
        let svc = Arc::new(RmService::new(map.clone(), log.clone()));
        let (gate, h) = serve(svc, 9)?;
        let rm: l4re::Cap<Rm> = gate.cap().cast();
        // Fixed attach of anonymous memory.
        let a = rm.attach(0x10_0000, 0x3000, Flags::RW, None, 0, 12, 0, "heap", 0)?;
        assert_eq!(a, 0x10_0000);
        // Overlap refused.
        assert_eq!(
            rm.attach(0x10_1000, 0x1000, Flags::RW, None, 0, 12, 0, "x", 0),
            Err(Error::AddrNotAvail)
        );
        // Search.
        let b = rm.attach(
            0x10_0000,
            0x1000,
            Flags::R | Flags::SEARCH_ADDR,
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
            rm.attach(0x20_0000, 0x1000, Flags::R, None, 0, 12, 0, "refuse", 0),
            Err(Error::NoMem)
        );
        let f = rm.find(0x10_1234, 1)?;
        assert_eq!((f.start, f.size), (0x10_0000, 0x3000));
        assert_eq!(f.flags.rights(), Rights::RW);
        assert!(!CapIdx(f.mem).is_valid());
        assert_eq!(rm.find(0x20_0000, 1), Err(Error::NoEnt));
        // Detach the middle page: split.
        let WithCode(code, d) = rm.detach(0x10_1000, 0x1000, 0)?;
        assert_eq!(code, detach_result::SPLIT_DS);
        assert_eq!((d.start, d.size), (0x10_1000, 0x1000));
        let area = rm.reserve_area(0x40_0000, 0x10_0000, Flags::empty(), 12)?;
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

    /// `find` of a range that runs past the end of the address space (a
    /// client's numbers) answers with the region at `addr` instead of
    /// overflowing (found by the `rm_dispatch` fuzz target).
    #[test]
    fn find_of_a_range_past_the_address_space_end() -> Result<()> {
        let map = Arc::new(SpinLock::new(RegionMap::new(0x1000, 1 << 47)));
        let svc = RmService::new(map, NoBackend);
        svc.attach_region(0x40_0000, 0x2000, Flags::RW, None, 0, 12, "data")?;
        let mut rcv = l4re::msg::RcvCapSlots::new(&[]);
        let mut req = Request::new(l4re::MsgTag::new(0, 0, 0, 0), 0, &mut rcv);
        for size in [u64::MAX, u64::MAX - 0x40_0000, 1 << 63] {
            let f = svc.find(&mut req, 0x40_1000, size)?;
            assert_eq!((f.start, f.size), (0x40_0000, 0x2000));
        }
        Ok(())
    }

    /// An in-task backend: page_in answers with a helper address and
    /// detach says it unmapped.
    struct InTask;
    impl RmBackend for InTask {
        fn attached(&self, _: &Region) -> Result<()> {
            Ok(())
        }
        fn detached(&self, _: &Region, _: u64, _: u64) {}
        fn unmaps_on_detach(&self) -> bool {
            true
        }
        fn page_in(&self, _: u64, _: u64, _: Rights) -> Result<PageIn> {
            Ok(PageIn {
                fp: l4re::fpage::SndFpage::NONE,
                helper: 0x1234_5678,
            })
        }
    }

    #[test]
    fn rm_opcodes_5_to_10_and_bad_requests() -> Result<()> {
        let map = Arc::new(SpinLock::new(RegionMap::new(0x1000, 1 << 47)));
        let svc = Arc::new(RmService::new(map.clone(), InTask));
        // 44: the requests below.
        let (gate, h) = serve(svc, 44)?;
        let rm: l4re::Cap<Rm> = gate.cap().cast();
        // 25 regions: more than one reply holds (21).
        for i in 0..25u64 {
            rm.attach(
                0x100_0000 + i * 0x2000,
                0x1000,
                Flags::RW,
                None,
                0,
                12,
                0,
                "r",
                0,
            )?;
        }
        let first = rm.get_regions(0)?;
        assert_eq!(first.0.len(), RangeList::MAX);
        assert_eq!(
            first.0[0],
            RangeEntry {
                start: 0x100_0000,
                end: 0x100_0fff,
                flags: Flags::RW | Flags::ANONYMOUS | Flags::PRIVATE
            }
        );
        let rest = rm.get_regions(first.0.last().unwrap().end + 1)?;
        assert_eq!(rest.0.len(), 25 - RangeList::MAX);
        rm.reserve_area(0x200_0000, 0x10_0000, Flags::empty(), 12)?;
        let areas = rm.get_areas(0)?;
        assert_eq!(areas.0.len(), 1);
        assert_eq!((areas.0[0].start, areas.0[0].end), (0x200_0000, 0x20f_ffff));
        let (name, off) = rm.get_info(0x100_2000)?;
        assert_eq!((name.as_str(), off), ("r", 0));
        assert_eq!(rm.get_info(0x50_0000), Err(Error::NoEnt));
        // Rescue jumps: overlap refused, removal by any covered pc.
        rm.add_rescue_jump(0x40_0000, 0x40_0100, 0x40_0200)?;
        assert_eq!(
            rm.add_rescue_jump(0x40_00f0, 0x40_0300, 0),
            Err(Error::Exist)
        );
        assert_eq!(rm.add_rescue_jump(0x10, 0x10, 0), Err(Error::Inval));
        rm.remove_rescue_jump(0x40_0080)?;
        assert_eq!(rm.remove_rescue_jump(0x40_0080), Err(Error::NoEnt));
        // page_in: the in-task helper; holes, rights and flags refused.
        let buf = l4re::fpage::RcvBuf::window(0, 47);
        let p = rm.page_in(0x100_0000, 0x100_0fff, Flags::RW.bits() as u16, buf)?;
        assert_eq!(p.helper, 0x1234_5678);
        assert_eq!(
            rm.page_in(0x100_0000, 0x100_1fff, 4, buf),
            Err(Error::NoEnt)
        );
        assert_eq!(
            rm.page_in(0x100_0000, 0x100_0fff, 8, buf),
            Err(Error::Inval)
        );
        // Unknown attach flags, absurd sizes, detach of nothing.
        assert_eq!(
            rm.attach(
                0x300_0000,
                0x1000,
                Flags::RW | Flags::from_bits_retain(0x0020_0000),
                None,
                0,
                12,
                0,
                "x",
                0
            ),
            Err(Error::Inval)
        );
        assert_eq!(
            rm.attach(0x300_0000, u64::MAX, Flags::RW, None, 0, 12, 0, "x", 0),
            Err(Error::Inval)
        );
        assert_eq!(
            rm.reserve_area(0x300_0000, 0x1000, Flags::empty(), 200),
            Err(Error::Inval)
        );
        assert_eq!(
            rm.detach(0x700_0000, 0x1000, 0).map(|_| ()),
            Err(Error::NoEnt)
        );
        // An in-task region manager has unmapped what it detached.
        let WithCode(code, _) = rm.detach(0x100_0000, 0x1000, 0)?;
        assert_eq!(
            code,
            detach_result::DETACHED_DS | detach_result::UNMAPPED_RANGE
        );
        h.join().unwrap();
        assert_eq!(map.lock().len(), 24);
        Ok(())
    }
}
