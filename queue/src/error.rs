//! The queue's error type.

use drover_proto::ValueError;

/// What can go wrong with the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The database refused or failed an operation.
    #[error("job store: {operation} failed: {source}")]
    Database {
        /// What the queue was doing ("claim jobs", "open the database").
        operation: &'static str,
        /// The database driver's error.
        source: sqlx::Error,
    },
    /// The store's schema could not be brought up to date (a migration
    /// failed, or the database holds a newer version than this build
    /// knows, changed).
    #[error("job store: cannot migrate the schema: {source}")]
    Migrate {
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
    /// No answer came for a job within the time waited (it still runs).
    #[error("job {id}: no answer within {waited:?} (the job stays queued and runs at least once)")]
    NoAnswer {
        /// The job.
        id: crate::JobId,
        /// How long the caller waited.
        waited: std::time::Duration,
    },
    /// A unique key's pending job kept finishing and being replaced while
    /// a push tried to store or find one (three times).
    #[error("unique key {key:?}: its pending job kept changing; push again")]
    Contended {
        /// The key.
        key: String,
    },
    /// The store stored nothing for a job that has no unique key (a
    /// [`Store`](crate::Store) implementation that drops jobs).
    #[error("job store: a job with no unique key was not stored")]
    NotStored,
    /// A periodic job's cron expression does not parse, or never fires.
    #[error("cron expression {expr:?}: {reason}")]
    Cron {
        /// The expression.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A job value would not encode for the worker (bincode).
    #[error(transparent)]
    Encode(#[from] ValueError),
    /// A job value would not encode as JSON (a map whose keys are not
    /// strings, say; [`JobFormat::Bincode`](crate::JobFormat::Bincode)
    /// stores any value).
    #[error("cannot store a job of type {type_name} as JSON: {source}")]
    Json {
        /// The job type.
        type_name: &'static str,
        /// What serde_json found wrong.
        source: serde_json::Error,
    },
}

/// Wraps a driver error with the operation that failed.
// Used by the stores only; a build with none leaves it idle.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> QueueError {
    move |source| QueueError::Database { operation, source }
}
