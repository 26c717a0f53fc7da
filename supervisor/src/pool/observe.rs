//! What the pool counts for operators (`Supervisor::status`): the
//! counters kept beside the state, and the snapshot made of both.
//!
//! The counters change inside the transitions that already hold the lock
//! (`submit`, `worker_exited`, the slow-request scan), so counting costs
//! an addition, never a lock of its own.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use crate::status::{millis, PoolStatus, WorkerStatus};

use super::state::{Phase, PoolState, WorkerEntry};

/// The pool's running counts, kept in [`PoolState`].
#[derive(Debug)]
pub(crate) struct Stats {
    /// When the pool was made: wall clock (reported) and monotonic (uptime).
    pub(crate) started: (SystemTime, Instant),
    /// Requests accepted (sent or queued).
    pub(crate) accepted: u64,
    /// The longest the queue has been.
    pub(crate) max_queued: usize,
    /// Requests refused with a full queue.
    pub(crate) queue_full: u64,
    /// Requests that ran past the slow-request threshold.
    pub(crate) slow: u64,
    /// Crashed workers replaced.
    pub(crate) restarts: u64,
    /// How the last worker of each slot ended.
    pub(crate) last_exits: HashMap<u32, String>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            started: (SystemTime::now(), Instant::now()),
            accepted: 0,
            max_queued: 0,
            queue_full: 0,
            slow: 0,
            restarts: 0,
            last_exits: HashMap::new(),
        }
    }
}

impl PoolState {
    /// The pool's status now, named `name`.
    pub(crate) fn status(&self, name: &str) -> PoolStatus {
        let now = SystemTime::now();
        let stats = &self.stats;
        let mut workers: Vec<WorkerStatus> = self
            .workers
            .iter()
            .map(|w| {
                let last_exit = stats.last_exits.get(&w.index).cloned();
                WorkerStatus::new(WorkerEntry::health(w), now, last_exit)
            })
            .collect();
        workers.sort_by_key(|w| (w.index, w.worker_id));
        let active = self
            .workers
            .iter()
            .filter(|w| !w.in_flight.is_empty())
            .count();
        let idle = self
            .workers
            .iter()
            .filter(|w| w.in_flight.is_empty() && w.life.takes_work())
            .count();
        let (phase, failure) = match &self.phase {
            Phase::Running => ("running", None),
            Phase::Drained => ("drained", None),
            Phase::SoftKilling => ("shutting down", None),
            Phase::Stopped => ("stopped", None),
            Phase::Failed(reason) => ("failed", Some(reason.to_string())),
        };
        PoolStatus {
            name: name.to_owned(),
            phase: phase.to_owned(),
            failure,
            started_at_ms: millis(stats.started.0),
            uptime_secs: stats.started.1.elapsed().as_secs_f64(),
            target_workers: self.target,
            accepted: stats.accepted,
            active,
            idle,
            queued: self.pending.len(),
            max_queued: stats.max_queued,
            queue_full: stats.queue_full,
            slow: stats.slow,
            restarts: stats.restarts,
            workers,
        }
    }
}

/// A request found running past the slow-request threshold.
#[derive(Debug)]
pub(crate) struct SlowRequest {
    pub(crate) id: drover_proto::RequestId,
    pub(crate) pid: u32,
    pub(crate) elapsed: std::time::Duration,
    pub(crate) status: Option<String>,
}

impl PoolState {
    /// The requests running for `threshold` or more at `now` (microseconds
    /// since the epoch) not yet reported; each is reported once, and
    /// counted.
    pub(crate) fn newly_slow(&mut self, threshold_micros: u64, now: u64) -> Vec<SlowRequest> {
        let mut slow = Vec::new();
        for worker in &mut self.workers {
            for (id, in_flight) in &mut worker.in_flight {
                let running = now.saturating_sub(in_flight.sent_at);
                if !in_flight.slow_logged && running >= threshold_micros {
                    in_flight.slow_logged = true;
                    slow.push(SlowRequest {
                        id: *id,
                        pid: worker.pid,
                        elapsed: std::time::Duration::from_micros(running),
                        status: worker.status.clone(),
                    });
                }
            }
        }
        self.stats.slow += slow.len() as u64;
        slow
    }
}

impl super::Shared {
    /// Logs (once each, at warn) and counts the requests running past the
    /// slow-request threshold, if one is set. Run at each memory sample.
    pub(crate) fn log_slow_requests(&self) {
        let Some(threshold) = self.config.slow_request_log else {
            return;
        };
        let now = drover_proto::now_micros();
        let slow = self
            .lock()
            .newly_slow(threshold.as_micros().min(u64::MAX as u128) as u64, now);
        if slow.is_empty() {
            return;
        }
        self.metrics.slow(slow.len());
        for request in slow {
            tracing::warn!(
                request_id = %request.id,
                pid = request.pid,
                elapsed = ?request.elapsed,
                status = request.status.as_deref().unwrap_or(""),
                "slow request: still running after {:?} (threshold {threshold:?})",
                request.elapsed
            );
        }
    }
}
