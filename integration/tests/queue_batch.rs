//! Batches both ways: many jobs pushed in one statement, claimed and
//! completed several at a time, with the lease rules intact.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::queue::{served, settled};
use common::{pool, temp_db, within, Cmd, LIMIT};
use drover::queue::{JobQueue, NewJob, Payload, SqliteStore, Stats, Store};

/// `push_many` stores every job in order, and a runner drains them all,
/// each once.
async fn pushed_many_run_once<S: Store>(store: S) {
    let queue = JobQueue::<_, Cmd>::builder(store)
        .max_running(32)
        .poll_interval(Duration::from_millis(50))
        .build();
    let jobs: Vec<Cmd> = (0..1000).map(|i| Cmd::Echo(format!("{i}"))).collect();
    let ids = queue.push_many(&jobs).await.unwrap();
    assert_eq!(ids.len(), 1000);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order");
    assert_eq!(queue.push_many(&[]).await.unwrap(), Vec::<i64>::new());
    assert_eq!(queue.stats().await.unwrap().ready, 1000);
    let pool = within(LIMIT, "spawn", pool(2).max_concurrency(4).spawn())
        .await
        .unwrap();
    let runner = queue.start(pool.clone());
    assert!(settled(&queue, Stats::default()).await, "jobs left behind");
    within(LIMIT, "stop", runner.stop()).await;
    assert_eq!(served(&pool), 1000, "each job ran once");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_push_many_stores_all_and_each_runs_once() {
    pushed_many_run_once(SqliteStore::open(temp_db("batch-many")).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_push_many_stores_all_and_each_runs_once() {
    let Some((store, schema)) = common::pg::store("drover_batch_many").await else {
        return;
    };
    pushed_many_run_once(store).await;
    schema.drop_now().await;
}

fn job(n: u32) -> NewJob {
    NewJob::new(
        Payload::Json(format!("{{\"Echo\":\"{n}\"}}")),
        std::time::SystemTime::now(),
    )
}

/// Claims and completions in batches keep the lease rules: a claim takes
/// several jobs in one statement, no two claimers share one, a runner
/// whose lease ran out completes nothing of the job another took, and a
/// batch completes exactly the jobs its owner still holds.
async fn batches_keep_the_lease_rules<S: Store>(store: S) {
    let ids = store
        .push(&(0..15).map(job).collect::<Vec<_>>())
        .await
        .unwrap();
    let lease = Duration::from_millis(300);
    let a = store.claim("a", 10, lease).await.unwrap();
    assert_eq!(a.len(), 10, "one claim, many jobs");
    let b = store.claim("b", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(b.len(), 5, "the rest, none of a's");
    let held_a: HashSet<i64> = a.iter().map(|j| j.id).collect();
    assert!(b.iter().all(|j| !held_a.contains(&j.id)));
    assert!(store.claim("c", 10, lease).await.unwrap().is_empty());

    // a's leases run out; reaped, c takes them (a second attempt).
    let reaped = within(LIMIT, "a's leases to run out", async {
        loop {
            match store.reap().await.unwrap() {
                0 => tokio::time::sleep(Duration::from_millis(20)).await,
                n => return n,
            }
        }
    })
    .await;
    assert_eq!(reaped, 10, "only a's leases ran out, all at once");
    let c = store.claim("c", 20, Duration::from_secs(60)).await.unwrap();
    assert_eq!(c.len(), 10);
    assert!(c.iter().all(|j| j.attempts == 2));

    // A batch of a's (lost) and one of b's: a completes nothing.
    let mixed: Vec<i64> = a.iter().map(|j| j.id).chain([b[0].id]).collect();
    assert_eq!(
        store.complete(&mixed, "a").await.unwrap(),
        Vec::<i64>::new()
    );
    // b completes its own and nothing else in the same batch.
    let done = store.complete(&mixed, "b").await.unwrap();
    assert_eq!(done, vec![b[0].id]);
    let c_ids: Vec<i64> = c.iter().map(|j| j.id).collect();
    let mut done = store.complete(&c_ids, "c").await.unwrap();
    done.sort_unstable();
    assert_eq!(done, c_ids);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.running, 4, "b's other jobs");
    assert_eq!(stats.ready, 0);
    assert_eq!(ids.len(), 15);
}

#[tokio::test]
async fn sqlite_batches_keep_the_lease_rules() {
    batches_keep_the_lease_rules(SqliteStore::in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn postgres_batches_keep_the_lease_rules() {
    let Some((store, schema)) = common::pg::store("drover_batch_lease").await else {
        return;
    };
    batches_keep_the_lease_rules(store).await;
    schema.drop_now().await;
}

/// A runner's process killed (SIGKILL) while it claims and completes in
/// batches: every job is either completed or still stored (nothing
/// lost); a second runner runs exactly the jobs left, the ones the dead
/// runner held only once their leases ran out (nothing completed runs
/// twice), and each job ends completed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_batch_loses_nothing_and_repeats_only_expired_leases() {
    const N: u64 = 3000;
    let path = temp_db("batch-sigkill");
    let queue = JobQueue::<_, Cmd>::builder(SqliteStore::open(&path).await.unwrap())
        .poll_interval(Duration::from_millis(50))
        .build();
    let jobs: Vec<Cmd> = (0..N).map(|i| Cmd::SlowEcho(format!("{i}"), 1)).collect();
    queue.push_many(&jobs).await.unwrap();

    let mut first = common::KillOnDrop(
        std::process::Command::new(common::WORKER)
            .args(["--queue-batches", path.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let line = common::first_line(&mut first.0).await;
    assert_eq!(line.trim(), "draining");
    first.0.kill().unwrap(); // SIGKILL, mid-stream
    first.0.wait().unwrap();

    let stats = queue.stats().await.unwrap();
    let done = queue.finished().await.unwrap().completed;
    assert!(done >= N / 10, "completed before the kill: {done}");
    assert_eq!(
        done + stats.ready + stats.running,
        N,
        "every job completed or still stored: {stats:?}, {done} completed"
    );
    assert_eq!(stats.dead, 0);
    assert!(stats.running > 0, "killed with no job held: {stats:?}");
    let held = queue
        .list(drover::queue::JobState::Running, N as usize)
        .await
        .unwrap();
    assert_eq!(held.len() as u64, stats.running);
    assert!(held.iter().all(|j| j.attempts == 1));

    // A second runner: the held jobs wait out their leases, then run.
    let pool = within(LIMIT, "spawn", pool(2).max_concurrency(8).spawn())
        .await
        .unwrap();
    let runner = queue.start(pool.clone());
    within(LIMIT, "the queue to empty", queue.until_empty())
        .await
        .unwrap();
    within(LIMIT, "stop", runner.stop()).await;
    assert_eq!(
        served(&pool),
        stats.ready + stats.running,
        "only the jobs left ran: none completed before ran again"
    );
    assert_eq!(queue.finished().await.unwrap().completed, N);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
