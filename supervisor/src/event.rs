//! What the pool reports: events, and how and why a worker ended.

use std::fmt;

use bytes::Bytes;
use drover_proto::RequestId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

/// Something that happened in the pool, from [`Supervisor::events`].
///
/// # Serialization
///
/// `Serialize` (serde), for a status endpoint or a log line: an event is
/// an object whose `kind` names its variant in snake case, beside the
/// variant's fields. In JSON:
///
/// ```text
/// {"kind":"online"}
/// {"kind":"worker_spawned","worker_id":3,"index":0,"pid":4242}
/// {"kind":"worker_exited","worker_id":3,"index":0,"pid":4242,...}  (the fields of WorkerExit)
/// {"kind":"custom","name":"progress","worker_id":3,"pid":4242,"payload":[1,2,3]}
/// {"kind":"worker_state","worker_id":3,"pid":4242,"state":"busy"}
/// {"kind":"worker_status","worker_id":3,"pid":4242,"message":"loading"}
/// {"kind":"sandbox_unenforced","worker_id":3,"pid":4242,"missing":[{"feature":"landlock"}]}
/// {"kind":"pool_failed","reason":{"kind":"restart_budget_spent","max_restarts":5,"window":{"secs":120,"nanos":0},"last":"..."}}
/// ```
///
/// [`Supervisor::events`]: crate::Supervisor::events
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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
    /// A worker was started without part of its best-effort
    /// [`Sandbox`](crate::Sandbox): what this kernel cannot enforce.
    SandboxUnenforced {
        /// The worker's id.
        worker_id: u64,
        /// Its pid.
        pid: u32,
        /// What was not enforced.
        missing: Vec<crate::sandbox::SandboxFeature>,
    },
    /// The pool stopped for good: restarts exhausted. Every pending request
    /// has failed.
    PoolFailed {
        /// Why.
        reason: crate::error::PoolFailure,
    },
}

/// A custom event sent by a worker with `Worker::emit`.
///
/// Serialized (serde) as its name, sender and payload, the payload as the
/// bytes the worker encoded (bincode; [`data`](CustomEvent::data) decodes
/// them), which JSON writes as an array of numbers:
/// `{"name":"progress","worker_id":3,"pid":4242,"payload":[1,2,3]}`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
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
///
/// Serialized (serde) as `{"code":1}` or `{"signal":9}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
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
        31 => "SIGSYS",
        _ => return None,
    })
}

/// Why a worker ended: asked to, or not.
///
/// Serialized (serde) as an object whose `kind` is [`kind`](ExitReason::kind)'s
/// name, beside the variant's fields; a [`Duration`](std::time::Duration)
/// as serde writes one, a request id as its hyphenated uuid, a
/// [`RecycleCause`] in the same object. In JSON:
///
/// ```text
/// {"kind":"crashed"}
/// {"kind":"protocol_violation","detail":"it sent a Hello message, which ..."}
/// {"kind":"timed_out","request_id":"67e55044-10b1-426f-9247-bb680e5fe0c8"}
/// {"kind":"health_check","unanswered_for":{"secs":2,"nanos":0}}
/// {"kind":"recycled","cause":"max_rss","rss":90000000,"limit":67108864}
/// {"kind":"stalled","queued":134217800,"limit":134217728}
/// {"kind":"task_failed","task":"writer","detail":"..."}
/// {"kind":"seccomp"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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
    /// Its seccomp filter killed it (`SIGSYS`): it made a system call its
    /// [`Sandbox`](crate::Sandbox) forbids. The kernel tells the
    /// supervisor the signal, not which call it was (that goes to the
    /// process itself, or to the audit log).
    Seccomp,
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
///
/// Serialized (serde) as an object whose `cause` names the variant in
/// snake case, beside its fields: `{"cause":"max_requests","served":1000}`,
/// `{"cause":"max_age","age":{"secs":3600,"nanos":0}}`, `{"cause":"reload"}`.
/// Inside an [`ExitReason`] these join its object:
/// `{"kind":"recycled","cause":"reload"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
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
            ExitReason::Seccomp => "seccomp",
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
            ExitReason::Seccomp => f.write_str(
                "was killed by SIGSYS (seccomp): it made a system call its sandbox forbids",
            ),
            ExitReason::TaskFailed { task, detail } => {
                write!(f, "was killed when the supervisor's {task} task for it failed: {detail}")
            }
        }
    }
}

/// The end of one worker process, in [`Event::WorkerExited`] and in the
/// errors of the requests it held.
///
/// Serialized (serde) field by field, in JSON:
/// `{"worker_id":3,"index":0,"pid":4242,"termination":{"signal":9},
/// "reason":{"kind":"crashed"},"in_flight":["67e55044-..."],"stderr_tail":["..."]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
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
/// [`Supervisor::events`](crate::Supervisor::events): [`recv`] them one
/// at a time, or use it as a [`Stream`](futures::Stream) (`StreamExt`'s
/// `filter`, `take_while`, ...), which ends once the pool is gone. A
/// subscriber more than 4096 events behind loses the oldest ones; a
/// warning in the log says how many. Both are cancel safe: no event is
/// lost by dropping a future.
///
/// [`recv`]: drover_proto::Subscription::recv
pub type Events = drover_proto::Subscription<Event>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, to_value};

    use super::*;
    use crate::health::{WorkerHealth, WorkerState};

    fn every_reason() -> Vec<ExitReason> {
        vec![
            ExitReason::SoftKill,
            ExitReason::SoftKillTimeout,
            ExitReason::HardKill,
            ExitReason::Crashed,
            ExitReason::ProtocolViolation {
                detail: "bad frame".into(),
            },
            ExitReason::Handshake {
                detail: "no hello".into(),
            },
            ExitReason::TimedOut {
                request_id: RequestId::nil(),
            },
            ExitReason::HealthCheck {
                unanswered_for: Duration::from_millis(2500),
            },
            ExitReason::PoolFailed,
            ExitReason::Recycled(RecycleCause::Reload),
            ExitReason::LimitExceeded {
                limit: "CPU time of 1 s".into(),
            },
            ExitReason::Signalled { signal: 15 },
            ExitReason::Stalled {
                queued: 200,
                limit: 100,
            },
            ExitReason::TaskFailed {
                task: "writer",
                detail: "panicked".into(),
            },
            ExitReason::Seccomp,
        ]
    }

    #[test]
    fn an_exit_reason_is_named_by_its_kind() {
        for reason in every_reason() {
            let value = to_value(&reason).unwrap();
            assert_eq!(value["kind"], reason.kind(), "{value}");
        }
    }

    #[test]
    fn exit_reasons_serialize_as_documented() {
        let nil = "00000000-0000-0000-0000-000000000000";
        let cases = [
            (ExitReason::Crashed, json!({"kind": "crashed"})),
            (
                ExitReason::ProtocolViolation {
                    detail: "bad frame".into(),
                },
                json!({"kind": "protocol_violation", "detail": "bad frame"}),
            ),
            (
                ExitReason::TimedOut {
                    request_id: RequestId::nil(),
                },
                json!({"kind": "timed_out", "request_id": nil}),
            ),
            (
                ExitReason::HealthCheck {
                    unanswered_for: Duration::from_millis(2500),
                },
                json!({"kind": "health_check", "unanswered_for": {"secs": 2, "nanos": 500_000_000}}),
            ),
            (
                ExitReason::Recycled(RecycleCause::MaxRss { rss: 9, limit: 8 }),
                json!({"kind": "recycled", "cause": "max_rss", "rss": 9, "limit": 8}),
            ),
            (
                ExitReason::Recycled(RecycleCause::Reload),
                json!({"kind": "recycled", "cause": "reload"}),
            ),
            (
                ExitReason::Stalled {
                    queued: 200,
                    limit: 100,
                },
                json!({"kind": "stalled", "queued": 200, "limit": 100}),
            ),
            (
                ExitReason::TaskFailed {
                    task: "writer",
                    detail: "panicked".into(),
                },
                json!({"kind": "task_failed", "task": "writer", "detail": "panicked"}),
            ),
            (
                ExitReason::Signalled { signal: 15 },
                json!({"kind": "signalled", "signal": 15}),
            ),
            (ExitReason::Seccomp, json!({"kind": "seccomp"})),
        ];
        for (reason, want) in cases {
            assert_eq!(to_value(&reason).unwrap(), want);
        }
    }

    #[test]
    fn recycle_causes_and_terminations_serialize_as_documented() {
        let cases = [
            (
                RecycleCause::MaxRequests { served: 1000 },
                json!({"cause": "max_requests", "served": 1000}),
            ),
            (
                RecycleCause::MaxAge {
                    age: Duration::from_secs(3600),
                },
                json!({"cause": "max_age", "age": {"secs": 3600, "nanos": 0}}),
            ),
            (RecycleCause::Resize, json!({"cause": "resize"})),
            (RecycleCause::Drain, json!({"cause": "drain"})),
            (
                RecycleCause::GroupRemoved,
                json!({"cause": "group_removed"}),
            ),
        ];
        for (cause, want) in cases {
            assert_eq!(to_value(&cause).unwrap(), want);
        }
        assert_eq!(to_value(Termination::Code(1)).unwrap(), json!({"code": 1}));
        assert_eq!(
            to_value(Termination::Signal(9)).unwrap(),
            json!({"signal": 9})
        );
    }

    #[test]
    fn events_serialize_as_documented() {
        let exit = WorkerExit {
            worker_id: 3,
            index: 0,
            pid: 4242,
            termination: Termination::Signal(9),
            reason: ExitReason::Crashed,
            in_flight: vec![RequestId::nil()],
            stderr_tail: vec!["oops".into()],
        };
        let cases = [
            (Event::Online, json!({"kind": "online"})),
            (
                Event::WorkerSpawned {
                    worker_id: 3,
                    index: 0,
                    pid: 4242,
                },
                json!({"kind": "worker_spawned", "worker_id": 3, "index": 0, "pid": 4242}),
            ),
            (
                Event::WorkerExited(exit),
                json!({
                    "kind": "worker_exited",
                    "worker_id": 3,
                    "index": 0,
                    "pid": 4242,
                    "termination": {"signal": 9},
                    "reason": {"kind": "crashed"},
                    "in_flight": ["00000000-0000-0000-0000-000000000000"],
                    "stderr_tail": ["oops"],
                }),
            ),
            (
                Event::Custom(CustomEvent::new(
                    "progress".into(),
                    3,
                    4242,
                    Bytes::from_static(&[1, 2, 3]),
                )),
                json!({"kind": "custom", "name": "progress", "worker_id": 3, "pid": 4242, "payload": [1, 2, 3]}),
            ),
            (
                Event::WorkerState {
                    worker_id: 3,
                    pid: 4242,
                    state: WorkerState::Busy,
                },
                json!({"kind": "worker_state", "worker_id": 3, "pid": 4242, "state": "busy"}),
            ),
            (
                Event::WorkerStatus {
                    worker_id: 3,
                    pid: 4242,
                    message: "loading".into(),
                },
                json!({"kind": "worker_status", "worker_id": 3, "pid": 4242, "message": "loading"}),
            ),
            (
                Event::SandboxUnenforced {
                    worker_id: 3,
                    pid: 4242,
                    missing: vec![
                        crate::sandbox::SandboxFeature::Landlock,
                        crate::sandbox::SandboxFeature::LandlockAbi {
                            wanted: 9,
                            kernel: 7,
                        },
                    ],
                },
                json!({"kind": "sandbox_unenforced", "worker_id": 3, "pid": 4242, "missing": [
                    {"feature": "landlock"},
                    {"feature": "landlock_abi", "wanted": 9, "kernel": 7},
                ]}),
            ),
            (
                Event::PoolFailed {
                    reason: crate::error::PoolFailure::RestartBudgetSpent {
                        max_restarts: 5,
                        window: Duration::from_secs(60),
                        last: "worker pid 7 crashed".into(),
                    },
                },
                json!({"kind": "pool_failed", "reason": {
                    "kind": "restart_budget_spent",
                    "max_restarts": 5,
                    "window": {"secs": 60, "nanos": 0},
                    "last": "worker pid 7 crashed",
                }}),
            ),
        ];
        for (event, want) in cases {
            assert_eq!(to_value(&event).unwrap(), want);
        }
    }

    #[test]
    fn health_serializes_as_documented() {
        for state in [
            WorkerState::Starting,
            WorkerState::Ready,
            WorkerState::Busy,
            WorkerState::Stopping,
            WorkerState::Stopped,
            WorkerState::Crashed,
        ] {
            assert_eq!(to_value(state).unwrap(), json!(state.to_string()));
        }
        let health = WorkerHealth {
            worker_id: 3,
            index: 0,
            pid: 4242,
            rss: Some(5_242_880),
            in_flight: 1,
            state: WorkerState::Ready,
            status: None,
            served: 17,
            open_sockets: 0,
            shared_memory_held: 0,
            age: Duration::from_millis(12_500),
            unenforced: Vec::new(),
        };
        assert_eq!(
            to_value(&health).unwrap(),
            json!({
                "worker_id": 3,
                "index": 0,
                "pid": 4242,
                "rss": 5_242_880,
                "in_flight": 1,
                "state": "ready",
                "status": null,
                "served": 17,
                "open_sockets": 0,
                "shared_memory_held": 0,
                "age": {"secs": 12, "nanos": 500_000_000},
                "unenforced": [],
            })
        );
    }
}
