//! Flexpages, send items and receive buffers.
//!
//! A flexpage describes a naturally aligned, power-of-two sized range of an
//! address space (memory, I/O ports or capabilities) in one word
//! (`l4sys/include/__l4_fpage.h`): rights in bits 0-3, type in bits 4-5,
//! log2 size in bits 6-11, address from bit 12. A *send item* pairs a
//! flexpage with a control word (`L4_ITEM_MAP`, map/grant, cacheability and
//! the "hot spot" `snd_base`); a *receive window* tells the kernel where in
//! the receiver's space items may land.

use bitflags::bitflags;

use crate::cap::{CapIdx, CapRights};

/// Base page size (4 KiB) as log2.
pub const PAGE_SHIFT: u32 = 12;
/// Base page size in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// `L4_WHOLE_ADDRESS_SPACE`: the order that denotes a whole space.
pub const WHOLE_SPACE_ORDER: u8 = 63;

/// `L4_ITEM_MAP`: marks a word as the first of a map item.
pub const ITEM_MAP: u64 = 8;
/// `L4_ITEM_CONT`: the next item belongs to the same receive buffer.
pub const ITEM_CONT: u64 = 1;
/// `L4_MAP_ITEM_GRANT`: move instead of copy the mapping.
pub const MAP_ITEM_GRANT: u64 = 2;
/// `L4_RCV_ITEM_SINGLE_CAP`: a receive buffer for one capability.
pub const RCV_ITEM_SINGLE_CAP: u64 = ITEM_MAP | 2;
/// `L4_RCV_ITEM_LOCAL_ID`: receive a local id instead of a capability when
/// the object is local to the receiver.
pub const RCV_ITEM_LOCAL_ID: u64 = 4;

bitflags! {
    /// Access rights of a memory flexpage (`L4_FPAGE_X/W/RO`); also the
    /// rights flags of Dataspace `map` and of region-map regions.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Rights: u8 {
        /// Executable.
        const X = 1;
        /// Writable.
        const W = 2;
        /// Readable.
        const R = 4;
        /// Read and write.
        const RW = Self::R.bits() | Self::W.bits();
        /// Read and execute.
        const RX = Self::R.bits() | Self::X.bits();
        /// Everything.
        const RWX = Self::RW.bits() | Self::X.bits();
    }
}

/// What kind of space a flexpage covers (`L4_FPAGE_*` types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FpageType {
    /// `L4_FPAGE_SPECIAL`: the nil or the complete flexpage.
    Special = 0,
    /// `L4_FPAGE_MEMORY`.
    Memory = 1,
    /// `L4_FPAGE_IO`.
    Io = 2,
    /// `L4_FPAGE_OBJ`: capabilities.
    Obj = 3,
}

/// A flexpage word (`l4_fpage_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Fpage(pub u64);

impl Fpage {
    /// The nil flexpage (`l4_fpage_invalid`).
    pub const NIL: Fpage = Fpage(0);

    /// A memory flexpage of `2^order` bytes at `addr` (`l4_fpage`). The
    /// address is truncated to the flexpage's alignment, as the kernel does.
    pub const fn mem(addr: u64, order: u8, rights: Rights) -> Self {
        Self::make(addr, order, FpageType::Memory, rights.bits())
    }

    /// A flexpage of `2^order` capability slots starting at `idx`
    /// (`l4_obj_fpage`).
    pub const fn obj(idx: CapIdx, order: u8, rights: CapRights) -> Self {
        Self::make(idx.0, order, FpageType::Obj, rights.bits())
    }

    /// A memory flexpage covering the whole address space
    /// (`l4_fpage_all`), e.g. the receive window of a pager.
    pub const fn all_memory() -> Self {
        Self::make(0, WHOLE_SPACE_ORDER, FpageType::Memory, 0)
    }

    const fn make(addr: u64, order: u8, ty: FpageType, rights: u8) -> Self {
        let mask = if order >= 64 { 0 } else { !0u64 << order };
        let addr = addr & mask & !(PAGE_SIZE - 1);
        Fpage(addr | ((order as u64 & 0x3f) << 6) | ((ty as u64) << 4) | (rights as u64 & 0xf))
    }

    /// Start address (or first capability index) of the flexpage.
    pub const fn addr(self) -> u64 {
        self.0 & !(PAGE_SIZE - 1)
    }

    /// log2 of the size.
    pub const fn order(self) -> u8 {
        ((self.0 >> 6) & 0x3f) as u8
    }

    /// Size in bytes (memory) or in capability slots shifted by
    /// [`CAP_SHIFT`](crate::cap::CAP_SHIFT) (objects). Saturates for the
    /// whole address space.
    pub const fn size(self) -> u64 {
        let o = self.order();
        if o >= 64 { u64::MAX } else { 1u64 << o }
    }

    /// The type bits.
    pub const fn ty(self) -> FpageType {
        match (self.0 >> 4) & 3 {
            1 => FpageType::Memory,
            2 => FpageType::Io,
            3 => FpageType::Obj,
            _ => FpageType::Special,
        }
    }

    /// Memory rights (for memory flexpages).
    pub const fn rights(self) -> Rights {
        Rights::from_bits_truncate((self.0 & 0xf) as u8)
    }

    /// Object rights (for object flexpages).
    pub const fn cap_rights(self) -> CapRights {
        CapRights::from_bits_truncate((self.0 & 0xf) as u8)
    }

    /// The same flexpage with other rights.
    pub const fn with_rights(self, rights: u8) -> Self {
        Fpage((self.0 & !0xf) | (rights as u64 & 0xf))
    }

    /// Whether `addr` lies inside the flexpage.
    pub const fn contains(self, addr: u64) -> bool {
        addr >= self.addr() && (addr - self.addr()) <= self.size().wrapping_sub(1)
    }
}

/// Map or grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapType {
    /// The sender keeps its mapping (`L4_MAP_ITEM_MAP`).
    Map,
    /// The mapping moves to the receiver (`L4_MAP_ITEM_GRANT`).
    Grant,
}

/// A send item (`L4::Ipc::Snd_fpage`): the control word (`L4_ITEM_MAP`,
/// `snd_base`, map type, cache options, continuation) and the flexpage.
///
/// In a reply to a page fault or a Dataspace `map`, `snd_base` is the "hot
/// spot": it selects where a flexpage smaller than the receive window lands in
/// it, or which part of a larger one is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SndFpage {
    /// The control word.
    pub base: u64,
    /// The flexpage word.
    pub fpage: Fpage,
}

impl SndFpage {
    /// A memory item (`Snd_fpage::mem`).
    pub const fn mem(fpage: Fpage, snd_base: u64, map: MapType) -> Self {
        let grant = match map {
            MapType::Map => 0,
            MapType::Grant => MAP_ITEM_GRANT,
        };
        SndFpage {
            base: ITEM_MAP | (snd_base & !(PAGE_SIZE - 1)) | grant,
            fpage,
        }
    }

    /// A capability item for one slot (`Snd_fpage(L4::Cap, rights)`, as the
    /// C++ framework writes a `L4::Ipc::Cap<T>` argument).
    pub const fn cap(idx: CapIdx, rights: CapRights, map: MapType) -> Self {
        let grant = match map {
            MapType::Map => 0,
            MapType::Grant => MAP_ITEM_GRANT,
        };
        SndFpage {
            base: ITEM_MAP | grant,
            fpage: Fpage::obj(idx, 0, rights),
        }
    }

    /// The "no item" item the C++ framework sends for an invalid capability
    /// out-argument.
    pub const NONE: SndFpage = SndFpage {
        base: 0,
        fpage: Fpage::NIL,
    };

    /// Sets `L4_ITEM_CONT` (the next item goes into the same receive buffer).
    pub const fn compound(mut self) -> Self {
        self.base |= ITEM_CONT;
        self
    }

    /// Whether this is a map item at all (`is_valid`).
    pub const fn is_valid(self) -> bool {
        self.base & ITEM_MAP != 0
    }

    /// The hot spot.
    pub const fn snd_base(self) -> u64 {
        self.base & !(PAGE_SIZE - 1)
    }

    /// Whether `L4_ITEM_CONT` is set.
    pub const fn is_compound(self) -> bool {
        self.base & ITEM_CONT != 0
    }

    /// Whether this is a grant.
    pub const fn is_grant(self) -> bool {
        self.base & MAP_ITEM_GRANT != 0
    }

    /// On the receiving side: whether a capability was received into the
    /// buffer (`cap_received`).
    pub const fn cap_received(self) -> bool {
        self.base & 0x3e == 0x38
    }

    /// On the receiving side, with a receive buffer that asked for local
    /// ids ([`RCV_ITEM_LOCAL_ID`]) and a sender in the same task: no
    /// mapping was made, the item carries the sender's own capability
    /// index instead ([`local_cap`](Self::local_cap)). This is how an
    /// in-task region manager gets the dataspaces its program attaches,
    /// whatever rights the program sent them with.
    pub const fn local_id_received(self) -> bool {
        self.base & 0x3e == 0x3e
    }

    /// The capability index of a [`local_id_received`](Self::local_id_received)
    /// item (the raw object flexpage's address bits).
    pub const fn local_cap(self) -> CapIdx {
        CapIdx(self.fpage.0 & !0xfff)
    }

    /// On the receiving side, for a memory item: the order (log2 of the
    /// size) of the flexpage the sender sent, or `None` if nothing was
    /// mapped. The kernel writes it into the control word's bits 6..11 of
    /// the *return item*; the second word is not written on receipt (it
    /// holds whatever the message register held before). What lands in
    /// the receive window is the smaller of this and the window.
    pub const fn received_order(self) -> Option<u8> {
        if self.base & 0x6 == 0x2 {
            None
        } else {
            Some(((self.base >> 6) & 0x3f) as u8)
        }
    }

    /// On the receiving side: whether a local id was received instead
    /// (`id_received`); the flexpage word then holds the label.
    pub const fn id_received(self) -> bool {
        self.base & 0x3e == 0x3c
    }

    /// The two message words.
    pub const fn words(self) -> [u64; 2] {
        [self.base, self.fpage.0]
    }
}

/// Where a memory item lands in a receive window.
///
/// Implements the kernel's rule: a send flexpage no larger than the window
/// lands at `window.addr + (snd_base mod window.size)`, truncated to the send
/// flexpage's alignment; of a larger one only the window-sized part selected
/// by the hot spot is sent. Returns `(source address, destination address,
/// size)`.
pub fn fit_into_window(item: SndFpage, window: Fpage) -> (u64, u64, u64) {
    let (so, ro) = (item.fpage.order().min(63), window.order().min(63));
    if so <= ro {
        let size = 1u64 << so;
        let wmask = if ro >= 63 { u64::MAX } else { (1u64 << ro) - 1 };
        let dst = window.addr() + (item.snd_base() & wmask & !(size - 1));
        (item.fpage.addr(), dst, size)
    } else {
        let size = 1u64 << ro;
        let smask = (1u64 << so) - 1;
        let src = item.fpage.addr() + (item.snd_base() & smask & !(size - 1));
        (src, window.addr(), size)
    }
}

/// A receive buffer for a call (`L4::Ipc::Rcv_fpage` or `Small_buf`),
/// written into the buffer registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RcvBuf {
    /// A window for memory (or I/O) items: two buffer registers.
    Window(Fpage),
    /// A slot for one capability (`Small_buf`): one buffer register.
    Cap {
        /// The slot that receives the capability.
        slot: CapIdx,
        /// `L4_RCV_ITEM_LOCAL_ID` if a local id is preferred.
        local_id: bool,
    },
}

impl RcvBuf {
    /// A memory receive window.
    pub const fn window(addr: u64, order: u8) -> Self {
        RcvBuf::Window(Fpage::mem(addr, order, Rights::empty()))
    }

    /// A one-capability receive buffer.
    pub const fn cap(slot: CapIdx) -> Self {
        RcvBuf::Cap {
            slot,
            local_id: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fpage_word_layout() {
        let f = Fpage::mem(0x12345000, 12, Rights::RW);
        assert_eq!(f.0, 0x12345000 | (12 << 6) | (1 << 4) | 6);
        assert_eq!(f.addr(), 0x12345000);
        assert_eq!(f.order(), 12);
        assert_eq!(f.ty(), FpageType::Memory);
        assert_eq!(f.rights(), Rights::RW);
        // Truncated to natural alignment.
        assert_eq!(Fpage::mem(0x12345678, 16, Rights::R).addr(), 0x12340000);
        let o = Fpage::obj(CapIdx::from_slot(0x20), 0, CapRights::RWS);
        assert_eq!(o.0, 0x20000 | (3 << 4) | 3 | 4);
    }

    #[test]
    fn window_fitting_follows_kernel_rule() {
        // 4 KiB page into a 64 KiB window, hot spot 0x3000.
        let item = SndFpage::mem(Fpage::mem(0x7000_0000, 12, Rights::R), 0x3000, MapType::Map);
        let win = Fpage::mem(0x1000_0000, 16, Rights::empty());
        assert_eq!(
            fit_into_window(item, win),
            (0x7000_0000, 0x1000_3000, 0x1000)
        );
        // 64 KiB flexpage into a 4 KiB window: hot spot picks the page.
        let item = SndFpage::mem(Fpage::mem(0x7000_0000, 16, Rights::R), 0x5000, MapType::Map);
        let win = Fpage::mem(0x2000_0000, 12, Rights::empty());
        assert_eq!(
            fit_into_window(item, win),
            (0x7000_5000, 0x2000_0000, 0x1000)
        );
        // Whole-space window (a pager's): lands at the hot spot.
        let item = SndFpage::mem(
            Fpage::mem(0x7000_0000, 13, Rights::R),
            0x4000_2000,
            MapType::Map,
        );
        assert_eq!(
            fit_into_window(item, Fpage::all_memory()),
            (0x7000_0000, 0x4000_2000, 0x2000)
        );
    }

    #[test]
    fn item_words() {
        let i = SndFpage::cap(CapIdx::from_slot(5), CapRights::RW, MapType::Map);
        assert_eq!(i.words(), [8, 0x5000 | 0x30 | 5]);
        assert!(i.is_valid());
        assert!(!SndFpage::NONE.is_valid());
    }
}
