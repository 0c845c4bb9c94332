//! l4fs: the filesystem resource server.
//!
//! It serves a tree of files (a host directory, or an ext2 image) through
//! L4Re's Namespace protocol; files are dataspaces whose pages come from a
//! page cache shared by every client, over a bounded pool of frames with a
//! cleaning daemon, a pluggable replacement policy (clock by default),
//! adaptive read-ahead and write-back. See `servers/README.md`.
//!
//! Layout: [`cache`], [`ext2`], [`backend`] and [`fs`] are the shared logic
//! (`core` + `alloc`); [`host`] is the host platform's part (host directory,
//! image files, frames as memfd pages), [`fiasco`] Fiasco's (pool frames
//! from L4Re's memory allocator, revocation by `l4_task_unmap`, the ext2
//! image from a boot module, and the programs' entry functions).
//! [`proto`] is the crate `l4fs-api` (`servers/api/`): the protocols l4fs
//! adds to L4Re's, which clients use without this crate.
//!
//! Platforms (cargo features): `host` (default; `std`) or `fiasco`
//! (`no_std` + `alloc`, built as a staticlib by L4Re's build system with
//! `--no-default-features --features fiasco`).
#![cfg_attr(not(feature = "host"), no_std)]

extern crate alloc;

pub mod backend;
pub mod cache;
#[cfg(feature = "host")]
pub mod client;
pub mod direct;
pub mod ext2;
#[cfg(feature = "fiasco")]
pub mod fiasco;
pub mod fs;
#[cfg(feature = "host")]
pub mod host;
/// l4fs's own protocols: the crate `l4fs-api` (`servers/api/`).
pub use l4fs_api as proto;

#[cfg(feature = "host")]
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
#[cfg(feature = "host")]
use std::path::PathBuf;

use l4re::cap::IpcGate;
use l4re::server::Server;
use l4re::{Cap, Result, Timeout};

pub use cache::{CacheConfig, CacheStats, PoolInfo};
pub use proto::{FileOps, FileOpsClient, FsOps, FsOpsClient};

/// Where the files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// A host directory (read-write where the files are writable).
    #[cfg(feature = "host")]
    HostDir(PathBuf),
    /// An ext2 image file (read-write in place if the image is writable).
    #[cfg(feature = "host")]
    Ext2Image(PathBuf),
    /// An ext2 image in a dataspace (Fiasco: a boot module that ned passes
    /// as the initial capability `cap`). Written in place if the dataspace
    /// is writable; `copy` says whether it is first copied into memory from
    /// the memory allocator, and whether that copy is writable.
    #[cfg(feature = "fiasco")]
    Ext2Module {
        /// Name of the initial capability.
        cap: String,
        /// Whether the image is served from a copy, and which.
        copy: ImageCopy,
    },
}

/// Whether l4fs serves a boot-module image from a copy of its own
/// (Fiasco). A copy is made in super pages where the memory allocator has
/// contiguous memory for it (else in 4 KiB pages): its read-only file pages
/// are then mapped to clients in 2 MiB super pages, one page-table entry
/// for 512 pages, which a boot module cannot offer (bootstrap places
/// modules at 4 KiB boundaries). The copy costs the image's size in memory
/// once more and a copy at start.
#[cfg(feature = "fiasco")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCopy {
    /// Serve the dataspace itself (read-only unless it is writable).
    None,
    /// A read-only copy in super pages (`--superpages`).
    ReadOnly,
    /// A writable copy (`--copy`): writes last until the server ends.
    Writable,
}

/// The replacement policies to choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Clock / second chance.
    #[default]
    Clock,
    /// FIFO by frame position.
    Fifo,
}

/// Configuration of a served filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The backing store.
    pub store: Store,
    /// Frames in the page pool (all files together).
    pub pool_pages: usize,
    /// The cleaning daemon keeps this many frames free (`None`: 1/16 of
    /// the pool).
    pub low_watermark: Option<usize>,
    /// Largest read-ahead window, pages (0 disables read-ahead).
    pub readahead_max: u32,
    /// First read-ahead window on sequential access, pages.
    pub readahead_min: u32,
    /// Read-around cluster for random misses, pages (0: off).
    pub readaround: u32,
    /// Bytes a file of the host directory may grow beyond its size at open
    /// (the capacity of its cache).
    pub grow: u64,
    /// Replacement policy.
    pub policy: Policy,
    /// How often the cleaning daemon runs when no requests come, ms.
    pub clean_interval_ms: u64,
    /// Log the statistics line when the server falls idle (one interval
    /// without requests) after serving requests (`--log-stats 1`).
    pub log_stats_when_idle: bool,
    /// Most objects (file and directory handles) one client may hold open
    /// (`--max-open-per-client`; 0: derived from the descriptor limit, see
    /// `docs/l4fs.md`). Host only.
    pub max_open_per_client: usize,
    /// Most objects all clients together may hold open (`--max-open`; 0:
    /// derived from the descriptor limit). Host only.
    pub max_open: usize,
}

impl FsConfig {
    fn with_store(store: Store) -> Self {
        FsConfig {
            store,
            pool_pages: 16384,
            low_watermark: None,
            readahead_max: 64,
            readahead_min: 4,
            readaround: 16,
            grow: 1 << 20,
            policy: Policy::Clock,
            clean_interval_ms: 100,
            log_stats_when_idle: false,
            max_open_per_client: 0,
            max_open: 0,
        }
    }

    /// Serve the host directory `root` (64 MiB pool, read-ahead 4..64
    /// pages, files may grow by 1 MiB).
    #[cfg(feature = "host")]
    pub fn host_dir(root: impl Into<PathBuf>) -> Self {
        Self::with_store(Store::HostDir(root.into()))
    }

    /// Serve the ext2 image `path`.
    #[cfg(feature = "host")]
    pub fn ext2_image(path: impl Into<PathBuf>) -> Self {
        Self::with_store(Store::Ext2Image(path.into()))
    }

    /// Serve the ext2 image in the dataspace of the initial capability
    /// `cap` (Fiasco), served from a copy as `copy` says.
    #[cfg(feature = "fiasco")]
    pub fn ext2_module(cap: &str, copy: ImageCopy) -> Self {
        Self::with_store(Store::Ext2Module {
            cap: cap.into(),
            copy,
        })
    }

    /// Applies one command-line option with its value (`--pool-pages`,
    /// `--readahead`, `--readaround`, `--low-watermark`, `--grow`,
    /// `--policy clock|fifo`, `--log-stats 0|1`, `--max-open-per-client`,
    /// `--max-open`); the store options are the program's.
    pub fn set_option(&mut self, key: &str, value: &str) -> core::result::Result<(), String> {
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| alloc::format!("{key}: not a number: {value}"))
        };
        match key {
            "--pool-pages" => self.pool_pages = num()? as usize,
            "--readahead" => self.readahead_max = num()? as u32,
            "--readaround" => self.readaround = num()? as u32,
            "--low-watermark" => self.low_watermark = Some(num()? as usize),
            "--grow" => self.grow = num()?,
            "--log-stats" => self.log_stats_when_idle = num()? != 0,
            "--max-open-per-client" => self.max_open_per_client = num()? as usize,
            "--max-open" => self.max_open = num()? as usize,
            "--policy" => {
                self.policy = match value {
                    "clock" => Policy::Clock,
                    "fifo" => Policy::Fifo,
                    _ => return Err(alloc::format!("--policy: clock or fifo, not {value}")),
                }
            }
            _ => return Err(alloc::format!("unknown option {key}")),
        }
        Ok(())
    }

    /// Sets the pool size in pages.
    pub fn pool_pages(mut self, n: usize) -> Self {
        self.pool_pages = n;
        self
    }

    /// Sets the largest read-ahead window in pages (0: off).
    pub fn readahead(mut self, max: u32) -> Self {
        self.readahead_max = max;
        self
    }

    /// Sets the replacement policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the low watermark of free frames.
    pub fn low_watermark(mut self, frames: usize) -> Self {
        self.low_watermark = Some(frames);
        self
    }

    /// The cache configuration this configuration describes.
    pub fn cache_config(&self) -> CacheConfig {
        let mut c = CacheConfig::new(self.pool_pages);
        if let Some(w) = self.low_watermark {
            c.low_watermark = w;
        }
        c.readahead_max = self.readahead_max;
        c.readahead_min = self.readahead_min.min(self.readahead_max.max(1));
        c.readaround = self.readaround;
        c
    }
}

/// The host platform's frames: one memfd per file.
#[cfg(feature = "host")]
struct MemfdFrames;

#[cfg(feature = "host")]
impl fs::FrameFactory for MemfdFrames {
    fn frames(
        &self,
        backing: Box<dyn backend::Backing>,
        capacity: u64,
    ) -> Result<(Box<dyn cache::PageIo>, u64)> {
        let io = host::MemfdIo::new(backing, capacity)?;
        let base = io.base();
        Ok((Box::new(io), base))
    }
}

/// Builds the filesystem state for `config` (host platform).
#[cfg(feature = "host")]
pub fn build(config: &FsConfig) -> Result<fs::Fs> {
    let backend: Box<dyn backend::Backend> = match &config.store {
        Store::HostDir(root) => Box::new(host::HostDir::new(root)?),
        Store::Ext2Image(path) => {
            let (dev, writable) = match host::ImageFile::open(path, true) {
                Ok(d) => (d, true),
                Err(_) => (host::ImageFile::open(path, false)?, false),
            };
            Box::new(backend::Ext2Backend::new(
                dev,
                writable,
                &path.display().to_string(),
            )?)
        }
    };
    let fs = fs::FsState::new(
        page_cache(config),
        backend,
        Box::new(MemfdFrames),
        config.grow,
    );
    let limits = host_limits(config);
    l4re::host::set_channel_limit(limits.per_client);
    fs.borrow_mut().set_limits(limits, Some(caller_id));
    Ok(fs)
}

/// The client of the request being served: the calling process.
#[cfg(feature = "host")]
fn caller_id() -> Option<u64> {
    l4re::host::caller_pid().map(u64::from)
}

/// Most handles the host platform's capability table leaves for l4fs
/// (4,096 allocatable slots, some kept for other uses).
#[cfg(feature = "host")]
pub const HOST_MAX_OPEN: usize = 3584;

/// The limits of a host server: every handle released when nobody holds
/// it; the limits given, or derived from the descriptor limit `n`
/// (`RLIMIT_NOFILE`, raised to its hard limit first): a handle costs the
/// server up to 4 descriptors (its gate, the file, its memfd, the file
/// opened for writing), so all clients together may hold `n / 4` and one
/// client `n / 8` (at least 16; at most [`HOST_MAX_OPEN`] and 1,024); the
/// caches of `n / 16` files nobody holds (4 to 256) are kept for a later
/// open.
#[cfg(feature = "host")]
pub fn host_limits(config: &FsConfig) -> fs::Limits {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
        lim = getrlimit(Resource::Nofile);
    }
    let n = lim.current.unwrap_or(u64::MAX).min(1 << 20) as usize;
    let total = match config.max_open {
        0 => (n / 4).clamp(32, HOST_MAX_OPEN),
        m => m.min(HOST_MAX_OPEN),
    };
    let per_client = match config.max_open_per_client {
        0 => (n / 8).clamp(16, 1024),
        m => m,
    };
    fs::Limits {
        release_unheld: true,
        per_client: per_client.min(total),
        total,
        keep_unheld: (n / 16).clamp(4, 256),
    }
}

/// The page cache `config` describes (pool size, watermark, read-ahead,
/// policy).
pub fn page_cache(config: &FsConfig) -> cache::PageCache {
    let policy: alloc::boxed::Box<dyn cache::ReplacementPolicy> = match config.policy {
        Policy::Clock => alloc::boxed::Box::new(cache::Clock::default()),
        Policy::Fifo => alloc::boxed::Box::new(cache::Fifo::default()),
    };
    cache::PageCache::with_policy(config.cache_config(), policy)
}

/// Serves the filesystem's root Namespace (which also speaks `l4fs.fs`)
/// on `gate`, forever. The cleaning daemon runs in the server thread:
/// after every request that left the free frames below the low watermark,
/// and every `clean_interval_ms` when idle.
#[cfg(any(feature = "host", feature = "fiasco"))]
pub fn serve(gate: Cap<IpcGate>, config: FsConfig) -> Result<()> {
    #[cfg(feature = "host")]
    let fs = build(&config)?;
    #[cfg(feature = "fiasco")]
    let fs = fiasco::build(&config)?;
    serve_fs(gate, fs, &config)
}

/// Serves an already built filesystem `fs` on `gate` (see [`serve`]).
pub fn serve_fs(gate: Cap<IpcGate>, fs: fs::Fs, config: &FsConfig) -> Result<()> {
    log::info!("{}", fs.borrow().stats_text());
    let mut server = Server::new();
    #[allow(clippy::arc_with_non_send_sync)] // one server thread
    let root = Arc::new(fs::DirObj::root(fs.clone()));
    server.register_gate(gate, root)?;
    let interval = Timeout::millis(config.clean_interval_ms.max(1));
    let mut served = 0;
    let mut logged = 0;
    // Gates bound by the last run of the hook: the replies that carry them
    // have gone out when the hook runs again, and the server gives up its
    // own client ends then, so that it sees when nobody holds them.
    #[cfg(feature = "host")]
    let mut sent: alloc::vec::Vec<Cap<IpcGate>> = alloc::vec::Vec::new();
    #[cfg(feature = "host")]
    let release = fs.borrow().limits().release_unheld;
    server.serve(interval, |srv| {
        #[cfg(feature = "host")]
        for gate in sent.drain(..) {
            if let Err(e) = l4re::host::release_client_end(gate.idx()) {
                log::debug!("l4fs: gate already gone ({e})");
            }
        }
        if config.log_stats_when_idle {
            // Called after each request and after each idle interval: the
            // request count tells which.
            let s = srv.stats();
            let now = s.ok + s.errors;
            if now == served && now != logged {
                log::info!("{}", fs.borrow().stats_text());
                logged = now;
            }
            served = now;
        }
        let mut st = fs.borrow_mut();
        for (gate, obj) in st.pending.drain(..) {
            match srv.register_gate(gate, obj) {
                Ok(_) =>
                {
                    #[cfg(feature = "host")]
                    if release {
                        sent.push(gate);
                    }
                }
                Err(e) => log::error!("l4fs: cannot bind a new object: {e}"),
            }
        }
        if st.cache.needs_cleaning() {
            st.cache.clean();
        }
        true
    })
}
