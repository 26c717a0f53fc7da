//! The pool as a `tower::Service`, composed with tower's own layers.

mod common;

use std::time::Duration;

use common::{next_custom, pool, within, Cmd, LIMIT};
use drover::Error;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

fn drover_error(e: &BoxError) -> Option<&Error> {
    e.downcast_ref::<Error>()
}

/// Readiness is capacity: with the one worker busy and the one queue
/// place taken, the service is not ready, so `LoadShed` sheds the next
/// call; once the queue has room it is ready again.
#[tokio::test]
async fn a_full_queue_is_not_ready_and_load_shed_sheds() {
    let pool = within(LIMIT, "spawn", pool(1).max_queue(1).spawn())
        .await
        .unwrap();
    let mut service = ServiceBuilder::new().load_shed().service(pool.service());
    // One running, one queued.
    let running = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::SlowEcho("first".into(), 500)).await })
    };
    let queued = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::Echo("second".into())).await })
    };
    assert!(
        common::eventually(LIMIT, || pool.health()[0].in_flight == 1).await,
        "the first request never started"
    );
    // The queue is full now: not ready, shed at once.
    let shed = within(LIMIT, "a shed call", async {
        loop {
            let result = ServiceExt::<Cmd>::ready(&mut service)
                .await
                .unwrap()
                .call(Cmd::Echo("third".into()))
                .await;
            match result {
                Err(e) if e.is::<tower::load_shed::error::Overloaded>() => return,
                // The queue had room still (the second was not queued yet).
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => panic!("expected Overloaded, got {e}"),
            }
        }
    });
    shed.await;
    assert_eq!(
        within(LIMIT, "first", running)
            .await
            .unwrap()
            .unwrap()
            .data::<String>()
            .unwrap(),
        "first"
    );
    assert_eq!(
        within(LIMIT, "second", queued)
            .await
            .unwrap()
            .unwrap()
            .data::<String>()
            .unwrap(),
        "second"
    );
    // Room again: ready, and served.
    let answer = within(LIMIT, "a call with room", async {
        ServiceExt::<Cmd>::ready(&mut service)
            .await
            .unwrap()
            .call(Cmd::Echo("fourth".into()))
            .await
    })
    .await
    .unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "fourth");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// A timeout layer that fires drops the call, which cancels the request:
/// the worker sees `cancelled()`. Errors from the pool come through typed.
#[tokio::test]
async fn a_timeout_layer_cancels_the_request_and_errors_stay_typed() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let mut service = ServiceBuilder::new()
        .timeout(Duration::from_millis(200))
        .service(pool.service());
    let err = within(LIMIT, "a call that times out", async {
        ServiceExt::<Cmd>::ready(&mut service)
            .await
            .unwrap()
            .call(Cmd::WaitCancel)
            .await
    })
    .await
    .unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    // The worker was told: it emits "cancelled" with the request's id.
    next_custom(&mut events, "cancelled").await;

    // A worker's error stays a drover::Error behind BoxError.
    let err = within(LIMIT, "a failing call", async {
        ServiceExt::<Cmd>::ready(&mut service)
            .await
            .unwrap()
            // (A failure, not a panic: a panic's backtrace can take
            // longer than the layer's 200 ms on a loaded machine.)
            .call(Cmd::Fail("no".into()))
            .await
    })
    .await
    .unwrap_err();
    assert!(
        matches!(drover_error(&err), Some(Error::Remote { .. })),
        "{err}"
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// A concurrency limit over the service: every call answered, never more
/// in flight than the limit.
#[tokio::test]
async fn a_concurrency_limit_composes() {
    let pool = within(LIMIT, "spawn", pool(2).max_concurrency(4).spawn())
        .await
        .unwrap();
    let service = ServiceBuilder::new()
        .concurrency_limit(2)
        .service(pool.service());
    let calls = (0..12).map(|i| {
        let mut service = service.clone();
        async move {
            ServiceExt::<Cmd>::ready(&mut service)
                .await?
                .call(Cmd::SlowEcho(format!("n{i}"), 20))
                .await
        }
    });
    let watcher = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..200 {
                let now: usize = pool.health().iter().map(|h| h.in_flight).sum();
                most = most.max(now);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            most
        })
    };
    let answers = within(LIMIT, "limited calls", futures::future::join_all(calls)).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap().data::<String>().unwrap(), format!("n{i}"));
    }
    let most = within(LIMIT, "watcher", watcher).await.unwrap();
    assert!(most >= 1, "the watcher saw nothing in flight");
    assert!(most <= 2, "{most} in flight under a limit of 2");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
