//! The parts of the IPC client suite that are the same on both platforms:
//! run by `rust-ipc-client` under Fiasco (module `fiasco`) and by
//! the host unit test below against the same server objects.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use l4re::cap::{self, Cap, CapIdx, Untyped};
use l4re::fpage::RcvBuf;
use l4re::ipc::{self, Timeout};
use l4re::msg::MsgTag;
use l4re::proto::dataspace::{Flags as DsFlags, Stats};
use l4re::proto::{Dataspace, DataspaceClient, Meta, MetaClient};
use l4re::rpc::WithCode;
use l4re::utcb::Utcb;
use l4re::{Error, Result};

use crate::objects::DATASPACE_LABEL;
use crate::proto::{PROBE_LABEL, Probe, ProbeClient, mixed_sum};
use crate::tap::Tap;

/// Calls with every kind of argument, handler errors, and `L4::Meta`.
pub fn calls(t: &mut Tap, probe: Cap<Probe>) {
    t.eq(
        "handler error arrives as error (add overflow)",
        probe.add(u64::MAX, 1),
        Err(Error::Range),
    );
    let v = [1u16, 2, 3, 40000, 65535];
    let (a, b, d, e) = (0xab, 0xbeef, 0xdead_beef, 0x0123_4567_89ab_cdef);
    t.eq(
        "mixed arguments: u8 u16 bool u32 u64 string array",
        probe.mixed(a, b, true, d, e, "hello fiasco", &v),
        Ok((
            mixed_sum(a, b, true, d, e, &v),
            String::from("ocsaif olleh"),
            false,
        )),
    );
    let long: String = (0..300).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let long_rev: String = long.chars().rev().collect();
    t.eq(
        "300-byte string through the message registers",
        probe.mixed(0, 0, false, 0, 0, &long, &[]).map(|r| r.1),
        Ok(long_rev),
    );
    let too_long: String = "x".repeat(600);
    t.eq(
        "a message beyond the registers is refused before sending",
        probe.mixed(0, 0, false, 0, 0, &too_long, &[]).map(|r| r.1),
        Err(Error::MsgTooLong),
    );
    t.eq(
        "handler error code as reply label (fail -12)",
        probe.fail(-12),
        Err(Error::NoMem),
    );

    // L4::Meta, answered by the server loop.
    let meta: Cap<Meta> = probe.cast();
    t.eq(
        "Meta num_interfaces",
        meta.num_interfaces().map(|r| r.0),
        Ok(1),
    );
    t.eq(
        "Meta interface 0",
        meta.interface(0).map(|WithCode(_, r)| r),
        Ok((PROBE_LABEL, String::from("l4re-rs::Probe"))),
    );
    t.eq(
        "Meta supports Probe",
        meta.supports(PROBE_LABEL).map(|r| r.0),
        Ok(1),
    );
    t.eq(
        "Meta does not support Dataspace",
        meta.supports(DATASPACE_LABEL).map(|r| r.0),
        Ok(0),
    );
    t.eq(
        "Meta interface 5 does not exist",
        meta.interface(5).map(|_| ()),
        Err(Error::NoEnt),
    );
}

/// Capability transfer server → client: fetches the server's dataspace
/// into a slot of ours and checks it answers `info` and `L4::Meta`.
pub fn server_ds(t: &mut Tap, probe: Cap<Probe>, size: u64) -> Cap<Dataspace> {
    let got = (|| -> Result<Cap<Dataspace>> {
        let slot = cap::alloc::<Dataspace>()?;
        let item = probe.get_ds(RcvBuf::cap(slot.idx()))?;
        if !item.cap_received() {
            return Err(Error::MsgMissArg);
        }
        Ok(slot.into_cap())
    })();
    t.ok(
        got.is_ok(),
        "capability from the server arrives in our slot",
    );
    let ds = got.unwrap_or(Cap::INVALID);
    t.eq(
        "Dataspace info through the received capability",
        ds.info(),
        Ok(Stats {
            size,
            flags: DsFlags::RX,
        }),
    );
    let ds_meta: Cap<Meta> = ds.cast();
    t.eq(
        "Meta of the dataspace: supports Dataspace",
        ds_meta.supports(DATASPACE_LABEL).map(|r| r.0),
        Ok(1),
    );
    t.eq(
        "writable map of a read-only dataspace is refused",
        ds.map(0, 0, DsFlags::RW, RcvBuf::window(0, 12)).map(|_| ()),
        Err(Error::Perm),
    );
    t.eq(
        "map beyond the end is refused",
        ds.map(size, 0, DsFlags::R, RcvBuf::window(0, 12))
            .map(|_| ()),
        Err(Error::Range),
    );
    ds
}

/// Sends a hand-made message (`words` as the data, `items` claimed in the
/// tag) and returns the reply label.
pub fn raw_call(dest: CapIdx, label: i64, words: &[u64], items: usize) -> Result<i64> {
    raw_call_timeout(dest, label, words, items, Timeout::Never)
}

/// [`raw_call`] with a timeout for both phases.
pub fn raw_call_timeout(
    dest: CapIdx,
    label: i64,
    words: &[u64],
    items: usize,
    timeout: Timeout,
) -> Result<i64> {
    Utcb::with(|u| {
        u.mr()[..words.len()].copy_from_slice(words);
        *u.bdr() = 0;
        u.br()[0] = 0;
        let tag = MsgTag::new(label, words.len(), items, 0);
        let reply = ipc::call(Cap::<Untyped>::from_idx(dest), u, tag, timeout)?;
        Ok(reply.label())
    })
}

/// Ends the server: its last reply arrives (sent without waiting), then
/// calls fail with an IPC error instead of hanging.
pub fn shutdown(t: &mut Tap, probe: Cap<Probe>) {
    t.eq(
        "shutdown: the server's last reply arrives (reply without wait)",
        probe.shutdown(),
        Ok(()),
    );
    let after = raw_call_timeout(
        probe.idx(),
        PROBE_LABEL,
        &[0, 1, 2],
        0,
        Timeout::millis(2000),
    );
    t.ok(
        matches!(after, Err(Error::Ipc(_))),
        &format!("a call after shutdown fails with an IPC error ({after:?})"),
    );
}

/// Malformed requests get error replies, and the server keeps serving.
pub fn bad_messages(t: &mut Tap, probe: Cap<Probe>) {
    let p = PROBE_LABEL;
    let bad: Vec<(&str, i64, Vec<u64>, Error)> = vec![
        ("unknown opcode", p, vec![99], Error::NoSys),
        ("no opcode at all", p, vec![], Error::MsgTooShort),
        ("missing argument", p, vec![0, 5], Error::MsgTooShort),
        (
            "string length beyond the message",
            p,
            vec![1, 0, 0, 0, 1000, 0],
            Error::MsgTooShort,
        ),
        ("capability argument missing", p, vec![2], Error::MsgMissArg),
        (
            "protocol the object does not speak",
            0x4005,
            vec![0],
            Error::BadProto,
        ),
        ("negative protocol label", -77, vec![0], Error::BadProto),
    ];
    for (what, label, words, want) in bad {
        t.eq(
            &format!("bad message: {what}"),
            raw_call(probe.idx(), label, &words, 0),
            Ok(want.code()),
        );
    }
    t.eq(
        "server still serves after bad messages",
        probe.add(40, 2),
        Ok(42),
    );
}

/// The same suite on the host platform: a server thread with the same
/// objects the Fiasco server program registers.
#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;
    use crate::objects::{MemDs, ProbeObj};
    use alloc::sync::Arc;
    use l4re::server::Server;

    #[test]
    fn client_suite_passes_on_the_host() {
        const SIZE: usize = 4 * 4096;
        let gate = l4re::env::env().factory().create_gate(None, 0).unwrap();
        let g = gate.cap();
        let (_thread, _join) = l4re::host::spawn_thread(move || {
            let mut server = Server::new();
            let ds = Arc::new(MemDs::with_pattern(SIZE).unwrap());
            let (ds_gate, _) = server.register(ds).unwrap();
            let probe = Arc::new(ProbeObj::new(ds_gate.into_cap().idx()));
            server.register_gate(g, probe.clone()).unwrap();
            let _ = server.serve(l4re::ipc::Timeout::Never, |_| !probe.stopped());
        })
        .unwrap();
        let probe: Cap<Probe> = gate.cap().cast();
        let mut t = Tap::new();
        t.eq("call reaches the server (add)", probe.add(1, 2), Ok(3));
        calls(&mut t, probe);
        server_ds(&mut t, probe, SIZE as u64);
        bad_messages(&mut t, probe);
        shutdown(&mut t, probe);
        let failed: Vec<String> = t
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("not ok"))
            .collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }
}
