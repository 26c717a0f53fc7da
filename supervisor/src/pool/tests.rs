//! The pool's logic driven without processes: workers are entries with an
//! outbox nobody reads, and their deaths are reported as the connection
//! task would report them. Each transition's [`Effects`] are what the test
//! checks: nothing a transition does wakes anyone until they are applied.

use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use drover_proto::{outbox, OutboxReceiver, ToWorker};

use bytes::Bytes;

use super::effects::{Effects, Launch};
use super::state::{Pending, Phase, PoolState};
use crate::builder::{Builder, Config};
use crate::error::Error;
use crate::event::{Event, ExitReason, RecycleCause, Termination, WorkerExit};
use crate::health::WorkerState;
use crate::lifecycle::Kill;
use crate::response::Response;

fn config(builder: impl FnOnce(Builder) -> Builder) -> Config {
    builder(Builder::new("drover-test-worker"))
        .into_config()
        .expect("a bare program name is looked up at spawn")
}

/// Registers the worker `launch` started (pid 1000 + id) and makes it
/// ready, as its connection task would.
fn start(
    state: &mut PoolState,
    config: &Config,
    launch: Launch,
    writers: &mut Vec<OutboxReceiver>,
) -> Effects {
    let mut fx = Effects::default();
    let pid = 1000 + launch.id as u32;
    state.register(
        launch.id,
        launch.index,
        pid,
        Kill::default(),
        Arc::default(),
        None,
        &mut fx,
    );
    let (tx, rx) = outbox::<ToWorker>(1 << 20, 1 << 20);
    writers.push(rx);
    state.worker_ready(config, launch.id, tx, launch.initial, None, &mut fx);
    fx
}

/// A pool state with its initial `n` workers (ids `1..=n`) launched,
/// registered and ready.
fn pool(config: &Config, n: u64) -> (PoolState, Vec<OutboxReceiver>) {
    let mut state = PoolState::new(n as usize);
    let mut fx = Effects::default();
    for index in 0..n {
        state.launch(index as u32, true, &mut fx);
    }
    assert_eq!(fx.launches().len(), n as usize);
    let mut writers = Vec::new();
    for launch in std::mem::take(&mut fx.rare().launches) {
        let fx = start(&mut state, config, launch, &mut writers);
        if launch.id == n {
            assert!(
                fx.events().iter().any(|e| matches!(e, Event::Online)),
                "the last of the initial set brings the pool online"
            );
        }
    }
    (state, writers)
}

type Answer = crate::reply::Answer<Result<Response, Error>>;

fn request(retries: u32, created_at: u64) -> (Pending, Answer) {
    let (reply, answer) = crate::reply::slot(Waker::noop());
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

fn submit(state: &mut PoolState, config: &Config, request: Pending) -> Result<Effects, Error> {
    let mut fx = Effects::default();
    state.submit(config, request, &mut fx).map(|()| fx)
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

/// Worker `exit.worker_id` ends: its exit as settled, and the effects.
fn exited(state: &mut PoolState, config: &Config, exit: WorkerExit) -> (WorkerExit, Effects) {
    let mut fx = Effects::default();
    let exit = state
        .worker_exited(config, exit, &mut fx)
        .expect("a known worker");
    (exit, fx)
}

/// The errors the callers are to be failed with.
fn failures(fx: &Effects) -> Vec<&Error> {
    fx.replies
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().err())
        .collect()
}

/// The slots of the workers to be launched.
fn launched(fx: &Effects) -> Vec<u32> {
    fx.launches().iter().map(|l| l.index).collect()
}

/// The workers the events say now stop.
fn stopping(fx: &Effects) -> Vec<u64> {
    let mut ids: Vec<u64> = fx
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::WorkerState {
                worker_id,
                state: WorkerState::Stopping,
                ..
            } => Some(*worker_id),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
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
    let fx = submit(&mut state, &config, retried).unwrap();
    assert!(
        !fx.is_empty(),
        "the writer is woken after the lock, by the effects"
    );
    let _ = submit(&mut state, &config, last_try).unwrap();
    assert_eq!(held(&state, 1), 2);

    let (exit, fx) = exited(&mut state, &config, crash(1));
    let mut in_flight = exit.in_flight.clone();
    in_flight.sort();
    let mut expected = vec![retried_id, last_try_id];
    expected.sort();
    assert_eq!(in_flight, expected);
    // The one with a retry left waits for the replacement, one try less.
    assert_eq!(state.pending.len(), 1);
    assert_eq!(state.pending[0].id, retried_id);
    assert_eq!(state.pending[0].retries, 0);
    // The other fails with its own error, naming the dead worker.
    assert!(matches!(
        &failures(&fx)[..],
        [Error::WorkerLost { request_id, exit }] if *request_id == last_try_id && exit.pid == 1001
    ));
    assert_eq!(launched(&fx), vec![0], "its slot is filled again");
    assert!(fx.failed().is_none());
    assert!(fx
        .events()
        .iter()
        .any(|e| matches!(e, Event::WorkerExited(exit) if exit.worker_id == 1)));
    // Nothing is sent under the lock: the caller still waits.
    assert!(matches!(last_try_answer.try_recv(), Ok(None)));
}

#[test]
fn a_request_cancelled_while_queued_is_never_sent() {
    let config = config(|b| b.workers(1).max_concurrency(1));
    let (mut state, _writers) = pool(&config, 1);
    let (running, _running_answer) = request(0, 1);
    let _ = submit(&mut state, &config, running).unwrap();
    let (queued, queued_answer) = request(0, 2);
    let queued_id = queued.id;
    let _ = submit(&mut state, &config, queued).unwrap();
    assert_eq!(state.pending.len(), 1);

    // Its caller leaves: no worker holds it, so none is told.
    drop(queued_answer);
    let mut fx = Effects::default();
    assert_eq!(state.cancel(queued_id, &mut fx), None);
    assert!(fx.notify, "idle() waiters look again");
    assert!(!state.is_idle(), "the running request still counts");

    // Its worker dies (the running request, with no retry, fails with
    // it) and a replacement is ready: the cancelled one is skipped,
    // not sent.
    let (_, mut fx) = exited(&mut state, &config, crash(1));
    let replacement = fx.rare().launches.pop().expect("a replacement");
    let _ = start(&mut state, &config, replacement, &mut Vec::new());
    assert_eq!(held(&state, replacement.id), 0);
    assert!(state.pending.is_empty());
    assert!(state.is_idle());
}

#[test]
fn a_crash_with_the_restart_budget_spent_fails_the_pool() {
    let config = config(|b| b.workers(1).restarts(0, Duration::from_secs(60)).retries(3));
    let (mut state, _writers) = pool(&config, 1);
    let (held_request, _answer) = request(3, 1);
    let _ = submit(&mut state, &config, held_request).unwrap();

    let (_, fx) = exited(&mut state, &config, crash(1));
    let reason = fx.failed().cloned().expect("the budget is spent");
    assert!(
        matches!(
            &reason,
            crate::error::PoolFailure::RestartBudgetSpent { max_restarts: 0, last, .. }
                if last.contains("pid 1001")
        ),
        "{reason}"
    );
    assert_eq!(state.phase(), &Phase::Failed(reason.clone()));
    assert!(fx.launches().is_empty(), "no replacement");
    // Retries do not matter once the pool has failed.
    assert!(matches!(&failures(&fx)[..], [Error::PoolFailed { .. }]));
    assert!(state.pending.is_empty());
    let (late, _late_answer) = request(0, 2);
    assert!(matches!(
        submit(&mut state, &config, late),
        Err(Error::PoolFailed { .. })
    ));
}

#[test]
fn a_worker_stopping_takes_no_work() {
    let config = config(|b| b.workers(2).max_concurrency(4));
    let (mut state, _writers) = pool(&config, 2);
    let mut fx = Effects::default();
    assert!(state.retire_worker(1, RecycleCause::Resize, Duration::from_secs(5), &mut fx));
    assert_eq!(stopping(&fx), vec![1]);
    for created_at in 0..3 {
        let (r, _answer) = request(0, created_at);
        let _ = submit(&mut state, &config, r).unwrap();
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
    let _ = submit(&mut state, &config, busy).unwrap();
    assert_eq!(held(&state, 1), 1);

    let mut fx = Effects::default();
    state.resize(1, Duration::from_secs(5), &mut fx);
    assert!(fx.launches().is_empty());
    assert_eq!(
        stopping(&fx),
        vec![2, 3],
        "the idle ones go, the one serving stays"
    );
    assert!(!state.resized_to(1), "not until they are gone");

    for id in [2, 3] {
        let reason = ExitReason::Recycled(RecycleCause::Resize);
        let (_, fx) = exited(&mut state, &config, retired(id, reason));
        assert!(fx.launches().is_empty());
        assert!(failures(&fx).is_empty());
    }
    assert!(state.resized_to(1));
    assert_eq!(held(&state, 1), 1);
}

#[test]
fn recycling_stays_within_the_cap() {
    let config = config(|b| b.workers(2).max_recycling(1));
    let mut state = PoolState::new(2);
    let mut writers = Vec::new();
    let mut fx = Effects::default();
    for id in 1..=2 {
        // Due at once: a quota of no requests.
        state.register(
            id,
            (id - 1) as u32,
            1000 + id as u32,
            Kill::default(),
            Arc::default(),
            Some(0),
            &mut fx,
        );
        let (tx, rx) = outbox::<ToWorker>(1 << 20, 1 << 20);
        writers.push(rx);
        state.worker_ready(&config, id, tx, true, None, &mut fx);
    }
    let now = std::time::Instant::now();
    let mut fx = Effects::default();
    assert!(state.recycle_next(&config, now, &mut fx), "one is due");
    assert_eq!(stopping(&fx), vec![1]);
    assert_eq!(launched(&fx), vec![0], "its replacement takes its slot");
    assert!(
        !state.recycle_next(&config, now, &mut Effects::default()),
        "one at a time (max_recycling)"
    );
    // The old one gone: the next may go.
    let reason = ExitReason::Recycled(RecycleCause::MaxRequests { served: 0 });
    let _ = exited(&mut state, &config, retired(1, reason));
    let mut fx = Effects::default();
    assert!(state.recycle_next(&config, now, &mut fx));
    assert_eq!(stopping(&fx), vec![2]);
}

#[test]
fn a_drained_pool_holds_requests_until_resumed() {
    let config = config(|b| b.workers(2));
    let (mut state, _writers) = pool(&config, 2);
    let mut fx = Effects::default();
    state.drain(Duration::from_secs(5), &mut fx);
    assert_eq!(stopping(&fx), vec![1, 2]);
    let (held_request, _answer) = request(0, 1);
    let _ = submit(&mut state, &config, held_request).unwrap();
    assert!(!state.queue_is_empty(), "held, no worker takes work");
    for id in [1, 2] {
        let reason = ExitReason::Recycled(RecycleCause::Drain);
        let (_, fx) = exited(&mut state, &config, retired(id, reason));
        assert!(fx.launches().is_empty(), "a drained pool starts nobody");
    }
    assert!(state.no_workers());
    let mut fx = Effects::default();
    assert!(state.resume(&mut fx));
    assert_eq!(launched(&fx), vec![0, 1]);
    assert!(
        !state.resume(&mut Effects::default()),
        "only a drained pool resumes"
    );
    assert!(!state.back_to_target());
    assert!(!state.queue_is_empty(), "still held for the new workers");
}

#[test]
fn a_request_cancelled_while_running_is_neither_retried_nor_failed() {
    let config = config(|b| b.workers(1).retries(3));
    let (mut state, _writers) = pool(&config, 1);
    let (running, answer) = request(3, 1);
    let id = running.id;
    let _ = submit(&mut state, &config, running).unwrap();
    assert_eq!(held(&state, 1), 1);
    // Its caller leaves: the worker holding it is the one told.
    drop(answer);
    assert_eq!(state.cancel(id, &mut Effects::default()), Some(1));
    // The worker dies before answering: nobody wants the request any
    // more, so it is not sent again, and no error goes anywhere.
    let (exit, fx) = exited(&mut state, &config, crash(1));
    assert_eq!(exit.in_flight, vec![id]);
    assert!(fx.replies.is_empty());
    assert!(state.pending.is_empty());
}

#[test]
fn retries_carry_a_request_across_several_crashes_then_it_fails() {
    let config = config(|b| b.workers(1));
    let (mut state, _writers) = pool(&config, 1);
    let (job, mut answer) = request(2, 1);
    let id = job.id;
    let _ = submit(&mut state, &config, job).unwrap();
    let mut writers = Vec::new();
    // Workers 1 and 2 die holding it: it is sent again each time, one
    // retry less.
    for (dead, next) in [(1u64, 2u64), (2, 3)] {
        let (_, mut fx) = exited(&mut state, &config, crash(dead));
        assert!(
            failures(&fx).is_empty(),
            "worker {dead}: retried, not failed"
        );
        let replacement = fx.rare().launches.pop().expect("a replacement");
        assert_eq!((replacement.id, replacement.index), (next, 0));
        let _ = start(&mut state, &config, replacement, &mut writers);
        assert_eq!(held(&state, next), 1, "worker {next} took it up");
    }
    // The third death spends its last try: it fails, naming worker 3.
    let (_, fx) = exited(&mut state, &config, crash(3));
    assert!(matches!(
        &failures(&fx)[..],
        [Error::WorkerLost { request_id, exit }] if *request_id == id && exit.pid == 1003
    ));
    assert!(
        matches!(answer.try_recv(), Ok(None)),
        "sent after the lock, not here"
    );
}

#[test]
fn a_request_still_held_after_its_kill_after_grace_kills_its_worker() {
    let config = config(|b| b.workers(1).max_concurrency(2).retries(1));
    let (mut state, _writers) = pool(&config, 1);
    let (slow, _slow_answer) = request(0, 1);
    let slow_id = slow.id;
    let _ = submit(&mut state, &config, slow).unwrap();
    let (other, _other_answer) = request(1, 2);
    let other_id = other.id;
    let _ = submit(&mut state, &config, other).unwrap();
    assert_eq!(held(&state, 1), 2);

    // The grace passes with the request still held: its worker is killed
    // (by its connection task, once the lock is released) for it.
    let mut fx = Effects::default();
    state.kill_if_still_holding(1, slow_id, &mut fx);
    assert_eq!(fx.kills(), 1);
    let worker = state.worker_mut(1).unwrap();
    assert!(worker.life.is_stopping(), "routed nothing more");
    assert_eq!(
        worker.life.exit_reason(),
        Some(ExitReason::TimedOut {
            request_id: slow_id
        })
    );
    // A second timer for the same worker changes nothing.
    let mut again = Effects::default();
    state.kill_if_still_holding(1, slow_id, &mut again);
    assert_eq!(again.kills(), 0);

    // It dies: a replacement takes its slot, the other request (a retry
    // left) waits for it, and the timed-out one is not sent again.
    let exit = WorkerExit {
        termination: Termination::Signal(9),
        reason: ExitReason::TimedOut {
            request_id: slow_id,
        },
        ..crash(1)
    };
    let (exit, fx) = exited(&mut state, &config, exit);
    assert!(exit.in_flight.contains(&slow_id));
    assert_eq!(launched(&fx), vec![0]);
    let waiting: Vec<_> = state.pending.iter().map(|p| p.id).collect();
    assert_eq!(waiting, vec![other_id]);
    assert!(matches!(
        &failures(&fx)[..],
        [Error::WorkerLost { request_id, .. }] if *request_id == slow_id
    ));
}

#[test]
fn a_request_answered_within_its_grace_kills_nobody() {
    let config = config(|b| b.workers(1));
    let (mut state, _writers) = pool(&config, 1);
    let (quick, _answer) = request(0, 1);
    let id = quick.id;
    let _ = submit(&mut state, &config, quick).unwrap();
    // Answered (as `Shared::on_answers` takes it off the worker).
    state.worker_mut(1).unwrap().in_flight.remove(&id);
    let mut fx = Effects::default();
    state.kill_if_still_holding(1, id, &mut fx);
    assert_eq!(fx.kills(), 0);
    assert!(!state.worker_mut(1).unwrap().life.is_stopping());
}

#[test]
fn an_unanswered_ping_past_its_timeout_kills_the_worker() {
    let config = config(|b| b.workers(2));
    let (mut state, _writers) = pool(&config, 2);
    let start = std::time::Instant::now();
    let timeout = Duration::from_secs(2);
    let mut fx = Effects::default();
    state.health_check(1, start, timeout, &mut fx);
    assert_eq!(fx.kills(), 0, "the first round only pings");
    // Worker 2 answers; worker 1 never does.
    state.worker_mut(2).unwrap().ping = None;
    let mut fx = Effects::default();
    state.health_check(2, start + Duration::from_secs(3), timeout, &mut fx);
    assert_eq!(fx.kills(), 1);
    assert!(matches!(
        state.worker_mut(1).unwrap().life.exit_reason(),
        Some(ExitReason::HealthCheck { .. })
    ));
    assert!(!state.worker_mut(2).unwrap().life.is_stopping());
}

#[test]
fn a_worker_stopped_by_a_signal_is_replaced_without_spending_a_restart() {
    let config = config(|b| b.workers(1).restarts(0, Duration::from_secs(60)));
    let (mut state, _writers) = pool(&config, 1);
    let exit = WorkerExit {
        termination: Termination::Code(0),
        reason: ExitReason::Signalled { signal: 15 },
        ..crash(1)
    };
    let (_, fx) = exited(&mut state, &config, exit);
    assert!(fx.failed().is_none(), "a budget of none is not spent by it");
    assert_eq!(launched(&fx), vec![0]);
    assert_eq!(state.phase(), &Phase::Running);
}

#[test]
fn a_soft_killing_pool_refuses_new_requests_and_fails_what_is_queued() {
    let config = config(|b| b.workers(1).max_concurrency(1));
    let (mut state, _writers) = pool(&config, 1);
    let (running, _a) = request(0, 1);
    let _ = submit(&mut state, &config, running).unwrap();
    let (queued, _b) = request(0, 2);
    let _ = submit(&mut state, &config, queued).unwrap();
    state.phase = Phase::SoftKilling;
    let (late, _c) = request(0, 3);
    assert!(matches!(
        submit(&mut state, &config, late),
        Err(Error::ShuttingDown)
    ));
    let mut fx = Effects::default();
    let queued = state.take_pending();
    super::fail_all(queued, || Error::ShuttingDown, &mut fx);
    assert!(matches!(&failures(&fx)[..], [Error::ShuttingDown]));
}

#[test]
fn large_requests_wait_in_the_queue_rather_than_pass_a_workers_outbox_limit() {
    // An outbox limit of 4 MiB: a reserve of half a MiB kept for the
    // small frames, 3.5 MiB of requests in flight on a worker at most.
    let config = config(|b| {
        b.workers(1)
            .max_concurrency(8)
            .max_frame_length(2 << 20)
            .max_queued_bytes(4 << 20)
    });
    let (mut state, _writers) = pool(&config, 1);
    let large = |n: u8| {
        let (mut pending, answer) = request(0, 1);
        pending.payload = Bytes::from(vec![n; 3 << 19]);
        (pending, answer)
    };
    let mut ids = Vec::new();
    let mut answers = Vec::new();
    for n in 0..3 {
        let (pending, answer) = large(n);
        ids.push(pending.id);
        answers.push(answer);
        let _ = submit(&mut state, &config, pending).unwrap();
    }
    // 1.5 MiB twice fits; a third would pass 3.5 MiB: it waits, though
    // the worker's cap of 8 has room.
    assert_eq!(held(&state, 1), 2);
    assert_eq!(state.pending.len(), 1);
    // The first is answered (as `Shared::on_answers` takes it off the
    // worker): the third goes.
    let worker = state.worker_mut(1).unwrap();
    let answered = worker.in_flight.remove(&ids[0]).unwrap();
    worker.answered(&answered);
    let mut fx = Effects::default();
    state.dispatch(&config, &mut fx);
    assert_eq!(held(&state, 1), 2);
    assert!(state.pending.is_empty());
    // A single request larger than the bound still goes to an idle worker.
    let config = config_with_one_large();
    let (mut state, _writers) = pool(&config, 1);
    let (mut pending, _answer) = request(0, 1);
    pending.payload = Bytes::from(vec![0; 7 << 19]);
    let _ = submit(&mut state, &config, pending).unwrap();
    assert_eq!(held(&state, 1), 1);
}

fn config_with_one_large() -> Config {
    config(|b| {
        b.workers(1)
            .max_frame_length(4 << 20)
            .max_queued_bytes(1 << 20)
    })
}
