//! What became of each program, its fault statistics, and the TAP checks
//! of `ext-loader --tap`.
//!
//! A program argument may carry what the test expects of it:
//! `PATH=exit0` (exits with status 0, faulted fewer file pages than it has
//! loadable), `PATH=ok` (exits with status 0; for programs with attached
//! dataspaces, whose pages count as file pages too), `PATH=invalid@ADDR` (ended by an invalid access at `ADDR`
//! with a report naming the nearest region), `PATH=exception@TRAP` (ended
//! by an exception with this trap number), `PATH=refused` (not loaded).

use core::fmt;

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use l4pager::task::PagerStats;

/// The faults a loader served as a task's external pager, counted as the
/// internal pager counts its own ([`PagerStats`]: `copied` are pages
/// filled from the file, `zero` zero-filled ones, `invalid` faults not
/// resolved), plus the pages seen, to count refaults.
#[derive(Debug, Default, Clone)]
pub struct FaultStats {
    /// The counters.
    pub counts: PagerStats,
    /// Distinct pages mapped.
    pub pages: BTreeSet<u64>,
    /// Faults on a page that had been mapped already (a write after a
    /// read, say).
    pub refaults: u64,
    /// Pages of the file that the loadable segments cover.
    pub loadable_pages: u64,
}

impl FaultStats {
    /// A fresh record for a program with `loadable_pages` file pages.
    pub fn new(loadable_pages: u64) -> Self {
        FaultStats {
            loadable_pages,
            ..Default::default()
        }
    }

    /// Records a fault at `page` answered with a page filled from the
    /// file (`from_file`) or with zeros.
    pub fn record(&mut self, page: u64, from_file: bool) {
        self.counts.faults += 1;
        if from_file {
            self.counts.copied += 1;
        } else {
            self.counts.zero += 1;
        }
        if !self.pages.insert(page) {
            self.refaults += 1;
        }
    }

    /// Records a fault that was not resolved (an invalid access).
    pub fn record_invalid(&mut self) {
        self.counts.faults += 1;
        self.counts.invalid += 1;
    }

    /// One line: `faults N, pages M (file F, zero Z), loadable file pages L, refaults R`.
    pub fn line(&self) -> String {
        format!(
            "faults {}, pages {} (file {}, zero {}), loadable file pages {}, refaults {}",
            self.counts.faults,
            self.pages.len(),
            self.counts.copied,
            self.counts.zero,
            self.loadable_pages,
            self.refaults
        )
    }
}

/// What a test expects of a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Nothing (no checks).
    Nothing,
    /// Exit with status 0, having faulted fewer file pages than it has.
    Exit0,
    /// Exit with status 0 (no paging checks).
    Ok,
    /// Ended with a report of an invalid access at this address.
    Invalid(u64),
    /// Ended with a report of an exception with this trap number.
    Exception(u64),
    /// Refused by the loader.
    Refused,
}

/// Why a program argument's expectation ([`parse_arg`]) is not
/// understood; `Display` names the argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectError<'a> {
    /// `invalid@ADDR` with an address that is not hexadecimal.
    Address(&'a str, core::num::ParseIntError),
    /// `exception@TRAP` with a trap that is not a number.
    Trap(&'a str, core::num::ParseIntError),
    /// None of the expectations.
    Unknown(&'a str, &'a str),
}

impl fmt::Display for ExpectError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectError::Address(arg, e) => write!(f, "{arg}: bad address: {e}"),
            ExpectError::Trap(arg, e) => write!(f, "{arg}: bad trap: {e}"),
            ExpectError::Unknown(arg, want) => write!(f, "{arg}: unknown expectation {want:?}"),
        }
    }
}

/// Splits a program argument into its path and expectation.
pub fn parse_arg(arg: &str) -> Result<(&str, Expect), ExpectError<'_>> {
    let Some((path, want)) = arg.split_once('=') else {
        return Ok((arg, Expect::Nothing));
    };
    let expect = match want {
        "exit0" => Expect::Exit0,
        "ok" => Expect::Ok,
        "refused" => Expect::Refused,
        w => {
            if let Some(a) = w.strip_prefix("invalid@") {
                let a = a.strip_prefix("0x").unwrap_or(a);
                Expect::Invalid(
                    u64::from_str_radix(a, 16).map_err(|e| ExpectError::Address(arg, e))?,
                )
            } else if let Some(t) = w.strip_prefix("exception@") {
                Expect::Exception(t.parse().map_err(|e| ExpectError::Trap(arg, e))?)
            } else {
                return Err(ExpectError::Unknown(arg, w));
            }
        }
    };
    Ok((path, expect))
}

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Loaded and not ended (yet).
    Running,
    /// Not loaded, with the reason.
    Refused(String),
    /// Exited through its exit call with this status.
    Exited(u64),
    /// Ended by the loader (invalid access, exception) with this report.
    Ended(String),
}

/// One program's record.
#[derive(Debug, Clone)]
pub struct Record {
    /// The path in l4fs.
    pub path: String,
    /// What the test expects.
    pub expect: Expect,
    /// How it ended.
    pub end: End,
    /// The faults the loader served: the program's (external pager), or
    /// the internal pager's own.
    pub stats: FaultStats,
    /// Under an internal pager: what it reported for the program, and the
    /// program's loadable file pages.
    pub pager: Option<(PagerStats, u64)>,
}

/// The TAP checks of the records (without the `TAP TEST START`/`1..N`
/// frame): `(passed, description)`.
pub fn checks(records: &[Record]) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for r in records {
        let p = &r.path;
        match &r.expect {
            Expect::Nothing => {}
            Expect::Ok => out.push((
                r.end == End::Exited(0),
                format!("{p} exits with status 0 ({:?})", r.end),
            )),
            Expect::Exit0 => {
                out.push((
                    r.end == End::Exited(0),
                    format!("{p} exits with status 0 ({:?})", r.end),
                ));
                if let Some((ps, loadable)) = &r.pager {
                    let file = ps.shared_pages + ps.copied;
                    out.push((
                        file > 0 && file < *loadable,
                        format!(
                            "{p} is demand-paged by the internal pager: {file} file pages mapped of {loadable} loadable"
                        ),
                    ));
                    out.push((
                        ps.zero > 0 && ps.faults == ps.shared + ps.copied + ps.zero,
                        format!("{p}'s faults all resolved in its task: {}", ps.line()),
                    ));
                    let own = &r.stats.counts;
                    out.push((
                        own.faults > 0 && own.faults == own.copied + own.zero,
                        format!(
                            "the internal pager's own faults were served by the loader: {}",
                            r.stats.line()
                        ),
                    ));
                    continue;
                }
                let s = &r.stats;
                let c = &s.counts;
                out.push((
                    c.copied > 0 && c.copied < s.loadable_pages,
                    format!(
                        "{p} is demand-paged: {} file pages faulted of {} loadable",
                        c.copied, s.loadable_pages
                    ),
                ));
                out.push((
                    c.zero > 0 && c.faults == c.copied + c.zero,
                    format!("{p} got zero-filled pages: {}", s.line()),
                ));
            }
            Expect::Invalid(addr) => {
                let (ended, text) = match &r.end {
                    End::Ended(t) => (true, t.as_str()),
                    _ => (false, ""),
                };
                let by = if r.pager.is_some() {
                    "internal pager"
                } else {
                    "loader"
                };
                out.push((ended, format!("{p} is ended by the {by} ({:?})", r.end)));
                let want = format!("at {addr:#x} ");
                out.push((
                    text.contains(&want) && text.contains("region"),
                    format!("{p}'s report names the address {addr:#x} and the nearest region"),
                ));
            }
            Expect::Exception(trap) => {
                let want = format!("exception: trap {trap} ");
                out.push((
                    matches!(&r.end, End::Ended(t) if t.starts_with(&want)),
                    format!("{p} is ended after exception {trap} ({:?})", r.end),
                ));
            }
            Expect::Refused => {
                out.push((
                    matches!(r.end, End::Refused(_)),
                    format!("{p} is refused ({:?})", r.end),
                ));
            }
        }
    }
    out
}

/// The whole TAP block, one line each ([`l4re::tap::Tap`]).
pub fn tap_block(checks: &[(bool, String)]) -> Vec<String> {
    l4re::tap::Tap::from(checks.to_vec()).lines()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pages_and_refaults() {
        let mut s = FaultStats::new(10);
        s.record(0x1000, true);
        s.record(0x2000, false);
        s.record(0x1000, true);
        s.record_invalid();
        assert_eq!(s.counts.faults, 4);
        assert_eq!(s.pages.len(), 2);
        assert_eq!(s.refaults, 1);
        assert_eq!(
            s.line(),
            "faults 4, pages 2 (file 2, zero 1), loadable file pages 10, refaults 1"
        );
    }

    #[test]
    fn parses_expectations() {
        assert_eq!(parse_arg("bin/a").unwrap(), ("bin/a", Expect::Nothing));
        assert_eq!(parse_arg("bin/a=exit0").unwrap(), ("bin/a", Expect::Exit0));
        assert_eq!(parse_arg("bin/a=ok").unwrap(), ("bin/a", Expect::Ok));
        assert_eq!(
            parse_arg("bin/a=refused").unwrap(),
            ("bin/a", Expect::Refused)
        );
        assert_eq!(
            parse_arg("bin/a=invalid@0x10000000").unwrap(),
            ("bin/a", Expect::Invalid(0x1000_0000))
        );
        assert_eq!(
            parse_arg("bin/a=exception@6").unwrap(),
            ("bin/a", Expect::Exception(6))
        );
        assert!(parse_arg("bin/a=maybe").is_err());
        assert!(parse_arg("bin/a=invalid@zz").is_err());
    }

    #[test]
    fn judges_records() {
        let mut s = FaultStats::new(10);
        s.record(0x1000, true);
        s.record(0x2000, false);
        let recs = [
            Record {
                path: "a".into(),
                expect: Expect::Exit0,
                end: End::Exited(0),
                stats: s.clone(),
                pager: None,
            },
            Record {
                path: "b".into(),
                expect: Expect::Invalid(0x100),
                end: End::Ended(
                    "invalid read access at 0x100 (pc 0x1): no region there; nearest region x"
                        .into(),
                ),
                stats: FaultStats::new(1),
                pager: None,
            },
            Record {
                path: "c".into(),
                expect: Expect::Refused,
                end: End::Exited(0),
                stats: FaultStats::new(0),
                pager: None,
            },
        ];
        let c = checks(&recs);
        let passed: Vec<bool> = c.iter().map(|x| x.0).collect();
        assert_eq!(passed, [true, true, true, true, true, false]);
        let block = tap_block(&c);
        assert_eq!(block[0], "TAP TEST START");
        assert!(block[6].starts_with("not ok 6 - c is refused"));
        assert_eq!(block[7], "1..6");
    }

    #[test]
    fn judges_records_of_internal_pagers() {
        let mut own = FaultStats::new(30);
        own.record(0x6000_1000, true);
        own.record(0x6fdf_f000, false);
        let good = PagerStats {
            faults: 4,
            shared: 1,
            shared_pages: 8,
            copied: 1,
            zero: 2,
            ..PagerStats::default()
        };
        let rec = |pager: PagerStats, end: End| Record {
            path: "p".into(),
            expect: Expect::Exit0,
            end,
            stats: own.clone(),
            pager: Some((pager, 47)),
        };
        let all_ok = |r: &Record| checks(core::slice::from_ref(r)).iter().all(|c| c.0);
        assert!(all_ok(&rec(good, End::Exited(0))));
        // A fault resolved twice, or not at all, is caught.
        assert!(!all_ok(&rec(
            PagerStats { faults: 5, ..good },
            End::Exited(0)
        )));
        // Every file page mapped is not demand paging.
        assert!(!all_ok(&rec(
            PagerStats {
                shared_pages: 46,
                ..good
            },
            End::Exited(0)
        )));
        assert!(!all_ok(&rec(good, End::Exited(1))));
        let killed = Record {
            expect: Expect::Invalid(0x1000_0000),
            ..rec(
                good,
                End::Ended(
                    "invalid access: invalid read access at 0x10000000 (pc 0x401000): no region there; nearest region text".into(),
                ),
            )
        };
        assert!(all_ok(&killed));
    }
}
