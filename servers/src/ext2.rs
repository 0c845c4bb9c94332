//! A small ext2 reader/writer over a block device (an image file on the
//! host, a boot module in memory on Fiasco): path lookup through linear
//! directory scans, file content through the classic block map (12 direct,
//! single, double and triple indirect blocks), and writes *in place* into
//! blocks the file already owns. Platform-neutral (`core` + `alloc`).
//!
//! Limits (documented in `servers/README.md`): no block or inode
//! allocation (a write must stay inside the file's allocated blocks, and a
//! truncate inside its last allocated block), no extents (ext4), no
//! `meta_bg`/64-bit layouts, symlinks are not followed.

use alloc::vec;
use alloc::vec::Vec;

use l4re::{Error, Result};

/// Random access to the bytes of the filesystem image.
pub trait BlockDev {
    /// Reads `buf.len()` bytes at `offset` (fails if past the end).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// Flushes written data.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The root directory's inode number.
pub const ROOT_INO: u32 = 2;
const MAGIC: u16 = 0xEF53;
const S_IFMT: u16 = 0xF000;
const S_IFDIR: u16 = 0x4000;
const S_IFREG: u16 = 0x8000;
const EXTENTS_FL: u32 = 0x80000;
/// incompat features we understand: filetype (0x2).
const INCOMPAT_OK: u32 = 0x2;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Anything else (symlink, device…).
    Other,
}

/// An inode as far as we need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Inode number.
    pub ino: u32,
    /// Kind.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// The 15 block pointers.
    pub block: [u32; 15],
    flags: u32,
}

/// An ext2 filesystem on a block device.
pub struct Ext2<D: BlockDev> {
    dev: D,
    block_size: u64,
    inodes_per_group: u32,
    inode_size: u64,
    inode_tables: Vec<u64>,
    inodes_count: u32,
    blocks_count: u64,
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl<D: BlockDev> Ext2<D> {
    /// Opens the filesystem: reads and checks the superblock and the group
    /// descriptors.
    pub fn open(mut dev: D) -> Result<Self> {
        let mut sb = [0u8; 1024];
        dev.read_at(1024, &mut sb)?;
        if le16(&sb, 56) != MAGIC {
            return Err(Error::Inval);
        }
        let log_bs = le32(&sb, 24);
        if log_bs > 6 {
            return Err(Error::Inval);
        }
        let block_size = 1024u64 << log_bs;
        let rev = le32(&sb, 76);
        let inode_size = if rev >= 1 { le16(&sb, 88) as u64 } else { 128 };
        let incompat = if rev >= 1 { le32(&sb, 96) } else { 0 };
        if incompat & !INCOMPAT_OK != 0 {
            log::warn!("l4fs ext2: unsupported incompat features {incompat:#x}");
            return Err(Error::NoSys);
        }
        let inodes_count = le32(&sb, 0);
        let blocks_count = le32(&sb, 4) as u64;
        let first_data_block = le32(&sb, 20) as u64;
        let blocks_per_group = le32(&sb, 32) as u64;
        let inodes_per_group = le32(&sb, 40);
        if blocks_per_group == 0 || inodes_per_group == 0 || inode_size < 128 {
            return Err(Error::Inval);
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        let mut gdt = vec![0u8; (groups * 32) as usize];
        dev.read_at((first_data_block + 1) * block_size, &mut gdt)?;
        let inode_tables = (0..groups as usize)
            .map(|g| le32(&gdt, g * 32 + 8) as u64)
            .collect();
        Ok(Ext2 {
            dev,
            block_size,
            inodes_per_group,
            inode_size,
            inode_tables,
            inodes_count,
            blocks_count,
        })
    }

    /// The block size.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    fn inode_pos(&self, ino: u32) -> Result<u64> {
        if ino == 0 || ino > self.inodes_count {
            return Err(Error::NoEnt);
        }
        let g = ((ino - 1) / self.inodes_per_group) as usize;
        let idx = ((ino - 1) % self.inodes_per_group) as u64;
        let table = *self.inode_tables.get(g).ok_or(Error::Io)?;
        Ok(table * self.block_size + idx * self.inode_size)
    }

    /// Reads inode `ino`.
    pub fn inode(&mut self, ino: u32) -> Result<Inode> {
        let pos = self.inode_pos(ino)?;
        let mut b = [0u8; 128];
        self.dev.read_at(pos, &mut b)?;
        let mode = le16(&b, 0);
        let kind = match mode & S_IFMT {
            S_IFREG => Kind::File,
            S_IFDIR => Kind::Dir,
            _ => Kind::Other,
        };
        let mut size = le32(&b, 4) as u64;
        if kind == Kind::File {
            size |= (le32(&b, 108) as u64) << 32;
        }
        let mut block = [0u32; 15];
        for (i, x) in block.iter_mut().enumerate() {
            *x = le32(&b, 40 + 4 * i);
        }
        Ok(Inode {
            ino,
            kind,
            size,
            block,
            flags: le32(&b, 32),
        })
    }

    fn read_ptr(&mut self, block: u32, idx: u64) -> Result<u32> {
        if block as u64 >= self.blocks_count {
            return Err(Error::Io);
        }
        let mut b = [0u8; 4];
        self.dev
            .read_at(block as u64 * self.block_size + idx * 4, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// The disk block holding logical block `lblk` of the inode (0: a hole).
    pub fn map_block(&mut self, inode: &Inode, lblk: u64) -> Result<u32> {
        if inode.flags & EXTENTS_FL != 0 {
            return Err(Error::NoSys);
        }
        let per = self.block_size / 4;
        let mut l = lblk;
        if l < 12 {
            return Ok(inode.block[l as usize]);
        }
        l -= 12;
        let (root, depth) = if l < per {
            (inode.block[12], 1)
        } else if l - per < per * per {
            l -= per;
            (inode.block[13], 2)
        } else {
            l -= per + per * per;
            if l >= per * per * per {
                return Err(Error::Range);
            }
            (inode.block[14], 3)
        };
        let mut blk = root;
        for level in (0..depth).rev() {
            if blk == 0 {
                return Ok(0);
            }
            let idx = (l / per.pow(level)) % per;
            blk = self.read_ptr(blk, idx)?;
        }
        Ok(blk)
    }

    /// Reads file bytes at `offset` into `buf`; returns how many (short at
    /// the end of the file). Holes read as zeros.
    pub fn read(&mut self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = (buf.len() as u64).min(inode.size.saturating_sub(offset)) as usize;
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            let in_blk = pos % self.block_size;
            let len = ((self.block_size - in_blk) as usize).min(n - done);
            let blk = self.map_block(inode, pos / self.block_size)?;
            let out = &mut buf[done..done + len];
            if blk == 0 {
                out.fill(0);
            } else {
                self.dev
                    .read_at(blk as u64 * self.block_size + in_blk, out)?;
            }
            done += len;
        }
        Ok(n)
    }

    /// Writes file bytes in place: only inside allocated blocks
    /// ([`Error::NoSpace`] for a hole or past the allocated end).
    pub fn write(&mut self, inode: &Inode, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset.checked_add(data.len() as u64).ok_or(Error::Range)?;
        if end > self.allocated(inode) {
            return Err(Error::NoSpace);
        }
        let mut done = 0;
        while done < data.len() {
            let pos = offset + done as u64;
            let in_blk = pos % self.block_size;
            let len = ((self.block_size - in_blk) as usize).min(data.len() - done);
            let blk = self.map_block(inode, pos / self.block_size)?;
            if blk == 0 || blk as u64 >= self.blocks_count {
                return Err(Error::NoSpace);
            }
            self.dev.write_at(
                blk as u64 * self.block_size + in_blk,
                &data[done..done + len],
            )?;
            done += len;
        }
        Ok(())
    }

    /// Bytes the file can hold without allocating: its size rounded up to
    /// whole blocks.
    pub fn allocated(&self, inode: &Inode) -> u64 {
        inode.size.next_multiple_of(self.block_size)
    }

    /// Sets the size of a regular file within its allocated blocks.
    pub fn set_size(&mut self, inode: &mut Inode, size: u64) -> Result<()> {
        if inode.kind != Kind::File {
            return Err(Error::Inval);
        }
        if size == inode.size {
            return Ok(());
        }
        let blocks = |s: u64| s.div_ceil(self.block_size);
        if blocks(size) != blocks(inode.size) {
            // Freeing or allocating blocks is not supported.
            return Err(Error::NoSpace);
        }
        let pos = self.inode_pos(inode.ino)?;
        self.dev.write_at(pos + 4, &(size as u32).to_le_bytes())?;
        self.dev
            .write_at(pos + 108, &((size >> 32) as u32).to_le_bytes())?;
        inode.size = size;
        Ok(())
    }

    /// Looks up `name` in directory `dir`.
    pub fn lookup(&mut self, dir: &Inode, name: &[u8]) -> Result<u32> {
        if dir.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        let bs = self.block_size as usize;
        let mut block = vec![0u8; bs];
        let mut off = 0u64;
        while off < dir.size {
            let n = self.read(dir, off, &mut block)?;
            let mut p = 0usize;
            while p + 8 <= n {
                let ino = le32(&block, p);
                let rec_len = le16(&block, p + 4) as usize;
                let name_len = block[p + 6] as usize;
                if rec_len < 8 || p + rec_len > n {
                    return Err(Error::Io);
                }
                if ino != 0 && name_len <= rec_len - 8 && &block[p + 8..p + 8 + name_len] == name {
                    return Ok(ino);
                }
                p += rec_len;
            }
            off += bs as u64;
        }
        Err(Error::NoEnt)
    }

    /// Resolves path components from the root.
    pub fn resolve(&mut self, comps: &[&[u8]]) -> Result<Inode> {
        let mut cur = self.inode(ROOT_INO)?;
        for c in comps {
            if cur.kind != Kind::Dir {
                return Err(Error::NotDir);
            }
            let ino = self.lookup(&cur, c)?;
            cur = self.inode(ino)?;
        }
        Ok(cur)
    }

    /// Flushes the device.
    pub fn flush(&mut self) -> Result<()> {
        self.dev.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct VecDev(Vec<u8>);
    impl BlockDev for VecDev {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
            let o = offset as usize;
            let src = self.0.get(o..o + buf.len()).ok_or(Error::Io)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
            let o = offset as usize;
            self.0
                .get_mut(o..o + data.len())
                .ok_or(Error::Io)?
                .copy_from_slice(data);
            Ok(())
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Ext2::open(VecDev(vec![0; 8192])).is_err());
        assert!(Ext2::open(VecDev(vec![0; 100])).is_err());
    }

    /// Needs `mke2fs` (e2fsprogs); skipped with a message without it.
    #[test]
    fn reads_and_writes_an_image_made_by_mke2fs() {
        let dir = std::env::temp_dir().join(format!("l4fs-ext2-unit-{}", std::process::id()));
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(src.join("big"), &big).unwrap();
        std::fs::write(src.join("sub/deeper/small"), b"hello ext2").unwrap();
        let img = dir.join("fs.img");
        let st = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext2", "-b", "1024", "-d"])
            .arg(&src)
            .arg(&img)
            .arg("4M")
            .status();
        let Ok(st) = st else {
            assert!(
                std::env::var_os("CI").is_none(),
                "mke2fs missing in CI: install e2fsprogs"
            );
            eprintln!("mke2fs not available: test skipped (install e2fsprogs)");
            return;
        };
        assert!(st.success());
        let mut fs = Ext2::open(VecDev(std::fs::read(&img).unwrap())).unwrap();
        let f = fs.resolve(&[b"big"]).unwrap();
        assert_eq!(f.size, 300_000);
        let mut out = vec![0u8; 300_000];
        assert_eq!(fs.read(&f, 0, &mut out).unwrap(), 300_000);
        assert!(out == big, "content through double indirect blocks");
        let s = fs.resolve(&[b"sub", b"deeper", b"small"]).unwrap();
        let mut b = [0u8; 32];
        assert_eq!(fs.read(&s, 0, &mut b).unwrap(), 10);
        assert_eq!(&b[..10], b"hello ext2");
        assert_eq!(fs.resolve(&[b"nope"]).unwrap_err(), Error::NoEnt);
        assert_eq!(fs.resolve(&[b"big", b"x"]).unwrap_err(), Error::NotDir);
        // In-place write, then past the allocation.
        fs.write(&f, 290_000, b"WRITTEN").unwrap();
        let mut b = [0u8; 7];
        fs.read(&f, 290_000, &mut b).unwrap();
        assert_eq!(&b, b"WRITTEN");
        assert_eq!(fs.write(&f, 300_000, &[0; 1024]), Err(Error::NoSpace));
        let mut s2 = s.clone();
        fs.set_size(&mut s2, 5).unwrap();
        assert_eq!(fs.resolve(&[b"sub", b"deeper", b"small"]).unwrap().size, 5);
        assert_eq!(fs.set_size(&mut s2, 5000), Err(Error::NoSpace));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
