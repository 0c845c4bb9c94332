//! `loader run --confine`: a real program that opens files inside and
//! outside `--root`, run with and without confinement (Landlock).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LOADER: &str = env!("CARGO_BIN_EXE_loader");

/// Opens every argument (`w:PATH`: for writing, created) and prints one
/// line per path: `PATH ok` or `PATH errno N`.
const OPENER: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *p = argv[i];
        int fd;
        if (strncmp(p, "w:", 2) == 0) {
            p += 2;
            fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        } else {
            fd = open(p, O_RDONLY);
        }
        if (fd >= 0) {
            printf("%s ok\n", argv[i]);
            close(fd);
        } else {
            printf("%s errno %d\n", argv[i], errno);
        }
    }
    return 0;
}
"#;

struct Dirs {
    base: PathBuf,
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// base/root (with the program, a file and a writable directory) and
/// base/outside (a file); `None` (said) where cc -static is missing.
fn setup(tag: &str) -> Option<Dirs> {
    let base = std::env::temp_dir().join(format!("l4-confine-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("root/out")).unwrap();
    std::fs::create_dir_all(base.join("outside")).unwrap();
    std::fs::write(base.join("root/inside.txt"), "in\n").unwrap();
    std::fs::write(base.join("outside/secret.txt"), "secret\n").unwrap();
    let c = base.join("opener.c");
    std::fs::write(&c, OPENER).unwrap();
    let ok = Command::new("cc")
        .args(["-O1", "-static", "-o"])
        .arg(base.join("root/opener"))
        .arg(&c)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "cc -static failed in CI: install gcc and libc6-dev"
        );
        eprintln!("cc -static not available: test skipped");
        let _ = std::fs::remove_dir_all(&base);
        return None;
    }
    Some(Dirs { base })
}

fn run(root: &Path, opts: &[&str], args: &[String]) -> Output {
    Command::new(LOADER)
        .args(["run", "--no-prefetch-profile", "--root"])
        .arg(root)
        .args(opts)
        .arg("/opener")
        .args(args)
        .env_remove("L4FS_SOCKET")
        .output()
        .expect("start the loader")
}

fn lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether the loader can run programs here (userfaultfd).
fn runs_here(o: &Output) -> bool {
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && err.contains("userfaultfd") {
        eprintln!("no userfaultfd here ({err}): test skipped");
        return false;
    }
    true
}

#[test]
fn confined_program_reads_only_beneath_root_and_writes_only_where_allowed() {
    let Some(d) = setup("rw") else { return };
    let root = d.base.join("root");
    let inside = root.join("inside.txt").display().to_string();
    let outside = d.base.join("outside/secret.txt").display().to_string();
    let w_out = format!("w:{}", root.join("out/new.txt").display());
    let w_root = format!("w:{}", root.join("created.txt").display());
    let w_outside = format!("w:{}", d.base.join("outside/new.txt").display());
    let args = vec![
        inside.clone(),
        outside.clone(),
        w_out.clone(),
        w_root.clone(),
        w_outside.clone(),
        "/dev/null".into(),
    ];

    // Without the option, the program opens whatever the loader could.
    let plain = run(&root, &[], &args);
    if !runs_here(&plain) {
        return;
    }
    assert!(plain.status.success(), "{plain:?}");
    assert_eq!(
        lines(&plain),
        args.iter().map(|a| format!("{a} ok")).collect::<Vec<_>>(),
        "unconfined"
    );
    for f in ["out/new.txt", "created.txt"] {
        std::fs::remove_file(root.join(f)).unwrap();
    }
    std::fs::remove_file(d.base.join("outside/new.txt")).unwrap();

    // Confined: reads beneath the root, writes beneath --allow-write.
    let out_dir = root.join("out").display().to_string();
    let confined = run(&root, &["--confine", "--allow-write", &out_dir], &args);
    let err = String::from_utf8_lossy(&confined.stderr);
    if err.contains("UNCONFINED") {
        assert!(
            std::env::var_os("CI").is_none(),
            "no Landlock on the CI kernel: {err}"
        );
        eprintln!("this kernel has no Landlock ({err}): test skipped");
        return;
    }
    assert!(confined.status.success(), "{confined:?}");
    let eacces = libc_eacces();
    assert_eq!(
        lines(&confined),
        vec![
            format!("{inside} ok"),
            format!("{outside} errno {eacces}"),
            format!("{w_out} ok"),
            format!("{w_root} errno {eacces}"),
            format!("{w_outside} errno {eacces}"),
            "/dev/null ok".to_string(),
        ],
        "confined; stderr: {err}"
    );
    assert!(root.join("out/new.txt").exists());
    assert!(!root.join("created.txt").exists());
    assert!(!d.base.join("outside/new.txt").exists());
}

#[test]
fn a_missing_allowed_directory_is_named_and_nothing_runs() {
    let Some(d) = setup("missing") else { return };
    let root = d.base.join("root");
    let missing = d.base.join("no-such-dir").display().to_string();
    let marker = format!("w:{}", root.join("out/ran.txt").display());
    let o = run(&root, &["--allow-write", &missing], &[marker]);
    if !runs_here(&o) {
        return;
    }
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("UNCONFINED") {
        eprintln!("this kernel has no Landlock ({err}): test skipped");
        return;
    }
    assert!(!o.status.success(), "{o:?}");
    assert!(err.contains(&missing), "{err}");
    assert!(!root.join("out/ran.txt").exists(), "the program ran");
}

/// EACCES on Linux.
fn libc_eacces() -> i32 {
    13
}
