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
use alloc::rc::Rc;
use alloc::sync::Arc;
use core::cell::RefCell;

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

    /// Called once nobody can call the object any more, after the server
    /// loop unregistered it: on the host, when every client end of its
    /// gate is closed (the server gave its own up with
    /// [`release_client_end`](crate::host::release_client_end)); never on
    /// Fiasco. The default does nothing.
    fn released(&self) {}
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

/// The objects a server loop serves, by label.
///
/// Shared between the loop and its handlers ([`Server::registry`]), so that
/// a handler can register an object it creates while serving a request (an
/// opened file, a new session) and hand its gate to the caller in the reply.
pub struct Registry {
    thread: Cap<Thread>,
    inner: RefCell<RegistryInner>,
}

struct RegistryInner {
    objects: BTreeMap<u64, Arc<dyn ServerObject>>,
    next_label: u64,
}

impl Registry {
    fn new(thread: Cap<Thread>) -> Self {
        Registry {
            thread,
            inner: RefCell::new(RegistryInner {
                objects: BTreeMap::new(),
                next_label: 0x10,
            }),
        }
    }

    fn take_label(&self) -> u64 {
        let mut inner = self.inner.borrow_mut();
        let l = inner.next_label;
        inner.next_label += 4;
        l
    }

    /// Registers `obj` behind a new IPC gate bound to the server's thread;
    /// returns the gate (hand it to clients) and the object's label.
    pub fn register(&self, obj: Arc<dyn ServerObject>) -> Result<(OwnedCap<IpcGate>, u64)> {
        let label = self.take_label();
        let gate = env().factory().create_gate(Some(self.thread), label)?;
        self.inner.borrow_mut().objects.insert(label, obj);
        Ok((gate, label))
    }

    /// Serves `obj` through an existing gate (e.g. the `"server"` capability
    /// the loader created for us), binding it to the server's thread.
    pub fn register_gate(&self, gate: Cap<IpcGate>, obj: Arc<dyn ServerObject>) -> Result<u64> {
        let label = self.take_label();
        gate.bind_thread(self.thread, label)?;
        self.inner.borrow_mut().objects.insert(label, obj);
        Ok(label)
    }

    /// Serves `obj` through a gate that is already bound to the server's
    /// thread with `label` (e.g. created bound by whoever started us).
    pub fn adopt_gate(&self, label: u64, obj: Arc<dyn ServerObject>) -> Result<()> {
        if label & 3 != 0 {
            return Err(Error::Inval);
        }
        let mut inner = self.inner.borrow_mut();
        if inner.objects.contains_key(&label) {
            return Err(Error::Exist);
        }
        inner.objects.insert(label, obj);
        inner.next_label = inner.next_label.max(label + 4);
        Ok(())
    }

    /// Stops serving the object with `label`; calls through its gate then
    /// fail with [`Error::NoEnt`].
    pub fn unregister(&self, label: u64) -> Option<Arc<dyn ServerObject>> {
        self.inner.borrow_mut().objects.remove(&label)
    }

    /// The object with `label`, if any.
    pub fn get(&self, label: u64) -> Option<Arc<dyn ServerObject>> {
        self.inner.borrow().objects.get(&label).cloned()
    }

    /// Number of objects served.
    pub fn len(&self) -> usize {
        self.inner.borrow().objects.len()
    }

    /// Whether no object is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A server loop on the current thread.
pub struct Server {
    registry: Rc<Registry>,
    rcv_slots: heapless::Vec<CapIdx, RCV_SLOTS>,
    stats: ServerStats,
    /// Receive capabilities from this task's own threads as local ids.
    local_ids: bool,
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
            registry: Rc::new(Registry::new(crate::kobj::current_thread())),
            rcv_slots: heapless::Vec::new(),
            stats: ServerStats::default(),
            local_ids: false,
        }
    }

    /// Asks the kernel for local ids instead of mappings when a client in
    /// this same task sends a capability (`L4_RCV_ITEM_LOCAL_ID`): the
    /// handler gets the client's own capability index
    /// ([`ReceivedCap`](crate::msg::ReceivedCap) with no slot taken), as an
    /// in-task region manager needs (L4Re's C API sends dataspaces to it
    /// without rights).
    pub fn receive_local_ids(&mut self, on: bool) {
        self.local_ids = on;
    }

    /// The loop's object registry, for handlers that register objects while
    /// serving a request.
    pub fn registry(&self) -> Rc<Registry> {
        self.registry.clone()
    }

    /// Registers `obj` behind a new IPC gate bound to this thread (see
    /// [`Registry::register`]).
    pub fn register(&mut self, obj: Arc<dyn ServerObject>) -> Result<(OwnedCap<IpcGate>, u64)> {
        self.registry.register(obj)
    }

    /// Serves `obj` through an existing gate (see [`Registry::register_gate`]).
    pub fn register_gate(&mut self, gate: Cap<IpcGate>, obj: Arc<dyn ServerObject>) -> Result<u64> {
        self.registry.register_gate(gate, obj)
    }

    /// Serves `obj` through a gate already bound to this thread with
    /// `label` (see [`Registry::adopt_gate`]).
    pub fn adopt_gate(&mut self, label: u64, obj: Arc<dyn ServerObject>) -> Result<()> {
        self.registry.adopt_gate(label, obj)
    }

    /// Stops serving the object with `label` (see [`Registry::unregister`]).
    pub fn unregister(&mut self, label: u64) -> Option<Arc<dyn ServerObject>> {
        self.registry.unregister(label)
    }

    /// Counters so far.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    fn announce_buffers(&mut self) -> Result<()> {
        while self.rcv_slots.len() < RCV_SLOTS {
            let slot = crate::cap::alloc_slot()?;
            let _ = self.rcv_slots.push(slot);
        }
        let slots = self.rcv_slots.clone();
        let local = if self.local_ids {
            crate::fpage::RCV_ITEM_LOCAL_ID
        } else {
            0
        };
        Utcb::with(|u| {
            *u.bdr() = 0;
            let br = u.br();
            for (i, s) in slots.iter().enumerate() {
                br[i] = s.0 | crate::fpage::RCV_ITEM_SINGLE_CAP | local;
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
            // The borrow of the registry ends here: the handler may register
            // objects of its own.
            match self.registry.get(req.object()) {
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
        self.serve_loop(timeout, Some(&mut keep_going))
    }

    /// Serves requests forever (until a wait fails).
    pub fn run(&mut self) -> Result<()> {
        self.serve_loop(Timeout::Never, None)
    }

    /// Unregisters the objects whose gates nobody can call any more (host:
    /// every client end closed) and tells them ([`ServerObject::released`]).
    /// The server loop does this after every wait; returns how many.
    pub fn reap_unreachable(&mut self) -> usize {
        #[cfg(feature = "host")]
        {
            let mut n = 0;
            for label in crate::host::take_unreachable() {
                if let Some(obj) = self.registry.unregister(label) {
                    obj.released();
                    n += 1;
                }
            }
            n
        }
        #[cfg(not(feature = "host"))]
        0
    }

    fn serve_loop(
        &mut self,
        timeout: Timeout,
        mut keep_going: Option<&mut dyn FnMut(&mut Self) -> bool>,
    ) -> Result<()> {
        self.announce_buffers()?;
        let mut next = Utcb::with(|u| ipc::wait(u, timeout));
        loop {
            self.reap_unreachable();
            let rx = match next {
                Ok(rx) => rx,
                Err(Error::Ipc(crate::IpcError::RecvTimeout)) => {
                    if let Some(go) = keep_going.as_mut()
                        && !go(self)
                    {
                        return Ok(());
                    }
                    next = Utcb::with(|u| ipc::wait(u, timeout));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let reply = self.handle(rx);
            let answer = reply.label() != Error::NoReply.code();
            if let Some(go) = keep_going.as_mut() {
                // The reply waits in the message registers, and the hook
                // may make calls of its own that use them (on Fiasco
                // binding a gate, unmapping, log output are kernel
                // invocations through the UTCB): keep a copy across it.
                let n = (reply.words() + 2 * reply.items()).min(crate::utcb::MR_WORDS);
                let mut saved = [0u64; crate::utcb::MR_WORDS];
                Utcb::with(|u| saved[..n].copy_from_slice(&u.mr()[..n]));
                let more = go(self);
                Utcb::with(|u| u.mr()[..n].copy_from_slice(&saved[..n]));
                if !more {
                    // Deliver the last reply before leaving.
                    if !answer {
                        return Ok(());
                    }
                    if let Err(e) = Utcb::with(|u| ipc::reply(u, reply)) {
                        log::debug!("last reply not delivered: {e}");
                    }
                    return Ok(());
                }
            }
            self.announce_buffers()?;
            next = if answer {
                Utcb::with(|u| ipc::reply_and_wait(u, reply, timeout))
            } else {
                Utcb::with(|u| ipc::wait(u, timeout))
            };
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;
    use crate::cap::CapRights;
    use crate::fpage::{MapType, RcvBuf, SndFpage};

    crate::protocol! {
        /// Opens sessions: each `open` registers a new object.
        pub protocol Opener: client OpenerClient, server OpenerServer, label 0x7200, opcode i32 {
            /// A new session object, as a capability.
            0 => fn open(base: u64) buffers(slot: RcvBuf) -> SndFpage;
            /// The session's value.
            1 => fn value() -> u64;
        }
    }

    struct Root(Rc<Registry>);
    struct Session(u64);

    impl OpenerServer for Root {
        fn open(&self, _: &mut Request<'_>, base: u64) -> Result<SndFpage> {
            let (gate, _label) = self.0.register(Arc::new(Session(base)))?;
            // The registry keeps serving the object; the slot stays ours.
            let idx = gate.into_cap().idx();
            Ok(SndFpage::cap(idx, CapRights::RW, MapType::Map))
        }
        fn value(&self, _: &mut Request<'_>) -> Result<u64> {
            Err(Error::NoSys)
        }
    }

    impl OpenerServer for Session {
        fn open(&self, _: &mut Request<'_>, _: u64) -> Result<SndFpage> {
            Err(Error::NoSys)
        }
        fn value(&self, _: &mut Request<'_>) -> Result<u64> {
            Ok(self.0)
        }
    }

    impl ServerObject for Root {
        fn protocols(&self) -> &[(i64, &'static str)] {
            &[(0x7200, "opener")]
        }
        fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
            Opener::dispatch(self, req)
        }
    }

    impl ServerObject for Session {
        fn protocols(&self) -> &[(i64, &'static str)] {
            &[(0x7200, "session")]
        }
        fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
            Opener::dispatch(self, req)
        }
    }

    /// A handler registers a new object while serving a request and hands
    /// its gate to the caller, who then calls the new object.
    #[test]
    fn handlers_register_objects_through_the_registry() {
        let gate = env().factory().create_gate(None, 0).unwrap();
        let g = gate.cap();
        let (_t, _j) = crate::host::spawn_thread(move || {
            let mut server = Server::new();
            // The loop is single-threaded; `Arc` is what the registry takes.
            #[allow(clippy::arc_with_non_send_sync)]
            let root = Arc::new(Root(server.registry()));
            server.register_gate(g, root).unwrap();
            let _ = server.run();
        })
        .unwrap();
        let opener: Cap<Opener> = gate.cap().cast();
        for base in [7u64, 11, 13] {
            let slot = crate::cap::alloc::<Opener>().unwrap();
            let item = opener.open(base, RcvBuf::cap(slot.idx())).unwrap();
            assert!(item.cap_received());
            assert_eq!(slot.value(), Ok(base));
        }
        assert_eq!(opener.value(), Err(Error::NoSys));
    }

    /// Opens nothing: `open` is never answered.
    struct Silent;

    impl OpenerServer for Silent {
        fn open(&self, _: &mut Request<'_>, _: u64) -> Result<SndFpage> {
            Err(Error::NoReply)
        }
        fn value(&self, _: &mut Request<'_>) -> Result<u64> {
            Ok(5)
        }
    }

    impl ServerObject for Silent {
        fn protocols(&self) -> &[(i64, &'static str)] {
            &[(0x7200, "silent")]
        }
        fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
            Opener::dispatch(self, req)
        }
    }

    /// A handler that fails with `Error::NoReply` sends no reply, and the
    /// loop serves the next request. (On Fiasco the caller stays blocked;
    /// the host drops a request its server waits past, so the caller sees
    /// `NotExistent` instead of the error reply `-L4_ENOREPLY`.)
    #[test]
    fn no_reply_sends_no_reply() {
        let gate = env().factory().create_gate(None, 0).unwrap();
        let g = gate.cap();
        let (_t, _j) = crate::host::spawn_thread(move || {
            let mut server = Server::new();
            #[allow(clippy::arc_with_non_send_sync)]
            let silent = Arc::new(Silent);
            server.register_gate(g, silent).unwrap();
            let _ = server.run();
        })
        .unwrap();
        let slot = crate::cap::alloc::<Opener>().unwrap();
        let r = g.cast::<Opener>().open(1, RcvBuf::cap(slot.idx()));
        assert_eq!(r, Err(Error::Ipc(crate::IpcError::NotExistent)));
        assert_eq!(gate.cap().cast::<Opener>().value(), Ok(5));
    }
}
