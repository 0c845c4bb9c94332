//! The programs (feature `fiasco`): C entry functions called from the
//! programs' C `main` (see the crate documentation).

use alloc::format;
use alloc::sync::Arc;

use l4re::cap::{self, Cap, CapRights, IpcGate};
use l4re::env::{env, log_line};
use l4re::fpage::{PAGE_SIZE, RcvBuf};
use l4re::ipc::Timeout;
use l4re::proto::DataspaceClient;
use l4re::proto::dataspace::Flags as DsFlags;
use l4re::server::Server;
use l4re::{Error, IpcError, Result};
use l4re_rt::Args;

use crate::objects::{FlatNs, MemDs, ProbeObj, pattern_byte};
use crate::proto::{Probe, ProbeClient};
use crate::suite;
use crate::tap::Tap;

/// Size of the test server's memory dataspace.
const PROBE_DS_SIZE: usize = 16 * PAGE_SIZE as usize;

fn rust_ipc_server_main(_: Args) -> Result<()> {
    l4re::env::init_logger(log::LevelFilter::Info);
    let gate: Cap<IpcGate> = env().get_cap("server").ok_or(Error::NoEnt)?;
    let mut server = Server::new();
    let ds = Arc::new(MemDs::with_pattern(PROBE_DS_SIZE)?);
    let (ds_gate, _) = server.register(ds)?;
    let probe = Arc::new(ProbeObj::new(ds_gate.into_cap().idx()));
    server.register_gate(gate, probe.clone())?;
    log_line("rust-ipc-server: serving Probe on \"server\"");
    server.serve(Timeout::Never, |_| !probe.stopped())?;
    log_line("rust-ipc-server: shut down by the client");
    Ok(())
}
l4re_rt::entry!(rust_ipc_server = rust_ipc_server_main);

/// The files of `rust-nsds-server`.
pub const HELLO_TXT: &str = "Hello from a Rust dataspace server on Fiasco.OC!\n";

fn rust_nsds_server_main(_: Args) -> Result<()> {
    l4re::env::init_logger(log::LevelFilter::Info);
    let gate: Cap<IpcGate> = env().get_cap("fs").ok_or(Error::NoEnt)?;
    let mut server = Server::new();
    let mut ns = FlatNs::new();
    let files = [
        ("hello.txt", MemDs::new(HELLO_TXT.as_bytes(), 0)?),
        ("pattern.bin", MemDs::with_pattern(64 * 1024)?),
    ];
    for (name, ds) in files {
        let (g, _) = server.register(Arc::new(ds))?;
        ns.insert(name, g.into_cap().untyped());
    }
    server.register_gate(gate, Arc::new(ns))?;
    log_line("rust-nsds-server: serving hello.txt, pattern.bin on \"fs\"");
    server.run()
}
l4re_rt::entry!(rust_nsds_server = rust_nsds_server_main);

/// Calls `add` until the server has bound its gate (ned starts both
/// programs at once; a call to an unbound gate fails at once).
fn wait_for_server(probe: Cap<Probe>) -> Result<u64> {
    let mut tries = 0;
    loop {
        match probe.add(1, 2) {
            Err(Error::Ipc(IpcError::NotExistent)) if tries < 500 => {
                tries += 1;
                l4re::fiasco::sleep_ms(10);
            }
            r => return r,
        }
    }
}

/// Whether the page at `addr` holds the pattern bytes from `offset`.
fn page_matches(addr: u64, offset: usize) -> bool {
    // SAFETY: the caller had the page mapped into the reserved window; it
    // is read-only and stays mapped.
    let page = unsafe { core::slice::from_raw_parts(addr as *const u8, PAGE_SIZE as usize) };
    page.iter()
        .enumerate()
        .all(|(i, b)| *b == pattern_byte(offset + i))
}

fn rust_ipc_client_main(_: Args) -> i32 {
    let mut t = Tap::new();
    let Some(probe) = env().get_cap::<Probe>("server") else {
        t.ok(false, "capability \"server\" in the environment");
        return report(&t);
    };

    // The fixed capability slots the shared code assumes (l4re::cap::well_known)
    // are where L4Re's loader put the objects.
    let e = l4re::fiasco::env_snapshot();
    let slots = [e.factory, e.log, e.scheduler, e.rm, e.mem_alloc, e.parent];
    let want = [
        cap::well_known::FACTORY,
        cap::well_known::LOG,
        cap::well_known::SCHEDULER,
        env().rm().idx(),
        cap::well_known::MEM_ALLOC,
        cap::well_known::PARENT,
    ];
    t.eq(
        "environment: factory, log, scheduler, mem_alloc, parent at the well-known slots, rm from the env",
        slots,
        want,
    );
    t.ok(
        env().main_thread() == l4re::kobj::current_thread(),
        "main thread capability is l4re_env()->main_thread",
    );

    // Plain calls, every kind of argument, handler errors, L4::Meta.
    t.eq(
        "call reaches the server (add)",
        wait_for_server(probe),
        Ok(3),
    );
    suite::calls(&mut t, probe);

    // Capability transfer client -> server: a dataspace from moe, asked for
    // its size by the server.
    let sent = l4re::fiasco::mem::alloc(3 * PAGE_SIZE)
        .and_then(|ds| probe.ds_size(ds.cap().send(CapRights::RW)));
    t.eq(
        "capability to the server: it calls our dataspace",
        sent,
        Ok(3 * PAGE_SIZE),
    );

    // Capability transfer server -> client: the server's own dataspace.
    let ds = suite::server_ds(&mut t, probe, PROBE_DS_SIZE as u64);

    // Memory map items: pages of the server's dataspace into a receive
    // window reserved in our region map.
    match l4re::fiasco::mem::reserve_area(1 << 16, 16) {
        Err(e) => t.ok(false, &format!("reserve a 64 KiB window: {e}")),
        Ok(win) => {
            for (offset, what) in [(0x3000usize, "page 3"), (0, "page 0"), (0xf000, "page 15")] {
                let r = ds.map(
                    offset as u64,
                    win + offset as u64,
                    DsFlags::R,
                    RcvBuf::window(win, 16),
                );
                let ok = r.is_ok_and(|item| item.is_valid())
                    && page_matches(win + offset as u64, offset);
                t.ok(
                    ok,
                    &format!("Dataspace map of {what} into the window: contents match"),
                );
            }
        }
    }

    // Bad messages get error replies, and the server keeps serving.
    suite::bad_messages(&mut t, probe);
    suite::shutdown(&mut t, probe);

    report(&t)
}
l4re_rt::entry!(rust_ipc_client = rust_ipc_client_main);

fn report(t: &Tap) -> i32 {
    for line in t.lines() {
        log_line(&line);
    }
    if t.all_passed() { 0 } else { 1 }
}

/// `rust-panic`: checks the runtime (allocations through L4Re's libc,
/// aligned ones through `posix_memalign`), then panics on purpose; the
/// panic handler prints the message and exits with status 101.
fn rust_panic_main(_: Args) -> i32 {
    /// 64 KiB aligned to 64 KiB: its allocation goes through
    /// `posix_memalign`.
    #[repr(align(65536))]
    struct Aligned(#[allow(dead_code)] [u8; 1 << 16]);
    let v: alloc::vec::Vec<u64> = (0..10_000).collect();
    let aligned = alloc::boxed::Box::<Aligned>::new_uninit();
    let ok = v.iter().sum::<u64>() == 49_995_000 && aligned.as_ptr() as usize % (1 << 16) == 0;
    drop(aligned);
    log_line(if ok {
        "rust-panic: allocator ok"
    } else {
        "rust-panic: allocator BROKEN"
    });
    let n = v.len() / 250 + 2;
    panic!("deliberate panic {n}");
}
l4re_rt::entry!(rust_panic = rust_panic_main);
