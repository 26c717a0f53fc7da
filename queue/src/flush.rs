//! Completing answered jobs together: the runner's flusher.
//!
//! Job tasks send their answered jobs here; the flusher takes every one
//! waiting and completes them in one statement, then tells their callers
//! (`push_and_wait`) and frees their room. While a statement runs, more
//! answers gather for the next: under load a round trip completes many
//! jobs, idle it completes one at once (no timer holds a job back).
//!
//! At least once holds: a job leaves the store only in that statement,
//! after its worker answered. Leases hold: a job is held until recorded,
//! and a flush that fails leaves its jobs to run again once their leases
//! run out.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::runner::{Answered, Inner, JobValue};
use crate::store::Store;

/// The most jobs one statement completes.
const MAX_BATCH: usize = 1024;

/// Completes what arrives on `answers` until every sender is gone.
pub(crate) async fn flush<S: Store, J: JobValue>(
    inner: Arc<Inner<S, J>>,
    owner: Arc<str>,
    mut answers: mpsc::Receiver<Answered>,
) {
    let mut batch = Vec::with_capacity(64);
    let mut ids = Vec::with_capacity(64);
    while answers.recv_many(&mut batch, MAX_BATCH).await > 0 {
        ids.clear();
        ids.extend(batch.iter().map(|done| done.id));
        let completed = inner.store.complete(&ids, &owner).await;
        if let Ok(held) = &completed {
            crate::metrics::finished(inner.store.queue(), "completed", held.len() as u64);
        }
        match completed {
            Ok(held) if held.len() == ids.len() => {}
            Ok(held) => tracing::warn!(
                lost = ids.len() - held.len(),
                "jobs' leases ran out before they finished; other runners have them"
            ),
            Err(e) => tracing::error!(
                jobs = ids.len(),
                "job queue: {e} (the jobs run again once their leases run out)"
            ),
        }
        let mut waiting = inner.waiting.lock().await;
        for done in batch.drain(..) {
            if let Some(waiter) = waiting.remove(&done.id) {
                // The caller may have stopped waiting.
                let _ = waiter.send(done.answer);
            }
            // Its slot and its count go with it.
        }
    }
}
