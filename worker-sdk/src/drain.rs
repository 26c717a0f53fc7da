//! Stopping: what a soft kill waits for, and where the serve loop stands.
//!
//! A soft kill (the supervisor's `SoftKill`, or a stop signal that the
//! supervisor then confirms with one) is done once every one of these
//! holds:
//!
//! - the supervisor's `SoftKill` has come ([`Drain::confirmed`]: after a
//!   signal the loop waits for it, since it follows every request the
//!   supervisor routed here before it knew);
//! - no request is in flight (the [`Registry`] is empty);
//! - the worker is not [`busy`](crate::Worker::busy);
//! - the soft-kill hook has run, and no answer stream is still being sent:
//!   both run as tasks held by [`StopState::hold`], so this is "the holds
//!   are empty".
//!
//! The serve loop re-checks after each change: a request answered (only
//! while stopping, so the hot path pays no wake-up), `ready()`, or the
//! last hold ending.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::task::task_tracker::TrackedFuture;
use tokio_util::task::TaskTracker;

use crate::registry::Registry;

/// The hook of `Worker::on_soft_kill`.
pub(crate) type SoftKillHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;
/// The hook of `Worker::on_hard_kill`.
pub(crate) type HardKillHook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Hooks {
    soft_kill: Option<SoftKillHook>,
    hard_kill: Option<HardKillHook>,
}

/// The part of stopping that every handle shares: the busy flag, the hooks,
/// the tasks a soft kill waits for, and the wake-up of the serve loop.
#[derive(Default)]
pub(crate) struct StopState {
    /// Woken when a request finishes during a soft kill, or `ready()` is
    /// called, so the serve loop can re-check whether the soft kill may
    /// complete.
    changed: Notify,
    /// A soft kill is waiting: only then do finishing requests wake the
    /// serve loop (otherwise each answer would cost it a spurious turn).
    stopping: AtomicBool,
    busy: AtomicBool,
    /// Answer streams still being sent and the running soft-kill hook;
    /// closed when a drain starts, so it can be waited for.
    holds: TaskTracker,
    hooks: Mutex<Hooks>,
}

impl std::fmt::Debug for StopState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopState")
            .field("stopping", &self.stopping)
            .field("busy", &self.busy)
            .field("holds", &self.holds)
            .finish_non_exhaustive()
    }
}

impl StopState {
    fn hooks(&self) -> MutexGuard<'_, Hooks> {
        self.hooks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::SeqCst);
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// Has the serve loop re-check whether a soft kill may complete.
    pub(crate) fn wake(&self) {
        self.changed.notify_one();
    }

    /// As [`wake`](StopState::wake), only while a soft kill waits.
    pub(crate) fn wake_if_stopping(&self) {
        if self.stopping.load(Ordering::SeqCst) {
            self.changed.notify_one();
        }
    }

    /// `future`, which a soft kill waits for from now on (even before it
    /// is spawned) until it ends or is dropped.
    pub(crate) fn hold<F: Future>(&self, future: F) -> TrackedFuture<F> {
        self.holds.track_future(future)
    }

    pub(crate) fn set_soft_kill_hook(&self, hook: SoftKillHook) {
        self.hooks().soft_kill = Some(hook);
    }

    pub(crate) fn set_hard_kill_hook(&self, hook: HardKillHook) {
        self.hooks().hard_kill = Some(hook);
    }

    pub(crate) fn take_hard_kill_hook(&self) -> Option<HardKillHook> {
        self.hooks().hard_kill.take()
    }

    /// Whether nothing holds a soft kill: one reading, to give both
    /// [`Drain::done_with`] and [`changed`](StopState::changed).
    pub(crate) fn holds_empty(&self) -> bool {
        self.holds.is_empty()
    }

    /// Resolves when something a soft kill waits for may have changed
    /// since a check that found the holds empty or not (`holds_were_empty`,
    /// the same reading the check used). Held, it also resolves once the
    /// holds are empty, even if they emptied before this was called: read
    /// again here instead, a hold that ended between the check and the
    /// wait would leave the loop waiting for a wake-up nothing sends (a
    /// worker told to stop then stayed up until the supervisor's drain
    /// timeout: one test run in about twenty, two at once).
    ///
    /// Cancel safe: a wake-up that comes while no one waits is kept for
    /// the next call.
    pub(crate) async fn changed(&self, holds_were_empty: bool) {
        if holds_were_empty {
            self.changed.notified().await;
        } else {
            tokio::select! {
                () = self.changed.notified() => {}
                () = self.holds.wait() => {}
            }
        }
    }
}

/// Where the serve loop stands on stopping (its own, not shared).
#[derive(Debug, Default)]
pub(crate) struct Drain {
    /// A soft kill or a stop signal came: the loop returns once [`done`]
    /// says so.
    ///
    /// [`done`]: Drain::done
    pub(crate) started: bool,
    /// A stop signal came (and `Stopping` was sent).
    pub(crate) signalled: bool,
    /// The supervisor's `SoftKill` came. After a signal the loop waits for
    /// it: it answers `Stopping`, and follows every request the supervisor
    /// routed here before it knew, so none is left unread.
    pub(crate) confirmed: bool,
}

impl Drain {
    /// Starts draining, once: takes the soft-kill hook and runs it in a
    /// task of its own on `tasks`, held. A second call changes nothing.
    pub(crate) fn start(&mut self, stop: &StopState, tasks: &TaskTracker) {
        if self.started {
            return;
        }
        self.started = true;
        stop.stopping.store(true, Ordering::SeqCst);
        stop.holds.close();
        let hook = stop.hooks().soft_kill.take();
        if let Some(hook) = hook {
            // A hook that panics ends its task all the same: it counts as
            // done.
            tasks.spawn(stop.hold(async move { hook().await }));
        }
    }

    /// Whether the soft kill is complete, so `serve` may return.
    #[cfg(test)]
    pub(crate) fn done(&self, stop: &StopState, registry: &Registry) -> bool {
        self.done_with(stop.holds_empty(), stop, registry)
    }

    /// As `done`, with the holds read already ([`StopState::holds_empty`]).
    pub(crate) fn done_with(
        &self,
        holds_empty: bool,
        stop: &StopState,
        registry: &Registry,
    ) -> bool {
        self.started && self.confirmed && holds_empty && !stop.is_busy() && registry.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::registry::Tracked;

    const LIMIT: Duration = Duration::from_secs(5);

    /// Nothing is done before a drain starts and the supervisor's
    /// `SoftKill` confirms it; then busy, a request in flight and a hold
    /// each keep it from completing.
    #[tokio::test]
    async fn done_waits_for_everything() {
        let stop = StopState::default();
        let registry = Registry::default();
        let tasks = TaskTracker::new();
        let mut drain = Drain::default();
        assert!(!drain.done(&stop, &registry));
        drain.start(&stop, &tasks);
        assert!(!drain.done(&stop, &registry), "not confirmed yet");
        drain.confirmed = true;
        assert!(drain.done(&stop, &registry));

        stop.set_busy(true);
        assert!(!drain.done(&stop, &registry));
        stop.set_busy(false);

        let tracked = Arc::new(Tracked::new(
            crate::RequestId::from_u128(1),
            std::time::SystemTime::now(),
        ));
        registry.insert(tracked.clone());
        assert!(!drain.done(&stop, &registry));
        registry.remove(tracked.id);

        // A hold counts from the moment it is made, before any spawn, and
        // until it ends or is dropped.
        let held = stop.hold(async {});
        assert!(!drain.done(&stop, &registry));
        drop(held);
        assert!(drain.done(&stop, &registry));
    }

    /// Sets a soft-kill hook that returns (or panics, if `panics`) once the
    /// sender it gives back is used.
    fn hook_until_released(stop: &StopState, panics: bool) -> tokio::sync::oneshot::Sender<()> {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        stop.set_soft_kill_hook(Box::new(move || {
            Box::pin(async move {
                let _ = released.await;
                assert!(!panics, "the hook panicked, as asked");
            })
        }));
        release
    }

    /// The soft-kill hook runs once the drain starts, holds it until it
    /// returns (`changed()` then resolves), and a panicking hook counts as
    /// done.
    #[tokio::test]
    async fn the_hook_holds_the_drain() {
        for panics in [false, true] {
            let stop = StopState::default();
            let registry = Registry::default();
            let tasks = TaskTracker::new();
            let release = hook_until_released(&stop, panics);
            let mut drain = Drain {
                confirmed: true,
                ..Drain::default()
            };
            drain.start(&stop, &tasks);
            assert!(!drain.done(&stop, &registry), "the hook still runs");
            // A second start runs nothing more.
            drain.start(&stop, &tasks);
            assert_eq!(tasks.len(), 1);
            release.send(()).unwrap();
            tokio::time::timeout(LIMIT, stop.changed(false))
                .await
                .expect("the hook's end did not wake the drain");
            assert!(drain.done(&stop, &registry));
        }
    }

    /// `ready()`'s wake-up is kept for a drain that waits later;
    /// an answer wakes the drain only while one runs.
    #[tokio::test]
    async fn wake_ups_are_kept() {
        let stop = StopState::default();
        stop.wake_if_stopping();
        use futures::FutureExt;
        assert!(
            stop.changed(true).now_or_never().is_none(),
            "woken while no drain ran"
        );
        stop.wake();
        tokio::time::timeout(LIMIT, stop.changed(true))
            .await
            .expect("a kept wake-up was lost");
        let mut drain = Drain::default();
        drain.start(&stop, &TaskTracker::new());
        stop.wake_if_stopping();
        tokio::time::timeout(LIMIT, stop.changed(true))
            .await
            .expect("an answer during a drain did not wake it");
    }

    /// The hook ends between the loop's check (which found it holding)
    /// and its wait: the wait still resolves. Reading the holds again at
    /// the wait, as it once did, found them empty and waited for a
    /// wake-up that nothing sends.
    #[tokio::test]
    async fn a_hold_that_ends_between_the_check_and_the_wait_still_wakes_it() {
        let stop = StopState::default();
        let registry = Registry::default();
        let tasks = TaskTracker::new();
        let release = hook_until_released(&stop, false);
        let mut drain = Drain {
            confirmed: true,
            ..Drain::default()
        };
        drain.start(&stop, &tasks);
        let holds_empty = stop.holds_empty();
        assert!(
            !drain.done_with(holds_empty, &stop, &registry),
            "the hook holds it"
        );
        // The hook ends before the loop gets to its wait.
        release.send(()).unwrap();
        tasks.close();
        tokio::time::timeout(LIMIT, tasks.wait()).await.unwrap();
        tokio::time::timeout(LIMIT, stop.changed(holds_empty))
            .await
            .expect("the hook's end, before the wait, was lost");
        assert!(drain.done(&stop, &registry));
    }
}
