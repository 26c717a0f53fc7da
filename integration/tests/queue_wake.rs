//! Wake-ups: a pushed job starts without waiting for the poll (NOTIFY on
//! PostgreSQL, an in-process signal on SQLite), and a lost listening
//! connection costs latency, never jobs.

mod common;

use std::time::{Duration, SystemTime};

use common::queue::served;
use common::{next_custom, pool, temp_db, within, Cmd, LIMIT};
use drover::queue::{JobQueue, PgStore, SqliteStore};
use sqlx::Connection;

/// Longer than any wait in these tests: a job that starts was woken for,
/// not polled for.
const NEVER: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pushed_by_another_postgres_client_wakes_the_runner() {
    let Some((store, schema)) = common::pg::store("drover_wake").await else {
        return;
    };
    let queue = JobQueue::<_, Cmd>::builder(store)
        .poll_interval(NEVER)
        .build();
    // Another client: as another process would push, on its own pool.
    let elsewhere = JobQueue::<_, Cmd>::new(
        PgStore::connect_in_schema(&schema.url, &schema.name)
            .await
            .unwrap(),
    );
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());
    within(LIMIT, "idle", runner.idle()).await;
    for i in 0..3 {
        let name = format!("woken {i}");
        elsewhere.push(&Cmd::Emit(name.clone())).await.unwrap();
        next_custom(&mut events, &name).await;
    }
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    schema.drop_now().await;
}

/// Concurrent pushes from another client share notifications (one for
/// any number of commits), and still every job is heard of: the runner
/// never polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_elsewhere_all_wake_the_runner() {
    let Some((store, schema)) = common::pg::store("drover_wake_many").await else {
        return;
    };
    let queue = JobQueue::<_, Cmd>::builder(store)
        .poll_interval(NEVER)
        .build();
    let elsewhere = JobQueue::<_, Cmd>::new(
        PgStore::connect_in_schema(&schema.url, &schema.name)
            .await
            .unwrap(),
    );
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    within(LIMIT, "idle", runner.idle()).await;
    let mut pushers = tokio::task::JoinSet::new();
    for t in 0..8 {
        let elsewhere = elsewhere.clone();
        pushers.spawn(async move {
            for i in 0..10 {
                elsewhere
                    .push(&Cmd::Emit(format!("pushed {t}.{i}")))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = pushers.join_next().await {
        done.unwrap();
    }
    within(LIMIT, "every job to be heard of and run", async {
        while served(&pool) < 80 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    within(LIMIT, "idle", runner.idle()).await;
    assert_eq!(served(&pool), 80);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listener_costs_latency_never_jobs() {
    let Some((store, schema)) = common::pg::store("drover_unheard").await else {
        return;
    };
    let queue = JobQueue::<_, Cmd>::builder(store)
        .poll_interval(Duration::from_millis(200))
        .build();
    let elsewhere = JobQueue::<_, Cmd>::new(
        PgStore::connect_in_schema(&schema.url, &schema.name)
            .await
            .unwrap(),
    );
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    let mut admin = schema.connect().await;
    let app = format!("drover-queue listener {}", schema.name);
    // The listener's backend, once it listens; then cut it off, as a
    // restart or a network fault would, again and again.
    let mut cut = 0;
    for round in 0..5 {
        let killed = within(LIMIT, "the listener to connect", async {
            loop {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE application_name = $1",
                )
                .bind(&app)
                .fetch_one(&mut admin)
                .await
                .unwrap();
                if n > 0 {
                    return n;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        cut += killed;
        // Pushed while nobody listens: found by the poll (or by the
        // listener once it is back).
        let ids = elsewhere
            .push_many(&[
                Cmd::Echo(format!("{round} a")),
                Cmd::Echo(format!("{round} b")),
            ])
            .await
            .unwrap();
        assert_eq!(ids.len(), 2);
    }
    assert!(cut >= 5, "the listener was cut off {cut} times");
    within(LIMIT, "the runner's idle", runner.idle()).await;
    assert_eq!(served(&pool), 10, "every job ran, once");
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    drop(admin);
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pushed_through_any_clone_of_an_sqlite_store_wakes_its_runners() {
    let store = SqliteStore::open(temp_db("wake")).await.unwrap();
    let queue = JobQueue::<_, Cmd>::builder(store.clone())
        .poll_interval(NEVER)
        .build();
    // Another queue over a clone of the store: same signal.
    let other = JobQueue::<_, Cmd>::new(store);
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());
    within(LIMIT, "idle", runner.idle()).await;
    for i in 0..3 {
        let name = format!("woken {i}");
        other.push(&Cmd::Emit(name.clone())).await.unwrap();
        next_custom(&mut events, &name).await;
    }
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_push_in_wakes_the_runner_when_it_commits_timers_too() {
    let path = temp_db("wake-tx");
    let store = SqliteStore::open(&path).await.unwrap();
    let queue = JobQueue::<_, Cmd>::builder(store.clone())
        .poll_interval(NEVER)
        .build();
    // The application's own connection to the same file.
    let url = format!("sqlite://{}", path.display());
    let mut app = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());
    within(LIMIT, "idle", runner.idle()).await;

    // Due now, on the application's connection.
    let mut tx = app.begin().await.unwrap();
    queue
        .push_in(&mut *tx, &Cmd::Emit("committed now".into()))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    next_custom(&mut events, "committed now").await;

    // A timer, on the application's connection: the runner, woken by the
    // commit, sleeps until it is due, not until a poll.
    let mut tx = app.begin().await.unwrap();
    let due = SystemTime::now() + Duration::from_millis(300);
    queue
        .push_in_at(&mut *tx, due, &Cmd::Emit("timer in a transaction".into()))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    next_custom(&mut events, "timer in a transaction").await;
    assert!(
        SystemTime::now() >= due,
        "the timer ran when due, not before"
    );

    // A timer in a transaction on the store's own connection.
    let mut tx = store.pool().begin().await.unwrap();
    queue
        .push_in_at(
            &mut *tx,
            SystemTime::now() + Duration::from_millis(100),
            &Cmd::Emit("timer on the store's connection".into()),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    next_custom(&mut events, "timer on the store's connection").await;

    within(LIMIT, "idle", runner.idle()).await;
    assert_eq!(served(&pool), 3);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    app.close().await.unwrap();
}
