//! One end of a drover connection, the same type on both sides: the
//! reader of what the peer says, the outbox of what this side says, the
//! registry of the byte streams in flight, and the writer task that
//! empties the outbox into the socket.
//!
//! ```text
//!   UnixStream ──► Opening<E> ──accept / connect──► Opening<E> ──open──► Connection<E>
//!                  reader + FramedWrite              (handshake done)    reader, outbox, streams;
//!                  + streams                                             writer task on the
//!                                                                        caller's tracker
//! ```
//!
//! A side is named by its [`End`]: [`SupervisorEnd`] reads
//! [`ToSupervisor`] and writes [`ToWorker`], [`WorkerEnd`] the other way
//! round, so each side can only accept (or connect) as its role says, and
//! each side's match on what it reads is exhaustive.
//!
//! The handshake writes through a plain `FramedWrite` (nothing else can
//! send yet); [`Opening::open`] turns its write half into the
//! [`Outbox`]'s writer ([`write_loop`](crate::transport::write_loop)) and spawns it on the tracker the
//! caller names, so that whoever waits for its tasks waits for it too. How
//! the writer ended (the peer stopped reading, the socket failed, a
//! message did not encode, or it panicked) reaches the caller's `on_end`.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::runtime::Handle;
use tokio_util::codec::FramedWrite;
use tokio_util::task::TaskTracker;

use crate::codec::MessageCodec;
use crate::error::ProtocolError;
use crate::fdio::FdReader;
use crate::handshake::{self, HandshakeError};
use crate::message::{Hello, ToSupervisor, ToWorker, Welcome};
use crate::reader::FrameReader;
use crate::shm::{Arenas, Inbound};
use crate::stream::Streams;
use crate::transport::{outbox_sharing, write_loop, Outbox};
use crate::wire::Wire;

/// Which side of a connection this is: what it reads and what it writes.
pub trait End: Send + 'static {
    /// The messages the peer sends this side.
    type Reads: Wire;
    /// The messages this side sends the peer.
    type Writes: Wire + Send + 'static;
}

/// The supervisor's side: reads [`ToSupervisor`], writes [`ToWorker`].
#[derive(Debug)]
pub enum SupervisorEnd {}

impl End for SupervisorEnd {
    type Reads = ToSupervisor;
    type Writes = ToWorker;
}

/// The worker's side: reads [`ToWorker`], writes [`ToSupervisor`].
#[derive(Debug)]
pub enum WorkerEnd {}

impl End for WorkerEnd {
    type Reads = ToWorker;
    type Writes = ToSupervisor;
}

/// A connection during its handshake, before anything but the handshake's
/// own messages can be sent.
pub struct Opening<E: End> {
    reader: FrameReader<E::Reads>,
    writer: FramedWrite<OwnedWriteHalf, MessageCodec<E::Reads>>,
    streams: Arc<Streams>,
    /// The worker's shared-memory arenas, if it has them.
    arenas: Option<Arenas>,
    end: PhantomData<E>,
}

impl<E: End> std::fmt::Debug for Opening<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opening")
            .field("end", &std::any::type_name::<E>())
            .field("max_frame_length", &self.max_frame_length())
            .finish_non_exhaustive()
    }
}

/// How a connection's writer task ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum WriterEnd {
    /// Every sender left, and everything queued was written.
    Finished,
    /// It stopped with this error: the socket failed or closed
    /// ([`ProtocolError::Io`]), the peer stopped reading while more was
    /// queued ([`ProtocolError::Stalled`]), or a message could not be
    /// encoded.
    Failed(ProtocolError),
    /// It panicked, saying this.
    Panicked(String),
}

/// One end of a connection once its handshake is done.
#[derive(Debug)]
#[non_exhaustive]
pub struct Connection<E: End> {
    /// What the peer says, in order; descriptors passed with a frame wait
    /// in its [`FdReader`] for the message that carries them.
    pub reader: FrameReader<E::Reads>,
    /// What this side says; cheap to clone into every task that sends.
    pub outbox: Outbox<E::Writes>,
    /// The byte streams in flight on this connection, both ways (the same
    /// registry the handshake's early messages saw).
    pub streams: Arc<Streams>,
}

impl<E: End> Opening<E> {
    /// Starts a connection over `stream` (a connected end of a socket
    /// pair), with frames up to `max_frame_length` bytes each way.
    pub fn new(stream: UnixStream, max_frame_length: usize) -> Opening<E> {
        let (read, write) = stream.into_split();
        Opening {
            reader: FrameReader::new(FdReader::new(read), MessageCodec::new(max_frame_length)),
            writer: FramedWrite::new(write, MessageCodec::new(max_frame_length)),
            streams: Arc::default(),
            arenas: None,
            end: PhantomData,
        }
    }

    /// Sends large payloads through `arenas` (this side's half of a
    /// worker's shared memory, see [`shm`](crate::shm)) once open, and
    /// takes the peer's from them.
    pub fn share_memory(&mut self, arenas: Arenas) {
        self.arenas = Some(arenas);
    }

    /// The frame limit, each way, in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.writer.encoder().max_frame_length()
    }

    /// The connection's stream registry, for what arrives during the
    /// handshake (and to hand to whoever routes stream frames later).
    pub fn streams(&self) -> &Arc<Streams> {
        &self.streams
    }

    /// Ends the handshake phase: the write half becomes the writer of a
    /// new [`Outbox`] (refusing more than `outbox_limit` bytes queued and
    /// unwritten: a peer that stops reading), spawned on `tracker` in
    /// `runtime`; `on_end` hears how the writer ended, once.
    pub fn open<F>(
        self,
        outbox_limit: usize,
        tracker: &TaskTracker,
        runtime: &Handle,
        on_end: F,
    ) -> Connection<E>
    where
        F: FnOnce(WriterEnd) + Send + 'static,
    {
        let Opening {
            mut reader,
            writer,
            streams,
            arenas,
            ..
        } = self;
        let parts = writer.into_parts();
        let outbound = arenas.as_ref().map(|a| a.outbound.clone());
        let lent = arenas
            .as_ref()
            .filter(|a| a.lend)
            .map(|a| a.inbound.clone());
        let (outbox, rx) = outbox_sharing::<E::Writes>(
            parts.codec.max_frame_length(),
            outbox_limit,
            outbound,
            lent,
        );
        if let Some(arenas) = arenas {
            let releaser = outbox.releaser();
            let own = (!arenas.lend).then(|| arenas.outbound.clone());
            let inbound = Inbound::new(
                arenas.inbound,
                arenas.lend,
                Box::new(move |offset| releaser.release(offset)),
                reader.pool().clone(),
                own,
            );
            reader.share(Arc::new(inbound), arenas.outbound);
        }
        let writer = async move {
            let end = match AssertUnwindSafe(write_loop(parts.io, rx))
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => WriterEnd::Finished,
                Ok(Err(error)) => WriterEnd::Failed(error),
                Err(panic) => WriterEnd::Panicked(panic_message(&*panic)),
            };
            on_end(end);
        };
        tracker.spawn_on(writer, runtime);
        Connection {
            reader,
            outbox,
            streams,
        }
    }
}

impl Opening<SupervisorEnd> {
    /// The supervisor's half of the handshake: reads the worker's
    /// `Hello` (checking its magic number and protocol version), sends
    /// `welcome`, and waits for `Ready`, returning the `Hello`.
    ///
    /// What the worker says while it sets itself up (`Status`, `Event`)
    /// is handed to `on_early` with the connection's streams, as it
    /// arrives; an error from it ends the handshake with that error.
    ///
    /// # Errors
    ///
    /// As [`handshake::accept`]: [`HandshakeError::Closed`] when the
    /// connection ends first, [`HandshakeError::Protocol`] for a wrong
    /// message, magic or version, or a failed socket.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the connection can only be dropped after a
    /// cancelled handshake.
    pub async fn accept<F>(
        &mut self,
        welcome: Welcome,
        mut on_early: F,
    ) -> Result<Hello, HandshakeError>
    where
        F: FnMut(ToSupervisor, &Streams) -> Result<(), ProtocolError>,
    {
        let streams = self.streams.clone();
        handshake::accept(&mut self.reader, &mut self.writer, welcome, |message| {
            on_early(message, &streams)
        })
        .await
    }
}

impl Opening<WorkerEnd> {
    /// The worker's half of the handshake: sends `hello`, waits for the
    /// supervisor's `Welcome` and adopts its frame limit, both ways.
    ///
    /// # Errors
    ///
    /// As [`handshake::connect`]: [`HandshakeError::Closed`] when the
    /// connection ends first, [`HandshakeError::Protocol`] when something
    /// other than `Welcome` comes or the socket fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`accept`](Opening::accept).
    pub async fn connect(&mut self, hello: Hello) -> Result<Welcome, HandshakeError> {
        let welcome = handshake::connect(&mut self.reader, &mut self.writer, hello).await?;
        let max = welcome.max_frame_length as usize;
        self.reader.decoder_mut().set_max_frame_length(max);
        self.writer.encoder_mut().set_max_frame_length(max);
        Ok(welcome)
    }
}

/// What a panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (_, Some(text)) => text.clone(),
        _ => "a panic with no message".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures::StreamExt;

    use super::*;
    use crate::message::StreamFrame;
    use crate::RequestId;

    /// Every await here is bounded: a broken connection must fail, not hang.
    const LIMIT: Duration = Duration::from_secs(5);

    async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(LIMIT, future)
            .await
            .expect("the connection stalled")
    }

    fn welcome(max_frame_length: u32) -> Welcome {
        Welcome {
            worker_id: 3,
            index: 1,
            max_frame_length,
            config: Bytes::from_static(b"config"),
        }
    }

    #[tokio::test]
    async fn both_ends_open_from_one_type_and_speak_both_ways() {
        let (worker, supervisor) = UnixStream::pair().unwrap();
        let mut worker = Opening::<WorkerEnd>::new(worker, crate::DEFAULT_MAX_FRAME_LENGTH);
        let mut supervisor = Opening::<SupervisorEnd>::new(supervisor, 1 << 20);
        let tracker = TaskTracker::new();
        let runtime = Handle::current();

        // The worker reports its status before it is ready: the
        // supervisor's early handler sees it with the streams.
        let early = std::sync::Mutex::new(Vec::new());
        let worker_side = async {
            let welcome = worker.connect(Hello::new()).await.unwrap();
            // The welcome's limit is adopted both ways.
            assert_eq!(worker.max_frame_length(), 1 << 20);
            assert_eq!(welcome.worker_id, 3);
            for message in [
                ToSupervisor::Status {
                    message: "warming".into(),
                },
                ToSupervisor::Ready,
            ] {
                futures::SinkExt::send(&mut worker.writer, message)
                    .await
                    .unwrap();
            }
        };
        let supervisor_side = supervisor.accept(welcome(1 << 20), |message, _streams| {
            early.lock().unwrap().push(message.name());
            Ok(())
        });
        let ((), hello) = bounded(async { futures::join!(worker_side, supervisor_side) }).await;
        assert_eq!(hello.unwrap().pid, std::process::id());
        assert_eq!(*early.lock().unwrap(), ["Status"]);

        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
        let mut supervisor = supervisor.open(1 << 20, &tracker, &runtime, |end| {
            let _ = ended_tx.send(matches!(end, WriterEnd::Finished));
        });
        let mut worker = worker.open(usize::MAX, &tracker, &runtime, |_| {});

        // A stream frame goes through the outbox and comes out typed on
        // the other side.
        let id = RequestId::new_v4();
        worker
            .outbox
            .send_message(ToSupervisor::Stream(StreamFrame::End { id }))
            .unwrap();
        match bounded(supervisor.reader.next()).await {
            Some(Ok(ToSupervisor::Stream(StreamFrame::End { id: got }))) => assert_eq!(got, id),
            other => panic!("expected the stream's end, got {other:?}"),
        }
        supervisor
            .outbox
            .send_message(ToWorker::Cancel { id })
            .unwrap();
        match bounded(worker.reader.next()).await {
            Some(Ok(ToWorker::Cancel { id: got })) => assert_eq!(got, id),
            other => panic!("expected the cancel, got {other:?}"),
        }

        // The last sender gone, the writer finishes on the caller's
        // tracker and says so.
        drop(supervisor.outbox);
        assert!(bounded(ended_rx).await.unwrap());
        drop(worker.outbox);
        tracker.close();
        bounded(tracker.wait()).await;
    }

    /// Writes everything `outbox` holds (the `Release`s of dropped
    /// payloads included) before it returns.
    async fn flushed<M: Wire>(outbox: &Outbox<M>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        outbox.send(crate::transport::Outgoing::Flush(tx)).unwrap();
        bounded(rx).await.unwrap();
    }

    /// Both ends of a connection with 4 MiB arenas, open on `tracker`,
    /// and each side's arena it writes into.
    struct Sharing {
        supervisor: Connection<SupervisorEnd>,
        worker: Connection<WorkerEnd>,
        requests: Arc<crate::shm::Outbound>,
        answers: Arc<crate::shm::Outbound>,
    }

    fn sharing(tracker: &TaskTracker) -> Sharing {
        let (worker, supervisor) = UnixStream::pair().unwrap();
        let (supervisor_arenas, fds) = crate::shm::Arenas::create(4 << 20).unwrap();
        let worker_arenas = crate::shm::Arenas::adopt(&fds, 4 << 20).unwrap();
        drop(fds);
        let requests = supervisor_arenas.outbound.clone();
        let answers = worker_arenas.outbound.clone();
        let mut supervisor = Opening::<SupervisorEnd>::new(supervisor, 8 << 20);
        supervisor.share_memory(supervisor_arenas);
        let mut worker = Opening::<WorkerEnd>::new(worker, 8 << 20);
        worker.share_memory(worker_arenas);
        let runtime = Handle::current();
        Sharing {
            supervisor: supervisor.open(usize::MAX, tracker, &runtime, |_| {}),
            worker: worker.open(usize::MAX, tracker, &runtime, |_| {}),
            requests,
            answers,
        }
    }

    #[tokio::test]
    async fn large_payloads_cross_in_shared_memory_and_their_slots_come_back() {
        let tracker = TaskTracker::new();
        let Sharing {
            mut supervisor,
            mut worker,
            requests,
            answers,
        } = sharing(&tracker);

        // 1 MiB goes into the requests arena; the frame carries 16 bytes.
        let payload: Bytes = (0..1 << 20)
            .map(|i: u32| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let id = RequestId::new_v4();
        let small = Bytes::from(vec![1u8; 1000]);
        for (id, payload) in [(id, payload.clone()), (RequestId::new_v4(), small.clone())] {
            let request = ToWorker::Request {
                id,
                created_at: 1,
                fds: 0,
                stream: false,
                payload,
            };
            supervisor.outbox.send_message(request).unwrap();
        }
        let lent = match bounded(worker.reader.next()).await {
            Some(Ok(ToWorker::Request {
                id: got,
                payload: lent,
                ..
            })) if got == id => lent,
            other => panic!("expected the large request, got {other:?}"),
        };
        assert_eq!(lent, payload);
        // The writer put it in the arena (the frame carried 16 bytes).
        assert_eq!(
            requests.in_use(),
            1 << 20,
            "only the large payload is placed"
        );
        match bounded(worker.reader.next()).await {
            Some(Ok(ToWorker::Request { payload: got, .. })) => assert_eq!(got, small),
            other => panic!("expected the small request, got {other:?}"),
        }

        // The worker answers with the very bytes it was lent: they go back
        // as where they lie, and the supervisor copies them out of there.
        let answer = ToSupervisor::Response {
            id,
            stream: false,
            result: Ok(lent.slice(..)),
        };
        worker.outbox.send_message(answer).unwrap();
        let shown = match bounded(supervisor.reader.next()).await {
            Some(Ok(ToSupervisor::Response {
                result: Ok(got), ..
            })) => got,
            other => panic!("expected the answer, got {other:?}"),
        };
        assert_eq!(shown, payload);
        assert!(!requests.lies_in(&shown), "copied out");
        assert_eq!(answers.placed(), 0, "nothing went into the answers arena");

        // An answer of its own goes through the answers arena, and the
        // supervisor copies it out.
        let fresh = Bytes::from(vec![5u8; 1 << 20]);
        let answer = ToSupervisor::Response {
            id: RequestId::new_v4(),
            stream: false,
            result: Ok(fresh.clone()),
        };
        worker.outbox.send_message(answer).unwrap();
        match bounded(supervisor.reader.next()).await {
            Some(Ok(ToSupervisor::Response {
                result: Ok(got), ..
            })) => assert!(got == fresh && !requests.lies_in(&got)),
            other => panic!("expected the answer, got {other:?}"),
        }
        assert_eq!(answers.placed(), 1, "the answers arena took it");
        // The request's slot stays taken while the worker holds its bytes.
        assert_eq!(requests.in_use(), 1 << 20);
        drop(lent);
        flushed(&worker.outbox).await;
        worker.outbox.send_message(ToSupervisor::Busy).unwrap();
        match bounded(supervisor.reader.next()).await {
            Some(Ok(ToSupervisor::Busy)) => {}
            other => panic!("expected Busy after the Release, got {other:?}"),
        }
        assert_eq!(requests.in_use(), 0, "the worker released the request");
        assert_eq!(shown, payload, "the copy is the caller's");
        drop(shown);
        // The supervisor released the answer's slot once it had copied it.
        flushed(&supervisor.outbox).await;
        supervisor
            .outbox
            .send_message(ToWorker::Ping { seq: 1 })
            .unwrap();
        match bounded(worker.reader.next()).await {
            Some(Ok(ToWorker::Ping { seq: 1 })) => {}
            other => panic!("expected the Ping after the Release, got {other:?}"),
        }
        assert_eq!(answers.in_use(), 0, "the supervisor released the answer");

        drop((supervisor.outbox, worker.outbox));
        tracker.close();
        bounded(tracker.wait()).await;
    }

    #[tokio::test]
    async fn a_payload_written_in_place_crosses_with_no_copy_and_an_unsent_slot_comes_back() {
        let tracker = TaskTracker::new();
        let Sharing {
            mut supervisor,
            worker,
            answers,
            ..
        } = sharing(&tracker);

        // Reserved and dropped unwritten: the room is free again.
        let unsent = worker.outbox.reserve_shared(1 << 20).unwrap();
        assert_eq!(answers.in_use(), 1 << 20);
        drop(unsent);
        assert_eq!(answers.in_use(), 0);
        // Past the payload limit, or larger than the arena: no slot.
        assert!(worker.outbox.reserve_shared(8 << 20).is_none());

        let expected: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
        let mut slot = worker.outbox.reserve_shared(1 << 20).unwrap();
        for piece in expected.chunks(70_000) {
            assert!(slot.push(piece));
        }
        assert!(!slot.push(&vec![0; 1 << 20]), "more than the slot holds");
        assert_eq!(slot.as_slice(), &expected[..]);
        let id = RequestId::new_v4();
        let answer = ToSupervisor::Response {
            id,
            stream: false,
            result: Ok(slot.into_bytes()),
        };
        worker.outbox.send_message(answer).unwrap();
        match bounded(supervisor.reader.next()).await {
            Some(Ok(ToSupervisor::Response {
                result: Ok(got), ..
            })) => assert_eq!(got, &expected[..]),
            other => panic!("expected the answer, got {other:?}"),
        }
        assert_eq!(answers.placed(), 0, "nothing was copied into the arena");
        // The supervisor copied it out and released it: the worker frees
        // the slot when the Release comes.
        flushed(&supervisor.outbox).await;
        drop(supervisor.outbox);
        let mut reader = worker.reader;
        assert!(
            bounded(reader.next()).await.is_none(),
            "the supervisor's end"
        );
        assert_eq!(answers.in_use(), 0, "the supervisor released the answer");

        drop(worker.outbox);
        tracker.close();
        bounded(tracker.wait()).await;
    }

    #[tokio::test]
    async fn a_lying_descriptor_or_release_from_the_worker_ends_the_connection() {
        for (what, body) in [
            ("past the end", shared_response(4 << 20, 1)),
            ("over the limit", shared_response(0, 2 << 20)),
            ("a Release of nothing placed", release(4096)),
        ] {
            let (mut worker, supervisor) = UnixStream::pair().unwrap();
            let (arenas, _fds) = crate::shm::Arenas::create(4 << 20).unwrap();
            let mut supervisor = Opening::<SupervisorEnd>::new(supervisor, 1 << 20);
            supervisor.share_memory(arenas);
            let tracker = TaskTracker::new();
            let mut supervisor = supervisor.open(usize::MAX, &tracker, &Handle::current(), |_| {});
            tokio::io::AsyncWriteExt::write_all(&mut worker, &body)
                .await
                .unwrap();
            match bounded(supervisor.reader.next()).await {
                Some(Err(ProtocolError::Decode { reason, .. })) => {
                    let expected = match what {
                        "past the end" => "passes the end",
                        _ => "over the payload limit",
                    };
                    assert!(reason.contains(expected), "{what}: {reason}");
                }
                Some(Err(error @ ProtocolError::BadRelease { offset: 4096, .. })) => {
                    assert_eq!(what, "a Release of nothing placed");
                    assert_eq!(
                        error.to_string(),
                        "Release of shared-memory offset 4096: no payload placed there is held"
                    );
                }
                other => panic!("{what}: expected a protocol error, got {other:?}"),
            }
            assert!(
                bounded(supervisor.reader.next()).await.is_none(),
                "nothing after"
            );
        }
    }

    /// A frame of an `Ok` `Response` whose payload is said to be in shared
    /// memory at `offset`, `len` bytes.
    fn shared_response(offset: u64, len: u64) -> Vec<u8> {
        let mut body = vec![crate::wire::KIND_HOT];
        body.extend_from_slice(RequestId::new_v4().as_bytes());
        body.push(crate::wire::FLAG_SHARED);
        body.extend_from_slice(&offset.to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
        framed(body)
    }

    /// A frame of the worker's `Release` of `offset`.
    fn release(offset: u64) -> Vec<u8> {
        let mut frame = bytes::BytesMut::new();
        crate::codec::encode_message(ToSupervisor::Release { offset }, 1 << 20, &mut frame)
            .unwrap();
        frame.to_vec()
    }

    fn framed(body: Vec<u8>) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    #[tokio::test]
    async fn a_writer_whose_peer_stops_reading_ends_stalled() {
        let (worker, supervisor) = UnixStream::pair().unwrap();
        let supervisor = Opening::<SupervisorEnd>::new(supervisor, 1 << 20);
        let tracker = TaskTracker::new();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
        // No handshake needed to open: the limit is 64 KiB, and the
        // worker's end never reads.
        let connection = supervisor.open(64 * 1024, &tracker, &Handle::current(), |end| {
            let _ = ended_tx.send(end);
        });
        let payload = Bytes::from(vec![7u8; 16 * 1024]);
        for _ in 0..64 {
            let message = ToWorker::Request {
                id: RequestId::new_v4(),
                created_at: 0,
                fds: 0,
                stream: false,
                payload: payload.clone(),
            };
            if connection.outbox.send_message(message).is_err() {
                break;
            }
        }
        match bounded(ended_rx).await.unwrap() {
            WriterEnd::Failed(ProtocolError::Stalled { limit, .. }) => assert_eq!(limit, 64 * 1024),
            other => panic!("expected a stalled writer, got {other:?}"),
        }
        drop(worker);
    }
}
