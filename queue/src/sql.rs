//! The SQL of each store, and the one implementation of [`Store`] they
//! share (a macro: sqlx's types differ per database, the logic does not).
//!
//! [`Store`]: crate::Store

/// The statements one database runs.
pub(crate) struct Statements {
    pub(crate) create: &'static [&'static str],
    pub(crate) push: &'static str,
    pub(crate) claim: &'static str,
    pub(crate) complete: &'static str,
    pub(crate) retry: &'static str,
    pub(crate) bury: &'static str,
    pub(crate) cancel: &'static str,
    pub(crate) stats: &'static str,
    pub(crate) next_due: &'static str,
    pub(crate) dead: &'static str,
}

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: Statements = Statements {
    create: &[
        "CREATE TABLE IF NOT EXISTS drover_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            payload BLOB NOT NULL,
            run_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'ready',
            locked_by TEXT,
            locked_until INTEGER,
            last_error TEXT,
            created_at INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS drover_jobs_due ON drover_jobs (state, run_at)",
    ],
    push: "INSERT INTO drover_jobs (payload, run_at, created_at) VALUES (?1, ?2, ?3) RETURNING id",
    claim: "UPDATE drover_jobs
            SET state = 'running', locked_by = ?1, locked_until = ?2, attempts = attempts + 1
            WHERE id IN (
                SELECT id FROM drover_jobs
                WHERE (state = 'ready' AND run_at <= ?3) OR (state = 'running' AND locked_until <= ?3)
                ORDER BY run_at, id LIMIT ?4)
            RETURNING id, payload, attempts, run_at",
    complete: "DELETE FROM drover_jobs WHERE id = ?1 AND locked_by = ?2 AND state = 'running'",
    retry: "UPDATE drover_jobs
            SET state = 'ready', run_at = ?3, last_error = ?4, locked_by = NULL, locked_until = NULL
            WHERE id = ?1 AND locked_by = ?2 AND state = 'running'",
    bury: "UPDATE drover_jobs
           SET state = 'dead', last_error = ?3, locked_by = NULL, locked_until = NULL
           WHERE id = ?1 AND locked_by = ?2 AND state = 'running'",
    cancel: "DELETE FROM drover_jobs WHERE id = ?1 AND state IN ('ready', 'dead')",
    stats: "SELECT
                COALESCE(SUM(CASE WHEN state = 'ready' AND run_at <= ?1 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN state = 'ready' AND run_at > ?1 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0)
            FROM drover_jobs",
    next_due: "SELECT MIN(run_at) FROM drover_jobs WHERE state = 'ready'",
    dead: "SELECT id, attempts, COALESCE(last_error, ''), payload FROM drover_jobs WHERE state = 'dead' ORDER BY id",
};

#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: Statements = Statements {
    create: &[
        "CREATE TABLE IF NOT EXISTS drover_jobs (
            id BIGSERIAL PRIMARY KEY,
            payload BYTEA NOT NULL,
            run_at BIGINT NOT NULL,
            attempts BIGINT NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'ready',
            locked_by TEXT,
            locked_until BIGINT,
            last_error TEXT,
            created_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS drover_jobs_due ON drover_jobs (state, run_at)",
    ],
    push: "INSERT INTO drover_jobs (payload, run_at, created_at) VALUES ($1, $2, $3) RETURNING id",
    // SKIP LOCKED: runners on many machines claim from one table, none
    // waiting for another's rows, none getting the same job.
    claim: "UPDATE drover_jobs
            SET state = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1
            WHERE id IN (
                SELECT id FROM drover_jobs
                WHERE (state = 'ready' AND run_at <= $3) OR (state = 'running' AND locked_until <= $3)
                ORDER BY run_at, id LIMIT $4
                FOR UPDATE SKIP LOCKED)
            RETURNING id, payload, attempts, run_at",
    complete: "DELETE FROM drover_jobs WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    retry: "UPDATE drover_jobs
            SET state = 'ready', run_at = $3, last_error = $4, locked_by = NULL, locked_until = NULL
            WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    bury: "UPDATE drover_jobs
           SET state = 'dead', last_error = $3, locked_by = NULL, locked_until = NULL
           WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    cancel: "DELETE FROM drover_jobs WHERE id = $1 AND state IN ('ready', 'dead')",
    stats: "SELECT
                COALESCE(SUM(CASE WHEN state = 'ready' AND run_at <= $1 THEN 1 ELSE 0 END), 0)::BIGINT,
                COALESCE(SUM(CASE WHEN state = 'ready' AND run_at > $1 THEN 1 ELSE 0 END), 0)::BIGINT,
                COALESCE(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0)::BIGINT,
                COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0)::BIGINT
            FROM drover_jobs",
    next_due: "SELECT MIN(run_at) FROM drover_jobs WHERE state = 'ready'",
    dead: "SELECT id, attempts, COALESCE(last_error, ''), payload FROM drover_jobs WHERE state = 'dead' ORDER BY id",
};

/// Implements [`Store`](crate::Store) for `$store`, a struct with a
/// `pool` field of `$pool`, running the statements `$sql`.
macro_rules! impl_store {
    ($store:ty, $sql:expr) => {
        impl $crate::store::Store for $store {
            async fn push(
                &self,
                payload: &[u8],
                run_at: std::time::SystemTime,
            ) -> Result<$crate::JobId, $crate::QueueError> {
                use sqlx::Row;
                let row = sqlx::query($sql.push)
                    .bind(payload)
                    .bind($crate::store::micros(run_at))
                    .bind($crate::store::micros(std::time::SystemTime::now()))
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::error::db("add a job"))?;
                row.try_get::<i64, _>(0)
                    .map_err($crate::error::db("add a job"))
            }

            async fn claim(
                &self,
                owner: &str,
                limit: usize,
                lease: std::time::Duration,
            ) -> Result<Vec<$crate::Job>, $crate::QueueError> {
                use sqlx::Row;
                let now = std::time::SystemTime::now();
                let rows = sqlx::query($sql.claim)
                    .bind(owner)
                    .bind($crate::store::micros(now + lease))
                    .bind($crate::store::micros(now))
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::error::db("claim jobs"))?;
                let mut jobs = rows
                    .iter()
                    .map(|row| {
                        Ok($crate::Job {
                            id: row.try_get(0)?,
                            payload: row.try_get(1)?,
                            attempts: row.try_get::<i64, _>(2)? as u32,
                            due_at: $crate::store::from_micros(row.try_get::<i64, _>(3)?),
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err($crate::error::db("claim jobs"))?;
                jobs.sort_by_key(|j| j.id);
                Ok(jobs)
            }

            async fn complete(
                &self,
                id: $crate::JobId,
                owner: &str,
            ) -> Result<bool, $crate::QueueError> {
                let done = sqlx::query($sql.complete)
                    .bind(id)
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::error::db("complete a job"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn retry(
                &self,
                id: $crate::JobId,
                owner: &str,
                run_at: std::time::SystemTime,
                error: &str,
            ) -> Result<bool, $crate::QueueError> {
                let done = sqlx::query($sql.retry)
                    .bind(id)
                    .bind(owner)
                    .bind($crate::store::micros(run_at))
                    .bind(error)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::error::db("schedule a retry"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn bury(
                &self,
                id: $crate::JobId,
                owner: &str,
                error: &str,
            ) -> Result<bool, $crate::QueueError> {
                let done = sqlx::query($sql.bury)
                    .bind(id)
                    .bind(owner)
                    .bind(error)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::error::db("mark a job dead"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn cancel(&self, id: $crate::JobId) -> Result<bool, $crate::QueueError> {
                let done = sqlx::query($sql.cancel)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::error::db("cancel a job"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn stats(&self) -> Result<$crate::Stats, $crate::QueueError> {
                use sqlx::Row;
                let row = sqlx::query($sql.stats)
                    .bind($crate::store::micros(std::time::SystemTime::now()))
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::error::db("count jobs"))?;
                let get = |i: usize| row.try_get::<i64, _>(i).map(|n| n as u64);
                (|| {
                    Ok($crate::Stats {
                        ready: get(0)?,
                        scheduled: get(1)?,
                        running: get(2)?,
                        dead: get(3)?,
                    })
                })()
                .map_err($crate::error::db("count jobs"))
            }

            async fn next_due(&self) -> Result<Option<std::time::SystemTime>, $crate::QueueError> {
                use sqlx::Row;
                let row = sqlx::query($sql.next_due)
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::error::db("find the next due job"))?;
                let at: Option<i64> = row
                    .try_get(0)
                    .map_err($crate::error::db("find the next due job"))?;
                Ok(at.map($crate::store::from_micros))
            }

            async fn dead(&self) -> Result<Vec<$crate::DeadJob>, $crate::QueueError> {
                use sqlx::Row;
                let rows = sqlx::query($sql.dead)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::error::db("list dead jobs"))?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::DeadJob {
                            id: row.try_get(0)?,
                            attempts: row.try_get::<i64, _>(1)? as u32,
                            last_error: row.try_get(2)?,
                            payload: row.try_get(3)?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err($crate::error::db("list dead jobs"))
            }
        }
    };
}

pub(crate) use impl_store;
