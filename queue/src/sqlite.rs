//! The SQLite store: one file, one machine.

use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

pub use sqlx::sqlite::SqliteSynchronous;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};
use sqlx::{Row, Sqlite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{db, QueueError};
use crate::sql::{shared_methods, Statements};
use crate::store::{match_stored, micros, NewJob, Payload};
use crate::JobId;

/// Jobs in an SQLite database file (created if missing), in WAL mode.
///
/// One process should run a queue on a file at a time; for several
/// supervisors on several machines, use [`PgStore`](crate::PgStore).
/// Opening a store brings the file's schema up to date (versioned
/// migrations; a file made by an earlier release keeps its jobs).
///
/// Clones share the connection and the wake-up signal: a job pushed
/// through any clone wakes the runners of every clone at once.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The same connection: SQLite's durability is the file's setting.
    run_pool: SqlitePool,
    sql: Arc<Statements>,
    queue: Arc<str>,
    wake: Arc<watch::Sender<u64>>,
}

/// Settings of an [`SqliteStore`], from [`SqliteStore::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open()`"]
pub struct SqliteStoreBuilder {
    options: SqliteConnectOptions,
}

impl SqliteStoreBuilder {
    /// How hard SQLite works to keep a committed job through a power cut
    /// (SQLite's `synchronous`; default [`Full`](SqliteSynchronous::Full)).
    ///
    /// - `Full`: every commit waits for the disk; nothing committed is
    ///   lost, whatever fails.
    /// - `Normal`: under WAL (which the store uses) the database never
    ///   corrupts, and a crash of the process loses nothing; a power cut
    ///   or an operating-system crash may lose the last commits (jobs
    ///   pushed or completed just before: a completed job then runs
    ///   again, at least once still holds for pushes acknowledged long
    ///   enough before). Commits no longer wait for the disk: much faster.
    /// - `Off`: no waiting at all; a power cut may corrupt the file. For
    ///   tests and scratch queues only.
    pub fn synchronous(mut self, mode: SqliteSynchronous) -> Self {
        self.options = self.options.synchronous(mode);
        self
    }

    /// Opens the store.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`] if it cannot be opened;
    /// [`QueueError::Migrate`] if its schema cannot be brought up to date.
    pub async fn open(self) -> Result<SqliteStore, QueueError> {
        SqliteStore::with_options(self.options).await
    }
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, with every default.
    ///
    /// # Errors
    ///
    /// As [`SqliteStoreBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, QueueError> {
        SqliteStore::builder(path).open().await
    }

    /// Settings for the database at `path`: its durability.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            options: SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full),
        }
    }

    /// A database in memory, gone with the store: for tests. (No other
    /// connection reaches it, so [`JobQueue::push_in`] has nothing to
    /// write through.)
    ///
    /// [`JobQueue::push_in`]: crate::JobQueue::push_in
    ///
    /// # Errors
    ///
    /// As [`open`](SqliteStore::open).
    pub async fn in_memory() -> Result<SqliteStore, QueueError> {
        let options =
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(db("open the database"))?;
        SqliteStore::with_options(options).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<SqliteStore, QueueError> {
        // One connection: SQLite has one writer anyway, and an in-memory
        // database lives in its connection.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db("open the database"))?;
        crate::migrate::migrator(crate::migrate::SQLITE)
            .await?
            .run(&pool)
            .await
            .map_err(|source| QueueError::Migrate { source })?;
        Ok(SqliteStore {
            run_pool: pool.clone(),
            pool,
            sql: Arc::new(crate::sql::sqlite()),
            queue: "default".into(),
            wake: Arc::new(watch::channel(0).0),
        })
    }

    /// A handle on the queue named `name` in the same file: the same
    /// connection and wake-ups, its own jobs (a runner of one named queue
    /// never takes another's). Queues are made by using them.
    pub fn named(&self, name: &str) -> SqliteStore {
        SqliteStore {
            queue: name.into(),
            ..self.clone()
        }
    }

    /// The store's connection (one: SQLite has one writer), for work of
    /// the caller's own on the same database, such as a transaction to
    /// push jobs in ([`JobQueue::push_in`]). The runners wait while it
    /// is held: keep such transactions short.
    ///
    /// [`JobQueue::push_in`]: crate::JobQueue::push_in
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Wakes this process's runners (the only ones there are).
    fn announce(&self) {
        self.wake.send_modify(|n| *n += 1);
    }

    /// Adds `jobs` through `conn`, in one statement.
    async fn push_on(
        &self,
        conn: &mut SqliteConnection,
        jobs: &[NewJob],
    ) -> Result<Vec<Option<JobId>>, QueueError> {
        let rows = sqlx::query(&self.sql.push)
            .bind(json_array(jobs))
            .bind(micros(SystemTime::now()))
            .bind(&*self.queue)
            .fetch_all(conn)
            .await
            .map_err(db("add jobs"))?;
        let rows = rows
            .iter()
            .map(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(db("add jobs"))?;
        Ok(match_stored(jobs, rows))
    }
}

/// The jobs as one JSON array for `json_each`: `{"a": job, "r": due}`,
/// or `{"p": hex bytes, "r": due}` for a job kept as bytes.
fn json_array(jobs: &[NewJob]) -> String {
    let mut out = String::with_capacity(jobs.len() * 64);
    out.push('[');
    for (i, job) in jobs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"r\":{},\"q\":{}", micros(job.run_at), job.priority);
        if let Some(key) = &job.unique_key {
            let key = serde_json::to_string(key).unwrap_or_default();
            let _ = write!(out, ",\"u\":{key}");
        }
        match &job.payload {
            // Valid JSON already: serde_json wrote it.
            Payload::Json(json) => {
                let _ = write!(out, ",\"a\":{json}}}");
            }
            Payload::Bincode(bytes) => {
                out.push_str(",\"p\":\"");
                for b in bytes {
                    let _ = write!(out, "{b:02x}");
                }
                out.push_str("\"}");
            }
        }
    }
    out.push(']');
    out
}

impl crate::store::Store for SqliteStore {
    type Database = Sqlite;

    async fn push(&self, jobs: &[NewJob]) -> Result<Vec<Option<JobId>>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await.map_err(db("add jobs"))?;
        let ids = self.push_on(&mut conn, jobs).await?;
        drop(conn);
        self.announce();
        Ok(ids)
    }

    async fn push_in<'c>(
        &'c self,
        conn: &'c mut SqliteConnection,
        jobs: &'c [NewJob],
    ) -> Result<Vec<Option<JobId>>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // Runners are woken when the caller's transaction commits (and
        // not if it rolls back): the connection's commit hook, once. A
        // runner woken then waits for the commit to finish (for the one
        // connection of the store's pool, or for the write lock on a
        // connection of the caller's own), so it finds the jobs, a timer's
        // due time included.
        let wake = self.wake.clone();
        let mut armed = true;
        conn.lock_handle()
            .await
            .map_err(db("add jobs"))?
            .set_commit_hook(move || {
                if std::mem::take(&mut armed) {
                    wake.send_modify(|n| *n += 1);
                }
                true
            });
        self.push_on(conn, jobs).await
    }

    async fn complete(&self, ids: &[JobId], owner: &str) -> Result<Vec<JobId>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let mut tx = self.pool.begin().await.map_err(db("complete jobs"))?;
        let rows = sqlx::query(&self.sql.complete)
            .bind(list)
            .bind(owner)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("complete jobs"))?;
        let done = ids_of(&rows).map_err(db("complete jobs"))?;
        if !done.is_empty() {
            sqlx::query(crate::sql::SQLITE_COUNT)
                .bind(&*self.queue)
                .bind(done.len() as i64)
                .bind(0i64)
                .execute(&mut *tx)
                .await
                .map_err(db("count completed jobs"))?;
        }
        tx.commit().await.map_err(db("complete jobs"))?;
        Ok(done)
    }

    async fn cancel(&self, id: JobId) -> Result<bool, QueueError> {
        let mut tx = self.pool.begin().await.map_err(db("cancel a job"))?;
        let gone = sqlx::query(&self.sql.cancel)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("cancel a job"))?
            .is_some();
        if gone {
            sqlx::query(crate::sql::SQLITE_COUNT)
                .bind(&*self.queue)
                .bind(0i64)
                .bind(1i64)
                .execute(&mut *tx)
                .await
                .map_err(db("count cancelled jobs"))?;
        }
        tx.commit().await.map_err(db("cancel a job"))?;
        Ok(gone)
    }

    async fn listen(&self, _stop: CancellationToken) {
        // Nothing to hear: only this process's pushes wake its runners.
    }

    shared_methods!();
}

fn ids_of(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<JobId>, sqlx::Error> {
    rows.iter().map(|row| row.try_get::<i64, _>(0)).collect()
}
