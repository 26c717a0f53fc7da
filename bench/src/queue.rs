//! The job queue workload (`--queue pg|sqlite`): no-op jobs through a
//! durable queue on a pool of this binary's workers.
//!
//! Four phases, each on an empty queue, one JSON line for all:
//!
//! - **insert**: `N` jobs pushed one call at a time, each waiting for its
//!   insert (no runner).
//! - **drain**: those `N` jobs run by one runner on `W` workers, from the
//!   runner's start until it is idle.
//! - **push_many**: `N` jobs pushed in batches of 1,000 (one statement
//!   each), then drained again (`drain_again`).
//! - **latency**: with the runner idle, one job at a time pushed by
//!   another client (PostgreSQL: its own connections, so the runner hears
//!   of it through `NOTIFY`; SQLite: a second queue over the store, the
//!   in-process signal), from just before the push until a worker starts
//!   it (the worker reports the moment in an event; one clock, one
//!   machine). The poll interval is an hour: nothing is polled for.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover_queue::{JobQueue, PgStore, SqliteStore, Store};
use drover_supervisor::{Event, Supervisor};
use serde::Serialize;

use crate::error::Error;
use crate::stats::Latencies;

/// Set in a worker's environment to make it report when each job starts
/// (an event `started` with the job's push time and its own) instead of
/// echoing.
pub const STAMP_ENV: &str = "DROVER_BENCH_STAMP";

/// The event a stamping worker emits.
pub const STARTED: &str = "started";

/// Which store the queue workload runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStore {
    /// PostgreSQL, at `DROVER_BENCH_DATABASE_URL` (or
    /// `DROVER_TEST_DATABASE_URL`), in a schema of the run's own.
    Postgres,
    /// An SQLite file in the temporary directory (synchronous NORMAL).
    Sqlite,
}

impl QueueStore {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            QueueStore::Postgres => "pg",
            QueueStore::Sqlite => "sqlite",
        }
    }
}

/// The queue workload's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// The store.
    pub store: QueueStore,
    /// Worker processes.
    pub workers: usize,
    /// Jobs per phase.
    pub jobs: usize,
    /// Jobs one runner keeps in flight.
    pub max_running: usize,
    /// Latency samples.
    pub samples: usize,
}

/// The result of a queue run.
#[derive(Debug, Serialize)]
pub struct QueueReport {
    /// Always `drover`.
    #[serde(rename = "impl")]
    pub implementation: &'static str,
    /// `pg` or `sqlite`.
    pub queue: &'static str,
    /// Worker processes.
    pub workers: usize,
    /// Jobs per phase.
    pub jobs: usize,
    /// Jobs one runner keeps in flight.
    pub max_running: usize,
    /// Single pushes per second.
    pub insert_jobs_per_s: f64,
    /// Jobs drained per second, after the single pushes.
    pub drain_jobs_per_s: f64,
    /// Jobs pushed per second with `push_many`.
    pub push_many_jobs_per_s: f64,
    /// Jobs drained per second, after `push_many`.
    pub drain_again_jobs_per_s: f64,
    /// Push-to-start latency, median, milliseconds.
    pub latency_p50_ms: f64,
    /// Push-to-start latency, 99th percentile, milliseconds.
    pub latency_p99_ms: f64,
    /// Latency samples taken.
    pub samples: usize,
}

/// Runs the workload on the store `options` names.
///
/// # Errors
///
/// The store's or the pool's failure, or a job that never started.
pub async fn run(options: &QueueOptions) -> Result<QueueReport, Error> {
    match options.store {
        QueueStore::Postgres => {
            let url = std::env::var("DROVER_BENCH_DATABASE_URL")
                .or_else(|_| std::env::var("DROVER_TEST_DATABASE_URL"))
                .map_err(|_| {
                    Error::QueueBench(
                        "--queue pg needs DROVER_BENCH_DATABASE_URL (or DROVER_TEST_DATABASE_URL)"
                            .into(),
                    )
                })?;
            let schema = format!("drover_bench_{}", std::process::id());
            let store = PgStore::builder(&url).schema(&schema).connect().await?;
            let other = PgStore::builder(&url).schema(&schema).connect().await?;
            let outcome = run_on(options, store.clone(), other).await;
            let _ = sqlx_drop_schema(&store, &schema).await;
            outcome
        }
        QueueStore::Sqlite => {
            let dir = std::env::temp_dir().join(format!("drover-bench-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| Error::QueueBench(e.to_string()))?;
            let store = SqliteStore::builder(dir.join("jobs.db"))
                .synchronous(drover_queue::SqliteSynchronous::Normal)
                .open()
                .await?;
            let outcome = run_on(options, store.clone(), store).await;
            let _ = std::fs::remove_dir_all(&dir);
            outcome
        }
    }
}

async fn sqlx_drop_schema(store: &PgStore, schema: &str) -> Result<(), Error> {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(store.pool())
        .await
        .map_err(|e| Error::QueueBench(e.to_string()))?;
    Ok(())
}

async fn run_on<S: Store>(
    options: &QueueOptions,
    store: S,
    other: S,
) -> Result<QueueReport, Error> {
    let program = std::env::current_exe().map_err(Error::CurrentExe)?;
    let queue = JobQueue::<S, u64>::builder(store)
        .max_running(options.max_running)
        .poll_interval(Duration::from_secs(3600))
        .build();
    let n = options.jobs;
    eprintln!(
        "drover-bench: queue on {}, {} workers, {n} jobs per phase, max_running {}",
        options.store.name(),
        options.workers,
        options.max_running
    );

    // Insert: one call at a time.
    let started = Instant::now();
    for i in 0..n {
        queue.push(&(i as u64)).await?;
    }
    let insert = n as f64 / started.elapsed().as_secs_f64();
    eprintln!("drover-bench: insert {insert:.0} jobs/s");

    let pool = Supervisor::builder(&program)
        .workers(options.workers)
        .max_queue(options.max_running.max(1024))
        .spawn()
        .await?;
    let drain = drain(&queue, &pool, n).await;
    let outcome = match drain {
        Ok(drain) => {
            eprintln!("drover-bench: drain {drain:.0} jobs/s");
            push_many_then_drain(&queue, &pool, n)
                .await
                .map(|(many, again)| (drain, many, again))
        }
        Err(e) => Err(e),
    };
    pool.soft_kill().await;
    let (drain, many, again) = outcome?;

    // Latency: workers that report when each job starts.
    let stamping = Supervisor::builder(&program)
        .workers(options.workers)
        .env(STAMP_ENV, "1")
        .spawn()
        .await?;
    let other = JobQueue::<S, u64>::new(other);
    let latencies = latency(&queue, &other, &stamping, options.samples).await;
    stamping.soft_kill().await;
    let (p50, p99) = latencies?.p50_p99();
    eprintln!(
        "drover-bench: push to start p50 {:.2} ms, p99 {:.2} ms",
        p50 / 1e3,
        p99 / 1e3
    );
    Ok(QueueReport {
        implementation: "drover",
        queue: options.store.name(),
        workers: options.workers,
        jobs: n,
        max_running: options.max_running,
        insert_jobs_per_s: insert,
        drain_jobs_per_s: drain,
        push_many_jobs_per_s: many,
        drain_again_jobs_per_s: again,
        latency_p50_ms: p50 / 1e3,
        latency_p99_ms: p99 / 1e3,
        samples: options.samples,
    })
}

/// Runs the `n` jobs waiting in the queue; jobs per second.
async fn drain<S: Store>(
    queue: &JobQueue<S, u64>,
    pool: &Supervisor,
    n: usize,
) -> Result<f64, Error> {
    let served_before: u64 = pool.health().iter().map(|h| h.served).sum();
    let started = Instant::now();
    let runner = queue.start(pool.clone());
    runner.idle().await;
    let seconds = started.elapsed().as_secs_f64();
    runner.stop().await;
    let served: u64 = pool.health().iter().map(|h| h.served).sum::<u64>() - served_before;
    if served != n as u64 {
        return Err(Error::QueueBench(format!(
            "{n} jobs pushed, {served} served"
        )));
    }
    Ok(n as f64 / seconds)
}

async fn push_many_then_drain<S: Store>(
    queue: &JobQueue<S, u64>,
    pool: &Supervisor,
    n: usize,
) -> Result<(f64, f64), Error> {
    let jobs: Vec<u64> = (0..n as u64).collect();
    let started = Instant::now();
    for chunk in jobs.chunks(1000) {
        queue.push_many(chunk).await?;
    }
    let many = n as f64 / started.elapsed().as_secs_f64();
    eprintln!("drover-bench: push_many {many:.0} jobs/s");
    let again = drain(queue, pool, n).await?;
    eprintln!("drover-bench: drain after push_many {again:.0} jobs/s");
    Ok((many, again))
}

/// Push-to-start latencies of `samples` jobs, one at a time, pushed by
/// `other` while `queue`'s runner is idle.
async fn latency<S: Store>(
    queue: &JobQueue<S, u64>,
    other: &JobQueue<S, u64>,
    pool: &Supervisor,
    samples: usize,
) -> Result<Latencies, Error> {
    let mut events = pool.events();
    let runner = queue.start(pool.clone());
    runner.idle().await;
    let mut latencies = Latencies::with_capacity(samples);
    for _ in 0..samples {
        let pushed = micros_now();
        other.push(&pushed).await?;
        let started = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.recv().await {
                    Some(Event::Custom(e)) if e.name == STARTED => {
                        let (job, at): (u64, u64) = e.data()?;
                        if job == pushed {
                            return Ok::<u64, Error>(at);
                        }
                    }
                    Some(_) => {}
                    None => return Err(Error::QueueBench("the pool's events ended".into())),
                }
            }
        })
        .await
        .map_err(|_| Error::QueueBench("a job did not start within 10 s".into()))??;
        latencies.record(Duration::from_micros(started.saturating_sub(pushed)));
        // Let the runner go idle again (its flush done) before the next.
        runner.idle().await;
    }
    runner.stop().await;
    Ok(latencies)
}

/// Microseconds since the Unix epoch, now.
pub fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
