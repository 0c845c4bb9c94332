//! Programs from ext2 images (`loader run --ext2 IMAGE`), compared with
//! native runs of the same files, in both pager modes. The image is made
//! here with `mke2fs -d` (e2fsprogs) from static C programs built with
//! `cc -static`/`-static-pie` and, when installed, busybox-static and
//! bash-static.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn status(o: &Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    o.status
        .code()
        .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0))
}

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
                assert_eq!(
                    String::from_utf8_lossy(&l.stdout),
                    String::from_utf8_lossy(&native.stdout),
                    "{what}: stdout"
                );
                assert_eq!(
                    String::from_utf8_lossy(&l.stderr),
                    String::from_utf8_lossy(&native.stderr),
                    "{what}: stderr"
                );
                assert_eq!(status(&l), status(&native), "{what}: status");
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
