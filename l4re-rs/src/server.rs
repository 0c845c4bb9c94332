//! A server loop: many objects behind one thread, dispatched by gate label,
//! protocol and opcode.
//!
//! Each registered object gets its own IPC gate with a unique 4-aligned
//! label; a request's label tells the loop which object is addressed, its
//! tag label which protocol, its first word which operation. `L4::Meta` is
//! answered for every object from [`ServerObject::protocols`]. Whatever
//! goes wrong while serving one request (an unknown object, protocol or
//! opcode, a malformed message, a handler error) becomes an error reply to
//! that caller and the loop goes on.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;

use crate::cap::{Cap, CapIdx, IpcGate, OwnedCap, Thread};
use crate::env::env;
use crate::error::{Error, Result};
use crate::ipc::{self, Received, Timeout};
use crate::msg::{MsgTag, RcvCapSlots};
use crate::proto::meta::{self, Meta, MetaServer};
use crate::rpc::{Request, WithCode};
use crate::utcb::Utcb;

/// An object served by a [`Server`].
pub trait ServerObject {
    /// The protocols the object speaks, as `(label, name)`; reported through
    /// `L4::Meta`, and requests with other labels are refused with
    /// [`Error::BadProto`] before [`dispatch`](Self::dispatch) is called.
    fn protocols(&self) -> &[(i64, &'static str)];

    /// Serves one request of one of [`protocols`](Self::protocols), usually
    /// by calling the `dispatch` of the protocol marker:
    /// `Dataspace::dispatch(self, req)`.
    fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag>;
}

/// Receive slots a server keeps announced for incoming capabilities.
const RCV_SLOTS: usize = 2;

/// Counters of a server loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Requests answered successfully.
    pub ok: u64,
    /// Requests answered with an error.
    pub errors: u64,
}

/// A server loop on the current thread.
pub struct Server {
    objects: BTreeMap<u64, Arc<dyn ServerObject>>,
    next_label: u64,
    thread: Cap<Thread>,
    rcv_slots: heapless::Vec<CapIdx, RCV_SLOTS>,
    stats: ServerStats,
}

struct MetaAnswer<'a>(&'a [(i64, &'static str)]);

impl MetaServer for MetaAnswer<'_> {
    fn num_interfaces(&self, _: &mut Request<'_>) -> Result<WithCode<()>> {
        Ok(WithCode(self.0.len() as i64, ()))
    }
    fn interface(
        &self,
        _: &mut Request<'_>,
        idx: u64,
    ) -> Result<WithCode<(i64, alloc::string::String)>> {
        let (proto, name) = *self.0.get(idx as usize).ok_or(Error::NoEnt)?;
        Ok(WithCode(0, (proto, name.into())))
    }
    fn supports(&self, _: &mut Request<'_>, protocol: i64) -> Result<WithCode<()>> {
        Ok(WithCode(self.0.iter().any(|p| p.0 == protocol) as i64, ()))
    }
}

impl Server {
    /// A server loop for the calling thread.
    pub fn new() -> Self {
        Server {
            objects: BTreeMap::new(),
            next_label: 0x10,
            thread: crate::kobj::current_thread(),
            rcv_slots: heapless::Vec::new(),
            stats: ServerStats::default(),
        }
    }

    /// Registers `obj` behind a new IPC gate bound to this thread; returns the
    /// gate (hand it to clients) and the object's label.
    pub fn register(&mut self, obj: Arc<dyn ServerObject>) -> Result<(OwnedCap<IpcGate>, u64)> {
        let label = self.take_label();
        let gate = env().factory().create_gate(Some(self.thread), label)?;
        self.objects.insert(label, obj);
        Ok((gate, label))
    }

    /// Serves `obj` through an existing gate (e.g. the `"server"` capability
    /// the loader created for us), binding it to this thread.
    pub fn register_gate(&mut self, gate: Cap<IpcGate>, obj: Arc<dyn ServerObject>) -> Result<u64> {
        let label = self.take_label();
        gate.bind_thread(self.thread, label)?;
        self.objects.insert(label, obj);
        Ok(label)
    }

    /// Stops serving the object with `label`; its gate's calls then fail with
    /// [`Error::NoEnt`].
    pub fn unregister(&mut self, label: u64) -> Option<Arc<dyn ServerObject>> {
        self.objects.remove(&label)
    }

    /// Counters so far.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    fn take_label(&mut self) -> u64 {
        let l = self.next_label;
        self.next_label += 4;
        l
    }

    fn announce_buffers(&mut self) -> Result<()> {
        while self.rcv_slots.len() < RCV_SLOTS {
            let slot = crate::cap::alloc_slot()?;
            let _ = self.rcv_slots.push(slot);
        }
        let slots = self.rcv_slots.clone();
        Utcb::with(|u| {
            *u.bdr() = 0;
            let br = u.br();
            for (i, s) in slots.iter().enumerate() {
                br[i] = s.0 | crate::fpage::RCV_ITEM_SINGLE_CAP;
            }
            br[slots.len()] = 0;
        });
        Ok(())
    }

    /// Serves one received request and returns the reply tag (the reply
    /// message is in the UTCB).
    pub fn handle(&mut self, rx: Received) -> MsgTag {
        let mut rcv = RcvCapSlots::new(&self.rcv_slots);
        let result = {
            let mut req = Request::new(rx.tag, rx.label, &mut rcv);
            match self.objects.get(&req.object()) {
                None => Err(Error::NoEnt),
                Some(obj) => {
                    let protocols = obj.protocols();
                    let label = rx.tag.label();
                    if label == meta::LABEL {
                        Meta::dispatch(&MetaAnswer(protocols), &mut req)
                    } else if protocols.iter().any(|p| p.0 == label) {
                        obj.dispatch(&mut req)
                    } else {
                        Err(Error::BadProto)
                    }
                }
            }
        };
        let consumed = rcv.consumed();
        match result {
            Ok(tag) => {
                self.stats.ok += 1;
                // The handler owns the slots its capabilities arrived in.
                for _ in 0..consumed {
                    self.rcv_slots.remove(0);
                }
                tag
            }
            Err(e) => {
                self.stats.errors += 1;
                log::debug!("request {:?} on label {:#x}: {e}", rx.tag, rx.label);
                // Nobody took the received capabilities: drop them, keep the slots.
                for s in &self.rcv_slots[..consumed] {
                    crate::platform::cap_release(*s);
                }
                MsgTag::new(e.code(), 0, 0, 0)
            }
        }
    }

    /// Serves requests until `keep_going` returns false (it is asked after
    /// each request and after each timeout). A wait that times out is not an
    /// error; any other wait error ends the loop with that error.
    pub fn serve(
        &mut self,
        timeout: Timeout,
        mut keep_going: impl FnMut(&mut Self) -> bool,
    ) -> Result<()> {
        self.announce_buffers()?;
        let mut next = Utcb::with(|u| ipc::wait(u, timeout));
        loop {
            let rx = match next {
                Ok(rx) => rx,
                Err(Error::Ipc(crate::IpcError::RecvTimeout)) => {
                    if !keep_going(self) {
                        return Ok(());
                    }
                    next = Utcb::with(|u| ipc::wait(u, timeout));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let reply = self.handle(rx);
            if !keep_going(self) {
                // Deliver the last reply before leaving.
                if let Err(e) = Utcb::with(|u| ipc::reply(u, reply)) {
                    log::debug!("last reply not delivered: {e}");
                }
                return Ok(());
            }
            self.announce_buffers()?;
            next = Utcb::with(|u| ipc::reply_and_wait(u, reply, timeout));
        }
    }

    /// Serves requests forever (until a wait fails).
    pub fn run(&mut self) -> Result<()> {
        self.serve(Timeout::Never, |_| true)
    }
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}
