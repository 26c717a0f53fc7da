//! `--memory`: an idle worker's resident memory, and what one queued
//! request costs the supervisor.

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use drover_supervisor::{Supervisor, WorkerState};

use crate::error::Error;
use crate::report::MemoryReport;
use crate::stats;
use crate::worker::{PAUSE, PAUSE_ENV};

/// Requests held in the queue while the supervisor's memory is measured.
const QUEUED: usize = 1_000_000;

/// Payload bytes of each queued request.
const PAYLOAD: usize = 64;

/// The queue's bound: room for every queued request.
const MAX_QUEUE: usize = 1_100_000;

/// Starts a pool of one worker, reads its RSS while idle, pauses it, queues
/// [`QUEUED`] requests and measures how much this process grew; then
/// hard-kills the pool.
///
/// # Errors
///
/// The pool's failure to start or to pause, [`Error::NotQueued`] if
/// requests were dispatched instead of queued, [`Error::Proc`] if a
/// reading fails.
pub async fn run() -> Result<MemoryReport, Error> {
    let program = std::env::current_exe().map_err(Error::CurrentExe)?;
    let idle = idle_sdk_worker_rss_kb(&program).await?;
    let pool = Supervisor::builder(program)
        .workers(1)
        .env(PAUSE_ENV, "1")
        .max_queue(MAX_QUEUE)
        .spawn()
        .await?;
    let bench_worker = idle_worker_rss_kb(&pool);
    let bench_worker = match bench_worker {
        Ok(rss) => rss,
        Err(e) => {
            pool.hard_kill().await;
            return Err(e);
        }
    };
    // How the requests are kept queued: an `enqueue_bytes` future puts its
    // request in the supervisor's queue on its first poll, then waits for
    // the answer; dropping it cancels the request. So each future is
    // boxed, polled exactly once by hand (with a no-op waker: nobody needs
    // waking, the answers never come) and kept in a `Vec`. Besides the
    // supervisor's own entry, each request then costs the box holding the
    // future (the caller's side of any request; its size is printed on
    // stderr), an 8-byte `Vec` slot, and the 64-byte payload (its own
    // allocation, as a real caller's would be). A `tokio::spawn` per
    // request would add a task per request, a cost of that choice rather
    // than of the supervisor; a `FuturesUnordered` adds a node per future
    // and polls only a few futures per call, so when each request enters
    // the queue is out of our hands.
    //
    // The futures must outlive the hard kill: dropping a queued request's
    // future cancels it, which searches the queue for it, so dropping a
    // million of them before the kill empties the queue would take a
    // million searches of up to a million entries.
    let mut queued = Vec::new();
    let measured = async {
        pause(&pool).await?;
        let before = stats::status_kb(None, "VmRSS")?;
        queued.reserve_exact(QUEUED);
        let mut cx = Context::from_waker(Waker::noop());
        for index in 0..QUEUED {
            let payload = Bytes::from(crate::payload::random(PAYLOAD));
            let mut future = Box::pin(pool.enqueue_bytes(payload));
            if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
                let outcome = match result {
                    Ok(_) => "was answered".to_owned(),
                    Err(e) => format!("failed: {e}"),
                };
                return Err(Error::NotQueued(format!(
                    "request {index} {outcome} instead of waiting in the queue"
                )));
            }
            queued.push(future);
        }
        expect_paused(&pool)?;
        let after = stats::status_kb(None, "VmRSS")?;
        let per_request = (after.saturating_sub(before) * 1024) as f64 / QUEUED as f64;
        let future_size = queued.first().map_or(0, |f| size_of_val(&**f));
        let callers_share = future_size + 8 + PAYLOAD;
        eprintln!(
            "drover-bench: VmRSS {before} kB before, {after} kB with {QUEUED} queued: \
             {per_request:.1} bytes per request; the caller holds {callers_share} of them \
             (boxed future {future_size}, Vec slot 8, payload {PAYLOAD}) plus allocator \
             overhead, the supervisor about {:.0} (queue entry, reply slot)",
            per_request - callers_share as f64
        );
        Ok(per_request)
    }
    .await;
    pool.hard_kill().await;
    drop(queued);
    Ok(MemoryReport {
        implementation: "drover",
        mode: "memory",
        idle_worker_rss_kb: idle,
        bench_worker_rss_kb: bench_worker,
        queued_requests: QUEUED,
        queued_bytes_per_request: measured?,
    })
}

/// The program of the smallest SDK worker, built with this binary.
const IDLE_WORKER: &str = "drover-bench-idle-worker";

/// `VmRSS` of an idle [`IDLE_WORKER`] (found beside `program`), in a pool
/// of its own that is hard-killed after.
async fn idle_sdk_worker_rss_kb(program: &std::path::Path) -> Result<u64, Error> {
    let worker = program.with_file_name(IDLE_WORKER);
    if !worker.is_file() {
        return Err(Error::MissingProgram { program: worker });
    }
    let pool = Supervisor::builder(worker).workers(1).spawn().await?;
    let rss = idle_worker_rss_kb(&pool);
    pool.hard_kill().await;
    rss
}

/// `VmRSS` of the pool's one worker, right after it came online.
fn idle_worker_rss_kb(pool: &Supervisor) -> Result<u64, Error> {
    let health = pool.health();
    let worker = health
        .first()
        .ok_or_else(|| Error::NotQueued("the pool has no worker".to_owned()))?;
    let rss = stats::status_kb(Some(worker.pid), "VmRSS")?;
    eprintln!(
        "drover-bench: idle worker pid {}: VmRSS {rss} kB",
        worker.pid
    );
    Ok(rss)
}

/// Makes the worker busy, so that the requests after this stay queued,
/// then lets the pool settle (the memory sampler's first tick, the
/// connection tasks) so the `before` reading holds only what the pool
/// keeps anyway.
async fn pause(pool: &Supervisor) -> Result<(), Error> {
    pool.enqueue_bytes(Bytes::from_static(PAUSE)).await?;
    expect_paused(pool)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Checks the one worker is busy and holds no request: everything sent
/// now waits in the supervisor's queue.
fn expect_paused(pool: &Supervisor) -> Result<(), Error> {
    let health = pool.health();
    match health.as_slice() {
        [worker] if worker.state == WorkerState::Busy && worker.in_flight == 0 => Ok(()),
        _ => Err(Error::NotQueued(format!(
            "expected one busy worker holding no request, found {health:?}"
        ))),
    }
}
