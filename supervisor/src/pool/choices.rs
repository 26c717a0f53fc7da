//! The choices operations (`operate.rs`) make under the lock: which
//! workers retire, which slots fill, when an operation is over; and the
//! gauges' count.

use std::time::{Duration, Instant};

use crate::builder::Config;
use crate::error::{Error, PoolFailure};
use crate::event::RecycleCause;
use crate::health::WorkerState;
use crate::lifecycle::StopOrder;
use crate::metrics::Gauges;

use super::effects::Effects;
use super::state::{Phase, PoolState, Startup, WorkerEntry};

/// The operations' choices (`operate.rs` runs them): which workers retire,
/// which slots fill, when an operation is over.
impl PoolState {
    /// The pool's phase.
    pub(crate) fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether no request is queued.
    pub(crate) fn queue_is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether no worker process is left (every one reaped).
    pub(crate) fn no_workers(&self) -> bool {
        self.workers.is_empty()
    }

    /// How the start of the initial workers ended, once it has (the first
    /// failure is handed out once); a pool stopped first answers
    /// `ShuttingDown`.
    pub(crate) fn startup_outcome(&mut self) -> Option<Result<(), Error>> {
        match &mut self.startup {
            Startup::Online => Some(Ok(())),
            Startup::Failed(error) => Some(Err(error.take().unwrap_or(Error::PoolFailed {
                reason: PoolFailure::StartFailed,
            }))),
            Startup::Waiting(_) if self.phase != Phase::Running => Some(Err(Error::ShuttingDown)),
            Startup::Waiting(_) => None,
        }
    }

    /// Takes worker `i` out of service gracefully, for `cause`.
    pub(super) fn retire(
        &mut self,
        i: usize,
        cause: RecycleCause,
        drain_timeout: Duration,
        fx: &mut Effects,
    ) {
        let worker = &mut self.workers[i];
        // A worker still in its handshake gets the message once ready.
        let delivery = worker.life.retire(cause, Instant::now() + drain_timeout);
        worker.deliver(delivery, fx);
        fx.emit(worker.state_event(WorkerState::Stopping));
        fx.notify = true;
    }

    /// Workers out of service because of recycling or a reload, counting
    /// replacements still starting: what the recycling cap limits.
    pub(super) fn out_of_service(&self) -> usize {
        self.workers.iter().filter(|w| w.life.recycling()).count()
    }

    /// The lowest slot index that no active worker fills and that is not
    /// in `taken`.
    pub(super) fn free_index(&self, taken: &[u32]) -> u32 {
        (0u32..)
            .find(|i| {
                !taken.contains(i)
                    && !self
                        .workers
                        .iter()
                        .any(|w| !w.life.is_stopping() && w.index == *i)
            })
            .unwrap_or(0)
    }

    /// Has the connection tasks kill the retiring workers past their
    /// drain deadline.
    pub(crate) fn kill_overdue(&mut self, now: Instant, fx: &mut Effects) {
        for worker in &mut self.workers {
            if worker.life.overdue(now) {
                tracing::warn!(
                    pid = worker.pid,
                    "worker did not finish within the drain timeout; killing it"
                );
                fx.kill(&worker.kill);
            }
        }
    }

    /// Retires the next worker due for recycling, within the recycling
    /// cap, while the pool runs, and launches its replacement in its slot;
    /// `false` if none is due (or the cap is reached).
    pub(crate) fn recycle_next(&mut self, config: &Config, now: Instant, fx: &mut Effects) -> bool {
        if self.phase != Phase::Running || self.out_of_service() >= config.max_recycling {
            return false;
        }
        let due = self.workers.iter().enumerate().find_map(|(i, w)| {
            w.life
                .in_service()
                .then(|| recycle_cause(config, w, now))
                .flatten()
                .map(|c| (i, c))
        });
        let Some((i, cause)) = due else {
            return false;
        };
        let index = self.workers[i].index;
        tracing::info!(pid = self.workers[i].pid, "recycling worker: {cause}");
        self.retire(i, cause, config.drain_timeout, fx);
        self.launch(index, false, fx);
        true
    }

    /// Keeps `n` workers from now: launches workers in the free slots, or
    /// retires workers (idle ones first, then the least loaded; starting
    /// ones before any that serve).
    pub(crate) fn resize(&mut self, n: usize, drain_timeout: Duration, fx: &mut Effects) {
        self.target = n;
        let active = self.active();
        let mut taken = Vec::new();
        for _ in active..n {
            let index = self.free_index(&taken);
            taken.push(index);
            self.launch(index, false, fx);
        }
        if active > n {
            let mut order: Vec<usize> = (0..self.workers.len())
                .filter(|&i| !self.workers[i].life.is_stopping())
                .collect();
            order.sort_by_key(|&i| {
                let w = &self.workers[i];
                (
                    w.life.view() != WorkerState::Starting,
                    w.in_flight.len(),
                    std::cmp::Reverse(w.index),
                )
            });
            for i in order.into_iter().take(active - n) {
                self.retire(i, RecycleCause::Resize, drain_timeout, fx);
            }
        }
    }

    /// Whether a resize to `n` is done: `n` workers in service, none
    /// starting, and those resized away gone.
    pub(crate) fn resized_to(&self, n: usize) -> bool {
        let resized_away = StopOrder::Recycle(RecycleCause::Resize);
        self.in_service_count() == Some(n)
            && !self
                .workers
                .iter()
                .any(|w| w.life.order() == Some(&resized_away))
    }

    /// How many workers are active, if every active one is in service
    /// (none still starting).
    pub(super) fn in_service_count(&self) -> Option<usize> {
        let mut n = 0;
        for w in self.workers.iter().filter(|w| !w.life.is_stopping()) {
            if !w.life.in_service() {
                return None;
            }
            n += 1;
        }
        Some(n)
    }

    /// The active workers (not ordered to stop): id and slot.
    pub(crate) fn active_workers(&self) -> Vec<(u64, u32)> {
        self.workers
            .iter()
            .filter(|w| !w.life.is_stopping())
            .map(|w| (w.id, w.index))
            .collect()
    }

    /// Whether worker `id` exists and is past starting.
    pub(crate) fn has_started(&self, id: u64) -> bool {
        self.workers
            .iter()
            .find(|w| w.id == id)
            .is_some_and(|w| w.life.view() != WorkerState::Starting)
    }

    /// Whether worker `id` is still there (not reaped).
    pub(crate) fn has_worker(&self, id: u64) -> bool {
        self.workers.iter().any(|w| w.id == id)
    }

    /// Retires worker `id` for `cause`, if it is active; whether it was.
    pub(crate) fn retire_worker(
        &mut self,
        id: u64,
        cause: RecycleCause,
        drain_timeout: Duration,
        fx: &mut Effects,
    ) -> bool {
        let Some(i) = self
            .workers
            .iter()
            .position(|w| w.id == id && !w.life.is_stopping())
        else {
            return false;
        };
        self.retire(i, cause, drain_timeout, fx);
        true
    }

    /// Drains the pool: every active worker retires; requests are held
    /// (or refused) until `resume`.
    pub(crate) fn drain(&mut self, drain_timeout: Duration, fx: &mut Effects) {
        self.phase = Phase::Drained;
        for i in 0..self.workers.len() {
            if !self.workers[i].life.is_stopping() {
                self.retire(i, RecycleCause::Drain, drain_timeout, fx);
            }
        }
        fx.notify = true;
    }

    /// Runs a drained pool again, launching its target count of workers;
    /// `false` if it was not drained.
    pub(crate) fn resume(&mut self, fx: &mut Effects) -> bool {
        if self.phase != Phase::Drained {
            return false;
        }
        self.phase = Phase::Running;
        for index in 0..self.target {
            self.launch(index as u32, false, fx);
        }
        true
    }

    /// Whether a resumed pool is back: at least its target in service,
    /// none starting.
    pub(crate) fn back_to_target(&self) -> bool {
        self.in_service_count().is_some_and(|n| n >= self.target)
    }

    /// The gauges' values, counted under the lock and reported after it.
    pub(crate) fn gauges(&self) -> Gauges {
        let mut gauges = Gauges {
            queued: self.pending.len(),
            ..Gauges::default()
        };
        for worker in &self.workers {
            gauges.in_flight += worker.in_flight.len();
            match worker.life.view() {
                WorkerState::Starting => gauges.starting += 1,
                WorkerState::Ready => gauges.ready += 1,
                WorkerState::Busy => gauges.busy += 1,
                WorkerState::Stopping => gauges.stopping += 1,
                _ => {}
            }
            if let (false, Some(rss)) = (worker.life.is_stopping(), worker.rss) {
                gauges.rss.push((worker.index, rss));
            }
        }
        gauges
    }
}

/// Why `worker` should be recycled now, if it should.
fn recycle_cause(config: &Config, worker: &WorkerEntry, now: Instant) -> Option<RecycleCause> {
    if let Some(quota) = worker.recycle_at {
        if worker.served >= quota {
            return Some(RecycleCause::MaxRequests {
                served: worker.served,
            });
        }
    }
    if let (Some(limit), Some(rss)) = (config.max_rss, worker.rss) {
        if rss > limit {
            return Some(RecycleCause::MaxRss { rss, limit });
        }
    }
    if let Some(max_age) = config.max_age {
        let age = now.duration_since(worker.started_at);
        if age >= max_age {
            return Some(RecycleCause::MaxAge { age });
        }
    }
    None
}
