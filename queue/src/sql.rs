//! The SQL the stores share, and the methods of [`Store`] whose logic is
//! the same on both databases (a macro: sqlx's types differ per database,
//! the logic does not). What differs (adding and completing many jobs in
//! one statement: arrays on PostgreSQL, a JSON array on SQLite) is in each
//! store's file.
//!
//! [`Store`]: crate::Store

/// The statements one store runs, with its tables' names filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) push: String,
    /// `push` for jobs some of which have unique keys (PostgreSQL: with
    /// `ON CONFLICT DO NOTHING`, which costs each row a speculative
    /// insert; SQLite's is `push`).
    #[cfg(feature = "postgres")]
    pub(crate) push_unique: String,
    /// `push`, and a notification when its transaction commits
    /// (PostgreSQL only), without unique keys and with.
    #[cfg(feature = "postgres")]
    pub(crate) push_notify: String,
    #[cfg(feature = "postgres")]
    pub(crate) push_notify_unique: String,
    pub(crate) claim: String,
    pub(crate) reap: String,
    pub(crate) complete: String,
    pub(crate) retry: String,
    pub(crate) bury: String,
    pub(crate) cancel: String,
    pub(crate) stats: String,
    pub(crate) next_due: String,
    pub(crate) dead: String,
    pub(crate) list: String,
    pub(crate) retry_dead: String,
    pub(crate) requeue: String,
    pub(crate) purge_jobs: String,
    pub(crate) purge_counts: String,
    pub(crate) finished: String,
    pub(crate) find_unique: String,
    pub(crate) schedule: String,
    pub(crate) unschedule: String,
    pub(crate) periodic: String,
    pub(crate) fire: String,
    pub(crate) window_find: String,
    pub(crate) window_record: String,
    pub(crate) window_expire: String,
    pub(crate) purge_windows: String,
}

/// Fills in `{t}` (the jobs table) and `{c}` (the counts table), each
/// after `prefix` (a quoted schema and a dot, or nothing).
fn fill(sql: &str, prefix: &str) -> String {
    sql.replace("{t}", &format!("{prefix}drover_jobs"))
        .replace("{c}", &format!("{prefix}drover_job_counts"))
        .replace("{p}", &format!("{prefix}drover_periodic"))
        .replace("{u}", &format!("{prefix}drover_unique"))
}

// The statements with the same text on both databases (`$n` parameters
// are SQLite's too).
const CLAIM_FROM: &str = "SELECT id FROM {t}
    WHERE state = 'ready' AND queue = $5 AND run_at <= $3
    ORDER BY priority DESC, run_at, id LIMIT $4";
const REAP: &str = "UPDATE {t} SET state = 'ready', locked_by = NULL, locked_until = NULL
    WHERE state = 'running' AND locked_until <= $1";
const RETRY: &str = "UPDATE {t}
    SET state = 'ready', run_at = $3, last_error = $4, locked_by = NULL, locked_until = NULL
    WHERE id = $1 AND locked_by = $2 AND state = 'running'";
const BURY: &str = "UPDATE {t}
    SET state = 'dead', last_error = $3, locked_by = NULL, locked_until = NULL
    WHERE id = $1 AND locked_by = $2 AND state = 'running'";
// Each count reads one index (see the migrations), never the whole table.
const STATS: &str = "SELECT
    (SELECT COUNT(*) FROM {t} WHERE state = 'ready' AND queue = $2 AND run_at <= $1),
    (SELECT COUNT(*) FROM {t} WHERE state = 'ready' AND queue = $2 AND run_at > $1),
    (SELECT COUNT(*) FROM {t} WHERE state = 'running' AND queue = $2),
    (SELECT COUNT(*) FROM {t} WHERE state = 'dead' AND queue = $2)";
const LIST: &str = "SELECT id, state, attempts, run_at, last_error, payload, {args} FROM {t}
    WHERE queue = $1 AND CASE $3
        WHEN 'ready' THEN state = 'ready' AND run_at <= $4
        WHEN 'scheduled' THEN state = 'ready' AND run_at > $4
        ELSE state = $3 END
    ORDER BY id LIMIT $2";
const RETRY_DEAD: &str = "UPDATE {t} SET state = 'ready', run_at = $2, attempts = 0
    WHERE id = $1 AND state = 'dead'";
const REQUEUE: &str =
    "UPDATE {t} SET run_at = $2 WHERE id = $1 AND state = 'ready' AND run_at > $2";
const PURGE_JOBS: &str = "DELETE FROM {t} WHERE queue = $1";
const PURGE_COUNTS: &str = "DELETE FROM {c} WHERE queue = $1";
const FINISHED: &str = "SELECT completed, cancelled FROM {c} WHERE queue = $1";
const FIND_UNIQUE: &str = "SELECT id FROM {t}
    WHERE queue = $1 AND unique_key = $2 AND state IN ('ready', 'running')";
const SCHEDULE: &str = "INSERT INTO {p} (queue, name, cron, payload, args, next_run)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (queue, name) DO UPDATE SET
        payload = excluded.payload, args = excluded.args,
        next_run = CASE WHEN {p}.cron = excluded.cron THEN {p}.next_run ELSE excluded.next_run END,
        cron = excluded.cron";
const UNSCHEDULE: &str = "DELETE FROM {p} WHERE queue = $1 AND name = $2";
const PERIODIC: &str =
    "SELECT name, cron, payload, args, next_run FROM {p} WHERE queue = $1 ORDER BY name";
const FIRE: &str = "UPDATE {p} SET next_run = $4 WHERE queue = $1 AND name = $2 AND next_run = $3";
const WINDOW_FIND: &str = "SELECT job FROM {u} WHERE queue = $1 AND unique_key = $2 AND until > $3";
const WINDOW_RECORD: &str =
    "INSERT INTO {u} (queue, unique_key, job, until) VALUES ($1, $2, $3, $4)
    ON CONFLICT (queue, unique_key) DO UPDATE SET job = excluded.job, until = excluded.until";
const WINDOW_EXPIRE: &str = "DELETE FROM {u} WHERE until <= $1";
const PURGE_WINDOWS: &str = "DELETE FROM {u} WHERE queue = $1";
const NEXT_DUE: &str = "SELECT MIN(run_at) FROM {t} WHERE state = 'ready' AND queue = $1";
const DEAD: &str = "SELECT id, attempts, COALESCE(last_error, ''), payload, {args} FROM {t}
     WHERE state = 'dead' AND queue = $1 ORDER BY id";

impl Statements {
    /// Every statement but those a dialect writes its own way (pushing,
    /// claiming, completing and cancelling), on the tables after `p`;
    /// `args` is how a select reads the JSON column as text.
    fn shared(p: &str, args: &str) -> Statements {
        Statements {
            push: String::new(),
            #[cfg(feature = "postgres")]
            push_unique: String::new(),
            #[cfg(feature = "postgres")]
            push_notify: String::new(),
            #[cfg(feature = "postgres")]
            push_notify_unique: String::new(),
            claim: String::new(),
            complete: String::new(),
            cancel: String::new(),
            reap: fill(REAP, p),
            retry: fill(RETRY, p),
            bury: fill(BURY, p),
            stats: fill(STATS, p),
            next_due: fill(NEXT_DUE, p),
            dead: fill(&DEAD.replace("{args}", args), p),
            list: fill(&LIST.replace("{args}", args), p),
            retry_dead: fill(RETRY_DEAD, p),
            requeue: fill(REQUEUE, p),
            purge_jobs: fill(PURGE_JOBS, p),
            purge_counts: fill(PURGE_COUNTS, p),
            finished: fill(FINISHED, p),
            find_unique: fill(FIND_UNIQUE, p),
            schedule: fill(SCHEDULE, p),
            unschedule: fill(UNSCHEDULE, p),
            periodic: fill(PERIODIC, p),
            fire: fill(FIRE, p),
            window_find: fill(WINDOW_FIND, p),
            window_record: fill(WINDOW_RECORD, p),
            window_expire: fill(WINDOW_EXPIRE, p),
            purge_windows: fill(PURGE_WINDOWS, p),
        }
    }
}

#[cfg(feature = "sqlite")]
pub(crate) fn sqlite() -> Statements {
    let p = "";
    Statements {
        // One JSON array of jobs, each {"p": hex bytes} or {"a": JSON},
        // with its due time, priority and unique key.
        push: fill(
            "INSERT INTO {t} (payload, args, run_at, created_at, queue, priority, unique_key)
             SELECT unhex(value ->> '$.p'), value -> '$.a', value ->> '$.r', $2, $3,
                    value ->> '$.q', value ->> '$.u'
             FROM json_each($1) WHERE true ORDER BY key
             ON CONFLICT DO NOTHING
             RETURNING id, unique_key",
            p,
        ),
        claim: fill(
            &format!(
                "UPDATE {{t}}
                 SET state = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1
                 WHERE id IN ({CLAIM_FROM})
                 RETURNING id, payload, args, attempts, run_at"
            ),
            p,
        ),
        complete: fill(
            "DELETE FROM {t}
             WHERE id IN (SELECT value FROM json_each($1)) AND locked_by = $2 AND state = 'running'
             RETURNING id",
            p,
        ),
        cancel: fill(
            "DELETE FROM {t} WHERE id = $1 AND state IN ('ready', 'dead') RETURNING queue",
            p,
        ),
        ..Statements::shared(p, "args")
    }
}

/// The counts of finished jobs, SQLite's way (it has no statements inside
/// a `WITH`): a second statement in the same transaction.
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_COUNT: &str = "INSERT INTO drover_job_counts (queue, completed, cancelled)
    VALUES ($1, $2, $3)
    ON CONFLICT (queue) DO UPDATE SET completed = completed + excluded.completed,
                                      cancelled = cancelled + excluded.cancelled";

/// PostgreSQL's insert of the jobs in the arrays, `unique` with
/// `ON CONFLICT DO NOTHING`, `notify` with a `pg_notify` on `$8`.
///
/// UNNEST yields the elements in order and the insert takes the rows as
/// they come, so ids grow in the order of the jobs ([`match_stored`]
/// relies on it). No `ORDER BY`: sorting the rows, their JSON with them,
/// cost a third of a batch's time.
///
/// [`match_stored`]: crate::store::match_stored
#[cfg(feature = "postgres")]
fn pg_push(p: &str, unique: bool, notify: bool) -> String {
    let conflict = if unique {
        " ON CONFLICT DO NOTHING"
    } else {
        ""
    };
    let notify = if notify {
        " CROSS JOIN (SELECT pg_notify($8, '')) AS n"
    } else {
        ""
    };
    fill(
        &format!(
            "WITH ins AS (
                INSERT INTO {{t}} (payload, args, run_at, created_at, queue, priority, unique_key)
                SELECT j.p, j.a::jsonb, j.r, $4, $5, j.q, j.u
                FROM UNNEST($1::bytea[], $2::text[], $3::bigint[], $6::int[], $7::text[])
                    AS j(p, a, r, q, u){conflict}
                RETURNING id, unique_key)
             SELECT ins.id, ins.unique_key FROM ins{notify}"
        ),
        p,
    )
}

/// PostgreSQL's statements, on the tables in `schema`.
#[cfg(feature = "postgres")]
pub(crate) fn postgres(schema: &str) -> Statements {
    let p = format!("\"{}\".", schema.replace('"', "\"\""));
    let p = p.as_str();
    Statements {
        // Arrays, one element per job; with unique keys, ON CONFLICT; with a
        // notification that runners listening hear once the statement's
        // transaction commits (the caller's, for push_in).
        push: pg_push(p, false, false),
        push_unique: pg_push(p, true, false),
        push_notify: pg_push(p, false, true),
        push_notify_unique: pg_push(p, true, true),
        // SKIP LOCKED: runners on many machines claim from one table, none
        // waiting for another's rows, none getting the same job.
        claim: fill(
            &format!(
                "UPDATE {{t}}
                 SET state = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1
                 WHERE id IN ({CLAIM_FROM} FOR UPDATE SKIP LOCKED)
                 RETURNING id, payload, args::text, attempts, run_at"
            ),
            p,
        ),
        complete: fill(
            "WITH done AS (
                DELETE FROM {t} WHERE id = ANY($1) AND locked_by = $2 AND state = 'running'
                RETURNING id, queue),
             counted AS (
                INSERT INTO {c} (queue, completed)
                SELECT queue, COUNT(*) FROM done GROUP BY queue
                ON CONFLICT (queue) DO UPDATE SET completed = {c}.completed + excluded.completed)
             SELECT id FROM done",
            p,
        ),
        cancel: fill(
            "WITH gone AS (
                DELETE FROM {t} WHERE id = $1 AND state IN ('ready', 'dead') RETURNING queue),
             counted AS (
                INSERT INTO {c} (queue, cancelled)
                SELECT queue, COUNT(*) FROM gone GROUP BY queue
                ON CONFLICT (queue) DO UPDATE SET cancelled = {c}.cancelled + excluded.cancelled)
             SELECT queue FROM gone",
            p,
        ),
        ..Statements::shared(p, "args::text")
    }
}

/// A stored job from its two columns: JSON if it has any, else bytes.
pub(crate) fn payload(bytes: Option<Vec<u8>>, json: Option<String>) -> crate::Payload {
    match json {
        Some(json) => crate::Payload::Json(json),
        None => crate::Payload::Bincode(bytes.unwrap_or_default()),
    }
}

/// The [`Store`](crate::Store) methods both stores share, for a struct
/// with a `pool` field (an sqlx pool), a `run_pool` (the pool a runner's
/// own writes go through: claims, completions, retries), a `sql` field
/// ([`Statements`]), a `queue` field (the queue's name), a `wake` field
/// (the in-process signal), and methods `push_on` (an insert through a
/// connection, telling no one) and `announce` (tell runners that jobs may
/// have become due, once committed).
macro_rules! shared_methods {
    () => {
        async fn claim(
            &self,
            owner: &str,
            limit: usize,
            lease: std::time::Duration,
        ) -> Result<Vec<$crate::Job>, $crate::QueueError> {
            use sqlx::Row;
            let now = std::time::SystemTime::now();
            let rows = sqlx::query(&self.sql.claim)
                .bind(owner)
                .bind($crate::store::micros(now + lease))
                .bind($crate::store::micros(now))
                .bind(limit as i64)
                .bind(&*self.queue)
                .fetch_all(&self.run_pool)
                .await
                .map_err($crate::error::db("claim jobs"))?;
            let mut jobs = rows
                .iter()
                .map(|row| {
                    Ok($crate::Job {
                        id: row.try_get(0)?,
                        payload: $crate::sql::payload(row.try_get(1)?, row.try_get(2)?),
                        attempts: row.try_get::<i64, _>(3)? as u32,
                        due_at: $crate::store::from_micros(row.try_get(4)?),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err($crate::error::db("claim jobs"))?;
            jobs.sort_by_key(|j| j.id);
            Ok(jobs)
        }

        async fn reap(&self) -> Result<u64, $crate::QueueError> {
            let now = $crate::store::micros(std::time::SystemTime::now());
            let done = sqlx::query(&self.sql.reap)
                .bind(now)
                .execute(&self.run_pool)
                .await
                .map_err($crate::error::db("take back expired leases"))?;
            // Unique keys whose window is over need no row.
            sqlx::query(&self.sql.window_expire)
                .bind(now)
                .execute(&self.run_pool)
                .await
                .map_err($crate::error::db("forget unique windows"))?;
            Ok(done.rows_affected())
        }

        async fn retry(
            &self,
            id: $crate::JobId,
            owner: &str,
            run_at: std::time::SystemTime,
            error: &str,
        ) -> Result<bool, $crate::QueueError> {
            let done = sqlx::query(&self.sql.retry)
                .bind(id)
                .bind(owner)
                .bind($crate::store::micros(run_at))
                .bind(error)
                .execute(&self.run_pool)
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
            let done = sqlx::query(&self.sql.bury)
                .bind(id)
                .bind(owner)
                .bind(error)
                .execute(&self.run_pool)
                .await
                .map_err($crate::error::db("mark a job dead"))?;
            Ok(done.rows_affected() == 1)
        }

        async fn stats(&self) -> Result<$crate::Stats, $crate::QueueError> {
            use sqlx::Row;
            let row = sqlx::query(&self.sql.stats)
                .bind($crate::store::micros(std::time::SystemTime::now()))
                .bind(&*self.queue)
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
            let row = sqlx::query(&self.sql.next_due)
                .bind(&*self.queue)
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
            let rows = sqlx::query(&self.sql.dead)
                .bind(&*self.queue)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::error::db("list dead jobs"))?;
            rows.iter()
                .map(|row| {
                    Ok($crate::DeadJob {
                        id: row.try_get(0)?,
                        attempts: row.try_get::<i64, _>(1)? as u32,
                        last_error: row.try_get(2)?,
                        payload: $crate::sql::payload(row.try_get(3)?, row.try_get(4)?),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err($crate::error::db("list dead jobs"))
        }

        async fn list(
            &self,
            state: $crate::JobState,
            limit: usize,
        ) -> Result<Vec<$crate::JobInfo>, $crate::QueueError> {
            use sqlx::Row;
            let rows = sqlx::query(&self.sql.list)
                .bind(&*self.queue)
                .bind(limit.min(i64::MAX as usize) as i64)
                .bind(state.name())
                .bind($crate::store::micros(std::time::SystemTime::now()))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::error::db("list jobs"))?;
            rows.iter()
                .map(|row| {
                    Ok($crate::JobInfo {
                        id: row.try_get(0)?,
                        state,
                        attempts: row.try_get::<i64, _>(2)? as u32,
                        run_at: $crate::store::from_micros(row.try_get(3)?),
                        last_error: row.try_get(4)?,
                        payload: $crate::sql::payload(row.try_get(5)?, row.try_get(6)?),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err($crate::error::db("list jobs"))
        }

        async fn retry_dead(&self, id: $crate::JobId) -> Result<bool, $crate::QueueError> {
            let done = sqlx::query(&self.sql.retry_dead)
                .bind(id)
                .bind($crate::store::micros(std::time::SystemTime::now()))
                .execute(&self.pool)
                .await
                .map_err($crate::error::db("retry a dead job"))?;
            if done.rows_affected() == 1 {
                self.announce();
            }
            Ok(done.rows_affected() == 1)
        }

        async fn requeue(&self, id: $crate::JobId) -> Result<bool, $crate::QueueError> {
            let done = sqlx::query(&self.sql.requeue)
                .bind(id)
                .bind($crate::store::micros(std::time::SystemTime::now()))
                .execute(&self.pool)
                .await
                .map_err($crate::error::db("requeue a job"))?;
            if done.rows_affected() == 1 {
                self.announce();
            }
            Ok(done.rows_affected() == 1)
        }

        async fn purge(&self) -> Result<u64, $crate::QueueError> {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err($crate::error::db("purge jobs"))?;
            let gone = sqlx::query(&self.sql.purge_jobs)
                .bind(&*self.queue)
                .execute(&mut *tx)
                .await
                .map_err($crate::error::db("purge jobs"))?;
            sqlx::query(&self.sql.purge_counts)
                .bind(&*self.queue)
                .execute(&mut *tx)
                .await
                .map_err($crate::error::db("purge jobs"))?;
            sqlx::query(&self.sql.purge_windows)
                .bind(&*self.queue)
                .execute(&mut *tx)
                .await
                .map_err($crate::error::db("purge jobs"))?;
            tx.commit().await.map_err($crate::error::db("purge jobs"))?;
            Ok(gone.rows_affected())
        }

        async fn finished(&self) -> Result<$crate::Finished, $crate::QueueError> {
            use sqlx::Row;
            let row = sqlx::query(&self.sql.finished)
                .bind(&*self.queue)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::error::db("count finished jobs"))?;
            let Some(row) = row else {
                return Ok($crate::Finished::default());
            };
            (|| {
                Ok($crate::Finished {
                    completed: row.try_get::<i64, _>(0)? as u64,
                    cancelled: row.try_get::<i64, _>(1)? as u64,
                })
            })()
            .map_err($crate::error::db("count finished jobs"))
        }

        fn queue(&self) -> &str {
            &self.queue
        }

        async fn schedule(&self, periodic: &$crate::Periodic) -> Result<(), $crate::QueueError> {
            let (bytes, json) = match &periodic.payload {
                $crate::Payload::Json(json) => (None, Some(json.as_str())),
                $crate::Payload::Bincode(bytes) => (Some(bytes.as_slice()), None),
            };
            sqlx::query(&self.sql.schedule)
                .bind(&*self.queue)
                .bind(&periodic.name)
                .bind(&periodic.cron)
                .bind(bytes)
                .bind(json)
                .bind($crate::store::micros(periodic.next_run))
                .execute(&self.pool)
                .await
                .map_err($crate::error::db("schedule a periodic job"))?;
            Ok(())
        }

        async fn unschedule(&self, name: &str) -> Result<bool, $crate::QueueError> {
            let done = sqlx::query(&self.sql.unschedule)
                .bind(&*self.queue)
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err($crate::error::db("unschedule a periodic job"))?;
            Ok(done.rows_affected() == 1)
        }

        async fn periodic(&self) -> Result<Vec<$crate::Periodic>, $crate::QueueError> {
            use sqlx::Row;
            let rows = sqlx::query(&self.sql.periodic)
                .bind(&*self.queue)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::error::db("list periodic jobs"))?;
            rows.iter()
                .map(|row| {
                    Ok($crate::Periodic {
                        name: row.try_get(0)?,
                        cron: row.try_get(1)?,
                        payload: $crate::sql::payload(row.try_get(2)?, row.try_get(3)?),
                        next_run: $crate::store::from_micros(row.try_get(4)?),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err($crate::error::db("list periodic jobs"))
        }

        async fn fire(
            &self,
            periodic: &$crate::Periodic,
            next: std::time::SystemTime,
        ) -> Result<bool, $crate::QueueError> {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err($crate::error::db("fire a periodic job"))?;
            let moved = sqlx::query(&self.sql.fire)
                .bind(&*self.queue)
                .bind(&periodic.name)
                .bind($crate::store::micros(periodic.next_run))
                .bind($crate::store::micros(next))
                .execute(&mut *tx)
                .await
                .map_err($crate::error::db("fire a periodic job"))?;
            if moved.rows_affected() != 1 {
                // Another runner fired this tick.
                return Ok(false);
            }
            let job = $crate::NewJob::new(periodic.payload.clone(), periodic.next_run);
            self.push_on(&mut *tx, std::slice::from_ref(&job)).await?;
            tx.commit()
                .await
                .map_err($crate::error::db("fire a periodic job"))?;
            self.announce();
            Ok(true)
        }

        async fn find_unique(
            &self,
            key: &str,
        ) -> Result<Option<$crate::JobId>, $crate::QueueError> {
            sqlx::query_scalar(&self.sql.find_unique)
                .bind(&*self.queue)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::error::db("find a unique job"))
        }

        async fn push_within(
            &self,
            job: &$crate::NewJob,
            window: std::time::Duration,
        ) -> Result<Option<$crate::Pushed>, $crate::QueueError> {
            let what = "add a unique job";
            let key = job.unique_key.as_deref().unwrap_or_default();
            let now = std::time::SystemTime::now();
            let mut tx = self.pool.begin().await.map_err($crate::error::db(what))?;
            let recent: Option<i64> = sqlx::query_scalar(&self.sql.window_find)
                .bind(&*self.queue)
                .bind(key)
                .bind($crate::store::micros(now))
                .fetch_optional(&mut *tx)
                .await
                .map_err($crate::error::db(what))?;
            if let Some(id) = recent {
                // Nothing written: dropping the transaction rolls it back.
                return Ok(Some($crate::Pushed::Duplicate(id)));
            }
            let stored = self.push_on(&mut *tx, std::slice::from_ref(job)).await?;
            let pushed = match stored.first().copied().flatten() {
                Some(id) => {
                    sqlx::query(&self.sql.window_record)
                        .bind(&*self.queue)
                        .bind(key)
                        .bind(id)
                        .bind($crate::store::micros($crate::store::later(now, window)))
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db(what))?;
                    $crate::Pushed::New(id)
                }
                None => {
                    let pending: Option<i64> = sqlx::query_scalar(&self.sql.find_unique)
                        .bind(&*self.queue)
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($crate::error::db(what))?;
                    match pending {
                        Some(id) => $crate::Pushed::Duplicate(id),
                        // It finished between the insert and the look.
                        None => return Ok(None),
                    }
                }
            };
            tx.commit().await.map_err($crate::error::db(what))?;
            if let $crate::Pushed::New(_) = pushed {
                self.announce();
            }
            Ok(Some(pushed))
        }

        fn wakeups(&self) -> $crate::Wakeups {
            self.wake.subscribe()
        }
    };
}

pub(crate) use shared_methods;
