//! Moving frames between a socket and the tasks that produce them.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use std::os::fd::OwnedFd;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedWrite;

use crate::codec::MessageCodec;
use crate::error::ProtocolError;
use crate::message::Message;

/// What a connection's writer task is asked to do.
#[derive(Debug)]
pub enum Outgoing {
    /// Send this message.
    Frame(Message),
    /// Send this message with these descriptors attached (`SCM_RIGHTS`);
    /// they are closed on this side once sent.
    FrameWithFds(Message, Vec<OwnedFd>),
    /// Acknowledge once everything queued before this has been written.
    Flush(oneshot::Sender<()>),
}

/// Payloads at least this large are written from their own buffer (a
/// vectored write) instead of being copied next to their frame header.
pub const COPY_LIMIT: usize = 16 * 1024;

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// Writes queued messages until the queue closes or the socket fails.
///
/// Whatever is queued when the task wakes goes out in one vectored write
/// (or as few as the socket allows): small frames are encoded into one
/// buffer, large payloads are written from the caller's own buffer with no
/// copy. The task yields once before writing so that frames other ready
/// tasks are about to queue join the same write: a busy connection pays one
/// wake-up and one system call per batch, not per frame; an idle one pays
/// almost nothing for the yield.
///
/// `writer` must have nothing buffered (it is used only for the handshake,
/// which flushes).
///
/// # Errors
///
/// The first write or encode failure; the connection is then unusable.
pub async fn write_loop(
    writer: FramedWrite<OwnedWriteHalf, MessageCodec>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) -> Result<(), ProtocolError> {
    let parts = writer.into_parts();
    let (mut io, mut codec) = (parts.io, parts.codec);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    let mut flushed = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut yielded = false;
        loop {
            while let Some(item) = next {
                match item {
                    Outgoing::Frame(message) => {
                        if let Some(tail) = codec.encode_head(message, &mut buf)? {
                            if tail.len() < COPY_LIMIT {
                                buf.extend_from_slice(&tail);
                            } else {
                                queue.push_back(buf.split().freeze());
                                queue.push_back(tail);
                            }
                        }
                    }
                    Outgoing::FrameWithFds(message, fds) => {
                        // Everything before goes first; then this frame
                        // leads a write of its own, carrying the
                        // descriptors.
                        if !buf.is_empty() {
                            queue.push_back(buf.split().freeze());
                        }
                        write_all(&mut io, &mut queue).await?;
                        let tail = codec.encode_head(message, &mut buf)?;
                        if let Some(tail) = tail {
                            buf.extend_from_slice(&tail);
                        }
                        let frame = buf.split().freeze();
                        let sent = crate::fdio::send_with_fds(&io, &frame, &fds).await?;
                        drop(fds);
                        queue.push_back(frame.slice(sent..));
                    }
                    Outgoing::Flush(done) => flushed.push(done),
                }
                next = rx.try_recv().ok();
            }
            if yielded {
                break;
            }
            yielded = true;
            tokio::task::yield_now().await;
            next = rx.try_recv().ok();
            if next.is_none() {
                break;
            }
        }
        if !buf.is_empty() {
            queue.push_back(buf.split().freeze());
        }
        write_all(&mut io, &mut queue).await?;
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
    io.flush().await?;
    Ok(())
}

/// Writes every buffer of `queue`, in order, with vectored writes.
async fn write_all(
    io: &mut OwnedWriteHalf,
    queue: &mut VecDeque<Bytes>,
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
            let n = io.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
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
