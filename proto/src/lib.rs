//! The wire protocol between a drover supervisor and its worker processes.
//!
//! Both sides of a drover pool link this crate: the supervisor
//! (`drover-supervisor`) and the worker SDK (`drover-worker`). It knows the
//! messages and how they travel, never the user's types: payloads are opaque
//! bytes here, and the typed APIs on both sides encode them with
//! [`encode_value`] and [`decode_value`].
//!
//! # Stable surface
//!
//! The items shown in these docs are the crate's public API: [`Task`],
//! [`RequestId`], [`encode_value`], [`decode_value`] and [`ValueError`],
//! [`RemoteErrorKind`], [`PROTOCOL_VERSION`], [`STREAM_WINDOW`],
//! [`MAX_FDS_PER_FRAME`], the errors [`ProtocolError`] and
//! [`HandshakeError`], [`IncomingStream`] and [`Subscription`] (which the
//! other crates hand out), and the messages with their wire format
//! ([`ToWorker`], [`ToSupervisor`], [`StreamFrame`], [`Hello`],
//! [`Welcome`], [`RemoteError`]), documented here. Everything else (the
//! codec, the reader, the outbox and its writer, the stream registry, the
//! handshake, event names and environment variables) is hidden from these
//! docs: it exists for `drover-supervisor` and `drover-worker` only, and
//! may change in any release.
//!
//! # Layout
//!
//! - [`message`]: the messages, typed by direction: [`ToWorker`] (what a
//!   supervisor says) and [`ToSupervisor`] (what a worker says), the
//!   [`StreamFrame`]s both carry, and the handshake's [`Hello`] and
//!   [`Welcome`].
//! - `frame`: the frame header, the frame limit, and where a reader is in
//!   a stream of frames: the one module that reads a header, which every
//!   reader goes through.
//! - `wire`: the layout of each message in a frame's body (drawn below),
//!   and the sealed `Wire` trait the two direction enums implement.
//! - `codec`: `MessageCodec<M>`, a tokio-util decoder of one direction's
//!   messages (and encoder of either's).
//! - `reader`: `FrameReader<M>`, the read side of a connection, which
//!   reads large frames into pooled buffers; `fdio`: the socket I/O under
//!   it that carries descriptors (with one `unsafe` function: `recvmsg`
//!   straight into the reader's uninitialised buffer).
//! - `transport`: `Outbox<M>`, the sending side, which encodes frames as
//!   they are queued and hands them to one writer task (`write_loop`) for
//!   vectored writes, or has a sender write them itself when nothing else
//!   is being written and the peer waits for them alone (`Wake::direct`,
//!   `Outbox::hold_wakes`; both writers in `transport::writer`); its
//!   `StreamOutbox` sends stream frames for either side.
//! - `stream`: byte streams with credit-based flow control, on both
//!   sides: the registry (`Streams`), the pump, and [`IncomingStream`].
//! - `handshake`: both halves of the handshake, `accept` (the
//!   supervisor's) and `connect` (the worker's); [`HandshakeError`] says
//!   why one did not complete.
//! - `connection`: one end of a connection, the same type on both sides
//!   (`Opening<E>` during the handshake, `Connection<E>` after: reader,
//!   outbox, stream registry, and the writer task spawned on the caller's
//!   tracker), its side named by `SupervisorEnd` or `WorkerEnd`. Both
//!   crates open their connections through it and nothing else.
//! - `shm`: the two shared-memory arenas of a worker process, which
//!   carry payloads of 20 KiB or more (the one module built on `unsafe`:
//!   mapping them, and copying in and out through raw pointers).
//! - `woken`: `WhenWoken`, a future polled only after its own waker
//!   fired, for the rare branches of a connection's loop.
//! - [`value`]: encoding of user values into payload bytes; `bounded`:
//!   the decoding it and the rare messages go through, which allocates
//!   nothing a frame does not hold, whatever lengths its bytes claim.
//! - [`task`]: [`Task`], a request type tied to its answer type, which
//!   both sides' typed APIs use.
//! - [`error`]: [`ProtocolError`], every way a peer can break the protocol.
//!
//! # Wire format
//!
//! Each direction of the connection (one `socketpair(AF_UNIX, SOCK_STREAM)`
//! per worker) is a sequence of frames:
//!
//! ```text
//! +----------------+---------------------------------------------+
//! | length: u32 BE | body: `length` bytes, the first its kind    |
//! +----------------+---------------------------------------------+
//!   4 bytes          at most the frame limit
//! ```
//!
//! The frame limit (64 MiB unless configured; the worker learns it in
//! `Welcome`) is checked on the 4-byte header, before the body is
//! buffered; an oversize header is a [`ProtocolError::FrameTooLarge`],
//! never an allocation. The first byte of the body is its kind, and what
//! follows depends on it and on the direction:
//!
//! ```text
//! kind  supervisor to worker         worker to supervisor
//! 0x00  a rare ToWorker, bincode     a rare ToSupervisor, bincode
//! 0x01  ToWorker::Request            ToSupervisor::Response
//! 0x02  ToWorker::Stream             ToSupervisor::Stream   (same layout)
//! ```
//!
//! Offsets below are from the start of the body; "tail" is the rest of
//! the body, whatever its length (possibly none), which is how every
//! payload travels: after the fields, never copied to decode a large one.
//! Integers in the fixed layouts have a fixed width, little-endian; an id
//! ([`RequestId`], a uuid) is its 16 bytes in RFC 4122 order.
//!
//! ## `ToWorker::Request` (kind 0x01)
//!
//! ```text
//!  0      1                  17                  25    26      27
//! +------+------------------+-------------------+-----+-------+------------+
//! | 0x01 | id               | created_at        | fds | flags | payload    |
//! |      | 16 bytes         | u64 LE, micro-    | u8  | u8    | (tail)     |
//! |      |                  | seconds since the |     |       |            |
//! |      |                  | Unix epoch        |     |       |            |
//! +------+------------------+-------------------+-----+-------+------------+
//!
//! fds:   how many descriptors came with the frame (SCM_RIGHTS, with its
//!        first byte); at most MAX_FDS_PER_FRAME
//! flags: bit 0  a byte stream follows (stream frames with this id)
//!        bit 1  must be 0
//!        bit 2  the payload is in shared memory: the tail is its
//!               descriptor (see below)
//!        bits 3-7  must be 0
//! ```
//!
//! ## `ToSupervisor::Response` (kind 0x01)
//!
//! ```text
//!  0      1                  17      18
//! +------+------------------+-------+----------------------------------+
//! | 0x01 | id               | flags | Ok:  payload (tail)              |
//! |      | 16 bytes         | u8    | Err: kind u8 | message, UTF-8    |
//! |      |                  |       |              | (tail)            |
//! +------+------------------+-------+----------------------------------+
//!
//! flags: bit 0  a byte stream follows the answer
//!        bit 1  the answer is an error (Err)
//!        bit 2  the payload is in shared memory (Ok only): the tail is
//!               its descriptor (see below)
//!        bits 3-7  must be 0
//! kind:  0 Failed, 1 Panicked, 2 Dropped, 3 Unsendable (RemoteErrorKind)
//! ```
//!
//! ## Payloads in shared memory
//!
//! A worker process started with arenas (`DROVER_SHARED_MEMORY`, see the
//! `shm` module) may carry a `Request`'s or an `Ok` `Response`'s payload
//! in its sender's arena (the supervisor's requests arena, the worker's
//! answers arena): bit 2 of the flags is set and the tail is 16 bytes,
//!
//! ```text
//! +-------------------+-------------------+
//! | offset: u64 LE    | length: u64 LE    |
//! +-------------------+-------------------+
//! ```
//!
//! inside the arena and at most the payload limit, or the frame is a
//! [`ProtocolError::Decode`]. The receiver answers with a `Release` of
//! that offset (a rare message, below) once it no longer reads there: the
//! supervisor as soon as it has copied an answer out, the worker when it
//! drops the last of a request's payload. A `Release` of an offset where
//! nothing was placed is a [`ProtocolError::Decode`] too.
//!
//! A worker's payload may instead name bytes of the requests arena, where
//! a request's payload it still holds lies (an answer that is that
//! payload, or a slice of it): bit 63 of the offset is set
//! ([`shm::OWN_ARENA`]), and the range must lie inside one such payload,
//! or the frame is a [`ProtocolError::Decode`]. The supervisor copies it
//! out of there, and releases nothing: the worker's own `Release` of the
//! request follows as usual. (New in protocol version 4.)
//!
//! ## Stream frames, both directions (kind 0x02)
//!
//! ```text
//!  0      1      2                  18
//! +------+------+------------------+------------------------------+
//! | 0x02 | sub  | id               | by sub-kind                  |
//! |      | u8   | 16 bytes         |                              |
//! +------+------+------------------+------------------------------+
//!
//! sub 0x00  Data    the bytes (tail)
//! sub 0x01  End     nothing
//! sub 0x02  Credit  bytes granted: u32 LE (4 bytes)
//! sub 0x03  Abort   the reason, UTF-8 (tail)
//! sub 0x04  Stop    nothing
//! ```
//!
//! The rules of flow control (who sends which, the window) are in the
//! `stream` module's docs: at most [`STREAM_WINDOW`] bytes sent without
//! credit.
//!
//! ## Rare messages (kind 0x00)
//!
//! After the kind byte comes the message in bincode 2 (serde, standard
//! configuration): the variant's index as a varint (one byte for every
//! index here), then its fields in order, integers as little-endian
//! varints (`i32` zigzagged), strings and byte strings as a varint length
//! and the bytes, an id as a byte string of 16 bytes, a `Result` as the
//! index 0 (`Ok`) or 1 (`Err`) then its value, a [`RemoteError`] as its
//! kind's index (the order above) then its message. A payload is not among
//! the fields: it is the tail.
//!
//! ```text
//! index  ToWorker                           ToSupervisor
//! 0      Welcome  worker_id u64, index u32, Hello     magic u32,
//!                 max_frame_length u32,               protocol_version u16,
//!                 config bytes                        pid u32
//! 1      Cancel   id                        Ready
//! 2      Event    name string; tail         Busy
//! 3      Ping     seq u64                   Event     name string; tail
//! 4      SoftKill                           Pong      seq u64
//! 5      HardKill                           Status    message string
//! 6      QueryReply id u64, Result:         Query     id u64, name string;
//!                 Ok: tail | Err: error               tail
//! 7      Release  offset u64                SocketClosed id
//! 8      -                                  Stopping  signal i32
//! 9      -                                  Release   offset u64
//! ```
//!
//! A variant is never renumbered within a [`PROTOCOL_VERSION`].
//!
//! Every unknown kind, sub-kind, flag bit or variant index, every field
//! cut short, every byte left over after a message without a tail and
//! every string that is not UTF-8 is a [`ProtocolError::Decode`] naming
//! what was wrong; the connection ends with it. The fixed layouts have
//! exactly one encoding per message.
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
//! The supervisor runs `handshake::accept`, the worker `handshake::connect`
//! (through `Opening::accept` and `Opening::connect`) and then, once set up, sends `Ready` itself. While it sets up, a worker
//! may send `Status` and `Event`: `accept` hands them to the supervisor as
//! they come. Anything else before `Ready` is a
//! [`ProtocolError::UnexpectedMessage`] naming what came.
//!
//! A wrong [`MAGIC`] or a [`PROTOCOL_VERSION`] mismatch ends the connection:
//! the supervisor reports both versions and never routes work to that
//! process. The start timeout is the supervisor's, around `accept`.
// `unsafe` is denied everywhere but in `shm`, which maps and copies the
// shared memory, and one function of `fdio`, which receives into memory
// not yet initialised.
#![deny(unsafe_code)]

// Every part of drover (the facade, the supervisor, the worker SDK, the
// queue) depends on this crate: one clear error here, not many elsewhere.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "drover runs on Linux only: it relies on the parent-death signal (prctl PR_SET_PDEATHSIG), \
     no_new_privs, close_range, SCM_RIGHTS with MSG_CMSG_CLOEXEC and Linux's /proc, \
     which this target does not have"
);

#[doc(hidden)]
pub mod bounded;
#[doc(hidden)]
pub mod codec;
#[doc(hidden)]
pub mod connection;
pub mod error;
#[doc(hidden)]
pub mod fdio;
#[doc(hidden)]
pub mod frame;
mod handshake;
#[doc(hidden)]
pub mod idhash;
pub mod message;
#[doc(hidden)]
pub mod reader;
#[doc(hidden)]
pub mod shm;
#[doc(hidden)]
pub mod stream;
mod subscription;
pub mod task;
#[doc(hidden)]
pub mod transport;
pub mod value;
#[doc(hidden)]
pub mod wire;
#[doc(hidden)]
pub mod woken;

pub use error::ProtocolError;
pub use handshake::HandshakeError;
pub use message::{
    Hello, RemoteError, RemoteErrorKind, RequestId, StreamFrame, ToSupervisor, ToWorker, Welcome,
    MAGIC, PROTOCOL_VERSION,
};
pub use stream::{IncomingStream, STREAM_WINDOW};
pub use subscription::Subscription;
pub use task::Task;
pub use value::{decode_value, encode_value, ValueError};

pub use fdio::MAX_FDS_PER_FRAME;

// The plumbing of drover-supervisor and drover-worker, not for users.
#[doc(hidden)]
pub use codec::{MessageCodec, DEFAULT_MAX_FRAME_LENGTH};
#[doc(hidden)]
pub use connection::{Connection, End, Opening, SupervisorEnd, WorkerEnd, WriterEnd};
#[doc(hidden)]
pub use fdio::FdReader;
#[doc(hidden)]
pub use frame::FRAME_HEADER_LEN;
#[doc(hidden)]
pub use idhash::{IdHash, IdHasher};
#[doc(hidden)]
pub use message::{now_micros, timestamp_from_micros, timestamp_micros};
#[doc(hidden)]
pub use reader::FrameReader;
#[doc(hidden)]
pub use stream::{new_credit, pump, Chunk, ChunkSender, Streams};
#[doc(hidden)]
pub use transport::{
    outbox, write_loop, Closed, HeldWakes, Outbox, OutboxReceiver, Outgoing, StreamOutbox, Wake,
    COPY_LIMIT,
};
#[doc(hidden)]
pub use wire::Wire;
#[doc(hidden)]
pub use woken::WhenWoken;

#[doc(hidden)]
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

#[doc(hidden)]
/// The name of the event by which a worker posts a job to the pool's job
/// queue (`Worker::post_job`); its payload is `(due: u64 microseconds since
/// the Unix epoch, 0 for now; job: Vec<u8> encoded job value)`.
pub const EVENT_POST_JOB: &str = "drover.post_job";

#[doc(hidden)]
/// The name of the event by which a worker reports a statistic
/// (`Worker::add_stat`); its payload is `(name: String, value: f64)`.
pub const EVENT_STAT: &str = "drover.stat";

#[doc(hidden)]
/// Name of the environment variable that tells a worker which inherited
/// descriptor is its end of the supervisor's socket pair.
pub const ENV_FD: &str = "DROVER_FD";

#[doc(hidden)]
/// Name of the environment variable that tells a worker how many sockets
/// the pool shares with every worker (`Builder::share_socket`): they are
/// the inherited descriptors right after [`CHILD_FD`], in order.
pub const ENV_SHARED_FDS: &str = "DROVER_SHARED_FDS";

#[doc(hidden)]
/// Name of the environment variable that tells a worker it has two
/// shared-memory arenas of this many bytes each (`Builder::shared_memory`):
/// the requests arena and the answers arena, the inherited descriptors
/// right after the shared sockets, in that order.
pub const ENV_SHARED_MEMORY: &str = "DROVER_SHARED_MEMORY";

#[doc(hidden)]
/// The most sockets a pool shares with every worker.
pub const MAX_SHARED_SOCKETS: usize = 16;

#[doc(hidden)]
/// Name of the environment variable holding the supervisor's pid, so a worker
/// can tell it was orphaned even if it missed the parent-death signal.
pub const ENV_PARENT_PID: &str = "DROVER_PARENT_PID";

#[doc(hidden)]
/// The descriptor number the worker's socket is given in the child.
pub const CHILD_FD: i32 = 3;
