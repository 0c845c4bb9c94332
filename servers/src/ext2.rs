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
    /// Where byte `offset` of the device lies in this task's memory, if
    /// the device is memory that may be mapped on to clients as it is (a
    /// boot module attached and present in the server); `None`, the
    /// default, for every other device.
    fn memory_at(&self, offset: u64) -> Option<u64> {
        let _ = offset;
        None
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
        // A crafted superblock must not make us compute or allocate
        // nonsense: every count is checked against the others before use.
        // A group's block and inode bitmaps are one block each.
        let per_bitmap = 8 * block_size;
        if blocks_per_group == 0
            || blocks_per_group > per_bitmap
            || inodes_per_group == 0
            || inodes_per_group as u64 > per_bitmap
            || inode_size < 128
            || inode_size > block_size
            || !inode_size.is_power_of_two()
        {
            return Err(Error::Inval);
        }
        // The superblock lives in block 0 (1 KiB blocks: block 1); the
        // group descriptors follow it.
        if first_data_block > 1 || blocks_count <= first_data_block + 1 {
            return Err(Error::Inval);
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        if inodes_count == 0 || inodes_count as u64 > groups * inodes_per_group as u64 {
            return Err(Error::Inval);
        }
        // The descriptor table is read block by block, so that a count
        // the image cannot back fails at the first block past its end
        // instead of allocating for it.
        let gdt_start = (first_data_block + 1) * block_size;
        let gdt_len = groups * 32;
        if gdt_start + gdt_len > blocks_count * block_size {
            return Err(Error::Inval);
        }
        let mut inode_tables = Vec::new();
        let mut chunk = vec![0u8; block_size as usize];
        let mut done = 0u64;
        while done < gdt_len {
            let n = (gdt_len - done).min(block_size) as usize;
            dev.read_at(gdt_start + done, &mut chunk[..n])?;
            for d in chunk[..n].chunks_exact(32) {
                let table = le32(d, 8) as u64;
                if table >= blocks_count {
                    return Err(Error::Inval);
                }
                inode_tables.push(table);
            }
            done += n as u64;
        }
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

    /// The pointer block holding the entry of logical block `lblk` (past
    /// the 12 direct blocks) and the entry's index in it; `None` where an
    /// indirect block on the way is a hole.
    fn pointer_slot(&mut self, inode: &Inode, lblk: u64) -> Result<Option<(u32, u64)>> {
        let per = self.block_size / 4;
        let mut l = lblk - 12;
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
        for level in (1..depth).rev() {
            if blk == 0 {
                return Ok(None);
            }
            let idx = (l / per.pow(level)) % per;
            blk = self.read_ptr(blk, idx)?;
        }
        Ok((blk != 0).then_some((blk, l % per)))
    }

    /// The disk block holding logical block `lblk` of the inode (0: a hole).
    pub fn map_block(&mut self, inode: &Inode, lblk: u64) -> Result<u32> {
        if inode.flags & EXTENTS_FL != 0 {
            return Err(Error::NoSys);
        }
        if lblk < 12 {
            return Ok(inode.block[lblk as usize]);
        }
        match self.pointer_slot(inode, lblk)? {
            Some((blk, idx)) => self.read_ptr(blk, idx),
            None => Ok(0),
        }
    }

    /// Where file byte `offset` lies on the device, and how many bytes
    /// from there (at most `max`) lie contiguously on the device as the
    /// file's next bytes: `(device
    /// offset, length)`, or `None` for a hole or a block past the device's
    /// end. The file's size is not looked at (the caller bounds `max`).
    /// Pointer blocks are read a chunk at a time, not an entry at a time.
    pub fn extent(&mut self, inode: &Inode, offset: u64, max: u64) -> Result<Option<(u64, u64)>> {
        let bs = self.block_size;
        let mut lblk = offset / bs;
        let first = self.map_block(inode, lblk)? as u64;
        if first == 0 || first >= self.blocks_count {
            return Ok(None);
        }
        let start = first * bs + offset % bs;
        let mut len = bs - offset % bs;
        // The device block the next logical block must be in.
        let mut want = first + 1;
        lblk += 1;
        const CHUNK: usize = 256;
        let mut chunk = [0u8; 4 * CHUNK];
        while len < max {
            let need = (max - len).div_ceil(bs);
            if lblk < 12 {
                if inode.block[lblk as usize] as u64 != want {
                    break;
                }
                len += bs;
                want += 1;
                lblk += 1;
                continue;
            }
            let Some((ptrs, idx)) = self.pointer_slot(inode, lblk)? else {
                break;
            };
            if ptrs as u64 >= self.blocks_count {
                return Err(Error::Io);
            }
            let n = (bs / 4 - idx).min(need).min(CHUNK as u64) as usize;
            self.dev
                .read_at(ptrs as u64 * bs + idx * 4, &mut chunk[..4 * n])?;
            let same = chunk[..4 * n]
                .chunks_exact(4)
                .zip(want..)
                .take_while(|(p, w)| le32(p, 0) as u64 == *w)
                .count() as u64;
            len += same * bs;
            want += same;
            lblk += same;
            if same < n as u64 {
                break;
            }
        }
        // A crafted pointer may run past the device.
        let len = len.min(max).min(self.blocks_count * bs - start);
        Ok(Some((start, len)))
    }

    /// Where byte `offset` of the device lies in this task's memory, if
    /// the device is such memory ([`BlockDev::memory_at`]).
    pub fn memory_at(&self, offset: u64) -> Option<u64> {
        self.dev.memory_at(offset)
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
        // A crafted size near 2^64 saturates instead of overflowing.
        inode
            .size
            .div_ceil(self.block_size)
            .saturating_mul(self.block_size)
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
pub(crate) mod tests {
    use super::*;

    /// An image in a vector.
    pub(crate) struct VecDev(pub(crate) Vec<u8>);
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

    /// A small, consistent image: 1 KiB blocks, 64 blocks, one group,
    /// 16 inodes in a table at block 5; inode 12 is a regular file of size
    /// `size` with no blocks. `patch` changes the superblock (offsets into
    /// it) before the image is returned.
    pub(crate) fn crafted(size: u64, patch: &[(usize, u32)]) -> Vec<u8> {
        let mut img = vec![0u8; 64 * 1024];
        let sb = 1024;
        let put = |img: &mut Vec<u8>, o: usize, v: u32| {
            img[o..o + 4].copy_from_slice(&v.to_le_bytes());
        };
        put(&mut img, sb, 16); // inodes_count
        put(&mut img, sb + 4, 64); // blocks_count
        put(&mut img, sb + 20, 1); // first_data_block
        put(&mut img, sb + 24, 0); // log block size
        put(&mut img, sb + 32, 8192); // blocks_per_group
        put(&mut img, sb + 40, 16); // inodes_per_group
        img[sb + 56..sb + 58].copy_from_slice(&MAGIC.to_le_bytes());
        put(&mut img, sb + 76, 1); // rev
        img[sb + 88..sb + 90].copy_from_slice(&128u16.to_le_bytes());
        put(&mut img, 2048 + 8, 5); // group 0: inode table at block 5
        let ino = 5 * 1024 + 11 * 128;
        img[ino..ino + 2].copy_from_slice(&S_IFREG.to_le_bytes());
        put(&mut img, ino + 4, size as u32);
        put(&mut img, ino + 108, (size >> 32) as u32);
        for &(o, v) in patch {
            put(&mut img, sb + o, v);
        }
        img
    }

    /// An image of `blocks` 1 KiB blocks (256 pointers per pointer block)
    /// with `ptrs` written as (block, index, value) into pointer blocks,
    /// and a file inode with the 15 block pointers `block`.
    fn mapped(blocks: u32, block: [u32; 15], ptrs: &[(u32, u32, u32)]) -> (Ext2<VecDev>, Inode) {
        let mut img = crafted(0, &[(4, blocks)]);
        img.resize(blocks as usize * 1024, 0);
        for &(b, i, v) in ptrs {
            let o = (b * 1024 + 4 * i) as usize;
            img[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        let fs = Ext2::open(VecDev(img)).unwrap();
        let inode = Inode {
            ino: 12,
            kind: Kind::File,
            size: 1 << 30,
            block,
            flags: 0,
        };
        (fs, inode)
    }

    #[test]
    fn extents_follow_contiguous_blocks_through_pointer_blocks() {
        // Blocks 0-11 at 100-111, the single indirect block (50) maps
        // 12-267 to 112-367 except 200 (a jump), the double indirect block
        // (51) maps through 52: 268-523 to 368-623.
        let mut block = [0u32; 15];
        for (i, b) in block.iter_mut().enumerate().take(12) {
            *b = 100 + i as u32;
        }
        block[12] = 50;
        block[13] = 51;
        let mut ptrs: Vec<(u32, u32, u32)> = (0..256).map(|i| (50, i, 112 + i)).collect();
        ptrs[200 - 12].2 = 900;
        ptrs.push((51, 0, 52));
        ptrs.extend((0..256).map(|i| (52, i, 368 + i)));
        let (mut fs, f) = mapped(1024, block, &ptrs);
        let kib = 1024u64;
        // From block 0: contiguous up to 199 (block 200 jumps).
        assert_eq!(
            fs.extent(&f, 0, 1 << 20).unwrap(),
            Some((100 * kib, 200 * kib))
        );
        // Capped by `max`, also inside a block.
        assert_eq!(fs.extent(&f, 0, 5000).unwrap(), Some((100 * kib, 5000)));
        assert_eq!(fs.extent(&f, 10, 100).unwrap(), Some((100 * kib + 10, 100)));
        // From inside a block: the rest of it and what follows.
        assert_eq!(
            fs.extent(&f, 3 * kib + 24, 1 << 20).unwrap(),
            Some((103 * kib + 24, 197 * kib - 24))
        );
        // The jumped block alone, then from 201 on across the single and
        // double indirect blocks to the end of the mapped blocks.
        assert_eq!(
            fs.extent(&f, 200 * kib, 1 << 20).unwrap(),
            Some((900 * kib, kib))
        );
        assert_eq!(
            fs.extent(&f, 201 * kib, 1 << 20).unwrap(),
            Some((301 * kib, 323 * kib))
        );
        // A hole (logical 524: pointer 0) and a block past the device.
        assert_eq!(fs.extent(&f, 524 * kib, kib).unwrap(), None);
        let mut far = block;
        far[0] = 5000;
        let (mut fs2, f2) = mapped(1024, far, &ptrs);
        assert_eq!(fs2.extent(&f2, 0, kib).unwrap(), None);
        // Every block of every run is where map_block says it is.
        for start in [0u64, 7, 11, 12, 150, 199, 201, 266, 267, 268, 400] {
            let (dev, len) = fs.extent(&f, start * kib, 1 << 20).unwrap().unwrap();
            for k in 0..len / kib {
                let b = fs.map_block(&f, start + k).unwrap() as u64;
                assert_eq!(
                    b * kib,
                    dev + k * kib,
                    "block {} of the run from {start}",
                    k
                );
            }
            let next = fs.map_block(&f, start + len / kib).unwrap() as u64;
            assert_ne!(
                next * kib,
                dev + len,
                "the run from {start} ends where contiguity ends"
            );
        }
    }

    /// Crafted superblocks and inodes are refused with errors: no
    /// arithmetic overflow, no absurd allocation (each case panicked or
    /// aborted the server before).
    #[test]
    fn crafted_superblocks_are_refused() {
        // The base image is fine.
        let mut fs = Ext2::open(VecDev(crafted(10, &[]))).unwrap();
        assert_eq!(fs.inode(12).unwrap().size, 10);
        let bad: &[(&str, &[(usize, u32)])] = &[
            ("first_data_block > blocks_count", &[(20, 1000)]),
            ("first_data_block = blocks_count", &[(4, 1), (20, 1)]),
            ("no blocks", &[(4, 0)]),
            ("absurd group count", &[(4, u32::MAX), (32, 8)]),
            ("one block per group", &[(4, u32::MAX), (32, 1)]),
            ("groups beyond a bitmap", &[(32, 1 << 20)]),
            ("inodes per group beyond a bitmap", &[(40, u32::MAX)]),
            ("more inodes than the groups hold", &[(0, u32::MAX)]),
            ("no inodes", &[(0, 0)]),
            ("inode size 0", &[(88, 0)]),
            ("inode size beyond a block", &[(88, 4096)]),
            ("inode size not a power of two", &[(88, 200)]),
            ("huge block size", &[(24, 6), (4, 64)]),
            ("descriptors past the image", &[(4, 4000), (32, 1)]),
        ];
        for (what, patch) in bad {
            let r = Ext2::open(VecDev(crafted(10, patch)));
            assert!(r.is_err(), "{what}: accepted");
        }
        // An inode table pointing outside the filesystem.
        let mut img = crafted(10, &[]);
        img[2048 + 8..2048 + 12].copy_from_slice(&1000u32.to_le_bytes());
        assert!(Ext2::open(VecDev(img)).is_err());
        // A file of size near 2^64: sizes saturate, reads and writes fail
        // or read holes, nothing overflows.
        let mut fs = Ext2::open(VecDev(crafted(u64::MAX - 5, &[]))).unwrap();
        let f = fs.inode(12).unwrap();
        assert_eq!(f.size, u64::MAX - 5);
        assert_eq!(fs.allocated(&f), u64::MAX);
        let mut b = [1u8; 64];
        assert_eq!(fs.read(&f, 0, &mut b).unwrap(), 64);
        assert_eq!(b, [0u8; 64]);
        assert!(fs.read(&f, u64::MAX - 100, &mut b).is_err());
        assert!(fs.write(&f, u64::MAX - 10, b"x").is_err());
        assert!(fs.write(&f, 0, b"x").is_err());
        let mut f2 = f.clone();
        assert!(fs.set_size(&mut f2, 1).is_err());
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
        // The device runs agree with the block map and hold the content.
        let img = fs.dev.0.clone();
        let mut off = 0u64;
        while off < 300_000 {
            let (dev, len) = fs.extent(&f, off, 300_000 - off).unwrap().unwrap();
            let n = len as usize;
            assert_eq!(
                &img[dev as usize..dev as usize + n],
                &big[off as usize..off as usize + n]
            );
            off += len;
        }
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
