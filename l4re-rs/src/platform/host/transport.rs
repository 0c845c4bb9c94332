//! IPC over the sockets: call, send, wait, reply-and-wait.
//!
//! * **Private channels.** A calling thread talks to a gate through a
//!   private `SOCK_SEQPACKET` pair of its own, the host's reply capability
//!   made persistent: its first call to the gate makes the pair and sends
//!   the request *on the gate* with the far end attached
//!   (`FLAG_CHANNEL`); the caller closes its copy of that end. The server
//!   thread that receives it puts the channel into its epoll set next to
//!   the gate (same label) and answers on it with `FLAG_ACCEPTED`, which
//!   tells the caller that later calls may go straight to the channel: a
//!   call is then one `sendmsg` and one `recvmsg` for the caller and
//!   `epoll_wait`, `recvmsg`, `sendmsg` for the server, with no descriptor
//!   passing. A reply without `FLAG_ACCEPTED` (e.g. the answer to a
//!   malformed request) makes the caller drop the channel.
//! * **What the channel keeps from the one-shot reply socket.** The server
//!   holds the only copy of the channel's far end, so end of file there
//!   still means what it did: the server died, the request was dropped
//!   unanswered (the server waits again without replying, the thread
//!   serving the gate ended, the gate was unbound, released or closed with
//!   the request queued): [`IpcError::NotExistent`]. The server *shuts the
//!   channel down* to drop a request (it cannot drop one message of a
//!   channel otherwise). A send that finds the channel shut down
//!   (`EPIPE`) delivered nothing, so the caller opens a new channel through
//!   the gate, where the call queues as before if the gate is unbound.
//!   Each channel has one caller thread and at most one call in flight, so
//!   a reply reaches exactly its caller; calls carry a sequence number that
//!   the reply must echo, and a channel whose call failed in any way
//!   (timeout, end of file, a malformed reply) is closed, never reused, so
//!   a late reply to a timed-out call cannot be taken for a later one.
//! * **The cache.** A thread keeps the channels of the gates it called
//!   last (at most [`MAX_CHANNELS`], least recently used dropped; closing
//!   one makes the server drop its end). They die with the thread. A
//!   process made by `fork` does not use the channels of its parent (they
//!   are the parent's conversations): it starts a new cache.
//! * **send** goes through the thread's channel to the gate if it has one
//!   (`FLAG_ONEWAY`: no reply; so sends and calls of one thread to a gate
//!   arrive in order), else through the gate.
//! * **wait**: `epoll_wait` on the thread's endpoint, then a non-blocking
//!   `recvmsg` on the gate or channel that is ready (another process
//!   holding the same server end may have taken the message: `EAGAIN` just
//!   means wait again); end of file on a channel drops it. The channel of
//!   the request is kept per thread until the thread replies or waits
//!   again (then it is shut down, and the caller sees `NotExistent`).
//! * **reply and wait**: send the reply on the kept channel, wait.
//!
//! Receiving applies the items to the receiver's UTCB as Fiasco does
//! (`Thread_ipc::transfer_msg_items`): void items come out as a zero control
//! word and consume no buffer; every other item takes the next receive
//! buffer of the buffer registers (from `br[0]`; the host consumes buffers
//! strictly in order, whatever their type, which is how
//! [`MsgWriter`](crate::msg::MsgWriter) lays them out), except that an item
//! following one with `L4_ITEM_CONT` reuses its buffer. The control word of
//! a transferred item becomes `(base & !0xff7) | (fpage & 0xff0)` (so a
//! received capability reads as `0x38`, see
//! [`SndFpage::cap_received`](crate::fpage::SndFpage::cap_received)); a
//! local id (`L4_RCV_ITEM_LOCAL_ID`, the gate is bound in the receiving
//! task) reads as `0x3c` with the label (and the rights bits) in the second
//! word. Where Fiasco would abort the whole IPC because an item has no
//! fitting buffer, the host drops just that item and writes a zero control
//! word, which the message reader reports as a missing argument; a memory
//! item that cannot be mapped into a *reply* makes the call fail with
//! [`IpcError::MapFailed`].

use core::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, epoll};
use rustix::io::{Errno, IoSlice, IoSliceMut};
use rustix::mm::{Advice, MapFlags, ProtFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::objects::{Attach, Entry, GateObj, Object, export, import, seqpacket_pair, shut_down};
use super::wire::{
    self, Desc, FLAG_ACCEPTED, FLAG_CHANNEL, FLAG_ONEWAY, Kind, MAX_FDS, MAX_PACKET_BYTES,
    PacketBuf, Parsed,
};
use super::{ThreadCtx, lock, process, shm, with_thread};
use crate::cap::{CapIdx, CapRights};
use crate::error::{Error, IpcError};
use crate::fpage::{
    Fpage, FpageType, ITEM_MAP, PAGE_SIZE, RCV_ITEM_LOCAL_ID, Rights, SndFpage, fit_into_window,
};
use crate::ipc::{Received, Timeout};
use crate::msg::{MAX_ITEMS, MsgTag};
use crate::utcb::{BR_WORDS, MR_WORDS, Utcb};

/// When an IPC phase gives up.
#[derive(Debug, Clone, Copy)]
pub(super) enum Deadline {
    /// Never.
    Never,
    /// At this instant (now, for a zero timeout).
    At(Instant),
}

impl Deadline {
    /// The deadline of a phase starting now.
    pub(super) fn new(t: Timeout) -> Deadline {
        match t {
            Timeout::Never => Deadline::Never,
            Timeout::Zero => Deadline::At(Instant::now()),
            Timeout::Micros(us) => match Instant::now().checked_add(Duration::from_micros(us)) {
                Some(at) => Deadline::At(at),
                None => Deadline::Never,
            },
        }
    }

    /// The time left, for `poll`/`epoll_wait` (`None`: no limit).
    pub(super) fn remaining(self) -> Option<Timespec> {
        match self {
            Deadline::Never => None,
            Deadline::At(at) => {
                let left = at.saturating_duration_since(Instant::now());
                Some(Timespec::try_from(left).unwrap_or(Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                }))
            }
        }
    }

    fn expired(self) -> bool {
        match self {
            Deadline::Never => false,
            Deadline::At(at) => Instant::now() >= at,
        }
    }
}

/// Waits until `fd` has any of `events` or the deadline passes; returns
/// whether it did.
fn wait_fd(fd: BorrowedFd<'_>, events: PollFlags, deadline: Deadline) -> rustix::io::Result<bool> {
    loop {
        let mut pfd = [PollFd::from_borrowed_fd(fd, events)];
        match rustix::event::poll(&mut pfd, deadline.remaining().as_ref()) {
            Ok(0) if deadline.expired() => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sends one packet with `fds` attached, waiting for room in the queue
/// until `deadline`.
pub(super) fn send_packet(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    deadline: Deadline,
) -> Result<(), IpcError> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut big;
    let space: &mut [MaybeUninit<u8>] = if fds.len() <= MAX_FDS {
        &mut space
    } else {
        // The bootstrap packet may carry more.
        big = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        &mut big
    };
    loop {
        let mut control = SendAncillaryBuffer::new(space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(IpcError::MsgCut);
        }
        let iov = [IoSlice::new(bytes)];
        match rustix::net::sendmsg(
            sock,
            &iov,
            &mut control,
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => match wait_fd(sock, PollFlags::OUT, deadline) {
                Ok(true) => continue,
                Ok(false) => return Err(IpcError::SendTimeout),
                Err(e) => {
                    log::warn!("l4re host: poll on a gate failed: {e}");
                    return Err(IpcError::Aborted);
                }
            },
            Err(Errno::PIPE | Errno::CONNREFUSED | Errno::CONNRESET | Errno::NOTCONN) => {
                return Err(IpcError::NotExistent);
            }
            Err(e @ (Errno::MSGSIZE | Errno::TOOMANYREFS | Errno::NOBUFS | Errno::NOMEM)) => {
                log::warn!("l4re host: sending a message failed: {e}");
                return Err(IpcError::MsgCut);
            }
            Err(e) => {
                log::warn!("l4re host: sending a message failed: {e}");
                return Err(IpcError::Aborted);
            }
        }
    }
}

/// A received datagram.
pub(super) struct Packet {
    buf: [u8; MAX_PACKET_BYTES + 8],
    len: usize,
    /// The fds that came with it, in order.
    pub fds: Vec<OwnedFd>,
    /// Whether data or fds were cut.
    pub truncated: bool,
}

impl Packet {
    /// The payload.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len.min(self.buf.len())]
    }
}

/// Receives one datagram; `Ok(None)` at end of file (peer closed, also
/// with messages of ours unread).
pub(super) fn recv_packet(
    sock: BorrowedFd<'_>,
    nonblocking: bool,
) -> rustix::io::Result<Option<Packet>> {
    let mut p = Packet {
        buf: [0; MAX_PACKET_BYTES + 8],
        len: 0,
        fds: Vec::new(),
        truncated: false,
    };
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut p.buf)];
        match rustix::net::recvmsg(sock, &mut iov, &mut control, flags) {
            Ok(r) => {
                for msg in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(fds) = msg {
                        p.fds.extend(fds);
                    }
                }
                p.len = r.bytes;
                p.truncated = r.flags.intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC);
                if r.bytes == 0 && p.fds.is_empty() && !p.truncated && peer_gone(sock) {
                    return Ok(None);
                }
                return Ok(Some(p));
            }
            Err(Errno::INTR) => continue,
            // The peer closed with our messages unread (a server that died
            // with a request of ours queued on the channel): end of file.
            Err(Errno::CONNRESET) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Whether the peer of a socket is closed (a zero-length read was end of
/// file, not an empty datagram).
fn peer_gone(sock: BorrowedFd<'_>) -> bool {
    let mut pfd = [PollFd::from_borrowed_fd(
        sock,
        PollFlags::IN | PollFlags::RDHUP,
    )];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut pfd, Some(&zero)), Ok(n) if n > 0)
        && pfd[0]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::RDHUP)
}

/// A message ready to send.
struct Outgoing {
    msg: heapless::Vec<u64, MR_WORDS>,
    descs: heapless::Vec<Desc, MAX_ITEMS>,
    fds: Vec<Attach>,
    /// Slots to release after a successful send (granted capabilities).
    grants: Vec<CapIdx>,
}

/// Reads the message `tag` describes from `utcb` and resolves its items.
/// `gate_rights` are the rights of the capability the message is sent
/// through: without S on it, no capability passes with S (Fiasco's
/// "diminish when sending via restricted IPC gates").
fn outgoing(utcb: &mut Utcb, tag: MsgTag, gate_rights: CapRights) -> Result<Outgoing, IpcError> {
    let (words, items) = (tag.words(), tag.items());
    if words + 2 * items > MR_WORDS {
        return Err(IpcError::MsgCut);
    }
    let mut out = Outgoing {
        msg: heapless::Vec::new(),
        descs: heapless::Vec::new(),
        fds: Vec::new(),
        grants: Vec::new(),
    };
    let mr = utcb.mr();
    // Cannot fail: bounded by MR_WORDS above.
    let _ = out.msg.extend_from_slice(&mr[..words + 2 * items]);
    let mask = gate_rights | CapRights::R | CapRights::W | CapRights::D;
    let mut table = None;
    for i in 0..items {
        let at = words + 2 * i;
        let item = SndFpage {
            base: out.msg[at],
            fpage: Fpage(out.msg[at + 1]),
        };
        let desc = if !item.is_valid() {
            Desc::NONE
        } else {
            match item.fpage.ty() {
                FpageType::Obj => {
                    if item.fpage.order() != 0 {
                        log::debug!(
                            "l4re host: object flexpages of more than one slot are not supported"
                        );
                        return Err(IpcError::MapFailed);
                    }
                    let table = table.get_or_insert_with(|| lock(&process().table));
                    let idx = CapIdx(item.fpage.addr());
                    match table.get(idx) {
                        // Mapping an empty slot maps nothing.
                        None => Desc::NONE,
                        Some(e) => {
                            let rights = item.fpage.cap_rights() & e.rights & mask;
                            out.msg[at + 1] = item.fpage.with_rights(rights.bits()).0;
                            if item.is_grant() {
                                out.grants.push(idx);
                            }
                            export(&e.obj, rights, &mut out.fds).map_err(|_| IpcError::MapFailed)?
                        }
                    }
                }
                FpageType::Memory => {
                    let fp = item.fpage;
                    let Some((file, offset)) = shm::lookup(fp.addr(), fp.size()) else {
                        log::debug!(
                            "l4re host: memory item {:#x}+{:#x} is not shared memory",
                            fp.addr(),
                            fp.size()
                        );
                        return Err(IpcError::MapFailed);
                    };
                    let fd = file.fd_for(fp.rights()).map_err(|_| IpcError::MapFailed)?;
                    out.fds.push(Attach::Shared(fd));
                    Desc {
                        kind: Kind::Memory,
                        nfds: 1,
                        rights: fp.rights().bits(),
                        arg: offset,
                    }
                }
                FpageType::Io | FpageType::Special => return Err(IpcError::MapFailed),
            }
        };
        // Cannot fail: items <= MAX_ITEMS.
        let _ = out.descs.push(desc);
    }
    Ok(out)
}

/// The header of a packet to send.
#[derive(Clone, Copy)]
struct Head {
    tag: MsgTag,
    /// The rights of the sender's capability.
    rights: CapRights,
    /// `FLAG_*` (`FLAG_CHANNEL` is added when a channel is attached).
    flags: u16,
    seq: u32,
}

/// Sends `out` on `sock` with header `head`, with `chan` (the far end of a
/// new channel) as fd 0.
fn send_out(
    sock: BorrowedFd<'_>,
    head: Head,
    chan: Option<BorrowedFd<'_>>,
    out: &Outgoing,
    deadline: Deadline,
) -> Result<(), IpcError> {
    let mut fds: heapless::Vec<BorrowedFd<'_>, MAX_FDS> = heapless::Vec::new();
    let mut flags = head.flags;
    if let Some(c) = chan {
        let _ = fds.push(c);
        flags |= FLAG_CHANNEL;
    }
    for a in &out.fds {
        fds.push(a.fd()).map_err(|_| IpcError::MsgCut)?;
    }
    let pkt = PacketBuf::new(
        head.tag,
        head.rights,
        flags,
        head.seq,
        fds.len(),
        &out.msg,
        &out.descs,
    );
    send_packet(sock, pkt.bytes(), &fds, deadline)?;
    if !out.grants.is_empty() {
        let mut table = lock(&process().table);
        let dropped: Vec<_> = out.grants.iter().filter_map(|g| table.remove(*g)).collect();
        drop(table);
        drop(dropped);
    }
    Ok(())
}

/// The gate to send to for capability `dest`, and the slot's rights.
fn destination(dest: CapIdx) -> Result<(Arc<GateObj>, CapRights), IpcError> {
    let table = lock(&process().table);
    match table.get(dest) {
        Some(Entry {
            obj: Object::Gate(g),
            rights,
        }) => Ok((g.clone(), *rights)),
        Some(Entry {
            obj: Object::Thread(ep),
            rights,
        }) => Ok((ep.gate().clone(), *rights)),
        Some(e) => {
            log::debug!(
                "l4re host: IPC to a {} capability is not supported on the host",
                e.obj.name()
            );
            Err(IpcError::NotExistent)
        }
        None => Err(IpcError::NotExistent),
    }
}

fn record<T>(utcb: &mut Utcb, r: Result<T, IpcError>) -> Result<T, IpcError> {
    if let Err(e) = &r {
        *utcb.error() = e.raw();
    }
    r
}

// ---------------------------------------------------------------------------
// The caller's side: private channels.

/// Most channels a thread keeps (one per gate it called last).
pub(super) const MAX_CHANNELS: usize = 16;

/// A calling thread's private channel to a gate.
struct Channel {
    /// The gate (for its identity: the allocation cannot be reused while
    /// this lives, and a channel of a dropped gate is never used again).
    gate: Weak<GateObj>,
    /// Our end.
    fd: OwnedFd,
    /// The sequence number of the last request sent.
    seq: u32,
    /// The [`process_mark`] of the process that made it.
    mark: u64,
}

thread_local! {
    /// The thread's channels, least recently used first.
    static CHANNELS: RefCell<Vec<Channel>> = const { RefCell::new(Vec::new()) };
}

/// A page that a `fork` child gets zeroed (`MADV_WIPEONFORK`): its first
/// word names the process that set it (see [`process_mark`]).
static FORK_CANARY: OnceLock<usize> = OnceLock::new();

/// A mark of this process that changes in a child made by `fork`:
/// channels made before a `fork` belong to the parent (the child shares
/// the sockets but not the conversations) and are not used after it.
///
/// Lock-free and without system calls after the first: a thread may call
/// while another thread of the process is inside `fork` (a pager thread
/// serving the `fork`'s own page faults), so neither `getpid` per call nor
/// `pthread_atfork`, which the C library holds a lock around, will do.
fn process_mark() -> u64 {
    let page = *FORK_CANARY.get_or_init(|| {
        // SAFETY: a fresh private anonymous page at an address of the
        // kernel's choosing overlaps nothing; it is never unmapped.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                PAGE_SIZE as usize,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        };
        match p {
            Ok(p) => {
                // SAFETY: `p` is the page just mapped, ours alone.
                let wiped =
                    unsafe { rustix::mm::madvise(p, PAGE_SIZE as usize, Advice::LinuxWipeOnFork) };
                if wiped.is_ok() { p as usize } else { 0 }
            }
            Err(_) => 0,
        }
    });
    if page == 0 {
        // No canary: fall back to asking the kernel.
        return rustix::process::getpid().as_raw_nonzero().get() as u64;
    }
    // SAFETY: the page is mapped read-write for the life of the process
    // and only ever accessed through this atomic.
    let mark = unsafe { &*(page as *const AtomicU64) };
    match mark.load(Ordering::Relaxed) {
        0 => {
            let pid = rustix::process::getpid().as_raw_nonzero().get() as u64;
            match mark.compare_exchange(0, pid, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => pid,
                Err(other) => other,
            }
        }
        m => m,
    }
}

/// Takes this thread's channel to `gate` out of the cache.
fn take_channel(gate: &Arc<GateObj>) -> Option<Channel> {
    let mark = process_mark();
    CHANNELS
        .try_with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            if c.iter().any(|ch| ch.mark != mark) {
                // Our copies of the parent's channels: close them.
                c.retain(|ch| ch.mark == mark);
            }
            let i = c
                .iter()
                .position(|ch| core::ptr::eq(ch.gate.as_ptr(), Arc::as_ptr(gate)))?;
            Some(c.remove(i))
        })
        .ok()
        .flatten()
}

/// Puts a channel (back) into the cache as the most recently used,
/// dropping the channels of released gates and the least recently used
/// one beyond [`MAX_CHANNELS`].
fn put_channel(ch: Channel) {
    let _ = CHANNELS.try_with(move |c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            return;
        };
        c.retain(|x| x.gate.strong_count() > 0);
        if c.len() >= MAX_CHANNELS {
            c.remove(0);
        }
        c.push(ch);
    });
}

/// Sends a request to `gate`: on this thread's channel to it if there is
/// one, else on the gate, with a new channel if it is a call. Returns the
/// channel to wait on (a call) or to keep (a send that went through it).
fn send_request(
    gate: &Arc<GateObj>,
    head: Head,
    out: &Outgoing,
    deadline: Deadline,
    call: bool,
) -> Result<Option<Channel>, IpcError> {
    if let Some(mut ch) = take_channel(gate) {
        ch.seq = ch.seq.wrapping_add(1);
        let flags = if call { 0 } else { FLAG_ONEWAY };
        let h = Head {
            flags,
            seq: ch.seq,
            ..head
        };
        match send_out(ch.fd.as_fd(), h, None, out, deadline) {
            Ok(()) => return Ok(Some(ch)),
            // The server shut the channel down: nothing was delivered, go
            // through the gate.
            Err(IpcError::NotExistent) => {}
            Err(e) => return Err(e),
        }
    }
    // A gate whose client end this task gave up: nobody here can call it.
    let client = gate.client().ok_or(IpcError::NotExistent)?;
    if !call {
        send_out(client.as_fd(), head, None, out, deadline)?;
        return Ok(None);
    }
    let (mine, theirs) = seqpacket_pair().map_err(|_| IpcError::Aborted)?;
    let h = Head { seq: 1, ..head };
    send_out(client.as_fd(), h, Some(theirs.as_fd()), out, deadline)?;
    drop(theirs);
    Ok(Some(Channel {
        gate: Arc::downgrade(gate),
        fd: mine,
        seq: 1,
        mark: process_mark(),
    }))
}

/// Waits for the reply to the call just sent on `ch` and delivers it;
/// also says whether the channel may be used again.
fn receive_reply(
    utcb: &mut Utcb,
    ch: &Channel,
    deadline: Deadline,
) -> (Result<MsgTag, IpcError>, bool) {
    let nonblocking = !matches!(deadline, Deadline::Never);
    loop {
        if nonblocking {
            match wait_fd(ch.fd.as_fd(), PollFlags::IN, deadline) {
                Ok(true) => {}
                Ok(false) => return (Err(IpcError::RecvTimeout), false),
                Err(_) => return (Err(IpcError::Aborted), false),
            }
        }
        match recv_packet(ch.fd.as_fd(), nonblocking) {
            Ok(None) => return (Err(IpcError::NotExistent), false),
            Ok(Some(p)) => {
                let parsed = if p.truncated {
                    Err(wire::WireError::Truncated)
                } else {
                    wire::parse(p.bytes(), p.fds.len())
                };
                return match parsed {
                    Ok(parsed) if parsed.flags & !FLAG_ACCEPTED == 0 && parsed.seq == ch.seq => {
                        let keep = parsed.flags & FLAG_ACCEPTED != 0;
                        (deliver(utcb, &parsed, p.fds, true), keep)
                    }
                    Ok(parsed) => {
                        log::warn!(
                            "l4re host: dropped a reply with flags {:#x}, sequence number {} (expected {})",
                            parsed.flags,
                            parsed.seq,
                            ch.seq
                        );
                        (Err(IpcError::MsgCut), false)
                    }
                    Err(e) => {
                        log::warn!("l4re host: dropped a malformed reply ({e})");
                        (Err(IpcError::MsgCut), false)
                    }
                };
            }
            Err(Errno::AGAIN) => continue,
            Err(e) => {
                log::warn!("l4re host: receiving a reply failed: {e}");
                return (Err(IpcError::Aborted), false);
            }
        }
    }
}

/// `l4_ipc_call`.
pub(crate) fn ipc_call(
    dest: CapIdx,
    utcb: &mut Utcb,
    tag: MsgTag,
    timeout: Timeout,
) -> Result<MsgTag, IpcError> {
    let r = call(dest, utcb, tag, timeout);
    record(utcb, r)
}

fn call(dest: CapIdx, utcb: &mut Utcb, tag: MsgTag, timeout: Timeout) -> Result<MsgTag, IpcError> {
    let (gate, rights) = destination(dest)?;
    let out = outgoing(utcb, tag, rights)?;
    let head = Head {
        tag,
        rights,
        flags: 0,
        seq: 0,
    };
    let Some(ch) = send_request(&gate, head, &out, Deadline::new(timeout), true)? else {
        return Err(IpcError::Aborted);
    };
    // Hold nothing while waiting: the gate object holds the server end
    // when this task has it, and closing the gate must drop the request.
    drop(out);
    drop(gate);
    let (r, keep) = receive_reply(utcb, &ch, Deadline::new(timeout));
    if keep {
        put_channel(ch);
    }
    r
}

/// `l4_ipc_send`.
pub(crate) fn ipc_send(
    dest: CapIdx,
    utcb: &mut Utcb,
    tag: MsgTag,
    timeout: Timeout,
) -> Result<(), IpcError> {
    let r = (|| {
        let (gate, rights) = destination(dest)?;
        let out = outgoing(utcb, tag, rights)?;
        let head = Head {
            tag,
            rights,
            flags: 0,
            seq: 0,
        };
        if let Some(ch) = send_request(&gate, head, &out, Deadline::new(timeout), false)? {
            put_channel(ch);
        }
        Ok(())
    })();
    record(utcb, r)
}

// ---------------------------------------------------------------------------
// The server's side.

/// Where the reply to the request being served goes: the caller's
/// channel. Dropped unanswered, it drops the request: the channel is shut
/// down (and forgotten by its gate), so the caller sees `NotExistent`.
pub(super) struct ReplyTo {
    fd: Arc<OwnedFd>,
    seq: u32,
    /// The gate that keeps the channel, if it does (`FLAG_ACCEPTED`).
    keeper: Option<Weak<GateObj>>,
    answered: bool,
}

impl ReplyTo {
    /// The process that made the caller's channel (the caller).
    pub(super) fn peer_pid(&self) -> Option<u32> {
        super::objects::peer_pid(self.fd.as_fd())
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        match self.keeper.as_ref().and_then(Weak::upgrade) {
            Some(g) => g.remove_chan(&self.fd),
            None => shut_down(&self.fd),
        }
    }
}

/// `l4_ipc_wait`.
pub(crate) fn ipc_wait(utcb: &mut Utcb, timeout: Timeout) -> Result<Received, IpcError> {
    let r = wait(utcb, timeout);
    record(utcb, r)
}

/// `l4_ipc_reply_and_wait`.
pub(crate) fn ipc_reply_and_wait(
    utcb: &mut Utcb,
    reply: MsgTag,
    timeout: Timeout,
) -> Result<Received, IpcError> {
    let caller = with_thread(|t| t.reply.take())?;
    match caller {
        Some(to) => send_reply(utcb, to, reply),
        None => log::debug!("l4re host: reply without a caller (the request was a send)"),
    }
    let r = wait(utcb, timeout);
    record(utcb, r)
}

/// Replies to the last caller without waiting (`l4_ipc_send` to
/// `L4_SYSF_REPLY`).
pub(crate) fn ipc_reply(utcb: &mut Utcb, reply: MsgTag) -> Result<(), IpcError> {
    match with_thread(|t| t.reply.take())? {
        Some(to) => {
            send_reply(utcb, to, reply);
            Ok(())
        }
        None => Err(IpcError::NoReplyCap),
    }
}

fn send_reply(utcb: &mut Utcb, mut to: ReplyTo, tag: MsgTag) {
    let head = Head {
        tag,
        rights: CapRights::empty(),
        flags: if to.keeper.is_some() {
            FLAG_ACCEPTED
        } else {
            0
        },
        seq: to.seq,
    };
    let zero = Deadline::new(Timeout::Zero);
    let result = match outgoing(utcb, tag, CapRights::RWSD) {
        Ok(out) => send_out(to.fd.as_fd(), head, None, &out, zero),
        Err(e) => {
            // The caller must not wait forever for a reply we cannot
            // build: tell it what went wrong, as an error code.
            log::warn!("l4re host: reply not sent ({e}); answering the caller with an error");
            let out = Outgoing {
                msg: heapless::Vec::new(),
                descs: heapless::Vec::new(),
                fds: Vec::new(),
                grants: Vec::new(),
            };
            let err = MsgTag::new(Error::Ipc(e).code(), 0, 0, 0);
            send_out(to.fd.as_fd(), Head { tag: err, ..head }, None, &out, zero)
        }
    };
    match result {
        Ok(()) => to.answered = true,
        // Dropping `to` unanswered forgets the channel.
        Err(e) => log::debug!("l4re host: reply not delivered, the caller is gone ({e})"),
    }
}

fn wait(utcb: &mut Utcb, timeout: Timeout) -> Result<Received, IpcError> {
    let ep = with_thread(|t: &mut ThreadCtx| {
        // An unanswered request is dropped: its caller sees NotExistent.
        t.reply = None;
        t.ep.clone()
    })?;
    let deadline = Deadline::new(timeout);
    let mut events = [MaybeUninit::<epoll::Event>::uninit(); 1];
    loop {
        let key = match epoll::wait(&ep.epoll, &mut events, deadline.remaining().as_ref()) {
            Ok((ready, _)) => match ready.first() {
                Some(ev) => ev.data.u64(),
                None if deadline.expired() => return Err(IpcError::RecvTimeout),
                None => continue,
            },
            Err(Errno::INTR) => continue,
            Err(e) => {
                log::warn!("l4re host: epoll_wait failed: {e}");
                return Err(IpcError::Aborted);
            }
        };
        let (gate, label, chan) = {
            let entries = lock(&ep.entries);
            match entries.get(&key) {
                Some(e) => (e.gate.upgrade(), e.label, e.chan.clone()),
                None => continue,
            }
        };
        let Some(gate) = gate else { continue };
        let sock = match &chan {
            Some(c) => c.clone(),
            None => match gate.server() {
                Some(s) => s,
                None => continue,
            },
        };
        let p = match recv_packet(sock.as_fd(), true) {
            Ok(Some(p)) => p,
            Ok(None) => {
                match &chan {
                    // The caller closed its channel.
                    Some(c) => gate.remove_chan(c),
                    // Every client end is closed: nobody can call this gate.
                    None => {
                        gate.unbind();
                        lock(&ep.unreachable).push(label);
                    }
                }
                continue;
            }
            Err(Errno::AGAIN) => continue,
            Err(e) => {
                log::warn!("l4re host: receiving on a gate failed: {e}");
                if let Some(c) = &chan {
                    gate.remove_chan(c);
                }
                continue;
            }
        };
        let parsed = if p.truncated {
            Err(wire::WireError::Truncated)
        } else {
            wire::parse(p.bytes(), p.fds.len())
        };
        // Requests on a gate may bring a channel; requests on a channel
        // may be sends.
        let allowed = if chan.is_some() {
            FLAG_ONEWAY
        } else {
            FLAG_CHANNEL
        };
        let parsed = match parsed {
            Ok(parsed) if parsed.flags & !allowed == 0 => parsed,
            Ok(_) => {
                refuse(&p, &gate, chan.as_ref(), wire::WireError::BadHeader);
                continue;
            }
            Err(e) => {
                refuse(&p, &gate, chan.as_ref(), e);
                continue;
            }
        };
        let mut fds = p.fds;
        let reply = match chan {
            Some(fd) => (parsed.flags & FLAG_ONEWAY == 0).then(|| ReplyTo {
                fd,
                seq: parsed.seq,
                keeper: Some(Arc::downgrade(&gate)),
                answered: false,
            }),
            None if parsed.flags & FLAG_CHANNEL != 0 => {
                let fd = Arc::new(fds.remove(0));
                let kept = super::objects::is_seqpacket(fd.as_fd()) && gate.add_chan(&ep, &fd);
                Some(ReplyTo {
                    fd,
                    seq: parsed.seq,
                    keeper: kept.then(|| Arc::downgrade(&gate)),
                    answered: false,
                })
            }
            None => None,
        };
        // A request with a memory item we cannot place still arrives (the
        // item reads as missing); only a reply fails as a whole.
        let tag = deliver(utcb, &parsed, fds, false).unwrap_or(parsed.tag);
        with_thread(|t| t.reply = reply)?;
        return Ok(Received {
            tag,
            label: label | parsed.rights.label_bits(),
        });
    }
}

/// Drops a malformed request, answering its caller with an error if the
/// packet says where (on the channel it came on, or the new channel it
/// brought) and wants an answer. A channel that carried one is dropped.
fn refuse(p: &Packet, gate: &GateObj, chan: Option<&Arc<OwnedFd>>, e: wire::WireError) {
    log::warn!("l4re host: dropped a malformed request: {e}");
    let flags = wire::peek_flags(p.bytes());
    let target = match chan {
        Some(c) if flags & FLAG_ONEWAY == 0 => Some(c.as_fd()),
        Some(_) => None,
        None if flags & FLAG_CHANNEL != 0 => p.fds.first().map(|f| f.as_fd()),
        None => None,
    };
    if let Some(target) = target {
        let code = match e {
            wire::WireError::TooLong => Error::MsgTooLong,
            _ => Error::MsgTooShort,
        };
        let pkt = PacketBuf::new(
            MsgTag::new(code.code(), 0, 0, 0),
            CapRights::empty(),
            0,
            wire::peek_seq(p.bytes()),
            0,
            &[],
            &[],
        );
        let _ = send_packet(target, pkt.bytes(), &[], Deadline::new(Timeout::Zero));
    }
    if let Some(c) = chan {
        gate.remove_chan(c);
    }
}

/// A receive buffer from the buffer registers.
#[derive(Clone, Copy)]
enum Buf {
    Cap { slot: CapIdx, local_id: bool },
    Window(Fpage),
}

/// The buffer at `br[*at]`, advancing `at` past it; `None` at the end.
fn next_buffer(br: &[u64; BR_WORDS], at: &mut usize) -> Option<Buf> {
    let w = *br.get(*at)?;
    if w & ITEM_MAP == 0 {
        return None;
    }
    if w & 2 != 0 {
        *at += 1;
        return Some(Buf::Cap {
            slot: CapIdx(w & crate::cap::CAP_MASK),
            local_id: w & RCV_ITEM_LOCAL_ID != 0,
        });
    }
    let fp = *br.get(*at + 1)?;
    *at += 2;
    Some(Buf::Window(Fpage(fp)))
}

/// Writes a received message into `utcb` and applies its items. Errs
/// (with the data delivered and the item marked missing) only if `is_reply`
/// and a memory item could not be mapped.
fn deliver(
    utcb: &mut Utcb,
    p: &Parsed,
    fds: Vec<OwnedFd>,
    is_reply: bool,
) -> Result<MsgTag, IpcError> {
    let words = p.tag.words();
    let br = *utcb.br();
    let mr = utcb.mr();
    mr[..p.msg.len()].copy_from_slice(&p.msg);
    let mut fds = fds.into_iter();
    let mut at = 0usize;
    let mut cur: Option<Buf> = None;
    let mut reuse = false;
    let mut installs: Vec<(CapIdx, Entry)> = Vec::new();
    let mut map_failed = false;
    for (i, d) in p.descs.iter().enumerate() {
        let item_fds: Vec<OwnedFd> = fds.by_ref().take(d.nfds as usize).collect();
        let w = words + 2 * i;
        let item = SndFpage {
            base: p.msg[w],
            fpage: Fpage(p.msg[w + 1]),
        };
        if !item.is_valid() {
            mr[w] = 0;
            continue;
        }
        let buf = if reuse && cur.is_some() {
            cur
        } else {
            next_buffer(&br, &mut at)
        };
        cur = buf;
        reuse = item.is_compound();
        mr[w] = (item.base & !0xff7) | (item.fpage.0 & 0xff0);
        let ok = match item.fpage.ty() {
            FpageType::Obj if d.kind != Kind::Memory && d.kind != Kind::None => {
                let slot = match buf {
                    Some(Buf::Cap { slot, local_id }) => {
                        if let Some(label) = local_id.then(|| local_id_of(*d, &item_fds)).flatten()
                        {
                            mr[w] |= 0x4;
                            mr[w + 1] =
                                label | CapRights::from_bits_truncate(d.rights).label_bits();
                            continue;
                        }
                        Some(slot)
                    }
                    Some(Buf::Window(win)) if win.ty() == FpageType::Obj => {
                        Some(CapIdx(win.addr()))
                    }
                    _ => None,
                };
                match (slot.filter(|s| s.is_valid()), import(*d, item_fds)) {
                    (Some(slot), Some(entry)) => {
                        installs.push((slot, entry));
                        true
                    }
                    _ => false,
                }
            }
            FpageType::Memory => {
                let done = match (buf, d.kind) {
                    (Some(Buf::Window(win)), Kind::Memory) if win.ty() == FpageType::Memory => {
                        item_fds
                            .into_iter()
                            .next()
                            .is_some_and(|fd| map_item(item, *d, win, fd))
                    }
                    _ => false,
                };
                map_failed |= !done;
                done
            }
            _ => false,
        };
        if !ok {
            log::debug!(
                "l4re host: item {i} ({:?}) not received: no fitting receive buffer or bad object",
                d.kind
            );
            mr[w] = 0;
        }
    }
    if !installs.is_empty() {
        let mut table = lock(&process().table);
        let old: Vec<Entry> = installs
            .into_iter()
            .filter_map(|(slot, e)| table.install(slot, e))
            .collect();
        drop(table);
        drop(old);
    }
    if is_reply && map_failed {
        return Err(IpcError::MapFailed);
    }
    Ok(p.tag)
}

/// If an object item is a gate bound to a thread of this task, its label
/// (for `L4_RCV_ITEM_LOCAL_ID`).
fn local_id_of(d: Desc, fds: &[OwnedFd]) -> Option<u64> {
    if d.kind != Kind::Gate {
        return None;
    }
    let client = fds.first()?;
    super::objects::local_label_of(client.as_fd())
}

/// Maps a received memory item into the receive window `win`.
///
/// The window was announced by the receiving thread in its own buffer
/// registers; by doing so it declared that the range is its to replace
/// (typically a reserved `PROT_NONE` region or a pager's whole space), which
/// is what makes the `MAP_FIXED` below sound. A program must only announce
/// windows over memory it owns and does not reference through Rust
/// references.
fn map_item(item: SndFpage, d: Desc, win: Fpage, fd: OwnedFd) -> bool {
    let (src, dst, size) = fit_into_window(item, win);
    let Some(offset) = d.arg.checked_add(src - item.fpage.addr()) else {
        return false;
    };
    let rights = item.fpage.rights() & Rights::from_bits_truncate(d.rights);
    if rights.is_empty() || dst.checked_add(size).is_none() {
        return false;
    }
    let writable = rustix::fs::fcntl_getfl(&fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::RDWR));
    if rights.contains(Rights::W) && !writable {
        return false;
    }
    let Some(checked) = shm::check_memfd(fd.as_fd(), offset, size, writable) else {
        return false;
    };
    let mut prot = ProtFlags::empty();
    if rights.contains(Rights::R) {
        prot |= ProtFlags::READ;
    }
    if rights.contains(Rights::W) {
        prot |= ProtFlags::WRITE;
    }
    if rights.contains(Rights::X) {
        prot |= ProtFlags::EXEC;
    }
    let (Ok(dst_us), Ok(size_us)) = (usize::try_from(dst), usize::try_from(size)) else {
        return false;
    };
    // SAFETY: `[dst, dst + size)` lies inside a receive window the
    // receiving thread announced in its own UTCB (see the function docs):
    // the program handed that range over to incoming mappings, so no Rust
    // object lives there and replacing it breaks no reference. The fd is a
    // sealed memfd long enough for the range (checked above), so accesses
    // cannot fault with SIGBUS.
    let r = unsafe {
        rustix::mm::mmap(
            dst_us as *mut _,
            size_us,
            prot,
            MapFlags::SHARED | MapFlags::FIXED,
            &fd,
            offset,
        )
    };
    match r {
        Ok(_) => {
            // Keep the file (one fd per file) so the pages can be passed on.
            shm::register(dst, size, shm::MemFile::adopt(fd, checked), offset);
            true
        }
        Err(e) => {
            log::debug!("l4re host: mapping a memory item at {dst:#x}+{size:#x} failed: {e}");
            false
        }
    }
}
