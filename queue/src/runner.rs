//! Running a queue's jobs on a drover pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use drover_proto::{encode_value, timestamp_from_micros, EVENT_POST_JOB};
use drover_supervisor::{Error, Event, Events, Response, Supervisor};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builder::{JobQueueBuilder, Settings};
use crate::error::QueueError;
use crate::idle::{ActivityTx, Claim, DueJobs, Idle};
use crate::store::{DeadJob, Job, JobId, Stats, Store};

/// A durable job queue, run at least once by a drover pool.
///
/// Jobs are serde values kept in a [`Store`] (SQLite or PostgreSQL) until
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
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = JobQueue::new(SqliteStore::open("jobs.db").await?);
/// let pool = Supervisor::builder("target/release/mailer").workers(4).spawn().await?;
/// let runner = queue.start(pool.clone());
/// queue.push(&("welcome", "ada@example.com")).await?;
/// queue.push_after(Duration::from_secs(3600), &("reminder", "ada@example.com")).await?;
/// // ...
/// runner.stop().await;
/// # Ok(()) }
/// ```
pub struct JobQueue<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    store: S,
    settings: Settings,
    /// Woken when a job is pushed from this process.
    pushed: Notify,
    /// Callers of `push_and_wait`, by job id: told the answer if a runner
    /// in this process completes the job.
    /// (An async lock: `push_and_wait` holds it across the insert of its
    /// job, so a runner that finishes the job at once still finds it.)
    waiting: tokio::sync::Mutex<HashMap<JobId, oneshot::Sender<Response>>>,
}

impl<S> Clone for JobQueue<S> {
    fn clone(&self) -> Self {
        JobQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for JobQueue<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobQueue")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl<S: Store> JobQueue<S> {
    /// A queue over `store`, with default settings: 5 attempts, back-off
    /// from 1 s doubling up to 5 min, leases of 5 min, 64 jobs running at
    /// once, and a look at the store at least every second. For other
    /// settings, [`builder`](JobQueue::builder).
    pub fn new(store: S) -> JobQueue<S> {
        JobQueue::builder(store).build()
    }

    /// A queue over `store` with settings of its own: attempts, back-off,
    /// lease, jobs running at once, poll interval; see [`JobQueueBuilder`].
    /// They are fixed once it is built, for every clone of the queue.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use drover_queue::{JobQueue, SqliteStore};
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let queue = JobQueue::builder(SqliteStore::open("jobs.db").await?)
    ///     .max_attempts(3)
    ///     .lease(Duration::from_secs(60))
    ///     .build();
    /// # Ok(()) }
    /// ```
    pub fn builder(store: S) -> JobQueueBuilder<S> {
        JobQueueBuilder::new(store)
    }

    pub(crate) fn with_settings(store: S, settings: Settings) -> JobQueue<S> {
        JobQueue {
            inner: Arc::new(Inner {
                store,
                settings,
                pushed: Notify::new(),
                waiting: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Adds a job, due now.
    ///
    /// # Errors
    ///
    /// [`QueueError::Encode`], [`QueueError::Database`].
    pub async fn push<T: Serialize + ?Sized>(&self, job: &T) -> Result<JobId, QueueError> {
        self.push_at(SystemTime::now(), job).await
    }

    /// Adds a job due after `delay`: a timer.
    ///
    /// # Errors
    ///
    /// As [`push`](JobQueue::push).
    pub async fn push_after<T: Serialize + ?Sized>(
        &self,
        delay: Duration,
        job: &T,
    ) -> Result<JobId, QueueError> {
        self.push_at(SystemTime::now() + delay, job).await
    }

    /// Adds a job due at `at`.
    ///
    /// # Errors
    ///
    /// As [`push`](JobQueue::push).
    pub async fn push_at<T: Serialize + ?Sized>(
        &self,
        at: SystemTime,
        job: &T,
    ) -> Result<JobId, QueueError> {
        let payload = encode_value(job)?;
        let id = self.inner.store.push(&payload, at).await?;
        self.inner.pushed.notify_waiters();
        Ok(id)
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
    pub async fn push_and_wait<T: Serialize + ?Sized>(
        &self,
        job: &T,
        within: Duration,
    ) -> Result<Response, QueueError> {
        let payload = encode_value(job)?;
        let (tx, rx) = oneshot::channel();
        let id = {
            // Held across the insert: a runner that completes the job
            // before we register waits for the lock, then finds us.
            let mut waiting = self.inner.waiting.lock().await;
            let id = self.inner.store.push(&payload, SystemTime::now()).await?;
            waiting.insert(id, tx);
            id
        };
        self.inner.pushed.notify_waiters();
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
        let posted = accept_posted(self.clone(), pool.events(), catch_up_rx, stop.clone());
        tracker.spawn(posted);
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
    /// # async fn run(queue: drover_queue::JobQueue<drover_queue::SqliteStore>, pool: drover_supervisor::Supervisor) -> Result<(), drover_queue::QueueError> {
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

async fn run<S: Store>(
    inner: Arc<Inner<S>>,
    pool: Supervisor,
    owner: String,
    activity: ActivityTx,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let settings = inner.settings.clone();
    let slots = Arc::new(Semaphore::new(settings.max_running));
    let owner: Arc<str> = owner.into();
    let mut metrics = crate::metrics::QueueMetrics::new(&pool.status().name);
    while !stop.is_cancelled() {
        if metrics.sample_due() {
            match inner.store.stats().await {
                Ok(stats) => metrics.sample(&stats),
                Err(e) => tracing::debug!("job queue metrics: {e}"),
            }
        }
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
        let full = free > 0 && claimed.len() == free;
        for (job, running) in claimed {
            metrics.started(job.due_at);
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (inner, pool, owner) = (inner.clone(), pool.clone(), owner.clone());
            tracker.spawn(async move {
                run_job(&inner, &pool, &owner, job).await;
                drop(slot);
                drop(running);
            });
        }
        if full {
            continue;
        }
        // Nothing more due: sleep until a job is pushed here, the next
        // one falls due, a slot frees up, or the poll interval passes.
        let mut wait = settings.poll;
        if let Ok(Some(due)) = inner.store.next_due().await {
            wait = wait.min(
                due.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
        let pushed = inner.pushed.notified();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = pushed => {}
            _ = tokio::time::sleep(wait) => {}
            slot = slots.acquire(), if free == 0 => drop(slot),
        }
    }
}

/// Stores the jobs the pool's workers post, until stopped.
///
/// A request on `catch_up` is answered once every event the pool reported
/// before it has been handled (`Runner::idle` asks before it reads the
/// store): events come first.
async fn accept_posted<S: Store>(
    queue: JobQueue<S>,
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
        match queue.inner.store.push(&job, at).await {
            Ok(_) => queue.inner.pushed.notify_waiters(),
            Err(e) => tracing::error!(pid = posted.pid, "cannot store a job a worker posted: {e}"),
        }
    }
}

/// Runs one job on the pool and records how it went.
async fn run_job<S: Store>(inner: &Inner<S>, pool: &Supervisor, owner: &str, job: Job) {
    let settings = &inner.settings;
    // End the request before the lease, so a live runner keeps its jobs.
    let timeout = settings.lease.mul_f64(0.9);
    let outcome = pool
        .request_bytes(job.payload)
        .timeout(timeout)
        .send()
        .await;
    let recorded = match outcome {
        Ok(answer) => {
            let done = inner.store.complete(job.id, owner).await;
            let waiter = inner.waiting.lock().await.remove(&job.id);
            if let Some(waiter) = waiter {
                // The caller may have stopped waiting.
                let _ = waiter.send(answer);
            }
            done
        }
        Err(error) => {
            let text = error.to_string();
            // A pool that refused the job did not run it: not the job's fault.
            let refused = matches!(
                error,
                Error::ShuttingDown
                    | Error::QueueFull { .. }
                    | Error::Drained
                    | Error::PoolFailed { .. }
            );
            if !refused && job.attempts >= settings.max_attempts {
                tracing::warn!(
                    id = job.id,
                    attempts = job.attempts,
                    "job failed for good: {text}"
                );
                inner.store.bury(job.id, owner, &text).await
            } else {
                let delay = backoff(settings, job.attempts);
                tracing::debug!(
                    id = job.id,
                    attempts = job.attempts,
                    ?delay,
                    "job failed, will retry: {text}"
                );
                inner
                    .store
                    .retry(job.id, owner, SystemTime::now() + delay, &text)
                    .await
            }
        }
    };
    match recorded {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            id = job.id,
            "job's lease ran out before it finished; another runner has it"
        ),
        Err(e) => tracing::error!(id = job.id, "job queue: {e}"),
    }
}

impl<S: Store> DueJobs for Inner<S> {
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
