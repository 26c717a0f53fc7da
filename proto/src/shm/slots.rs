//! The slots of one arena: which pages are handed out, which are free,
//! and which are held while an answer is copied out of them.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::PAGE;

/// First-fit allocation of whole pages, lowest offset first, so the pages
/// in use stay few and warm.
#[derive(Debug)]
pub(super) struct Slots {
    /// Free ranges, offset to length, never adjacent.
    pub(super) free: BTreeMap<usize, usize>,
    /// Slots handed out, offset to length (ordered, to find the slot an
    /// offset lies in).
    pub(super) live: BTreeMap<usize, usize>,
    /// Slots handed out and being written (by `place`, or in place through
    /// a [`SharedSlot`](super::SharedSlot)), not yet sent: the peer
    /// cannot release them.
    pub(super) reserved: HashSet<usize>,
    /// Bytes of the slots handed out.
    pub(super) held: usize,
    /// Slots the peer's answers name ([`View`](super::View)) and are being
    /// copied out of, and how many views of each are alive.
    pub(super) views: HashMap<usize, u32>,
    /// Slots the peer released while views of them were alive: freed when
    /// the last view goes.
    pub(super) released: HashSet<usize>,
    /// Bytes of the `released` slots.
    pub(super) lingering: usize,
}

impl Slots {
    pub(super) fn new(len: usize) -> Slots {
        let mut free = BTreeMap::new();
        if len > 0 {
            free.insert(0, len);
        }
        Slots {
            free,
            live: BTreeMap::new(),
            reserved: HashSet::new(),
            held: 0,
            views: HashMap::new(),
            released: HashSet::new(),
            lingering: 0,
        }
    }

    pub(super) fn take(&mut self, len: usize) -> Option<usize> {
        let need = len.max(1).checked_next_multiple_of(PAGE)?;
        let (&offset, &room) = self.free.iter().find(|(_, &room)| room >= need)?;
        self.free.remove(&offset);
        if room > need {
            self.free.insert(offset + need, room - need);
        }
        self.live.insert(offset, need);
        self.held += need;
        Some(offset)
    }

    /// The peer's `Release` of the slot at `offset`: freed now, or once
    /// the last view of it goes; `None` if no slot the peer holds starts
    /// there.
    pub(super) fn release(&mut self, offset: usize) -> Option<()> {
        if self.released.contains(&offset) {
            return None;
        }
        if self.views.contains_key(&offset) {
            let len = *self.live.get(&offset)?;
            self.released.insert(offset);
            self.lingering += len;
            return Some(());
        }
        self.free(offset)
    }

    /// A view of the slot at `slot` is gone; whether that freed it.
    pub(super) fn unview(&mut self, slot: usize) -> bool {
        let Some(views) = self.views.get_mut(&slot) else {
            return false;
        };
        *views -= 1;
        if *views > 0 {
            return false;
        }
        self.views.remove(&slot);
        let len = self.live.get(&slot).copied().unwrap_or(0);
        if !self.released.remove(&slot) {
            return false;
        }
        self.lingering -= len;
        self.free(slot).is_some()
    }

    /// Frees the slot at `offset`; `None` if none starts there.
    pub(super) fn free(&mut self, offset: usize) -> Option<()> {
        let mut len = self.live.remove(&offset)?;
        self.held -= len;
        let mut start = offset;
        if let Some(next) = self.free.remove(&(offset + len)) {
            len += next;
        }
        if let Some((&before, &room)) = self.free.range(..offset).next_back() {
            if before + room == offset {
                self.free.remove(&before);
                start = before;
                len += room;
            }
        }
        self.free.insert(start, len);
        Some(())
    }
}
