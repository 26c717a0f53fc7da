//! Socket I/O that carries descriptors: `SCM_RIGHTS` on the connection.
//!
//! The reader always uses `recvmsg`, so descriptors that arrive are never
//! lost (a plain `read` would close them); it keeps them in arrival order,
//! and a frame that declares `n` takes the next `n`
//! ([`FdReader::take_fds`]). Truncated ancillary data (`MSG_CTRUNC`) is an
//! error. Descriptors nobody takes are closed when the reader drops.
//!
//! The writer sends a frame that carries descriptors with one `sendmsg`
//! whose data begins with that frame, so the descriptors arrive with its
//! first byte, before the receiver can have decoded it.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::frame::FrameTracker;

/// Most descriptors one frame may carry.
pub const MAX_FDS_PER_FRAME: usize = 8;

/// A read this large, inside one frame's body, goes the fast way.
const BULK_READ: usize = 16 * 1024;

/// Most bytes one `recvmsg` reads.
const RECV_CHUNK: usize = 64 * 1024;

/// Room for the descriptors of one `recvmsg`: the kernel never merges the
/// descriptors of two `sendmsg` calls into one read, and one call carries
/// one frame's.
const RECV_FDS: usize = MAX_FDS_PER_FRAME;

/// The read half of a connection, receiving data and descriptors.
#[derive(Debug)]
pub struct FdReader {
    half: OwnedReadHalf,
    fds: VecDeque<OwnedFd>,
    /// Where the reader is in the stream of frames, so that the body of a
    /// large frame can be read the fast way (below).
    frames: FrameTracker,
}

impl FdReader {
    /// Wraps the read half of a connection.
    pub fn new(half: OwnedReadHalf) -> FdReader {
        FdReader {
            half,
            fds: VecDeque::new(),
            frames: FrameTracker::default(),
        }
    }

    /// Takes the next `n` received descriptors, in arrival order; `None`
    /// (taking nothing) if fewer than `n` have arrived.
    pub fn take_fds(&mut self, n: usize) -> Option<Vec<OwnedFd>> {
        if n == 0 {
            return Some(Vec::new());
        }
        if self.fds.len() < n {
            return None;
        }
        Some(self.fds.drain(..n).collect())
    }

    /// Descriptors received and not yet taken.
    pub fn pending_fds(&self) -> usize {
        self.fds.len()
    }
}

/// Descriptors sent with a frame were lost on the way: the kernel
/// truncated the ancillary data (`MSG_CTRUNC`), because the peer sent more
/// than a frame may carry. The `io::Error` [`FdReader`] reads fail with
/// carries this, so a reader tells it from a failing socket by its type
/// ([`DescriptorsLost::is`]), never by its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ancillary data truncated (MSG_CTRUNC): descriptors were lost")]
pub struct DescriptorsLost;

impl DescriptorsLost {
    /// Whether `error` is this one.
    pub fn is(error: &io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.is::<DescriptorsLost>())
    }
}

/// The error `FdReader` gives when the kernel truncated ancillary data.
pub fn truncated_ancillary() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, DescriptorsLost)
}

impl AsyncRead for FdReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Inside the body of a large frame, when the read cannot go past
        // it: a frame's descriptors arrive with its first bytes (the writer
        // starts a `sendmsg` with them), so none can be in this read, and a
        // plain read into the buffer, uninitialised memory and all, is
        // safe to use. It saves zeroing the buffer, which safe code must do
        // before `recvmsg`: a pass over every byte of a large payload.
        let remaining = buf.remaining();
        if remaining >= BULK_READ
            && this
                .frames
                .inside_body()
                .is_some_and(|body_left| remaining <= body_left)
        {
            //
            // Through `try_io` (`try_read_buf`), which forgets the socket's
            // readiness only on `WouldBlock`: a read that stops short of
            // what is there (a hostile peer's descriptors in the middle of
            // a body end a read early; the kernel drops them, since workers
            // never send any) must not leave the rest unread until the
            // peer writes again, which it may never do.
            let before = buf.filled().len();
            loop {
                ready!(this.half.as_ref().poll_read_ready(cx))?;
                match this.half.try_read_buf(buf) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            let read = &buf.filled()[before..];
            this.frames.saw(read);
            return Poll::Ready(Ok(()));
        }
        let stream = this.half.as_ref();
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let room = buf.remaining().min(RECV_CHUNK);
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(RECV_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let fds = &mut this.fds;
            // A read that got everything there was is told to tokio as
            // `WouldBlock` too, so that it forgets the socket's readiness
            // now instead of after one more `recvmsg` that finds nothing
            // (two system calls per request on each side at one request
            // at a time, as `strace -c` of the echo benchmark counts).
            // "Everything" is a short read that brought no descriptors:
            // the kernel ends a read early after a message with
            // descriptors, never before one, and readiness is forgotten
            // only if no new data arrived since it was polled, so no byte
            // is left waiting for a wake-up that was already spent.
            let mut drained = None;
            let result = stream.try_io(Interest::READABLE, || {
                let received = recv_into(stream, buf, room, &mut control)?;
                let before = fds.len();
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(passed) = message {
                        fds.extend(passed);
                    }
                }
                let short = received.bytes > 0 && received.bytes < room;
                if short && fds.len() == before && !received.flags.contains(ReturnFlags::CTRUNC) {
                    drained = Some(received);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(received)
            });
            let received = match (result, drained) {
                (_, Some(received)) | (Ok(received), None) => received,
                (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (Err(e), None) => return Poll::Ready(Err(e)),
            };
            // SAFETY: `recvmsg` wrote the first `received.bytes` bytes of
            // the unfilled part (the kernel never reports more than it
            // wrote, and never more than the `room` it was given).
            #[allow(unsafe_code)]
            unsafe {
                buf.assume_init(received.bytes);
            }
            buf.advance(received.bytes);
            if received.flags.contains(ReturnFlags::CTRUNC) {
                return Poll::Ready(Err(truncated_ancillary()));
            }
            this.frames
                .saw(&buf.filled()[buf.filled().len() - received.bytes..]);
            return Poll::Ready(Ok(()));
        }
    }
}

/// One `recvmsg` into the first `room` bytes of `buf`'s unfilled part,
/// memory the caller may not have initialised; marks nothing filled.
///
/// Receiving straight into the caller's buffer, instead of into one of the
/// reader's own and copying out what came, saves a pass over every byte
/// received: at 4 KiB payloads that copy was a third of the supervisor's
/// instructions and half of a worker's (callgrind, the echo benchmark at
/// C = 256), and the reader's 64 KiB of its own go too. Safe code would
/// have to zero the memory first, which costs about as much as the copy.
#[allow(unsafe_code)]
fn recv_into(
    stream: &tokio::net::UnixStream,
    buf: &mut ReadBuf<'_>,
    room: usize,
    control: &mut RecvAncillaryBuffer<'_>,
) -> io::Result<rustix::net::RecvMsg> {
    // SAFETY: nothing is de-initialised: the slice is only written, by the
    // kernel, and nothing here reads it; what `recvmsg` reports written the
    // caller marks initialised. (The same cast tokio makes for its own
    // reads.)
    let dst = unsafe { &mut buf.unfilled_mut()[..room] };
    let dst = unsafe { &mut *(std::ptr::from_mut::<[MaybeUninit<u8>]>(dst) as *mut [u8]) };
    let mut iov = [IoSliceMut::new(dst)];
    rustix::net::recvmsg(stream.as_fd(), &mut iov, control, RecvFlags::CMSG_CLOEXEC)
        .map_err(io::Error::from)
}

/// Sends `data` with `fds` attached as `SCM_RIGHTS`; returns how many bytes
/// of `data` went (at least one, so the descriptors went too).
pub async fn send_with_fds(
    half: &OwnedWriteHalf,
    data: &[u8],
    fds: &[OwnedFd],
) -> io::Result<usize> {
    loop {
        half.writable().await?;
        match try_send_with_fds(half, data, fds) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

/// [`send_with_fds`] if the socket takes it at once; `WouldBlock` if not,
/// and then nothing went.
pub fn try_send_with_fds(half: &OwnedWriteHalf, data: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    let stream = half.as_ref();
    let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    stream.try_io(Interest::WRITABLE, || {
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_FRAME))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many descriptors for one frame",
            ));
        }
        rustix::net::sendmsg(
            stream.as_fd(),
            &[IoSlice::new(data)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(io::Error::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lost descriptors are told from any other error by their type.
    #[test]
    fn lost_descriptors_are_recognised_by_type_not_kind() {
        assert!(DescriptorsLost::is(&truncated_ancillary()));
        let same_kind = io::Error::new(io::ErrorKind::InvalidData, "something else");
        assert!(!DescriptorsLost::is(&same_kind));
        assert!(!DescriptorsLost::is(&io::ErrorKind::InvalidData.into()));
        assert_eq!(
            truncated_ancillary().to_string(),
            "ancillary data truncated (MSG_CTRUNC): descriptors were lost"
        );
    }
}
