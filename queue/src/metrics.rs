//! What the job queue reports through the `metrics` facade, under the
//! pool's naming rules (Prometheus conventions, a `pool` label: the name
//! of the pool that runs the jobs).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `drover_jobs` | gauge | `pool`, `state` | jobs in the store by state: `ready` (due, waiting: the queue's depth), `scheduled` (due later), `running`, `dead` |
//! | `drover_job_start_delay_seconds` | histogram | `pool` | from when a job fell due to when a runner started it |
//!
//! The gauges are the store's counts (`JobQueue::stats`), read by the
//! runner at most once every [`SAMPLE_EVERY`]; they are the whole store's,
//! so runners of one PostgreSQL queue on many machines report the same.

use std::time::{Duration, Instant, SystemTime};

use metrics::{describe_gauge, describe_histogram, gauge, histogram, Histogram, Unit};

use crate::store::Stats;

/// The least time between two readings of the store's counts.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// A runner's metric handles.
#[derive(Debug)]
pub(crate) struct QueueMetrics {
    pool: String,
    start_delay: Histogram,
    last_sample: Option<Instant>,
}

impl QueueMetrics {
    pub(crate) fn new(pool: &str) -> QueueMetrics {
        describe_gauge!("drover_jobs", "Jobs in the store, by state.");
        describe_histogram!(
            "drover_job_start_delay_seconds",
            Unit::Seconds,
            "Time from a job falling due to a runner starting it."
        );
        QueueMetrics {
            pool: pool.to_owned(),
            start_delay: histogram!("drover_job_start_delay_seconds", "pool" => pool.to_owned()),
            last_sample: None,
        }
    }

    /// Records that a job due at `due` starts now.
    pub(crate) fn started(&self, due: SystemTime) {
        let delay = SystemTime::now()
            .duration_since(due)
            .unwrap_or(Duration::ZERO);
        self.start_delay.record(delay.as_secs_f64());
    }

    /// Whether the counts are due to be read again.
    pub(crate) fn sample_due(&self) -> bool {
        self.last_sample
            .is_none_or(|at| at.elapsed() >= SAMPLE_EVERY)
    }

    /// Sets the gauges from the store's counts.
    pub(crate) fn sample(&mut self, stats: &Stats) {
        self.last_sample = Some(Instant::now());
        for (state, n) in [
            ("ready", stats.ready),
            ("scheduled", stats.scheduled),
            ("running", stats.running),
            ("dead", stats.dead),
        ] {
            gauge!("drover_jobs", "pool" => self.pool.clone(), "state" => state).set(n as f64);
        }
    }
}
