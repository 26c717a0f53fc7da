//! The worker side of drover: what a worker binary links.
//!
//! A drover worker is an ordinary program started by a supervisor
//! (`drover::Supervisor`). It finds its end of a Unix socket pair in an
//! inherited descriptor, says `Hello`, receives its id and the pool's
//! configuration, says `Ready`, and then answers requests until it is told
//! to stop or the supervisor goes away.
//!
//! ```no_run
//! use drover_worker::Request;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), drover_worker::Error> {
//!     drover_worker::serve(|req: Request| async move {
//!         let text: String = req.data()?;
//!         req.respond(&text.to_uppercase())
//!     })
//!     .await
//! }
//! ```
//!
//! # Theory of operation
//!
//! - [`Worker::connect`] takes the inherited socket (named by the
//!   `DROVER_FD` variable), checks that the parent is still the supervisor
//!   that started it, and runs the handshake over proto's connection type,
//!   the one the supervisor opens too (`Opening::<WorkerEnd>::connect`;
//!   the supervisor runs the other half, `Opening::<SupervisorEnd>::accept`).
//! - One task writes frames: everything the worker says (answers, events,
//!   `Busy`/`Ready`, `Pong`) is queued to it, so any task can answer.
//! - [`Worker::serve`] reads frames: each request runs in a task of its
//!   own; pings are answered by the reader itself, never behind a handler;
//!   events go to [`Worker::events`] subscribers; `Cancel` fires the
//!   request's [`Request::cancelled`]. On a current-thread runtime a
//!   handler is first polled in place and becomes a task only if it waits.
//! - Byte streams ([`Request::stream`], [`Request::respond_with_stream`])
//!   share the connection under credit-based flow control; sockets passed
//!   with a request arrive as `SCM_RIGHTS` and are taken with
//!   [`Request::socket`].
//! - A soft kill runs the [`Worker::on_soft_kill`] hook, then `serve`
//!   returns once every request is answered and the worker is not busy. A
//!   hard kill runs [`Worker::on_hard_kill`] and returns at once. End of
//!   file on the socket returns [`Error::Disconnected`]: the supervisor is
//!   gone and the worker must exit (it is also sent `SIGKILL` by the kernel
//!   when the supervisor dies).
//! - SIGTERM and SIGINT are a soft kill from outside the pool (below).
//!
//! # Signals
//!
//! From [`Worker::connect`] on, SIGTERM and SIGINT no longer end the
//! process at once. [`Worker::serve`] treats the first one as a soft kill
//! that came from outside the pool (a service manager stopping the unit,
//! a terminal's Ctrl-C): it tells the supervisor (`Stopping`: route
//! nothing more here; the exit is the signal's doing, not a crash), finishes
//! what it holds, runs the soft-kill hook and returns `Ok(())`. A second
//! signal changes nothing; `SIGKILL` forces an end. A signal that comes
//! before `serve` (during setup) is held until `serve` starts. Each worker
//! runs in a process group of its own, so a terminal's Ctrl-C reaches the
//! supervisor, not its workers: the supervisor then stops them in order.
//!
//! # Layout
//!
//! One concern per file; the imports run one way, from the public handle
//! down to the pieces of state, with no circle:
//!
//! ```text
//! worker.rs ─> serve_loop.rs ─> request.rs, socket.rs, handler.rs
//!     │             │                  │
//!     └─────────────┴─────> shared.rs <┘
//!                              │
//!                              └─> registry.rs, drain.rs, queries.rs,
//!                                  events.rs, signals.rs
//! ```
//!
//! - `worker.rs`: [`Worker`], the public handle: connecting (proto's
//!   handshake, then the writer task) and the primitives (`ready`, `busy`,
//!   `emit`, `ask`, the hooks, ...).
//! - `serve_loop.rs`: the serve loop: reads frames, dispatches each message,
//!   starts each request's handler (polled in place first on a
//!   current-thread runtime), and on the way out ends what waits on the
//!   connection and flushes the last answers.
//! - `drain.rs`: stopping: the busy flag, the hooks, what a soft kill waits
//!   for (the requests in flight, answer streams still being sent and the
//!   soft-kill hook) and the serve loop's own drain state; the first stop
//!   signal and the supervisor's `SoftKill` both start a drain here.
//! - `shared.rs`: the state every handle shares (`Arc<Shared>`): the
//!   outbox, the welcome, the worker's `TaskTracker`, and one field per
//!   concern below; it combines them where one act touches several (an
//!   answer is queued, leaves the registry, may wake a drain).
//! - `registry.rs`: the requests in flight and the rules by which each is
//!   answered exactly once (by the handler, its failure, or the drop of
//!   an unanswered request); [`RequestInfo`].
//! - `request.rs`: [`Request`], the handler's face of a request.
//! - `queries.rs`: questions asked with [`Worker::ask`], waiting for their
//!   answer.
//! - `events.rs`: [`Event`] and [`Events`], the supervisor's events.
//! - `signals.rs`: SIGTERM and SIGINT, listened to from `connect` on.
//! - `handler.rs`: the [`Handler`] trait.
//! - `socket.rs`: sockets passed with requests ([`PassedSocket`]).
//! - `fd.rs`: claiming the inherited descriptor (the crate's only `unsafe`).
//! - `error.rs`: [`Error`].
//!
//! Every task the worker starts (the writer, a handler that waits, an
//! answer stream, the soft-kill hook) runs on the worker's `TaskTracker`;
//! answer streams and the hook are also held by the drain's, which a soft
//! kill waits on.

mod answer_buffer;
mod drain;
mod error;
mod events;
mod fd;
mod handler;
mod queries;
mod registry;
mod request;
mod serve_loop;
mod shared;
mod signals;
mod socket;
mod worker;

/// A byte stream that came with a request: an `AsyncRead`.
pub use answer_buffer::AnswerBuffer;
pub use drover_proto::IncomingStream as ByteStream;
pub use drover_proto::{RequestId, Task};
pub use error::{Error, NoSupervisor};
pub use events::{Event, Events};
pub use handler::Handler;
pub use registry::RequestInfo;
pub use request::Request;
pub use socket::{FromPassedFd, PassedFd, PassedSocket};
pub use worker::Worker;

/// Runs a whole worker: connect, handshake, serve requests with `handler`
/// until the supervisor says to stop.
///
/// Shorthand for `Worker::connect().await?.serve(handler).await`; use
/// [`Worker`] directly to build per-worker state first, to emit events or
/// to subscribe to the supervisor's.
///
/// # Errors
///
/// As [`Worker::connect`] and [`Worker::serve`].
pub async fn serve<H: Handler>(handler: H) -> Result<(), Error> {
    Worker::connect().await?.serve(handler).await
}

/// Runs a whole worker that builds its state once, before it says ready,
/// and hands it to every request.
///
/// `setup` gets the connected [`Worker`] (its [`index`](Worker::index) and
/// the pool's [`config`](Worker::config)) and returns the state: a
/// database connection, a loaded model. The worker is not ready until
/// `setup` returns, so it gets no request before. A `setup` error is
/// returned before `Ready` is sent: the supervisor sees the worker fail its
/// start (a `main` returning the error prints it to standard error, whose
/// last lines the supervisor reports).
///
/// ```no_run
/// use std::sync::Arc;
/// use drover_worker::{Request, Worker};
///
/// struct Model { scale: f64 }
///
/// #[tokio::main]
/// async fn main() -> Result<(), drover_worker::Error> {
///     drover_worker::serve_with(
///         |worker: Worker| async move {
///             let scale: f64 = worker.config()?;
///             worker.status("model loaded")?;
///             Ok::<_, drover_worker::Error>(Model { scale })
///         },
///         |req: Request, model: Arc<Model>| async move {
///             let x: f64 = req.data()?;
///             req.respond(&(x * model.scale))
///         },
///     )
///     .await
/// }
/// ```
///
/// # Errors
///
/// [`Error::Setup`] when `setup` fails; otherwise as [`serve`].
pub async fn serve_with<S, I, IFut, IErr, H, Fut, E>(setup: I, handler: H) -> Result<(), Error>
where
    S: Send + Sync + 'static,
    I: FnOnce(Worker) -> IFut,
    IFut: std::future::Future<Output = Result<S, IErr>>,
    IErr: std::fmt::Display,
    H: Fn(Request, std::sync::Arc<S>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let worker = Worker::connect().await?;
    let state = match setup(worker.clone()).await {
        Ok(state) => std::sync::Arc::new(state),
        Err(e) => {
            return Err(Error::Setup {
                reason: e.to_string(),
            })
        }
    };
    worker
        .serve(move |req: Request| handler(req, state.clone()))
        .await
}

/// Runs a whole worker that serves one [`Task`] type: each request is
/// decoded as a `T`, `handler` computes its [`Task::Output`], and that is
/// the answer. A payload that is not a `T` is answered with an error
/// naming the type; a handler error is answered with its text.
///
/// ```no_run
/// use drover_worker::Task;
/// use serde::{Deserialize, Serialize};
///
/// // In a crate the application shares with this worker.
/// #[derive(Serialize, Deserialize)]
/// struct Upper(String);
///
/// impl Task for Upper {
///     type Output = String;
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), drover_worker::Error> {
///     drover_worker::serve_tasks(|Upper(text): Upper| async move {
///         Ok::<_, drover_worker::Error>(text.to_uppercase())
///     })
///     .await
/// }
/// ```
///
/// For a task that needs its [`Request`] (a stream, a passed socket,
/// `cancelled()`), serve it as usual and use [`Request::task`] and
/// [`Request::respond_task`].
///
/// # Errors
///
/// As [`serve`].
pub async fn serve_tasks<T, H, Fut, E>(handler: H) -> Result<(), Error>
where
    T: Task,
    H: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T::Output, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let handler = std::sync::Arc::new(handler);
    serve(move |req: Request| {
        let task = req.task::<T>();
        let handler = handler.clone();
        async move {
            match task {
                Ok(task) => match handler(task).await {
                    Ok(output) => req.respond_task::<T>(&output),
                    Err(e) => req.fail(e),
                },
                Err(e) => req.fail(e),
            }
        }
    })
    .await
}

/// Whether this process was started by a drover supervisor (the
/// `DROVER_FD` variable is set). Lets one binary act as both the
/// supervisor and its own worker.
pub fn is_worker_process() -> bool {
    std::env::var_os(drover_proto::ENV_FD).is_some()
}
