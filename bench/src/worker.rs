//! The drover worker side of this binary: echo every request.

use drover_worker::{Request, Worker};

use crate::args::{Answer, ANSWER_ENV};
use crate::error::Error;

/// Set (to anything) in a worker's environment to make it understand
/// [`PAUSE`]; only `--memory` sets it, so an echo run with 5-byte
/// payloads is never mistaken for one.
pub const PAUSE_ENV: &str = "DROVER_BENCH_PAUSABLE";

/// The payload that makes a pausable worker call `busy()` (and answer
/// with an empty `ack`): from then on the supervisor routes nothing to it
/// and new requests stay in its queue.
pub const PAUSE: &[u8] = b"pause";

/// Connects to the supervisor and answers each request with its own bytes
/// until told to stop.
///
/// # Errors
///
/// [`Error::Worker`] if the connection or the handshake fails.
pub async fn run() -> Result<(), Error> {
    let worker = Worker::connect().await?;
    if std::env::var_os(crate::queue::STAMP_ENV).is_some() {
        return stamp(worker).await;
    }
    if std::env::var_os(crate::http::WORKER_ENV).is_some() {
        return crate::http::worker(worker).await;
    }
    let pausable = std::env::var_os(PAUSE_ENV)
        .is_some()
        .then(|| worker.clone());
    let answer = std::env::var(ANSWER_ENV)
        .ok()
        .and_then(|name| Answer::from_name(&name))
        .unwrap_or_default();
    worker
        .serve(move |mut req: Request| {
            let pausable = pausable.clone();
            async move {
                if let Some(worker) = pausable {
                    if req.payload() == PAUSE {
                        worker.busy()?;
                        return req.ack();
                    }
                }
                let len = req.payload().len();
                match answer {
                    // The echo sends the very buffer the payload arrived
                    // in back, with no copy.
                    Answer::Echo => {
                        let answer = req.take_payload();
                        req.respond_bytes(answer)
                    }
                    Answer::Write => {
                        let mut written = Vec::with_capacity(len);
                        write_answer(len, |piece| written.extend_from_slice(piece));
                        req.respond_bytes(written)
                    }
                    Answer::WriteInPlace => {
                        let mut written = req.answer_buffer(len);
                        write_answer(len, |piece| written.extend_from_slice(piece));
                        req.respond_buffer(written)
                    }
                    Answer::Yield => {
                        tokio::task::yield_now().await;
                        let answer = req.take_payload();
                        req.respond_bytes(answer)
                    }
                }
            }
        })
        .await?;
    Ok(())
}

/// Produces `len` bytes of an answer, 4 KiB at a time, as a handler that
/// renders or encodes its answer would.
fn write_answer(len: usize, mut put: impl FnMut(&[u8])) {
    const PIECE: usize = 4096;
    let mut piece = [0u8; PIECE];
    let mut left = len;
    while left > 0 {
        let n = left.min(PIECE);
        piece[0] = piece[0].wrapping_add(1);
        put(&piece[..n]);
        left -= n;
    }
}

/// The queue workload's latency worker: reports when each job (its push
/// time) starts, in an event, and acknowledges it.
async fn stamp(worker: Worker) -> Result<(), Error> {
    let events = worker.clone();
    worker
        .serve(move |req: Request| {
            let events = events.clone();
            async move {
                let started = crate::queue::micros_now();
                let pushed: u64 = req.data()?;
                events.emit(crate::queue::STARTED, &(pushed, started))?;
                req.ack()
            }
        })
        .await?;
    Ok(())
}
