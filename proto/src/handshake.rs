//! Both halves of the handshake: [`accept`] for the supervisor, [`connect`]
//! for the worker.
//!
//! ```text
//! worker (connect)                   supervisor (accept)
//!   | -- Hello { magic, version, pid } -> |  magic and version checked
//!   | <- Welcome { worker_id, config } -- |
//!   |   connect returns the Welcome;      |
//!   |   the worker sets itself up, and    |  Status and Event are passed
//!   |   may send Status and Event         |  to the caller as they come
//!   | -- Ready ------------------------>  |  accept returns the Hello
//! ```
//!
//! The supervisor reads [`ToSupervisor`] and writes [`ToWorker`], the
//! worker the other way round. Each side writes through whatever sink of
//! its messages it holds at that point (both use a tokio-util `FramedWrite` over the socket's write half,
//! before their outbox exists) and reads through its [`FrameReader`]. Time
//! limits are the caller's: the supervisor wraps [`accept`] in its start
//! timeout.

use futures::{Sink, SinkExt, StreamExt};

use crate::error::ProtocolError;
use crate::message::{Hello, ToSupervisor, ToWorker, Welcome, MAGIC, PROTOCOL_VERSION};
use crate::reader::FrameReader;
use crate::wire::Wire;

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer closed the connection, between frames, before the
    /// handshake was done (a connection cut inside a frame is
    /// [`ProtocolError::Truncated`]).
    #[error("the peer closed the connection during the handshake")]
    Closed,
    /// The peer broke the protocol (a wrong message, a bad magic number,
    /// another protocol version), or the socket failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// The supervisor's half: reads the worker's `Hello`, checks its
/// [`MAGIC`] and [`PROTOCOL_VERSION`], sends `welcome` through `writer`,
/// then waits for `Ready`.
///
/// A worker may say `Status` and `Event` while it sets itself up, between
/// `Welcome` and `Ready`: each is handed to `on_early` as it arrives, and
/// an error from `on_early` ends the handshake with that error. Returns the
/// worker's `Hello` once `Ready` has come.
///
/// # Errors
///
/// [`HandshakeError::Closed`] when the connection ends first;
/// [`HandshakeError::Protocol`] with [`ProtocolError::UnexpectedMessage`]
/// (naming what was expected and the kind of message that came instead),
/// [`ProtocolError::BadMagic`], [`ProtocolError::VersionMismatch`], an
/// error of `on_early`, or the reader's or writer's own error.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future abandons the handshake at an
/// unknown point, and the connection can only be dropped with it.
pub async fn accept<W, F>(
    reader: &mut FrameReader<ToSupervisor>,
    writer: &mut W,
    welcome: Welcome,
    mut on_early: F,
) -> Result<Hello, HandshakeError>
where
    W: Sink<ToWorker, Error = ProtocolError> + Unpin,
    F: FnMut(ToSupervisor) -> Result<(), ProtocolError>,
{
    let hello = match next(reader).await? {
        ToSupervisor::Hello(hello) => hello,
        other => return Err(unexpected("Hello", &other)),
    };
    if hello.magic != MAGIC {
        return Err(ProtocolError::BadMagic {
            found: hello.magic,
            expected: MAGIC,
        }
        .into());
    }
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(ProtocolError::VersionMismatch {
            peer: hello.protocol_version,
            ours: PROTOCOL_VERSION,
        }
        .into());
    }
    writer.send(ToWorker::Welcome(welcome)).await?;
    loop {
        match next(reader).await? {
            ToSupervisor::Ready => return Ok(hello),
            early @ (ToSupervisor::Status { .. } | ToSupervisor::Event { .. }) => on_early(early)?,
            other => return Err(unexpected("Ready", &other)),
        }
    }
}

/// The worker's half: sends `hello` through `writer` and waits for the
/// supervisor's `Welcome`, which it returns. The worker then sets itself up
/// (adopting the welcome's frame limit, among others) and says `Ready` when
/// it takes requests.
///
/// # Errors
///
/// [`HandshakeError::Closed`] when the connection ends first;
/// [`HandshakeError::Protocol`] with [`ProtocolError::UnexpectedMessage`]
/// when something other than `Welcome` comes, or the reader's or writer's
/// own error.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future abandons the handshake at an
/// unknown point, and the connection can only be dropped with it.
pub async fn connect<W>(
    reader: &mut FrameReader<ToWorker>,
    writer: &mut W,
    hello: Hello,
) -> Result<Welcome, HandshakeError>
where
    W: Sink<ToSupervisor, Error = ProtocolError> + Unpin,
{
    writer.send(ToSupervisor::Hello(hello)).await?;
    match next(reader).await? {
        ToWorker::Welcome(welcome) => Ok(welcome),
        other => Err(unexpected("Welcome", &other)),
    }
}

/// The next message; the end of the connection is [`HandshakeError::Closed`].
async fn next<M: Wire>(reader: &mut FrameReader<M>) -> Result<M, HandshakeError> {
    match reader.next().await {
        Some(Ok(message)) => Ok(message),
        Some(Err(e)) => Err(e.into()),
        None => Err(HandshakeError::Closed),
    }
}

fn unexpected<M: Wire>(expected: &'static str, got: &M) -> HandshakeError {
    ProtocolError::UnexpectedMessage {
        expected,
        got: got.name(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::AsyncWriteExt;
    use tokio::net::unix::OwnedWriteHalf;
    use tokio::net::UnixStream;
    use tokio_util::codec::FramedWrite;

    use super::*;
    use crate::codec::MessageCodec;
    use crate::fdio::FdReader;

    /// Every await here is bounded: a broken handshake must fail, not hang.
    const LIMIT: Duration = Duration::from_secs(5);

    type Writer<M> = FramedWrite<OwnedWriteHalf, MessageCodec<M>>;
    /// The worker's end during the handshake.
    type WorkerEnd = (FrameReader<ToWorker>, Writer<ToWorker>);
    /// The supervisor's end during the handshake.
    type SupervisorEnd = (FrameReader<ToSupervisor>, Writer<ToSupervisor>);

    /// One end of a connection, as both sides hold it during the
    /// handshake: reading `M`, writing the other direction.
    fn end<M: Wire>(stream: UnixStream) -> (FrameReader<M>, Writer<M>) {
        let (read, write) = stream.into_split();
        (
            FrameReader::new(FdReader::new(read), MessageCodec::default()),
            FramedWrite::new(write, MessageCodec::default()),
        )
    }

    /// The worker's end and the supervisor's end of a fresh socket pair.
    fn pair() -> (WorkerEnd, SupervisorEnd) {
        let (worker, supervisor) = UnixStream::pair().unwrap();
        (end(worker), end(supervisor))
    }

    fn welcome() -> Welcome {
        Welcome {
            worker_id: 7,
            index: 2,
            max_frame_length: 1 << 20,
            config: Bytes::from_static(b"config"),
        }
    }

    async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(LIMIT, future)
            .await
            .expect("the handshake hung")
    }

    /// Runs `accept` on the supervisor's end, keeping what `on_early` saw.
    async fn accept_all(
        (mut reader, mut writer): SupervisorEnd,
    ) -> (Result<Hello, HandshakeError>, Vec<ToSupervisor>) {
        let mut early = Vec::new();
        let result = accept(&mut reader, &mut writer, welcome(), |m| {
            early.push(m);
            Ok(())
        })
        .await;
        (result, early)
    }

    /// Both halves against each other: the worker gets the welcome, the
    /// supervisor the hello, once `Ready` is sent.
    #[tokio::test]
    async fn good_handshake() {
        let ((mut reader, mut writer), supervisor) = pair();
        let accepted = tokio::spawn(accept_all(supervisor));
        let hello = Hello::new();
        let got = bounded(connect(&mut reader, &mut writer, hello.clone()))
            .await
            .unwrap();
        assert_eq!(got, welcome());
        bounded(writer.send(ToSupervisor::Ready)).await.unwrap();
        let (result, early) = bounded(accepted).await.unwrap();
        assert_eq!(result.unwrap(), hello);
        assert!(early.is_empty());
    }

    /// `Status` and `Event` between `Welcome` and `Ready` reach `on_early`,
    /// in order; the handshake then completes.
    #[tokio::test]
    async fn early_messages_pass_through() {
        let ((mut reader, mut writer), supervisor) = pair();
        let accepted = tokio::spawn(accept_all(supervisor));
        bounded(connect(&mut reader, &mut writer, Hello::new()))
            .await
            .unwrap();
        let event = ToSupervisor::Event {
            name: "loading".to_owned(),
            payload: Bytes::from_static(b"50%"),
        };
        let status = ToSupervisor::Status {
            message: "model loaded".to_owned(),
        };
        for message in [event.clone(), status.clone(), ToSupervisor::Ready] {
            bounded(writer.send(message)).await.unwrap();
        }
        let (result, early) = bounded(accepted).await.unwrap();
        assert!(result.is_ok());
        assert_eq!(early, vec![event, status]);
    }

    /// An error of `on_early` ends the handshake with that error.
    #[tokio::test]
    async fn early_message_refused() {
        let ((mut reader, mut writer), (mut sreader, mut swriter)) = pair();
        let accepted = tokio::spawn(async move {
            accept(&mut sreader, &mut swriter, welcome(), |m| {
                Err(ProtocolError::UnexpectedMessage {
                    expected: "Ready",
                    got: m.name(),
                })
            })
            .await
        });
        bounded(connect(&mut reader, &mut writer, Hello::new()))
            .await
            .unwrap();
        let event = ToSupervisor::Event {
            name: "e".to_owned(),
            payload: Bytes::new(),
        };
        bounded(writer.send(event)).await.unwrap();
        let result = bounded(accepted).await.unwrap();
        assert!(
            matches!(
                result,
                Err(HandshakeError::Protocol(ProtocolError::UnexpectedMessage {
                    expected: "Ready",
                    got: "Event"
                }))
            ),
            "{result:?}"
        );
    }

    /// A `Hello` without drover's magic number is refused with both
    /// numbers, before any `Welcome` is sent.
    #[tokio::test]
    async fn bad_magic() {
        let ((mut reader, mut writer), supervisor) = pair();
        let accepted = tokio::spawn(accept_all(supervisor));
        let hello = Hello {
            magic: 0x1234_5678,
            ..Hello::new()
        };
        let answer = bounded(connect(&mut reader, &mut writer, hello)).await;
        let (result, _) = bounded(accepted).await.unwrap();
        assert!(
            matches!(
                result,
                Err(HandshakeError::Protocol(ProtocolError::BadMagic {
                    found: 0x1234_5678,
                    expected: MAGIC
                }))
            ),
            "{result:?}"
        );
        // The supervisor's end is gone without a word: the worker sees
        // the connection close.
        assert!(matches!(answer, Err(HandshakeError::Closed)), "{answer:?}");
    }

    /// Another protocol version is refused, naming both.
    #[tokio::test]
    async fn version_mismatch() {
        let ((mut reader, mut writer), supervisor) = pair();
        let accepted = tokio::spawn(accept_all(supervisor));
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            ..Hello::new()
        };
        let _ = bounded(connect(&mut reader, &mut writer, hello)).await;
        let (result, _) = bounded(accepted).await.unwrap();
        match result {
            Err(HandshakeError::Protocol(e @ ProtocolError::VersionMismatch { peer, ours })) => {
                assert_eq!((peer, ours), (PROTOCOL_VERSION + 1, PROTOCOL_VERSION));
                let text = e.to_string();
                assert!(text.contains(&format!("version {}", PROTOCOL_VERSION + 1)));
                assert!(text.contains(&format!("speaks {PROTOCOL_VERSION}")));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Anything else where `Hello`, `Welcome` or `Ready` is due is refused,
    /// naming the kind of message that came.
    #[tokio::test]
    async fn unexpected_message_named() {
        // Instead of `Hello`.
        let ((_, mut writer), supervisor) = pair();
        let accepted = tokio::spawn(accept_all(supervisor));
        bounded(writer.send(ToSupervisor::Busy)).await.unwrap();
        let (result, _) = bounded(accepted).await.unwrap();
        assert!(
            matches!(
                result,
                Err(HandshakeError::Protocol(ProtocolError::UnexpectedMessage {
                    expected: "Hello",
                    got: "Busy"
                }))
            ),
            "{result:?}"
        );

        // Instead of `Ready`.
        let ((mut reader, mut writer), supervisor) = pair();
        let accepted = tokio::spawn(accept_all(supervisor));
        bounded(connect(&mut reader, &mut writer, Hello::new()))
            .await
            .unwrap();
        bounded(writer.send(ToSupervisor::Pong { seq: 1 }))
            .await
            .unwrap();
        let (result, _) = bounded(accepted).await.unwrap();
        assert!(
            matches!(
                result,
                Err(HandshakeError::Protocol(ProtocolError::UnexpectedMessage {
                    expected: "Ready",
                    got: "Pong"
                }))
            ),
            "{result:?}"
        );

        // Instead of `Welcome`.
        let ((mut reader, mut writer), (mut sreader, mut swriter)) = pair();
        let supervisor = tokio::spawn(async move {
            let hello = sreader.next().await;
            swriter.send(ToWorker::SoftKill).await.unwrap();
            (hello, sreader, swriter)
        });
        let result = bounded(connect(&mut reader, &mut writer, Hello::new())).await;
        assert!(
            matches!(
                result,
                Err(HandshakeError::Protocol(ProtocolError::UnexpectedMessage {
                    expected: "Welcome",
                    got: "SoftKill"
                }))
            ),
            "{result:?}"
        );
        let (hello, _, _) = bounded(supervisor).await.unwrap();
        assert!(matches!(hello, Some(Ok(ToSupervisor::Hello(_)))));
    }

    /// The connection ending mid-handshake: between frames it is
    /// `Closed`, on either side and at any step; inside a frame it is
    /// `Truncated`.
    #[tokio::test]
    async fn end_of_file_mid_handshake() {
        // Before `Hello`.
        let ((reader, writer), supervisor) = pair();
        drop((reader, writer));
        let (result, _) = bounded(accept_all(supervisor)).await;
        assert!(matches!(result, Err(HandshakeError::Closed)), "{result:?}");

        // After `Welcome`, before `Ready`.
        let ((mut reader, mut writer), supervisor) = pair();
        let accepted = tokio::spawn(accept_all(supervisor));
        bounded(connect(&mut reader, &mut writer, Hello::new()))
            .await
            .unwrap();
        drop((reader, writer));
        let (result, _) = bounded(accepted).await.unwrap();
        assert!(matches!(result, Err(HandshakeError::Closed)), "{result:?}");

        // Before `Welcome`.
        let ((mut reader, mut writer), (mut sreader, swriter)) = pair();
        let supervisor = tokio::spawn(async move {
            let hello = sreader.next().await;
            drop((sreader, swriter));
            hello
        });
        let result = bounded(connect(&mut reader, &mut writer, Hello::new())).await;
        assert!(matches!(result, Err(HandshakeError::Closed)), "{result:?}");
        assert!(matches!(
            bounded(supervisor).await.unwrap(),
            Some(Ok(ToSupervisor::Hello(_)))
        ));

        // Inside the `Hello` frame: a header announcing 10 bytes, 3 sent.
        let (worker, supervisor) = UnixStream::pair().unwrap();
        let accepted = tokio::spawn(accept_all(end::<ToSupervisor>(supervisor)));
        let mut worker = worker;
        worker.write_all(&[0, 0, 0, 10, 1, 2, 3]).await.unwrap();
        drop(worker);
        let (result, _) = bounded(accepted).await.unwrap();
        assert!(
            matches!(
                result,
                Err(HandshakeError::Protocol(ProtocolError::Truncated { .. }))
            ),
            "{result:?}"
        );
    }
}
