//! Shared pieces of the test programs: a test protocol and small servers
//! for it and for L4Re's Namespace and Dataspace protocols.
//!
//! The binary `l4re-testprog` runs them as separate processes (tasks) for the
//! multi-process tests in `tests/` and for the IPC benchmark.

use std::collections::BTreeMap;
use std::sync::Mutex;

use l4re::fpage::{Fpage, MapType};
use l4re::msg::{LongBytesBuf, ReceivedCap};
use l4re::proto::dataspace::{Flags as DsFlags, Stats};
use l4re::proto::{Dataspace, DataspaceServer, Namespace, NamespaceServer};
use l4re::rpc::{Request, WithCode};
use l4re::server::ServerObject;
use l4re::{CapRights, Error, MsgTag, Result, SndFpage, protocol};

protocol! {
    /// The protocol of the test server.
    pub protocol Calc: client CalcClient, server CalcServer, label 0x7000, opcode i32 {
        /// `a + b` (error `Range` on overflow).
        0 => fn add(a: u64, b: u64) -> u64;
        /// Returns `(client, seq * 3 + client, "<text>/<client>/<seq>")`, so a
        /// reply can only be right if it answered this very request.
        1 => fn mix(client: u32, seq: u64, text: &str) -> (u32, u64, String);
        /// Number of requests served so far.
        2 => fn served() -> u64;
    }
}

/// The answer `mix` must give.
pub fn expected_mix(client: u32, seq: u64, text: &str) -> (u32, u64, String) {
    (
        client,
        seq.wrapping_mul(3).wrapping_add(client as u64),
        format!("{text}/{client}/{seq}"),
    )
}

/// The test server.
#[derive(Default)]
pub struct CalcService {
    served: std::sync::atomic::AtomicU64,
}

impl CalcServer for CalcService {
    fn add(&self, _: &mut Request<'_>, a: u64, b: u64) -> Result<u64> {
        self.count();
        a.checked_add(b).ok_or(Error::Range)
    }
    fn mix(
        &self,
        _: &mut Request<'_>,
        client: u32,
        seq: u64,
        text: String,
    ) -> Result<(u32, u64, String)> {
        self.count();
        Ok(expected_mix(client, seq, &text))
    }
    fn served(&self, _: &mut Request<'_>) -> Result<u64> {
        Ok(self.served.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl CalcService {
    fn count(&self) {
        self.served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ServerObject for CalcService {
    fn protocols(&self) -> &[(i64, &'static str)] {
        &[(0x7000, "calc")]
    }
    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        Calc::dispatch(self, req)
    }
}

/// An in-memory namespace: names → capabilities registered by clients.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<BTreeMap<Vec<u8>, ReceivedCap>>,
}

impl NamespaceServer for Registry {
    fn query(
        &self,
        _: &mut Request<'_>,
        name: Vec<u8>,
    ) -> Result<WithCode<(SndFpage, Option<i32>, Option<LongBytesBuf>)>> {
        // One component per query, as L4Re's name-space server does.
        let (first, rest) = match name.iter().position(|&b| b == b'/') {
            Some(n) => (&name[..n], Some(&name[n + 1..])),
            None => (&name[..], None),
        };
        let entries = self.entries.lock().unwrap();
        let cap = entries.get(first).ok_or(Error::NoEnt)?;
        let item = SndFpage::cap(cap.idx, CapRights::RW, MapType::Map);
        let (code, rest) = match rest {
            Some(r) => (l4re::proto::namespace::PARTLY_RESOLVED, r.to_vec()),
            None => (0, Vec::new()),
        };
        Ok(WithCode(
            code,
            (item, Some(0), Some(LongBytesBuf::new(rest))),
        ))
    }
    fn register_obj(
        &self,
        _: &mut Request<'_>,
        _flags: u32,
        name: Vec<u8>,
        obj: Option<ReceivedCap>,
    ) -> Result<()> {
        let obj = obj.ok_or(Error::Inval)?;
        if name.is_empty() || name.contains(&b'/') {
            return Err(Error::Inval);
        }
        self.entries.lock().unwrap().insert(name, obj);
        Ok(())
    }
    fn unlink(&self, _: &mut Request<'_>, name: Vec<u8>) -> Result<()> {
        self.entries
            .lock()
            .unwrap()
            .remove(&name)
            .map(|_| ())
            .ok_or(Error::NoEnt)
    }
}

impl ServerObject for Registry {
    fn protocols(&self) -> &[(i64, &'static str)] {
        &[(0x4001, "namespace")]
    }
    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        Namespace::dispatch(self, req)
    }
}

/// The byte the memory dataspace holds at `offset` (a pattern clients check).
pub fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 12)) as u8
}

/// A dataspace over shared memory filled with [`pattern`].
pub struct PatternDataspace {
    mem: l4re::host::SharedMem,
}

impl PatternDataspace {
    /// A dataspace of `size` bytes (rounded up to pages).
    pub fn new(size: usize) -> Result<Self> {
        let mut mem = l4re::host::SharedMem::new(size)?;
        for (i, b) in mem.as_mut_slice().iter_mut().enumerate() {
            *b = pattern(i as u64);
        }
        Ok(PatternDataspace { mem })
    }

    fn size(&self) -> u64 {
        self.mem.len() as u64
    }
}

impl DataspaceServer for PatternDataspace {
    fn map(&self, _: &mut Request<'_>, offset: u64, spot: u64, flags: DsFlags) -> Result<SndFpage> {
        if offset >= self.size() {
            return Err(Error::Range);
        }
        let rights = (flags & DsFlags::RW).rights();
        let page = self.mem.addr() as u64 + (offset & !0xfff);
        Ok(SndFpage::mem(
            Fpage::mem(page, 12, rights),
            spot,
            MapType::Map,
        ))
    }
    fn clear(&self, _: &mut Request<'_>, _offset: u64, _size: u64) -> Result<()> {
        Err(Error::NoSys)
    }
    fn info(&self, _: &mut Request<'_>) -> Result<Stats> {
        Ok(Stats {
            size: self.size(),
            flags: DsFlags::RW,
        })
    }
    fn copy_in(&self, _: &mut Request<'_>, _: u64, _: ReceivedCap, _: u64, _: u64) -> Result<()> {
        Err(Error::NoSys)
    }
    fn allocate(&self, _: &mut Request<'_>, _: u64, _: u64) -> Result<()> {
        Ok(())
    }
    fn map_info(&self, _: &mut Request<'_>) -> Result<(u64, u64)> {
        Err(Error::NoSys)
    }
}

impl ServerObject for PatternDataspace {
    fn protocols(&self) -> &[(i64, &'static str)] {
        &[(0x4000, "dataspace")]
    }
    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        Dataspace::dispatch(self, req)
    }
}
