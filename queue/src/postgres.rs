//! The PostgreSQL store: many supervisors, on many machines, drain one
//! queue.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{db, QueueError};
use crate::sql::{shared_methods, Statements};
use crate::store::{match_stored, micros, NewJob, Payload};
use crate::JobId;

/// Jobs in PostgreSQL tables (`drover_jobs`, `drover_job_counts`, in the
/// connection's schema or one of the store's own), created or brought up
/// to date by versioned migrations when the store connects.
///
/// Runners claim with `FOR UPDATE SKIP LOCKED`, so any number of them, on
/// any number of machines, share the queue without handing a job to two.
/// Pushes notify (`NOTIFY`), and each runner listens on a connection of
/// its own, so a job pushed anywhere starts without waiting for a poll;
/// polling stays, so a lost listening connection or notification costs
/// latency, never jobs.
///
/// A push through the store's connections commits its insert alone and
/// notifies afterwards, off its path: a task of the store sends one
/// `NOTIFY` (committed without waiting for the disk) for however many
/// pushes committed since its last one. A `NOTIFY` inside the insert's
/// transaction would take PostgreSQL's notification lock until the
/// commit's flush, one commit at a time across the whole server, which
/// made concurrent pushes several times slower. A push inside the
/// caller's transaction ([`JobQueue::push_in`](crate::JobQueue::push_in))
/// notifies within it, so its runners hear of it exactly when it commits.
/// Runners in the same process are woken at once, either way.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// A runner's own writes (claims, completions, retries): committed
    /// without waiting for the disk unless `durable_runs` (see
    /// [`PgStoreBuilder::durable_runs`]).
    run_pool: PgPool,
    sql: Arc<Statements>,
    queue: Arc<str>,
    wake: Arc<watch::Sender<u64>>,
    /// The notification channel of this schema's queue.
    channel: Arc<str>,
    /// How a runner's listening connection connects.
    listen_options: PgConnectOptions,
    /// Notifies other processes' runners of this process's pushes.
    announcer: Arc<Announcer>,
}

/// The task that sends one `NOTIFY` for any number of commits, started
/// with the store's first push; it ends when the last clone of the store
/// is dropped (a push committed just before may then go unannounced:
/// other runners find it at their next poll).
#[derive(Debug)]
struct Announcer {
    kick: Arc<tokio::sync::Notify>,
    /// Started by the first push, again if its runtime ended it.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop: tokio_util::sync::DropGuard,
}

impl Announcer {
    fn new() -> Announcer {
        Announcer {
            kick: Arc::new(tokio::sync::Notify::new()),
            task: std::sync::Mutex::new(None),
            stop: CancellationToken::new().drop_guard(),
        }
    }
}

/// Until `stop`: after each kick, one `NOTIFY` on `channel` (kicks while
/// it is sent are kept as one, so every commit is followed by one).
async fn announce(
    pool: PgPool,
    channel: Arc<str>,
    kick: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = kick.notified() => {}
        }
        // Nothing here needs to survive a crash: no wait for the disk.
        let sent =
            sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')")
                .bind(&*channel)
                .execute(&pool)
                .await;
        if let Err(e) = sent {
            tracing::warn!(
                "job queue: cannot notify other runners of new jobs ({e}); \
                 they find them at their next poll"
            );
        }
    }
}

/// Settings of a [`PgStore`], from [`PgStore::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect()`"]
pub struct PgStoreBuilder {
    /// The options, or why the URL did not parse.
    options: Result<PgConnectOptions, String>,
    schema: Option<String>,
    max_connections: u32,
    durable_runs: bool,
}

impl PgStoreBuilder {
    /// Keeps the tables in `schema`, created if missing: separate queues
    /// in one database, and a migration history apart from the
    /// application's own.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// How many connections the store keeps to PostgreSQL for pushes,
    /// stats and operators' calls (default 4; at least 1). Besides them,
    /// runners' own writes (claims and completions, in batches) go over 2
    /// more, opened when first needed, and each running runner holds one
    /// to listen.
    /// More lets more of those run at once (many tasks pushing, many
    /// runners in one process) at the cost of server memory and of
    /// connections `max_connections` on the server must allow for; a
    /// runner alone needs few, since it claims and completes in batches.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Whether a runner's own writes (claims, completions, retries, dead
    /// jobs) wait for the disk at commit, as pushes always do (default
    /// false: they commit with `synchronous_commit = off`, over connections
    /// of their own, 2 more).
    ///
    /// What off costs: a crash of the PostgreSQL server or of its machine
    /// (not of a runner) may forget the last fraction of a second of
    /// those writes (PostgreSQL's `wal_writer_delay`, 200 ms by default,
    /// three times that at worst), never of pushes, which still wait.
    /// Forgotten, a completion leaves its job running under a lease that
    /// then runs out, and the job runs again: **a job that completed may
    /// run a second time**. A forgotten claim puts its job back as it was,
    /// so it may run again while its first run goes on. A forgotten retry
    /// or dead mark leaves the job running until its lease runs out, then
    /// it runs again. No job is lost: at least once holds, and the
    /// database is never corrupted (the log is written in order: a write
    /// is kept only with all before it). In exchange a runner does not
    /// wait for a disk flush per batch: where commits are slow, it drains
    /// several times faster. On, every recorded outcome survives a server
    /// crash, and a job runs twice only when a lease ran out.
    pub fn durable_runs(mut self, yes: bool) -> Self {
        self.durable_runs = yes;
        self
    }

    /// Connects, and brings the schema up to date.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`] if the URL does not parse or it cannot
    /// connect or make its schema; [`QueueError::Migrate`] if the schema
    /// cannot be brought up to date.
    pub async fn connect(self) -> Result<PgStore, QueueError> {
        let mut options = self.options.map_err(|e| QueueError::Database {
            operation: "parse the database URL",
            source: sqlx::Error::Configuration(e.into()),
        })?;
        if let Some(schema) = &self.schema {
            // Create the schema first, over a connection of its own.
            let setup = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .map_err(db("connect"))?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema)))
                .execute(&setup)
                .await
                .map_err(db("create the schema"))?;
            setup.close().await;
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .connect_with(options.clone())
            .await
            .map_err(db("connect"))?;
        let run_options = if self.durable_runs {
            options.clone()
        } else {
            options.clone().options([("synchronous_commit", "off")])
        };
        let run_pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .connect_lazy_with(run_options);
        let schema: String = match self.schema {
            Some(schema) => schema,
            None => sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&pool)
                .await
                .map_err(db("find the current schema"))?,
        };
        crate::migrate::migrator(crate::migrate::POSTGRES)
            .await?
            .run(&pool)
            .await
            .map_err(|source| QueueError::Migrate { source })?;
        let listen_options =
            options.application_name(&truncate(&format!("drover-queue listener {schema}"), 63));
        Ok(PgStore {
            pool,
            run_pool,
            sql: Arc::new(crate::sql::postgres(&schema)),
            queue: "default".into(),
            wake: Arc::new(watch::channel(0).0),
            // Channel names are identifiers: at most 63 bytes.
            channel: truncate(&format!("drover_jobs.{schema}"), 63).into(),
            listen_options,
            announcer: Arc::new(Announcer::new()),
        })
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/database`), with
    /// every default: the connection's own schema, 4 connections.
    ///
    /// # Errors
    ///
    /// As [`PgStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<PgStore, QueueError> {
        PgStore::builder(url).connect().await
    }

    /// Connects to `url` and keeps the jobs in `schema` (created if
    /// missing): separate queues in one database.
    ///
    /// # Errors
    ///
    /// As [`PgStoreBuilder::connect`].
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<PgStore, QueueError> {
        PgStore::builder(url).schema(schema).connect().await
    }

    /// Connects with `options`, with every other default.
    ///
    /// # Errors
    ///
    /// As [`PgStoreBuilder::connect`].
    pub async fn connect_with(options: PgConnectOptions) -> Result<PgStore, QueueError> {
        PgStore::builder_with(options).connect().await
    }

    /// Settings for a store on `url`: schema, pool size. A URL that does
    /// not parse fails `connect`, naming it.
    pub fn builder(url: &str) -> PgStoreBuilder {
        PgStoreBuilder {
            options: PgConnectOptions::from_str(url).map_err(|e| e.to_string()),
            schema: None,
            max_connections: 4,
            durable_runs: false,
        }
    }

    /// Settings for a store connecting with `options`.
    pub fn builder_with(options: PgConnectOptions) -> PgStoreBuilder {
        PgStoreBuilder {
            options: Ok(options),
            schema: None,
            max_connections: 4,
            durable_runs: false,
        }
    }

    /// A handle on the queue named `name` in the same tables: the same
    /// connections and wake-ups, its own jobs (a runner of one named queue
    /// never takes another's). Queues are made by using them.
    pub fn named(&self, name: &str) -> PgStore {
        PgStore {
            queue: name.into(),
            ..self.clone()
        }
    }

    /// The store's connections, for work of the caller's own on the same
    /// database, such as a transaction to push jobs in
    /// ([`JobQueue::push_in`](crate::JobQueue::push_in)); its search path
    /// is the store's schema.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The channel this store's pushes notify (`LISTEN` on it to hear of
    /// new jobs).
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Adds `jobs` through `conn`, telling no one (see
    /// [`announce`](PgStore::announce)).
    async fn push_on(
        &self,
        conn: &mut PgConnection,
        jobs: &[NewJob],
    ) -> Result<Vec<Option<JobId>>, QueueError> {
        self.insert(conn, jobs, false).await
    }

    /// Tells runners that jobs may have become due (committed already):
    /// this process's at once, others' through the announcer's `NOTIFY`.
    fn announce(&self) {
        self.wake.send_modify(|n| *n += 1);
        let announcer = &self.announcer;
        {
            let mut task = announcer
                .task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if task.as_ref().is_none_or(|t| t.is_finished()) {
                *task = Some(tokio::spawn(announce(
                    self.run_pool.clone(),
                    self.channel.clone(),
                    announcer.kick.clone(),
                    announcer.stop.token().clone(),
                )));
            }
        }
        announcer.kick.notify_one();
    }

    /// Adds `jobs` through `conn`; with `notify`, runners listening hear
    /// of them when `conn`'s transaction commits.
    async fn insert(
        &self,
        conn: &mut PgConnection,
        jobs: &[NewJob],
        notify: bool,
    ) -> Result<Vec<Option<JobId>>, QueueError> {
        let mut bytes: Vec<Option<&[u8]>> = Vec::with_capacity(jobs.len());
        let mut json: Vec<Option<&str>> = Vec::with_capacity(jobs.len());
        let mut due: Vec<i64> = Vec::with_capacity(jobs.len());
        let mut priority: Vec<i32> = Vec::with_capacity(jobs.len());
        let mut unique: Vec<Option<&str>> = Vec::with_capacity(jobs.len());
        for job in jobs {
            priority.push(job.priority);
            unique.push(job.unique_key.as_deref());
            match &job.payload {
                Payload::Json(text) => {
                    bytes.push(None);
                    json.push(Some(text));
                }
                Payload::Bincode(b) => {
                    bytes.push(Some(b));
                    json.push(None);
                }
            }
            due.push(micros(job.run_at));
        }
        let keyed = jobs.iter().any(|job| job.unique_key.is_some());
        let statement = match (notify, keyed) {
            (false, false) => &self.sql.push,
            (false, true) => &self.sql.push_unique,
            (true, false) => &self.sql.push_notify,
            (true, true) => &self.sql.push_notify_unique,
        };
        let mut query = sqlx::query(statement)
            .bind(bytes)
            .bind(json)
            .bind(due)
            .bind(micros(SystemTime::now()))
            .bind(&*self.queue)
            .bind(priority)
            .bind(unique);
        if notify {
            query = query.bind(&*self.channel);
        }
        let rows = query.fetch_all(conn).await.map_err(db("add jobs"))?;
        let rows = rows
            .iter()
            .map(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(db("add jobs"))?;
        Ok(match_stored(jobs, rows))
    }

    /// Listens until `stop`, or until the connection fails.
    async fn listen_once(&self, stop: &CancellationToken) -> Result<(), sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(self.listen_options.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        // Reconnecting is this loop's work: an error ends this listener.
        listener.eager_reconnect(false);
        listener.listen(&self.channel).await?;
        // Jobs pushed while nobody listened.
        self.wake.send_modify(|n| *n += 1);
        let result = loop {
            let heard = tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                heard = listener.try_recv() => heard,
            };
            match heard {
                Ok(Some(_)) => self.wake.send_modify(|n| *n += 1),
                Ok(None) => {
                    break Err(sqlx::Error::Protocol(
                        "the listening connection closed".into(),
                    ))
                }
                Err(e) => break Err(e),
            }
        };
        drop(listener);
        pool.close().await;
        result
    }
}

impl crate::store::Store for PgStore {
    type Database = Postgres;

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
        conn: &'c mut PgConnection,
        jobs: &'c [NewJob],
    ) -> Result<Vec<Option<JobId>>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // The notification goes out when the caller's transaction commits.
        self.insert(conn, jobs, true).await
    }

    async fn complete(&self, ids: &[JobId], owner: &str) -> Result<Vec<JobId>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&self.sql.complete)
            .bind(ids)
            .bind(owner)
            .fetch_all(&self.run_pool)
            .await
            .map_err(db("complete jobs"))?;
        rows.iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("complete jobs"))
    }

    async fn cancel(&self, id: JobId) -> Result<bool, QueueError> {
        let gone = sqlx::query(&self.sql.cancel)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("cancel a job"))?;
        Ok(gone.is_some())
    }

    async fn listen(&self, stop: CancellationToken) {
        let mut pause = Duration::from_millis(100);
        while !stop.is_cancelled() {
            match self.listen_once(&stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(
                        "job queue: listening for new jobs failed ({e}); polling meanwhile, \
                         listening again in {pause:?}"
                    );
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    shared_methods!();
}

/// `name` as a quoted identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
