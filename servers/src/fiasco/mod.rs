//! The Fiasco.OC/L4Re part of l4fs (feature `fiasco`): frame memory, the
//! ext2 image from a boot module, and the programs.
//!
//! **Frames.** The pool is one [`Region`] of anonymous memory from L4Re's
//! memory allocator (`l4re_ma_alloc` + `l4re_rm_attach`), touched at start
//! so every page is present in the server: frame `i` is the page at
//! `pool + i * PAGE_SIZE`. Each open file gets an area of address space
//! reserved in L4Re's region map (`l4re_rm_reserve_area`, aligned to
//! 2 MiB), its *window*: when a frame holds page `p` of the file, the frame
//! is also mapped at `window + p * PAGE_SIZE` by `l4_task_map` from this
//! task to itself. Map replies send flexpages out of the window, so one
//! reply can carry a large aligned block of frames that are scattered in
//! the pool (the kernel skips holes), and every client mapping is a child
//! of the window mapping, which is a child of the pool mapping in the
//! kernel's mapping database.
//!
//! **Dirty bits.** Fiasco copies the referenced/dirty bits of the source
//! page-table entry into a new mapping, and `l4_task_unmap` collects them
//! from the child mappings (clearing them) into the source entry. The
//! window mapping's bits are therefore cleared right after it is made (an
//! unmap of no rights), so that client mappings start clean and the dirty
//! bit that [`PageIo::write_protect`] reads means that a client wrote.
//!
//! **Revocation** is `l4_task_unmap` of the frame's *pool* address with
//! `L4_FP_OTHER_SPACES`: it removes the window mapping and every client
//! mapping derived from it, and leaves the pool mapping, so the frame can
//! be filled again at once. Before a page that was mapped writable leaves
//! the active set (and on `sync`), the cache asks
//! [`PageIo::write_protect`]: W is revoked from the client mappings (the
//! children of the window mapping, which keeps W so that it can send the
//! page writable again) and the kernel's dirty bit says whether a client
//! wrote it; only then is it written back, and the clean page may stay in
//! the free pool, still mapped read-only (on the host it has to be written
//! back and punched out).
//!
//! **The image** arrives as a dataspace in an initial capability (ned's
//! `caps = { image = L4.Env.rom:query("l4fs.img") }`), is attached and
//! read through a [`BlockDev`] ([`ModuleDev`]). A boot module is read-only:
//! l4fs then serves the files read-only (`open` RW answers `-EACCES`),
//! unless `--copy` asks it to copy the image into memory from the memory
//! allocator first (writes then reach that copy, for the server's
//! lifetime). A writable dataspace is written in place. The image (or the
//! copy) is attached at a 2 MiB boundary and made present, because its
//! pages are also mapped to clients as they are ([`ModuleDev`]'s
//! [`BlockDev::memory_at`], direct mapping: `crate::direct`); such a page
//! is taken back from the clients by `l4_task_unmap` of this task's page
//! of the image, other spaces only ([`PoolFrames`]' revoker).
//!
//! **Super pages.** Bootstrap places boot modules at 4 KiB boundaries, so
//! moe maps a module in 4 KiB pages and the kernel enters 512 page-table
//! entries into a client for each 2 MiB flexpage sent out of it (~1,080
//! instructions a page). A copy (`--copy`, or `--superpages` for a
//! read-only one) is made in super pages ([`Region::superpages`]: 2 MiB
//! aligned, physically contiguous) where the allocator has the memory: a
//! 2 MiB flexpage out of it becomes one super page mapping in the client.

pub mod client;

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;

use l4re::cap::{CapIdx, IpcGate};
use l4re::env::{env, log_line};
use l4re::fiasco::mem::{self, Region};
use l4re::fpage::Rights;
use l4re::proto::{Dataspace, DataspaceClient};
use l4re::{Error, Result};
use l4re_rt::Args;

use crate::backend::{Backing, Ext2Backend};
use crate::cache::{FrameIdx, PAGE_SHIFT, PAGE_SIZE, PageIo};
use crate::ext2::BlockDev;
use crate::fs::{self, FrameFactory};
use crate::{FsConfig, ImageCopy, Store};

/// Alignment of a file's window (2 MiB: the largest flexpage a map reply
/// may carry).
const WINDOW_ORDER: u8 = 21;

/// The pool of frames: page-aligned memory present in this task.
pub struct Pool {
    mem: Region,
    frames: usize,
}

impl Pool {
    /// A pool of `frames` pages.
    pub fn new(frames: usize) -> Result<Self> {
        let mem = Region::new(frames as u64 * PAGE_SIZE, PAGE_SHIFT)?;
        Ok(Pool { mem, frames })
    }

    fn addr(&self, frame: FrameIdx) -> u64 {
        assert!(frame < self.frames, "frame {frame} outside the pool");
        self.mem.addr() + frame as u64 * PAGE_SIZE
    }

    /// The offset of frame `frame` in the region.
    fn offset(frame: FrameIdx) -> u64 {
        frame as u64 * PAGE_SIZE
    }
}

/// Makes each file's [`PoolIo`].
pub struct PoolFrames {
    pool: Rc<Pool>,
}

impl PoolFrames {
    /// Frames from `pool`.
    pub fn new(pool: Rc<Pool>) -> Self {
        PoolFrames { pool }
    }
}

impl FrameFactory for PoolFrames {
    fn frames(&self, backing: Box<dyn Backing>, capacity: u64) -> Result<(Box<dyn PageIo>, u64)> {
        let size = capacity.max(PAGE_SIZE).next_multiple_of(1 << WINDOW_ORDER);
        let window = mem::reserve_area(size, WINDOW_ORDER)?;
        let io = PoolIo {
            pool: self.pool.clone(),
            backing,
            window,
            window_size: size,
        };
        Ok((Box::new(io), window))
    }

    fn revoker(&self) -> Option<crate::direct::Revoker> {
        Some(revoke_image_page)
    }
}

/// Takes the page of the image at `addr` (this task's mapping of it) away
/// from every client it was mapped on to directly: `l4_task_unmap` with
/// `L4_FP_OTHER_SPACES` removes the mappings derived from it and keeps
/// this task's own.
fn revoke_image_page(addr: u64) {
    if let Err(e) = mem::unmap(addr, PAGE_SHIFT, Rights::RWX, false) {
        log::error!("l4fs: revoking the image page at {addr:#x} failed: {e}");
    }
}

/// One file's frames on Fiasco (see the module documentation).
pub struct PoolIo {
    pool: Rc<Pool>,
    backing: Box<dyn Backing>,
    window: u64,
    window_size: u64,
}

impl PoolIo {
    fn window_addr(&self, page: u64) -> u64 {
        let off = page * PAGE_SIZE;
        assert!(off < self.window_size, "page {page} outside the window");
        self.window + off
    }

    /// Fills `frame` with page `page` (the `k`-th of a run whose first
    /// `valid` bytes come from the backing store) and maps it into the
    /// window.
    fn fill_one(&mut self, page: u64, frame: FrameIdx, k: usize, valid: u64) -> Result<()> {
        let want = valid.saturating_sub(k as u64 * PAGE_SIZE).min(PAGE_SIZE) as usize;
        // The pool is shared with clients' mappings: the page is read into
        // a buffer and copied in whole (`Region` gives no references).
        let mut buf = [0u8; PAGE_SIZE as usize];
        if want > 0 {
            let n = self.backing.read_at(page * PAGE_SIZE, &mut buf[..want])?;
            buf[n..].fill(0);
        }
        self.pool.mem.write(Pool::offset(frame), &buf)?;
        mem::map_local(
            self.pool.addr(frame),
            self.window_addr(page),
            PAGE_SHIFT,
            Rights::RWX,
        )?;
        // A new mapping inherits the referenced/dirty bits of the one it
        // comes from (here the pool page, dirty from the fill), and
        // clients' mappings inherit the window's: clear the window
        // mapping's bits (an unmap of no rights only collects and
        // clears them), so that a dirty bit seen later means a client
        // wrote.
        mem::unmap(self.pool.addr(frame), PAGE_SHIFT, Rights::empty(), false)?;
        Ok(())
    }
}

impl PageIo for PoolIo {
    fn fill(&mut self, first: u64, frames: &[FrameIdx], valid: u64) -> Result<()> {
        for (k, &frame) in frames.iter().enumerate() {
            if let Err(e) = self.fill_one(first + k as u64, frame, k, valid) {
                // The cache takes the frames back as empty: remove the
                // window mappings made so far.
                for &f in &frames[..=k] {
                    let _ = mem::unmap(self.pool.addr(f), PAGE_SHIFT, Rights::RWX, false);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn write_back(&mut self, page: u64, frame: FrameIdx, valid: usize) -> Result<()> {
        let mut buf = [0u8; PAGE_SIZE as usize];
        let buf = &mut buf[..valid];
        self.pool.mem.read(Pool::offset(frame), buf)?;
        self.backing.write_at(page * PAGE_SIZE, buf)
    }

    fn revoke(&mut self, page: u64, frame: FrameIdx) {
        // The window mapping and every client mapping are children of the
        // pool mapping: removing the subtree below it revokes the page
        // everywhere and keeps the frame's memory.
        if let Err(e) = mem::unmap(self.pool.addr(frame), PAGE_SHIFT, Rights::RWX, false) {
            log::error!("l4fs: unmapping page {page} (frame {frame}) failed: {e}");
        }
    }

    fn write_protect(&mut self, page: u64, frame: FrameIdx) -> Option<bool> {
        // W is taken from the clients' mappings only (the children of the
        // window mapping), so that the window can still send the page
        // writable; their dirty bits end up in the window mapping, whose
        // bits are cleared again (they would be inherited by the next
        // client mapping).
        let r = mem::unmap(self.window_addr(page), PAGE_SHIFT, Rights::W, false).and_then(|st| {
            mem::unmap(self.pool.addr(frame), PAGE_SHIFT, Rights::empty(), false)?;
            Ok(st.dirty)
        });
        match r {
            Ok(dirty) => Some(dirty),
            Err(e) => {
                log::error!("l4fs: write-protecting page {page} failed: {e}");
                None
            }
        }
    }

    fn read(&mut self, _: u64, frame: FrameIdx, offset: usize, out: &mut [u8]) {
        assert!(
            offset + out.len() <= PAGE_SIZE as usize,
            "read past the frame"
        );
        let at = Pool::offset(frame) + offset as u64;
        self.pool.mem.read(at, out).expect("frame inside the pool");
    }

    fn write(&mut self, _: u64, frame: FrameIdx, offset: usize, data: &[u8]) {
        assert!(
            offset + data.len() <= PAGE_SIZE as usize,
            "write past the frame"
        );
        let at = Pool::offset(frame) + offset as u64;
        self.pool
            .mem
            .write(at, data)
            .expect("frame inside the pool");
    }

    fn set_backing_size(&mut self, size: u64) -> Result<()> {
        self.backing.set_size(size)
    }

    fn flush(&mut self) -> Result<()> {
        self.backing.flush()
    }
}

/// An ext2 image in memory of this task: an attached dataspace, or a copy
/// of one in memory from the allocator.
pub struct ModuleDev {
    mem: ModuleMem,
    size: u64,
}

enum ModuleMem {
    /// The dataspace itself, attached (read-write if it is writable) and
    /// present: its pages are mapped on to clients as they are.
    Present(mem::Attachment),
    /// The dataspace itself, attached (read-write if it is writable), when
    /// it is not executable: its pages are not mapped on (a client asking
    /// for X would get a mapping without it and fault for ever), all of
    /// them go through the cache.
    Attached(mem::Attachment),
    /// A copy of a read-only dataspace (whole pages; in super pages where
    /// the allocator had them), writable or not.
    Copy {
        mem: Region,
        writable: bool,
        superpages: bool,
    },
}

impl ModuleDev {
    /// The dataspace `ds`, attached (read-write if it is writable; present
    /// at a 2 MiB boundary if it is executable, for direct mapping); with
    /// `copy`, its content copied into fresh memory (super pages where the
    /// allocator has them) instead.
    pub fn open(ds: CapIdx, copy: ImageCopy) -> Result<Self> {
        let cap: l4re::Cap<Dataspace> = l4re::Cap::from_idx(ds);
        let info = cap.info()?;
        let size = info.size;
        let ds_writable = info.flags.contains(l4re::proto::dataspace::Flags::W);
        let ds_executable = info.flags.contains(l4re::proto::dataspace::Flags::X);
        let mem = if copy != ImageCopy::None && !ds_writable {
            let (copy_mem, superpages) = match Region::superpages(size) {
                Ok(r) => (r, true),
                Err(e) => {
                    log::warn!(
                        "l4fs: no super pages for the image copy ({e:?}): copied into 4 KiB pages"
                    );
                    (Region::new(size, WINDOW_ORDER)?, false)
                }
            };
            // The image's server copies (Dataspace `copy_in`; moe holds
            // both, a boot module and the copy): the module need not be
            // mapped here at all. (40 MiB: 25 M instructions in moe, where
            // attaching the module and copying took 33 M.)
            let by_server = copy_mem
                .ds()
                .copy_in(0, cap.send(l4re::CapRights::RW), 0, size);
            if let Err(e) = by_server {
                log::info!("l4fs: the image's server does not copy it ({e:?}): copied here");
                // Present at once: its server maps it in the largest
                // blocks it can, where reading it page by page would
                // take a fault a page.
                let image = mem::Attachment::present(ds, size, false, WINDOW_ORDER)?;
                copy_mem.write(0, image.bytes())?;
            }
            ModuleMem::Copy {
                mem: copy_mem,
                writable: copy == ImageCopy::Writable,
                superpages,
            }
        } else if ds_executable {
            // Aligned like a file's window (2 MiB), so that a file laid
            // out 2 MiB-aligned in the image can be mapped directly in
            // 2 MiB flexpages; present, so that its pages can be mapped
            // on at all.
            ModuleMem::Present(mem::Attachment::present(
                ds,
                size,
                ds_writable,
                WINDOW_ORDER,
            )?)
        } else {
            ModuleMem::Attached(mem::Attachment::new(ds, size, ds_writable)?)
        };
        Ok(ModuleDev { mem, size })
    }

    /// Whether writes reach the image.
    pub fn writable(&self) -> bool {
        match &self.mem {
            ModuleMem::Present(a) | ModuleMem::Attached(a) => a.writable(),
            ModuleMem::Copy { writable, .. } => *writable,
        }
    }

    /// The image size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the served bytes are: the dataspace itself or a copy, in
    /// super pages or not.
    pub fn held_in(&self) -> &'static str {
        match &self.mem {
            ModuleMem::Present(_) | ModuleMem::Attached(_) => "in place",
            ModuleMem::Copy {
                superpages: true, ..
            } => "copy in super pages",
            ModuleMem::Copy { .. } => "copy in 4 KiB pages",
        }
    }

    fn check(&self, offset: u64, len: usize) -> Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::Range),
        }
    }
}

impl BlockDev for ModuleDev {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        match &self.mem {
            ModuleMem::Present(a) | ModuleMem::Attached(a) => a.read(offset, buf),
            ModuleMem::Copy { mem, .. } => mem.read(offset, buf),
        }
    }

    fn memory_at(&self, offset: u64) -> Option<u64> {
        // Both are present in this task, executable and 2 MiB-aligned:
        // the attachment was made so, the copy is a touched `Region`.
        let base = match &self.mem {
            ModuleMem::Present(a) => a.addr(),
            ModuleMem::Copy { mem, .. } => mem.addr(),
            ModuleMem::Attached(_) => return None,
        };
        (offset < self.size).then_some(base + offset)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable() {
            return Err(Error::Access);
        }
        self.check(offset, data.len())?;
        match &mut self.mem {
            ModuleMem::Present(a) | ModuleMem::Attached(a) => a.write(offset, data),
            ModuleMem::Copy { mem, .. } => mem.write(offset, data),
        }
    }
}

/// Builds the filesystem state for `config` (Fiasco).
pub fn build(config: &FsConfig) -> Result<fs::Fs> {
    let Store::Ext2Module { cap, copy } = &config.store;
    let ds = l4re::env::env()
        .get_cap::<Dataspace>(cap)
        .ok_or(Error::NoEnt)
        .inspect_err(|_| log::error!("l4fs: no capability named \"{cap}\""))?;
    let dev = ModuleDev::open(ds.idx(), *copy)?;
    let writable = dev.writable();
    let name = alloc::format!(
        "boot module \"{cap}\" ({} KiB, {}, {})",
        dev.size() / 1024,
        if writable { "read-write" } else { "read-only" },
        dev.held_in()
    );
    let backend = Box::new(Ext2Backend::new(dev, writable, &name)?);
    let pool = Rc::new(Pool::new(config.pool_pages.max(2))?);
    Ok(fs::FsState::new(
        crate::page_cache(config),
        backend,
        Box::new(PoolFrames::new(pool)),
        config.grow,
    ))
}

fn usage() -> Error {
    log_line(
        "usage: l4fs [--image CAP] [--copy | --superpages] [--server CAP] [--pool-pages N] [--readahead N] \
         [--readaround N] [--low-watermark N] [--policy clock|fifo] [--log-stats 0|1]",
    );
    Error::Inval
}

/// `l4fs [--image CAP] [--copy | --superpages] [--server CAP] [options]`:
/// serves the ext2 image in the dataspace `CAP` (default `"image"`) on the
/// gate `"server"`; from a writable copy with `--copy`, from a read-only
/// copy in super pages with `--superpages` (see [`ImageCopy`]).
fn l4fs_server_main(args: Args) -> Result<()> {
    l4re::env::init_logger(log::LevelFilter::Info);
    let mut image = String::from("image");
    let mut server = String::from("server");
    let mut copy = ImageCopy::None;
    let mut opts: alloc::vec::Vec<(&str, &str)> = alloc::vec::Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a {
            "--copy" => copy = ImageCopy::Writable,
            "--superpages" if copy == ImageCopy::None => copy = ImageCopy::ReadOnly,
            "--superpages" => {}
            "--image" => image = it.next().ok_or_else(usage)?.into(),
            "--server" => server = it.next().ok_or_else(usage)?.into(),
            k => opts.push((k, it.next().ok_or_else(usage)?)),
        }
    }
    let mut cfg = FsConfig::ext2_module(&image, copy);
    for (k, v) in opts {
        cfg.set_option(k, v).map_err(|e| {
            log::error!("l4fs: {e}");
            usage()
        })?;
    }
    let gate = env().get_cap::<IpcGate>(&server).ok_or_else(|| {
        log::error!("l4fs: no capability named \"{server}\"");
        Error::NoEnt
    })?;
    crate::serve(gate, cfg)
}
l4re_rt::entry!(l4fs_server = l4fs_server_main);
