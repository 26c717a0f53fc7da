//! `Supervisor::status`: the pool's figures and each worker's, read from a
//! real pool after real requests, crashes and a full queue.

mod common;

use common::{eventually, next_exit, pool, within, Cmd, LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_requests_workers_queue_and_restarts() {
    let pool = within(LIMIT, "spawn", pool(2).max_queue(2).spawn())
        .await
        .unwrap();
    let before = std::time::SystemTime::now();
    let status = pool.status();
    assert_eq!(status.phase, "running");
    assert_eq!(status.target_workers, 2);
    assert_eq!(status.workers.len(), 2);
    assert_eq!(status.accepted, 0);
    assert_eq!(status.idle, 2);
    assert!(
        status.name.contains("drover-test-worker"),
        "{}",
        status.name
    );

    for i in 0..3 {
        let answer = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo(format!("{i}"))))
            .await
            .unwrap();
        assert_eq!(answer.data::<String>().unwrap(), format!("{i}"));
    }
    within(
        LIMIT,
        "status line",
        pool.enqueue(&Cmd::Status("parsing".into())),
    )
    .await
    .unwrap();
    let status = pool.status();
    assert_eq!(status.accepted, 4);
    assert_eq!(status.workers.iter().map(|w| w.served).sum::<u64>(), 4);
    assert!(status
        .workers
        .iter()
        .any(|w| w.status.as_deref() == Some("parsing")));
    for worker in &status.workers {
        assert!(worker.started_at_ms <= common_millis(before) + 1);
        assert!(worker.started_at_ms > common_millis(before) - 60_000);
        assert!(worker.last_exit.is_none());
    }

    // Both workers busy for a while, two queued behind them, one refused.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.enqueue(&Cmd::Sleep(400)).await.map(|_| ()) })
        })
        .collect();
    assert!(
        eventually(LIMIT, || pool.status().queued == 2).await,
        "two queued: {:?}",
        pool.status()
    );
    let status = pool.status();
    assert_eq!(status.active, 2);
    assert_eq!(status.idle, 0);
    assert_eq!(status.max_queued, 2);
    let refused = pool.enqueue(&Cmd::Echo("no room".into())).await;
    assert!(
        matches!(refused, Err(drover::Error::QueueFull { .. })),
        "{refused:?}"
    );
    assert_eq!(pool.status().queue_full, 1);
    assert_eq!(pool.status().accepted, 8, "a refusal is not accepted");
    for task in slow {
        within(LIMIT, "slow request", task).await.unwrap().unwrap();
    }

    // A crash: its slot remembers how it ended, and the restart is counted.
    let mut events = pool.events();
    let _ = within(LIMIT, "crash", pool.enqueue(&Cmd::Exit(3))).await;
    let exit = next_exit(&mut events).await;
    assert!(
        eventually(LIMIT, || {
            let s = pool.status();
            s.restarts == 1 && s.workers.len() == 2 && s.idle == 2
        })
        .await,
        "{:?}",
        pool.status()
    );
    let status = pool.status();
    let slot = status
        .workers
        .iter()
        .find(|w| w.index == exit.index)
        .expect("the slot is filled again");
    let last = slot.last_exit.as_deref().expect("its last exit");
    assert!(last.contains(&exit.pid.to_string()), "{last}");
    assert!(last.contains("exit code 3"), "{last}");

    // It serializes with every figure named.
    let json = serde_json::to_value(&status).unwrap();
    for key in [
        "started_at_ms",
        "accepted",
        "active",
        "idle",
        "queued",
        "max_queued",
        "queue_full",
        "slow",
        "restarts",
    ] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    assert_eq!(json["workers"][0]["state"], "ready");
    let back: drover::PoolStatus = serde_json::from_value(json).unwrap();
    assert_eq!(back, status);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    assert_eq!(pool.status().phase, "stopped");
}

fn common_millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// What the process logs, from a global subscriber installed once.
fn log() -> &'static std::sync::Mutex<Vec<u8>> {
    use std::sync::{Mutex, OnceLock};
    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Writer(log))
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        log
    })
}

struct Writer(&'static std::sync::Mutex<Vec<u8>>);

impl std::io::Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_is_logged_once_with_its_worker_and_counted() {
    let log = log();
    let pool = within(
        LIMIT,
        "spawn",
        pool(1)
            .slow_request_log(std::time::Duration::from_millis(200))
            .health_interval(std::time::Duration::from_millis(50))
            .spawn(),
    )
    .await
    .unwrap();
    within(
        LIMIT,
        "status",
        pool.enqueue(&Cmd::Status("resizing cat.png".into())),
    )
    .await
    .unwrap();
    let pid = common::pids(&pool)[0];
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(&Cmd::Sleep(1200)).send().await.map(|r| r.id()) })
    };
    assert!(
        eventually(LIMIT, || pool.status().slow == 1).await,
        "{:?}",
        pool.status()
    );
    let id = within(LIMIT, "the slow answer", slow)
        .await
        .unwrap()
        .unwrap();
    // A quick one is not slow; the slow one was counted once, not at
    // every check while it ran.
    within(LIMIT, "echo", pool.enqueue(&Cmd::Echo("quick".into())))
        .await
        .unwrap();
    assert_eq!(pool.status().slow, 1);
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("slow request") && l.contains(&id.to_string()))
        .collect();
    assert_eq!(lines.len(), 1, "logged once: {text}");
    let line = lines[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&format!("pid={pid}")), "{line}");
    assert!(line.contains("resizing cat.png"), "{line}");
    assert!(line.contains("elapsed="), "{line}");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
