//! `idle()`: of the pool (nothing in flight, nothing queued) and of a job
//! queue's runner (nothing claimed or running, nothing due), under load;
//! and jobs workers post for a given time (`Worker::post_job_at`).

mod common;

use std::time::{Duration, SystemTime};

use common::{next_custom, pool, temp_db, within, Cmd, LIMIT};
use drover::queue::{JobQueue, SqliteStore, Stats};
use futures::FutureExt;

/// The answers of `pool`'s workers, summed.
fn served(pool: &drover::Supervisor) -> u64 {
    pool.health().iter().map(|h| h.served).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_is_idle_only_once_every_queued_request_is_answered() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2).max_concurrency(2).max_queue(100).spawn(),
    )
    .await
    .unwrap();
    // A request is accepted on its first poll: the workers take 4, the
    // other 16 wait in the queue.
    let mut requests: Vec<_> = (0..20)
        .map(|i| Box::pin(pool.enqueue(&Cmd::SlowEcho(format!("{i}"), 100))))
        .collect();
    for request in &mut requests {
        assert!(futures::poll!(request.as_mut()).is_pending());
    }
    let held: usize = pool.health().iter().map(|h| h.in_flight).sum();
    assert_eq!(held, 4, "the workers hold 4; 16 are queued");

    within(LIMIT, "idle", pool.idle()).await;
    // Every answer had been handed over when idle resolved: each request's
    // future is ready without waiting.
    let mut answered = 0;
    for (i, request) in requests.into_iter().enumerate() {
        let answer = request
            .now_or_never()
            .unwrap_or_else(|| panic!("request {i} was not answered when idle resolved"))
            .unwrap();
        assert_eq!(answer.data::<String>().unwrap(), i.to_string());
        answered += 1;
    }
    assert_eq!(answered, 20);
    assert_eq!(served(&pool), 20);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_and_dead_workers_end_their_requests_for_idle() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let mut requests = vec![
        Box::pin(pool.request(&Cmd::Exit(1)).retries(0).send()),
        Box::pin(pool.request(&Cmd::Fail("no".into())).send()),
    ];
    for i in 0..6 {
        requests.push(Box::pin(
            pool.request(&Cmd::SlowEcho(format!("{i}"), 50)).send(),
        ));
    }
    for request in &mut requests {
        assert!(futures::poll!(request.as_mut()).is_pending());
    }
    within(LIMIT, "idle", pool.idle()).await;
    let outcomes: Vec<_> = requests
        .into_iter()
        .map(|r| r.now_or_never().expect("ended before idle resolved"))
        .collect();
    let lost = outcomes[0].as_ref().unwrap_err();
    assert!(matches!(lost, drover::Error::WorkerLost { .. }), "{lost}");
    let failed = outcomes[1].as_ref().unwrap_err();
    assert!(matches!(failed, drover::Error::Remote { .. }), "{failed}");
    assert!(outcomes[2..].iter().all(Result::is_ok));
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn an_idle_pool_is_idle_at_once() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    within(Duration::from_secs(1), "idle on a fresh pool", pool.idle()).await;
    pool.enqueue(&Cmd::Pid).await.unwrap();
    within(Duration::from_secs(1), "idle once answered", pool.idle()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn requests_held_by_a_drained_pool_keep_it_busy_until_they_leave_or_run() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    within(LIMIT, "drain", pool.drain()).await.unwrap();
    let mut left = Box::pin(pool.enqueue(&Cmd::Pid));
    let mut kept = Box::pin(pool.enqueue(&Cmd::Echo("kept".into())));
    assert!(futures::poll!(left.as_mut()).is_pending());
    assert!(futures::poll!(kept.as_mut()).is_pending());

    let idle = pool.idle();
    tokio::pin!(idle);
    assert!(futures::poll!(idle.as_mut()).is_pending(), "two are queued");
    drop(left);
    assert!(futures::poll!(idle.as_mut()).is_pending(), "one is queued");
    within(LIMIT, "resume", pool.resume()).await.unwrap();
    within(LIMIT, "idle", idle).await;
    let answer = kept.now_or_never().expect("answered before idle").unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "kept");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_is_idle_only_once_every_due_job_has_run() {
    let store = SqliteStore::open(temp_db("idle-runner")).await.unwrap();
    // Room for 4 jobs at a time: most wait in the store, due, unclaimed.
    let queue = JobQueue::builder(store).max_running(4).build();
    let pool = within(LIMIT, "spawn", pool(2).max_concurrency(2).spawn())
        .await
        .unwrap();
    for i in 0..40 {
        queue
            .push(&Cmd::SlowEcho(format!("job {i}"), 20))
            .await
            .unwrap();
    }
    // Asked at once: the runner holds nothing yet, and every job is due.
    let runner = queue.start(pool.clone());
    within(LIMIT, "the runner's idle", runner.idle()).await;
    assert_eq!(queue.stats().await.unwrap(), Stats::default(), "jobs left");
    assert_eq!(served(&pool), 40);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_is_not_idle_while_jobs_pushed_elsewhere_are_due() {
    let path = temp_db("idle-elsewhere");
    let queue = JobQueue::<_, Cmd>::builder(SqliteStore::open(&path).await.unwrap())
        .poll_interval(Duration::from_millis(500))
        .build();
    // Another handle on the file, as another process would push: the
    // runner is not woken, and sees the jobs at its next poll.
    let elsewhere = JobQueue::new(SqliteStore::open(&path).await.unwrap());
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    within(LIMIT, "idle, nothing queued", runner.idle()).await;
    for i in 0..5 {
        elsewhere.push(&Cmd::Echo(format!("{i}"))).await.unwrap();
    }
    within(LIMIT, "the runner's idle", runner.idle()).await;
    assert_eq!(queue.stats().await.unwrap(), Stats::default(), "jobs left");
    assert_eq!(served(&pool), 5);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_is_not_idle_while_jobs_its_workers_posted_are_due() {
    let store = SqliteStore::open(temp_db("idle-posted")).await.unwrap();
    let queue = JobQueue::new(store);
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    for i in 0..10 {
        let follow_up = Cmd::SlowEcho(format!("follow-up {i}"), 20);
        queue
            .push(&Cmd::PostJob(Box::new(follow_up)))
            .await
            .unwrap();
    }
    within(LIMIT, "the runner's idle", runner.idle()).await;
    assert_eq!(queue.stats().await.unwrap(), Stats::default(), "jobs left");
    assert_eq!(served(&pool), 20, "each job and the job it posted ran");
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn an_idle_runner_is_idle_at_once_whatever_timers_wait() {
    let store = SqliteStore::open(temp_db("idle-at-once")).await.unwrap();
    let queue = JobQueue::new(store);
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    within(
        Duration::from_secs(2),
        "idle, nothing queued",
        runner.idle(),
    )
    .await;
    queue
        .push_after(Duration::from_secs(3600), &Cmd::Pid)
        .await
        .unwrap();
    within(
        Duration::from_secs(2),
        "idle, a timer an hour away",
        runner.idle(),
    )
    .await;
    assert_eq!(queue.stats().await.unwrap().scheduled, 1);
    assert_eq!(served(&pool), 0);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_worker_posts_for_a_time_runs_no_sooner() {
    let store = SqliteStore::open(temp_db("post-at")).await.unwrap();
    let queue = JobQueue::new(store);
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());
    let at = SystemTime::now() + Duration::from_millis(1500);
    let soon = Cmd::Emit("posted at ran".into());
    queue
        .push(&Cmd::PostJobAt(at, Box::new(soon)))
        .await
        .unwrap();
    // Far past what the store's times hold: kept as the farthest time,
    // not wrapped into the past.
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 60);
    let never = Cmd::Emit("far job ran".into());
    queue
        .push(&Cmd::PostJobAt(far, Box::new(never)))
        .await
        .unwrap();

    // Both posting jobs ran; what they posted is not due: idle.
    within(LIMIT, "the runner's idle", runner.idle()).await;
    let stats = queue.stats().await.unwrap();
    if SystemTime::now() < at {
        assert_eq!(
            stats,
            Stats {
                scheduled: 2,
                ..Stats::default()
            }
        );
    }
    next_custom(&mut events, "posted at ran").await;
    assert!(SystemTime::now() >= at, "the job ran before its time");
    within(LIMIT, "the runner's idle", runner.idle()).await;
    assert_eq!(
        queue.stats().await.unwrap(),
        Stats {
            scheduled: 1,
            ..Stats::default()
        },
        "the far job waits"
    );
    assert_eq!(served(&pool), 3);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
