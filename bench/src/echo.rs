//! The echo workload against a drover pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_supervisor::Supervisor;
use tokio::task::JoinSet;

use crate::args::EchoOptions;
use crate::error::Error;
use crate::report::EchoReport;
use crate::stats::Latencies;

/// Starts a pool of copies of this binary, sends `options.requests` echo
/// requests with at most `options.concurrency` in flight, and soft-kills
/// the pool, whatever happened.
///
/// # Errors
///
/// The pool's failure to start, the first failed request, or an answer
/// that is not the echo of its request.
pub async fn run(options: &EchoOptions) -> Result<EchoReport, Error> {
    let program = std::env::current_exe().map_err(Error::CurrentExe)?;
    let cap = options.per_worker();
    eprintln!(
        "drover-bench: drover, {} workers, max_concurrency {cap} per worker, \
         {} requests of {} bytes, {} in flight, supervisor runtime: {}",
        options.workers,
        options.requests,
        options.payload,
        options.concurrency,
        match options.threads {
            1 => "current-thread".to_owned(),
            n => format!("{n} threads"),
        }
    );
    let started = Instant::now();
    let mut builder = Supervisor::builder(program);
    if let Some(bytes) = options.shared_memory {
        builder = builder.shared_memory(bytes);
    }
    if options.answer != crate::args::Answer::Echo {
        builder = builder.env(crate::args::ANSWER_ENV, options.answer.name());
    }
    let pool = builder
        .workers(options.workers)
        .max_concurrency(cap)
        // At most C requests wait at once; N is the bound asked for, so
        // nothing is ever refused.
        .max_queue(options.requests.max(options.concurrency))
        .spawn()
        .await?;
    let startup = started.elapsed();
    eprintln!(
        "drover-bench: pool online in {:.1} ms",
        startup.as_secs_f64() * 1e3
    );
    let outcome = drive(&pool, options).await;
    pool.soft_kill().await;
    let (elapsed, latencies) = outcome?;
    EchoReport::new(options, startup, elapsed, latencies)
}

/// What carries one echo request: a drover pool, or the hand-written
/// pool. Each driving task holds a clone and borrows it per request (no
/// reference count touched per request).
pub(crate) trait Echo: Clone + Send + Sync + 'static {
    /// Sends request `index` with `payload`; the length of the echo.
    fn call(
        &self,
        index: usize,
        payload: Bytes,
    ) -> impl std::future::Future<Output = Result<usize, Error>> + Send;
}

impl Echo for Supervisor {
    async fn call(&self, _index: usize, payload: Bytes) -> Result<usize, Error> {
        Ok(self.enqueue_bytes(payload).await?.bytes().len())
    }
}

/// Runs the requests through `pool`.
async fn drive(pool: &Supervisor, options: &EchoOptions) -> Result<(Duration, Latencies), Error> {
    drive_with(options, pool.clone()).await
}

/// The echo traffic, whatever carries it: `C` tasks, each taking the next
/// request number from a shared counter until all `N` are taken, sending
/// it through `echo` and recording its latency. Shared by drover and the
/// hand-written pool.
pub(crate) async fn drive_with<E: Echo>(
    options: &EchoOptions,
    echo: E,
) -> Result<(Duration, Latencies), Error> {
    let payload = Bytes::from(crate::payload::random(options.payload));
    let next = Arc::new(AtomicUsize::new(0));
    let tasks = options.concurrency.min(options.requests);
    let per_task = options.requests.div_ceil(tasks);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let echo = echo.clone();
        let payload = payload.clone();
        let next = next.clone();
        let total = options.requests;
        set.spawn(async move {
            let mut latencies = Latencies::with_capacity(per_task);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return Ok::<_, Error>(latencies);
                }
                let sent = Instant::now();
                let got = echo.call(index, payload.clone()).await?;
                latencies.record(sent.elapsed());
                if got != payload.len() {
                    return Err(Error::WrongAnswer {
                        index,
                        sent: payload.len(),
                        got,
                    });
                }
            }
        });
    }
    let mut all = Latencies::with_capacity(options.requests);
    // The first error ends the run; dropping the set aborts the other
    // tasks, which cancels their requests.
    while let Some(joined) = set.join_next().await {
        all.merge(joined??);
    }
    Ok((started.elapsed(), all))
}
