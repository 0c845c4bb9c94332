//! Unmodified third-party static programs from Debian's `*-static`
//! packages (busybox-static, bash-static, zsh-static, gpgv-static,
//! e2fsck-static) under the loader, in both pager modes, compared with
//! native runs. Programs that are not installed are skipped with a note.

use std::path::Path;
use std::process::Command;

mod common;
use common::assert_same_as_native;

const LOADER: &str = env!("CARGO_BIN_EXE_loader");

fn compare(prog: &str, args: &[&str]) {
    if !Path::new(prog).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{prog} missing in CI: .ci/run installs it"
        );
        eprintln!("{prog} not installed (Debian package: see loader/README.md): skipped");
        return;
    }
    let native = Command::new(prog).args(args).output().unwrap();
    for mode in ["internal", "external"] {
        let l = Command::new(LOADER)
            .args(["run", "--pager", mode, prog])
            .args(args)
            .output()
            .unwrap();
        let what = format!("{prog} {args:?} ({mode})");
        assert_same_as_native(&what, &l, &native);
    }
}

#[test]
fn busybox_applets() {
    let dir = env!("CARGO_TARGET_TMPDIR");
    let f = format!("{dir}/busybox-input.txt");
    std::fs::write(&f, "one\ntwo\nthree\ntwo\n").unwrap();
    compare("/bin/busybox", &["sha256sum", &f]);
    compare("/bin/busybox", &["sort", "-u", &f]);
    compare("/bin/busybox", &["wc", "-l", &f]);
    compare("/bin/busybox", &["sh", "-c", "echo $((6*7)); false"]);
    compare("/bin/busybox", &["ls", "/nonexistent-dir"]);
}

#[test]
fn shells_and_tools() {
    compare(
        "/bin/bash-static",
        &[
            "-c",
            "for i in 1 2 3; do echo $i; done; echo err >&2; exit 4",
        ],
    );
    compare("/bin/zsh-static", &["-c", "print -l a b c; exit 2"]);
    compare("/usr/bin/gpgv-static", &["--version"]);
    compare("/sbin/e2fsck.static", &["-V"]);
}
