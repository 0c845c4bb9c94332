//! `loader`: runs programs in new tasks, demand-paged from the filesystem
//! server.
//!
//! ```text
//! loader run [--pager internal|external] [--root DIR | --ext2 IMAGE] [--prefetch N] [--fault-around N]
//!            [--premap-pages N] [--fs-pool-pages N] [--stats FILE|-]
//!            [--confine] [--allow-read DIR]... [--allow-write DIR]... PROGRAM [ARGS...]
//! loader check PROGRAM...        validate ELF files (no task is started)
//! loader demo [--pager ...]      run the bundled demo program
//! loader bench                   the paging benchmark (loader/README.md, "Benchmark")
//! loader map-bench FILE          time Dataspace map round trips to the filesystem server
//! loader serve [--root DIR | --ext2 IMAGE] [--socket PATH] [--ready N] [--socket-mode OCTAL]
//!                                a long-lived file server with N ready tasks
//! ```
//!
//! One executable plays every role, so that `cargo run -p loader` builds
//! all that a run needs: a run serves the files from a thread of its own
//! (or uses `loader serve`) and forks the task stub from itself.

use std::path::PathBuf;

use l4pager::host::Mode;
use loader::host::arena::Arena;
use loader::host::run::{RunOpts, Store, run};

/// The task stub shares its process with the loaded program, whose C
/// library owns the heap break: every role of this executable allocates
/// from an mmap arena that never moves it.
#[global_allocator]
static ARENA: Arena = Arena::new();

fn usage() -> ! {
    eprintln!(
        "usage: loader run [--pager internal|external] [--root DIR | --ext2 IMAGE] [--prefetch N] [--fault-around N] [--premap-pages N] [--fs-pool-pages N] [--stats FILE|-] [--confine] [--allow-read DIR]... [--allow-write DIR]... PROGRAM [ARGS...]\n       \
         loader check FILE...\n       loader demo [--pager internal|external] [--fault-around N] [--stats FILE|-]\n       \
         loader bench\n       \
         loader serve [--root DIR | --ext2 IMAGE] [--socket PATH] [--fs-pool-pages N] [--ready N] [--socket-mode OCTAL]"
    );
    std::process::exit(2)
}

fn parse_run(args: &[String]) -> RunOpts {
    let mut o = RunOpts {
        mode: Mode::Internal,
        root: PathBuf::from("/"),
        ext2: None,
        prefetch: 0,
        fault_around: l4pager::host::FAULT_AROUND_PAGES,
        premap_pages: loader::host::run::PREMAP_PAGES,
        fs_pool_pages: None,
        profile: true,
        server: None,
        server_optional: false,
        stats: None,
        program: String::new(),
        args: Vec::new(),
        confine: None,
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let val = |i: usize| args.get(i + 1).cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--pager" => {
                o.mode = match val(i).as_str() {
                    "internal" => Mode::Internal,
                    "external" => Mode::External,
                    _ => usage(),
                };
                i += 2;
            }
            "--root" => {
                o.root = PathBuf::from(val(i));
                i += 2;
            }
            "--server" => {
                o.server = Some(PathBuf::from(val(i)));
                i += 2;
            }
            "--ext2" => {
                o.ext2 = Some(PathBuf::from(val(i)));
                i += 2;
            }
            "--no-prefetch-profile" => {
                o.profile = false;
                i += 1;
            }
            "--prefetch" => {
                o.prefetch = val(i).parse().unwrap_or_else(|_| usage());
                i += 2;
            }
            "--fault-around" => {
                o.fault_around = val(i).parse().unwrap_or_else(|_| usage());
                i += 2;
            }
            "--premap-pages" => {
                o.premap_pages = val(i).parse().unwrap_or_else(|_| usage());
                i += 2;
            }
            "--fs-pool-pages" => {
                o.fs_pool_pages = Some(val(i).parse().unwrap_or_else(|_| usage()));
                i += 2;
            }
            "--stats" => {
                o.stats = Some(val(i));
                i += 2;
            }
            "--confine" => {
                o.confine.get_or_insert_with(Default::default);
                i += 1;
            }
            "--allow-read" => {
                let c = o.confine.get_or_insert_with(Default::default);
                c.read.push(PathBuf::from(val(i)));
                i += 2;
            }
            "--allow-write" => {
                let c = o.confine.get_or_insert_with(Default::default);
                c.write.push(PathBuf::from(val(i)));
                i += 2;
            }
            "--" => {
                i += 1;
                break;
            }
            s if s.starts_with("--") => usage(),
            _ => break,
        }
    }
    // A long-lived file server named in the environment serves runs that
    // name no store of their own.
    if o.server.is_none()
        && o.ext2.is_none()
        && !args[..i].iter().any(|a| a == "--root")
        && let Some(p) = std::env::var_os(loader::host::run::SOCKET_ENV).filter(|v| !v.is_empty())
    {
        o.server = Some(PathBuf::from(p));
        o.server_optional = true;
    }
    if i >= args.len() {
        if o.program.is_empty() {
            usage();
        }
    } else {
        o.program = args[i].clone();
        o.args = args[i + 1..].to_vec();
    }
    o
}

/// Whether a run with a server goes through one of its ready tasks: not
/// with the external pager or `--confine` (they keep the path of a run of
/// our own, with the server's capability).
fn through_ready_task(o: &RunOpts) -> bool {
    o.mode == Mode::Internal && o.confine.is_none()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") if args.len() == 1 => {
            loader::bench::main();
            std::process::exit(0)
        }
        Some("run") => {
            let o = parse_run(&args[1..]);
            // With a running server: a ready task of its runs the program
            // (the options it cannot honour keep the path of a run of our
            // own, with its capability).
            if let Some(sock) = o.server.as_ref().filter(|_| through_ready_task(&o)) {
                match loader::host::ready::run_via_server(&o, sock) {
                    Ok(status) => std::process::exit(status),
                    Err(loader::host::ready::NotRun::NoReady) => {
                        loader::host::run::trace("loader", "the server keeps no ready tasks")
                    }
                    Err(loader::host::ready::NotRun::Unreachable(e)) if !o.server_optional => {
                        eprintln!("loader: {e}");
                        std::process::exit(127)
                    }
                    // Reported by the run (it starts a server of its own).
                    Err(loader::host::ready::NotRun::Unreachable(_)) => {}
                }
            } else if o.server.is_some() {
                loader::host::run::trace(
                    "loader",
                    "--pager external / --confine: not through a ready task of the server",
                );
            }
            match run(&ARENA, &o) {
                Ok(out) => std::process::exit(out.status),
                Err(e) => {
                    eprintln!("loader: {e}");
                    std::process::exit(127)
                }
            }
        }
        Some("demo") => {
            let mut o = parse_run(&[&args[1..], &["demo".to_string()]].concat());
            let dir = std::env::temp_dir().join(format!("l4loader-demo-{}", std::process::id()));
            if let Err(e) = loader::demo::write(&dir) {
                eprintln!("loader: cannot write the demo program: {e}");
                std::process::exit(1);
            }
            o.root = dir.clone();
            o.server = None;
            // The demo shows demand paging: its pages are not mapped
            // before it starts.
            o.premap_pages = 0;
            // A new file every time: nothing to learn.
            o.profile = false;
            o.program = "/demo".into();
            if o.stats.is_none() {
                o.stats = Some("-".into());
            }
            let r = run(&ARENA, &o);
            let _ = std::fs::remove_dir_all(&dir);
            match r {
                Ok(out) => std::process::exit(out.status),
                Err(e) => {
                    eprintln!("loader: {e}");
                    std::process::exit(127)
                }
            }
        }
        Some("check") if args.len() > 1 => {
            let mut bad = 0;
            for f in &args[1..] {
                match std::fs::read(f) {
                    Ok(b) => match loader::elf::plan(&b, loader::host::run::PIE_BASE) {
                        Ok(p) => println!(
                            "{f}: ok: {} x86-64 program, entry {:#x}, {} regions, {} loadable pages",
                            if p.pie { "static-pie" } else { "static" },
                            p.entry,
                            p.regions.len(),
                            p.loadable_pages
                        ),
                        Err(e) => {
                            println!("{f}: refused: {e}");
                            bad += 1;
                        }
                    },
                    Err(e) => {
                        println!("{f}: {e}");
                        bad += 1;
                    }
                }
            }
            std::process::exit(if bad > 0 { 1 } else { 0 })
        }
        Some("map-bench") if args.len() == 2 => {
            // Dataspace map round trips to the filesystem server, one every
            // 16 pages of FILE: first (the server loads) and again (cached).
            let fs = loader::host::run::FsTask::start(std::path::Path::new("/"))
                .unwrap_or_else(|e| panic!("{e}"));
            let f = fs.open(&args[1]).unwrap_or_else(|e| panic!("{e}"));
            let v = l4pager::host::DsView::new(f.cap()).expect("file view");
            for round in ["cold", "warm"] {
                let t = std::time::Instant::now();
                let mut n = 0;
                let mut off = 0;
                while off < v.size() {
                    v.load(off).expect("map");
                    n += 1;
                    off += 65536;
                }
                println!(
                    "{round}: {n} maps, {:.1} us each",
                    t.elapsed().as_secs_f64() * 1e6 / n as f64
                );
            }
            std::process::exit(0)
        }
        Some("serve") => {
            let mut o = loader::host::run::ServeOpts {
                store: Store::Dir(PathBuf::from("/")),
                socket: loader::host::run::default_socket(),
                pool_pages: None,
                ready: loader::host::ready::DEFAULT_READY,
                socket_mode: loader::host::run::SOCKET_MODE,
                run: parse_run(&["-".to_string()]),
            };
            o.run.server = None;
            let a = &args[1..];
            let mut i = 0;
            while i < a.len() {
                let v = a.get(i + 1).cloned().unwrap_or_else(|| usage());
                match a[i].as_str() {
                    "--root" => o.store = Store::Dir(PathBuf::from(v)),
                    "--ext2" => o.store = Store::Ext2(PathBuf::from(v)),
                    "--socket" => o.socket = PathBuf::from(v),
                    "--fs-pool-pages" => o.pool_pages = Some(v.parse().unwrap_or_else(|_| usage())),
                    "--ready" => o.ready = v.parse().unwrap_or_else(|_| usage()),
                    "--socket-mode" => {
                        o.socket_mode = u32::from_str_radix(&v, 8)
                            .ok()
                            .filter(|m| *m <= 0o777)
                            .unwrap_or_else(|| usage())
                    }
                    _ => usage(),
                }
                i += 2;
            }
            std::process::exit(loader::host::run::serve(&ARENA, &o))
        }
        _ => usage(),
    }
}
