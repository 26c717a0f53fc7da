//! Running a queue's jobs on a drover pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use drover_proto::{encode_value, timestamp_from_micros, EVENT_POST_JOB};
use drover_supervisor::{Error, Event, Events, Response, Supervisor};
use serde::Serialize;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::QueueError;
use crate::store::{DeadJob, Job, JobId, Stats, Store};

/// Settings of a queue; see [`JobQueue`]'s setters.
#[derive(Debug, Clone)]
struct Settings {
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    lease: Duration,
    max_running: usize,
    poll: Duration,
}

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
    /// once, and a look at the store at least every second.
    pub fn new(store: S) -> JobQueue<S> {
        JobQueue {
            inner: Arc::new(Inner {
                store,
                settings: Settings {
                    max_attempts: 5,
                    backoff_base: Duration::from_secs(1),
                    backoff_max: Duration::from_secs(300),
                    lease: Duration::from_secs(300),
                    max_running: 64,
                    poll: Duration::from_secs(1),
                },
                pushed: Notify::new(),
                waiting: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        let inner =
            Arc::get_mut(&mut self.inner).expect("settings are set before the queue is shared");
        change(&mut inner.settings);
        self
    }

    /// How many times a job runs before it is dead (default 5).
    ///
    /// # Panics
    ///
    /// If the queue was cloned or started already: settings come first.
    pub fn max_attempts(self, n: u32) -> Self {
        self.with(|s| s.max_attempts = n.max(1))
    }

    /// The back-off before a retry: `base` doubled at each failure, at most
    /// `max` (default 1 s and 5 min).
    ///
    /// # Panics
    ///
    /// As [`max_attempts`](JobQueue::max_attempts).
    pub fn backoff(self, base: Duration, max: Duration) -> Self {
        self.with(|s| {
            s.backoff_base = base;
            s.backoff_max = max.max(base);
        })
    }

    /// How long a claimed job is held (default 5 min). A job's request
    /// times out a little before, so a live runner never loses its lease; a
    /// dead runner's jobs run again once their lease is over.
    ///
    /// # Panics
    ///
    /// As [`max_attempts`](JobQueue::max_attempts).
    pub fn lease(self, lease: Duration) -> Self {
        self.with(|s| s.lease = lease.max(Duration::from_millis(100)))
    }

    /// How many jobs one runner keeps in flight at once (default 64).
    ///
    /// # Panics
    ///
    /// As [`max_attempts`](JobQueue::max_attempts).
    pub fn max_running(self, n: usize) -> Self {
        self.with(|s| s.max_running = n.max(1))
    }

    /// How often a runner looks at the store when nothing woke it (default
    /// 1 s): jobs pushed by other processes are seen within this time.
    ///
    /// # Panics
    ///
    /// As [`max_attempts`](JobQueue::max_attempts).
    pub fn poll_interval(self, every: Duration) -> Self {
        self.with(|s| s.poll = every.max(Duration::from_millis(10)))
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
        let posted = accept_posted(self.clone(), pool.events(), stop.clone());
        tracker.spawn(posted);
        let run = run(
            self.inner.clone(),
            pool,
            owner,
            stop.clone(),
            tracker.clone(),
        );
        tracker.spawn(run);
        Runner { stop, tracker }
    }
}

/// A running loop of a [`JobQueue`]. Dropping it stops claiming jobs;
/// [`stop`](Runner::stop) also waits for the running ones.
#[derive(Debug)]
pub struct Runner {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Runner {
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
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let settings = inner.settings.clone();
    let slots = Arc::new(Semaphore::new(settings.max_running));
    let owner: Arc<str> = owner.into();
    while !stop.is_cancelled() {
        // Take only as many jobs as there is room to run.
        let free = slots.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            match inner.store.claim(&owner, free, settings.lease).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::error!("job queue: {e}");
                    Vec::new()
                }
            }
        };
        let full = free > 0 && claimed.len() == free;
        for job in claimed {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (inner, pool, owner) = (inner.clone(), pool.clone(), owner.clone());
            tracker.spawn(async move {
                run_job(&inner, &pool, &owner, job).await;
                drop(slot);
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
async fn accept_posted<S: Store>(queue: JobQueue<S>, mut events: Events, stop: CancellationToken) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => event,
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

fn backoff(settings: &Settings, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    settings
        .backoff_base
        .saturating_mul(1u32 << doublings)
        .min(settings.backoff_max)
}
