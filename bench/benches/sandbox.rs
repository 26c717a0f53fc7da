//! What the sandbox costs: start-up and per-request, with and without it,
//! in one run, against the `drover-bench` echo worker.
//!
//! `cargo bench -p drover-bench --bench sandbox`
//!
//! For each of "none" and "full" (every layer: landlock with no path but
//! the binary and the libraries, every seccomp preset, network, PID and
//! mount namespaces with a private /tmp), twice, interleaved, it sends
//! 20,000 echoes of 64 bytes one at a time to a one-worker pool, and
//! 100,000 with 64 in flight to two workers; then, for each layer alone
//! and for all of them, 40 start-ups of a one-worker pool (`spawn()` to
//! online) alternating with 40 without a sandbox. Prints its lines on
//! stdout.

use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_supervisor::{Sandbox, Supervisor, SyscallPreset, Syscalls};

const WORKER: &str = env!("CARGO_BIN_EXE_drover-bench");
const STARTS: usize = 40;
const SEQUENTIAL: usize = 20_000;
const CONCURRENT: usize = 100_000;
const IN_FLIGHT: usize = 64;

fn full() -> Sandbox {
    Sandbox::new()
        .deny_all_paths()
        .syscalls(Syscalls::deny([
            SyscallPreset::Network,
            SyscallPreset::Processes,
            SyscallPreset::ExecAfterStart,
            SyscallPreset::Ptrace,
        ]))
        .network_namespace()
        .pid_namespace()
        .private_tmp()
}

fn builder(sandbox: Option<Sandbox>, workers: usize) -> drover_supervisor::Builder {
    let builder = Supervisor::builder(WORKER)
        .workers(workers)
        .max_concurrency(IN_FLIGHT);
    match sandbox {
        Some(sandbox) => builder.sandbox(sandbox),
        None => builder,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One start-up of a one-worker pool in `sandbox`: `spawn()` to online.
async fn start_once(sandbox: &Option<Sandbox>) -> Duration {
    let begun = Instant::now();
    let pool = builder(sandbox.clone(), 1)
        .spawn()
        .await
        .expect("the pool starts");
    let took = begun.elapsed();
    pool.hard_kill().await;
    took
}

/// `STARTS` start-ups without a sandbox and as many in `sandbox`,
/// alternating (so the machine's drift hits both alike), each sorted.
async fn paired_starts(sandbox: &Sandbox) -> (Vec<Duration>, Vec<Duration>) {
    let (mut none, mut with) = (Vec::new(), Vec::new());
    let sandbox = Some(sandbox.clone());
    for _ in 0..STARTS {
        none.push(start_once(&None).await);
        with.push(start_once(&sandbox).await);
    }
    none.sort();
    with.sort();
    (none, with)
}

/// Each layer alone: what it adds to a worker's start.
fn layers() -> Vec<(&'static str, Sandbox)> {
    vec![
        ("landlock", Sandbox::new().deny_all_paths()),
        (
            "seccomp",
            Sandbox::new().syscalls(Syscalls::deny([
                SyscallPreset::Network,
                SyscallPreset::Processes,
                SyscallPreset::ExecAfterStart,
                SyscallPreset::Ptrace,
            ])),
        ),
        ("netns", Sandbox::new().network_namespace()),
        ("pidns", Sandbox::new().pid_namespace()),
        ("tmp", Sandbox::new().private_tmp()),
    ]
}

async fn measure(name: &str, sandbox: Option<Sandbox>) {
    let pool = builder(sandbox.clone(), 1)
        .spawn()
        .await
        .expect("the pool starts");
    let payload = Bytes::from(vec![7u8; 64]);
    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let begun = Instant::now();
        pool.enqueue_bytes(payload.clone()).await.expect("an echo");
        latencies.push(begun.elapsed());
    }
    latencies.sort();
    pool.hard_kill().await;

    let pool = builder(sandbox, 2).spawn().await.expect("the pool starts");
    let begun = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let pool = pool.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                for _ in 0..CONCURRENT / IN_FLIGHT {
                    pool.enqueue_bytes(payload.clone()).await.expect("an echo");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a sender");
    }
    let throughput = (CONCURRENT / IN_FLIGHT * IN_FLIGHT) as f64 / begun.elapsed().as_secs_f64();
    pool.hard_kill().await;

    println!(
        "{name:<5} echo p50 {:>6.1} µs  p99 {:>6.1} µs | {:>8.0} req/s (64 in flight, 2 workers)",
        micros(percentile(&latencies, 0.5)),
        micros(percentile(&latencies, 0.99)),
        throughput,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        // Interleaved, twice, so drift on a shared machine shows.
        for _ in 0..2 {
            measure("none", None).await;
            measure("full", Some(full())).await;
        }
        let mut layers = layers();
        layers.push(("every layer", full()));
        for (name, sandbox) in layers {
            let (none, with) = paired_starts(&sandbox).await;
            println!(
                "start-up with {name:<11}: p50 {:>6.0} µs, p90 {:>6.0} µs (alternating with none: p50 {:>6.0} µs, p90 {:>6.0} µs)",
                micros(percentile(&with, 0.5)),
                micros(percentile(&with, 0.9)),
                micros(percentile(&none, 0.5)),
                micros(percentile(&none, 0.9)),
            );
        }
    });
}
