//! Client helpers (host platform): opening files, reading and writing
//! through `l4fs.file` in chunks, mapping pages into a reserved window, and
//! the host checks the tests use (`mincore`, page frame numbers).

use l4re::cap::{self, IpcGate, OwnedCap, Untyped};
use l4re::fpage::RcvBuf;
use l4re::host::ReservedRange;
use l4re::msg::LongBytes;
use l4re::proto::dataspace::Flags as DsFlags;
use l4re::proto::{Dataspace, DataspaceClient, Namespace, NamespaceClient};
use l4re::{Cap, Error, Result};

use crate::proto::{FileOps, FileOpsClient, FsOps, FsOpsClient, MAX_IO};

/// A file capability received from the server.
pub struct FileCap {
    cap: OwnedCap<Untyped>,
}

impl FileCap {
    /// As a dataspace.
    pub fn ds(&self) -> Cap<Dataspace> {
        self.cap.cap().cast()
    }
    /// As an `l4fs.file` object.
    pub fn file(&self) -> Cap<FileOps> {
        self.cap.cap().cast()
    }
    /// The raw capability.
    pub fn cap(&self) -> Cap<Untyped> {
        self.cap.cap()
    }

    /// Reads `len` bytes at `offset` (short at the end of the file).
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = (len - out.len()).min(MAX_IO) as u64;
            let chunk = self.file().read(offset + out.len() as u64, want)?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Writes `data` at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        for (i, c) in data.chunks(MAX_IO).enumerate() {
            let n = self
                .file()
                .write(offset + (i * MAX_IO) as u64, LongBytes::new(c))?;
            if n != c.len() as u64 {
                return Err(Error::Io);
            }
        }
        Ok(())
    }
}

/// Resolves `path` through the Namespace protocol (read-only file or
/// directory capability).
pub fn query(ns: Cap<Namespace>, path: &str) -> Result<FileCap> {
    let slot = cap::alloc::<Untyped>()?;
    ns.query(LongBytes::new(path.as_bytes()), RcvBuf::cap(slot.idx()))?;
    Ok(FileCap { cap: slot })
}

/// Opens `path` through `l4fs.fs` with `mode`.
pub fn open(root: Cap<IpcGate>, path: &str, mode: u32) -> Result<FileCap> {
    let fs: Cap<FsOps> = root.cast();
    let slot = cap::alloc::<Untyped>()?;
    fs.open(
        LongBytes::new(path.as_bytes()),
        mode,
        RcvBuf::cap(slot.idx()),
    )?;
    Ok(FileCap { cap: slot })
}

/// A reserved window into which pages of one file are mapped at their file
/// offsets.
pub struct Window {
    range: ReservedRange,
}

impl Window {
    /// A window for `len` bytes of a file.
    pub fn new(len: usize) -> Result<Self> {
        Ok(Window {
            range: ReservedRange::new(len)?,
        })
    }

    /// Start address.
    pub fn addr(&self) -> usize {
        self.range.addr()
    }

    /// Size.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Maps the page at `offset` of `ds` with `flags` (Dataspace map
    /// flags); returns the log2 size of the flexpage the server sent
    /// ([`Error::NoMem`] if nothing was mapped).
    pub fn map(&self, ds: Cap<Dataspace>, offset: u64, flags: DsFlags) -> Result<u8> {
        let spot = self.range.addr() as u64 + (offset & !0xfff);
        let item = ds.map(offset & !0xfff, spot, flags, self.range.window())?;
        item.received_order().ok_or(Error::NoMem)
    }

    /// Reads a byte through the mapping (the page must be mapped and
    /// present).
    pub fn read_byte(&self, offset: usize) -> u8 {
        assert!(offset < self.len());
        // Volatile: other tasks write the shared page.
        self.range.read_byte(offset)
    }

    /// Writes a byte through the mapping (mapped writable).
    pub fn write_byte(&self, offset: usize, v: u8) {
        assert!(offset < self.len());
        self.range.write_byte(offset, v)
    }

    /// The window's memory (the received mappings and the reservation
    /// around them): to change protections, replace or populate pages.
    pub fn mapping(&self) -> &l4re::host::Mapping {
        &self.range
    }

    /// Whether the page at `offset` is resident in the memory behind the
    /// mapping (`mincore`: for a shared memfd mapping, whether the memfd
    /// still holds the page — false once the server punched it out).
    pub fn resident(&self, offset: usize) -> bool {
        self.range
            .resident_pages(offset & !0xfff, 4096)
            .is_ok_and(|n| n == 1)
    }

    /// The physical frame number behind the page at `offset`, from
    /// `/proc/self/pagemap` (needs root; `None` otherwise or if absent).
    pub fn pfn(&self, offset: usize) -> Option<u64> {
        pfn_of(self.addr() + offset)
    }

    /// Device, inode and file offset of the memory behind `offset`, from
    /// `/proc/self/maps` (which memfd page it is).
    pub fn backing_identity(&self, offset: usize) -> Option<(String, u64, u64)> {
        let addr = (self.addr() + offset) as u64;
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let (s, e) = range.split_once('-')?;
            let (s, e) = (
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
            );
            if addr < s || addr >= e {
                continue;
            }
            let _perms = f.next()?;
            let off = u64::from_str_radix(f.next()?, 16).ok()?;
            let dev = f.next()?.to_string();
            let ino: u64 = f.next()?.parse().ok()?;
            return Some((dev, ino, off + (addr - s)));
        }
        None
    }
}

/// The physical frame number of the page at `addr` (root only).
pub fn pfn_of(addr: usize) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").ok()?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, (addr / 4096 * 8) as u64).ok()?;
    let e = u64::from_le_bytes(b);
    let pfn = e & ((1 << 55) - 1);
    (e >> 63 == 1 && pfn != 0).then_some(pfn)
}

/// Deterministic content for test files (xorshift bytes from `seed`).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
