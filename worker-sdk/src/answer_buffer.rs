//! Large answers written where they will cross: [`AnswerBuffer`].

use std::sync::Arc;

use bytes::Bytes;
use drover_proto::shm::{SharedSlot, SHARED_PAYLOAD_MIN};

use crate::shared::Shared;

/// An answer written straight into the memory this worker shares with
/// the supervisor ([`Request::answer_buffer`](crate::Request::answer_buffer)),
/// sent with [`Request::respond_buffer`](crate::Request::respond_buffer).
///
/// An answer of 20 KiB or more otherwise crosses by one copy on this side
/// (from the handler's buffer into the shared memory) and one on the
/// supervisor's (out of it, before the caller sees it): a handler that
/// produces its answer into this buffer (an encoder writing to
/// [`std::io::Write`], say) saves the first. Where there is no room for
/// it (no shared memory: the pool set `shared_memory(0)`, the worker runs
/// in process, or the memory is full; or the capacity asked is under
/// 20 KiB), it is an ordinary buffer and the answer goes as
/// `respond_bytes` would send it. No room is larger than the payload
/// limit; an answer over it is refused when sent, as any is. It grows as it is written: past
/// its room it moves to a room of the shared memory twice as large (or,
/// if there is none, to an ordinary buffer), and an ordinary buffer that
/// reaches 20 KiB moves into the shared memory if it can. Dropped unsent,
/// its room is free again.
pub struct AnswerBuffer {
    inner: Inner,
    worker: Arc<Shared>,
    /// The shared memory refused a room once: it is not asked again.
    refused: bool,
}

enum Inner {
    Shared(SharedSlot),
    Heap(Vec<u8>),
}

impl AnswerBuffer {
    pub(crate) fn new(capacity: usize, worker: Arc<Shared>) -> Self {
        let mut buffer = AnswerBuffer {
            inner: Inner::Heap(Vec::new()),
            worker,
            refused: false,
        };
        buffer.inner = match buffer.room(capacity) {
            Some(slot) => Inner::Shared(slot),
            None => Inner::Heap(Vec::with_capacity(capacity.min(SHARED_PAYLOAD_MIN))),
        };
        buffer
    }

    /// A room of the shared memory for `capacity` bytes (at most the
    /// payload limit), unless that is too small to be worth one or the
    /// shared memory refused before.
    fn room(&mut self, capacity: usize) -> Option<SharedSlot> {
        if capacity < SHARED_PAYLOAD_MIN || self.refused {
            return None;
        }
        let slot = self
            .worker
            .reserve_shared(capacity.min(self.worker.max_payload()));
        self.refused = slot.is_none();
        slot
    }

    /// Appends `data`.
    #[inline]
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        // The common cases, kept small enough to inline into a caller that
        // writes a few bytes at a time (a serializer, `write!`).
        match &mut self.inner {
            Inner::Shared(slot) => {
                if slot.push(data) {
                    return;
                }
            }
            Inner::Heap(heap) => {
                if self.refused || heap.len() + data.len() < SHARED_PAYLOAD_MIN {
                    heap.extend_from_slice(data);
                    return;
                }
            }
        }
        self.extend_and_move(data);
    }

    /// `extend_from_slice` where the bytes do not fit the room, or make an
    /// ordinary buffer large enough to move into the shared memory.
    #[cold]
    fn extend_and_move(&mut self, data: &[u8]) {
        let moved = match &mut self.inner {
            Inner::Shared(slot) => {
                if slot.push(data) {
                    return;
                }
                let need = slot.len() + data.len();
                let grown = need.max(2 * slot.capacity());
                let Inner::Shared(old) =
                    std::mem::replace(&mut self.inner, Inner::Heap(Vec::new()))
                else {
                    unreachable!("matched as shared above")
                };
                // The old room is freed as `old` drops.
                match self.room(grown) {
                    Some(mut larger) if larger.capacity() >= need => {
                        larger.push(old.as_slice());
                        larger.push(data);
                        Inner::Shared(larger)
                    }
                    _ => {
                        self.refused = true;
                        let mut heap = Vec::with_capacity(grown);
                        heap.extend_from_slice(old.as_slice());
                        heap.extend_from_slice(data);
                        Inner::Heap(heap)
                    }
                }
            }
            Inner::Heap(heap) => {
                heap.extend_from_slice(data);
                if heap.len() < SHARED_PAYLOAD_MIN || self.refused {
                    return;
                }
                let len = heap.len();
                let Some(mut slot) = self.room(2 * len) else {
                    return;
                };
                let moved = match &self.inner {
                    Inner::Heap(heap) => slot.push(heap),
                    Inner::Shared(_) => false,
                };
                if !moved {
                    // No room large enough (the payload limit caps it):
                    // it stays ordinary, and the slot is freed.
                    self.refused = true;
                    return;
                }
                Inner::Shared(slot)
            }
        };
        self.inner = moved;
    }

    /// What is written so far.
    pub fn as_slice(&self) -> &[u8] {
        match &self.inner {
            Inner::Shared(slot) => slot.as_slice(),
            Inner::Heap(heap) => heap,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether nothing is written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it lies in the shared memory (and the answer will cross
    /// with no copy on this side).
    pub fn in_shared_memory(&self) -> bool {
        matches!(self.inner, Inner::Shared(_))
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        match self.inner {
            Inner::Shared(slot) => slot.into_bytes(),
            Inner::Heap(heap) => Bytes::from(heap),
        }
    }
}

impl std::io::Write for AnswerBuffer {
    #[inline]
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for AnswerBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerBuffer")
            .field("len", &self.len())
            .field("in_shared_memory", &self.in_shared_memory())
            .finish()
    }
}
