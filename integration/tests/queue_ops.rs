//! What an operator does and sees: jobs listed by state, a dead job
//! retried, a timer run early, a job deleted, a queue purged; completed
//! and cancelled counted apart; waiting until the queue is empty.

mod common;

use std::time::Duration;

use common::queue::{served, settled};
use common::{pool, temp_db, within, Cmd, LIMIT};
use drover::queue::{Finished, JobQueue, JobState, Payload, SqliteStore, Stats, Store};

async fn operate<S: Store>(store: S) {
    let queue = JobQueue::<_, Cmd>::builder(store)
        .max_attempts(1)
        .poll_interval(Duration::from_millis(50))
        .build();
    let now = queue.push(&Cmd::Echo("now".into())).await.unwrap();
    let later = queue
        .push_after(Duration::from_secs(3600), &Cmd::Echo("later".into()))
        .await
        .unwrap();
    let failing = queue.push(&Cmd::Fail("broken".into())).await.unwrap();
    let doomed = queue
        .push_after(Duration::from_secs(3600), &Cmd::Pid)
        .await
        .unwrap();

    // Listed by state, before any runner.
    let ready = queue.list(JobState::Ready, 10).await.unwrap();
    assert_eq!(
        ready.iter().map(|j| j.id).collect::<Vec<_>>(),
        [now, failing]
    );
    // JSON as the database writes it back (PostgreSQL's JSONB spaces it).
    assert!(
        matches!(&ready[0].payload, Payload::Json(json) if json.replace(' ', "") == r#"{"Echo":"now"}"#),
        "{:?}",
        ready[0].payload
    );
    let scheduled = queue.list(JobState::Scheduled, 10).await.unwrap();
    assert_eq!(
        scheduled.iter().map(|j| j.id).collect::<Vec<_>>(),
        [later, doomed]
    );
    assert_eq!(queue.list(JobState::Ready, 1).await.unwrap().len(), 1);

    // Deleted before it ran: cancelled, not completed.
    assert!(queue.cancel(doomed).await.unwrap());
    assert!(!queue.cancel(doomed).await.unwrap(), "gone already");

    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    let one_dead = Stats {
        dead: 1,
        scheduled: 1,
        ..Stats::default()
    };
    assert!(settled(&queue, one_dead).await);
    let dead = queue.list(JobState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, failing);
    assert!(dead[0].last_error.as_deref().unwrap().contains("broken"));
    assert!(
        !queue.requeue(failing).await.unwrap(),
        "dead is not waiting"
    );

    // The timer, run now; the dead job, retried (and dead again).
    assert!(queue.requeue(later).await.unwrap());
    assert!(queue.retry_dead(failing).await.unwrap());
    assert!(!queue.retry_dead(later).await.unwrap(), "not dead");
    within(LIMIT, "the queue to empty", queue.until_empty())
        .await
        .unwrap();
    assert_eq!(served(&pool), 4, "now, failing twice, later");
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.dead, 1, "dead again: {stats:?}");
    assert_eq!(queue.list(JobState::Dead, 10).await.unwrap()[0].attempts, 1);
    assert_eq!(
        queue.finished().await.unwrap(),
        Finished {
            completed: 2,
            cancelled: 1
        }
    );

    // Purged: nothing left, counts included.
    assert_eq!(queue.purge().await.unwrap(), 1);
    assert_eq!(queue.stats().await.unwrap(), Stats::default());
    assert_eq!(queue.finished().await.unwrap(), Finished::default());
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_queue_is_operated() {
    operate(SqliteStore::open(temp_db("ops")).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_queue_is_operated() {
    let Some((store, schema)) = common::pg::store("drover_ops").await else {
        return;
    };
    operate(store).await;
    schema.drop_now().await;
}
