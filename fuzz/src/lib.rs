//! Shared helpers of the fuzz targets: the byte format of a request
//! sequence (used by the dispatch targets and by `make-seeds`), and an
//! in-memory backing store and frame factory for l4fs.
//!
//! A request record is: one selector byte (which object of the target gets
//! the request), the message tag as a little-endian `u64`, then as many
//! little-endian message words as the tag says (`words + 2 * items`, at
//! most the 63 message registers; missing bytes read as zeros).

use std::collections::BTreeMap;

use l4re::utcb::{MR_WORDS, Utcb};
use l4re::{Error, MsgTag, Result};

/// One request of a fuzz input.
#[derive(Debug, Clone)]
pub struct Record {
    /// Which object the target sends it to.
    pub selector: u8,
    /// The message tag.
    pub tag: MsgTag,
    /// The message registers it carries.
    pub words: Vec<u64>,
}

/// Splits a fuzz input into request records.
pub fn records(mut data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while data.len() >= 9 && out.len() < 64 {
        let selector = data[0];
        let tag = MsgTag(u64::from_le_bytes(data[1..9].try_into().unwrap()));
        data = &data[9..];
        let n = (tag.words() + 2 * tag.items()).min(MR_WORDS);
        let mut words = vec![0u64; n];
        for w in words.iter_mut() {
            let k = data.len().min(8);
            let mut b = [0u8; 8];
            b[..k].copy_from_slice(&data[..k]);
            *w = u64::from_le_bytes(b);
            data = &data[k..];
        }
        out.push(Record {
            selector,
            tag,
            words,
        });
    }
    out
}

/// Puts a record's words into this thread's message registers.
pub fn load(rec: &Record) {
    Utcb::with(|u| {
        let mr = u.mr();
        mr.fill(0);
        mr[..rec.words.len()].copy_from_slice(&rec.words);
    });
}

/// Encodes a record (the inverse of [`records`] for one record).
pub fn encode(selector: u8, tag: MsgTag, words: &[u64]) -> Vec<u8> {
    let mut v = vec![selector];
    v.extend_from_slice(&tag.0.to_le_bytes());
    let n = (tag.words() + 2 * tag.items()).min(MR_WORDS);
    for w in &words[..n] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// A request written with l4re's own encoder into this thread's UTCB,
/// encoded as a record for `selector`.
pub fn request(
    selector: u8,
    label: i64,
    f: impl FnOnce(&mut l4re::msg::MsgWriter<'_>) -> Result<()>,
) -> Vec<u8> {
    Utcb::with(|u| {
        let tag = {
            let mut w = l4re::msg::MsgWriter::new(u);
            f(&mut w).expect("seed request fits");
            w.finish(label).expect("seed request fits")
        };
        encode(selector, tag, &u.mr()[..])
    })
}

/// A file of the in-memory tree.
pub struct MemFile {
    data: Vec<u8>,
    writable: bool,
}

impl l4fs::backend::Backing for MemFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let o = (offset.min(self.data.len() as u64)) as usize;
        let n = buf.len().min(self.data.len() - o);
        buf[..n].copy_from_slice(&self.data[o..o + n]);
        Ok(n)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::Access);
        }
        let end = offset.checked_add(data.len() as u64).ok_or(Error::Range)?;
        if end > 1 << 20 {
            return Err(Error::NoSpace);
        }
        if self.data.len() < end as usize {
            self.data.resize(end as usize, 0);
        }
        self.data[offset as usize..end as usize].copy_from_slice(data);
        Ok(())
    }
    fn set_size(&mut self, size: u64) -> Result<()> {
        if size > 1 << 20 {
            return Err(Error::NoSpace);
        }
        self.data.resize(size as usize, 0);
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn size(&mut self) -> Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn max_size(&mut self) -> Option<u64> {
        None
    }
    fn writable(&self) -> bool {
        self.writable
    }
}

/// A small fixed tree: `/a` (3 pages and a bit, writable), `/ro` (read
/// only), `/d/b` (empty, writable), directories `/` and `/d`.
pub struct MemTree;

impl l4fs::backend::Backend for MemTree {
    fn lookup(&mut self, comps: &[&[u8]]) -> Result<l4fs::backend::Node> {
        use l4fs::backend::{Node, NodeKind};
        let (kind, key) = match comps {
            [] => (NodeKind::Dir, 1),
            [b"d"] => (NodeKind::Dir, 2),
            [b"a"] => (NodeKind::File, 3),
            [b"ro"] => (NodeKind::File, 4),
            [b"d", b"b"] => (NodeKind::File, 5),
            _ => return Err(Error::NoEnt),
        };
        Ok(Node {
            kind,
            key: (0, key),
        })
    }
    fn open(&mut self, comps: &[&[u8]]) -> Result<Box<dyn l4fs::backend::Backing>> {
        let (data, writable) = match comps {
            [b"a"] => ((0..3 * 4096 + 100).map(|i| i as u8).collect(), true),
            [b"ro"] => (vec![7u8; 5000], false),
            [b"d", b"b"] => (Vec::new(), true),
            _ => return Err(Error::NoEnt),
        };
        Ok(Box::new(MemFile { data, writable }))
    }
    fn describe(&self) -> String {
        "fuzz tree".into()
    }
}

const PAGE: u64 = l4fs::cache::PAGE_SIZE;

/// A file's frames as a map from page to bytes (no memory is mapped; map
/// replies name addresses nobody dereferences).
pub struct MemIo {
    backing: Box<dyn l4fs::backend::Backing>,
    pages: BTreeMap<u64, Vec<u8>>,
}

impl l4fs::cache::PageIo for MemIo {
    fn fill(&mut self, first: u64, frames: &[l4fs::cache::FrameIdx], valid: u64) -> Result<()> {
        let mut buf = vec![0u8; frames.len() * PAGE as usize];
        let v = (valid as usize).min(buf.len());
        let mut done = 0;
        while done < v {
            let n = self
                .backing
                .read_at(first * PAGE + done as u64, &mut buf[done..v])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        for (i, c) in buf.chunks(PAGE as usize).enumerate() {
            self.pages.insert(first + i as u64, c.to_vec());
        }
        Ok(())
    }
    fn write_back(&mut self, page: u64, _: l4fs::cache::FrameIdx, valid: usize) -> Result<()> {
        let p = self.pages.get(&page).ok_or(Error::Io)?;
        let v = valid.min(p.len());
        self.backing.write_at(page * PAGE, &p[..v])
    }
    fn revoke(&mut self, page: u64, _: l4fs::cache::FrameIdx) {
        self.pages.remove(&page);
    }
    fn read(&mut self, page: u64, _: l4fs::cache::FrameIdx, offset: usize, out: &mut [u8]) {
        let p = self
            .pages
            .get(&page)
            .expect("read of a page the cache holds");
        out.copy_from_slice(&p[offset..offset + out.len()]);
    }
    fn write(&mut self, page: u64, _: l4fs::cache::FrameIdx, offset: usize, data: &[u8]) {
        let p = self
            .pages
            .get_mut(&page)
            .expect("write of a page the cache holds");
        p[offset..offset + data.len()].copy_from_slice(data);
    }
    fn set_backing_size(&mut self, size: u64) -> Result<()> {
        self.backing.set_size(size)
    }
}

/// Frames for [`MemIo`].
pub struct MemFrames;

impl l4fs::fs::FrameFactory for MemFrames {
    fn frames(
        &self,
        backing: Box<dyn l4fs::backend::Backing>,
        _capacity: u64,
    ) -> Result<(Box<dyn l4fs::cache::PageIo>, u64)> {
        Ok((
            Box::new(MemIo {
                backing,
                pages: BTreeMap::new(),
            }),
            0x1000_0000,
        ))
    }
}
