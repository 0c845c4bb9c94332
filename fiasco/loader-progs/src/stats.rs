//! Fault statistics of one loaded program.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;

/// How a fault was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// A copy of a page of the program file (part of it may be zeros).
    File,
    /// A zero-filled page (bss, stack).
    Zero,
}

/// Counters of one program's faults.
#[derive(Debug, Default, Clone)]
pub struct FaultStats {
    /// Page-fault IPCs received.
    pub faults: u64,
    /// Faults answered with a copy of a file page.
    pub file_pages: u64,
    /// Faults answered with a zero-filled page.
    pub zero_pages: u64,
    /// Faults on a page that had been mapped already (a second fault on
    /// the same page, e.g. a write after a read).
    pub refaults: u64,
    /// Distinct pages mapped.
    pub pages: BTreeSet<u64>,
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

    /// Records a fault at `page` resolved as `how`.
    pub fn record(&mut self, page: u64, how: Resolved) {
        self.faults += 1;
        match how {
            Resolved::File => self.file_pages += 1,
            Resolved::Zero => self.zero_pages += 1,
        }
        if !self.pages.insert(page) {
            self.refaults += 1;
        }
    }

    /// Records a fault that was not resolved (an invalid access).
    pub fn record_invalid(&mut self) {
        self.faults += 1;
    }

    /// One line: `faults N, pages M (file F, zero Z), loadable file pages L, refaults R`.
    pub fn line(&self) -> String {
        format!(
            "faults {}, pages {} (file {}, zero {}), loadable file pages {}, refaults {}",
            self.faults,
            self.pages.len(),
            self.file_pages,
            self.zero_pages,
            self.loadable_pages,
            self.refaults
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pages_and_refaults() {
        let mut s = FaultStats::new(10);
        s.record(0x1000, Resolved::File);
        s.record(0x2000, Resolved::Zero);
        s.record(0x1000, Resolved::File);
        s.record_invalid();
        assert_eq!(s.faults, 4);
        assert_eq!(s.pages.len(), 2);
        assert_eq!(s.refaults, 1);
        assert_eq!(
            s.line(),
            "faults 4, pages 2 (file 2, zero 1), loadable file pages 10, refaults 1"
        );
    }
}
