//! What the loader's integration tests share: comparing a run under the
//! loader with the native run of the same program, starting `loader
//! serve`. (Each test file uses a part of it.)
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Starts `loader serve --socket sock` with `extra` arguments, its
/// standard error piped, and waits (up to 10 s) until it listens.
pub fn start_serve(sock: &Path, extra: &[&OsStr]) -> Child {
    let _ = std::fs::remove_file(sock);
    let child = Command::new(env!("CARGO_BIN_EXE_loader"))
        .args(["serve", "--socket"])
        .arg(sock)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sock.exists(), "loader serve did not listen on {sock:?}");
    child
}

/// A child process (a `loader serve`) killed and reaped when dropped
/// unless taken back first, so that a failing assertion does not leave
/// it running.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        KillOnDrop(Some(child))
    }

    /// The child.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not taken")
    }

    /// The child, no longer killed on drop.
    pub fn take(mut self) -> Child {
        self.0.take().expect("not taken")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The exit status as a shell reports it (128 + signal for a signal).
pub fn status(o: &Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    o.status
        .code()
        .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0))
}

/// Asserts that `loaded` printed and returned exactly what `native` did.
pub fn assert_same_as_native(what: &str, loaded: &Output, native: &Output) {
    assert_eq!(
        String::from_utf8_lossy(&loaded.stdout),
        String::from_utf8_lossy(&native.stdout),
        "{what}: stdout"
    );
    assert_eq!(
        String::from_utf8_lossy(&loaded.stderr),
        String::from_utf8_lossy(&native.stderr),
        "{what}: stderr"
    );
    assert_eq!(status(loaded), status(native), "{what}: status");
}

/// Prints what a program inherits of its caller across `execve` besides
/// its arguments and environment: its scheduling policy and nice value,
/// the signals it ignores and its mask (`SigIgn`, `SigBlk` of
/// `/proc/self/status`) and its resource limits.
const CALLER_STATE: &str = r#"
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
int main(void) {
    printf("policy %d nice %d\n", sched_getscheduler(0), getpriority(PRIO_PROCESS, 0));
    char l[256];
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(l, sizeof l, f))
        if (!strncmp(l, "SigIgn", 6) || !strncmp(l, "SigBlk", 6)) fputs(l, stdout);
    for (int r = 0; r < RLIM_NLIMITS; r++) {
        struct rlimit lim;
        if (!getrlimit(r, &lim))
            printf("limit %d: %llu %llu\n", r, (unsigned long long)lim.rlim_cur,
                   (unsigned long long)lim.rlim_max);
    }
    return 0;
}
"#;

/// Runs as SCHED_BATCH at nice 7, ignores SIGINT, SIGPIPE and SIGUSR2,
/// blocks SIGUSR1 and SIGRTMIN+3, lowers its descriptor limit to 100 and
/// its core size limit to 0, then executes `argv[1]` with the rest of its
/// arguments.
const CALLER: &str = r#"
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct sched_param p = {0};
    sched_setscheduler(0, SCHED_BATCH, &p);
    setpriority(PRIO_PROCESS, 0, 7);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, SIGRTMIN + 3);
    sigprocmask(SIG_BLOCK, &s, 0);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = 100;
    setrlimit(RLIMIT_NOFILE, &lim);
    getrlimit(RLIMIT_CORE, &lim);
    lim.rlim_cur = 0;
    setrlimit(RLIMIT_CORE, &lim);
    if (argc < 2) return 2;
    execv(argv[1], argv + 1);
    return 127;
}
"#;

/// Builds, in `dir`, a program that prints what it inherited of its
/// caller's state (signals, limits) and a caller that executes a command
/// with some signals ignored, some blocked and two limits lowered:
/// `(state, caller)`, or `None` without `cc -static` (an error in CI).
pub fn caller_state_programs(dir: &Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    Some((
        build_static(dir, "callerstate", CALLER_STATE)?,
        build_static(dir, "caller", CALLER)?,
    ))
}

/// Builds the C program `src` as `dir/name` with `cc -static -O2`;
/// `None` (the test is skipped, and says so) without a C compiler and a
/// static C library, which is an error in CI.
pub fn build_static(dir: &Path, name: &str, src: &str) -> Option<std::path::PathBuf> {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).ok()?;
    let p = dir.join(name);
    let built = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&p)
        .arg(&c)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "cc -static missing in CI: install gcc and libc6-dev"
        );
        eprintln!("skipped: cc -static unavailable (install gcc and libc6-dev)");
        return None;
    }
    Some(p)
}
