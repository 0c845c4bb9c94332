//! Server objects of the Fiasco programs: the [`Probe`] test object, a
//! read-only memory dataspace and a flat namespace of such dataspaces.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use l4re::cap::{Cap, CapIdx, CapRights, OwnedCap};
use l4re::fpage::{Fpage, MapType, PAGE_SIZE, Rights, SndFpage};
use l4re::msg::{LongBytesBuf, MsgTag, ReceivedCap};
use l4re::pages::PageBuf;
use l4re::proto::dataspace::{Flags as DsFlags, Stats};
use l4re::proto::{Dataspace, DataspaceClient, DataspaceServer, Namespace, NamespaceServer};
use l4re::rpc::{Request, WithCode};
use l4re::server::ServerObject;
use l4re::{Error, Result};

use crate::proto::{PROBE_LABEL, Probe, ProbeServer, mixed_sum};

/// `L4RE_PROTO_DATASPACE`.
pub const DATASPACE_LABEL: i64 = 0x4000;
/// `L4RE_PROTO_NAMESPACE`.
pub const NAMESPACE_LABEL: i64 = 0x4001;

/// The test object: answers [`Probe`].
pub struct ProbeObj {
    /// The capability `get_ds` hands out (the memory dataspace's gate).
    pub ds_gate: CapIdx,
    /// Set by `shutdown`: the server loop ends after its reply.
    pub stop: AtomicBool,
}

impl ProbeObj {
    /// A probe object handing out `ds_gate`.
    pub fn new(ds_gate: CapIdx) -> Self {
        ProbeObj {
            ds_gate,
            stop: AtomicBool::new(false),
        }
    }

    /// Whether `shutdown` was called.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

impl ProbeServer for ProbeObj {
    fn add(&self, _: &mut Request<'_>, a: u64, b: u64) -> Result<u64> {
        a.checked_add(b).ok_or(Error::Range)
    }

    #[allow(clippy::too_many_arguments)]
    fn mixed(
        &self,
        _: &mut Request<'_>,
        a: u8,
        b: u16,
        c: bool,
        d: u32,
        e: u64,
        s: String,
        v: Vec<u16>,
    ) -> Result<(u64, String, bool)> {
        Ok((mixed_sum(a, b, c, d, e, &v), s.chars().rev().collect(), !c))
    }

    fn ds_size(&self, _: &mut Request<'_>, ds: ReceivedCap) -> Result<u64> {
        // The slot is ours now: release the capability when done.
        let ds = OwnedCap::from_cap(ds.cap::<Dataspace>());
        Ok(ds.info()?.size)
    }

    fn get_ds(&self, _: &mut Request<'_>) -> Result<SndFpage> {
        if !self.ds_gate.is_valid() {
            return Err(Error::NoEnt);
        }
        Ok(SndFpage::cap(self.ds_gate, CapRights::RW, MapType::Map))
    }

    fn shutdown(&self, _: &mut Request<'_>) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn fail(&self, _: &mut Request<'_>, code: i32) -> Result<()> {
        Err(if code < 0 {
            Error::from_code(code as i64)
        } else {
            Error::Inval
        })
    }
}

impl ServerObject for ProbeObj {
    fn protocols(&self) -> &[(i64, &'static str)] {
        &[(PROBE_LABEL, "l4re-rs::Probe")]
    }

    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        Probe::dispatch(self, req)
    }
}

/// A read-only dataspace over page-aligned memory of this task: `map`
/// sends the page at the requested offset (one page per request), `info`
/// reports the byte size and the rights `R|X`.
pub struct MemDs {
    mem: PageBuf,
}

impl MemDs {
    /// A dataspace holding `contents`, padded with zeros to whole pages
    /// (at least `min_size` bytes). Every page is present in this task
    /// when it is mapped to a client ([`PageBuf`]).
    pub fn new(contents: &[u8], min_size: usize) -> Result<Self> {
        Ok(MemDs {
            mem: PageBuf::new(contents, min_size)?,
        })
    }

    /// A dataspace of `size` bytes whose byte `i` is [`pattern_byte`]`(i)`.
    pub fn with_pattern(size: usize) -> Result<Self> {
        let data: Vec<u8> = (0..size).map(pattern_byte).collect();
        Self::new(&data, size)
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.mem.len() as u64
    }

    /// The contents.
    pub fn bytes(&self) -> &[u8] {
        self.mem.bytes()
    }
}

/// Byte `i` of the test pattern: differs from page to page and within one.
pub fn pattern_byte(i: usize) -> u8 {
    (i as u8) ^ ((i >> 12) as u8).wrapping_mul(31)
}

impl DataspaceServer for MemDs {
    fn map(&self, _: &mut Request<'_>, offset: u64, spot: u64, flags: DsFlags) -> Result<SndFpage> {
        if offset >= self.size() {
            return Err(Error::Range);
        }
        if flags.contains(DsFlags::W) {
            return Err(Error::Perm);
        }
        let page = offset & !(PAGE_SIZE - 1);
        let rights = (flags & DsFlags::RX).rights() | Rights::R;
        let fpage = Fpage::mem(self.mem.addr() + page, 12, rights);
        Ok(SndFpage::mem(fpage, spot, MapType::Map))
    }

    fn clear(&self, _: &mut Request<'_>, _: u64, _: u64) -> Result<()> {
        Err(Error::Perm)
    }

    fn info(&self, _: &mut Request<'_>) -> Result<Stats> {
        Ok(Stats {
            size: self.size(),
            flags: DsFlags::RX,
        })
    }

    fn copy_in(&self, _: &mut Request<'_>, _: u64, src: ReceivedCap, _: u64, _: u64) -> Result<()> {
        drop(OwnedCap::from_cap(src.cap::<Dataspace>()));
        Err(Error::Perm)
    }

    fn allocate(&self, _: &mut Request<'_>, _: u64, _: u64) -> Result<()> {
        Ok(())
    }

    fn map_info(&self, _: &mut Request<'_>) -> Result<(u64, u64)> {
        Err(Error::NoSys)
    }
}

impl ServerObject for MemDs {
    fn protocols(&self) -> &[(i64, &'static str)] {
        &[(DATASPACE_LABEL, "L4Re::Dataspace")]
    }

    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        Dataspace::dispatch(self, req)
    }
}

/// A flat, read-only namespace: names mapped to capabilities (the gates of
/// dataspace objects of the same server).
#[derive(Default)]
pub struct FlatNs {
    entries: Vec<(String, CapIdx)>,
}

impl FlatNs {
    /// An empty namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` → `cap`.
    pub fn insert(&mut self, name: &str, cap: Cap<l4re::cap::Untyped>) {
        self.entries.push((name.into(), cap.idx()));
    }

    /// Looks a name up (a leading `/` is ignored).
    pub fn lookup(&self, name: &[u8]) -> Option<CapIdx> {
        let name = name.strip_prefix(b"/").unwrap_or(name);
        self.entries
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, c)| *c)
    }
}

type QueryReply = WithCode<(SndFpage, Option<i32>, Option<LongBytesBuf>)>;

impl NamespaceServer for FlatNs {
    fn query(&self, _: &mut Request<'_>, name: Vec<u8>) -> Result<QueryReply> {
        // L4Re's clients send the name without a terminator; tolerate one.
        let name = match name.split_last() {
            Some((0, rest)) => rest,
            _ => &name[..],
        };
        if name.is_empty() {
            return Err(Error::Inval);
        }
        let cap = self.lookup(name).ok_or(Error::NoEnt)?;
        Ok(WithCode(
            0,
            (SndFpage::cap(cap, CapRights::RW, MapType::Map), None, None),
        ))
    }

    fn register_obj(
        &self,
        _: &mut Request<'_>,
        _: u32,
        _: Vec<u8>,
        obj: Option<ReceivedCap>,
    ) -> Result<()> {
        if let Some(obj) = obj {
            drop(OwnedCap::from_cap(obj.cap::<l4re::cap::Untyped>()));
        }
        Err(Error::Perm)
    }

    fn unlink(&self, _: &mut Request<'_>, _: Vec<u8>) -> Result<()> {
        Err(Error::Perm)
    }
}

impl ServerObject for FlatNs {
    fn protocols(&self) -> &[(i64, &'static str)] {
        &[(NAMESPACE_LABEL, "L4Re::Namespace")]
    }

    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        Namespace::dispatch(self, req)
    }
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;
    use l4re::msg::RcvCapSlots;
    use l4re::utcb::Utcb;

    fn request(label: i64, f: impl FnOnce(&mut l4re::msg::MsgWriter<'_>)) -> MsgTag {
        Utcb::with(|u| {
            let mut w = l4re::msg::MsgWriter::new(u);
            f(&mut w);
            w.finish(label).unwrap()
        })
    }

    #[test]
    fn memds_maps_pages_and_refuses_writes() {
        use l4re::msg::Marshal;
        let ds = MemDs::with_pattern(3 * 4096 + 10).unwrap();
        assert_eq!(ds.size(), 3 * 4096 + 10);
        assert_eq!(ds.bytes()[4097], pattern_byte(4097));
        let mut rcv = RcvCapSlots::new(&[]);
        let tag = request(DATASPACE_LABEL, |w| {
            0i32.write(w).unwrap();
            0x2345u64.write(w).unwrap();
            0x7000_2345u64.write(w).unwrap();
            DsFlags::R.write(w).unwrap();
        });
        let mut req = Request::new(tag, 0x10, &mut rcv);
        let reply = Dataspace::dispatch(&ds, &mut req).unwrap();
        assert_eq!((reply.words(), reply.items()), (0, 1));
        Utcb::with(|u| {
            let mr = u.mr();
            assert_eq!(mr[0], 0x7000_2000 | 8);
            assert_eq!(mr[1], Fpage::mem(ds.mem.addr() + 0x2000, 12, Rights::R).0);
        });
        let tag = request(DATASPACE_LABEL, |w| {
            0i32.write(w).unwrap();
            0u64.write(w).unwrap();
            0u64.write(w).unwrap();
            DsFlags::RW.write(w).unwrap();
        });
        let mut req = Request::new(tag, 0x10, &mut rcv);
        assert_eq!(Dataspace::dispatch(&ds, &mut req), Err(Error::Perm));
        let tag = request(DATASPACE_LABEL, |w| {
            0i32.write(w).unwrap();
            0x10_0000u64.write(w).unwrap();
            0u64.write(w).unwrap();
            DsFlags::R.write(w).unwrap();
        });
        let mut req = Request::new(tag, 0x10, &mut rcv);
        assert_eq!(Dataspace::dispatch(&ds, &mut req), Err(Error::Range));
    }

    #[test]
    fn flat_namespace_resolves_names() {
        let mut ns = FlatNs::new();
        ns.insert("hello.txt", Cap::from_idx(CapIdx::from_slot(0x42)));
        assert_eq!(ns.lookup(b"/hello.txt"), Some(CapIdx::from_slot(0x42)));
        assert_eq!(ns.lookup(b"nothing"), None);
        let mut rcv = RcvCapSlots::new(&[]);
        let tag = request(NAMESPACE_LABEL, |w| {
            use l4re::msg::Marshal;
            0i32.write(w).unwrap();
            l4re::msg::LongBytes::new(b"hello.txt").write(w).unwrap();
        });
        let mut req = Request::new(tag, 0x10, &mut rcv);
        let reply = Namespace::dispatch(&ns, &mut req).unwrap();
        assert_eq!((reply.label(), reply.items()), (0, 1));
    }
}
