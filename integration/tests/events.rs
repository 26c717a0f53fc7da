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
