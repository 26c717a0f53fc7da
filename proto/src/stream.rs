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
//!   | -- StreamData (<= credit) ------------> |  queued for the reader
//!   | <------------ StreamCredit (consumed) -- |  as the reader reads
//!   | -- StreamEnd / StreamAbort -----------> |  end of file / error
//!   | <------------------------- StreamStop -- |  reader dropped early
//! ```

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::{mpsc, Semaphore};

use crate::message::{Message, RequestId};
use crate::transport::{Outbox, Outgoing};

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
    out: Outbox,
    current: Bytes,
    /// Bytes consumed and not yet returned as credit.
    unreturned: usize,
    finished: bool,
    /// Says who the peer is, for errors ("worker pid 1234").
    peer: String,
}

/// The connection's handle on a stream being received: where its chunks go.
pub type ChunkSender = mpsc::UnboundedSender<Chunk>;

impl IncomingStream {
    /// A stream of request `id`, and the sender the connection feeds it
    /// with; credit and `StreamStop` go out on `out`.
    pub fn new(id: RequestId, out: Outbox, peer: String) -> (IncomingStream, ChunkSender) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = IncomingStream {
            id,
            rx,
            out,
            current: Bytes::new(),
            unreturned: 0,
            finished: false,
            peer,
        };
        (stream, tx)
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
            let _ = self.out.send(Outgoing::Frame(Message::StreamCredit {
                id: self.id,
                bytes,
            }));
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
            let _ = self
                .out
                .send(Outgoing::Frame(Message::StreamStop { id: self.id }));
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
    out: Outbox,
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
            let _ = out.send(Outgoing::Frame(Message::StreamAbort {
                id,
                reason: "the receiver stopped the stream".to_owned(),
            }));
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
                out.send(Outgoing::Frame(Message::StreamEnd { id }))
                    .map_err(|_| gone())?;
                return Ok(sent);
            }
            Ok(n) => {
                // Unused credit goes back to the pool.
                credit.add_permits(available - n);
                sent += n as u64;
                let bytes = buf.split().freeze();
                out.send(Outgoing::Frame(Message::StreamData { id, bytes }))
                    .map_err(|_| gone())?;
            }
            Err(e) => {
                let _ = out.send(Outgoing::Frame(Message::StreamAbort {
                    id,
                    reason: format!("the source failed: {e}"),
                }));
                return Err(e);
            }
        }
    }
}

/// Credit for a new outgoing stream: one window.
pub fn new_credit() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(STREAM_WINDOW))
}
