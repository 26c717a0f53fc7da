//! Jobs pushed inside the caller's own transaction exist if and only if
//! the transaction commits (PostgreSQL and SQLite).

mod common;

use std::time::Duration;

use common::queue::served;
use common::{next_custom, pool, temp_db, within, Cmd, LIMIT};
use drover::queue::{JobQueue, PgStore, SqliteStore};
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pushed_in_a_postgres_transaction_runs_only_if_it_commits() {
    let Some(schema) = common::pg::fresh_schema("drover_tx").await else {
        return;
    };
    let store = PgStore::connect_in_schema(&schema.url, &schema.name)
        .await
        .unwrap();
    // A long poll: the committed job is heard of, not polled for.
    let queue = JobQueue::<_, Cmd>::builder(store)
        .poll_interval(Duration::from_secs(60))
        .build();
    // The application's own connection and table.
    let mut app = schema.connect().await;
    sqlx::query("CREATE TABLE users (name TEXT NOT NULL)")
        .execute(&mut app)
        .await
        .unwrap();
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());

    let mut tx = app.begin().await.unwrap();
    sqlx::query("INSERT INTO users (name) VALUES ('grace')")
        .execute(&mut *tx)
        .await
        .unwrap();
    queue
        .push_in(&mut *tx, &Cmd::Emit("rolled back job ran".into()))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = app.begin().await.unwrap();
    sqlx::query("INSERT INTO users (name) VALUES ('ada')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let ids = queue
        .push_many_in(
            &mut *tx,
            &[
                Cmd::Emit("committed job ran".into()),
                Cmd::Echo("and its sibling".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    tx.commit().await.unwrap();

    next_custom(&mut events, "committed job ran").await;
    within(LIMIT, "the runner's idle", runner.idle()).await;
    assert_eq!(served(&pool), 2, "the rolled-back job never ran");
    let users: Vec<String> = sqlx::query_scalar("SELECT name FROM users")
        .fetch_all(&mut app)
        .await
        .unwrap();
    assert_eq!(users, ["ada"]);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    app.close().await.unwrap();
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pushed_in_an_sqlite_transaction_runs_only_if_it_commits() {
    let path = temp_db("queue-tx");
    let queue = JobQueue::<_, Cmd>::builder(SqliteStore::open(&path).await.unwrap())
        .poll_interval(Duration::from_millis(50))
        .build();
    // The application's own connection to the same file.
    let url = format!("sqlite://{}", path.display());
    let mut app = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE users (name TEXT NOT NULL)")
        .execute(&mut app)
        .await
        .unwrap();
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());

    let mut tx = app.begin().await.unwrap();
    sqlx::query("INSERT INTO users (name) VALUES ('grace')")
        .execute(&mut *tx)
        .await
        .unwrap();
    queue
        .push_in(&mut *tx, &Cmd::Emit("rolled back job ran".into()))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = app.begin().await.unwrap();
    sqlx::query("INSERT INTO users (name) VALUES ('ada')")
        .execute(&mut *tx)
        .await
        .unwrap();
    queue
        .push_in(&mut *tx, &Cmd::Emit("committed job ran".into()))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    next_custom(&mut events, "committed job ran").await;
    within(LIMIT, "the runner's idle", runner.idle()).await;
    assert_eq!(served(&pool), 1, "the rolled-back job never ran");
    let users: Vec<String> = sqlx::query_scalar("SELECT name FROM users")
        .fetch_all(&mut app)
        .await
        .unwrap();
    assert_eq!(users, ["ada"]);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    app.close().await.unwrap();
}
