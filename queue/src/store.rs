//! Where jobs are kept: the [`Store`] trait and its records.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::QueueError;

/// A job's id in its store.
pub type JobId = i64;

/// A job claimed by a runner: it holds a lease on it until `complete`,
/// `retry` or `bury`, or until the lease runs out (then any runner may
/// claim it again: at least once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// The encoded job value, exactly as a worker receives it.
    pub payload: Vec<u8>,
    /// How many times it has been claimed, this time included.
    pub attempts: u32,
    /// When it fell due (its timer, or its retry's back-off, ran out).
    pub due_at: SystemTime,
}

/// A job that failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadJob {
    /// Its id.
    pub id: JobId,
    /// How many times it ran.
    pub attempts: u32,
    /// The error of its last run.
    pub last_error: String,
    /// The encoded job value.
    pub payload: Vec<u8>,
}

/// How many jobs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Due now, waiting for a runner.
    pub ready: u64,
    /// Due later (timers, retries waiting for their back-off).
    pub scheduled: u64,
    /// Claimed by a runner, lease not over.
    pub running: u64,
    /// Failed for good.
    pub dead: u64,
}

/// Durable storage for jobs. SQLite ([`SqliteStore`]) and PostgreSQL
/// ([`PgStore`]) implement it; every method is one short transaction.
///
/// [`SqliteStore`]: crate::SqliteStore
/// [`PgStore`]: crate::PgStore
pub trait Store: Send + Sync + 'static {
    /// Adds a job due at `run_at`.
    fn push(
        &self,
        payload: &[u8],
        run_at: SystemTime,
    ) -> impl Future<Output = Result<JobId, QueueError>> + Send;

    /// Claims up to `limit` due jobs (and jobs whose lease ran out) for
    /// `owner`, for `lease`, oldest due first. Concurrent claimers never
    /// get the same job while its lease holds.
    fn claim(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<Job>, QueueError>> + Send;

    /// Removes a job `owner` ran to completion. False if `owner` no longer
    /// held it (its lease ran out and another took it).
    fn complete(
        &self,
        id: JobId,
        owner: &str,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Puts a failed job back, due at `run_at`, recording `error`.
    fn retry(
        &self,
        id: JobId,
        owner: &str,
        run_at: SystemTime,
        error: &str,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Marks a job failed for good, recording `error`.
    fn bury(
        &self,
        id: JobId,
        owner: &str,
        error: &str,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Deletes a job that no runner holds. False if it is running or gone.
    fn cancel(&self, id: JobId) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Counts jobs by state.
    fn stats(&self) -> impl Future<Output = Result<Stats, QueueError>> + Send;

    /// When the next job waiting for its time is due, if any.
    fn next_due(&self) -> impl Future<Output = Result<Option<SystemTime>, QueueError>> + Send;

    /// The jobs that failed for good, oldest first.
    fn dead(&self) -> impl Future<Output = Result<Vec<DeadJob>, QueueError>> + Send;
}

/// Microseconds since the Unix epoch, as the stores keep times (a time
/// too far ahead for an `i64` is kept as the farthest one, never wrapped
/// into the past).
// Used by the stores only; a build with none leaves it idle.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// The inverse of [`micros`].
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}
