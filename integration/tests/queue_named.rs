//! Named queues with their own concurrency, priorities within a queue,
//! and unique jobs.

mod common;

use std::time::Duration;

use common::queue::served;
use common::{next_custom, pool, temp_db, within, Cmd, LIMIT};
use drover::queue::{Enqueue, JobQueue, PgStore, Pushed, SqliteStore, Store};

/// Higher priorities run first; equal ones oldest first.
async fn priorities<S: Store>(store: S) {
    let queue = JobQueue::<_, Cmd>::builder(store).max_running(1).build();
    for (name, priority) in [
        ("low", -5),
        ("normal a", 0),
        ("urgent", 10),
        ("normal b", 0),
    ] {
        queue
            .push_with(&Cmd::Emit(name.into()), Enqueue::new().priority(priority))
            .await
            .unwrap();
    }
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());
    let mut order = Vec::new();
    while order.len() < 4 {
        let event = within(LIMIT, "a job's event", events.recv()).await.unwrap();
        if let drover::Event::Custom(e) = event {
            order.push(e.name);
        }
    }
    assert_eq!(order, ["urgent", "normal a", "normal b", "low"]);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// A unique key keeps a second push from storing a duplicate while the
/// first is pending; once it is done, the key is free.
async fn unique_jobs<S: Store>(store: S) {
    let queue = JobQueue::<_, Cmd>::new(store);
    let first = queue
        .push_with(
            &Cmd::Emit("sync 42".into()),
            Enqueue::new().unique("sync:42"),
        )
        .await
        .unwrap();
    let Pushed::New(id) = first else {
        panic!("the first push stores: {first:?}")
    };
    let again = queue
        .push_with(
            &Cmd::Emit("sync 42".into()),
            Enqueue::new().unique("sync:42"),
        )
        .await
        .unwrap();
    assert_eq!(again, Pushed::Duplicate(id));
    let other = queue
        .push_with(
            &Cmd::Emit("sync 43".into()),
            Enqueue::new().unique("sync:43"),
        )
        .await
        .unwrap();
    assert!(matches!(other, Pushed::New(n) if n != id));
    assert_eq!(queue.stats().await.unwrap().ready, 2);

    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    within(LIMIT, "the queue to empty", queue.until_empty())
        .await
        .unwrap();
    assert_eq!(served(&pool), 2, "the duplicate never ran");
    // Done: the key is free again.
    let later = queue
        .push_with(
            &Cmd::Emit("sync 42".into()),
            Enqueue::new().unique("sync:42"),
        )
        .await
        .unwrap();
    assert!(matches!(later, Pushed::New(n) if n != id), "{later:?}");
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// Two named queues on one pool: each runner takes only its own queue's
/// jobs, at its own concurrency.
async fn named_queues<S: Store>(emails: S, reports: S) {
    let emails = JobQueue::<_, Cmd>::builder(emails)
        .max_running(1)
        .poll_interval(Duration::from_millis(50))
        .build();
    let reports = JobQueue::<_, Cmd>::builder(reports)
        .max_running(4)
        .poll_interval(Duration::from_millis(50))
        .accept_posted(false)
        .build();
    let pool = within(LIMIT, "spawn", pool(4).spawn()).await.unwrap();
    let mut events = pool.events();
    // Only the reports runner: the emails wait.
    let reports_runner = reports.start(pool.clone());
    emails
        .push_many(&(0..4).map(|_| Cmd::Sleep(100)).collect::<Vec<_>>())
        .await
        .unwrap();
    reports.push(&Cmd::Emit("report ran".into())).await.unwrap();
    next_custom(&mut events, "report ran").await;
    within(LIMIT, "the reports runner's idle", reports_runner.idle()).await;
    assert_eq!(
        emails.stats().await.unwrap().ready,
        4,
        "not the reports runner's"
    );
    assert_eq!(reports.stats().await.unwrap().ready, 0);

    // The emails runner: one at a time, though four workers are free.
    let emails_runner = emails.start(pool.clone());
    let mut most = 0;
    let drained = within(LIMIT, "the emails", async {
        loop {
            let stats = emails.stats().await.unwrap();
            most = most.max(stats.running);
            let in_flight: usize = pool.health().iter().map(|h| h.in_flight).sum();
            assert!(in_flight <= 1, "{in_flight} emails at once");
            if stats.ready == 0 && stats.running == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    drained.await;
    assert_eq!(most, 1, "max_running(1)");
    assert_eq!(served(&pool), 5);
    within(LIMIT, "stop", emails_runner.stop()).await;
    within(LIMIT, "stop", reports_runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_priorities() {
    priorities(SqliteStore::open(temp_db("prio")).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_priorities() {
    let Some((store, schema)) = common::pg::store("drover_prio").await else {
        return;
    };
    priorities(store).await;
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unique_jobs() {
    unique_jobs(SqliteStore::open(temp_db("unique")).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unique_jobs() {
    let Some((store, schema)) = common::pg::store("drover_unique").await else {
        return;
    };
    unique_jobs(store).await;
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_named_queues() {
    let store = SqliteStore::open(temp_db("named")).await.unwrap();
    named_queues(store.named("emails"), store.named("reports")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_named_queues() {
    let Some((store, schema)) = common::pg::store("drover_named").await else {
        return;
    };
    let other: PgStore = store.named("reports");
    named_queues(store.named("emails"), other).await;
    schema.drop_now().await;
}
