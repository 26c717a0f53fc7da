//! A worker that stops reading its socket while a gibibyte of events is
//! broadcast: once more than `max_queued_bytes` wait for it, it is killed
//! and replaced, its request fails saying why, and the supervisor's peak
//! memory stays far below what was sent. Alone in its file so the peak
//! memory it measures is its own.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{eventually, next_exit, open_fds, peak_rss_kb, pool, within, Cmd, LIMIT};
use drover::{Error, ExitReason};

const MIB: usize = 1024 * 1024;

/// The bound set on the pool, and the bound on the supervisor's growth
/// the test holds it to: the stalled worker's queue, the live worker's
/// (paced to 8 MiB), encodings in flight, and slack for the runtime.
const QUEUE_LIMIT: usize = 32 * MIB;
const GROWTH_LIMIT_KB: u64 = 160 * 1024;

/// The state letter of `pid` in /proc (`T` when stopped).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_reading_is_killed_at_the_queue_bound() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2)
            // The queue bound is never below one frame.
            .max_frame_length(4 * MIB)
            .max_queued_bytes(QUEUE_LIMIT)
            .health_check(Duration::from_secs(600), Duration::from_secs(600))
            .spawn(),
    )
    .await
    .unwrap();
    let mut events = pool.events();
    // One worker stops (SIGSTOP) holding a request, so it reads nothing
    // more and routing sends the pacing requests to the other.
    let frozen = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::FreezeHolding).await })
    };
    let stopped = within(LIMIT, "a stopped worker", async {
        loop {
            if let Some(h) = pool
                .health()
                .into_iter()
                .find(|h| h.in_flight == 1 && state(h.pid) == Some('T'))
            {
                return h.pid;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // Two workers' descriptors (socket, stderr pipe): the same once the
    // offender is replaced, so nothing of it stays open here.
    let fds = open_fds();
    let before = peak_rss_kb();
    let blob = Bytes::from(vec![0x5a; MIB]);
    for i in 0..1024 {
        pool.broadcast("blob", &blob).unwrap();
        if i % 8 == 7 {
            // Requests queue behind the events: an answer means the live
            // worker has read them.
            within(LIMIT, "pacing", pool.enqueue(&Cmd::Echo(String::new())))
                .await
                .unwrap();
        }
    }
    let growth_kb = peak_rss_kb().saturating_sub(before);
    eprintln!("1 GiB broadcast: the supervisor's peak grew by {growth_kb} kB");

    let exit = next_exit(&mut events).await;
    assert_eq!(exit.pid, stopped);
    assert!(
        matches!(exit.reason, ExitReason::Stalled { limit, queued } if limit == QUEUE_LIMIT && queued > QUEUE_LIMIT),
        "{:?}",
        exit.reason
    );
    let err = within(LIMIT, "the frozen request", frozen)
        .await
        .unwrap()
        .unwrap_err();
    match &err {
        Error::WorkerLost { exit, .. } => {
            assert!(matches!(exit.reason, ExitReason::Stalled { .. }));
            assert!(err.to_string().contains("max_queued_bytes"), "{err}");
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    assert!(
        growth_kb < GROWTH_LIMIT_KB,
        "the supervisor grew by {growth_kb} kB while 1 GiB was broadcast"
    );
    assert!(
        eventually(LIMIT, || pool.health().len() == 2
            && pool.health().iter().all(|h| h.pid != stopped))
        .await
    );
    assert!(
        eventually(LIMIT, || open_fds() == fds).await,
        "descriptors: {} now, {fds} before",
        open_fds()
    );
    let answer = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo("after".into())))
        .await
        .unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "after");
    within(LIMIT, "hard kill", pool.hard_kill()).await;
}
