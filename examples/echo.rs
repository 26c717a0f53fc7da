//! A pool of 4 echo workers: requests, the pids that answered them, the
//! workers' memory, a broadcast, and a soft kill.
//!
//! `cargo run --example echo`
//!
//! This one binary is both sides: started by the supervisor (which sets
//! `DROVER_FD`), it serves as a worker; started by you, it runs the pool
//! with copies of itself as the workers.

use std::time::Duration;

use drover::worker::{Request, Worker};
use drover::{Event, Supervisor};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if drover::worker::is_worker_process() {
        worker().await?;
    } else {
        supervisor().await?;
    }
    Ok(())
}

/// The worker side: answer each text with an echo, and tell the supervisor
/// about every event it broadcasts.
async fn worker() -> Result<(), drover::worker::Error> {
    let worker = Worker::connect().await?;
    // Subscribe before serving, so no event sent after `Ready` is missed.
    let listener = worker.clone();
    let mut events = worker.events();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let text: String = event.data().unwrap_or_default();
            let _ = listener.emit("heard", &format!("{}: {text}", event.name()));
        }
    });
    worker
        .serve(|req: Request| async move {
            let text: String = req.data()?;
            req.respond(&format!("echo: {text}"))
        })
        .await
}

/// The supervisor side.
async fn supervisor() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Supervisor::builder(std::env::current_exe()?)
        .workers(4)
        .spawn()
        .await?;
    println!("pool online: {} workers", pool.health().len());

    let requests = (0..12).map(|i| {
        let pool = pool.clone();
        async move { (i, pool.enqueue(&format!("message {i}")).await) }
    });
    for (i, answer) in futures::future::join_all(requests).await {
        let answer = answer?;
        println!(
            "request {i:>2} answered by pid {}: {}",
            answer.pid(),
            answer.data::<String>()?
        );
    }

    // Give the memory sampler a moment, then show each worker.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for worker in pool.health() {
        let rss = worker
            .rss
            .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "not sampled yet".into());
        println!(
            "worker {} pid {}: rss {rss}, served {}, {}",
            worker.index, worker.pid, worker.served, worker.state
        );
    }

    let mut events = pool.events();
    let sent = pool.broadcast("greeting", "hello, workers")?;
    println!("broadcast sent to {sent} workers");
    let mut heard = 0;
    while heard < sent {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(Event::Custom(event))) if event.name == "heard" => {
                heard += 1;
                println!("pid {} heard {:?}", event.pid, event.data::<String>()?);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }

    pool.soft_kill().await;
    println!("soft kill done: every worker finished and was reaped");
    Ok(())
}
