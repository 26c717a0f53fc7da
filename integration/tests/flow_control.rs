//! A worker that ignores stream credit is stopped at the window: it is
//! killed for breaking the protocol once its data passes the 256 KiB it
//! was granted, however much it pushes, and the supervisor's memory does
//! not follow it. Alone in its file so the peak memory it measures is its
//! own.

mod common;

use std::time::Duration;

use common::{
    eventually, next_exit, open_fds, peak_rss_kb, pids, pool, still_serves, within, Cmd, LIMIT,
};
use drover::ExitReason;
use tokio::io::AsyncReadExt;

const GIB: u64 = 1024 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_ignores_credit_is_stopped_at_the_window() {
    let pool = within(
        LIMIT,
        "spawn",
        // No pings: nothing of the SDK's may come between the raw frames.
        pool(2)
            .health_check(Duration::from_secs(600), Duration::from_secs(600))
            .spawn(),
    )
    .await
    .unwrap();
    // Two workers' descriptors (socket, stderr pipe): the same once the
    // offender is replaced, so nothing of it stays open here.
    let fds = open_fds();
    let mut events = pool.events();
    let before = peak_rss_kb();
    // The answer arrives, then its stream, a gibibyte of it, pushed with
    // no regard for credit while nobody reads it.
    let answer = within(LIMIT, "the answer", pool.enqueue(&Cmd::PushUncredited(GIB)))
        .await
        .unwrap();
    let pusher = answer.pid();
    let exit = next_exit(&mut events).await;
    assert_eq!(exit.pid, pusher);
    match &exit.reason {
        ExitReason::ProtocolViolation { detail } => assert!(
            detail.contains("without credit") && detail.contains("262144"),
            "{detail}"
        ),
        other => panic!("expected a protocol violation, got {other:?}"),
    }
    // The stream held unread ends with an error naming the worker.
    let mut stream = answer.stream().expect("the answer's stream");
    let mut sink = Vec::new();
    let err = within(LIMIT, "the cut stream", stream.read_to_end(&mut sink))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&pusher.to_string()), "{err}");
    assert!(sink.len() <= 256 * 1024, "read {} bytes", sink.len());
    let growth_kb = peak_rss_kb().saturating_sub(before);
    assert!(
        growth_kb < 64 * 1024,
        "the supervisor grew by {growth_kb} kB for a stream that may hold 256 KiB"
    );
    // Replaced; both serve.
    assert!(
        eventually(LIMIT, || pids(&pool).len() == 2
            && !pids(&pool).contains(&pusher))
        .await
    );
    assert!(
        eventually(LIMIT, || open_fds() == fds).await,
        "descriptors: {} now, {fds} before",
        open_fds()
    );
    still_serves(&pool, 4).await;
    within(LIMIT, "hard kill", pool.hard_kill()).await;
}
