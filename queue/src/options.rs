//! How one job is pushed: when, how urgently, and whether it may be a
//! duplicate ([`Enqueue`]); and what the push did ([`Pushed`]).

use std::time::{Duration, SystemTime};

use crate::store::JobId;

/// Options of one push, for [`JobQueue::push_with`] and
/// [`JobQueue::push_many_with`]: due time, priority, unique key (while
/// pending, or for a window). Every one is optional.
///
/// [`JobQueue::push_with`]: crate::JobQueue::push_with
/// [`JobQueue::push_many_with`]: crate::JobQueue::push_many_with
///
/// ```no_run
/// # async fn run(queue: drover_queue::JobQueue<drover_queue::SqliteStore, String>) -> Result<(), drover_queue::QueueError> {
/// use drover_queue::{Enqueue, Pushed};
/// let pushed = queue
///     .push_with(&"sync user 42".to_string(), Enqueue::new().priority(10).unique("sync:42"))
///     .await?;
/// if let Pushed::Duplicate(id) = pushed {
///     println!("job {id} will do it already");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "options do nothing until passed to `push_with`"]
pub struct Enqueue {
    pub(crate) run_at: Option<SystemTime>,
    pub(crate) priority: i32,
    pub(crate) unique_key: Option<String>,
    /// How long a stored job holds its key beyond its pending time.
    pub(crate) window: Option<Duration>,
}

impl Enqueue {
    /// Due now, priority 0, no unique key.
    pub fn new() -> Enqueue {
        Enqueue::default()
    }

    /// Due at `at`.
    pub fn at(mut self, at: SystemTime) -> Enqueue {
        self.run_at = Some(at);
        self
    }

    /// Due after `delay`.
    pub fn after(mut self, delay: Duration) -> Enqueue {
        self.run_at = Some(SystemTime::now() + delay);
        self
    }

    /// Among the jobs due, higher priorities run first (default 0;
    /// negative is below normal). Jobs of equal priority run oldest due
    /// first.
    pub fn priority(mut self, priority: i32) -> Enqueue {
        self.priority = priority;
        self
    }

    /// While a job of this queue with `key` is pending (ready, waiting or
    /// running), a push with the same key stores nothing and answers
    /// [`Pushed::Duplicate`] with that job's id. Once it completes,
    /// dies or is cancelled, the key is free again.
    pub fn unique(mut self, key: impl Into<String>) -> Enqueue {
        self.unique_key = Some(key.into());
        self.window = None;
        self
    }

    /// As [`unique`](Enqueue::unique), and for `window` from the push
    /// that stored a job with `key`, even once that job has finished: a
    /// push with the key within the window, or while its job is pending,
    /// stores nothing and answers [`Pushed::Duplicate`] with that job's
    /// id (which may have finished). "Run this at most once an hour":
    /// `Enqueue::new().unique_for("report", Duration::from_secs(3600))`.
    ///
    /// Such a push takes one transaction of a few statements instead of
    /// one statement.
    pub fn unique_for(mut self, key: impl Into<String>, window: Duration) -> Enqueue {
        self.unique_key = Some(key.into());
        self.window = Some(window);
        self
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pushed {
    /// The job was stored, with this id.
    New(JobId),
    /// A pending job held the unique key, or (with
    /// [`Enqueue::unique_for`]) a job stored with it within its window:
    /// nothing was stored; this is that job's id.
    Duplicate(JobId),
}

impl Pushed {
    /// The id of the job that will run: the new one, or the one pending.
    pub fn id(self) -> JobId {
        match self {
            Pushed::New(id) | Pushed::Duplicate(id) => id,
        }
    }
}
