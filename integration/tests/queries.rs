//! Workers ask the supervisor (`Worker::ask`, `Builder::on_query`).

mod common;

use common::{pids, pool, within, Cmd, LIMIT};
use drover::Query;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ask_and_the_supervisor_answers() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2)
            .max_concurrency(8)
            .on_query(|query: Query| async move {
                let name = query.name().to_owned();
                match name.as_str() {
                    "upper" => {
                        let text: String = query.data().unwrap();
                        let _ = query.reply(&text.to_uppercase());
                    }
                    "whoami" => {
                        let pid = query.pid();
                        let _ = query.reply(&pid.to_string());
                    }
                    "ignore" => drop(query),
                    other => query.fail(format!("no lookup named {other}")),
                }
            })
            .spawn(),
    )
    .await
    .unwrap();

    let asks: Vec<_> = (0..50)
        .map(|i| pool.enqueue(&Cmd::Ask("upper".into(), format!("word {i}"))))
        .collect();
    for (i, answer) in futures::future::join_all(asks)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            answer.unwrap().data::<String>().unwrap(),
            format!("WORD {i}")
        );
    }
    let answer = within(
        LIMIT,
        "whoami",
        pool.enqueue(&Cmd::Ask("whoami".into(), String::new())),
    )
    .await
    .unwrap();
    assert_eq!(
        answer.data::<String>().unwrap(),
        answer.pid().to_string(),
        "the query names the asking worker"
    );

    let err = within(
        LIMIT,
        "unknown",
        pool.enqueue(&Cmd::Ask("prices".into(), String::new())),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no lookup named prices"), "{err}");
    let err = within(
        LIMIT,
        "ignored",
        pool.enqueue(&Cmd::Ask("ignore".into(), String::new())),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("without an answer"), "{err}");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_pool_without_a_handler_says_so() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let err = within(
        LIMIT,
        "ask",
        pool.enqueue(&Cmd::Ask("upper".into(), "x".into())),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("answers no queries"), "{err}");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// An answer over the frame limit reaches the asking worker as an error
/// naming the limit, and the worker's connection stays usable.
#[tokio::test]
async fn an_answer_over_the_frame_limit_is_an_error_and_the_worker_stays() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(1)
            .max_frame_length(64 * 1024)
            .on_query(|query: Query| async move {
                let err = query.reply(&"x".repeat(100 * 1024)).unwrap_err();
                assert!(matches!(err, drover::Error::PayloadTooLarge { .. }));
            })
            .spawn(),
    )
    .await
    .unwrap();
    let before = pids(&pool);
    let err = within(
        LIMIT,
        "ask",
        pool.enqueue(&Cmd::Ask("big".into(), String::new())),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("payload limit"), "{err}");
    let answer = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo("still here".into())))
        .await
        .unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "still here");
    assert_eq!(pids(&pool), before, "the worker was not replaced");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
