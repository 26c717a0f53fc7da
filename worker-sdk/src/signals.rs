//! The signals that tell a worker to stop from outside the pool.

use tokio::signal::unix::{Signal, SignalKind};

/// SIGTERM (a service manager stopping the unit) and SIGINT (a terminal's
/// Ctrl-C), listened to from `Worker::connect` on.
///
/// Listening replaces their default action (ending the process at once)
/// for the rest of the process's life; `serve` turns the first one into a
/// drain, later ones are absorbed.
#[derive(Debug)]
pub(crate) struct StopSignals {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl StopSignals {
    /// Starts listening. A signal that cannot be listened to keeps its
    /// default action (with a warning).
    pub(crate) fn listen() -> StopSignals {
        let listen = |kind: SignalKind, name: &str| match tokio::signal::unix::signal(kind) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("cannot listen for {name} ({e}); it will end this worker at once");
                None
            }
        };
        StopSignals {
            term: listen(SignalKind::terminate(), "SIGTERM"),
            int: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Listens to nothing: no signal ever comes.
    pub(crate) fn none() -> StopSignals {
        StopSignals {
            term: None,
            int: None,
        }
    }

    /// The number of the next signal to arrive (one that arrived since
    /// `listen` counts).
    ///
    /// Cancel safe: a signal is never lost by dropping this future.
    pub(crate) async fn next(&mut self) -> i32 {
        async fn on(signal: &mut Option<Signal>) -> Option<()> {
            match signal {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            Some(()) = on(&mut self.term) => SignalKind::terminate().as_raw_value(),
            Some(()) = on(&mut self.int) => SignalKind::interrupt().as_raw_value(),
            // The runtime is shutting down: no signal will come.
            else => std::future::pending().await,
        }
    }
}
