//! Shared pieces of the multi-process tests: temporary trees, starting the
//! server and client tasks.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use l4fs::client::pattern;
use l4re::CapRights;
use l4re::cap::{Cap, IpcGate, OwnedCap};
use l4re::env::env;
use l4re::host::{ChildTask, spawn};

pub const L4FS: &str = env!("CARGO_BIN_EXE_l4fs");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_l4fs-client");
pub const LIMIT: Duration = Duration::from_secs(300);

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("l4fs-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server and the gate to its root.
pub struct Served {
    pub task: ChildTask,
    pub gate: OwnedCap<IpcGate>,
}

impl Served {
    pub fn root(&self) -> Cap<IpcGate> {
        self.gate.cap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.task.kill();
        let _ = self.task.wait(Some(Duration::from_secs(10)));
    }
}

/// Starts `l4fs serve` with `args`.
pub fn serve(args: &[&str]) -> Served {
    let gate = env().factory().create_gate(None, 0).expect("gate");
    let mut a = vec!["serve"];
    a.extend_from_slice(args);
    let task = spawn(
        Path::new(L4FS),
        &a,
        &[("server", gate.idx(), CapRights::RWS)],
        "l4fs",
    )
    .expect("spawn l4fs");
    Served { task, gate }
}

/// Starts a client task with the root capability as "fs".
pub fn client(root: Cap<IpcGate>, args: &[&str], tag: &str) -> ChildTask {
    spawn(
        Path::new(CLIENT),
        args,
        &[("fs", root.idx(), CapRights::RW)],
        tag,
    )
    .expect("spawn client")
}

pub fn exits_ok(task: &ChildTask, what: &str) {
    let status = task
        .wait(Some(LIMIT))
        .expect("wait")
        .unwrap_or_else(|| panic!("{what} did not finish"));
    assert!(status.success(), "{what} failed: {status}");
}

/// Builds an ext2 image of `src` with `mke2fs -d`; `None` if mke2fs is
/// missing (install e2fsprogs).
pub fn mkext2(src: &Path, img: &Path, size: &str) -> Option<()> {
    let st = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-b", "4096", "-d"])
        .arg(src)
        .arg(img)
        .arg(size)
        .status()
        .ok()?;
    assert!(st.success(), "mke2fs failed");
    Some(())
}
