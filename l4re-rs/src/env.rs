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
