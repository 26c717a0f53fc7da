//! The raw child: echo every frame until end of file.
//!
//! The one module with `unsafe`: taking ownership of the descriptor the
//! parent left open for this process.
#![allow(unsafe_code)]

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::args::MAX_PAYLOAD;
use crate::error::Error;

/// Buffer size of both directions.
const BUFFER: usize = 64 * 1024;

/// Claims the socket named by `fd_number` and echoes frames until the
/// parent closes its end.
///
/// # Errors
///
/// [`Error::RawChildSocket`] if `fd_number` is not an open socket,
/// [`Error::Raw`] if the socket fails or a frame is cut or oversize.
pub fn run(fd_number: &str) -> Result<(), Error> {
    let stream = claim(fd_number)?;
    echo(stream).map_err(Error::raw("child echo"))
}

/// Takes ownership of the inherited socket (the hand-written tokio
/// pool's children claim theirs the same way).
pub(crate) fn claim(fd_number: &str) -> Result<UnixStream, Error> {
    let bad = || Error::RawChildSocket {
        value: fd_number.to_owned(),
    };
    let fd: RawFd = fd_number.parse().map_err(|_| bad())?;
    if fd <= 2 {
        return Err(bad());
    }
    // SAFETY: the parent cleared close-on-exec on exactly this descriptor
    // (its end of our socket pair) and named it in the variable; nothing
    // in this process opened it, so nothing else owns or closes it. If the
    // number is stale the check below finds out before any use.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    match rustix::fs::fstat(&owned) {
        Ok(stat)
            if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                == rustix::fs::FileType::Socket =>
        {
            Ok(UnixStream::from(owned))
        }
        _ => {
            // Not ours to close: it may not even be open.
            std::mem::forget(owned);
            Err(bad())
        }
    }
}

/// Answers each frame with the same frame. Answers are buffered and
/// written when no more input is waiting, so a pipelined burst costs one
/// write, not one per frame.
fn echo(stream: UnixStream) -> io::Result<()> {
    let mut input = BufReader::with_capacity(BUFFER, stream.try_clone()?);
    let mut output = BufWriter::with_capacity(BUFFER, stream);
    let mut body = Vec::new();
    loop {
        if input.buffer().is_empty() {
            output.flush()?;
            // End of file between frames: the parent is done.
            if input.fill_buf()?.is_empty() {
                return Ok(());
            }
        }
        let mut header = [0u8; 4];
        input.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes is over the limit of {MAX_PAYLOAD}"),
            ));
        }
        body.resize(len, 0);
        input.read_exact(&mut body)?;
        output.write_all(&header)?;
        output.write_all(&body)?;
    }
}
