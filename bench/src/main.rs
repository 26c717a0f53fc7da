//! `drover-bench`: how fast drover moves requests, and what it costs.
//!
//! ```text
//! drover-bench [--workers W] [--requests N] [--payload S] [--concurrency C] [--impl drover|raw|tokio]
//! drover-bench --memory
//! drover-bench --queue pg|sqlite
//! drover-bench --http drover|hyper|drover-listener [--workers W] [--port P]
//! ```
//!
//! Every run prints exactly one JSON line on stdout; everything else
//! (settings, progress, breakdowns) goes to stderr.
//!
//! # Theory of operation
//!
//! - **One binary, three roles.** Started by a drover supervisor
//!   (`DROVER_FD` is set) it is an echo worker; started by the raw
//!   benchmark (`DROVER_BENCH_RAW_CHILD` is set) it is a raw echo child;
//!   started by a person it parses its flags and runs a benchmark.
//! - **Echo, drover.** A pool of `W` copies of this binary, each capped at
//!   `ceil(C / W)` requests in flight. `C` tasks pull request numbers from
//!   one atomic counter, so at most `C` requests are in flight; each
//!   records its requests' latencies (enqueue until answer, in
//!   microseconds). Pool start-up is timed apart.
//! - **Echo, raw.** The ceiling: the same traffic shape over `W` plain
//!   socket pairs to `W` children that echo length-prefixed frames, driven
//!   by blocking threads (a writer and a reader per socket). No protocol,
//!   no routing, no async runtime: what the kernel and the copies cost.
//! - **Echo, tokio.** The pool a user would write by hand instead:
//!   tokio-util's length-delimited codec, bincode through serde, a map of
//!   pending replies (see `tokio_pool.rs`).
//! - **Prefork HTTP.** `--http drover` serves HTTP the prefork way: this
//!   process accepts and passes each connection to a worker, which serves
//!   it with hyper; `--http hyper` is its ceiling, `W` processes accepting
//!   on one shared listener; `--http drover-listener` passes the listener
//!   itself to each worker once, and the workers accept on it. `wrk`
//!   (outside, `bench/http_table.py`) loads them.
//! - **Memory.** The resident memory of one idle worker, and what one
//!   request costs the supervisor while it waits in the queue.
//!
//! # Layout
//!
//! - `args.rs`: the flags and their checks.
//! - `echo.rs`: the echo benchmark against a drover pool.
//! - `worker.rs`: the drover worker side of this binary.
//! - `raw/`: the raw ceiling, its parent side and its child side.
//! - `tokio_pool.rs`: the hand-written tokio pool, both sides.
//! - `memory.rs`: the memory measurements.
//! - `queue.rs`: the job queue workload.
//! - `http.rs`: the prefork HTTP server and its ceiling, both sides.
//! - `stats.rs`: latency percentiles and `/proc` readings.
//! - `report.rs`: the JSON lines. `error.rs`: [`Error`].

mod args;
mod echo;
mod error;
mod http;
mod memory;
mod payload;
mod queue;
mod raw;
mod report;
mod stats;
mod tokio_pool;
mod worker;

use std::process::ExitCode;

use crate::args::{Command, Implementation};
use crate::error::Error;

fn main() -> ExitCode {
    let outcome = if drover_worker::is_worker_process() {
        worker_runtime().and_then(|rt| rt.block_on(worker::run()))
    } else if let Some(fd) = raw::child_socket_env() {
        raw::child::run(&fd)
    } else if let Some(parent) = http::child_env() {
        http::child(&parent)
    } else if let Some(fd) = tokio_pool::child_socket_env() {
        tokio_pool::child(&fd)
    } else {
        run_benchmark()
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover-bench: {e}");
            match e {
                Error::Usage(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Parses the flags and runs what they ask for.
fn run_benchmark() -> Result<(), Error> {
    match args::parse(std::env::args_os().skip(1))? {
        Command::Help => {
            println!("{}", args::USAGE);
            Ok(())
        }
        Command::Echo(options) => {
            let report = match options.implementation {
                Implementation::Drover => {
                    supervisor_runtime(options.threads)?.block_on(echo::run(&options))?
                }
                Implementation::Raw => raw::parent::run(&options)?,
                Implementation::Tokio => {
                    supervisor_runtime(options.threads)?.block_on(tokio_pool::run(&options))?
                }
            };
            report::print(&report)
        }
        Command::Queue(options) => {
            let report = supervisor_runtime(2)?.block_on(queue::run(&options))?;
            report::print(&report)
        }
        Command::Http(options) => supervisor_runtime(1)?.block_on(http::serve(&options)),
        Command::Memory => {
            let report = supervisor_runtime(1)?.block_on(memory::run())?;
            report::print(&report)
        }
    }
}

/// The supervisor side's runtime: `threads` worker threads, or a
/// current-thread runtime for 1.
fn supervisor_runtime(threads: usize) -> Result<tokio::runtime::Runtime, Error> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build().map_err(Error::Runtime)
}

/// The worker's runtime: one thread. A pool runs one process per core, and
/// an echo handler has nothing to run in parallel inside one process.
fn worker_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}
