//! Message tags and the marshalling of L4Re's C++ IPC framework.
//!
//! The layout is exactly that of `l4sys/include/cxx/ipc_basics`,
//! `ipc_array`, `ipc_string` and `ipc_types`, so that our clients and
//! servers talk to stock L4Re programs:
//!
//! * A request starts with the opcode, an `int` (4 bytes), at byte 0 of the
//!   message registers; protocols without opcodes (the page-fault protocol)
//!   start with their first argument.
//! * Each data argument is aligned to its natural alignment (its size, for
//!   scalars) and written in native byte order. `bool` is one byte.
//! * An array (`L4::Ipc::Array<T, LEN>`) is its length, of type `LEN`
//!   (`unsigned short` by default), then the elements aligned to `T`. A
//!   string (`L4::Ipc::String<>`) is an array of `char` with an
//!   `unsigned long` length that counts the terminating NUL.
//! * Data ends at the next word boundary: that is the tag's word count. The
//!   items (two words each: control word, flexpage) follow in the next
//!   message registers, in argument order; the tag counts them.
//! * Receive buffers (`Rcv_fpage`: two words, `Small_buf`: one word) go into
//!   the buffer registers from `br[0]`, followed by a zero word.
//! * A reply carries no opcode: its label is the return code (`>= 0`
//!   success, `-L4_E…` failure) and its out-values follow the same rules.
//!
//! [`Marshal`] is implemented for the argument types; every read checks
//! bounds and validity and returns [`Error::MsgTooShort`] and friends
//! instead of trusting the sender.

use alloc::string::String;
use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::cap::{Cap, CapIdx, CapKind, CapRights};
use crate::error::{Error, Result};
use crate::fpage::{MapType, RcvBuf, SndFpage};
use crate::utcb::{BR_WORDS, MR_BYTES, MR_WORDS, Utcb};

/// A message tag (`l4_msgtag_t`): label, word and item counts, flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct MsgTag(pub u64);

/// Tag flag: the IPC failed; the error code is in the UTCB (`L4_MSGTAG_ERROR`).
pub const MSGTAG_ERROR: u64 = 0x8000;
/// Tag flag mask (`L4_MSGTAG_FLAGS`).
pub const MSGTAG_FLAGS: u64 = 0xf000;

impl MsgTag {
    /// Builds a tag (`l4_msgtag`).
    pub const fn new(label: i64, words: usize, items: usize, flags: u64) -> Self {
        MsgTag(
            ((label as u64) << 16)
                | (flags & MSGTAG_FLAGS)
                | ((items as u64 & 0x3f) << 6)
                | (words as u64 & 0x3f),
        )
    }

    /// The label: the protocol of a request, the return code of a reply.
    pub const fn label(self) -> i64 {
        (self.0 as i64) >> 16
    }

    /// Number of untyped words.
    pub const fn words(self) -> usize {
        (self.0 & 0x3f) as usize
    }

    /// Number of items.
    pub const fn items(self) -> usize {
        ((self.0 >> 6) & 0x3f) as usize
    }

    /// The flag bits.
    pub const fn flags(self) -> u64 {
        self.0 & MSGTAG_FLAGS
    }

    /// Whether the kernel reported an IPC error.
    pub const fn has_error(self) -> bool {
        self.0 & MSGTAG_ERROR != 0
    }
}

impl core::fmt::Debug for MsgTag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "MsgTag(label={}, words={}, items={}, flags={:#x})",
            self.label(),
            self.words(),
            self.items(),
            self.flags()
        )
    }
}

/// Most items one message can carry.
pub const MAX_ITEMS: usize = MR_WORDS / 2;

const fn align_up(off: usize, align: usize) -> usize {
    (off + align - 1) & !(align - 1)
}

/// Stores a scalar of `N` bytes at byte `off` of the message registers,
/// little-endian as the registers are laid out. `off` is a multiple of `N`
/// (natural alignment), so a scalar of up to 8 bytes lies in one word and
/// is stored with one masked write: this is on every IPC's path.
fn put_scalar_at<const N: usize>(mr: &mut [u64; MR_WORDS], off: usize, bytes: [u8; N]) {
    if N <= 8 && N.is_power_of_two() {
        let mut word = [0u8; 8];
        word[..N].copy_from_slice(&bytes);
        let value = u64::from_le_bytes(word);
        let (w, shift) = (off / 8, (off % 8) * 8);
        let mask = if N == 8 {
            !0
        } else {
            ((1u64 << (N * 8)) - 1) << shift
        };
        mr[w] = (mr[w] & !mask) | (value << shift);
    } else {
        put_bytes(mr, off, &bytes);
    }
}

/// Loads what [`put_scalar_at`] stored.
fn get_scalar_at<const N: usize>(mr: &[u64; MR_WORDS], off: usize) -> [u8; N] {
    let mut b = [0u8; N];
    if N <= 8 && N.is_power_of_two() {
        let word = (mr[off / 8] >> ((off % 8) * 8)).to_le_bytes();
        b.copy_from_slice(&word[..N]);
    } else {
        get_bytes(mr, off, &mut b);
    }
    b
}

fn put_bytes(mr: &mut [u64; MR_WORDS], off: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        let at = off + i;
        let (w, s) = (at / 8, (at % 8) * 8);
        mr[w] = (mr[w] & !(0xffu64 << s)) | ((*b as u64) << s);
    }
}

fn get_bytes(mr: &[u64; MR_WORDS], off: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let at = off + i;
        *b = (mr[at / 8] >> ((at % 8) * 8)) as u8;
    }
}

/// Writes a message into the UTCB: data from byte 0, items staged and placed
/// after the data, receive buffers into the buffer registers.
///
/// Items are staged at the top of the message registers, the last one
/// lowest, and moved behind the data by [`finish`](Self::finish); data may
/// grow up to the staged items. The writer itself is a few words: it is on
/// the path of every IPC.
pub struct MsgWriter<'u> {
    utcb: &'u mut Utcb,
    off: usize,
    items: usize,
    br: usize,
}

impl<'u> MsgWriter<'u> {
    /// Starts an empty message.
    pub fn new(utcb: &'u mut Utcb) -> Self {
        MsgWriter {
            utcb,
            off: 0,
            items: 0,
            br: 0,
        }
    }

    /// Bytes data may take: the registers below the staged items.
    fn data_limit(&self) -> usize {
        (MR_WORDS - 2 * self.items) * 8
    }

    /// Byte offset of the next data value.
    pub fn offset(&self) -> usize {
        self.off
    }

    /// Appends a scalar's bytes at its natural alignment.
    pub fn put_scalar<const N: usize>(&mut self, bytes: [u8; N]) -> Result<()> {
        let off = align_up(self.off, N);
        if off + N > self.data_limit() {
            return Err(Error::MsgTooLong);
        }
        put_scalar_at(self.utcb.mr(), off, bytes);
        self.off = off + N;
        Ok(())
    }

    /// Appends an array: length of type `L`, then the elements aligned to
    /// their size.
    pub fn put_array<T: Scalar, L: LenType>(&mut self, elems: &[T]) -> Result<()> {
        let len = L::from_usize(elems.len()).ok_or(Error::MsgTooLong)?;
        len.put(self)?;
        let off = align_up(self.off, T::SIZE);
        let end = elems
            .len()
            .checked_mul(T::SIZE)
            .and_then(|n| n.checked_add(off))
            .ok_or(Error::MsgTooLong)?;
        if end > self.data_limit() {
            return Err(Error::MsgTooLong);
        }
        let mr = self.utcb.mr();
        let mut at = off;
        for e in elems {
            e.store(mr, at);
            at += T::SIZE;
        }
        self.off = end;
        Ok(())
    }

    /// Appends an item (placed after the data when the message is finished).
    pub fn put_item(&mut self, item: SndFpage) -> Result<()> {
        let n = self.items + 1;
        if align_up(self.off, 8) / 8 + 2 * n > MR_WORDS {
            return Err(Error::MsgTooLong);
        }
        let at = MR_WORDS - 2 * n;
        let mr = self.utcb.mr();
        mr[at] = item.base;
        mr[at + 1] = item.fpage.0;
        self.items = n;
        Ok(())
    }

    /// Appends a receive buffer to the buffer registers.
    #[inline]
    pub fn put_buffer(&mut self, buf: RcvBuf) -> Result<()> {
        let (words, len) = match buf {
            RcvBuf::Window(fp) => ([crate::fpage::ITEM_MAP, fp.0], 2),
            RcvBuf::Cap { slot, local_id } => {
                let lid = if local_id {
                    crate::fpage::RCV_ITEM_LOCAL_ID
                } else {
                    0
                };
                ([slot.0 | crate::fpage::RCV_ITEM_SINGLE_CAP | lid, 0], 1)
            }
        };
        // Leave room for the terminating zero word.
        if self.br + len + 1 > BR_WORDS {
            return Err(Error::MsgTooLong);
        }
        let at = self.br;
        let br = self.utcb.br();
        br[at] = words[0];
        if len == 2 {
            br[at + 1] = words[1];
        }
        self.br += len;
        Ok(())
    }

    /// Finishes the message: aligns the data to words, places the items after
    /// it, terminates the buffer registers, and returns the tag.
    #[inline]
    pub fn finish(self, label: i64) -> Result<MsgTag> {
        let words = align_up(self.off, 8) / 8;
        let n = self.items;
        if words + 2 * n > MR_WORDS {
            return Err(Error::MsgTooLong);
        }
        // Clear the padding of the last data word so messages are
        // deterministic (C++ leaves it undefined; nobody may read it).
        if self.off % 8 != 0 {
            let w = self.off / 8;
            let keep = (1u64 << ((self.off % 8) * 8)) - 1;
            self.utcb.mr()[w] &= keep;
        }
        // The staged items in their order (item i was staged at
        // MR_WORDS - 2(i + 1)), then behind the data.
        if n > 0 {
            let mr = self.utcb.mr();
            let staged = MR_WORDS - 2 * n;
            for i in 0..n / 2 {
                let (a, b) = (MR_WORDS - 2 * (i + 1), staged + 2 * i);
                mr.swap(a, b);
                mr.swap(a + 1, b + 1);
            }
            mr.copy_within(staged..MR_WORDS, words);
        }
        *self.utcb.bdr() = 0;
        if self.br < BR_WORDS {
            self.utcb.br()[self.br] = 0;
        }
        Ok(MsgTag::new(label, words, n, 0))
    }
}

/// Cap slots in which a server has announced it receives capabilities,
/// consumed in order as capability items are read.
#[derive(Debug, Default)]
pub struct RcvCapSlots {
    slots: heapless::Vec<CapIdx, 4>,
    next: usize,
}

impl RcvCapSlots {
    /// Slots that were written as `Small_buf`s into the buffer registers, in
    /// order.
    pub fn new(slots: &[CapIdx]) -> Self {
        RcvCapSlots {
            slots: heapless::Vec::from_slice(&slots[..slots.len().min(4)]).unwrap(),
            next: 0,
        }
    }

    /// How many slots were taken by received capabilities.
    pub fn consumed(&self) -> usize {
        self.next
    }

    fn take(&mut self) -> Option<CapIdx> {
        let s = self.slots.get(self.next).copied();
        if s.is_some() {
            self.next += 1;
        }
        s
    }
}

/// Reads a received message from the UTCB with bounds checks.
pub struct MsgReader<'u> {
    utcb: &'u mut Utcb,
    off: usize,
    limit: usize,
    item: usize,
    items: usize,
    words: usize,
    label: i64,
    rcv_caps: Option<&'u mut RcvCapSlots>,
}

impl<'u> MsgReader<'u> {
    /// Reads the message described by `tag`. Fails if the tag claims more
    /// words and items than the message registers hold.
    pub fn new(utcb: &'u mut Utcb, tag: MsgTag) -> Result<Self> {
        if tag.words() + 2 * tag.items() > MR_WORDS {
            return Err(Error::MsgTooLong);
        }
        Ok(MsgReader {
            utcb,
            off: 0,
            limit: tag.words() * 8,
            item: 0,
            items: tag.items(),
            words: tag.words(),
            label: tag.label(),
            rcv_caps: None,
        })
    }

    /// Also hands out the slots in which capability items were received.
    pub fn with_rcv_caps(mut self, slots: &'u mut RcvCapSlots) -> Self {
        self.rcv_caps = Some(slots);
        self
    }

    /// Byte offset of the next data value.
    pub fn offset(&self) -> usize {
        self.off
    }

    /// The label of the message being read.
    pub fn label(&self) -> i64 {
        self.label
    }

    /// Bytes of data not read yet.
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.off)
    }

    /// Items not read yet.
    pub fn remaining_items(&self) -> usize {
        self.items - self.item
    }

    /// Whether a value of `size` bytes (aligned to `align`) is still there.
    pub fn has(&self, size: usize, align: usize) -> bool {
        align_up(self.off, align) + size <= self.limit
    }

    /// Reads a scalar's bytes at its natural alignment.
    pub fn get_scalar<const N: usize>(&mut self) -> Result<[u8; N]> {
        let off = align_up(self.off, N);
        if off + N > self.limit {
            return Err(Error::MsgTooShort);
        }
        let b = get_scalar_at(self.utcb.mr_ref(), off);
        self.off = off + N;
        Ok(b)
    }

    /// Reads an array written by [`MsgWriter::put_array`].
    pub fn get_array<T: Scalar, L: LenType>(&mut self) -> Result<Vec<T>> {
        let len = L::get(self)?.to_usize();
        let off = align_up(self.off, T::SIZE);
        let end = len
            .checked_mul(T::SIZE)
            .and_then(|n| n.checked_add(off))
            .ok_or(Error::MsgTooShort)?;
        if end > self.limit {
            return Err(Error::MsgTooShort);
        }
        let mr = self.utcb.mr();
        let mut v = Vec::with_capacity(len);
        let mut at = off;
        for _ in 0..len {
            v.push(T::load(mr, at));
            at += T::SIZE;
        }
        self.off = end;
        Ok(v)
    }

    /// The next item, without reading it.
    pub fn next_item(&self) -> Option<SndFpage> {
        if self.item >= self.items {
            return None;
        }
        let w = self.words + 2 * self.item;
        let mr = self.utcb.mr_ref();
        Some(SndFpage {
            base: mr[w],
            fpage: crate::fpage::Fpage(mr[w + 1]),
        })
    }

    /// Reads the next item.
    #[inline]
    pub fn get_item(&mut self) -> Result<SndFpage> {
        if self.item >= self.items {
            return Err(Error::MsgMissArg);
        }
        let w = self.words + 2 * self.item;
        let mr = self.utcb.mr();
        // Two separate word loads (volatile: never one vector load, which
        // an FPU-free page-fault handler must not execute).
        let (base, fpage) = (&mr[w] as *const u64, &mr[w + 1] as *const u64);
        // SAFETY: both point into the message registers, borrowed here.
        let it = unsafe {
            SndFpage {
                base: base.read_volatile(),
                fpage: crate::fpage::Fpage(fpage.read_volatile()),
            }
        };
        self.item += 1;
        Ok(it)
    }

    /// Reads the next item as a received capability: one mapped into the
    /// next receive slot, or (a local-id receive from the same task) the
    /// sender's own capability index, which takes no slot.
    pub fn get_cap(&mut self) -> Result<ReceivedCap> {
        let it = self.get_item()?;
        if it.local_id_received() {
            return Ok(ReceivedCap {
                idx: it.local_cap(),
                item: it,
            });
        }
        if !it.cap_received() {
            return Err(Error::MsgMissArg);
        }
        let slot = self
            .rcv_caps
            .as_mut()
            .and_then(|s| s.take())
            .ok_or(Error::MsgMissArg)?;
        Ok(ReceivedCap {
            idx: slot,
            item: it,
        })
    }
}

/// A type that can be an argument or result of an IPC call.
///
/// `write` is what the sending side does with a value, `read` what the
/// receiving side gets back: for most types the same type
/// (`Decoded = Self`); borrowed arguments (`&str`, `&[T]`) decode into owned
/// ones, capabilities into the slot where they arrived.
pub trait Marshal {
    /// What the receiving side gets.
    type Decoded;
    /// Writes the value (data, item or buffer, as its class says).
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()>;
    /// Reads a value.
    fn read(r: &mut MsgReader<'_>) -> Result<Self::Decoded>;
    /// The label of a reply that carries this value (0, success, for all
    /// but [`WithCode`](crate::rpc::WithCode)).
    fn reply_label(&self) -> i64 {
        0
    }
}

/// A fixed-size value that is copied into the message registers as it is.
pub trait Scalar: Copy {
    /// Size (and alignment) in bytes.
    const SIZE: usize;
    /// Stores the value at byte offset `at`.
    fn store(self, mr: &mut [u64; MR_WORDS], at: usize);
    /// Loads a value from byte offset `at`.
    fn load(mr: &[u64; MR_WORDS], at: usize) -> Self;
}

macro_rules! scalars {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            fn store(self, mr: &mut [u64; MR_WORDS], at: usize) {
                put_bytes(mr, at, &self.to_ne_bytes());
            }
            fn load(mr: &[u64; MR_WORDS], at: usize) -> Self {
                let mut b = [0u8; core::mem::size_of::<$t>()];
                get_bytes(mr, at, &mut b);
                <$t>::from_ne_bytes(b)
            }
        }
        impl Marshal for $t {
            type Decoded = $t;
            fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
                w.put_scalar(self.to_ne_bytes())
            }
            fn read(r: &mut MsgReader<'_>) -> Result<$t> {
                Ok(<$t>::from_ne_bytes(r.get_scalar()?))
            }
        }
    )*};
}
scalars!(u8, u16, u32, u64, i8, i16, i32, i64, usize, isize);

impl Marshal for bool {
    type Decoded = bool;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        w.put_scalar([*self as u8])
    }
    fn read(r: &mut MsgReader<'_>) -> Result<bool> {
        match r.get_scalar::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(Error::Inval),
        }
    }
}

/// The integer type of an array's length field.
pub trait LenType: Copy + Marshal<Decoded = Self> {
    /// Converts a length, if it fits.
    fn from_usize(n: usize) -> Option<Self>;
    /// The length as `usize`.
    fn to_usize(self) -> usize;
    /// Writes the length.
    fn put(self, w: &mut MsgWriter<'_>) -> Result<()> {
        self.write(w)
    }
    /// Reads a length.
    fn get(r: &mut MsgReader<'_>) -> Result<Self> {
        Self::read(r)
    }
}
macro_rules! len_types {
    ($($t:ty),*) => {$(
        impl LenType for $t {
            fn from_usize(n: usize) -> Option<Self> { <$t>::try_from(n).ok() }
            fn to_usize(self) -> usize { self as usize }
        }
    )*};
}
len_types!(u8, u16, u32, u64, usize);

/// `L4::Ipc::Array<T, LEN>` of borrowed elements, with an explicit length
/// type. `&[T]` is the same with `LEN = u16`, L4Re's default.
pub struct Array<'a, T, L = u16>(pub &'a [T], PhantomData<L>);

impl<'a, T, L> Array<'a, T, L> {
    /// Wraps a slice.
    pub fn new(elems: &'a [T]) -> Self {
        Array(elems, PhantomData)
    }
}

impl<T: Scalar, L: LenType> Marshal for Array<'_, T, L> {
    type Decoded = Vec<T>;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        w.put_array::<T, L>(self.0)
    }
    fn read(r: &mut MsgReader<'_>) -> Result<Vec<T>> {
        r.get_array::<T, L>()
    }
}

impl<T: Scalar> Marshal for &[T] {
    type Decoded = Vec<T>;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        w.put_array::<T, u16>(self)
    }
    fn read(r: &mut MsgReader<'_>) -> Result<Vec<T>> {
        r.get_array::<T, u16>()
    }
}

impl<T: Scalar> Marshal for Vec<T> {
    type Decoded = Vec<T>;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        w.put_array::<T, u16>(self)
    }
    fn read(r: &mut MsgReader<'_>) -> Result<Vec<T>> {
        r.get_array::<T, u16>()
    }
}

/// An owned `L4::Ipc::Array<T, LEN>`, for out-values a server produces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArrayBuf<T, L = u16>(pub Vec<T>, PhantomData<L>);

impl<T, L> ArrayBuf<T, L> {
    /// Wraps a vector.
    pub fn new(elems: Vec<T>) -> Self {
        ArrayBuf(elems, PhantomData)
    }
}

impl<T: Scalar, L: LenType> Marshal for ArrayBuf<T, L> {
    type Decoded = Vec<T>;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        w.put_array::<T, L>(&self.0)
    }
    fn read(r: &mut MsgReader<'_>) -> Result<Vec<T>> {
        r.get_array::<T, L>()
    }
}

impl<T: Scalar, L: LenType> OptProbe for ArrayBuf<T, L> {
    fn present(r: &MsgReader<'_>) -> bool {
        r.has(core::mem::size_of::<L>(), core::mem::size_of::<L>())
    }
}

/// Owned bytes with an `unsigned long` length and no terminator.
pub type LongBytesBuf = ArrayBuf<u8, u64>;

/// Bytes with an `unsigned long` length and no terminator
/// (`L4::Ipc::Array_ref<char const, unsigned long>`, as in Namespace
/// `query`).
pub type LongBytes<'a> = Array<'a, u8, u64>;

fn write_c_string(w: &mut MsgWriter<'_>, s: &[u8]) -> Result<()> {
    if s.contains(&0) {
        return Err(Error::Inval);
    }
    let len = s.len() + 1;
    (len as u64).write(w)?;
    let end = w.offset().checked_add(len).ok_or(Error::MsgTooLong)?;
    if end > MR_BYTES {
        return Err(Error::MsgTooLong);
    }
    let off = w.offset();
    put_bytes(w.utcb.mr(), off, s);
    put_bytes(w.utcb.mr(), off + s.len(), &[0]);
    w.off = end;
    Ok(())
}

fn read_c_string(r: &mut MsgReader<'_>) -> Result<String> {
    let bytes = r.get_array::<u8, u64>()?;
    // L4Re's server side requires at least the terminator and forces it.
    let Some((_, body)) = bytes.split_last() else {
        return Err(Error::MsgTooShort);
    };
    let body = match body.iter().position(|&b| b == 0) {
        Some(n) => &body[..n],
        None => body,
    };
    String::from_utf8(body.to_vec()).map_err(|_| Error::Inval)
}

/// `L4::Ipc::String<>`: `unsigned long` length counting the NUL, the
/// characters, the NUL.
impl Marshal for &str {
    type Decoded = String;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        write_c_string(w, self.as_bytes())
    }
    fn read(r: &mut MsgReader<'_>) -> Result<String> {
        read_c_string(r)
    }
}

impl Marshal for String {
    type Decoded = String;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        write_c_string(w, self.as_bytes())
    }
    fn read(r: &mut MsgReader<'_>) -> Result<String> {
        read_c_string(r)
    }
}

/// An item (`L4::Ipc::Snd_fpage`).
impl Marshal for SndFpage {
    type Decoded = SndFpage;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        w.put_item(*self)
    }
    fn read(r: &mut MsgReader<'_>) -> Result<SndFpage> {
        r.get_item()
    }
}

/// A receive buffer (`L4::Ipc::Rcv_fpage`, `Small_buf`): written into the
/// buffer registers by the client; the server never sees it.
impl Marshal for RcvBuf {
    type Decoded = ();
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        w.put_buffer(*self)
    }
    fn read(_: &mut MsgReader<'_>) -> Result<()> {
        Ok(())
    }
}

/// A capability argument (`L4::Ipc::Cap<T>`): sent as an object item with
/// the given rights. An invalid capability is refused with
/// [`Error::MsgMissArg`], as L4Re does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendCap<T: CapKind> {
    /// The capability.
    pub cap: Cap<T>,
    /// The rights the receiver gets.
    pub rights: CapRights,
    /// Map or grant.
    pub map: MapType,
}

impl<T: CapKind> Cap<T> {
    /// This capability as an argument, with `rights`.
    pub fn send(self, rights: CapRights) -> SendCap<T> {
        SendCap {
            cap: self,
            rights,
            map: MapType::Map,
        }
    }
}

impl<T: CapKind> Marshal for SendCap<T> {
    type Decoded = ReceivedCap;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        if !self.cap.is_valid() {
            return Err(Error::MsgMissArg);
        }
        w.put_item(SndFpage::cap(self.cap.idx(), self.rights, self.map))
    }
    fn read(r: &mut MsgReader<'_>) -> Result<ReceivedCap> {
        r.get_cap()
    }
}

/// As [`SendCap`] with read rights only (what `L4::Ipc::Cap<T>(cap)` sends).
impl<T: CapKind> Marshal for Cap<T> {
    type Decoded = ReceivedCap;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        self.send(CapRights::R).write(w)
    }
    fn read(r: &mut MsgReader<'_>) -> Result<ReceivedCap> {
        r.get_cap()
    }
}

/// A capability that arrived with a message, in the receive slot it was
/// mapped to. The receiver now owns the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedCap {
    /// The slot that holds the capability.
    pub idx: CapIdx,
    /// The item as the kernel left it (flags, rights).
    pub item: SndFpage,
}

impl ReceivedCap {
    /// The capability, typed.
    pub fn cap<T: CapKind>(&self) -> Cap<T> {
        Cap::from_idx(self.idx)
    }
}

/// `L4::Ipc::Opt<T>`: written only when present; read when the message still
/// holds a value of that kind.
impl<T: Marshal + OptProbe> Marshal for Option<T> {
    type Decoded = Option<T::Decoded>;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        match self {
            Some(v) => v.write(w),
            None => Ok(()),
        }
    }
    fn read(r: &mut MsgReader<'_>) -> Result<Self::Decoded> {
        if T::present(r) {
            T::read(r).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Says whether an optional value of this type is present in what remains
/// of a message.
pub trait OptProbe {
    /// Whether the reader still holds a value of this type.
    fn present(r: &MsgReader<'_>) -> bool;
}

macro_rules! probe_scalar {
    ($($t:ty),*) => {$(
        impl OptProbe for $t {
            fn present(r: &MsgReader<'_>) -> bool {
                r.has(core::mem::size_of::<$t>(), core::mem::size_of::<$t>())
            }
        }
    )*};
}
probe_scalar!(u8, u16, u32, u64, i8, i16, i32, i64, usize, isize, bool);

impl OptProbe for SndFpage {
    fn present(r: &MsgReader<'_>) -> bool {
        r.remaining_items() > 0
    }
}
impl OptProbe for String {
    fn present(r: &MsgReader<'_>) -> bool {
        r.has(8, 8)
    }
}
impl<T: Scalar, L: LenType> OptProbe for Array<'_, T, L> {
    fn present(r: &MsgReader<'_>) -> bool {
        r.has(core::mem::size_of::<L>(), core::mem::size_of::<L>())
    }
}

impl<T: CapKind> OptProbe for Cap<T> {
    fn present(r: &MsgReader<'_>) -> bool {
        r.remaining_items() > 0
    }
}

/// An optional capability argument is there when an item is left and it
/// brought a capability (mapped, or as a local id). An item that brought
/// none — L4Re's C API sends a dataspace to a region manager without
/// rights, which reaches only a manager in the same task — reads as absent,
/// as the C++ framework's `Opt<Snd_fpage>` leaves it to the server to look.
impl<T: CapKind> OptProbe for SendCap<T> {
    fn present(r: &MsgReader<'_>) -> bool {
        r.next_item()
            .is_some_and(|it| it.cap_received() || it.local_id_received())
    }
}

impl Marshal for () {
    type Decoded = ();
    fn write(&self, _: &mut MsgWriter<'_>) -> Result<()> {
        Ok(())
    }
    fn read(_: &mut MsgReader<'_>) -> Result<()> {
        Ok(())
    }
}

macro_rules! tuples {
    ($(($($n:tt $t:ident),+))*) => {$(
        impl<$($t: Marshal),+> Marshal for ($($t,)+) {
            type Decoded = ($($t::Decoded,)+);
            fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
                $(self.$n.write(w)?;)+
                Ok(())
            }
            fn read(r: &mut MsgReader<'_>) -> Result<Self::Decoded> {
                Ok(($($t::read(r)?,)+))
            }
        }
    )*};
}
tuples! {
    (0 A)
    (0 A, 1 B)
    (0 A, 1 B, 2 C)
    (0 A, 1 B, 2 C, 3 D)
    (0 A, 1 B, 2 C, 3 D, 4 E)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H)
}

/// Declares a plain struct whose fields are marshalled one after another, as
/// the C++ framework does for a struct passed by value when it consists of
/// scalars of one alignment (e.g. `L4Re::Dataspace::Stats`).
#[macro_export]
macro_rules! wire_struct {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($(#[$fm:meta])* $fvis:vis $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        $vis struct $name { $($(#[$fm])* $fvis $f: $t),* }
        impl $crate::msg::Marshal for $name {
            type Decoded = $name;
            fn write(&self, w: &mut $crate::msg::MsgWriter<'_>) -> $crate::Result<()> {
                $($crate::msg::Marshal::write(&self.$f, w)?;)*
                Ok(())
            }
            fn read(r: &mut $crate::msg::MsgReader<'_>) -> $crate::Result<$name> {
                Ok($name { $($f: <$t as $crate::msg::Marshal>::read(r)?),* })
            }
        }
        impl $crate::msg::OptProbe for $name {
            fn present(r: &$crate::msg::MsgReader<'_>) -> bool { r.remaining() > 0 }
        }
    };
}

/// Puts `bitflags` types on the wire as their integer type (`Flags: u32,
/// …`): written as the bits, read back refusing any bit the type does
/// not name with [`Error::Inval`](crate::Error::Inval) (L4Re's servers
/// answer unknown flags with `-L4_EINVAL`).
#[macro_export]
#[doc(hidden)]
macro_rules! wire_flags {
    ($($name:ty : $int:ty),* $(,)?) => {$(
        impl $crate::msg::Marshal for $name {
            type Decoded = $name;
            fn write(&self, w: &mut $crate::msg::MsgWriter<'_>) -> $crate::Result<()> {
                $crate::msg::Marshal::write(&self.bits(), w)
            }
            fn read(r: &mut $crate::msg::MsgReader<'_>) -> $crate::Result<$name> {
                <$name>::from_bits(<$int as $crate::msg::Marshal>::read(r)?)
                    .ok_or($crate::Error::Inval)
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    //! The expected words below are computed by hand from the rules of
    //! L4Re's C++ framework (module docs), byte by byte.
    use super::*;
    use crate::fpage::{Fpage, Rights};
    use crate::utcb::UtcbRegs;

    fn encode(f: impl FnOnce(&mut MsgWriter<'_>) -> Result<()>, label: i64) -> (MsgTag, UtcbRegs) {
        let mut regs = UtcbRegs::new();
        let tag = Utcb::from_regs(&mut regs, |u| {
            let mut w = MsgWriter::new(u);
            f(&mut w)?;
            w.finish(label)
        })
        .unwrap();
        (tag, regs)
    }

    #[test]
    fn dataspace_map_request_layout() {
        let (tag, regs) = encode(
            |w| {
                0i32.write(w)?;
                0x5000u64.write(w)?;
                0x7fff_0000u64.write(w)?;
                4u64.write(w)?;
                RcvBuf::window(0x4000_0000, 16).write(w)
            },
            0x4000,
        );
        assert_eq!((tag.label(), tag.words(), tag.items()), (0x4000, 4, 0));
        assert_eq!(&regs.mr[..4], &[0, 0x5000, 0x7fff_0000, 4]);
        assert_eq!(&regs.br[..3], &[8, 0x4000_0000 | (16 << 6) | (1 << 4), 0]);
        assert_eq!(tag.0, (0x4000 << 16) | 4);
    }

    #[test]
    fn mixed_scalars_strings_arrays_and_items() {
        let item = SndFpage::mem(Fpage::mem(0x10000, 12, Rights::RW), 0x3000, MapType::Map);
        let (tag, regs) = encode(
            |w| {
                7i32.write(w)?; // bytes 0..4
                0xAAu8.write(w)?; // byte 4
                0xBBCCu16.write(w)?; // bytes 6..8
                0xDDEE_FF00u32.write(w)?; // bytes 8..12
                0x1122_3344_5566_7788u64.write(w)?; // bytes 16..24
                usize::MAX.write(w)?; // bytes 24..32
                "hi".write(w)?; // len 3 at 32..40, "hi\0" at 40..43
                item.write(w)?; // item, after the data
                (&[1u16, 2, 3][..]).write(w) // len u16 at 44..46, elements 46..52
            },
            0x7000,
        );
        assert_eq!((tag.words(), tag.items()), (7, 1));
        let expected = [
            7 | (0xAA << 32) | (0xBBCC << 48),
            0xDDEE_FF00,
            0x1122_3344_5566_7788,
            u64::MAX,
            3,
            b'h' as u64 | (b'i' as u64) << 8 | 3 << 32 | 1 << 48,
            2 | 3 << 16,
            0x3000 | 8,
            0x10000 | (12 << 6) | (1 << 4) | 6,
        ];
        assert_eq!(&regs.mr[..9], &expected);

        // And back.
        let mut regs = regs;
        Utcb::from_regs(&mut regs, |u| {
            let mut r = MsgReader::new(u, tag).unwrap();
            assert_eq!(i32::read(&mut r).unwrap(), 7);
            assert_eq!(u8::read(&mut r).unwrap(), 0xAA);
            assert_eq!(u16::read(&mut r).unwrap(), 0xBBCC);
            assert_eq!(u32::read(&mut r).unwrap(), 0xDDEE_FF00);
            assert_eq!(u64::read(&mut r).unwrap(), 0x1122_3344_5566_7788);
            assert_eq!(usize::read(&mut r).unwrap(), usize::MAX);
            assert_eq!(<&str>::read(&mut r).unwrap(), "hi");
            assert_eq!(SndFpage::read(&mut r).unwrap(), item);
            assert_eq!(<&[u16]>::read(&mut r).unwrap(), vec![1, 2, 3]);
            // Four padding bytes remain in the last word, not eight.
            assert_eq!(u64::read(&mut r), Err(Error::MsgTooShort));
            assert_eq!(SndFpage::read(&mut r), Err(Error::MsgMissArg));
        });
    }

    #[test]
    fn namespace_query_layout() {
        let slot = CapIdx::from_slot(0x123);
        let (tag, regs) = encode(
            |w| {
                0i32.write(w)?;
                LongBytes::new(b"rom/hello").write(w)?;
                RcvBuf::cap(slot).write(w)
            },
            0x4001,
        );
        // opcode, length 9 (no terminator) aligned to 8, bytes from 16.
        assert_eq!(tag.words(), 4);
        assert_eq!(regs.mr[0], 0);
        assert_eq!(regs.mr[1], 9);
        assert_eq!(regs.mr[2], u64::from_le_bytes(*b"rom/hell"));
        assert_eq!(regs.mr[3], b'o' as u64);
        assert_eq!(&regs.br[..2], &[0x123000 | 0xa, 0]);
    }

    #[test]
    fn cap_argument_is_an_object_item() {
        let c: Cap<crate::cap::IpcGate> = Cap::from_idx(CapIdx::from_slot(0x42));
        let (tag, regs) = encode(|w| c.send(CapRights::RWS).write(w), 1);
        assert_eq!((tag.words(), tag.items()), (0, 1));
        assert_eq!(&regs.mr[..2], &[8, 0x42000 | (3 << 4) | 7]);
        let invalid: Cap<crate::cap::IpcGate> = Cap::INVALID;
        let mut regs = UtcbRegs::new();
        let r = Utcb::from_regs(&mut regs, |u| invalid.write(&mut MsgWriter::new(u)));
        assert_eq!(r, Err(Error::MsgMissArg));
    }

    #[test]
    fn overflow_is_refused() {
        let mut regs = UtcbRegs::new();
        Utcb::from_regs(&mut regs, |u| {
            let mut w = MsgWriter::new(u);
            for _ in 0..MR_WORDS {
                0u64.write(&mut w).unwrap();
            }
            assert_eq!(0u8.write(&mut w), Err(Error::MsgTooLong));
            // 63 data words plus an item do not fit; the data alone does.
            assert_eq!(w.put_item(SndFpage::NONE), Err(Error::MsgTooLong));
            assert_eq!(
                w.finish(0).map(|t| (t.words(), t.items())),
                Ok((MR_WORDS, 0))
            );
        });
        let mut regs = UtcbRegs::new();
        Utcb::from_regs(&mut regs, |u| {
            // Staged items leave the data less room.
            let mut w = MsgWriter::new(u);
            for _ in 0..30 {
                w.put_item(SndFpage::NONE).unwrap();
            }
            for _ in 0..3 {
                0u64.write(&mut w).unwrap();
            }
            assert_eq!(0u8.write(&mut w), Err(Error::MsgTooLong));
            assert_eq!(w.finish(0).map(|t| (t.words(), t.items())), Ok((3, 30)));
        });
        let big = [0u8; MR_BYTES];
        let mut regs = UtcbRegs::new();
        let r = Utcb::from_regs(&mut regs, |u| (&big[..]).write(&mut MsgWriter::new(u)));
        assert_eq!(r, Err(Error::MsgTooLong));
    }

    #[test]
    fn hostile_messages_are_refused() {
        let mut regs = UtcbRegs::new();
        Utcb::from_regs(&mut regs, |u| {
            // A tag claiming more than the registers hold.
            assert!(MsgReader::new(u, MsgTag::new(0, 60, 2, 0)).is_err());
            // An array length pointing past the message.
            u.mr()[0] = 0xffff;
            let mut r = MsgReader::new(u, MsgTag::new(0, 2, 0, 0)).unwrap();
            assert_eq!(<&[u32]>::read(&mut r), Err(Error::MsgTooShort));
            // A string length of u64::MAX (overflow).
            u.mr()[0] = u64::MAX;
            let mut r = MsgReader::new(u, MsgTag::new(0, 2, 0, 0)).unwrap();
            assert_eq!(<&str>::read(&mut r), Err(Error::MsgTooShort));
            // A zero-length string (no terminator).
            u.mr()[0] = 0;
            let mut r = MsgReader::new(u, MsgTag::new(0, 1, 0, 0)).unwrap();
            assert_eq!(<&str>::read(&mut r), Err(Error::MsgTooShort));
            // A bool that is neither 0 nor 1.
            u.mr()[0] = 2;
            let mut r = MsgReader::new(u, MsgTag::new(0, 1, 0, 0)).unwrap();
            assert_eq!(bool::read(&mut r), Err(Error::Inval));
            // A capability item that did not arrive in a slot.
            u.mr()[0] = 8;
            let mut r = MsgReader::new(u, MsgTag::new(0, 0, 1, 0)).unwrap();
            assert_eq!(r.get_cap(), Err(Error::MsgMissArg));
        });
    }

    #[test]
    fn tag_layout() {
        let t = MsgTag::new(-2, 2, 1, 0);
        assert_eq!(t.label(), -2);
        assert_eq!((t.words(), t.items(), t.flags()), (2, 1, 0));
        assert_eq!(t.0, ((-2i64 as u64) << 16) | (1 << 6) | 2);
    }

    #[test]
    fn flags_keep_their_wire_bits_and_refuse_unknown_ones() {
        use crate::proto::dataspace::Flags as DsFlags;
        use crate::proto::rm::Flags as RmFlags;
        let rm = RmFlags::RW | RmFlags::SEARCH_ADDR | RmFlags::PRIVATE;
        let (tag, mut regs) = encode(
            |w| {
                rm.write(w)?;
                DsFlags::RX.write(w)?;
                0x20_0000u32.write(w)?;
                0x40u64.write(w)
            },
            0,
        );
        // The u64 after the u32 starts at the next 8-byte boundary.
        assert_eq!(regs.mr[0], 0x2_1006);
        assert_eq!(regs.mr[1], 5);
        Utcb::from_regs(&mut regs, |u| {
            let mut r = MsgReader::new(u, tag).unwrap();
            assert_eq!(RmFlags::read(&mut r), Ok(rm));
            assert_eq!(DsFlags::read(&mut r), Ok(DsFlags::RX));
            assert_eq!(RmFlags::read(&mut r), Err(Error::Inval));
            assert_eq!(DsFlags::read(&mut r), Err(Error::Inval));
        });
        // Replies keep what the server sent (moe's `Cow_enabled`, 0x100).
        use crate::proto::dataspace::Stats;
        let stats = Stats {
            size: 4096,
            flags: DsFlags::from_bits_retain(0x105),
        };
        let (tag, mut regs) = encode(|w| stats.write(w), 0);
        Utcb::from_regs(&mut regs, |u| {
            let mut r = MsgReader::new(u, tag).unwrap();
            assert_eq!(Stats::read(&mut r), Ok(stats));
        });
    }
}
