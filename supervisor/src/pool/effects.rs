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
pub(crate) type Reply = crate::reply::Reply<Result<Response, Error>>;

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
///
/// What a request or a batch of answers leaves (one writer's wake-up,
/// replies) is kept inline; everything else waits in [`Rare`], made only
/// when needed: an `Effects` that held none of it is dropped and applied
/// without looking at seven empty lists.
#[derive(Default)]
#[must_use = "effects are carried out once the lock is released"]
pub(crate) struct Effects {
    /// The first writer owed a wake-up (its frames are queued already):
    /// a request routed to a worker owes exactly one.
    pub(super) wake: Option<Wake>,
    /// Callers' answers (and failures).
    pub(crate) replies: Vec<(Reply, Result<Response, Error>)>,
    /// The rest, if any.
    pub(super) rare: Option<Box<Rare>>,
    /// Recycling and drain deadlines may be due: run `maintain`.
    pub(crate) maintain: bool,
    /// Something a waiter may care about changed.
    pub(crate) notify: bool,
}

/// The effects a request's path does not leave.
#[derive(Default)]
pub(crate) struct Rare {
    /// Writers owed a wake-up after the first.
    pub(super) more_wakes: Vec<Wake>,
    /// Tasks to start (request-stream pumps), on the pool's tracker.
    pub(super) tasks: Vec<Task>,
    /// Connection tasks to tell to kill their process.
    pub(super) kills: Vec<Kill>,
    /// Byte streams of a dead worker's connection to end, and why.
    pub(super) cuts: Vec<(Arc<Streams>, String)>,
    /// Events, in the order they happened.
    pub(crate) events: Vec<Event>,
    /// Workers to start.
    pub(crate) launches: Vec<Launch>,
    /// The pool fails for good, and why (the restart budget is spent).
    pub(crate) failed: Option<PoolFailure>,
}

impl std::fmt::Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects")
            .field(
                "wakes",
                &(usize::from(self.wake.is_some())
                    + self.rare.as_ref().map_or(0, |r| r.more_wakes.len())),
            )
            .field("tasks", &self.rare.as_ref().map_or(0, |r| r.tasks.len()))
            .field("kills", &self.rare.as_ref().map_or(0, |r| r.kills.len()))
            .field("cuts", &self.rare.as_ref().map_or(0, |r| r.cuts.len()))
            .field("replies", &self.replies.len())
            .field("events", &self.rare.as_ref().map(|r| &r.events))
            .field("launches", &self.rare.as_ref().map(|r| &r.launches))
            .field("failed", &self.rare.as_ref().map(|r| &r.failed))
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
            Some(_) => self.rare().more_wakes.push(wake),
        }
    }

    /// Starts `task` once the lock is released.
    pub(super) fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.rare().tasks.push(Box::pin(task));
    }

    /// Has the connection task behind `kill` kill its process.
    pub(super) fn kill(&mut self, kill: &Kill) {
        self.rare().kills.push(kill.clone());
    }

    /// Fails a caller with `error`.
    pub(crate) fn fail(&mut self, reply: Reply, error: Error) {
        self.replies.push((reply, Err(error)));
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.rare().events.push(event);
    }

    /// The rare effects, made on first use.
    pub(crate) fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Whether a worker is to be started.
    pub(crate) fn launches_any(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| !r.launches.is_empty())
    }

    /// Whether nothing is left to do.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.wake.is_none()
            && self.replies.is_empty()
            && self.rare.as_ref().is_none_or(|r| {
                r.more_wakes.is_empty()
                    && r.tasks.is_empty()
                    && r.kills.is_empty()
                    && r.cuts.is_empty()
                    && r.events.is_empty()
                    && r.launches.is_empty()
                    && r.failed.is_none()
            })
            && !self.maintain
            && !self.notify
    }

    /// The workers to start.
    #[cfg(test)]
    pub(crate) fn launches(&self) -> &[Launch] {
        self.rare.as_ref().map_or(&[], |r| &r.launches)
    }

    /// The events, in order.
    #[cfg(test)]
    pub(crate) fn events(&self) -> &[Event] {
        self.rare.as_ref().map_or(&[], |r| &r.events)
    }

    /// Why the pool fails, if it does.
    #[cfg(test)]
    pub(crate) fn failed(&self) -> Option<&PoolFailure> {
        self.rare.as_ref().and_then(|r| r.failed.as_ref())
    }

    /// How many connection tasks are told to kill.
    #[cfg(test)]
    pub(crate) fn kills(&self) -> usize {
        self.rare.as_ref().map_or(0, |r| r.kills.len())
    }
}
