//! Bad input of every kind gets a clear error naming what and where, never
//! a panic or a hang, and the pool stays whole.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{alive, eventually, exists, pids, pool, still_serves, within, Cmd, LIMIT};
use drover::{Error, ExitReason, HandshakeFailure, RemoteErrorKind, Supervisor};

#[tokio::test]
async fn missing_binary_is_named() {
    let path = "/nonexistent/drover-worker-that-is-not-there";
    let err = Supervisor::builder(path).spawn().await.unwrap_err();
    assert!(matches!(err, Error::WorkerBinary { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(path) && text.contains("does not exist"),
        "{text}"
    );
}

#[tokio::test]
async fn non_executable_binary_is_named() {
    let dir = std::env::temp_dir().join(format!("drover-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("not-executable");
    std::fs::write(&path, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Supervisor::builder(&path).spawn().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(path.to_str().unwrap()) && text.contains("not executable"),
        "{text}"
    );
    let err = Supervisor::builder(&dir).spawn().await.unwrap_err();
    assert!(err.to_string().contains("is not a file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_program_that_exits_is_not_a_worker() {
    let started = Instant::now();
    let err = within(
        LIMIT,
        "spawn /bin/cat",
        Supervisor::builder("/bin/cat").workers(2).spawn(),
    )
    .await
    .unwrap_err();
    match &err {
        Error::Handshake {
            path,
            pid,
            reason: HandshakeFailure::Exited { .. },
        } => {
            assert_eq!(path.to_str(), Some("/bin/cat"));
            assert!(!exists(*pid), "cat {pid} left behind");
        }
        other => panic!("expected a handshake failure, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("/bin/cat") && text.contains("drover worker"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_program_that_says_nothing_times_out() {
    let timeout = Duration::from_millis(500);
    let err = within(
        LIMIT,
        "spawn /bin/sleep",
        Supervisor::builder("/bin/sleep")
            .arg("1000")
            .workers(2)
            .start_timeout(timeout)
            .spawn(),
    )
    .await
    .unwrap_err();
    match &err {
        Error::Handshake {
            pid,
            reason: HandshakeFailure::Timeout { timeout: t },
            ..
        } => {
            assert_eq!(*t, timeout);
            assert!(!exists(*pid), "sleep {pid} left behind");
        }
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("/bin/sleep") && text.contains("start timeout"),
        "{text}"
    );
}

/// Sends `cmd` (which makes the worker break the protocol) and checks the
/// request fails naming the worker and `expect`, the worker is replaced and
/// the others keep serving.
async fn violation(cmd: Cmd, expect: &str) {
    let pool = within(LIMIT, "spawn", pool(3).max_frame_length(1 << 20).spawn())
        .await
        .expect("spawn");
    let before = pids(&pool);
    let err = within(LIMIT, "bad worker", pool.enqueue(&cmd))
        .await
        .unwrap_err();
    let Error::WorkerLost { request_id, exit } = &err else {
        panic!("expected WorkerLost, got {err:?}");
    };
    assert!(
        matches!(exit.reason, ExitReason::ProtocolViolation { .. }),
        "{exit:?}"
    );
    assert_eq!(exit.in_flight, vec![*request_id]);
    let text = err.to_string();
    assert!(text.contains(&exit.pid.to_string()), "{text}");
    assert!(text.contains(expect), "{text}");
    assert!(!exists(exit.pid), "the violator was not reaped");
    // Replaced: three workers again, the violator's slot with a new pid.
    assert!(
        eventually(LIMIT, || pool.health().len() == 3
            && pool.health().iter().all(|h| h.pid != exit.pid))
        .await,
        "not replaced: {:?}",
        pool.health()
    );
    let others: Vec<u32> = before.into_iter().filter(|&p| p != exit.pid).collect();
    assert!(others.iter().all(|&p| alive(p)));
    still_serves(&pool, 20).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn oversize_frame_from_a_worker_kills_and_replaces_it() {
    violation(
        Cmd::HugeFrame(u32::MAX),
        "frame of 4294967295 bytes exceeds the frame limit of 1048576 bytes",
    )
    .await;
}

#[tokio::test]
async fn undecodable_frame_from_a_worker_kills_and_replaces_it() {
    violation(Cmd::Garbage, "does not decode as a message").await;
}

#[tokio::test]
async fn oversize_payload_is_refused_before_sending() {
    let pool = within(LIMIT, "spawn", pool(1).max_frame_length(1 << 20).spawn())
        .await
        .unwrap();
    let big = Cmd::Echo("x".repeat(2 << 20));
    let err = within(LIMIT, "enqueue", pool.enqueue(&big))
        .await
        .unwrap_err();
    match &err {
        Error::PayloadTooLarge { size, limit } => {
            assert!(*size > 2 << 20);
            assert_eq!(*limit, pool.max_payload());
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("payload limit"), "{err}");
    assert_eq!(pool.health()[0].served, 0, "nothing reached the worker");
    // A payload right at the limit still goes through.
    let fits = vec![7u8; pool.max_payload()];
    let answer = within(LIMIT, "enqueue", pool.enqueue_bytes(fits.clone())).await;
    // The worker cannot decode raw bytes as a command: a remote error, sent
    // back over the connection, which is the point.
    assert!(matches!(answer, Err(Error::Remote { .. })), "{answer:?}");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn answer_of_the_wrong_type_names_the_type() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let answer = within(
        LIMIT,
        "echo",
        pool.enqueue(&Cmd::Echo("not a number at all".into())),
    )
    .await
    .unwrap();
    let err = answer.data::<u64>().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("as u64"), "{text}");
    assert!(
        text.contains(&answer.id().to_string()) && text.contains(&answer.pid().to_string()),
        "{text}"
    );
    // The pool is unharmed.
    let again = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo("fine".into())))
        .await
        .unwrap();
    assert_eq!(again.data::<String>().unwrap(), "fine");
    assert_eq!(again.pid(), answer.pid());
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn handler_panic_and_error_answer_with_an_error_and_the_worker_stays() {
    handler_failures(pool(1)).await;
}

#[tokio::test]
async fn handler_failures_on_a_current_thread_worker() {
    handler_failures(pool(1).env("DROVER_TEST_RUNTIME", "current_thread")).await;
}

async fn handler_failures(builder: drover::Builder) {
    let pool = within(LIMIT, "spawn", builder.spawn()).await.unwrap();
    let pid = pids(&pool)[0];
    let err = within(LIMIT, "panic", pool.enqueue(&Cmd::Panic))
        .await
        .unwrap_err();
    match &err {
        Error::Remote {
            request_id,
            pid: p,
            kind: RemoteErrorKind::Panicked,
            message,
        } => {
            assert_eq!(*p, pid);
            assert!(
                message.contains("told to panic") && message.contains(&request_id.to_string()),
                "{message}"
            );
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    let err = within(LIMIT, "fail", pool.enqueue(&Cmd::Fail("no good".into())))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { kind: RemoteErrorKind::Failed, message, .. } if message.contains("no good")),
        "{err:?}"
    );
    let answer = within(LIMIT, "pid", pool.enqueue(&Cmd::Pid)).await.unwrap();
    assert_eq!(answer.pid(), pid, "the worker stayed up");
    // A handler that waits (a task of its own on either runtime).
    let slept: u32 = within(LIMIT, "sleep", pool.enqueue(&Cmd::Sleep(20)))
        .await
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(slept, pid);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let pool = within(LIMIT, "spawn", pool(1).max_queue(2).spawn())
        .await
        .unwrap();
    let held: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.enqueue(&Cmd::Sleep(300)).await })
        })
        .collect();
    assert!(eventually(LIMIT, || pool.health()[0].in_flight == 1).await);
    // One in flight, and (once the other two are queued) the queue is full.
    let err = within(LIMIT, "refusal", async {
        loop {
            match pool.enqueue(&Cmd::Pid).await {
                Err(e @ Error::QueueFull { .. }) => return e,
                _ => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    assert!(err.to_string().contains("max_queue = 2"), "{err}");
    for task in held {
        within(LIMIT, "held", task)
            .await
            .unwrap()
            .expect("queued requests still run");
    }
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn worker_exiting_mid_request_fails_it_at_once_and_is_replaced() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let started = Instant::now();
    let err = within(LIMIT, "exit", pool.enqueue(&Cmd::Exit(3)))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let Error::WorkerLost { exit, .. } = &err else {
        panic!("expected WorkerLost, got {err:?}");
    };
    assert_eq!(exit.reason, ExitReason::Crashed);
    assert_eq!(exit.termination, drover::Termination::Code(3));
    assert!(err.to_string().contains("exit code 3"), "{err}");
    assert!(eventually(LIMIT, || pool.health().len() == 2).await);
    within(LIMIT, "pid", pool.enqueue(&Cmd::Pid)).await.unwrap();
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn an_answer_over_the_frame_limit_is_an_error_naming_the_limit() {
    let pool = within(LIMIT, "spawn", pool(1).max_frame_length(1 << 20).spawn())
        .await
        .unwrap();
    let pid = pids(&pool)[0];
    let err = within(LIMIT, "big answer", pool.enqueue(&Cmd::Big(2 << 20)))
        .await
        .unwrap_err();
    match &err {
        Error::Remote {
            kind: RemoteErrorKind::Unsendable,
            pid: p,
            message,
            ..
        } => {
            assert_eq!(*p, pid);
            assert!(
                message.contains("payload limit of 1048512 bytes (max_frame_length 1048576"),
                "{message}"
            );
        }
        other => panic!("expected an unsendable answer, got {other:?}"),
    }
    // The worker checked before sending: it is still the same process.
    let answer = within(LIMIT, "small answer", pool.enqueue(&Cmd::Big(10)))
        .await
        .unwrap();
    assert_eq!(answer.pid(), pid);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
