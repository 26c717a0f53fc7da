//! Operating a running pool: recycling, resizing, rolling reload, drain and
//! resume.
//!
//! All of them take workers out of service the same way, [`PoolState::retire`]:
//! the worker is routed nothing new, told to finish what it holds and exit
//! (`SoftKill`), and killed if it is still there after the drain timeout.
//! Its exit is a requested one, never counted as a crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_proto::Message;

use crate::builder::Config;
use crate::error::Error;
use crate::event::{ExitReason, RecycleCause};
use crate::health::WorkerState;
use crate::pool::{Phase, PoolState, Shared, WorkerEntry};

impl PoolState {
    /// Takes worker `i` out of service gracefully, for `cause`.
    pub(crate) fn retire(
        &mut self,
        i: usize,
        cause: RecycleCause,
        drain_timeout: Duration,
    ) -> (u64, u32) {
        let worker = &mut self.workers[i];
        worker.stop = Some(ExitReason::Recycled(cause));
        worker.state = WorkerState::Stopping;
        worker.drain_deadline = Some(Instant::now() + drain_timeout);
        // A worker still in its handshake gets the message once ready.
        if worker.tx.is_some() {
            worker.send(Message::SoftKill);
        }
        (worker.id, worker.pid)
    }

    /// Workers out of service because of recycling or a reload, counting
    /// replacements still starting: what the recycling cap limits.
    fn out_of_service(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| match &w.stop {
                None => w.state == WorkerState::Starting,
                Some(ExitReason::Recycled(cause)) => matches!(
                    cause,
                    RecycleCause::MaxRequests { .. }
                        | RecycleCause::MaxRss { .. }
                        | RecycleCause::MaxAge { .. }
                        | RecycleCause::Reload
                ),
                Some(_) => false,
            })
            .count()
    }

    /// The lowest slot index that no active worker fills and that is not
    /// in `taken`.
    fn free_index(&self, taken: &[u32]) -> u32 {
        (0u32..)
            .find(|i| {
                !taken.contains(i)
                    && !self
                        .workers
                        .iter()
                        .any(|w| w.stop.is_none() && w.index == *i)
            })
            .unwrap_or(0)
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

impl Shared {
    /// Kills retiring workers past their drain deadline and recycles the
    /// workers that are due, within the recycling cap. Runs at every
    /// memory sample and whenever a worker answers, starts or ends.
    pub(crate) fn maintain(self: &Arc<Self>) {
        let now = Instant::now();
        let mut launches = Vec::new();
        let mut stopping = Vec::new();
        let mut state = self.lock();
        for worker in &mut state.workers {
            if worker.drain_deadline.is_some_and(|d| now >= d) {
                tracing::warn!(
                    pid = worker.pid,
                    "worker did not finish within the drain timeout; killing it"
                );
                worker.drain_deadline = None;
                worker.kill.cancel();
            }
        }
        while state.phase == Phase::Running && state.out_of_service() < self.config.max_recycling {
            let due = state.workers.iter().enumerate().find_map(|(i, w)| {
                let ready = w.stop.is_none() && w.tx.is_some() && w.state != WorkerState::Starting;
                ready
                    .then(|| recycle_cause(&self.config, w, now))
                    .flatten()
                    .map(|c| (i, c))
            });
            let Some((i, cause)) = due else {
                break;
            };
            let index = state.workers[i].index;
            tracing::info!(pid = state.workers[i].pid, "recycling worker: {cause}");
            stopping.push(state.retire(i, cause, self.config.drain_timeout));
            launches.push((self.next_worker_id(), index));
        }
        drop(state);
        for (id, pid) in stopping {
            self.emit_state(id, pid, WorkerState::Stopping);
        }
        for (id, index) in launches {
            crate::worker::launch(self, id, index, false);
        }
    }

    fn running_or(&self, operation: &'static str) -> Result<(), Error> {
        let state = self.lock();
        match &state.phase {
            Phase::Running => Ok(()),
            other => Err(Error::Operation {
                operation,
                reason: format!("the pool is {}", phase_name(other)),
            }),
        }
    }

    /// How long an operation may take before it reports failure.
    fn operation_limit(&self) -> Duration {
        self.config.start_timeout + self.config.drain_timeout + Duration::from_secs(5)
    }

    /// Waits until `done` holds, within the operation limit.
    async fn settle(
        &self,
        operation: &'static str,
        mut done: impl FnMut(&mut PoolState) -> Option<()>,
    ) -> Result<(), Error> {
        self.settle_or_fail(operation, |state| done(state).map(Ok))
            .await
    }

    /// Waits until `done` says the operation is over, well or not, within
    /// the operation limit.
    async fn settle_or_fail(
        &self,
        operation: &'static str,
        done: impl FnMut(&mut PoolState) -> Option<Result<(), Error>>,
    ) -> Result<(), Error> {
        let limit = self.operation_limit();
        tokio::time::timeout(limit, self.wait_until(done))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Operation {
                    operation,
                    reason: format!("the pool did not settle within {limit:?}"),
                })
            })
    }

    /// Grows or shrinks the pool to `n` workers; see `Supervisor::resize`.
    pub(crate) async fn resize(self: &Arc<Self>, n: usize) -> Result<(), Error> {
        let _serial = self.operations.lock().await;
        self.running_or("resize")?;
        if n == 0 {
            // A running pool with no worker would hold requests with none
            // to take them; `drain` is the way to stop every worker.
            return Err(Error::Operation {
                operation: "resize",
                reason: "a running pool needs at least one worker (drain() stops them all and holds requests until resume())".to_owned(),
            });
        }
        let mut launches = Vec::new();
        let mut stopping = Vec::new();
        {
            let mut state = self.lock();
            state.target = n;
            let active = state.active();
            let mut taken = Vec::new();
            for _ in active..n {
                let index = state.free_index(&taken);
                taken.push(index);
                launches.push((self.next_worker_id(), index));
            }
            if active > n {
                // Idle workers first, then the least loaded; starting ones
                // before any that serve.
                let mut order: Vec<usize> = (0..state.workers.len())
                    .filter(|&i| state.workers[i].stop.is_none())
                    .collect();
                order.sort_by_key(|&i| {
                    let w = &state.workers[i];
                    (
                        w.state != WorkerState::Starting,
                        w.in_flight.len(),
                        std::cmp::Reverse(w.index),
                    )
                });
                for i in order.into_iter().take(active - n) {
                    stopping.push(state.retire(i, RecycleCause::Resize, self.config.drain_timeout));
                }
            }
        }
        for (id, pid) in stopping {
            self.emit_state(id, pid, WorkerState::Stopping);
        }
        for (id, index) in launches {
            crate::worker::launch(self, id, index, false);
        }
        self.settle("resize", |state| {
            let active: Vec<&WorkerEntry> =
                state.workers.iter().filter(|w| w.stop.is_none()).collect();
            let resized_away = state
                .workers
                .iter()
                .any(|w| w.stop == Some(ExitReason::Recycled(RecycleCause::Resize)));
            (active.len() == n
                && active.iter().all(|w| w.state != WorkerState::Starting)
                && !resized_away)
                .then_some(())
        })
        .await
    }

    /// Replaces every worker, a few at a time; see `Supervisor::reload`.
    pub(crate) async fn reload(self: &Arc<Self>, spec: Option<Config>) -> Result<(), Error> {
        let _serial = self.operations.lock().await;
        self.running_or("reload")?;
        // Put back if a replacement cannot start: the old workers keep
        // serving, and replacements of any that die use what worked.
        let previous = self.spec();
        if let Some(spec) = spec {
            // Only what a reload replaces: the pool's own settings (worker
            // count, caps, timeouts) stay, so `settings()` says what runs.
            self.set_spec(previous.reloaded_with(spec));
        }
        let result = self.reload_workers().await;
        if result.is_err() {
            self.set_spec(Config::clone(&previous));
        }
        result
    }

    /// The body of a reload: replacements first, then the old workers
    /// retire, batch by batch.
    async fn reload_workers(self: &Arc<Self>) -> Result<(), Error> {
        let old: Vec<(u64, u32)> = self
            .lock()
            .workers
            .iter()
            .filter(|w| w.stop.is_none())
            .map(|w| (w.id, w.index))
            .collect();
        for batch in old.chunks(self.config.max_recycling) {
            // Replacements first; the old workers keep serving meanwhile.
            let fresh: Vec<u64> = batch.iter().map(|_| self.next_worker_id()).collect();
            for (&id, &(_, index)) in fresh.iter().zip(batch) {
                crate::worker::launch(self, id, index, false);
            }
            self.settle_or_fail("reload", |state| {
                // A replacement that cannot start ends the reload at once,
                // before any old worker retires.
                if let Some((id, why)) = fresh
                    .iter()
                    .find_map(|&id| state.start_failure(id).map(|why| (id, why)))
                {
                    return Some(Err(Error::Operation {
                        operation: "reload",
                        reason: format!(
                            "replacement worker {id} failed to start, so the old workers keep serving: {why}"
                        ),
                    }));
                }
                fresh
                    .iter()
                    .all(|id| {
                        state
                            .workers
                            .iter()
                            .find(|w| w.id == *id)
                            .is_some_and(|w| w.state != WorkerState::Starting)
                    })
                    .then_some(Ok(()))
            })
            .await?;
            let mut stopping = Vec::new();
            {
                let mut state = self.lock();
                for &(old_id, _) in batch {
                    if let Some(i) = state
                        .workers
                        .iter()
                        .position(|w| w.id == old_id && w.stop.is_none())
                    {
                        stopping.push(state.retire(
                            i,
                            RecycleCause::Reload,
                            self.config.drain_timeout,
                        ));
                    }
                }
            }
            for (id, pid) in stopping {
                self.emit_state(id, pid, WorkerState::Stopping);
            }
            self.settle("reload", |state| {
                (!batch
                    .iter()
                    .any(|(id, _)| state.workers.iter().any(|w| w.id == *id)))
                .then_some(())
            })
            .await?;
            self.running_or("reload")?;
        }
        Ok(())
    }

    /// Stops every worker gracefully and holds (or refuses) requests; see
    /// `Supervisor::drain`.
    pub(crate) async fn drain(self: &Arc<Self>) -> Result<(), Error> {
        let _serial = self.operations.lock().await;
        self.running_or("drain")?;
        let mut stopping = Vec::new();
        {
            let mut state = self.lock();
            state.phase = Phase::Drained;
            for i in 0..state.workers.len() {
                if state.workers[i].stop.is_none() {
                    stopping.push(state.retire(i, RecycleCause::Drain, self.config.drain_timeout));
                }
            }
        }
        for (id, pid) in stopping {
            self.emit_state(id, pid, WorkerState::Stopping);
        }
        self.notify();
        self.settle("drain", |state| state.workers.is_empty().then_some(()))
            .await
    }

    /// Starts workers again after a drain; see `Supervisor::resume`.
    pub(crate) async fn resume(self: &Arc<Self>) -> Result<(), Error> {
        let _serial = self.operations.lock().await;
        let target = {
            let mut state = self.lock();
            if state.phase != Phase::Drained {
                return Err(Error::Operation {
                    operation: "resume",
                    reason: format!("the pool is {}, not drained", phase_name(&state.phase)),
                });
            }
            state.phase = Phase::Running;
            state.target
        };
        for index in 0..target {
            crate::worker::launch(self, self.next_worker_id(), index as u32, false);
        }
        self.settle("resume", |state| {
            let active: Vec<&WorkerEntry> =
                state.workers.iter().filter(|w| w.stop.is_none()).collect();
            (active.len() >= state.target
                && active.iter().all(|w| w.state != WorkerState::Starting))
            .then_some(())
        })
        .await
    }
}

fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Running => "running",
        Phase::Drained => "drained",
        Phase::SoftKilling => "shutting down",
        Phase::Stopped => "stopped",
        Phase::Failed(_) => "failed",
    }
}
