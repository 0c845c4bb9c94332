//! Backing stores: where file content comes from and goes to. Shared
//! code: the traits, path checking, and the ext2 backend over any
//! [`BlockDev`].

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use l4re::{Error, Result};

use crate::direct::Extents;
use crate::ext2::{BlockDev, Ext2, Inode, Kind};

/// Longest path component.
pub const NAME_MAX: usize = 255;
/// Longest path.
pub const PATH_MAX: usize = 4096;

/// Splits a path into components: empty components and `.` are skipped;
/// `..` is refused ([`Error::Perm`]: no escape from the served root, and no
/// climbing at all — names are resolved downwards only), as are NUL bytes
/// ([`Error::Inval`]) and over-long names ([`Error::NameTooLong`]).
pub fn split_path(path: &[u8]) -> Result<Vec<&[u8]>> {
    if path.len() > PATH_MAX {
        return Err(Error::NameTooLong);
    }
    if path.contains(&0) {
        return Err(Error::Inval);
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Error::Perm),
            c if c.len() > NAME_MAX => return Err(Error::NameTooLong),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// What a name resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// A resolved name: its kind and a key that identifies the file (so that
/// two names of one file share one cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// File or directory.
    pub kind: NodeKind,
    /// Identity (host: device and inode; ext2: inode).
    pub key: (u64, u64),
}

/// The content of one open file in the backing store.
pub trait Backing {
    /// Reads at `offset`; returns the bytes read (short at the end).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// Writes at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// Sets the file size.
    fn set_size(&mut self, size: u64) -> Result<()>;
    /// Flushes.
    fn flush(&mut self) -> Result<()>;
    /// The current size.
    fn size(&mut self) -> Result<u64>;
    /// Largest size the store allows without allocation (`None`: no limit
    /// of its own).
    fn max_size(&mut self) -> Option<u64>;
    /// Whether writes are possible.
    fn writable(&self) -> bool;
    /// The host file behind the store, if it is one: its pages are then
    /// copied into the cache by the kernel (`sendfile`), without a pass
    /// through a buffer of ours.
    #[cfg(feature = "host")]
    fn host_file(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    /// Where the file's bytes lie in memory of this task that may be
    /// mapped on to clients as it is, if the store is such memory (an
    /// ext2 image in a boot module on Fiasco): for direct mapping
    /// ([`crate::direct`]). `None`, the default, for other stores.
    fn extents(&self) -> Option<Box<dyn Extents>> {
        None
    }
}

/// A tree of files.
pub trait Backend {
    /// Resolves path components (from [`split_path`]) from the root.
    fn lookup(&mut self, comps: &[&[u8]]) -> Result<Node>;
    /// Opens the regular file at `comps`, writable if possible.
    fn open(&mut self, comps: &[&[u8]]) -> Result<Box<dyn Backing>>;
    /// A name for log output.
    fn describe(&self) -> alloc::string::String;
}

/// ext2 as a [`Backend`].
pub struct Ext2Backend<D: BlockDev> {
    fs: Rc<RefCell<Ext2<D>>>,
    writable: bool,
    name: alloc::string::String,
}

impl<D: BlockDev + 'static> Ext2Backend<D> {
    /// Opens the filesystem on `dev`.
    pub fn new(dev: D, writable: bool, name: &str) -> Result<Self> {
        Ok(Ext2Backend {
            fs: Rc::new(RefCell::new(Ext2::open(dev)?)),
            writable,
            name: name.into(),
        })
    }
}

impl<D: BlockDev + 'static> Backend for Ext2Backend<D> {
    fn lookup(&mut self, comps: &[&[u8]]) -> Result<Node> {
        let ino = self.fs.borrow_mut().resolve(comps)?;
        let kind = match ino.kind {
            Kind::File => NodeKind::File,
            Kind::Dir => NodeKind::Dir,
            // Symlinks and special files are not served.
            Kind::Other => return Err(Error::Perm),
        };
        Ok(Node {
            kind,
            key: (0, ino.ino as u64),
        })
    }

    fn open(&mut self, comps: &[&[u8]]) -> Result<Box<dyn Backing>> {
        let inode = self.fs.borrow_mut().resolve(comps)?;
        if inode.kind != Kind::File {
            return Err(Error::Inval);
        }
        Ok(Box::new(Ext2File {
            fs: self.fs.clone(),
            inode,
            writable: self.writable,
        }))
    }

    fn describe(&self) -> alloc::string::String {
        alloc::format!("ext2 image {}", self.name)
    }
}

struct Ext2File<D: BlockDev> {
    fs: Rc<RefCell<Ext2<D>>>,
    inode: Inode,
    writable: bool,
}

impl<D: BlockDev + 'static> Backing for Ext2File<D> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.fs.borrow_mut().read(&self.inode, offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::Access);
        }
        self.fs.borrow_mut().write(&self.inode, offset, data)
    }
    fn set_size(&mut self, size: u64) -> Result<()> {
        // (A sync of a read-only file sets the size it has: no change.)
        if !self.writable && size != self.inode.size {
            return Err(Error::Access);
        }
        self.fs.borrow_mut().set_size(&mut self.inode, size)
    }
    fn flush(&mut self) -> Result<()> {
        self.fs.borrow_mut().flush()
    }
    fn size(&mut self) -> Result<u64> {
        Ok(self.inode.size)
    }
    fn max_size(&mut self) -> Option<u64> {
        Some(self.fs.borrow().allocated(&self.inode))
    }
    fn writable(&self) -> bool {
        self.writable
    }
    fn extents(&self) -> Option<Box<dyn Extents>> {
        self.fs.borrow().memory_at(0)?;
        Some(Box::new(Ext2Extents {
            fs: self.fs.clone(),
            inode: self.inode.clone(),
        }))
    }
}

/// Where an ext2 file's bytes lie in the memory of an image held in
/// memory: the block map's runs ([`Ext2::extent`]) at the image's address.
/// (The block map never changes: this ext2 writes in place only.)
struct Ext2Extents<D: BlockDev> {
    fs: Rc<RefCell<Ext2<D>>>,
    inode: Inode,
}

impl<D: BlockDev> Extents for Ext2Extents<D> {
    fn extent(&mut self, offset: u64, max: u64) -> Result<Option<(u64, u64)>> {
        let mut fs = self.fs.borrow_mut();
        Ok(match fs.extent(&self.inode, offset, max)? {
            Some((dev, len)) => fs.memory_at(dev).map(|addr| (addr, len)),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext2::tests::{VecDev, crafted};

    /// A sync of a file of a read-only image sets the size it has and
    /// flushes: no change, so no error (closing such a file failed with
    /// -EACCES and kept it open); a real change is still refused.
    #[test]
    fn a_read_only_file_syncs_without_change() {
        let fs = Rc::new(RefCell::new(Ext2::open(VecDev(crafted(10, &[]))).unwrap()));
        let inode = fs.borrow_mut().inode(12).unwrap();
        let mut f = Ext2File {
            fs,
            inode,
            writable: false,
        };
        assert_eq!(f.set_size(10), Ok(()));
        assert_eq!(f.flush(), Ok(()));
        assert_eq!(f.set_size(5), Err(Error::Access));
        assert_eq!(f.write_at(0, b"x"), Err(Error::Access));
        assert_eq!(f.size(), Ok(10));
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(split_path(b"/a//b/./c").unwrap(), [b"a", b"b", b"c"]);
        assert!(split_path(b"").unwrap().is_empty());
        assert_eq!(split_path(b"a/../b"), Err(Error::Perm));
        assert_eq!(split_path(b".."), Err(Error::Perm));
        assert_eq!(split_path(b"a\0b"), Err(Error::Inval));
        let long = alloc::vec![b'x'; 256];
        assert_eq!(split_path(&long), Err(Error::NameTooLong));
        assert!(split_path(&long[..255]).is_ok());
        let huge = alloc::vec![b'a'; PATH_MAX + 1];
        assert_eq!(split_path(&huge), Err(Error::NameTooLong));
    }
}
