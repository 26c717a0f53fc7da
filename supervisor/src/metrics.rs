//! What the pool reports through the `metrics` facade.
//!
//! The application installs the exporter it likes (Prometheus or another);
//! without one, every update here is a no-op. Names and units follow
//! Prometheus conventions; every series carries a `pool` label (the
//! builder's `name`, or the group's).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `drover_requests_total` | counter | `pool`, `outcome` | requests by how they ended: `ok`, `remote_error`, `worker_lost`, `timeout`, `refused`, `other` |
//! | `drover_request_wait_seconds` | histogram | `pool` | time queued: from enqueue to being sent to a worker (answered requests) |
//! | `drover_request_run_seconds` | histogram | `pool` | time running: from being sent to a worker to its answer (answered requests) |
//! | `drover_slow_requests_total` | counter | `pool` | requests that ran past the slow-request threshold (`Builder::slow_request_log`) |
//! | `drover_queue_depth` | gauge | `pool` | requests waiting for a worker |
//! | `drover_requests_in_flight` | gauge | `pool` | requests held by workers |
//! | `drover_workers` | gauge | `pool`, `state` | workers by lifecycle state |
//! | `drover_worker_rss_bytes` | gauge | `pool`, `index` | resident memory per worker slot |
//! | `drover_worker_exits_total` | counter | `pool`, `reason` | worker exits by reason |
//! | `drover_worker_restarts_total` | counter | `pool` | replacements of crashed workers |
//!
//! Gauges are refreshed at every memory sample (`health_interval`).

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};

use crate::error::Error;
use crate::event::ExitReason;
use crate::response::Response;

/// What the gauges show, counted under the pool's lock
/// (`PoolState::gauges`) and reported after it is released.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// Requests waiting for a worker.
    pub(crate) queued: usize,
    /// Requests held by workers.
    pub(crate) in_flight: usize,
    /// Workers by the state they show: starting, ready, busy, stopping.
    pub(crate) starting: usize,
    pub(crate) ready: usize,
    pub(crate) busy: usize,
    pub(crate) stopping: usize,
    /// Slot index and resident memory of each active worker read so far.
    pub(crate) rss: Vec<(u32, u64)>,
}

/// The pool's metric handles, registered once.
#[derive(Debug)]
pub(crate) struct Metrics {
    pool: String,
    ok: Counter,
    remote_error: Counter,
    worker_lost: Counter,
    timeout: Counter,
    refused: Counter,
    other: Counter,
    wait: Histogram,
    run: Histogram,
    slow: Counter,
    restarts: Counter,
}

impl Metrics {
    pub(crate) fn new(pool: &str) -> Metrics {
        describe_counter!("drover_requests_total", "Requests, by how they ended.");
        describe_histogram!(
            "drover_request_wait_seconds",
            Unit::Seconds,
            "Time queued, from enqueue to being sent to a worker, for answered requests."
        );
        describe_histogram!(
            "drover_request_run_seconds",
            Unit::Seconds,
            "Time running, from being sent to a worker to its answer, for answered requests."
        );
        describe_counter!(
            "drover_slow_requests_total",
            "Requests that ran past the slow-request threshold."
        );
        describe_gauge!("drover_queue_depth", "Requests waiting for a worker.");
        describe_gauge!("drover_requests_in_flight", "Requests held by workers.");
        describe_gauge!("drover_workers", "Workers, by lifecycle state.");
        describe_gauge!(
            "drover_worker_rss_bytes",
            Unit::Bytes,
            "Resident memory of each worker slot."
        );
        describe_counter!("drover_worker_exits_total", "Worker exits, by reason.");
        describe_counter!(
            "drover_worker_restarts_total",
            "Replacements of crashed workers."
        );
        let outcome = |outcome: &'static str| counter!("drover_requests_total", "pool" => pool.to_owned(), "outcome" => outcome);
        Metrics {
            pool: pool.to_owned(),
            ok: outcome("ok"),
            remote_error: outcome("remote_error"),
            worker_lost: outcome("worker_lost"),
            timeout: outcome("timeout"),
            refused: outcome("refused"),
            other: outcome("other"),
            wait: histogram!("drover_request_wait_seconds", "pool" => pool.to_owned()),
            run: histogram!("drover_request_run_seconds", "pool" => pool.to_owned()),
            slow: counter!("drover_slow_requests_total", "pool" => pool.to_owned()),
            restarts: counter!("drover_worker_restarts_total", "pool" => pool.to_owned()),
        }
    }

    /// Counts a request that ended with `result`.
    pub(crate) fn request(&self, result: &Result<Response, Error>) {
        match result {
            Ok(_) => self.ok.increment(1),
            Err(Error::Remote { .. }) => self.remote_error.increment(1),
            Err(Error::WorkerLost { .. }) => self.worker_lost.increment(1),
            Err(Error::Timeout { .. }) => self.timeout.increment(1),
            Err(_) => self.other.increment(1),
        }
    }

    /// Records the latencies of an answered request, in microseconds: how
    /// long it waited in the queue, how long its worker ran it.
    pub(crate) fn answered(&self, wait_micros: u64, run_micros: u64) {
        self.wait.record(wait_micros as f64 / 1e6);
        self.run.record(run_micros as f64 / 1e6);
    }

    /// Counts `n` requests newly past the slow-request threshold.
    pub(crate) fn slow(&self, n: usize) {
        self.slow.increment(n as u64);
    }

    /// Counts a request refused before it was queued.
    pub(crate) fn refused(&self) {
        self.refused.increment(1);
    }

    /// Counts a worker's exit.
    pub(crate) fn worker_exit(&self, reason: &ExitReason) {
        counter!("drover_worker_exits_total", "pool" => self.pool.clone(), "reason" => reason.kind()).increment(1);
    }

    /// Counts the replacement of a crashed worker.
    pub(crate) fn restart(&self) {
        self.restarts.increment(1);
    }

    /// Refreshes the gauges from a count of the pool's state.
    pub(crate) fn sample(&self, gauges: &Gauges) {
        gauge!("drover_queue_depth", "pool" => self.pool.clone()).set(gauges.queued as f64);
        gauge!("drover_requests_in_flight", "pool" => self.pool.clone())
            .set(gauges.in_flight as f64);
        for (name, n) in [
            ("starting", gauges.starting),
            ("ready", gauges.ready),
            ("busy", gauges.busy),
            ("stopping", gauges.stopping),
        ] {
            gauge!("drover_workers", "pool" => self.pool.clone(), "state" => name).set(n as f64);
        }
        for &(index, rss) in &gauges.rss {
            gauge!("drover_worker_rss_bytes", "pool" => self.pool.clone(), "index" => index.to_string())
                .set(rss as f64);
        }
    }
}
