//! The event subscription as a `futures::Stream`.

mod common;

use common::{pool, within, Cmd, LIMIT};
use drover::Event;
use futures::StreamExt;

/// `StreamExt` combinators work on `events()`: the exits of two crashed
/// workers, picked out of everything else the pool reports.
#[tokio::test]
async fn events_are_a_stream() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let events = pool.events();
    for _ in 0..2 {
        let _ = within(LIMIT, "crash", pool.enqueue(&Cmd::Exit(3))).await;
    }
    let exits: Vec<_> = within(
        LIMIT,
        "two exits",
        events
            .filter_map(|event| async move {
                match event {
                    Event::WorkerExited(exit) => Some(exit),
                    _ => None,
                }
            })
            .take(2)
            .collect(),
    )
    .await;
    assert_eq!(exits.len(), 2);
    assert!(exits
        .iter()
        .all(|exit| exit.termination == drover::Termination::Code(3)));
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// A handler's log lines carry the request's id and the worker's pid: the
/// SDK runs each request in a span of its own.
#[tokio::test]
async fn a_handlers_log_names_its_request() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(1).env("DROVER_TEST_TRACE", "1").spawn(),
    )
    .await
    .unwrap();
    let mut events = pool.events();
    let answer = within(
        LIMIT,
        "a logged request",
        pool.enqueue(&Cmd::TraceLog("handling the upload".into())),
    )
    .await
    .unwrap();
    let _ = within(LIMIT, "crash", pool.enqueue(&Cmd::Exit(1))).await;
    let exit = common::next_exit(&mut events).await;
    let line = exit
        .stderr_tail
        .iter()
        .find(|line| line.contains("handling the upload"))
        .unwrap_or_else(|| panic!("no log line in {:?}", exit.stderr_tail));
    assert!(line.contains("drover.request"), "{line}");
    assert!(line.contains(&answer.id().to_string()), "{line}");
    assert!(line.contains(&format!("pid={}", answer.pid())), "{line}");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
