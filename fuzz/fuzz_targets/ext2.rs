//! The ext2 reader/writer (servers/src/ext2.rs) and its backend
//! (servers/src/backend.rs) over an arbitrary image in memory: open, walk
//! the tree from the root (directory entries parsed from the directories'
//! content, each looked up by name and read), read files, write in place,
//! set sizes, find device runs (`Ext2::extent`, checked against the block
//! map).
#![no_main]

use l4fs::backend::{Backend, Ext2Backend};
use l4fs::ext2::{BlockDev, Ext2, Inode, Kind, ROOT_INO};
use l4re::{Error, Result};
use libfuzzer_sys::fuzz_target;

#[derive(Clone)]
struct VecDev(Vec<u8>);

impl BlockDev for VecDev {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or(Error::Io)?;
        if end > self.0.len() as u64 {
            return Err(Error::Io);
        }
        buf.copy_from_slice(&self.0[offset as usize..end as usize]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset.checked_add(data.len() as u64).ok_or(Error::Io)?;
        if end > self.0.len() as u64 {
            return Err(Error::Io);
        }
        self.0[offset as usize..end as usize].copy_from_slice(data);
        Ok(())
    }
}

/// Names in a directory's content (at most a few blocks of it).
fn names(fs: &mut Ext2<VecDev>, dir: &Inode) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let bs = fs.block_size() as usize;
    let mut block = vec![0u8; bs];
    let mut off = 0u64;
    while off < dir.size && off < 4 * bs as u64 {
        let Ok(n) = fs.read(dir, off, &mut block) else {
            break;
        };
        let mut p = 0;
        while p + 8 <= n {
            let rec_len = u16::from_le_bytes([block[p + 4], block[p + 5]]) as usize;
            let name_len = block[p + 6] as usize;
            if rec_len < 8 || p + rec_len > n || name_len > rec_len - 8 {
                break;
            }
            out.push(block[p + 8..p + 8 + name_len].to_vec());
            p += rec_len;
        }
        off += bs as u64;
    }
    out
}

fn walk(fs: &mut Ext2<VecDev>, dir: &Inode, path: &mut Vec<Vec<u8>>, budget: &mut u32) {
    for name in names(fs, dir) {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        if name == b"." || name == b".." {
            continue;
        }
        let Ok(ino) = fs.lookup(dir, &name) else {
            continue;
        };
        let Ok(mut inode) = fs.inode(ino) else {
            continue;
        };
        path.push(name);
        let comps: Vec<&[u8]> = path.iter().map(|c| c.as_slice()).collect();
        if let Ok(again) = fs.resolve(&comps) {
            assert_eq!(again.ino, inode.ino);
        }
        match inode.kind {
            Kind::Dir if path.len() < 8 => walk(fs, &inode, path, budget),
            Kind::File => {
                let mut buf = vec![0u8; 3000];
                let mut off = 0;
                for _ in 0..8 {
                    match fs.read(&inode, off, &mut buf) {
                        Ok(n) if n > 0 => off += n as u64,
                        _ => break,
                    }
                }
                let _ = fs.read(&inode, inode.size.saturating_sub(10), &mut buf);
                let _ = fs.read(&inode, u64::MAX - 5, &mut buf);
                let _ = fs.write(&inode, 1, b"fuzz");
                let _ = fs.write(&inode, inode.size.saturating_sub(2), b"xyz");
                let _ = fs.write(&inode, u64::MAX - 1, b"xyz");
                let a = fs.allocated(&inode);
                let _ = fs.set_size(&mut inode, a);
                let _ = fs.set_size(&mut inode, a.saturating_sub(1));
                let _ = fs.map_block(&inode, u64::MAX / 4096);
                // Device runs (direct mapping) agree with the block map.
                let bs = fs.block_size();
                if let Ok(Some((dev, len))) = fs.extent(&inode, 0, 64 * bs) {
                    for k in 0..len / bs {
                        if let Ok(b) = fs.map_block(&inode, k) {
                            assert_eq!(b as u64 * bs, dev + k * bs, "block {k} of the run");
                        }
                    }
                }
                let _ = fs.extent(&inode, inode.size.saturating_sub(1), u64::MAX);
                let _ = fs.extent(&inode, u64::MAX - 5, 4096);
            }
            _ => {}
        }
        path.pop();
    }
}

fuzz_target!(|data: &[u8]| {
    let dev = VecDev(data.to_vec());
    if let Ok(mut fs) = Ext2::open(dev.clone()) {
        if let Ok(root) = fs.inode(ROOT_INO) {
            let mut budget = 256;
            walk(&mut fs, &root, &mut Vec::new(), &mut budget);
            let _ = fs.lookup(&root, b"no such name");
        }
        let _ = fs.resolve(&[b"a", b"b", b"c"]);
        let _ = fs.flush();
    }
    if let Ok(mut b) = Ext2Backend::new(dev, true, "fuzz") {
        for p in [
            &[][..],
            &[&b"lost+found"[..]][..],
            &[&b"a"[..]][..],
            &[&b"d"[..], &b"f"[..]][..],
        ] {
            let _ = b.lookup(p);
            if let Ok(mut f) = b.open(p) {
                let mut buf = [0u8; 512];
                let _ = f.read_at(0, &mut buf);
                let _ = f.size();
                let _ = f.max_size();
                let _ = f.write_at(0, b"hi");
                let _ = f.set_size(0);
            }
        }
        let _ = b.describe();
    }
});
