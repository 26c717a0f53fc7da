//! Dynamic sizing (`Supervisor::autoscale`) under a load that rises and
//! falls: the pool grows to its maximum while requests wait, shrinks to
//! its minimum once idle, and no request fails on the way.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use drover::{Autoscale, Supervisor};

use common::{eventually, pool, within, Cmd, LIMIT};

/// Eight callers sending 50 ms requests back to back until `stop`;
/// returns how many were answered right and the errors.
fn load(pool: &Supervisor, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    let (pool, stop) = (pool.clone(), stop.clone());
    tokio::spawn(async move {
        let ok = Arc::new(AtomicU64::new(0));
        let callers: Vec<_> = (0..8)
            .map(|c| {
                let (pool, stop, ok) = (pool.clone(), stop.clone(), ok.clone());
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    let mut k = 0;
                    while !stop.load(Ordering::Relaxed) && k < 2_000 {
                        let text = format!("{c}-{k}");
                        match pool
                            .enqueue(&Cmd::SlowEcho(text.clone(), 50))
                            .await
                            .and_then(|a| a.data::<String>())
                        {
                            Ok(got) if got == text => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => errors.push(format!("{other:?}")),
                        }
                        k += 1;
                    }
                    errors
                })
            })
            .collect();
        let mut errors = Vec::new();
        for caller in callers {
            errors.extend(caller.await.expect("a caller"));
        }
        (ok.load(Ordering::Relaxed), errors)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_follows_a_load_that_rises_and_falls() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let scaling = pool
        .autoscale(
            Autoscale::new(1, 4)
                .idle_timeout(Duration::from_millis(300))
                .interval(Duration::from_millis(20)),
        )
        .unwrap();
    let scaling = tokio::spawn(scaling);

    for round in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        let running = load(&pool, &stop);
        assert!(
            eventually(LIMIT, || {
                let s = pool.status();
                s.target_workers == 4 && s.workers.len() == 4
            })
            .await,
            "round {round}: grew to the maximum: {:?}",
            pool.status()
        );
        // Never past it, however many wait.
        assert!(pool.status().workers.len() <= 4);
        stop.store(true, Ordering::Relaxed);
        let (ok, errors) = within(LIMIT, "the load to end", running).await.unwrap();
        assert!(
            errors.is_empty(),
            "round {round}: requests failed: {errors:?}"
        );
        assert!(ok > 0);
        assert!(
            eventually(LIMIT, || {
                let s = pool.status();
                s.target_workers == 1 && s.workers.len() == 1
            })
            .await,
            "round {round}: shrank to the minimum once idle: {:?}",
            pool.status()
        );
    }
    let exits = pool.status().restarts;
    assert_eq!(exits, 0, "the retired workers did not crash");
    common::still_serves(&pool, 3).await;

    // A manual size past the bounds is brought back within them.
    within(LIMIT, "resize", pool.resize(6)).await.unwrap();
    assert!(
        eventually(LIMIT, || pool.status().target_workers <= 4).await,
        "{:?}",
        pool.status()
    );

    within(LIMIT, "soft kill", pool.soft_kill()).await;
    within(LIMIT, "the sizing to end with the pool", scaling)
        .await
        .unwrap();
}

#[tokio::test]
async fn bounds_that_cannot_hold_are_refused() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    for (min, max, wanted) in [
        (0, 4, "the minimum is 0"),
        (3, 2, "the minimum (3) is above the maximum (2)"),
    ] {
        match pool.autoscale(Autoscale::new(min, max)) {
            Err(e) => assert!(e.to_string().contains(wanted), "{e}"),
            Ok(_) => panic!("{min}..{max} accepted"),
        }
    }
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
