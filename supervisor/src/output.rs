//! Draining a worker's standard output and error.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

/// Lines of standard error kept for the exit report.
pub(crate) const TAIL_LINES: usize = 20;

/// Longest line kept whole; longer lines are cut (the rest is skipped).
const MAX_LINE: usize = 16 * 1024;

/// The last lines a worker wrote to standard error.
pub(crate) type Tail = Arc<Mutex<VecDeque<String>>>;

/// Where a stream's lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Reads `pipe` to its end, line by line: into `tracing` (with the pool's
/// name and the worker's pid) when `capture`,
/// else through to the supervisor's own stream of the same kind; standard
/// error's last lines also into `tail`.
pub(crate) async fn drain<R: AsyncRead + Unpin>(
    pipe: R,
    stream: Stream,
    pid: u32,
    pool: std::sync::Arc<str>,
    capture: bool,
    tail: Option<Tail>,
) {
    let mut lines = FramedRead::new(pipe, LinesCodec::new_with_max_length(MAX_LINE));
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                format!("[line over {MAX_LINE} bytes cut]")
            }
            Err(LinesCodecError::Io(_)) => break,
        };
        if capture {
            match stream {
                Stream::Stdout => {
                    tracing::info!(target: "drover::output", pool = &*pool, pid, stream = "stdout", "{line}")
                }
                Stream::Stderr => {
                    tracing::warn!(target: "drover::output", pool = &*pool, pid, stream = "stderr", "{line}")
                }
            }
        } else {
            // Pass through, as if the stream were inherited. A closed
            // terminal is no reason to stop draining.
            let _ = match stream {
                Stream::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
                Stream::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
            };
        }
        if let Some(tail) = &tail {
            let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}
