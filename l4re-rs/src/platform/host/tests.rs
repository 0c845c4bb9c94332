//! Tests of the host platform over real IPC: real sockets, threads,
//! processes and mappings, no mocks.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::cap::{CapIdx, CapRights};
use crate::error::IpcError;
use crate::fpage::{
    Fpage, ITEM_MAP, MapType, RCV_ITEM_LOCAL_ID, RCV_ITEM_SINGLE_CAP, Rights, SndFpage,
    fit_into_window,
};
use crate::ipc::{Received, Timeout};
use crate::msg::MsgTag;
use crate::utcb::Utcb;

/// Label that makes a test server reply and stop.
const STOP: i64 = 0x7777;

fn new_gate() -> CapIdx {
    let g = cap_alloc().unwrap();
    create_gate(g, None, 0).unwrap();
    g
}

fn free(idx: CapIdx) {
    cap_release(idx);
    cap_free(idx);
}

/// Serves requests on the current thread until a STOP request:
/// `handler` turns a request into the reply tag.
fn serve(mut handler: impl FnMut(&mut Utcb, Received) -> MsgTag) {
    Utcb::with(|u| {
        let mut r = ipc_wait(u, Timeout::Never).unwrap();
        loop {
            if r.tag.label() == STOP {
                let _ = ipc_reply_and_wait(u, MsgTag::new(0, 0, 0, 0), Timeout::Zero);
                return;
            }
            let reply = handler(u, r);
            r = ipc_reply_and_wait(u, reply, Timeout::Never).unwrap();
        }
    })
}

/// Starts a server thread on `gate` (bound with `label`) that answers
/// every request with `f` of its words.
fn start_math_server(gate: CapIdx, label: u64) -> (Cap<Thread>, std::thread::JoinHandle<()>) {
    let (thr, h) = spawn_thread(move || {
        serve(|u, r| {
            assert_eq!(r.label & !3, label);
            let n = r.tag.words();
            for i in 0..n {
                u.mr()[i] = u.mr()[i].wrapping_mul(3).wrapping_add(i as u64);
            }
            MsgTag::new(0, n, 0, 0)
        })
    })
    .unwrap();
    gate_bind_thread(gate, thr.idx(), label).unwrap();
    (thr, h)
}

fn stop(gate: CapIdx) {
    Utcb::with(|u| ipc_call(gate, u, MsgTag::new(STOP, 0, 0, 0), Timeout::Never).unwrap());
}

#[test]
fn many_clients_many_calls() {
    let gate = new_gate();
    let (thr, server) = start_math_server(gate, 0x40);
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            std::thread::spawn(move || {
                for x in 0..2500u64 {
                    Utcb::with(|u| {
                        u.mr()[0] = x;
                        u.mr()[1] = c;
                        u.mr()[2] = x ^ c;
                        let tag =
                            ipc_call(gate, u, MsgTag::new(0x42, 3, 0, 0), Timeout::Never).unwrap();
                        assert_eq!((tag.label(), tag.words(), tag.items()), (0, 3, 0));
                        assert_eq!(u.mr()[0], x * 3);
                        assert_eq!(u.mr()[1], c * 3 + 1);
                        assert_eq!(u.mr()[2], (x ^ c) * 3 + 2);
                    });
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    stop(gate);
    server.join().unwrap();
    free(gate);
    free(thr.idx());
}

#[test]
fn round_trip_time_same_process() {
    let gate = new_gate();
    let (thr, server) = start_math_server(gate, 0x80);
    let n = 20_000u32;
    let t = Instant::now();
    Utcb::with(|u| {
        for x in 0..n {
            u.mr()[0] = x as u64;
            ipc_call(gate, u, MsgTag::new(1, 1, 0, 0), Timeout::Never).unwrap();
            assert_eq!(u.mr()[0], x as u64 * 3);
        }
    });
    let per = t.elapsed() / n;
    eprintln!("host IPC round trip, same process: {per:?} per call");
    stop(gate);
    server.join().unwrap();
    free(gate);
    free(thr.idx());
}

#[test]
fn label_carries_sender_rights() {
    let gate = new_gate();
    let (thr, server) =
        spawn_thread(move || serve(|_, r| MsgTag::new(r.label as i64, 0, 0, 0))).unwrap();
    gate_bind_thread(gate, thr.idx(), 0x100).unwrap();
    let label = Utcb::with(|u| {
        ipc_call(gate, u, MsgTag::new(0, 0, 0, 0), Timeout::Never)
            .unwrap()
            .label()
    });
    // The creator holds the gate with every right: W and S are ORed in.
    assert_eq!(label, 0x103);
    assert_eq!(gate_bind_thread(gate, thr.idx(), 0x101), Err(Error::Inval));
    stop(gate);
    server.join().unwrap();
    free(gate);
    free(thr.idx());
}

#[test]
fn capability_transfer_and_local_id() {
    // Server A computes; thread B receives a capability to A's gate and
    // calls through it.
    let gate_a = new_gate();
    let (thr_a, server_a) = start_math_server(gate_a, 0x10);
    let rcv_slot = cap_alloc().unwrap();
    let (thr_b, b) = spawn_thread(move || {
        Utcb::with(|u| {
            // First request: a capability into `rcv_slot`.
            u.br()[0] = rcv_slot.0 | RCV_ITEM_SINGLE_CAP;
            u.br()[1] = 0;
            let r = ipc_wait(u, Timeout::Never).unwrap();
            assert_eq!((r.tag.words(), r.tag.items()), (1, 1));
            let x = u.mr()[0];
            let item = SndFpage {
                base: u.mr()[1],
                fpage: Fpage(u.mr()[2]),
            };
            assert!(item.cap_received(), "item {:#x}", item.base);
            // The rights were reduced to what was sent (RW, no S).
            assert_eq!(item.fpage.cap_rights(), CapRights::RW);
            // Call A through the received capability.
            u.mr()[0] = x;
            ipc_call(rcv_slot, u, MsgTag::new(0, 1, 0, 0), Timeout::Never).unwrap();
            let y = u.mr()[0];
            // Second request: the same gate with a local-id buffer; the
            // gate is bound in this task, so the label arrives instead.
            u.mr()[0] = y;
            u.br()[0] = rcv_slot.0 | RCV_ITEM_SINGLE_CAP | RCV_ITEM_LOCAL_ID;
            u.br()[1] = 0;
            let r = ipc_reply_and_wait(u, MsgTag::new(0, 1, 0, 0), Timeout::Never).unwrap();
            assert_eq!(r.tag.items(), 1);
            let item = SndFpage {
                base: u.mr()[0],
                fpage: Fpage(u.mr()[1]),
            };
            assert!(item.id_received(), "item {:#x}", item.base);
            u.mr()[0] = u.mr()[1];
            u.br()[0] = 0;
            let r = ipc_reply_and_wait(u, MsgTag::new(0, 1, 0, 0), Timeout::Never).unwrap();
            assert_eq!(r.tag.label(), STOP);
            let _ = ipc_reply_and_wait(u, MsgTag::new(0, 0, 0, 0), Timeout::Zero);
        })
    })
    .unwrap();
    Utcb::with(|u| {
        // Call thread B directly (its thread capability) with the gate.
        u.mr()[0] = 14;
        let item = SndFpage::cap(gate_a, CapRights::RW, MapType::Map).words();
        u.mr()[1] = item[0];
        u.mr()[2] = item[1];
        ipc_call(thr_b.idx(), u, MsgTag::new(0, 1, 1, 0), Timeout::Never).unwrap();
        assert_eq!(u.mr()[0], 42);
        let item = SndFpage::cap(gate_a, CapRights::RWS, MapType::Map).words();
        u.mr()[0] = item[0];
        u.mr()[1] = item[1];
        ipc_call(thr_b.idx(), u, MsgTag::new(0, 0, 1, 0), Timeout::Never).unwrap();
        // The label with W and S (sent with RWS).
        assert_eq!(u.mr()[0], 0x13);
        ipc_call(thr_b.idx(), u, MsgTag::new(STOP, 0, 0, 0), Timeout::Never).unwrap();
    });
    b.join().unwrap();
    // The received capability still works from here (same object).
    Utcb::with(|u| {
        u.mr()[0] = 5;
        ipc_call(rcv_slot, u, MsgTag::new(0, 1, 0, 0), Timeout::Never).unwrap();
        assert_eq!(u.mr()[0], 15);
    });
    stop(gate_a);
    server_a.join().unwrap();
    for c in [gate_a, rcv_slot, thr_a.idx(), thr_b.idx()] {
        free(c);
    }
}

#[test]
fn capability_without_buffer_is_missing() {
    let gate = new_gate();
    let other = new_gate();
    let (thr, server) = spawn_thread(move || {
        serve(|u, r| {
            u.br()[0] = 0;
            // No buffer was announced: the item arrives as "nothing".
            assert_eq!(r.tag.items(), 1);
            assert_eq!(u.mr()[0], 0);
            MsgTag::new(7, 0, 0, 0)
        })
    })
    .unwrap();
    gate_bind_thread(gate, thr.idx(), 0).unwrap();
    Utcb::with(|u| {
        u.br()[0] = 0;
        let item = SndFpage::cap(other, CapRights::RW, MapType::Map).words();
        u.mr()[0] = item[0];
        u.mr()[1] = item[1];
        let tag = ipc_call(gate, u, MsgTag::new(0, 0, 1, 0), Timeout::Never).unwrap();
        assert_eq!(tag.label(), 7);
    });
    stop(gate);
    server.join().unwrap();
    for c in [gate, other, thr.idx()] {
        free(c);
    }
}

fn read_u8(addr: u64) -> u8 {
    // SAFETY: the callers read only inside mappings they received.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

#[test]
fn memory_item_lands_in_receive_window() {
    let gate = new_gate();
    let (thr, server) = spawn_thread(move || {
        let mem = SharedMem::new(16 * 4096).unwrap();
        for page in 0..16 {
            mem.write(page * 4096, &[page as u8 + 0xa0; 4096]);
        }
        serve(|u, _| {
            // mr[0]: page to send, mr[1]: hot spot, mr[2]: rights.
            let (page, hot, rights) = (u.mr()[0] as usize, u.mr()[1], u.mr()[2] as u8);
            let fp = mem
                .fpage(page * 4096, 12, Rights::from_bits_truncate(rights))
                .unwrap();
            let item = SndFpage::mem(fp, hot, MapType::Map).words();
            u.mr()[0] = item[0];
            u.mr()[1] = item[1];
            MsgTag::new(0, 0, 1, 0)
        })
    })
    .unwrap();
    gate_bind_thread(gate, thr.idx(), 0).unwrap();
    let win = ReservedRange::new(1 << 16).unwrap();
    let window = Fpage::mem(win.addr() as u64, win.order(), Rights::empty());
    Utcb::with(|u| {
        for (page, hot) in [(3u64, 0u64), (5, 0x3000), (15, 0xf000)] {
            u.br()[0] = ITEM_MAP;
            u.br()[1] = window.0;
            u.br()[2] = 0;
            u.mr()[0] = page;
            u.mr()[1] = hot;
            u.mr()[2] = Rights::R.bits() as u64;
            let tag = ipc_call(gate, u, MsgTag::new(0, 3, 0, 0), Timeout::Never).unwrap();
            assert_eq!(tag.items(), 1);
            let item = SndFpage {
                base: u.mr()[0],
                fpage: Fpage(u.mr()[1]),
            };
            assert!(item.is_valid());
            let (_, dst, size) = fit_into_window(item, window);
            assert_eq!((dst, size), (win.addr() as u64 + hot, 4096));
            for off in [0, 1, 4095] {
                assert_eq!(read_u8(dst + off), page as u8 + 0xa0);
            }
        }
        // Pages of one file received several times share one fd.
        let a = shm::lookup(win.addr() as u64, 4096).unwrap().0;
        let b = shm::lookup(win.addr() as u64 + 0x3000, 4096).unwrap().0;
        assert!(Arc::ptr_eq(&a, &b));
        // A memory item with no receive window: the call fails.
        u.br()[0] = 0;
        u.mr()[0] = 1;
        u.mr()[1] = 0;
        u.mr()[2] = Rights::R.bits() as u64;
        assert_eq!(
            ipc_call(gate, u, MsgTag::new(0, 3, 0, 0), Timeout::Never),
            Err(IpcError::MapFailed)
        );
        assert_eq!(*u.error(), IpcError::MapFailed.raw());
    });
    // The received read-only page is readable but not writable.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{:x}-", win.addr())))
        .expect("mapping listed");
    assert!(line.contains(" r--s "), "{line}");
    stop(gate);
    server.join().unwrap();
    free(gate);
    free(thr.idx());
}

#[test]
fn memory_item_must_be_shared_memory() {
    let gate = new_gate();
    let local = vec![0u8; 8192];
    Utcb::with(|u| {
        let page = (local.as_ptr() as u64).next_multiple_of(4096);
        assert!(page + 4096 <= local.as_ptr() as u64 + 8192);
        let item = SndFpage::mem(Fpage::mem(page, 12, Rights::R), 0, MapType::Map).words();
        u.mr()[0] = item[0];
        u.mr()[1] = item[1];
        assert_eq!(
            ipc_send(gate, u, MsgTag::new(0, 0, 1, 0), Timeout::Zero),
            Err(IpcError::MapFailed)
        );
    });
    free(gate);
}

#[test]
fn server_death_is_not_existent() {
    // A server that takes the request and ends without replying.
    let gate = new_gate();
    let (thr, server) = spawn_thread(move || {
        Utcb::with(|u| {
            ipc_wait(u, Timeout::Never).unwrap();
        });
    })
    .unwrap();
    gate_bind_thread(gate, thr.idx(), 0).unwrap();
    let r = Utcb::with(|u| ipc_call(gate, u, MsgTag::new(0, 0, 0, 0), Timeout::Never));
    assert_eq!(r, Err(IpcError::NotExistent));
    server.join().unwrap();
    free(thr.idx());

    // A request queued in a gate that is then closed.
    let client = std::thread::spawn(move || {
        Utcb::with(|u| ipc_call(gate, u, MsgTag::new(0, 0, 0, 0), Timeout::Never))
    });
    std::thread::sleep(Duration::from_millis(100));
    cap_release(gate);
    assert_eq!(client.join().unwrap(), Err(IpcError::NotExistent));
    // The slot is empty now.
    let r = Utcb::with(|u| ipc_call(gate, u, MsgTag::new(0, 0, 0, 0), Timeout::Never));
    assert_eq!(r, Err(IpcError::NotExistent));
    cap_free(gate);

    // A gate whose server end is closed everywhere.
    let (client_end, server_end) = objects::seqpacket_pair().unwrap();
    drop(server_end);
    let g = objects::GateObj::import(client_end, None).unwrap();
    let slot = cap_alloc().unwrap();
    lock(&process().table).install(
        slot,
        Entry {
            obj: Object::Gate(g),
            rights: CapRights::RW,
        },
    );
    let r = Utcb::with(|u| ipc_call(slot, u, MsgTag::new(0, 0, 0, 0), Timeout::Never));
    assert_eq!(r, Err(IpcError::NotExistent));
    let r = Utcb::with(|u| ipc_send(slot, u, MsgTag::new(0, 0, 0, 0), Timeout::Never));
    assert_eq!(r, Err(IpcError::NotExistent));
    free(slot);
}

fn client_fd(gate: CapIdx) -> Arc<OwnedFd> {
    match lock(&process().table).get(gate) {
        Some(Entry {
            obj: Object::Gate(g),
            ..
        }) => g.client().expect("client end"),
        _ => panic!("not a gate"),
    }
}

#[test]
fn malformed_packets_are_dropped() {
    let gate = new_gate();
    let (thr, server) = start_math_server(gate, 0);
    let fd = client_fd(gate);
    let raw = |bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]| {
        transport::send_packet(
            fd.as_fd(),
            bytes,
            fds,
            transport::Deadline::new(Timeout::Never),
        )
        .unwrap()
    };
    raw(b"garbage!garbage!garbage!garbage!", &[]);
    raw(&[], &[]);
    raw(&[0xff; 3], &[]);
    // Valid header, lying sizes, with a reply channel and a stray fd: the
    // caller is told the message was too short.
    let (mine, theirs) = objects::seqpacket_pair().unwrap();
    let good = wire::PacketBuf::new(
        MsgTag::new(0, 2, 0, 0),
        CapRights::RW,
        wire::FLAG_CHANNEL,
        9,
        2,
        &[1, 2],
        &[],
    );
    let mut bad = good.bytes().to_vec();
    bad.truncate(bad.len() - 8);
    let (stray, _keep) = objects::seqpacket_pair().unwrap();
    raw(&bad, &[theirs.as_fd(), stray.as_fd()]);
    drop(theirs);
    let reply = transport::recv_packet(mine.as_fd(), false)
        .unwrap()
        .unwrap();
    let parsed = wire::parse(reply.bytes(), reply.fds.len()).unwrap();
    assert_eq!(parsed.tag.label(), Error::MsgTooShort.code());
    // The answer echoes the sequence number and does not keep the channel.
    assert_eq!((parsed.seq, parsed.flags), (9, 0));
    // A packet claiming an fd it does not carry.
    let (_m2, t2) = objects::seqpacket_pair().unwrap();
    let lie = wire::PacketBuf::new(
        MsgTag::new(0, 0, 0, 0),
        CapRights::RW,
        wire::FLAG_CHANNEL,
        1,
        2,
        &[],
        &[],
    );
    raw(lie.bytes(), &[t2.as_fd()]);
    // The server still serves.
    Utcb::with(|u| {
        u.mr()[0] = 7;
        ipc_call(gate, u, MsgTag::new(0, 1, 0, 0), Timeout::Never).unwrap();
        assert_eq!(u.mr()[0], 21);
    });
    stop(gate);
    server.join().unwrap();
    free(gate);
    free(thr.idx());
}

#[test]
fn timeouts() {
    let t = Instant::now();
    let r = Utcb::with(|u| {
        let r = ipc_wait(u, Timeout::Micros(1000));
        assert_eq!(*u.error(), IpcError::RecvTimeout.raw());
        r
    });
    assert_eq!(r, Err(IpcError::RecvTimeout));
    assert!(t.elapsed() >= Duration::from_millis(1));
    assert_eq!(
        Utcb::with(|u| ipc_wait(u, Timeout::Zero)),
        Err(IpcError::RecvTimeout)
    );
    // A call to a gate nobody serves times out in the receive phase.
    let gate = new_gate();
    let r = Utcb::with(|u| ipc_call(gate, u, MsgTag::new(0, 0, 0, 0), Timeout::millis(20)));
    assert_eq!(r, Err(IpcError::RecvTimeout));
    free(gate);
}

#[test]
fn thread_capabilities() {
    let main_or_not = current_thread();
    assert!(main_or_not.is_valid());
    assert_eq!(current_thread(), main_or_not);
    let (tx, rx) = std::sync::mpsc::channel();
    let (thr, h) = spawn_thread(move || tx.send(current_thread()).unwrap()).unwrap();
    h.join().unwrap();
    assert_eq!(rx.recv().unwrap(), thr.idx());
    assert_ne!(thr.idx(), main_or_not);
    free(thr.idx());
    let (thr, h) = spawn_thread(move || assert_ne!(current_thread(), main_or_not)).unwrap();
    h.join().unwrap();
    free(thr.idx());
    // A thread that got its slot on first use gives it back at exit.
    let slot = std::thread::spawn(current_thread).join().unwrap();
    assert!(lock(&process().table).get(slot).is_none());
}

#[test]
fn log_lines() {
    log_write("hello from the host platform\nsecond line\n");
    assert!(env_get_cap("no such cap").is_none());
}

fn sh(script: &str) -> ChildTask {
    spawn(std::path::Path::new("/bin/sh"), &["-c", script], &[], "sh").unwrap()
}

#[test]
fn spawn_and_wait() {
    let t = spawn(std::path::Path::new("/bin/true"), &[], &[], "true").unwrap();
    let st = t
        .wait(Some(Duration::from_secs(10)))
        .unwrap()
        .expect("ended");
    assert!(st.success());
    assert_eq!(t.wait(None).unwrap(), Some(st));
    let t = sh("exit 3");
    assert_eq!(t.wait(None).unwrap().unwrap().code(), Some(3));
    // The child inherits the bootstrap socket under the number it is told.
    let gate = new_gate();
    let t = spawn(
        std::path::Path::new("/bin/sh"),
        &[
            "-c",
            "[ -n \"$L4RE_HOST_BOOTSTRAP_FD\" ] && [ -S /proc/$$/fd/$L4RE_HOST_BOOTSTRAP_FD ]",
        ],
        &[("gate", gate, CapRights::RW)],
        "sh",
    )
    .unwrap();
    assert!(lock(&process().table).get(t.cap().idx()).is_some());
    assert_eq!(t.wait(None).unwrap().unwrap().code(), Some(0));
    free(gate);
    // Kill.
    let t = sh("sleep 20");
    assert_eq!(t.wait(Some(Duration::from_millis(50))).unwrap(), None);
    t.kill().unwrap();
    let st = t.wait(Some(Duration::from_secs(10))).unwrap().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(9));
    t.kill().unwrap();
    assert!(spawn(std::path::Path::new("/nonexistent/program"), &[], &[], "x").is_err());
}

/// The child side of [`cross_process`]: run by the test binary itself when
/// started with a bootstrap; does nothing otherwise.
#[test]
#[ignore = "child process of cross_process"]
fn child_server() {
    if std::env::var_os("L4RE_HOST_TEST_CHILD").is_none() {
        return;
    }
    let gate = env_get_cap("gate").expect("named capability");
    gate_bind_thread(gate, current_thread(), 0x20).unwrap();
    log_write("child serving");
    serve(|u, r| {
        assert_eq!(r.label & !3, 0x20);
        let n = r.tag.words();
        for i in 0..n {
            u.mr()[i] = u.mr()[i].wrapping_mul(3).wrapping_add(i as u64);
        }
        MsgTag::new(0, n, 0, 0)
    });
    // Stay until killed, holding the gate, after a last request.
    Utcb::with(|u| {
        let _ = ipc_wait(u, Timeout::Never);
    });
}

#[test]
fn cross_process() {
    let gate = new_gate();
    let exe = std::env::current_exe().unwrap();
    let child = {
        let args = [
            "--exact",
            "platform::host::tests::child_server",
            "--ignored",
            "--test-threads=1",
            "-q",
        ];
        spawn_with_env(&exe, &args, &[("gate", gate, CapRights::RWS)])
    };
    // The server end went to the child: its death will show.
    assert_eq!(
        gate_bind_thread(gate, current_thread(), 0),
        Err(Error::Perm)
    );
    let n = 5000u32;
    let t = Instant::now();
    Utcb::with(|u| {
        for x in 0..n {
            u.mr()[0] = x as u64;
            u.mr()[1] = 1;
            let r = ipc_call(gate, u, MsgTag::new(1, 2, 0, 0), Timeout::millis(10_000));
            assert_eq!(r.map(|t| t.words()), Ok(2));
            assert_eq!(u.mr()[0], x as u64 * 3);
            assert_eq!(u.mr()[1], 4);
        }
    });
    eprintln!(
        "host IPC round trip, cross process: {:?} per call",
        t.elapsed() / n
    );
    stop(gate);
    child.kill().unwrap();
    let st = child
        .wait(Some(Duration::from_secs(10)))
        .unwrap()
        .expect("child ended");
    assert!(!st.success());
    let r = Utcb::with(|u| ipc_call(gate, u, MsgTag::new(0, 0, 0, 0), Timeout::millis(5000)));
    assert_eq!(r, Err(IpcError::NotExistent));
    free(gate);
}

/// [`spawn`] with `L4RE_HOST_TEST_CHILD` set for the child.
fn spawn_with_env(
    exe: &std::path::Path,
    args: &[&str],
    caps: &[(&str, CapIdx, CapRights)],
) -> ChildTask {
    // `spawn` takes no environment; go through `env` to add one.
    let mut full: Vec<&str> = vec!["L4RE_HOST_TEST_CHILD=1", exe.to_str().unwrap()];
    full.extend_from_slice(args);
    spawn(std::path::Path::new("/usr/bin/env"), &full, caps, "child").unwrap()
}

/// The number of channels the gate in slot `gate` keeps here.
fn channels_of(gate: CapIdx) -> usize {
    match lock(&process().table).get(gate) {
        Some(Entry {
            obj: Object::Gate(g),
            ..
        }) => g.channels(),
        _ => panic!("not a gate"),
    }
}

#[test]
fn channels_are_kept_reused_and_dropped() {
    let gate = new_gate();
    let (thr, server) = start_math_server(gate, 0x40);
    let call = move |x: u64| {
        Utcb::with(|u| {
            u.mr()[0] = x;
            ipc_call(gate, u, MsgTag::new(0, 1, 0, 0), Timeout::Never).unwrap();
            assert_eq!(u.mr()[0], 3 * x);
        })
    };
    // One channel per calling thread, reused by its later calls.
    let t = std::thread::spawn(move || (1..=50).for_each(call));
    t.join().unwrap();
    // The thread is gone: its channel closed; the server drops it when
    // it sees the end of file (after the next request at the latest).
    call(7);
    call(8);
    let t0 = Instant::now();
    while channels_of(gate) != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{}",
            channels_of(gate)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop(gate);
    server.join().unwrap();
    // The server thread ended: the gate is unbound, its channels shut down.
    assert_eq!(channels_of(gate), 0);
    // A call now queues on the gate (nobody serves it) and times out.
    let r = Utcb::with(|u| ipc_call(gate, u, MsgTag::new(0, 0, 0, 0), Timeout::millis(20)));
    assert_eq!(r, Err(IpcError::RecvTimeout));
    free(gate);
    free(thr.idx());
}

#[test]
fn dropped_request_fails_and_the_next_call_works() {
    let gate = new_gate();
    let (thr, server) = spawn_thread(move || {
        Utcb::with(|u| {
            // Answer the first request, drop the second (wait again without
            // replying), answer the third, stop at the fourth.
            let r = ipc_wait(u, Timeout::Never).unwrap();
            assert_eq!(r.tag.label(), 1);
            let r = ipc_reply_and_wait(u, MsgTag::new(11, 0, 0, 0), Timeout::Never).unwrap();
            assert_eq!(r.tag.label(), 2);
            let r = ipc_wait(u, Timeout::Never).unwrap();
            assert_eq!(r.tag.label(), 3);
            let r = ipc_reply_and_wait(u, MsgTag::new(33, 0, 0, 0), Timeout::Never).unwrap();
            assert_eq!(r.tag.label(), STOP);
            let _ = ipc_reply_and_wait(u, MsgTag::new(0, 0, 0, 0), Timeout::Zero);
        })
    })
    .unwrap();
    gate_bind_thread(gate, thr.idx(), 0).unwrap();
    Utcb::with(|u| {
        let label = |r: Result<MsgTag, IpcError>| r.map(|t| t.label());
        let c = |u: &mut Utcb, l| ipc_call(gate, u, MsgTag::new(l, 0, 0, 0), Timeout::Never);
        assert_eq!(label(c(u, 1)), Ok(11));
        assert_eq!(label(c(u, 2)), Err(IpcError::NotExistent));
        assert_eq!(label(c(u, 3)), Ok(33));
    });
    stop(gate);
    server.join().unwrap();
    free(gate);
    free(thr.idx());
}

#[test]
fn late_reply_to_a_timed_out_call_is_not_taken() {
    let gate = new_gate();
    let (thr, server) = spawn_thread(move || {
        serve(|u, r| {
            if r.tag.label() == 1 {
                std::thread::sleep(Duration::from_millis(100));
            }
            u.mr()[0] = r.tag.label() as u64 * 10;
            MsgTag::new(0, 1, 0, 0)
        })
    })
    .unwrap();
    gate_bind_thread(gate, thr.idx(), 0).unwrap();
    Utcb::with(|u| {
        let r = ipc_call(gate, u, MsgTag::new(1, 0, 0, 0), Timeout::millis(10));
        assert_eq!(r, Err(IpcError::RecvTimeout));
        for l in 2..6 {
            ipc_call(gate, u, MsgTag::new(l, 0, 0, 0), Timeout::millis(5000)).unwrap();
            assert_eq!(u.mr()[0], l as u64 * 10);
        }
    });
    stop(gate);
    server.join().unwrap();
    free(gate);
    free(thr.idx());
}

#[test]
fn channels_move_with_the_gate() {
    let gate = new_gate();
    let (thr_a, server_a) = start_math_server(gate, 0x10);
    let call = |u: &mut Utcb| {
        u.mr()[0] = 5;
        ipc_call(gate, u, MsgTag::new(0, 1, 0, 0), Timeout::millis(5000)).unwrap();
        assert_eq!(u.mr()[0], 15);
    };
    Utcb::with(call);
    assert_eq!(channels_of(gate), 1);
    // Bind the gate to another thread: the channel goes with it, and the
    // first thread no longer sees the gate's requests.
    let (thr_b, server_b) = spawn_thread(move || {
        serve(|u, r| {
            assert_eq!(r.label & !3, 0x20);
            u.mr()[0] *= 7;
            MsgTag::new(0, 1, 0, 0)
        })
    })
    .unwrap();
    gate_bind_thread(gate, thr_b.idx(), 0x20).unwrap();
    assert_eq!(channels_of(gate), 1);
    Utcb::with(|u| {
        u.mr()[0] = 5;
        ipc_call(gate, u, MsgTag::new(0, 1, 0, 0), Timeout::millis(5000)).unwrap();
        assert_eq!(u.mr()[0], 35);
    });
    stop(gate);
    server_b.join().unwrap();
    // Thread A still serves its own gate (the thread capability).
    Utcb::with(|u| {
        ipc_call(
            thr_a.idx(),
            u,
            MsgTag::new(STOP, 0, 0, 0),
            Timeout::millis(5000),
        )
        .unwrap();
    });
    server_a.join().unwrap();
    for c in [gate, thr_a.idx(), thr_b.idx()] {
        free(c);
    }
}

/// A task is forked only from a process that is still single-threaded
/// and has not used the platform: the test harness has threads and this
/// process's table is set up, so it is refused (the loader's every run
/// forks its task, the positive case).
#[test]
fn fork_task_refuses_a_threaded_or_used_process() {
    let g = new_gate();
    assert!(matches!(
        fork_task(SpawnOptions::default()),
        Err(Error::Inval)
    ));
    free(g);
}
