//! `l4fs serve --root DIR | --ext2 IMAGE [--pool-pages N] [--readahead N]
//! [--readaround N] [--low-watermark N] [--policy clock|fifo] [--grow BYTES] [--log-stats 0|1]
//! [--max-open N] [--max-open-per-client N]`: serves the filesystem on the
//! initial capability named "server" (limits: `docs/l4fs.md`).

use l4fs::FsConfig;
use l4re::cap::IpcGate;

fn usage() -> ! {
    eprintln!(
        "usage: l4fs serve (--root DIR | --ext2 IMAGE) [--pool-pages N] [--readahead N] \
         [--readaround N] [--low-watermark N] [--policy clock|fifo] [--grow BYTES] [--log-stats 0|1] \
         [--max-open N] [--max-open-per-client N]"
    );
    std::process::exit(2)
}

fn main() {
    l4re::env::init_logger(log::LevelFilter::Info);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("serve") {
        usage();
    }
    let mut cfg: Option<FsConfig> = None;
    let mut rest: Vec<(String, String)> = Vec::new();
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| usage()).clone();
        match a.as_str() {
            "--root" => cfg = Some(FsConfig::host_dir(v)),
            "--ext2" => cfg = Some(FsConfig::ext2_image(v)),
            _ => rest.push((a.clone(), v)),
        }
    }
    let mut cfg = cfg.unwrap_or_else(|| usage());
    for (k, v) in rest {
        if let Err(e) = cfg.set_option(&k, &v) {
            eprintln!("l4fs: {e}");
            usage();
        }
    }
    let Some(gate) = l4re::env::env().get_cap::<IpcGate>("server") else {
        eprintln!("l4fs: no capability named \"server\"");
        std::process::exit(1);
    };
    if let Err(e) = l4fs::serve(gate, cfg) {
        eprintln!("l4fs: {e}");
        std::process::exit(1);
    }
}
