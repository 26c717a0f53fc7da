//! The supervisor's error type.

use std::path::PathBuf;
use std::time::Duration;

use drover_proto::codec::PayloadLimit;
use drover_proto::{ProtocolError, RemoteErrorKind, RequestId, ValueError};

use crate::event::WorkerExit;

/// Everything that can go wrong on the supervisor's side. Every variant
/// names what failed and to whom: the binary's path, the worker's pid, the
/// request's id, the limit that was hit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The worker binary cannot be used: missing, not a file, not
    /// executable.
    #[error("worker binary {path}: {reason}")]
    WorkerBinary {
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A user or group given by name to the builder does not exist (or
    /// could not be looked up).
    #[error("{kind} {name:?}: {reason}")]
    UnknownAccount {
        /// "user" or "group".
        kind: &'static str,
        /// The name given.
        name: String,
        /// Why it could not be used.
        reason: String,
    },
    /// The operating system refused to start the worker process.
    #[error("cannot start worker {path}: {source}")]
    Spawn {
        /// The configured path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A worker process started but did not complete the handshake.
    #[error("worker {path} (pid {pid}) failed its handshake: {reason}")]
    Handshake {
        /// The configured path.
        path: PathBuf,
        /// The worker's pid.
        pid: u32,
        /// What went wrong.
        reason: HandshakeFailure,
    },
    /// A signal handler could not be installed
    /// (`Supervisor::handle_signals`).
    #[error("cannot handle {signal}: {source}")]
    Signals {
        /// The signal's name.
        signal: &'static str,
        /// The operating system's (or tokio's) error.
        source: std::io::Error,
    },
    /// The pool is shutting down (soft kill, hard kill, or the last handle
    /// dropped): the request was refused and nothing was sent.
    #[error("the pool is shutting down; request refused")]
    ShuttingDown,
    /// The pool is drained and set to refuse requests until `resume()`.
    #[error("the pool is drained; request refused until it resumes")]
    Drained,
    /// A pool operation (resize, reload, drain, resume) cannot run now.
    #[error("cannot {operation}: {reason}")]
    Operation {
        /// The operation asked for.
        operation: &'static str,
        /// Why it cannot run.
        reason: String,
    },
    /// The pool stopped for good.
    #[error("the pool has failed: {reason}")]
    PoolFailed {
        /// Why it stopped.
        reason: String,
    },
    /// The pending queue is full; the request was refused and nothing was
    /// sent.
    #[error("queue full: {limit} requests are already waiting (max_queue = {limit})")]
    QueueFull {
        /// The queue's bound, `max_queue`.
        limit: usize,
    },
    /// The encoded payload does not fit in a frame; nothing was sent. Its
    /// text names the payload limit and the setting it comes from, as the
    /// worker's does: "payload of 70000 bytes exceeds the payload limit of
    /// 65472 bytes (max_frame_length 65536 less 64 bytes of message)".
    #[error("payload of {size} bytes exceeds {}; nothing was sent", PayloadLimit(*.limit))]
    PayloadTooLarge {
        /// The encoded payload's size.
        size: usize,
        /// The payload limit: the largest payload a frame carries,
        /// `max_frame_length` less the message around it
        /// ([`Supervisor::max_payload`](crate::Supervisor::max_payload)).
        limit: usize,
    },
    /// A value given to the supervisor (request payload, event payload,
    /// worker config) would not encode.
    #[error(transparent)]
    Encode(ValueError),
    /// An answer does not decode as the type asked for.
    #[error("answer to request {request_id} from worker pid {pid}: {source}")]
    Decode {
        /// The request answered.
        request_id: RequestId,
        /// The worker that answered.
        pid: u32,
        /// The decoder's error, naming the type asked for.
        source: ValueError,
    },
    /// The worker's handler failed the request (returned an error,
    /// panicked, called `fail`, or dropped the request unanswered).
    #[error("request {request_id} failed in worker pid {pid}: {message}")]
    Remote {
        /// The request that failed.
        request_id: RequestId,
        /// The worker that ran it.
        pid: u32,
        /// How it failed.
        kind: RemoteErrorKind,
        /// The worker's message.
        message: String,
    },
    /// The worker holding the request died before answering.
    #[error("request {request_id} lost: {exit}")]
    WorkerLost {
        /// The request lost.
        request_id: RequestId,
        /// How and why the worker ended.
        exit: Box<WorkerExit>,
    },
    /// A socket given to `RequestBuilder::socket` cannot be passed.
    #[error("cannot pass the socket: {reason}")]
    Socket {
        /// Why.
        reason: String,
    },
    /// The request did not finish within its timeout. The worker was sent
    /// `Cancel`; if it does not finish within the kill-after grace it is
    /// killed and replaced.
    #[error("request {request_id} timed out after {after:?}")]
    Timeout {
        /// The request.
        request_id: RequestId,
        /// Its timeout.
        after: Duration,
    },
    /// No group of this name runs.
    #[error("no group named {name:?}")]
    NoSuchGroup {
        /// The name asked for.
        name: String,
    },
    /// No worker with this id is running.
    #[error("no worker with id {worker_id} is running")]
    NoSuchWorker {
        /// The id asked for.
        worker_id: u64,
    },
    /// The supervisor was started outside a tokio runtime.
    #[error("drover needs a tokio runtime: start the supervisor from within one")]
    NoRuntime,
}

/// Why a worker failed its handshake.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    /// It sent nothing (or not all of the handshake) within the start
    /// timeout.
    #[error("no handshake within the start timeout of {timeout:?}: is it a drover worker?")]
    Timeout {
        /// The start timeout.
        timeout: Duration,
    },
    /// It exited during the handshake.
    #[error("exited during the handshake ({status}): is it a drover worker?")]
    Exited {
        /// How it exited.
        status: crate::event::Termination,
    },
    /// It broke the protocol during the handshake.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// Decodes a payload from worker `pid` as a `T`; errors name the type, the
/// worker and the request (nil for events and queries).
pub(crate) fn decode_from<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    request_id: RequestId,
    pid: u32,
) -> Result<T, Error> {
    drover_proto::decode_value(payload).map_err(|source| Error::Decode {
        request_id,
        pid,
        source,
    })
}
