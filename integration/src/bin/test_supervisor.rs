//! A supervisor in a process of its own, for the signal tests
//! (`integration/tests/processes.rs`): it plays an application that stops its pool
//! when told to by SIGTERM or SIGINT.
//!
//! Usage: `drover-test-supervisor <worker binary>`. It starts a pool of two
//! workers and prints, one line each:
//!
//! - `worker <pid>` for each worker, then `ready`;
//! - `sent` once two slow requests (1.5 s) are running, one on each worker;
//! - on SIGTERM or SIGINT: `signal <number>`, then after `soft_kill()`
//!   `answer ok <text>` or `answer err <error>` for each request, and
//!   `exit <pid> <reason kind> <termination>` for each worker's exit;
//! - `done`, and it exits with code 0.
//!
//! Any failure prints `error <what>` and exits with code 1.
//!
//! `drover-test-supervisor <worker binary> signals [hang]` is another
//! program, for `integration/tests/signals.rs`: the pool handles its own
//! signals (`Supervisor::handle_signals`) while two tasks keep echo
//! requests in flight. It prints:
//!
//! - `worker <pid>` for each worker, then `ready`;
//! - with `hang`: `hanging` once a request that takes ten minutes runs;
//! - `pool <phase> <pid,pid,...>` whenever the phase or the set of workers
//!   ready for work changes (checked every 20 ms);
//! - once the pool is stopped: `load ok <answered> err <failed> [first
//!   error]` (a request refused because the pool is stopping ends its
//!   task, and is not counted), `stopped <signal> <soft|hard>`, `done`.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

#[path = "../../tests/common/cmd.rs"]
mod cmd;
use cmd::Cmd;

/// The bound on each wait of this program: a failure, never a hang.
const LIMIT: Duration = Duration::from_secs(30);

/// How long each request takes in its worker.
const SLOW_MS: u64 = 1500;

fn fail(what: impl std::fmt::Display) -> ! {
    println!("error {what}");
    std::process::exit(1)
}

#[tokio::main]
async fn main() {
    let worker = std::env::args()
        .nth(1)
        .unwrap_or_else(|| fail("usage: drover-test-supervisor <worker binary>"));
    if std::env::args().nth(2).as_deref() == Some("signals") {
        let hang = std::env::args().nth(3).as_deref() == Some("hang");
        return signals_mode(worker, hang).await;
    }
    // Listen before anyone can know our pid: from here neither signal
    // ends this process by its default action.
    let mut term = signal(SignalKind::terminate()).unwrap_or_else(|e| fail(e));
    let mut int = signal(SignalKind::interrupt()).unwrap_or_else(|e| fail(e));

    let pool = drover::Supervisor::builder(worker)
        .workers(2)
        .start_timeout(Duration::from_secs(10))
        .soft_kill_grace(Duration::from_secs(10))
        .spawn()
        .await
        .unwrap_or_else(|e| fail(e));
    let mut events = pool.events();
    let workers: Vec<u32> = pool.health().iter().map(|h| h.pid).collect();
    for pid in &workers {
        println!("worker {pid}");
    }
    println!("ready");

    let requests: Vec<_> = (0..2)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let text = format!("slow-{i}");
                match pool
                    .request(&Cmd::AnnouncedSlowEcho(text, SLOW_MS))
                    .send()
                    .await
                    .and_then(|answer| answer.data::<String>())
                {
                    Ok(text) => format!("answer ok {text}"),
                    Err(e) => format!("answer err {e}"),
                }
            })
        })
        .collect();
    // Running, not merely routed: each worker has said it started.
    let mut started = Vec::new();
    let waited = tokio::time::timeout(LIMIT, async {
        while started.len() < 2 {
            match events.recv().await {
                Some(drover::Event::Custom(e)) if e.name == "started" => started.push(e.pid),
                Some(_) => {}
                None => fail("the pool's events ended"),
            }
        }
    })
    .await;
    if waited.is_err() {
        fail("the requests did not start");
    }
    started.sort_unstable();
    started.dedup();
    if started.len() != 2 {
        fail(format!("both requests went to one worker: {started:?}"));
    }
    println!("sent");

    let number = tokio::select! {
        _ = term.recv() => SignalKind::terminate().as_raw_value(),
        _ = int.recv() => SignalKind::interrupt().as_raw_value(),
    };
    println!("signal {number}");
    pool.soft_kill().await;
    for request in requests {
        match tokio::time::timeout(LIMIT, request).await {
            Ok(Ok(line)) => println!("{line}"),
            Ok(Err(e)) => fail(format!("a request's task failed: {e}")),
            Err(_) => fail("a request was not answered after the soft kill"),
        }
    }
    // The exits were reported before `soft_kill` returned.
    let mut exited = Vec::new();
    let waited = tokio::time::timeout(LIMIT, async {
        while exited.len() < workers.len() {
            match events.recv().await {
                Some(drover::Event::WorkerExited(exit)) => {
                    println!(
                        "exit {} {} {}",
                        exit.pid,
                        exit.reason.kind(),
                        exit.termination
                    );
                    exited.push(exit.pid);
                }
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    if waited.is_err() || exited.len() < workers.len() {
        fail(format!("exits seen {exited:?} of {workers:?}"));
    }
    println!("done");
}

/// The `signals` program (see the crate docs above).
async fn signals_mode(worker: String, hang: bool) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let pool = drover::Supervisor::builder(worker)
        .workers(2)
        .start_timeout(Duration::from_secs(10))
        .soft_kill_grace(Duration::from_secs(20))
        .spawn()
        .await
        .unwrap_or_else(|e| fail(e));
    let signals = pool.handle_signals().unwrap_or_else(|e| fail(e));
    for health in pool.health() {
        println!("worker {}", health.pid);
    }
    println!("ready");
    if hang {
        let mut events = pool.events();
        let slow = pool.clone();
        tokio::spawn(async move {
            let _ = slow
                .request(&Cmd::AnnouncedSlowEcho("hang".into(), 600_000))
                .send()
                .await;
        });
        let started = tokio::time::timeout(LIMIT, async {
            loop {
                match events.recv().await {
                    Some(drover::Event::Custom(e)) if e.name == "started" => return,
                    Some(_) => {}
                    None => fail("the pool's events ended"),
                }
            }
        })
        .await;
        if started.is_err() {
            fail("the ten-minute request did not start");
        }
        println!("hanging");
    }

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let load: Vec<_> = (0..2)
        .map(|task| {
            let (pool, ok, failed, first_error) = (
                pool.clone(),
                ok.clone(),
                failed.clone(),
                first_error.clone(),
            );
            tokio::spawn(async move {
                for k in 0u64.. {
                    let text = format!("{task}-{k}");
                    let answer = pool.request(&Cmd::SlowEcho(text.clone(), 20)).send().await;
                    match answer.and_then(|a| a.data::<String>()) {
                        Ok(got) if got == text => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(drover::Error::ShuttingDown) => return,
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap()
                                .get_or_insert_with(|| format!("{other:?}"));
                        }
                    }
                }
            })
        })
        .collect();

    let watcher = pool.clone();
    let reporter = tokio::spawn(async move {
        let mut last = String::new();
        loop {
            let status = watcher.status();
            let mut ready: Vec<u32> = status
                .workers
                .iter()
                .filter(|w| matches!(w.state, drover::WorkerState::Ready))
                .map(|w| w.pid)
                .collect();
            ready.sort_unstable();
            let pids: Vec<String> = ready.iter().map(u32::to_string).collect();
            let line = format!("pool {} {}", status.phase.replace(' ', "_"), pids.join(","));
            if line != last {
                println!("{line}");
                last = line;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let stopped = signals.await;
    reporter.abort();
    for task in load {
        if tokio::time::timeout(LIMIT, task).await.is_err() {
            fail("a load task did not end after the pool stopped");
        }
    }
    let first = first_error.lock().unwrap().take().unwrap_or_default();
    println!(
        "load ok {} err {} {first}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "stopped {} {}",
        stopped.signal,
        if stopped.hard { "hard" } else { "soft" }
    );
    println!("done");
}
