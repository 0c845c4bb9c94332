//! Client task of the multi-process tests of l4fs. It finds the server's
//! root as the initial capability "fs". Roles:
//!
//! * `share-write PATH OFFSET BYTE OUT`: opens PATH read-write, maps the
//!   page at OFFSET writable, writes BYTE there through the mapping and
//!   writes the page's frame number and memfd identity to OUT.
//! * `pressure K N SEED OPS FILES SIZE OUTDIR`: client K of N does OPS
//!   random reads and writes on files `f0..f{FILES-1}` (each SIZE bytes,
//!   initial content `pattern(100 + f)`), through `l4fs.file` and through
//!   mappings (pinned while touched), only in its own slice of every page
//!   (bytes `[K*4096/N, (K+1)*4096/N)`); checks every read against its
//!   model, counts mapped pages it later sees revoked (`mincore`), and
//!   writes its model of each file to `OUTDIR/model-K-f` and the counters
//!   to `OUTDIR/result-K`.

use l4fs::client::{FileCap, Window, open, pattern};
use l4fs::proto::{FileOpsClient, mode};
use l4re::cap::IpcGate;
use l4re::proto::dataspace::Flags as DsFlags;
use l4re::{Cap, Result};

fn root() -> Cap<IpcGate> {
    l4re::env::env()
        .get_cap::<IpcGate>("fs")
        .expect("no \"fs\" capability")
}

fn share_write(args: &[String]) -> Result<()> {
    let path = &args[0];
    let offset: u64 = args[1].parse().expect("offset");
    let byte: u8 = args[2].parse().expect("byte");
    let f = open(root(), path, mode::RW)?;
    let w = Window::new(f.ds_size()? as usize)?;
    w.map(f.ds(), offset, DsFlags::RW)?;
    w.write_byte(offset as usize, byte);
    let pfn = w.pfn(offset as usize).unwrap_or(0);
    let id = w
        .backing_identity(offset as usize)
        .expect("mapping in /proc/self/maps");
    std::fs::write(&args[3], format!("{pfn} {} {} {}\n", id.0, id.1, id.2)).expect("write result");
    Ok(())
}

trait DsSize {
    fn ds_size(&self) -> Result<u64>;
}
impl DsSize for FileCap {
    fn ds_size(&self) -> Result<u64> {
        use l4re::proto::DataspaceClient;
        Ok(self.ds().info()?.size.max(4096))
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pressure(args: &[String]) -> Result<()> {
    let n = |i: usize| -> u64 { args[i].parse().expect("number") };
    let (k, nclients, seed, ops, nfiles, size) = (n(0), n(1), n(2), n(3), n(4), n(5));
    let outdir = std::path::PathBuf::from(&args[6]);
    let slice = 4096 / nclients;
    let lo = k * slice;
    let pages = size / 4096;
    let files: Vec<FileCap> = (0..nfiles)
        .map(|f| open(root(), &format!("f{f}"), mode::RW))
        .collect::<Result<_>>()?;
    let windows: Vec<Window> = (0..nfiles)
        .map(|_| Window::new(size as usize))
        .collect::<Result<_>>()?;
    let mut models: Vec<Vec<u8>> = (0..nfiles)
        .map(|f| pattern(100 + f, size as usize))
        .collect();
    let mut mapped: Vec<std::collections::BTreeSet<u64>> =
        vec![Default::default(); nfiles as usize];
    let mut rng = Rng(seed | 1);
    let (mut revoked_seen, mut big_maps, mut mapped_ops) = (0u64, 0u64, 0u64);
    for op in 0..ops {
        let f = rng.below(nfiles) as usize;
        let page = rng.below(pages);
        let start = rng.below(slice);
        let len = rng.below((slice - start).min(l4fs::proto::MAX_IO as u64)) + 1;
        let off = page * 4096 + lo + start;
        let (file, win, model) = (&files[f], &windows[f], &mut models[f]);
        let range = off as usize..(off + len) as usize;
        match rng.below(10) {
            0..=3 => {
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                file.write(off, &data)?;
                model[range].copy_from_slice(&data);
            }
            4..=6 => {
                let got = file.read(off, len as usize)?;
                assert!(
                    got == model[range.clone()],
                    "client {k}: read mismatch in f{f} at {off}+{len} (op {op})"
                );
            }
            x => {
                let write = x == 9;
                file.file().pin(page * 4096, 4096)?;
                let flags = if write { DsFlags::RW } else { DsFlags::R };
                if win.map(file.ds(), page * 4096, flags)? > 12 {
                    big_maps += 1;
                }
                mapped_ops += 1;
                mapped[f].insert(page);
                if write {
                    for i in range.clone() {
                        let v = rng.next() as u8;
                        win.write_byte(i, v);
                        model[i] = v;
                    }
                } else {
                    for i in range.clone() {
                        assert_eq!(
                            win.read_byte(i),
                            model[i],
                            "client {k}: mapped read mismatch in f{f} at {i} (op {op})"
                        );
                    }
                }
                file.file().unpin(page * 4096, 4096)?;
            }
        }
        if op % 64 == 63 {
            for (f, set) in mapped.iter_mut().enumerate() {
                set.retain(|&p| {
                    let gone = !windows[f].resident((p * 4096) as usize);
                    revoked_seen += gone as u64;
                    !gone
                });
            }
        }
    }
    // Final check of every byte of our slices through the protocol.
    for (f, file) in files.iter().enumerate() {
        for p in 0..pages {
            let off = p * 4096 + lo;
            let got = file.read(off, slice as usize)?;
            assert!(
                got == models[f][off as usize..(off + slice) as usize],
                "client {k}: final mismatch f{f} page {p}"
            );
        }
        std::fs::write(outdir.join(format!("model-{k}-{f}")), &models[f]).expect("write model");
    }
    std::fs::write(
        outdir.join(format!("result-{k}")),
        format!("{revoked_seen} {big_maps} {mapped_ops}\n"),
    )
    .expect("write result");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("share-write") => share_write(&args[1..]),
        Some("pressure") => pressure(&args[1..]),
        _ => {
            eprintln!("usage: l4fs-client share-write|pressure ...");
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        eprintln!("l4fs-client: {e}");
        std::process::exit(1);
    }
}
