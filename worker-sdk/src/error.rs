//! The worker SDK's error type.

use drover_proto::codec::PayloadLimit;
use drover_proto::{ProtocolError, ValueError};

/// Everything that can go wrong on the worker's side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process was not started by a drover supervisor (no usable
    /// inherited socket).
    #[error("not started by a drover supervisor: {reason}")]
    NotUnderSupervisor {
        /// What was missing or wrong.
        reason: String,
    },
    /// The supervisor that started this worker is gone.
    #[error("orphaned: the supervisor (pid {expected}) is gone, parent is now pid {actual}")]
    Orphaned {
        /// The supervisor's pid, as it announced it.
        expected: u32,
        /// The current parent pid.
        actual: u32,
    },
    /// The handshake with the supervisor failed.
    #[error("handshake with the supervisor failed: {0}")]
    Handshake(#[source] ProtocolError),
    /// The supervisor broke the protocol, or the socket failed.
    #[error("connection to the supervisor failed: {0}")]
    Protocol(#[from] ProtocolError),
    /// A value would not encode, or a payload would not decode as the type
    /// asked for.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// An answer, event or query is larger than the payload limit; it was
    /// not sent. Its text names the payload limit and the setting it comes
    /// from, as the supervisor's does: "answer to request ... of 70005
    /// bytes exceeds the payload limit of 65472 bytes (max_frame_length
    /// 65536 less 64 bytes of message)".
    #[error("{what} of {len} bytes exceeds {}", PayloadLimit(*.max))]
    TooLarge {
        /// What was too large ("answer to request ...", "event ...").
        what: String,
        /// Its encoded length.
        len: usize,
        /// The payload limit: the largest payload a frame carries, the
        /// frame limit ([`Worker::max_frame_length`]) less the message
        /// around it.
        ///
        /// [`Worker::max_frame_length`]: crate::Worker::max_frame_length
        max: usize,
    },
    /// A socket passed with a request is not of the kind asked for, or
    /// cannot be used.
    #[error("passed socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The supervisor answered a query ([`Worker::ask`]) with an error.
    ///
    /// [`Worker::ask`]: crate::Worker::ask
    #[error("query {name:?} failed in the supervisor: {message}")]
    Query {
        /// The query's name.
        name: String,
        /// The supervisor's error.
        message: String,
    },
    /// The connection to the supervisor is closed.
    #[error("the connection to the supervisor is closed")]
    Disconnected,
    /// The worker's setup (see `serve_with`) failed.
    #[error("worker setup failed: {reason}")]
    Setup {
        /// The setup's error.
        reason: String,
    },
    /// `serve` was called twice on the same worker.
    #[error("this worker is already serving")]
    AlreadyServing,
}
