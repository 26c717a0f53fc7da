//! What a runner is doing, watched by [`Runner::idle`](crate::Runner::idle).
//!
//! The runner's loop and its job tasks keep an [`Activity`] in a `watch`
//! channel: a claim under way, the jobs claimed and not yet recorded.
//! [`Idle::wait`] waits for a moment when none of that is so, has the
//! task that stores the jobs workers post catch up (a job posted before
//! the answer that ended its job is stored by then), asks the store
//! whether a job is due (the runner would claim it next), and counts the
//! moment only if no claim began meanwhile.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::QueueError;

/// What one runner is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Activity {
    /// Jobs claimed and not yet recorded (completed, put back or buried).
    running: usize,
    /// Whether a claim is under way: jobs it takes are not yet counted.
    claiming: bool,
    /// Claims begun so far.
    claims: u64,
}

/// The runner's side of its [`Activity`].
pub(crate) type ActivityTx = Arc<watch::Sender<Activity>>;

/// A new activity channel: the runner's side and [`Idle`]'s.
pub(crate) fn activity() -> (ActivityTx, watch::Receiver<Activity>) {
    let (tx, rx) = watch::channel(Activity::default());
    (Arc::new(tx), rx)
}

/// A claim under way, from [`Claim::begin`] until dropped.
#[derive(Debug)]
pub(crate) struct Claim<'a>(&'a ActivityTx);

impl<'a> Claim<'a> {
    /// Marks a claim under way (so that a job it takes is never missed).
    pub(crate) fn begin(activity: &'a ActivityTx) -> Claim<'a> {
        activity.send_modify(|a| {
            a.claiming = true;
            a.claims += 1;
        });
        Claim(activity)
    }

    /// Counts `n` claimed jobs as running, one [`RunningJob`] each; the
    /// claim ends.
    pub(crate) fn took(self, n: usize) -> Vec<RunningJob> {
        self.0.send_modify(|a| a.running += n);
        (0..n).map(|_| RunningJob(self.0.clone())).collect()
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.claiming = false);
    }
}

/// One claimed job, counted as running until dropped (once it is recorded,
/// or if its task ends any other way).
#[derive(Debug)]
pub(crate) struct RunningJob(ActivityTx);

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.running -= 1);
    }
}

/// Whether a runner's store holds a job due now; object safe, so that
/// [`Runner`](crate::Runner) has no type parameter.
pub(crate) trait DueJobs: Send + Sync + 'static {
    fn due_now(&self) -> Pin<Box<dyn Future<Output = Result<bool, QueueError>> + Send + '_>>;
}

/// Asks the task that stores the jobs workers post to answer once it has
/// stored every one the pool reported before the request.
pub(crate) type CatchUp = mpsc::Sender<oneshot::Sender<()>>;

/// What [`Runner::idle`](crate::Runner::idle) watches.
pub(crate) struct Idle {
    pub(crate) activity: watch::Receiver<Activity>,
    pub(crate) store: Arc<dyn DueJobs>,
    pub(crate) posted: CatchUp,
    /// How often to ask the store again when nothing changed here: a due
    /// job another runner took, a store that failed to answer.
    pub(crate) poll: Duration,
}

impl fmt::Debug for Idle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idle")
            .field("activity", &*self.activity.borrow())
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl Idle {
    /// Resolves at the first moment found with nothing claimed, nothing
    /// running and no job due in the store.
    pub(crate) async fn wait(&self) {
        let mut activity = self.activity.clone();
        loop {
            let seen = *activity.borrow_and_update();
            if seen.running == 0 && !seen.claiming && self.nothing_due().await {
                if *activity.borrow() == seen {
                    // Nothing was claimed while the store was asked.
                    return;
                }
                continue;
            }
            tokio::select! {
                changed = activity.changed() => {
                    if changed.is_err() {
                        // The runner's tasks are all gone: nothing runs,
                        // and nothing will be claimed.
                        return;
                    }
                }
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Whether the store holds no due job, once the jobs workers posted
    /// before now are stored (they were reported before the answers that
    /// ended their jobs).
    async fn nothing_due(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.posted.send(tx).await.is_ok() {
            // An error: that task is gone, and stores nothing more.
            let _ = rx.await;
        }
        match self.store.due_now().await {
            Ok(due) => !due,
            Err(e) => {
                tracing::debug!("job queue: idle cannot read the store: {e}");
                false
            }
        }
    }
}
