//! The loader's control messages (loader/src/host/ctl.rs): the `START`
//! payload decoder, and the `HELLO` payload as `run` decodes it. Whatever
//! decodes must encode back to a payload that decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::host::ctl::{Dec, Start};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Start::decode(data) {
        let again = Start::decode(&s.encode()).expect("an encoded Start decodes");
        assert_eq!(again, s);
    }
    // HELLO: pid, arena start, arena end, features.
    let mut d = Dec(data);
    let _ = d
        .u64()
        .and_then(|_| d.u64())
        .and_then(|_| d.u64())
        .and_then(|_| d.u64());
    // Byte strings as the decoder takes them.
    let mut d = Dec(data);
    while let Ok(b) = d.bytes() {
        if b.is_empty() {
            break;
        }
    }
});
