//! The isolation boundary: whatever one worker sends or does costs that
//! worker only. Each misbehaviour is done by a real worker process; the
//! supervisor (this test process) must stay up, the other workers keep
//! serving, and every caller gets an answer or a clear error.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{alive, eventually, next_exit, pids, pool, still_serves, within, Cmd, LIMIT};
use drover::{Error, ExitReason, HandshakeFailure, Supervisor};

/// Variant indexes of the rare `ToSupervisor` messages on the wire
/// (bincode's enum tag, after the kind byte 0x00).
const EVENT: u8 = 3;
const STATUS: u8 = 5;

/// A frame whose message's first field (a string) claims `claim` bytes:
/// 4 bytes of header, the kind byte (0x00: bincode), the variant tag,
/// bincode's 9-byte varint.
fn lying_frame(tag: u8, claim: u64) -> Vec<u8> {
    let mut body = vec![0x00, tag, 253];
    body.extend_from_slice(&claim.to_le_bytes());
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 15-byte frame claiming a terabyte (or `u64::MAX`) costs its worker:
/// killed for breaking the protocol, its request failed naming the pid,
/// an exit event, a replacement; the other worker serves throughout.
#[tokio::test]
async fn a_lying_length_after_the_handshake_costs_one_worker() {
    for (tag, claim) in [
        (STATUS, 1u64 << 40),
        (STATUS, u64::MAX),
        (EVENT, 1 << 40),
        (EVENT, u64::MAX - 1),
    ] {
        let frame = lying_frame(tag, claim);
        assert_eq!(frame.len(), 15);
        let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
        let mut events = pool.events();
        let before = pids(&pool);
        let err = within(LIMIT, "the lying request", pool.enqueue(&Cmd::Raw(frame)))
            .await
            .unwrap_err();
        let Error::WorkerLost { exit, .. } = &err else {
            panic!("expected WorkerLost, got {err:?}");
        };
        let liar = exit.pid;
        assert!(before.contains(&liar));
        assert!(err.to_string().contains(&liar.to_string()), "{err}");
        match &exit.reason {
            ExitReason::ProtocolViolation { detail } => {
                assert!(detail.contains("does not decode"), "{detail}");
            }
            other => panic!("expected a protocol violation, got {other:?}"),
        }
        let event = next_exit(&mut events).await;
        assert_eq!(event.pid, liar);
        // Replaced, and the pool serves on both.
        assert!(
            eventually(LIMIT, || {
                let now = pids(&pool);
                now.len() == 2 && !now.contains(&liar)
            })
            .await,
            "no replacement: {:?}",
            pool.health()
        );
        assert!(!alive(liar));
        still_serves(&pool, 4).await;
        within(LIMIT, "hard kill", pool.hard_kill()).await;
    }
}

/// The same lie as the very first frame, before `Hello`: the start fails
/// with an error naming the frame, and nothing is allocated for it.
#[tokio::test]
async fn a_lying_length_before_hello_fails_the_start() {
    for claim in [1u64 << 40, u64::MAX] {
        let started = Instant::now();
        let err = within(
            LIMIT,
            "spawn",
            pool(1)
                .env("DROVER_TEST_RAW_FIRST", hex(&lying_frame(STATUS, claim)))
                .spawn(),
        )
        .await
        .unwrap_err();
        match &err {
            Error::Handshake {
                pid,
                reason: HandshakeFailure::Protocol(_),
                ..
            } => assert!(eventually(LIMIT, || !alive(*pid)).await, "{pid} left alive"),
            other => panic!("expected a handshake protocol error, got {other:?}"),
        }
        assert!(err.to_string().contains("does not decode"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "not at once");
    }
}

/// A request stream whose reader panics: the task pumping it is the
/// supervisor's, and its panic ends as that worker's death (a reason
/// saying so, the request failed, a replacement), never a wedged pool.
#[tokio::test]
async fn a_panic_in_a_per_worker_task_is_that_workers_death() {
    struct Panicking;
    impl tokio::io::AsyncRead for Panicking {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            panic!("the caller's reader panics");
        }
    }
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let mut events = pool.events();
    let err = within(
        LIMIT,
        "the streamed request",
        pool.request(&Cmd::SumStream).stream(Panicking).send(),
    )
    .await
    .unwrap_err();
    let Error::WorkerLost { exit, .. } = &err else {
        panic!("expected WorkerLost, got {err:?}");
    };
    assert!(
        matches!(&exit.reason, ExitReason::TaskFailed { task: "stream", detail } if detail.contains("panics")),
        "{:?}",
        exit.reason
    );
    assert_eq!(next_exit(&mut events).await.pid, exit.pid);
    assert!(
        eventually(LIMIT, || pids(&pool).len() == 2
            && !pids(&pool).contains(&exit.pid))
        .await
    );
    still_serves(&pool, 2).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// `resize(0)` is refused, saying why, and the pool serves on.
#[tokio::test]
async fn resize_to_zero_is_refused() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let err = within(LIMIT, "resize(0)", pool.resize(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Operation {
                operation: drover::Operation::Resize,
                reason: drover::OperationError::NoWorkers,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("at least one worker"), "{err}");
    assert_eq!(pids(&pool).len(), 2);
    still_serves(&pool, 2).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// A reload onto a program that is not a worker fails as soon as the
/// replacement fails its handshake; the old workers serve on, and the old
/// settings are back for the next reload.
#[tokio::test]
async fn reload_onto_a_non_worker_fails_fast() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let before = pids(&pool);
    let started = Instant::now();
    let err = within(
        LIMIT,
        "reload onto /bin/true",
        pool.reload_with(Supervisor::builder("/bin/true")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Operation {
                operation: drover::Operation::Reload,
                reason: drover::OperationError::ReplacementFailed { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("failed to start") && text.contains("handshake"),
        "{text}"
    );
    // The replacement exits at once: far sooner than the start timeout.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(pids(&pool), before, "the old workers keep serving");
    let answer = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo("old".into())))
        .await
        .unwrap();
    assert!(before.contains(&answer.pid()));
    // The old program is what the next reload starts.
    within(LIMIT, "reload", pool.reload()).await.unwrap();
    let after = pids(&pool);
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|pid| !before.contains(pid)), "{after:?}");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// A worker that forks copies to flood its socket with valid frames, and
/// exits: the supervisor, busy reading the flood, still sees the exit,
/// fails the request naming the worker, kills the copies with the
/// worker's process group and starts a replacement. Were the exit looked
/// for only once the socket closes, this worker's slot would hang for as
/// long as the copies write.
#[tokio::test]
async fn a_worker_that_exits_leaving_a_copy_flooding_its_socket_is_seen_to_exit() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let worker = pids(&pool)[0];
    let err = within(LIMIT, "the request", pool.enqueue(&Cmd::ForkFlood))
        .await
        .unwrap_err();
    let Error::WorkerLost { exit, .. } = &err else {
        panic!("expected WorkerLost, got {err:?}");
    };
    assert_eq!(exit.pid, worker);
    let event = next_exit(&mut events).await;
    assert_eq!(event.pid, worker);
    // The copies led no group of their own: they went with the worker's.
    let group = rustix::process::Pid::from_raw(worker as i32).unwrap();
    assert!(
        eventually(LIMIT, || rustix::process::test_kill_process_group(group)
            .is_err())
        .await,
        "something of worker {worker}'s process group still runs"
    );
    assert!(
        eventually(LIMIT, || {
            let now = pids(&pool);
            now.len() == 1 && !now.contains(&worker)
        })
        .await,
        "no replacement: {:?}",
        pool.health()
    );
    still_serves(&pool, 2).await;
    within(LIMIT, "hard kill", pool.hard_kill()).await;
}
