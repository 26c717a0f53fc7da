//! The pool's metrics, through the `metrics` facade. One test in this file:
//! it installs the process-wide recorder.

mod common;

use std::time::Duration;

use common::{pool, within, Cmd, LIMIT};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Everything the recorder has seen. A snapshot of the debugging
/// recorder takes counters' values (resetting them), so they are summed
/// here across snapshots.
/// A series' labels, as (key, value) pairs.
type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Seen {
    series: Vec<(String, Labels, DebugValue)>,
}

impl Seen {
    fn refresh(&mut self, snapshotter: &Snapshotter) {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let name = key.name().to_owned();
            let labels: Labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            match self
                .series
                .iter_mut()
                .find(|(n, l, _)| *n == name && *l == labels)
            {
                Some((_, _, old)) => match (old, value) {
                    (DebugValue::Counter(total), DebugValue::Counter(n)) => *total += n,
                    (DebugValue::Histogram(all), DebugValue::Histogram(more)) => all.extend(more),
                    (old, new) => *old = new,
                },
                None => self.series.push((name, labels, value)),
            }
        }
    }

    /// The series `name` whose labels include every one of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        self.series.iter().find_map(|(n, l, value)| {
            let matches = n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v));
            matches.then_some(value)
        })
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.value(name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            _ => 0,
        }
    }
}

#[tokio::test]
async fn requests_exits_and_gauges_are_reported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let pool = within(
        LIMIT,
        "spawn",
        pool(2)
            .name("thumbs")
            .max_queue(1)
            // The timed-out request may keep its worker: one restart only.
            .kill_after(Duration::from_secs(60))
            .health_interval(Duration::from_millis(20))
            .spawn(),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        within(LIMIT, "pid", pool.enqueue(&Cmd::Pid)).await.unwrap();
    }
    let _ = within(LIMIT, "fail", pool.enqueue(&Cmd::Fail("no".into()))).await;
    let _ = within(LIMIT, "exit", pool.enqueue(&Cmd::Exit(3))).await;
    let _ = within(
        LIMIT,
        "timeout",
        pool.request(&Cmd::Sleep(2_000))
            .timeout(Duration::from_millis(50))
            .send(),
    )
    .await;

    let pool_label = [("pool", "thumbs")];
    let mut seen = Seen::default();
    // Exits are counted just after their requests are answered.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        seen.refresh(&snapshotter);
        let exits = seen.counter(
            "drover_worker_exits_total",
            &[("pool", "thumbs"), ("reason", "crashed")],
        );
        let ready = matches!(seen.value("drover_workers", &[("pool", "thumbs"), ("state", "ready")]), Some(DebugValue::Gauge(n)) if n.0 >= 1.0);
        let rss = matches!(seen.value("drover_worker_rss_bytes", &[("pool", "thumbs"), ("index", "0")]), Some(DebugValue::Gauge(n)) if n.0 > 1_000_000.0);
        if exits == 1 && ready && rss {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never complete: exits {exits}, ready {ready}, rss {rss}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outcome = |o: &'static str| {
        seen.counter(
            "drover_requests_total",
            &[("pool", "thumbs"), ("outcome", o)],
        )
    };
    assert_eq!(outcome("ok"), 5);
    assert_eq!(outcome("remote_error"), 1);
    assert_eq!(outcome("worker_lost"), 1);
    assert_eq!(outcome("timeout"), 1);
    // Two latencies per answered request: queued, then running.
    for name in ["drover_request_wait_seconds", "drover_request_run_seconds"] {
        match seen.value(name, &pool_label) {
            Some(DebugValue::Histogram(samples)) => {
                assert_eq!(samples.len(), 5, "{name}");
                assert!(samples.iter().all(|s| s.0 >= 0.0 && s.0 < 30.0), "{name}");
            }
            other => panic!("no {name} histogram: {other:?}"),
        }
    }
    assert_eq!(seen.counter("drover_worker_restarts_total", &pool_label), 1);

    // Refusals: one request sleeps, one waits, the next is refused.
    let (a, b, c, d) = tokio::join!(
        pool.enqueue(&Cmd::Sleep(300)),
        pool.enqueue(&Cmd::Sleep(300)),
        pool.enqueue(&Cmd::Sleep(300)),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            pool.enqueue(&Cmd::Pid).await
        }
    );
    let refused = [&a, &b, &c, &d]
        .iter()
        .filter(|r| matches!(r, Err(drover::Error::QueueFull { .. })))
        .count();
    assert!(refused >= 1, "{a:?} {b:?} {c:?} {d:?}");
    seen.refresh(&snapshotter);
    assert_eq!(
        seen.counter(
            "drover_requests_total",
            &[("pool", "thumbs"), ("outcome", "refused")]
        ) as usize,
        refused
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
