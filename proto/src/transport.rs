//! Moving frames between a socket and the tasks that produce them.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use std::marker::PhantomData;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{oneshot, Notify};

use crate::codec::{encode_head, encode_message, max_payload};
use crate::error::ProtocolError;
use crate::frame::FRAME_HEADER_LEN;
use crate::message::StreamFrame;
use crate::shm::{Outbound, SharedSlot, DESCRIPTOR_LEN, SHARED_PAYLOAD_MIN};
use crate::wire::Wire;
use crate::wire::FLAG_SHARED;

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

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

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

/// Bytes of this side's arena the peer may hold (payloads sent and not
/// released) before the writer waits, up to [`ARENA_WAIT`], to place
/// another: a peer that works through its payloads one at a time gains
/// nothing from more, and the fewer it holds, the likelier the next is
/// still in the cache when it reads it (1 MiB payloads at C = 16 to two
/// echo workers: 1.6 to 1.8 times the rate). A payload alone may be
/// larger.
const ARENA_WINDOW: usize = 4 << 20;

/// The longest the writer waits for the peer to release room in the arena
/// before the payload goes on anyway: a peer that holds many payloads at
/// once (it serves them concurrently, or keeps them) costs each of its own
/// large requests at most this much.
const ARENA_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

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
    outbox_sharing(max_frame_length, limit, None)
}

/// As [`outbox`], putting payloads of [`SHARED_PAYLOAD_MIN`] bytes or
/// more in `outbound` when they fit.
pub(crate) fn outbox_sharing<M: Wire>(
    max_frame_length: usize,
    limit: usize,
    outbound: Option<Arc<Outbound>>,
) -> (Outbox<M>, OutboxReceiver) {
    let share_up_to = outbound.is_some().then(|| max_payload(max_frame_length));
    let shared = Arc::new(OutboxShared {
        outbound,
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

    /// Writes what is queued, here and now, if it is frames only, nothing
    /// else is being written, and the socket takes them without waiting;
    /// what it cannot write (or may not) is left to the writer, woken for
    /// it. One system call and no task's turn, where waking the writer
    /// costs a turn of its task besides the same call.
    fn write_now(&self) {
        let io = self.io.get().and_then(Weak::upgrade);
        let (io, first) = {
            let mut queue = self.lock();
            let free = !queue.closed && !queue.writing && queue.held == 0;
            let first = match io {
                Some(io) if free && queue.failed.is_none() => queue.first_alone().map(|f| (io, f)),
                _ => None,
            };
            let Some(first) = first else {
                // Whoever writes takes it from here; otherwise the writer,
                // if there is anything for it.
                let idle = !queue.writing && queue.held == 0;
                let owed = idle && (!queue.is_empty() || queue.failed.is_some());
                drop(queue);
                if owed {
                    self.wake.notify_one();
                }
                return;
            };
            queue.writing = true;
            first
        };
        // A socket that fails fails the writer's next write too, which
        // reports it: here it only means writing nothing.
        let mut written_run = None;
        let (n, rest) = match first {
            Item::Data(run) => {
                let n = io.try_write(&run).unwrap_or(0);
                if n < run.len() {
                    (n, Some(Item::Data(run.slice(n..))))
                } else {
                    written_run = Some(run);
                    (n, None)
                }
            }
            Item::WithFds(frame, fds) => {
                match crate::fdio::try_send_with_fds(&io, &frame, &fds) {
                    // The descriptors went with the first byte.
                    Ok(n) => (n, (n < frame.len()).then(|| Item::Data(frame.slice(n..)))),
                    Err(_) => (0, Some(Item::WithFds(frame, fds))),
                }
            }
            other => (0, Some(other)),
        };
        let owed = {
            let mut queue = self.lock();
            queue.writing = false;
            queue.queued = queue.queued.saturating_sub(n);
            if let Some(run) = written_run {
                queue.give_back(run);
            }
            if let Some(rest) = rest.filter(|_| !queue.closed) {
                queue.items.push_front(rest);
            }
            // Frames queued meanwhile owed nobody a wake-up; a writer
            // waiting to finish (its senders gone) needs one too.
            !queue.is_empty() || self.senders.load(Ordering::Acquire) == 0
        };
        let releases = !self
            .releases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if owed || releases {
            self.wake.notify_one();
        }
    }

    /// The frame to write for a shareable one: its payload copied into
    /// the arena and the head marked and shortened to carry the descriptor,
    /// or, if it does not fit, the frame as it is.
    fn place(&self, head: Bytes, flags_at: usize, tail: Bytes, pending: &mut VecDeque<Bytes>) {
        // A payload written in place is sent where it lies; others are
        // copied in, if they fit.
        let placed = self
            .outbound
            .as_ref()
            .and_then(|arena| arena.sent_in_place(&tail).or_else(|| arena.place(&tail)));
        let Some(descriptor) = placed else {
            pending.push_back(head);
            pending.push_back(tail);
            return;
        };
        let mut frame = BytesMut::with_capacity(head.len() + DESCRIPTOR_LEN);
        frame.extend_from_slice(&head);
        frame.extend_from_slice(&descriptor);
        let body = (frame.len() - FRAME_HEADER_LEN) as u32;
        frame[..FRAME_HEADER_LEN].copy_from_slice(&body.to_be_bytes());
        frame[FRAME_HEADER_LEN + flags_at] |= FLAG_SHARED;
        // The payload was counted as queued and will never be written.
        self.written(head.len() + tail.len() - frame.len());
        pending.push_back(frame.freeze());
    }

    /// Whether a payload of `len` bytes should wait before it goes into
    /// the arena: other payloads the peer has not released hold
    /// [`ARENA_WINDOW`] or more with it.
    fn must_wait(&self, len: usize) -> bool {
        self.outbound.as_ref().is_some_and(|arena| {
            let held = arena.in_use();
            held > 0 && held + len > ARENA_WINDOW
        })
    }

    /// Whether `payload` was written in place (it holds its room already).
    fn in_place(&self, payload: &[u8]) -> bool {
        self.outbound
            .as_ref()
            .is_some_and(|arena| arena.is_in_place(payload))
    }

    /// Waits, at a frame boundary, until the peer releases enough of the
    /// arena for a payload of `len` bytes, or for [`ARENA_WAIT`] (then the
    /// payload goes on: into the arena if it fits, else through the
    /// socket); writes the `Release`s this side owes meanwhile, so that
    /// neither side waits on the other.
    async fn wait_for_room(&self, io: &OwnedWriteHalf, len: usize) -> Result<(), ProtocolError> {
        let Some(arena) = &self.outbound else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + ARENA_WAIT;
        loop {
            let freed = arena.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !self.must_wait(len) {
                return Ok(());
            }
            tokio::select! {
                () = &mut freed => {}
                () = self.wake.notified() => {
                    let max = self.lock().max_frame_length;
                    if let Some(Item::Data(frames)) = self.take_releases(max)? {
                        {
                            let mut queue = self.lock();
                            queue.queued += frames.len();
                            queue.taken += frames.len();
                        }
                        write_all(io, &mut VecDeque::from([frames]), self).await?;
                    }
                }
                () = self.overflow.notified() => return Err(self.stalled()),
                () = tokio::time::sleep_until(deadline) => return Ok(()),
            }
        }
    }

    /// The `Release`s queued since the last batch, encoded: they lead the
    /// next write, so a `Flush` queued after a payload was dropped
    /// acknowledges its `Release` too.
    fn take_releases(&self, max_frame_length: usize) -> Result<Option<Item>, ProtocolError> {
        let offsets = std::mem::take(&mut *self.releases.lock().unwrap_or_else(|e| e.into_inner()));
        if offsets.is_empty() {
            return Ok(None);
        }
        let mut frames = BytesMut::new();
        for offset in offsets {
            (self.encode_release)(offset, max_frame_length, &mut frames)?;
        }
        Ok(Some(Item::Data(frames.freeze())))
    }

    /// The writer wrote `n` bytes of its batch: they no longer count
    /// against the limit.
    fn written(&self, n: usize) {
        let mut queue = self.lock();
        queue.queued = queue.queued.saturating_sub(n);
        queue.taken = queue.taken.saturating_sub(n);
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Plain data: a panic elsewhere leaves it usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error that passing the limit left in the queue.
    fn stalled(&self) -> ProtocolError {
        let mut queue = self.lock();
        match queue.failed.take() {
            Some(error) => error,
            None => ProtocolError::Stalled {
                queued: queue.queued,
                limit: queue.limit,
            },
        }
    }
}

/// Marks the outbox closed when its writer ends, however it ends.
struct CloseOnDrop<'a>(&'a OutboxShared);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.closed = true;
        // Descriptors and flush waiters go now, not with the last sender.
        queue.items.clear();
    }
}

/// Writes what is queued on `rx`'s outbox to `io` until every sender is
/// gone or the socket fails.
///
/// Whatever is queued when the task wakes goes out in one vectored write
/// (or as few as the socket allows), so a busy connection pays one wake-up
/// and one system call per batch, not per frame. On a multi-thread runtime
/// the task yields once after each wake-up, so that frames the tasks ready
/// on this thread are about to queue join the same write; on a
/// current-thread runtime they run before it anyway, and a yield would
/// only cost each round trip a pass through the runtime's I/O driver.
///
/// # Errors
///
/// The first write failure, or the first message that could not be
/// encoded; the connection is then unusable.
pub async fn write_loop(io: OwnedWriteHalf, rx: OutboxReceiver) -> Result<(), ProtocolError> {
    let shared = &*rx.shared;
    let _closed = CloseOnDrop(shared);
    let io = Arc::new(io);
    let _ = shared.io.set(Arc::downgrade(&io));
    let mut batch: VecDeque<Item> = VecDeque::new();
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    // On a current-thread runtime every task ready to queue more runs before
    // this one gets its turn anyway; on a multi-thread one, another thread
    // would run it at once, so it yields first.
    let coalesce = tokio::runtime::Handle::current().runtime_flavor()
        != tokio::runtime::RuntimeFlavor::CurrentThread;
    // Whether the queue's `writing` mark is this task's (its last batch).
    let mut marked = false;
    // The last batch's runs of encoded frames, to give their buffers back.
    let mut written_runs: Vec<Bytes> = Vec::new();
    loop {
        let sender_writing = {
            let mut queue = shared.lock();
            if std::mem::take(&mut marked) {
                queue.writing = false;
            }
            for run in written_runs.drain(..) {
                queue.give_back(run);
            }
            if let Some(error) = queue.failed.take() {
                return Err(error);
            }
            // A sender writing directly wakes this task when done, if
            // anything is left.
            let sender_writing = queue.writing;
            if !sender_writing {
                // The last batch is written (each write counted itself off
                // already; this is only a safety net).
                queue.queued = queue.queued.saturating_sub(queue.taken);
                let releases = shared.take_releases(queue.max_frame_length)?;
                if let Some(Item::Data(frames)) = &releases {
                    queue.queued += frames.len();
                }
                queue.taken = queue.queued;
                std::mem::swap(&mut batch, &mut queue.items);
                if !queue.buf.is_empty() {
                    let run = queue.take_run();
                    batch.push_back(Item::Data(run));
                }
                if let Some(releases) = releases {
                    batch.push_front(releases);
                }
                if !batch.is_empty() {
                    queue.writing = true;
                    marked = true;
                }
            }
            sender_writing
        };
        if batch.is_empty() {
            if !sender_writing && shared.senders.load(Ordering::Acquire) == 0 {
                break;
            }
            shared.wake.notified().await;
            if coalesce {
                // Let the tasks that are ready to queue more do so first.
                tokio::task::yield_now().await;
            }
            continue;
        }
        for item in batch.drain(..) {
            match item {
                Item::Data(bytes) => {
                    written_runs.push(bytes.clone());
                    pending.push_back(bytes);
                }
                Item::WithFds(frame, fds) => {
                    // Everything before goes first; then this frame leads a
                    // write of its own, carrying the descriptors.
                    write_all(&io, &mut pending, shared).await?;
                    let sent = tokio::select! {
                        biased;
                        sent = crate::fdio::send_with_fds(&io, &frame, &fds) => sent?,
                        () = shared.overflow.notified() => return Err(shared.stalled()),
                    };
                    shared.written(sent);
                    drop(fds);
                    pending.push_back(frame.slice(sent..));
                }
                Item::Shareable {
                    head,
                    flags_at,
                    tail,
                } => {
                    if !shared.in_place(&tail) && shared.must_wait(tail.len()) {
                        write_all(&io, &mut pending, shared).await?;
                        shared.wait_for_room(&io, tail.len()).await?;
                    }
                    shared.place(head, flags_at, tail, &mut pending);
                }
                Item::Flush(done) => {
                    write_all(&io, &mut pending, shared).await?;
                    let _ = done.send(());
                }
            }
        }
        write_all(&io, &mut pending, shared).await?;
    }
    Ok(())
}

/// One vectored write of `slices`, once the socket takes it.
async fn write_vectored(io: &OwnedWriteHalf, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
    loop {
        io.writable().await?;
        match io.try_write_vectored(slices) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            written => return written,
        }
    }
}

/// Writes every buffer of `queue`, in order, with vectored writes.
async fn write_all(
    io: &OwnedWriteHalf,
    queue: &mut VecDeque<Bytes>,
    shared: &OutboxShared,
) -> Result<(), ProtocolError> {
    while !queue.is_empty() {
        let mut written = {
            let slices: Vec<IoSlice<'_>> = queue
                .iter()
                .filter(|b| !b.is_empty())
                .take(MAX_IOVECS)
                .map(|b| IoSlice::new(b))
                .collect();
            if slices.is_empty() {
                queue.clear();
                return Ok(());
            }
            // A peer that never reads would hold this write forever: the
            // outbox passing its limit ends it. The write is tried first,
            // so that one that goes at once never registers for the
            // limit's notice (a lock taken and given back, twice, per
            // write).
            let n = tokio::select! {
                biased;
                n = write_vectored(io, &slices) => n?,
                () = shared.overflow.notified() => return Err(shared.stalled()),
            };
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            shared.written(n);
            n
        };
        while written > 0 {
            let Some(front) = queue.front_mut() else {
                break;
            };
            if front.len() <= written {
                written -= front.len();
                queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
        while queue.front().is_some_and(Bytes::is_empty) {
            queue.pop_front();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::MessageCodec;
    use crate::fdio::FdReader;
    use crate::message::ToWorker;
    use crate::reader::FrameReader;
    use futures::StreamExt;
    use uuid::Uuid;

    /// An outbox writing to one end of a socket pair, and a reader of the
    /// other end.
    fn connection(
        max: usize,
    ) -> (
        Outbox<ToWorker>,
        tokio::task::JoinHandle<Result<(), ProtocolError>>,
        FrameReader<ToWorker>,
    ) {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_, write) = a.into_split();
        let (read, _) = b.into_split();
        let (out, rx) = outbox(max, usize::MAX);
        let writer = tokio::spawn(write_loop(write, rx));
        (
            out,
            writer,
            FrameReader::new(FdReader::new(read), MessageCodec::new(max)),
        )
    }

    fn data(id: u128, bytes: Bytes) -> Outgoing<ToWorker> {
        Outgoing::Frame(ToWorker::Stream(StreamFrame::Data {
            id: Uuid::from_u128(id),
            bytes,
        }))
    }

    /// Small frames and large payloads from several senders: each
    /// sender's frames arrive whole and in its order, and the writer ends
    /// once the last sender is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_arrive_whole_and_in_order_and_the_writer_ends_with_its_senders() {
        let (out, writer, mut reader) = connection(1 << 22);
        let senders: Vec<_> = (0..4u128)
            .map(|sender| {
                let out = out.clone();
                tokio::spawn(async move {
                    for i in 0..200u128 {
                        let size = if i % 50 == 7 {
                            COPY_LIMIT * 3
                        } else {
                            (i % 40) as usize
                        };
                        let bytes = Bytes::from(vec![(sender * 31 + i) as u8; size]);
                        out.send(data(sender << 32 | i, bytes)).unwrap();
                        if i % 16 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        drop(out);
        for sender in senders {
            sender.await.unwrap();
        }
        let mut next = [0u128; 4];
        while let Some(message) = reader.next().await {
            let ToWorker::Stream(StreamFrame::Data { id, bytes }) = message.unwrap() else {
                panic!("not a data frame");
            };
            let (sender, i) = (id.as_u128() >> 32, id.as_u128() & 0xffff_ffff);
            assert_eq!(i, next[sender as usize], "sender {sender} out of order");
            next[sender as usize] += 1;
            let size = if i % 50 == 7 {
                COPY_LIMIT * 3
            } else {
                (i % 40) as usize
            };
            assert_eq!(bytes.len(), size);
            assert!(bytes.iter().all(|&b| b == (sender * 31 + i) as u8));
        }
        assert_eq!(next, [200; 4]);
        writer.await.unwrap().unwrap();
    }

    /// Frames written by their senders themselves (`Wake::direct`) and by
    /// the writer, from several threads, through a socket the peer only
    /// starts reading once it is full: each sender's frames still arrive
    /// whole and in its order, and the writer ends with its senders.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_writes_and_the_writer_keep_one_order_through_a_full_socket() {
        let (out, writer, mut reader) = connection(1 << 22);
        let size = |i: u128| {
            if i % 7 == 3 {
                9000
            } else {
                (i % 50) as usize * 20
            }
        };
        let senders: Vec<_> = (0..3u128)
            .map(|sender| {
                let out = out.clone();
                tokio::spawn(async move {
                    for i in 0..400u128 {
                        let bytes = Bytes::from(vec![(sender * 17 + i) as u8; size(i)]);
                        let wake = out.queue(data(sender << 32 | i, bytes)).unwrap();
                        if i % 3 == 0 {
                            drop(wake);
                        } else {
                            drop(wake.direct());
                        }
                        if i % 32 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        drop(out);
        for sender in senders {
            sender.await.unwrap();
        }
        let mut next = [0u128; 3];
        while let Some(message) = reader.next().await {
            let ToWorker::Stream(StreamFrame::Data { id, bytes }) = message.unwrap() else {
                panic!("not a data frame");
            };
            let (sender, i) = (id.as_u128() >> 32, id.as_u128() & 0xffff_ffff);
            assert_eq!(i, next[sender as usize], "sender {sender} out of order");
            next[sender as usize] += 1;
            assert_eq!(bytes.len(), size(i));
            assert!(bytes.iter().all(|&b| b == (sender * 17 + i) as u8));
        }
        assert_eq!(next, [400; 3]);
        writer.await.unwrap().unwrap();
    }

    /// A direct wake-up writes its frame before the caller yields; held
    /// wake-ups leave frames queued however often the writer could have
    /// run, and write them all once let go.
    #[tokio::test]
    async fn a_direct_wake_writes_at_once_and_held_wakes_when_let_go() {
        let (out, _writer, mut reader) = connection(1 << 20);
        // A first frame through the writer, so the socket is known writable.
        out.send(data(0, Bytes::from_static(b"first"))).unwrap();
        reader.next().await.unwrap().unwrap();

        drop(
            out.queue(data(1, Bytes::from_static(b"direct")))
                .unwrap()
                .direct(),
        );
        assert_eq!(out.queued(), 0, "written before any other task ran");

        let held = out.hold_wakes();
        for id in 2..5 {
            out.send(data(id, Bytes::from(vec![id as u8; 100])))
                .unwrap();
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let frame = 100 + 22;
        assert_eq!(out.queued(), 3 * frame, "the writer was never woken");
        drop(held);
        assert_eq!(out.queued(), 0, "written as the wake-ups were let go");
        for id in 1..5u128 {
            let ToWorker::Stream(StreamFrame::Data { id: got, .. }) =
                reader.next().await.unwrap().unwrap()
            else {
                panic!("not a data frame");
            };
            assert_eq!(got.as_u128(), id);
        }
    }

    /// A frame with a descriptor, written by its sender itself, arrives
    /// with the descriptor.
    #[tokio::test]
    async fn a_direct_wake_sends_a_frame_with_descriptors_at_once() {
        let (out, _writer, mut reader) = connection(1 << 20);
        out.send(data(0, Bytes::from_static(b"first"))).unwrap();
        reader.next().await.unwrap().unwrap();
        let (passed, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let carrying = ToWorker::Cancel {
            id: Uuid::from_u128(1),
        };
        let wake = out
            .queue(Outgoing::FrameWithFds(
                carrying.clone(),
                vec![passed.into()],
            ))
            .unwrap();
        drop(wake.direct());
        assert_eq!(out.queued(), 0, "sent before any other task ran");
        assert_eq!(reader.next().await.unwrap().unwrap(), carrying);
        assert_eq!(reader.get_mut().take_fds(1).map(|fds| fds.len()), Some(1));
    }

    /// A buffer the writer has written is kept, once nothing else holds
    /// it, to encode the next frames into.
    #[tokio::test]
    async fn a_written_buffer_is_given_back_to_encode_into() {
        let (out, _writer, mut reader) = connection(1 << 20);
        out.send(data(1, Bytes::from(vec![1u8; 1000]))).unwrap();
        reader.next().await.unwrap().unwrap();
        // The writer gives the first batch's buffer back before it takes
        // the next batch, which the flush ends.
        out.send(data(2, Bytes::from(vec![2u8; 1000]))).unwrap();
        let (done, flushed) = oneshot::channel();
        out.send(Outgoing::Flush(done)).unwrap();
        flushed.await.expect("flushed");
        let queue = out.streams.shared.lock();
        let spare = queue.spares.last().expect("the written buffer is kept");
        assert!(spare.is_empty());
        assert!(spare.capacity() >= FIRST_BUFFER);
    }

    /// A flush is acknowledged once what was queued before it is written,
    /// and descriptors arrive with the frame that carries them.
    #[tokio::test]
    async fn flushes_follow_their_frames_and_descriptors_their_frame() {
        let (out, _writer, mut reader) = connection(1 << 20);
        out.send(data(1, Bytes::from_static(b"first"))).unwrap();
        let (passed, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let carrying = ToWorker::Cancel {
            id: Uuid::from_u128(2),
        };
        out.send(Outgoing::FrameWithFds(
            carrying.clone(),
            vec![passed.into()],
        ))
        .unwrap();
        let (done, flushed) = oneshot::channel();
        out.send(Outgoing::Flush(done)).unwrap();
        flushed.await.expect("flushed");
        let first = reader.next().await.unwrap().unwrap();
        assert!(matches!(first, ToWorker::Stream(StreamFrame::Data { .. })));
        assert_eq!(reader.next().await.unwrap().unwrap(), carrying);
        assert_eq!(reader.get_mut().take_fds(1).map(|fds| fds.len()), Some(1));
    }

    /// A peer that stops reading: once more than the limit waits, the
    /// send is refused, what was queued is dropped, and the writer stops
    /// with `Stalled` even though its write never completes.
    #[tokio::test]
    async fn a_peer_that_stops_reading_stalls_the_outbox_at_its_limit() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let (_, write) = a.into_split();
        let limit = 1 << 20;
        let (out, rx) = outbox::<ToWorker>(1 << 20, limit);
        let writer = tokio::spawn(write_loop(write, rx));
        let chunk = Bytes::from(vec![1u8; 64 * 1024]);
        let mut sent = 0usize;
        let refused = loop {
            match out.send(data(1, chunk.clone())) {
                Ok(()) => sent += chunk.len(),
                Err(Closed) => break sent,
            }
            assert!(sent <= 64 << 20, "never refused");
            tokio::task::yield_now().await;
        };
        // Some went into the socket's buffer; no more than the limit waited.
        assert!(refused > limit, "refused after {refused} bytes");
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), writer)
            .await
            .expect("the writer stops")
            .unwrap();
        match result {
            Err(ProtocolError::Stalled { queued, limit: l }) => {
                assert_eq!(l, limit);
                assert!(queued > limit);
            }
            other => panic!("expected Stalled, got {other:?}"),
        }
        assert_eq!(out.queued(), 0, "nothing is kept once stalled");
        assert_eq!(out.send(data(2, Bytes::new())), Err(Closed));
    }

    /// Two large frames written in one batch: once the peer has read the
    /// first, its bytes no longer count, though the batch is not done, so
    /// a third fits under a limit that two and a half of them would pass.
    #[tokio::test]
    async fn what_a_batch_has_written_counts_off_the_limit_at_once() {
        use tokio::io::AsyncReadExt;
        let (a, mut peer) = tokio::net::UnixStream::pair().unwrap();
        let (_, write) = a.into_split();
        let frame = 1 << 20;
        let (out, rx) = outbox::<ToWorker>(4 << 20, frame * 5 / 2);
        // Both queued before the writer first runs: one batch.
        out.send(data(1, Bytes::from(vec![1u8; frame]))).unwrap();
        out.send(data(2, Bytes::from(vec![2u8; frame]))).unwrap();
        let writer = tokio::spawn(write_loop(write, rx));
        // The first frame, header and all, then a little of the second.
        let mut first = vec![0u8; frame + 64 * 1024];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            peer.read_exact(&mut first),
        )
        .await
        .expect("the first frame arrives")
        .unwrap();
        assert!(
            out.queued() < 2 * frame,
            "queued {} after a frame was read",
            out.queued()
        );
        out.send(data(3, Bytes::from(vec![3u8; frame])))
            .expect("a third frame fits: the first was written");
        drop(out);
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(first.len() + rest.len(), 3 * (frame + 22));
        writer.await.unwrap().unwrap();
    }

    /// A message over the frame limit stops the writer with that error,
    /// and what is sent afterwards is refused.
    #[tokio::test]
    async fn a_message_over_the_limit_stops_the_writer() {
        let (out, writer, _reader) = connection(1024);
        out.send(data(1, Bytes::from(vec![0u8; 4096]))).unwrap();
        match writer.await.unwrap() {
            Err(ProtocolError::FrameTooLarge { max: 1024, .. }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert!(out.is_closed());
        assert_eq!(out.send(data(2, Bytes::new())), Err(Closed));
    }

    /// Stream frames sent through the untyped handle arrive as the
    /// direction's stream messages; the writer lives until the last
    /// handle of either kind is gone.
    #[tokio::test]
    async fn the_stream_handle_sends_stream_frames_and_keeps_the_writer() {
        let (out, writer, mut reader) = connection(1 << 20);
        let streams = out.streams();
        drop(out);
        let id = Uuid::from_u128(5);
        streams.send(StreamFrame::Credit { id, bytes: 7 }).unwrap();
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            ToWorker::Stream(StreamFrame::Credit { id, bytes: 7 })
        );
        assert!(!writer.is_finished());
        drop(streams);
        writer.await.unwrap().unwrap();
        assert!(reader.next().await.is_none());
    }
}
