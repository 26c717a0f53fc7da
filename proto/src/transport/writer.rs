//! The writer's side of an outbox: the task that writes what is queued
//! ([`write_loop`]), and the sender that writes its own frames when nothing
//! else is being written (`OutboxShared::write_now`).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::unix::OwnedWriteHalf;

use super::{Item, OutboxReceiver, OutboxShared};
use crate::error::ProtocolError;
use crate::frame::FRAME_HEADER_LEN;
use crate::shm::{self, DESCRIPTOR_LEN};
use crate::wire::FLAG_SHARED;

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

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

impl OutboxShared {
    /// Writes what is queued, here and now, if it is a run of frames or one
    /// frame with descriptors, nothing else is being written, and the
    /// socket takes it without waiting;
    /// what it cannot write (or may not) is left to the writer, woken for
    /// it. One system call and no task's turn, where waking the writer
    /// costs a turn of its task besides the same call.
    pub(super) fn write_now(&self) {
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
        // Bytes lent from the peer's arena go back as where they lie; a
        // payload written in place is sent where it lies; others are
        // copied in, if they fit.
        let lent = self.lent_at(&tail);
        let placed = lent.or_else(|| {
            self.outbound
                .as_ref()
                .and_then(|arena| arena.sent_in_place(&tail).or_else(|| arena.place(&tail)))
        });
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
        let frame = frame.freeze();
        if lent.is_some() {
            // The lent bytes are held until the frame naming them is
            // written, so that their `Release` (sent once they are
            // dropped) follows it: the peer must not free the slot first.
            pending.push_back(Bytes::from_owner(Naming { frame, _lent: tail }));
        } else {
            pending.push_back(frame);
        }
    }

    /// The descriptor of `payload` as it lies in the peer's arena, if it
    /// is bytes lent from there.
    fn lent_at(&self, payload: &[u8]) -> Option<[u8; DESCRIPTOR_LEN]> {
        shm::lent_descriptor(self.lent.as_deref()?, payload)
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

    /// Whether `payload` takes no new room in the arena: it was written in
    /// place (it holds its room already) or is lent from the peer's.
    fn in_place(&self, payload: &[u8]) -> bool {
        self.lent_at(payload).is_some()
            || self
                .outbound
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

/// A frame that names bytes lent from the peer's arena, and those bytes,
/// held until the frame is written.
struct Naming {
    frame: Bytes,
    _lent: Bytes,
}

impl AsRef<[u8]> for Naming {
    fn as_ref(&self) -> &[u8] {
        &self.frame
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
