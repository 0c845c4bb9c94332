//! Writes the seed corpora of the message and ELF targets into
//! `corpus/<target>/` (valid requests encoded by l4re's own encoder, a
//! valid START payload, small ELF files laid out as the loader's tests
//! make them). `make-corpus.sh` runs it and adds the ext2 images.
//!
//! `cargo run --release --bin make-seeds -- [DIR]` (DIR: default `corpus`).

use std::path::{Path, PathBuf};

use l4re::msg::{LongBytes, MsgWriter};
use l4re::proto::rm::Flags as RmFlags;
use l4re::utcb::{MR_WORDS, Utcb};
use l4re::{Marshal, MsgTag, Result};
use l4re_fuzz::request;
use loader::host::ctl::{Attach, Start};

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus directory");
    std::fs::write(d.join(name), bytes).expect("seed written");
}

const RM: i64 = 0x4005;
const NS: i64 = 0x4001;
const DS: i64 = 0x4000;
const FILE: i64 = 0x4F00;
const FS: i64 = 0x4F01;

type Args = Box<dyn FnOnce(&mut MsgWriter<'_>) -> Result<()>>;

fn op(sel: u8, label: i64, opcode: i32, args: Args) -> Vec<u8> {
    request(sel, label, move |w| {
        opcode.write(w)?;
        args(w)
    })
}

#[allow(clippy::too_many_arguments)]
fn attach(start: u64, size: u64, fl: RmFlags, name: &'static str) -> Vec<u8> {
    op(
        0,
        RM,
        0,
        Box::new(move |w| {
            start.write(w)?;
            size.write(w)?;
            fl.write(w)?;
            0u64.write(w)?; // offs
            12u8.write(w)?; // align
            0u64.write(w)?; // client cap
            name.write(w)?;
            0u64.write(w)
        }),
    )
}

fn u64s(v: &'static [u64]) -> Args {
    Box::new(move |w| {
        for x in v {
            x.write(w)?;
        }
        Ok(())
    })
}

fn rm_seeds(dir: &Path) {
    let a = attach(0x40_0000, 0x4000, RmFlags::RW | RmFlags::ANONYMOUS, "data");
    let s = attach(
        0,
        0x2000,
        RmFlags::R | RmFlags::ANONYMOUS | RmFlags::SEARCH_ADDR,
        "anon",
    );
    let reserve = op(
        0,
        RM,
        3,
        Box::new(|w| {
            0x100_0000u64.write(w)?;
            0x10_0000u64.write(w)?;
            0u32.write(w)?;
            12u8.write(w)
        }),
    );
    let in_area = attach(
        0x100_0000,
        0x1000,
        RmFlags::RW | RmFlags::ANONYMOUS | RmFlags::IN_AREA,
        "in",
    );
    let find = op(0, RM, 2, u64s(&[0x40_1000, 0x1000]));
    let detach = op(
        0,
        RM,
        1,
        Box::new(|w| {
            0x40_1000u64.write(w)?;
            0x1000u64.write(w)?;
            0u32.write(w)
        }),
    );
    let regions = op(0, RM, 5, u64s(&[0]));
    let areas = op(0, RM, 6, u64s(&[0]));
    let info = op(0, RM, 7, u64s(&[0x40_0000]));
    let free = op(0, RM, 4, u64s(&[0x100_0000]));
    let rescue = op(0, RM, 8, u64s(&[0x1000, 0x2000, 0x3000]));
    let unrescue = op(0, RM, 9, u64s(&[0x1800]));
    let page_in = op(
        0,
        RM,
        10,
        Box::new(|w| {
            0x40_0000u64.write(w)?;
            0x40_3000u64.write(w)?;
            4u16.write(w)
        }),
    );
    let all = [
        &a, &s, &reserve, &in_area, &find, &detach, &regions, &areas, &info, &free, &rescue,
        &unrescue, &page_in,
    ];
    for (i, m) in all.iter().enumerate() {
        put(dir, "rm_dispatch", &format!("op-{i:02}"), m);
    }
    let session: Vec<u8> = all.iter().flat_map(|m| m.iter().copied()).collect();
    put(dir, "rm_dispatch", "session", &session);
}

fn l4fs_seeds(dir: &Path) {
    let query = |sel: u8, name: &'static [u8]| {
        op(sel, NS, 0, Box::new(move |w| LongBytes::new(name).write(w)))
    };
    let open = |name: &'static [u8], mode: u32| {
        op(
            0,
            FS,
            0,
            Box::new(move |w| {
                LongBytes::new(name).write(w)?;
                mode.write(w)
            }),
        )
    };
    // Objects: 0 root; the first open of "a" RW makes object 1.
    let msgs = [
        open(b"a", 1),
        op(
            1,
            FILE,
            1,
            Box::new(|w| {
                10u64.write(w)?;
                LongBytes::new(b"hello, file").write(w)
            }),
        ),
        op(1, FILE, 0, u64s(&[0, 64])),
        op(1, FILE, 2, u64s(&[])),
        op(1, FILE, 4, u64s(&[5000])),
        op(1, FILE, 6, u64s(&[])),
        op(1, FILE, 7, u64s(&[0, 8192])),
        op(1, FILE, 8, u64s(&[0, 8192])),
        op(1, FILE, 3, u64s(&[])),
        op(1, FILE, 5, u64s(&[])),
        op(1, DS, 0, u64s(&[4096, 0x7000_1000, 0b110])),
        op(1, DS, 1, u64s(&[0, 100])),
        op(1, DS, 2, u64s(&[])),
        op(1, DS, 4, u64s(&[0, 16384])),
        op(1, DS, 5, u64s(&[])),
        query(0, b"d"),
        query(2, b"b"),
        open(b"ro", 0),
        op(0, FS, 1, u64s(&[])),
        op(0, FS, 2, u64s(&[])),
        op(0, FS, 3, u64s(&[])),
        op(0, FS, 5, u64s(&[8])),
        op(0, NS, 3, Box::new(|w| LongBytes::new(b"a").write(w))),
    ];
    for (i, m) in msgs.iter().enumerate() {
        // Each alone needs the open first to have a file object.
        let mut s = msgs[0].clone();
        s.extend_from_slice(m);
        put(dir, "l4fs_dispatch", &format!("op-{i:02}"), &s);
    }
    put(dir, "l4fs_dispatch", "session", &msgs.concat());
}

fn msg_seeds(dir: &Path) {
    // Tag, registers, then a decode program.
    let one = |name: &str, f: Args, prog: &[u8]| {
        let (tag, mr) = Utcb::with(|u| {
            let tag = {
                let mut w = MsgWriter::new(u);
                f(&mut w).expect("fits");
                w.finish(0).expect("fits")
            };
            (tag, *u.mr())
        });
        let mut v = tag.0.to_le_bytes().to_vec();
        for x in mr.iter().take(MR_WORDS) {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(prog);
        put(dir, "msg", name, &v);
    };
    one(
        "scalars",
        Box::new(|w| {
            1u8.write(w)?;
            2u16.write(w)?;
            3u32.write(w)?;
            4u64.write(w)?;
            true.write(w)
        }),
        &[0, 1, 2, 3, 4],
    );
    one("string", Box::new(|w| "hello".write(w)), &[5]);
    one(
        "arrays",
        Box::new(|w| {
            (&[1u8, 2, 3][..]).write(w)?;
            (&[7u64, 8][..]).write(w)?;
            LongBytes::new(b"long bytes").write(w)
        }),
        &[6, 7, 8],
    );
    one(
        "tuple",
        Box::new(|w| {
            9u8.write(w)?;
            10u64.write(w)?;
            11u16.write(w)
        }),
        &[14],
    );
    // A capability item (an SndFpage for a cap), as a query reply has.
    let mut v = MsgTag::new(0, 1, 1, 0).0.to_le_bytes().to_vec();
    for x in [0u64, 0x38, 0x1005] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.resize(8 + MR_WORDS * 8, 0);
    v.extend_from_slice(&[3, 10, 9]);
    put(dir, "msg", "item", &v);
}

fn ctl_seeds(dir: &Path) {
    let s = Start {
        regions: vec![Attach {
            start: 0x40_0000,
            size: 0x5000,
            flags: 5,
            offset: 0,
            file: true,
            name: b"text".to_vec(),
        }],
        entry: 0x40_1000,
        phdr: (0x40_0040, 4, 56),
        stack: (0x7fff_f000_0000, 0x80_0000),
        brk: 0x60_0000,
        code: (0x40_0000, 0x40_5000),
        data: (0x60_0000, 0x60_1000),
        prefetch: 8,
        fault_around: 4,
        file_limits: vec![(0x60_0000, 0x123)],
        record: true,
        profile: vec![0x40_1000 | 0x800, 0x40_2000 | 15],
        profile_head: 1,
        execfn: b"/bin/prog".to_vec(),
        argv: vec![b"prog".to_vec(), b"-x".to_vec()],
        envp: vec![b"PATH=/bin".to_vec()],
        premap_pages: 1024,
        ..Default::default()
    };
    put(dir, "ctl", "start", &s.encode());
    put(dir, "ctl", "start-empty", &Start::default().encode());
}

/// A minimal ELF as the loader's tests make it (`elf::tests::tiny`).
fn tiny(ty: u16, segs: &[(u32, u32, u64, u64, u64, u64)], entry: u64) -> Vec<u8> {
    let mut b = vec![0u8; 0x3000];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&ty.to_le_bytes());
    b[18..20].copy_from_slice(&62u16.to_le_bytes());
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[24..32].copy_from_slice(&entry.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[52..54].copy_from_slice(&64u16.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    for (i, (pt, flags, off, vaddr, filesz, memsz)) in segs.iter().enumerate() {
        let p = 64 + i * 56;
        b[p..p + 4].copy_from_slice(&pt.to_le_bytes());
        b[p + 4..p + 8].copy_from_slice(&flags.to_le_bytes());
        b[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
        b[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
        b[p + 24..p + 32].copy_from_slice(&vaddr.to_le_bytes());
        b[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
        b[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
        b[p + 48..p + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    }
    b
}

fn elf_seeds(dir: &Path) {
    const LOAD: u32 = 1;
    const PHDR: u32 = 6;
    const TLS: u32 = 7;
    const STACK: u32 = 0x6474_e551;
    let st = tiny(
        2,
        &[
            (LOAD, 5, 0, 0x40_0000, 0x1800, 0x1800),
            (LOAD, 6, 0x2000, 0x40_3000, 0x100, 0x5000),
        ],
        0x40_0100,
    );
    put(dir, "elf", "static", &st);
    let pie = tiny(
        3,
        &[
            (PHDR, 4, 64, 64, 4 * 56, 4 * 56),
            (LOAD, 5, 0, 0, 0x1800, 0x1800),
            (LOAD, 6, 0x2000, 0x3000, 0x100, 0x5000),
            (STACK, 6, 0, 0, 0, 0),
        ],
        0x100,
    );
    put(dir, "elf", "static-pie", &pie);
    let tls = tiny(
        2,
        &[
            (LOAD, 5, 0, 0x40_0000, 0x1800, 0x1800),
            (LOAD, 6, 0x2280, 0x40_3280, 0, 0x2_0000),
            (TLS, 4, 0x2280, 0x40_3280, 0, 0x10),
        ],
        0x40_0100,
    );
    put(dir, "elf", "bss-tls", &tls);
}

fn main() {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("corpus"));
    rm_seeds(&dir);
    l4fs_seeds(&dir);
    msg_seeds(&dir);
    ctl_seeds(&dir);
    elf_seeds(&dir);
    println!("seeds written under {}", dir.display());
}
