//! Builds `l4run` (the small client of `loader serve`, `l4run/main.rs`)
//! for the host: a freestanding static program compiled with the same
//! rustc and `panic=abort` (cargo's profiles cannot set that for one
//! binary of a workspace whose tests need unwinding). It goes into
//! `OUT_DIR` (its path in `L4RUN_PATH` for the tests and the benchmark)
//! and next to the `loader` binary (`target/<profile>/l4run`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=l4run/main.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let host = std::env::var_os("CARGO_FEATURE_HOST").is_some();
    let target = std::env::var("TARGET").unwrap_or_default();
    if !host || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let bin = out.join("l4run");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let st = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "bin",
            "--crate-name",
            "l4run",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "relocation-model=static",
            "-C",
            "link-arg=-nostartfiles",
            "-C",
            "link-arg=-nostdlib",
            "-C",
            "link-arg=-static",
            "-C",
            "link-arg=-Wl,--build-id=none",
            "-C",
            "strip=symbols",
            "l4run/main.rs",
            "-o",
        ])
        .arg(&bin)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("rustc");
    assert!(st.success(), "building l4run failed");
    println!("cargo:rustc-env=L4RUN_PATH={}", bin.display());
    // Next to the loader binary: OUT_DIR is target/<profile>/build/loader-*/out.
    if let Some(dir) = out.ancestors().nth(3) {
        let _ = std::fs::copy(&bin, dir.join("l4run"));
    }
}
