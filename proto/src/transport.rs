//! Moving frames between a socket and the tasks that produce them.

use futures::SinkExt;
use tokio::io::AsyncWrite;
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
    /// Acknowledge once everything queued before this has been written.
    Flush(oneshot::Sender<()>),
}

/// Writes queued messages until the queue closes or the socket fails.
///
/// Whatever is queued when the task wakes is encoded into one buffer and
/// written with as few system calls as the socket allows; the task yields
/// once before writing so that frames other ready tasks are about to queue
/// join the same write. A busy connection pays one wake-up and one system
/// call per batch, not per frame.
///
/// # Errors
///
/// The first write or encode failure; the connection is then unusable.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FramedWrite<W, MessageCodec>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) -> Result<(), ProtocolError> {
    let mut flushed = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut yielded = false;
        loop {
            while let Some(item) = next {
                match item {
                    Outgoing::Frame(message) => writer.feed(message).await?,
                    Outgoing::Flush(done) => flushed.push(done),
                }
                next = rx.try_recv().ok();
            }
            // Before paying a system call, let the tasks that are ready to
            // run queue their frames too: under load one write then carries
            // many frames; when idle, the yield returns at once.
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
        writer.flush().await?;
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
    Ok(())
}
