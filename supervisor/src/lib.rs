//! The supervisor side of drover: a pool of long-lived worker processes.
//!
//! A [`Supervisor`] starts N copies of a worker binary (built with the
//! `drover-worker` SDK), sends each request to the worker under the least
//! pressure, and hands the answer back. Workers are separate processes: a
//! crash, a leak or a hang costs one worker, which is replaced, never the
//! application.
//!
//! Here the worker is a binary of its own, `upper-worker`, which cargo
//! builds beside the application (from `src/bin/upper-worker.rs`); the
//! `drover` crate's Quick start shows that layout and the one-binary one
//! (the application is its own worker).
//!
//! ```no_run
//! use drover_supervisor::Supervisor;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let worker = std::env::current_exe()?.with_file_name("upper-worker");
//!     let pool = Supervisor::builder(worker).workers(4).spawn().await?;
//!     let answer = pool.enqueue("hello").await?;
//!     assert_eq!(answer.data::<String>()?, "HELLO");
//!     pool.soft_kill().await;
//!     Ok(())
//! }
//! ```
//!
//! # Theory of operation
//!
//! - **Processes.** Each worker gets one `socketpair(AF_UNIX, SOCK_STREAM)`;
//!   its end becomes descriptor 3 in the child (named in `DROVER_FD`), every
//!   descriptor above it is made close-on-exec in the child (so nothing the
//!   application opened leaks in), the child leads a process group of its
//!   own (killed with it) and is given a parent-death signal. There is no
//!   socket path: nothing else can connect. It also gets two sealed memfds
//!   after the socket and any shared sockets (`DROVER_SHARED_MEMORY`), the
//!   arenas that carry payloads of 20 KiB or more
//!   ([`Builder::shared_memory`], `drover_proto::shm`).
//! - **Trust boundary.** Everything a worker sends is untrusted: decoding
//!   allocates nothing a frame does not hold (`drover_proto::bounded`),
//!   stream data past its window and credit never owed are protocol
//!   violations, and at most [`Builder::max_queued_bytes`] may wait to be
//!   written to one worker (routing keeps a worker's requests in flight
//!   under it). An answer in shared memory is copied out before anything
//!   reads it, and its descriptor is checked against the arena. A worker that breaks a rule is killed and
//!   replaced; a panic in any task that serves it (connection, writer,
//!   stream, output) ends as its death ([`ExitReason::TaskFailed`]), so no
//!   caller is left waiting.
//! - **Sandbox.** Opt in ([`Builder::sandbox`]): landlock paths, seccomp
//!   filters, network / PID / mount / user namespaces, a cgroup v2 per
//!   worker. What the kernel cannot enforce fails the start
//!   ([`Error::SandboxUnsupported`]) unless best effort was chosen; what
//!   the child applies is made before the fork (`sandbox/`), the child
//!   only makes system calls with it (`spawn.rs`).
//! - **Tasks.** One task per worker owns its `Child` and reads its socket,
//!   settling the answers of each read under one lock; a second writes to
//!   it what senders encoded into the connection's outbox
//!   (`drover_proto::Outbox`), a batch per system call. A memory sampler reads every worker's RSS from
//!   `/proc/<pid>/statm` (`/proc/<pid>/status` with arenas, whose pages it
//!   leaves out) at the health interval, off the request path.
//! - **State.** One mutex guards the pool, `PoolState`: workers, the
//!   bounded queue, the restart budget, with fields private to the `pool`
//!   module (everything else goes through its methods; metrics read a
//!   count made under the lock, `metrics::Gauges`). Every transition is a
//!   method of it that wakes nobody: it queues frames on the workers'
//!   outboxes in the order it decides them, and records everything else
//!   (writers to wake, kills, callers' answers, events, workers to
//!   launch) as `pool::Effects`, carried out once the lock is released.
//!   So the transitions are tested without processes (`pool/tests.rs`).
//!   No lock is held across an `.await`. A request is routed inside
//!   `enqueue` itself, or by the connection task whose worker just freed
//!   a slot: no central task sits on the request path (an owner task
//!   would cost every request two hand-offs between threads).
//! - **Lifecycle.** A worker's life is one enum, `lifecycle::Life`
//!   (starting, ready, busy, stopping with the pool's `StopOrder`), with
//!   every transition a method of it; whether a worker takes work is
//!   decided there once, and its exit reason, when the pool ended it, is
//!   derived from the order in one place. [`WorkerState`] is the view of
//!   it that `health()`, events and metrics report.
//! - **Routing.** See [`Routing`]: by default the ready worker with the
//!   fewest requests in flight, then the lowest RSS, ties in turn.
//! - **Deaths.** A worker that exits unasked, closes its socket, breaks
//!   the protocol, fails a health-check ping or holds a timed-out request
//!   past the kill-after grace is killed if need be, reaped, its requests
//!   are retried (if they have retries left) or fail with
//!   [`Error::WorkerLost`] naming the pid and how it ended, and it is
//!   replaced while the restart budget holds.
//! - **Streams and sockets.** A request may carry a byte stream (and an
//!   answer may bring one back), multiplexed on the worker's connection as
//!   stream frames (`drover_proto::StreamFrame`) under credit-based flow
//!   control; and open sockets, passed as `SCM_RIGHTS` with the request's
//!   frame.
//! - **Operations.** Recycling, resizing, rolling reloads, drains and
//!   removed groups all retire a worker one way: route nothing new to it,
//!   `SoftKill`, kill after the drain timeout. A memory sample (every
//!   health interval) also checks recycling and refreshes the metrics.
//! - **Stopping.** [`Supervisor::soft_kill`] lets accepted work finish;
//!   [`Supervisor::hard_kill`] does not; dropping the last handle kills.
//!   Every path ends with every child reaped.
//!
//! # Layout
//!
//! - `supervisor.rs`: [`Supervisor`], the public handle, and
//!   [`Builder::start`] / [`Builder::spawn`], which make one.
//! - `request.rs`: one request on its way: [`RequestBuilder`], the
//!   [`SendFuture`] waiting for its answer (hand-written, small), and the
//!   sockets it may carry ([`Passable`]).
//! - `builder.rs`: [`Builder`], every setting and its default.
//! - `pool/`: the shared state and every change to it. `state.rs`:
//!   `PoolState` (fields private to `pool/`), routing, the transitions that
//!   are its methods; `choices.rs`: the choices operations make under the
//!   lock, and the gauges' count; `effects.rs`: `Effects`, what a
//!   transition leaves to do after the lock; `shared.rs`: `Shared`, the
//!   lock, and `apply`, which carries the effects out; `tests.rs`: the
//!   state machine without processes.
//! - `lifecycle.rs`: a worker's lifecycle (`Life`), the pool's orders to
//!   stop it (`StopOrder`) and every transition; the `Kill` token that
//!   reaches its connection task.
//! - `worker.rs`: the per-worker task (spawn, handshake, connection, reap),
//!   which opens its connection with proto's `Opening<SupervisorEnd>`, the
//!   type the worker SDK opens its end with too.
//! - `process.rs`: what a worker runs as (`Process`): a child process, or
//!   a thread of this one for `drover::testing`'s in-process pools.
//! - `spawn.rs`: starting a process (the crate's only `unsafe`, in the
//!   child between fork and exec).
//! - `routing.rs`: [`Routing`] and the choice of a worker.
//! - `health.rs`: [`WorkerState`], [`WorkerHealth`], memory readings.
//! - `operate.rs`: recycling, resize, reload, drain and resume (their
//!   choices under the lock are `PoolState` methods, in
//!   `pool/choices.rs`).
//! - `status.rs`: [`PoolStatus`], the snapshot `status()` returns (its
//!   counters are kept by `pool/observe.rs`).
//! - `autoscale.rs`: [`Supervisor::autoscale`], dynamic sizing between a
//!   minimum and a maximum, steering the pool from outside through
//!   `status()` and `resize()`.
//! - `signals.rs`: [`Supervisor::handle_signals`], gunicorn's signals.
//! - `groups.rs`: [`Groups`], several named pools declared as a whole.
//! - `batch.rs`: [`Batch`], many jobs through the pool, one report.
//! - `output.rs`: draining workers' stdout and stderr.
//! - `query.rs`: [`Query`], the questions workers ask the supervisor.
//! - `event.rs`: [`Event`], [`WorkerExit`], [`ExitReason`].
//! - `metrics.rs`: the series reported through the `metrics` facade
//!   (requests by outcome, latency, queue depth, workers by state, RSS,
//!   exits by reason, restarts).
//! - `response.rs`: [`Response`]. `error.rs`: [`Error`].
//! - `typed.rs`: [`Pool`] and [`Supervisor::call`], requests typed by their
//!   [`Task`].
//! - `service.rs` (feature `tower`): `PoolService`, the pool as a
//!   `tower::Service`.
//! - `account.rs`: [`Account`], users and groups by id or name.
//! - `sandbox/`: [`Sandbox`], landlock, seccomp, namespaces and cgroups
//!   for untrusted work: checked against the kernel when the pool starts,
//!   prepared per worker before `fork`, applied by `spawn.rs` in the
//!   child.
//!
//! Dependencies between these files run one way, but for these pairs,
//! each two halves of one concern:
//! - `pool/` and `worker.rs`: a worker's task reports to the pool, and the
//!   one place that carries out a `Launch` effect, `Shared::apply`, starts
//!   that task;
//! - `pool/` and `operate.rs`: two halves of `Shared`'s methods (`apply`
//!   runs `maintain` when an effect asks);
//! - `supervisor.rs` with `batch.rs` and `request.rs`: a batch and a
//!   request borrow the handle that makes them;
//! - `error.rs` and `event.rs`: an error carries the exit that caused it
//!   (`Error::WorkerLost`), an event decodes its payload into the error
//!   type and names a `PoolFailure`;
//! - `pool/state.rs` and `pool/observe.rs`: the state holds the counters
//!   operators read, and `observe.rs` makes the snapshot of the state;
//! - `spawn.rs` and `sandbox/`: the sandbox is prepared in the parent by
//!   `sandbox/` and applied between fork and exec by `spawn.rs`, which
//!   also holds the kernel probes `sandbox/` asks (raw system calls: the
//!   `unsafe` stays in `spawn.rs`).

mod account;
mod autoscale;
mod batch;
mod builder;
mod error;
mod event;
mod groups;
mod health;
mod lifecycle;
mod metrics;
mod operate;
mod output;
mod pool;
mod process;
mod query;
mod reply;
mod request;
mod request_id;
mod response;
mod routing;
mod sandbox;
#[cfg(feature = "tower")]
mod service;
mod signals;
mod spawn;
mod status;
mod supervisor;
mod typed;
mod worker;

pub use account::{Account, Kind as AccountKind, Lookup as AccountLookup};
pub use autoscale::{Autoscale, Autoscaling};
pub use batch::{Batch, BatchReport};
pub use builder::{Builder, DEFAULT_SHARED_MEMORY};
pub use drover_proto::{RemoteErrorKind, RequestId, Task};
pub use error::{
    BinaryProblem, Error, HandshakeFailure, Operation, OperationError, PoolFailure, PoolPhase,
};
pub use event::{CustomEvent, Event, Events, ExitReason, RecycleCause, Termination, WorkerExit};
pub use groups::{GroupSpec, Groups, GroupsDiff};
pub use health::{WorkerHealth, WorkerState};
pub use query::Query;
pub use request::{Passable, RequestBuilder, SendFuture};
pub use response::{ByteStream, Response};
pub use routing::Routing;
pub use sandbox::{
    Cgroup, Sandbox, SandboxFeature, SyscallPreset, Syscalls, Violation, SYSTEM_LIBRARY_PATHS,
};
#[cfg(feature = "tower")]
pub use service::{PoolService, ServiceFuture};
pub use signals::{SignalStop, Signals, QUEUED_ACTIONS};
pub use status::{PoolStatus, WorkerStatus};
pub use supervisor::Supervisor;
pub use typed::Pool;
