//! `ext-loader`'s command line: options, programs, and what each program
//! gets attached besides its own file.
//!
//! ```text
//! ext-loader [--tap] [--sequential]
//!            ([--inpager=PATH | --external] [--l4re] [--arg=ARG]... [--cap=NAME]... [--attach=SOURCE@ADDR[:rw]]... PROGRAM)...
//! ```
//!
//! * `--tap` prints the checks of the run as TAP ([`super::check`]);
//! * `--sequential` starts each program only when the one before it has
//!   ended (otherwise all start at once);
//! * `--inpager=PATH` runs the programs after it under the internal pager
//!   loaded from PATH; `--external` the programs after it under the
//!   external pager again (the default);
//! * `--attach=SOURCE@ADDR[:rw]` attaches a dataspace into the address
//!   space of the *next* program, at `ADDR` (hexadecimal, page-aligned),
//!   read-only or, with `:rw`, read-write, shared with every other holder
//!   of the dataspace (no private copy). SOURCE is `rom:NAME` (a boot
//!   module from the namespace `"rom"`), `fs:PATH` (a file of l4fs) or
//!   `cap:NAME` (a dataspace capability the loader was given under NAME).
//!   Needs the internal pager: the external pager hands out copies.
//! * `--l4re` runs the next program, an ordinary L4Re program (L4Re's
//!   libc, `crt0`), as ned would, with an L4Re environment (memory
//!   allocator, factory, scheduler, log, the namespace `fs` it was loaded
//!   from); its exit status comes back through `L4Re::Parent`. With
//!   `--inpager` the internal pager starts as L4Re's in-task pager in the
//!   task (`loader::in_task`; static, static-pie and dynamically linked
//!   programs) with the gate `"server"` made here; without it the loader
//!   is the program's pager and region map (static programs);
//! * `--arg=ARG` adds ARG to the next program's arguments (after its name;
//!   `--l4re` programs only);
//! * `--cap=NAME` hands the loader's own initial capability NAME on to the
//!   next program under the same name (`--l4re` programs only);
//! * PROGRAM is a path in l4fs, with an optional expectation
//!   ([`super::check::parse_arg`]).

use alloc::vec::Vec;
use core::fmt;
use core::num::ParseIntError;

use super::check::{Expect, ExpectError, parse_arg};

/// Why a command line is refused; `Display` gives the message the loader
/// prints, naming the argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionError<'a> {
    /// `--attach=VALUE` is malformed.
    Attach(&'a str, AttachError),
    /// `--cap=NAME` with an empty name or one longer than 16 characters
    /// (the whole argument).
    CapName(&'a str),
    /// An option that does not exist.
    Unknown(&'a str),
    /// A program with `--attach` but under the external pager (its path).
    AttachNeedsInpager(&'a str),
    /// A program with `--arg` or `--cap` but without `--l4re` (its path).
    ArgsNeedL4re(&'a str),
    /// `--attach`, `--l4re`, `--arg` or `--cap` with no program after it.
    AfterLastProgram,
    /// A program argument whose expectation is not understood.
    Expect(ExpectError<'a>),
}

/// What is wrong with an `--attach` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// No `@ADDR`.
    NoPlace,
    /// The address is not hexadecimal.
    Address(ParseIntError),
    /// The address is 0 or not page-aligned.
    Unaligned,
    /// The source has no `KIND:`, or an unknown kind.
    Source,
    /// The source's name is empty.
    EmptyName,
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::NoPlace => f.write_str("expected SOURCE@ADDR[:rw]"),
            AttachError::Address(e) => write!(f, "address: {e}"),
            AttachError::Unaligned => f.write_str("the address must be page-aligned and not 0"),
            AttachError::Source => f.write_str("SOURCE is rom:NAME, fs:PATH or cap:NAME"),
            AttachError::EmptyName => f.write_str("empty name"),
        }
    }
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::Attach(value, why) => write!(f, "--attach={value}: {why}"),
            OptionError::CapName(arg) => {
                write!(f, "{arg}: a capability name has 1 to 16 characters")
            }
            OptionError::Unknown(arg) => write!(f, "{arg}: unknown option"),
            OptionError::AttachNeedsInpager(path) => write!(
                f,
                "{path}: --attach needs --inpager (the external pager hands out copies, which cannot be shared)"
            ),
            OptionError::ArgsNeedL4re(path) => {
                write!(f, "{path}: --arg and --cap are for --l4re programs")
            }
            OptionError::AfterLastProgram => {
                f.write_str("--attach, --l4re, --arg or --cap after the last program")
            }
            OptionError::Expect(e) => e.fmt(f),
        }
    }
}

impl<'a> From<ExpectError<'a>> for OptionError<'a> {
    fn from(e: ExpectError<'a>) -> Self {
        OptionError::Expect(e)
    }
}

/// Where an attached dataspace comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A boot module, looked up in the namespace `"rom"`.
    Rom(&'a str),
    /// A file of l4fs.
    Fs(&'a str),
    /// A capability of the loader's initial environment.
    Cap(&'a str),
}

impl core::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Source::Rom(n) => write!(f, "rom:{n}"),
            Source::Fs(p) => write!(f, "fs:{p}"),
            Source::Cap(n) => write!(f, "cap:{n}"),
        }
    }
}

/// A dataspace to attach into a program's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attach<'a> {
    /// The dataspace.
    pub source: Source<'a>,
    /// Where the region starts (page-aligned).
    pub addr: u64,
    /// Read-write (else read-only).
    pub writable: bool,
}

/// One program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job<'a> {
    /// Its path in l4fs.
    pub path: &'a str,
    /// What a test expects of it.
    pub expect: Expect,
    /// The internal pager's path, or `None` for the external pager.
    pub inpager: Option<&'a str>,
    /// Dataspaces attached besides its own file.
    pub attach: Vec<Attach<'a>>,
    /// An ordinary L4Re program, started by the internal pager as L4Re's
    /// in-task pager.
    pub l4re: bool,
    /// Its arguments after its name.
    pub args: Vec<&'a str>,
    /// The loader's capabilities it gets, by name.
    pub caps: Vec<&'a str>,
}

/// The whole command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options<'a> {
    /// Print TAP checks at the end.
    pub tap: bool,
    /// One program at a time.
    pub sequential: bool,
    /// The programs, in order.
    pub jobs: Vec<Job<'a>>,
}

/// Parses `--attach`'s value: `SOURCE@ADDR[:rw]`.
pub fn parse_attach(value: &str) -> Result<Attach<'_>, OptionError<'_>> {
    let bad = |why| OptionError::Attach(value, why);
    let (source, place) = value.rsplit_once('@').ok_or(bad(AttachError::NoPlace))?;
    let (addr, writable) = match place.strip_suffix(":rw") {
        Some(a) => (a, true),
        None => (place, false),
    };
    let digits = addr.strip_prefix("0x").unwrap_or(addr);
    let addr = u64::from_str_radix(digits, 16).map_err(|e| bad(AttachError::Address(e)))?;
    if addr == 0 || addr % 4096 != 0 {
        return Err(bad(AttachError::Unaligned));
    }
    let (kind, name) = source.split_once(':').ok_or(bad(AttachError::Source))?;
    if name.is_empty() {
        return Err(bad(AttachError::EmptyName));
    }
    let source = match kind {
        "rom" => Source::Rom(name),
        "fs" => Source::Fs(name),
        "cap" => Source::Cap(name),
        _ => return Err(bad(AttachError::Source)),
    };
    Ok(Attach {
        source,
        addr,
        writable,
    })
}

/// Parses the arguments after the program name.
pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Options<'a>, OptionError<'a>> {
    let mut options = Options::default();
    let mut inpager = None;
    let mut attach = Vec::new();
    let mut l4re = false;
    let mut prog_args = Vec::new();
    let mut caps = Vec::new();
    for arg in args {
        if arg == "--tap" {
            options.tap = true;
        } else if arg == "--sequential" {
            options.sequential = true;
        } else if let Some(p) = arg.strip_prefix("--inpager=") {
            inpager = Some(p);
        } else if arg == "--external" {
            inpager = None;
        } else if let Some(a) = arg.strip_prefix("--attach=") {
            attach.push(parse_attach(a)?);
        } else if arg == "--l4re" {
            l4re = true;
        } else if let Some(a) = arg.strip_prefix("--arg=") {
            prog_args.push(a);
        } else if let Some(c) = arg.strip_prefix("--cap=") {
            if c.is_empty() || c.len() > 16 {
                return Err(OptionError::CapName(arg));
            }
            caps.push(c);
        } else if arg.starts_with("--") {
            return Err(OptionError::Unknown(arg));
        } else {
            let (path, expect) = parse_arg(arg)?;
            if !attach.is_empty() && inpager.is_none() {
                return Err(OptionError::AttachNeedsInpager(path));
            }
            if !l4re && (!prog_args.is_empty() || !caps.is_empty()) {
                return Err(OptionError::ArgsNeedL4re(path));
            }
            options.jobs.push(Job {
                path,
                expect,
                inpager,
                attach: core::mem::take(&mut attach),
                l4re: core::mem::take(&mut l4re),
                args: core::mem::take(&mut prog_args),
                caps: core::mem::take(&mut caps),
            });
        }
    }
    if !attach.is_empty() || l4re || !prog_args.is_empty() || !caps.is_empty() {
        return Err(OptionError::AfterLastProgram);
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_attach() {
        assert_eq!(
            parse_attach("rom:pf-bench.data@0x10000000").unwrap(),
            Attach {
                source: Source::Rom("pf-bench.data"),
                addr: 0x1000_0000,
                writable: false
            }
        );
        assert_eq!(
            parse_attach("fs:/data/shared@20001000:rw").unwrap(),
            Attach {
                source: Source::Fs("/data/shared"),
                addr: 0x2000_1000,
                writable: true
            }
        );
        assert_eq!(
            parse_attach("cap:bench@0x30000000:rw").unwrap().source,
            Source::Cap("bench")
        );
        for bad in [
            "rom:x",
            "rom:x@0x1001",
            "rom:x@0",
            "rom:x@zz",
            "disk:x@0x1000",
            "rom:@0x1000",
            "x@0x1000",
        ] {
            let e = parse_attach(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--attach={bad}: ")), "{e}");
        }
    }

    #[test]
    fn messages_name_the_argument() {
        let msg = |args: &[&str]| parse(args.iter().copied()).unwrap_err().to_string();
        for (args, want) in [
            (
                &["--attach=rom:x@0x1001"][..],
                "--attach=rom:x@0x1001: the address must be page-aligned and not 0",
            ),
            (
                &["--attach=rom:x"],
                "--attach=rom:x: expected SOURCE@ADDR[:rw]",
            ),
            (
                &["--cap=abcdefghijklmnopq"],
                "--cap=abcdefghijklmnopq: a capability name has 1 to 16 characters",
            ),
            (
                &["bin/a=maybe"],
                "bin/a=maybe: unknown expectation \"maybe\"",
            ),
            (
                &["--l4re"],
                "--attach, --l4re, --arg or --cap after the last program",
            ),
        ] {
            assert_eq!(msg(args), want);
        }
        assert!(msg(&["bin/a=invalid@zz"]).starts_with("bin/a=invalid@zz: bad address: "));
        assert!(msg(&["bin/a=exception@x"]).starts_with("bin/a=exception@x: bad trap: "));
    }

    #[test]
    fn attaches_go_to_the_next_program() {
        let o = parse([
            "--tap",
            "--sequential",
            "bin/a=exit0",
            "--inpager=bin/inpager",
            "--attach=cap:bench@0x30000000:rw",
            "bin/b",
            "bin/c=refused",
        ])
        .unwrap();
        assert!(o.tap && o.sequential);
        assert_eq!(o.jobs.len(), 3);
        assert_eq!(
            (o.jobs[0].inpager, o.jobs[0].expect.clone()),
            (None, Expect::Exit0)
        );
        assert_eq!(o.jobs[1].inpager, Some("bin/inpager"));
        assert_eq!(o.jobs[1].attach.len(), 1);
        assert!(o.jobs[2].attach.is_empty());
        assert_eq!(o.jobs[2].inpager, Some("bin/inpager"));
    }

    #[test]
    fn refuses_what_cannot_work() {
        let e = parse(["--attach=rom:x@0x1000", "bin/a"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--attach needs --inpager"), "{e}");
        let e = parse(["--inpager=p", "bin/a", "--attach=rom:x@0x1000"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("after the last program"), "{e}");
        assert_eq!(
            parse(["--verbose"]).unwrap_err().to_string(),
            "--verbose: unknown option"
        );
        assert!(parse(["bin/a=maybe"]).is_err());
    }

    #[test]
    fn l4re_programs_get_their_arguments_and_capabilities() {
        let o = parse([
            "--inpager=bin/inpager",
            "--l4re",
            "--arg=-v",
            "--arg=two words",
            "--cap=rom",
            "bin/hello",
            "bin/pagetest",
        ])
        .unwrap();
        assert!(o.jobs[0].l4re);
        assert_eq!(o.jobs[0].args, ["-v", "two words"]);
        assert_eq!(o.jobs[0].caps, ["rom"]);
        // Each applies to the next program only.
        assert!(!o.jobs[1].l4re && o.jobs[1].args.is_empty() && o.jobs[1].caps.is_empty());
        // Without --inpager, or after --external: the external pager.
        let o = parse(["--l4re", "bin/hello"]).unwrap();
        assert!(o.jobs[0].l4re && o.jobs[0].inpager.is_none());
        let o = parse(["--inpager=p", "a", "--external", "b"]).unwrap();
        assert_eq!(o.jobs[0].inpager, Some("p"));
        assert_eq!(o.jobs[1].inpager, None);
        assert!(
            parse(["--inpager=x", "--arg=1", "bin/p"])
                .unwrap_err()
                .to_string()
                .contains("for --l4re programs")
        );
        assert!(parse(["--inpager=x", "--cap=", "--l4re", "p"]).is_err());
        assert!(parse(["--inpager=x", "p", "--l4re"]).is_err());
    }
}
