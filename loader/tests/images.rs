//! Programs from ext2 images (`loader run --ext2 IMAGE`), compared with
//! native runs of the same files, in both pager modes. The image is made
//! here with `mke2fs -d` (e2fsprogs) from static C programs built with
//! `cc -static`/`-static-pie` and, when installed, busybox-static and
//! bash-static.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{assert_same_as_native, status};

const LOADER: &str = env!("CARGO_BIN_EXE_loader");

const PROG: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static char big[3 << 20] = { [0 ... (3 << 20) - 1] = 9 };
static const char ro[1 << 20] = { [0 ... (1 << 20) - 1] = 4 };
int main(int argc, char **argv) {
    unsigned long s = 0;
    for (unsigned long i = 0; i < sizeof big; i += 512) s = s * 31 + big[i] + ro[i % sizeof ro];
    printf("%s: %d args, sum %lu\n", argv[0], argc - 1, s);
    for (int i = 1; i < argc; i++) printf(" [%s]", argv[i]);
    fprintf(stderr, "to stderr\n");
    return argc == 1 ? 0 : 6;
}
"#;

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A directory `src` with `bin/` holding the test programs, and an ext2
/// image of it; returns (src, image, programs in the image).
fn image(name: &str) -> (PathBuf, PathBuf, Vec<&'static str>) {
    let d = tmp(name);
    let src = d.join("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(d.join("p.c"), PROG).unwrap();
    let mut progs = vec![];
    for (name, flag) in [("prog", "-static"), ("prog-pie", "-static-pie")] {
        let st = Command::new("cc")
            .args(["-O1", flag, "-o"])
            .arg(src.join("bin").join(name))
            .arg(d.join("p.c"))
            .status()
            .expect("cc (gcc, libc6-dev)");
        assert!(st.success(), "cc {flag}");
        progs.push(name);
    }
    for (from, name) in [("/bin/busybox", "busybox"), ("/bin/bash-static", "bash")] {
        if Path::new(from).exists() {
            std::fs::copy(from, src.join("bin").join(name)).unwrap();
            progs.push(name);
        } else {
            assert!(std::env::var_os("CI").is_none(), "{from} missing in CI");
            eprintln!("{from} not installed: not in the image");
        }
    }
    let img = d.join("fs.img");
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-d"])
        .arg(&src)
        .arg(&img)
        .arg("32M")
        .status()
        .expect("mke2fs (e2fsprogs)");
    assert!(st.success(), "mke2fs");
    (src, img, progs)
}

#[test]
fn programs_from_ext2_image_equal_native() {
    let (src, img, progs) = image("ext2-image");
    let cache = tmp("ext2-cache");
    let cases: Vec<(&str, Vec<&str>)> = progs
        .iter()
        .flat_map(|p| match *p {
            "busybox" => vec![
                (
                    *p,
                    vec!["sh", "-c", "echo one two | wc -w; echo $((6*7)); exit 3"],
                ),
                (*p, vec!["sha256sum", "/etc/hostname"]),
            ],
            "bash" => vec![(
                *p,
                vec!["-c", "for i in a b; do echo $i; done; echo e >&2; exit 5"],
            )],
            _ => vec![(*p, vec![]), (*p, vec!["x", "y z"])],
        })
        .collect();
    for (p, args) in &cases {
        let in_image = format!("/bin/{p}");
        let native = Command::new(src.join("bin").join(p))
            .arg0(&in_image)
            .args(args)
            .output()
            .unwrap();
        for mode in ["internal", "external"] {
            // Twice: the second run replays the learned profile.
            for round in 0..2 {
                let l = Command::new(LOADER)
                    .env("XDG_CACHE_HOME", &cache)
                    .args(["run", "--pager", mode, "--ext2"])
                    .arg(&img)
                    .arg(&in_image)
                    .args(args)
                    .output()
                    .unwrap();
                let what = format!("{in_image} {args:?} ({mode}, run {round})");
                assert_same_as_native(&what, &l, &native);
            }
        }
    }
}

#[test]
fn missing_image_and_program_are_named() {
    let l = Command::new(LOADER)
        .args(["run", "--ext2", "/nonexistent.img", "/bin/x"])
        .output()
        .unwrap();
    assert_eq!(status(&l), 127);
    assert!(
        String::from_utf8_lossy(&l.stderr).contains("--ext2 /nonexistent.img"),
        "{}",
        String::from_utf8_lossy(&l.stderr)
    );
    let (_, img, _) = image("ext2-image-2");
    let l = Command::new(LOADER)
        .args(["run", "--ext2"])
        .arg(&img)
        .arg("/bin/not-there")
        .output()
        .unwrap();
    assert_eq!(status(&l), 127);
    assert!(
        String::from_utf8_lossy(&l.stderr).contains("/bin/not-there"),
        "{}",
        String::from_utf8_lossy(&l.stderr)
    );
}

fn stats(o: &Output, path: &Path) -> String {
    assert!(o.status.success() || status(o) < 128, "{o:?}");
    std::fs::read_to_string(path).unwrap()
}

/// The number after `"key":` in the statistics (the first one).
fn num(json: &str, key: &str) -> f64 {
    let k = format!("\"{key}\":");
    let at = json.find(&k).unwrap_or_else(|| panic!("{key} in {json}")) + k.len();
    json[at..]
        .split([',', '}'])
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {json}"))
}

fn run_with(cache: &Path, extra: &[&str], prog: &str, args: &[&str], st: &Path) -> Output {
    Command::new(LOADER)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("L4FS_SOCKET")
        .arg("run")
        .args(extra)
        .arg("--stats")
        .arg(st)
        .arg(prog)
        .args(args)
        .output()
        .unwrap()
}

/// `PROG` built static in `d` (as `d/prog`).
fn build_prog(d: &Path) -> PathBuf {
    std::fs::write(d.join("p.c"), PROG).unwrap();
    let prog = d.join("prog");
    assert!(
        Command::new("cc")
            .args(["-O1", "-static", "-o"])
            .arg(&prog)
            .arg(d.join("p.c"))
            .status()
            .unwrap()
            .success()
    );
    prog
}

/// A program whose file pages are at most `--premap-pages` has them all
/// mapped before it starts, in a few large runs: it takes a tenth of the
/// faults of demand paging (only its zero-filled bss and stack are left),
/// with the same output; one page over the limit, it is demand paged.
#[test]
fn small_programs_are_mapped_before_they_start() {
    let d = tmp("premap");
    let prog = build_prog(&d);
    let prog = prog.to_str().unwrap();
    let native = Command::new(prog).output().unwrap();
    let (cache, st) = (d.join("cache"), d.join("st.json"));
    let run = |limit: &str| {
        let extra = ["--no-prefetch-profile", "--premap-pages", limit];
        let o = run_with(&cache, &extra, prog, &[], &st);
        assert_eq!(o.stdout, native.stdout, "--premap-pages {limit}");
        assert_eq!(o.stderr, native.stderr, "--premap-pages {limit}");
        stats(&o, &st)
    };
    let demand = run("0");
    let pages = num(&demand, "file_pages_loadable");
    let premapped = run(&pages.to_string());
    let over = run(&(pages - 1.0).to_string());
    let (fd, fp, fo) = (
        num(&demand, "total"),
        num(&premapped, "total"),
        num(&over, "total"),
    );
    assert!(fd >= 20.0, "demand paging: {fd} faults: {demand}");
    assert!(
        fp <= fd / 10.0,
        "premapped: {fp} faults vs {fd}: {premapped}"
    );
    assert!(
        num(&premapped, "prefetched") >= pages - 1.0,
        "premapped: {premapped}"
    );
    assert!(
        fo >= fd / 2.0,
        "over the limit: {fo} faults vs {fd}: {over}"
    );
}

/// The second run of a program replays the profile of the first: far
/// fewer faults, same output; a corrupt profile or another file's is
/// ignored with a warning (and output stays the same);
/// `--no-prefetch-profile` turns it off.
#[test]
fn learned_prefetch_replays_and_distrusts_bad_profiles() {
    let d = tmp("learned");
    let cache = d.join("cache");
    let prog = build_prog(&d);
    let prog = prog.to_str().unwrap();
    let native = Command::new(prog).output().unwrap();
    let st = d.join("st.json");
    let profdir = cache.join("l4re-loader/prefetch");
    for mode in ["internal", "external"] {
        let _ = std::fs::remove_dir_all(&cache);
        let m = ["--pager", mode];
        let first = run_with(&cache, &m, prog, &[], &st);
        let s1 = stats(&first, &st);
        assert!(s1.contains("\"state\":\"recorded\""), "{s1}");
        assert_eq!(first.stdout, native.stdout, "{mode}");
        let files: Vec<_> = std::fs::read_dir(&profdir).unwrap().collect();
        assert_eq!(files.len(), 1, "one profile");
        let second = run_with(&cache, &m, prog, &[], &st);
        let s2 = stats(&second, &st);
        assert_eq!(second.stdout, native.stdout, "{mode}");
        assert_eq!(second.stderr, native.stderr, "{mode}: no warning");
        assert!(s2.contains("\"state\":\"replayed\""), "{s2}");
        let (f1, f2) = (num(&s1, "total"), num(&s2, "total"));
        assert!(f1 >= 10.0, "{mode}: first run faults {f1}");
        assert!(
            f2 <= f1 / 10.0,
            "{mode}: second run faults {f2} vs {f1}: {s2}"
        );
        assert!(
            num(&s2, "prefetched") > 0.0 && num(&s2, "used") > 0.0,
            "{s2}"
        );
        // Off.
        let off = run_with(
            &cache,
            &[&m[..], &["--no-prefetch-profile"]].concat(),
            prog,
            &[],
            &st,
        );
        let s3 = stats(&off, &st);
        assert!(s3.contains("\"state\":\"off\""), "{s3}");
        // Demand paged without a profile: the faults of a run that does
        // not record (the kernel maps what the server has cached: at most
        // the recording run's, which sees every first touch), more than
        // the replay's.
        let f3 = num(&s3, "total");
        assert!(f3 <= f1 && f3 > f2, "{mode}: without the profile {f3}");
        // Corrupt: every byte flipped in the middle.
        let path = std::fs::read_dir(&profdir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let c = run_with(&cache, &m, prog, &[], &st);
        let sc = stats(&c, &st);
        assert_eq!(c.stdout, native.stdout);
        let err = String::from_utf8_lossy(&c.stderr);
        assert!(err.contains("corrupt") && err.contains("ignored"), "{err}");
        assert!(sc.contains("\"state\":\"recorded\""), "{sc}");
        // Pages mapped ahead of faults as in the first recording run.
        assert_eq!(
            num(&sc, "prefetched"),
            num(&s1, "prefetched"),
            "nothing replayed"
        );
        // Another file's profile under this file's name: the program is
        // changed (a new file, same name), its old profile moved over.
        std::fs::write(&path, &good).unwrap();
        let other = d.join("other");
        std::fs::copy(prog, &other).unwrap();
        let o = run_with(&cache, &m, other.to_str().unwrap(), &[], &st);
        assert!(stats(&o, &st).contains("\"state\":\"recorded\""));
        let other_prof: Vec<_> = std::fs::read_dir(&profdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("other-")
            })
            .collect();
        assert_eq!(other_prof.len(), 1);
        std::fs::copy(&path, &other_prof[0]).unwrap();
        let o = run_with(&cache, &m, other.to_str().unwrap(), &[], &st);
        let so = stats(&o, &st);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("another file") && err.contains("ignored"),
            "{err}"
        );
        assert!(so.contains("\"state\":\"recorded\""), "{so}");
        let mut want = native.stdout.clone();
        let n = String::from_utf8_lossy(&want).replace(prog, other.to_str().unwrap());
        want = n.into_bytes();
        assert_eq!(o.stdout, want);
        // A changed file gets a new profile.
        let before = std::fs::read_dir(&profdir).unwrap().count();
        std::fs::write(&other, std::fs::read(prog).unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&other)
            .unwrap();
        f.set_len(std::fs::metadata(&other).unwrap().len() + 1)
            .unwrap();
        drop(f);
        let o = run_with(&cache, &m, other.to_str().unwrap(), &[], &st);
        assert!(stats(&o, &st).contains("\"state\":\"recorded\""));
        assert_eq!(std::fs::read_dir(&profdir).unwrap().count(), before + 1);
    }
}

/// `loader serve` serves runs that find it through `L4FS_SOCKET` (or
/// `--server`), several at once, sharing its page cache; without it runs
/// start their own; SIGTERM ends it cleanly (socket removed, status 0)
/// after writing dirty pages back.
#[test]
fn persistent_server_serves_runs_and_stops_cleanly() {
    let d = tmp("serve");
    let sock = d.join("fs.sock");
    let cache = d.join("cache");
    let mut server = common::KillOnDrop::new(
        Command::new(LOADER)
            .args(["serve", "--socket"])
            .arg(&sock)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    for _ in 0..500 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(sock.exists(), "socket");
    let prog = "/bin/busybox";
    if !Path::new(prog).exists() {
        drop(server);
        eprintln!("busybox not installed: skipped");
        return;
    }
    let script = "for i in 1 2 3; do echo $i; done | wc -l";
    let native = Command::new(prog)
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    let st = d.join("st.json");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            Command::new(LOADER)
                .env("XDG_CACHE_HOME", &cache)
                .env("L4FS_SOCKET", &sock)
                .args(["run", prog, "sh", "-c", script])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in runs {
        let o = r.wait_with_output().unwrap();
        assert_eq!(o.stdout, native.stdout);
        assert!(o.status.success());
    }
    // The server's own pid is not ours: no fs-server child was started.
    let o = Command::new(LOADER)
        .env("XDG_CACHE_HOME", &cache)
        .env("L4FS_SOCKET", &sock)
        .args([
            "run",
            "--no-prefetch-profile",
            "--premap-pages",
            "0",
            "--stats",
        ])
        .arg(&st)
        .args([prog, "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(o.stdout, native.stdout);
    let s = std::fs::read_to_string(&st).unwrap();
    // Pages the earlier runs loaded are in the server's cache: the kernel
    // mapped them (no fault on a shared file page reached the pager, and
    // none was minor: those regions see only holes); the faults left are
    // the private copies and zero fills.
    assert_eq!(num(&s, "shared_file"), 0.0, "{s}");
    assert_eq!(num(&s, "minor"), 0.0, "{s}");
    assert!(num(&s, "private_copy") > 0.0, "{s}");
    // SIGTERM: the server syncs and ends.
    // SIGTERM to our own child.
    l4re::host::signal::kill(server.child().id() as i32, 15).unwrap();
    let out = server.take().wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!sock.exists(), "socket removed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("written back"));
    // Gone: a run named by the environment starts its own, with a warning.
    let o = Command::new(LOADER)
        .env("XDG_CACHE_HOME", &cache)
        .env("L4FS_SOCKET", &sock)
        .args(
            [prog, "sh", "-c", script]
                .iter()
                .fold(vec!["run"], |mut v, a| {
                    v.push(a);
                    v
                }),
        )
        .output()
        .unwrap();
    assert_eq!(o.stdout, native.stdout);
    assert!(String::from_utf8_lossy(&o.stderr).contains("starting a file server of our own"));
    // Named on the command line, a missing server is an error.
    let o = Command::new(LOADER)
        .args(["run", "--server"])
        .arg(&sock)
        .args([prog, "true"])
        .output()
        .unwrap();
    assert_eq!(status(&o), 127);
}
