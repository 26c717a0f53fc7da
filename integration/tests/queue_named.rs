//! Named queues with their own concurrency, priorities within a queue,
//! and unique jobs (while pending, or for a window; one at a time or in a
//! batch).

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

/// A key held for a window keeps a push from storing a duplicate while
/// the first job is pending and, after it finished, until the window is
/// over; a window of zero frees the key once the job is done.
async fn unique_within_a_window<S: Store>(store: S) {
    let queue = JobQueue::<_, Cmd>::new(store);
    let hour = Duration::from_secs(3600);
    let report = || Enqueue::new().unique_for("report", hour);
    let first = queue
        .push_with(&Cmd::Emit("report".into()), report())
        .await
        .unwrap();
    let Pushed::New(id) = first else {
        panic!("the first push stores: {first:?}")
    };
    let pending = queue
        .push_with(&Cmd::Emit("report".into()), report())
        .await
        .unwrap();
    assert_eq!(pending, Pushed::Duplicate(id), "held while pending");
    let brief = || Enqueue::new().unique_for("brief", Duration::ZERO);
    let brief_id = queue
        .push_with(&Cmd::Emit("brief".into()), brief())
        .await
        .unwrap();
    assert!(matches!(brief_id, Pushed::New(_)), "{brief_id:?}");
    assert_eq!(
        queue
            .push_with(&Cmd::Emit("brief".into()), brief())
            .await
            .unwrap(),
        Pushed::Duplicate(brief_id.id()),
        "a window of zero still holds the key while its job is pending"
    );
    let short = || Enqueue::new().unique_for("short", Duration::from_millis(200));
    let short_id = queue
        .push_with(&Cmd::Emit("short".into()), short())
        .await
        .unwrap()
        .id();

    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let runner = queue.start(pool.clone());
    within(LIMIT, "the queue to empty", queue.until_empty())
        .await
        .unwrap();
    assert_eq!(served(&pool), 3, "no duplicate ran");
    // Finished, and still within the hour: held, naming the finished job.
    let after = queue
        .push_with(&Cmd::Emit("report".into()), report())
        .await
        .unwrap();
    assert_eq!(after, Pushed::Duplicate(id), "held for the window");
    // A window of zero is over once the job is done.
    let brief_again = queue
        .push_with(&Cmd::Emit("brief".into()), brief())
        .await
        .unwrap();
    assert!(
        matches!(brief_again, Pushed::New(n) if n != brief_id.id()),
        "{brief_again:?}"
    );
    // A short window runs out: a push is stored again (polled for, up to
    // the test's limit).
    let freed = within(LIMIT, "the short window to pass", async {
        loop {
            match queue
                .push_with(&Cmd::Emit("short".into()), short())
                .await
                .unwrap()
            {
                Pushed::New(n) => return n,
                Pushed::Duplicate(n) => assert_eq!(n, short_id),
                other => panic!("neither stored nor a duplicate: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_ne!(freed, short_id);
    within(LIMIT, "the queue to empty", queue.until_empty())
        .await
        .unwrap();
    assert_eq!(served(&pool), 5);
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// `push_many_with`: each job's own priority and unique key in one call,
/// each told apart: stored, or held by a pending job or an earlier job of
/// the same call.
async fn many_with_options<S: Store>(store: S) {
    let queue = JobQueue::<_, Cmd>::builder(store).max_running(1).build();
    let held = queue
        .push_with(&Cmd::Emit("held".into()), Enqueue::new().unique("held"))
        .await
        .unwrap()
        .id();
    let jobs = [
        (Cmd::Emit("low".into()), Enqueue::new().priority(-1)),
        (
            Cmd::Emit("high".into()),
            Enqueue::new().priority(9).unique("k1"),
        ),
        (Cmd::Emit("high again".into()), Enqueue::new().unique("k1")),
        (
            Cmd::Emit("held again".into()),
            Enqueue::new().unique("held"),
        ),
        (
            Cmd::Emit("windowed".into()),
            Enqueue::new().unique_for("w", Duration::from_secs(3600)),
        ),
    ];
    let pushed = queue
        .push_many_with(jobs.iter().map(|(job, options)| (job, options.clone())))
        .await
        .unwrap();
    assert_eq!(pushed.len(), 5);
    assert!(matches!(pushed[0], Pushed::New(_)), "{pushed:?}");
    assert!(matches!(pushed[1], Pushed::New(_)), "{pushed:?}");
    assert_eq!(pushed[2], Pushed::Duplicate(pushed[1].id()), "{pushed:?}");
    assert_eq!(pushed[3], Pushed::Duplicate(held), "{pushed:?}");
    assert!(matches!(pushed[4], Pushed::New(_)), "{pushed:?}");
    assert_eq!(queue.stats().await.unwrap().ready, 4);

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
    assert_eq!(order, ["high", "held", "windowed", "low"]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unique_within_a_window() {
    unique_within_a_window(SqliteStore::open(temp_db("window")).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unique_within_a_window() {
    let Some((store, schema)) = common::pg::store("drover_window").await else {
        return;
    };
    unique_within_a_window(store).await;
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_push_many_with_options() {
    many_with_options(SqliteStore::open(temp_db("many-with")).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_push_many_with_options() {
    let Some((store, schema)) = common::pg::store("drover_many_with").await else {
        return;
    };
    many_with_options(store).await;
    schema.drop_now().await;
}
