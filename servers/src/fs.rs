//! The server objects: the root and directory namespaces, the file objects
//! (read-only or read-write, sharing the file's cache), and the state they
//! share. On the host each `query`/`open` makes an object of its own,
//! released when nobody holds it ([`Limits`]; `docs/l4fs.md`).
//!
//! Names are resolved in one `query`: the whole path (slashes allowed) is
//! resolved and the answer has label 0 and an empty rest; a directory
//! answers with a Namespace capability to itself, a file with a read-only
//! file capability. Writable capabilities come only from `l4fs.fs` `open`
//! with mode RW.
//!
//! All objects live on the one server thread and share the state through
//! `Rc<RefCell<…>>`; l4re's server table holds them as `Arc<dyn
//! ServerObject>`, hence the allowed lint below.
#![allow(clippy::arc_with_non_send_sync)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::RefCell;

use l4re::cap::{IpcGate, OwnedCap};
use l4re::env::env;
use l4re::fpage::{Fpage, MapType, Rights};
use l4re::msg::{LongBytesBuf, ReceivedCap};
use l4re::proto::dataspace::{Flags as DsFlags, Stats};
use l4re::proto::{Dataspace, DataspaceServer, Namespace, NamespaceServer};
use l4re::rpc::{Request, WithCode};
use l4re::server::ServerObject;
use l4re::{CapRights, Error, MsgTag, Result, SndFpage};

use crate::backend::{Backend, Backing, NodeKind, split_path};
use crate::cache::{CacheStats, FileId, PAGE_SHIFT, PAGE_SIZE, PageCache, PageIo, PoolInfo};
use crate::direct::{DirectBlock, DirectMap, Revoker};
use crate::proto::{FileOps, FileOpsServer, FsOps, FsOpsServer, MAX_IO, mode};

/// Makes the frame memory of a file: the platform part.
pub trait FrameFactory {
    /// Frames for a file of at most `capacity` bytes over `backing`;
    /// returns the [`PageIo`] and the address in this task where the
    /// file's page `p` is mapped at `base + p * PAGE_SIZE` (the source of
    /// map replies).
    fn frames(&self, backing: Box<dyn Backing>, capacity: u64) -> Result<(Box<dyn PageIo>, u64)>;
    /// How this platform takes a page of this task's own memory, sent to
    /// clients by direct mapping ([`crate::direct`]), away from them again;
    /// `None` (the default): the platform does not map directly.
    fn revoker(&self) -> Option<Revoker> {
        None
    }
}

/// A gate made while serving a request, waiting to be bound by the server
/// loop (which owns the table of objects) before the reply goes out.
pub type Pending = (l4re::Cap<IpcGate>, Arc<dyn ServerObject>);

/// A file with open handles: its cache and, in shared mode, its two
/// gates.
struct OpenFile {
    id: FileId,
    base: u64,
    writable_backing: bool,
    /// Live handles to the file (gates not yet released).
    handles: usize,
    /// Shared mode: the handle of the read-only and of the read-write gate.
    ro: Option<u64>,
    rw: Option<u64>,
}

/// One gate given to clients (a directory or file object).
struct Handle {
    gate: OwnedCap<IpcGate>,
    /// The file it opens (`None`: a directory).
    file: Option<(u64, u64)>,
    /// The client that opened it, for the per-client limit.
    client: Option<u64>,
}

/// How the server accounts for what clients hold (see `docs/l4fs.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Every `query`/`open` gets a gate of its own, released (and the
    /// file's cache, memfd and descriptor with the last one, dirty pages
    /// written back first) when nobody holds it any more. Needs a platform
    /// that reports that (host). Off: one gate per file and access mode and
    /// per directory, kept for the server's life (Fiasco).
    pub release_unheld: bool,
    /// Most live handles one client may have (0: no limit); past it
    /// `query`/`open` fail with [`Error::TooManyOpen`].
    pub per_client: usize,
    /// Most live handles of all clients together (0: no limit); past it
    /// `query`/`open` fail with [`Error::TableFull`].
    pub total: usize,
    /// Files nobody holds whose (clean) cache is kept for a later open,
    /// oldest closed first beyond this many.
    pub keep_unheld: usize,
}

impl Limits {
    /// Shared gates kept forever, no limit.
    pub const KEEP: Limits = Limits {
        release_unheld: false,
        per_client: 0,
        total: 0,
        keep_unheld: 0,
    };
}

/// The state shared by all objects of one served filesystem.
pub struct FsState {
    /// The page cache.
    pub cache: PageCache,
    /// Files whose pages may be mapped directly ([`crate::direct`]).
    direct: BTreeMap<FileId, DirectMap>,
    /// Direct-mapping counters of files closed since.
    direct_closed: (u64, u64),
    backend: Box<dyn Backend>,
    frames: Box<dyn FrameFactory>,
    files: BTreeMap<(u64, u64), OpenFile>,
    /// Shared mode: the handle of each directory's gate.
    dirs: BTreeMap<(u64, u64), u64>,
    handles: BTreeMap<u64, Handle>,
    next_handle: u64,
    /// Live handles per client.
    clients: BTreeMap<u64, usize>,
    /// Files nobody holds, kept open (written back), oldest first.
    unheld: alloc::collections::VecDeque<(u64, u64)>,
    limits: Limits,
    /// Who the caller of the request being served is (host: its pid).
    caller: Option<fn() -> Option<u64>>,
    /// Gates to bind before the next reply.
    pub pending: Vec<Pending>,
    /// Extra capacity (bytes) a file of an unlimited store may grow by.
    grow: u64,
    me: Option<alloc::rc::Weak<RefCell<FsState>>>,
}

/// Shared handle.
pub type Fs = Rc<RefCell<FsState>>;

impl FsState {
    /// A filesystem over `backend` (shared gates, no limits:
    /// [`Limits::KEEP`]; see [`set_limits`](Self::set_limits)).
    pub fn new(
        cache: PageCache,
        backend: Box<dyn Backend>,
        frames: Box<dyn FrameFactory>,
        grow: u64,
    ) -> Fs {
        let fs = Rc::new(RefCell::new(FsState {
            cache,
            direct: BTreeMap::new(),
            direct_closed: (0, 0),
            backend,
            frames,
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
            handles: BTreeMap::new(),
            next_handle: 1,
            clients: BTreeMap::new(),
            unheld: alloc::collections::VecDeque::new(),
            limits: Limits::KEEP,
            caller: None,
            pending: Vec::new(),
            grow,
            me: None,
        }));
        fs.borrow_mut().me = Some(Rc::downgrade(&fs));
        fs
    }

    /// Sets how handles are accounted; `caller` names the client of the
    /// request being served (for [`Limits::per_client`]).
    pub fn set_limits(&mut self, limits: Limits, caller: Option<fn() -> Option<u64>>) {
        self.limits = limits;
        self.caller = caller;
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn rc(&self) -> Fs {
        self.me
            .as_ref()
            .and_then(|w| w.upgrade())
            .expect("state is alive")
    }

    /// Files with live handles (their caches and descriptors are kept).
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Live handles (gates given to clients), all clients together.
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    /// Live handles of `client`.
    pub fn handles_of(&self, client: u64) -> usize {
        self.clients.get(&client).copied().unwrap_or(0)
    }

    /// The client of the request being served, refused with
    /// [`Error::TooManyOpen`] if it is at its limit.
    fn admit(&self) -> Result<Option<u64>> {
        if self.limits.total > 0 && self.handles.len() >= self.limits.total {
            log::warn!(
                "l4fs: {} objects open, the limit: refused",
                self.handles.len()
            );
            return Err(Error::TableFull);
        }
        let client = self.caller.and_then(|f| f());
        if let Some(c) = client
            && self.limits.per_client > 0
            && self.handles_of(c) >= self.limits.per_client
        {
            log::warn!(
                "l4fs: client {c} holds {} objects, its limit: refused",
                self.handles_of(c)
            );
            return Err(Error::TooManyOpen);
        }
        Ok(client)
    }

    /// A new gate and handle for `obj` (made by `make` from the handle
    /// number), to be bound by the loop.
    fn new_handle(
        &mut self,
        file: Option<(u64, u64)>,
        client: Option<u64>,
        make: impl FnOnce(Fs, u64) -> Arc<dyn ServerObject>,
    ) -> Result<(u64, l4re::Cap<IpcGate>)> {
        let h = self.next_handle;
        let obj = make(self.rc(), h);
        let gate = env().factory().create_gate(None, 0)?;
        self.next_handle += 1;
        let cap = gate.cap();
        self.pending.push((cap, obj));
        self.handles.insert(h, Handle { gate, file, client });
        if let Some(c) = client {
            *self.clients.entry(c).or_insert(0) += 1;
        }
        if let Some(key) = file
            && let Some(f) = self.files.get_mut(&key)
        {
            f.handles += 1;
            if f.handles == 1
                && let Some(i) = self.unheld.iter().position(|k| *k == key)
            {
                self.unheld.remove(i);
            }
        }
        Ok((h, cap))
    }

    /// Handle `h` is held by nobody any more: drops its gate and, with the
    /// last handle of a file, the file (written back first; a file whose
    /// write-back fails is kept, and retried on the next release or sync).
    pub fn release(&mut self, h: u64) {
        let Some(handle) = self.handles.remove(&h) else {
            return;
        };
        if let Some(c) = handle.client
            && let Some(n) = self.clients.get_mut(&c)
        {
            *n -= 1;
            if *n == 0 {
                self.clients.remove(&c);
            }
        }
        drop(handle.gate);
        let Some(key) = handle.file else { return };
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        f.handles = f.handles.saturating_sub(1);
        if f.handles > 0 {
            return;
        }
        // Nobody holds the file: what was written goes to the backing
        // store now; the clean cache is kept for a while.
        let id = f.id;
        if let Err(e) = self.cache.sync(id) {
            log::error!("l4fs: writing back a file nobody holds failed: {e}");
        }
        self.unheld.push_back(key);
        // (A file whose write-back fails goes to the back again: one pass.)
        let mut tries = self.unheld.len();
        while self.unheld.len() > self.limits.keep_unheld && tries > 0 {
            tries -= 1;
            let Some(old) = self.unheld.pop_front() else {
                break;
            };
            self.close_unheld(old);
        }
    }

    /// Files nobody holds whose cache is kept.
    pub fn unheld_files(&self) -> usize {
        self.unheld.len()
    }

    /// Closes file `key` if nobody holds it: its dirty pages are written
    /// back, its frames go back to the pool, its memory and descriptors are
    /// released.
    fn close_unheld(&mut self, key: (u64, u64)) {
        let Some(f) = self.files.get(&key) else {
            return;
        };
        if f.handles > 0 {
            return;
        }
        let id = f.id;
        match self.cache.remove_file(id) {
            Ok(()) => {
                self.files.remove(&key);
                if let Some(mut d) = self.direct.remove(&id) {
                    d.revoke_all();
                    self.direct_closed.0 += d.pages_sent;
                    self.direct_closed.1 += d.pages_revoked;
                }
            }
            Err(e) => {
                // Keep it (and its dirty pages); try again with the next
                // file that is let go.
                log::error!("l4fs: writing back a closed file failed ({e}); kept open");
                self.unheld.push_back(key);
            }
        }
    }

    /// Resolves `path` (relative to `base`) and returns the capability item
    /// for it: directory → namespace, file → file object (`writable` asks
    /// for the read-write object).
    fn resolve(&mut self, base: &[Vec<u8>], path: &[u8], writable: bool) -> Result<SndFpage> {
        let rel = split_path(path)?;
        let mut comps: Vec<&[u8]> = base.iter().map(|c| c.as_slice()).collect();
        comps.extend(rel);
        let node = self.backend.lookup(&comps)?;
        let release = self.limits.release_unheld;
        match node.kind {
            NodeKind::Dir => {
                if writable {
                    return Err(Error::Inval);
                }
                let shared = if release {
                    None
                } else {
                    self.dirs.get(&node.key).copied()
                };
                let cap = match shared {
                    Some(h) => self.handles[&h].gate.cap(),
                    None => {
                        let client = self.admit()?;
                        let comps: Vec<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
                        let (h, cap) = self.new_handle(None, client, |fs, handle| {
                            Arc::new(DirObj {
                                fs,
                                comps,
                                root: false,
                                handle,
                            })
                        })?;
                        if !release {
                            self.dirs.insert(node.key, h);
                        }
                        cap
                    }
                };
                Ok(SndFpage::cap(cap.idx(), CapRights::R, MapType::Map))
            }
            NodeKind::File => {
                let shared = if release {
                    None
                } else {
                    self.files
                        .get(&node.key)
                        .and_then(|f| if writable { f.rw } else { f.ro })
                };
                if let Some(h) = shared {
                    let rights = if writable {
                        CapRights::RW
                    } else {
                        CapRights::R
                    };
                    let cap = self.handles[&h].gate.cap();
                    return Ok(SndFpage::cap(cap.idx(), rights, MapType::Map));
                }
                let client = self.admit()?;
                let fresh = !self.files.contains_key(&node.key);
                if fresh {
                    let mut backing = self.backend.open(&comps)?;
                    let size = backing.size()?;
                    let writable_backing = backing.writable();
                    let capacity = match backing.max_size() {
                        Some(m) => m.max(size),
                        None if writable_backing => size.saturating_add(self.grow),
                        None => size,
                    };
                    let direct = self
                        .frames
                        .revoker()
                        .and_then(|r| Some(DirectMap::new(backing.extents()?, r)));
                    let (io, base) = self.frames.frames(backing, capacity)?;
                    let id = self.cache.add_file(io, size, capacity);
                    if let Some(d) = direct {
                        self.direct.insert(id, d);
                    }
                    self.files.insert(
                        node.key,
                        OpenFile {
                            id,
                            base,
                            writable_backing,
                            handles: 0,
                            ro: None,
                            rw: None,
                        },
                    );
                }
                let f = self.files.get(&node.key).expect("inserted above");
                if writable && !f.writable_backing {
                    if fresh {
                        self.close_unheld(node.key);
                    }
                    return Err(Error::Access);
                }
                let (id, base) = (f.id, f.base);
                let made = self.new_handle(Some(node.key), client, |fs, handle| {
                    Arc::new(FileObj {
                        fs,
                        id,
                        base,
                        writable,
                        handle,
                    })
                });
                let (h, cap) = match made {
                    Ok(m) => m,
                    Err(e) => {
                        self.close_unheld(node.key);
                        return Err(e);
                    }
                };
                if !release {
                    let f = self.files.get_mut(&node.key).expect("inserted above");
                    if writable {
                        f.rw = Some(h);
                    } else {
                        f.ro = Some(h);
                    }
                }
                let rights = if writable {
                    CapRights::RW
                } else {
                    CapRights::R
                };
                Ok(SndFpage::cap(cap.idx(), rights, MapType::Map))
            }
        }
    }

    /// The block of file `id` around `page` to send for a read-only
    /// request straight from memory ([`crate::direct`]), or `None`: serve
    /// it from the cache.
    fn direct_block(&mut self, id: FileId, page: u64, spot: u64) -> Result<Option<DirectBlock>> {
        let Some(d) = self.direct.get_mut(&id) else {
            return Ok(None);
        };
        // Whole pages only: the tail of the last one comes from the cache.
        let pages = self.cache.size(id)? / PAGE_SIZE;
        let cache = &self.cache;
        let max_order = cache.config().max_map_order;
        Ok(d.block(page, spot, pages, max_order, |a, b| {
            cache.any_cached(id, a, b)
        }))
    }

    /// Bytes `[offset, offset + len)` of file `id` are about to change:
    /// [`revoke_direct`](Self::revoke_direct) of their pages.
    fn revoke_direct_bytes(&mut self, id: FileId, offset: u64, len: u64) {
        let end = offset.saturating_add(len).div_ceil(PAGE_SIZE);
        self.revoke_direct(id, offset / PAGE_SIZE, end);
    }

    /// Pages `[first, end)` of file `id` are about to change: their direct
    /// mappings are taken from every client.
    fn revoke_direct(&mut self, id: FileId, first: u64, end: u64) {
        if let Some(d) = self.direct.get_mut(&id) {
            d.revoke(first, end);
        }
    }

    /// The cache's counters of file `id`, or of all files (`None`), with
    /// the direct-mapping counters.
    pub fn stats(&self, id: Option<FileId>) -> Result<CacheStats> {
        let (mut s, (sent, revoked)) = match id {
            Some(id) => (
                self.cache.file_stats(id)?,
                self.direct
                    .get(&id)
                    .map_or((0, 0), |d| (d.pages_sent, d.pages_revoked)),
            ),
            None => (
                self.cache.total_stats(),
                self.direct.values().fold(self.direct_closed, |(s, r), d| {
                    (s + d.pages_sent, r + d.pages_revoked)
                }),
            ),
        };
        s.direct_pages = sent;
        s.direct_revocations = revoked;
        Ok(s)
    }

    /// The statistics as text.
    pub fn stats_text(&self) -> alloc::string::String {
        let t = self.stats(None).unwrap_or_default();
        let p = self.cache.pool_info();
        alloc::format!(
            "l4fs: {} | policy {} | pool {} frames: {} active, {} free cached, {} empty, {} pinned | \
             hits {} misses {} ra-hits {} ra-pages {} reclaims {} evictions {} write-backs {} revocations {} \
             direct {} direct-revoked {} | {} files, {} handles",
            self.backend.describe(),
            self.cache.policy_name(),
            p.frames,
            p.active,
            p.free_cached,
            p.empty,
            p.pinned,
            t.hits,
            t.misses,
            t.readahead_hits,
            t.readahead_pages,
            t.reclaims,
            t.evictions,
            t.writebacks,
            t.revocations,
            t.direct_pages,
            t.direct_revocations,
            self.files.len(),
            self.handles.len()
        )
    }
}

/// A directory: the Namespace protocol; the root also speaks `l4fs.fs`.
pub struct DirObj {
    fs: Fs,
    comps: Vec<Vec<u8>>,
    root: bool,
    /// Its handle (0: the root, which has none).
    handle: u64,
}

impl DirObj {
    /// The root directory object.
    pub fn root(fs: Fs) -> Self {
        DirObj {
            fs,
            comps: Vec::new(),
            root: true,
            handle: 0,
        }
    }
}

impl NamespaceServer for DirObj {
    fn query(
        &self,
        _: &mut Request<'_>,
        name: Vec<u8>,
    ) -> Result<WithCode<(SndFpage, Option<i32>, Option<LongBytesBuf>)>> {
        let item = self.fs.borrow_mut().resolve(&self.comps, &name, false)?;
        Ok(WithCode(
            0,
            (item, Some(0), Some(LongBytesBuf::new(Vec::new()))),
        ))
    }
    fn register_obj(
        &self,
        _: &mut Request<'_>,
        _: u32,
        _: Vec<u8>,
        _: Option<ReceivedCap>,
    ) -> Result<()> {
        Err(Error::Perm)
    }
    fn unlink(&self, _: &mut Request<'_>, _: Vec<u8>) -> Result<()> {
        Err(Error::Perm)
    }
}

impl FsOpsServer for DirObj {
    fn open(&self, _: &mut Request<'_>, path: Vec<u8>, m: u32) -> Result<SndFpage> {
        let writable = match m {
            mode::RO => false,
            mode::RW => true,
            _ => return Err(Error::Inval),
        };
        self.fs.borrow_mut().resolve(&self.comps, &path, writable)
    }
    fn stats(&self, _: &mut Request<'_>) -> Result<CacheStats> {
        self.fs.borrow().stats(None)
    }
    fn pool(&self, _: &mut Request<'_>) -> Result<PoolInfo> {
        Ok(self.fs.borrow().cache.pool_info())
    }
    fn sync_all(&self, _: &mut Request<'_>) -> Result<()> {
        self.fs.borrow_mut().cache.sync_all()
    }
    fn print_stats(&self, _: &mut Request<'_>) -> Result<()> {
        log::info!("{}", self.fs.borrow().stats_text());
        Ok(())
    }
    fn clean(&self, _: &mut Request<'_>, free: u64) -> Result<u64> {
        Ok(self.fs.borrow_mut().cache.clean_to(free as usize) as u64)
    }
}

const ROOT_PROTOCOLS: &[(i64, &str)] = &[(0x4001, "namespace"), (0x4F01, "l4fs.fs")];
const DIR_PROTOCOLS: &[(i64, &str)] = &[(0x4001, "namespace")];

impl ServerObject for DirObj {
    fn protocols(&self) -> &[(i64, &'static str)] {
        if self.root {
            ROOT_PROTOCOLS
        } else {
            DIR_PROTOCOLS
        }
    }
    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        if req.tag().label() == crate::proto::FS_LABEL {
            FsOps::dispatch(self, req)
        } else {
            Namespace::dispatch(self, req)
        }
    }
    fn released(&self) {
        if self.handle != 0 {
            self.fs.borrow_mut().release(self.handle);
        }
    }
}

/// A file opened read-only or read-write.
pub struct FileObj {
    fs: Fs,
    id: FileId,
    base: u64,
    writable: bool,
    handle: u64,
}

impl FileObj {
    fn need_write(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::Access)
        }
    }
}

impl DataspaceServer for FileObj {
    fn map(&self, _: &mut Request<'_>, offset: u64, spot: u64, flags: DsFlags) -> Result<SndFpage> {
        let want = flags & DsFlags::RIGHTS_MASK;
        if want.is_empty() {
            // No access asked for: nothing to map.
            return Err(Error::Inval);
        }
        if want.contains(DsFlags::W) {
            self.need_write()?;
        }
        let (o, sp) = (offset & (PAGE_SIZE - 1), spot & (PAGE_SIZE - 1));
        if o != 0 && sp != 0 && o != sp {
            // The byte at `offset` cannot land at `spot`. (Either side
            // truncated to its page is fine: both are then taken by page,
            // as L4Re's dataspace_svr does.)
            return Err(Error::Inval);
        }
        let mut fs = self.fs.borrow_mut();
        let page = offset / PAGE_SIZE;
        // Readable whatever was asked for, plus W and X as asked.
        let rights = Rights::R | (want & (DsFlags::W | DsFlags::X)).rights();
        let writable = want.contains(DsFlags::W);
        if !writable && let Some(b) = fs.direct_block(self.id, page, spot)? {
            let fpage = Fpage::mem(b.addr, b.order, rights);
            return Ok(SndFpage::mem(fpage, spot, MapType::Map));
        }
        let (first, order) = fs.cache.map(self.id, page, spot, writable)?;
        if writable {
            // Clients may write the block from now on: nobody may go on
            // seeing the image's pages under it.
            fs.revoke_direct(self.id, first, first + (1 << (order - PAGE_SHIFT)));
        }
        let fpage = Fpage::mem(self.base + first * PAGE_SIZE, order, rights);
        Ok(SndFpage::mem(fpage, spot, MapType::Map))
    }
    fn clear(&self, _: &mut Request<'_>, offset: u64, size: u64) -> Result<()> {
        self.need_write()?;
        let mut fs = self.fs.borrow_mut();
        fs.revoke_direct_bytes(self.id, offset, size);
        fs.cache.clear(self.id, offset, size)
    }
    fn info(&self, _: &mut Request<'_>) -> Result<Stats> {
        let size = self.fs.borrow().cache.size(self.id)?;
        let flags = if self.writable {
            DsFlags::RW | DsFlags::X
        } else {
            DsFlags::RX
        };
        Ok(Stats { size, flags })
    }
    fn copy_in(&self, _: &mut Request<'_>, _: u64, src: ReceivedCap, _: u64, _: u64) -> Result<()> {
        l4re::cap::OwnedCap::<l4re::cap::Untyped>::from_cap(src.cap());
        Err(Error::NoSys)
    }
    fn allocate(&self, _: &mut Request<'_>, offset: u64, size: u64) -> Result<()> {
        // Brings the range into the cache (bounded by the free frames).
        self.fs.borrow_mut().cache.prefetch(self.id, offset, size)
    }
    fn map_info(&self, _: &mut Request<'_>) -> Result<(u64, u64)> {
        Err(Error::NoSys)
    }
}

impl FileOpsServer for FileObj {
    fn read(&self, _: &mut Request<'_>, offset: u64, len: u64) -> Result<LongBytesBuf> {
        let n = (len as usize).min(MAX_IO);
        let mut buf = alloc::vec![0u8; n];
        let got = self.fs.borrow_mut().cache.read(self.id, offset, &mut buf)?;
        buf.truncate(got);
        Ok(LongBytesBuf::new(buf))
    }
    fn write(&self, _: &mut Request<'_>, offset: u64, data: Vec<u8>) -> Result<u64> {
        self.need_write()?;
        let mut fs = self.fs.borrow_mut();
        fs.revoke_direct_bytes(self.id, offset, data.len() as u64);
        let n = fs.cache.write(self.id, offset, &data)?;
        Ok(n as u64)
    }
    fn size(&self, _: &mut Request<'_>) -> Result<u64> {
        self.fs.borrow().cache.size(self.id)
    }
    fn sync(&self, _: &mut Request<'_>) -> Result<()> {
        self.fs.borrow_mut().cache.sync(self.id)
    }
    fn truncate(&self, _: &mut Request<'_>, size: u64) -> Result<()> {
        self.need_write()?;
        let mut fs = self.fs.borrow_mut();
        // Only whole pages are mapped directly: from the page the new end
        // falls into on, nothing may stay mapped from the image.
        fs.revoke_direct(self.id, size / PAGE_SIZE, u64::MAX);
        fs.cache.truncate(self.id, size)
    }
    fn stats(&self, _: &mut Request<'_>) -> Result<CacheStats> {
        self.fs.borrow().stats(Some(self.id))
    }
    fn capacity(&self, _: &mut Request<'_>) -> Result<u64> {
        self.fs.borrow().cache.capacity(self.id)
    }
    fn pin(&self, _: &mut Request<'_>, offset: u64, len: u64) -> Result<()> {
        self.fs.borrow_mut().cache.pin(self.id, offset, len)
    }
    fn unpin(&self, _: &mut Request<'_>, offset: u64, len: u64) -> Result<()> {
        self.fs.borrow_mut().cache.unpin(self.id, offset, len)
    }
}

const FILE_PROTOCOLS: &[(i64, &str)] = &[(0x4000, "dataspace"), (0x4F00, "l4fs.file")];

impl ServerObject for FileObj {
    fn protocols(&self) -> &[(i64, &'static str)] {
        FILE_PROTOCOLS
    }
    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
        if req.tag().label() == crate::proto::FILE_LABEL {
            FileOps::dispatch(self, req)
        } else {
            Dataspace::dispatch(self, req)
        }
    }
    fn released(&self) {
        self.fs.borrow_mut().release(self.handle);
    }
}
