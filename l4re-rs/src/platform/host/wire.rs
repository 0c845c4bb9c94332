//! The host IPC packet format.
//!
//! One IPC message is one `SOCK_SEQPACKET` datagram (atomic: concurrent
//! senders on the same gate never interleave) whose payload is a sequence of
//! native-endian 64-bit words, with the file descriptors that stand for
//! capabilities, memory and a new private channel attached as one
//! `SCM_RIGHTS` control message:
//!
//! ```text
//! word 0   MAGIC (u32) | VERSION (u16) << 32 | flags (u16) << 48
//!            flags: bit 0 = FLAG_CHANNEL: fd 0 is a new private channel
//!                     from the caller (a request on a gate); the reply and
//!                     the caller's later requests to the gate use it
//!                   bit 1 = FLAG_ACCEPTED: (a reply) the server keeps the
//!                     channel the request came on, or that it registered
//!                   bit 2 = FLAG_ONEWAY: (a request on a channel) a send,
//!                     which gets no reply
//! word 1   the message tag (label, word count W, item count I; flags cleared)
//! word 2   sender rights (u8, the W/S/R/D bits of the sending gate slot)
//!            | number of attached fds (u8) << 8
//!            | sequence number (u32) << 32: a call's number on its
//!              channel, echoed by the reply
//! W words  the untyped message words (mr[0..W])
//! 2I words the items as the sender wrote them (control word, flexpage),
//!            with object rights already reduced to what the sender may give
//! 2I words one descriptor per item:
//!            kind (u8) | fd count (u8) << 8 | rights (u8) << 16 ; argument
//! ```
//!
//! The descriptors say which of the attached fds belong to which item, in
//! order, after the channel fd: a gate is its client end (1 fd) plus its
//! server end (2 fds) when the S right is passed; a thread is the client end
//! of its own gate; a task is a pidfd; memory is a memfd whose offset (of
//! the flexpage's first byte) is the argument; the factory and the log need
//! no fd. Void items (no `L4_ITEM_MAP`) have kind `None` and no fds.
//!
//! Everything is checked on receipt by [`parse`]: magic and version, exact
//! length, word and item counts against the message registers, descriptor
//! kinds and per-kind fd counts, and that the fds attached match the header
//! and the descriptors. Nothing in a packet is trusted: a packet that fails
//! any check is dropped whole. Whether a flag makes sense where the packet
//! arrived (a gate, a channel, a reply) is checked by the transport.

use core::fmt;

use crate::cap::CapRights;
use crate::msg::{MAX_ITEMS, MsgTag};
use crate::utcb::MR_WORDS;

/// `"L4RH"` in the low 32 bits of word 0.
pub(super) const MAGIC: u32 = 0x4852_344c;
/// Format version.
pub(super) const VERSION: u16 = 2;
/// Header flag: the first attached fd is a new private channel from the
/// caller.
pub(super) const FLAG_CHANNEL: u16 = 1;
/// Header flag of a reply: the server keeps the caller's channel.
pub(super) const FLAG_ACCEPTED: u16 = 2;
/// Header flag of a request on a channel: a send, no reply wanted.
pub(super) const FLAG_ONEWAY: u16 = 4;
/// Every header flag.
const FLAGS: u16 = FLAG_CHANNEL | FLAG_ACCEPTED | FLAG_ONEWAY;
/// Words in the header.
pub(super) const HDR_WORDS: usize = 3;
/// Words per item descriptor.
pub(super) const DESC_WORDS: usize = 2;
/// Largest packet, in words.
pub(super) const MAX_PACKET_WORDS: usize = HDR_WORDS + MR_WORDS + DESC_WORDS * MAX_ITEMS;
/// Largest packet, in bytes.
pub(super) const MAX_PACKET_BYTES: usize = MAX_PACKET_WORDS * 8;
/// Most fds one packet carries: the channel fd and two per item.
pub(super) const MAX_FDS: usize = 1 + 2 * MAX_ITEMS;

/// What an item carries on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    /// A void item or one that carries nothing.
    None = 0,
    /// An IPC gate: client end, and the server end with the S right.
    Gate = 1,
    /// A thread: the client end of the thread's own gate.
    Thread = 2,
    /// A task: a pidfd.
    Task = 3,
    /// The factory (each task has its own on the host).
    Factory = 4,
    /// The log (each task writes to its own stderr).
    Log = 5,
    /// Memory: a memfd; the argument is the file offset of the flexpage.
    Memory = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0 => Kind::None,
            1 => Kind::Gate,
            2 => Kind::Thread,
            3 => Kind::Task,
            4 => Kind::Factory,
            5 => Kind::Log,
            6 => Kind::Memory,
            _ => return None,
        })
    }

    /// Whether `n` fds is a valid count for this kind.
    fn fds_ok(self, n: u8) -> bool {
        match self {
            Kind::None | Kind::Factory | Kind::Log => n == 0,
            Kind::Gate => n == 1 || n == 2,
            Kind::Thread | Kind::Task | Kind::Memory => n == 1,
        }
    }
}

/// The host side of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Desc {
    /// What the item carries.
    pub kind: Kind,
    /// How many of the attached fds belong to it.
    pub nfds: u8,
    /// Object rights (capabilities) or memory rights.
    pub rights: u8,
    /// Kind-specific argument (memfd offset for memory).
    pub arg: u64,
}

impl Desc {
    /// The descriptor of an item that carries nothing.
    pub const NONE: Desc = Desc {
        kind: Kind::None,
        nfds: 0,
        rights: 0,
        arg: 0,
    };

    fn encode(self) -> [u64; 2] {
        [
            self.kind as u64 | (self.nfds as u64) << 8 | (self.rights as u64) << 16,
            self.arg,
        ]
    }

    fn decode(w: [u64; 2]) -> Result<Desc, WireError> {
        if w[0] >> 24 != 0 {
            return Err(WireError::BadDesc);
        }
        let kind = Kind::from_u8(w[0] as u8).ok_or(WireError::BadDesc)?;
        let nfds = (w[0] >> 8) as u8;
        if !kind.fds_ok(nfds) {
            return Err(WireError::BadDesc);
        }
        Ok(Desc {
            kind,
            nfds,
            rights: (w[0] >> 16) as u8,
            arg: w[1],
        })
    }
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WireError {
    /// Not a packet of this format.
    BadMagic,
    /// Another version of the format.
    BadVersion,
    /// Unknown header flags or reserved bits set.
    BadHeader,
    /// The length does not match the header.
    BadLength,
    /// More words and items than the message registers hold.
    TooLong,
    /// An item descriptor is invalid.
    BadDesc,
    /// The attached fds do not match the header and descriptors.
    FdMismatch,
    /// The kernel truncated the data or the fds.
    Truncated,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::BadMagic => "bad magic",
            WireError::BadVersion => "unsupported version",
            WireError::BadHeader => "bad header",
            WireError::BadLength => "length does not match the header",
            WireError::TooLong => "more words/items than the message registers hold",
            WireError::BadDesc => "bad item descriptor",
            WireError::FdMismatch => "attached fds do not match the descriptors",
            WireError::Truncated => "truncated by the kernel",
        })
    }
}

/// A packet being built in a fixed buffer.
pub(super) struct PacketBuf {
    buf: [u8; MAX_PACKET_BYTES],
    len: usize,
}

impl PacketBuf {
    /// Builds the packet for a message: `msg` holds the data words followed
    /// by the item words, `descs` one descriptor per item; `flags` are the
    /// header flags (`FLAG_*`), `seq` the sequence number.
    ///
    /// The caller guarantees `tag.words() + 2 * tag.items() == msg.len()`,
    /// `descs.len() == tag.items()` and `msg.len() <= MR_WORDS`.
    pub fn new(
        tag: MsgTag,
        rights: CapRights,
        flags: u16,
        seq: u32,
        nfds: usize,
        msg: &[u64],
        descs: &[Desc],
    ) -> Self {
        debug_assert_eq!(msg.len(), tag.words() + 2 * tag.items());
        debug_assert_eq!(descs.len(), tag.items());
        debug_assert!(nfds <= MAX_FDS);
        let mut p = PacketBuf {
            buf: [0; MAX_PACKET_BYTES],
            len: 0,
        };
        debug_assert_eq!(flags & !FLAGS, 0);
        p.push(MAGIC as u64 | (VERSION as u64) << 32 | (flags as u64) << 48);
        p.push(MsgTag::new(tag.label(), tag.words(), tag.items(), 0).0);
        p.push(rights.bits() as u64 | (nfds as u64) << 8 | (seq as u64) << 32);
        for w in msg {
            p.push(*w);
        }
        for d in descs {
            for w in d.encode() {
                p.push(w);
            }
        }
        p
    }

    fn push(&mut self, w: u64) {
        self.buf[self.len..self.len + 8].copy_from_slice(&w.to_ne_bytes());
        self.len += 8;
    }

    /// The packet bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A checked packet.
#[derive(Debug)]
pub(super) struct Parsed {
    /// The tag (flags cleared).
    pub tag: MsgTag,
    /// The rights of the sender's gate slot.
    pub rights: CapRights,
    /// The header flags (`FLAG_*`).
    pub flags: u16,
    /// The sequence number.
    pub seq: u32,
    /// Data words, then item words.
    pub msg: heapless::Vec<u64, MR_WORDS>,
    /// One descriptor per item.
    pub descs: heapless::Vec<Desc, MAX_ITEMS>,
}

fn word(bytes: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
    u64::from_ne_bytes(b)
}

/// The header flags of a possibly malformed packet (0 if it has no
/// header), to answer it: whether its first fd is a new channel, whether
/// it wants a reply.
pub(super) fn peek_flags(bytes: &[u8]) -> u16 {
    if bytes.len() >= 8 && word(bytes, 0) as u32 == MAGIC {
        (word(bytes, 0) >> 48) as u16
    } else {
        0
    }
}

/// The sequence number of a possibly malformed packet (0 if it has none),
/// to answer it.
pub(super) fn peek_seq(bytes: &[u8]) -> u32 {
    if bytes.len() >= HDR_WORDS * 8 {
        (word(bytes, 2) >> 32) as u32
    } else {
        0
    }
}

/// Checks a received packet of `bytes` that came with `nfds` fds.
pub(super) fn parse(bytes: &[u8], nfds: usize) -> Result<Parsed, WireError> {
    if bytes.len() < HDR_WORDS * 8 || bytes.len() % 8 != 0 {
        return Err(if bytes.len() >= 8 && word(bytes, 0) as u32 != MAGIC {
            WireError::BadMagic
        } else {
            WireError::BadLength
        });
    }
    let w0 = word(bytes, 0);
    if w0 as u32 != MAGIC {
        return Err(WireError::BadMagic);
    }
    if (w0 >> 32) as u16 != VERSION {
        return Err(WireError::BadVersion);
    }
    let flags = (w0 >> 48) as u16;
    if flags & !FLAGS != 0 {
        return Err(WireError::BadHeader);
    }
    let tag = MsgTag(word(bytes, 1));
    let w2 = word(bytes, 2);
    if (w2 >> 16) as u16 != 0 {
        return Err(WireError::BadHeader);
    }
    let rights = CapRights::from_bits_truncate(w2 as u8);
    let hdr_fds = (w2 >> 8) as u8 as usize;
    let (words, items) = (tag.words(), tag.items());
    if words + 2 * items > MR_WORDS {
        return Err(WireError::TooLong);
    }
    let total = HDR_WORDS + words + 2 * items + DESC_WORDS * items;
    if bytes.len() != total * 8 {
        return Err(WireError::BadLength);
    }
    let channel = flags & FLAG_CHANNEL != 0;
    let mut msg = heapless::Vec::new();
    for i in 0..words + 2 * items {
        // Cannot fail: bounded by MR_WORDS above.
        let _ = msg.push(word(bytes, HDR_WORDS + i));
    }
    let mut descs = heapless::Vec::new();
    let mut item_fds = 0usize;
    for i in 0..items {
        let at = HDR_WORDS + words + 2 * items + DESC_WORDS * i;
        let d = Desc::decode([word(bytes, at), word(bytes, at + 1)])?;
        item_fds += d.nfds as usize;
        // Cannot fail: items <= MR_WORDS / 2 == MAX_ITEMS.
        let _ = descs.push(d);
    }
    if hdr_fds != nfds || item_fds + channel as usize != nfds {
        return Err(WireError::FdMismatch);
    }
    Ok(Parsed {
        tag: MsgTag::new(tag.label(), words, items, 0),
        rights,
        flags,
        seq: (w2 >> 32) as u32,
        msg,
        descs,
    })
}

/// A little writer of word sequences with byte strings, for the bootstrap
/// packet.
#[derive(Default)]
pub(super) struct Words(pub Vec<u64>);

impl Words {
    /// Appends a word.
    pub fn word(&mut self, w: u64) {
        self.0.push(w);
    }

    /// Appends a length word and the bytes, padded to whole words.
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.push(b.len() as u64);
        for chunk in b.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0.push(u64::from_ne_bytes(w));
        }
    }

    /// Appends a descriptor.
    pub fn desc(&mut self, d: Desc) {
        self.0.extend_from_slice(&d.encode());
    }

    /// The bytes to send.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
}

/// A bounds-checked reader of the same.
pub(super) struct WordReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> WordReader<'a> {
    /// Reads `bytes` (whose length must be a multiple of 8, else every read
    /// past the last whole word fails).
    pub fn new(bytes: &'a [u8]) -> Self {
        WordReader { bytes, at: 0 }
    }

    /// The next word.
    pub fn word(&mut self) -> Option<u64> {
        if self.at + 8 > self.bytes.len() {
            return None;
        }
        let w = word(self.bytes, self.at / 8);
        self.at += 8;
        Some(w)
    }

    /// The next byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Option<&'a [u8]> {
        let len = usize::try_from(self.word()?).ok()?;
        if len > max {
            return None;
        }
        let padded = len.div_ceil(8) * 8;
        if self.at + padded > self.bytes.len() {
            return None;
        }
        let b = &self.bytes[self.at..self.at + len];
        self.at += padded;
        Some(b)
    }

    /// The next descriptor.
    pub fn desc(&mut self) -> Option<Desc> {
        let w = [self.word()?, self.word()?];
        Desc::decode(w).ok()
    }

    /// Whether everything was read.
    pub fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PacketBuf {
        let tag = MsgTag::new(-5, 2, 1, 0x8000);
        let msg = [1, 2, 8, 0x5033];
        let descs = [Desc {
            kind: Kind::Gate,
            nfds: 2,
            rights: 7,
            arg: 0,
        }];
        PacketBuf::new(
            tag,
            CapRights::RW,
            FLAG_CHANNEL,
            0xdead_beef,
            3,
            &msg,
            &descs,
        )
    }

    #[test]
    fn round_trip() {
        let p = sample();
        let parsed = parse(p.bytes(), 3).unwrap();
        assert_eq!(parsed.tag, MsgTag::new(-5, 2, 1, 0));
        assert_eq!(parsed.rights, CapRights::RW);
        assert_eq!(parsed.flags, FLAG_CHANNEL);
        assert_eq!(parsed.seq, 0xdead_beef);
        assert_eq!(&parsed.msg[..], &[1, 2, 8, 0x5033]);
        assert_eq!(
            parsed.descs[0],
            Desc {
                kind: Kind::Gate,
                nfds: 2,
                rights: 7,
                arg: 0
            }
        );
        assert_eq!(peek_flags(p.bytes()), FLAG_CHANNEL);
        assert_eq!(peek_seq(p.bytes()), 0xdead_beef);
    }

    #[test]
    fn rejects_malformed() {
        let p = sample();
        let good = p.bytes().to_vec();
        // fd count mismatch
        assert_eq!(parse(&good, 2).unwrap_err(), WireError::FdMismatch);
        // truncated / extended
        assert!(parse(&good[..good.len() - 8], 3).is_err());
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 8]);
        assert_eq!(parse(&longer, 3).unwrap_err(), WireError::BadLength);
        assert!(parse(&good[..5], 3).is_err());
        assert!(parse(&[], 0).is_err());
        // bad magic, version
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert_eq!(parse(&bad, 3).unwrap_err(), WireError::BadMagic);
        let mut bad = good.clone();
        bad[4] ^= 1;
        assert_eq!(parse(&bad, 3).unwrap_err(), WireError::BadVersion);
        // too many words for the registers
        let mut bad = good.clone();
        bad[8..16].copy_from_slice(&MsgTag::new(0, 63, 1, 0).0.to_ne_bytes());
        assert_eq!(parse(&bad, 3).unwrap_err(), WireError::TooLong);
        // unknown flag, reserved bits between the fd count and the sequence
        let mut bad = good.clone();
        bad[7] |= 0x80;
        assert_eq!(parse(&bad, 3).unwrap_err(), WireError::BadHeader);
        let mut bad = good.clone();
        bad[18] = 1;
        assert_eq!(parse(&bad, 3).unwrap_err(), WireError::BadHeader);
        // descriptor with an impossible fd count
        let mut bad = good.clone();
        let at = (HDR_WORDS + 4) * 8;
        bad[at..at + 8].copy_from_slice(&(Kind::Log as u64 | 1 << 8).to_ne_bytes());
        assert_eq!(parse(&bad, 3).unwrap_err(), WireError::BadDesc);
        // unknown kind
        bad[at..at + 8].copy_from_slice(&(99u64).to_ne_bytes());
        assert_eq!(parse(&bad, 3).unwrap_err(), WireError::BadDesc);
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: random lengths and words.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let mut b = Vec::with_capacity(len);
            let mut y = x;
            for i in 0..len {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b.push((y >> 33) as u8);
                if i < 4 && x & 1 == 0 {
                    b[i] = MAGIC.to_ne_bytes()[i];
                }
            }
            let _ = parse(&b, (x >> 8) as usize % 5);
            let _ = peek_flags(&b);
            let _ = peek_seq(&b);
            let mut r = WordReader::new(&b);
            let _ = r.bytes(64);
            let _ = r.desc();
        }
    }

    #[test]
    fn words_round_trip() {
        let mut w = Words::default();
        w.word(7);
        w.bytes(b"hello world");
        w.desc(Desc {
            kind: Kind::Memory,
            nfds: 1,
            rights: 4,
            arg: 0x1000,
        });
        let bytes = w.to_bytes();
        let mut r = WordReader::new(&bytes);
        assert_eq!(r.word(), Some(7));
        assert_eq!(r.bytes(64), Some(&b"hello world"[..]));
        assert_eq!(
            r.desc(),
            Some(Desc {
                kind: Kind::Memory,
                nfds: 1,
                rights: 4,
                arg: 0x1000
            })
        );
        assert!(r.at_end());
        let mut r = WordReader::new(&bytes);
        r.word();
        assert_eq!(r.bytes(4), None);
    }
}
