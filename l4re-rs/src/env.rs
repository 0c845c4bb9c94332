//! The program environment: the fixed capabilities every L4Re program gets
//! and the named initial capabilities (`l4re_env_get_cap`).

use crate::cap::{Cap, CapKind, Factory, Log, Scheduler, Task, Thread, Untyped, well_known};
use crate::platform;

/// The environment of this program.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    _private: (),
}

/// Returns the program environment.
pub fn env() -> Env {
    Env { _private: () }
}

impl Env {
    /// The named initial capability `name` (as set up by the loader: ned's
    /// `caps = { name = ... }`), cast to `T`. `None` if there is none.
    pub fn get_cap<T: CapKind>(&self, name: &str) -> Option<Cap<T>> {
        platform::env_get_cap(name).map(Cap::from_idx)
    }

    /// The task itself.
    pub fn task(&self) -> Cap<Task> {
        Cap::from_idx(well_known::TASK)
    }

    /// The factory.
    pub fn factory(&self) -> Cap<Factory> {
        Cap::from_idx(well_known::FACTORY)
    }

    /// The main thread. On Fiasco this is `l4re_env()->main_thread`, not
    /// the kernel's initial thread slot (that thread is L4Re's in-task
    /// region manager).
    pub fn main_thread(&self) -> Cap<Thread> {
        #[cfg(feature = "fiasco")]
        return Cap::from_idx(platform::main_thread());
        #[cfg(not(feature = "fiasco"))]
        Cap::from_idx(well_known::THREAD)
    }

    /// The log capability.
    pub fn log(&self) -> Cap<Log> {
        Cap::from_idx(well_known::LOG)
    }

    /// The memory allocator (`L4Re::Mem_alloc`, a factory of dataspaces:
    /// [`Cap::<Factory>::alloc_dataspace`](crate::kobj)). On Fiasco this is
    /// `l4re_env()->mem_alloc`.
    pub fn mem_alloc(&self) -> Cap<Factory> {
        #[cfg(feature = "fiasco")]
        return Cap::from_idx(crate::platform::fiasco::env_snapshot().mem_alloc);
        #[cfg(not(feature = "fiasco"))]
        Cap::from_idx(well_known::MEM_ALLOC)
    }

    /// The scheduler.
    pub fn scheduler(&self) -> Cap<Scheduler> {
        Cap::from_idx(well_known::SCHEDULER)
    }

    /// The region map. On Fiasco this is `l4re_env()->rm`: with L4Re's
    /// in-task region manager it is not the fixed slot 0x10.
    pub fn rm(&self) -> Cap<crate::proto::Rm> {
        #[cfg(feature = "fiasco")]
        return Cap::from_idx(platform::env_rm());
        #[cfg(not(feature = "fiasco"))]
        Cap::from_idx(well_known::RM)
    }

    /// The parent (`L4Re::Parent`). On Fiasco this is
    /// `l4re_env()->parent`.
    pub fn parent(&self) -> Cap<Untyped> {
        #[cfg(feature = "fiasco")]
        return Cap::from_idx(platform::env_parent());
        #[cfg(not(feature = "fiasco"))]
        Cap::from_idx(well_known::PARENT)
    }
}

/// Looks up `path` as L4Re's `Env_ns` does (`L4Re::Util::Env_ns::query`):
/// the first component names an initial capability (a namespace, e.g.
/// `rom`), each further component is resolved by that namespace's
/// `query`, following replies that resolved only part of the name.
/// Fails with [`Error::NoEnt`](crate::Error::NoEnt) for an unknown first
/// component or an empty path.
pub fn query_path<T: CapKind>(path: &str) -> crate::Result<crate::OwnedCap<T>> {
    use crate::fpage::RcvBuf;
    use crate::msg::LongBytes;
    use crate::proto::namespace::{Namespace, NamespaceClient, PARTLY_RESOLVED};

    let path = path.trim_start_matches('/');
    let (first, mut rest) = match path.find('/') {
        Some(n) => (&path[..n], &path[n + 1..]),
        None => (path, ""),
    };
    if first.is_empty() {
        return Err(crate::Error::NoEnt);
    }
    let mut ns: Cap<Namespace> = env().get_cap(first).ok_or(crate::Error::NoEnt)?;
    if rest.is_empty() {
        // The initial capability itself is not ours to hand out as owned.
        return Err(crate::Error::Inval);
    }
    // The namespace being asked, once it is one we received (released
    // when the next one replaces it).
    let mut _held: Option<crate::OwnedCap<Untyped>> = None;
    // Each query resolves at least one component: bound the steps, so a
    // server that claims progress without making any cannot loop us.
    for _ in 0..=path.len() {
        let slot = crate::cap::alloc::<Untyped>()?;
        let crate::rpc::WithCode(code, (_, _, left)) =
            ns.query(LongBytes::new(rest.as_bytes()), RcvBuf::cap(slot.idx()))?;
        let left = left.unwrap_or_default();
        if code & PARTLY_RESOLVED == 0 || left.is_empty() {
            return Ok(slot.cast());
        }
        // Continue with the rest of the name at the namespace returned.
        if left.len() >= rest.len() {
            return Err(crate::Error::Inval);
        }
        rest = &rest[rest.len() - left.len()..];
        rest = rest.trim_start_matches('/');
        ns = slot.cap().cast();
        _held = Some(slot);
    }
    Err(crate::Error::Inval)
}

/// Writes a line to the program's log capability.
pub fn log_line(text: &str) {
    platform::log_write(text);
}

/// A `log` backend writing through the log capability.
pub struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let text = alloc::format!("{}: {}", record.level(), record.args());
            platform::log_write(&text);
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs [`Logger`] as the `log` backend at `level` (once; later calls
/// only change the level).
pub fn init_logger(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
