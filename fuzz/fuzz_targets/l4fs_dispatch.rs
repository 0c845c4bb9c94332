//! l4fs's protocols: the root object (Namespace, `l4fs.fs`) and the
//! directory and file objects it hands out (Namespace, Dataspace,
//! `l4fs.file`), over a small in-memory tree and an in-memory frame pool
//! (the page cache is the real one). Requests go through this thread's
//! UTCB as the server loop would put them, without IPC.
//! Input: request records (see `l4re_fuzz::records`); a record's selector
//! picks the object (the root first, then each object in the order the
//! requests made them). The server runs as on the host: every `query` and
//! `open` makes an object of its own, under small limits (4 per client, 16
//! in all, 1 file kept after its last handle); a record whose tag label is
//! [`RELEASE`] releases the object it picks, as the server loop does when
//! nobody holds it any more (the file written back, then closed).
#![no_main]

use std::sync::Arc;

use l4fs::cache::{CacheConfig, PageCache};
use l4fs::fs::{DirObj, FsState, Limits};
use l4re::CapIdx;
use l4re::msg::RcvCapSlots;
use l4re::rpc::Request;
use l4re::server::ServerObject;
use l4re::utcb::MR_WORDS;
use libfuzzer_sys::fuzz_target;

/// Tag label of a record that releases its object (no protocol has it).
const RELEASE: i64 = 0x7ff0;

fuzz_target!(|data: &[u8]| {
    let mut cfg = CacheConfig::new(16);
    cfg.readahead_max = 4;
    let fs = FsState::new(
        PageCache::new(cfg),
        Box::new(l4re_fuzz::MemTree),
        Box::new(l4re_fuzz::MemFrames),
        8192,
    );
    fs.borrow_mut().set_limits(
        Limits {
            release_unheld: true,
            per_client: 4,
            total: 16,
            keep_unheld: 1,
        },
        Some(|| Some(7)),
    );
    let mut objs: Vec<Arc<dyn ServerObject>> = vec![Arc::new(DirObj::root(fs.clone()))];
    for rec in l4re_fuzz::records(data) {
        let i = rec.selector as usize % objs.len();
        if rec.tag.label() == RELEASE {
            // The root is never released.
            if i != 0 {
                objs.remove(i).released();
            }
            continue;
        }
        l4re_fuzz::load(&rec);
        let obj = objs[i].clone();
        let mut rcv = RcvCapSlots::new(&[CapIdx::from_slot(0x7f0)]);
        let mut req = Request::new(rec.tag, 0x10 | (rec.selector as u64 & 3), &mut rcv);
        if let Ok(reply) = obj.dispatch(&mut req) {
            assert!(reply.words() + 2 * reply.items() <= MR_WORDS);
        }
        let pending: Vec<_> = fs.borrow_mut().pending.drain(..).collect();
        objs.extend(pending.into_iter().map(|(_, o)| o));
    }
    drop(objs);
    // The state holds itself only weakly: everything is released here.
    drop(fs);
});
