//! Byte streams multiplexed on a connection, with credit-based flow
//! control.
//!
//! A stream belongs to one request and one direction: the request's stream
//! (supervisor to worker) or the answer's (worker to supervisor). Its
//! sender may have at most [`STREAM_WINDOW`] bytes unacknowledged: it
//! starts with that much credit, spends it on `StreamData`, and gets it
//! back as the receiver's reader consumes (`StreamCredit`). So a stream
//! holds at most one window of memory on the receiving side, and a slow
//! reader stalls its own stream only: the connection and every other
//! stream on it carry on.
//!
//! ```text
//! sender                                  receiver
//!   | -- Data (<= credit) ------------------> |  queued for the reader
//!   | <------------------ Credit (consumed) -- |  as the reader reads
//!   | -- End / Abort -----------------------> |  end of file / error
//!   | <------------------------------- Stop -- |  reader dropped early
//! ```

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::{mpsc, Semaphore};

use crate::error::ProtocolError;
use crate::idhash::IdHasher;
use crate::message::{RequestId, StreamFrame};
use crate::transport::StreamOutbox;

/// Credit a stream starts with, and the most it can have outstanding.
pub const STREAM_WINDOW: usize = 256 * 1024;

/// Largest `StreamData` frame a sender writes.
pub const STREAM_CHUNK: usize = 64 * 1024;

/// What the connection hands to a stream's reader.
#[derive(Debug)]
pub enum Chunk {
    /// More bytes.
    Data(Bytes),
    /// The end of the stream.
    End,
    /// The stream was cut short, for this reason.
    Abort(String),
}

/// The receiving end of a stream: an `AsyncRead` of its bytes.
///
/// Reading returns credit to the sender as bytes are consumed. Dropping it
/// before the end tells the sender to stop (`StreamStop`). A stream cut
/// short (its sender aborted, the peer died) ends the read with an error
/// saying why; it never hangs once the connection is gone.
#[derive(Debug)]
pub struct IncomingStream {
    id: RequestId,
    rx: mpsc::UnboundedReceiver<Chunk>,
    out: StreamOutbox,
    current: Bytes,
    /// Bytes consumed and not yet returned as credit.
    unreturned: usize,
    finished: bool,
    /// Says who the peer is, for errors ("worker pid 1234").
    peer: String,
    /// Bytes received and not yet given back as credit, shared with the
    /// connection's [`ChunkSender`].
    held: Arc<AtomicUsize>,
}

/// The connection's handle on a stream being received: where its chunks
/// go, and the count of bytes the sender has outstanding, which must stay
/// within the window whatever the sender does.
#[derive(Debug)]
pub struct ChunkSender {
    id: RequestId,
    tx: mpsc::UnboundedSender<Chunk>,
    held: Arc<AtomicUsize>,
}

impl ChunkSender {
    /// Hands `chunk` to the stream's reader (dropped if the reader is
    /// gone: it has told the sender to stop).
    ///
    /// # Errors
    ///
    /// [`ProtocolError::StreamWindow`] if data takes the bytes the sender
    /// has outstanding past [`STREAM_WINDOW`]: it ignored its credit. The
    /// chunk is dropped, so memory stays bounded by the window.
    pub fn send(&self, chunk: Chunk) -> Result<(), ProtocolError> {
        if let Chunk::Data(bytes) = &chunk {
            let len = bytes.len();
            let held = self.held.fetch_add(len, Ordering::AcqRel) + len;
            if held > STREAM_WINDOW {
                return Err(ProtocolError::StreamWindow {
                    id: self.id,
                    held,
                    window: STREAM_WINDOW,
                });
            }
            if len == 0 {
                // Nothing to read: not worth a place in the queue.
                return Ok(());
            }
        }
        let _ = self.tx.send(chunk);
        Ok(())
    }
}

impl IncomingStream {
    /// A stream of request `id`, and the sender the connection feeds it
    /// with; credit and `StreamStop` go out on `out`.
    pub fn new(id: RequestId, out: StreamOutbox, peer: String) -> (IncomingStream, ChunkSender) {
        // Unbounded in messages, bounded in bytes: the sender's data is
        // counted against the window as it arrives (`ChunkSender::send`),
        // and empty chunks are never queued.
        let (tx, rx) = mpsc::unbounded_channel();
        let held = Arc::new(AtomicUsize::new(0));
        let stream = IncomingStream {
            id,
            rx,
            out,
            current: Bytes::new(),
            unreturned: 0,
            finished: false,
            peer,
            held: held.clone(),
        };
        (stream, ChunkSender { id, tx, held })
    }

    /// The request this stream belongs to.
    pub fn id(&self) -> RequestId {
        self.id
    }

    fn give_credit(&mut self, force: bool) {
        // Credit goes back in batches: half a window, or all at the end of
        // a chunk the reader drained.
        if self.unreturned > 0 && (force || self.unreturned >= STREAM_WINDOW / 2) {
            let bytes = self.unreturned as u32;
            self.unreturned = 0;
            self.held.fetch_sub(bytes as usize, Ordering::AcqRel);
            let _ = self.out.send(StreamFrame::Credit { id: self.id, bytes });
        }
    }
}

impl AsyncRead for IncomingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                buf.put_slice(&this.current[..n]);
                this.current.advance(n);
                this.unreturned += n;
                let drained = this.current.is_empty();
                this.give_credit(drained);
                return Poll::Ready(Ok(()));
            }
            if this.finished {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some(Chunk::Data(bytes)) => this.current = bytes,
                Some(Chunk::End) => {
                    this.finished = true;
                    return Poll::Ready(Ok(()));
                }
                Some(Chunk::Abort(reason)) => {
                    this.finished = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!(
                            "stream of request {} from {} cut short: {reason}",
                            this.id, this.peer
                        ),
                    )));
                }
                None => {
                    this.finished = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "stream of request {} from {} cut short: connection gone",
                            this.id, this.peer
                        ),
                    )));
                }
            }
        }
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.out.send(StreamFrame::Stop { id: self.id });
        }
    }
}

/// Sends `source` as the stream of request `id`, within the credit that
/// `credit` holds (the connection adds permits as `StreamCredit` arrives,
/// and closes it on `StreamStop`). Ends with `StreamEnd`, or `StreamAbort`
/// if `source` fails.
///
/// # Errors
///
/// The receiver stopped the stream or the connection closed; the source's
/// own error is sent as `StreamAbort` and returned.
pub async fn pump<R: AsyncRead + Unpin>(
    mut source: R,
    id: RequestId,
    out: StreamOutbox,
    credit: Arc<Semaphore>,
) -> io::Result<u64> {
    let gone = || {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("stream of request {id}: the receiver is gone"),
        )
    };
    let mut sent = 0u64;
    let mut buf = BytesMut::new();
    loop {
        // Wait for some credit, then read at most that much.
        let stopped = || {
            // Tell the other side this stream is over, so it forgets it.
            let _ = out.send(StreamFrame::Abort {
                id,
                reason: "the receiver stopped the stream".to_owned(),
            });
            gone()
        };
        let available = {
            let permit = credit.acquire().await.map_err(|_| stopped())?;
            permit.forget();
            1 + credit.available_permits().min(STREAM_CHUNK - 1)
        };
        if available > 1 {
            credit
                .acquire_many((available - 1) as u32)
                .await
                .map_err(|_| stopped())?
                .forget();
        }
        buf.reserve(available);
        let read = {
            let mut limited = (&mut source).take(available as u64);
            limited.read_buf(&mut buf).await
        };
        match read {
            Ok(0) => {
                out.send(StreamFrame::End { id }).map_err(|_| gone())?;
                return Ok(sent);
            }
            Ok(n) => {
                // Unused credit goes back to the pool.
                credit.add_permits(available - n);
                sent += n as u64;
                let bytes = buf.split().freeze();
                out.send(StreamFrame::Data { id, bytes })
                    .map_err(|_| gone())?;
            }
            Err(e) => {
                let _ = out.send(StreamFrame::Abort {
                    id,
                    reason: format!("the source failed: {e}"),
                });
                return Err(e);
            }
        }
    }
}

/// Credit for a new outgoing stream: one window.
pub fn new_credit() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(STREAM_WINDOW))
}

/// The byte streams in flight on one connection, on either side: those
/// arriving, with the window each sender must keep to, and those being
/// sent, with the credit the peer granted. Every rule a peer can break is
/// checked here, and a break is an error naming the stream.
#[derive(Debug, Default)]
pub struct Streams {
    incoming: Mutex<HashMap<RequestId, ChunkSender, IdHasher>>,
    outgoing: Mutex<HashMap<RequestId, Arc<Semaphore>, IdHasher>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Streams {
    /// Handles a stream frame from the peer: data, end and abort go to
    /// the arriving stream they belong to, credit and stop to the stream
    /// being sent.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::StreamWindow`] or [`ProtocolError::StreamCredit`]:
    /// the peer broke the rules of flow control.
    pub fn on_frame(&self, frame: StreamFrame) -> Result<(), ProtocolError> {
        match frame {
            StreamFrame::Data { id, bytes } => self.deliver(id, Chunk::Data(bytes)),
            StreamFrame::End { id } => self.deliver(id, Chunk::End),
            StreamFrame::Abort { id, reason } => self.deliver(id, Chunk::Abort(reason)),
            StreamFrame::Credit { id, bytes } => self.credit(id, bytes),
            StreamFrame::Stop { id } => {
                self.stop(id);
                Ok(())
            }
        }
    }

    /// Registers an arriving stream, before anything of it can arrive.
    pub fn receive(&self, id: RequestId, chunks: ChunkSender) {
        lock(&self.incoming).insert(id, chunks);
    }

    /// Hands a chunk to an arriving stream; the end or an abort forgets
    /// the stream. A chunk for a stream this side does not know (ended,
    /// or stopped by its reader) is dropped.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::StreamWindow`]: the sender ignored its credit.
    pub fn deliver(&self, id: RequestId, chunk: Chunk) -> Result<(), ProtocolError> {
        let last = !matches!(chunk, Chunk::Data(_));
        let mut incoming = lock(&self.incoming);
        let result = match incoming.get(&id) {
            Some(chunks) => chunks.send(chunk),
            None => Ok(()),
        };
        if last {
            incoming.remove(&id);
        }
        result
    }

    /// Registers a stream about to be sent, with its credit.
    pub fn send(&self, id: RequestId, credit: Arc<Semaphore>) {
        lock(&self.outgoing).insert(id, credit);
    }

    /// Adds credit the peer granted to a stream being sent.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::StreamCredit`] if the grant would give the stream
    /// more than a window of credit: the peer returned bytes it was never
    /// sent.
    pub fn credit(&self, id: RequestId, bytes: u32) -> Result<(), ProtocolError> {
        if let Some(credit) = lock(&self.outgoing).get(&id) {
            let granted = credit.available_permits().saturating_add(bytes as usize);
            if granted > STREAM_WINDOW {
                return Err(ProtocolError::StreamCredit {
                    id,
                    granted,
                    window: STREAM_WINDOW,
                });
            }
            credit.add_permits(bytes as usize);
        }
        Ok(())
    }

    /// Stops a stream being sent (its receiver wants no more, or it ended).
    pub fn stop(&self, id: RequestId) {
        if let Some(credit) = lock(&self.outgoing).remove(&id) {
            credit.close();
        }
    }

    /// Forgets an arriving stream (its request is over).
    pub fn forget(&self, id: RequestId) {
        lock(&self.incoming).remove(&id);
    }

    /// The connection is gone: every arriving stream ends with an error
    /// saying why, every stream being sent stops.
    pub fn cut(&self, why: &str) {
        for (_, chunks) in lock(&self.incoming).drain() {
            let _ = chunks.send(Chunk::Abort(why.to_owned()));
        }
        for (_, credit) in lock(&self.outgoing).drain() {
            credit.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ToWorker;
    use crate::transport::outbox;

    fn id() -> RequestId {
        RequestId::from_u128(7)
    }

    /// Data within the window is delivered; a byte past it is an error
    /// naming the stream, and is not queued. Credit given back as the
    /// reader reads makes room again.
    #[tokio::test]
    async fn data_past_the_window_is_refused() {
        let (out, _rx) = outbox::<ToWorker>(1 << 20, usize::MAX);
        let streams = Streams::default();
        let (mut incoming, chunks) = IncomingStream::new(id(), out.streams(), "test".into());
        streams.receive(id(), chunks);
        let window = Bytes::from(vec![1u8; STREAM_WINDOW]);
        streams.deliver(id(), Chunk::Data(window)).unwrap();
        // Empty data costs nothing and is allowed.
        streams.deliver(id(), Chunk::Data(Bytes::new())).unwrap();
        match streams.deliver(id(), Chunk::Data(Bytes::from_static(b"x"))) {
            Err(ProtocolError::StreamWindow {
                id: got,
                held,
                window,
            }) => {
                assert_eq!(
                    (got, held, window),
                    (id(), STREAM_WINDOW + 1, STREAM_WINDOW)
                );
            }
            other => panic!("expected StreamWindow, got {other:?}"),
        }
        // The reader takes what was within the window, giving credit back.
        let mut buf = vec![0u8; STREAM_WINDOW];
        incoming.read_exact(&mut buf).await.unwrap();
        assert!(buf.iter().all(|&b| b == 1));
    }

    /// Credit for bytes never sent is an error; honest credit is not.
    #[test]
    fn credit_past_the_window_is_refused() {
        let streams = Streams::default();
        let credit = new_credit();
        streams.send(id(), credit.clone());
        assert!(matches!(
            streams.credit(id(), 1),
            Err(ProtocolError::StreamCredit { granted, .. }) if granted == STREAM_WINDOW + 1
        ));
        credit.try_acquire_many(1000).unwrap().forget();
        streams.credit(id(), 1000).unwrap();
        assert_eq!(credit.available_permits(), STREAM_WINDOW);
        // A stream this side does not know: ignored.
        streams.credit(RequestId::from_u128(8), u32::MAX).unwrap();
    }
}
