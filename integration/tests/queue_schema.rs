//! The queue's schema evolves: stores made before versioned migrations
//! are adopted with their jobs, jobs are stored as JSON an operator can
//! read, and a job type that changes still reads the jobs stored before.

mod common;

use common::queue::settled;
use common::{next_custom, pool, temp_db, within, Cmd, LIMIT};
use drover::proto::encode_value;
use drover::queue::{JobFormat, JobQueue, PgStore, SqliteStore, Stats};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, Row};

/// The schema every release before versioned migrations created, as it
/// created it.
const SQLITE_BEFORE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS drover_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        payload BLOB NOT NULL,
        run_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'ready',
        locked_by TEXT,
        locked_until INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS drover_jobs_due ON drover_jobs (state, run_at)",
];

const POSTGRES_BEFORE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS drover_jobs (
        id BIGSERIAL PRIMARY KEY,
        payload BYTEA NOT NULL,
        run_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'ready',
        locked_by TEXT,
        locked_until BIGINT,
        last_error TEXT,
        created_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS drover_jobs_due ON drover_jobs (state, run_at)",
];

/// The insert the earlier releases ran: a job in drover's encoding.
const INSERT_BEFORE: &str =
    "INSERT INTO drover_jobs (payload, run_at, created_at) VALUES ($1, $2, $3)";

/// An older job type than the test worker's `Cmd`: a subset of it, in
/// another order. Stored as bytes, `Emit` would reach the worker as
/// whatever variant comes first in `Cmd`; stored as JSON it is read by
/// name.
#[derive(Serialize, Deserialize)]
enum Older {
    Emit(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_file_made_before_migrations_keeps_its_jobs_and_runs_them() {
    let path = temp_db("schema-before");
    {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for ddl in SQLITE_BEFORE {
            sqlx::query(ddl).execute(&mut conn).await.unwrap();
        }
        sqlx::query(INSERT_BEFORE)
            .bind(encode_value(&Cmd::Emit("old job ran".into())).unwrap())
            .bind(0i64)
            .bind(0i64)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    // Opening migrates; the job is kept, due, and runs as it would have.
    let queue = JobQueue::<_, Cmd>::new(SqliteStore::open(&path).await.unwrap());
    assert_eq!(queue.stats().await.unwrap().ready, 1, "the old job is kept");
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());
    next_custom(&mut events, "old job ran").await;
    assert!(settled(&queue, Stats::default()).await);

    // New jobs are JSON, readable in SQL; the history names both versions.
    queue
        .push_after(
            std::time::Duration::from_secs(3600),
            &Cmd::Echo("read me".into()),
        )
        .await
        .unwrap();
    within(LIMIT, "stop", runner.stop()).await;
    drop(queue);
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let args: String = sqlx::query_scalar("SELECT args FROM drover_jobs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(args, r#"{"Echo":"read me"}"#);
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(versions.len(), 4, "{versions:?}");
    conn.close().await.unwrap();
    // Opened again: nothing to migrate, the timer still there.
    let again = JobQueue::<_, Cmd>::new(SqliteStore::open(&path).await.unwrap());
    assert_eq!(again.stats().await.unwrap().scheduled, 1);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_schema_made_before_migrations_keeps_its_jobs_and_runs_them() {
    let Some(schema) = common::pg::fresh_schema("drover_before").await else {
        return;
    };
    {
        let mut conn = schema.connect().await;
        for ddl in POSTGRES_BEFORE {
            sqlx::query(ddl).execute(&mut conn).await.unwrap();
        }
        sqlx::query(INSERT_BEFORE)
            .bind(encode_value(&Cmd::Emit("old pg job ran".into())).unwrap())
            .bind(0i64)
            .bind(0i64)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let store = PgStore::connect_in_schema(&schema.url, &schema.name)
        .await
        .unwrap();
    let queue = JobQueue::<_, Cmd>::new(store);
    assert_eq!(queue.stats().await.unwrap().ready, 1, "the old job is kept");
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());
    next_custom(&mut events, "old pg job ran").await;
    assert!(settled(&queue, Stats::default()).await);
    queue
        .push_after(
            std::time::Duration::from_secs(3600),
            &Cmd::Echo("read me".into()),
        )
        .await
        .unwrap();
    within(LIMIT, "stop", runner.stop()).await;
    let mut conn = schema.connect().await;
    // JSONB: an operator queries inside the job.
    let row = sqlx::query("SELECT args->>'Echo', payload IS NULL FROM drover_jobs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "read me");
    assert!(row.get::<bool, _>(1), "a JSON job keeps no bytes");
    conn.close().await.unwrap();
    // Connecting again migrates nothing and keeps the timer.
    let again = PgStore::connect_in_schema(&schema.url, &schema.name)
        .await
        .unwrap();
    assert_eq!(
        JobQueue::<_, Cmd>::new(again)
            .stats()
            .await
            .unwrap()
            .scheduled,
        1
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stored_as_json_is_read_by_name_by_a_changed_job_type() {
    let store = SqliteStore::open(temp_db("schema-evolve")).await.unwrap();
    // Stored by a build whose job type was `Older`.
    let older = JobQueue::<_, Older>::new(store.clone());
    older
        .push(&Older::Emit("older job ran".into()))
        .await
        .unwrap();
    // Run by a build whose job type is `Cmd`.
    let queue = JobQueue::<_, Cmd>::new(store);
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let runner = queue.start(pool.clone());
    next_custom(&mut events, "older job ran").await;
    assert!(settled(&queue, Stats::default()).await);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_job_that_is_not_the_job_type_dies_at_once_naming_it() {
    let store = SqliteStore::open(temp_db("schema-mismatch")).await.unwrap();
    JobQueue::<_, String>::new(store.clone())
        .push(&"not a command".to_string())
        .await
        .unwrap();
    let queue = JobQueue::<_, Cmd>::builder(store).max_attempts(5).build();
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    let dead = Stats {
        dead: 1,
        ..Stats::default()
    };
    assert!(settled(&queue, dead).await, "the job never died");
    let dead = queue.dead().await.unwrap();
    assert_eq!(dead[0].attempts, 1, "no retry: it never will decode");
    assert!(
        dead[0].last_error.contains("does not decode as") && dead[0].last_error.contains("Cmd"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(pool.health()[0].served, 0, "never sent to a worker");
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bincode_queue_stores_what_json_cannot() {
    use std::collections::HashMap;
    let store = SqliteStore::open(temp_db("schema-bincode")).await.unwrap();
    // A map whose keys are not strings: JSON refuses it, by name.
    let json = JobQueue::<_, HashMap<(u8, u8), u8>>::new(store.clone());
    let job = HashMap::from([((1, 2), 3)]);
    let err = json.push(&job).await.unwrap_err();
    assert!(err.to_string().contains("as JSON"), "{err}");
    assert_eq!(
        json.stats().await.unwrap(),
        Stats::default(),
        "nothing stored"
    );
    let bincode = JobQueue::<_, HashMap<(u8, u8), u8>>::builder(store)
        .format(JobFormat::Bincode)
        .build();
    bincode.push(&job).await.unwrap();
    assert_eq!(bincode.stats().await.unwrap().ready, 1);
}
