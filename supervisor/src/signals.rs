//! Steering the pool with Unix signals, gunicorn's way:
//! [`Supervisor::handle_signals`].
//!
//! | signal | what the pool does |
//! |---|---|
//! | `SIGTERM`, `SIGINT` | soft kill: accepted work finishes, then every worker exits; a second one hard-kills |
//! | `SIGHUP` | rolling reload ([`Supervisor::reload`]): every worker replaced, a new binary picked up |
//! | `SIGTTIN` | one worker more ([`Supervisor::resize`]) |
//! | `SIGTTOU` | one worker fewer (never below one) |
//!
//! Reloads and resizes run one at a time, in the order their signals came
//! (at most [`QUEUED_ACTIONS`] wait; more are dropped with a warning), each
//! reading the pool's size when it starts, so three `SIGTTIN`s add three
//! workers. A `SIGTERM` cuts short the one running.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::supervisor::Supervisor;

/// How many reloads and resizes may wait behind the one running.
pub const QUEUED_ACTIONS: usize = 16;

/// How the pool was stopped by [`Signals`]: the future's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalStop {
    /// The first stopping signal's number (`SIGTERM` 15, `SIGINT` 2).
    pub signal: i32,
    /// Whether a second one came before the soft kill was over, and the
    /// pool was hard-killed.
    pub hard: bool,
}

/// The pool's signal handling, from [`Supervisor::handle_signals`]: a
/// future the application owns (await it, or spawn it).
///
/// It resolves once a `SIGTERM` or `SIGINT` has stopped the pool and every
/// worker is reaped; the application then exits. It holds a handle to the
/// pool, so the pool lives at least as long as it.
///
/// # Caveats
///
/// Once listened to, a signal keeps tokio's handler for the rest of the
/// process (tokio never restores the default): if this future is dropped,
/// `SIGTERM` and `SIGINT` no longer end the process, and `SIGHUP`,
/// `SIGTTIN`, `SIGTTOU` do nothing.
#[must_use = "signals are handled only while this future is polled"]
pub struct Signals {
    future: Pin<Box<dyn Future<Output = SignalStop> + Send>>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals").finish_non_exhaustive()
    }
}

impl Future for Signals {
    type Output = SignalStop;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SignalStop> {
        self.future.as_mut().poll(cx)
    }
}

/// What a signal asks, run one at a time.
#[derive(Debug, Clone, Copy)]
enum Action {
    Reload,
    Grow,
    Shrink,
}

/// The five signals, listened to from the call on.
struct Listeners {
    term: Signal,
    int: Signal,
    hup: Signal,
    ttin: Signal,
    ttou: Signal,
}

impl Supervisor {
    /// Handles `SIGTERM`, `SIGINT`, `SIGHUP`, `SIGTTIN` and `SIGTTOU` for
    /// this pool, with gunicorn's conventions:
    ///
    /// - `SIGTERM` / `SIGINT`: [`soft_kill`](Supervisor::soft_kill); a
    ///   second one during it: [`hard_kill`](Supervisor::hard_kill).
    /// - `SIGHUP`: [`reload`](Supervisor::reload).
    /// - `SIGTTIN` / `SIGTTOU`: [`resize`](Supervisor::resize) to one worker
    ///   more / fewer (never below one).
    ///
    /// Reloads and resizes run one at a time, in the order their signals
    /// came (at most [`QUEUED_ACTIONS`] wait; more are dropped with a
    /// warning), each reading the pool's size when it starts, so three
    /// `SIGTTIN`s a moment apart add three workers (the same signal sent
    /// twice at once may arrive once: that is Unix's). A `SIGTERM` cuts
    /// short the one running.
    ///
    /// The signals are listened to from this call on (a signal that comes
    /// before the future is first polled is not lost); they are acted on
    /// while the returned future is polled. Opt in: without this call the
    /// pool touches no signal.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(pool: drover_supervisor::Supervisor) -> Result<(), drover_supervisor::Error> {
    /// let stopped = pool.handle_signals()?.await;
    /// eprintln!("stopped by signal {}", stopped.signal);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Signals`] if a handler cannot be installed (outside a
    /// tokio runtime with its signal driver, for one).
    pub fn handle_signals(&self) -> Result<Signals, Error> {
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| Error::Signals {
                signal: name,
                source,
            })
        };
        let listeners = Listeners {
            term: listen(SignalKind::terminate(), "SIGTERM")?,
            int: listen(SignalKind::interrupt(), "SIGINT")?,
            hup: listen(SignalKind::hangup(), "SIGHUP")?,
            ttin: listen(SignalKind::from_raw(libc::SIGTTIN), "SIGTTIN")?,
            ttou: listen(SignalKind::from_raw(libc::SIGTTOU), "SIGTTOU")?,
        };
        Ok(Signals {
            future: Box::pin(run(self.clone(), listeners)),
        })
    }
}

async fn run(pool: Supervisor, mut signals: Listeners) -> SignalStop {
    let (tx, mut rx) = mpsc::channel::<Action>(QUEUED_ACTIONS);
    let executor = async {
        while let Some(action) = rx.recv().await {
            perform(&pool, action).await;
        }
    };
    tokio::pin!(executor);
    let queue = |action: Action, name: &str| {
        tracing::info!("{name}: {action:?} queued");
        if tx.try_send(action).is_err() {
            tracing::warn!(
                "{name} ignored: {QUEUED_ACTIONS} reloads and resizes already wait their turn"
            );
        }
    };
    let first = loop {
        tokio::select! {
            _ = signals.term.recv() => break libc::SIGTERM,
            _ = signals.int.recv() => break libc::SIGINT,
            _ = signals.hup.recv() => queue(Action::Reload, "SIGHUP"),
            _ = signals.ttin.recv() => queue(Action::Grow, "SIGTTIN"),
            _ = signals.ttou.recv() => queue(Action::Shrink, "SIGTTOU"),
            // Never done while `tx` lives (it lives in this function).
            _ = &mut executor => {}
        }
    };
    tracing::info!(
        signal = first,
        "stopping the pool gracefully (a second signal kills it)"
    );
    let soft = pool.soft_kill();
    tokio::pin!(soft);
    let hard = tokio::select! {
        _ = &mut soft => false,
        _ = signals.term.recv() => true,
        _ = signals.int.recv() => true,
    };
    if hard {
        tracing::warn!("second stopping signal: killing the pool");
        pool.hard_kill().await;
    }
    SignalStop {
        signal: first,
        hard,
    }
}

/// Runs one reload or resize, logging how it ended.
async fn perform(pool: &Supervisor, action: Action) {
    let result = match action {
        Action::Reload => pool.reload().await,
        Action::Grow => pool.resize(pool.shared().workers() + 1).await,
        Action::Shrink => {
            let n = pool.shared().workers();
            if n <= 1 {
                tracing::warn!("SIGTTOU ignored: the pool runs one worker, the fewest it can");
                return;
            }
            pool.resize(n - 1).await
        }
    };
    match result {
        Ok(()) => tracing::info!(?action, workers = pool.shared().workers(), "done"),
        Err(e) => tracing::error!(?action, "failed: {e}"),
    }
}
