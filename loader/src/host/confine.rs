//! `loader run --confine`: what the program itself may open.
//!
//! Without it, `--root` only decides where the *program file* is looked up
//! (through the file server); the program's own `open`, `execve`, … go to
//! the host kernel with the loader's rights. With it, the task stub
//! restricts the program with Landlock right before it jumps to the
//! program's entry: reading and executing only beneath `--root` and the
//! `--allow-read` directories, writing (creating, removing, truncating)
//! only beneath the `--allow-write` ones, plus reading and writing a few
//! harmless device files ([`DEVICES`]). Paths are the host's: the program
//! is not moved into another mount namespace, so a file beneath the root
//! is opened by its host path. Descriptors the program inherits (standard
//! input, output, error) stay usable. Children of the program inherit the
//! restriction. The stub's own threads (pager, watcher) are not restricted
//! (they open nothing for the program).
//!
//! Where the kernel has no Landlock (not built in, or not in the `lsm=`
//! list), the program runs unconfined and the stub says so on standard
//! error.

use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus, path_beneath_rules,
};

/// Device files a confined program may read and write (when present).
pub const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// The Landlock ABI whose file-system rights are handled (Linux 6.10:
/// read, write, execute, rename across directories, truncate, device
/// ioctls); best effort on older kernels.
const HANDLED: ABI = ABI::V5;

/// What a confined program may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Read and execute beneath these.
    pub read: Vec<PathBuf>,
    /// Everything beneath these.
    pub write: Vec<PathBuf>,
}

impl Confinement {
    /// As arguments of the task stub (`--confine`, then the directories).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![String::from("--confine")];
        for p in &self.read {
            a.push("--confine-read".into());
            a.push(p.to_string_lossy().into_owned());
        }
        for p in &self.write {
            a.push("--confine-write".into());
            a.push(p.to_string_lossy().into_owned());
        }
        a
    }

    /// From the task stub's arguments after its control socket and mode;
    /// `Ok(None)` if there are none.
    pub fn from_args(args: &[String]) -> Result<Option<Confinement>, String> {
        let Some((first, rest)) = args.split_first() else {
            return Ok(None);
        };
        if first != "--confine" {
            return Err(format!("unknown stub argument {first}"));
        }
        let mut c = Confinement::default();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let v = it
                .next()
                .ok_or_else(|| format!("{k}: a directory is missing"))?;
            match k.as_str() {
                "--confine-read" => c.read.push(PathBuf::from(v)),
                "--confine-write" => c.write.push(PathBuf::from(v)),
                _ => return Err(format!("unknown stub argument {k}")),
            }
        }
        Ok(Some(c))
    }

    /// Makes the Landlock ruleset (opens every directory now: a missing one
    /// is an error naming it). [`Prepared::enforce`] applies it later.
    pub fn prepare(&self) -> Result<Prepared, String> {
        let read = AccessFs::from_read(HANDLED);
        let all = AccessFs::from_all(HANDLED);
        for p in self.read.iter().chain(&self.write) {
            if !p.is_dir() {
                return Err(format!("--confine: {}: not a directory", p.display()));
            }
        }
        let devices: Vec<&str> = DEVICES
            .iter()
            .copied()
            .filter(|d| std::path::Path::new(d).exists())
            .collect();
        let rw_file = AccessFs::ReadFile | AccessFs::WriteFile;
        let ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)
            .and_then(|r| r.create())
            .and_then(|r| r.add_rules(path_beneath_rules(&self.read, read)))
            .and_then(|r| r.add_rules(path_beneath_rules(&self.write, all)))
            .and_then(|r| r.add_rules(path_beneath_rules(&devices, rw_file)))
            .map_err(|e| format!("--confine: {e}"))?;
        Ok(Prepared { ruleset })
    }
}

/// A ruleset ready to be enforced.
pub struct Prepared {
    ruleset: RulesetCreated,
}

/// What enforcing achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    /// Every handled right is enforced.
    Fully,
    /// An older kernel: some rights (e.g. truncation, device ioctls) are
    /// not restricted.
    Partially,
    /// No Landlock in this kernel: nothing is restricted.
    Not,
}

impl Prepared {
    /// Restricts the calling thread and its future children (sets
    /// `no_new_privs` too).
    pub fn enforce(self) -> Result<Enforced, String> {
        let st = self
            .ruleset
            .restrict_self()
            .map_err(|e| format!("--confine: {e}"))?;
        Ok(match st.ruleset {
            RulesetStatus::FullyEnforced => Enforced::Fully,
            RulesetStatus::PartiallyEnforced => Enforced::Partially,
            _ => Enforced::Not,
        })
    }
}

/// Whether this kernel enforces Landlock rules: `Err` says why not (the
/// kernel's answer to making a ruleset, and its list of security modules
/// where securityfs shows it).
pub fn probe() -> Result<(), String> {
    let made = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::Execute)
        .and_then(|r| r.create());
    match made {
        // Made and dropped, never enforced.
        Ok(_) => Ok(()),
        Err(e) => {
            let lsm = std::fs::read_to_string("/sys/kernel/security/lsm")
                .map(|l| format!("; active security modules: {}", l.trim()))
                .unwrap_or_default();
            Err(format!(
                "this kernel does not provide Landlock ({e}{lsm}); it needs Linux 5.13 or later \
                 built with CONFIG_SECURITY_LANDLOCK and landlock in its lsm= list"
            ))
        }
    }
}
