//! The host-specific part: a host directory as backing store (resolved with
//! `openat2(RESOLVE_BENEATH)`), image files as block devices, and a file's
//! frames as the pages of a memfd ([`MemfdIo`]).

use alloc::boxed::Box;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use l4re::host::SharedMem;
use l4re::{Error, Result};
use rustix::fs::{FallocateFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::backend::{Backend, Backing, Node, NodeKind};
use crate::cache::{FrameIdx, PAGE_SIZE, PageIo};
use crate::ext2::BlockDev;

/// Maps a system error to the nearest L4 error.
pub fn errno_to_error(e: Errno) -> Error {
    match e {
        Errno::NOENT => Error::NoEnt,
        Errno::NOTDIR => Error::NotDir,
        Errno::NAMETOOLONG => Error::NameTooLong,
        // RESOLVE_BENEATH: the path (or a symlink in it) leaves the root.
        Errno::XDEV | Errno::LOOP => Error::Perm,
        // TXTBSY: the file is being executed; it can be opened read-only.
        Errno::ACCESS | Errno::ROFS | Errno::TXTBSY => Error::Access,
        Errno::PERM => Error::Perm,
        Errno::NOSPC | Errno::FBIG => Error::NoSpace,
        Errno::NOMEM => Error::NoMem,
        // Our descriptor table is full.
        Errno::MFILE | Errno::NFILE => Error::TableFull,
        Errno::INVAL => Error::Inval,
        Errno::ISDIR => Error::Inval,
        _ => Error::Io,
    }
}

fn io_error(e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(n) => errno_to_error(Errno::from_raw_os_error(n)),
        None => Error::Io,
    }
}

/// A host directory as the root of the served tree. Every name is resolved
/// by the kernel beneath the root (`RESOLVE_BENEATH`): `..` and symlinks
/// that leave it, absolute symlinks and magic links are refused.
pub struct HostDir {
    root: OwnedFd,
    path: PathBuf,
}

impl HostDir {
    /// Opens `root` (must be a directory).
    pub fn new(root: &Path) -> Result<Self> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_to_error)?;
        Ok(HostDir {
            root: fd,
            path: root.to_path_buf(),
        })
    }

    fn openat(&self, comps: &[&[u8]], flags: OFlags) -> Result<OwnedFd> {
        let mut p = comps.join(&b'/');
        if p.is_empty() {
            p.push(b'.');
        }
        let p = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&p);
        rustix::fs::openat2(
            self.root.as_fd(),
            p,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(errno_to_error)
    }
}

impl Backend for HostDir {
    fn lookup(&mut self, comps: &[&[u8]]) -> Result<Node> {
        let fd = self.openat(comps, OFlags::PATH)?;
        let st = rustix::fs::fstat(&fd).map_err(errno_to_error)?;
        let kind = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile => NodeKind::File,
            rustix::fs::FileType::Directory => NodeKind::Dir,
            _ => return Err(Error::Perm),
        };
        Ok(Node {
            kind,
            key: (st.st_dev, st.st_ino),
        })
    }

    fn open(&mut self, comps: &[&[u8]]) -> Result<Box<dyn Backing>> {
        // Read-only: a descriptor open for writing makes a native `execve`
        // of the file fail with ETXTBSY (and the other way round) for as
        // long as the server keeps it. The file is opened for writing
        // only when something is written ([`HostFile::writer`]).
        let fd = self.openat(comps, OFlags::RDONLY)?;
        let st = rustix::fs::fstat(&fd).map_err(errno_to_error)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(Error::Inval);
        }
        let writable = may_write(&fd);
        Ok(Box::new(HostFile {
            file: File::from(fd),
            writer: None,
            writable,
        }))
    }

    fn describe(&self) -> String {
        format!("host directory {}", self.path.display())
    }
}

/// Whether the file open (read-only) at `fd` could be opened for writing
/// by us: `faccessat2(fd, "", W_OK, AT_EACCESS | AT_EMPTY_PATH)` (Linux
/// 5.8), which checks permissions and read-only mounts without opening
/// anything.
fn may_write(fd: &OwnedFd) -> bool {
    l4re::host::sys::may_write(std::os::fd::AsFd::as_fd(fd))
}

/// A file of the host directory: read through a read-only descriptor;
/// written (write-back, truncation) through a second one opened on the
/// first write.
struct HostFile {
    file: File,
    writer: Option<File>,
    writable: bool,
}

impl HostFile {
    /// The descriptor for writing, opened (on the same file, through
    /// `/proc/self/fd`) on first use.
    fn writer(&mut self) -> Result<&File> {
        if !self.writable {
            return Err(Error::Access);
        }
        if self.writer.is_none() {
            use std::os::fd::AsRawFd;
            let path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
            let w = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_error)?;
            self.writer = Some(w);
        }
        Ok(self.writer.as_ref().expect("opened above"))
    }
}

impl Backing for HostFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        Ok(done)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.writer()?.write_all_at(data, offset).map_err(io_error)
    }
    fn set_size(&mut self, size: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::Access);
        }
        if self.size()? == size {
            return Ok(());
        }
        self.writer()?.set_len(size).map_err(io_error)
    }
    fn flush(&mut self) -> Result<()> {
        if let Some(w) = &self.writer {
            w.sync_data().map_err(io_error)?;
        }
        Ok(())
    }
    fn size(&mut self) -> Result<u64> {
        Ok(self.file.metadata().map_err(io_error)?.len())
    }
    fn max_size(&mut self) -> Option<u64> {
        None
    }
    fn writable(&self) -> bool {
        self.writable
    }
    fn host_file(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }
}

/// A filesystem image file as a block device.
pub struct ImageFile {
    file: File,
}

impl ImageFile {
    /// Opens `path`, read-write if `writable`.
    pub fn open(path: &Path, writable: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(io_error)?;
        Ok(ImageFile { file })
    }
}

impl BlockDev for ImageFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(io_error)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).map_err(io_error)
    }
    fn flush(&mut self) -> Result<()> {
        self.file.sync_data().map_err(io_error)
    }
}

/// A file's frames on the host: the pages of one memfd ([`SharedMem`]),
/// file page at offset `O` at memfd offset `O`. Every client maps the same
/// memfd pages (zero copy); revoking a page punches it out of the memfd
/// (`fallocate(PUNCH_HOLE | KEEP_SIZE)`), which removes it from every
/// mapping at once.
pub struct MemfdIo {
    mem: SharedMem,
    backing: Box<dyn Backing>,
    /// A description of the memfd of our own, written by `sendfile` at its
    /// file position (opened on first use; `None` after it failed: then
    /// [`buffer`](Self::buffer) is used).
    sink: Option<Option<File>>,
    /// Where pages of a store that is no host file pass through (at most
    /// [`FILL_CHUNK`] bytes, kept between fills).
    buffer: Vec<u8>,
}

/// Bytes read from a backing store into the buffer of a [`MemfdIo`] and
/// written into the memfd at once.
const FILL_CHUNK: usize = 256 << 10;

/// Zeros for the part of a filled page past the file's data.
static ZEROS: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

impl MemfdIo {
    /// Frames for a file of at most `capacity` bytes over `backing`.
    pub fn new(backing: Box<dyn Backing>, capacity: u64) -> Result<Self> {
        let cap = usize::try_from(capacity.max(PAGE_SIZE)).map_err(|_| Error::NoMem)?;
        Ok(MemfdIo {
            mem: SharedMem::new(cap)?,
            backing,
            sink: None,
            buffer: Vec::new(),
        })
    }

    /// Writes all of `data` into the memfd at `offset` (`pwrite`).
    fn put(&self, data: &[u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < data.len() {
            match rustix::io::pwrite(self.mem.fd(), &data[done..], offset + done as u64) {
                Ok(0) => return Err(Error::Io),
                Ok(k) => done += k,
                Err(Errno::INTR) => {}
                Err(e) => return Err(errno_to_error(e)),
            }
        }
        Ok(())
    }

    /// Copies up to `len` bytes at `offset` of a host file backing into
    /// the memfd at the same offset, in the kernel (`sendfile`); the bytes
    /// copied (short at the end of the file), or `None` if the backing is
    /// no host file or `sendfile` cannot serve it (then nothing was
    /// copied).
    fn send(&mut self, offset: u64, len: usize) -> Result<Option<usize>> {
        let Some(src) = self.backing.host_file() else {
            return Ok(None);
        };
        let sink = self.sink.get_or_insert_with(|| {
            // Through /proc: a description of our own, so that its file
            // position (where sendfile writes) is no one else's.
            use std::os::fd::AsRawFd;
            let path = format!("/proc/self/fd/{}", self.mem.fd().as_raw_fd());
            std::fs::OpenOptions::new().write(true).open(path).ok()
        });
        let Some(out) = sink.as_ref() else {
            return Ok(None);
        };
        rustix::fs::seek(out, rustix::fs::SeekFrom::Start(offset)).map_err(errno_to_error)?;
        let (mut from, mut done) = (offset, 0);
        while done < len {
            match rustix::fs::sendfile(out, src, Some(&mut from), len - done) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(Errno::INTR) => {}
                // Not a file sendfile can read: the buffer it is.
                Err(Errno::INVAL | Errno::NOSYS) if done == 0 => {
                    self.sink = Some(None);
                    return Ok(None);
                }
                Err(e) => return Err(errno_to_error(e)),
            }
        }
        Ok(Some(done))
    }

    /// Address of the memfd mapping in this process (flexpages of map
    /// replies are formed from it).
    pub fn base(&self) -> u64 {
        self.mem.addr() as u64
    }

    /// Bytes of the mapping.
    pub fn len(&self) -> u64 {
        self.mem.len() as u64
    }

    /// Whether the mapping is empty (never).
    pub fn is_empty(&self) -> bool {
        false
    }

    fn range_mut(&mut self, offset: u64, len: usize) -> &mut [u8] {
        // The pages handed to the backing store here are written back
        // (read by the kernel only); clients that write a page
        // concurrently only change bytes, never the mapping (see
        // `SharedMem::as_mut_slice`).
        &mut self.mem.as_mut_slice()[offset as usize..offset as usize + len]
    }
}

impl PageIo for MemfdIo {
    fn fill(&mut self, first: u64, frames: &[FrameIdx], valid: u64) -> Result<()> {
        let len = frames.len() * PAGE_SIZE as usize;
        let off = first * PAGE_SIZE;
        let v = (valid as usize).min(len);
        // Pages enter the memfd through its write path (`sendfile` from a
        // host file, else `pwrite` from a buffer): a page enters the
        // memfd's page cache locked and is unlocked whole (the writes are
        // page-aligned), so a client pager that maps cached pages on its
        // own (userfaultfd MINOR faults, fault-around) never sees a page
        // half filled, as it could if the backing store read straight
        // into our mapping of the memfd (the page would be in the cache,
        // zero-filled, from the first byte copied into it).
        let data = match self.send(off, v)? {
            Some(n) => n,
            None => {
                let mut buffer = core::mem::take(&mut self.buffer);
                buffer.resize(len.min(FILL_CHUNK), 0);
                let mut n = 0;
                let r = loop {
                    let chunk = (v - n).min(FILL_CHUNK);
                    if chunk == 0 {
                        break Ok(());
                    }
                    let got = match self.backing.read_at(off + n as u64, &mut buffer[..chunk]) {
                        Ok(got) => got,
                        Err(e) => break Err(e),
                    };
                    if let Err(e) = self.put(&buffer[..got], off + n as u64) {
                        break Err(e);
                    }
                    n += got;
                    if got < chunk {
                        break Ok(());
                    }
                };
                self.buffer = buffer;
                r?;
                n
            }
        };
        // Past the data (normally a hole before): zeros, so that every
        // page exists whole.
        let mut at = data;
        while at < len {
            let n = (len - at).min(ZEROS.len() - at % ZEROS.len());
            self.put(&ZEROS[..n], off + at as u64)?;
            at += n;
        }
        Ok(())
    }

    fn write_back(&mut self, page: u64, _: FrameIdx, valid: usize) -> Result<()> {
        let off = page * PAGE_SIZE;
        let mut backing = core::mem::replace(&mut self.backing, Box::new(NoBacking));
        let r = backing.write_at(off, self.range_mut(off, valid));
        self.backing = backing;
        r
    }

    fn revoke(&mut self, page: u64, _: FrameIdx) {
        if let Err(e) = rustix::fs::fallocate(
            self.mem.fd(),
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            page * PAGE_SIZE,
            PAGE_SIZE,
        ) {
            log::error!("l4fs: punching page {page} failed: {e}");
        }
    }

    fn read(&mut self, page: u64, _: FrameIdx, offset: usize, out: &mut [u8]) {
        self.mem.read((page * PAGE_SIZE) as usize + offset, out);
    }

    fn write(&mut self, page: u64, _: FrameIdx, offset: usize, data: &[u8]) {
        self.mem.write((page * PAGE_SIZE) as usize + offset, data);
    }

    fn set_backing_size(&mut self, size: u64) -> Result<()> {
        self.backing.set_size(size)
    }

    fn flush(&mut self) -> Result<()> {
        self.backing.flush()
    }
}

/// Placeholder while the real backing is borrowed out.
struct NoBacking;

impl Backing for NoBacking {
    fn read_at(&mut self, _: u64, _: &mut [u8]) -> Result<usize> {
        Err(Error::Io)
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> Result<()> {
        Err(Error::Io)
    }
    fn set_size(&mut self, _: u64) -> Result<()> {
        Err(Error::Io)
    }
    fn flush(&mut self) -> Result<()> {
        Err(Error::Io)
    }
    fn size(&mut self) -> Result<u64> {
        Err(Error::Io)
    }
    fn max_size(&mut self) -> Option<u64> {
        None
    }
    fn writable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 % 251) as u8 | 1).collect()
    }

    /// A store that is no host file: filled through the buffer.
    struct InMemory(Vec<u8>);

    impl Backing for InMemory {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
            let data = self.0.get(offset as usize..).unwrap_or(&[]);
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            Ok(n)
        }
        fn write_at(&mut self, _: u64, _: &[u8]) -> Result<()> {
            Err(Error::Access)
        }
        fn set_size(&mut self, _: u64) -> Result<()> {
            Err(Error::Access)
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
        fn size(&mut self) -> Result<u64> {
            Ok(self.0.len() as u64)
        }
        fn max_size(&mut self) -> Option<u64> {
            None
        }
        fn writable(&self) -> bool {
            false
        }
    }

    /// Fills the pages of `io` from `first` on (`pages` of them, `valid`
    /// bytes of data) and checks them against `data` and zeros, each page
    /// present in the memfd whole (no hole left where a client pager's
    /// CONTINUE would fail).
    fn fill_and_check(io: &mut MemfdIo, data: &[u8], first: u64, pages: usize, valid: u64) {
        let frames: Vec<FrameIdx> = (0..pages).collect();
        io.fill(first, &frames, valid).unwrap();
        let off = (first * PAGE_SIZE) as usize;
        let mut got = vec![0u8; pages * PAGE_SIZE as usize];
        io.mem.read(off, &mut got);
        for (i, b) in got.iter().enumerate() {
            let want = if (i as u64) < valid { data[off + i] } else { 0 };
            assert_eq!(*b, want, "byte {:#x}", off + i);
        }
        for p in 0..pages as u64 {
            let at = (first + p) * PAGE_SIZE;
            let d = rustix::fs::seek(io.mem.fd(), rustix::fs::SeekFrom::Data(at));
            assert_eq!(d.ok(), Some(at), "page {} is a hole", first + p);
        }
    }

    #[test]
    fn host_file_pages_are_copied_in_the_kernel_whole_and_zero_padded() {
        let dir = std::env::temp_dir().join(format!("l4fs-memfd-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = content(3 * PAGE_SIZE as usize + 100);
        std::fs::write(dir.join("f"), &data).unwrap();
        let mut root = HostDir::new(&dir).unwrap();
        let backing = root.open(&[b"f"]).unwrap();
        assert!(backing.host_file().is_some());
        let mut io = MemfdIo::new(backing, 8 * PAGE_SIZE).unwrap();
        // The middle page alone, then the whole file with a page past it.
        fill_and_check(&mut io, &data, 1, 1, PAGE_SIZE);
        fill_and_check(&mut io, &data, 0, 5, data.len() as u64);
        assert!(matches!(io.sink, Some(Some(_))), "sendfile was not used");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_stores_pass_through_a_kept_buffer_in_chunks() {
        let data = content(FILL_CHUNK * 2 + 5000);
        let pages = data.len().div_ceil(PAGE_SIZE as usize) + 1;
        let mut io =
            MemfdIo::new(Box::new(InMemory(data.clone())), pages as u64 * PAGE_SIZE).unwrap();
        fill_and_check(&mut io, &data, 0, pages, data.len() as u64);
        assert!(io.sink.is_none(), "no host file, no sendfile");
        assert_eq!(io.buffer.len(), FILL_CHUNK, "the buffer is kept, one chunk");
        // A later fill of a page reuses it.
        fill_and_check(&mut io, &data, 2, 1, PAGE_SIZE);
    }
}
