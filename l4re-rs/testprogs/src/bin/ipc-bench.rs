//! IPC benchmark of the host platform: round-trip latency and throughput of
//! calls through an IPC gate to a server task, next to a plain Unix-socket
//! ping-pong between two processes measured in the same run.
//!
//! Run with `cargo run --release -p l4re-testprogs --bin ipc-bench`. Two
//! rounds: every process pinned to one CPU (no cross-CPU wake-ups), then
//! unpinned. Figures are medians of per-call times, throughput in calls/s.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use l4re::cap::{Cap, IpcGate};
use l4re::env::env;
use l4re::host::spawn;
use l4re::server::Server;
use l4re::{CapRights, Result};
use l4re_testprogs::{Calc, CalcClient, CalcService};

const WARMUP: usize = 2_000;
const CALLS: usize = 50_000;
const THREADS: usize = 4;
const PER_THREAD: usize = 20_000;

struct Figures {
    median_ns: f64,
    p99_ns: f64,
    calls_per_s_1: f64,
    calls_per_s_n: f64,
}

fn summarize(mut ns: Vec<u64>) -> (f64, f64) {
    ns.sort_unstable();
    (ns[ns.len() / 2] as f64, ns[ns.len() * 99 / 100] as f64)
}

fn time_calls(n: usize, mut f: impl FnMut()) -> Vec<u64> {
    for _ in 0..WARMUP {
        f();
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as u64
        })
        .collect()
}

fn throughput(
    threads: usize,
    per_thread: usize,
    make: impl Fn() -> Box<dyn FnMut() + Send>,
) -> f64 {
    let workers: Vec<_> = (0..threads).map(|_| make()).collect();
    let t = Instant::now();
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut f| std::thread::spawn(move || (0..per_thread).for_each(|_| f())))
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    (threads * per_thread) as f64 / t.elapsed().as_secs_f64()
}

fn bench_l4re() -> Result<Figures> {
    let gate = env().factory().create_gate(None, 0)?;
    let exe = std::env::current_exe().expect("own path");
    let task = spawn(
        &exe,
        &["serve"],
        &[("server", gate.idx(), CapRights::RWS)],
        "bench-srv",
    )?;
    let calc: Cap<Calc> = gate.cap().cast();
    let mut seq = 0u64;
    let lat = time_calls(CALLS, || {
        seq += 1;
        assert_eq!(calc.add(seq, 1).unwrap(), seq + 1);
    });
    let (median_ns, p99_ns) = summarize(lat);
    let one = throughput(1, PER_THREAD, || {
        Box::new(move || assert_eq!(calc.add(1, 2).unwrap(), 3))
    });
    let many = throughput(THREADS, PER_THREAD, || {
        Box::new(move || assert_eq!(calc.add(1, 2).unwrap(), 3))
    });
    task.kill()?;
    Ok(Figures {
        median_ns,
        p99_ns,
        calls_per_s_1: one,
        calls_per_s_n: many,
    })
}

fn ping(s: &mut UnixStream) {
    let mut buf = [0u8; 24];
    s.write_all(&[7u8; 24]).unwrap();
    s.read_exact(&mut buf).unwrap();
}

fn bench_socket() -> Figures {
    let dir = std::env::temp_dir().join(format!("l4re-ipc-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("sock");
    let exe = std::env::current_exe().expect("own path");
    let mut child: Child = Command::new(exe).arg("echo").arg(&path).spawn().unwrap();
    let mut s = connect_retry(&path);
    let (median_ns, p99_ns) = summarize(time_calls(CALLS, || ping(&mut s)));
    let one = throughput(1, PER_THREAD, || {
        let mut s = connect_retry(&path);
        Box::new(move || ping(&mut s))
    });
    let many = throughput(THREADS, PER_THREAD, || {
        let mut s = connect_retry(&path);
        Box::new(move || ping(&mut s))
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Figures {
        median_ns,
        p99_ns,
        calls_per_s_1: one,
        calls_per_s_n: many,
    }
}

fn connect_retry(path: &Path) -> UnixStream {
    for _ in 0..500 {
        if let Ok(s) = UnixStream::connect(path) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("echo process did not come up at {}", path.display());
}

/// The baseline's server: echo every 24-byte message, a thread per peer.
fn echo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).unwrap();
    for s in listener.incoming() {
        let mut s = s.unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 24];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
        });
    }
}

fn pin_to_cpu0() {
    let mut set = rustix::thread::CpuSet::new();
    set.set(0);
    rustix::thread::sched_setaffinity(None, &set).expect("pin to CPU 0");
}

fn unpin() {
    let mut set = rustix::thread::CpuSet::new();
    for cpu in 0..std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
    {
        set.set(cpu);
    }
    rustix::thread::sched_setaffinity(None, &set).expect("unpin");
}

fn report(round: &str, ours: &Figures, base: &Figures) {
    println!("== {round}");
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "", "l4re gate", "unix socket", "ratio"
    );
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{:<34} {:>11.0} {unit} {:>11.0} {unit} {:>7.2}x",
            name,
            a,
            b,
            a / b
        );
    };
    row("round trip, median", ours.median_ns, base.median_ns, "ns");
    row(
        "round trip, 99th percentile",
        ours.p99_ns,
        base.p99_ns,
        "ns",
    );
    row(
        "throughput, 1 client thread",
        ours.calls_per_s_1,
        base.calls_per_s_1,
        "/s",
    );
    row(
        &format!("throughput, {THREADS} client threads"),
        ours.calls_per_s_n,
        base.calls_per_s_n,
        "/s",
    );
    println!("(ratio = l4re / baseline: above 1 is slower for times, faster for throughput)");
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let gate: Cap<IpcGate> = env().get_cap("server").expect("server capability");
            let mut server = Server::new();
            server.register_gate(gate, Arc::new(CalcService::default()))?;
            return server.run();
        }
        Some("echo") => {
            echo(Path::new(&args[2]));
            return Ok(());
        }
        _ => {}
    }
    println!(
        "IPC benchmark: {CALLS} timed round trips after {WARMUP} warm-up; throughput {PER_THREAD} calls per thread"
    );
    pin_to_cpu0();
    let (ours, base) = (bench_l4re()?, bench_socket());
    report("all processes on CPU 0", &ours, &base);
    unpin();
    let (ours, base) = (bench_l4re()?, bench_socket());
    report("unpinned", &ours, &base);
    Ok(())
}
