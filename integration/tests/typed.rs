//! Tasks: a request type tied to its answer type, served by a worker
//! that can answer nothing else.

mod common;

use common::cmd::Upper;
use common::{pool, within, Cmd, LIMIT};
use drover::Error;

#[tokio::test]
async fn a_task_is_answered_with_its_output_type() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2).env("DROVER_TEST_TASKS", "1").spawn(),
    )
    .await
    .unwrap();
    // The answer's type comes from the task: no turbofish, no `data::<T>()`.
    let shout = within(LIMIT, "call", pool.call(&Upper("hello".into())))
        .await
        .unwrap();
    assert_eq!(shout, "HELLO");

    // A typed handle sends only its task type.
    let uppers = pool.typed::<Upper>();
    let answers = futures::future::join_all((0..8).map(|i| {
        let uppers = uppers.clone();
        async move { uppers.call(&Upper(format!("n{i}"))).await }
    }));
    let answers = within(LIMIT, "typed calls", answers).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), format!("N{i}"));
    }

    // The handler's error reaches the caller as the worker's error.
    let err = within(LIMIT, "failing call", uppers.call(&Upper("fail".into())))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message.contains("told to fail")),
        "{err:?}"
    );

    // Something that is not an `Upper` is refused, naming the type.
    let err = within(LIMIT, "untyped request", pool.enqueue(&Cmd::Pid))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Upper"), "{err}");
    within(LIMIT, "soft kill", uppers.supervisor().soft_kill()).await;
}
