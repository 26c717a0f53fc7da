//! Dynamic sizing: a pool between a minimum and a maximum of workers that
//! starts workers while requests wait and retires those idle for a while
//! (PHP-FPM's `pm = dynamic`, piscina's `minThreads` / `maxThreads` /
//! `idleTimeout`): [`Supervisor::autoscale`].
//!
//! It steers the pool from outside, as a process manager would: it reads
//! [`Supervisor::status`] at each interval and calls
//! [`Supervisor::resize`], so growing and shrinking are the pool's own
//! resize (a retired worker finishes what it holds, within the drain
//! timeout), serialised with every other operation. The pool's state
//! machine knows nothing of it.
//!
//! At each check, in order:
//!
//! 1. outside `[min, max]` (a manual resize, `SIGTTIN`): back to the
//!    nearest bound;
//! 2. requests waiting in the queue: one worker more per waiting request,
//!    up to `max` (the resize returns once they are ready, and the next
//!    check looks again);
//! 3. otherwise, workers that have held no request and answered none for
//!    `idle_timeout`: that many fewer, down to `min`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::supervisor::Supervisor;

/// The bounds and pace of dynamic sizing, for [`Supervisor::autoscale`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use drover_supervisor::Autoscale;
///
/// # async fn run(pool: drover_supervisor::Supervisor) -> Result<(), drover_supervisor::Error> {
/// let scaling = pool.autoscale(Autoscale::new(2, 16).idle_timeout(Duration::from_secs(30)))?;
/// tokio::spawn(scaling);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoscale {
    min: usize,
    max: usize,
    idle_timeout: Duration,
    interval: Duration,
}

impl Autoscale {
    /// Between `min` and `max` workers; idle ones retire after 10 s; the
    /// pool is looked at every 100 ms.
    pub fn new(min: usize, max: usize) -> Autoscale {
        Autoscale {
            min,
            max,
            idle_timeout: Duration::from_secs(10),
            interval: Duration::from_millis(100),
        }
    }

    /// How long a worker may be idle (nothing held, nothing answered)
    /// before it is retired, while the pool has more than `min`.
    pub fn idle_timeout(mut self, timeout: Duration) -> Autoscale {
        self.idle_timeout = timeout;
        self
    }

    /// How often the pool is looked at (at least every millisecond).
    pub fn interval(mut self, every: Duration) -> Autoscale {
        self.interval = every.max(Duration::from_millis(1));
        self
    }

    /// The fewest workers.
    pub fn min(&self) -> usize {
        self.min
    }

    /// The most workers.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Dynamic sizing running, from [`Supervisor::autoscale`]: a future the
/// application owns (spawn it). It resolves once the pool stops (a soft
/// or hard kill, or its failure); dropping it ends the sizing, leaving
/// the pool at the size it had.
#[must_use = "the pool is sized only while this future is polled"]
pub struct Autoscaling {
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Autoscaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoscaling").finish_non_exhaustive()
    }
}

impl Future for Autoscaling {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.future.as_mut().poll(cx)
    }
}

impl Supervisor {
    /// Sizes the pool between `policy`'s minimum and maximum while the
    /// returned future runs: workers start while requests wait, and those
    /// idle past the idle timeout retire (gracefully, as
    /// [`resize`](Supervisor::resize) retires them). See
    /// [`Autoscale`] for the bounds.
    ///
    /// A manual resize (or `SIGTTIN` / `SIGTTOU`) outside the bounds is
    /// brought back within them at the next check; within them, it stands
    /// until load moves it.
    ///
    /// # Errors
    ///
    /// [`Error::Operation`] if the minimum is 0 (a running pool keeps a
    /// worker) or above the maximum.
    pub fn autoscale(&self, policy: Autoscale) -> Result<Autoscaling, Error> {
        if policy.min == 0 || policy.min > policy.max {
            return Err(Error::Operation {
                operation: crate::error::Operation::Autoscale,
                reason: crate::error::OperationError::AutoscaleBounds {
                    min: policy.min,
                    max: policy.max,
                },
            });
        }
        Ok(Autoscaling {
            future: Box::pin(run(self.clone(), policy)),
        })
    }
}

/// What the sizer remembers of a worker between two checks.
#[derive(Debug, Clone, Copy)]
struct Seen {
    served: u64,
    idle_since: Option<Instant>,
}

async fn run(pool: Supervisor, policy: Autoscale) {
    let mut ticker = tokio::time::interval(policy.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: HashMap<u64, Seen> = HashMap::new();
    loop {
        ticker.tick().await;
        let status = pool.status();
        match status.phase.as_str() {
            "running" => {}
            // Resumed later, perhaps: keep watching.
            "drained" => continue,
            _ => return,
        }
        let now = Instant::now();
        let target = status.target_workers;
        // Which workers have been idle, and since when.
        let mut long_idle = 0;
        let mut next: HashMap<u64, Seen> = HashMap::with_capacity(status.workers.len());
        for w in &status.workers {
            let before = seen.get(&w.worker_id);
            let idle = w.in_flight == 0 && before.is_none_or(|b| b.served == w.served);
            let idle_since = match (idle, before.and_then(|b| b.idle_since)) {
                (false, _) => None,
                (true, Some(since)) => Some(since),
                (true, None) => Some(now),
            };
            if idle_since.is_some_and(|since| now.duration_since(since) >= policy.idle_timeout) {
                long_idle += 1;
            }
            next.insert(
                w.worker_id,
                Seen {
                    served: w.served,
                    idle_since,
                },
            );
        }
        seen = next;
        let wanted = if target < policy.min {
            policy.min
        } else if target > policy.max {
            policy.max
        } else if status.queued > 0 {
            (target + status.queued).min(policy.max)
        } else if long_idle > 0 {
            target.saturating_sub(long_idle).max(policy.min)
        } else {
            target
        };
        if wanted == target {
            continue;
        }
        tracing::debug!(
            from = target,
            to = wanted,
            queued = status.queued,
            long_idle,
            "autoscale: resizing"
        );
        if let Err(e) = pool.resize(wanted).await {
            // Stopping, drained meanwhile, or slow to settle: look again.
            tracing::debug!("autoscale: resize to {wanted}: {e}");
        }
        if wanted < target {
            // Those that stay start their idle time afresh.
            seen.clear();
        }
    }
}
