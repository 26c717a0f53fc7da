//! The worker SDK's error type.

use drover_proto::codec::PayloadLimit;
use drover_proto::{ProtocolError, ValueError};

/// What was missing or wrong about the socket a supervisor leaves in a
/// worker process (named by the `DROVER_FD` variable).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NoSupervisor {
    /// `DROVER_FD` is not set: the process was started some other way.
    #[error("DROVER_FD is not set")]
    Unset,
    /// `DROVER_FD` is set to something that is not a descriptor number.
    #[error("DROVER_FD={value:?} is not a descriptor number")]
    NotANumber {
        /// What it is set to.
        value: String,
    },
    /// `DROVER_FD` names standard input, output or error.
    #[error("DROVER_FD={fd} names a standard stream")]
    StandardStream {
        /// The descriptor it names.
        fd: i32,
    },
    /// The descriptor `DROVER_FD` names is not open.
    #[error("DROVER_FD={fd} is not an open descriptor ({source})")]
    NotOpen {
        /// The descriptor it names.
        fd: i32,
        /// What the system said.
        source: std::io::Error,
    },
    /// The descriptor is open but is not a socket.
    #[error("DROVER_FD={fd} is not a socket")]
    NotASocket {
        /// The descriptor it names.
        fd: i32,
    },
    /// `DROVER_SHARED_FDS` (how many sockets the pool shares with every
    /// worker) is not a count of at most 16.
    #[error("DROVER_SHARED_FDS={value:?} is not a count of shared sockets")]
    SharedCount {
        /// What it is set to.
        value: String,
    },
    /// The shared-memory arenas `DROVER_SHARED_MEMORY` announces (their
    /// size; the descriptors after the shared sockets) cannot be used: not
    /// a size, not open, not sealed memfds of that size, or not mappable
    /// (an address-space limit below twice the size, for one).
    #[error("DROVER_SHARED_MEMORY={value:?}: the shared-memory arenas cannot be used ({source})")]
    SharedMemory {
        /// What it is set to.
        value: String,
        /// What was wrong.
        source: std::io::Error,
    },
    /// The descriptor could not be inspected or claimed (`fstat`, or
    /// setting close-on-exec, failed).
    #[error("DROVER_FD={fd} cannot be claimed ({source})")]
    Unusable {
        /// The descriptor it names.
        fd: i32,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Everything that can go wrong on the worker's side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process was not started by a drover supervisor (no usable
    /// inherited socket).
    #[error("not started by a drover supervisor: {reason}")]
    NotUnderSupervisor {
        /// What was missing or wrong.
        reason: NoSupervisor,
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
