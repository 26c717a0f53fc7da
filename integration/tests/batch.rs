//! Batch runs: many jobs through the pool, one report.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{pids, pool, within, Cmd, LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_answers_failures_workers_and_stats() {
    let pool = within(LIMIT, "spawn", pool(3).max_concurrency(4).spawn())
        .await
        .unwrap();
    let jobs = (0..200).map(|i| {
        if i % 40 == 7 {
            Cmd::Fail(format!("job {i} is bad"))
        } else {
            Cmd::Stat("rows".into(), 2.5)
        }
    });
    let seen = AtomicUsize::new(0);
    let report = within(
        LIMIT,
        "the batch",
        pool.batch(jobs)
            .concurrency(12)
            .on_answer(|_, _| {
                seen.fetch_add(1, Ordering::Relaxed);
            })
            .run(),
    )
    .await;
    assert_eq!(report.total, 200);
    assert_eq!(seen.load(Ordering::Relaxed), 200);
    assert_eq!(report.succeeded, 195);
    let failed: Vec<usize> = report.failed.iter().map(|(i, _)| *i).collect();
    assert_eq!(failed, vec![7, 47, 87, 127, 167]);
    assert!(report.failed[0].1.to_string().contains("job 7 is bad"));
    assert_eq!(report.per_worker.values().sum::<usize>(), 195);
    let workers = pids(&pool);
    assert!(report.per_worker.keys().all(|pid| workers.contains(pid)));
    assert_eq!(
        report.per_worker.len(),
        3,
        "every worker served: {:?}",
        report.per_worker
    );
    assert_eq!(report.stats.get("rows").copied(), Some(195.0 * 2.5));
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
