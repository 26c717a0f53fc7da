//! Streams a gibibyte, made on the fly, through a worker that answers with
//! its byte count and checksum; prints the throughput of drover's streams.
//!
//! ```sh
//! cargo run --release --example stream_hash            # 1024 MiB
//! cargo run --release --example stream_hash -- 4096    # MiB
//! ```
//!
//! What is measured is drover: one request's stream, from the supervisor to
//! a worker, in flow-controlled frames with at most 256 KiB in flight. The
//! example's own parts run at memory speed: the source copies a
//! pseudo-random block, made once, into each read, and the worker's check
//! is a byte count plus a Fletcher-style checksum over 64-bit words (two
//! additions per eight bytes; it catches bytes lost, added, changed or
//! reordered). The supervisor then runs the same source through the same
//! checksum in its own process, prints how fast that goes alone, and checks
//! that both sides saw the same bytes.
//!
//! The stream never exists in memory on either side: it goes a window at a
//! time, and the worker reports its peak resident memory. This one binary
//! is both sides.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use drover::worker::Request;
use drover::Supervisor;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

const MIB: f64 = 1024.0 * 1024.0;

// One thread on each side: the worker as the README advises, and the
// supervisor since one stream keeps one thread busy (faster here than the
// multi-thread runtime).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if drover::worker::is_worker_process() {
        drover::worker::serve(check_stream).await?;
        return Ok(());
    }
    let mib: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1024);
    let len = mib * 1024 * 1024;
    let pool = Supervisor::builder(std::env::current_exe()?)
        .spawn()
        .await?;

    let started = Instant::now();
    let answer = pool.request(&()).stream(Repeated::new(len)).send().await?;
    let seconds = started.elapsed().as_secs_f64();
    let (count, checksum, peak_rss): (u64, u64, Option<u64>) = answer.data()?;
    println!(
        "streamed {count} bytes ({:.2} GiB) to worker pid {} in {seconds:.2} s: {:.0} MiB/s \
         (one stream, at most {} KiB in flight)",
        count as f64 / MIB / 1024.0,
        answer.pid(),
        count as f64 / MIB / seconds,
        drover::proto::STREAM_WINDOW / 1024,
    );
    if let Some(rss) = peak_rss {
        println!("worker's peak resident memory: {:.1} MiB", rss as f64 / MIB);
    }

    // The same bytes through the same checksum here, with no drover in
    // between: how fast the example's own parts go, and a check that the
    // worker saw these bytes.
    let started = Instant::now();
    let (local_count, local_checksum) = check_all(Repeated::new(len)).await?;
    let local_seconds = started.elapsed().as_secs_f64();
    assert_eq!(
        (count, checksum),
        (local_count, local_checksum),
        "the worker saw other bytes"
    );
    println!(
        "checked: the supervisor's own count and checksum agree ({checksum:016x}); \
         source and checksum alone, in one process: {:.0} MiB/s",
        local_count as f64 / MIB / local_seconds
    );
    pool.soft_kill().await;
    Ok(())
}

/// The worker: read the request's stream to its end, answer (bytes,
/// checksum, peak resident memory).
async fn check_stream(mut req: Request) -> Result<(), drover::worker::Error> {
    let Some(stream) = req.stream() else {
        return req.fail("send a stream to check");
    };
    match check_all(stream).await {
        Ok((count, checksum)) => req.respond(&(count, checksum, peak_rss())),
        Err(e) => req.fail(format!("reading the stream failed: {e}")),
    }
}

async fn check_all(mut source: impl AsyncRead + Unpin) -> std::io::Result<(u64, u64)> {
    let mut checksum = Checksum::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = source.read(&mut buf).await?;
        if n == 0 {
            return Ok((checksum.count, checksum.finish()));
        }
        checksum.write(&buf[..n]);
    }
}

/// A Fletcher-style checksum over the stream's 64-bit little-endian words
/// (`a` sums the words, `b` sums the running `a`, so order counts), the
/// same however the stream is split into reads.
#[derive(Default)]
struct Checksum {
    count: u64,
    a: u64,
    b: u64,
    /// Bytes of a word not yet complete.
    tail: [u8; 8],
    tail_len: usize,
}

impl Checksum {
    fn write(&mut self, mut bytes: &[u8]) {
        self.count += bytes.len() as u64;
        if self.tail_len > 0 {
            let n = (8 - self.tail_len).min(bytes.len());
            self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&bytes[..n]);
            self.tail_len += n;
            bytes = &bytes[n..];
            if self.tail_len < 8 {
                return;
            }
            self.add(u64::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().unwrap()));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    fn add(&mut self, word: u64) {
        self.a = self.a.wrapping_add(word);
        self.b = self.b.wrapping_add(self.a);
    }

    fn finish(mut self) -> u64 {
        if self.tail_len > 0 {
            self.tail[self.tail_len..].fill(0);
            self.add(u64::from_le_bytes(self.tail));
        }
        self.a ^ self.b.rotate_left(32)
    }
}

/// The worker's peak resident memory (`VmHWM` in `/proc/self/status`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `len` bytes: a pseudo-random block, made once and repeated, copied into
/// each read.
struct Repeated {
    block: Vec<u8>,
    produced: u64,
    len: u64,
}

impl Repeated {
    /// An odd length, so the pattern never lines up with the stream's
    /// frames: a frame lost, doubled or swapped changes the checksum.
    const BLOCK: usize = (1 << 20) + 13;

    fn new(len: u64) -> Repeated {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let block = (0..Repeated::BLOCK)
            .map(|_| {
                // xorshift64
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        Repeated {
            block,
            produced: 0,
            len,
        }
    }
}

impl AsyncRead for Repeated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let mut left = (buf.remaining() as u64).min(this.len - this.produced) as usize;
        while left > 0 {
            let at = (this.produced % Repeated::BLOCK as u64) as usize;
            let n = left.min(Repeated::BLOCK - at);
            buf.put_slice(&this.block[at..at + n]);
            this.produced += n as u64;
            left -= n;
        }
        Poll::Ready(Ok(()))
    }
}
