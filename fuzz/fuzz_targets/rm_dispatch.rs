//! Server dispatch: l4pager's region map server (`RmService` through
//! `Rm::dispatch`) fed a sequence of arbitrary requests through this
//! thread's UTCB, as the server loop would after a receive, without IPC.
//! Input: request records (see `l4re_fuzz::records`).
#![no_main]

use l4pager::RegionMap;
use l4pager::rm::{NoBackend, RmService};
use l4pager::sync::SpinLock;
use l4re::CapIdx;
use l4re::msg::RcvCapSlots;
use l4re::rpc::Request;
use l4re::server::ServerObject;
use l4re::utcb::MR_WORDS;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let map = Arc::new(SpinLock::new(RegionMap::new(0x1_0000, 0x7fff_ffff_f000)));
    let rm = RmService::new(map, NoBackend);
    for rec in l4re_fuzz::records(data) {
        l4re_fuzz::load(&rec);
        // Capabilities a request carries "arrive" in these slots.
        let mut rcv = RcvCapSlots::new(&[CapIdx::from_slot(0x7f0)]);
        let mut req = Request::new(rec.tag, 0x10 | (rec.selector as u64 & 3), &mut rcv);
        if let Ok(reply) = rm.dispatch(&mut req) {
            assert!(reply.words() + 2 * reply.items() <= MR_WORDS);
        }
    }
});
