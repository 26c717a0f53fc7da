//! The supervisor's log of each request.

mod common;

use common::{pool, within, Cmd, LIMIT};

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
    // For the whole process (this file's only test): a subscriber set
    // for one thread can miss lines while other threads' tests run.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
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
