//! A durable, at-least-once job queue with timers, run by a drover pool.
//!
//! Jobs are values of one serde type, kept in a database until a worker
//! has run them. [`JobQueue::start`] runs them on a
//! [`Supervisor`](drover_supervisor::Supervisor) as ordinary requests: the
//! worker side is any drover worker, which reads a job with
//! `Request::data`.
//!
//! # Theory of operation
//!
//! - **Storage.** Tables `drover_jobs`, `drover_job_counts` and
//!   `drover_periodic` behind the [`Store`] trait: [`SqliteStore`] (a file,
//!   one machine) or [`PgStore`] (PostgreSQL, any number of supervisors on
//!   any number of machines). Jobs are JSON by default ([`JobFormat`]),
//!   decoded as the job type when they run and sent to the worker in
//!   drover's own encoding. The schema is versioned migrations compiled in
//!   (`migrations/`), run by sqlx's migrator when a store opens.
//! - **Pushing.** One statement for any number of jobs ([`JobQueue::push_many`],
//!   [`JobQueue::push_many_with`]), through the store's connections or the
//!   caller's own transaction ([`JobQueue::push_in`]). Each push wakes
//!   runners once it commits: in this process at once (on SQLite, a push
//!   in the caller's transaction through the connection's commit hook),
//!   on PostgreSQL everywhere (`NOTIFY`, heard by a connection each runner
//!   listens on; sent by a task of the store after the push committed,
//!   one for any number of pushes, or inside the caller's transaction).
//!   Runners also poll, so a lost notification costs latency, never a job.
//! - **Unique jobs.** A unique key is held while its job is pending (a
//!   partial unique index), or also for a window after it was pushed
//!   ([`Enqueue::unique_for`]: the `drover_unique` table, checked and
//!   written in the push's transaction); a push whose key is held stores
//!   nothing and answers [`Pushed::Duplicate`].
//! - **Durability.** Pushes, and operators' calls, commit as the database
//!   is set to (on PostgreSQL, waiting for the disk by default). A
//!   PostgreSQL runner's own writes (claims, completions, retries) do not
//!   wait for the disk unless `PgStoreBuilder::durable_runs`: a crash of
//!   the PostgreSQL server may forget the last of them, and the jobs they
//!   concerned run again (at least once holds; such a job may run again
//!   before its lease runs out). A crash of a runner's process costs
//!   nothing but the wait for its leases.
//! - **Claiming.** A runner claims due jobs in one statement that marks
//!   them running under its name with a lease (`FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL, so runners never wait for each other or share a job),
//!   highest priority first, then oldest due. It claims no more than it has
//!   room to run; with a backlog it waits briefly for room for a batch.
//!   Once per poll interval it makes jobs whose lease ran out due again,
//!   fires the periodic jobs whose tick came, and sets its gauges.
//! - **At least once.** A job leaves the table only when a worker answered
//!   it: answered jobs are completed together, in one statement per batch,
//!   by the runner's flusher. A runner that dies loses its leases; once
//!   they run out, the jobs run again elsewhere. Handlers should be
//!   idempotent.
//! - **Failures.** A failed job is put back with exponential back-off,
//!   until `max_attempts`; then it is kept as dead with its last error
//!   ([`JobQueue::dead`], [`JobQueue::list`]). A pool that refuses a job
//!   (shutting down, queue full) does not count against it; a stored job
//!   that does not decode as the job type is dead at once.
//! - **Timers.** A timer is a job due later. The runner sleeps until the
//!   next job is due, a job is pushed, or the poll interval passes.
//! - **Idle.** [`Runner::idle`] resolves when the runner holds no job and
//!   the store holds none due: a due job not yet claimed is work not yet
//!   started, a timer not yet due is not.
//!
//! # Layout
//!
//! - `runner.rs`: [`JobQueue`] and its [`Runner`]'s loop; `flush.rs`: the
//!   completions, together.
//! - `builder.rs`: [`JobQueueBuilder`], a queue's settings, and
//!   [`JobFormat`]; `options.rs`: [`Enqueue`] and [`Pushed`], one push's.
//! - `encode.rs`: jobs between the caller, the store and the worker.
//! - `idle.rs`: what a runner is doing, for [`Runner::idle`].
//! - `periodic.rs`: cron ticks; `metrics.rs`: the metrics.
//! - `store.rs`: the [`Store`] trait and its records.
//! - `sql.rs`: the statements and the methods both stores share;
//!   `sqlite.rs`, `postgres.rs`: the stores; `migrate.rs`: the schemas.
//! - `error.rs`: [`QueueError`].
#![forbid(unsafe_code)]

mod builder;
mod encode;
mod error;
mod flush;
mod idle;
mod metrics;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrate;
mod options;
mod periodic;
#[cfg(feature = "postgres")]
mod postgres;
mod runner;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

pub use builder::{JobFormat, JobQueueBuilder};
pub use error::QueueError;
pub use options::{Enqueue, Pushed};
#[cfg(feature = "postgres")]
pub use postgres::{PgStore, PgStoreBuilder};
pub use runner::{JobQueue, JobValue, Runner};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreBuilder, SqliteSynchronous};
pub use store::{
    DeadJob, Finished, Job, JobId, JobInfo, JobState, NewJob, Payload, Periodic, Stats, Store,
    Wakeups,
};
