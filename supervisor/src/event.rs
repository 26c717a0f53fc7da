//! What the pool reports: events, and how and why a worker ended.

use std::fmt;

use bytes::Bytes;
use drover_proto::RequestId;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::error::Error;

/// Something that happened in the pool, from [`Supervisor::events`].
///
/// [`Supervisor::events`]: crate::Supervisor::events
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// Every worker of the initial set has said `Ready`.
    Online,
    /// A worker process was started (its handshake is still to come).
    WorkerSpawned {
        /// The worker's id (unique for the pool's life).
        worker_id: u64,
        /// The slot it fills.
        index: u32,
        /// Its pid.
        pid: u32,
    },
    /// A worker process ended and was reaped.
    WorkerExited(WorkerExit),
    /// A worker sent a custom event.
    Custom(CustomEvent),
    /// A worker changed state (ready, busy, stopping, stopped, crashed).
    WorkerState {
        /// The worker's id.
        worker_id: u64,
        /// Its pid.
        pid: u32,
        /// Its new state.
        state: crate::health::WorkerState,
    },
    /// A worker sent a status line (`Worker::status`).
    WorkerStatus {
        /// The worker's id.
        worker_id: u64,
        /// Its pid.
        pid: u32,
        /// The status text.
        message: String,
    },
    /// The pool stopped for good: restarts exhausted. Every pending request
    /// has failed.
    PoolFailed {
        /// Why.
        reason: String,
    },
}

/// A custom event sent by a worker with `Worker::emit`.
#[derive(Debug, Clone)]
pub struct CustomEvent {
    /// The event's name.
    pub name: String,
    /// The sending worker's id.
    pub worker_id: u64,
    /// The sending worker's pid.
    pub pid: u32,
    payload: Bytes,
}

impl CustomEvent {
    pub(crate) fn new(name: String, worker_id: u64, pid: u32, payload: Bytes) -> CustomEvent {
        CustomEvent {
            name,
            worker_id,
            pid,
            payload,
        }
    }

    /// Decodes the event's payload as a `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`]-free: [`Error::Decode`] naming `T` (its request id
    /// is nil) when the payload is not a `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        crate::error::decode_from(&self.payload, RequestId::nil(), self.pid)
    }
}

/// How a process ended, as the operating system reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Termination {
    pub(crate) fn from_status(status: std::process::ExitStatus) -> Termination {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Termination::Code(code),
            (None, Some(signal)) => Termination::Signal(signal),
            (None, None) => Termination::Code(-1),
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Code(code) => write!(f, "exit code {code}"),
            Termination::Signal(signal) => match signal_name(*signal) {
                Some(name) => write!(f, "killed by {name}"),
                None => write!(f, "killed by signal {signal}"),
            },
        }
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => return None,
    })
}

/// Why a worker ended: asked to, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// The pool asked it to stop with a soft kill, and it did.
    SoftKill,
    /// The soft kill's grace period ran out and the worker was killed.
    SoftKillTimeout,
    /// The pool asked it to stop with a hard kill (or the last handle was
    /// dropped).
    HardKill,
    /// It exited (or its connection closed) without being asked.
    Crashed,
    /// It broke the protocol (an oversize or undecodable frame, an
    /// unexpected message) and was killed.
    ProtocolViolation {
        /// What it did.
        detail: String,
    },
    /// It failed its handshake.
    Handshake {
        /// What went wrong.
        detail: String,
    },
    /// It held a request past its timeout and the kill-after grace, and
    /// was killed so the hung call could not hold it forever.
    TimedOut {
        /// The request it did not finish.
        request_id: RequestId,
    },
    /// It did not answer a health-check ping in time and was killed.
    HealthCheck {
        /// How long the ping went unanswered.
        unanswered_for: std::time::Duration,
    },
    /// The pool failed (restart budget spent) and stopped it.
    PoolFailed,
    /// The pool retired it on purpose, gracefully (it finished what it
    /// held, within the drain timeout), and started a replacement if the
    /// cause calls for one.
    Recycled(RecycleCause),
    /// A resource limit set on the builder killed it (best-effort reading
    /// of how it died: `SIGXCPU` for CPU time, an allocation failure under
    /// an address-space limit).
    LimitExceeded {
        /// The limit, as configured ("address space of 67108864 bytes").
        limit: String,
    },
    /// A signal from outside the pool (SIGTERM or SIGINT, say from a
    /// service manager stopping the whole unit) told it to stop; it
    /// finished what it held and exited. It is replaced while the pool
    /// runs, without spending the restart budget.
    Signalled {
        /// The signal's number.
        signal: i32,
    },
    /// More bytes waited to be written to it than `max_queued_bytes`
    /// allows: it stopped reading its socket, and was killed.
    Stalled {
        /// Bytes queued for it when the limit was hit.
        queued: usize,
        /// The limit (`max_queued_bytes`).
        limit: usize,
    },
    /// A task of the supervisor that served this worker failed (a panic),
    /// and the worker was killed so that nothing it held is left waiting.
    TaskFailed {
        /// Which task: "connection", "writer", "stream", "output".
        task: &'static str,
        /// What it reported.
        detail: String,
    },
}

/// Why the pool retired a worker on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecycleCause {
    /// It answered its quota of requests (`max_requests`, with jitter).
    MaxRequests {
        /// Requests it answered.
        served: u64,
    },
    /// Its resident memory passed `max_rss`.
    MaxRss {
        /// Its RSS at the last sample, in bytes.
        rss: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// It reached `max_age`.
    MaxAge {
        /// Its age.
        age: std::time::Duration,
    },
    /// A rolling reload replaced it.
    Reload,
    /// The pool shrank.
    Resize,
    /// `drain()` stopped it.
    Drain,
    /// Its group is no longer declared.
    GroupRemoved,
}

impl fmt::Display for RecycleCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecycleCause::MaxRequests { served } => {
                write!(f, "max requests reached ({served} served)")
            }
            RecycleCause::MaxRss { rss, limit } => {
                write!(f, "RSS {rss} bytes over max_rss {limit} bytes")
            }
            RecycleCause::MaxAge { age } => write!(f, "max age reached ({age:?})"),
            RecycleCause::Reload => f.write_str("rolling reload"),
            RecycleCause::Resize => f.write_str("pool resized down"),
            RecycleCause::Drain => f.write_str("pool drained"),
            RecycleCause::GroupRemoved => f.write_str("group removed"),
        }
    }
}

impl ExitReason {
    /// A short name of the reason, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ExitReason::SoftKill => "soft_kill",
            ExitReason::SoftKillTimeout => "soft_kill_timeout",
            ExitReason::HardKill => "hard_kill",
            ExitReason::Crashed => "crashed",
            ExitReason::ProtocolViolation { .. } => "protocol_violation",
            ExitReason::Handshake { .. } => "handshake",
            ExitReason::TimedOut { .. } => "timed_out",
            ExitReason::HealthCheck { .. } => "health_check",
            ExitReason::PoolFailed => "pool_failed",
            ExitReason::Recycled(_) => "recycled",
            ExitReason::LimitExceeded { .. } => "limit_exceeded",
            ExitReason::Signalled { .. } => "signalled",
            ExitReason::Stalled { .. } => "stalled",
            ExitReason::TaskFailed { .. } => "task_failed",
        }
    }

    /// Whether the pool asked for this exit.
    pub fn is_requested(&self) -> bool {
        matches!(
            self,
            ExitReason::SoftKill
                | ExitReason::SoftKillTimeout
                | ExitReason::HardKill
                | ExitReason::PoolFailed
                | ExitReason::Recycled(_)
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::SoftKill => f.write_str("stopped by a soft kill"),
            ExitReason::SoftKillTimeout => {
                f.write_str("killed when the soft kill's grace period ran out")
            }
            ExitReason::HardKill => f.write_str("stopped by a hard kill"),
            ExitReason::Crashed => f.write_str("exited without being asked to"),
            ExitReason::ProtocolViolation { detail } => {
                write!(f, "killed for breaking the protocol: {detail}")
            }
            ExitReason::Handshake { detail } => write!(f, "failed its handshake: {detail}"),
            ExitReason::TimedOut { request_id } => write!(
                f,
                "was killed for not finishing request {request_id} within its timeout and kill-after grace"
            ),
            ExitReason::HealthCheck { unanswered_for } => write!(
                f,
                "was killed for failing its health check (ping unanswered for {unanswered_for:?})"
            ),
            ExitReason::PoolFailed => f.write_str("was stopped because the pool failed"),
            ExitReason::Recycled(cause) => write!(f, "was recycled: {cause}"),
            ExitReason::LimitExceeded { limit } => write!(f, "was killed by its resource limit: {limit}"),
            ExitReason::Signalled { signal } => write!(
                f,
                "stopped when told to by signal {signal} from outside the pool, after finishing its work"
            ),
            ExitReason::Stalled { queued, limit } => write!(
                f,
                "was killed for not reading its socket ({queued} bytes queued for it, over max_queued_bytes of {limit})"
            ),
            ExitReason::TaskFailed { task, detail } => {
                write!(f, "was killed when the supervisor's {task} task for it failed: {detail}")
            }
        }
    }
}

/// The end of one worker process, in [`Event::WorkerExited`] and in the
/// errors of the requests it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerExit {
    /// The worker's id.
    pub worker_id: u64,
    /// The slot it filled.
    pub index: u32,
    /// Its pid.
    pub pid: u32,
    /// How the operating system says it ended.
    pub termination: Termination,
    /// Why it ended.
    pub reason: ExitReason,
    /// The requests it held when it ended (failed, or re-queued).
    pub in_flight: Vec<RequestId>,
    /// The last lines it wrote to its standard error (at most 20).
    pub stderr_tail: Vec<String>,
}

impl WorkerExit {
    /// Whether the pool asked for this exit.
    pub fn requested(&self) -> bool {
        self.reason.is_requested()
    }
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker pid {} (id {}) {} ({})",
            self.pid, self.worker_id, self.reason, self.termination
        )
    }
}

/// A subscription to the pool's [`Event`]s, from
/// [`Supervisor::events`](crate::Supervisor::events).
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Events {
        Events { rx }
    }

    /// The next event; `None` once the pool is gone.
    ///
    /// A subscriber more than 4096 events behind loses the oldest ones; a
    /// warning in the log says how many.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses no event.
    pub async fn recv(&mut self) -> Option<Event> {
        drover_proto::recv_lossy(&mut self.rx).await
    }
}
