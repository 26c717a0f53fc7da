//! The PostgreSQL store: many supervisors, on many machines, drain one
//! queue.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{db, QueueError};
use crate::sql::{impl_store, POSTGRES};

/// Jobs in a PostgreSQL table (`drover_jobs`, created if missing).
/// Runners claim with `FOR UPDATE SKIP LOCKED`, so any number of them, on
/// any number of machines, share the queue without handing a job to two.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/database`).
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`] if it cannot connect or make its table.
    pub async fn connect(url: &str) -> Result<PgStore, QueueError> {
        let options = PgConnectOptions::from_str(url).map_err(db("parse the database URL"))?;
        PgStore::connect_with(options).await
    }

    /// Connects to `url` and keeps the jobs in `schema` (created if
    /// missing): separate queues in one database.
    ///
    /// # Errors
    ///
    /// As [`connect`](PgStore::connect).
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<PgStore, QueueError> {
        let options = PgConnectOptions::from_str(url).map_err(db("parse the database URL"))?;
        // Create the schema first, over a connection of its own.
        let setup = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(db("connect"))?;
        let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
            .execute(&setup)
            .await
            .map_err(db("create the schema"))?;
        setup.close().await;
        PgStore::connect_with(options.options([("search_path", schema)])).await
    }

    /// Connects with `options`.
    ///
    /// # Errors
    ///
    /// As [`connect`](PgStore::connect).
    pub async fn connect_with(options: PgConnectOptions) -> Result<PgStore, QueueError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(db("connect"))?;
        for statement in POSTGRES.create {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .map_err(db("create the jobs table"))?;
        }
        Ok(PgStore { pool })
    }
}

impl_store!(PgStore, POSTGRES);
