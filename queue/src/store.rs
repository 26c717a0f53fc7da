//! Where jobs are kept: the [`Store`] trait and its records.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::QueueError;
use crate::options::Pushed;

/// A job's id in its store.
pub type JobId = i64;

/// A job as stored: JSON text (the default, readable in SQL, tolerant of a
/// job type that gains a field with a serde default), or the bytes a
/// worker receives (bincode: compact, but any change to the job type
/// strands the jobs stored before it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// The job as JSON (`serde_json`).
    Json(String),
    /// The job encoded exactly as a worker receives it (bincode): jobs
    /// stored before the queue kept JSON, jobs a worker posted that do not
    /// decode as the queue's job type, and queues built with
    /// [`JobFormat::Bincode`](crate::JobFormat::Bincode).
    Bincode(Vec<u8>),
}

/// A job to add to a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The job.
    pub payload: Payload,
    /// When it falls due.
    pub run_at: SystemTime,
    /// Higher runs first among due jobs (default 0).
    pub priority: i32,
    /// A key no other pending (ready, waiting or running) job of the
    /// queue has: a push whose key is taken stores nothing.
    pub unique_key: Option<String>,
}

impl NewJob {
    /// A job due at `run_at`, of priority 0, with no unique key.
    pub fn new(payload: Payload, run_at: SystemTime) -> NewJob {
        NewJob {
            payload,
            run_at,
            priority: 0,
            unique_key: None,
        }
    }
}

/// A job claimed by a runner: it holds a lease on it until `complete`,
/// `retry` or `bury`, or until the lease runs out (then any runner may
/// claim it again: at least once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// The stored job.
    pub payload: Payload,
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
    /// The stored job.
    pub payload: Payload,
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

/// A job's state, as [`JobQueue::list`](crate::JobQueue::list) selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Due now, waiting for a runner.
    Ready,
    /// Due later (a timer, or a retry waiting out its back-off).
    Scheduled,
    /// Claimed by a runner.
    Running,
    /// Failed for good.
    Dead,
}

impl JobState {
    /// Its name in the store's `state` column (`scheduled` is a `ready`
    /// job not yet due).
    pub fn name(self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Dead => "dead",
        }
    }
}

/// A job as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// Its id.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// How many times it has been claimed.
    pub attempts: u32,
    /// When it is (or was) due.
    pub run_at: SystemTime,
    /// The error of its last failed run, if any.
    pub last_error: Option<String>,
    /// The stored job.
    pub payload: Payload,
}

/// How many jobs of a queue have finished, since the store was made (or
/// last purged): kept apart, since both leave the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finished {
    /// Run to completion (a worker answered).
    pub completed: u64,
    /// Cancelled (deleted) before they ran, or deleted dead.
    pub cancelled: u64,
}

/// A periodic job as stored: fired by a runner when `next_run` passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periodic {
    /// Its name, unique in its queue.
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// The job each tick pushes.
    pub payload: Payload,
    /// When its next tick is due.
    pub next_run: SystemTime,
}

/// A signal that changes whenever a job may have become due: pushed in
/// this process, or (PostgreSQL) notified by another. Runners wait on it
/// between polls.
pub type Wakeups = watch::Receiver<u64>;

/// Durable storage for jobs. SQLite ([`SqliteStore`]) and PostgreSQL
/// ([`PgStore`]) implement it; every method is one short transaction.
///
/// [`SqliteStore`]: crate::SqliteStore
/// [`PgStore`]: crate::PgStore
pub trait Store: Clone + Send + Sync + 'static {
    /// The database, whose connections (and transactions, which deref to
    /// them) [`push_in`](Store::push_in) writes through.
    type Database: sqlx::Database;

    /// Adds jobs, in one statement; one entry per job, in order: its id,
    /// or `None` if it was not stored (a pending job, or an earlier job of
    /// the same call, holds its unique key).
    fn push(
        &self,
        jobs: &[NewJob],
    ) -> impl Future<Output = Result<Vec<Option<JobId>>, QueueError>> + Send;

    /// Adds jobs through `conn`, a connection or transaction of the
    /// caller's own on the same database: they exist if and only if what
    /// `conn` does commits. Runners see them once committed.
    fn push_in<'c>(
        &'c self,
        conn: &'c mut <Self::Database as sqlx::Database>::Connection,
        jobs: &'c [NewJob],
    ) -> impl Future<Output = Result<Vec<Option<JobId>>, QueueError>> + Send + 'c;

    /// Adds `job`, which has a unique key, in one transaction, unless a
    /// job with that key is pending or was stored less than `window` ago
    /// (then [`Pushed::Duplicate`] with that job's id); a stored job holds
    /// its key for `window` from now. `None` if the pending job that held
    /// the key finished between the insert and the look for it: push again.
    fn push_within(
        &self,
        job: &NewJob,
        window: Duration,
    ) -> impl Future<Output = Result<Option<Pushed>, QueueError>> + Send;

    /// Claims up to `limit` due jobs for `owner`, for `lease`, highest
    /// priority and oldest due first. Concurrent claimers never get the
    /// same job while its lease holds.
    fn claim(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<Job>, QueueError>> + Send;

    /// Makes the jobs whose lease ran out due again (their runner died,
    /// or lost them), and forgets unique keys whose window is over; how
    /// many jobs.
    fn reap(&self) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Removes jobs `owner` ran to completion, in one statement, and
    /// counts them as completed. Returns the ids it still held (a job
    /// whose lease ran out and that another runner took is not among
    /// them).
    fn complete(
        &self,
        ids: &[JobId],
        owner: &str,
    ) -> impl Future<Output = Result<Vec<JobId>, QueueError>> + Send;

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

    /// Up to `limit` jobs in `state`, oldest first.
    fn list(
        &self,
        state: JobState,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<JobInfo>, QueueError>> + Send;

    /// Makes a dead job due now, with its attempts back to 0 (its last
    /// error kept). False if it is not dead.
    fn retry_dead(&self, id: JobId) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Makes a waiting job (a timer, a retry in its back-off) due now.
    /// False if it is not waiting (running, dead or gone).
    fn requeue(&self, id: JobId) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Deletes every job of the queue, running ones too, and its counts of
    /// finished jobs: for tests. How many jobs it deleted.
    fn purge(&self) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// How many jobs finished, completed and cancelled apart.
    fn finished(&self) -> impl Future<Output = Result<Finished, QueueError>> + Send;

    /// Adds or replaces the periodic job `periodic.name` (its next tick
    /// kept if its expression did not change).
    fn schedule(&self, periodic: &Periodic) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Removes a periodic job; false if there was none of that name.
    fn unschedule(&self, name: &str) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// The periodic jobs, by name.
    fn periodic(&self) -> impl Future<Output = Result<Vec<Periodic>, QueueError>> + Send;

    /// Fires `periodic`'s tick, in one transaction: pushes its job, due at
    /// the tick, and moves its next tick to `next`, only if no other runner
    /// did so since `periodic` was read. Whether this call fired it.
    fn fire(
        &self,
        periodic: &Periodic,
        next: SystemTime,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// The name of the queue this store holds (`default`, or the name
    /// given to the stores' `named`).
    fn queue(&self) -> &str;

    /// The id of the pending (ready, waiting or running) job holding
    /// `key`, if any.
    fn find_unique(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<JobId>, QueueError>> + Send;

    /// The signal that a job may have become due.
    fn wakeups(&self) -> Wakeups;

    /// Feeds [`wakeups`](Store::wakeups) from the database, until `stop`,
    /// if the database can tell (PostgreSQL's `LISTEN`); resolves at once
    /// if it cannot (SQLite: only pushes in this process wake runners).
    /// A listener that fails costs latency, never jobs: runners still poll.
    fn listen(&self, stop: CancellationToken) -> impl Future<Output = ()> + Send;
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

/// `at` plus `span`, or the farthest time kept if that overflows.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn later(at: SystemTime, span: Duration) -> SystemTime {
    at.checked_add(span)
        .unwrap_or_else(|| from_micros(i64::MAX))
}

/// Which of `jobs` a push stored: `rows` are the stored ones' ids and
/// unique keys, in any order. Ids grow in the order the jobs were
/// inserted, so the stored rows, by id, follow the jobs in order; a job
/// left out (its key held) takes no row.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn match_stored(
    jobs: &[NewJob],
    mut rows: Vec<(JobId, Option<String>)>,
) -> Vec<Option<JobId>> {
    rows.sort_unstable_by_key(|row| row.0);
    let mut rows = rows.into_iter().peekable();
    jobs.iter()
        .map(|job| {
            rows.next_if(|(_, key)| *key == job.unique_key)
                .map(|(id, _)| id)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: Option<&str>) -> NewJob {
        NewJob {
            unique_key: key.map(String::from),
            ..NewJob::new(Payload::Json("1".into()), UNIX_EPOCH)
        }
    }

    #[test]
    fn stored_rows_are_matched_to_their_jobs_in_order() {
        let jobs = [
            job(None),
            job(Some("a")),
            job(Some("b")),
            job(Some("a")),
            job(None),
        ];
        // "b" was held by a pending job; the second "a" by the first.
        let rows = vec![(12, None), (10, None), (11, Some("a".to_string()))];
        assert_eq!(
            match_stored(&jobs, rows),
            [Some(10), Some(11), None, None, Some(12)]
        );
    }

    #[test]
    fn a_window_past_the_last_time_kept_saturates() {
        assert_eq!(later(UNIX_EPOCH, Duration::MAX), from_micros(i64::MAX));
    }
}
