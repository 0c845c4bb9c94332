//! Issue 14, "Host reliability": what a hostile tester broke, each with
//! real processes — a file server killed under a running program, a
//! loader killed under its tasks, native execution of a running program,
//! `/proc/self/exe` of a loaded program, non-root use, forged control
//! messages.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const LOADER: &str = env!("CARGO_BIN_EXE_loader");

/// Prints "ready", sleeps (2 s, or 30 s given an argument), then reads 16
/// MiB of initialized data it never touched before.
const LATE: &str = r#"
#include <stdio.h>
#include <unistd.h>
#define SZ (16 << 20)
static unsigned char data[SZ] = { [0 ... SZ - 1] = 5 };
int main(int argc, char **argv) {
    printf("ready\n");
    fflush(stdout);
    sleep(argc > 1 ? 30 : 2);
    unsigned long s = 0;
    for (unsigned long i = 0; i < SZ; i += 4096) s += data[i];
    printf("sum %lu\n", s);
    return 0;
}
"#;

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Builds a static C program (gcc, libc6-dev); `None` without a compiler.
fn build(name: &str, src: &str) -> Option<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tmp().join("reliability");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    if exe.exists() {
        return Some(exe);
    }
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let part = dir.join(format!("{name}.part"));
    match Command::new("cc")
        .args(["-O1", "-static", "-o"])
        .arg(&part)
        .arg(&c)
        .status()
    {
        Ok(s) if s.success() => {
            std::fs::rename(&part, &exe).unwrap();
            Some(exe)
        }
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "cc -static failed in CI: install gcc and libc6-dev"
            );
            eprintln!("cc -static not available: test skipped");
            None
        }
    }
}

fn late() -> Option<&'static Path> {
    static P: OnceLock<Option<PathBuf>> = OnceLock::new();
    P.get_or_init(|| build("late", LATE)).as_deref()
}

/// The children of `pid` (from `/proc/*/stat`), with their command lines.
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(st) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(at) = st.rfind(')') else { continue };
        let ppid = st[at + 1..].split_whitespace().nth(1);
        if ppid.and_then(|v| v.parse::<u32>().ok()) == Some(pid) {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push((p, cmd));
        }
    }
    out
}

/// Whether `pid` no longer runs (gone, or a zombie waiting for its reaper).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(st) => st
            .rfind(')')
            .and_then(|at| st[at + 1..].split_whitespace().next())
            .is_some_and(|s| s == "Z" || s == "X"),
    }
}

fn wait_gone(pids: &[u32], within: Duration) -> Vec<u32> {
    let t = Instant::now();
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| !gone(*p)).collect();
        if left.is_empty() || t.elapsed() > within {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: u32, sig: i32) {
    let _ = l4re::host::signal::kill(pid as i32, sig);
}

/// Starts `loader run --pager MODE [EXTRA...] PROGRAM ARGS` with piped
/// output and waits until the program printed "ready"; returns the loader
/// and the rest of its standard output (a reader).
fn start_ready(
    mode: &str,
    extra: &[&std::ffi::OsStr],
    prog: &Path,
    args: &[&str],
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut c = Command::new(LOADER)
        .env_remove("L4FS_SOCKET")
        .args(["run", "--pager", mode])
        .args(extra)
        .arg(prog)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n", "{mode}: the program did not start");
    (c, out)
}

/// A `loader serve` on a fresh socket in `dir`, once it listens (killed
/// when dropped).
struct Served {
    child: Child,
    sock: PathBuf,
}

impl Served {
    fn start(dir: &Path, extra: &[&std::ffi::OsStr]) -> Served {
        std::fs::create_dir_all(dir).unwrap();
        let sock = dir.join("fs.sock");
        let child = common::start_serve(&sock, extra);
        Served { child, sock }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `c` at most `within`; `None` if it still runs (then killed).
fn wait_within(c: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < within {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

fn stderr_of(c: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = c.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Defect 1: SIGKILL of the file server while the program still needs
/// pages. Before: the program stopped at its next missing page, the
/// loader never ended, the pager spun. Now the faulting thread gets
/// SIGBUS (as for an unreadable page of a mapped file), the run ends at
/// once with a message naming the server and a non-zero status, and
/// nothing of it is left. (A one-shot run serves files from a thread of
/// the loader, which cannot die alone: the server killed is a `loader
/// serve` the run uses.)
#[test]
fn dead_file_server_ends_the_run() {
    let Some(prog) = late() else { return };
    for mode in ["internal", "external"] {
        // Without ready tasks: the run uses the server's capability, and
        // its pagers see the server die (a run by a ready task dies with
        // its server: tests/ready.rs).
        let server = Served::start(
            &tmp().join(format!("dead-server-{mode}")),
            &["--ready".as_ref(), "0".as_ref()],
        );
        let (mut c, _out) = start_ready(
            mode,
            &["--server".as_ref(), server.sock.as_os_str()],
            prog,
            &[],
        );
        let kids = children_of(c.id());
        assert_eq!(kids.len(), 1, "{mode}: the task alone: {kids:?}");
        kill(server.child.id(), libc::SIGKILL);
        let t = Instant::now();
        // The program sleeps 2 s, then faults on pages the server never
        // loaded.
        let st = wait_within(&mut c, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{mode}: the run did not end 10 s after the kill"));
        let took = t.elapsed();
        let err = stderr_of(&mut c);
        eprintln!("{mode}: ended {took:?} after the kill (the program sleeps 2 s): {st}");
        assert!(!st.success(), "{mode}: status {st}");
        assert!(
            err.contains("the filesystem server is gone") && err.contains("died during the run"),
            "{mode}: message: {err}"
        );
        let left = wait_gone(
            &kids.iter().map(|k| k.0).collect::<Vec<_>>(),
            Duration::from_secs(2),
        );
        assert!(left.is_empty(), "{mode}: left running: {left:?}");
    }
}

/// Defect 2: SIGKILL or SIGTERM of the loader. Before: the file server
/// lived on, holding the caller's standard output. Now both tasks die with
/// the loader (SIGTERM is forwarded to the program, which ends the run
/// with 143), and a caller reading the output sees its end at once.
#[test]
fn killed_loader_takes_its_tasks_along() {
    let Some(prog) = late() else { return };
    for sig in [libc::SIGKILL, libc::SIGTERM] {
        for mode in ["internal", "external"] {
            let (mut c, mut out) = start_ready(mode, &[], prog, &["30"]);
            let kids: Vec<u32> = children_of(c.id()).iter().map(|k| k.0).collect();
            assert_eq!(
                kids.len(),
                1,
                "{mode}: the task (the file server is a thread)"
            );
            kill(c.id(), sig);
            let t = Instant::now();
            let st = wait_within(&mut c, Duration::from_secs(5)).expect("the loader ended");
            if sig == libc::SIGTERM {
                assert_eq!(
                    st.code(),
                    Some(143),
                    "{mode}: SIGTERM: the program's status"
                );
            }
            let left = wait_gone(&kids, Duration::from_secs(3));
            assert!(
                left.is_empty(),
                "signal {sig} {mode}: left running: {left:?}"
            );
            // The caller's pipe: at its end now (nobody holds it).
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut rest = String::new();
                let _ = out.read_to_string(&mut rest);
                let _ = tx.send(rest);
            });
            rx.recv_timeout(Duration::from_secs(3))
                .expect("standard output still held open after the loader died");
            eprintln!(
                "signal {sig} {mode}: all gone {:?} after the signal",
                t.elapsed()
            );
        }
    }
}

/// Defect 3: while a program runs under the loader, the same file can be
/// executed natively. Before, as root, the server held it open read-write
/// and `execve` failed with ETXTBSY ("Text file busy").
#[test]
fn running_program_can_be_executed_natively() {
    let Some(prog) = late() else { return };
    // A copy of our own, so that no other test's run interferes.
    let copy = tmp().join("reliability").join("late-copy");
    std::fs::copy(prog, &copy).unwrap();
    for mode in ["internal", "external"] {
        let (mut c, _out) = start_ready(mode, &[], &copy, &["30"]);
        // The program still runs (sleeping) under the loader; executing it
        // natively must work. (It prints "ready" and sleeps: kill it.)
        let n = Command::new(&copy).arg("30").stdout(Stdio::piped()).spawn();
        if n.is_err() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut n = n.unwrap_or_else(|e| panic!("{mode}: native exec of a running program: {e}"));
        let mut line = String::new();
        BufReader::new(n.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        let _ = n.kill();
        let _ = n.wait();
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Defect 8: a missing `--root` directory is named in the error.
#[test]
fn missing_root_is_named() {
    let o = Command::new(LOADER)
        .args(["run", "--root", "/nonexistent-root-dir-14", "/x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("/nonexistent-root-dir-14") && err.contains("No such file"),
        "{err}"
    );
}

/// A hostile program: writes forged records into the task's statistics
/// page, or forged FORK messages onto every socket it has (the control
/// channel among them).
const FORGE: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "fork")) {
        int p[2];
        if (pipe(p)) return 2;
        DIR *d = opendir("/proc/self/fd");
        struct dirent *e;
        int sent = 0;
        while ((e = readdir(d))) {
            int fd = atoi(e->d_name);
            struct stat st;
            if (e->d_name[0] == '.' || fstat(fd, &st) || !S_ISSOCK(st.st_mode)) continue;
            char buf[4] = {5, 0, 0, 0}; /* FORK */
            struct iovec iov = {buf, 4};
            char cbuf[CMSG_SPACE(sizeof(int))];
            struct msghdr m = {0};
            m.msg_iov = &iov; m.msg_iovlen = 1;
            m.msg_control = cbuf; m.msg_controllen = sizeof cbuf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &p[0], sizeof(int));
            if (sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT) == 4) sent++;
        }
        printf("sent %d\n", sent > 0);
        return 0;
    }
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned long *c = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "l4task-stats")) c = (unsigned long *)strtoul(line, 0, 16);
    if (!c) { printf("no statistics page\n"); return 3; }
    unsigned long here = (unsigned long)main;
    if (!strcmp(what, "crash")) {
        /* A "fault" on a readable text page. */
        c[47] = SIGSEGV; c[48] = 1; c[49] = here; c[50] = here; c[51] = 4;
        raise(SIGSEGV);
    } else if (!strcmp(what, "pager")) {
        c[52] = here + 1; c[53] = 0;
        raise(SIGSEGV);
    } else if (!strcmp(what, "lost")) {
        c[56] = here + 1;
        raise(SIGBUS);
    }
    return 4;
}
"#;

/// Defect 8: forged control messages and crash records. Before: a forged
/// FORK (a pipe for a userfaultfd) made the loader serve it forever — the
/// run never ended; forged records were printed as the loader's report.
/// Now a FORK is accepted only from a task with fork events, with one
/// descriptor that is a userfaultfd, and a service ends on any answer of a
/// dead or foreign descriptor; records are checked against the signal, the
/// server's state and the loader's own region map.
#[test]
fn forged_control_messages_and_records_are_not_believed() {
    let Some(prog) = build("forge", FORGE) else {
        return;
    };
    for mode in ["internal", "external"] {
        let mut c = Command::new(LOADER)
            .args(["run", "--pager", mode])
            .arg(&prog)
            .arg("fork")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let st = wait_within(&mut c, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{mode}: a forged FORK hangs the loader"));
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let err = stderr_of(&mut c);
        assert_eq!(out, "sent 1\n", "{mode}: {err}");
        assert_eq!(st.code(), Some(0), "{mode}: {err}");
        assert!(err.contains("ignored a FORK"), "{mode}: {err}");
        for (what, sig) in [("crash", 11), ("pager", 11), ("lost", 7)] {
            let o = Command::new(LOADER)
                .args(["run", "--pager", mode])
                .arg(&prog)
                .arg(what)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(128 + sig), "{mode} {what}: {err}");
            assert!(
                !err.contains("invalid read access") && !err.contains("server is gone"),
                "{mode} {what}: a forged record reported as fact: {err}"
            );
            assert!(
                err.contains("not trusted") || err.contains("forged"),
                "{mode} {what}: {err}"
            );
        }
    }
}

/// Defect 4: `/proc/self/exe` names the program, not the stub. busybox sh
/// runs applets by executing `/proc/self/exe`: before, under the loader,
/// `sleep`, `cat`, `wc` returned 2 and `grep`, `sed`, `tr` 127 with the
/// stub's usage message. (Needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE,
/// which the stub checks; skipped without.)
#[test]
fn busybox_applets_through_proc_self_exe_equal_native() {
    let bb = "/bin/busybox";
    if !Path::new(bb).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "busybox-static missing in CI"
        );
        eprintln!("{bb} not installed (busybox-static): skipped");
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: /proc/self/exe cannot be changed (CAP_CHECKPOINT_RESTORE): skipped");
        return;
    }
    let f = tmp().join("reliability-applets.txt");
    std::fs::write(&f, "one\ntwo\nthree\n").unwrap();
    let script = format!(
        "readlink /proc/self/exe; sleep 0; echo sleep $?; cat {f}; wc -l {f}; grep -n t {f}; \
         sed s/o/0/g {f}; echo abc | tr a-z A-Z; echo end",
        f = f.display()
    );
    let native = Command::new(bb)
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    assert!(native.status.success());
    for mode in ["internal", "external"] {
        let l = Command::new(LOADER)
            .args(["run", "--pager", mode, bb, "sh", "-c", &script])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&l.stdout),
            String::from_utf8_lossy(&native.stdout),
            "{mode}: stdout (stderr: {})",
            String::from_utf8_lossy(&l.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&l.stderr),
            String::from_utf8_lossy(&native.stderr),
            "{mode}: stderr"
        );
        assert_eq!(l.status.code(), native.status.code(), "{mode}: status");
    }
}

/// Restores a file's content (a sysctl) or mode when dropped.
struct Restore {
    path: &'static str,
    content: Option<String>,
    mode: Option<u32>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(c) = &self.content {
            let _ = std::fs::write(self.path, c);
        }
        if let Some(m) = self.mode {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(self.path, std::fs::Permissions::from_mode(m));
        }
    }
}

/// Defect 5: the two ways the loader's message offers an unprivileged
/// user, as user nobody (`setpriv --reuid=65534`): read-write access to
/// `/dev/userfaultfd` (before: the ioctl number was wrong, EINVAL), and
/// `vm.unprivileged_userfaultfd=1` (before: the features the kernel offers
/// were taken as enabled, and the internal pager failed at its fork
/// barrier). Both pager modes; the stub says forks are not paged (fork
/// events need CAP_SYS_PTRACE). The machine's settings are restored.
/// Needs root (to change them) and setpriv; skipped otherwise.
#[test]
fn unprivileged_user_runs_programs() {
    let bb = "/bin/busybox";
    let root = rustix::process::geteuid().is_root();
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !root || !setpriv || !Path::new(bb).exists() || !Path::new("/dev/userfaultfd").exists() {
        eprintln!("needs root, setpriv, {bb} and /dev/userfaultfd: skipped");
        return;
    }
    // The binary must be reachable by nobody.
    let run = |mode: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", LOADER])
            .args(["run", "--pager", mode, bb, "echo", "hi"])
            .output()
            .unwrap()
    };
    let probe = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            LOADER,
            "check",
            bb,
        ])
        .output()
        .unwrap();
    if !probe.status.success() {
        eprintln!("user nobody cannot run {LOADER}: skipped");
        return;
    }
    const SYSCTL: &str = "/proc/sys/vm/unprivileged_userfaultfd";
    let old = std::fs::read_to_string(SYSCTL).unwrap();
    let _sysctl = Restore {
        path: SYSCTL,
        content: Some(old),
        mode: None,
    };
    use std::os::unix::fs::PermissionsExt;
    let dev_mode = std::fs::metadata("/dev/userfaultfd")
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    let _dev = Restore {
        path: "/dev/userfaultfd",
        content: None,
        mode: Some(dev_mode),
    };
    let set_dev = |m: u32| {
        std::fs::set_permissions("/dev/userfaultfd", std::fs::Permissions::from_mode(m)).unwrap()
    };
    for (way, sysctl, dev) in [
        ("/dev/userfaultfd", "0", 0o666),
        ("vm.unprivileged_userfaultfd=1", "1", 0o600),
    ] {
        std::fs::write(SYSCTL, sysctl).unwrap();
        set_dev(dev);
        for mode in ["internal", "external"] {
            let o = run(mode);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                "hi\n",
                "{way} {mode}: {err}"
            );
            assert_eq!(o.status.code(), Some(0), "{way} {mode}: {err}");
            assert!(err.contains("forks are not paged"), "{way} {mode}: {err}");
        }
    }
    // Neither: the message says what to change.
    std::fs::write(SYSCTL, "0").unwrap();
    set_dev(0o600);
    let o = run("internal");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        err.contains("vm.unprivileged_userfaultfd=1") && err.contains("/dev/userfaultfd"),
        "{err}"
    );
}
