//! The wire protocol between a drover supervisor and its worker processes.
//!
//! Both sides of a drover pool link this crate: the supervisor
//! (`drover-supervisor`) and the worker SDK (`drover-worker`). It knows the
//! messages and how they travel, never the user's types: payloads are opaque
//! bytes here, and the typed APIs on both sides encode them with
//! [`encode_value`] and [`decode_value`].
//!
//! # Layout
//!
//! - [`message`]: the [`Message`] enum, everything either side can say, and
//!   the handshake messages [`Hello`] and [`Welcome`].
//! - [`codec`]: [`MessageCodec`], the length-delimited frame codec (a
//!   tokio-util `Decoder` and `Encoder`), with a maximum frame length that
//!   is checked before anything is allocated.
//! - [`reader`]: [`FrameReader`], the read side of a connection, which
//!   reads large frames into pooled buffers.
//! - [`value`]: encoding of user values into payload bytes.
//! - [`task`]: [`Task`], a request type tied to its answer type, which
//!   both sides' typed APIs use.
//! - [`bounded`]: the decoding both of those go through, which allocates
//!   nothing a frame does not hold, whatever lengths its bytes claim.
//! - [`handshake`]: both halves of the handshake, [`handshake::accept`]
//!   (the supervisor's) and [`handshake::connect`] (the worker's), so the
//!   two sides run the same code; [`HandshakeError`] says why one did not
//!   complete.
//! - [`error`]: [`ProtocolError`], every way a peer can break the protocol.
//!
//! # Wire format
//!
//! Each direction of the connection (one `socketpair(AF_UNIX, SOCK_STREAM)`
//! per worker) is a sequence of frames:
//!
//! ```text
//! +----------------+--------------------------------------------+
//! | length: u32 BE | body: one Message, bincode 2 (serde,       |
//! |  (body bytes)  | standard config: little-endian varints)    |
//! +----------------+--------------------------------------------+
//!   4 bytes          `length` bytes, at most the frame limit
//! ```
//!
//! The frame limit ([`DEFAULT_MAX_FRAME_LENGTH`] unless configured) is
//! checked on the 4-byte header, before the body is buffered; an oversize
//! header is a [`ProtocolError::FrameTooLarge`], never an allocation.
//!
//! # Handshake
//!
//! ```text
//! worker                          supervisor
//!   | -- Hello { magic, version, pid } -> |   within the start timeout
//!   | <- Welcome { worker_id, config } -- |
//!   |    (worker builds its state)        |
//!   | -- Ready ------------------------>  |   now requests may flow
//! ```
//!
//! The supervisor runs [`handshake::accept`], the worker
//! [`handshake::connect`] and then, once set up, sends `Ready` itself.
//! While it sets up, a worker may send `Status` and `Event`: `accept`
//! hands them to the supervisor as they come. Anything else before
//! `Ready` is a [`ProtocolError::UnexpectedMessage`] naming what came.
//!
//! A wrong [`MAGIC`] or a [`PROTOCOL_VERSION`] mismatch ends the connection:
//! the supervisor reports both versions and never routes work to that
//! process. The start timeout is the supervisor's, around `accept`.
#![forbid(unsafe_code)]

// Every part of drover (the facade, the supervisor, the worker SDK, the
// queue) depends on this crate: one clear error here, not many elsewhere.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "drover runs on Linux only: it relies on the parent-death signal (prctl PR_SET_PDEATHSIG), \
     no_new_privs, close_range, SCM_RIGHTS with MSG_CMSG_CLOEXEC and Linux's /proc, \
     which this target does not have"
);

pub mod bounded;
pub mod codec;
pub mod error;
pub mod fdio;
pub mod handshake;
pub mod idhash;
pub mod message;
pub mod reader;
pub mod stream;
pub mod subscription;
pub mod task;
pub mod transport;
pub mod value;

pub use codec::{MessageCodec, DEFAULT_MAX_FRAME_LENGTH, FRAME_HEADER_LEN};
pub use error::ProtocolError;
pub use fdio::{FdReader, MAX_FDS_PER_FRAME};
pub use handshake::HandshakeError;
pub use idhash::{IdHash, IdHasher};
pub use message::{
    timestamp_from_micros, timestamp_micros, Hello, Message, RemoteError, RemoteErrorKind,
    RequestId, Welcome, MAGIC, PROTOCOL_VERSION,
};
pub use reader::FrameReader;
pub use stream::{new_credit, pump, Chunk, ChunkSender, IncomingStream, Streams, STREAM_WINDOW};
pub use subscription::Subscription;
pub use task::Task;
pub use transport::{
    outbox, write_loop, Closed, Outbox, OutboxReceiver, Outgoing, Wake, COPY_LIMIT,
};
pub use value::{decode_value, encode_value, ValueError};

/// The next value of an event subscription; `None` once it is closed. A
/// subscriber that fell behind loses the oldest values and the log says
/// how many, rather than the sender waiting for it.
///
/// # Cancel safety
///
/// Cancel safe: no value is lost by dropping the future.
pub async fn recv_lossy<T: Clone>(rx: &mut tokio::sync::broadcast::Receiver<T>) -> Option<T> {
    loop {
        match rx.recv().await {
            Ok(value) => return Some(value),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "event subscriber fell behind; events lost");
            }
        }
    }
}

/// The name of the event by which a worker posts a job to the pool's job
/// queue (`Worker::post_job`); its payload is `(due: u64 microseconds since
/// the Unix epoch, 0 for now; job: Vec<u8> encoded job value)`.
pub const EVENT_POST_JOB: &str = "drover.post_job";

/// The name of the event by which a worker reports a statistic
/// (`Worker::add_stat`); its payload is `(name: String, value: f64)`.
pub const EVENT_STAT: &str = "drover.stat";

/// Name of the environment variable that tells a worker which inherited
/// descriptor is its end of the supervisor's socket pair.
pub const ENV_FD: &str = "DROVER_FD";

/// Name of the environment variable holding the supervisor's pid, so a worker
/// can tell it was orphaned even if it missed the parent-death signal.
pub const ENV_PARENT_PID: &str = "DROVER_PARENT_PID";

/// The descriptor number the worker's socket is given in the child.
pub const CHILD_FD: i32 = 3;
