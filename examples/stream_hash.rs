//! Streams a large file, made on the fly, through a worker that answers
//! with its byte count and hash; prints the throughput.
//!
//! ```sh
//! cargo run --release --example stream_hash -- 2048   # MiB, default 512
//! ```
//!
//! The file never exists in memory on either side: it goes a window at a
//! time. This one binary is both sides.

use std::hash::Hasher;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use drover::worker::Request;
use drover::Supervisor;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if drover::worker::is_worker_process() {
        drover::worker::serve(hash_stream).await?;
        return Ok(());
    }
    let mib: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(512);
    let len = mib * 1024 * 1024;
    let pool = Supervisor::builder(std::env::current_exe()?)
        .spawn()
        .await?;

    let started = Instant::now();
    let answer = pool.request(&()).stream(Generated::new(len)).send().await?;
    let (count, hash): (u64, u64) = answer.data()?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "worker pid {} hashed {count} bytes: {hash:016x} in {seconds:.2} s ({:.0} MiB/s)",
        answer.pid(),
        count as f64 / (1024.0 * 1024.0) / seconds
    );

    // The same bytes hashed here must give the same answer.
    let (local_count, local_hash) = hash_all(Generated::new(len)).await?;
    assert_eq!(
        (count, hash),
        (local_count, local_hash),
        "the worker saw other bytes"
    );
    println!("checked: the supervisor's own hash agrees");
    pool.soft_kill().await;
    Ok(())
}

/// The worker: read the request's stream to its end, answer (bytes, hash).
async fn hash_stream(mut req: Request) -> Result<(), drover::worker::Error> {
    let Some(stream) = req.stream() else {
        return req.fail("send a stream to hash");
    };
    match hash_all(stream).await {
        Ok(answer) => req.respond(&answer),
        Err(e) => req.fail(format!("reading the stream failed: {e}")),
    }
}

async fn hash_all(mut source: impl AsyncRead + Unpin) -> std::io::Result<(u64, u64)> {
    let mut hasher = std::hash::DefaultHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut count = 0u64;
    loop {
        let n = source.read(&mut buf).await?;
        if n == 0 {
            return Ok((count, hasher.finish()));
        }
        hasher.write(&buf[..n]);
        count += n as u64;
    }
}

/// `len` bytes of a counter pattern, made as they are read.
struct Generated {
    produced: u64,
    len: u64,
}

impl Generated {
    fn new(len: u64) -> Generated {
        Generated { produced: 0, len }
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.len - self.produced) as usize;
        let start = self.produced;
        let block = buf.initialize_unfilled_to(n);
        // Byte `p` of the file is byte `p % 8` of the little-endian `p / 8`:
        // the same bytes however the file is read.
        for (i, byte) in block.iter_mut().enumerate() {
            let p = start + i as u64;
            *byte = ((p / 8) >> ((p % 8) * 8)) as u8;
        }
        buf.advance(n);
        self.produced += n as u64;
        Poll::Ready(Ok(()))
    }
}
