//! Runs real static programs under the loader, in both pager modes, and
//! compares them with native runs: standard output, standard error and exit
//! status must be equal; statistics must show demand paging; invalid
//! accesses must end the task with a report while another task completes;
//! bad ELF files must be refused clearly.
//!
//! The C programs are built here with `cc -static` / `cc -static-pie`
//! (gcc and libc6-dev).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod common;

const LOADER: &str = env!("CARGO_BIN_EXE_loader");

const HELLO: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    printf("hello, %d args:", argc - 1);
    for (int i = 1; i < argc; i++) printf(" [%s]", argv[i]);
    printf("\nHOME_TEST=%s\n", getenv("HOME_TEST") ? getenv("HOME_TEST") : "(unset)");
    fprintf(stderr, "this goes to stderr\n");
    char *p = malloc(1 << 20);
    memset(p, 7, 1 << 20);
    printf("heap ok %d\n", p[12345]);
    return 3;
}
"#;

const THREADS: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#define N 4
static long data[N][200000];
static void *work(void *arg) {
    long k = (long)arg, s = 0;
    for (long i = 0; i < 200000; i++) { data[k][i] = i * (k + 1); s += data[k][i]; }
    return (void *)s;
}
int main(void) {
    pthread_t t[N];
    for (long k = 0; k < N; k++) pthread_create(&t[k], 0, work, (void *)k);
    long total = 0;
    for (int k = 0; k < N; k++) { void *r; pthread_join(t[k], &r); total += (long)r; }
    printf("threads total %ld\n", total);
    return 0;
}
"#;

/// Prints the CPUs it may run on (a one-shot `loader run` pins its start
/// to one CPU: the program must get them all back).
const AFFINITY: &str = r#"
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
int main(void) {
    cpu_set_t s;
    if (sched_getaffinity(0, sizeof s, &s)) return 1;
    printf("cpus:");
    for (int i = 0; i < CPU_SETSIZE; i++) if (CPU_ISSET(i, &s)) printf(" %d", i);
    printf("\n");
    return 0;
}
"#;

const FORK: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
static int table[100000] = {1, 2, 3};
int main(void) {
    table[99999] = 42;
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        long s = 0;
        for (int i = 0; i < 100000; i++) s += table[i];
        printf("child sum %ld\n", s);
        fflush(stdout);
        _exit(7);
    }
    int st;
    waitpid(p, &st, 0);
    printf("parent: child exited %d\n", WEXITSTATUS(st));
    return 0;
}
"#;

/// A parent that leaves at once (status 3) after forking a chain of
/// `argv[1]` children, each leaving after forking the next; the last one
/// waits until its parent is gone, then touches text, data, read-only data
/// and bss pages nobody touched before and prints checksums of them — or,
/// given more arguments, executes `argv[2]` with the rest.
const ORPHAN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <time.h>
#define SZ (1 << 20)
static unsigned char data[SZ] = { [0 ... SZ - 1] = 5 };
static const unsigned char ro[SZ] = { [0 ... SZ - 1] = 7 };
static unsigned char bss[SZ];
extern char __executable_start[], etext[];
static unsigned long sum(const unsigned char *p, unsigned long n) {
    unsigned long s = 0;
    for (unsigned long i = 0; i < n; i++) s = s * 31 + p[i];
    return s;
}
static void wait_orphaned(pid_t parent) {
    for (int i = 0; i < 10000 && getppid() == parent; i++) {
        struct timespec t = {0, 1000000};
        nanosleep(&t, 0);
    }
}
int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 1;
    printf("parent %d\n", data[0] + ro[0]);
    fflush(stdout);
    for (int level = 1; level <= depth; level++) {
        pid_t me = getpid();
        pid_t c = fork();
        if (c < 0) { perror("fork"); return 1; }
        if (c > 0) return level == 1 ? 3 : 0;
        wait_orphaned(me);
        printf("level %d\n", level);
        fflush(stdout);
    }
    if (argc > 2) {
        execv(argv[2], argv + 2);
        perror("execv");
        return 1;
    }
    for (unsigned long i = 0; i < SZ; i += 4096) bss[i] = (unsigned char)(i >> 12);
    printf("text %lx\n", sum((const unsigned char *)__executable_start, etext - __executable_start));
    printf("data %lx\n", sum(data, SZ));
    printf("ro %lx\n", sum(ro, SZ));
    printf("bss %lx\n", sum(bss, SZ));
    return 0;
}
"#;

/// The main thread ends with the plain `exit` system call (not
/// exit_group); it is the process's first thread, as natively.
const PLAIN_EXIT: &str = r#"
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    printf("main thread: tid %s pid\n", getpid() == syscall(SYS_gettid) ? "==" : "!=");
    fflush(stdout);
    syscall(SYS_exit, 5);
    return 1;
}
"#;

/// Without a C library: works a while, then its only thread ends with
/// the plain `exit` system call, status 7 (the task ends when the
/// kernel clears the leader's `clear_child_tid`, which no C library
/// replaced).
const BARE_EXIT: &str = r#"
void _start(void) {
    for (volatile unsigned long i = 0; i < 20000000; i++) {}
    __asm__ volatile("mov $60, %eax\n mov $7, %edi\n syscall");
}
"#;

const BIG: &str = r#"
#include <stdio.h>
static char bss[64 << 20];
static const unsigned char ro[4 << 20] = {1, [(4 << 20) - 1] = 9};
static unsigned char rw[2 << 20] = {5, [(2 << 20) - 1] = 6};
int main(void) {
    long s = 0;
    for (long i = 0; i < sizeof bss; i += 4096) { bss[i] = (char)i; s += bss[i]; }
    s += ro[0] + ro[sizeof ro - 1] + rw[0] + rw[sizeof rw - 1];
    rw[12345] = 1;
    printf("big sum %ld\n", s);
    return 0;
}
"#;

const SHARED_WRITE: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ftruncate(fd, 8192) < 0) { perror("open"); return 1; }
    char *m = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    strcpy(m + 4096, "written through a shared mapping");
    msync(m, 8192, MS_SYNC);
    munmap(m, 8192);
    close(fd);
    puts("done");
    return 0;
}
"#;

const SIGNALS: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static volatile int got;
static void h(int s) { got = s; }
int main(void) {
    signal(SIGUSR1, h);
    raise(SIGUSR1);
    printf("got signal %d\n", got);
    signal(SIGPIPE, SIG_DFL);
    int p[2]; pipe(p); close(p[0]);
    write(p[1], "x", 1); /* SIGPIPE: default action kills */
    puts("not reached");
    return 0;
}
"#;

const STREAM: &str = r#"
#include <stdio.h>
#define SZ (8 << 20)
static const unsigned char ro[SZ] = { [0 ... SZ - 1] = 3 };
int main(void) {
    unsigned long s = 0;
    for (int pass = 0; pass < 3; pass++)
        for (long i = 0; i < SZ; i += 512) s += ro[i];
    printf("stream sum %lu\n", s);
    return 0;
}
"#;

const NULL_WRITE: &str = "int main(void) { *(volatile int *)0 = 1; return 0; }";
const WRITE_CODE: &str = "int main(void) { *(volatile char *)(void *)main = 0; return 0; }";
const JUMP_DATA: &str = r#"
static unsigned char code[64] = {0xc3};
int main(void) { ((void (*)(void))code)(); return 0; }
"#;
const PAST_REGION: &str = r#"
extern char _end[];
int main(void) { return *(volatile char *)(_end + (256 << 20)); }
"#;

struct Built {
    dir: PathBuf,
}

/// Builds every program once (static and static-pie variants).
fn built() -> Option<&'static Built> {
    static B: OnceLock<Option<Built>> = OnceLock::new();
    B.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("l4loader-progs");
        std::fs::create_dir_all(&dir).ok()?;
        let progs = [
            ("hello", HELLO, ""),
            ("threads", THREADS, "-pthread"),
            ("fork", FORK, ""),
            ("affinity", AFFINITY, ""),
            ("orphan", ORPHAN, ""),
            ("plainexit", PLAIN_EXIT, ""),
            ("bareexit", BARE_EXIT, "-nostdlib"),
            ("big", BIG, ""),
            ("sharedwrite", SHARED_WRITE, ""),
            ("signals", SIGNALS, ""),
            ("stream", STREAM, ""),
            ("nullwrite", NULL_WRITE, ""),
            ("writecode", WRITE_CODE, ""),
            ("jumpdata", JUMP_DATA, ""),
            ("pastregion", PAST_REGION, ""),
        ];
        for (name, src, extra) in progs {
            let c = dir.join(format!("{name}.c"));
            std::fs::write(&c, src).ok()?;
            for (suffix, flag) in [("", "-static"), ("-pie", "-static-pie")] {
                let out = dir.join(format!("{name}{suffix}"));
                let mut cmd = Command::new("cc");
                cmd.args(["-O1", "-w", flag]);
                if !extra.is_empty() {
                    cmd.arg(extra);
                }
                cmd.arg("-o").arg(&out).arg(&c);
                let st = cmd.output().ok()?;
                if !st.status.success() {
                    eprintln!("cc {name}: {}", String::from_utf8_lossy(&st.stderr));
                    return None;
                }
            }
        }
        // A copy for tests that only load it (l4fs opens host files
        // read-write when it may, and a file open for writing cannot be
        // executed natively: keep native and loaded runs of one file apart).
        for (from, to) in [
            ("hello", "hello-beside"),
            ("hello", "hello-exec"),
            ("orphan-pie", "orphan-chain"),
            ("orphan", "orphan-exec"),
            ("orphan-pie", "orphan-exec-pie"),
            ("orphan", "orphan-revoke"),
        ] {
            std::fs::copy(dir.join(from), dir.join(to)).ok()?;
        }
        Some(Built { dir })
    })
    .as_ref()
}

fn prog(name: &str) -> Option<PathBuf> {
    match built() {
        Some(b) => Some(b.dir.join(name)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "cc -static missing in CI: install gcc and libc6-dev"
            );
            eprintln!("cc -static unavailable (install gcc and libc6-dev): test skipped");
            None
        }
    }
}

fn native(p: &Path, args: &[&str]) -> Output {
    Command::new(p)
        .args(args)
        .env("HOME_TEST", "native-and-loaded")
        .output()
        .expect("native run")
}

fn loaded(mode: &str, stats: Option<&Path>, p: &Path, args: &[&str]) -> Output {
    loaded_with(mode, &[], stats, p, args)
}

/// `p` under the loader in `mode`, demand paged, with `extra` options.
fn loaded_with(
    mode: &str,
    extra: &[&str],
    stats: Option<&Path>,
    p: &Path,
    args: &[&str],
) -> Output {
    let mut c = Command::new(LOADER);
    c.args([
        "run",
        "--no-prefetch-profile",
        "--premap-pages",
        "0",
        "--pager",
        mode,
    ]);
    c.args(extra);
    if let Some(s) = stats {
        c.arg("--stats").arg(s);
    }
    c.arg(p)
        .args(args)
        .env("HOME_TEST", "native-and-loaded")
        .output()
        .expect("loader run")
}

/// The status as a shell reports it: the exit code, or 128 + signal.
fn shell_status(o: &Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    o.status
        .code()
        .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0))
}

fn stat(json: &str, key: &str) -> u64 {
    let k = format!("\"{key}\":");
    let at = json
        .find(&k)
        .unwrap_or_else(|| panic!("{key} missing in {json}"))
        + k.len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Runs `name` natively and under both pagers: stdout, stderr and status
/// must be equal. Returns the statistics of each loaded run (demand paging:
/// learned prefetch and premapping off; tests/images.rs tests them).
fn same_as_native(name: &str, args: &[&str]) -> Vec<String> {
    let Some(p) = prog(name) else {
        return Vec::new();
    };
    let n = native(&p, args);
    let mut all = Vec::new();
    for mode in ["internal", "external"] {
        let stats = p.with_extension(format!("{mode}.{}.json", std::process::id()));
        let l = loaded(mode, Some(&stats), &p, args);
        let what = format!("{name} ({mode} pager)");
        assert_eq!(
            String::from_utf8_lossy(&l.stdout),
            String::from_utf8_lossy(&n.stdout),
            "{what}: stdout (status {:?}, stderr {})",
            l.status,
            String::from_utf8_lossy(&l.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&l.stderr),
            String::from_utf8_lossy(&n.stderr),
            "{what}: stderr"
        );
        assert_eq!(l.status.code(), Some(shell_status(&n)), "{what}: status");
        let json = std::fs::read_to_string(&stats).expect("statistics written");
        let touched = stat(&json, "file_pages_touched");
        let loadable = stat(&json, "file_pages_loadable");
        assert!(
            touched > 0 && touched < loadable,
            "{what}: {touched} of {loadable} file pages touched"
        );
        assert!(stat(&json, "total") > 0, "{what}: faults were served");
        let _ = std::fs::remove_file(&stats);
        all.push(json);
    }
    all
}

#[test]
fn hello_static_and_pie_equal_native() {
    same_as_native("hello", &["one", "two words"]);
    same_as_native("hello-pie", &["x"]);
}

#[test]
fn program_may_use_the_cpus_it_would_natively() {
    same_as_native("affinity", &[]);
}

#[test]
fn the_program_inherits_its_callers_scheduling_signals_and_limits() {
    // As across execve: ignored signals stay ignored, the mask is kept,
    // and so are the resource limits (the loader's runtime ignores
    // SIGPIPE and blocks signals of its own, its file server raises the
    // descriptor limit: the program sees its caller's state, not the
    // loader's).
    let Some(b) = built() else {
        return;
    };
    let Some((state, caller)) = common::caller_state_programs(&b.dir) else {
        return;
    };
    let native = Command::new(&caller).arg(&state).output().unwrap();
    let text = String::from_utf8_lossy(&native.stdout).into_owned();
    let word = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    // What the caller set (on top of what this test's process passed on).
    assert_eq!(word("SigIgn:") & 0x1802, 0x1802, "native: {text}");
    assert_eq!(
        word("SigBlk:") & 0x10_0000_0200,
        0x10_0000_0200,
        "native: {text}"
    );
    assert!(
        text.contains("limit 7: 100 ") && text.contains("limit 4: 0 "),
        "native: {text}"
    );
    assert!(text.contains("policy 3 nice 7"), "native: {text}");
    for mode in ["internal", "external"] {
        let l = Command::new(&caller)
            .args([LOADER, "run", "--no-prefetch-profile", "--pager", mode])
            .arg(&state)
            .output()
            .unwrap();
        assert!(l.status.success(), "{mode}: {l:?}");
        assert_eq!(String::from_utf8_lossy(&l.stdout), text, "{mode}");
    }
}

#[test]
fn threaded_program_equal_native() {
    same_as_native("threads", &[]);
    same_as_native("threads-pie", &[]);
}

#[test]
fn forking_program_equal_native() {
    same_as_native("fork", &[]);
    same_as_native("fork-pie", &[]);
}

#[test]
fn orphaned_child_is_still_paged_equal_native() {
    // The child touches pages nobody touched before, after its parent
    // (the task) has ended: the loader serves it; its checksums are the
    // native ones, the loader's status is the parent's (3).
    for name in ["orphan", "orphan-pie"] {
        for json in same_as_native(name, &[]) {
            assert_eq!(stat(&json, "forks"), 1, "{name}: {json}");
            assert!(stat(&json, "child_faults") > 100, "{name}: {json}");
            assert!(
                stat(&json, "child_file_pages_touched") > 100,
                "{name}: {json}"
            );
        }
    }
}

#[test]
fn fork_chain_equal_native() {
    // Parent → child → grandchild → …, each leaving at once after its
    // fork; the last one pages in what it touches after all are gone.
    for json in same_as_native("orphan-chain", &["4"]) {
        assert_eq!(stat(&json, "forks"), 4, "{json}");
        assert!(stat(&json, "child_faults") > 100, "{json}");
    }
}

#[test]
fn orphaned_child_that_execs_equal_native() {
    // A paged child that calls execve is an ordinary process from then on.
    let Some(hello) = prog("hello-exec") else {
        return;
    };
    same_as_native(
        "orphan-exec",
        &["2", hello.to_str().unwrap(), "exec'd", "by a child"],
    );
    if Path::new("/bin/busybox").exists() {
        same_as_native(
            "orphan-exec-pie",
            &[
                "1",
                "/bin/busybox",
                "sh",
                "-c",
                "echo exec ok; echo $((6 * 7))",
            ],
        );
    }
}

#[test]
fn orphaned_child_refaults_revoked_pages() {
    // With a filesystem pool of 64 frames the server punches pages (its
    // own code's among them) while the orphaned child reads 2 MiB of file
    // data: they come back MISSING and are mapped again; the output is the
    // native one.
    let Some(p) = prog("orphan-revoke") else {
        return;
    };
    let n = native(&p, &[]);
    for mode in ["internal", "external"] {
        let stats = p.with_extension(format!("{mode}.json"));
        let l = loaded_with(mode, &["--fs-pool-pages", "64"], Some(&stats), &p, &[]);
        assert_eq!(
            String::from_utf8_lossy(&l.stdout),
            String::from_utf8_lossy(&n.stdout),
            "{mode}"
        );
        assert_eq!(l.status.code(), Some(3), "{mode}: {l:?}");
        let json = std::fs::read_to_string(&stats).unwrap();
        assert!(stat(&json, "child_faults") > 100, "{mode}: {json}");
        if mode == "internal" {
            // More missing faults than distinct pages: revoked pages came
            // back. (The external pager answers from its own copies.)
            let touched =
                stat(&json, "file_pages_touched") + stat(&json, "child_file_pages_touched");
            assert!(stat(&json, "missing") > touched, "{json}");
        }
    }
}

#[test]
fn large_arrays_equal_native() {
    same_as_native("big", &[]);
}

#[test]
fn signals_equal_native() {
    same_as_native("signals", &[]);
}

#[test]
fn shared_file_write_reaches_the_file() {
    let Some(p) = prog("sharedwrite") else { return };
    for mode in ["internal", "external"] {
        let f = p.with_extension(format!("{mode}.data"));
        let _ = std::fs::remove_file(&f);
        let l = loaded(mode, None, &p, &[f.to_str().unwrap()]);
        assert!(l.status.success(), "{mode}: {l:?}");
        let data = std::fs::read(&f).unwrap();
        assert_eq!(&data[4096..4096 + 32], b"written through a shared mapping");
    }
}

#[test]
fn invalid_accesses_end_the_task_with_a_report_others_complete() {
    let Some(hello) = prog("hello-beside") else {
        return;
    };
    for (name, access) in [
        ("nullwrite", "invalid write access at 0x0"),
        ("writecode", "invalid write access"),
        ("jumpdata", "invalid execute access"),
        ("pastregion", "invalid read access"),
    ] {
        for mode in ["internal", "external"] {
            let p = prog(name).unwrap();
            // A second task beside it completes normally.
            let other = {
                let h = hello.clone();
                std::thread::spawn(move || loaded(mode, None, &h, &["beside"]))
            };
            let l = loaded(mode, None, &p, &[]);
            let err = String::from_utf8_lossy(&l.stderr);
            assert_eq!(l.status.code(), Some(128 + 11), "{name} {mode}: {err}");
            assert!(err.contains("killed by SIGSEGV"), "{name} {mode}: {err}");
            assert!(err.contains(access), "{name} {mode}: {err}");
            assert!(err.contains("pc 0x"), "{name} {mode}: {err}");
            assert!(err.contains("region"), "{name} {mode}: {err}");
            let o = other.join().unwrap();
            assert_eq!(o.status.code(), Some(3), "the other task completed");
            assert!(String::from_utf8_lossy(&o.stdout).contains("[beside]"));
        }
    }
}

#[test]
fn bad_elf_files_refused_clearly() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("l4loader-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let good = loader::demo::image();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("text", b"#!/bin/sh\necho hi\n".to_vec(), "not an ELF file"),
        ("truncated", good[..50].to_vec(), "truncated"),
    ];
    let mut m = good.clone();
    m[18] = 183;
    cases.push(("arm", m, "wrong architecture"));
    let mut m = good.clone();
    m[24..32].copy_from_slice(&0x44_1000u64.to_le_bytes());
    cases.push(("entry", m, "bad entry point"));
    let mut m = good.clone();
    // Second segment moved onto the first.
    m[64 + 56 + 16..64 + 56 + 24].copy_from_slice(&0x40_1000u64.to_le_bytes());
    m[64 + 56 + 8..64 + 56 + 16].copy_from_slice(&0x1000u64.to_le_bytes());
    cases.push(("overlap", m, "overlapping segments"));
    let mut m = good.clone();
    m[64 + 40..64 + 48].copy_from_slice(&(1u64 << 52).to_le_bytes());
    cases.push(("absurd", m, "absurd size"));
    for (name, bytes, msg) in &cases {
        let f = dir.join(name);
        std::fs::write(&f, bytes).unwrap();
        let l = loaded("internal", None, &f, &[]);
        let err = String::from_utf8_lossy(&l.stderr);
        assert_eq!(l.status.code(), Some(127), "{name}: {err}");
        assert!(err.contains(msg), "{name}: {err}");
    }
    if let Some(h) = prog("hello") {
        // A dynamically linked program.
        let dynamic = dir.join("dynamic");
        let st = Command::new("cc")
            .arg("-o")
            .arg(&dynamic)
            .arg(h.with_file_name("hello.c"))
            .status()
            .unwrap();
        assert!(st.success());
        let l = loaded("internal", None, &dynamic, &[]);
        let err = String::from_utf8_lossy(&l.stderr);
        assert_eq!(l.status.code(), Some(127));
        assert!(
            err.contains("dynamically linked") && err.contains("ld-linux"),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_runs_in_both_modes() {
    for mode in ["internal", "external"] {
        let demo = |fault_around: &str| {
            let o = Command::new(LOADER)
                .args(["demo", "--pager", mode, "--fault-around", fault_around])
                .output()
                .unwrap();
            assert!(o.status.success(), "{o:?}");
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(out.starts_with(std::str::from_utf8(loader::demo::MESSAGE).unwrap()));
            let json = out.lines().nth(1).unwrap().to_string();
            assert_eq!(stat(&json, "file_pages_loadable"), 66);
            assert_eq!(stat(&json, "zero_filled_pages"), 16);
            json
        };
        // Without fault-around each page the demo uses is a fault of its
        // own: 6 file pages (5 of text, 1 of data), nothing mapped ahead.
        let json = demo("0");
        assert_eq!(stat(&json, "file_pages_touched"), 6, "{mode}: {json}");
        assert_eq!(stat(&json, "prefetched"), 0, "{mode}: {json}");
        let faults = stat(&json, "total");
        // With it (the default, 16 pages), text pages are mapped around
        // the faults: never more faults, and the pages it maps around
        // are counted as such.
        let json = demo("16");
        assert!(stat(&json, "file_pages_touched") <= 6, "{mode}: {json}");
        assert!(stat(&json, "total") <= faults, "{mode}: {json}");
        assert!(stat(&json, "prefetched") > 0, "{mode}: {json}");
    }
}

#[test]
fn prefetch_maps_pages_ahead() {
    let Some(p) = prog("hello-beside") else {
        return;
    };
    let stats = p.with_extension("prefetch.json");
    let o = Command::new(LOADER)
        .args([
            "run",
            "--no-prefetch-profile",
            "--prefetch",
            "16",
            "--stats",
        ])
        .arg(&stats)
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let json = std::fs::read_to_string(&stats).unwrap();
    assert!(stat(&json, "prefetched") >= 8, "{json}");
}

#[test]
fn plain_exit_of_the_last_thread_ends_the_task() {
    // The demo ending with the thread-exit system call (60), not
    // exit_group: the task must still end.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("l4loader-exit");
    std::fs::create_dir_all(&dir).unwrap();
    let mut img = loader::demo::image();
    let at = img
        .windows(5)
        .position(|w| w == [0xb8, 231, 0, 0, 0])
        .expect("exit_group in the demo");
    img[at + 1] = 60;
    let f = dir.join("plain-exit");
    std::fs::write(&f, img).unwrap();
    let t = std::time::Instant::now();
    let o = Command::new(LOADER).arg("run").arg(&f).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(t.elapsed().as_secs() < 30);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("hello from the loader's demo"));
}

#[test]
fn plain_exit_status_is_the_programs() {
    // The program's main thread is the task's first thread (gettid() ==
    // getpid()); when it ends with the plain exit system call as the last
    // thread of the program, its status is the task's.
    same_as_native("plainexit", &[]);
    same_as_native("plainexit-pie", &[]);
    // Without a C library (no clear_child_tid of its own): the watcher
    // hears of the leader's end from the kernel.
    for name in ["bareexit", "bareexit-pie"] {
        let Some(p) = prog(name) else { return };
        assert_eq!(native(&p, &[]).status.code(), Some(7), "{name} natively");
        for mode in ["internal", "external"] {
            let l = loaded(mode, None, &p, &[]);
            assert_eq!(l.status.code(), Some(7), "{name} ({mode} pager): {l:?}");
        }
    }
}

#[test]
fn server_revocations_are_honoured() {
    // An 8 MiB program read three times while the filesystem server has a
    // pool of 256 frames (1 MiB): it must evict (punch) pages the task has
    // mapped; the task faults them back in. The output is the native one.
    let Some(p) = prog("stream") else { return };
    let n = native(&p, &[]);
    let stats = p.with_extension("revoke.json");
    let l = Command::new(LOADER)
        .args([
            "run",
            "--no-prefetch-profile",
            "--fs-pool-pages",
            "256",
            "--stats",
        ])
        .arg(&stats)
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&l.stdout),
        String::from_utf8_lossy(&n.stdout)
    );
    assert!(l.status.success(), "{l:?}");
    let json = std::fs::read_to_string(&stats).unwrap();
    let touched = stat(&json, "file_pages_touched");
    let missing = stat(&json, "missing");
    // More missing faults than distinct pages: revoked pages came back.
    assert!(
        missing > touched + 100,
        "missing {missing}, touched {touched}: {json}"
    );
}

#[test]
fn relative_program_name_resolves_like_execve() {
    let Some(p) = prog("hello-beside") else {
        return;
    };
    let dir = p.parent().unwrap();
    let l = Command::new(LOADER)
        .current_dir(dir)
        .args(["run", "./hello-beside", "rel"])
        .output()
        .unwrap();
    assert_eq!(l.status.code(), Some(3), "{l:?}");
    assert!(String::from_utf8_lossy(&l.stdout).contains("[rel]"));
}
