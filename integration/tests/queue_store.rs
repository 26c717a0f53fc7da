//! Store settings a user reaches: PostgreSQL's pool size, SQLite's
//! durability; and bad settings named.

mod common;

use common::queue::served;
use common::{pool, temp_db, within, Cmd, LIMIT};
use drover::queue::{JobQueue, PgStore, SqliteStore, SqliteSynchronous};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_with_one_connection_and_durable_runs_still_runs_its_jobs() {
    let Some(schema) = common::pg::fresh_schema("drover_pool1").await else {
        return;
    };
    let store = PgStore::builder(&schema.url)
        .schema(&schema.name)
        .max_connections(1)
        .durable_runs(true)
        .connect()
        .await
        .unwrap();
    let queue = JobQueue::<_, Cmd>::new(store);
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    for i in 0..50 {
        queue.push(&Cmd::Echo(format!("{i}"))).await.unwrap();
    }
    within(LIMIT, "the runner's idle", runner.idle()).await;
    assert_eq!(served(&pool), 50);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    schema.drop_now().await;
}

#[tokio::test]
async fn a_bad_postgres_url_is_named() {
    let err = PgStore::builder("postgres://nobody@127.0.0.1:notaport/test")
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("parse the database URL"), "{err}");
}

#[tokio::test]
async fn sqlite_durability_is_the_users_choice() {
    for (mode, want) in [
        (SqliteSynchronous::Full, 2i64),
        (SqliteSynchronous::Normal, 1),
    ] {
        let path = temp_db(&format!("sync-{want}"));
        let store = SqliteStore::builder(&path)
            .synchronous(mode)
            .open()
            .await
            .unwrap();
        let queue = JobQueue::<_, Cmd>::new(store);
        queue.push(&Cmd::Pid).await.unwrap();
        assert_eq!(queue.stats().await.unwrap().ready, 1);
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(queue.store().pool())
            .await
            .unwrap();
        assert_eq!(sync, want, "{mode:?}");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(queue.store().pool())
            .await
            .unwrap();
        assert_eq!(journal, "wal");
    }
}
