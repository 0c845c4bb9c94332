//! Learned prefetch: per program file, the order in which a run's pages
//! were first mapped at its faults (recorded by the pager in the
//! [`PageLog`](l4pager::host::PageLog)), kept under
//! `$XDG_CACHE_HOME/l4re-loader/prefetch/` (default `~/.cache`) and
//! replayed by later runs of the same file.
//!
//! A profile is keyed by the file's identity: device, inode, size and
//! modification time of the host file (for a program in an ext2 image:
//! of the image, plus the program's path in it), and a hash of the
//! program's first page (ELF and program headers). A changed file gets a
//! new profile. The profile file repeats the identity and ends with a
//! checksum of everything before it; a profile that does not parse, fails
//! the checksum, names another file, or names pages outside the program's
//! regions is ignored with a warning (and replaced by the next recording).
//! A profile only ever makes the pager map, ahead of time, pages the
//! program could fault on: what they hold comes from the file and the
//! region map as at a fault, so even a forged profile changes nothing but
//! speed.
//!
//! Format (little-endian u64 words): magic `L4PFPROF`, version, the seven
//! identity words (device, inode, size, mtime seconds, mtime nanoseconds,
//! header hash, name hash), the recording run's fault count, the number
//! of entries N, N entries ([`PageLog`](l4pager::host::PageLog) encoding),
//! and the FNV-1a-64 checksum of all the words before it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use l4pager::host::{LOG_COUNT_MASK, LOG_ENTRIES};
use l4pager::region::{Backing, RegionMap};

use l4re::fpage::PAGE_SIZE as PAGE;

const MAGIC: u64 = u64::from_le_bytes(*b"L4PFPROF");
const VERSION: u64 = 1;

/// FNV-1a, 64 bits (stable across builds, unlike std's hasher).
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What identifies a program file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Device, inode, size, mtime (s, ns) of the host file (the image's,
    /// for a program in an ext2 image).
    pub stat: [u64; 5],
    /// Hash of the program's first page.
    pub header: u64,
    /// Hash of the program's path in an image (0: a host file).
    pub name: u64,
}

impl Identity {
    /// The identity of a program file with metadata `m` (of the file, or
    /// of the image holding it at `name_in_image`), whose first page is
    /// `first_page`.
    pub fn new(m: &std::fs::Metadata, first_page: &[u8], name_in_image: Option<&str>) -> Self {
        Identity {
            stat: [
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
            ],
            header: fnv(first_page),
            name: name_in_image.map_or(0, |n| fnv(n.as_bytes())),
        }
    }

    fn words(&self) -> [u64; 7] {
        let s = self.stat;
        [s[0], s[1], s[2], s[3], s[4], self.header, self.name]
    }

    /// The profile's file name in `dir`.
    pub fn path_in(&self, dir: &Path, program: &str) -> PathBuf {
        let mut b = Vec::new();
        for w in self.words() {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let base: String = Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(32)
            .collect();
        dir.join(format!("{base}-{:016x}.prof", fnv(&b)))
    }
}

/// The directory of the profiles: `$XDG_CACHE_HOME/l4re-loader/prefetch`
/// (default `$HOME/.cache/...`); `None` when neither is set.
pub fn dir() -> Option<PathBuf> {
    dir_with(|k| std::env::var_os(k))
}

/// [`dir`] for the environment that `var` reads (a client's of `loader
/// serve`).
pub fn dir_with(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let base = match var("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(var("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("l4re-loader").join("prefetch"))
}

/// A profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Whose.
    pub id: Identity,
    /// Faults of the recording run.
    pub faults: u64,
    /// Entries in the order of the recording run.
    pub entries: Vec<u64>,
}

impl Profile {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = vec![MAGIC, VERSION];
        w.extend(self.id.words());
        w.push(self.faults);
        w.push(self.entries.len() as u64);
        w.extend(&self.entries);
        let mut b: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        let sum = fnv(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses a profile file, checks that it belongs to `id` and that
    /// every page it names lies in a region of `map`; the error says why
    /// not.
    pub fn decode(b: &[u8], id: &Identity, map: &RegionMap) -> Result<Profile, String> {
        if b.len() % 8 != 0 || b.len() < 8 * 12 {
            return Err("corrupt (truncated)".into());
        }
        let (body, sum) = b.split_at(b.len() - 8);
        if fnv(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
            return Err("corrupt (checksum)".into());
        }
        let w: Vec<u64> = body
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if w[0] != MAGIC || w[1] != VERSION {
            return Err("corrupt (not a profile of this version)".into());
        }
        let theirs = Identity {
            stat: [w[2], w[3], w[4], w[5], w[6]],
            header: w[7],
            name: w[8],
        };
        if theirs != *id {
            return Err("made for another file (or an older version of it)".into());
        }
        let n = w[10] as usize;
        if n > LOG_ENTRIES || w.len() != 11 + n {
            return Err("corrupt (entry count)".into());
        }
        let entries = w[11..].to_vec();
        if let Some(e) = entries.iter().find(|e| !in_regions(**e, map)) {
            return Err(format!(
                "corrupt (page {:#x} outside the program's regions)",
                run_of(*e).0
            ));
        }
        Ok(Profile {
            id: *id,
            faults: w[9],
            entries,
        })
    }

    /// Writes the profile to `path` (atomically: a new file renamed).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, self.encode())?;
        std::fs::rename(&tmp, path)
    }

    /// The runs of pages the profile names, in its order: (first page,
    /// pages, whether the recording run faulted on the first), as
    /// [`l4pager::host::Pager::warm_server`] takes them.
    pub fn runs(&self) -> Vec<(u64, u64, bool)> {
        self.entries.iter().map(|e| run_of(*e)).collect()
    }
}

/// The run of pages a log entry names: (first page, pages, whether it was
/// a fault's page).
fn run_of(e: u64) -> (u64, u64, bool) {
    (
        e & !(PAGE - 1),
        (e & LOG_COUNT_MASK) + 1,
        e & l4pager::host::LOG_FAULT != 0,
    )
}

/// Whether the pages of entry `e` lie in one region of `map` that is not
/// reserved.
fn in_regions(e: u64, map: &RegionMap) -> bool {
    let (a, n, _) = run_of(e);
    matches!(map.lookup(a), Some(r) if r.backing != Backing::Reserved && a + n * PAGE <= r.end())
}

/// The profile recorded by a run: the log's entries that lie in the
/// program's regions (the log lives in the task's process: anything else
/// in it is dropped), at most [`LOG_ENTRIES`].
pub fn from_log(id: Identity, faults: u64, log: &[u64], map: &RegionMap) -> Profile {
    let entries = log
        .iter()
        .copied()
        .filter(|e| in_regions(*e, map))
        .take(LOG_ENTRIES)
        .collect();
    Profile {
        id,
        faults,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use l4re::cap::CapIdx;
    use l4re::fpage::Rights;

    fn map() -> RegionMap {
        let mut m = RegionMap::new(0x10000, 0x7fff_ffff_f000);
        m.attach(
            0x40_0000,
            0x10_0000,
            Rights::R | Rights::X,
            Backing::File {
                ds: CapIdx(5),
                offset: 0,
                file_len: 0x10_0000,
            },
            false,
            "text",
            false,
            false,
            PAGE,
        )
        .unwrap();
        m
    }

    fn id() -> Identity {
        Identity {
            stat: [1, 2, 3, 4, 5],
            header: 6,
            name: 0,
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let p = Profile {
            id: id(),
            faults: 70,
            entries: vec![0x40_1000 | l4pager::host::LOG_FAULT, 0x40_5000 | 15],
        };
        let b = p.encode();
        assert_eq!(Profile::decode(&b, &id(), &map()), Ok(p.clone()));
        // Every single-byte change and every truncation is refused.
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x20;
            assert!(Profile::decode(&c, &id(), &map()).is_err(), "byte {i}");
            assert!(Profile::decode(&b[..i], &id(), &map()).is_err(), "len {i}");
        }
        // Another file's.
        let other = Identity { header: 7, ..id() };
        assert!(
            Profile::decode(&b, &other, &map())
                .unwrap_err()
                .contains("another file")
        );
        // Pages outside the regions (with a valid checksum).
        let bad = Profile {
            entries: vec![0x90_0000],
            ..p
        };
        assert!(
            Profile::decode(&bad.encode(), &id(), &map())
                .unwrap_err()
                .contains("outside")
        );
    }

    #[test]
    fn log_entries_outside_the_regions_are_dropped() {
        let p = from_log(id(), 3, &[0x40_1000, 0x1000, 0x4f_f000 | 1], &map());
        assert_eq!(p.entries, vec![0x40_1000]);
    }
}
