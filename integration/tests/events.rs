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

/// A log line that keeps what the supervisor's subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The supervisor logs how each request ended in a span with the same
/// name and fields as the worker's (`drover.request`, its id, the pid),
/// so one request is followed through both processes' logs by its id.
#[tokio::test]
async fn the_supervisors_log_names_each_request_and_its_worker() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // This test's runtime runs on this thread: the request futures are
    // polled under this subscriber.
    let _default = tracing::subscriber::set_default(subscriber);
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let answer = within(LIMIT, "a request", pool.enqueue(&Cmd::Pid))
        .await
        .unwrap();
    let failed = within(
        LIMIT,
        "a failing one",
        pool.enqueue(&Cmd::Fail("no".into())),
    )
    .await
    .unwrap_err();
    let drover::Error::Remote { request_id, .. } = failed else {
        panic!("{failed:?}");
    };
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line_of = |id: String| {
        log.lines()
            .find(|line| line.contains("drover.request") && line.contains(&id))
            .unwrap_or_else(|| panic!("no line for request {id} in:\n{log}"))
            .to_owned()
    };
    let answered = line_of(answer.id().to_string());
    assert!(
        answered.contains(&format!("pid={}", answer.pid())),
        "{answered}"
    );
    assert!(answered.contains("answered"), "{answered}");
    let failed = line_of(request_id.to_string());
    assert!(
        failed.contains(&format!("pid={}", answer.pid())),
        "{failed}"
    );
    assert!(
        failed.contains("failed") && failed.contains("no"),
        "{failed}"
    );
}
