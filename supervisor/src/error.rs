//! The supervisor's error type.

use std::path::PathBuf;
use std::time::Duration;

use drover_proto::codec::PayloadLimit;
use drover_proto::{ProtocolError, RemoteErrorKind, RequestId, ValueError};

use crate::event::WorkerExit;

/// Everything that can go wrong on the supervisor's side. Every variant
/// names what failed and to whom: the binary's path, the worker's pid, the
/// request's id, the limit that was hit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The worker binary cannot be used: missing, not a file, not
    /// executable.
    #[error("worker binary {path}: {problem}")]
    WorkerBinary {
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        problem: BinaryProblem,
    },
    /// A user or group given by name to the builder does not exist (or
    /// could not be looked up).
    #[error("{kind} {name:?}: {}", lookup.describe(*kind))]
    UnknownAccount {
        /// A user or a group.
        kind: crate::account::Kind,
        /// The name given.
        name: String,
        /// Why it could not be used.
        lookup: crate::account::Lookup,
    },
    /// The operating system refused to start the worker process.
    #[error("cannot start worker {path}: {source}")]
    Spawn {
        /// The configured path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A worker process started but did not complete the handshake.
    #[error("worker {path} (pid {pid}) failed its handshake: {reason}")]
    Handshake {
        /// The configured path.
        path: PathBuf,
        /// The worker's pid.
        pid: u32,
        /// What went wrong.
        reason: HandshakeFailure,
    },
    /// A signal handler could not be installed
    /// (`Supervisor::handle_signals`).
    #[error("cannot handle {signal}: {source}")]
    Signals {
        /// The signal's name.
        signal: &'static str,
        /// The operating system's (or tokio's) error.
        source: std::io::Error,
    },
    /// The pool is shutting down (soft kill, hard kill, or the last handle
    /// dropped): the request was refused and nothing was sent.
    #[error("the pool is shutting down; request refused")]
    ShuttingDown,
    /// The pool is drained and set to refuse requests until `resume()`.
    #[error("the pool is drained; request refused until it resumes")]
    Drained,
    /// A pool operation (resize, reload, drain, resume, a change of
    /// groups) could not run now, or did not complete; nothing it had not
    /// done yet was done.
    #[error("cannot {operation}: {reason}")]
    Operation {
        /// The operation asked for.
        operation: Operation,
        /// Why it could not run or complete.
        reason: OperationError,
    },
    /// The pool stopped for good.
    #[error("the pool has failed: {reason}")]
    PoolFailed {
        /// Why it stopped.
        reason: PoolFailure,
    },
    /// The pending queue is full; the request was refused and nothing was
    /// sent.
    #[error("queue full: {limit} requests are already waiting (max_queue = {limit})")]
    QueueFull {
        /// The queue's bound, `max_queue`.
        limit: usize,
    },
    /// The encoded payload does not fit in a frame; nothing was sent. Its
    /// text names the payload limit and the setting it comes from, as the
    /// worker's does: "payload of 70000 bytes exceeds the payload limit of
    /// 65472 bytes (max_frame_length 65536 less 64 bytes of message)".
    #[error("payload of {size} bytes exceeds {}; nothing was sent", PayloadLimit(*.limit))]
    PayloadTooLarge {
        /// The encoded payload's size.
        size: usize,
        /// The payload limit: the largest payload a frame carries,
        /// `max_frame_length` less the message around it
        /// ([`Supervisor::max_payload`](crate::Supervisor::max_payload)).
        limit: usize,
    },
    /// A value given to the supervisor (request payload, event payload,
    /// worker config) would not encode.
    #[error(transparent)]
    Encode(ValueError),
    /// An answer does not decode as the type asked for.
    #[error("answer to request {request_id} from worker pid {pid}: {source}")]
    Decode {
        /// The request answered.
        request_id: RequestId,
        /// The worker that answered.
        pid: u32,
        /// The decoder's error, naming the type asked for.
        source: ValueError,
    },
    /// The worker's handler failed the request (returned an error,
    /// panicked, called `fail`, or dropped the request unanswered).
    #[error("request {request_id} failed in worker pid {pid}: {message}")]
    Remote {
        /// The request that failed.
        request_id: RequestId,
        /// The worker that ran it.
        pid: u32,
        /// How it failed.
        kind: RemoteErrorKind,
        /// The worker's message.
        message: String,
    },
    /// The worker holding the request died before answering.
    #[error("request {request_id} lost: {exit}")]
    WorkerLost {
        /// The request lost.
        request_id: RequestId,
        /// How and why the worker ended.
        exit: Box<WorkerExit>,
    },
    /// A socket given to `RequestBuilder::socket` cannot be passed: its
    /// descriptor could not be taken (duplicated) from it.
    #[error("cannot pass the socket: {source}")]
    Socket {
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A request was given more sockets than one frame carries.
    #[error("a request carries at most {max} sockets")]
    TooManySockets {
        /// The most one request carries
        /// ([`MAX_FDS_PER_FRAME`](drover_proto::MAX_FDS_PER_FRAME)).
        max: usize,
    },
    /// The pool was given more sockets to share with its workers
    /// (`Builder::share_socket`) than it passes to a process.
    #[error("{given} sockets shared with every worker; at most {max} can be")]
    TooManySharedSockets {
        /// How many were given.
        given: usize,
        /// The most a pool shares.
        max: usize,
    },
    /// The request did not finish within its timeout. The worker was sent
    /// `Cancel`; if it does not finish within the kill-after grace it is
    /// killed and replaced.
    #[error("request {request_id} timed out after {after:?}")]
    Timeout {
        /// The request.
        request_id: RequestId,
        /// Its timeout.
        after: Duration,
    },
    /// No group of this name runs.
    #[error("no group named {name:?}")]
    NoSuchGroup {
        /// The name asked for.
        name: String,
    },
    /// No worker with this id is running.
    #[error("no worker with id {worker_id} is running")]
    NoSuchWorker {
        /// The id asked for.
        worker_id: u64,
    },
    /// The kernel (or the machine) cannot enforce a rule of the
    /// [`Sandbox`](crate::Sandbox); nothing was started. A best-effort
    /// sandbox runs without it instead, and reports it.
    #[error("sandbox refused: this machine cannot enforce {feature}; no worker was started (Sandbox::best_effort runs without it, reporting it)")]
    SandboxUnsupported {
        /// What is missing.
        feature: crate::sandbox::SandboxFeature,
    },
    /// The sandbox could not be prepared: a path to allow that does not
    /// exist, a cgroup that could not be made, a rule the kernel refused.
    #[error("cannot prepare the sandbox: {what} {}: {source}", path.display())]
    SandboxSetup {
        /// What was being prepared.
        what: &'static str,
        /// The path it concerns.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The supervisor was started outside a tokio runtime.
    #[error("drover needs a tokio runtime: start the supervisor from within one")]
    NoRuntime,
}

/// How a worker broke the protocol after its handshake. It is killed; its
/// exit reason ([`ExitReason::ProtocolViolation`](crate::ExitReason)) says
/// this in words.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Violation {
    /// It sent descriptors (`SCM_RIGHTS`), which workers never do.
    #[error("it sent descriptors, which workers never do")]
    Descriptors,
    /// Descriptors were lost on the way: it sent more than a frame may
    /// carry.
    #[error("{0}")]
    DescriptorsLost(drover_proto::fdio::DescriptorsLost),
    /// A frame that breaks the protocol (its size, its bytes, a stream's
    /// window or credit).
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// A `Hello` after its handshake.
    #[error("it sent a second Hello, after its handshake")]
    SecondHello,
    /// An answer to a request it was never given, or already answered.
    #[error(
        "it answered request {request_id}, which it was never given (or had already answered)"
    )]
    UnknownAnswer {
        /// The request it named.
        request_id: RequestId,
    },
}

impl From<crate::account::Unresolved> for Error {
    fn from(u: crate::account::Unresolved) -> Error {
        Error::UnknownAccount {
            kind: u.kind,
            name: u.name,
            lookup: u.lookup,
        }
    }
}

/// What is wrong with a worker binary ([`Error::WorkerBinary`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BinaryProblem {
    /// Nothing is at the path.
    #[error("does not exist")]
    Missing,
    /// Something is, but not a file.
    #[error("is not a file")]
    NotAFile,
    /// A file no one may execute.
    #[error("is not executable")]
    NotExecutable,
    /// Its metadata could not be read.
    #[error("cannot be read: {0}")]
    Unreadable(std::io::Error),
    /// A bare name, to be looked up in `PATH`, for a sandboxed pool:
    /// the sandbox needs the binary's path.
    #[error("a sandboxed worker must be named by a path (with a '/'), not looked up in PATH")]
    NotAPath,
}

/// A pool operation, as [`Error::Operation`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// [`Supervisor::resize`](crate::Supervisor::resize).
    Resize,
    /// [`Supervisor::reload`](crate::Supervisor::reload) and its variants.
    Reload,
    /// [`Supervisor::drain`](crate::Supervisor::drain).
    Drain,
    /// [`Supervisor::resume`](crate::Supervisor::resume).
    Resume,
    /// [`Groups::set_groups`](crate::Groups::set_groups).
    SetGroups,
    /// [`Supervisor::autoscale`](crate::Supervisor::autoscale).
    Autoscale,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Resize => "resize",
            Operation::Reload => "reload",
            Operation::Drain => "drain",
            Operation::Resume => "resume",
            Operation::SetGroups => "set groups",
            Operation::Autoscale => "autoscale",
        })
    }
}

/// Where a pool is in its life, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PoolPhase {
    /// Taking requests.
    Running,
    /// Drained: no worker runs until `resume()`.
    Drained,
    /// A soft kill is in progress.
    ShuttingDown,
    /// Stopped by a kill, or by dropping the last handle.
    Stopped,
    /// Stopped by itself ([`Error::PoolFailed`]).
    Failed,
}

impl std::fmt::Display for PoolPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolPhase::Running => "running",
            PoolPhase::Drained => "drained",
            PoolPhase::ShuttingDown => "shutting down",
            PoolPhase::Stopped => "stopped",
            PoolPhase::Failed => "failed",
        })
    }
}

/// Why a pool operation could not run, or did not complete
/// ([`Error::Operation`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    /// It needs a running pool.
    #[error("the pool is {phase}")]
    NotRunning {
        /// Where the pool is.
        phase: PoolPhase,
    },
    /// `resume()` needs a drained pool.
    #[error("the pool is {phase}, not drained")]
    NotDrained {
        /// Where the pool is.
        phase: PoolPhase,
    },
    /// `resize(0)`: a running pool needs a worker.
    #[error(
        "a running pool needs at least one worker (drain() stops them all and holds requests until resume())"
    )]
    NoWorkers,
    /// The pool did not reach the state the operation asked for in time.
    #[error("the pool did not settle within {within:?}")]
    DidNotSettle {
        /// How long it was given: the start timeout, the drain timeout
        /// and five seconds more.
        within: Duration,
    },
    /// A reload's replacement worker failed to start: the old workers
    /// keep serving.
    #[error(
        "replacement worker {worker_id} failed to start, so the old workers keep serving: {reason}"
    )]
    ReplacementFailed {
        /// The replacement's worker id.
        worker_id: u64,
        /// How it ended.
        reason: String,
    },
    /// Autoscaling bounds a pool cannot keep: a minimum of 0 (a running
    /// pool keeps a worker) or above the maximum.
    #[error("{}", if *min == 0 { "the minimum is 0: a running pool keeps at least one worker".to_owned() } else { format!("the minimum ({min}) is above the maximum ({max})") })]
    AutoscaleBounds {
        /// The minimum asked for.
        min: usize,
        /// The maximum asked for.
        max: usize,
    },
    /// A declaration of groups names one group twice.
    #[error("group {name:?} is declared twice")]
    DuplicateGroup {
        /// The name.
        name: String,
    },
}

/// Why a pool stopped for good ([`Error::PoolFailed`],
/// [`Event::PoolFailed`](crate::Event::PoolFailed)).
///
/// Serialized (serde) as an object whose `kind` names the variant, beside
/// its fields: `{"kind":"restart_budget_spent","max_restarts":5,
/// "window":{"secs":60,"nanos":0},"last":"worker pid 4711 ..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PoolFailure {
    /// Workers died faster than the restart budget allows
    /// ([`Builder::restarts`](crate::Builder::restarts)).
    #[error("restart budget spent: {max_restarts} restarts within {window:?}; last: {last}")]
    RestartBudgetSpent {
        /// The budget: this many restarts...
        max_restarts: usize,
        /// ...within this window.
        window: Duration,
        /// How the last worker ended (or why it could not start).
        last: String,
    },
    /// A worker of the initial set failed to start (the error
    /// `spawn()` returned said how).
    #[error("a worker failed to start")]
    StartFailed,
}

/// Why a worker failed its handshake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// It sent nothing (or not all of the handshake) within the start
    /// timeout.
    #[error("no handshake within the start timeout of {timeout:?}: is it a drover worker?")]
    Timeout {
        /// The start timeout.
        timeout: Duration,
    },
    /// It exited during the handshake.
    #[error(
        "exited during the handshake ({status}): is it a drover worker?{}",
        last_words(stderr)
    )]
    Exited {
        /// How it exited.
        status: crate::event::Termination,
        /// The last lines it wrote to its standard error (at most 20), as
        /// [`WorkerExit::stderr_tail`](crate::WorkerExit::stderr_tail): why
        /// it could not start, if it said.
        stderr: Vec<String>,
    },
    /// It broke the protocol during the handshake.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// What a worker that exited during its handshake last said, for its error.
fn last_words(stderr: &[String]) -> String {
    match stderr.last() {
        Some(line) => format!(" It said: {line}"),
        None => String::new(),
    }
}

/// Decodes a payload from worker `pid` as a `T`; errors name the type, the
/// worker and the request (nil for events and queries).
pub(crate) fn decode_from<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    request_id: RequestId,
    pid: u32,
) -> Result<T, Error> {
    drover_proto::decode_value(payload).map_err(|source| Error::Decode {
        request_id,
        pid,
        source,
    })
}
