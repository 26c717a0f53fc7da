//! The core pool: round trips, concurrency, events, routing, stopping.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{alive, eventually, exists, pids, pool, within, Cmd, LIMIT};
use drover::{Event, Routing, WorkerState};

#[tokio::test]
async fn typed_round_trip() {
    let pool = within(LIMIT, "spawn", pool(2).spawn())
        .await
        .expect("spawn");
    let answer = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo("hello".into())))
        .await
        .expect("echo");
    assert_eq!(answer.data::<String>().unwrap(), "hello");
    assert_eq!(answer.id().get_version_num(), 4);
    assert!(pids(&pool).contains(&answer.pid()));
    assert!(answer.created_at() <= std::time::SystemTime::now());
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// A handler that takes the payload out of its request answers with the
/// very bytes the caller sent.
#[tokio::test]
async fn a_taken_payload_goes_back_as_it_came() {
    let pool = within(LIMIT, "spawn", pool(1).spawn())
        .await
        .expect("spawn");
    let sent = drover::proto::encode_value(&Cmd::EchoPayload).unwrap();
    let answer = within(LIMIT, "echo", pool.enqueue_bytes(sent.clone()))
        .await
        .expect("echo");
    assert_eq!(&answer.bytes()[..], &sent[..]);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_each_get_their_own_answer() {
    thousand_concurrent(pool(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_on_current_thread_workers() {
    thousand_concurrent(pool(4).env("DROVER_TEST_RUNTIME", "current_thread")).await;
}

async fn thousand_concurrent(builder: drover::Builder) {
    let pool = within(LIMIT, "spawn", builder.max_concurrency(8).spawn())
        .await
        .expect("spawn");
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let text = format!("request {i}");
                let answer = pool
                    .enqueue(&Cmd::Echo(text.clone()))
                    .await
                    .expect("answer");
                assert_eq!(answer.data::<String>().unwrap(), text);
                answer.pid()
            })
        })
        .collect();
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    for task in tasks {
        let pid = within(LIMIT, "answer", task).await.expect("task");
        *per_pid.entry(pid).or_default() += 1;
    }
    assert_eq!(per_pid.values().sum::<usize>(), 1000);
    assert_eq!(per_pid.len(), 4, "every worker served: {per_pid:?}");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn heavier_worker_gets_clearly_fewer_requests() {
    for routing in [Routing::LeastLoaded, Routing::LowestRss] {
        let pool = within(
            LIMIT,
            "spawn",
            pool(3)
                .env("DROVER_TEST_HOG_MB", "200")
                .health_interval(Duration::from_millis(20))
                .routing(routing)
                .spawn(),
        )
        .await
        .expect("spawn");
        let hog = pool.health().iter().find(|h| h.index == 0).unwrap().pid;
        // Wait until the sampler has seen the difference.
        let seen = eventually(LIMIT, || {
            let health = pool.health();
            let hog_rss = health
                .iter()
                .find(|h| h.pid == hog)
                .and_then(|h| h.rss)
                .unwrap_or(0);
            health
                .iter()
                .filter(|h| h.pid != hog)
                .all(|h| h.rss.is_some_and(|rss| hog_rss > rss + 150 * 1024 * 1024))
        })
        .await;
        assert!(seen, "sampler never saw the hog: {:?}", pool.health());

        let mut per_pid: HashMap<u32, usize> = HashMap::new();
        for _ in 0..300 {
            let answer = within(LIMIT, "pid", pool.enqueue(&Cmd::Pid))
                .await
                .expect("pid");
            *per_pid.entry(answer.pid()).or_default() += 1;
        }
        let to_hog = per_pid.get(&hog).copied().unwrap_or(0);
        assert!(
            to_hog < 30,
            "{routing:?}: hog got {to_hog} of 300: {per_pid:?}"
        );
        within(LIMIT, "hard kill", pool.hard_kill()).await;
    }
}

#[tokio::test]
async fn busy_worker_gets_nothing_until_ready_again() {
    // Round robin, so the ready-again worker's turn comes whatever its
    // memory compared with the others'.
    let pool = within(LIMIT, "spawn", pool(3).routing(Routing::RoundRobin).spawn())
        .await
        .expect("spawn");
    let busy_pid: u32 = within(LIMIT, "busy", pool.enqueue(&Cmd::Busy))
        .await
        .unwrap()
        .data()
        .unwrap();
    assert!(
        eventually(LIMIT, || pool
            .health()
            .iter()
            .any(|h| h.pid == busy_pid && h.state == WorkerState::Busy))
        .await,
        "worker never became busy"
    );
    for _ in 0..100 {
        let answer = within(LIMIT, "pid", pool.enqueue(&Cmd::Pid)).await.unwrap();
        assert_ne!(answer.pid(), busy_pid, "a busy worker got a request");
    }
    pool.broadcast("wake", &()).unwrap();
    assert!(
        eventually(LIMIT, || pool
            .health()
            .iter()
            .any(|h| h.pid == busy_pid && h.state == WorkerState::Ready))
        .await,
        "worker never became ready again"
    );
    let mut seen = HashSet::new();
    for _ in 0..30 {
        seen.insert(
            within(LIMIT, "pid", pool.enqueue(&Cmd::Pid))
                .await
                .unwrap()
                .pid(),
        );
    }
    assert!(
        seen.contains(&busy_pid),
        "the ready-again worker got no request: {seen:?}"
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn events_both_ways_and_broadcast_reaches_every_worker() {
    let pool = within(LIMIT, "spawn", pool(3).spawn())
        .await
        .expect("spawn");
    let mut events = pool.events();
    let all: HashSet<u32> = pids(&pool).into_iter().collect();

    // Worker to supervisor.
    within(LIMIT, "emit", pool.enqueue(&Cmd::Emit("hello".into())))
        .await
        .unwrap();
    let custom = within(LIMIT, "custom event", async {
        loop {
            if let Some(Event::Custom(e)) = events.recv().await {
                return e;
            }
        }
    })
    .await;
    assert_eq!(custom.name, "hello");
    assert_eq!(custom.data::<u32>().unwrap(), custom.pid);
    assert!(all.contains(&custom.pid));

    // Supervisor to every worker, each answering with an event.
    assert_eq!(pool.broadcast("ping-all", &"marco".to_string()).unwrap(), 3);
    let mut answered = HashSet::new();
    within(LIMIT, "pongs", async {
        while answered.len() < 3 {
            if let Some(Event::Custom(e)) = events.recv().await {
                if e.name == "pong" {
                    let (pid, text): (u32, String) = e.data().unwrap();
                    assert_eq!(pid, e.pid);
                    assert_eq!(text, "marco");
                    answered.insert(pid);
                }
            }
        }
    })
    .await;
    assert_eq!(answered, all);

    // And to one worker.
    let target = pool.health()[1].clone();
    pool.emit_to(target.worker_id, "ping-all", &"polo".to_string())
        .unwrap();
    let from = within(LIMIT, "targeted pong", async {
        loop {
            if let Some(Event::Custom(e)) = events.recv().await {
                return e.pid;
            }
        }
    })
    .await;
    assert_eq!(from, target.pid);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn lifecycle_events_spawned_online_exited() {
    let pool = pool(2).start().expect("start");
    let mut events = pool.events();
    within(LIMIT, "online", pool.online())
        .await
        .expect("online");
    let mut spawned = 0;
    within(LIMIT, "online event", async {
        loop {
            match events.recv().await {
                Some(Event::WorkerSpawned { .. }) => spawned += 1,
                Some(Event::Online) => break,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(spawned, 2);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    let mut exits = Vec::new();
    while exits.len() < 2 {
        match within(LIMIT, "exit events", events.recv()).await {
            Some(Event::WorkerExited(exit)) => exits.push(exit),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(exits.len(), 2);
    for exit in exits {
        assert!(exit.requested(), "{exit}");
        assert_eq!(exit.termination, drover::Termination::Code(0), "{exit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_kill_finishes_in_flight_and_refuses_new() {
    let pool = within(LIMIT, "spawn", pool(2).spawn())
        .await
        .expect("spawn");
    let worker_pids = pids(&pool);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.enqueue(&Cmd::Sleep(500)).await })
        })
        .collect();
    // Both requests are on a worker before the kill starts.
    assert!(eventually(LIMIT, || pool.health().iter().all(|h| h.in_flight == 1)).await);
    let killer = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.soft_kill().await })
    };
    assert!(
        eventually(LIMIT, || matches!(
            futures::FutureExt::now_or_never(pool.enqueue(&Cmd::Pid)),
            Some(Err(drover::Error::ShuttingDown))
        ))
        .await,
        "new requests were not refused"
    );
    for task in slow {
        let answer = within(LIMIT, "slow answer", task)
            .await
            .unwrap()
            .expect("in-flight request finished");
        assert!(worker_pids.contains(&answer.data::<u32>().unwrap()));
    }
    within(LIMIT, "soft kill", killer).await.unwrap();
    for pid in worker_pids {
        assert!(!exists(pid), "worker {pid} still exists after soft kill");
    }
}

#[tokio::test]
async fn hard_kill_leaves_no_process() {
    let pool = within(LIMIT, "spawn", pool(3).spawn())
        .await
        .expect("spawn");
    let worker_pids = pids(&pool);
    let pending = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::Sleep(60_000)).await })
    };
    assert!(eventually(LIMIT, || pool.health().iter().any(|h| h.in_flight == 1)).await);
    within(LIMIT, "hard kill", pool.hard_kill()).await;
    for pid in &worker_pids {
        assert!(!exists(*pid), "worker {pid} still exists after hard kill");
    }
    let lost = within(LIMIT, "lost request", pending).await.unwrap();
    assert!(
        matches!(lost, Err(drover::Error::WorkerLost { .. })),
        "{lost:?}"
    );
}

#[tokio::test]
async fn dropping_the_last_handle_kills_and_reaps_every_worker() {
    let pool = within(LIMIT, "spawn", pool(3).spawn())
        .await
        .expect("spawn");
    let worker_pids = pids(&pool);
    assert!(worker_pids.iter().all(|&p| alive(p)));
    let clone = pool.clone();
    drop(pool);
    assert!(
        worker_pids.iter().all(|&p| alive(p)),
        "a clone keeps the pool alive"
    );
    drop(clone);
    assert!(
        eventually(LIMIT, || worker_pids.iter().all(|&p| !exists(p))).await,
        "workers left behind after drop"
    );
}

#[tokio::test]
async fn workers_die_with_their_supervisor() {
    let mut supervisor = common::KillOnDrop(
        std::process::Command::new(common::WORKER)
            .arg("--supervise")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start a supervisor process"),
    );
    let line = common::first_line(&mut supervisor.0).await;
    let worker_pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(worker_pids.len(), 2, "{line:?}");
    assert!(worker_pids.iter().all(|&p| alive(p)));
    supervisor.0.kill().unwrap();
    supervisor.0.wait().unwrap();
    assert!(
        eventually(LIMIT, || worker_pids.iter().all(|&p| !alive(p))).await,
        "workers outlived their supervisor"
    );
}

#[tokio::test]
async fn soft_kill_waits_for_a_busy_worker_and_runs_the_hook() {
    let pool = within(LIMIT, "spawn", pool(2).spawn())
        .await
        .expect("spawn");
    let mut events = pool.events();
    let busy_pid: u32 = within(LIMIT, "busy", pool.enqueue(&Cmd::Busy))
        .await
        .unwrap()
        .data()
        .unwrap();
    let killer = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.soft_kill().await })
    };
    // Both hooks run; the idle worker exits, the busy one stays.
    let mut hooks = HashSet::new();
    let mut exited = Vec::new();
    within(LIMIT, "hooks and the idle worker's exit", async {
        while hooks.len() < 2 || exited.is_empty() {
            match events.recv().await {
                Some(Event::Custom(e)) if e.name == "soft-kill-hook" => {
                    hooks.insert(e.pid);
                }
                Some(Event::WorkerExited(exit)) => exited.push(exit.pid),
                _ => {}
            }
        }
    })
    .await;
    assert!(!exited.contains(&busy_pid));
    assert!(alive(busy_pid), "the busy worker was not waited for");
    assert!(!killer.is_finished());
    pool.broadcast("wake", &()).unwrap();
    within(LIMIT, "soft kill", killer).await.unwrap();
    assert!(!exists(busy_pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lists_its_requests_in_flight() {
    let pool = within(LIMIT, "spawn", pool(1).max_concurrency(4).spawn())
        .await
        .expect("spawn");
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::Sleep(1_000)).await })
    };
    assert!(eventually(LIMIT, || pool.health()[0].in_flight == 1).await);
    let answer = within(LIMIT, "in flight", pool.enqueue(&Cmd::InFlight))
        .await
        .unwrap();
    let ids: Vec<String> = answer.data().unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&answer.id().to_string()));
    let slow_id = within(LIMIT, "slow", slow).await.unwrap().unwrap().id();
    assert!(ids.contains(&slow_id.to_string()));
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn the_worker_sees_the_request_as_the_caller_made_it() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let answer = within(LIMIT, "created_at", pool.enqueue(&Cmd::CreatedAt))
        .await
        .unwrap();
    let seen_by_worker: u64 = answer.data().unwrap();
    let made = answer
        .created_at()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert_eq!(seen_by_worker, made);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn hard_kill_runs_each_workers_hook() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let all: HashSet<u32> = pids(&pool).into_iter().collect();
    let mut events = pool.events();
    within(LIMIT, "hard kill", pool.hard_kill()).await;
    let mut hooked = HashSet::new();
    while hooked.len() < 2 {
        match within(LIMIT, "hook events", events.recv()).await {
            Some(Event::Custom(e)) if e.name == "hard-kill-hook" => {
                hooked.insert(e.pid);
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(hooked, all);
}
