//! Errors of the wire protocol.

use std::io;

/// A way in which the bytes on a connection broke the protocol, or the
/// connection itself failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame header announced a body longer than the frame limit. Nothing
    /// was allocated for it.
    #[error("frame of {len} bytes exceeds the frame limit of {max} bytes")]
    FrameTooLarge {
        /// The length the header announced (or the encoder produced).
        len: usize,
        /// The configured maximum frame length.
        max: usize,
    },
    /// A frame arrived whole but its body is not a valid message.
    #[error("frame of {len} bytes does not decode as a message: {reason}")]
    Decode {
        /// Length of the offending frame body.
        len: usize,
        /// What the decoder found wrong.
        reason: String,
    },
    /// A message could not be encoded.
    #[error("message does not encode: {reason}")]
    Encode {
        /// What the encoder found wrong.
        reason: String,
    },
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes of it received)")]
    Truncated {
        /// Bytes of the unfinished frame that had arrived.
        buffered: usize,
    },
    /// The peer answered the handshake with something other than the
    /// expected message.
    #[error("handshake: expected {expected}, got {got}")]
    UnexpectedMessage {
        /// What the handshake expected at this point.
        expected: &'static str,
        /// What arrived instead.
        got: &'static str,
    },
    /// The `Hello` did not carry drover's magic number.
    #[error(
        "handshake: bad magic {found:#x} (expected {expected:#x}); the peer is not a drover worker"
    )]
    BadMagic {
        /// The magic number received.
        found: u32,
        /// drover's magic number.
        expected: u32,
    },
    /// The peer speaks another version of the protocol.
    #[error("handshake: peer speaks protocol version {peer}, this side speaks {ours}")]
    VersionMismatch {
        /// The version the peer announced.
        peer: u16,
        /// The version of this side.
        ours: u16,
    },
    /// A frame declared more descriptors than had arrived with it.
    #[error("request {id} declares {declared} passed descriptors but {arrived} arrived")]
    MissingDescriptors {
        /// The request.
        id: uuid::Uuid,
        /// How many it declared.
        declared: usize,
        /// How many had arrived.
        arrived: usize,
    },
    /// A stream's sender sent more than the window it was granted.
    #[error("stream of request {id}: {held} bytes sent without credit, past the window of {window} bytes")]
    StreamWindow {
        /// The request whose stream it is.
        id: uuid::Uuid,
        /// Bytes the sender had outstanding with this chunk.
        held: usize,
        /// The window ([`STREAM_WINDOW`](crate::STREAM_WINDOW)).
        window: usize,
    },
    /// A stream's receiver granted credit for bytes it was never sent.
    #[error("stream of request {id}: credit granted up to {granted} bytes, past the window of {window} bytes")]
    StreamCredit {
        /// The request whose stream it is.
        id: uuid::Uuid,
        /// The credit the stream would have had.
        granted: usize,
        /// The window ([`STREAM_WINDOW`](crate::STREAM_WINDOW)).
        window: usize,
    },
    /// The peer stopped reading: more bytes waited to be written to it
    /// than the connection's limit allows. Nothing queued was kept.
    #[error(
        "the peer stopped reading: {queued} bytes queued for it, over the limit of {limit} bytes"
    )]
    Stalled {
        /// Bytes queued when the limit was passed.
        queued: usize,
        /// The limit.
        limit: usize,
    },
    /// The peer released a slot of this side's shared-memory arena that
    /// holds no payload (never placed, or released already), or sent a
    /// `Release` on a connection without arenas.
    #[error("Release of shared-memory offset {offset}: {reason}")]
    BadRelease {
        /// The offset released.
        offset: u64,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// Reading or writing the socket failed.
    #[error("socket I/O failed: {0}")]
    Io(#[from] io::Error),
}
