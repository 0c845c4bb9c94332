//! What the loader's integration tests share: comparing a run under the
//! loader with the native run of the same program.

use std::process::Output;

/// The exit status as a shell reports it (128 + signal for a signal).
pub fn status(o: &Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    o.status
        .code()
        .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0))
}

/// Asserts that `loaded` printed and returned exactly what `native` did.
pub fn assert_same_as_native(what: &str, loaded: &Output, native: &Output) {
    assert_eq!(
        String::from_utf8_lossy(&loaded.stdout),
        String::from_utf8_lossy(&native.stdout),
        "{what}: stdout"
    );
    assert_eq!(
        String::from_utf8_lossy(&loaded.stderr),
        String::from_utf8_lossy(&native.stderr),
        "{what}: stderr"
    );
    assert_eq!(status(loaded), status(native), "{what}: status");
}
