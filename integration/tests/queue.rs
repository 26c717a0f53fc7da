//! The durable job queue: SQLite files and the machine's PostgreSQL.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::queue::settled;
use common::{eventually, pool, within, Cmd, LIMIT};
use drover::queue::{JobQueue, SqliteStore, Stats};

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-queue-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("jobs.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_and_leave_the_queue() {
    let queue = JobQueue::new(SqliteStore::open(temp_db("run")).await.unwrap());
    let pool = within(LIMIT, "spawn", pool(2).max_concurrency(4).spawn())
        .await
        .unwrap();
    for i in 0..200 {
        queue.push(&Cmd::Echo(format!("job {i}"))).await.unwrap();
    }
    assert_eq!(queue.stats().await.unwrap().ready, 200);
    let runner = queue.start(pool.clone());
    assert!(settled(&queue, Stats::default()).await, "jobs left behind");
    assert_eq!(pool.health().iter().map(|h| h.served).sum::<u64>(), 200);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn timers_fire_when_due_and_not_before() {
    let queue = JobQueue::builder(SqliteStore::in_memory().await.unwrap())
        .poll_interval(Duration::from_secs(5))
        .build();
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    let pushed = Instant::now();
    let id = queue
        .push_after(Duration::from_millis(400), &Cmd::Pid)
        .await
        .unwrap();
    let cancelled = queue
        .push_after(Duration::from_millis(200), &Cmd::Pid)
        .await
        .unwrap();
    assert!(queue.cancel(cancelled).await.unwrap());
    assert_eq!(queue.stats().await.unwrap().scheduled, 1);
    assert!(settled(&queue, Stats::default()).await);
    let waited = pushed.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "the timer fired after {waited:?}"
    );
    assert_eq!(pool.health()[0].served, 1, "only the one timer ran");
    assert!(!queue.cancel(id).await.unwrap(), "a finished job is gone");
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn failing_jobs_back_off_then_die_with_their_error() {
    let queue = JobQueue::builder(SqliteStore::in_memory().await.unwrap())
        .max_attempts(3)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build();
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    let id = queue.push(&Cmd::Fail("out of ink".into())).await.unwrap();
    assert!(
        settled(
            &queue,
            Stats {
                dead: 1,
                ..Stats::default()
            }
        )
        .await,
        "the job never died"
    );
    let dead = queue.dead().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].last_error.contains("out of ink"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(pool.health()[0].served, 3);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_runner_that_died_run_again() {
    let path = temp_db("crash");
    // First life, in a process of its own: two jobs are running when the
    // process is killed.
    let mut first = common::KillOnDrop(
        std::process::Command::new(common::WORKER)
            .args(["--queue-crash", path.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let line = common::first_line(&mut first.0).await;
    assert_eq!(line.trim(), "running");
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    // Second life, on the same file: the leases run out, the jobs run.
    let queue = JobQueue::<_, Cmd>::builder(SqliteStore::open(&path).await.unwrap())
        .poll_interval(Duration::from_millis(50))
        .build();
    assert_eq!(
        queue.stats().await.unwrap().running,
        2,
        "the jobs were held when it died"
    );
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    // The same jobs (each sleeps a minute) are handed to the new workers.
    assert!(
        eventually(LIMIT, || pool.health().iter().all(|h| h.in_flight == 1)).await,
        "the jobs did not run again"
    );
    drop(runner);
    within(LIMIT, "hard kill", pool.hard_kill()).await;
}

#[tokio::test]
async fn workers_post_jobs_to_the_queue() {
    let queue = JobQueue::new(SqliteStore::in_memory().await.unwrap());
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());
    // A job that posts a job that emits an event.
    queue
        .push(&Cmd::PostJob(Box::new(Cmd::Emit("posted job ran".into()))))
        .await
        .unwrap();
    common::next_custom(&mut events, "posted job ran").await;
    assert!(settled(&queue, Stats::default()).await);
    assert_eq!(pool.health()[0].served, 2);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_job_answered_in_this_session_reaches_its_waiter() {
    let queue = JobQueue::new(SqliteStore::in_memory().await.unwrap());
    // No runner yet: no answer, and the job stays queued.
    let err = queue
        .push_and_wait(&Cmd::Echo("later".into()), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no answer within"), "{err}");
    assert_eq!(queue.stats().await.unwrap().ready, 1);

    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    let answer = within(
        LIMIT,
        "answer",
        queue.push_and_wait(&Cmd::Echo("now".into()), LIMIT),
    )
    .await
    .unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "now");
    // The unanswered one ran too, at least once.
    assert!(settled(&queue, Stats::default()).await);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_share_a_postgres_queue_and_run_each_job_once() {
    let Some((store, schema)) = common::pg::store("drover_share").await else {
        return;
    };
    let queue = JobQueue::builder(store)
        .poll_interval(Duration::from_millis(50))
        .build();
    let ids: HashSet<i64> = {
        let mut ids = HashSet::new();
        for i in 0..300 {
            ids.insert(queue.push(&Cmd::Echo(format!("pg {i}"))).await.unwrap());
        }
        ids
    };
    assert_eq!(ids.len(), 300);
    let pool_a = within(LIMIT, "spawn", pool(2).max_concurrency(4).spawn())
        .await
        .unwrap();
    let pool_b = within(LIMIT, "spawn", pool(2).max_concurrency(4).spawn())
        .await
        .unwrap();
    let a = queue.start(pool_a.clone());
    let b = queue.start(pool_b.clone());
    assert!(settled(&queue, Stats::default()).await, "jobs left behind");
    within(LIMIT, "stop", a.stop()).await;
    within(LIMIT, "stop", b.stop()).await;
    let served_a: u64 = pool_a.health().iter().map(|h| h.served).sum();
    let served_b: u64 = pool_b.health().iter().map(|h| h.served).sum();
    // Each job ran exactly once (no crash, so no second run), and both
    // runners took part.
    assert_eq!(served_a + served_b, 300, "a: {served_a}, b: {served_b}");
    assert!(served_a > 0 && served_b > 0, "a: {served_a}, b: {served_b}");
    within(LIMIT, "soft kill", pool_a.soft_kill()).await;
    within(LIMIT, "soft kill", pool_b.soft_kill()).await;
    schema.drop_now().await;
}

#[tokio::test]
async fn postgres_timers_and_dead_jobs() {
    let Some((store, schema)) = common::pg::store("drover_timers").await else {
        return;
    };
    let queue = JobQueue::builder(store)
        .max_attempts(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .poll_interval(Duration::from_millis(50))
        .build();
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    let started = Instant::now();
    queue
        .push_after(Duration::from_millis(300), &Cmd::Pid)
        .await
        .unwrap();
    queue.push(&Cmd::Fail("nope".into())).await.unwrap();
    assert!(
        settled(
            &queue,
            Stats {
                dead: 1,
                ..Stats::default()
            }
        )
        .await
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let dead = queue.dead().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].last_error.contains("nope"));
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    schema.drop_now().await;
}

/// Settings are the builder's: a builder cloned, a queue built from it,
/// cloned and started, all without a panic; the settings take effect in
/// the runner started from a clone (one attempt; a lease whose request
/// timeout ends a job that runs longer).
#[tokio::test]
async fn settings_set_on_a_builder_take_effect_in_every_clone() {
    let store = SqliteStore::in_memory().await.unwrap();
    let base = JobQueue::builder(store).poll_interval(Duration::from_millis(50));
    let _unused = base.clone().max_attempts(9).build();
    let queue = base
        .max_attempts(1)
        .lease(Duration::from_millis(300))
        .build();
    let copy = queue.clone();
    let pool = within(
        LIMIT,
        "spawn",
        pool(1).kill_after(Duration::from_millis(100)).spawn(),
    )
    .await
    .unwrap();
    let runner = copy.start(pool.clone());
    let id = queue.push(&Cmd::Sleep(5_000)).await.unwrap();
    assert!(
        settled(
            &queue,
            Stats {
                dead: 1,
                ..Stats::default()
            }
        )
        .await,
        "the job never died"
    );
    let dead = queue.dead().await.unwrap();
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].attempts, 1, "max_attempts(1)");
    // The request's timeout is 90% of the lease.
    assert!(
        dead[0].last_error.contains("timed out after 270ms"),
        "{}",
        dead[0].last_error
    );
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
