//! Test Anything Protocol output in the form L4Re's test harness reads: a
//! block between `TAP TEST START` and `TAP TEST FINISH` lines.

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

    /// The TAP block, one line per element.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.results.len() + 3);
        out.push("TAP TEST START".into());
        out.push(format!("1..{}", self.results.len()));
        for (i, (passed, name)) in self.results.iter().enumerate() {
            let word = if *passed { "ok" } else { "not ok" };
            out.push(format!("{word} {} - {name}", i + 1));
        }
        out.push("TAP TEST FINISH".into());
        out
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
                "1..2",
                "ok 1 - a",
                "not ok 2 - b (got 1, want 2)",
                "TAP TEST FINISH"
            ]
        );
        assert!(!t.all_passed());
    }
}
