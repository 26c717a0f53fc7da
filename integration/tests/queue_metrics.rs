//! The queue's metrics, through the `metrics` facade. One test in this
//! file: it installs the process-wide recorder.

mod common;

use std::time::Duration;

use common::{pool, temp_db, within, Cmd, LIMIT};
use drover::queue::{JobQueue, SqliteStore, Stats};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finished_by_outcome_their_durations_and_the_queue_gauges_are_reported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let queue = JobQueue::<_, Cmd>::builder(SqliteStore::open(temp_db("metrics")).await.unwrap())
        .max_attempts(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .poll_interval(Duration::from_millis(20))
        .build();
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    queue
        .push_many(&[Cmd::Echo("a".into()), Cmd::Echo("b".into())])
        .await
        .unwrap();
    queue.push(&Cmd::Fail("no".into())).await.unwrap();
    queue
        .push_after(Duration::from_secs(3600), &Cmd::Pid)
        .await
        .unwrap();
    let runner = queue.start(pool.clone());
    let settled = Stats {
        dead: 1,
        scheduled: 1,
        ..Stats::default()
    };
    assert!(common::queue::settled(&queue, settled).await);
    // Counters and histograms drain at each snapshot: summed here.
    let mut counted = std::collections::HashMap::new();
    let mut durations = 0;
    let mut take = |dead_gauge: &mut bool| {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let label = |name: &str| {
                key.labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
            };
            match (key.name(), value) {
                ("drover_jobs_finished_total", DebugValue::Counter(n)) => {
                    assert_eq!(label("queue").as_deref(), Some("default"));
                    *counted.entry(label("outcome").unwrap()).or_insert(0) += n;
                }
                ("drover_job_duration_seconds", DebugValue::Histogram(all)) => {
                    durations += all.len()
                }
                ("drover_jobs", DebugValue::Gauge(v))
                    if label("state").as_deref() == Some("dead") =>
                {
                    *dead_gauge = v.into_inner() == 1.0;
                }
                _ => {}
            }
        }
    };
    // The gauges are set once per poll interval.
    let mut dead_gauge = false;
    let deadline = std::time::Instant::now() + LIMIT;
    while !dead_gauge && std::time::Instant::now() < deadline {
        take(&mut dead_gauge);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dead_gauge, "drover_jobs{{state=dead}} never read 1");
    within(LIMIT, "stop", runner.stop()).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    take(&mut dead_gauge);
    assert_eq!(counted.get("completed"), Some(&2), "{counted:?}");
    assert_eq!(counted.get("retried"), Some(&1), "{counted:?}");
    assert_eq!(counted.get("dead"), Some(&1), "{counted:?}");
    assert_eq!(durations, 4, "every run timed");
}
