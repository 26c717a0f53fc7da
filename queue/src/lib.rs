//! A durable, at-least-once job queue with timers, run by a drover pool.
//!
//! Jobs are serde values kept in a database until a worker has run them.
//! [`JobQueue::start`] runs them on a [`Supervisor`](drover_supervisor::Supervisor)
//! as ordinary requests: the worker side is any drover worker, which reads
//! a job with `Request::data`.
//!
//! # Theory of operation
//!
//! - **Storage.** One table, `drover_jobs`, behind the [`Store`] trait:
//!   [`SqliteStore`] (a file, one machine) or [`PgStore`] (PostgreSQL, any
//!   number of supervisors on any number of machines).
//! - **Claiming.** A runner claims due jobs in one statement that marks
//!   them running under its name with a lease (`FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL, so runners never wait for each other or share a job). It
//!   claims no more than it has room to run.
//! - **At least once.** A job leaves the table only when a worker answered
//!   it. A runner that dies loses its leases; once they run out, the jobs
//!   run again elsewhere. Handlers should be idempotent.
//! - **Failures.** A failed job is put back with exponential back-off,
//!   until `max_attempts`; then it is kept as dead with its last error
//!   ([`JobQueue::dead`]). A pool that refuses a job (shutting down, queue
//!   full) does not count against it.
//! - **Timers.** A timer is a job due later. The runner sleeps until the
//!   next job is due, a job is pushed in this process, or the poll interval
//!   passes (jobs pushed by other processes).
//! - **Idle.** [`Runner::idle`] resolves when the runner holds no job and
//!   the store holds none due: a due job not yet claimed is work not yet
//!   started, a timer not yet due is not.
//!
//! # Layout
//!
//! - `runner.rs`: [`JobQueue`] and its [`Runner`].
//! - `builder.rs`: [`JobQueueBuilder`], a queue's settings.
//! - `idle.rs`: what a runner is doing, for [`Runner::idle`].
//! - `store.rs`: the [`Store`] trait and its records.
//! - `sql.rs`: the statements of each database and their one
//!   implementation; `sqlite.rs`, `postgres.rs`: the stores.
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
