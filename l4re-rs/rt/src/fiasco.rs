//! The runtime on Fiasco.OC/L4Re (feature `fiasco`): what every program
//! needs, with or without L4Re's libc.

use core::ffi::{c_char, c_int};
use core::fmt;

use l4_sys as sys;

/// Writes `bytes` to the program's log capability as they are (no newline
/// added), in chunks of at most `L4_VCON_WRITE_SIZE` bytes.
///
/// This uses the calling thread's message registers: do not call it while
/// `l4re::Utcb::with` holds them.
pub fn log_bytes(bytes: &[u8]) {
    // SAFETY: the environment page is set up by the loader before any
    // program code runs and stays valid.
    let log = unsafe { (*sys::l4re_env()).log };
    for chunk in bytes.chunks(sys::L4_VCON_WRITE_SIZE as usize) {
        // SAFETY: the kernel copies at most `L4_VCON_WRITE_SIZE` bytes of
        // `chunk` out of our message registers; an invalid capability makes
        // the send fail, nothing else.
        unsafe {
            sys::l4_vcon_write(log, chunk.as_ptr() as *const c_char, chunk.len() as _);
        }
    }
}

/// A [`fmt::Write`] to the log capability through a fixed buffer (no heap):
/// text is sent whenever the buffer is full and when the writer is dropped.
pub struct LogWriter {
    buf: [u8; 256],
    len: usize,
}

impl LogWriter {
    /// An empty writer.
    pub const fn new() -> Self {
        LogWriter {
            buf: [0; 256],
            len: 0,
        }
    }

    /// Sends what is buffered.
    pub fn flush(&mut self) {
        if self.len > 0 {
            log_bytes(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Default for LogWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for LogWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Referenced by the prebuilt `core` for unwinding; programs are built with
/// `panic = "abort"`, so it is never called.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// The command-line arguments a program's entry receives (`argv`, without
/// `argv[0]` skipped: the first is the program name, as in C).
#[derive(Clone, Copy)]
pub struct Args {
    argc: usize,
    argv: *const *const c_char,
}

impl Args {
    /// Wraps C `main`'s arguments.
    ///
    /// # Safety
    ///
    /// `argv` must hold `argc` pointers to NUL-terminated strings that live
    /// as long as the program (as C `main`'s arguments do).
    pub unsafe fn new(argc: c_int, argv: *const *const c_char) -> Self {
        Args {
            argc: if argv.is_null() {
                0
            } else {
                argc.max(0) as usize
            },
            argv,
        }
    }

    /// Number of arguments (including the program name).
    pub fn len(&self) -> usize {
        self.argc
    }

    /// Whether there are no arguments at all.
    pub fn is_empty(&self) -> bool {
        self.argc == 0
    }

    /// Argument `i` as text (`None` if out of range or not UTF-8).
    pub fn get(&self, i: usize) -> Option<&'static str> {
        if i >= self.argc {
            return None;
        }
        // SAFETY: `i < argc`, and the pointers are valid NUL-terminated
        // strings for the program's life (contract of `new`).
        let s = unsafe { core::ffi::CStr::from_ptr(*self.argv.add(i)) };
        s.to_str().ok()
    }

    /// The arguments after the program name.
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        (1..self.argc).filter_map(|i| self.get(i))
    }
}

/// What an entry function may return; turned into the exit status.
pub trait Termination {
    /// The exit status.
    fn report(self) -> i32;
}

impl Termination for () {
    fn report(self) -> i32 {
        0
    }
}

impl Termination for i32 {
    fn report(self) -> i32 {
        self
    }
}

impl<E: fmt::Debug> Termination for Result<(), E> {
    fn report(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                let mut w = LogWriter::new();
                let _ = fmt::Write::write_fmt(&mut w, format_args!("error: {e:?}\n"));
                1
            }
        }
    }
}

/// Exports a C function that runs a Rust entry function.
///
/// `entry!(main = run)` makes the staticlib export `main` itself, so the
/// L4Re program needs no C source; `entry!(rust_ipc_server = run)` exports
/// `int rust_ipc_server(int argc, char **argv)` for a C `main` to call (one
/// staticlib can then hold several programs). `run` takes [`Args`] and
/// returns `()`, `i32` or `Result<(), impl Debug>` ([`Termination`]).
///
/// ```ignore
/// fn run(args: l4re_rt::Args) -> Result<(), l4re::Error> { … }
/// l4re_rt::entry!(main = run);
/// ```
#[macro_export]
macro_rules! entry {
    ($sym:ident = $f:path) => {
        /// Program entry, called by the C runtime (or by C `main`).
        ///
        /// # Safety
        ///
        /// `argv` must hold `argc` valid C strings for the program's life,
        /// as C `main`'s arguments do.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $sym(
            argc: ::core::ffi::c_int,
            argv: *const *const ::core::ffi::c_char,
        ) -> ::core::ffi::c_int {
            // SAFETY: the C runtime passes `main`'s own arguments.
            let args = unsafe { $crate::Args::new(argc, argv) };
            $crate::Termination::report($f(args))
        }
    };
}
