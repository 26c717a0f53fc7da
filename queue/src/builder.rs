//! A queue's settings, chosen before the queue exists.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use crate::runner::{JobQueue, JobValue};
use crate::store::Store;

/// How a queue stores its jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobFormat {
    /// As JSON (`serde_json`), the default: an operator reads (and
    /// queries) the jobs in SQL, and a job type may gain a field with a
    /// serde default without stranding the jobs stored before. A job is
    /// decoded as the queue's job type when it runs, and sent to the
    /// worker in drover's own encoding.
    #[default]
    Json,
    /// In drover's own encoding (bincode), exactly as a worker receives
    /// it: smaller, and any serde value stores (JSON refuses a map whose
    /// keys are not strings), but unreadable in SQL, and a change to the
    /// job type leaves the jobs stored before it undecodable.
    Bincode,
}

/// Settings of a queue; see [`JobQueueBuilder`] for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) lease: Duration,
    pub(crate) max_running: usize,
    pub(crate) poll: Duration,
    pub(crate) format: JobFormat,
    pub(crate) accept_posted: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            lease: Duration::from_secs(300),
            max_running: 64,
            poll: Duration::from_secs(1),
            format: JobFormat::Json,
            accept_posted: true,
        }
    }
}

/// Builds a [`JobQueue`] with settings of its own, from
/// [`JobQueue::builder`]; [`JobQueue::new`] is the same with every
/// default.
///
/// The settings are fixed once the queue is built: every handle (clone)
/// of a queue, and every runner it starts, runs with them. The builder
/// holds nothing shared, so its setters never fail and never panic, and
/// it may itself be cloned to build several queues over one store.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use drover_queue::{JobQueue, SqliteStore};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = JobQueue::<_, String>::builder(SqliteStore::open("jobs.db").await?)
///     .max_attempts(3)
///     .backoff(Duration::from_millis(100), Duration::from_secs(10))
///     .lease(Duration::from_secs(60))
///     .build();
/// let handle = queue.clone(); // same queue, same settings
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `build()`"]
pub struct JobQueueBuilder<S, J> {
    store: S,
    settings: Settings,
    jobs: PhantomData<fn() -> J>,
}

impl<S: Clone, J> Clone for JobQueueBuilder<S, J> {
    fn clone(&self) -> Self {
        JobQueueBuilder {
            store: self.store.clone(),
            settings: self.settings.clone(),
            jobs: PhantomData,
        }
    }
}

impl<S, J> fmt::Debug for JobQueueBuilder<S, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobQueueBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S: Store, J: JobValue> JobQueueBuilder<S, J> {
    pub(crate) fn new(store: S) -> JobQueueBuilder<S, J> {
        JobQueueBuilder {
            store,
            settings: Settings::default(),
            jobs: PhantomData,
        }
    }

    /// How jobs are stored (default [`JobFormat::Json`]). Jobs already
    /// stored run whatever their format.
    pub fn format(mut self, format: JobFormat) -> Self {
        self.settings.format = format;
        self
    }

    /// How many times a job runs before it is dead (default 5; at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.settings.max_attempts = n.max(1);
        self
    }

    /// The back-off before a retry: `base` doubled at each failure, at most
    /// `max` (default 1 s and 5 min; `max` is never below `base`).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.settings.backoff_base = base;
        self.settings.backoff_max = max.max(base);
        self
    }

    /// How long a claimed job is held (default 5 min; at least 100 ms). A
    /// job's request times out a little before, so a live runner never
    /// loses its lease; a dead runner's jobs run again once their lease is
    /// over.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// How many jobs one runner keeps in flight at once (default 64; at
    /// least 1).
    pub fn max_running(mut self, n: usize) -> Self {
        self.settings.max_running = n.max(1);
        self
    }

    /// How often a runner looks at the store when nothing woke it (default
    /// 1 s; at least 10 ms): jobs pushed by other processes are seen within
    /// this time.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.settings.poll = every.max(Duration::from_millis(10));
        self
    }

    /// Whether this queue's runners store the jobs their pool's workers
    /// post (`Worker::post_job`; default true). A pool running several
    /// named queues should let one of them take posted jobs: each that
    /// does stores every posted job once.
    pub fn accept_posted(mut self, yes: bool) -> Self {
        self.settings.accept_posted = yes;
        self
    }

    /// The queue, over the store, with these settings.
    pub fn build(self) -> JobQueue<S, J> {
        JobQueue::with_settings(self.store, self.settings)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Settings;
    use crate::{JobQueue, SqliteStore};

    #[tokio::test]
    async fn settings_are_set_on_the_builder_and_kept_by_every_clone() {
        let store = SqliteStore::in_memory().await.unwrap();
        let defaults = JobQueue::<_, String>::new(store.clone());
        assert_eq!(*defaults.settings(), Settings::default());

        let base = JobQueue::<_, String>::builder(store).max_attempts(2);
        // A clone of the builder is a builder of its own.
        let other = base.clone().lease(Duration::from_secs(7)).max_running(3);
        let queue = base
            .backoff(Duration::from_millis(20), Duration::from_millis(10))
            .poll_interval(Duration::from_millis(50))
            .build();
        let copy = queue.clone();
        let other = other.build();
        let want = Settings {
            max_attempts: 2,
            backoff_base: Duration::from_millis(20),
            // Never below the base.
            backoff_max: Duration::from_millis(20),
            poll: Duration::from_millis(50),
            ..Settings::default()
        };
        assert_eq!(*queue.settings(), want);
        assert_eq!(
            *copy.settings(),
            want,
            "a clone runs with the same settings"
        );
        assert_eq!(
            *other.settings(),
            Settings {
                max_attempts: 2,
                lease: Duration::from_secs(7),
                max_running: 3,
                ..Settings::default()
            }
        );
        // A queue built, cloned and shared: more queues can still be built
        // (nothing panics); each keeps its own settings.
        let again = JobQueue::<_, String>::builder(SqliteStore::in_memory().await.unwrap())
            .max_attempts(0)
            .lease(Duration::ZERO)
            .max_running(0)
            .poll_interval(Duration::ZERO)
            .build();
        let floors = again.settings();
        assert_eq!(floors.max_attempts, 1);
        assert_eq!(floors.lease, Duration::from_millis(100));
        assert_eq!(floors.max_running, 1);
        assert_eq!(floors.poll, Duration::from_millis(10));
    }
}
