//! The SQLite store: one file, one machine.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::error::{db, QueueError};
use crate::sql::{impl_store, SQLITE};

/// Jobs in an SQLite database file (created if missing), in WAL mode.
///
/// One process should run a queue on a file at a time; for several
/// supervisors on several machines, use [`PgStore`](crate::PgStore).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`] if it cannot be opened or its table made.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, QueueError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        SqliteStore::with_options(options).await
    }

    /// A database in memory, gone with the store: for tests.
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
        for statement in SQLITE.create {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .map_err(db("create the jobs table"))?;
        }
        Ok(SqliteStore { pool })
    }
}

impl_store!(SqliteStore, SQLITE);
