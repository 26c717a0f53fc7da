//! Large answers written where they will cross: [`AnswerBuffer`].

use bytes::Bytes;
use drover_proto::shm::{SharedSlot, SHARED_PAYLOAD_MIN};

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
/// in process, the memory is full, or the capacity asked is under 20 KiB
/// or over the payload limit), it is an ordinary buffer and the answer
/// goes as `respond_bytes` would send it. Writing past the capacity asked
/// for moves what is written into an ordinary buffer, which grows.
/// Dropped unsent, its room is free again.
pub struct AnswerBuffer {
    inner: Inner,
}

enum Inner {
    Shared(SharedSlot),
    Heap(Vec<u8>),
}

impl AnswerBuffer {
    pub(crate) fn new(capacity: usize, slot: impl FnOnce(usize) -> Option<SharedSlot>) -> Self {
        let shared = (capacity >= SHARED_PAYLOAD_MIN)
            .then(|| slot(capacity))
            .flatten();
        let inner = match shared {
            Some(slot) => Inner::Shared(slot),
            None => Inner::Heap(Vec::with_capacity(capacity.min(SHARED_PAYLOAD_MIN))),
        };
        AnswerBuffer { inner }
    }

    /// Appends `data`.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Shared(slot) => {
                if slot.push(data) {
                    return;
                }
                let mut heap =
                    Vec::with_capacity((slot.len() + data.len()).max(2 * slot.capacity()));
                heap.extend_from_slice(slot.as_slice());
                heap.extend_from_slice(data);
                // The slot is freed as it drops.
                self.inner = Inner::Heap(heap);
            }
            Inner::Heap(heap) => heap.extend_from_slice(data),
        }
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
