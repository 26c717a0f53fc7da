//! Draining a worker's standard output and error.
//!
//! Each piped stream gets one task, [`drain`], that reads it to end of file
//! whatever the worker writes: a worker must never see `EPIPE` (and Rust's
//! `eprintln!` panic) while its supervisor lives, and the crash report's
//! tail must keep up to the last line.
//!
//! The bytes are split into lines at `\n` (a `\r` before it is dropped).
//! Every line becomes one `String`, passed through or captured into
//! `tracing`, and for standard error also kept in the [`Tail`]:
//!
//! - **Invalid UTF-8** is converted lossily: each bad sequence becomes
//!   U+FFFD (`String::from_utf8_lossy`).
//! - **A line over [`MAX_LINE`] bytes** (16 KiB) is cut: its first
//!   `MAX_LINE` bytes are kept (less up to 3, so as not to split a UTF-8
//!   character), the rest up to the newline is counted and skipped, never
//!   buffered, and once the line's end is seen it is emitted with the marker
//!   ` [line cut: N more bytes skipped]` appended (see [`cut_marker`]).
//!   Memory stays bounded, about 80 KiB per stream (a 64 KiB read buffer
//!   and one line), whatever the line's length.
//! - **A partial last line** (no newline before end of file) is still
//!   emitted.
//!
//! Reading stops only at end of file, or at a read error other than
//! `Interrupted` / `WouldBlock` (which are retried): that means the pipe
//! itself is broken, and it is logged at debug level. Failing to pass a line
//! through (a closed terminal) is ignored: draining goes on.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Lines of standard error kept for the exit report.
pub(crate) const TAIL_LINES: usize = 20;

/// Longest line kept whole; longer lines are cut (the rest is skipped).
const MAX_LINE: usize = 16 * 1024;

/// Bytes read from the pipe at a time.
const READ_BUFFER: usize = 64 * 1024;

/// The last lines a worker wrote to standard error.
pub(crate) type Tail = Arc<Mutex<VecDeque<String>>>;

/// Where a stream's lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Reads `pipe` to its end, line by line (see the [module docs](self) for
/// long lines and invalid UTF-8): into `tracing` (with the pool's name and
/// the worker's pid) when `capture`, else through to the supervisor's own
/// stream of the same kind; standard error's last lines also into `tail`.
pub(crate) async fn drain<R: AsyncRead + Unpin>(
    mut pipe: R,
    stream: Stream,
    pid: u32,
    pool: Arc<str>,
    capture: bool,
    tail: Option<Tail>,
) {
    let mut emit = |line: String| {
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
    };

    let mut buf = vec![0u8; READ_BUFFER].into_boxed_slice();
    let mut lines = Lines::default();
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => lines.feed(&buf[..n], &mut emit),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => tokio::task::yield_now().await,
            Err(error) => {
                tracing::debug!(
                    target: "drover::output",
                    pool = &*pool,
                    pid,
                    stream = stream.name(),
                    "reading the worker's output failed, draining stops: {error}"
                );
                break;
            }
        }
    }
    lines.finish(&mut emit);
}

/// The text appended to a line cut after [`MAX_LINE`] bytes, `skipped`
/// being how many bytes of it were dropped.
fn cut_marker(skipped: u64) -> String {
    format!(" [line cut: {skipped} more bytes skipped]")
}

/// Splits bytes, fed in pieces of any size, into lines in bounded memory.
#[derive(Debug)]
struct Lines {
    /// The current line's first bytes, at most [`MAX_LINE`].
    line: Vec<u8>,
    /// How many bytes of the current line were past [`MAX_LINE`].
    skipped: u64,
}

impl Default for Lines {
    fn default() -> Lines {
        Lines {
            // Never grown past this: the bound holds whatever comes.
            line: Vec::with_capacity(MAX_LINE),
            skipped: 0,
        }
    }
}

impl Lines {
    /// Takes the next `bytes`, handing each line they end to `emit`.
    fn feed(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(String)) {
        while let Some(end) = find_newline(bytes) {
            self.push(&bytes[..end]);
            emit(self.take_line());
            bytes = &bytes[end + 1..];
        }
        self.push(bytes);
    }

    /// At end of file: hands the partial last line, if any, to `emit`.
    fn finish(&mut self, emit: &mut impl FnMut(String)) {
        if !self.line.is_empty() || self.skipped > 0 {
            emit(self.take_line());
        }
    }

    /// Adds part of the current line: up to [`MAX_LINE`] kept, the rest
    /// only counted.
    fn push(&mut self, part: &[u8]) {
        let room = MAX_LINE - self.line.len();
        let kept = part.len().min(room);
        self.line.extend_from_slice(&part[..kept]);
        self.skipped += (part.len() - kept) as u64;
    }

    /// The current line as text, marked if cut; starts the next one.
    fn take_line(&mut self) -> String {
        let mut skipped = std::mem::take(&mut self.skipped);
        if skipped > 0 {
            let keep = char_boundary(&self.line);
            skipped += (self.line.len() - keep) as u64;
            self.line.truncate(keep);
        } else if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let mut text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        if skipped > 0 {
            text.push_str(&cut_marker(skipped));
        }
        text
    }
}

/// The index of the first `\n` in `bytes`.
///
/// Over a slice, `BufRead::skip_until` searches with std's precompiled,
/// optimised `memchr`, so it is fast in debug builds too: a gibibyte takes
/// about 0.1 s there, against 5 s for `iter().position` (and 3 s for the
/// `memchr` crate built unoptimised).
fn find_newline(bytes: &[u8]) -> Option<usize> {
    let mut rest = bytes;
    let read = std::io::BufRead::skip_until(&mut rest, b'\n').ok()?;
    (read > 0 && bytes[read - 1] == b'\n').then(|| read - 1)
}

/// The length of `bytes` less a UTF-8 character cut short at its end, if
/// any: where to cut a line so that its last character stays whole.
fn char_boundary(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let byte = bytes[len - back];
        if byte & 0xC0 != 0x80 {
            // The last character starts here; is it complete?
            let width = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if width > back { len - back } else { len };
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncWriteExt, ReadBuf};

    /// The lines `input` makes when fed in pieces of `chunk` bytes.
    fn split(input: &[u8], chunk: usize) -> Vec<String> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let mut emit = |line| out.push(line);
        for piece in input.chunks(chunk) {
            lines.feed(piece, &mut emit);
        }
        lines.finish(&mut emit);
        out
    }

    /// A sample of everything a worker may write, and the lines it makes.
    fn sample() -> (Vec<u8>, Vec<String>) {
        let mut input = Vec::new();
        input.extend_from_slice(b"first\n\ncrlf\r\n");
        input.extend(std::iter::repeat_n(b'a', MAX_LINE));
        input.extend_from_slice(b"\n");
        input.extend(std::iter::repeat_n(b'b', MAX_LINE + 1000));
        input.extend_from_slice(b"\r\n\xff\xfe bad \xc3\x28\nafter\npartial");
        let expected = vec![
            "first".to_owned(),
            String::new(),
            "crlf".to_owned(),
            "a".repeat(MAX_LINE),
            format!("{}{}", "b".repeat(MAX_LINE), cut_marker(1001)),
            "\u{FFFD}\u{FFFD} bad \u{FFFD}(".to_owned(),
            "after".to_owned(),
            "partial".to_owned(),
        ];
        (input, expected)
    }

    #[test]
    fn lines_are_the_same_whatever_the_pieces() {
        let (input, expected) = sample();
        for chunk in [
            1,
            2,
            3,
            7,
            100,
            4096,
            MAX_LINE - 1,
            MAX_LINE,
            MAX_LINE + 1,
            READ_BUFFER,
            input.len(),
        ] {
            assert_eq!(split(&input, chunk), expected, "pieces of {chunk} bytes");
        }
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // "a" then two-byte characters: byte MAX_LINE - 1 starts one.
        let line = format!("a{}", "é".repeat(MAX_LINE));
        let lines = split(format!("{line}\n").as_bytes(), 1000);
        let kept = format!("a{}", "é".repeat(MAX_LINE / 2 - 1));
        assert_eq!(kept.len(), MAX_LINE - 1);
        let skipped = (line.len() - kept.len()) as u64;
        assert_eq!(lines, vec![format!("{kept}{}", cut_marker(skipped))]);
    }

    #[test]
    fn char_boundaries() {
        assert_eq!(char_boundary(b""), 0);
        assert_eq!(char_boundary(b"ab"), 2);
        assert_eq!(char_boundary("aé".as_bytes()), 3);
        assert_eq!(char_boundary(&"aé".as_bytes()[..2]), 1);
        assert_eq!(char_boundary(&"a€".as_bytes()[..3]), 1);
        assert_eq!(char_boundary(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(char_boundary("a😀".as_bytes()), 5);
        // Invalid bytes are left to the lossy conversion.
        assert_eq!(char_boundary(b"a\xff"), 2);
        assert_eq!(char_boundary(b"\x80\x80\x80\x80"), 4);
    }

    #[test]
    fn only_a_line_end_ends_a_line() {
        assert_eq!(find_newline(b""), None);
        assert_eq!(find_newline(b"abc"), None);
        assert_eq!(find_newline(b"\n"), Some(0));
        assert_eq!(find_newline(b"ab\ncd\n"), Some(2));
        assert_eq!(find_newline(b"abc\n"), Some(3));
        assert!(split(b"", 1).is_empty());
    }

    fn tail() -> Tail {
        Arc::default()
    }

    fn lines_of(tail: &Tail) -> Vec<String> {
        tail.lock().unwrap().iter().cloned().collect()
    }

    #[tokio::test]
    async fn drain_reads_a_pipe_to_its_end_and_keeps_the_tail() {
        let (input, expected) = sample();
        // A small pipe: every line arrives in many reads.
        let (mut writer, reader) = tokio::io::duplex(1000);
        let kept = tail();
        let task = tokio::spawn(drain(
            reader,
            Stream::Stderr,
            1,
            Arc::from("test"),
            true,
            Some(kept.clone()),
        ));
        // A long line, far past what is kept: only counted.
        let long = vec![b'x'; 8 * READ_BUFFER];
        writer.write_all(&long).await.unwrap();
        writer.write_all(b"\n").await.unwrap();
        writer.write_all(&input).await.unwrap();
        drop(writer);
        task.await.unwrap();
        let mut want = vec![format!(
            "{}{}",
            "x".repeat(MAX_LINE),
            cut_marker((long.len() - MAX_LINE) as u64)
        )];
        want.extend(expected);
        assert_eq!(lines_of(&kept), want);
    }

    #[tokio::test]
    async fn the_tail_keeps_the_last_lines() {
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let kept = tail();
        drain(
            text.as_bytes(),
            Stream::Stderr,
            1,
            Arc::from("test"),
            true,
            Some(kept.clone()),
        )
        .await;
        let want: Vec<String> = (10..30).map(|i| format!("line {i}")).collect();
        assert_eq!(lines_of(&kept), want);
    }

    /// A pipe that answers reads from a script of results.
    struct Scripted(VecDeque<std::io::Result<&'static [u8]>>);

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match self.0.pop_front() {
                Some(Ok(bytes)) => {
                    buf.put_slice(bytes);
                    Poll::Ready(Ok(()))
                }
                Some(Err(e)) => Poll::Ready(Err(e)),
                None => panic!("read after the end or a fatal error"),
            }
        }
    }

    #[tokio::test]
    async fn interruptions_are_retried_and_a_broken_pipe_ends_the_drain() {
        let kept = tail();
        let pipe = Scripted(VecDeque::from([
            Ok(&b"one\ntw"[..]),
            Err(ErrorKind::Interrupted.into()),
            Ok(&b"o\nthr"[..]),
            Err(ErrorKind::WouldBlock.into()),
            Ok(&b"ee\nfou"[..]),
            Err(ErrorKind::BrokenPipe.into()),
        ]));
        drain(
            pipe,
            Stream::Stderr,
            1,
            Arc::from("test"),
            true,
            Some(kept.clone()),
        )
        .await;
        assert_eq!(lines_of(&kept), ["one", "two", "three", "fou"]);
    }
}
