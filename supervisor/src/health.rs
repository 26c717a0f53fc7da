//! Worker states, health snapshots and memory sampling.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a worker is in its life.
///
/// Serialized (serde) as its name in snake case, as `Display` writes it:
/// `"ready"`, `"busy"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Started, handshake not finished.
    Starting,
    /// Takes requests.
    Ready,
    /// Said `busy()`: takes no new request until it says `ready()`.
    Busy,
    /// Asked to stop; finishing what it holds.
    Stopping,
    /// Exited when asked to (reported once, in events).
    Stopped,
    /// Exited unasked, or was killed for misbehaving (reported once, in
    /// events).
    Crashed,
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Busy => "busy",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
            WorkerState::Crashed => "crashed",
        })
    }
}

/// A snapshot of one worker, from [`Supervisor::health`](crate::Supervisor::health).
///
/// Serialized (serde) field by field, `age` as serde writes a
/// [`Duration`](std::time::Duration), in JSON:
/// `{"worker_id":3,"index":0,"pid":4242,"rss":5242880,"in_flight":1,
/// "state":"ready","status":null,"served":17,"open_sockets":0,
/// "shared_memory_held":0,"age":{"secs":12,"nanos":500000000},"unenforced":[]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WorkerHealth {
    /// The worker's id (unique for the pool's life).
    pub worker_id: u64,
    /// The slot it fills.
    pub index: u32,
    /// Its pid.
    pub pid: u32,
    /// Resident memory at the last sample, in bytes. Each worker is
    /// sampled as it becomes ready (its handshake done), and every worker
    /// at each `health_interval`; `None` before the first sample (a worker
    /// still starting) or where memory cannot be read (no `/proc`).
    pub rss: Option<u64>,
    /// Requests sent to it and not yet answered.
    pub in_flight: usize,
    /// Its state.
    pub state: WorkerState,
    /// The last status line it sent with `Worker::status`.
    pub status: Option<String>,
    /// Requests it has answered.
    pub served: u64,
    /// Passed sockets it holds open.
    pub open_sockets: usize,
    /// Bytes of its requests arena ([`Builder::shared_memory`](crate::Builder::shared_memory))
    /// held by request payloads it has not let go of yet: the requests it
    /// is reading, and any payload it keeps. Near the arena's size, its
    /// large requests go through the socket instead. 0 without an arena.
    pub shared_memory_held: u64,
    /// How long it has been running.
    pub age: std::time::Duration,
    /// What of the pool's best-effort [`Sandbox`](crate::Sandbox) this
    /// kernel does not enforce (empty without a sandbox, or when all of
    /// it is enforced).
    pub unenforced: Vec<crate::sandbox::SandboxFeature>,
}

/// Reads the resident set size of `pid`, in bytes, less the pages of its
/// shared-memory arenas (`arenas` bytes at most, both of them): from
/// `/proc/<pid>/statm`, or `/proc/<pid>/status` when it has arenas, whose
/// `RssShmem` says how much of it is shared memory.
///
/// A worker in a PID namespace is read through the pid of its own
/// process, not its init's (`sandbox::memory_pid`).
pub(crate) fn read_rss(pid: u32, arenas: u64) -> Option<u64> {
    let pid = crate::sandbox::memory_pid(pid);
    if arenas > 0 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
        };
        let rss = field("VmRSS:")?;
        return Some(rss - field("RssShmem:").unwrap_or(0).min(arenas).min(rss));
    }
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident_pages * page_size())
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}
