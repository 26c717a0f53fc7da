//! `drover::testing`: pools whose workers are threads of the test
//! process, behind the same `Supervisor` API as real workers.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, next_custom, next_exit, within, LIMIT};
use drover::worker::{Request, Worker};
use drover::{Error, RemoteErrorKind};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Serialize, Deserialize)]
enum Job {
    Upper(String),
    Fail(String),
    Panic,
    /// Waits for the caller to cancel, then says so in an event.
    WaitCancel,
    /// Sums the request's byte stream and streams back that many bytes.
    SumStream,
    /// Asks the supervisor's query handler, answers what it said.
    Ask(String),
    /// Emits an event named after the text.
    Emit(String),
    /// Never answers; sets the flag when the handler is dropped.
    Hang,
}

/// Set when a `Hang` handler's future is dropped (its worker killed).
static HANG_DROPPED: AtomicBool = AtomicBool::new(false);

struct SetOnDrop;

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        HANG_DROPPED.store(true, Ordering::SeqCst);
    }
}

async fn handle(mut req: Request) -> Result<(), drover::worker::Error> {
    match req.data::<Job>()? {
        Job::Upper(text) => req.respond(&text.to_uppercase()),
        Job::Fail(why) => req.fail(why),
        Job::Panic => panic!("told to panic"),
        Job::WaitCancel => {
            req.cancelled().await;
            // The handler has no Worker handle here: the answer is the
            // signal, and it is discarded by a supervisor that cancelled.
            req.ack()
        }
        Job::SumStream => {
            let Some(mut stream) = req.stream() else {
                return req.fail("no request stream");
            };
            let mut total = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => return req.fail(e),
                };
                if n == 0 {
                    break;
                }
                total += n;
            }
            let (mut write, read) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let chunk = vec![7u8; 4096];
                let mut left = total;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if write.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
            req.respond_with_stream(&total, read)
        }
        Job::Hang => {
            let _flag = SetOnDrop;
            std::future::pending::<()>().await;
            unreachable!()
        }
        Job::Ask(_) | Job::Emit(_) => req.fail("needs the worker handle: see `pool_with`"),
    }
}

#[tokio::test]
async fn requests_answers_and_errors_as_with_processes() {
    let pool = within(
        LIMIT,
        "spawn",
        drover::testing::pool(handle).workers(2).spawn(),
    )
    .await
    .unwrap();
    let answer = within(LIMIT, "upper", pool.enqueue(&Job::Upper("hi".into())))
        .await
        .unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "HI");
    assert_eq!(answer.pid(), 0, "no process: pid 0");

    let err = within(LIMIT, "fail", pool.enqueue(&Job::Fail("out of ink".into())))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { kind: RemoteErrorKind::Failed, message, .. } if message.contains("out of ink")),
        "{err:?}"
    );
    // A panicking handler fails its request; the worker serves on.
    let err = within(LIMIT, "panic", pool.enqueue(&Job::Panic))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Remote {
                kind: RemoteErrorKind::Panicked,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(pool.health().len(), 2);
    let answer = within(LIMIT, "again", pool.enqueue(&Job::Upper("ok".into())))
        .await
        .unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "OK");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    assert!(pool.health().is_empty());
}

/// A request's timeout fails it and reaches the handler as a
/// cancellation, as with a worker process.
#[tokio::test]
async fn timeouts_and_cancellation_reach_the_handler() {
    let cancelled = Arc::new(AtomicBool::new(false));
    let seen = cancelled.clone();
    let pool = within(
        LIMIT,
        "spawn",
        drover::testing::pool(move |req: Request| {
            let seen = seen.clone();
            async move {
                req.cancelled().await;
                seen.store(true, Ordering::SeqCst);
                req.ack()
            }
        })
        .spawn(),
    )
    .await
    .unwrap();
    let err = within(
        LIMIT,
        "a timed request",
        pool.request(&Job::WaitCancel)
            .timeout(Duration::from_millis(50))
            .send(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        eventually(LIMIT, || cancelled.load(Ordering::SeqCst)).await,
        "the handler saw the cancel"
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// Byte streams both ways, events both ways and queries, through
/// `pool_with`'s worker handle.
#[tokio::test]
async fn streams_events_and_queries_work_in_process() {
    let pool = within(
        LIMIT,
        "spawn",
        drover::testing::pool_with(|worker: Worker| async move {
            let me = worker.clone();
            worker
                .serve(move |req: Request| {
                    let me = me.clone();
                    async move {
                        match req.data::<Job>()? {
                            Job::Ask(question) => {
                                let answer: String = me.ask("lookup", &question).await?;
                                req.respond(&answer)
                            }
                            Job::Emit(name) => {
                                me.emit(&name, &me.index())?;
                                req.ack()
                            }
                            _ => handle(req).await,
                        }
                    }
                })
                .await
        })
        .on_query(|query: drover::Query| async move {
            let question: String = query.data().unwrap();
            let _ = query.reply(&format!("looked up {question}"));
        })
        .spawn(),
    )
    .await
    .unwrap();
    let mut events = pool.events();

    let sent = vec![1u8; 300 * 1024];
    let answer = within(
        LIMIT,
        "a streamed request",
        pool.request(&Job::SumStream)
            .stream(std::io::Cursor::new(sent.clone()))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(answer.data::<usize>().unwrap(), sent.len());
    let mut back = Vec::new();
    within(
        LIMIT,
        "the answer stream",
        answer
            .stream()
            .expect("an answer stream")
            .read_to_end(&mut back),
    )
    .await
    .unwrap();
    assert_eq!(back.len(), sent.len());

    let answer = within(LIMIT, "a query", pool.enqueue(&Job::Ask("key".into())))
        .await
        .unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "looked up key");

    within(LIMIT, "emit", pool.enqueue(&Job::Emit("progress".into())))
        .await
        .unwrap();
    let event = next_custom(&mut events, "progress").await;
    assert_eq!(event.data::<u32>().unwrap(), 0);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// A hard kill ends a worker stuck in a handler: its runtime stops and
/// drops the handler, as a killed process's would end.
#[tokio::test]
async fn a_hard_kill_ends_a_stuck_in_process_worker() {
    let pool = within(LIMIT, "spawn", drover::testing::pool(handle).spawn())
        .await
        .unwrap();
    let stuck = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Job::Hang).await })
    };
    assert!(eventually(LIMIT, || pool.health().iter().any(|h| h.in_flight == 1)).await);
    within(LIMIT, "hard kill", pool.hard_kill()).await;
    let err = within(LIMIT, "the stuck request", stuck)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::WorkerLost { .. }), "{err:?}");
    assert!(
        eventually(LIMIT, || HANG_DROPPED.load(Ordering::SeqCst)).await,
        "the stuck handler was dropped with its worker's runtime"
    );
    assert!(pool.health().is_empty());
}

/// A worker whose `main` panics (outside any handler) ends as a crash,
/// exit code 101 as a Rust program's, and is replaced; a setup that fails
/// fails the pool's start.
#[tokio::test]
async fn a_crashing_in_process_worker_is_replaced_and_a_failed_setup_fails_spawn() {
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = started.clone();
    let pool = within(
        LIMIT,
        "spawn",
        drover::testing::pool_with(move |worker: Worker| {
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                let (crash, crashed) = tokio::sync::mpsc::unbounded_channel::<()>();
                let mut crashed = crashed;
                let serving = worker.serve(move |req: Request| {
                    let crash = crash.clone();
                    async move {
                        if let Ok(Job::Panic) = req.data::<Job>() {
                            // Not the handler: the worker's main panics.
                            let _ = crash.send(());
                            std::future::pending::<()>().await;
                        }
                        handle(req).await
                    }
                });
                tokio::select! {
                    result = serving => result,
                    Some(()) = crashed.recv() => panic!("the worker's main panics"),
                }
            }
        })
        .spawn(),
    )
    .await
    .unwrap();
    let mut events = pool.events();
    let err = within(
        LIMIT,
        "a request whose worker crashes",
        pool.enqueue(&Job::Panic),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::WorkerLost { .. }), "{err:?}");
    let exit = next_exit(&mut events).await;
    assert_eq!(exit.termination, drover::Termination::Code(101), "{exit}");
    assert!(!exit.requested(), "{exit}");
    // Replaced: a second worker started and serves.
    let answer = within(
        LIMIT,
        "after the crash",
        pool.enqueue(&Job::Upper("x".into())),
    )
    .await
    .unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "X");
    assert_eq!(started.load(Ordering::SeqCst), 2);
    within(LIMIT, "soft kill", pool.soft_kill()).await;

    let err = within(
        LIMIT,
        "spawn with a failing setup",
        drover::testing::pool_with(|_worker: Worker| async move {
            Err(drover::worker::Error::Setup {
                reason: "no model file".into(),
            })
        })
        .spawn(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Handshake { .. }), "{err:?}");
}

/// A typed pool of in-process workers.
#[tokio::test]
async fn typed_tasks_run_in_process() {
    #[derive(Serialize, Deserialize)]
    struct Double(u64);
    impl drover::Task for Double {
        type Output = u64;
    }
    let pool = within(
        LIMIT,
        "spawn",
        drover::testing::tasks(
            |Double(n): Double| async move { Ok::<_, drover::worker::Error>(n * 2) },
        )
        .spawn(),
    )
    .await
    .unwrap();
    assert_eq!(
        within(LIMIT, "call", pool.call(&Double(21))).await.unwrap(),
        42
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
