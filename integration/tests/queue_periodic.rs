//! Periodic jobs: cron expressions kept in the store, each tick pushed
//! once however many runners share the queue.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{pool, temp_db, within, Cmd, LIMIT};
use drover::queue::{JobQueue, PgStore, SqliteStore, Store};

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Two runners on one queue, a job every second: at least three ticks
/// fire, and no more jobs than ticks that came.
async fn once_per_tick<S: Store>(a: S, b: S) {
    let a = JobQueue::<_, Cmd>::builder(a)
        .poll_interval(Duration::from_millis(20))
        .build();
    let b = JobQueue::<_, Cmd>::builder(b)
        .poll_interval(Duration::from_millis(20))
        .build();
    let scheduled = SystemTime::now();
    a.schedule("tick", "* * * * * *", &Cmd::Echo("tick".into()))
        .await
        .unwrap();
    let listed = b.periodic().await.unwrap();
    assert_eq!(listed.len(), 1, "kept in the store, seen by every handle");
    assert_eq!(listed[0].cron, "* * * * * *");
    let pool_a = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let pool_b = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner_a = a.start(pool_a.clone());
    let runner_b = b.start(pool_b.clone());
    let fired = within(LIMIT, "three ticks", async {
        loop {
            let done = a.finished().await.unwrap().completed;
            if done >= 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    fired.await;
    within(LIMIT, "stop", runner_a.stop()).await;
    within(LIMIT, "stop", runner_b.stop()).await;
    let ticks = seconds(SystemTime::now()) - seconds(scheduled);
    let stats = a.stats().await.unwrap();
    let pushed = a.finished().await.unwrap().completed + stats.ready + stats.running;
    assert!(
        pushed <= ticks,
        "{pushed} jobs pushed for {ticks} ticks: a tick fired twice"
    );
    assert!(a.unschedule("tick").await.unwrap());
    assert!(!b.unschedule("tick").await.unwrap(), "gone");
    assert!(b.periodic().await.unwrap().is_empty());
    within(LIMIT, "soft kill", pool_a.soft_kill()).await;
    within(LIMIT, "soft kill", pool_b.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_periodic_jobs_fire_once_per_tick() {
    let path = temp_db("periodic");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    once_per_tick(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_periodic_jobs_fire_once_per_tick() {
    let Some((a, schema)) = common::pg::store("drover_periodic").await else {
        return;
    };
    let b = PgStore::connect_in_schema(&schema.url, &schema.name)
        .await
        .unwrap();
    once_per_tick(a, b).await;
    schema.drop_now().await;
}

#[tokio::test]
async fn a_bad_cron_expression_is_named() {
    let queue = JobQueue::<_, Cmd>::new(SqliteStore::in_memory().await.unwrap());
    let err = queue
        .schedule("bad", "every tuesday", &Cmd::Pid)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"every tuesday\""), "{err}");
    assert!(queue.periodic().await.unwrap().is_empty());
    // Replaced with the same expression: the next tick is kept.
    queue
        .schedule("daily", "0 3 * * *", &Cmd::Pid)
        .await
        .unwrap();
    let first = queue.periodic().await.unwrap()[0].next_run;
    queue
        .schedule("daily", "0 3 * * *", &Cmd::Echo("new".into()))
        .await
        .unwrap();
    let again = &queue.periodic().await.unwrap()[0];
    assert_eq!(again.next_run, first);
    assert!(matches!(&again.payload, drover::queue::Payload::Json(j) if j.contains("new")));
}
