//! Moving frames between a socket and the tasks that produce them.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{oneshot, Notify};

use crate::codec::{encode_head, encode_message, max_payload};
use crate::error::ProtocolError;
use crate::message::StreamFrame;
use crate::shm::{Outbound, SharedSlot, SHARED_PAYLOAD_MIN};
use crate::wire::Wire;

#[cfg(test)]
mod tests;
mod writer;

pub use writer::write_loop;

/// What a connection's writer task is asked to do, with messages of type
/// `M` (the direction this side sends).
#[derive(Debug)]
pub enum Outgoing<M> {
    /// Send this message.
    Frame(M),
    /// Send this message with these descriptors attached (`SCM_RIGHTS`);
    /// they are closed on this side once sent.
    FrameWithFds(M, Vec<OwnedFd>),
    /// Acknowledge once everything queued before this has been written.
    Flush(oneshot::Sender<()>),
}

/// Payloads at least this large are written from their own buffer (a
/// vectored write) instead of being copied next to their frame header.
pub const COPY_LIMIT: usize = 16 * 1024;

/// The room of each outbox buffer: frames are encoded into one until it
/// holds [`CHUNK_FULL`] bytes, then into the next, so that no buffer grows
/// (copying what it holds) while another is being written, and each stays
/// small enough to be in the cache while it is written.
const CHUNK: usize = 64 * 1024;

/// Bytes a buffer holds before frames go on in the next one: one more
/// frame copied in (its payload under [`COPY_LIMIT`]) still fits
/// [`CHUNK`].
const CHUNK_FULL: usize = CHUNK - COPY_LIMIT - 1024;

/// The room of a connection's first buffer: small until the connection
/// is busy, as most frames on an idle one are a few bytes (it grows to
/// [`CHUNK`] as it fills).
const FIRST_BUFFER: usize = 8 * 1024;

/// Written buffers kept to encode into again, at most: a connection
/// keeps up to this many [`CHUNK`]s once busy.
const SPARE_CHUNKS: usize = 8;

/// The sending side of a connection, shared by every task that sends on
/// it: frames are encoded as they are queued, into one buffer, and written
/// in order by the connection's writer task ([`write_loop`]).
///
/// Queueing a message is a short critical section (encode the fields, copy
/// a small payload) with no allocation in the common case: no channel node,
/// no message moved to another task. A large payload is queued as its own
/// buffer and written from it, with no copy. The writer is woken only when
/// the queue goes from empty to not, and takes everything queued at once.
///
/// It takes messages of one direction, `M`: `Outbox<ToWorker>` on the
/// supervisor's side, `Outbox<ToSupervisor>` on the worker's. Its
/// [`StreamOutbox`] sends stream frames only, which are the same in both
/// directions.
///
/// Cheap to clone; the writer finishes (after writing what is queued) when
/// the last clone (of it or of its [`StreamOutbox`]es) is dropped.
pub struct Outbox<M> {
    streams: StreamOutbox,
    message: PhantomData<fn(M)>,
}

impl<M> std::fmt::Debug for Outbox<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("message", &std::any::type_name::<M>())
            .field("shared", &self.streams.shared)
            .finish()
    }
}

/// The sending side of a connection for [`StreamFrame`]s only, whichever
/// direction it sends: what the stream registry, an [`IncomingStream`]
/// and the pumps hold, so that they are the same types on both sides.
///
/// [`IncomingStream`]: crate::IncomingStream
#[derive(Debug)]
pub struct StreamOutbox {
    shared: Arc<OutboxShared>,
}

/// The writer's end of an [`Outbox`].
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<OutboxShared>,
}

/// Queueing on a connection whose writer has stopped (the socket failed or
/// closed): the message is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection is closed")]
pub struct Closed;

#[derive(Debug)]
struct OutboxShared {
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue stops being empty, or the last
    /// sender leaves.
    wake: Notify,
    /// Wakes the writer, even in the middle of a write, when the queue
    /// passed its limit: the peer has stopped reading.
    overflow: Notify,
    senders: AtomicUsize,
    /// This side's shared-memory arena, where the writer puts large
    /// payloads when they fit.
    outbound: Option<Arc<Outbound>>,
    /// The peer's arena as mapped on this side, if its payloads are lent
    /// here (the worker's view of the requests arena): a payload that lies
    /// in it is sent back as where it lies ([`OWN_ARENA`]). Held, not just
    /// its address range, so no other mapping can take those addresses.
    ///
    /// [`OWN_ARENA`]: crate::shm::OWN_ARENA
    lent: Option<Arc<memmap2::MmapRaw>>,
    /// Offsets of the peer's arena to release, queued apart from the
    /// frames so that dropping a payload (which may happen while `queue`
    /// is locked) never needs that lock; the writer sends them.
    releases: Mutex<Vec<u64>>,
    /// Encodes this direction's `Release`.
    encode_release: fn(u64, usize, &mut BytesMut) -> Result<(), ProtocolError>,
    /// The socket, once the writer runs: a sender writes to it itself when
    /// nothing else is being written ([`Wake::direct`],
    /// [`Outbox::hold_wakes`]). Weak, so that the socket's write half still
    /// shuts down when the writer ends.
    io: OnceLock<Weak<OwnedWriteHalf>>,
}

#[derive(Debug)]
struct Queue {
    /// The frame limit messages are encoded against.
    max_frame_length: usize,
    /// The payload limit, if this side has a shared-memory arena: payloads
    /// from [`SHARED_PAYLOAD_MIN`] up to it are queued as
    /// [`Item::Shareable`].
    share_up_to: Option<usize>,
    /// Whole buffers to write first, in order.
    items: VecDeque<Item>,
    /// Frames encoded after `items`.
    buf: BytesMut,
    /// Empty buffers, written and given back, to encode into once `buf` is
    /// taken or full.
    spares: Vec<BytesMut>,
    /// The writer is gone: nothing queued now would be written.
    closed: bool,
    /// A message that could not be encoded, or the limit passed: the
    /// writer stops with it.
    failed: Option<ProtocolError>,
    /// Bytes queued and not yet written (the writer's current batch
    /// included).
    queued: usize,
    /// The most `queued` may reach.
    limit: usize,
    /// Bytes of the batch the writer is writing and has not written yet;
    /// each write counts what it wrote off both this and `queued` at once,
    /// so that a peer reading as fast as it can is never taken for one
    /// that stopped while the writer waits for its next turn.
    taken: usize,
    /// A batch is being written, by the writer or by a sender writing
    /// directly: nobody else may write until it is done, or frames would
    /// interleave out of order.
    writing: bool,
    /// Senders' wake-ups are held ([`Outbox::hold_wakes`]): whoever holds
    /// them writes what is queued, or wakes the writer, when it lets go.
    held: usize,
}

#[derive(Debug)]
enum Item {
    Data(Bytes),
    /// A frame that carries descriptors: it leads a write of its own.
    WithFds(Bytes, Vec<OwnedFd>),
    /// A frame whose payload may go through the shared-memory arena: the
    /// writer copies it there if it fits (and sends `head` with the
    /// `FLAG_SHARED` bit at `flags_at` set, its length made the
    /// descriptor's), else writes `head` and `tail` as they are. Placing
    /// it in the writer keeps the copy out of whatever lock the sender
    /// holds (the pool's, on the supervisor's side).
    Shareable {
        head: Bytes,
        flags_at: usize,
        tail: Bytes,
    },
    /// Acknowledge once everything before this has been written.
    Flush(oneshot::Sender<()>),
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.buf.is_empty()
    }

    /// The frames encoded so far, as one run to write, and a spare (or a
    /// fresh buffer) in their place.
    fn take_run(&mut self) -> Bytes {
        let next = self
            .spares
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(CHUNK));
        std::mem::replace(&mut self.buf, next).freeze()
    }

    /// Keeps `run`'s buffer as a spare, if it has been written (nothing
    /// else holds it) and is one of the outbox's own.
    fn give_back(&mut self, run: Bytes) {
        if self.spares.len() >= SPARE_CHUNKS || self.closed {
            return;
        }
        if let Ok(mut buffer) = run.try_into_mut() {
            if buffer.capacity() >= FIRST_BUFFER {
                buffer.clear();
                self.spares.push(buffer);
            }
        }
    }

    /// Takes what is queued, if it is one thing a sender may write
    /// itself: a run of encoded frames, or one frame with descriptors.
    fn first_alone(&mut self) -> Option<Item> {
        match self.items.len() {
            0 if !self.buf.is_empty() => Some(Item::Data(self.take_run())),
            1 if self.buf.is_empty() && matches!(self.items[0], Item::WithFds(..)) => {
                self.items.pop_front()
            }
            _ => None,
        }
    }

    /// Ends the current run of encoded frames, so an item can follow it;
    /// returns the bytes moved out of `buf`.
    fn cut(&mut self) -> usize {
        if self.buf.is_empty() {
            return 0;
        }
        let run = self.buf.split().freeze();
        let len = run.len();
        self.items.push_back(Item::Data(run));
        len
    }

    /// Queues `outgoing`, counting its bytes against the limit.
    fn push<M: Wire>(&mut self, outgoing: Outgoing<M>) -> Result<(), ProtocolError> {
        let before = self.buf.len();
        let added = self.push_unchecked(outgoing)?;
        self.queued += added + self.buf.len() - before;
        if self.queued > self.limit {
            // Nothing queued will be written: free it now.
            let error = ProtocolError::Stalled {
                queued: self.queued,
                limit: self.limit,
            };
            self.items.clear();
            self.buf = BytesMut::new();
            self.queued = 0;
            self.taken = 0;
            self.closed = true;
            return Err(error);
        }
        Ok(())
    }

    /// Queues `outgoing`; returns the bytes it added as items of their
    /// own (what it added to `buf` the caller measures).
    fn push_unchecked<M: Wire>(&mut self, outgoing: Outgoing<M>) -> Result<usize, ProtocolError> {
        let mut added = 0;
        match outgoing {
            Outgoing::Frame(message) => {
                if self.buf.len() >= CHUNK_FULL {
                    let run = self.take_run();
                    added += run.len();
                    self.items.push_back(Item::Data(run));
                }
                let flags_at = message.shared_flags_at();
                let start = self.buf.len();
                if let Some(tail) = encode_head(message, self.max_frame_length, &mut self.buf)? {
                    let shareable = self
                        .share_up_to
                        .is_some_and(|max| (SHARED_PAYLOAD_MIN..=max).contains(&tail.len()));
                    if let Some(flags_at) = flags_at.filter(|_| shareable) {
                        let head = self.buf.split_off(start).freeze();
                        added += self.cut();
                        added += head.len() + tail.len();
                        self.items.push_back(Item::Shareable {
                            head,
                            flags_at,
                            tail,
                        });
                    } else if tail.len() < COPY_LIMIT {
                        self.buf.extend_from_slice(&tail);
                    } else {
                        added += self.cut();
                        added += tail.len();
                        self.items.push_back(Item::Data(tail));
                    }
                }
            }
            Outgoing::FrameWithFds(message, fds) => {
                let mut frame = BytesMut::new();
                encode_message(message, self.max_frame_length, &mut frame)?;
                added += self.cut();
                added += frame.len();
                self.items.push_back(Item::WithFds(frame.freeze(), fds));
            }
            Outgoing::Flush(done) => {
                added += self.cut();
                self.items.push_back(Item::Flush(done));
            }
        }
        Ok(added)
    }
}

/// A connection's outbox, encoding messages of type `M` against a frame
/// limit of `max_frame_length` bytes, and its writer's end.
///
/// At most `limit` bytes may wait to be written (`usize::MAX` for no
/// bound): past it the peer is taken to have stopped reading, everything
/// queued is dropped, and the writer stops with
/// [`ProtocolError::Stalled`], even in the middle of a write that the
/// peer never lets finish.
pub fn outbox<M: Wire>(max_frame_length: usize, limit: usize) -> (Outbox<M>, OutboxReceiver) {
    outbox_sharing(max_frame_length, limit, None, None)
}

/// As [`outbox`], putting payloads of [`SHARED_PAYLOAD_MIN`] bytes or
/// more in `outbound` when they fit.
pub(crate) fn outbox_sharing<M: Wire>(
    max_frame_length: usize,
    limit: usize,
    outbound: Option<Arc<Outbound>>,
    lent: Option<Arc<memmap2::MmapRaw>>,
) -> (Outbox<M>, OutboxReceiver) {
    let share_up_to = outbound.is_some().then(|| max_payload(max_frame_length));
    let shared = Arc::new(OutboxShared {
        outbound,
        lent,
        releases: Mutex::new(Vec::new()),
        encode_release: |offset, max, dst| encode_message(M::release(offset), max, dst),
        queue: Mutex::new(Queue {
            max_frame_length,
            share_up_to,
            items: VecDeque::new(),
            buf: BytesMut::with_capacity(FIRST_BUFFER),
            spares: Vec::new(),
            closed: false,
            failed: None,
            queued: 0,
            limit,
            taken: 0,
            writing: false,
            held: 0,
        }),
        wake: Notify::new(),
        overflow: Notify::new(),
        senders: AtomicUsize::new(1),
        io: OnceLock::new(),
    });
    (
        Outbox {
            streams: StreamOutbox {
                shared: shared.clone(),
            },
            message: PhantomData,
        },
        OutboxReceiver { shared },
    )
}

impl<M: Wire> Outbox<M> {
    /// Queues `outgoing` to be written after everything queued before it.
    ///
    /// A message that cannot be encoded (over the frame limit) stops the
    /// writer with that error, as a write failure would: the connection is
    /// then unusable, and the peer's requests fail as its connection ends.
    /// So does passing the outbox's limit ([`ProtocolError::Stalled`]).
    ///
    /// # Errors
    ///
    /// [`Closed`] if the writer has stopped, or this message passed the
    /// limit (it is not sent).
    pub fn send(&self, outgoing: Outgoing<M>) -> Result<(), Closed> {
        self.queue(outgoing).map(drop)
    }

    /// Queues `outgoing` as [`send`](Outbox::send) does, but leaves waking
    /// the writer to the [`Wake`] it returns, so that a caller inside a
    /// critical section queues its frames in order there and wakes the
    /// writer once it is out.
    ///
    /// # Errors
    ///
    /// As [`send`](Outbox::send). Passing the limit wakes the writer at
    /// once: it must stop.
    pub fn queue(&self, outgoing: Outgoing<M>) -> Result<Wake, Closed> {
        self.streams.shared.queue(outgoing)
    }

    /// Queues `message`, as [`send`](Outbox::send) does
    /// `Outgoing::Frame(message)`.
    ///
    /// # Errors
    ///
    /// As [`send`](Outbox::send).
    pub fn send_message(&self, message: M) -> Result<(), Closed> {
        self.send(Outgoing::Frame(message))
    }
}

impl<M> Outbox<M> {
    /// The handle for stream frames on this connection.
    pub fn streams(&self) -> StreamOutbox {
        self.streams.clone()
    }

    /// A slot of `capacity` bytes in this side's shared-memory arena, to
    /// write a payload into where it will lie when sent (its
    /// [`SharedSlot::into_bytes`] queued as a payload crosses with no copy
    /// on this side, if it is [`SHARED_PAYLOAD_MIN`] bytes or more);
    /// `None` without an arena, for a capacity over the payload limit, or
    /// when no free room is that large.
    pub fn reserve_shared(&self, capacity: usize) -> Option<SharedSlot> {
        let shared = &self.streams.shared;
        let max = shared.lock().share_up_to?;
        if capacity > max {
            return None;
        }
        shared.outbound.as_ref()?.reserve(capacity)
    }

    /// Bytes of this side's shared-memory arena held by payloads the peer
    /// has not released yet; `None` without an arena.
    pub fn shared_memory_held(&self) -> Option<usize> {
        self.streams
            .shared
            .outbound
            .as_ref()
            .map(|arena| arena.in_use())
    }

    /// What sends `Release`s of the peer's arena on this connection; it
    /// does not keep the writer running.
    pub(crate) fn releaser(&self) -> Releaser {
        Releaser {
            shared: self.streams.shared.clone(),
        }
    }

    /// Holds back every sender's wake-up of the writer until the
    /// [`HeldWakes`] is dropped, which then writes what was queued
    /// meanwhile itself, as [`Wake::direct`] does, or wakes the writer.
    ///
    /// For a loop that answers a batch of frames it has just read: its
    /// answers go out together, in one write of its own, and the writer's
    /// task never runs for them.
    pub fn hold_wakes(&self) -> HeldWakes {
        let shared = self.streams.shared.clone();
        shared.lock().held += 1;
        HeldWakes { shared }
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.streams.queued()
    }

    /// Whether the writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.streams.is_closed()
    }
}

impl<M> Clone for Outbox<M> {
    fn clone(&self) -> Self {
        Outbox {
            streams: self.streams.clone(),
            message: PhantomData,
        }
    }
}

impl StreamOutbox {
    /// Queues a stream frame, as [`Outbox::send`] does a message.
    ///
    /// # Errors
    ///
    /// As [`Outbox::send`].
    pub fn send(&self, frame: StreamFrame) -> Result<(), Closed> {
        // Stream frames have the same bytes in both directions.
        self.shared
            .queue(Outgoing::Frame(crate::message::ToWorker::Stream(frame)))
            .map(drop)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.shared.lock().queued
    }

    /// Whether the writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl Clone for StreamOutbox {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        StreamOutbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for StreamOutbox {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.wake.notify_one();
        }
    }
}

/// Sends `Release`s of the peer's arena slots, from wherever a payload is
/// dropped: it takes no lock a sender may hold.
#[derive(Debug)]
pub(crate) struct Releaser {
    shared: Arc<OutboxShared>,
}

impl Releaser {
    /// Queues a `Release` of `offset` and wakes the writer; after the
    /// writer has stopped it is never sent, and nothing needs it.
    pub(crate) fn release(&self, offset: u64) {
        self.shared
            .releases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(offset);
        self.shared.wake.notify_one();
    }
}

/// The wake-up a queued frame owes its writer (if the queue was empty
/// before it and nobody was writing): given when dropped, or by
/// [`wake`](Wake::wake).
#[derive(Debug)]
#[must_use = "dropping a Wake wakes the writer at once"]
pub struct Wake {
    shared: Option<Arc<OutboxShared>>,
    direct: bool,
}

impl Wake {
    /// Wakes the writer now (the same as dropping this).
    pub fn wake(self) {}

    /// Whether there is a writer to wake.
    pub fn is_needed(&self) -> bool {
        self.shared.is_some()
    }

    /// Makes this wake-up write what is queued itself, when it is given,
    /// if the socket takes it at once and nothing else is being written,
    /// and wake the writer only for what is left: one task's turn fewer
    /// per frame. For a frame the peer waits for while nothing else is on
    /// its way to it; where more frames follow soon, waking the writer
    /// lets them go in one write.
    pub fn direct(mut self) -> Wake {
        self.direct = true;
        self
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            if self.direct {
                shared.write_now();
            } else {
                shared.wake.notify_one();
            }
        }
    }
}

/// Senders' wake-ups held back ([`Outbox::hold_wakes`]) until this is
/// dropped, which writes what they queued.
#[derive(Debug)]
#[must_use = "dropping HeldWakes lets go of the wake-ups at once"]
pub struct HeldWakes {
    shared: Arc<OutboxShared>,
}

impl Drop for HeldWakes {
    fn drop(&mut self) {
        let last = {
            let mut queue = self.shared.lock();
            queue.held -= 1;
            queue.held == 0
        };
        if last {
            self.shared.write_now();
        }
    }
}

impl OutboxShared {
    /// Queues `outgoing` (see [`Outbox::queue`]).
    fn queue<M: Wire>(self: &Arc<Self>, outgoing: Outgoing<M>) -> Result<Wake, Closed> {
        let (owed, overflowed) = {
            let mut queue = self.lock();
            if queue.closed {
                return Err(Closed);
            }
            // Whoever writes now, or holds the wake-ups, takes this frame
            // too when done.
            let owed = queue.is_empty() && !queue.writing && queue.held == 0;
            match queue.push(outgoing) {
                Ok(()) => (owed, false),
                Err(e) => {
                    let overflowed = matches!(e, ProtocolError::Stalled { .. });
                    queue.failed.get_or_insert(e);
                    (true, overflowed)
                }
            }
        };
        if overflowed {
            self.overflow.notify_one();
            return Err(Closed);
        }
        Ok(Wake {
            shared: owed.then(|| self.clone()),
            direct: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Plain data: a panic elsewhere leaves it usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}
