//! A batch's answers kept in its report, by position (`keep_answers`).

mod common;

use common::{pool, within, Cmd, LIMIT};

/// Which of the batch's jobs fail: some inside, and the last one (so the
/// report has no answer to place there).
fn fails(i: usize) -> bool {
    i % 10 == 3 || i == 49
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_its_answers_by_position_when_asked() {
    let pool = within(LIMIT, "spawn", pool(2).max_concurrency(4).spawn())
        .await
        .unwrap();
    let jobs = (0..50).map(|i| {
        if fails(i) {
            Cmd::Fail(format!("job {i} is bad"))
        } else {
            // Later jobs answer sooner: answers arrive out of order.
            Cmd::SlowEcho(format!("job {i}"), 50 - i as u64)
        }
    });
    let report = within(
        LIMIT,
        "the batch",
        pool.batch(jobs).concurrency(8).keep_answers().run(),
    )
    .await;
    assert_eq!(report.total, 50);
    assert_eq!(report.answers.len(), 50, "one entry per job");
    for (i, answer) in report.answers.iter().enumerate() {
        match answer {
            Some(answer) => {
                assert!(!fails(i), "job {i} failed, yet has an answer");
                assert_eq!(answer.data::<String>().unwrap(), format!("job {i}"));
            }
            None => assert!(fails(i), "job {i}'s answer is missing"),
        }
    }
    let failed: Vec<usize> = report.failed.iter().map(|(i, _)| *i).collect();
    assert_eq!(failed, vec![3, 13, 23, 33, 43, 49]);
    assert_eq!(report.succeeded, 44);

    // Not asked: no answers kept.
    let report = within(
        LIMIT,
        "a second batch",
        pool.batch((0..10).map(|_| Cmd::Pid)).run(),
    )
    .await;
    assert_eq!(report.succeeded, 10);
    assert!(report.answers.is_empty());
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
