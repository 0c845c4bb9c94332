//! `L4Re::Itas` (protocol `L4RE_PROTO_ITAS`, 0x400a): the in-task services
//! of a program's in-task pager (`l4re_itas`, or ours), reached through
//! `l4re_env()->itas`.
//!
//! | op | operation | in | out |
//! |----|-----------|----|-----|
//! | 0 | `register_thread` | `Cap<Thread> parent, Cap<Thread> thread, l4_addr_t utcb` | |
//! | 1 | `unregister_thread` | `Cap<Thread> thread` | |
//! | 2-8 | `sigaction`, `sigaltstack`, `sigprocmask`, `sigpending`, `setitimer`, `getitimer`, `raise` | | |
//!
//! L4Re's pthreads (l4re-core `libpthread/src/manager.cc`) hand every new
//! thread to `register_thread`, which binds it to the task with its UTCB
//! and gives it its pager, exception handler and page-fault trampoline;
//! `unregister_thread` comes before the thread is deleted. Without an
//! `itas` capability pthreads bind the thread themselves, with
//! `l4re_env()->rm` as pager. The signal operations (2-8) are declared
//! here by number only: a server without signals answers them with
//! `-L4_ENOSYS`, which L4Re's libc turns into `errno = ENOSYS`, as when
//! there is no `itas` at all.

use crate::cap::Thread;
use crate::msg::SendCap;
use crate::protocol;

protocol! {
    /// In-task services of a program's pager.
    pub protocol Itas: client ItasClient, server ItasServer, label 0x400a, opcode i32 {
        /// Binds `thread` (created by `parent`) to this task with its UTCB
        /// at `utcb` and sets up its pager and exception handler.
        0 => fn register_thread(parent: SendCap<Thread>, thread: SendCap<Thread>, utcb: u64) -> ();
        /// Forgets `thread`, which is deleted next.
        1 => fn unregister_thread(thread: SendCap<Thread>) -> ();
    }
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use super::*;
    use crate::cap::CapIdx;
    use crate::msg::{MsgTag, RcvCapSlots, ReceivedCap};
    use crate::rpc::Request;
    use crate::utcb::Utcb;
    use crate::{Error, Result};

    #[derive(Default)]
    struct Seen {
        registered: Cell<Option<(u64, u64, u64)>>,
        unregistered: Cell<Option<u64>>,
    }

    impl ItasServer for Seen {
        fn register_thread(
            &self,
            _: &mut Request<'_>,
            parent: ReceivedCap,
            thread: ReceivedCap,
            utcb: u64,
        ) -> Result<()> {
            self.registered
                .set(Some((parent.idx.0, thread.idx.0, utcb)));
            Ok(())
        }
        fn unregister_thread(&self, _: &mut Request<'_>, thread: ReceivedCap) -> Result<()> {
            self.unregistered.set(Some(thread.idx.0));
            Ok(())
        }
    }

    /// A request as the kernel delivers L4Re's `Itas::register_thread`
    /// (libpthread's `__pthread_mgr_create_thread`) to an in-task server
    /// that receives local ids: opcode and UTCB address in the words, the
    /// two thread capabilities as local-id items after them.
    fn serve(server: &Seen, words: &[u64], items: &[u64]) -> Result<MsgTag> {
        Utcb::with(|u| {
            let mr = u.mr();
            mr[..words.len()].copy_from_slice(words);
            for (i, cap) in items.iter().enumerate() {
                // Control word: an object item received as a local id; then
                // the object flexpage with the sender's index.
                mr[words.len() + 2 * i] = 0x3e;
                mr[words.len() + 2 * i + 1] = cap | 0xf0;
            }
        });
        let tag = MsgTag::new(0x400a, words.len(), items.len(), 0);
        let mut rcv = RcvCapSlots::new(&[CapIdx::from_slot(0x300)]);
        let mut req = Request::new(tag, 0x10, &mut rcv);
        Itas::dispatch(server, &mut req)
    }

    #[test]
    fn pthreads_requests_decode_and_signals_are_not_served() {
        let seen = Seen::default();
        serve(&seen, &[0, 0x7fff_e000], &[0x41a000, 0x41c000]).unwrap();
        assert_eq!(
            seen.registered.get(),
            Some((0x41a000, 0x41c000, 0x7fff_e000))
        );
        serve(&seen, &[1], &[0x41c000]).unwrap();
        assert_eq!(seen.unregistered.get(), Some(0x41c000));
        // sigaction … raise: -L4_ENOSYS, which libc turns into ENOSYS.
        for op in 2..=8 {
            assert_eq!(serve(&seen, &[op], &[]), Err(Error::NoSys), "opcode {op}");
        }
        // A thread capability missing.
        assert_eq!(
            serve(&seen, &[0, 0x1000], &[0x41a000]),
            Err(Error::MsgMissArg)
        );
    }
}
