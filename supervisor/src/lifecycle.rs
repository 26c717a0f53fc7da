//! A worker's lifecycle: the one type that says where a worker is, the
//! pool's orders to stop it, and every transition between the two.
//!
//! ```text
//!              ready(outbox)             busy()
//!   Starting ───────────────▶ Ready ◀──────────▶ Busy
//!      │                        │     unbusy()     │
//!      │ stop / kill            │ stop / kill      │ stop / kill
//!      ▼                        ▼                  ▼
//!   Stopping { outbox, order, deadline, shown } ───▶ reaped (the pool
//!                                                     forgets the entry)
//! ```
//!
//! A worker takes work only when [`Life::takes_work`] says so (ready, past
//! its handshake, not asked to stop); it is *in service* while ready or
//! busy ([`Life::in_service`]). Once stopping it never goes back: a later
//! order may only replace the first where it is harder ([`Life::stop`],
//! [`Life::kill`]). Why the worker ended, when the pool ended it, is
//! derived from its [`StopOrder`] in one place ([`StopOrder::exit_reason`]).
//!
//! Transitions say what the worker's connection must be told
//! ([`Deliver`]); the pool carries that out. The [`Kill`] token is how a
//! kill reaches the connection task.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use drover_proto::{Outbox, RequestId, ToWorker};
use futures::FutureExt;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::event::{ExitReason, RecycleCause};
use crate::health::WorkerState;

/// Why the pool stops a worker: the order, from which the exit reason is
/// derived ([`StopOrder::exit_reason`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopOrder {
    /// A soft kill of the pool: finish what it holds, then exit.
    SoftKill,
    /// The soft kill's grace ran out: killed.
    SoftKillTimeout,
    /// A hard kill of the pool (or the last handle dropped).
    HardKill,
    /// Retired on purpose (recycling, resize, reload, drain, a removed
    /// group): finish what it holds within the drain timeout.
    Recycle(RecycleCause),
    /// The pool failed: killed.
    PoolFailed,
    /// Its health-check ping went unanswered for this long: killed.
    HealthCheck { unanswered_for: Duration },
    /// It held this timed-out request past the kill-after grace: killed.
    TimedOut { request_id: RequestId },
    /// A signal from outside told it to stop; it drains.
    Signalled { signal: i32 },
}

impl StopOrder {
    /// The exit reason a worker stopped by this order reports.
    pub(crate) fn exit_reason(&self) -> ExitReason {
        match self {
            StopOrder::SoftKill => ExitReason::SoftKill,
            StopOrder::SoftKillTimeout => ExitReason::SoftKillTimeout,
            StopOrder::HardKill => ExitReason::HardKill,
            StopOrder::Recycle(cause) => ExitReason::Recycled(cause.clone()),
            StopOrder::PoolFailed => ExitReason::PoolFailed,
            StopOrder::HealthCheck { unanswered_for } => ExitReason::HealthCheck {
                unanswered_for: *unanswered_for,
            },
            StopOrder::TimedOut { request_id } => ExitReason::TimedOut {
                request_id: *request_id,
            },
            StopOrder::Signalled { signal } => ExitReason::Signalled { signal: *signal },
        }
    }

    /// The message that asks a worker to carry out this order: `SoftKill`
    /// for the graceful orders of the pool, `HardKill` for the rest.
    fn message(&self) -> ToWorker {
        match self {
            StopOrder::SoftKill | StopOrder::Recycle(_) => ToWorker::SoftKill,
            _ => ToWorker::HardKill,
        }
    }
}

/// What a transition needs the worker's connection to carry out.
#[derive(Debug)]
#[must_use = "a transition's delivery must be carried out"]
pub(crate) enum Deliver {
    /// Nothing.
    Nothing,
    /// Send it this message (if its outbox is open).
    Send(ToWorker),
    /// Kill its process.
    Kill,
}

/// Where a worker is in its life, from spawn to reaping.
#[derive(Debug)]
pub(crate) enum Life {
    /// Started; its handshake is not done.
    Starting,
    /// Takes requests.
    Ready { outbox: Outbox<ToWorker> },
    /// Said `busy()`: takes nothing new until it says `ready()`.
    Busy { outbox: Outbox<ToWorker> },
    /// Ordered to stop; finishing what it holds, or being killed.
    Stopping {
        /// `None` while its handshake is not done.
        outbox: Option<Outbox<ToWorker>>,
        order: StopOrder,
        /// When it is killed if it has not exited (graceful orders).
        deadline: Option<Instant>,
        /// What it shows (`health()`, events, metrics): `Stopping` once
        /// asked to stop; a kill changes nothing shown until its exit.
        shown: WorkerState,
    },
}

impl Life {
    /// A worker registered while the pool stops: killed at once.
    pub(crate) fn killed_at_birth() -> (Life, Deliver) {
        let life = Life::Stopping {
            outbox: None,
            order: StopOrder::HardKill,
            deadline: None,
            shown: WorkerState::Starting,
        };
        (life, Deliver::Kill)
    }

    /// The state it shows in `health()`, events and metrics.
    pub(crate) fn view(&self) -> WorkerState {
        match self {
            Life::Starting => WorkerState::Starting,
            Life::Ready { .. } => WorkerState::Ready,
            Life::Busy { .. } => WorkerState::Busy,
            Life::Stopping { shown, .. } => *shown,
        }
    }

    /// Whether it may be routed a request (its concurrency cap aside).
    #[inline]
    pub(crate) fn takes_work(&self) -> bool {
        matches!(self, Life::Ready { .. })
    }

    /// Whether it serves: past its handshake and not asked to stop.
    pub(crate) fn in_service(&self) -> bool {
        matches!(self, Life::Ready { .. } | Life::Busy { .. })
    }

    /// Whether the pool ordered it to stop.
    pub(crate) fn is_stopping(&self) -> bool {
        matches!(self, Life::Stopping { .. })
    }

    /// The pool's order to stop it, if it gave one.
    pub(crate) fn order(&self) -> Option<&StopOrder> {
        match self {
            Life::Stopping { order, .. } => Some(order),
            _ => None,
        }
    }

    /// Why it ended, if the pool ended it.
    pub(crate) fn exit_reason(&self) -> Option<ExitReason> {
        self.order().map(StopOrder::exit_reason)
    }

    /// The writer's queue, once its handshake is done.
    #[inline]
    pub(crate) fn outbox(&self) -> Option<&Outbox<ToWorker>> {
        match self {
            Life::Ready { outbox } | Life::Busy { outbox } => Some(outbox),
            Life::Stopping { outbox, .. } => outbox.as_ref(),
            Life::Starting => None,
        }
    }

    /// Its handshake is done: it takes work, or, ordered to stop while it
    /// started, is told so now.
    pub(crate) fn handshake_done(&mut self, new: Outbox<ToWorker>) -> Deliver {
        match self {
            Life::Starting => {
                *self = Life::Ready { outbox: new };
                Deliver::Nothing
            }
            Life::Ready { outbox } | Life::Busy { outbox } => {
                *outbox = new;
                Deliver::Nothing
            }
            Life::Stopping {
                outbox,
                order,
                shown,
                ..
            } => {
                *outbox = Some(new);
                *shown = WorkerState::Stopping;
                Deliver::Send(order.message())
            }
        }
    }

    /// It said `busy()`; true if that changed what it shows.
    pub(crate) fn busy(&mut self) -> bool {
        match self {
            Life::Ready { .. } => {
                self.replace_outbox_state(true);
                true
            }
            Life::Stopping { shown, .. } if *shown == WorkerState::Ready => {
                *shown = WorkerState::Busy;
                true
            }
            _ => false,
        }
    }

    /// It said `ready()` again; true if that changed what it shows.
    pub(crate) fn unbusy(&mut self) -> bool {
        match self {
            Life::Busy { .. } => {
                self.replace_outbox_state(false);
                true
            }
            Life::Stopping { shown, .. } if *shown == WorkerState::Busy => {
                *shown = WorkerState::Ready;
                true
            }
            _ => false,
        }
    }

    /// Ready to busy (`true`) or back, keeping the outbox.
    fn replace_outbox_state(&mut self, busy: bool) {
        let taken = std::mem::replace(self, Life::Starting);
        *self = match (taken, busy) {
            (Life::Ready { outbox }, true) => Life::Busy { outbox },
            (Life::Busy { outbox }, false) => Life::Ready { outbox },
            (other, _) => other,
        };
    }

    /// Moves it to `Stopping` with `order` (whatever it was doing), shown
    /// as `shown`; keeps its outbox.
    fn begin_stopping(&mut self, order: StopOrder, deadline: Option<Instant>, shown: WorkerState) {
        let outbox = match std::mem::replace(self, Life::Starting) {
            Life::Ready { outbox } | Life::Busy { outbox } => Some(outbox),
            Life::Stopping { outbox, .. } => outbox,
            Life::Starting => None,
        };
        *self = Life::Stopping {
            outbox,
            order,
            deadline,
            shown,
        };
    }

    /// Retires it gracefully for `cause`: nothing new is routed to it, it
    /// is told to finish and exit (once ready, if still starting), and is
    /// killed at `deadline`.
    pub(crate) fn retire(&mut self, cause: RecycleCause, deadline: Instant) -> Deliver {
        self.begin_stopping(
            StopOrder::Recycle(cause),
            Some(deadline),
            WorkerState::Stopping,
        );
        Deliver::Send(ToWorker::SoftKill)
    }

    /// A signal from outside told it to stop: it drains until `deadline`
    /// (unless an order came first, which stands), and is answered
    /// `SoftKill`. True if that changed what it shows.
    pub(crate) fn signalled(&mut self, signal: i32, deadline: Instant) -> (bool, Deliver) {
        let changed = self.view() != WorkerState::Stopping;
        match self {
            Life::Stopping { shown, .. } => *shown = WorkerState::Stopping,
            _ => self.begin_stopping(
                StopOrder::Signalled { signal },
                Some(deadline),
                WorkerState::Stopping,
            ),
        }
        (changed, Deliver::Send(ToWorker::SoftKill))
    }

    /// The pool stops (`SoftKill`, `HardKill`, or a soft kill for a
    /// recycle cause): a worker not yet stopping is told to, and a hard
    /// kill overrides any gentler order.
    pub(crate) fn stop(&mut self, order: StopOrder) -> Deliver {
        let harder =
            order == StopOrder::HardKill && self.order().is_some_and(|o| *o != StopOrder::HardKill);
        if self.is_stopping() && !harder {
            return Deliver::Nothing;
        }
        let deadline = match self {
            Life::Stopping { deadline, .. } => *deadline,
            _ => None,
        };
        let message = order.message();
        self.begin_stopping(order, deadline, WorkerState::Stopping);
        Deliver::Send(message)
    }

    /// Kills it for `order`, which becomes its exit reason unless it was
    /// already ordered to stop (a soft kill's timeout replaces the soft
    /// kill). What it shows does not change.
    pub(crate) fn kill(&mut self, order: StopOrder) -> Deliver {
        match self {
            Life::Stopping { order: current, .. } => {
                if *current == StopOrder::SoftKill && order == StopOrder::SoftKillTimeout {
                    *current = order;
                }
            }
            _ => {
                let shown = self.view();
                let deadline = None;
                self.begin_stopping(order, deadline, shown);
            }
        }
        Deliver::Kill
    }

    /// Whether it is past its drain deadline (checked at `now`): then the
    /// deadline is cleared and the caller kills it.
    pub(crate) fn overdue(&mut self, now: Instant) -> bool {
        match self {
            Life::Stopping { deadline, .. } if deadline.is_some_and(|d| now >= d) => {
                *deadline = None;
                true
            }
            _ => false,
        }
    }

    /// Whether it is out of service for recycling or a reload, or still
    /// starting (what the recycling cap counts).
    pub(crate) fn recycling(&self) -> bool {
        match self {
            Life::Starting => true,
            Life::Stopping {
                order: StopOrder::Recycle(cause),
                ..
            } => matches!(
                cause,
                RecycleCause::MaxRequests { .. }
                    | RecycleCause::MaxRss { .. }
                    | RecycleCause::MaxAge { .. }
                    | RecycleCause::Reload
            ),
            _ => false,
        }
    }
}

/// Kills one worker's process: cancelled by whoever wants it dead, and
/// remembering the first fault of a task that served it, which becomes
/// its exit reason.
#[derive(Debug, Clone, Default)]
pub(crate) struct Kill {
    token: CancellationToken,
    fault: Arc<OnceLock<ExitReason>>,
}

impl Kill {
    /// Has the connection task kill the process.
    pub(crate) fn cancel(&self) {
        self.token.cancel();
    }

    /// Kills the process for `reason`, unless another fault came first.
    pub(crate) fn fault(&self, reason: ExitReason) {
        let _ = self.fault.set(reason);
        self.token.cancel();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(crate) fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    pub(crate) fn take_fault(&self) -> Option<ExitReason> {
        self.fault.get().cloned()
    }
}

/// Runs `task` (one of worker's tasks, named `name` in errors); a panic in
/// it kills the worker with [`ExitReason::TaskFailed`], so nothing it
/// served is left waiting.
pub(crate) async fn guarded(
    kill: Kill,
    name: &'static str,
    task: impl std::future::Future<Output = ()>,
) {
    if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
        let detail = panic_message(&*panic);
        tracing::error!("the supervisor's {name} task of a worker panicked: {detail}");
        kill.fault(ExitReason::TaskFailed { task: name, detail });
    }
}

/// What a panic said.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (_, Some(text)) => text.clone(),
        _ => "a panic with no message".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_keeps_what_is_shown_and_a_stop_shows_stopping() {
        let mut life = Life::Starting;
        assert!(!life.takes_work());
        assert!(matches!(life.kill(StopOrder::PoolFailed), Deliver::Kill));
        assert_eq!(life.view(), WorkerState::Starting);
        assert_eq!(life.exit_reason(), Some(ExitReason::PoolFailed));
        // A hard kill of the pool overrides the gentler order.
        assert!(matches!(
            life.stop(StopOrder::HardKill),
            Deliver::Send(ToWorker::HardKill)
        ));
        assert_eq!(life.view(), WorkerState::Stopping);
        assert_eq!(life.exit_reason(), Some(ExitReason::HardKill));
        assert!(matches!(life.stop(StopOrder::SoftKill), Deliver::Nothing));
    }

    #[test]
    fn a_soft_kill_timeout_replaces_the_soft_kill_only() {
        let mut life = Life::Starting;
        let _ = life.stop(StopOrder::SoftKill);
        let _ = life.kill(StopOrder::SoftKillTimeout);
        assert_eq!(life.exit_reason(), Some(ExitReason::SoftKillTimeout));
        let mut life = Life::Starting;
        let _ = life.retire(RecycleCause::Drain, Instant::now());
        let _ = life.kill(StopOrder::SoftKillTimeout);
        assert_eq!(
            life.exit_reason(),
            Some(ExitReason::Recycled(RecycleCause::Drain))
        );
    }

    #[test]
    fn a_drain_deadline_fires_once() {
        let mut life = Life::Starting;
        let now = Instant::now();
        let _ = life.retire(RecycleCause::Resize, now);
        assert!(!life.recycling());
        assert!(life.overdue(now));
        assert!(!life.overdue(now));
    }
}
