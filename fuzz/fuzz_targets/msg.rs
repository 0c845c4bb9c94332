//! The IPC message decoder: `MsgReader` over arbitrary message registers
//! and tags (a local register block, no IPC), driven by a little program
//! of decode operations.
//!
//! Input: tag (8 bytes), the 63 message registers (504 bytes, zero-padded),
//! then one byte per decode operation.
#![no_main]

use l4re::msg::{LongBytesBuf, MsgReader, RcvCapSlots};
use l4re::utcb::{MR_WORDS, Utcb, UtcbRegs};
use l4re::{CapIdx, Marshal, MsgTag, SndFpage};
use libfuzzer_sys::fuzz_target;

fn op(r: &mut MsgReader<'_>, k: u8) {
    let _ = match k % 16 {
        0 => u8::read(r).map(drop),
        1 => u16::read(r).map(drop),
        2 => u32::read(r).map(drop),
        3 => u64::read(r).map(drop),
        4 => bool::read(r).map(drop),
        5 => String::read(r).map(drop),
        6 => Vec::<u8>::read(r).map(drop),
        7 => Vec::<u64>::read(r).map(drop),
        8 => LongBytesBuf::read(r).map(drop),
        9 => r.get_item().map(drop),
        10 => r.get_cap().map(drop),
        11 => SndFpage::read(r).map(drop),
        12 => Option::<String>::read(r).map(drop),
        13 => Option::<SndFpage>::read(r).map(drop),
        14 => <(u8, u64, u16)>::read(r).map(drop),
        _ => l4re::rpc::WithCode::<u32>::read(r).map(drop),
    };
    assert!(r.offset() <= l4re::utcb::MR_BYTES);
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let tag = MsgTag(u64::from_le_bytes(data[..8].try_into().unwrap()));
    let mut regs = UtcbRegs::new();
    let rest = &data[8..];
    let mr_bytes = rest.len().min(MR_WORDS * 8);
    for (i, c) in rest[..mr_bytes].chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        regs.mr[i] = u64::from_le_bytes(b);
    }
    let prog = &rest[mr_bytes..];
    let mut slots = RcvCapSlots::new(&[CapIdx::from_slot(0x7f0), CapIdx::from_slot(0x7f1)]);
    Utcb::from_regs(&mut regs, |u| {
        let Ok(r) = MsgReader::new(u, tag) else {
            return;
        };
        let mut r = r.with_rcv_caps(&mut slots);
        for &k in prog.iter().take(64) {
            op(&mut r, k);
        }
    });
});
