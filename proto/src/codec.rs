//! The frame codec: frames (see [`frame`](crate::frame)) whose bodies
//! are messages of one direction (see [`wire`](crate::wire)).
//!
//! [`MessageCodec`] is a tokio-util [`Decoder`] of one direction's
//! messages and an [`Encoder`] of either's. The length limit is checked on
//! the header alone, so a peer that announces a 4 GiB frame gets an error,
//! not an allocation.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtocolError;
use crate::frame::{self, Peek, FRAME_HEADER_LEN};
use crate::shm::Inbound;
use crate::wire::Wire;

pub use crate::frame::{DEFAULT_MAX_FRAME_LENGTH, SMALL_FRAME};

/// Room kept for the message fields around a payload (kind, id, flags,
/// lengths), so a payload can be checked against the frame limit before it
/// is framed.
pub const MESSAGE_OVERHEAD: usize = 64;

/// The largest payload a frame of `max_frame_length` bytes carries with its
/// message around it: the payload limit both sides check before sending.
pub const fn max_payload(max_frame_length: usize) -> usize {
    max_frame_length.saturating_sub(MESSAGE_OVERHEAD)
}

/// A payload limit as both sides name it in their errors: the limit and
/// the setting it comes from.
///
/// It holds the payload limit, [`max_payload`] of the frame limit; the
/// frame limit it shows is that plus [`MESSAGE_OVERHEAD`] (a supervisor
/// never sets a frame limit below 1024 bytes).
///
/// ```
/// use drover_proto::codec::{max_payload, PayloadLimit};
///
/// assert_eq!(
///     PayloadLimit(max_payload(65536)).to_string(),
///     "the payload limit of 65472 bytes (max_frame_length 65536 less 64 bytes of message)"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadLimit(pub usize);

impl std::fmt::Display for PayloadLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the payload limit of {} bytes (max_frame_length {} less {MESSAGE_OVERHEAD} bytes of message)",
            self.0,
            self.0 + MESSAGE_OVERHEAD
        )
    }
}

/// Decodes messages of type `M` (one direction of the connection) from
/// length-delimited frames, and encodes messages of either direction.
///
/// Decoding an oversize header fails with [`ProtocolError::FrameTooLarge`];
/// a body that is not an `M` fails with [`ProtocolError::Decode`]; end of
/// input in the middle of a frame fails with [`ProtocolError::Truncated`].
/// After any error the connection is unusable: the caller must drop it.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use drover_proto::{MessageCodec, ToWorker};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = MessageCodec::<ToWorker>::new(1024);
/// let mut buf = BytesMut::new();
/// codec.encode(ToWorker::Ping { seq: 7 }, &mut buf).unwrap();
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(ToWorker::Ping { seq: 7 }));
/// ```
pub struct MessageCodec<M> {
    max_frame_length: usize,
    /// The peer's shared-memory arena, where payloads flagged
    /// `FLAG_SHARED` are; `None` refuses them.
    inbound: Option<Arc<Inbound>>,
    message: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for MessageCodec<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageCodec")
            .field("message", &std::any::type_name::<M>())
            .field("max_frame_length", &self.max_frame_length)
            .field("inbound", &self.inbound)
            .finish()
    }
}

impl<M> MessageCodec<M> {
    /// A codec that refuses frames with a body over `max_frame_length` bytes.
    pub fn new(max_frame_length: usize) -> MessageCodec<M> {
        MessageCodec {
            max_frame_length,
            inbound: None,
            message: PhantomData,
        }
    }

    /// Takes payloads flagged as shared from `inbound` from now on.
    pub(crate) fn set_inbound(&mut self, inbound: Arc<Inbound>) {
        self.inbound = Some(inbound);
    }

    /// The frame limit in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// Changes the frame limit (the worker learns it in `Welcome`).
    pub fn set_max_frame_length(&mut self, max: usize) {
        self.max_frame_length = max;
    }

    /// Encodes `message` as one frame at the end of `dst`.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::FrameTooLarge`] if the body is over the limit,
    /// [`ProtocolError::Encode`] if it does not encode; `dst` is left as it
    /// was.
    pub fn encode_message<T: Wire>(
        &self,
        message: T,
        dst: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        encode_message(message, self.max_frame_length, dst)
    }
}

impl<M> Default for MessageCodec<M> {
    fn default() -> Self {
        MessageCodec::new(DEFAULT_MAX_FRAME_LENGTH)
    }
}

impl<M: Wire> Decoder for MessageCodec<M> {
    type Item = M;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<M>, ProtocolError> {
        let len = match frame::peek(src, self.max_frame_length)? {
            Peek::Header => return Ok(None),
            Peek::Partial { len } => {
                // Make room for the rest of a frame at once, unless it is
                // one the reader reads into a pooled buffer of its own.
                if !frame::pooled(len) {
                    src.reserve(FRAME_HEADER_LEN + len - src.len());
                }
                return Ok(None);
            }
            Peek::Whole { len } => len,
        };
        let whole = FRAME_HEADER_LEN + len;
        if frame::in_place(len) {
            // A small frame is decoded in place and its payload copied
            // out: an allocation of its own, freed wherever it is dropped,
            // costs less than sharing the read buffer with it (a reference
            // count bumped from other threads, and a buffer that can be
            // reused only once every payload read into it is gone).
            let body = &src[FRAME_HEADER_LEN..whole];
            let (message, used, shared) = decode_head::<M>(body)?;
            let tail = if shared {
                self.shared_tail(&body[used..], len)?
            } else {
                Bytes::copy_from_slice(&body[used..])
            };
            src.advance(whole);
            return with_tail(message, tail, len).map(Some);
        }
        src.advance(FRAME_HEADER_LEN);
        self.decode_body(src.split_to(len).freeze()).map(Some)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<M>, ProtocolError> {
        match self.decode(buf)? {
            Some(message) => Ok(Some(message)),
            None if buf.is_empty() => Ok(None),
            None => Err(ProtocolError::Truncated {
                buffered: buf.len(),
            }),
        }
    }
}

impl<M: Wire> MessageCodec<M> {
    /// Decodes one frame's body (its header already read): the message,
    /// and the payload after its fields as a slice of `body`, with no copy.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Decode`] if the body is not a message, or has bytes
    /// left over after one that carries no payload.
    pub fn decode_body(&self, body: Bytes) -> Result<M, ProtocolError> {
        let (message, used, shared) = decode_head::<M>(&body)?;
        let tail = if shared {
            self.shared_tail(&body[used..], body.len())?
        } else {
            body.slice(used..)
        };
        with_tail(message, tail, body.len())
    }

    /// The payload a shared-memory descriptor (the tail of a frame of
    /// `len` bytes) names.
    fn shared_tail(&self, descriptor: &[u8], len: usize) -> Result<Bytes, ProtocolError> {
        let decode = |reason| ProtocolError::Decode { len, reason };
        let Some(inbound) = &self.inbound else {
            return Err(decode(format!(
                "a {} payload in shared memory, but this connection has no shared-memory arena",
                M::DIRECTION
            )));
        };
        inbound
            .take(descriptor, max_payload(self.max_frame_length))
            .map_err(decode)
    }
}

/// The message at the start of a frame's body, the bytes it used, and
/// whether its tail is a shared-memory descriptor.
fn decode_head<M: Wire>(body: &[u8]) -> Result<(M, usize, bool), ProtocolError> {
    M::decode_fields(body).map_err(|reason| ProtocolError::Decode {
        len: body.len(),
        reason,
    })
}

/// Encodes `message` as one frame at the end of `dst`.
///
/// # Errors
///
/// As [`MessageCodec::encode_message`].
pub fn encode_message<T: Wire>(
    message: T,
    max_frame_length: usize,
    dst: &mut BytesMut,
) -> Result<(), ProtocolError> {
    if let Some(tail) = encode_head(message, max_frame_length, dst)? {
        dst.extend_from_slice(&tail);
    }
    Ok(())
}

/// Encodes the length header and the message's fields at the end of
/// `dst`, and returns its payload, taken out of the message, which must be
/// written right after (by copy or, for a large one, as a buffer of its
/// own in a vectored write).
///
/// # Errors
///
/// As [`MessageCodec::encode_message`].
pub fn encode_head<T: Wire>(
    mut message: T,
    max_frame_length: usize,
    dst: &mut BytesMut,
) -> Result<Option<Bytes>, ProtocolError> {
    let tail = message.take_tail().filter(|t| !t.is_empty());
    let start = frame::start(dst);
    if let Err(e) = message.encode_fields(dst) {
        dst.truncate(start);
        return Err(e);
    }
    frame::finish(
        dst,
        start,
        tail.as_ref().map_or(0, Bytes::len),
        max_frame_length,
    )?;
    Ok(tail)
}

/// Puts the payload that followed `message`'s fields in a frame of `len`
/// bytes in its place.
fn with_tail<M: Wire>(mut message: M, tail: Bytes, len: usize) -> Result<M, ProtocolError> {
    if !tail.is_empty() {
        let name = message.name();
        message
            .set_tail(tail)
            .map_err(|rest| ProtocolError::Decode {
                len,
                reason: format!("{} bytes left over after a {name}", rest.len()),
            })?;
    }
    Ok(message)
}

impl<M, T: Wire> Encoder<T> for MessageCodec<M> {
    type Error = ProtocolError;

    fn encode(&mut self, message: T, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        self.encode_message(message, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{
        Hello, RemoteError, RemoteErrorKind, StreamFrame, ToSupervisor, ToWorker, Welcome,
    };
    use bytes::BufMut;
    use uuid::Uuid;

    fn stream_frames() -> Vec<StreamFrame> {
        let id = Uuid::from_u128(9);
        vec![
            StreamFrame::Data {
                id,
                bytes: Bytes::from(vec![3u8; 5000]),
            },
            StreamFrame::Data {
                id,
                bytes: Bytes::new(),
            },
            StreamFrame::End { id },
            StreamFrame::Credit { id, bytes: 4096 },
            StreamFrame::Abort {
                id,
                reason: "gone".into(),
            },
            StreamFrame::Abort {
                id,
                reason: String::new(),
            },
            StreamFrame::Stop { id },
        ]
    }

    fn to_worker() -> Vec<ToWorker> {
        let mut messages = vec![
            ToWorker::Welcome(Welcome {
                worker_id: 3,
                index: 1,
                max_frame_length: 1 << 20,
                config: Bytes::from_static(b"cfg"),
            }),
            ToWorker::Request {
                id: Uuid::from_u128(7),
                created_at: 17,
                fds: 0,
                stream: true,
                payload: Bytes::from(vec![7u8; 300]),
            },
            ToWorker::Request {
                id: Uuid::from_u128(7),
                created_at: u64::MAX,
                fds: 255,
                stream: false,
                payload: Bytes::new(),
            },
            ToWorker::Cancel {
                id: Uuid::from_u128(8),
            },
            ToWorker::Event {
                name: "tick".into(),
                payload: Bytes::new(),
            },
            ToWorker::Ping { seq: 9 },
            ToWorker::QueryReply {
                id: 4,
                result: Ok(Bytes::from_static(b"value")),
            },
            ToWorker::QueryReply {
                id: 5,
                result: Err(RemoteError {
                    kind: RemoteErrorKind::Failed,
                    message: "no such key".into(),
                }),
            },
            ToWorker::SoftKill,
            ToWorker::HardKill,
        ];
        messages.extend(stream_frames().into_iter().map(ToWorker::Stream));
        messages
    }

    fn to_supervisor() -> Vec<ToSupervisor> {
        let mut messages = vec![
            ToSupervisor::Hello(Hello::new()),
            ToSupervisor::Ready,
            ToSupervisor::Busy,
            ToSupervisor::Response {
                id: Uuid::from_u128(7),
                stream: false,
                result: Ok(Bytes::from_static(b"ok")),
            },
            ToSupervisor::Response {
                id: Uuid::from_u128(7),
                stream: true,
                result: Ok(Bytes::new()),
            },
            ToSupervisor::Response {
                id: Uuid::from_u128(7),
                stream: false,
                result: Err(RemoteError {
                    kind: RemoteErrorKind::Panicked,
                    message: "boom".into(),
                }),
            },
            ToSupervisor::Event {
                name: "tick".into(),
                payload: Bytes::from_static(b"1"),
            },
            ToSupervisor::Pong { seq: 9 },
            ToSupervisor::Status {
                message: "loading".into(),
            },
            ToSupervisor::SocketClosed {
                id: Uuid::from_u128(9),
            },
            ToSupervisor::Query {
                id: 4,
                name: "lookup".into(),
                payload: Bytes::from_static(b"key"),
            },
            ToSupervisor::Stopping { signal: 15 },
        ];
        messages.extend(stream_frames().into_iter().map(ToSupervisor::Stream));
        messages
    }

    fn round_trips<M: Wire + Clone + PartialEq>(samples: Vec<M>) {
        let mut codec = MessageCodec::<M>::default();
        let mut buf = BytesMut::new();
        for m in &samples {
            codec.encode_message(m.clone(), &mut buf).unwrap();
        }
        for m in &samples {
            let got = codec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(&got, m);
        }
        assert!(buf.is_empty());
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn every_message_round_trips() {
        round_trips(to_worker());
        round_trips(to_supervisor());
    }

    fn split<M: Wire + Clone>(samples: Vec<M>) {
        let mut codec = MessageCodec::<M>::default();
        let mut whole = BytesMut::new();
        for m in &samples {
            codec.encode_message(m.clone(), &mut whole).unwrap();
        }
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            let mut got = Vec::new();
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                got.push(m);
            }
            buf.extend_from_slice(&whole[cut..]);
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                got.push(m);
            }
            assert_eq!(got.len(), samples.len(), "cut at {cut}");
        }
    }

    #[test]
    fn split_at_every_byte() {
        split(to_worker());
        split(to_supervisor());
    }

    #[test]
    fn oversize_header_is_refused_before_the_body_arrives() {
        let mut codec = MessageCodec::<ToWorker>::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        match codec.decode(&mut buf) {
            Err(ProtocolError::FrameTooLarge { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, 1024);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn oversize_message_is_not_encoded() {
        let codec = MessageCodec::<ToWorker>::new(100);
        let mut buf = BytesMut::new();
        let m = ToSupervisor::Event {
            name: "big".into(),
            payload: Bytes::from(vec![0u8; 200]),
        };
        let err = codec.encode_message(m, &mut buf).unwrap_err();
        assert!(
            matches!(err, ProtocolError::FrameTooLarge { max: 100, .. }),
            "{err}"
        );
        assert!(
            buf.is_empty(),
            "nothing of a refused frame stays in the buffer"
        );
    }

    #[test]
    fn garbage_body_is_a_decode_error_naming_what_was_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (&[0xff, 0xff, 0xff, 0xff], "unknown kind byte 0xff"),
            (&[], "empty body"),
            (
                &[0x01, 1, 2, 3],
                "Request: 3 bytes of fields where 26 are needed",
            ),
            (&[0x02, 0x09], "unknown sub-kind 0x09"),
            (&[0x00, 0x63], "bincode"),
            (
                &[0x02, 0x01, 1, 2],
                "StreamEnd: 2 bytes of fields where 16 are needed",
            ),
        ];
        for (body, expected) in cases {
            let mut codec = MessageCodec::<ToWorker>::new(1024);
            let mut buf = BytesMut::new();
            buf.put_u32(body.len() as u32);
            buf.put_slice(body);
            let err = codec.decode(&mut buf).unwrap_err();
            match &err {
                ProtocolError::Decode { len, reason } => {
                    assert_eq!(*len, body.len());
                    assert!(reason.contains(expected), "{reason:?} for {body:?}");
                }
                other => panic!("expected Decode, got {other:?}"),
            }
        }
    }

    #[test]
    fn end_of_input_mid_frame_is_truncated() {
        let mut codec = MessageCodec::<ToSupervisor>::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(10);
        buf.put_slice(&[1, 2, 3]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(
            matches!(err, ProtocolError::Truncated { buffered: 7 }),
            "{err}"
        );
    }

    fn body_of<T: Wire>(message: T) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode_message(message, usize::MAX, &mut buf).unwrap();
        buf[FRAME_HEADER_LEN..].to_vec()
    }

    fn decode_body<M: Wire>(body: &[u8]) -> Result<M, ProtocolError> {
        MessageCodec::<M>::new(usize::MAX).decode_body(Bytes::copy_from_slice(body))
    }

    /// The bytes of the crate docs' drawing, exactly.
    #[test]
    fn the_fixed_layouts_are_the_drawn_ones() {
        let id = Uuid::from_bytes([0xa0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xaf]);
        let mut expected = vec![0x01];
        expected.extend_from_slice(id.as_bytes());
        expected.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        expected.extend_from_slice(&[3, 0x01]);
        expected.extend_from_slice(b"payload");
        let request = ToWorker::Request {
            id,
            created_at: 0x0102_0304_0506_0708,
            fds: 3,
            stream: true,
            payload: Bytes::from_static(b"payload"),
        };
        assert_eq!(body_of(request), expected);

        let mut expected = vec![0x01];
        expected.extend_from_slice(id.as_bytes());
        expected.extend_from_slice(&[0x00]);
        expected.extend_from_slice(b"answer");
        let ok = ToSupervisor::Response {
            id,
            stream: false,
            result: Ok(Bytes::from_static(b"answer")),
        };
        assert_eq!(body_of(ok), expected);

        let mut expected = vec![0x01];
        expected.extend_from_slice(id.as_bytes());
        expected.extend_from_slice(&[0x03, 0x02]);
        expected.extend_from_slice(b"gone");
        let err = ToSupervisor::Response {
            id,
            stream: true,
            result: Err(RemoteError {
                kind: RemoteErrorKind::Dropped,
                message: "gone".into(),
            }),
        };
        assert_eq!(body_of(err), expected);

        let stream = |sub: u8, rest: &[u8]| {
            let mut v = vec![0x02, sub];
            v.extend_from_slice(id.as_bytes());
            v.extend_from_slice(rest);
            v
        };
        let frames = [
            (
                StreamFrame::Data {
                    id,
                    bytes: Bytes::from_static(b"xyz"),
                },
                stream(0, b"xyz"),
            ),
            (StreamFrame::End { id }, stream(1, b"")),
            (
                StreamFrame::Credit {
                    id,
                    bytes: 0x0a0b_0c0d,
                },
                stream(2, &[0x0d, 0x0c, 0x0b, 0x0a]),
            ),
            (
                StreamFrame::Abort {
                    id,
                    reason: "why".into(),
                },
                stream(3, b"why"),
            ),
            (StreamFrame::Stop { id }, stream(4, b"")),
        ];
        for (frame, expected) in frames {
            // The same bytes in both directions.
            assert_eq!(body_of(ToWorker::Stream(frame.clone())), expected);
            assert_eq!(body_of(ToSupervisor::Stream(frame)), expected);
        }
    }

    /// Each rare message is the kind byte 0x00, then its variant's index
    /// as the crate docs list it, then its fields.
    #[test]
    fn rare_messages_carry_their_documented_index() {
        let to_worker = [
            (
                ToWorker::Welcome(Welcome {
                    worker_id: 0,
                    index: 0,
                    max_frame_length: 0,
                    config: Bytes::new(),
                }),
                0u8,
            ),
            (ToWorker::Cancel { id: Uuid::nil() }, 1),
            (
                ToWorker::Event {
                    name: String::new(),
                    payload: Bytes::new(),
                },
                2,
            ),
            (ToWorker::Ping { seq: 0 }, 3),
            (ToWorker::SoftKill, 4),
            (ToWorker::HardKill, 5),
            (
                ToWorker::QueryReply {
                    id: 0,
                    result: Ok(Bytes::new()),
                },
                6,
            ),
            (ToWorker::Release { offset: 0 }, 7),
        ];
        for (message, index) in to_worker {
            assert_eq!(&body_of(message)[..2], &[0x00, index]);
        }
        let to_supervisor = [
            (ToSupervisor::Hello(Hello::new()), 0u8),
            (ToSupervisor::Ready, 1),
            (ToSupervisor::Busy, 2),
            (
                ToSupervisor::Event {
                    name: String::new(),
                    payload: Bytes::new(),
                },
                3,
            ),
            (ToSupervisor::Pong { seq: 0 }, 4),
            (
                ToSupervisor::Status {
                    message: String::new(),
                },
                5,
            ),
            (
                ToSupervisor::Query {
                    id: 0,
                    name: String::new(),
                    payload: Bytes::new(),
                },
                6,
            ),
            (ToSupervisor::SocketClosed { id: Uuid::nil() }, 7),
            (ToSupervisor::Stopping { signal: 0 }, 8),
            (ToSupervisor::Release { offset: 0 }, 9),
        ];
        for (message, index) in to_supervisor {
            assert_eq!(&body_of(message)[..2], &[0x00, index]);
        }
        // The fixed-layout variants have no bincode form: an index past the
        // rare ones is refused, naming the index.
        for index in [8u8, 9] {
            let err = decode_body::<ToWorker>(&[0x00, index]).unwrap_err();
            assert!(err.to_string().contains("bincode"), "{err}");
        }
        for index in [10u8, 11] {
            let err = decode_body::<ToSupervisor>(&[0x00, index]).unwrap_err();
            assert!(err.to_string().contains("bincode"), "{err}");
        }
    }

    /// Ids, times, descriptor counts, flags and payload sizes across the
    /// ranges (every byte boundary of each field, both sides of the small
    /// frame limit), for the fixed layouts.
    fn hot_to_worker() -> Vec<ToWorker> {
        let times = [
            0u64,
            1,
            250,
            251,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            1 << 32,
            1_795_000_000_000_000,
            u64::MAX,
        ];
        let sizes = [
            0usize,
            1,
            SMALL_FRAME - 1 - 26,
            SMALL_FRAME - 26,
            SMALL_FRAME,
            4096,
        ];
        let mut messages = Vec::new();
        for (i, &created_at) in times.iter().enumerate() {
            for stream in [false, true] {
                for &size in &sizes {
                    let id =
                        Uuid::from_u128(0x0123_4567_89ab_cdef_u128.wrapping_mul(i as u128 + 3));
                    messages.push(ToWorker::Request {
                        id,
                        created_at,
                        fds: [0u8, 1, 8, 127, 128, 255][i % 6],
                        stream,
                        payload: Bytes::from(vec![i as u8; size]),
                    });
                }
            }
        }
        messages.extend(stream_frames().into_iter().map(ToWorker::Stream));
        messages
    }

    fn hot_to_supervisor() -> Vec<ToSupervisor> {
        let kinds = [
            RemoteErrorKind::Failed,
            RemoteErrorKind::Panicked,
            RemoteErrorKind::Dropped,
            RemoteErrorKind::Unsendable,
        ];
        let sizes = [
            0usize,
            1,
            SMALL_FRAME - 1 - 17,
            SMALL_FRAME - 17,
            SMALL_FRAME,
            4096,
        ];
        let mut messages = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            for stream in [false, true] {
                let id = Uuid::from_u128(u128::MAX.wrapping_mul(i as u128 + 5));
                messages.push(ToSupervisor::Response {
                    id,
                    stream,
                    result: Ok(Bytes::from(vec![i as u8; size])),
                });
                messages.push(ToSupervisor::Response {
                    id,
                    stream,
                    result: Err(RemoteError {
                        kind: kinds[i % 4],
                        message: "é".repeat(size / 2),
                    }),
                });
            }
        }
        for credit in [0u32, 1, 255, 256, 65_535, 65_536, u32::MAX] {
            messages.push(ToSupervisor::Stream(StreamFrame::Credit {
                id: Uuid::from_u128(credit as u128),
                bytes: credit,
            }));
        }
        messages.extend(stream_frames().into_iter().map(ToSupervisor::Stream));
        messages
    }

    fn exact<M: Wire + Clone + PartialEq>(messages: Vec<M>) {
        for message in messages {
            let body = body_of(message.clone());
            // It round-trips, both through a whole body and a frame.
            assert_eq!(decode_body::<M>(&body).unwrap(), message);
            let mut frame = BytesMut::new();
            encode_message(message.clone(), usize::MAX, &mut frame).unwrap();
            let mut codec = MessageCodec::<M>::new(usize::MAX);
            assert_eq!(codec.decode(&mut frame).unwrap().unwrap(), message);
            // Every cut and every single-byte change decodes to an error,
            // or to a message whose encoding is exactly those bytes: the
            // layouts have one encoding per message, and nothing else
            // decodes.
            let mut inputs = Vec::new();
            for cut in 0..body.len() {
                inputs.push(body[..cut].to_vec());
            }
            for i in 0..body.len().min(64) {
                for value in [0u8, 1, 2, 3, 4, 5, 0x7f, 0x80, 0xc3, 0xfe, 0xff] {
                    let mut changed = body.clone();
                    changed[i] = value;
                    inputs.push(changed);
                }
            }
            for input in inputs {
                if let Ok(decoded) = decode_body::<M>(&input) {
                    let again = body_of(decoded);
                    // A changed kind byte may make it a rare message,
                    // whose bytes are bincode's to judge.
                    if again[0] != crate::wire::KIND_BINCODE {
                        assert_eq!(again, input, "from {message:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_fixed_layouts_are_exact() {
        exact(hot_to_worker());
        exact(hot_to_supervisor());
    }

    /// A stream frame is read the same way whichever side sent it.
    #[test]
    fn stream_frames_are_the_same_in_both_directions() {
        for frame in stream_frames() {
            let body = body_of(ToWorker::Stream(frame.clone()));
            assert_eq!(
                decode_body::<ToSupervisor>(&body).unwrap(),
                ToSupervisor::Stream(frame)
            );
        }
    }

    /// Random bytes, random lengths, random cuts: the decoder answers
    /// every input with a message, "more please" or an error; it never
    /// panics and never allocates past the limit.
    #[test]
    fn random_input_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut buf = BytesMut::new();
            // Half the time a plausible header, so bodies get decoded too.
            if next() % 2 == 0 {
                buf.put_u32((next() % 80) as u32);
                // And a known kind byte, so each layout is reached.
                buf.put_u8((next() % 4) as u8);
            }
            for _ in 0..len {
                buf.put_u8(next() as u8);
            }
            if round % 2 == 0 {
                let mut codec = MessageCodec::<ToWorker>::new(4096);
                while let Ok(Some(_)) = codec.decode(&mut buf) {}
                let _ = codec.decode_eof(&mut buf);
            } else {
                let mut codec = MessageCodec::<ToSupervisor>::new(4096);
                while let Ok(Some(_)) = codec.decode(&mut buf) {}
                let _ = codec.decode_eof(&mut buf);
            }
            assert!(
                buf.capacity() <= 4096 + 4 + 64 * 2 + 8192,
                "allocated {}",
                buf.capacity()
            );
        }
    }

    /// Every message, with each byte of its frame changed in turn: decoding
    /// fails cleanly or yields some message, never panics.
    #[test]
    fn corrupted_frames_never_panic() {
        fn corrupt<M: Wire + Clone>(samples: Vec<M>) {
            for message in samples {
                let mut frame = BytesMut::new();
                encode_message(message, DEFAULT_MAX_FRAME_LENGTH, &mut frame).unwrap();
                for i in FRAME_HEADER_LEN..frame.len() {
                    for flip in [0x01u8, 0x80, 0xff] {
                        let mut bad = frame.clone();
                        bad[i] ^= flip;
                        let mut fresh = MessageCodec::<M>::default();
                        let _ = fresh.decode(&mut bad);
                    }
                }
            }
        }
        corrupt(to_worker());
        corrupt(to_supervisor());
    }
}
