//! The read side of a connection: frames in, messages out.
//!
//! [`FrameReader`] reads the socket through an [`FdReader`] and decodes
//! with a [`MessageCodec`], as tokio-util's `FramedRead` would, with one
//! difference that matters for large payloads: the body of a large frame
//! ([`frame::pooled`]) is read straight into a buffer of its own, taken from a small pool of
//! the connection's, and handed to the receiver as `Bytes` that give the
//! buffer back to the pool when dropped.
//!
//! Without the pool every large frame needs a fresh allocation, and the
//! system allocator serves (and returns) allocations of a megabyte or more
//! by mapping fresh pages: the kernel then faults in and zeroes every page
//! of every payload as it copies it in, which costs more than the copy.
//! A recycled buffer has its pages mapped already. A connection keeps up
//! to 16 MiB of spare buffers of at most 4 MiB each, and larger ones only
//! while they are reused, each for at most a second (`BufferPool`).

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;

use crate::codec::MessageCodec;
use crate::error::ProtocolError;
use crate::fdio::FdReader;
use crate::frame::{self, Peek, FRAME_HEADER_LEN};
use crate::shm::{Inbound, Outbound};
use crate::wire::Wire;

/// Room reserved for each read of small frames.
const READ_CHUNK: usize = 64 * 1024;

/// Read buffers a connection keeps after giving them up while frames read
/// into them were still held, to read into again once those are dropped
/// (96 KiB each, so at most 768 KiB more per connection, held only after
/// that many were in use at once).
///
/// Without them every read made while the last one's frames are alive
/// allocates a fresh buffer and frees the old one once its frames are
/// gone, and glibc gives the top of its heap back to the kernel and takes
/// it again over and over: at 4 KiB payloads, C = 256 (the echo
/// benchmark), the supervisor made 1,700 `brk` calls per 100,000 requests
/// (each shrink a TLB shoot-down across the CPUs: 5% of all CPU time in
/// `perf`), and the run 25,500 page faults per 400,000 requests (raw
/// sockets: 1,400). With 8 kept: 40-100 `brk` calls and 7,100 page
/// faults, and 4% more requests per second (medians of 8 alternating
/// runs). Four kept left 200 `brk` calls.
const RETIRED_BUFFERS: usize = 8;

/// Bytes of spare buffers a connection keeps for reuse once their
/// payloads are dropped.
const POOL_BYTES: usize = 16 * 1024 * 1024;

/// Buffers larger than this are kept only while they are reused (see
/// [`BufferPool`]): a connection that once carried a huge frame should not
/// hold it forever.
const POOLED_BUFFER_MAX: usize = 4 * 1024 * 1024;

/// Bytes of large spare buffers (over `POOLED_BUFFER_MAX`) a connection
/// keeps at most: two payloads of the largest default frame.
const LARGE_SPARE_BYTES: usize = 2 * crate::frame::DEFAULT_MAX_FRAME_LENGTH;

/// How long a large spare buffer may lie unused before it is freed.
const SPARE_LINGER: Duration = Duration::from_secs(1);

/// Reads frames from a connection and decodes them into messages of one
/// direction: `FrameReader<ToSupervisor>` on the supervisor's side,
/// `FrameReader<ToWorker>` on the worker's.
///
/// A `Stream` of `Result<M, ProtocolError>`: it ends (`None`) at a
/// clean end of input, between frames; end of input inside a frame is
/// [`ProtocolError::Truncated`]. After an error it yields nothing more.
#[derive(Debug)]
pub struct FrameReader<M> {
    io: FdReader,
    codec: MessageCodec<M>,
    /// Bytes read and not yet decoded (small frames, and the start of a
    /// large one until it is recognised).
    buf: BytesMut,
    /// Read buffers given up while frames in them were still held, the
    /// most recently given up last ([`RETIRED_BUFFERS`]).
    retired: Vec<BytesMut>,
    /// The large frame being read, body only.
    large: Option<LargeBody>,
    pool: Arc<BufferPool>,
    /// This side's shared-memory arena, whose slots the peer's `Release`s
    /// free; `None` makes a `Release` a protocol error.
    outbound: Option<Arc<Outbound>>,
    /// The socket reached end of input.
    eof: bool,
    /// An error or the end was reported: nothing more comes.
    done: bool,
}

#[derive(Debug)]
struct LargeBody {
    body: Vec<u8>,
    len: usize,
}

impl<M: Wire> FrameReader<M> {
    /// Reads frames from `io`, decoding them with `codec`.
    pub fn new(io: FdReader, codec: MessageCodec<M>) -> FrameReader<M> {
        FrameReader {
            io,
            codec,
            buf: BytesMut::new(),
            retired: Vec::new(),
            large: None,
            pool: Arc::default(),
            outbound: None,
            eof: false,
            done: false,
        }
    }

    /// The socket reader (for the descriptors it received).
    pub fn get_ref(&self) -> &FdReader {
        &self.io
    }

    /// The socket reader, mutably (to take descriptors).
    pub fn get_mut(&mut self) -> &mut FdReader {
        &mut self.io
    }

    /// The codec (to change the frame limit).
    pub fn decoder_mut(&mut self) -> &mut MessageCodec<M> {
        &mut self.codec
    }

    /// The connection's spare buffers for large payloads.
    pub(crate) fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// Takes the peer's shared-memory payloads from `inbound`, and its
    /// `Release`s of this side's `outbound`, from now on.
    pub(crate) fn share(&mut self, inbound: Arc<Inbound>, outbound: Arc<Outbound>) {
        self.codec.set_inbound(inbound);
        self.outbound = Some(outbound);
    }

    /// Applies a `Release` here (it is never handed on); other messages
    /// pass.
    fn released(&self, message: M) -> Result<Option<M>, ProtocolError> {
        let Some(offset) = message.as_release() else {
            return Ok(Some(message));
        };
        match &self.outbound {
            Some(outbound) => outbound.free(offset).map(|()| None),
            None => Err(ProtocolError::BadRelease {
                offset,
                reason: "this connection has no shared-memory arena",
            }),
        }
    }

    /// The next message if a whole frame is already buffered: no read, no
    /// waiting. A reader that just got a message drains the rest of what
    /// one read brought with this, without a round through its task's
    /// other duties per frame.
    pub fn next_buffered(&mut self) -> Option<Result<M, ProtocolError>> {
        if self.done || self.large.is_some() {
            return None;
        }
        loop {
            let next = self
                .codec
                .decode(&mut self.buf)
                .and_then(|m| m.map(|m| self.released(m)).transpose());
            match next {
                Ok(Some(None)) => continue,
                Ok(Some(Some(message))) => return Some(Ok(message)),
                Ok(None) => return None,
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            }
        }
    }

    /// The next message, or `Pending` after registering for more input.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<M, ProtocolError>>> {
        loop {
            if let Some(LargeBody { body, .. }) = self.large.take_if(|l| l.body.len() == l.len) {
                let body = Bytes::from_owner(Pooled::new(body, self.pool.clone()));
                match self.codec.decode_body(body).and_then(|m| self.released(m)) {
                    Ok(None) => continue,
                    next => return Poll::Ready(next.transpose()),
                }
            }
            if let Some(large) = &mut self.large {
                let want = large.len - large.body.len();
                let read = ready!(poll_read_buf(
                    Pin::new(&mut self.io),
                    cx,
                    &mut (&mut large.body).limit(want)
                ))?;
                if read == 0 {
                    return Poll::Ready(Some(Err(ProtocolError::Truncated {
                        buffered: FRAME_HEADER_LEN + large.body.len(),
                    })));
                }
                continue;
            }
            if let Some(message) = self.codec.decode(&mut self.buf)? {
                match self.released(message)? {
                    Some(message) => return Poll::Ready(Some(Ok(message))),
                    None => continue,
                }
            }
            // The codec checked the header against the limit: a large
            // frame goes on in a buffer of its own.
            if let Peek::Partial { len } = frame::peek(&self.buf, self.codec.max_frame_length())? {
                if frame::pooled(len) {
                    let mut body = self.pool.take(len);
                    body.extend_from_slice(&self.buf[FRAME_HEADER_LEN..]);
                    self.buf.clear();
                    self.large = Some(LargeBody { body, len });
                    continue;
                }
            }
            if self.eof {
                return Poll::Ready(self.codec.decode_eof(&mut self.buf).transpose());
            }
            self.make_room();
            if ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))? == 0 {
                self.eof = true;
            }
        }
    }
}

impl<M> FrameReader<M> {
    /// Makes room for one more read of [`READ_CHUNK`] bytes after what is
    /// buffered: in the buffer itself once nothing else holds it, else in
    /// a retired one whose frames are all dropped, else in a new one.
    fn make_room(&mut self) {
        if self.buf.try_reclaim(READ_CHUNK) {
            return;
        }
        let needed = self.buf.len() + READ_CHUNK;
        let reclaimed = self
            .retired
            .iter_mut()
            .position(|b| b.try_reclaim(needed))
            .map(|i| self.retired.swap_remove(i));
        // Half a chunk more than one read needs, so that it can be read
        // into again with the start of a frame in front (up to 32 KiB).
        let mut next = reclaimed
            .unwrap_or_else(|| BytesMut::with_capacity(needed.max(READ_CHUNK + READ_CHUNK / 2)));
        // The start of a frame not yet whole moves with the reading.
        next.extend_from_slice(&self.buf);
        let mut old = std::mem::replace(&mut self.buf, next);
        old.clear();
        if self.retired.len() == RETIRED_BUFFERS {
            // Its memory goes once its frames do.
            self.retired.remove(0);
        }
        self.retired.push(old);
    }
}

impl<M: Wire> Stream for FrameReader<M> {
    type Item = Result<M, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let next = ready!(this.poll_message(cx));
        if !matches!(next, Some(Ok(_))) {
            this.done = true;
        }
        Poll::Ready(next)
    }
}

/// A connection's spare buffers for large frames (and for the payloads
/// copied out of a worker's shared memory).
///
/// Two kinds of spare: buffers of at most [`POOLED_BUFFER_MAX`], kept
/// (up to [`POOL_BYTES`] in all) until reused, and larger ones (up to
/// [`LARGE_SPARE_BYTES`] in all), kept only while they are reused: one
/// that lies unused for [`SPARE_LINGER`] is freed by a task the pool
/// spawns on the runtime it was given back on. So the large spares never
/// add up to more than callers held a moment ago, and a connection that
/// once carried a burst of huge payloads gives the memory back within
/// about a second of the last one.
///
/// Why keep them at all: a fresh buffer of tens of megabytes is mapped
/// pages the kernel must fault in, zero and charge before the copy, and
/// unmap after; for a 64 MiB payload that costs three times the copy
/// itself (64 MiB echoes at C = 2: 26-29 rps with fresh buffers, 49 with
/// reused ones, raw sockets 48-52 in the same run).
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    spares: Mutex<Spares>,
}

#[derive(Debug, Default)]
struct Spares {
    /// Buffers of at most `POOLED_BUFFER_MAX`, the most recently given
    /// back last.
    small: Vec<Vec<u8>>,
    /// Larger buffers, with when each came back, the most recent last.
    large: Vec<(Vec<u8>, Instant)>,
    /// A task is on its way to free large spares that linger.
    sweeping: bool,
}

impl BufferPool {
    /// An empty buffer with room for `len` bytes: a pooled one if one is
    /// large enough, else a new one.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let mut spares = self.lock();
        // The most recently returned first: its pages are the likeliest to
        // still be in the cache.
        let reused = if len <= POOLED_BUFFER_MAX {
            let found = spares.small.iter().rposition(|b| b.capacity() >= len);
            found.map(|i| spares.small.remove(i))
        } else {
            let found = spares.large.iter().rposition(|(b, _)| b.capacity() >= len);
            found.map(|i| spares.large.remove(i).0)
        };
        drop(spares);
        reused.unwrap_or_else(|| {
            let mut body = Vec::with_capacity(len);
            crate::shm::populate(&mut body);
            body
        })
    }

    /// Keeps `body` for reuse if the budgets allow; frees it otherwise
    /// (outside the lock: unmapping a large buffer takes a while).
    fn give_back(self: &Arc<Self>, mut body: Vec<u8>) {
        body.clear();
        let capacity = body.capacity();
        if capacity <= POOLED_BUFFER_MAX {
            let mut spares = self.lock();
            let kept: usize = spares.small.iter().map(Vec::capacity).sum();
            if kept + capacity <= POOL_BYTES {
                spares.small.push(body);
            }
            return;
        }
        // A large spare needs a task to free it later, so a runtime.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if capacity > LARGE_SPARE_BYTES {
            return;
        }
        let mut evicted = Vec::new();
        let mut spares = self.lock();
        let mut kept: usize = spares.large.iter().map(|(b, _)| b.capacity()).sum();
        while kept + capacity > LARGE_SPARE_BYTES {
            let (oldest, _) = spares.large.remove(0);
            kept -= oldest.capacity();
            evicted.push(oldest);
        }
        spares.large.push((body, Instant::now()));
        if !spares.sweeping {
            spares.sweeping = true;
            runtime.spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Takes out the large spares that have lain unused for
    /// `SPARE_LINGER` by `now`; says how long until the next one has, or
    /// `None` (and no sweep is on its way any more) if none is left.
    fn expire(&self, now: Instant) -> (Vec<Vec<u8>>, Option<Duration>) {
        let mut spares = self.lock();
        let (expired, kept) = std::mem::take(&mut spares.large)
            .into_iter()
            .partition::<Vec<_>, _>(|(_, since)| now.duration_since(*since) >= SPARE_LINGER);
        spares.large = kept;
        let next = spares
            .large
            .first()
            .map(|(_, since)| SPARE_LINGER.saturating_sub(now.duration_since(*since)));
        spares.sweeping = next.is_some();
        (expired.into_iter().map(|(b, _)| b).collect(), next)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spares> {
        self.spares.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Frees `pool`'s large spares as each reaches `SPARE_LINGER` unused;
/// ends when none is left or the pool is gone.
fn sweep(pool: Weak<BufferPool>) -> impl std::future::Future<Output = ()> + Send {
    // Made here, not in the body: a task dropped before its first poll
    // drops it too.
    let unfinished = Unfinished(Some(pool.clone()));
    async move {
        let mut wait = SPARE_LINGER;
        loop {
            tokio::time::sleep(wait).await;
            let Some(pool) = pool.upgrade() else {
                break;
            };
            let (expired, next) = pool.expire(Instant::now());
            drop(pool);
            drop(expired);
            match next {
                Some(left) => wait = left,
                None => break,
            }
        }
        unfinished.finished();
    }
}

/// A sweep dropped before it finished (its runtime shut down) says so, so
/// that the next large buffer given back starts another instead of lying
/// unswept.
struct Unfinished(Option<Weak<BufferPool>>);

impl Unfinished {
    /// The sweep ended of itself, having left `sweeping` right.
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take().and_then(|p| p.upgrade()) {
            pool.lock().sweeping = false;
        }
    }
}

/// The owner of a large frame's body while `Bytes` point into it; gives
/// the buffer back to its pool when the last of them drops.
pub(crate) struct Pooled {
    body: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl Pooled {
    pub(crate) fn new(body: Vec<u8>, pool: Arc<BufferPool>) -> Pooled {
        Pooled { body, pool }
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{DEFAULT_MAX_FRAME_LENGTH, LARGE_FRAME};
    use crate::message::ToWorker;
    use futures_util_free::next;

    /// `StreamExt::next` without the futures crate.
    mod futures_util_free {
        use std::future::poll_fn;
        use std::pin::Pin;

        use futures::Stream;

        pub(super) async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
            poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
        }
    }

    fn pair() -> (FrameReader<ToWorker>, tokio::net::unix::OwnedWriteHalf) {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (read, _) = a.into_split();
        let (_, write) = b.into_split();
        (
            FrameReader::new(FdReader::new(read), MessageCodec::new(8 << 20)),
            write,
        )
    }

    /// Small and large frames, in any mix, arrive whole and in order; a
    /// large body's buffer goes back to the pool when dropped and is
    /// used again.
    #[tokio::test]
    async fn small_and_large_frames_arrive_in_order_and_buffers_are_reused() {
        use tokio::io::AsyncWriteExt;
        let (mut reader, mut write) = pair();
        let sizes = [
            10usize,
            LARGE_FRAME,
            3,
            1 << 20,
            LARGE_FRAME - 1,
            2 << 20,
            0,
        ];
        let writer = tokio::spawn(async move {
            let codec = MessageCodec::<ToWorker>::new(8 << 20);
            for round in 0..3u8 {
                for (i, &size) in sizes.iter().enumerate() {
                    let mut frame = BytesMut::new();
                    let message = ToWorker::Event {
                        name: format!("{round}/{i}"),
                        payload: Bytes::from(vec![round.wrapping_add(i as u8); size]),
                    };
                    codec.encode_message(message, &mut frame).unwrap();
                    write.write_all(&frame).await.unwrap();
                }
            }
        });
        for round in 0..3u8 {
            for (i, &size) in sizes.iter().enumerate() {
                let message = next(&mut reader).await.unwrap().unwrap();
                let ToWorker::Event { name, payload } = message else {
                    panic!("not an event: {message:?}");
                };
                assert_eq!(name, format!("{round}/{i}"));
                assert_eq!(payload.len(), size);
                assert!(payload.iter().all(|&b| b == round.wrapping_add(i as u8)));
            }
        }
        writer.await.unwrap();
        assert!(
            next(&mut reader).await.is_none(),
            "clean end between frames"
        );
        let pooled = &reader.pool.lock().small;
        // Three large sizes, each body dropped before the next frame: one
        // buffer per size, reused in every later round.
        assert_eq!(pooled.len(), 3, "buffers kept after three rounds");
    }

    /// What one read brought is handed out without another read; a large
    /// frame still being read is not.
    #[tokio::test]
    async fn buffered_frames_come_without_a_read() {
        use tokio::io::AsyncWriteExt;
        let (mut reader, mut write) = pair();
        let codec = MessageCodec::<ToWorker>::new(8 << 20);
        let mut frames = BytesMut::new();
        for seq in 0..3 {
            codec
                .encode_message(ToWorker::Ping { seq }, &mut frames)
                .unwrap();
        }
        frames.put_u32(LARGE_FRAME as u32);
        write.write_all(&frames).await.unwrap();
        assert_eq!(
            next(&mut reader).await.unwrap().unwrap(),
            ToWorker::Ping { seq: 0 }
        );
        for seq in 1..3 {
            assert_eq!(
                reader.next_buffered().unwrap().unwrap(),
                ToWorker::Ping { seq }
            );
        }
        assert!(
            reader.next_buffered().is_none(),
            "the large frame is not whole"
        );
    }

    /// A read buffer given up while its frames are held is read into
    /// again once they are dropped, with the start of a frame that was not
    /// yet whole moved along; no more than `RETIRED_BUFFERS` are kept.
    #[tokio::test]
    async fn read_buffers_are_read_into_again_once_their_frames_are_dropped() {
        let (mut reader, _write) = pair();
        let fill = |reader: &mut FrameReader<ToWorker>, tail: &[u8]| {
            let room = reader.buf.capacity() - reader.buf.len();
            reader.buf.put_bytes(7, room - tail.len());
            let frames = reader.buf.split_to(reader.buf.len()).freeze();
            reader.buf.extend_from_slice(tail);
            frames
        };
        reader.make_room();
        let held = fill(&mut reader, b"partial");
        let first = held.as_ptr();
        reader.make_room();
        assert_eq!(&reader.buf[..], b"partial", "the partial frame moves along");
        assert_ne!(reader.buf.as_ptr(), first, "the first buffer is still held");
        drop(held);
        let _second = fill(&mut reader, b"more");
        reader.make_room();
        assert_eq!(
            reader.buf.as_ptr(),
            first,
            "the first buffer is read into again"
        );
        assert_eq!(&reader.buf[..], b"more");
        let mut held = Vec::new();
        for _ in 0..2 * RETIRED_BUFFERS {
            held.push(fill(&mut reader, b""));
            reader.make_room();
            assert!(reader.retired.len() <= RETIRED_BUFFERS);
        }
    }

    #[tokio::test]
    async fn the_end_inside_a_large_frame_is_truncated() {
        use tokio::io::AsyncWriteExt;
        let (mut reader, mut write) = pair();
        let mut frame = BytesMut::new();
        frame.put_u32(1 << 20);
        frame.extend_from_slice(&[1u8; 100_000]);
        write.write_all(&frame).await.unwrap();
        drop(write);
        match next(&mut reader).await {
            Some(Err(ProtocolError::Truncated { buffered })) => {
                assert_eq!(buffered, 100_004);
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
        assert!(next(&mut reader).await.is_none());
    }

    #[tokio::test]
    async fn an_oversize_header_is_refused_without_reading_the_body() {
        use tokio::io::AsyncWriteExt;
        let (mut reader, mut write) = pair();
        write.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        match next(&mut reader).await {
            Some(Err(ProtocolError::FrameTooLarge { len, .. })) => {
                assert_eq!(len, u32::MAX as usize);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert!(reader.large.is_none());
    }

    #[test]
    fn the_pool_keeps_its_budget_and_no_large_buffer_without_a_runtime() {
        let pool = Arc::new(BufferPool::default());
        // No runtime here: nothing could free a large spare later.
        pool.give_back(Vec::with_capacity(POOLED_BUFFER_MAX + 1));
        assert!(pool.lock().large.is_empty());
        let each = POOLED_BUFFER_MAX;
        for _ in 0..POOL_BYTES / each + 3 {
            pool.give_back(Vec::with_capacity(each));
        }
        let spares = pool.lock();
        assert_eq!(spares.small.len(), POOL_BYTES / each);
        assert!(spares.small.iter().map(Vec::capacity).sum::<usize>() <= POOL_BYTES);
    }

    // Paused time: the runtime moves the clock on whenever every task
    // waits, so the sweep's timer fires in order, at once.
    #[tokio::test(start_paused = true)]
    async fn a_large_spare_is_reused_while_in_use_and_freed_once_it_lingers() {
        let pool = Arc::new(BufferPool::default());
        let len = POOLED_BUFFER_MAX + 1;
        let first = pool.take(len);
        let at = first.as_ptr();
        pool.give_back(first);
        // Reused, and given back again just before it would have expired:
        // its second stay counts from then.
        tokio::time::sleep(SPARE_LINGER - Duration::from_millis(10)).await;
        let again = pool.take(len);
        assert_eq!(again.as_ptr(), at, "the spare is reused");
        pool.give_back(again);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pool.lock().large.len(), 1, "a spare back for 20 ms stays");
        tokio::time::sleep(SPARE_LINGER).await;
        let spares = pool.lock();
        assert!(
            spares.large.is_empty(),
            "a spare unused for {SPARE_LINGER:?} is freed"
        );
        assert!(!spares.sweeping, "the sweep ends with nothing left");
    }

    /// The runtime a sweep ran on shuts down before it is done: the next
    /// large buffer given back, on another runtime, is still swept.
    #[test]
    fn a_sweep_lost_with_its_runtime_is_started_again() {
        let paused = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let pool = Arc::new(BufferPool::default());
        let len = POOLED_BUFFER_MAX + 1;
        paused().block_on(async { pool.give_back(Vec::with_capacity(len)) });
        // That runtime is gone, and its sweep with it.
        assert!(!pool.lock().sweeping, "the lost sweep is not counted on");
        paused().block_on(async {
            pool.give_back(Vec::with_capacity(len));
            tokio::time::sleep(SPARE_LINGER * 2).await;
        });
        let spares = pool.lock();
        assert!(spares.large.is_empty(), "both spares are freed");
        assert!(!spares.sweeping);
    }

    #[tokio::test(start_paused = true)]
    async fn large_spares_keep_to_their_budget_newest_first() {
        let pool = Arc::new(BufferPool::default());
        let each = DEFAULT_MAX_FRAME_LENGTH;
        let mut addresses = Vec::new();
        for _ in 0..3 {
            let buffer = Vec::<u8>::with_capacity(each);
            addresses.push(buffer.as_ptr());
            pool.give_back(buffer);
        }
        pool.give_back(Vec::with_capacity(LARGE_SPARE_BYTES + 1));
        let spares = pool.lock();
        let kept: Vec<_> = spares.large.iter().map(|(b, _)| b.as_ptr()).collect();
        assert_eq!(kept, addresses[1..], "the oldest is freed to make room");
    }

    #[test]
    fn a_body_buffer_comes_back_only_when_the_last_slice_drops() {
        let pool = Arc::new(BufferPool::default());
        let body = Bytes::from_owner(Pooled {
            body: vec![7u8; LARGE_FRAME],
            pool: pool.clone(),
        });
        let tail = body.slice(100..);
        drop(body);
        assert!(pool.lock().small.is_empty());
        assert_eq!(tail.len(), LARGE_FRAME - 100);
        drop(tail);
        assert_eq!(pool.lock().small.len(), 1);
    }
}
