//! Every message of the protocol, in both directions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// drover's magic number, the first field of every `Hello` ("DRVR").
pub const MAGIC: u32 = 0x4452_5652;

/// Version of this protocol. Both sides must speak the same one.
pub const PROTOCOL_VERSION: u16 = 1;

/// Identifies one request for its whole life (a uuid v4).
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

/// Why a request failed on the worker's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// One message on the connection between a supervisor and a worker.
///
/// New variants are only ever appended, so the encoding of existing ones
/// never changes within a [`PROTOCOL_VERSION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Worker to supervisor: first message, see [`Hello`].
    Hello(Hello),
    /// Supervisor to worker: answer to `Hello`, see [`Welcome`].
    Welcome(Welcome),
    /// Worker to supervisor: ready for requests (again).
    Ready,
    /// Worker to supervisor: route no new request here until `Ready`.
    Busy,
    /// Supervisor to worker: a request to handle.
    Request {
        /// The request's id.
        id: RequestId,
        /// When the caller enqueued it, in microseconds since the Unix epoch.
        created_at: u64,
        /// How many descriptors (passed sockets) travel with this request,
        /// as `SCM_RIGHTS` on the connection; the worker takes the next this
        /// many it received.
        fds: u8,
        /// Whether a byte stream follows, as `StreamData` frames with this
        /// request's id, ending with `StreamEnd` (or `StreamAbort`).
        stream: bool,
        /// The encoded request value. On the wire it follows the message
        /// (see [`codec`](crate::codec)), so it is never copied to decode.
        #[serde(with = "tail")]
        payload: Bytes,
    },
    /// Worker to supervisor: the answer to a request.
    Response {
        /// The request answered.
        id: RequestId,
        /// Whether a byte stream follows the answer, as for a request.
        stream: bool,
        /// The encoded answer, or the worker's error. An answer's bytes
        /// follow the message on the wire, as a request's do.
        #[serde(with = "tail_result")]
        result: Result<Bytes, RemoteError>,
    },
    /// Supervisor to worker: the caller no longer wants this request.
    Cancel {
        /// The request to cancel.
        id: RequestId,
    },
    /// Either direction: a custom event.
    Event {
        /// The event's name.
        name: String,
        /// The encoded event value (after the message on the wire).
        #[serde(with = "tail")]
        payload: Bytes,
    },
    /// Supervisor to worker: liveness probe.
    Ping {
        /// Echoed back in `Pong`.
        seq: u64,
    },
    /// Worker to supervisor: answer to `Ping`.
    Pong {
        /// The `seq` of the `Ping` answered.
        seq: u64,
    },
    /// Worker to supervisor: a human-readable status line ("loading model").
    Status {
        /// The status text.
        message: String,
    },
    /// Supervisor to worker: finish what you hold, then exit.
    SoftKill,
    /// Supervisor to worker: exit now.
    HardKill,
    /// Either direction: the next bytes of the stream of request `id`
    /// (the request's stream from the supervisor, the answer's from the
    /// worker). Never more than the receiver has granted in credit.
    StreamData {
        /// The request whose stream this is.
        id: RequestId,
        /// The bytes (after the message on the wire).
        #[serde(with = "tail")]
        bytes: Bytes,
    },
    /// Either direction: the stream of request `id` is complete.
    StreamEnd {
        /// The request whose stream this is.
        id: RequestId,
    },
    /// Either direction, from the stream's receiver: it consumed `bytes`
    /// more, which the sender may now send.
    StreamCredit {
        /// The request whose stream this is.
        id: RequestId,
        /// Bytes of credit granted.
        bytes: u32,
    },
    /// Either direction, from the stream's sender: the stream is cut short.
    StreamAbort {
        /// The request whose stream this is.
        id: RequestId,
        /// Why.
        reason: String,
    },
    /// Either direction, from the stream's receiver: it wants no more of
    /// this stream.
    StreamStop {
        /// The request whose stream this is.
        id: RequestId,
    },
    /// Worker to supervisor: a question for the supervisor's query handler
    /// (`Worker::ask`), answered with `QueryReply`.
    Query {
        /// Chosen by the worker, echoed in the reply.
        id: u64,
        /// What is asked.
        name: String,
        /// The encoded question (after the message on the wire).
        #[serde(with = "tail")]
        payload: Bytes,
    },
    /// Supervisor to worker: the answer to a `Query`.
    QueryReply {
        /// The query answered.
        id: u64,
        /// The encoded answer (after the message on the wire), or why there
        /// is none.
        #[serde(with = "tail_result")]
        result: Result<Bytes, RemoteError>,
    },
    /// Worker to supervisor: it closed a socket that came with a request.
    SocketClosed {
        /// The request the socket came with.
        id: RequestId,
    },
    /// Worker to supervisor: a signal from outside the pool (SIGTERM or
    /// SIGINT, from a service manager or a terminal) told it to stop. It
    /// takes nothing new, finishes what it holds, then exits; the
    /// supervisor routes nothing more to it and reports its exit as that
    /// signal's doing, not a crash.
    Stopping {
        /// The signal's number.
        signal: i32,
    },
}

impl Message {
    /// The bulk bytes this message carries after its fields on the wire.
    pub fn tail(&self) -> Option<&Bytes> {
        match self {
            Message::Request { payload, .. } | Message::Event { payload, .. } => Some(payload),
            Message::StreamData { bytes, .. } => Some(bytes),
            Message::Query { payload, .. } => Some(payload),
            Message::QueryReply {
                result: Ok(payload),
                ..
            } => Some(payload),
            Message::Response {
                result: Ok(payload),
                ..
            } => Some(payload),
            _ => None,
        }
    }

    /// Takes the bulk bytes out of the message (leaving them empty), for
    /// a writer that sends them after the fields without a copy or a
    /// reference count.
    pub fn take_tail(&mut self) -> Option<Bytes> {
        self.tail_mut().map(std::mem::take)
    }

    /// Puts the bytes that followed the message on the wire in their
    /// field; `Err` gives them back if the message has no such field.
    pub fn set_tail(&mut self, bytes: Bytes) -> Result<(), Bytes> {
        match self.tail_mut() {
            Some(tail) => *tail = bytes,
            None if bytes.is_empty() => {}
            None => return Err(bytes),
        }
        Ok(())
    }

    fn tail_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            Message::Request { payload, .. }
            | Message::Event { payload, .. }
            | Message::Query { payload, .. }
            | Message::StreamData { bytes: payload, .. }
            | Message::QueryReply {
                result: Ok(payload),
                ..
            }
            | Message::Response {
                result: Ok(payload),
                ..
            } => Some(payload),
            _ => None,
        }
    }

    /// The variant's name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Welcome(_) => "Welcome",
            Message::Ready => "Ready",
            Message::Busy => "Busy",
            Message::Request { .. } => "Request",
            Message::Response { .. } => "Response",
            Message::Cancel { .. } => "Cancel",
            Message::Event { .. } => "Event",
            Message::Ping { .. } => "Ping",
            Message::Pong { .. } => "Pong",
            Message::Status { .. } => "Status",
            Message::SocketClosed { .. } => "SocketClosed",
            Message::Stopping { .. } => "Stopping",
            Message::Query { .. } => "Query",
            Message::QueryReply { .. } => "QueryReply",
            Message::StreamData { .. } => "StreamData",
            Message::StreamEnd { .. } => "StreamEnd",
            Message::StreamCredit { .. } => "StreamCredit",
            Message::StreamAbort { .. } => "StreamAbort",
            Message::StreamStop { .. } => "StreamStop",
            Message::SoftKill => "SoftKill",
            Message::HardKill => "HardKill",
        }
    }
}

/// `t` as microseconds since the Unix epoch, as the wire carries times
/// (0 for times before the epoch).
pub fn timestamp_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
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
