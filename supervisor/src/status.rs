//! The pool's status at a glance: [`PoolStatus`], from
//! [`Supervisor::status`](crate::Supervisor::status).
//!
//! The figures are those an operator of PHP-FPM reads on its status page:
//! when the pool started, how many requests it accepted, how many workers
//! are active (holding a request) and idle, how long the queue is and the
//! longest it has been, how often it was full, how many requests ran past
//! the slow-request threshold, how many crashed workers were replaced; and,
//! for each worker, its pid, state, memory, what it has served and holds,
//! when it started, its last status line and how the last worker of its
//! slot ended.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::health::{WorkerHealth, WorkerState};

/// A snapshot of the whole pool, counted under one lock.
///
/// Serialized (serde) field by field; times are milliseconds since the
/// Unix epoch (`*_ms`) or seconds as a float (`*_secs`), so a script reads
/// them with no date parser. It also deserializes, so a client (the
/// `drover-ctl` tool) reads back what the admin endpoint's `/status` sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The pool's name (the builder's, or the binary's file name).
    pub name: String,
    /// `running`, `drained`, `shutting down`, `stopped` or `failed`.
    pub phase: String,
    /// Why the pool failed, when it did.
    pub failure: Option<String>,
    /// When the pool was started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// How long it has been running, in seconds.
    pub uptime_secs: f64,
    /// How many workers it keeps (the builder's count, then the last
    /// resize's).
    pub target_workers: usize,
    /// Requests accepted (sent to a worker or queued) since it started;
    /// refusals are not counted.
    pub accepted: u64,
    /// Workers holding at least one request.
    pub active: usize,
    /// Workers ready and holding none.
    pub idle: usize,
    /// Requests waiting for a worker now (callers that left included until
    /// they are swept).
    pub queued: usize,
    /// The longest the queue has been.
    pub max_queued: usize,
    /// How many requests were refused because the queue was full.
    pub queue_full: u64,
    /// Requests that ran past the slow-request threshold
    /// ([`Builder::slow_request_log`](crate::Builder::slow_request_log)).
    pub slow: u64,
    /// Crashed workers replaced (what the restart budget paid for).
    pub restarts: u64,
    /// Every worker process, by slot.
    pub workers: Vec<WorkerStatus>,
}

/// One worker in a [`PoolStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The worker's id (unique for the pool's life).
    pub worker_id: u64,
    /// The slot it fills.
    pub index: u32,
    /// Its pid.
    pub pid: u32,
    /// Its state.
    pub state: WorkerState,
    /// Resident memory at the last sample, in bytes (see
    /// [`WorkerHealth::rss`]).
    pub rss: Option<u64>,
    /// Requests it has answered.
    pub served: u64,
    /// Requests it holds now.
    pub in_flight: usize,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// The last status line it sent (`Worker::status`).
    pub status: Option<String>,
    /// How the previous worker of its slot ended, if one did.
    pub last_exit: Option<String>,
}

impl WorkerStatus {
    /// The status of the worker `health` describes, seen at `now`.
    pub(crate) fn new(health: WorkerHealth, now: SystemTime, last_exit: Option<String>) -> Self {
        WorkerStatus {
            worker_id: health.worker_id,
            index: health.index,
            pid: health.pid,
            state: health.state,
            rss: health.rss,
            served: health.served,
            in_flight: health.in_flight,
            started_at_ms: millis(now.checked_sub(health.age).unwrap_or(now)),
            status: health.status,
            last_exit,
        }
    }
}

/// Milliseconds since the Unix epoch (0 for a time before it).
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
