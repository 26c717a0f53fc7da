//! The frame: its length header, the frame limit, and where a reader is
//! in a stream of frames.
//!
//! ```text
//! +----------------+------------------------------------+
//! | length: u32 BE | body: `length` bytes               |
//! +----------------+------------------------------------+
//!   4 bytes          at most the frame limit
//! ```
//!
//! This module is the one place that reads and writes the header: the
//! codec ([`MessageCodec`](crate::MessageCodec)), the read side
//! ([`FrameReader`](crate::FrameReader), which reads large bodies into
//! pooled buffers) and the socket reader ([`FdReader`](crate::FdReader),
//! which follows frames to read large bodies the fast way) all go through
//! it. The limit is checked on the header, before anything is buffered for
//! the body.

use bytes::{BufMut, BytesMut};

use crate::error::ProtocolError;

/// Bytes of the length header in front of every frame body.
pub const FRAME_HEADER_LEN: usize = 4;

/// Default maximum frame length (of the body): 64 MiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 64 * 1024 * 1024;

/// Frames with a body up to this size are decoded in place, their payload
/// copied out of the read buffer; larger ones are split off it, no copy.
pub const SMALL_FRAME: usize = 1024;

/// Frames with a body at least this large are read into a buffer of their
/// own, taken from the connection's pool.
pub const LARGE_FRAME: usize = 64 * 1024;

/// The body length a header announces.
pub fn body_len(header: [u8; FRAME_HEADER_LEN]) -> usize {
    u32::from_be_bytes(header) as usize
}

/// What the start of a read buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Not even the whole header.
    Header,
    /// A header (within the limit) announcing a body of `len` bytes, not
    /// all of which has arrived.
    Partial {
        /// The body's length.
        len: usize,
    },
    /// A whole frame: its header and a body of `len` bytes.
    Whole {
        /// The body's length.
        len: usize,
    },
}

/// Reads the header at the start of `buf`, checking it against
/// `max_frame_length`, and says how much of the frame is there.
///
/// # Errors
///
/// [`ProtocolError::FrameTooLarge`] if the header announces a body over the
/// limit; nothing has been buffered for it.
pub fn peek(buf: &[u8], max_frame_length: usize) -> Result<Peek, ProtocolError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(Peek::Header);
    };
    let len = body_len(*header);
    if len > max_frame_length {
        return Err(ProtocolError::FrameTooLarge {
            len,
            max: max_frame_length,
        });
    }
    if buf.len() < FRAME_HEADER_LEN + len {
        Ok(Peek::Partial { len })
    } else {
        Ok(Peek::Whole { len })
    }
}

/// Whether a body of `len` bytes is decoded in place, its payload copied
/// out (a small allocation of its own costs less than sharing the read
/// buffer with it).
pub fn in_place(len: usize) -> bool {
    len <= SMALL_FRAME
}

/// Whether a body of `len` bytes is read into a pooled buffer of its own.
pub fn pooled(len: usize) -> bool {
    len >= LARGE_FRAME
}

/// Starts a frame at the end of `dst`: a header to be filled in by
/// [`finish`]; returns where the frame starts.
pub(crate) fn start(dst: &mut BytesMut) -> usize {
    let start = dst.len();
    dst.put_u32(0);
    start
}

/// Fills in the header of the frame begun at `start`, whose body is what
/// follows it in `dst` plus `tail_len` bytes to be written after.
///
/// # Errors
///
/// [`ProtocolError::FrameTooLarge`] if the body is over the limit; the
/// frame is then taken off `dst`.
pub(crate) fn finish(
    dst: &mut BytesMut,
    start: usize,
    tail_len: usize,
    max_frame_length: usize,
) -> Result<(), ProtocolError> {
    let len = dst.len() - start - FRAME_HEADER_LEN + tail_len;
    if len > max_frame_length || len > u32::MAX as usize {
        dst.truncate(start);
        return Err(ProtocolError::FrameTooLarge {
            len,
            max: max_frame_length,
        });
    }
    dst[start..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Follows the length headers through the bytes read, to know how much of
/// the current frame is still to come.
#[derive(Debug, Default)]
pub(crate) struct FrameTracker {
    /// Body bytes of the current frame not yet read.
    body_left: usize,
    /// Bytes of a header read so far.
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
}

impl FrameTracker {
    /// Follows `data`, the next bytes read.
    pub(crate) fn saw(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.body_left > 0 {
                let take = self.body_left.min(data.len());
                self.body_left -= take;
                data = &data[take..];
            } else {
                self.header[self.header_len] = data[0];
                self.header_len += 1;
                data = &data[1..];
                if self.header_len == FRAME_HEADER_LEN {
                    self.body_left = body_len(self.header);
                    self.header_len = 0;
                }
            }
        }
    }

    /// Bytes of the current body still to come, if the reader is inside a
    /// body (not in a header).
    pub(crate) fn inside_body(&self) -> Option<usize> {
        (self.header_len == 0 && self.body_left > 0).then_some(self.body_left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_follows_frames_split_anywhere() {
        // Three frames: bodies of 5, 0 and 300 bytes.
        let mut stream = Vec::new();
        for len in [5u32, 0, 300] {
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for cut in 0..stream.len() {
            let mut tracker = FrameTracker::default();
            tracker.saw(&stream[..cut]);
            tracker.saw(&stream[cut..]);
            assert_eq!(
                (tracker.body_left, tracker.header_len),
                (0, 0),
                "cut at {cut}"
            );
        }
        let mut tracker = FrameTracker::default();
        tracker.saw(&stream[..4 + 5 + 4 + 4 + 100]);
        assert_eq!(tracker.body_left, 200);
        assert_eq!(tracker.inside_body(), Some(200));
    }

    #[test]
    fn peek_checks_the_limit_on_the_header_alone() {
        assert_eq!(peek(&[0, 0], 10).unwrap(), Peek::Header);
        assert_eq!(
            peek(&[0, 0, 0, 10, 1], 10).unwrap(),
            Peek::Partial { len: 10 }
        );
        assert_eq!(peek(&[0, 0, 0, 1, 1], 10).unwrap(), Peek::Whole { len: 1 });
        assert_eq!(peek(&[0, 0, 0, 0], 10).unwrap(), Peek::Whole { len: 0 });
        match peek(&[0, 0, 0, 11], 10) {
            Err(ProtocolError::FrameTooLarge { len: 11, max: 10 }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_taken_back() {
        let mut dst = BytesMut::from(&b"before"[..]);
        let at = start(&mut dst);
        dst.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            finish(&mut dst, at, 8, 10),
            Err(ProtocolError::FrameTooLarge { len: 11, max: 10 })
        ));
        assert_eq!(&dst[..], b"before");
        let at = start(&mut dst);
        dst.extend_from_slice(&[1, 2, 3]);
        finish(&mut dst, at, 7, 10).unwrap();
        assert_eq!(&dst[6..], &[0, 0, 0, 10, 1, 2, 3]);
    }
}
