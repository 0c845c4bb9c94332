//! `loader serve` ends cleanly on SIGTERM and SIGINT and writes back the
//! pages its clients dirtied through writable mappings (issue 13).
//!
//! The writer is a real process of its own (this test binary started
//! again in its writer role): it connects to the running server through
//! its socket, opens a file read-write, maps a page of it writable
//! (Dataspace `map` into a receive window: the server's page, shared),
//! writes through the mapping and exits. The bytes are then in the
//! server's page cache only; the signal must bring them to the host file.

mod common;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use l4re::cap::{Cap, IpcGate};

/// Set (to the socket's path) in the writer role.
const WRITER_SOCKET: &str = "L4_TEST_WRITER_SOCKET";
/// What the writer writes, at offset 4096 of the file.
const TEXT: &[u8] = b"written through a mapping of loader serve's page";

/// The writer role: connects to the server at `sock`, opens `file`
/// read-write and writes [`TEXT`] through a writable mapping of its second
/// page.
fn write_through_mapping(sock: &Path, file: &str) {
    let s = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::connect(&s, &rustix::net::SocketAddrUnix::new(sock).unwrap()).unwrap();
    // Ask for the root's capability (CAPS, kind 20: a message of its kind
    // alone).
    let caps_request = loader::host::ctl::serve_kind::CAPS.to_le_bytes();
    rustix::net::send(&s, &caps_request, rustix::net::SendFlags::empty()).unwrap();
    let (_, caps) = l4re::host::recv_caps(s.as_fd(), Duration::from_secs(5)).unwrap();
    let fs = caps
        .iter()
        .find(|(n, _)| n == "fs")
        .expect("an \"fs\" capability")
        .1;
    let root: Cap<IpcGate> = Cap::from_idx(fs);
    let f = l4fs::client::open(root, file, l4fs::proto::mode::RW).unwrap();
    let w = l4fs::client::Window::new(2 * 4096).unwrap();
    w.map(f.ds(), 4096, l4re::proto::dataspace::Flags::RW)
        .unwrap();
    for (i, b) in TEXT.iter().enumerate() {
        w.write_byte(4096 + i, *b);
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn serve_writes_dirty_pages_back_when_stopped_by_sigterm_or_sigint() {
    if let Some(sock) = std::env::var_os(WRITER_SOCKET) {
        // The writer role (started below).
        return write_through_mapping(Path::new(&sock), "data");
    }
    if !Path::new("/dev/userfaultfd").exists() && rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: loader serve needs root or /dev/userfaultfd");
        return;
    }
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let dir = tmp(&format!("serve-{name}"));
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let data = root.join("data");
        std::fs::write(&data, vec![0u8; 3 * 4096]).unwrap();
        let sock = dir.join("fs.sock");
        let mut server = common::start_serve(&sock, &["--root".as_ref(), root.as_os_str()]);
        let w = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "serve_writes_dirty_pages_back_when_stopped_by_sigterm_or_sigint",
                "--nocapture",
            ])
            .env(WRITER_SOCKET, &sock)
            .output()
            .unwrap();
        assert!(w.status.success(), "{name}: the writer failed: {w:?}");
        // Dirty in the server's cache, not yet in the file (the server
        // writes back at a sync, or when it needs the frame).
        let before = std::fs::read(&data).unwrap();
        assert!(
            before[4096..4096 + TEXT.len()].iter().all(|b| *b == 0),
            "{name}: written back before the signal"
        );
        l4re::host::signal::kill(server.id() as i32, sig).unwrap();
        let t = Instant::now();
        let st = loop {
            if let Some(st) = server.try_wait().unwrap() {
                break st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{name}: loader serve did not end"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        use std::io::Read;
        let _ = server.stderr.take().unwrap().read_to_string(&mut err);
        assert!(st.success(), "{name}: status {st}: {err}");
        assert!(err.contains("dirty pages written back"), "{name}: {err}");
        assert!(!sock.exists(), "{name}: the socket is left");
        let after = std::fs::read(&data).unwrap();
        assert_eq!(after.len(), 3 * 4096, "{name}: the file's size changed");
        assert_eq!(&after[4096..4096 + TEXT.len()], TEXT, "{name}");
        assert!(
            after[..4096]
                .iter()
                .chain(&after[4096 + TEXT.len()..])
                .all(|b| *b == 0),
            "{name}: other bytes changed"
        );
    }
}
