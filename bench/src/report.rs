//! The JSON lines a run prints on stdout.

use std::time::Duration;

use serde::Serialize;

use crate::args::EchoOptions;
use crate::error::Error;
use crate::stats::{self, Latencies};

/// The result of an echo run.
#[derive(Debug, Serialize)]
pub struct EchoReport {
    /// `drover` or `raw`.
    #[serde(rename = "impl")]
    pub implementation: &'static str,
    /// Worker processes.
    pub workers: usize,
    /// Payload bytes per request.
    pub payload: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Requests answered.
    pub requests: usize,
    /// Time from the first request sent to the last answer, start-up
    /// excluded.
    pub seconds: f64,
    /// Requests per second over `seconds`.
    pub rps: f64,
    /// Median latency, enqueue until answer.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// Spawning the workers until every one can take requests.
    pub startup_ms: f64,
    /// The benchmark process's peak resident memory (`VmHWM`).
    pub parent_peak_rss_kb: u64,
}

impl EchoReport {
    /// Builds the report of a finished run; reads this process's `VmHWM`.
    ///
    /// # Errors
    ///
    /// [`Error::Proc`] if `/proc/self/status` cannot be read.
    pub fn new(
        options: &EchoOptions,
        startup: Duration,
        elapsed: Duration,
        latencies: Latencies,
    ) -> Result<EchoReport, Error> {
        let requests = latencies.len();
        let seconds = elapsed.as_secs_f64();
        let (p50_us, p99_us) = latencies.p50_p99();
        Ok(EchoReport {
            implementation: options.implementation.name(),
            workers: options.workers,
            payload: options.payload,
            concurrency: options.concurrency,
            requests,
            seconds,
            rps: requests as f64 / seconds,
            p50_us,
            p99_us,
            startup_ms: startup.as_secs_f64() * 1e3,
            parent_peak_rss_kb: stats::status_kb(None, "VmHWM")?,
        })
    }
}

/// The result of `--memory`.
#[derive(Debug, Serialize)]
pub struct MemoryReport {
    /// Always `drover`.
    #[serde(rename = "impl")]
    pub implementation: &'static str,
    /// Always `memory`.
    pub mode: &'static str,
    /// `VmRSS` of one idle worker right after its pool came online: the
    /// smallest SDK worker (`drover-bench-idle-worker`, built beside this
    /// binary), which answers every request with an acknowledgement.
    pub idle_worker_rss_kb: u64,
    /// The same of this benchmark's own worker: the same SDK in a larger
    /// binary (it holds every workload), so more of its pages are mapped.
    pub bench_worker_rss_kb: u64,
    /// Requests held in the supervisor's queue during the measurement.
    pub queued_requests: usize,
    /// Growth of the benchmark process's `VmRSS` per queued request.
    pub queued_bytes_per_request: f64,
}

/// Prints `report` as one JSON line on stdout.
///
/// # Errors
///
/// [`Error::Report`] if it does not encode.
pub fn print<T: Serialize>(report: &T) -> Result<(), Error> {
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}
