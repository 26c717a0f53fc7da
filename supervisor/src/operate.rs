//! Operating a running pool: recycling, resizing, rolling reload, drain and
//! resume.
//!
//! These are the async halves (serialised, waiting for the pool to
//! settle); the choices they make under the lock (which workers retire,
//! which slots fill, when an operation is over) are `PoolState` methods in
//! `pool.rs`. All of them take workers out of service the same way,
//! `Life::retire` (`lifecycle.rs`): the worker is routed nothing new, told
//! to finish what it holds and exit (`SoftKill`), and killed if it is still
//! there after the drain timeout. Its exit is a requested one, never
//! counted as a crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::builder::Config;
use crate::error::{Error, Operation, OperationError};
use crate::event::RecycleCause;
use crate::pool::{Phase, PoolState, Shared};

impl Shared {
    /// Kills retiring workers past their drain deadline and recycles the
    /// workers that are due, within the recycling cap. Runs at every
    /// memory sample and whenever a worker answers, starts or ends.
    pub(crate) fn maintain(self: &Arc<Self>) {
        let now = Instant::now();
        self.change(|state, fx| {
            state.kill_overdue(now, fx);
            while state.recycle_next(&self.config, now, fx) {}
        });
    }

    fn running_or(&self, operation: Operation) -> Result<(), Error> {
        let state = self.lock();
        match state.phase() {
            Phase::Running => Ok(()),
            other => Err(Error::Operation {
                operation,
                reason: OperationError::NotRunning {
                    phase: other.public(),
                },
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
        operation: Operation,
        mut done: impl FnMut(&mut PoolState) -> Option<()>,
    ) -> Result<(), Error> {
        self.settle_or_fail(operation, |state| done(state).map(Ok))
            .await
    }

    /// Waits until `done` says the operation is over, well or not, within
    /// the operation limit. A pool that stops meanwhile (a soft or hard
    /// kill, or its own failure) ends the wait at once with
    /// `NotRunning`: nothing the operation waits for can happen any more.
    async fn settle_or_fail(
        &self,
        operation: Operation,
        mut done: impl FnMut(&mut PoolState) -> Option<Result<(), Error>>,
    ) -> Result<(), Error> {
        let limit = self.operation_limit();
        let settled = move |state: &mut PoolState| {
            done(state).or_else(|| match state.phase() {
                Phase::Running | Phase::Drained => None,
                stopping => Some(Err(Error::Operation {
                    operation,
                    reason: OperationError::NotRunning {
                        phase: stopping.public(),
                    },
                })),
            })
        };
        tokio::time::timeout(limit, self.wait_until(settled))
            .await
            .unwrap_or(Err(Error::Operation {
                operation,
                reason: OperationError::DidNotSettle { within: limit },
            }))
    }

    /// Grows or shrinks the pool to `n` workers; see `Supervisor::resize`.
    pub(crate) async fn resize(self: &Arc<Self>, n: usize) -> Result<(), Error> {
        let _serial = self.operations.lock().await;
        self.running_or(Operation::Resize)?;
        if n == 0 {
            // A running pool with no worker would hold requests with none
            // to take them; `drain` is the way to stop every worker.
            return Err(Error::Operation {
                operation: Operation::Resize,
                reason: OperationError::NoWorkers,
            });
        }
        self.change(|state, fx| state.resize(n, self.config.drain_timeout, fx));
        self.settle(Operation::Resize, |state| state.resized_to(n).then_some(()))
            .await
    }

    /// Replaces every worker, a few at a time; see `Supervisor::reload`.
    pub(crate) async fn reload(self: &Arc<Self>, spec: Option<Config>) -> Result<(), Error> {
        let _serial = self.operations.lock().await;
        self.running_or(Operation::Reload)?;
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
        let old = self.lock().active_workers();
        for batch in old.chunks(self.config.max_recycling) {
            // Replacements first; the old workers keep serving meanwhile.
            let fresh: Vec<u64> = self.change(|state, fx| {
                batch
                    .iter()
                    .map(|&(_, index)| state.launch(index, false, fx))
                    .collect()
            });
            self.settle_or_fail(Operation::Reload, |state| {
                // A replacement that cannot start ends the reload at once,
                // before any old worker retires.
                if let Some((id, why)) = fresh
                    .iter()
                    .find_map(|&id| state.start_failure(id).map(|why| (id, why)))
                {
                    return Some(Err(Error::Operation {
                        operation: Operation::Reload,
                        reason: OperationError::ReplacementFailed {
                            worker_id: id,
                            reason: why.to_owned(),
                        },
                    }));
                }
                fresh
                    .iter()
                    .all(|&id| state.has_started(id))
                    .then_some(Ok(()))
            })
            .await?;
            self.change(|state, fx| {
                for &(old_id, _) in batch {
                    state.retire_worker(
                        old_id,
                        RecycleCause::Reload,
                        self.config.drain_timeout,
                        fx,
                    );
                }
            });
            self.settle(Operation::Reload, |state| {
                (!batch.iter().any(|&(id, _)| state.has_worker(id))).then_some(())
            })
            .await?;
            self.running_or(Operation::Reload)?;
        }
        Ok(())
    }

    /// Stops every worker gracefully and holds (or refuses) requests; see
    /// `Supervisor::drain`.
    pub(crate) async fn drain(self: &Arc<Self>) -> Result<(), Error> {
        let _serial = self.operations.lock().await;
        self.running_or(Operation::Drain)?;
        self.change(|state, fx| state.drain(self.config.drain_timeout, fx));
        self.settle(Operation::Drain, |state| state.no_workers().then_some(()))
            .await
    }

    /// Starts workers again after a drain; see `Supervisor::resume`.
    pub(crate) async fn resume(self: &Arc<Self>) -> Result<(), Error> {
        let _serial = self.operations.lock().await;
        self.change(|state, fx| {
            if state.resume(fx) {
                Ok(())
            } else {
                Err(Error::Operation {
                    operation: Operation::Resume,
                    reason: OperationError::NotDrained {
                        phase: state.phase().public(),
                    },
                })
            }
        })?;
        self.settle(Operation::Resume, |state| {
            state.back_to_target().then_some(())
        })
        .await
    }
}
