//! The benchmark's error type.

use std::io;

use crate::args::{UsageError, USAGE};

/// Everything that can stop a benchmark run, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line cannot be run.
    #[error("{0}\n\n{USAGE}")]
    Usage(#[from] UsageError),
    /// This program's own path, needed to start copies of it.
    #[error("cannot find this program's own path: {0}")]
    CurrentExe(#[source] io::Error),
    /// The tokio runtime would not start.
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The drover pool failed or refused a request.
    #[error("drover pool: {0}")]
    Pool(#[from] drover_supervisor::Error),
    /// The drover worker side failed.
    #[error("drover worker: {0}")]
    Worker(#[from] drover_worker::Error),
    /// A benchmark task panicked or was cancelled.
    #[error("a benchmark task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// An answer was not the echo of its request.
    #[error("request {index}: sent {sent} bytes, got {got} back")]
    WrongAnswer {
        /// The request's number, `0..N`.
        index: usize,
        /// Bytes sent.
        sent: usize,
        /// Bytes received.
        got: usize,
    },
    /// A system call of the raw benchmark failed.
    #[error("raw benchmark: {what}: {source}")]
    Raw {
        /// What was being done ("spawn child", "read frame", ...).
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A raw child ended with a failure.
    #[error("raw child {pid} ended with {status}")]
    RawChild {
        /// The child's pid.
        pid: u32,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// The raw child was given no usable socket.
    #[error("DROVER_BENCH_RAW_CHILD={value:?} is not an inherited socket descriptor")]
    RawChildSocket {
        /// The variable's value.
        value: String,
    },
    /// A `/proc` file could not be read or lacks a field.
    #[error("cannot read {field} from {path}: {reason}")]
    Proc {
        /// The file.
        path: String,
        /// The field wanted (`VmRSS`, `VmHWM`).
        field: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The memory measurement found requests dispatched when they should
    /// have stayed queued.
    #[error("memory: {0}")]
    NotQueued(String),
    /// A program the benchmark runs was not built beside it.
    #[error("{program} is missing: it is built with this binary (cargo build --release -p drover-bench)")]
    MissingProgram {
        /// Where it was looked for.
        program: std::path::PathBuf,
    },
    /// The job queue failed.
    #[error("job queue: {0}")]
    Queue(#[from] drover_queue::QueueError),
    /// The queue workload could not run or found jobs missing.
    #[error("queue benchmark: {0}")]
    QueueBench(String),
    /// A step of the HTTP server failed.
    #[error("http server: {what}: {source}")]
    Http {
        /// What was being done ("bind 127.0.0.1", "start a hyper child", ...).
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The JSON line would not encode.
    #[error("cannot write the report: {0}")]
    Report(#[from] serde_json::Error),
}

impl Error {
    /// A wrapper for an I/O error of the HTTP server.
    pub fn http(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Http { what, source }
    }

    /// A wrapper for a raw benchmark I/O error.
    pub fn raw(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Raw { what, source }
    }
}
