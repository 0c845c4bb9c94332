//! Multi-process tests of the host platform: every task is a real process,
//! every call a real IPC through a gate, capabilities travel as file
//! descriptors, memory items as shared mappings.

use std::path::Path;
use std::time::Duration;

use l4re::cap::{Cap, IpcGate, OwnedCap};
use l4re::env::env;
use l4re::host::{ChildTask, spawn};
use l4re::{CapRights, Error, IpcError, Result};
use l4re_testprogs::{Calc, CalcClient, expected_mix};

const PROG: &str = env!("CARGO_BIN_EXE_l4re-testprog");
const LIMIT: Duration = Duration::from_secs(120);

fn gate() -> OwnedCap<IpcGate> {
    env().factory().create_gate(None, 0).expect("create gate")
}

fn start(args: &[&str], caps: &[(&str, Cap<IpcGate>, CapRights)]) -> ChildTask {
    let caps: Vec<_> = caps.iter().map(|(n, c, r)| (*n, c.idx(), *r)).collect();
    spawn(Path::new(PROG), args, &caps, args[0]).expect("spawn task")
}

fn exits_ok(task: &ChildTask, what: &str) {
    let status = task
        .wait(Some(LIMIT))
        .expect("wait")
        .unwrap_or_else(|| panic!("{what} did not finish"));
    assert!(status.success(), "{what} failed: {status}");
}

/// Starts a server task on a new gate; returns the task and the client side.
fn server(role: &str) -> (ChildTask, OwnedCap<IpcGate>) {
    let g = gate();
    let task = start(&[role], &[("server", *g, CapRights::RWS)]);
    (task, g)
}

#[test]
fn eight_clients_ten_thousand_calls_each_on_one_gate() -> Result<()> {
    let (srv, g) = server("calc-server");
    let clients: Vec<ChildTask> = (0..8)
        .map(|i| {
            start(
                &["calc-client", &i.to_string(), "10000"],
                &[("server", *g, CapRights::RW)],
            )
        })
        .collect();
    for (i, c) in clients.iter().enumerate() {
        exits_ok(c, &format!("client {i}"));
    }
    // The server counted every call, and still answers us.
    let calc: Cap<Calc> = g.cap().cast();
    assert_eq!(calc.served()?, 80_000);
    assert_eq!(calc.mix(7, 5, "x")?, expected_mix(7, 5, "x"));
    srv.kill()?;
    Ok(())
}

#[test]
fn capability_passed_through_two_hops_still_works() -> Result<()> {
    let (calc_srv, calc) = server("calc-server");
    let (reg_srv, registry) = server("registry-server");
    // Hop 1: the publisher sends the calc gate to the registry in an IPC.
    let publisher = start(
        &["publish", "calc"],
        &[
            ("registry", *registry, CapRights::RW),
            ("target", *calc, CapRights::RW),
        ],
    );
    exits_ok(&publisher, "publisher");
    // The creator forgets the calc gate: only the registry holds it now.
    drop(calc);
    // Hop 2: the registry sends it on to the caller, which calls through it.
    let caller = start(
        &["lookup-call", "calc", "1000"],
        &[("registry", *registry, CapRights::RW)],
    );
    exits_ok(&caller, "caller");
    calc_srv.kill()?;
    reg_srv.kill()?;
    Ok(())
}

#[test]
fn memory_map_item_shows_the_servers_page_to_the_client() -> Result<()> {
    let (srv, ds) = server("ds-server");
    let client = start(&["ds-client", "24"], &[("server", *ds, CapRights::RW)]);
    exits_ok(&client, "dataspace client");
    srv.kill()?;
    Ok(())
}

#[test]
fn death_of_the_server_fails_calls_instead_of_hanging() -> Result<()> {
    let (srv, g) = server("calc-server");
    let calc: Cap<Calc> = g.cap().cast();
    assert_eq!(calc.add(1, 2)?, 3);
    let caller = start(&["call-until-dead"], &[("server", *g, CapRights::RW)]);
    std::thread::sleep(Duration::from_millis(300));
    srv.kill()?;
    srv.wait(Some(LIMIT))?
        .expect("server exit noticed through its task capability");
    // The client blocked in (or about to make) a call sees the death.
    exits_ok(&caller, "caller of a dying server");
    // So do we, at once.
    let t = std::time::Instant::now();
    assert_eq!(calc.add(1, 2), Err(Error::Ipc(IpcError::NotExistent)));
    assert!(t.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[test]
fn malformed_requests_get_errors_and_the_server_keeps_serving() -> Result<()> {
    use l4re::Utcb;
    use l4re::ipc::{Timeout, call};
    use l4re::msg::MsgTag;
    let (srv, g) = server("calc-server");
    let raw = |tag: MsgTag, words: &[u64]| -> Result<i64> {
        Utcb::with(|u| {
            u.mr()[..words.len()].copy_from_slice(words);
            call(g.cap(), u, tag, Timeout::millis(10_000)).map(|t| t.label())
        })
    };
    let code = |e: Error| e.code();
    // Unknown protocol label.
    assert_eq!(
        raw(MsgTag::new(0x4321, 1, 0, 0), &[0])?,
        code(Error::BadProto)
    );
    // Unknown opcode.
    assert_eq!(
        raw(MsgTag::new(0x7000, 1, 0, 0), &[77])?,
        code(Error::NoSys)
    );
    // No opcode.
    assert_eq!(
        raw(MsgTag::new(0x7000, 0, 0, 0), &[])?,
        code(Error::MsgTooShort)
    );
    // Too few words for `add`.
    assert_eq!(
        raw(MsgTag::new(0x7000, 2, 0, 0), &[0, 5])?,
        code(Error::MsgTooShort)
    );
    // Truncated string: `mix` with a string length past the message.
    assert_eq!(
        raw(MsgTag::new(0x7000, 4, 0, 0), &[1, 7, 400, 0])?,
        code(Error::MsgTooShort)
    );
    // More words and items than the message registers hold: refused.
    assert!(raw(MsgTag::new(0x7000, 63, 5, 0), &[0; 63]).is_err());
    // Meta is answered for the object.
    assert_eq!(raw(MsgTag::new(-21, 1, 0, 0), &[0])?, 1);
    assert_eq!(raw(MsgTag::new(-21, 2, 0, 0), &[2, 0x7000])?, 1);
    assert_eq!(raw(MsgTag::new(-21, 2, 0, 0), &[2, 0x4000])?, 0);
    // And a good call still works.
    let calc: Cap<Calc> = g.cap().cast();
    assert_eq!(calc.add(40, 2)?, 42);
    srv.kill()?;
    Ok(())
}

#[test]
fn random_messages_over_real_ipc_do_not_stop_the_server() -> Result<()> {
    use l4re::Utcb;
    use l4re::ipc::{Timeout, call};
    use l4re::msg::MsgTag;
    let (srv, g) = server("calc-server");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let r = rnd();
        let label = if r & 3 == 0 {
            (r >> 40) as i16 as i64
        } else {
            0x7000
        };
        let words = (r >> 8) as usize % 64;
        let tag = MsgTag::new(label, words, 0, 0);
        let fill: Vec<u64> = (0..words)
            .map(|k| {
                if k == 0 {
                    rnd() % 4
                } else if k < 3 {
                    rnd() % 64
                } else {
                    rnd()
                }
            })
            .collect();
        let _ = Utcb::with(|u| {
            u.mr()[..words].copy_from_slice(&fill);
            call(g.cap(), u, tag, Timeout::millis(10_000))
        })?;
    }
    let calc: Cap<Calc> = g.cap().cast();
    assert_eq!(calc.add(2, 2)?, 4);
    srv.kill()?;
    Ok(())
}
