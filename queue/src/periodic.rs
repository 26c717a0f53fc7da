//! Periodic jobs: cron expressions (the `croner` crate; five fields, or
//! six with seconds first; in UTC) kept in the store with the job and its
//! next tick. Each runner, once per poll interval, fires the ticks that
//! have come: a tick is fired by moving `next_run` on from the value read
//! (compare and set, in the transaction that pushes the job), so however
//! many runners share the queue, each tick pushes one job. Ticks missed
//! while no runner ran are fired once, then the schedule goes on from now.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use croner::Cron;

use crate::error::QueueError;
use crate::store::Store;

/// `expr` parsed, or an error naming it.
pub(crate) fn parse(expr: &str) -> Result<Cron, QueueError> {
    Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| QueueError::Cron {
            expr: expr.to_owned(),
            reason: e.to_string(),
        })
}

/// The first tick of `cron` after `t`, if it has one.
pub(crate) fn next_after(cron: &Cron, t: SystemTime) -> Option<SystemTime> {
    let t: DateTime<Utc> = t.into();
    cron.find_next_occurrence(&t, false)
        .ok()
        .map(SystemTime::from)
}

/// Fires every periodic job of the store whose tick has come.
pub(crate) async fn fire_due<S: Store>(store: &S) {
    let periodic = match store.periodic().await {
        Ok(periodic) => periodic,
        Err(e) => {
            tracing::error!("job queue: {e}");
            return;
        }
    };
    let now = SystemTime::now();
    for job in periodic.iter().filter(|p| p.next_run <= now) {
        let cron = match parse(&job.cron) {
            Ok(cron) => cron,
            Err(e) => {
                tracing::error!(name = job.name, "periodic job: {e}");
                continue;
            }
        };
        let Some(next) = next_after(&cron, now) else {
            tracing::warn!(
                name = job.name,
                "periodic job {:?} has no tick after now",
                job.cron
            );
            continue;
        };
        match store.fire(job, next).await {
            Ok(true) => tracing::debug!(name = job.name, "periodic job fired"),
            // Another runner fired this tick.
            Ok(false) => {}
            Err(e) => tracing::error!(name = job.name, "periodic job: {e}"),
        }
    }
}
