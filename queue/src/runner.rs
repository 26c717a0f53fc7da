//! Running a queue's jobs on a drover pool.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use drover_proto::{timestamp_from_micros, EVENT_POST_JOB};
use drover_supervisor::{Error, Event, Events, Response, Supervisor};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builder::{JobQueueBuilder, Settings};
use crate::encode;
use crate::error::QueueError;
use crate::idle::{ActivityTx, Claim, DueJobs, Idle, RunningJob};
use crate::options::{Enqueue, Pushed};
use crate::store::{
    DeadJob, Finished, Job, JobId, JobInfo, JobState, NewJob, Periodic, Stats, Store,
};

/// A durable job queue, run at least once by a drover pool.
///
/// Jobs are values of one serde type `J` (often an enum of every kind of
/// job), kept in a [`Store`] (SQLite or PostgreSQL; as JSON by default,
/// see [`JobFormat`](crate::JobFormat)) until
/// a worker has run them: a job is claimed with a lease, sent to the pool
/// as an ordinary request, and deleted only once a worker answered it. If
/// the process dies meanwhile, the lease runs out and the job runs again
/// (at least once; make handlers idempotent). A job that fails is retried
/// with exponential back-off up to `max_attempts` times, then kept as
/// dead with its last error. Timers are jobs due later
/// ([`push_after`](JobQueue::push_after), [`push_at`](JobQueue::push_at)):
/// they survive restarts like any job.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use drover_queue::{JobQueue, SqliteStore};
/// use drover_supervisor::Supervisor;
///
/// /// The jobs; the workers read them with `req.data::<Mail>()`.
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum Mail {
///     Welcome(String),
///     Reminder(String),
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = JobQueue::new(SqliteStore::open("jobs.db").await?);
/// let pool = Supervisor::builder("target/release/mailer").workers(4).spawn().await?;
/// let runner = queue.start(pool.clone());
/// queue.push(&Mail::Welcome("ada@example.com".into())).await?;
/// queue.push_after(Duration::from_secs(3600), &Mail::Reminder("ada@example.com".into())).await?;
/// // ...
/// runner.stop().await;
/// # Ok(()) }
/// ```
pub struct JobQueue<S, J> {
    inner: Arc<Inner<S, J>>,
}

/// What a job may be: a serde value the queue can store and send, and the
/// worker can read (`req.data::<J>()`). Every such type is one.
pub trait JobValue: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> JobValue for T {}

pub(crate) struct Inner<S, J> {
    pub(crate) store: S,
    pub(crate) settings: Settings,
    /// Callers of `push_and_wait`, by job id: told the answer if a runner
    /// in this process completes the job.
    /// (An async lock: `push_and_wait` holds it across the insert of its
    /// job, so a runner that finishes the job at once still finds it.)
    pub(crate) waiting: tokio::sync::Mutex<HashMap<JobId, oneshot::Sender<Response>>>,
    jobs: PhantomData<fn() -> J>,
}

impl<S, J> Clone for JobQueue<S, J> {
    fn clone(&self) -> Self {
        JobQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<S, J> fmt::Debug for JobQueue<S, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobQueue")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl<S: Store, J: JobValue> JobQueue<S, J> {
    /// A queue of `J` jobs over `store`, with default settings: 5
    /// attempts, back-off from 1 s doubling up to 5 min, leases of 5 min,
    /// 64 jobs running at once, a look at the store at least every second,
    /// jobs stored as JSON. For other settings,
    /// [`builder`](JobQueue::builder).
    pub fn new(store: S) -> JobQueue<S, J> {
        JobQueue::builder(store).build()
    }

    /// A queue over `store` with settings of its own: attempts, back-off,
    /// lease, jobs running at once, poll interval, format; see
    /// [`JobQueueBuilder`]. They are fixed once it is built, for every
    /// clone of the queue.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use drover_queue::{JobQueue, SqliteStore};
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let queue = JobQueue::builder(SqliteStore::open("jobs.db").await?)
    ///     .max_attempts(3)
    ///     .lease(Duration::from_secs(60))
    ///     .build();
    /// queue.push(&"a job".to_string()).await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(store: S) -> JobQueueBuilder<S, J> {
        JobQueueBuilder::new(store)
    }

    pub(crate) fn with_settings(store: S, settings: Settings) -> JobQueue<S, J> {
        JobQueue {
            inner: Arc::new(Inner {
                store,
                settings,
                waiting: tokio::sync::Mutex::new(HashMap::new()),
                jobs: PhantomData,
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Adds a job, due now.
    ///
    /// # Errors
    ///
    /// [`QueueError::Json`] or [`QueueError::Encode`] if it does not
    /// encode; [`QueueError::Database`].
    pub async fn push(&self, job: &J) -> Result<JobId, QueueError> {
        self.push_at(SystemTime::now(), job).await
    }

    /// Adds a job due after `delay`: a timer.
    ///
    /// # Errors
    ///
    /// As [`push`](JobQueue::push).
    pub async fn push_after(&self, delay: Duration, job: &J) -> Result<JobId, QueueError> {
        self.push_at(SystemTime::now() + delay, job).await
    }

    /// Adds a job due at `at`.
    ///
    /// # Errors
    ///
    /// As [`push`](JobQueue::push).
    pub async fn push_at(&self, at: SystemTime, job: &J) -> Result<JobId, QueueError> {
        let job = self.new_job(job, at)?;
        let ids = self.inner.store.push(std::slice::from_ref(&job)).await?;
        one(ids)
    }

    /// Adds a job with options of its own: due time, priority, unique key
    /// (see [`Enqueue`]); says whether it was stored or a pending job
    /// held its key.
    ///
    /// # Errors
    ///
    /// As [`push`](JobQueue::push).
    pub async fn push_with(&self, job: &J, options: Enqueue) -> Result<Pushed, QueueError> {
        let window = options.window;
        let new = self.new_job_with(job, options)?;
        self.push_new(new, window).await
    }

    /// Stores one job made with its options, telling whether its key was
    /// held.
    async fn push_new(&self, new: NewJob, window: Option<Duration>) -> Result<Pushed, QueueError> {
        if new.unique_key.is_none() {
            let ids = self.inner.store.push(std::slice::from_ref(&new)).await?;
            return one(ids).map(Pushed::New);
        }
        // A pending job with the key may finish between the insert that
        // found it and the look for its id: then the key is free, try again.
        for _ in 0..3 {
            if let Some(window) = window {
                if let Some(pushed) = self.inner.store.push_within(&new, window).await? {
                    return Ok(pushed);
                }
                continue;
            }
            if let Some(id) = self
                .inner
                .store
                .push(std::slice::from_ref(&new))
                .await?
                .first()
                .copied()
                .flatten()
            {
                return Ok(Pushed::New(id));
            }
            let key = new.unique_key.as_deref().unwrap_or_default();
            if let Some(id) = self.inner.store.find_unique(key).await? {
                return Ok(Pushed::Duplicate(id));
            }
        }
        Err(QueueError::Contended {
            key: new.unique_key.unwrap_or_default(),
        })
    }

    /// Adds jobs each with options of its own (due time, priority, unique
    /// key; see [`Enqueue`]) in one statement, and says for each, in
    /// order, whether it was stored or a pending job (or an earlier one
    /// of the same call) held its key. Jobs whose key is held for a window
    /// ([`Enqueue::unique_for`]) are pushed one by one after the others.
    ///
    /// ```no_run
    /// # async fn run(queue: drover_queue::JobQueue<drover_queue::SqliteStore, String>) -> Result<(), drover_queue::QueueError> {
    /// use drover_queue::Enqueue;
    /// let jobs = ["sync 1".to_string(), "sync 2".to_string()];
    /// let pushed = queue
    ///     .push_many_with(jobs.iter().map(|job| (job, Enqueue::new().priority(5).unique(job.clone()))))
    ///     .await?;
    /// assert_eq!(pushed.len(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`push`](JobQueue::push); nothing is stored if one job does not
    /// encode. [`QueueError::Contended`] as in
    /// [`push_with`](JobQueue::push_with).
    pub async fn push_many_with<'a>(
        &self,
        jobs: impl IntoIterator<Item = (&'a J, Enqueue)>,
    ) -> Result<Vec<Pushed>, QueueError> {
        let mut batch = Vec::new();
        let mut windowed = Vec::new();
        for (i, (job, options)) in jobs.into_iter().enumerate() {
            match options.window.filter(|_| options.unique_key.is_some()) {
                Some(window) => windowed.push((i, self.new_job_with(job, options)?, window)),
                None => batch.push((i, self.new_job_with(job, options)?)),
            }
        }
        let mut pushed = vec![Pushed::New(0); batch.len() + windowed.len()];
        let news: Vec<NewJob> = batch.iter().map(|(_, job)| job.clone()).collect();
        let ids = self.inner.store.push(&news).await?;
        for ((i, new), id) in batch.into_iter().zip(ids) {
            pushed[i] = match id {
                Some(id) => Pushed::New(id),
                None => match new.unique_key.as_deref() {
                    Some(key) => match self.inner.store.find_unique(key).await? {
                        Some(id) => Pushed::Duplicate(id),
                        // The holder finished meanwhile: the key is free.
                        None => self.push_new(new, None).await?,
                    },
                    None => return Err(QueueError::NotStored),
                },
            };
        }
        for (i, new, window) in windowed {
            pushed[i] = self.push_new(new, Some(window)).await?;
        }
        Ok(pushed)
    }

    /// Adds `jobs`, due now, in one statement: all of them or (on an
    /// error) none. Their ids, in order.
    ///
    /// # Errors
    ///
    /// As [`push`](JobQueue::push); nothing is stored if one job does not
    /// encode.
    pub async fn push_many(&self, jobs: &[J]) -> Result<Vec<JobId>, QueueError> {
        let now = SystemTime::now();
        let jobs = jobs
            .iter()
            .map(|job| self.new_job(job, now))
            .collect::<Result<Vec<_>, _>>()?;
        all(self.inner.store.push(&jobs).await?)
    }

    /// Adds a job, due now, through `conn`: a connection of the caller's
    /// own on the store's database, typically a transaction
    /// (`&mut *tx`). The job exists if and only if the transaction
    /// commits: rolled back, it never runs; committed, it runs like any
    /// other. Runners hear of it when it commits: on PostgreSQL through
    /// `NOTIFY`, on SQLite through the connection's commit hook (which
    /// this sets, replacing one of the caller's own).
    ///
    /// ```no_run
    /// # async fn run(queue: drover_queue::JobQueue<drover_queue::PgStore, String>, db: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = db.begin().await?;
    /// sqlx::query("INSERT INTO users (name) VALUES ('ada')").execute(&mut *tx).await?;
    /// queue.push_in(&mut *tx, &"welcome ada".to_string()).await?;
    /// tx.commit().await?; // the user and the job, or neither
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`push`](JobQueue::push).
    pub async fn push_in(
        &self,
        conn: &mut <S::Database as sqlx::Database>::Connection,
        job: &J,
    ) -> Result<JobId, QueueError> {
        let job = self.new_job(job, SystemTime::now())?;
        let ids = self
            .inner
            .store
            .push_in(conn, std::slice::from_ref(&job))
            .await?;
        one(ids)
    }

    /// Adds a job due at `at` through `conn` (see
    /// [`push_in`](JobQueue::push_in)): a timer that exists if and only if
    /// the transaction commits. Runners hear of it when it commits (on
    /// SQLite too: the connection's commit hook), so it starts when due,
    /// not at a later poll.
    ///
    /// On SQLite this sets `conn`'s commit hook (replacing one of the
    /// caller's own), which wakes runners at the next commit.
    ///
    /// # Errors
    ///
    /// As [`push`](JobQueue::push).
    pub async fn push_in_at(
        &self,
        conn: &mut <S::Database as sqlx::Database>::Connection,
        at: SystemTime,
        job: &J,
    ) -> Result<JobId, QueueError> {
        let job = self.new_job(job, at)?;
        let ids = self
            .inner
            .store
            .push_in(conn, std::slice::from_ref(&job))
            .await?;
        one(ids)
    }

    /// As [`push_many`](JobQueue::push_many), through `conn` (see
    /// [`push_in`](JobQueue::push_in)).
    ///
    /// # Errors
    ///
    /// As [`push_many`](JobQueue::push_many).
    pub async fn push_many_in(
        &self,
        conn: &mut <S::Database as sqlx::Database>::Connection,
        jobs: &[J],
    ) -> Result<Vec<JobId>, QueueError> {
        let now = SystemTime::now();
        let jobs = jobs
            .iter()
            .map(|job| self.new_job(job, now))
            .collect::<Result<Vec<_>, _>>()?;
        all(self.inner.store.push_in(conn, &jobs).await?)
    }

    fn new_job_with(&self, job: &J, options: Enqueue) -> Result<NewJob, QueueError> {
        let mut new = self.new_job(job, options.run_at.unwrap_or_else(SystemTime::now))?;
        new.priority = options.priority;
        new.unique_key = options.unique_key;
        Ok(new)
    }

    fn new_job(&self, job: &J, run_at: SystemTime) -> Result<NewJob, QueueError> {
        Ok(NewJob::new(
            encode::store(job, self.inner.settings.format)?,
            run_at,
        ))
    }

    /// Adds a job, due now, and waits up to `within` for its answer: the
    /// answer comes if a runner in this process completes it in time (a
    /// runner elsewhere, or after a restart, runs it with no one to tell).
    /// The job stays queued, durable, whatever happens to the wait.
    ///
    /// # Errors
    ///
    /// As [`push`](JobQueue::push); [`QueueError::NoAnswer`] if no answer
    /// came within `within` (the job itself still runs, at least once).
    pub async fn push_and_wait(&self, job: &J, within: Duration) -> Result<Response, QueueError> {
        let job = self.new_job(job, SystemTime::now())?;
        let (tx, rx) = oneshot::channel();
        let id = {
            // Held across the insert: a runner that completes the job
            // before we register waits for the lock, then finds us.
            let mut waiting = self.inner.waiting.lock().await;
            let id = one(self.inner.store.push(std::slice::from_ref(&job)).await?)?;
            waiting.insert(id, tx);
            id
        };
        let answer = tokio::time::timeout(within, rx).await;
        self.inner.waiting.lock().await.remove(&id);
        match answer {
            Ok(Ok(response)) => Ok(response),
            _ => Err(QueueError::NoAnswer { id, waited: within }),
        }
    }

    /// Deletes a job no runner holds; false if it is running or gone.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`].
    pub async fn cancel(&self, id: JobId) -> Result<bool, QueueError> {
        self.inner.store.cancel(id).await
    }

    /// Jobs by state.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`].
    pub async fn stats(&self) -> Result<Stats, QueueError> {
        self.inner.store.stats().await
    }

    /// The jobs that failed for good, with their last error.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`].
    pub async fn dead(&self) -> Result<Vec<DeadJob>, QueueError> {
        self.inner.store.dead().await
    }

    /// Up to `limit` jobs in `state`, oldest first: what an operator looks
    /// at.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`].
    pub async fn list(&self, state: JobState, limit: usize) -> Result<Vec<JobInfo>, QueueError> {
        self.inner.store.list(state, limit).await
    }

    /// Makes a dead job due now, with a fresh set of attempts (its last
    /// error kept until it runs). False if it is not dead.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`].
    pub async fn retry_dead(&self, id: JobId) -> Result<bool, QueueError> {
        self.inner.store.retry_dead(id).await
    }

    /// Makes a waiting job (a timer, a retry waiting out its back-off) due
    /// now. False if it is not waiting: due already, running, dead, gone.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`].
    pub async fn requeue(&self, id: JobId) -> Result<bool, QueueError> {
        self.inner.store.requeue(id).await
    }

    /// Deletes every job of the queue, running ones included (their
    /// runners' completions then find nothing), and its counts of
    /// finished jobs: for tests and scratch queues. How many it deleted.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`].
    pub async fn purge(&self) -> Result<u64, QueueError> {
        self.inner.store.purge().await
    }

    /// How many jobs have finished: completed and cancelled, apart.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`].
    pub async fn finished(&self) -> Result<Finished, QueueError> {
        self.inner.store.finished().await
    }

    /// Resolves once the queue holds no job that is ready, waiting or
    /// running (dead jobs stay, and do not count), whichever runners run
    /// it. It asks the store at each push in this process, and at least
    /// every 50 ms (or the poll interval, if shorter).
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`] if the store cannot be read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn until_empty(&self) -> Result<(), QueueError> {
        let mut wakeups = self.inner.store.wakeups();
        let every = self.inner.settings.poll.min(Duration::from_millis(50));
        loop {
            wakeups.borrow_and_update();
            let stats = self.inner.store.stats().await?;
            if stats.ready == 0 && stats.scheduled == 0 && stats.running == 0 {
                return Ok(());
            }
            tokio::select! {
                _ = wakeups.changed() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Adds (or replaces) the periodic job `name`: `job` pushed at each
    /// tick of `cron` (five fields, `min hour day month weekday`, or six
    /// with seconds first; in UTC). Kept in the store: it survives
    /// restarts, and however many runners share the queue, each tick
    /// pushes one job (fired within a poll interval of its time; ticks
    /// missed while no runner ran are fired once). Replaced with the same
    /// expression, it keeps its next tick.
    ///
    /// ```no_run
    /// # async fn run(queue: drover_queue::JobQueue<drover_queue::SqliteStore, String>) -> Result<(), drover_queue::QueueError> {
    /// queue.schedule("nightly report", "0 3 * * *", &"report".to_string()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`QueueError::Cron`] naming an expression that does not parse or
    /// never fires; as [`push`](JobQueue::push) otherwise.
    pub async fn schedule(&self, name: &str, cron: &str, job: &J) -> Result<(), QueueError> {
        let parsed = crate::periodic::parse(cron)?;
        let next_run =
            crate::periodic::next_after(&parsed, SystemTime::now()).ok_or_else(|| {
                QueueError::Cron {
                    expr: cron.to_owned(),
                    reason: "it has no tick after now".to_owned(),
                }
            })?;
        let periodic = Periodic {
            name: name.to_owned(),
            cron: cron.to_owned(),
            payload: encode::store(job, self.inner.settings.format)?,
            next_run,
        };
        self.inner.store.schedule(&periodic).await
    }

    /// Removes the periodic job `name`; false if there was none.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`].
    pub async fn unschedule(&self, name: &str) -> Result<bool, QueueError> {
        self.inner.store.unschedule(name).await
    }

    /// The periodic jobs of this queue, by name.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`].
    pub async fn periodic(&self) -> Result<Vec<Periodic>, QueueError> {
        self.inner.store.periodic().await
    }

    /// Starts running due jobs on `pool` until [`Runner::stop`]. Several
    /// runners (in this process or others, on a shared store) may run one
    /// queue, but start one per pool: the runner also stores the jobs its
    /// pool's workers post (`Worker::post_job`), and a second runner on the
    /// same pool would store them twice.
    pub fn start(&self, pool: Supervisor) -> Runner {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let owner = format!("{}:{}", std::process::id(), uuid::Uuid::new_v4());
        let (catch_up, catch_up_rx) = mpsc::channel(16);
        if self.inner.settings.accept_posted {
            let posted = accept_posted(self.clone(), pool.events(), catch_up_rx, stop.clone());
            tracker.spawn(posted);
        }
        let store = self.inner.store.clone();
        let listening = stop.clone();
        tracker.spawn(async move { store.listen(listening).await });
        let (activity, activity_rx) = crate::idle::activity();
        let run = run(
            self.inner.clone(),
            pool,
            owner,
            activity,
            stop.clone(),
            tracker.clone(),
        );
        tracker.spawn(run);
        let idle = Idle {
            activity: activity_rx,
            store: self.inner.clone(),
            posted: catch_up,
            poll: self.inner.settings.poll,
        };
        Runner {
            stop,
            tracker,
            idle,
        }
    }
}

/// A running loop of a [`JobQueue`]. Dropping it stops claiming jobs;
/// [`stop`](Runner::stop) also waits for the running ones.
#[derive(Debug)]
pub struct Runner {
    stop: CancellationToken,
    tracker: TaskTracker,
    idle: Idle,
}

impl Runner {
    /// Resolves the next time this runner is idle: it holds no job
    /// (nothing claimed, nothing running on the pool or being recorded)
    /// and the store holds no job that is due. At once if it is idle
    /// already (after one look at the store).
    ///
    /// A due job waiting in the store counts as work not yet started, so
    /// this does not resolve while the runner has jobs left to claim (more
    /// than `max_running`, say). A job whose time has not come (a timer,
    /// or a retry waiting out its back-off) does not count until it falls
    /// due. A job a worker posts (`Worker::post_job`) while it runs one
    /// counts from the moment the job that posted it ends: the runner
    /// stores what was posted before this looks at the store.
    ///
    /// This reads the store itself, so a due job another process pushed
    /// counts as soon as it is stored (the runner claims it at its next
    /// look, within the poll interval); on a store several runners share,
    /// a due job counts whichever runner will take it, and the jobs other
    /// runners hold do not.
    ///
    /// A store that cannot be read counts as holding due jobs: this waits,
    /// and asks again at the next change or poll interval.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(queue: drover_queue::JobQueue<drover_queue::SqliteStore, u32>, pool: drover_supervisor::Supervisor) -> Result<(), drover_queue::QueueError> {
    /// let runner = queue.start(pool);
    /// for n in 0..100u32 {
    ///     queue.push(&n).await?;
    /// }
    /// // Each ran (and what it posted, if due); a failed one may be
    /// // waiting out its back-off to run again.
    /// runner.idle().await;
    /// runner.stop().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches the runner and reads the store, and
    /// dropping it changes nothing.
    pub async fn idle(&self) {
        self.idle.wait().await;
    }

    /// Stops claiming jobs and waits until the jobs in flight have been
    /// answered and recorded (completed, or put back for a retry).
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run<S: Store, J: JobValue>(
    inner: Arc<Inner<S, J>>,
    pool: Supervisor,
    owner: String,
    activity: ActivityTx,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let settings = inner.settings.clone();
    let slots = Arc::new(Semaphore::new(settings.max_running));
    let owner: Arc<str> = owner.into();
    // With a backlog, claim in batches of at least this many.
    let batch = (settings.max_running / 2).max(1);
    let mut wakeups = inner.store.wakeups();
    // Answered jobs, completed together by the flusher. Bounded: at most
    // `max_running` jobs are claimed and unrecorded at once.
    let (answered, answers) = mpsc::channel(settings.max_running);
    tracker.spawn(crate::flush::flush(inner.clone(), owner.clone(), answers));
    let mut reaped = None::<tokio::time::Instant>;
    let mut backlog = false;
    while !stop.is_cancelled() {
        if backlog && slots.available_permits() < batch {
            // More is due: wait for room for one job, however long that
            // takes, then briefly for room for a batch.
            tokio::select! {
                _ = stop.cancelled() => break,
                slot = slots.acquire() => drop(slot),
            }
            let room = slots.acquire_many(batch as u32);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::timeout(Duration::from_millis(5), room) => {}
            }
        }
        if reaped.is_none_or(|at| at.elapsed() >= settings.poll) {
            // Jobs whose runner died (or lost them) become due again.
            match inner.store.reap().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("job queue: {n} jobs whose lease ran out are due again"),
                Err(e) => tracing::error!("job queue: {e}"),
            }
            reaped = Some(tokio::time::Instant::now());
            crate::periodic::fire_due(&inner.store).await;
            crate::metrics::gauges(&inner.store).await;
        }
        // A push from now on wakes the wait below, even one made while
        // the claim runs.
        wakeups.borrow_and_update();
        // Take only as many jobs as there is room to run.
        let free = slots.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            // Seen by `Runner::idle` from before the claim until its jobs
            // are counted as running.
            let claim = Claim::begin(&activity);
            let jobs = match inner.store.claim(&owner, free, settings.lease).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::error!("job queue: {e}");
                    Vec::new()
                }
            };
            let running = claim.took(jobs.len());
            jobs.into_iter().zip(running).collect()
        };
        backlog = free == 0 || claimed.len() == free;
        for (job, running) in claimed {
            crate::metrics::started(inner.store.queue(), job.due_at);
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (inner, pool, owner, answered) =
                (inner.clone(), pool.clone(), owner.clone(), answered.clone());
            tracker.spawn(async move {
                run_job(&inner, &pool, &owner, job, slot, running, answered).await;
            });
        }
        if backlog {
            continue;
        }
        // Nothing more due: sleep until a job is pushed (here, or heard
        // of), the next one falls due, or the poll interval passes.
        let mut wait = settings.poll;
        if let Ok(Some(due)) = inner.store.next_due().await {
            wait = wait.min(
                due.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wakeups.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The id of the one job a push of a job with no unique key stored.
fn one(ids: Vec<Option<JobId>>) -> Result<JobId, QueueError> {
    ids.into_iter()
        .next()
        .flatten()
        .ok_or(QueueError::NotStored)
}

/// The ids of jobs with no unique key, every one stored.
fn all(ids: Vec<Option<JobId>>) -> Result<Vec<JobId>, QueueError> {
    ids.into_iter()
        .map(|id| id.ok_or(QueueError::NotStored))
        .collect()
}

/// Stores the jobs the pool's workers post, until stopped.
///
/// A request on `catch_up` is answered once every event the pool reported
/// before it has been handled (`Runner::idle` asks before it reads the
/// store): events come first.
async fn accept_posted<S: Store, J: JobValue>(
    queue: JobQueue<S, J>,
    mut events: Events,
    mut catch_up: mpsc::Receiver<oneshot::Sender<()>>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            event = events.recv() => event,
            Some(caught_up) = catch_up.recv() => {
                // No event was waiting, and the last one is stored.
                let _ = caught_up.send(());
                continue;
            }
        };
        let Some(event) = event else { return };
        let Event::Custom(posted) = event else {
            continue;
        };
        if posted.name != EVENT_POST_JOB {
            continue;
        }
        let (due, job): (u64, Vec<u8>) = match posted.data() {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(
                    pid = posted.pid,
                    "a worker posted a job that does not decode: {e}"
                );
                continue;
            }
        };
        let at = if due == 0 {
            SystemTime::now()
        } else {
            timestamp_from_micros(due)
        };
        let job = NewJob::new(encode::posted::<J>(job, queue.inner.settings.format), at);
        if let Err(e) = queue.inner.store.push(std::slice::from_ref(&job)).await {
            tracing::error!(pid = posted.pid, "cannot store a job a worker posted: {e}");
        }
    }
}

/// Runs one job on the pool and records how it went: an answer goes to
/// the flusher (completed with others), a failure is recorded here.
async fn run_job<S: Store, J: JobValue>(
    inner: &Inner<S, J>,
    pool: &Supervisor,
    owner: &str,
    job: Job,
    slot: OwnedSemaphorePermit,
    running: RunningJob,
    answered: mpsc::Sender<Answered>,
) {
    let settings = &inner.settings;
    let payload = match encode::wire::<J>(job.payload) {
        Ok(payload) => payload,
        Err(text) => {
            // It never will decode: dead at once, with the reason.
            tracing::warn!(id = job.id, "job failed for good: {text}");
            report(job.id, inner.store.bury(job.id, owner, &text).await);
            return;
        }
    };
    // End the request before the lease, so a live runner keeps its jobs.
    let timeout = settings.lease.mul_f64(0.9);
    let sent = std::time::Instant::now();
    let outcome = pool.request_bytes(payload).timeout(timeout).send().await;
    crate::metrics::ran(inner.store.queue(), sent.elapsed());
    let error = match outcome {
        Ok(answer) => {
            let done = Answered {
                id: job.id,
                answer,
                _slot: slot,
                _running: running,
            };
            // The flusher outlives every sender; a closed channel would
            // mean the runner's tasks are gone, and the lease runs out.
            let _ = answered.send(done).await;
            return;
        }
        Err(error) => error,
    };
    let text = error.to_string();
    // A pool that refused the job did not run it: not the job's fault.
    let refused = matches!(
        error,
        Error::ShuttingDown | Error::QueueFull { .. } | Error::Drained | Error::PoolFailed { .. }
    );
    let recorded = if !refused && job.attempts >= settings.max_attempts {
        tracing::warn!(
            id = job.id,
            attempts = job.attempts,
            "job failed for good: {text}"
        );
        crate::metrics::finished(inner.store.queue(), "dead", 1);
        inner.store.bury(job.id, owner, &text).await
    } else {
        let delay = backoff(settings, job.attempts);
        tracing::debug!(
            id = job.id,
            attempts = job.attempts,
            ?delay,
            "job failed, will retry: {text}"
        );
        crate::metrics::finished(inner.store.queue(), "retried", 1);
        inner
            .store
            .retry(job.id, owner, SystemTime::now() + delay, &text)
            .await
    };
    report(job.id, recorded);
    drop((slot, running));
}

/// A job a worker answered, on its way to be completed.
pub(crate) struct Answered {
    pub(crate) id: JobId,
    pub(crate) answer: Response,
    /// Its room in the runner, and its count for `Runner::idle`: both
    /// held until it is recorded.
    pub(crate) _slot: OwnedSemaphorePermit,
    pub(crate) _running: RunningJob,
}

/// Logs how recording a job's outcome went.
fn report(id: JobId, recorded: Result<bool, QueueError>) {
    match recorded {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            id,
            "job's lease ran out before it finished; another runner has it"
        ),
        Err(e) => tracing::error!(id, "job queue: {e}"),
    }
}

impl<S: Store, J: JobValue> DueJobs for Inner<S, J> {
    fn due_now(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, QueueError>> + Send + '_>>
    {
        Box::pin(async move {
            let next = self.store.next_due().await?;
            Ok(next.is_some_and(|due| due <= SystemTime::now()))
        })
    }
}

fn backoff(settings: &Settings, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    settings
        .backoff_base
        .saturating_mul(1u32 << doublings)
        .min(settings.backoff_max)
}
