//! Every message of the protocol, typed by direction: [`ToWorker`] and
//! [`ToSupervisor`], with the [`StreamFrame`]s both carry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// drover's magic number, the first field of every `Hello` ("DRVR").
pub const MAGIC: u32 = 0x4452_5652;

/// Version of this protocol. Both sides must speak the same one. (4: a
/// worker's answer may name bytes of the requests arena, see
/// [`OWN_ARENA`](crate::shm::OWN_ARENA).)
pub const PROTOCOL_VERSION: u16 = 4;

/// Identifies one request for its whole life: a uuid, version 4 in form,
/// unique but not unpredictable (the supervisor counts them out through
/// a permutation rather than drawing each at random).
pub type RequestId = Uuid;

/// The first message a worker sends, as soon as it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// The worker's [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// The worker's process id, as the worker sees it.
    pub pid: u32,
}

impl Hello {
    /// The `Hello` of this process.
    pub fn new() -> Hello {
        Hello {
            magic: MAGIC,
            protocol_version: PROTOCOL_VERSION,
            pid: std::process::id(),
        }
    }
}

impl Default for Hello {
    fn default() -> Self {
        Hello::new()
    }
}

/// The supervisor's answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The worker's id in this pool: unique for the pool's life, never reused.
    pub worker_id: u64,
    /// The slot this worker fills, `0..workers`; a replacement takes the
    /// slot of the worker it replaces.
    pub index: u32,
    /// The maximum frame length the supervisor accepts and sends.
    pub max_frame_length: u32,
    /// The pool's configuration payload (encoded user value), empty if none.
    pub config: Bytes,
}

/// Why a request failed on the worker's side. On the wire it is one byte
/// (see the [crate docs](crate#wire-format)); a new kind comes with a new
/// [`PROTOCOL_VERSION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The handler returned an error or called `fail`.
    Failed,
    /// The handler panicked.
    Panicked,
    /// The request was dropped without an answer.
    Dropped,
    /// The worker could not send the answer (for example: over the frame
    /// limit).
    Unsendable,
}

/// An error answer from a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// What kind of failure it was.
    pub kind: RemoteErrorKind,
    /// The worker's description of it.
    pub message: String,
}

/// A byte stream's frame, in either direction: the request's stream
/// (supervisor to worker) or the answer's (worker to supervisor). Both
/// directions encode it the same way, so the stream registry and the
/// pumps send it without knowing which side they are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame {
    /// The next bytes of the stream of request `id`. Never more than the
    /// receiver has granted in credit.
    Data {
        /// The request whose stream this is.
        id: RequestId,
        /// The bytes (after the frame's fields on the wire).
        bytes: Bytes,
    },
    /// The stream of request `id` is complete.
    End {
        /// The request whose stream this is.
        id: RequestId,
    },
    /// From the stream's receiver: it consumed `bytes` more, which the
    /// sender may now send.
    Credit {
        /// The request whose stream this is.
        id: RequestId,
        /// Bytes of credit granted.
        bytes: u32,
    },
    /// From the stream's sender: the stream is cut short.
    Abort {
        /// The request whose stream this is.
        id: RequestId,
        /// Why.
        reason: String,
    },
    /// From the stream's receiver: it wants no more of this stream.
    Stop {
        /// The request whose stream this is.
        id: RequestId,
    },
}

impl StreamFrame {
    /// The request whose stream this frame belongs to.
    pub fn id(&self) -> RequestId {
        match self {
            StreamFrame::Data { id, .. }
            | StreamFrame::End { id }
            | StreamFrame::Credit { id, .. }
            | StreamFrame::Abort { id, .. }
            | StreamFrame::Stop { id } => *id,
        }
    }

    /// The frame's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            StreamFrame::Data { .. } => "StreamData",
            StreamFrame::End { .. } => "StreamEnd",
            StreamFrame::Credit { .. } => "StreamCredit",
            StreamFrame::Abort { .. } => "StreamAbort",
            StreamFrame::Stop { .. } => "StreamStop",
        }
    }
}

/// Everything a supervisor says to a worker.
///
/// `Request` and `Stream` have drover's own fixed layouts on the wire; the
/// others (the rare ones) travel as bincode, by their index in this enum
/// (see the [crate docs](crate#wire-format)). New rare variants are only
/// ever inserted before `Request`, and each changes the
/// [`PROTOCOL_VERSION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// The answer to `Hello`, see [`Welcome`].
    Welcome(Welcome),
    /// The caller no longer wants this request.
    Cancel {
        /// The request to cancel.
        id: RequestId,
    },
    /// A custom event.
    Event {
        /// The event's name.
        name: String,
        /// The encoded event value (after the message on the wire).
        #[serde(with = "tail")]
        payload: Bytes,
    },
    /// Liveness probe.
    Ping {
        /// Echoed back in `Pong`.
        seq: u64,
    },
    /// Finish what you hold, then exit.
    SoftKill,
    /// Exit now.
    HardKill,
    /// The answer to a `Query`.
    QueryReply {
        /// The query answered.
        id: u64,
        /// The encoded answer (after the message on the wire), or why there
        /// is none.
        #[serde(with = "tail_result")]
        result: Result<Bytes, RemoteError>,
    },
    /// The supervisor has copied out the answer the worker put in its
    /// shared-memory arena at this offset: the worker may reuse the slot.
    /// The worker's reader takes these; its handlers never see one.
    Release {
        /// Where the slot starts in the answers arena.
        offset: u64,
    },
    /// A request to handle (fixed layout).
    #[serde(skip)]
    Request {
        /// The request's id.
        id: RequestId,
        /// When the caller enqueued it, in microseconds since the Unix epoch.
        created_at: u64,
        /// How many descriptors (passed sockets) travel with this request,
        /// as `SCM_RIGHTS` on the connection; the worker takes the next this
        /// many it received.
        fds: u8,
        /// Whether a byte stream follows, as [`StreamFrame`]s with this
        /// request's id, ending with `End` (or `Abort`).
        stream: bool,
        /// The encoded request value. On the wire it is the rest of the
        /// frame, so it is never copied to decode.
        payload: Bytes,
    },
    /// A frame of a byte stream: the request's, or credit and stops for
    /// the answer's (fixed layout).
    #[serde(skip)]
    Stream(StreamFrame),
}

/// Everything a worker says to its supervisor.
///
/// `Response` and `Stream` have drover's own fixed layouts on the wire; the
/// others (the rare ones) travel as bincode, by their index in this enum
/// (see the [crate docs](crate#wire-format)). New rare variants are only
/// ever inserted before `Response`, and each changes the
/// [`PROTOCOL_VERSION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToSupervisor {
    /// First message, see [`Hello`].
    Hello(Hello),
    /// Ready for requests (again).
    Ready,
    /// Route no new request here until `Ready`.
    Busy,
    /// A custom event.
    Event {
        /// The event's name.
        name: String,
        /// The encoded event value (after the message on the wire).
        #[serde(with = "tail")]
        payload: Bytes,
    },
    /// The answer to `Ping`.
    Pong {
        /// The `seq` of the `Ping` answered.
        seq: u64,
    },
    /// A human-readable status line ("loading model").
    Status {
        /// The status text.
        message: String,
    },
    /// A question for the supervisor's query handler (`Worker::ask`),
    /// answered with `QueryReply`.
    Query {
        /// Chosen by the worker, echoed in the reply.
        id: u64,
        /// What is asked.
        name: String,
        /// The encoded question (after the message on the wire).
        #[serde(with = "tail")]
        payload: Bytes,
    },
    /// The worker closed a socket that came with a request.
    SocketClosed {
        /// The request the socket came with.
        id: RequestId,
    },
    /// A signal from outside the pool (SIGTERM or SIGINT, from a service
    /// manager or a terminal) told the worker to stop. It takes nothing
    /// new, finishes what it holds, then exits; the supervisor routes
    /// nothing more to it and reports its exit as that signal's doing, not
    /// a crash.
    Stopping {
        /// The signal's number.
        signal: i32,
    },
    /// The worker holds no more of the request payload the supervisor put
    /// in its shared-memory arena at this offset: the supervisor may reuse
    /// the slot. The supervisor's reader takes these.
    Release {
        /// Where the slot starts in the requests arena.
        offset: u64,
    },
    /// The answer to a request (fixed layout).
    #[serde(skip)]
    Response {
        /// The request answered.
        id: RequestId,
        /// Whether a byte stream follows the answer, as for a request.
        stream: bool,
        /// The encoded answer, or the worker's error. An answer's bytes
        /// are the rest of the frame, as a request's are.
        result: Result<Bytes, RemoteError>,
    },
    /// A frame of a byte stream: the answer's, or credit and stops for the
    /// request's (fixed layout).
    #[serde(skip)]
    Stream(StreamFrame),
}

impl ToWorker {
    pub(crate) fn tail_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            ToWorker::Request { payload, .. }
            | ToWorker::Event { payload, .. }
            | ToWorker::QueryReply {
                result: Ok(payload),
                ..
            }
            | ToWorker::Stream(StreamFrame::Data { bytes: payload, .. }) => Some(payload),
            ToWorker::Welcome(_)
            | ToWorker::Cancel { .. }
            | ToWorker::Ping { .. }
            | ToWorker::SoftKill
            | ToWorker::HardKill
            | ToWorker::QueryReply { result: Err(_), .. }
            | ToWorker::Release { .. }
            | ToWorker::Stream(_) => None,
        }
    }

    /// The variant's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            ToWorker::Welcome(_) => "Welcome",
            ToWorker::Cancel { .. } => "Cancel",
            ToWorker::Event { .. } => "Event",
            ToWorker::Ping { .. } => "Ping",
            ToWorker::SoftKill => "SoftKill",
            ToWorker::HardKill => "HardKill",
            ToWorker::QueryReply { .. } => "QueryReply",
            ToWorker::Release { .. } => "Release",
            ToWorker::Request { .. } => "Request",
            ToWorker::Stream(frame) => frame.name(),
        }
    }
}

impl ToSupervisor {
    pub(crate) fn tail_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            ToSupervisor::Response {
                result: Ok(payload),
                ..
            }
            | ToSupervisor::Event { payload, .. }
            | ToSupervisor::Query { payload, .. }
            | ToSupervisor::Stream(StreamFrame::Data { bytes: payload, .. }) => Some(payload),
            ToSupervisor::Hello(_)
            | ToSupervisor::Ready
            | ToSupervisor::Busy
            | ToSupervisor::Pong { .. }
            | ToSupervisor::Status { .. }
            | ToSupervisor::SocketClosed { .. }
            | ToSupervisor::Stopping { .. }
            | ToSupervisor::Release { .. }
            | ToSupervisor::Response { result: Err(_), .. }
            | ToSupervisor::Stream(_) => None,
        }
    }

    /// The variant's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            ToSupervisor::Hello(_) => "Hello",
            ToSupervisor::Ready => "Ready",
            ToSupervisor::Busy => "Busy",
            ToSupervisor::Event { .. } => "Event",
            ToSupervisor::Pong { .. } => "Pong",
            ToSupervisor::Status { .. } => "Status",
            ToSupervisor::Query { .. } => "Query",
            ToSupervisor::SocketClosed { .. } => "SocketClosed",
            ToSupervisor::Stopping { .. } => "Stopping",
            ToSupervisor::Release { .. } => "Release",
            ToSupervisor::Response { .. } => "Response",
            ToSupervisor::Stream(frame) => frame.name(),
        }
    }
}

/// `t` as microseconds since the Unix epoch, as the wire carries times
/// (0 for times before the epoch).
pub fn timestamp_micros(t: SystemTime) -> u64 {
    // Whole seconds and microseconds in u64 (u128 arithmetic costs twice
    // as much on the request path, where this runs once per request); a
    // u64 of microseconds lasts 584,000 years.
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(d.subsec_micros()))
    })
}

/// Now, as microseconds since the Unix epoch: what the request path
/// stamps requests and answers with. (Read through `SystemTime`: rustix's
/// own reading of the clock is cheaper, but crashes under valgrind.)
pub fn now_micros() -> u64 {
    timestamp_micros(SystemTime::now())
}

/// The inverse of [`timestamp_micros`].
pub fn timestamp_from_micros(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

/// A payload field that the codec writes after the message: in the
/// message itself it takes no bytes, and decodes as empty until the codec
/// puts the tail in.
mod tail {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(_: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Bytes, D::Error> {
        <()>::deserialize(deserializer)?;
        Ok(Bytes::new())
    }
}

/// As [`tail`], for an answer: `Ok` keeps its bytes for the tail, `Err`
/// travels in the message.
mod tail_result {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::RemoteError;

    pub(super) fn serialize<S: Serializer>(
        result: &Result<Bytes, RemoteError>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        result.as_ref().map(|_| ()).serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Result<Bytes, RemoteError>, D::Error> {
        Ok(Result::<(), RemoteError>::deserialize(deserializer)?.map(|()| Bytes::new()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{now_micros, timestamp_from_micros, timestamp_micros};

    #[test]
    fn now_is_between_two_readings_of_system_time() {
        let before = timestamp_micros(SystemTime::now());
        let now = now_micros();
        let after = timestamp_micros(SystemTime::now());
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }

    #[test]
    fn timestamps_are_whole_microseconds_and_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(timestamp_micros(t), 1_700_000_000_123_456);
        assert_eq!(
            timestamp_from_micros(timestamp_micros(t)),
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000)
        );
        assert_eq!(timestamp_micros(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
