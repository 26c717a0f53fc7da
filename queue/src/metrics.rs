//! The queue's metrics, through the `metrics` facade (the application
//! installs the exporter; with none, these cost next to nothing).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `drover_jobs` | gauge | `queue`, `state` | jobs `ready`, `scheduled`, `running`, `dead`; set by each runner once per poll interval |
//! | `drover_jobs_finished_total` | counter | `queue`, `outcome` | jobs `completed`, `retried` (failed, to run again), `dead` (failed for good) |
//! | `drover_job_duration_seconds` | histogram | `queue` | from a job's request sent to its answer (or failure) |
//! | `drover_job_start_delay_seconds` | histogram | `queue` | from a job falling due (its timer, or its retry's back-off, ran out) to its start |

use std::time::{Duration, SystemTime};

use metrics::{counter, gauge, histogram};

use crate::store::Store;

/// Sets the `drover_jobs` gauges from the store's counts.
pub(crate) async fn gauges<S: Store>(store: &S) {
    let Ok(stats) = store.stats().await else {
        return;
    };
    let queue = store.queue().to_owned();
    for (state, n) in [
        ("ready", stats.ready),
        ("scheduled", stats.scheduled),
        ("running", stats.running),
        ("dead", stats.dead),
    ] {
        gauge!("drover_jobs", "queue" => queue.clone(), "state" => state).set(n as f64);
    }
}

/// Counts `n` jobs that ended a run with `outcome`.
pub(crate) fn finished(queue: &str, outcome: &'static str, n: u64) {
    if n > 0 {
        counter!("drover_jobs_finished_total", "queue" => queue.to_owned(), "outcome" => outcome)
            .increment(n);
    }
}

/// Records that a job due at `due` starts now.
pub(crate) fn started(queue: &str, due: SystemTime) {
    let delay = SystemTime::now()
        .duration_since(due)
        .unwrap_or(Duration::ZERO);
    histogram!("drover_job_start_delay_seconds", "queue" => queue.to_owned())
        .record(delay.as_secs_f64());
}

/// Records how long a job's run took.
pub(crate) fn ran(queue: &str, took: Duration) {
    histogram!("drover_job_duration_seconds", "queue" => queue.to_owned())
        .record(took.as_secs_f64());
}
