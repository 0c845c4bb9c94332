//! Test Anything Protocol output in the form L4Re's test harness reads: a
//! block between `TAP TEST START` and `TAP TEST FINISH` lines, the plan
//! (`1..N`) after the results (TAP allows it there; the count is known
//! only then). Every Rust test program of the project prints its checks
//! through this.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Collects test results and prints them as one TAP block.
#[derive(Default)]
pub struct Tap {
    results: Vec<(bool, String)>,
}

impl Tap {
    /// No results yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one test.
    pub fn ok(&mut self, passed: bool, name: &str) {
        self.results.push((passed, name.into()));
    }

    /// Records a test whose outcome is `got == want`; the values are shown
    /// when they differ.
    pub fn eq<T: PartialEq + core::fmt::Debug>(&mut self, name: &str, got: T, want: T) {
        if got == want {
            self.ok(true, name);
        } else {
            self.ok(false, &format!("{name} (got {got:?}, want {want:?})"));
        }
    }

    /// Whether every test so far passed.
    pub fn all_passed(&self) -> bool {
        self.results.iter().all(|r| r.0)
    }

    /// The number of tests recorded.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Whether no test was recorded.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// The TAP block, one line per element.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.results.len() + 3);
        out.push("TAP TEST START".into());
        for (i, (passed, name)) in self.results.iter().enumerate() {
            let word = if *passed { "ok" } else { "not ok" };
            out.push(format!("{word} {} - {name}", i + 1));
        }
        out.push(format!("1..{}", self.results.len()));
        out.push("TAP TEST FINISH".into());
        out
    }
}

impl From<Vec<(bool, String)>> for Tap {
    fn from(results: Vec<(bool, String)>) -> Self {
        Tap { results }
    }
}

#[cfg(all(test, feature = "host"))]
mod tests {
    #[test]
    fn block_format() {
        let mut t = super::Tap::new();
        t.ok(true, "a");
        t.eq("b", 1, 2);
        assert_eq!(
            t.lines(),
            [
                "TAP TEST START",
                "ok 1 - a",
                "not ok 2 - b (got 1, want 2)",
                "1..2",
                "TAP TEST FINISH"
            ]
        );
        assert!(!t.all_passed());
    }
}
