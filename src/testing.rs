//! In-process pools, for unit tests.
//!
//! A test of code that uses a pool wants the pool's behaviour (requests,
//! typed answers, errors, timeouts, cancellation, events, byte streams,
//! queries, soft and hard kill) without building and starting worker
//! binaries. The pools made here run the same handler a worker binary
//! serves, each worker on a thread of the test process with a tokio
//! runtime of its own, behind the same [`Supervisor`] API, over the same
//! protocol and the same connection code as real workers.
//!
//! ```
//! use drover::worker::Request;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = drover::testing::pool(|req: Request| async move {
//!     let text: String = req.data()?;
//!     req.respond(&text.to_uppercase())
//! })
//! .workers(2)
//! .spawn()
//! .await?;
//! let answer = pool.enqueue("hello").await?;
//! assert_eq!(answer.data::<String>()?, "HELLO");
//! pool.soft_kill().await;
//! # Ok(()) }
//! ```
//!
//! # Limits, said plainly
//!
//! - **No isolation.** The workers share the test's process: a crash
//!   (an abort, a segfault) or a leak in a handler is the test's. A panic
//!   in a handler fails its request, as in a worker process; a panic that
//!   escapes the worker ends it as a crash (exit code 101), and it is
//!   replaced.
//! - **No process.** Workers report pid 0 and no resident memory, so
//!   memory-based routing and recycling (`max_rss`) have nothing to read;
//!   the settings that act on a process (limits, user and group,
//!   arguments, environment, working directory, output capture, passed
//!   sockets' isolation) do not apply. Killing a worker stops its runtime,
//!   which drops every task it started at its next `.await`; work inside
//!   `spawn_blocking` is left to finish on its own.
//! - **No signals.** In-process workers listen to no signal: SIGTERM and
//!   SIGINT keep their meaning for the test process.
//!
//! What a test of the isolation itself needs (a crash that takes a
//! process, a leak, a hang that only a kill ends) needs real worker
//! binaries.

use std::future::Future;

use drover_supervisor::{Builder, Supervisor, Task};
use drover_worker::{Handler, Request, Worker};

/// A pool builder whose workers serve requests with `handler` on threads
/// of this process; set it up as any [`Builder`] and `spawn()` it.
///
/// `handler` is what a worker binary would give `drover::worker::serve`:
/// each worker gets a clone.
pub fn pool<H>(handler: H) -> Builder
where
    H: Handler + Clone,
{
    pool_with(move |worker: Worker| {
        let handler = handler.clone();
        async move { worker.serve(handler).await }
    })
}

/// A pool builder whose workers run `main` on threads of this process:
/// `main` gets the connected [`Worker`], as a worker binary's `main` gets
/// it from [`Worker::connect`], and serves on it (after building
/// per-worker state, subscribing to events, hooking soft kill...). An
/// `Err` from it before it serves fails the worker's start, as a worker
/// binary's failed setup does.
pub fn pool_with<F, Fut>(main: F) -> Builder
where
    F: Fn(Worker) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), drover_worker::Error>> + Send + 'static,
{
    let main = std::sync::Arc::new(main);
    Supervisor::builder("in-process").in_process(move |socket| {
        let main = main.clone();
        async move {
            let result = match Worker::connect_over(socket).await {
                Ok(worker) => main(worker).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::error!("in-process worker: {e}");
            }
        }
    })
}

/// A pool builder whose workers answer requests of the [`Task`] `T` with
/// `handler` (what `drover::worker::serve_tasks` serves in a worker
/// binary), on threads of this process: call it with
/// [`Supervisor::call`] or through [`Supervisor::typed`].
pub fn tasks<T, H, Fut, E>(handler: H) -> Builder
where
    T: Task,
    H: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T::Output, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let handler = std::sync::Arc::new(handler);
    pool(move |req: Request| {
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
}
