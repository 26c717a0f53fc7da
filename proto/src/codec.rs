//! The frame codec: a 4-byte big-endian length, then one bincode message.
//!
//! ```text
//! +----------------+---------------------------+
//! | length: u32 BE | body: bincode(Message)    |
//! +----------------+---------------------------+
//! ```
//!
//! [`MessageCodec`] is a tokio-util [`Decoder`] and [`Encoder`]. The
//! length limit is checked on the header alone, so a peer that announces a
//! 4 GiB frame gets an error, not an allocation.
//!
//! The two messages every request costs, `Request` and a successful
//! `Response`, are encoded and decoded by hand (module `fast`), byte for
//! byte as bincode does: they are a variant tag, a uuid and a few small
//! fields, and going through serde for them cost more than everything else
//! the codec does. Every other message, and any input the hand-written
//! decoder does not recognise exactly, takes the serde path, which stays
//! the reference: the tests hold the two to the same bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtocolError;
use crate::message::Message;

/// Default maximum frame length: 64 MiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 64 * 1024 * 1024;

/// Bytes of the length header in front of every frame body.
pub const FRAME_HEADER_LEN: usize = 4;

/// Frames with a body up to this size are decoded in place, their payload
/// copied out of the read buffer; larger ones are split off it, no copy.
pub const SMALL_FRAME: usize = 1024;

/// Room kept for the message fields around a payload (id, variant, lengths),
/// so a payload can be checked against the frame limit before it is framed.
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

/// Encodes and decodes [`Message`]s as length-delimited frames.
///
/// Decoding an oversize header fails with [`ProtocolError::FrameTooLarge`];
/// a body that is not a message fails with [`ProtocolError::Decode`]; end of
/// input in the middle of a frame fails with [`ProtocolError::Truncated`].
/// After any error the connection is unusable: the caller must drop it.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use drover_proto::{Message, MessageCodec};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = MessageCodec::new(1024);
/// let mut buf = BytesMut::new();
/// codec.encode(Message::Ping { seq: 7 }, &mut buf).unwrap();
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Ping { seq: 7 }));
/// ```
#[derive(Debug)]
pub struct MessageCodec {
    max_frame_length: usize,
}

impl MessageCodec {
    /// A codec that refuses frames with a body over `max_frame_length` bytes.
    pub fn new(max_frame_length: usize) -> MessageCodec {
        MessageCodec { max_frame_length }
    }

    /// The frame limit in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// Changes the frame limit (the worker learns it in `Welcome`).
    pub fn set_max_frame_length(&mut self, max: usize) {
        self.max_frame_length = max;
    }
}

impl Default for MessageCodec {
    fn default() -> Self {
        MessageCodec::new(DEFAULT_MAX_FRAME_LENGTH)
    }
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl Decoder for MessageCodec {
    type Item = Message;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        let Some(header) = src.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        // The header is checked before anything is buffered for the body,
        // so the error names the announced length and nothing is allocated.
        let len = u32::from_be_bytes(*header) as usize;
        if len > self.max_frame_length {
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.max_frame_length,
            });
        }
        let whole = FRAME_HEADER_LEN + len;
        if src.len() < whole {
            // Make room for the rest of a small frame at once (a reader
            // that pools buffers for large ones reads those elsewhere).
            if whole < crate::reader::LARGE_FRAME {
                src.reserve(whole - src.len());
            }
            return Ok(None);
        }
        if len <= SMALL_FRAME {
            // A small frame is decoded in place and its payload copied
            // out: an allocation of its own, freed wherever it is dropped,
            // costs less than sharing the read buffer with it (a reference
            // count bumped from other threads, and a buffer that can be
            // reused only once every payload read into it is gone).
            let body = &src[FRAME_HEADER_LEN..whole];
            let (message, used) = self.decode_head(body)?;
            let tail = Bytes::copy_from_slice(&body[used..]);
            src.advance(whole);
            return with_tail(message, tail, len).map(Some);
        }
        src.advance(FRAME_HEADER_LEN);
        self.decode_body(src.split_to(len).freeze()).map(Some)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        match self.decode(buf)? {
            Some(message) => Ok(Some(message)),
            None if buf.is_empty() => Ok(None),
            None => Err(ProtocolError::Truncated {
                buffered: buf.len(),
            }),
        }
    }
}

impl MessageCodec {
    /// Decodes one frame's body (its header already read): the message,
    /// and the payload after it as a slice of `body`, with no copy.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Decode`] if the body is not a message, or has bytes
    /// left over after one that carries no payload.
    pub fn decode_body(&self, body: Bytes) -> Result<Message, ProtocolError> {
        let (message, used) = self.decode_head(&body)?;
        with_tail(message, body.slice(used..), body.len())
    }

    /// The message at the start of a frame's body, and the bytes it used.
    fn decode_head(&self, body: &[u8]) -> Result<(Message, usize), ProtocolError> {
        let decoded = match fast::decode(body) {
            Some(decoded) => Ok(decoded),
            // Bounded: no claimed length is allocated before it is
            // checked against the body.
            None => crate::bounded::decode_from_slice::<Message>(body),
        };
        decoded.map_err(|e| ProtocolError::Decode {
            len: body.len(),
            reason: e.to_string(),
        })
    }

    /// Encodes `message` as one frame at the end of `dst`, by reference.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::FrameTooLarge`] if the body is over the limit,
    /// [`ProtocolError::Encode`] if it does not encode; `dst` is left as it
    /// was.
    pub fn encode_message(
        &mut self,
        message: &Message,
        dst: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        let tail = message.tail().map_or(&[][..], |t| &t[..]);
        self.encode_fields(message, tail.len(), dst)?;
        dst.extend_from_slice(tail);
        Ok(())
    }

    /// Encodes the length header and the message's fields at the end of
    /// `dst`, and returns its payload, taken out of the message, which
    /// must be written right after (by copy or, for a large one, as a
    /// buffer of its own in a vectored write).
    ///
    /// # Errors
    ///
    /// As [`encode_message`](MessageCodec::encode_message).
    pub fn encode_head(
        &mut self,
        mut message: Message,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, ProtocolError> {
        let tail = message.take_tail().filter(|t| !t.is_empty());
        self.encode_fields(&message, tail.as_ref().map_or(0, Bytes::len), dst)?;
        Ok(tail)
    }

    /// The length header (for the fields and a payload of `tail_len`
    /// bytes) and the fields, at the end of `dst`; nothing on error.
    fn encode_fields(
        &mut self,
        message: &Message,
        tail_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        let start = dst.len();
        dst.put_u32(0);
        let head = if fast::encode(message, dst) {
            dst.len() - start - FRAME_HEADER_LEN
        } else {
            let mut writer = dst.writer();
            let written =
                bincode::serde::encode_into_std_write(message, &mut writer, bincode_config());
            match written {
                Ok(len) => len,
                Err(e) => {
                    dst.truncate(start);
                    return Err(ProtocolError::Encode {
                        reason: e.to_string(),
                    });
                }
            }
        };
        let len = head + tail_len;
        if len > self.max_frame_length || len > u32::MAX as usize {
            dst.truncate(start);
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.max_frame_length,
            });
        }
        dst[start..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

/// Puts the payload that followed `message` in a frame of `len` bytes in
/// its place.
fn with_tail(mut message: Message, tail: Bytes, len: usize) -> Result<Message, ProtocolError> {
    if !tail.is_empty() {
        message
            .set_tail(tail)
            .map_err(|rest| ProtocolError::Decode {
                len,
                reason: format!("{} bytes left over after the message", rest.len()),
            })?;
    }
    Ok(message)
}

/// `Request` and `Response` by hand, exactly as bincode's standard
/// configuration writes them through serde: the variant index as a varint,
/// the uuid as a 16-byte byte string (length, then bytes), integers as
/// varints, `u8` and `bool` as one byte, the tail-carried payload as nothing
/// and a `Result` as its variant index (0 for `Ok`).
mod fast {
    use bytes::{BufMut, Bytes, BytesMut};
    use uuid::Uuid;

    use crate::message::Message;

    /// Variant indexes in [`Message`] (checked by the tests).
    const REQUEST: u8 = 4;
    const RESPONSE: u8 = 5;
    /// The length prefix of a uuid's bytes.
    const UUID_LEN: u8 = 16;
    /// bincode's varint markers for a `u16`, `u32` and `u64` that follow.
    const U16_MARKER: u8 = 251;
    const U32_MARKER: u8 = 252;
    const U64_MARKER: u8 = 253;

    /// Writes `message`'s fields at the end of `dst` if it is one of the
    /// hand-encoded kinds; `false` (and nothing written) otherwise.
    pub(super) fn encode(message: &Message, dst: &mut BytesMut) -> bool {
        match message {
            Message::Request {
                id,
                created_at,
                fds,
                stream,
                ..
            } => {
                dst.reserve(1 + 1 + 16 + 9 + 2);
                dst.put_u8(REQUEST);
                put_uuid(dst, id);
                put_varint(dst, *created_at);
                dst.put_u8(*fds);
                dst.put_u8(u8::from(*stream));
                true
            }
            Message::Response {
                id,
                stream,
                result: Ok(_),
            } => {
                dst.reserve(1 + 1 + 16 + 2);
                dst.put_u8(RESPONSE);
                put_uuid(dst, id);
                dst.put_u8(u8::from(*stream));
                dst.put_u8(0);
                true
            }
            _ => false,
        }
    }

    /// The message at the start of `body` and the bytes it used, if it is
    /// a hand-decoded kind in exactly the form bincode writes; `None` sends
    /// the caller to the serde path, which decodes or names the error.
    pub(super) fn decode(body: &[u8]) -> Option<(Message, usize)> {
        let (&tag, rest) = body.split_first()?;
        let (message, rest) = match tag {
            REQUEST => {
                let (id, rest) = uuid(rest)?;
                let (created_at, rest) = varint(rest)?;
                let (&fds, rest) = rest.split_first()?;
                let (stream, rest) = boolean(rest)?;
                let message = Message::Request {
                    id,
                    created_at,
                    fds,
                    stream,
                    payload: Bytes::new(),
                };
                (message, rest)
            }
            RESPONSE => {
                let (id, rest) = uuid(rest)?;
                let (stream, rest) = boolean(rest)?;
                let (&0, rest) = rest.split_first()? else {
                    return None;
                };
                let message = Message::Response {
                    id,
                    stream,
                    result: Ok(Bytes::new()),
                };
                (message, rest)
            }
            _ => return None,
        };
        Some((message, body.len() - rest.len()))
    }

    fn put_uuid(dst: &mut BytesMut, id: &Uuid) {
        dst.put_u8(UUID_LEN);
        dst.put_slice(id.as_bytes());
    }

    fn put_varint(dst: &mut BytesMut, n: u64) {
        if n < u64::from(U16_MARKER) {
            dst.put_u8(n as u8);
        } else if let Ok(n) = u16::try_from(n) {
            dst.put_u8(U16_MARKER);
            dst.put_u16_le(n);
        } else if let Ok(n) = u32::try_from(n) {
            dst.put_u8(U32_MARKER);
            dst.put_u32_le(n);
        } else {
            dst.put_u8(U64_MARKER);
            dst.put_u64_le(n);
        }
    }

    fn uuid(src: &[u8]) -> Option<(Uuid, &[u8])> {
        let (&UUID_LEN, rest) = src.split_first()? else {
            return None;
        };
        let (bytes, rest) = rest.split_first_chunk::<16>()?;
        Some((Uuid::from_bytes(*bytes), rest))
    }

    fn boolean(src: &[u8]) -> Option<(bool, &[u8])> {
        match src.split_first()? {
            (&0, rest) => Some((false, rest)),
            (&1, rest) => Some((true, rest)),
            _ => None,
        }
    }

    /// A varint in its shortest form only: anything else is left to serde.
    fn varint(src: &[u8]) -> Option<(u64, &[u8])> {
        let (&first, rest) = src.split_first()?;
        let (n, rest, floor) = match first {
            U16_MARKER => {
                let (b, rest) = rest.split_first_chunk::<2>()?;
                (
                    u64::from(u16::from_le_bytes(*b)),
                    rest,
                    u64::from(U16_MARKER),
                )
            }
            U32_MARKER => {
                let (b, rest) = rest.split_first_chunk::<4>()?;
                (u64::from(u32::from_le_bytes(*b)), rest, 1 << 16)
            }
            U64_MARKER => {
                let (b, rest) = rest.split_first_chunk::<8>()?;
                (u64::from_le_bytes(*b), rest, 1 << 32)
            }
            n if n < U16_MARKER => return Some((u64::from(n), rest)),
            _ => return None,
        };
        (n >= floor).then_some((n, rest))
    }
}

impl Encoder<Message> for MessageCodec {
    type Error = ProtocolError;

    fn encode(&mut self, message: Message, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        self.encode_message(&message, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Hello, RemoteError, RemoteErrorKind, Welcome};
    use bytes::Bytes;
    use uuid::Uuid;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello(Hello::new()),
            Message::Welcome(Welcome {
                worker_id: 3,
                index: 1,
                max_frame_length: 1 << 20,
                config: Bytes::from_static(b"cfg"),
            }),
            Message::Ready,
            Message::Busy,
            Message::Request {
                id: Uuid::from_u128(7),
                created_at: 17,
                fds: 0,
                stream: true,
                payload: Bytes::from(vec![7u8; 300]),
            },
            Message::Response {
                id: Uuid::from_u128(7),
                stream: false,
                result: Ok(Bytes::from_static(b"ok")),
            },
            Message::Response {
                id: Uuid::from_u128(7),
                stream: false,
                result: Err(RemoteError {
                    kind: RemoteErrorKind::Panicked,
                    message: "boom".into(),
                }),
            },
            Message::Cancel {
                id: Uuid::from_u128(8),
            },
            Message::Event {
                name: "tick".into(),
                payload: Bytes::new(),
            },
            Message::Ping { seq: 9 },
            Message::Pong { seq: 9 },
            Message::Status {
                message: "loading".into(),
            },
            Message::StreamData {
                id: Uuid::from_u128(9),
                bytes: Bytes::from(vec![3u8; 5000]),
            },
            Message::StreamEnd {
                id: Uuid::from_u128(9),
            },
            Message::StreamCredit {
                id: Uuid::from_u128(9),
                bytes: 4096,
            },
            Message::StreamAbort {
                id: Uuid::from_u128(9),
                reason: "gone".into(),
            },
            Message::StreamStop {
                id: Uuid::from_u128(9),
            },
            Message::SocketClosed {
                id: Uuid::from_u128(9),
            },
            Message::Query {
                id: 4,
                name: "lookup".into(),
                payload: Bytes::from_static(b"key"),
            },
            Message::QueryReply {
                id: 4,
                result: Ok(Bytes::from_static(b"value")),
            },
            Message::QueryReply {
                id: 5,
                result: Err(RemoteError {
                    kind: RemoteErrorKind::Failed,
                    message: "no such key".into(),
                }),
            },
            Message::SoftKill,
            Message::HardKill,
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let mut codec = MessageCodec::default();
        let mut buf = BytesMut::new();
        for m in samples() {
            codec.encode_message(&m, &mut buf).unwrap();
        }
        for m in samples() {
            let got = codec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(got, m);
        }
        assert!(buf.is_empty());
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn split_at_every_byte() {
        let mut codec = MessageCodec::default();
        let mut whole = BytesMut::new();
        let messages = samples();
        for m in &messages {
            codec.encode_message(m, &mut whole).unwrap();
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
            assert_eq!(got.len(), messages.len(), "cut at {cut}");
        }
    }

    #[test]
    fn oversize_header_is_refused_before_the_body_arrives() {
        let mut codec = MessageCodec::new(1024);
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
        let mut codec = MessageCodec::new(100);
        let mut buf = BytesMut::new();
        let m = Message::Event {
            name: "big".into(),
            payload: Bytes::from(vec![0u8; 200]),
        };
        let err = codec.encode_message(&m, &mut buf).unwrap_err();
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
    fn garbage_body_is_a_decode_error() {
        let mut codec = MessageCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(4);
        buf.put_slice(&[0xff, 0xff, 0xff, 0xff]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtocolError::Decode { len: 4, .. }), "{err}");
    }

    #[test]
    fn end_of_input_mid_frame_is_truncated() {
        let mut codec = MessageCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(10);
        buf.put_slice(&[1, 2, 3]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(
            matches!(err, ProtocolError::Truncated { buffered: 7 }),
            "{err}"
        );
    }

    fn serde_encoding(message: &Message) -> Vec<u8> {
        bincode::serde::encode_to_vec(message, bincode_config()).unwrap()
    }

    /// Requests and responses with ids, times and flags across the ranges
    /// (every varint width), as the hand-written paths see them.
    fn hot_messages() -> Vec<Message> {
        let times = [
            0u64,
            1,
            250,
            251,
            65_535,
            65_536,
            u32::MAX as u64,
            1 << 32,
            1_795_000_000_000_000,
            u64::MAX,
        ];
        let mut messages = Vec::new();
        for (i, &created_at) in times.iter().enumerate() {
            for stream in [false, true] {
                let id = Uuid::from_u128(0x0123_4567_89ab_cdef_u128.wrapping_mul(i as u128 + 3));
                messages.push(Message::Request {
                    id,
                    created_at,
                    fds: (i * 29) as u8,
                    stream,
                    payload: Bytes::from(vec![i as u8; i * 7]),
                });
                messages.push(Message::Response {
                    id,
                    stream,
                    result: Ok(Bytes::from(vec![i as u8; i * 5])),
                });
            }
        }
        messages
    }

    /// The hand-written encoder writes what bincode writes through serde,
    /// and the hand-written decoder reads it back as serde does.
    #[test]
    fn hand_written_paths_agree_with_serde() {
        for message in hot_messages() {
            let reference = serde_encoding(&message);
            let mut fast_bytes = BytesMut::new();
            assert!(
                super::fast::encode(&message, &mut fast_bytes),
                "{message:?}"
            );
            assert_eq!(&fast_bytes[..], &reference[..], "{message:?}");
            let (fast_message, used) = super::fast::decode(&reference).expect("decodes");
            let (serde_message, serde_used) =
                bincode::serde::decode_from_slice::<Message, _>(&reference, bincode_config())
                    .unwrap();
            assert_eq!(used, serde_used);
            assert_eq!(fast_message, serde_message);
        }
        // Everything else is left to serde.
        for message in samples() {
            let hot = matches!(
                message,
                Message::Request { .. } | Message::Response { result: Ok(_), .. }
            );
            let mut buf = BytesMut::new();
            assert_eq!(super::fast::encode(&message, &mut buf), hot, "{message:?}");
            assert_eq!(buf.is_empty(), !hot);
            let reference = serde_encoding(&message);
            assert_eq!(
                super::fast::decode(&reference).is_some(),
                hot,
                "{message:?}"
            );
        }
    }

    /// Whatever the hand-written decoder accepts, serde decodes to the same
    /// message: every truncation and every single-byte change of the hot
    /// messages' encodings, plus non-shortest varints, which it leaves to
    /// serde.
    #[test]
    fn the_hand_written_decoder_accepts_nothing_serde_reads_otherwise() {
        let mut inputs = Vec::new();
        for message in hot_messages() {
            let bytes = serde_encoding(&message);
            for cut in 0..bytes.len() {
                inputs.push(bytes[..cut].to_vec());
            }
            for i in 0..bytes.len() {
                for value in [0u8, 1, 2, 4, 5, 15, 16, 17, 250, 251, 252, 253, 254, 255] {
                    let mut changed = bytes.clone();
                    changed[i] = value;
                    inputs.push(changed);
                }
            }
        }
        // 5 as a u16 varint: valid for serde's reader perhaps, not shortest.
        let mut long_form = vec![4u8, 16];
        long_form.extend_from_slice(&[9; 16]);
        long_form.extend_from_slice(&[251, 5, 0, 0, 0]);
        inputs.push(long_form);
        for input in inputs {
            if let Some((fast_message, used)) = super::fast::decode(&input) {
                let (serde_message, serde_used) =
                    bincode::serde::decode_from_slice::<Message, _>(&input, bincode_config())
                        .unwrap_or_else(|e| panic!("serde refuses {input:?}: {e}"));
                assert_eq!(fast_message, serde_message, "{input:?}");
                assert_eq!(used, serde_used, "{input:?}");
            }
        }
        assert!(super::fast::decode(&[4, 16]).is_none());
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
        for _ in 0..20_000 {
            let mut codec = MessageCodec::new(4096);
            let len = (next() % 64) as usize;
            let mut buf = BytesMut::new();
            // Half the time a plausible header, so bodies get decoded too.
            if next() % 2 == 0 {
                buf.put_u32((next() % 80) as u32);
            }
            for _ in 0..len {
                buf.put_u8(next() as u8);
            }
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            let _ = codec.decode_eof(&mut buf);
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
        let mut codec = MessageCodec::default();
        for message in samples() {
            let mut frame = BytesMut::new();
            codec.encode_message(&message, &mut frame).unwrap();
            for i in FRAME_HEADER_LEN..frame.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = frame.clone();
                    bad[i] ^= flip;
                    let mut fresh = MessageCodec::default();
                    let _ = fresh.decode(&mut bad);
                }
            }
        }
    }
}
