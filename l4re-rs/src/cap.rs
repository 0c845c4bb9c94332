//! Typed capabilities.
//!
//! A capability is an index into the task's capability table
//! (`l4_cap_idx_t`: slot number shifted left by [`CAP_SHIFT`]). [`Cap<T>`]
//! pairs the index with a zero-sized marker type `T` that says which kind of
//! object the slot is expected to hold; casts between kinds are explicit
//! ([`Cap::cast`]). A `Cap` is `Copy` and owns nothing, like `L4::Cap`; an
//! [`OwnedCap`] owns its slot and gives it back (and drops the reference to
//! the object) when dropped, like `L4Re::Util::Unique_del_cap`.

use core::fmt;
use core::marker::PhantomData;

use bitflags::bitflags;

/// `L4_CAP_SHIFT`: capability indices are slot numbers shifted by this.
pub const CAP_SHIFT: u32 = 12;
/// `L4_INVALID_CAP_BIT`: set in every invalid capability index.
pub const INVALID_CAP_BIT: u64 = 1 << (CAP_SHIFT - 1);
/// `L4_INVALID_CAP`.
pub const INVALID_CAP: u64 = !0u64 << (CAP_SHIFT - 1);
/// `L4_CAP_MASK`: the bits of a word that hold the index.
pub const CAP_MASK: u64 = !0u64 << (CAP_SHIFT - 2);

/// A raw capability index (`l4_cap_idx_t`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct CapIdx(pub u64);

impl CapIdx {
    /// The invalid index.
    pub const INVALID: CapIdx = CapIdx(INVALID_CAP);

    /// The index of slot `slot`.
    pub const fn from_slot(slot: u64) -> Self {
        CapIdx(slot << CAP_SHIFT)
    }

    /// The slot number.
    pub const fn slot(self) -> u64 {
        self.0 >> CAP_SHIFT
    }

    /// Whether this index names a slot (`l4_is_valid_cap`).
    pub const fn is_valid(self) -> bool {
        self.0 & INVALID_CAP_BIT == 0
    }
}

impl fmt::Debug for CapIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_valid() {
            write!(f, "CapIdx(slot {:#x})", self.slot())
        } else {
            f.write_str("CapIdx(invalid)")
        }
    }
}

/// The fixed capability slots of every L4Re program (`l4_default_caps_t`,
/// `l4re/include/env.h`).
pub mod well_known {
    use super::CapIdx;
    /// The task itself.
    pub const TASK: CapIdx = CapIdx::from_slot(1);
    /// The factory.
    pub const FACTORY: CapIdx = CapIdx::from_slot(2);
    /// The main thread.
    pub const THREAD: CapIdx = CapIdx::from_slot(3);
    /// The pager of the main thread.
    pub const PAGER: CapIdx = CapIdx::from_slot(4);
    /// The log (console) object.
    pub const LOG: CapIdx = CapIdx::from_slot(5);
    /// The scheduler.
    pub const SCHEDULER: CapIdx = CapIdx::from_slot(7);
    /// The region map.
    pub const RM: CapIdx = CapIdx::from_slot(0x10);
    /// The memory allocator.
    pub const MEM_ALLOC: CapIdx = CapIdx::from_slot(0x11);
    /// The parent.
    pub const PARENT: CapIdx = CapIdx::from_slot(0x13);
    /// The kernel info page dataspace.
    pub const KIP: CapIdx = CapIdx::from_slot(0x14);
    /// First slot given to named initial capabilities.
    pub const FIRST_NAMED: CapIdx = CapIdx::from_slot(0x15);
}

bitflags! {
    /// Rights on an object capability (`L4_CAP_FPAGE_*`), as given when
    /// mapping it. The kernel ORs the sender's W and S rights into the low
    /// two bits of an IPC gate label.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct CapRights: u8 {
        /// `L4_CAP_FPAGE_W`: write (modifying operations).
        const W = 0x1;
        /// `L4_CAP_FPAGE_S`: special rights (e.g. binding an IPC gate).
        const S = 0x2;
        /// `L4_CAP_FPAGE_R`: read (needed for any invocation).
        const R = 0x4;
        /// `L4_CAP_FPAGE_D`: delete the object.
        const D = 0x8;
        /// `L4_CAP_FPAGE_RW`.
        const RW = Self::R.bits() | Self::W.bits();
        /// `L4_CAP_FPAGE_RWS`.
        const RWS = Self::RW.bits() | Self::S.bits();
        /// `L4_CAP_FPAGE_RWSD`: every right.
        const RWSD = Self::RWS.bits() | Self::D.bits();
    }
}

impl CapRights {
    /// The rights bits an IPC gate label carries (W and S).
    pub const fn label_bits(self) -> u64 {
        (self.bits() & 0x3) as u64
    }
}

/// The kind of object a capability refers to; implemented by the zero-sized
/// marker types below and by each protocol defined with
/// [`protocol!`](crate::protocol).
pub trait CapKind: 'static {
    /// A name for messages.
    const NAME: &'static str;
}

macro_rules! cap_kinds {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {}
        impl CapKind for $name {
            const NAME: &'static str = stringify!($name);
        }
    )*};
}

cap_kinds! {
    /// Any object (`L4::Kobject`): what a capability is before it is cast.
    Untyped,
    /// A task (address space and capability table).
    Task,
    /// A thread.
    Thread,
    /// The factory that creates kernel objects.
    Factory,
    /// An IPC gate: the endpoint a server object is reached through.
    IpcGate,
    /// The log (console) object.
    Log,
    /// The scheduler.
    Scheduler,
}

/// A typed capability index; copying it does not copy or own the object.
pub struct Cap<T: CapKind> {
    idx: CapIdx,
    _kind: PhantomData<fn() -> T>,
}

impl<T: CapKind> Cap<T> {
    /// The invalid capability.
    pub const INVALID: Self = Cap::from_idx(CapIdx::INVALID);

    /// Wraps a raw index. Nothing is checked: using a capability to an object
    /// of another kind makes the object answer with an error, it cannot break
    /// memory safety.
    pub const fn from_idx(idx: CapIdx) -> Self {
        Cap {
            idx,
            _kind: PhantomData,
        }
    }

    /// The raw index.
    pub const fn idx(self) -> CapIdx {
        self.idx
    }

    /// Whether the index is valid (not whether an object is there).
    pub const fn is_valid(self) -> bool {
        self.idx.is_valid()
    }

    /// Reinterprets the capability as one to another kind of object.
    pub const fn cast<U: CapKind>(self) -> Cap<U> {
        Cap::from_idx(self.idx)
    }

    /// Forgets the kind.
    pub const fn untyped(self) -> Cap<Untyped> {
        self.cast()
    }
}

impl<T: CapKind> Clone for Cap<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: CapKind> Copy for Cap<T> {}
impl<T: CapKind> PartialEq for Cap<T> {
    fn eq(&self, other: &Self) -> bool {
        self.idx == other.idx
    }
}
impl<T: CapKind> Eq for Cap<T> {}

impl<T: CapKind> fmt::Debug for Cap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cap<{}>({:?})", T::NAME, self.idx)
    }
}

/// A capability slot owned by this handle: on drop the reference to the
/// object is released from the own task and the slot is returned to the
/// allocator.
pub struct OwnedCap<T: CapKind> {
    cap: Cap<T>,
}

impl<T: CapKind> OwnedCap<T> {
    /// Takes ownership of `cap`'s slot.
    ///
    /// The slot must have come from [`alloc_slot`] (or be otherwise unused by
    /// anyone else), since dropping the handle frees it.
    pub fn from_cap(cap: Cap<T>) -> Self {
        OwnedCap { cap }
    }

    /// The capability, for use in calls.
    pub fn cap(&self) -> Cap<T> {
        self.cap
    }

    /// Gives up ownership without releasing anything.
    pub fn into_cap(self) -> Cap<T> {
        let cap = self.cap;
        core::mem::forget(self);
        cap
    }

    /// Reinterprets the owned capability as one to another kind of object.
    pub fn cast<U: CapKind>(self) -> OwnedCap<U> {
        OwnedCap {
            cap: self.into_cap().cast(),
        }
    }
}

impl<T: CapKind> core::ops::Deref for OwnedCap<T> {
    type Target = Cap<T>;
    fn deref(&self) -> &Cap<T> {
        &self.cap
    }
}

impl<T: CapKind> Drop for OwnedCap<T> {
    fn drop(&mut self) {
        crate::platform::cap_release(self.cap.idx);
        free_slot(self.cap.idx);
    }
}

impl<T: CapKind> fmt::Debug for OwnedCap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owned{:?}", self.cap)
    }
}

/// Allocates an empty capability slot of this task.
pub fn alloc_slot() -> crate::Result<CapIdx> {
    crate::platform::cap_alloc()
}

/// Returns a slot to the allocator without touching what it holds.
pub fn free_slot(idx: CapIdx) {
    crate::platform::cap_free(idx)
}

/// Allocates a slot and wraps it as an owned capability of kind `T` (the
/// slot is still empty: pass it as a receive buffer or as the target of a
/// factory call).
pub fn alloc<T: CapKind>() -> crate::Result<OwnedCap<T>> {
    Ok(OwnedCap::from_cap(Cap::from_idx(alloc_slot()?)))
}

/// A bitmap allocator of capability slots in `[first, first + N*64)`.
///
/// Shared code: the host platform allocates its slots with it; on Fiasco the
/// L4Re allocator of the program environment is used instead.
pub struct SlotBitmap<const WORDS: usize> {
    first: u64,
    used: [u64; WORDS],
    hint: usize,
}

impl<const WORDS: usize> SlotBitmap<WORDS> {
    /// An allocator whose first slot is `first`.
    pub const fn new(first: u64) -> Self {
        SlotBitmap {
            first,
            used: [0; WORDS],
            hint: 0,
        }
    }

    /// Allocates the lowest free slot at or after the hint.
    pub fn alloc(&mut self) -> Option<CapIdx> {
        for i in 0..WORDS {
            let w = (self.hint + i) % WORDS;
            let free = !self.used[w];
            if free != 0 {
                let bit = free.trailing_zeros() as usize;
                self.used[w] |= 1 << bit;
                self.hint = w;
                return Some(CapIdx::from_slot(self.first + (w * 64 + bit) as u64));
            }
        }
        None
    }

    /// Marks a slot as used (for slots handed out by other means).
    pub fn reserve(&mut self, idx: CapIdx) -> bool {
        match self.position(idx) {
            Some((w, b)) => {
                let was = self.used[w] & (1 << b) != 0;
                self.used[w] |= 1 << b;
                !was
            }
            None => false,
        }
    }

    /// Frees a slot; returns whether it was allocated.
    pub fn free(&mut self, idx: CapIdx) -> bool {
        match self.position(idx) {
            Some((w, b)) if self.used[w] & (1 << b) != 0 => {
                self.used[w] &= !(1 << b);
                if w < self.hint {
                    self.hint = w;
                }
                true
            }
            _ => false,
        }
    }

    /// Whether a slot is allocated.
    pub fn is_used(&self, idx: CapIdx) -> bool {
        self.position(idx)
            .is_some_and(|(w, b)| self.used[w] & (1 << b) != 0)
    }

    fn position(&self, idx: CapIdx) -> Option<(usize, usize)> {
        if !idx.is_valid() || idx.slot() < self.first {
            return None;
        }
        let n = (idx.slot() - self.first) as usize;
        (n < WORDS * 64).then_some((n / 64, n % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_l4_layout() {
        assert_eq!(well_known::TASK.0, 0x1000);
        assert_eq!(well_known::FIRST_NAMED.0, 0x15000);
        assert!(!CapIdx::INVALID.is_valid());
        assert_eq!(CapIdx::INVALID.0 & INVALID_CAP_BIT, INVALID_CAP_BIT);
        assert_eq!(CAP_MASK, !0x3ffu64);
    }

    #[test]
    fn slot_bitmap_allocates_each_slot_once() {
        let mut b: SlotBitmap<2> = SlotBitmap::new(0x100);
        let mut seen = std::collections::HashSet::new();
        while let Some(i) = b.alloc() {
            assert!(seen.insert(i));
            assert!(i.slot() >= 0x100 && i.slot() < 0x180);
        }
        assert_eq!(seen.len(), 128);
        let some = CapIdx::from_slot(0x142);
        assert!(b.free(some));
        assert!(!b.free(some));
        assert_eq!(b.alloc(), Some(some));
        assert!(!b.free(CapIdx::from_slot(0x10)));
    }
}
