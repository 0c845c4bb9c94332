//! The server objects: the root and directory namespaces, the file objects
//! (one read-only and one read-write object per file, sharing the file's
//! cache), and the state they share.
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
use crate::cache::{CacheStats, FileId, PAGE_SIZE, PageCache, PageIo, PoolInfo};
use crate::proto::{FileOps, FileOpsServer, FsOps, FsOpsServer, MAX_IO, mode};

/// Makes the frame memory of a file: the platform part.
pub trait FrameFactory {
    /// Frames for a file of at most `capacity` bytes over `backing`;
    /// returns the [`PageIo`] and the address in this task where the
    /// file's page `p` is mapped at `base + p * PAGE_SIZE` (the source of
    /// map replies).
    fn frames(&self, backing: Box<dyn Backing>, capacity: u64) -> Result<(Box<dyn PageIo>, u64)>;
}

/// A gate made while serving a request, waiting to be bound by the server
/// loop (which owns the table of objects) before the reply goes out.
pub type Pending = (l4re::Cap<IpcGate>, Arc<dyn ServerObject>);

struct OpenFile {
    id: FileId,
    base: u64,
    writable_backing: bool,
    ro: Option<OwnedCap<IpcGate>>,
    rw: Option<OwnedCap<IpcGate>>,
}

/// The state shared by all objects of one served filesystem.
pub struct FsState {
    /// The page cache.
    pub cache: PageCache,
    backend: Box<dyn Backend>,
    frames: Box<dyn FrameFactory>,
    files: BTreeMap<(u64, u64), OpenFile>,
    dirs: BTreeMap<(u64, u64), OwnedCap<IpcGate>>,
    /// Gates to bind before the next reply.
    pub pending: Vec<Pending>,
    /// Extra capacity (bytes) a file of an unlimited store may grow by.
    grow: u64,
    me: Option<alloc::rc::Weak<RefCell<FsState>>>,
}

/// Shared handle.
pub type Fs = Rc<RefCell<FsState>>;

impl FsState {
    /// A filesystem over `backend`.
    pub fn new(
        cache: PageCache,
        backend: Box<dyn Backend>,
        frames: Box<dyn FrameFactory>,
        grow: u64,
    ) -> Fs {
        let fs = Rc::new(RefCell::new(FsState {
            cache,
            backend,
            frames,
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
            pending: Vec::new(),
            grow,
            me: None,
        }));
        fs.borrow_mut().me = Some(Rc::downgrade(&fs));
        fs
    }

    fn rc(&self) -> Fs {
        self.me
            .as_ref()
            .and_then(|w| w.upgrade())
            .expect("state is alive")
    }

    /// A new gate for `obj`, to be bound by the loop.
    fn new_gate(&mut self, obj: Arc<dyn ServerObject>) -> Result<OwnedCap<IpcGate>> {
        let gate = env().factory().create_gate(None, 0)?;
        self.pending.push((gate.cap(), obj));
        Ok(gate)
    }

    /// Resolves `path` (relative to `base`) and returns the capability item
    /// for it: directory → namespace, file → file object (`writable` asks
    /// for the read-write object).
    fn resolve(&mut self, base: &[Vec<u8>], path: &[u8], writable: bool) -> Result<SndFpage> {
        let rel = split_path(path)?;
        let mut comps: Vec<&[u8]> = base.iter().map(|c| c.as_slice()).collect();
        comps.extend(rel);
        let node = self.backend.lookup(&comps)?;
        match node.kind {
            NodeKind::Dir => {
                if writable {
                    return Err(Error::Inval);
                }
                if !self.dirs.contains_key(&node.key) {
                    let obj = Arc::new(DirObj {
                        fs: self.rc(),
                        comps: comps.iter().map(|c| c.to_vec()).collect(),
                        root: false,
                    });
                    let gate = self.new_gate(obj)?;
                    self.dirs.insert(node.key, gate);
                }
                let g = &self.dirs[&node.key];
                Ok(SndFpage::cap(g.idx(), CapRights::R, MapType::Map))
            }
            NodeKind::File => {
                if !self.files.contains_key(&node.key) {
                    let mut backing = self.backend.open(&comps)?;
                    let size = backing.size()?;
                    let writable_backing = backing.writable();
                    let capacity = match backing.max_size() {
                        Some(m) => m.max(size),
                        None if writable_backing => size.saturating_add(self.grow),
                        None => size,
                    };
                    let (io, base) = self.frames.frames(backing, capacity)?;
                    let id = self.cache.add_file(io, size, capacity);
                    self.files.insert(
                        node.key,
                        OpenFile {
                            id,
                            base,
                            writable_backing,
                            ro: None,
                            rw: None,
                        },
                    );
                }
                let rc = self.rc();
                let f = self.files.get(&node.key).expect("inserted above");
                if writable && !f.writable_backing {
                    return Err(Error::Access);
                }
                let (id, base) = (f.id, f.base);
                let exists = if writable {
                    f.rw.is_some()
                } else {
                    f.ro.is_some()
                };
                if !exists {
                    let obj = Arc::new(FileObj {
                        fs: rc,
                        id,
                        base,
                        writable,
                    });
                    let gate = self.new_gate(obj)?;
                    let f = self.files.get_mut(&node.key).expect("inserted above");
                    if writable {
                        f.rw = Some(gate);
                    } else {
                        f.ro = Some(gate);
                    }
                }
                let f = &self.files[&node.key];
                let (g, rights) = if writable {
                    (f.rw.as_ref().expect("set above"), CapRights::RW)
                } else {
                    (f.ro.as_ref().expect("set above"), CapRights::R)
                };
                Ok(SndFpage::cap(g.idx(), rights, MapType::Map))
            }
        }
    }

    /// The statistics as text.
    pub fn stats_text(&self) -> alloc::string::String {
        let t = self.cache.total_stats();
        let p = self.cache.pool_info();
        alloc::format!(
            "l4fs: {} | policy {} | pool {} frames: {} active, {} free cached, {} empty, {} pinned | \
             hits {} misses {} ra-hits {} ra-pages {} reclaims {} evictions {} write-backs {} revocations {} | {} files",
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
            self.files.len()
        )
    }
}

/// A directory: the Namespace protocol; the root also speaks `l4fs.fs`.
pub struct DirObj {
    fs: Fs,
    comps: Vec<Vec<u8>>,
    root: bool,
}

impl DirObj {
    /// The root directory object.
    pub fn root(fs: Fs) -> Self {
        DirObj {
            fs,
            comps: Vec::new(),
            root: true,
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
        Ok(self.fs.borrow().cache.total_stats())
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
}

/// A file opened read-only or read-write.
pub struct FileObj {
    fs: Fs,
    id: FileId,
    base: u64,
    writable: bool,
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
        let (first, order) =
            fs.cache
                .map(self.id, offset / PAGE_SIZE, spot, want.contains(DsFlags::W))?;
        // Readable whatever was asked for, plus W and X as asked.
        let rights = Rights::R | (want & (DsFlags::W | DsFlags::X)).rights();
        let fpage = Fpage::mem(self.base + first * PAGE_SIZE, order, rights);
        Ok(SndFpage::mem(fpage, spot, MapType::Map))
    }
    fn clear(&self, _: &mut Request<'_>, offset: u64, size: u64) -> Result<()> {
        self.need_write()?;
        self.fs.borrow_mut().cache.clear(self.id, offset, size)
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
        let mut fs = self.fs.borrow_mut();
        let fsize = fs.cache.size(self.id)?;
        if offset > fsize {
            return Err(Error::Range);
        }
        let end = offset.saturating_add(size).min(fsize);
        let mut b = [0u8; 1];
        let mut p = offset / PAGE_SIZE;
        while p * PAGE_SIZE < end && fs.cache.free_frames() > fs.cache.config().low_watermark {
            fs.cache.read(self.id, p * PAGE_SIZE, &mut b)?;
            p += 1;
        }
        Ok(())
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
        let n = self.fs.borrow_mut().cache.write(self.id, offset, &data)?;
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
        self.fs.borrow_mut().cache.truncate(self.id, size)
    }
    fn stats(&self, _: &mut Request<'_>) -> Result<CacheStats> {
        self.fs.borrow().cache.file_stats(self.id)
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
}
