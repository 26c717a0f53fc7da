//! A worker's output, however hostile (a line of a gibibyte, invalid
//! UTF-8), never stops the supervisor draining it: the worker's later
//! writes still succeed, its crash report's stderr tail keeps up, and the
//! supervisor's memory stays bounded. Captured and passed through alike.

mod common;

use std::time::Instant;

use common::{next_exit, peak_rss_kb, pool, within, Cmd, LIMIT};
use drover::Error;

/// The long line the worker writes, without a newline until its end.
const LONG_LINE: u64 = 1 << 30;

/// The bytes of a line the supervisor keeps (`output::MAX_LINE`).
const MAX_LINE: usize = 16 * 1024;

async fn hostile_output_is_drained(capture: bool) {
    let pool = within(LIMIT, "spawn", pool(1).capture_output(capture).spawn())
        .await
        .unwrap();
    let mut events = pool.events();

    let peak_before = peak_rss_kb();
    let started = Instant::now();
    within(
        LIMIT,
        "a 1 GiB stderr line",
        pool.enqueue(&Cmd::StderrLongLine(LONG_LINE)),
    )
    .await
    .expect("the long line written");
    let growth = peak_rss_kb().saturating_sub(peak_before);
    eprintln!(
        "capture {capture}: 1 GiB stderr line drained in {:?}, peak RSS grew {growth} kB",
        started.elapsed()
    );
    assert!(
        growth < 64 * 1024,
        "the supervisor's peak RSS grew by {growth} kB over a long line"
    );

    within(LIMIT, "bad UTF-8", pool.enqueue(&Cmd::StderrBadUtf8))
        .await
        .expect("invalid UTF-8 written");
    // A broken pipe would make each `eprintln!` panic its handler.
    let logs: Vec<String> = (0..5).map(|i| format!("log line {i}")).collect();
    for log in &logs {
        within(LIMIT, "a log line", pool.enqueue(&Cmd::Log(log.clone())))
            .await
            .expect("a logging request answered");
    }

    let last = vec!["last words".to_owned()];
    let err = within(LIMIT, "the crash", pool.enqueue(&Cmd::StderrThenExit(last)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WorkerLost { .. }), "{err:?}");
    let exit = next_exit(&mut events).await;

    let mut expected = vec![
        format!(
            "{} [line cut: {} more bytes skipped]",
            "x".repeat(MAX_LINE),
            LONG_LINE - MAX_LINE as u64
        ),
        "\u{FFFD}\u{FFFD} bad \u{FFFD}(".to_owned(),
    ];
    expected.extend(logs);
    expected.push("last words".to_owned());
    assert!(
        exit.stderr_tail.ends_with(&expected),
        "stderr tail: {:?}",
        exit.stderr_tail
            .iter()
            .map(|l| l.chars().take(80).collect::<String>())
            .collect::<Vec<_>>()
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn captured_hostile_output_is_drained_to_the_end() {
    hostile_output_is_drained(true).await;
}

#[tokio::test]
async fn passed_through_hostile_output_is_drained_to_the_end() {
    hostile_output_is_drained(false).await;
}
