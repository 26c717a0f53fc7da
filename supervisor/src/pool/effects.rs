//! What a change to the pool's state leaves to do once the lock is
//! released.
//!
//! A transition of [`PoolState`](super::PoolState) never wakes anyone: it
//! queues frames on the workers' outboxes in the order it decides them (so
//! a worker reads its requests and its stop order in that order) and
//! records here everything else that would wake a task or a thread: the
//! writers to wake, the connection tasks to kill their process, the
//! callers' answers, the events, the workers to launch. [`Shared`]'s
//! methods hold one `Effects` across their critical section and carry it
//! out after unlocking ([`Shared::apply`]).
//!
//! [`Shared`]: super::Shared
//! [`Shared::apply`]: super::Shared::apply

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use drover_proto::{Streams, Wake};

use crate::error::{Error, PoolFailure};
use crate::event::Event;
use crate::lifecycle::Kill;
use crate::response::Response;

/// Where a caller's answer goes.
pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<Response, Error>>;

/// A task to start.
pub(super) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A worker to start: its id (allocated under the lock) and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Launch {
    pub(crate) id: u64,
    pub(crate) index: u32,
    /// One of the pool's initial set (its failure fails the pool's start).
    pub(crate) initial: bool,
}

/// Everything a transition leaves to do outside the lock, in the order
/// [`Shared::apply`](super::Shared::apply) does it.
#[derive(Default)]
#[must_use = "effects are carried out once the lock is released"]
pub(crate) struct Effects {
    /// Writers owed a wake-up: their frames are queued already. The
    /// first is kept inline: a request routed to a worker owes exactly
    /// one, and the request path allocates nothing for it.
    pub(super) wake: Option<Wake>,
    pub(super) more_wakes: Vec<Wake>,
    /// Tasks to start (request-stream pumps), on the pool's tracker.
    pub(super) tasks: Vec<Task>,
    /// Connection tasks to tell to kill their process.
    pub(super) kills: Vec<Kill>,
    /// Byte streams of a dead worker's connection to end, and why.
    pub(super) cuts: Vec<(Arc<Streams>, String)>,
    /// Callers' answers (and failures).
    pub(crate) replies: Vec<(Reply, Result<Response, Error>)>,
    /// Events, in the order they happened.
    pub(crate) events: Vec<Event>,
    /// Workers to start.
    pub(crate) launches: Vec<Launch>,
    /// The pool fails for good, and why (the restart budget is spent).
    pub(crate) failed: Option<PoolFailure>,
    /// Recycling and drain deadlines may be due: run `maintain`.
    pub(crate) maintain: bool,
    /// Something a waiter may care about changed.
    pub(crate) notify: bool,
}

impl std::fmt::Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects")
            .field(
                "wakes",
                &(usize::from(self.wake.is_some()) + self.more_wakes.len()),
            )
            .field("tasks", &self.tasks.len())
            .field("kills", &self.kills.len())
            .field("cuts", &self.cuts.len())
            .field("replies", &self.replies.len())
            .field("events", &self.events)
            .field("launches", &self.launches)
            .field("failed", &self.failed)
            .field("maintain", &self.maintain)
            .field("notify", &self.notify)
            .finish()
    }
}

impl Effects {
    /// Keeps the wake-up a queued frame owes its writer.
    pub(super) fn wake(&mut self, wake: Wake) {
        if !wake.is_needed() {
            return;
        }
        match self.wake {
            None => self.wake = Some(wake),
            Some(_) => self.more_wakes.push(wake),
        }
    }

    /// Starts `task` once the lock is released.
    pub(super) fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(Box::pin(task));
    }

    /// Has the connection task behind `kill` kill its process.
    pub(super) fn kill(&mut self, kill: &Kill) {
        self.kills.push(kill.clone());
    }

    /// Fails a caller with `error`.
    pub(crate) fn fail(&mut self, reply: Reply, error: Error) {
        self.replies.push((reply, Err(error)));
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Whether anything but wake-ups of the first writer, replies and the
    /// two flags is to do: what a request and a batch of answers rarely
    /// leave.
    #[inline]
    pub(super) fn has_rare(&self) -> bool {
        !(self.more_wakes.is_empty()
            && self.kills.is_empty()
            && self.cuts.is_empty()
            && self.tasks.is_empty()
            && self.events.is_empty()
            && self.launches.is_empty()
            && self.failed.is_none())
    }

    /// Whether nothing is left to do.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.wake.is_none()
            && self.more_wakes.is_empty()
            && self.tasks.is_empty()
            && self.kills.is_empty()
            && self.cuts.is_empty()
            && self.replies.is_empty()
            && self.events.is_empty()
            && self.launches.is_empty()
            && self.failed.is_none()
            && !self.maintain
            && !self.notify
    }

    /// How many connection tasks are told to kill.
    #[cfg(test)]
    pub(crate) fn kills(&self) -> usize {
        self.kills.len()
    }
}
