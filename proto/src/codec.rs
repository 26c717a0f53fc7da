//! The frame codec: a 4-byte big-endian length, then one bincode message.
//!
//! ```text
//! +----------------+---------------------------+
//! | length: u32 BE | body: bincode(Message)    |
//! +----------------+---------------------------+
//! ```
//!
//! Framing is tokio-util's [`LengthDelimitedCodec`]; [`MessageCodec`] puts a
//! typed layer on it. The length limit is checked on the header alone, so
//! a peer that announces a 4 GiB frame gets an error, not an allocation.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::error::ProtocolError;
use crate::message::Message;

/// Default maximum frame length: 64 MiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 64 * 1024 * 1024;

/// Bytes of the length header in front of every frame body.
pub const FRAME_HEADER_LEN: usize = 4;

/// Room kept for the message fields around a payload (id, variant, lengths),
/// so a payload can be checked against the frame limit before it is framed.
pub const MESSAGE_OVERHEAD: usize = 64;

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
    frames: LengthDelimitedCodec,
    max_frame_length: usize,
    /// The inner codec has consumed the current frame's header and waits
    /// for its body.
    in_body: bool,
}

impl MessageCodec {
    /// A codec that refuses frames with a body over `max_frame_length` bytes.
    pub fn new(max_frame_length: usize) -> MessageCodec {
        let frames = LengthDelimitedCodec::builder()
            .length_field_length(FRAME_HEADER_LEN)
            .big_endian()
            .max_frame_length(max_frame_length)
            .new_codec();
        MessageCodec {
            frames,
            max_frame_length,
            in_body: false,
        }
    }

    /// The frame limit in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// Changes the frame limit (the worker learns it in `Welcome`).
    pub fn set_max_frame_length(&mut self, max: usize) {
        self.max_frame_length = max;
        self.frames.set_max_frame_length(max);
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
        // Check the header ourselves before the inner codec consumes it, so
        // the error names the announced length.
        if !self.in_body && src.len() >= FRAME_HEADER_LEN {
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            if len > self.max_frame_length {
                return Err(ProtocolError::FrameTooLarge {
                    len,
                    max: self.max_frame_length,
                });
            }
        }
        let had_header = self.in_body || src.len() >= FRAME_HEADER_LEN;
        let Some(body) = self.frames.decode(src)? else {
            self.in_body = had_header;
            return Ok(None);
        };
        self.in_body = false;
        let body = body.freeze();
        let (mut message, used) =
            bincode::serde::decode_from_slice::<Message, _>(&body, bincode_config()).map_err(
                |e| ProtocolError::Decode {
                    len: body.len(),
                    reason: e.to_string(),
                },
            )?;
        if used < body.len() {
            // The payload follows the message: take it without a copy.
            message
                .set_tail(body.slice(used..))
                .map_err(|rest| ProtocolError::Decode {
                    len: body.len(),
                    reason: format!("{} bytes left over after the message", rest.len()),
                })?;
        }
        Ok(Some(message))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        match self.decode(buf)? {
            Some(message) => Ok(Some(message)),
            None if buf.is_empty() => Ok(None),
            None => Err(ProtocolError::Truncated {
                buffered: buf.len() + if self.in_body { FRAME_HEADER_LEN } else { 0 },
            }),
        }
    }
}

impl MessageCodec {
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
        let tail = self.encode_head(message, dst)?;
        if let Some(tail) = tail {
            dst.extend_from_slice(&tail);
        }
        Ok(())
    }

    /// Encodes the length header and the message's fields at the end of
    /// `dst`, and returns its payload, which must be written right after
    /// (by copy or, for a large one, as a buffer of its own in a vectored
    /// write).
    ///
    /// # Errors
    ///
    /// As [`encode_message`](MessageCodec::encode_message).
    pub fn encode_head(
        &mut self,
        message: &Message,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, ProtocolError> {
        let start = dst.len();
        dst.put_u32(0);
        let mut writer = dst.writer();
        let written = bincode::serde::encode_into_std_write(message, &mut writer, bincode_config());
        let dst = writer.into_inner();
        let head = match written {
            Ok(len) => len,
            Err(e) => {
                dst.truncate(start);
                return Err(ProtocolError::Encode {
                    reason: e.to_string(),
                });
            }
        };
        let tail = message.tail().filter(|t| !t.is_empty()).cloned();
        let len = head + tail.as_ref().map_or(0, Bytes::len);
        if len > self.max_frame_length || len > u32::MAX as usize {
            dst.truncate(start);
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.max_frame_length,
            });
        }
        dst[start..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(tail)
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
                bytes: Bytes::from(vec![3u8; 1000]),
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
