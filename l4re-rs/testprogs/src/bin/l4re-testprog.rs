//! One program, several roles, each run as its own task (process) by the
//! multi-process tests and the benchmark. Capabilities come from the
//! initial capabilities the creating task names.
//!
//! ```text
//! l4re-testprog calc-server               serve Calc on "server"
//! l4re-testprog calc-client ID N          N verified calls to "server"
//! l4re-testprog registry-server           serve a Namespace on "server"
//! l4re-testprog publish NAME              register "target" in "registry" as NAME
//! l4re-testprog lookup-call NAME N        query NAME in "registry", call it N times
//! l4re-testprog ds-server                 serve a pattern Dataspace on "server"
//! l4re-testprog ds-client PAGES           map PAGES pages of "server", check them
//! l4re-testprog call-until-dead           call "server" until it fails; report how
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use l4re::cap::{Cap, IpcGate, Untyped};
use l4re::env::env;
use l4re::msg::LongBytes;
use l4re::proto::dataspace::Flags as DsFlags;
use l4re::proto::{DataspaceClient, NamespaceClient};
use l4re::server::{Server, ServerObject};
use l4re::{CapRights, Error, IpcError, RcvBuf, Result};
use l4re_testprogs::{
    Calc, CalcClient, CalcService, PatternDataspace, Registry, expected_mix, pattern,
};

fn cap<T: l4re::CapKind>(name: &str) -> Result<Cap<T>> {
    env().get_cap::<T>(name).ok_or_else(|| {
        eprintln!("no initial capability named {name:?}");
        Error::NoEnt
    })
}

fn serve(obj: Arc<dyn ServerObject>) -> Result<()> {
    let gate: Cap<IpcGate> = cap("server")?;
    let mut server = Server::new();
    server.register_gate(gate, obj)?;
    server.run()
}

fn calc_client(id: u32, n: u64, server: Cap<Calc>) -> Result<()> {
    for seq in 0..n {
        let got = server.mix(id, seq, "req")?;
        if got != expected_mix(id, seq, "req") {
            eprintln!("client {id}: wrong reply to request {seq}: {got:?}");
            return Err(Error::Inval);
        }
    }
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| arg(i).parse::<u64>().map_err(|_| Error::Inval);
    match arg(1) {
        "calc-server" => serve(Arc::new(CalcService::default())),
        "registry-server" => serve(Arc::new(Registry::default())),
        "ds-server" => serve(Arc::new(PatternDataspace::new(64 * 1024)?)),
        "calc-client" => {
            let (id, n) = (num(2)? as u32, num(3)?);
            calc_client(id, n, cap("server")?)?;
            println!("client {id} ok {n}");
            Ok(())
        }
        "publish" => {
            let registry: Cap<l4re::proto::Namespace> = cap("registry")?;
            let target: Cap<Untyped> = cap("target")?;
            registry.register_obj(
                0,
                LongBytes::new(arg(2).as_bytes()),
                Some(target.send(CapRights::RW)),
            )?;
            println!("published {}", arg(2));
            Ok(())
        }
        "lookup-call" => {
            let registry: Cap<l4re::proto::Namespace> = cap("registry")?;
            let slot = l4re::cap::alloc::<Calc>()?;
            let reply =
                registry.query(LongBytes::new(arg(2).as_bytes()), RcvBuf::cap(slot.idx()))?;
            if !reply.1.0.cap_received() {
                eprintln!("query answered without a capability");
                return Err(Error::MsgMissArg);
            }
            let n = num(3)?;
            calc_client(99, n, *slot)?;
            println!("lookup-call ok {n}");
            Ok(())
        }
        "ds-client" => {
            let ds: Cap<l4re::proto::Dataspace> = cap("server")?;
            let pages = num(2)?;
            let size = ds.info()?.size;
            let window = l4re::host::ReservedRange::new((pages as usize) * 4096)?;
            for p in 0..pages {
                let offset = (p * 4096) % size;
                let spot = window.addr() as u64 + p * 4096;
                let item = ds.map(
                    offset,
                    spot,
                    DsFlags::R,
                    RcvBuf::window(window.addr() as u64, window.order()),
                )?;
                if !item.is_valid() {
                    return Err(Error::Fault);
                }
                for probe in [0u64, 1, 777, 4095] {
                    // SAFETY: the page at `spot` was just mapped into our
                    // reserved window by the map item; it stays mapped
                    // while `window` lives.
                    let got = unsafe { std::ptr::read_volatile((spot + probe) as *const u8) };
                    if got != pattern(offset + probe) {
                        eprintln!(
                            "page {p} byte {probe}: got {got:#x}, want {:#x}",
                            pattern(offset + probe)
                        );
                        return Err(Error::Inval);
                    }
                }
            }
            println!("ds-client ok {pages}");
            Ok(())
        }
        "call-until-dead" => {
            let server: Cap<Calc> = cap("server")?;
            let mut calls = 0u64;
            loop {
                match server.add(calls, 1) {
                    Ok(_) => calls += 1,
                    Err(Error::Ipc(IpcError::NotExistent)) => {
                        println!(
                            "server gone after {calls} calls: {}",
                            Error::Ipc(IpcError::NotExistent)
                        );
                        return Ok(());
                    }
                    Err(e) => {
                        eprintln!("unexpected error after {calls} calls: {e}");
                        return Err(e);
                    }
                }
                if calls == 1 {
                    println!("first call ok");
                }
            }
        }
        other => {
            eprintln!("unknown role {other:?}; see the source for the roles");
            Err(Error::Inval)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "{}: {e}",
                args.get(1).map(String::as_str).unwrap_or("l4re-testprog")
            );
            ExitCode::FAILURE
        }
    }
}
