//! Faults: every failure ends in a clear answer to every caller, a
//! replaced worker, and no leaked process or descriptor.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{alive, eventually, exists, next_exit, pids, pool, within, Cmd, LIMIT};
use drover::{Error, Event, ExitReason, Termination};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_request_ends_exactly_once_and_nothing_leaks() {
    // Warm up: the runtime's process driver opens its descriptors once.
    let warm = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    within(LIMIT, "hard kill", warm.hard_kill()).await;
    drop(warm);
    let fds_before = open_fds();

    let pool = pool(4)
        .max_concurrency(4)
        .retries(2)
        .max_queue(30_000)
        .restarts(100_000, Duration::from_secs(1))
        .await_spawn()
        .await;
    let mut events = pool.events();
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let pool = pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut kills = 0u32;
            let mut seed = 0x9e37_79b9_u32;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let health = pool.health();
                if health.is_empty() {
                    continue;
                }
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let victim = health[seed as usize % health.len()].pid;
                let pid = rustix::process::Pid::from_raw(victim as i32).unwrap();
                if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                    kills += 1;
                }
            }
            kills
        })
    };

    const N: usize = 20_000;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let text = format!("chaos {i}");
                match pool.enqueue(&Cmd::SlowEcho(text.clone(), 1)).await {
                    Ok(answer) => {
                        assert_eq!(
                            answer.data::<String>().unwrap(),
                            text,
                            "an answer reached the wrong caller"
                        );
                        true
                    }
                    Err(Error::WorkerLost { request_id, exit }) => {
                        // Retries spent: the error names the request, the
                        // worker and how it died.
                        assert!(exit.in_flight.contains(&request_id));
                        assert_eq!(exit.termination, Termination::Signal(9));
                        false
                    }
                    Err(other) => panic!("unexpected error: {other}"),
                }
            })
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        if within(LIMIT, "a chaos request", task).await.expect("task") {
            answered += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let kills = within(LIMIT, "killer", killer).await.unwrap();
    eprintln!(
        "chaos: {answered} of {N} answered, {} failed, {kills} kills",
        N - answered
    );
    assert!(kills >= 10, "the chaos task killed only {kills} workers");
    assert!(answered > N / 2, "only {answered} of {N} answered");

    // Every worker that was ever spawned is gone after the hard kill.
    let mut spawned = HashSet::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(1), events.recv()).await
    {
        if let Event::WorkerSpawned { pid, .. } = event {
            spawned.insert(pid);
        }
    }
    within(LIMIT, "hard kill", pool.hard_kill()).await;
    drop(pool);
    for pid in spawned {
        assert!(!exists(pid), "worker {pid} left behind (zombie or alive)");
    }
    assert!(
        eventually(LIMIT, || open_fds() <= fds_before).await,
        "descriptors leaked: {} before, {} after",
        fds_before,
        open_fds()
    );
}

/// `Builder::spawn` bounded by the test limit.
trait AwaitSpawn {
    async fn await_spawn(self) -> drover::Supervisor;
}

impl AwaitSpawn for drover::Builder {
    async fn await_spawn(self) -> drover::Supervisor {
        within(LIMIT, "spawn", self.spawn()).await.expect("spawn")
    }
}

#[tokio::test]
async fn a_hung_worker_is_timed_out_killed_and_replaced() {
    let pool = pool(1)
        .kill_after(Duration::from_millis(200))
        .await_spawn()
        .await;
    let mut events = pool.events();
    let hung_pid = pids(&pool)[0];
    let started = Instant::now();
    let err = within(
        LIMIT,
        "timeout",
        pool.request(&Cmd::Hang)
            .timeout(Duration::from_millis(300))
            .send(),
    )
    .await
    .unwrap_err();
    let Error::Timeout { request_id, after } = err else {
        panic!("expected a timeout, got {err:?}");
    };
    assert_eq!(after, Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(5));
    let exit = next_exit(&mut events).await;
    assert_eq!(exit.pid, hung_pid);
    assert_eq!(exit.reason, ExitReason::TimedOut { request_id });
    assert!(!exit.requested());
    let answer = within(LIMIT, "next request", pool.enqueue(&Cmd::Pid))
        .await
        .unwrap();
    assert_ne!(answer.pid(), hung_pid);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_request_that_times_out_in_the_queue_never_runs() {
    let pool = pool(1).await_spawn().await;
    let busy = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::Sleep(500)).await })
    };
    assert!(eventually(LIMIT, || pool.health()[0].in_flight == 1).await);
    let err = within(
        LIMIT,
        "queued timeout",
        pool.request(&Cmd::Emit("ran".into()))
            .timeout(Duration::from_millis(50))
            .send(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    within(LIMIT, "busy", busy).await.unwrap().unwrap();
    assert_eq!(
        pool.health()[0].served,
        1,
        "the timed-out request ran anyway"
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn cancellation_reaches_the_worker_and_the_answer_reaches_nobody() {
    let pool = pool(1).await_spawn().await;
    let mut events = pool.events();
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::WaitCancel).await })
    };
    assert!(eventually(LIMIT, || pool.health()[0].in_flight == 1).await);
    waiting.abort();
    let cancelled_id: String = common::next_custom(&mut events, "cancelled")
        .await
        .data()
        .unwrap();
    assert!(!cancelled_id.is_empty());
    // The worker answered after the cancel; the answer was dropped, the
    // slot freed, and the pool goes on.
    assert!(eventually(LIMIT, || pool.health()[0].in_flight == 0).await);
    assert_eq!(pool.health()[0].served, 1);
    let answer = within(LIMIT, "next", pool.enqueue(&Cmd::Echo("next".into())))
        .await
        .unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "next");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn retries_resend_a_request_whose_worker_died() {
    let dir = std::env::temp_dir().join(format!("drover-retry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pool = pool(2).await_spawn().await;

    // Without retries: the error names the request, the pid, the exit.
    let marker = dir.join("a").to_str().unwrap().to_owned();
    let err = within(LIMIT, "no retry", pool.enqueue(&Cmd::CrashOnce(marker)))
        .await
        .unwrap_err();
    let Error::WorkerLost { request_id, exit } = &err else {
        panic!("expected WorkerLost, got {err:?}");
    };
    let text = err.to_string();
    assert!(
        text.contains(&request_id.to_string())
            && text.contains(&exit.pid.to_string())
            && text.contains("exit code 1"),
        "{text}"
    );

    // With one retry: answered by another worker.
    let marker = dir.join("b").to_str().unwrap().to_owned();
    let answer = within(
        LIMIT,
        "retry",
        pool.request(&Cmd::CrashOnce(marker)).retries(1).send(),
    )
    .await
    .expect("retried");
    assert!(alive(answer.data::<u32>().unwrap()));
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn exit_zero_mid_request_fails_it_at_once() {
    let pool = pool(1).await_spawn().await;
    let started = Instant::now();
    let err = within(
        LIMIT,
        "exit 0",
        pool.request(&Cmd::Exit(0))
            .timeout(Duration::from_secs(20))
            .send(),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed only at its timeout"
    );
    let Error::WorkerLost { exit, .. } = &err else {
        panic!("expected WorkerLost, got {err:?}");
    };
    assert_eq!(exit.reason, ExitReason::Crashed);
    assert_eq!(exit.termination, Termination::Code(0));
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_crash_loop_spends_the_budget_and_fails_the_pool() {
    let pool = pool(2)
        .env("DROVER_TEST_CRASH_AFTER_ID", "2")
        .restarts(3, Duration::from_secs(60))
        .await_spawn()
        .await;
    let mut events = pool.events();
    let pids_before = pids(&pool);
    // One worker holds a long request, and another request waits behind.
    let held = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::Sleep(60_000)).await })
    };
    assert!(eventually(LIMIT, || pool.health().iter().any(|h| h.in_flight == 1)).await);
    // Kill the other: every replacement crashes at start.
    let _ = within(LIMIT, "exit", pool.enqueue(&Cmd::Exit(1))).await;
    let queued = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::Pid).await })
    };
    let reason = common::next_pool_failure(&mut events).await;
    assert!(
        matches!(
            &reason,
            drover::PoolFailure::RestartBudgetSpent {
                max_restarts: 3,
                ..
            }
        ),
        "{reason:?}"
    );
    assert!(
        reason
            .to_string()
            .contains("restart budget spent: 3 restarts"),
        "{reason}"
    );
    // The request in flight and the one queued both fail, saying why.
    let err = within(LIMIT, "held", held).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("pool failed"), "{err}");
    let err = within(LIMIT, "queued", queued).await.unwrap().unwrap_err();
    assert!(
        matches!(
            &err,
            Error::PoolFailed {
                reason: drover::PoolFailure::RestartBudgetSpent { .. }
            }
        ),
        "{err:?}"
    );
    let err = within(LIMIT, "refused", pool.enqueue(&Cmd::Pid))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::PoolFailed {
                reason: drover::PoolFailure::RestartBudgetSpent { .. }
            }
        ),
        "{err:?}"
    );
    assert!(
        eventually(LIMIT, || pool.health().is_empty()).await,
        "workers left: {:?}",
        pool.health()
    );
    for pid in pids_before {
        assert!(!exists(pid));
    }
}

#[tokio::test]
async fn the_crash_event_carries_the_last_lines_of_stderr() {
    let pool = pool(1).await_spawn().await;
    let mut events = pool.events();
    let lines: Vec<String> = (0..30).map(|i| format!("last words {i}")).collect();
    let err = within(LIMIT, "crash", pool.enqueue(&Cmd::StderrThenExit(lines)))
        .await
        .unwrap_err();
    let request_id = match err {
        Error::WorkerLost { request_id, .. } => request_id,
        other => panic!("expected WorkerLost, got {other:?}"),
    };
    let exit = next_exit(&mut events).await;
    assert_eq!(exit.in_flight, vec![request_id]);
    assert_eq!(exit.stderr_tail.len(), 20);
    assert_eq!(
        exit.stderr_tail.last().map(String::as_str),
        Some("last words 29")
    );
    assert_eq!(
        exit.stderr_tail.first().map(String::as_str),
        Some("last words 10")
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn health_checks_kill_a_frozen_worker_but_not_a_busy_one() {
    let pool = pool(2)
        .max_concurrency(2)
        .health_check(Duration::from_millis(50), Duration::from_millis(400))
        .await_spawn()
        .await;
    let mut events = pool.events();
    // A long CPU-bound request answers pings all along.
    let spin = within(LIMIT, "spin", pool.enqueue(&Cmd::Spin(1_500)))
        .await
        .expect("a busy worker survives");
    let spinner = spin.data::<u32>().unwrap();
    assert!(alive(spinner));
    // A stopped process answers nothing.
    let frozen = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::Freeze).await })
    };
    let exit = next_exit(&mut events).await;
    assert!(
        matches!(exit.reason, ExitReason::HealthCheck { .. }),
        "{exit:?}"
    );
    assert!(exit.to_string().contains("health check"), "{exit}");
    let _ = within(LIMIT, "frozen request", frozen).await;
    assert!(eventually(LIMIT, || pool.health().len() == 2).await);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

// Hostile workers: each time the supervisor stays up, the error names the
// worker and what it did, and the other workers keep serving.

async fn hostile(cmd: Cmd, expect: &str) {
    let pool = pool(3).await_spawn().await;
    let mut events = pool.events();
    let others_serve = |pool: drover::Supervisor| async move {
        for i in 0..10 {
            let text = format!("still here {i}");
            let answer = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo(text.clone())))
                .await
                .unwrap();
            assert_eq!(answer.data::<String>().unwrap(), text);
        }
    };
    let result = within(
        LIMIT,
        "hostile request",
        pool.request(&cmd).timeout(Duration::from_secs(20)).send(),
    )
    .await;
    let exit = next_exit(&mut events).await;
    let text = exit.to_string();
    assert!(
        text.contains(&exit.pid.to_string()) && text.contains(expect),
        "{text}"
    );
    if let Err(err) = result {
        assert!(
            !matches!(err, Error::Timeout { .. }),
            "the request hung to its timeout: {err}"
        );
    }
    assert!(!exists(exit.pid));
    others_serve(pool.clone()).await;
    assert!(eventually(LIMIT, || pool.health().len() == 3).await);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn hostile_worker_writes_garbage() {
    hostile(Cmd::Garbage, "does not decode as a message").await;
}

#[tokio::test]
async fn hostile_worker_announces_a_4_gib_frame() {
    hostile(
        Cmd::HugeFrame(u32::MAX),
        "frame of 4294967295 bytes exceeds the frame limit",
    )
    .await;
}

#[tokio::test]
async fn hostile_worker_closes_its_socket_mid_frame() {
    hostile(Cmd::HalfFrame, "in the middle of a frame").await;
}

#[tokio::test]
async fn hostile_worker_answers_a_request_it_never_got() {
    hostile(Cmd::AnswerUnknown, "never given").await;
}

#[tokio::test]
async fn hostile_worker_floods_events() {
    let pool = pool(2).await_spawn().await;
    let flooder = within(LIMIT, "flood", pool.enqueue(&Cmd::Flood(50_000)))
        .await
        .expect("flood acked");
    let answer = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo("calm".into())))
        .await
        .unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "calm");
    assert!(alive(flooder.pid()));
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn hostile_worker_speaks_another_protocol_version() {
    let err = within(
        LIMIT,
        "spawn",
        pool(2).env("DROVER_TEST_BAD_VERSION", "1").spawn(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("protocol version 99")
            && text.contains(&format!(
                "this side speaks {}",
                drover::proto::PROTOCOL_VERSION
            )),
        "{text}"
    );
    let Error::Handshake { pid, .. } = err else {
        panic!("expected a handshake error: {err:?}");
    };
    assert!(!exists(pid));
}

#[tokio::test]
async fn hostile_worker_never_completes_the_handshake() {
    let err = within(
        LIMIT,
        "spawn",
        drover::Supervisor::builder("/bin/sleep")
            .arg("100")
            .start_timeout(Duration::from_millis(300))
            .spawn(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("no handshake within the start timeout"),
        "{err}"
    );
}

#[tokio::test]
async fn a_binary_that_vanishes_fails_the_pool_instead_of_shrinking_it() {
    let dir = std::env::temp_dir().join(format!("drover-vanish-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("worker");
    // A link, not a copy: a freshly written copy can fail to exec with
    // ETXTBSY while another test's fork still holds it open for writing.
    std::os::unix::fs::symlink(common::WORKER, &path).unwrap();
    let pool = drover::Supervisor::builder(&path)
        .workers(2)
        .restarts(2, Duration::from_secs(60))
        .await_spawn()
        .await;
    let mut events = pool.events();
    std::fs::remove_file(&path).unwrap();
    let _ = within(LIMIT, "exit", pool.enqueue(&Cmd::Exit(1))).await;
    let reason = common::next_pool_failure(&mut events).await;
    let drover::PoolFailure::RestartBudgetSpent { last, .. } = &reason else {
        panic!("not a spent restart budget: {reason:?}");
    };
    assert!(last.contains(path.to_str().unwrap()), "{reason}");
    assert!(eventually(LIMIT, || pool.health().is_empty()).await);
    std::fs::remove_dir_all(&dir).unwrap();
}
