//! Runs through the ready tasks of a running `loader serve` (issue 13):
//! real processes, real page faults. The client is `loader run` finding
//! the server (`--server`) and the small client `l4run`; each run must
//! see what the native run of the same program sees (arguments,
//! environment, working directory, stdin, status), the terminal's
//! signals sent to the client must reach the program, a client of
//! another user is refused, and the server's death is an error on the
//! client, never a hang.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, start_serve, status};

const PROG: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "wait")) {
        printf("pid=%d\n", getpid());
        fflush(stdout);
        for (;;) pause();
    }
    char cwd[4096] = "", line[256] = "";
    if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "?");
    if (!fgets(line, sizeof line, stdin)) strcpy(line, "(eof)\n");
    printf("argc=%d", argc);
    for (int i = 1; i < argc; i++) printf(" [%s]", argv[i]);
    mode_t m = umask(0);
    printf("\nenv=%s\ncwd=%s\nstdin=%sumask=%03o\n", getenv("L4_TEST_VAR"), cwd, line, m);
    fprintf(stderr, "to stderr\n");
    printf("pid=%d\n", getpid());
    const char *st = getenv("L4_TEST_STATUS");
    return st ? atoi(st) : 0;
}
"#;

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The test program, built with `cc -static`; `None` (skipped, said so)
/// without userfaultfd or a C compiler.
fn setup(name: &str) -> Option<(PathBuf, PathBuf)> {
    if !Path::new("/dev/userfaultfd").exists() && rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: loader serve needs root or /dev/userfaultfd");
        return None;
    }
    let dir = tmp(name);
    Some((common::build_static(&dir, "prog", PROG)?, dir))
}

/// The two clients: `loader run --server SOCK` and `l4run --server SOCK`.
fn clients(sock: &Path) -> Vec<(&'static str, Command)> {
    let mut a = Command::new(env!("CARGO_BIN_EXE_loader"));
    a.args(["run", "--server"]).arg(sock);
    let mut b = Command::new(env!("L4RUN_PATH"));
    b.arg("--server").arg(sock);
    vec![("loader run", a), ("l4run", b)]
}

/// Runs `cmd` with `stdin` written to it.
fn output_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut c = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    wait_output(c, Duration::from_secs(30))
}

/// The output of `c`, which must end within `limit`.
fn wait_output(mut c: Child, limit: Duration) -> Output {
    let t = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = c.kill();
            panic!("the client did not end within {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    c.wait_with_output().unwrap()
}

/// Without the `pid=` line (differs from run to run).
fn without_pid(s: &[u8]) -> String {
    String::from_utf8_lossy(s)
        .lines()
        .filter(|l| !l.starts_with("pid="))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn pid_of(s: &[u8]) -> u32 {
    String::from_utf8_lossy(s)
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.trim().parse().ok())
        .expect("a pid= line")
}

/// Stops the server (SIGTERM) and returns its standard error.
fn stop(server: KillOnDrop) -> String {
    let s = server.take();
    l4re::host::signal::kill(s.id() as i32, libc::SIGTERM).unwrap();
    let out = wait_output(s, Duration::from_secs(10));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_ready_task_runs_the_program_as_natively_and_a_replacement_the_next() {
    let Some((prog, dir)) = setup("ready-native") else {
        return;
    };
    let sock = dir.join("fs.sock");
    // One ready task, traced: the next run's task must be the replacement
    // forked after the first run, and reported ready before its request.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_loader"));
    let _ = std::fs::remove_file(&sock);
    let child = serve
        .args(["serve", "--ready", "1", "--socket"])
        .arg(&sock)
        .env("L4_TRACE", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let server = KillOnDrop::new(child);
    let t = Instant::now();
    while !sock.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket's permissions");
    let work = dir.join("work dir");
    std::fs::create_dir_all(&work).unwrap();
    let args = ["a", "b c", ""];
    let setup_cmd = |c: &mut Command| {
        c.args(args)
            .current_dir(&work)
            .env("L4_TEST_VAR", "xyz")
            .env("L4_TEST_STATUS", "3");
    };
    let mut native = Command::new(&prog);
    setup_cmd(&mut native);
    let native = output_with_stdin(native, b"a line from stdin\n");
    assert_eq!(status(&native), 3);
    assert!(
        String::from_utf8_lossy(&native.stdout).contains("stdin=a line from stdin"),
        "{native:?}"
    );
    let mut pids = Vec::new();
    for round in 0..2 {
        for (name, mut c) in clients(&sock) {
            c.arg(&prog).env("L4_TRACE", "1");
            setup_cmd(&mut c);
            let out = output_with_stdin(c, b"a line from stdin\n");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                without_pid(&out.stdout),
                without_pid(&native.stdout),
                "{name} #{round}: stdout (stderr: {err})"
            );
            assert_eq!(status(&out), 3, "{name} #{round}: status (stderr: {err})");
            assert!(
                err.contains("to stderr"),
                "{name}: the program's stderr: {err}"
            );
            // The task was ready: nothing forked on the request's path.
            assert!(
                err.contains("request taken by a ready task") && !err.contains("task-forked"),
                "{name} #{round}: not a ready task: {err}"
            );
            pids.push(pid_of(&out.stdout));
        }
    }
    let log = stop(server);
    for (i, p) in pids.iter().enumerate() {
        assert!(
            pids[..i].iter().all(|q| q != p),
            "a task ran two programs: {pids:?}"
        );
        assert!(
            log.contains(&format!("task {p} ready")),
            "task {p} was not a ready task of the server: {log}"
        );
    }
}

/// Starts the `wait` program through `client` and returns the running
/// client and the program's pid.
fn start_waiting(mut client: Command, prog: &Path) -> (Child, i32) {
    let mut c = client
        .arg(prog)
        .arg("wait")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line
        .trim()
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid: {line:?}"));
    (c, pid)
}

#[test]
fn signals_to_the_client_reach_the_program_and_a_kill_is_its_status() {
    let Some((prog, dir)) = setup("ready-signals") else {
        return;
    };
    let sock = dir.join("fs.sock");
    let _server = KillOnDrop::new(start_serve(&sock, &[]));
    for (name, c) in clients(&sock) {
        // SIGINT (a terminal's Ctrl-C) and SIGTERM to the client: the
        // program dies of it, the client exits with 128 + signal.
        for sig in [libc::SIGINT, libc::SIGTERM] {
            let (c2, pid) = start_waiting(clone_cmd(&c), &prog);
            l4re::host::signal::kill(c2.id() as i32, sig).unwrap();
            let out = wait_output(c2, Duration::from_secs(10));
            assert_eq!(status(&out), 128 + sig, "{name}: signal {sig}: {out:?}");
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.contains(") Z")),
                "{name}: the program still runs"
            );
        }
        // The program killed: 128 + 9.
        let (c2, pid) = start_waiting(clone_cmd(&c), &prog);
        l4re::host::signal::kill(pid, libc::SIGKILL).unwrap();
        let out = wait_output(c2, Duration::from_secs(10));
        assert_eq!(status(&out), 137, "{name}: killed program: {out:?}");
    }
}

/// A copy of `c`'s program and arguments.
fn clone_cmd(c: &Command) -> Command {
    let mut n = Command::new(c.get_program());
    n.args(c.get_args());
    n
}

#[test]
fn the_servers_death_is_an_error_on_the_client_not_a_hang() {
    let Some((prog, dir)) = setup("ready-death") else {
        return;
    };
    let sock = dir.join("fs.sock");
    for (name, c) in clients(&sock) {
        let mut server = KillOnDrop::new(start_serve(&sock, &[]));
        let (c2, pid) = start_waiting(c, &prog);
        server.child().kill().unwrap();
        let out = wait_output(c2, Duration::from_secs(10));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(status(&out), 0, "{name}: {err}");
        assert!(
            err.contains("ended during the run"),
            "{name}: no error on the client: {err}"
        );
        // The program went with the server.
        let t = Instant::now();
        while Path::new(&format!("/proc/{pid}/exe")).exists() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{name}: the program outlived its server"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_client_of_another_user_is_refused() {
    let Some((prog, dir)) = setup("ready-uid") else {
        return;
    };
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: switching to another uid needs root");
        return;
    }
    // Everyone may connect (so that the server's own check is what
    // refuses): --socket-mode 666, the directories searchable.
    let sock = dir.join("fs.sock");
    let _server = KillOnDrop::new(start_serve(
        &sock,
        &["--socket-mode".as_ref(), "666".as_ref()],
    ));
    for d in sock.ancestors().skip(1) {
        if let Ok(m) = std::fs::metadata(d) {
            use std::os::unix::fs::PermissionsExt;
            if m.permissions().mode() & 0o001 == 0 {
                eprintln!("skipped: {} is not searchable by others", d.display());
                return;
            }
        }
    }
    for (name, mut c) in clients(&sock) {
        c.arg(&prog).uid(65534).gid(65534);
        let mut out = String::new();
        let mut child = c
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(127), "{name}: {out}");
        assert!(
            out.contains("runs programs only for its own user") && out.contains("uid 65534"),
            "{name}: {out}"
        );
    }
}

/// The allowed CPUs (`Cpus_allowed_list`) of the thread named `name` of
/// process `pid`.
fn thread_cpus(pid: u32, name: &str) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .and_then(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
}

#[test]
fn a_confined_client_runs_its_program_inside_its_confinement() {
    // A client with no_new_privs (setpriv, util-linux) is confined beyond
    // the server: no ready task runs its program and the server's root
    // capability is not given to it; through L4FS_SOCKET it runs with a
    // server of its own (its program a child of the client, which `l4run`
    // became by executing `loader run`), naming the server explicitly is
    // an error that says why.
    let Some((_, dir)) = setup("ready-confined") else {
        return;
    };
    if Command::new("setpriv").arg("--help").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "setpriv (util-linux) missing in CI"
        );
        eprintln!("skipped: setpriv (util-linux) unavailable");
        return;
    }
    let Some(ppid) = common::build_static(
        &dir,
        "ppid",
        "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"%d\\n\", getppid()); return 0; }\n",
    ) else {
        return;
    };
    let sock = dir.join("s.sock");
    let server = KillOnDrop::new(start_serve(&sock, &[]));
    let run = |confined: bool, via_env: bool| {
        let mut c = Command::new(if confined { "setpriv" } else { "env" });
        if confined {
            c.arg("--no-new-privs");
        }
        c.arg(env!("L4RUN_PATH"));
        if via_env {
            c.env("L4FS_SOCKET", &sock);
        } else {
            c.arg("--server").arg(&sock);
        }
        let child = c
            .arg(&ppid)
            .env("L4_LOADER", env!("CARGO_BIN_EXE_loader"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        (pid, wait_output(child, Duration::from_secs(30)))
    };
    // Not confined: a ready task's runner is the program's parent.
    let (pid, o) = run(false, true);
    assert!(o.status.success(), "{o:?}");
    let parent: u32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_ne!(parent, pid, "a served run's program is the runner's child");
    // Confined, the server found through the environment: its own run.
    let (pid, o) = run(true, true);
    assert!(o.status.success(), "{o:?}");
    let parent: u32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(
        parent, pid,
        "the confined client's own loader is the parent"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refused: no capability for a confined client")
            && err.contains("no_new_privs")
            && err.contains("starting a file server of our own"),
        "{err}"
    );
    // Confined, the server named: an error.
    let (_, o) = run(true, false);
    assert_eq!(o.status.code(), Some(127), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refused: no capability for a confined client"),
        "{o:?}"
    );
    stop(server);
}

#[test]
fn a_served_program_inherits_its_clients_scheduling_signals_and_limits() {
    // The program runs in a task the server readied, under the server's
    // signal state and limits (its l4fs raises the descriptor limit): it
    // must see its client's, as if the client had executed it.
    let Some((_, dir)) = setup("ready-caller-state") else {
        return;
    };
    let Some((state, caller)) = common::caller_state_programs(&dir) else {
        return;
    };
    let native = Command::new(&caller).arg(&state).output().unwrap();
    let sock = dir.join("s.sock");
    let server = KillOnDrop::new(start_serve(&sock, &[]));
    for (name, client) in clients(&sock) {
        // The caller executes the client, as it would the program.
        let mut c = Command::new(&caller);
        c.arg(client.get_program())
            .args(client.get_args())
            .arg(&state);
        let o = output_with_stdin(c, b"");
        assert!(o.status.success(), "{name}: {o:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&native.stdout),
            "{name}"
        );
    }
    stop(server);
}

#[test]
fn a_run_moves_to_the_clients_cpu_and_its_program_gets_the_clients_cpus() {
    let Some((prog, dir)) = setup("ready-cpu") else {
        return;
    };
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: one CPU");
        return;
    }
    let sock = dir.join("s.sock");
    let mut server = KillOnDrop::new(start_serve(&sock, &[]));
    let pid = server.child().id();
    let before = thread_cpus(pid, "l4fs").expect("the server's l4fs thread");
    for cpu in ["1", "0"] {
        // The client on one CPU (taskset, util-linux): the run's calls to
        // the server's file thread are hand-offs on that CPU.
        let mut c = Command::new("taskset");
        c.args(["-c", cpu, env!("L4RUN_PATH"), "--server"])
            .arg(&sock)
            .arg(&prog);
        let o = output_with_stdin(c, b"x\n");
        assert!(o.status.success(), "{o:?}");
        assert_eq!(
            thread_cpus(pid, "l4fs").as_deref(),
            Some(cpu),
            "the l4fs thread after a client on CPU {cpu} (before the first run: {before})"
        );
        // The task's pager thread moves there too (the program's faults
        // and the task's end stay on that CPU); the program itself may
        // use every CPU the client may.
        let mut c = Command::new("taskset");
        c.args(["-c", cpu, env!("L4RUN_PATH"), "--server"])
            .arg(&sock)
            .arg(&prog)
            .arg("wait")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut run = KillOnDrop::new(c.spawn().unwrap());
        let mut line = String::new();
        std::io::BufReader::new(run.child().stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let task: u32 = line.trim().strip_prefix("pid=").unwrap().parse().unwrap();
        let pager = thread_cpus(task, "pager");
        let program = thread_cpus(task, "prog");
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(task as i32).unwrap(),
            rustix::process::Signal::TERM,
        );
        let _ = run.child().wait();
        assert_eq!(pager.as_deref(), Some(cpu), "the task's pager thread");
        assert_eq!(program.as_deref(), Some(cpu), "the program (taskset's CPU)");
    }
    stop(server);
}
