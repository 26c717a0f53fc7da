//! The layout of each message in a frame's body: the kind byte, drover's
//! own fixed layouts for the hot messages and the stream frames, bincode
//! for the rare ones. The [crate docs](crate#wire-format) draw it byte by
//! byte; the constants here are the numbers in that drawing.
//!
//! [`Wire`] is what the codec, the reader and the outbox know of a
//! message: it is implemented by [`ToWorker`] and [`ToSupervisor`] only.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::error::ProtocolError;
use crate::message::{RemoteError, RemoteErrorKind, StreamFrame, ToSupervisor, ToWorker};

/// Kind byte: a rare message of this direction, bincode 2 (serde, standard
/// configuration) of the direction's enum follows.
pub const KIND_BINCODE: u8 = 0x00;
/// Kind byte: the hot message of this direction in its fixed layout
/// (`ToWorker::Request`, `ToSupervisor::Response`).
pub const KIND_HOT: u8 = 0x01;
/// Kind byte: a [`StreamFrame`], the same layout in both directions.
pub const KIND_STREAM: u8 = 0x02;

/// Stream frame sub-kind: `Data`, the bytes are the rest of the body.
pub const STREAM_DATA: u8 = 0x00;
/// Stream frame sub-kind: `End`, nothing follows the id.
pub const STREAM_END: u8 = 0x01;
/// Stream frame sub-kind: `Credit`, a `u32` LE follows the id.
pub const STREAM_CREDIT: u8 = 0x02;
/// Stream frame sub-kind: `Abort`, the reason (UTF-8) is the rest of the
/// body.
pub const STREAM_ABORT: u8 = 0x03;
/// Stream frame sub-kind: `Stop`, nothing follows the id.
pub const STREAM_STOP: u8 = 0x04;

/// Flag bit of a `Request` or a `Response`: a byte stream follows it.
pub const FLAG_STREAM: u8 = 0x01;
/// Flag bit of a `Response`: it is an error (kind byte and message follow).
pub const FLAG_ERROR: u8 = 0x02;
/// Flag bit of a `Request` or an `Ok` `Response`: the payload is in the
/// sender's shared-memory arena, and the tail is its descriptor (offset
/// and length, see [`shm`](crate::shm)).
pub const FLAG_SHARED: u8 = 0x04;

/// Where a `Request`'s flags byte is in its body.
const REQUEST_FLAGS_AT: usize = 1 + 16 + 8 + 1;
/// Where a `Response`'s flags byte is in its body.
const RESPONSE_FLAGS_AT: usize = 1 + 16;

/// Bytes of a `Request`'s fields after the kind byte: id 16, created_at 8,
/// fds 1, flags 1.
pub const REQUEST_FIELDS: usize = 16 + 8 + 1 + 1;
/// Bytes of a `Response`'s fields after the kind byte: id 16, flags 1.
pub const RESPONSE_FIELDS: usize = 16 + 1;

/// A message of one direction of the connection, as the codec, the reader
/// and the outbox see it. Sealed: [`ToWorker`] and [`ToSupervisor`] are
/// the only two.
pub trait Wire: sealed::Sealed + Sized + Send + fmt::Debug + 'static {
    /// Which way these messages go ("supervisor to worker"), for errors.
    const DIRECTION: &'static str;

    /// The variant's name, for error messages.
    fn name(&self) -> &'static str;

    /// Takes the bulk bytes out of the message (leaving them empty), for
    /// a writer that sends them after the fields without a copy or a
    /// reference count.
    fn take_tail(&mut self) -> Option<Bytes>;

    /// Puts the bytes that followed the message's fields on the wire in
    /// their field; `Err` gives them back if the message has no such field.
    fn set_tail(&mut self, bytes: Bytes) -> Result<(), Bytes>;

    /// Writes the kind byte and the message's fields (not its tail) at the
    /// end of `dst`; on error, what it wrote is the caller's to remove.
    fn encode_fields(&self, dst: &mut BytesMut) -> Result<(), ProtocolError>;

    /// The message at the start of `body` (its tail left empty), the
    /// bytes it used, and whether its tail is a shared-memory descriptor
    /// ([`FLAG_SHARED`]); `Err` says what was wrong.
    fn decode_fields(body: &[u8]) -> Result<(Self, usize, bool), String>;

    /// A stream frame as a message of this direction.
    fn from_stream(frame: StreamFrame) -> Self;

    /// Where the flags byte that may carry [`FLAG_SHARED`] is in the
    /// encoded body, if this message's payload may travel in shared memory
    /// (a `Request`, an `Ok` `Response`).
    fn shared_flags_at(&self) -> Option<usize>;

    /// This direction's `Release` of the peer's arena slot at `offset`.
    fn release(offset: u64) -> Self;

    /// The offset released, if this is a `Release`.
    fn as_release(&self) -> Option<u64>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::message::ToWorker {}
    impl Sealed for crate::message::ToSupervisor {}
}

impl Wire for ToWorker {
    const DIRECTION: &'static str = "supervisor to worker";

    fn name(&self) -> &'static str {
        ToWorker::name(self)
    }

    fn take_tail(&mut self) -> Option<Bytes> {
        self.tail_mut().map(std::mem::take)
    }

    fn set_tail(&mut self, bytes: Bytes) -> Result<(), Bytes> {
        set(self.tail_mut(), bytes)
    }

    fn encode_fields(&self, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            ToWorker::Request {
                id,
                created_at,
                fds,
                stream,
                ..
            } => {
                dst.reserve(1 + REQUEST_FIELDS);
                dst.put_u8(KIND_HOT);
                dst.put_slice(id.as_bytes());
                dst.put_u64_le(*created_at);
                dst.put_u8(*fds);
                dst.put_u8(if *stream { FLAG_STREAM } else { 0 });
                Ok(())
            }
            ToWorker::Stream(frame) => {
                put_stream(frame, dst);
                Ok(())
            }
            ToWorker::Welcome(_)
            | ToWorker::Cancel { .. }
            | ToWorker::Event { .. }
            | ToWorker::Ping { .. }
            | ToWorker::SoftKill
            | ToWorker::HardKill
            | ToWorker::QueryReply { .. }
            | ToWorker::Release { .. } => put_bincode(self, dst),
        }
    }

    fn decode_fields(body: &[u8]) -> Result<(Self, usize, bool), String> {
        let (&kind, rest) = body
            .split_first()
            .ok_or("an empty body, without a kind byte")?;
        match kind {
            KIND_HOT => {
                let missing = || short("Request", rest.len(), REQUEST_FIELDS);
                let mut fields = rest;
                let id = take::<16>(&mut fields).ok_or_else(missing)?;
                let created_at = take::<8>(&mut fields).ok_or_else(missing)?;
                let [fds, flags] = take::<2>(&mut fields).ok_or_else(missing)?;
                if flags & !(FLAG_STREAM | FLAG_SHARED) != 0 {
                    return Err(format!(
                        "Request: unknown flag bits {:#04x}",
                        flags & !(FLAG_STREAM | FLAG_SHARED)
                    ));
                }
                let message = ToWorker::Request {
                    id: Uuid::from_bytes(id),
                    created_at: u64::from_le_bytes(created_at),
                    fds,
                    stream: flags & FLAG_STREAM != 0,
                    payload: Bytes::new(),
                };
                Ok((message, 1 + REQUEST_FIELDS, flags & FLAG_SHARED != 0))
            }
            KIND_STREAM => {
                let (frame, used) = stream(rest)?;
                Ok((ToWorker::Stream(frame), 1 + used, false))
            }
            KIND_BINCODE => {
                let (message, used) = bincode_fields::<ToWorker>(rest)?;
                Ok((message, 1 + used, false))
            }
            other => Err(unknown_kind::<ToWorker>(other)),
        }
    }

    fn from_stream(frame: StreamFrame) -> Self {
        ToWorker::Stream(frame)
    }

    fn shared_flags_at(&self) -> Option<usize> {
        matches!(self, ToWorker::Request { .. }).then_some(REQUEST_FLAGS_AT)
    }

    fn release(offset: u64) -> Self {
        ToWorker::Release { offset }
    }

    fn as_release(&self) -> Option<u64> {
        match self {
            ToWorker::Release { offset } => Some(*offset),
            _ => None,
        }
    }
}

impl Wire for ToSupervisor {
    const DIRECTION: &'static str = "worker to supervisor";

    fn name(&self) -> &'static str {
        ToSupervisor::name(self)
    }

    fn take_tail(&mut self) -> Option<Bytes> {
        self.tail_mut().map(std::mem::take)
    }

    fn set_tail(&mut self, bytes: Bytes) -> Result<(), Bytes> {
        set(self.tail_mut(), bytes)
    }

    fn encode_fields(&self, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            ToSupervisor::Response { id, stream, result } => {
                let stream = if *stream { FLAG_STREAM } else { 0 };
                match result {
                    Ok(_) => {
                        dst.reserve(1 + RESPONSE_FIELDS);
                        dst.put_u8(KIND_HOT);
                        dst.put_slice(id.as_bytes());
                        dst.put_u8(stream);
                    }
                    Err(error) => {
                        dst.reserve(1 + RESPONSE_FIELDS + 1 + error.message.len());
                        dst.put_u8(KIND_HOT);
                        dst.put_slice(id.as_bytes());
                        dst.put_u8(stream | FLAG_ERROR);
                        dst.put_u8(error_kind_byte(error.kind));
                        dst.put_slice(error.message.as_bytes());
                    }
                }
                Ok(())
            }
            ToSupervisor::Stream(frame) => {
                put_stream(frame, dst);
                Ok(())
            }
            ToSupervisor::Hello(_)
            | ToSupervisor::Ready
            | ToSupervisor::Busy
            | ToSupervisor::Event { .. }
            | ToSupervisor::Pong { .. }
            | ToSupervisor::Status { .. }
            | ToSupervisor::Query { .. }
            | ToSupervisor::SocketClosed { .. }
            | ToSupervisor::Stopping { .. }
            | ToSupervisor::Release { .. } => put_bincode(self, dst),
        }
    }

    fn decode_fields(body: &[u8]) -> Result<(Self, usize, bool), String> {
        let (&kind, rest) = body
            .split_first()
            .ok_or("an empty body, without a kind byte")?;
        match kind {
            KIND_HOT => {
                let missing = || short("Response", rest.len(), RESPONSE_FIELDS);
                let mut after = rest;
                let id = Uuid::from_bytes(take::<16>(&mut after).ok_or_else(missing)?);
                let [flags] = take::<1>(&mut after).ok_or_else(missing)?;
                let known = FLAG_STREAM | FLAG_ERROR | FLAG_SHARED;
                if flags & !known != 0 {
                    return Err(format!(
                        "Response: unknown flag bits {:#04x}",
                        flags & !known
                    ));
                }
                let stream = flags & FLAG_STREAM != 0;
                let shared = flags & FLAG_SHARED != 0;
                if flags & FLAG_ERROR == 0 {
                    let message = ToSupervisor::Response {
                        id,
                        stream,
                        result: Ok(Bytes::new()),
                    };
                    return Ok((message, 1 + RESPONSE_FIELDS, shared));
                }
                if shared {
                    return Err("Response: an error cannot be in shared memory".to_owned());
                }
                let (&kind, text) = after
                    .split_first()
                    .ok_or("Response: an error without its kind byte")?;
                let kind = error_kind(kind)?;
                let message = std::str::from_utf8(text)
                    .map_err(|e| format!("Response: the error message is not UTF-8: {e}"))?
                    .to_owned();
                let message = ToSupervisor::Response {
                    id,
                    stream,
                    result: Err(RemoteError { kind, message }),
                };
                Ok((message, body.len(), false))
            }
            KIND_STREAM => {
                let (frame, used) = stream(rest)?;
                Ok((ToSupervisor::Stream(frame), 1 + used, false))
            }
            KIND_BINCODE => {
                let (message, used) = bincode_fields::<ToSupervisor>(rest)?;
                Ok((message, 1 + used, false))
            }
            other => Err(unknown_kind::<ToSupervisor>(other)),
        }
    }

    fn from_stream(frame: StreamFrame) -> Self {
        ToSupervisor::Stream(frame)
    }

    fn shared_flags_at(&self) -> Option<usize> {
        matches!(self, ToSupervisor::Response { result: Ok(_), .. }).then_some(RESPONSE_FLAGS_AT)
    }

    fn release(offset: u64) -> Self {
        ToSupervisor::Release { offset }
    }

    fn as_release(&self) -> Option<u64> {
        match self {
            ToSupervisor::Release { offset } => Some(*offset),
            _ => None,
        }
    }
}

/// The next `N` bytes of `src`, taken off it.
fn take<const N: usize>(src: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = src.split_first_chunk::<N>()?;
    *src = rest;
    Some(*head)
}

fn set(tail: Option<&mut Bytes>, bytes: Bytes) -> Result<(), Bytes> {
    match tail {
        Some(tail) => *tail = bytes,
        None if bytes.is_empty() => {}
        None => return Err(bytes),
    }
    Ok(())
}

fn short(what: &str, got: usize, needed: usize) -> String {
    format!("{what}: {got} bytes of fields where {needed} are needed")
}

fn unknown_kind<M: Wire>(kind: u8) -> String {
    format!(
        "unknown kind byte {kind:#04x} ({}: {KIND_BINCODE:#04x} bincode, {KIND_HOT:#04x} fixed layout, {KIND_STREAM:#04x} stream frame)",
        M::DIRECTION
    )
}

/// The kind byte and bincode of a rare message.
fn put_bincode<M: serde::Serialize>(message: &M, dst: &mut BytesMut) -> Result<(), ProtocolError> {
    dst.put_u8(KIND_BINCODE);
    let mut writer = dst.writer();
    bincode::serde::encode_into_std_write(message, &mut writer, bincode::config::standard())
        .map(drop)
        .map_err(|e| ProtocolError::Encode {
            reason: e.to_string(),
        })
}

/// A rare message, bounded: no claimed length is allocated before it is
/// checked against the body.
fn bincode_fields<'de, M: serde::Deserialize<'de>>(rest: &'de [u8]) -> Result<(M, usize), String> {
    crate::bounded::decode_from_slice::<M>(rest).map_err(|e| format!("bincode: {e}"))
}

/// The kind byte and a stream frame's fields (not a `Data` frame's bytes,
/// which are its tail).
fn put_stream(frame: &StreamFrame, dst: &mut BytesMut) {
    let (sub, id) = match frame {
        StreamFrame::Data { id, .. } => (STREAM_DATA, id),
        StreamFrame::End { id } => (STREAM_END, id),
        StreamFrame::Credit { id, .. } => (STREAM_CREDIT, id),
        StreamFrame::Abort { id, .. } => (STREAM_ABORT, id),
        StreamFrame::Stop { id } => (STREAM_STOP, id),
    };
    dst.reserve(2 + 16 + 4);
    dst.put_u8(KIND_STREAM);
    dst.put_u8(sub);
    dst.put_slice(id.as_bytes());
    match frame {
        StreamFrame::Credit { bytes, .. } => dst.put_u32_le(*bytes),
        StreamFrame::Abort { reason, .. } => dst.put_slice(reason.as_bytes()),
        StreamFrame::Data { .. } | StreamFrame::End { .. } | StreamFrame::Stop { .. } => {}
    }
}

/// A stream frame after its kind byte, and the bytes it used.
fn stream(rest: &[u8]) -> Result<(StreamFrame, usize), String> {
    let (&sub, after) = rest.split_first().ok_or("stream frame: no sub-kind byte")?;
    let name = match sub {
        STREAM_DATA => "StreamData",
        STREAM_END => "StreamEnd",
        STREAM_CREDIT => "StreamCredit",
        STREAM_ABORT => "StreamAbort",
        STREAM_STOP => "StreamStop",
        other => return Err(format!("stream frame: unknown sub-kind {other:#04x}")),
    };
    let (id, after) = after
        .split_first_chunk::<16>()
        .ok_or_else(|| short(name, after.len(), 16))?;
    let id = Uuid::from_bytes(*id);
    let used = 1 + 16;
    let frame = match sub {
        STREAM_DATA => StreamFrame::Data {
            id,
            bytes: Bytes::new(),
        },
        STREAM_END => StreamFrame::End { id },
        STREAM_STOP => StreamFrame::Stop { id },
        STREAM_CREDIT => {
            let bytes = after
                .first_chunk::<4>()
                .ok_or_else(|| short(name, 16 + after.len(), 16 + 4))?;
            let frame = StreamFrame::Credit {
                id,
                bytes: u32::from_le_bytes(*bytes),
            };
            return Ok((frame, used + 4));
        }
        _ => {
            let reason = std::str::from_utf8(after)
                .map_err(|e| format!("{name}: the reason is not UTF-8: {e}"))?
                .to_owned();
            return Ok((StreamFrame::Abort { id, reason }, rest.len()));
        }
    };
    Ok((frame, used))
}

fn error_kind_byte(kind: RemoteErrorKind) -> u8 {
    match kind {
        RemoteErrorKind::Failed => 0,
        RemoteErrorKind::Panicked => 1,
        RemoteErrorKind::Dropped => 2,
        RemoteErrorKind::Unsendable => 3,
    }
}

fn error_kind(byte: u8) -> Result<RemoteErrorKind, String> {
    Ok(match byte {
        0 => RemoteErrorKind::Failed,
        1 => RemoteErrorKind::Panicked,
        2 => RemoteErrorKind::Dropped,
        3 => RemoteErrorKind::Unsendable,
        other => return Err(format!("Response: unknown error kind {other:#04x}")),
    })
}
