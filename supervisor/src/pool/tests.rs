//! The pool's logic driven without processes: workers are entries with an
//! outbox nobody reads, and their deaths are reported as the connection
//! task would report them.

use std::time::Duration;

use drover_proto::{outbox, OutboxReceiver, ToWorker};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::state::{Pending, Phase, PoolState};
use crate::builder::{Builder, Config};
use crate::error::Error;
use crate::event::{ExitReason, RecycleCause, Termination, WorkerExit};
use crate::lifecycle::Kill;
use crate::response::Response;

fn config(builder: impl FnOnce(Builder) -> Builder) -> Config {
    builder(Builder::new("drover-test-worker"))
        .into_config()
        .expect("a bare program name is looked up at spawn")
}

/// A pool state with worker ids `1..=n` registered and ready.
fn pool(config: &Config, n: u64) -> (PoolState, Vec<OutboxReceiver>) {
    let mut state = PoolState::new(n as usize, TaskTracker::new());
    let mut writers = Vec::new();
    for id in 1..=n {
        state.register(id, (id - 1) as u32, 1000 + id as u32, Kill::default(), None);
        let (tx, rx) = outbox::<ToWorker>(1 << 20, 1 << 20);
        writers.push(rx);
        let _ = state.worker_ready(config, id, tx, true, None);
    }
    (state, writers)
}

type Answer = oneshot::Receiver<Result<Response, Error>>;

fn request(retries: u32, created_at: u64) -> (Pending, Answer) {
    let (reply, answer) = oneshot::channel();
    let pending = Pending {
        id: uuid::Uuid::new_v4(),
        created_at,
        payload: Bytes::from_static(b"job"),
        reply,
        retries,
        extras: None,
    };
    (pending, answer)
}

fn crash(worker_id: u64) -> WorkerExit {
    WorkerExit {
        worker_id,
        index: (worker_id - 1) as u32,
        pid: 1000 + worker_id as u32,
        termination: Termination::Code(1),
        reason: ExitReason::Crashed,
        in_flight: Vec::new(),
        stderr_tail: Vec::new(),
    }
}

fn held(state: &PoolState, worker_id: u64) -> usize {
    state
        .workers
        .iter()
        .find(|w| w.id == worker_id)
        .map_or(0, |w| w.in_flight.len())
}

#[test]
fn a_crash_requeues_what_has_retries_and_fails_the_rest() {
    let config = config(|b| b.workers(1).max_concurrency(4));
    let (mut state, _writers) = pool(&config, 1);
    let (retried, _retried_answer) = request(1, 1);
    let retried_id = retried.id;
    let (last_try, mut last_try_answer) = request(0, 2);
    let last_try_id = last_try.id;
    state.submit(&config, retried).unwrap();
    state.submit(&config, last_try).unwrap();
    assert_eq!(held(&state, 1), 2);

    let settled = state
        .worker_exited(&config, crash(1))
        .expect("a known worker");
    let mut in_flight = settled.exit.in_flight.clone();
    in_flight.sort();
    let mut expected = vec![retried_id, last_try_id];
    expected.sort();
    assert_eq!(in_flight, expected);
    // The one with a retry left waits for the replacement, one try less.
    assert_eq!(state.pending.len(), 1);
    assert_eq!(state.pending[0].id, retried_id);
    assert_eq!(state.pending[0].retries, 0);
    // The other fails with its own error, naming the dead worker.
    assert_eq!(settled.failures.len(), 1);
    assert!(matches!(
        &settled.failures[0].1,
        Error::WorkerLost { request_id, exit } if *request_id == last_try_id && exit.pid == 1001
    ));
    assert_eq!(settled.replace, Some(0));
    assert!(settled.failed_reason.is_none());
    // Nothing is sent under the lock: the caller still waits.
    assert!(last_try_answer.try_recv().is_err());
}

#[test]
fn a_request_cancelled_while_queued_is_never_sent() {
    let config = config(|b| b.workers(1).max_concurrency(1));
    let (mut state, _writers) = pool(&config, 1);
    let (running, _running_answer) = request(0, 1);
    state.submit(&config, running).unwrap();
    let (queued, queued_answer) = request(0, 2);
    let queued_id = queued.id;
    state.submit(&config, queued).unwrap();
    assert_eq!(state.pending.len(), 1);

    // Its caller leaves: no worker holds it, so none is told.
    drop(queued_answer);
    assert_eq!(state.cancel(queued_id), None);
    assert!(!state.is_idle(), "the running request still counts");

    // Its worker dies (the running request, with no retry, fails with
    // it) and a replacement is ready: the cancelled one is skipped,
    // not sent.
    let _ = state.worker_exited(&config, crash(1));
    let (tx, _rx) = outbox::<ToWorker>(1 << 20, 1 << 20);
    state.register(2, 0, 1002, Kill::default(), None);
    let _ = state.worker_ready(&config, 2, tx, false, None);
    assert_eq!(held(&state, 2), 0);
    assert!(state.pending.is_empty());
    assert!(state.is_idle());
}

#[test]
fn a_crash_with_the_restart_budget_spent_fails_the_pool() {
    let config = config(|b| b.workers(1).restarts(0, Duration::from_secs(60)).retries(3));
    let (mut state, _writers) = pool(&config, 1);
    let (held_request, _answer) = request(3, 1);
    state.submit(&config, held_request).unwrap();

    let settled = state
        .worker_exited(&config, crash(1))
        .expect("a known worker");
    let reason = settled.failed_reason.clone().expect("the budget is spent");
    assert!(reason.contains("restart budget spent"), "{reason}");
    assert_eq!(state.phase(), &Phase::Failed(reason.clone()));
    assert_eq!(settled.replace, None);
    // Retries do not matter once the pool has failed.
    assert!(matches!(
        &settled.failures[..],
        [(_, Error::PoolFailed { .. })]
    ));
    assert!(state.pending.is_empty());
    let (late, _late_answer) = request(0, 2);
    assert!(matches!(
        state.submit(&config, late),
        Err(Error::PoolFailed { .. })
    ));
}

#[test]
fn a_worker_stopping_takes_no_work() {
    let config = config(|b| b.workers(2).max_concurrency(4));
    let (mut state, _writers) = pool(&config, 2);
    let _ = state.retire_worker(1, RecycleCause::Resize, Duration::from_secs(5));
    for created_at in 0..3 {
        let (r, _answer) = request(0, created_at);
        state.submit(&config, r).unwrap();
    }
    assert_eq!(held(&state, 1), 0);
    assert_eq!(held(&state, 2), 3);
    assert_eq!(state.active(), 1);
}

/// How a worker the pool retired (or stopped) ends.
fn retired(worker_id: u64, reason: ExitReason) -> WorkerExit {
    WorkerExit {
        termination: Termination::Code(0),
        reason,
        ..crash(worker_id)
    }
}

#[test]
fn resizing_down_retires_idle_workers_first_and_replaces_none() {
    let config = config(|b| b.workers(3).max_concurrency(4));
    let (mut state, _writers) = pool(&config, 3);
    let (busy, _answer) = request(0, 1);
    state.submit(&config, busy).unwrap();
    assert_eq!(held(&state, 1), 1);

    let changes = state.resize(1, Duration::from_secs(5));
    assert!(changes.launch.is_empty());
    let mut stopped: Vec<u64> = changes.stopping.iter().map(|&(id, _)| id).collect();
    stopped.sort();
    assert_eq!(
        stopped,
        vec![2, 3],
        "the idle ones go, the one serving stays"
    );
    assert!(!state.resized_to(1), "not until they are gone");

    for id in [2, 3] {
        let reason = ExitReason::Recycled(RecycleCause::Resize);
        let settled = state.worker_exited(&config, retired(id, reason)).unwrap();
        assert_eq!(settled.replace, None);
        assert!(settled.failures.is_empty());
    }
    assert!(state.resized_to(1));
    assert_eq!(held(&state, 1), 1);
}

#[test]
fn recycling_stays_within_the_cap() {
    let config = config(|b| b.workers(2).max_recycling(1));
    let mut state = PoolState::new(2, TaskTracker::new());
    let mut writers = Vec::new();
    for id in 1..=2 {
        // Due at once: a quota of no requests.
        state.register(
            id,
            (id - 1) as u32,
            1000 + id as u32,
            Kill::default(),
            Some(0),
        );
        let (tx, rx) = outbox::<ToWorker>(1 << 20, 1 << 20);
        writers.push(rx);
        let _ = state.worker_ready(&config, id, tx, true, None);
    }
    let now = std::time::Instant::now();
    let (id, _pid, index) = state.recycle_next(&config, now).expect("one is due");
    assert_eq!((id, index), (1, 0));
    assert_eq!(
        state.recycle_next(&config, now),
        None,
        "one at a time (max_recycling)"
    );
    // Its replacement is ready and the old one gone: the next may go.
    let reason = ExitReason::Recycled(RecycleCause::MaxRequests { served: 0 });
    let _ = state.worker_exited(&config, retired(1, reason));
    assert_eq!(state.recycle_next(&config, now).map(|(id, ..)| id), Some(2));
}

#[test]
fn a_drained_pool_holds_requests_until_resumed() {
    let config = config(|b| b.workers(2));
    let (mut state, _writers) = pool(&config, 2);
    let stopping = state.drain(Duration::from_secs(5));
    assert_eq!(stopping.len(), 2);
    let (held_request, _answer) = request(0, 1);
    state.submit(&config, held_request).unwrap();
    assert!(!state.queue_is_empty(), "held, no worker takes work");
    for id in [1, 2] {
        let reason = ExitReason::Recycled(RecycleCause::Drain);
        let settled = state.worker_exited(&config, retired(id, reason)).unwrap();
        assert_eq!(settled.replace, None, "a drained pool starts nobody");
    }
    assert!(state.no_workers());
    assert_eq!(state.resume(), Some(2));
    assert_eq!(state.resume(), None, "only a drained pool resumes");
    assert!(!state.back_to_target());
    assert!(!state.queue_is_empty(), "still held for the new workers");
}

#[test]
fn a_request_cancelled_while_running_is_neither_retried_nor_failed() {
    let config = config(|b| b.workers(1).retries(3));
    let (mut state, _writers) = pool(&config, 1);
    let (running, answer) = request(3, 1);
    let id = running.id;
    state.submit(&config, running).unwrap();
    assert_eq!(held(&state, 1), 1);
    // Its caller leaves: the worker holding it is the one told.
    drop(answer);
    assert_eq!(state.cancel(id), Some(1));
    // The worker dies before answering: nobody wants the request any
    // more, so it is not sent again, and no error goes anywhere.
    let settled = state.worker_exited(&config, crash(1)).unwrap();
    assert_eq!(settled.exit.in_flight, vec![id]);
    assert!(settled.failures.is_empty());
    assert!(state.pending.is_empty());
}

#[test]
fn retries_carry_a_request_across_several_crashes_then_it_fails() {
    let config = config(|b| b.workers(1));
    let (mut state, _writers) = pool(&config, 1);
    let (job, mut answer) = request(2, 1);
    let id = job.id;
    state.submit(&config, job).unwrap();
    let mut writers = Vec::new();
    // Workers 1 and 2 die holding it: it is sent again each time, one
    // retry less.
    for (dead, next) in [(1u64, 2u64), (2, 3)] {
        let settled = state.worker_exited(&config, crash(dead)).unwrap();
        assert!(
            settled.failures.is_empty(),
            "worker {dead}: retried, not failed"
        );
        assert_eq!(settled.replace, Some(0));
        state.register(next, 0, 1000 + next as u32, Kill::default(), None);
        let (tx, rx) = outbox::<ToWorker>(1 << 20, 1 << 20);
        writers.push(rx);
        let _ = state.worker_ready(&config, next, tx, false, None);
        assert_eq!(held(&state, next), 1, "worker {next} took it up");
    }
    // The third death spends its last try: it fails, naming worker 3.
    let settled = state.worker_exited(&config, crash(3)).unwrap();
    assert!(matches!(
        &settled.failures[..],
        [(_, Error::WorkerLost { request_id, exit })] if *request_id == id && exit.pid == 1003
    ));
    assert!(answer.try_recv().is_err(), "sent after the lock, not here");
}
