//! Sockets passed with a request, tracked until the worker closes them.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use drover_proto::{RequestId, ToSupervisor};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::shared::Shared;

/// Tells the supervisor, when dropped, that a passed socket was closed,
/// so it can route new sockets to the worker holding the fewest.
struct ClosedOnDrop {
    id: RequestId,
    worker: Arc<Shared>,
}

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        // The supervisor gone means nobody counts any more.
        let _ = self.worker.send(ToSupervisor::SocketClosed { id: self.id });
    }
}

/// A descriptor that came with a request, not yet turned into a socket.
/// Dropping it closes it (and tells the supervisor).
pub struct PassedFd {
    fd: OwnedFd,
    closed: ClosedOnDrop,
}

impl fmt::Debug for PassedFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassedFd")
            .field("fd", &self.fd)
            .field("request", &self.closed.id)
            .finish()
    }
}

impl PassedFd {
    pub(crate) fn new(fd: OwnedFd, id: RequestId, worker: Arc<Shared>) -> PassedFd {
        PassedFd {
            fd,
            closed: ClosedOnDrop { id, worker },
        }
    }

    /// Turns the descriptor into a socket type (`tokio::net::TcpStream`,
    /// `tokio::net::UnixStream`, or `OwnedFd` itself), still tracked: the
    /// supervisor learns it was closed when the [`PassedSocket`] drops.
    ///
    /// # Errors
    ///
    /// The descriptor is not of that kind, or tokio cannot register it.
    pub fn into_socket<T: FromPassedFd>(self) -> io::Result<PassedSocket<T>> {
        let PassedFd { fd, closed } = self;
        Ok(PassedSocket {
            socket: T::from_passed_fd(fd)?,
            _closed: closed,
        })
    }
}

/// Socket types a passed descriptor can become.
pub trait FromPassedFd: Sized {
    /// Converts the descriptor.
    ///
    /// # Errors
    ///
    /// The descriptor is not of this kind, or cannot be registered.
    fn from_passed_fd(fd: OwnedFd) -> io::Result<Self>;
}

impl FromPassedFd for OwnedFd {
    fn from_passed_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(fd)
    }
}

impl FromPassedFd for tokio::net::TcpStream {
    fn from_passed_fd(fd: OwnedFd) -> io::Result<Self> {
        let std = std::net::TcpStream::from(fd);
        std.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(std)
    }
}

impl FromPassedFd for tokio::net::UnixStream {
    fn from_passed_fd(fd: OwnedFd) -> io::Result<Self> {
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(std)
    }
}

impl FromPassedFd for tokio::net::TcpListener {
    fn from_passed_fd(fd: OwnedFd) -> io::Result<Self> {
        let std = std::net::TcpListener::from(fd);
        std.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std)
    }
}

impl FromPassedFd for tokio::net::UnixListener {
    fn from_passed_fd(fd: OwnedFd) -> io::Result<Self> {
        let std = std::os::unix::net::UnixListener::from(fd);
        std.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(std)
    }
}

impl FromPassedFd for std::net::TcpListener {
    fn from_passed_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(std::net::TcpListener::from(fd))
    }
}

/// A socket passed with a request. Use it as the socket itself (it
/// dereferences to it, and reads and writes through it); when it drops, the
/// socket is closed and the supervisor is told.
pub struct PassedSocket<T> {
    socket: T,
    _closed: ClosedOnDrop,
}

impl<T: fmt::Debug> fmt::Debug for PassedSocket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassedSocket")
            .field("socket", &self.socket)
            .finish()
    }
}

impl<T> Deref for PassedSocket<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.socket
    }
}

impl<T> DerefMut for PassedSocket<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.socket
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PassedSocket<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PassedSocket<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }
}
