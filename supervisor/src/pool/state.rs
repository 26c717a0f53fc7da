//! The pool's state: workers, queue, restart budget, and routing.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_proto::{new_credit, pump, Outbox, Outgoing, RemoteError, RequestId, Streams, ToWorker};
use tokio::io::AsyncRead;

use drover_proto::IdHasher;

use crate::builder::Config;
use crate::error::{Error, PoolFailure, PoolPhase};
use crate::event::{Event, ExitReason, WorkerExit};
use crate::health::{WorkerHealth, WorkerState};
use crate::lifecycle::{guarded, Deliver, Kill, Life, StopOrder};
use crate::routing::{pick, Candidate};

pub(crate) use super::effects::Reply;
use super::effects::{Effects, Launch};

/// What a request may carry besides its payload: descriptors and a byte
/// stream (boxed in the queue entry, so an entry without any costs one
/// pointer).
#[derive(Default)]
pub(crate) struct Extras {
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) stream: Option<Box<dyn AsyncRead + Send + Unpin>>,
}

impl std::fmt::Debug for Extras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extras")
            .field("fds", &self.fds)
            .field("stream", &self.stream.is_some())
            .finish()
    }
}

/// One worker's resident size, read by the memory sampler.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RssReading {
    pub(crate) worker_id: u64,
    /// Whether its handshake was done when it was read.
    pub(crate) ready: bool,
    /// `None` if it could not be read.
    pub(crate) rss: Option<u64>,
}

/// A worker's answer to one request, as read off its connection.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) id: RequestId,
    /// Whether an answer stream follows.
    pub(crate) stream: bool,
    pub(crate) result: Result<Bytes, RemoteError>,
}

/// Answers read together from one connection, settled under one lock
/// ([`Shared::on_answers`]); kept by the connection's task so that its
/// buffers are reused from one batch to the next.
#[derive(Debug, Default)]
pub(crate) struct AnswerBatch {
    pub(crate) answers: Vec<Answer>,
    /// What settling them leaves to do (the callers' answers first),
    /// carried out once the lock is released.
    pub(super) effects: Effects,
}

/// The pool as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Taking requests.
    Running,
    /// Drained: no worker runs; requests wait (or are refused) until
    /// `resume()`.
    Drained,
    /// Soft kill in progress: no new requests, the rest finish.
    SoftKilling,
    /// Stopped by a kill or by dropping the last handle.
    Stopped,
    /// Stopped by itself (restart budget spent).
    Failed(PoolFailure),
}

impl Phase {
    /// The phase as errors and snapshots name it.
    pub(crate) fn public(&self) -> PoolPhase {
        match self {
            Phase::Running => PoolPhase::Running,
            Phase::Drained => PoolPhase::Drained,
            Phase::SoftKilling => PoolPhase::ShuttingDown,
            Phase::Stopped => PoolPhase::Stopped,
            Phase::Failed(_) => PoolPhase::Failed,
        }
    }
}

/// A request waiting for a worker.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) id: RequestId,
    /// Microseconds since the Unix epoch (8 bytes, not 16: a million
    /// queued requests each carry one).
    pub(crate) created_at: u64,
    pub(crate) payload: Bytes,
    pub(crate) reply: Reply,
    /// How many more times it may be re-sent if its worker dies.
    pub(crate) retries: u32,
    /// Descriptors (passed sockets) that go with it; boxed so a queue
    /// entry without any stays small.
    pub(crate) extras: Option<Box<Extras>>,
}

/// A request sent to a worker, not yet answered.
#[derive(Debug)]
pub(crate) struct InFlight {
    /// Microseconds since the Unix epoch (8 bytes, not 16: a million
    /// queued requests each carry one).
    pub(crate) created_at: u64,
    /// `None` once the caller has gone (cancelled): the answer is dropped.
    pub(crate) reply: Option<Reply>,
    /// Kept (a cheap reference) so the request can be re-sent; empty when
    /// it has no retries left.
    pub(crate) payload: Bytes,
    pub(crate) retries: u32,
    /// When it was sent to its worker, in microseconds since the Unix
    /// epoch: its wait ends and its run starts here.
    pub(crate) sent_at: u64,
    /// Whether it was logged as slow (it is logged once).
    pub(crate) slow_logged: bool,
    /// What it counts in its worker's `sent_bytes`.
    pub(crate) bytes: usize,
}

/// One worker process, from spawn to reaping.
#[derive(Debug)]
pub(crate) struct WorkerEntry {
    pub(super) id: u64,
    pub(super) index: u32,
    pub(super) pid: u32,
    /// Where it is in its life (its outbox, once its handshake is done;
    /// the pool's order to stop it).
    pub(super) life: Life,
    pub(super) in_flight: HashMap<RequestId, InFlight, IdHasher>,
    pub(super) rss: Option<u64>,
    pub(super) status: Option<String>,
    pub(super) served: u64,
    /// Cancelled to have the connection task kill the process.
    pub(super) kill: Kill,
    /// Byte streams on its connection.
    pub(super) streams: Arc<Streams>,
    /// Passed sockets it holds open (sent, not yet reported closed).
    pub(super) open_sockets: usize,
    /// The health-check ping awaiting its pong: sequence number, sent at.
    pub(super) ping: Option<(u64, Instant)>,
    pub(super) started_at: Instant,
    /// Recycle once it has served this many (`max_requests` + jitter).
    pub(super) recycle_at: Option<u64>,
    /// Bytes of the requests in flight on it (payloads and their
    /// frames): at most what still waits in its outbox, which routing
    /// keeps under the outbox's limit.
    pub(super) sent_bytes: usize,
}

impl WorkerEntry {
    /// Whether a request of `len` payload bytes may go to it now: what was
    /// sent to it and not yet answered stays under its outbox's limit
    /// (less a reserve for the small frames that go there too), so a
    /// worker that reads as fast as it can is never taken for one that
    /// stopped reading; the request waits in the queue instead. A worker
    /// with nothing in flight takes any request: one frame always fits.
    /// `bound` is the pool's [`room_bound`].
    fn has_room(&self, len: usize, bound: usize) -> bool {
        self.sent_bytes == 0 || self.sent_bytes + request_bytes(len) <= bound
    }

    /// Forgets request `id`'s bytes, which it has answered.
    pub(crate) fn answered(&mut self, in_flight: &InFlight) {
        self.sent_bytes = self.sent_bytes.saturating_sub(in_flight.bytes);
    }

    /// Queues `message` on its connection (if its handshake is done); the
    /// writer is woken with `fx`.
    pub(crate) fn send(&self, message: ToWorker, fx: &mut Effects) {
        self.queue(Outgoing::Frame(message), false, fx);
    }

    /// Queues `outgoing`; with `direct`, the wake-up owed writes it itself
    /// if it can ([`Wake::direct`](drover_proto::Wake::direct)).
    fn queue(&self, outgoing: Outgoing<ToWorker>, direct: bool, fx: &mut Effects) {
        if let Some(tx) = self.life.outbox() {
            // A closed queue means the connection is ending; its task will
            // settle whatever this worker held.
            if let Ok(wake) = tx.queue(outgoing) {
                fx.wake(if direct { wake.direct() } else { wake });
            }
        }
    }

    /// Carries out what a transition of its [`Life`] asks: the frame is
    /// queued now, in order; the wake-up or the kill waits in `fx`.
    pub(crate) fn deliver(&self, delivery: Deliver, fx: &mut Effects) {
        match delivery {
            Deliver::Nothing => {}
            Deliver::Send(message) => self.send(message, fx),
            Deliver::Kill => fx.kill(&self.kill),
        }
    }

    /// The event saying it now shows `state`.
    pub(super) fn state_event(&self, state: WorkerState) -> Event {
        Event::WorkerState {
            worker_id: self.id,
            pid: self.pid,
            state,
        }
    }

    pub(super) fn health(&self) -> WorkerHealth {
        WorkerHealth {
            worker_id: self.id,
            index: self.index,
            pid: self.pid,
            rss: self.rss,
            in_flight: self.in_flight.len(),
            state: self.life.view(),
            status: self.status.clone(),
            served: self.served,
            open_sockets: self.open_sockets,
            shared_memory_held: self
                .life
                .outbox()
                .and_then(|outbox| outbox.shared_memory_held())
                .unwrap_or(0) as u64,
            age: self.started_at.elapsed(),
            // Filled in by `Shared::health` from the pool's settings.
            unenforced: Vec::new(),
        }
    }
}

/// How far the initial set of workers has come.
#[derive(Debug)]
pub(crate) enum Startup {
    /// This many have yet to say `Ready`.
    Waiting(usize),
    /// All did.
    Online,
    /// One failed; the first error is kept for `online()`.
    Failed(Option<Error>),
}

/// Everything the mutex guards.
#[derive(Debug)]
pub(crate) struct PoolState {
    pub(super) phase: Phase,
    pub(super) startup: Startup,
    pub(super) workers: Vec<WorkerEntry>,
    pub(super) pending: VecDeque<Pending>,
    /// How many workers the pool should run.
    pub(super) target: usize,
    /// Workers launched and not yet registered (their process is being
    /// started): counted with the active ones against `target`.
    pub(super) launching: usize,
    /// Callers that left while (possibly) queued since the queue was last
    /// swept.
    pub(super) left_queue: usize,
    pub(super) cursor: usize,
    /// Routing's view of the workers, rebuilt for each choice (kept to
    /// reuse its allocation).
    pub(super) candidates: Vec<Candidate>,
    /// When each recent restart happened, for the restart budget.
    pub(super) restarts: VecDeque<Instant>,
    /// Workers that ended before they were ready (the latest few): id and
    /// why, so an operation waiting for them can say so at once.
    pub(super) failed_starts: VecDeque<(u64, String)>,
    /// The id the next worker launched gets: unique for the pool's life.
    pub(super) next_worker_id: u64,
    /// What operators read in `status()` (`observe.rs`).
    pub(super) stats: super::observe::Stats,
}

/// Fails each of `requests` with its own `error()` (once the lock is
/// released, through `fx`), skipping callers that already left.
pub(crate) fn fail_all(requests: VecDeque<Pending>, error: impl Fn() -> Error, fx: &mut Effects) {
    for request in requests {
        if !request.reply.is_canceled() {
            fx.fail(request.reply, error());
        }
    }
}

/// How many failed starts [`PoolState::failed_starts`] remembers.
const FAILED_STARTS_KEPT: usize = 16;

impl PoolState {
    /// The state of a pool that is to run `workers` workers.
    pub(crate) fn new(workers: usize) -> PoolState {
        PoolState {
            phase: Phase::Running,
            startup: Startup::Waiting(workers),
            workers: Vec::with_capacity(workers),
            pending: VecDeque::new(),
            target: workers,
            launching: 0,
            left_queue: 0,
            cursor: 0,
            candidates: Vec::with_capacity(workers),
            restarts: VecDeque::new(),
            failed_starts: VecDeque::new(),
            next_worker_id: 1,
            stats: super::observe::Stats::default(),
        }
    }

    /// Starts a worker in slot `index` (once the lock is released): it
    /// counts against the target from now on. Returns its id.
    pub(crate) fn launch(&mut self, index: u32, initial: bool, fx: &mut Effects) -> u64 {
        let id = self.next_worker_id;
        self.next_worker_id += 1;
        self.launching += 1;
        fx.rare().launches.push(Launch { id, index, initial });
        id
    }

    /// Worker `id` finished its handshake (`rss`: its memory read just
    /// now): it takes work (or is told its stop order), and the queue is
    /// dispatched. The events say the state it shows and, if it was the
    /// last of the initial set, that the pool is online.
    pub(crate) fn worker_ready(
        &mut self,
        config: &Config,
        id: u64,
        tx: Outbox<ToWorker>,
        initial: bool,
        rss: Option<u64>,
        fx: &mut Effects,
    ) {
        if let Some(worker) = self.worker_mut(id) {
            if rss.is_some() {
                worker.rss = rss;
            }
            // Asked to stop while starting: the order is passed on now.
            let delivery = worker.life.handshake_done(tx);
            worker.deliver(delivery, fx);
            fx.emit(worker.state_event(worker.life.view()));
        }
        if initial {
            if let Startup::Waiting(n) = &mut self.startup {
                *n -= 1;
                if *n == 0 {
                    self.startup = Startup::Online;
                    fx.emit(Event::Online);
                }
            }
        }
        self.dispatch(config, fx);
        fx.maintain = true;
        fx.notify = true;
    }

    /// Records that worker `id` ended before it was ready.
    pub(super) fn start_failed(&mut self, id: u64, why: String) {
        if self.failed_starts.len() == FAILED_STARTS_KEPT {
            self.failed_starts.pop_front();
        }
        self.failed_starts.push_back((id, why));
    }

    /// Why worker `id` failed to start, if it did (recently).
    pub(crate) fn start_failure(&self, id: u64) -> Option<&str> {
        self.failed_starts
            .iter()
            .find(|(failed, _)| *failed == id)
            .map(|(_, why)| why.as_str())
    }

    pub(crate) fn worker_mut(&mut self, id: u64) -> Option<&mut WorkerEntry> {
        self.workers.iter_mut().find(|w| w.id == id)
    }

    /// Chooses a worker for the next request (of `len` payload bytes), if
    /// one can take it.
    pub(super) fn choose(
        &mut self,
        config: &Config,
        with_socket: bool,
        len: usize,
    ) -> Option<usize> {
        let bound = room_bound(config);
        let candidate = |w: &WorkerEntry| Candidate {
            sockets: w.open_sockets,
            eligible: w.life.takes_work()
                && w.in_flight.len() < config.max_concurrency
                && w.has_room(len, bound),
            in_flight: w.in_flight.len(),
            rss: w.rss,
        };
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(self.workers.iter().map(candidate));
        pick(config.routing, with_socket, candidates, &mut self.cursor)
    }

    /// Sends `request` to worker `index`; `sent_at` is now (microseconds
    /// since the Unix epoch), read once by the caller for all it sends.
    pub(super) fn send_to(
        &mut self,
        index: usize,
        request: Pending,
        sent_at: u64,
        fx: &mut Effects,
    ) {
        let worker = &mut self.workers[index];
        // A worker with nothing else in flight is waiting for this
        // request alone: the caller writes it itself once the lock is
        // released. Otherwise more are on their way, and the writer sends
        // them together.
        let alone = worker.in_flight.is_empty();
        let bytes = request_bytes(request.payload.len());
        worker.sent_bytes += bytes;
        let Extras { fds, stream } = request.extras.map(|e| *e).unwrap_or_default();
        // Sockets and streams cannot be sent twice: such a request is
        // never retried.
        let retries = if fds.is_empty() && stream.is_none() {
            request.retries
        } else {
            0
        };
        worker.in_flight.insert(
            request.id,
            InFlight {
                created_at: request.created_at,
                reply: Some(request.reply),
                payload: if retries > 0 {
                    request.payload.clone()
                } else {
                    Bytes::new()
                },
                retries,
                sent_at,
                slow_logged: false,
                bytes,
            },
        );
        let message = ToWorker::Request {
            id: request.id,
            created_at: request.created_at,
            fds: fds.len() as u8,
            stream: stream.is_some(),
            payload: request.payload,
        };
        let outgoing = if fds.is_empty() {
            Outgoing::Frame(message)
        } else {
            worker.open_sockets += fds.len();
            Outgoing::FrameWithFds(message, fds)
        };
        worker.queue(outgoing, alone, fx);
        // (The outbox is cloned only for a stream: each clone is two atomic
        // operations on a line the writer's thread uses too.)
        let streamed = stream.and_then(|source| Some((source, worker.life.outbox()?.streams())));
        if let Some((source, tx)) = streamed {
            let id = request.id;
            let credit = new_credit();
            worker.streams.send(id, credit.clone());
            let streams = worker.streams.clone();
            // The caller's reader runs in this task: if it panics, the
            // worker waiting for the stream's end is killed, not left.
            fx.spawn(guarded(worker.kill.clone(), "stream", async move {
                if let Err(e) = pump(source, id, tx, credit).await {
                    tracing::debug!(%id, "request stream ended early: {e}");
                }
                streams.stop(id);
            }));
        }
    }

    /// Moves queued requests to workers while any can take one.
    pub(crate) fn dispatch(&mut self, config: &Config, fx: &mut Effects) {
        // One reading of the clock for all it sends (none if it sends
        // nothing): what the requests' waits end at.
        let mut now = None;
        while let Some(front) = self.pending.front() {
            let with_socket = front.extras.as_ref().is_some_and(|e| !e.fds.is_empty());
            let Some(index) = self.choose(config, with_socket, front.payload.len()) else {
                return;
            };
            while let Some(request) = self.pending.pop_front() {
                // A caller that left while queued is skipped here, not
                // searched for when it leaves.
                if !request.reply.is_canceled() {
                    let sent_at = *now.get_or_insert_with(drover_proto::now_micros);
                    self.send_to(index, request, sent_at, fx);
                    break;
                }
            }
        }
    }

    /// Accepts a request: straight to a worker if one is free, else queued.
    #[inline]
    pub(crate) fn submit(
        &mut self,
        config: &Config,
        request: Pending,
        fx: &mut Effects,
    ) -> Result<(), Error> {
        if let Some(refusal) = self.refusal(config) {
            return Err(refusal);
        }
        self.stats.accepted += 1;
        if self.pending.is_empty() {
            let with_socket = request.extras.as_ref().is_some_and(|e| !e.fds.is_empty());
            if let Some(index) = self.choose(config, with_socket, request.payload.len()) {
                // Straight to a worker: it waited no longer than since its
                // clock was read, so the clock is not read again.
                let sent_at = request.created_at;
                self.send_to(index, request, sent_at, fx);
                return Ok(());
            }
        }
        if self.pending.len() >= config.max_queue && self.left_queue > 0 {
            // Callers left the queue since the last count: drop their
            // entries before deciding it is full.
            self.pending.retain(|p| !p.reply.is_canceled());
            self.left_queue = 0;
        }
        if self.pending.len() >= config.max_queue {
            self.stats.accepted -= 1;
            self.stats.queue_full += 1;
            return Err(Error::QueueFull {
                limit: config.max_queue,
            });
        }
        self.pending.push_back(request);
        self.stats.max_queued = self.stats.max_queued.max(self.pending.len());
        Ok(())
    }

    /// Whether a request submitted now would be taken (sent or queued) or
    /// refused for a reason other than a full queue: what a service's
    /// readiness reports. Sweeps callers that left first, as `submit` does.
    #[cfg(feature = "tower")]
    pub(crate) fn has_room(&mut self, config: &Config) -> bool {
        if self.refusal(config).is_some() {
            // Not running: the call answers at once with the reason.
            return true;
        }
        if self.pending.len() >= config.max_queue && self.left_queue > 0 {
            self.pending.retain(|p| !p.reply.is_canceled());
            self.left_queue = 0;
        }
        self.pending.len() < config.max_queue
    }

    /// The caller of request `id` went away: forget it if queued, tell its
    /// worker (`Cancel`) if running. Its answer, if one comes, is dropped.
    ///
    /// Returns the id of the worker that holds it, if one does.
    pub(crate) fn cancel(&mut self, id: RequestId, fx: &mut Effects) -> Option<u64> {
        for worker in &mut self.workers {
            if let Some(in_flight) = worker.in_flight.get_mut(&id) {
                in_flight.reply = None;
                worker.send(ToWorker::Cancel { id }, fx);
                return Some(worker.id);
            }
        }
        // Queued (or just answered): its entry, if queued, is skipped when
        // it comes up, since its caller's receiver is gone. No search: a
        // wave of cancellations in a long queue stays linear.
        self.left_queue += 1;
        // The queue may hold nothing live any more (`idle()`).
        fx.notify = true;
        None
    }

    /// Kills worker `worker_id` if it still holds the timed-out request.
    pub(crate) fn kill_if_still_holding(
        &mut self,
        worker_id: u64,
        request_id: RequestId,
        fx: &mut Effects,
    ) {
        if let Some(worker) = self.worker_mut(worker_id) {
            if worker.in_flight.contains_key(&request_id) && !worker.life.is_stopping() {
                tracing::warn!(
                    pid = worker.pid,
                    %request_id,
                    "worker still holds a timed-out request after the kill-after grace; killing it"
                );
                let kill = worker.life.kill(StopOrder::TimedOut { request_id });
                worker.deliver(kill, fx);
            }
        }
    }

    /// One round of health checks at `now`: kills the workers whose ping
    /// went unanswered for over `timeout`, pings the others (with `seq`).
    pub(crate) fn health_check(
        &mut self,
        seq: u64,
        now: Instant,
        timeout: Duration,
        fx: &mut Effects,
    ) {
        for worker in self.workers.iter_mut().filter(|w| w.life.in_service()) {
            match worker.ping {
                Some((_, sent)) if now.duration_since(sent) > timeout => {
                    let unanswered_for = now.duration_since(sent);
                    tracing::warn!(
                        pid = worker.pid,
                        ?unanswered_for,
                        "worker failed its health check; killing it"
                    );
                    let kill = worker.life.kill(StopOrder::HealthCheck { unanswered_for });
                    worker.deliver(kill, fx);
                }
                Some(_) => {}
                None => {
                    worker.ping = Some((seq, now));
                    worker.send(ToWorker::Ping { seq }, fx);
                }
            }
        }
    }

    /// Kills every worker still running, with `order` for those the pool
    /// had not yet ordered to stop.
    pub(crate) fn kill_all(&mut self, order: StopOrder, fx: &mut Effects) {
        for worker in &mut self.workers {
            let kill = worker.life.kill(order.clone());
            worker.deliver(kill, fx);
        }
    }

    /// Records a newly started worker process (killed at once if the pool
    /// began stopping while it was being started), with the byte streams
    /// of its connection, which its connection task holds too so that
    /// stream frames never take the pool's lock.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register(
        &mut self,
        id: u64,
        index: u32,
        pid: u32,
        kill: Kill,
        streams: Arc<Streams>,
        recycle_at: Option<u64>,
        fx: &mut Effects,
    ) {
        self.launching = self.launching.saturating_sub(1);
        let (life, delivery) = match self.phase {
            Phase::Running => (Life::Starting, Deliver::Nothing),
            // The pool began stopping while this one was being started.
            _ => Life::killed_at_birth(),
        };
        let worker = WorkerEntry {
            id,
            index,
            pid,
            life,
            in_flight: HashMap::default(),
            rss: None,
            status: None,
            served: 0,
            kill,
            ping: None,
            streams,
            open_sockets: 0,
            started_at: Instant::now(),
            recycle_at,
            sent_bytes: 0,
        };
        worker.deliver(delivery, fx);
        fx.emit(Event::WorkerSpawned {
            worker_id: id,
            index,
            pid,
        });
        self.workers.push(worker);
    }

    /// Worker `exit.worker_id` ended and was reaped: it leaves the pool,
    /// its streams end, the requests it held are re-queued (retries left,
    /// and a replacement coming) or failed, and the restart budget pays
    /// for its replacement (or, spent, fails the pool). Returns its exit
    /// with the requests it held; `None` if the pool did not know it.
    pub(crate) fn worker_exited(
        &mut self,
        config: &Config,
        exit: WorkerExit,
        fx: &mut Effects,
    ) -> Option<WorkerExit> {
        let pos = self.workers.iter().position(|w| w.id == exit.worker_id)?;
        let worker = self.workers.remove(pos);
        fx.rare()
            .cuts
            .push((worker.streams.clone(), exit.to_string()));
        if worker.life.outbox().is_none() {
            // It never got past its handshake.
            self.start_failed(worker.id, exit.to_string());
        }
        let mut exit = exit;
        exit.in_flight = worker.in_flight.keys().copied().collect();
        let replace = !exit.requested() && self.phase == Phase::Running && self.short_of_target();
        let mut failed_reason = None;
        // A worker stopped by a signal from outside did not crash: its
        // replacement costs no restart.
        let signalled = matches!(exit.reason, ExitReason::Signalled { .. });
        if replace && !signalled {
            if let Err(reason) = self.spend_restart(config, &exit.to_string()) {
                // Nothing more is accepted from here; `Shared::fail` does
                // the rest.
                self.phase = Phase::Failed(reason.clone());
                failed_reason = Some(reason);
            }
        }
        // Settle the requests it held: re-queue (at the front, in order of
        // arrival) those with retries left, fail the rest.
        let exit_box = Box::new(exit.clone());
        let mut held: Vec<(RequestId, InFlight)> = worker.in_flight.into_iter().collect();
        held.sort_by_key(|(_, f)| f.created_at);
        for (request_id, in_flight) in held.into_iter().rev() {
            let Some(reply) = in_flight.reply else {
                continue;
            };
            let error = if let Some(reason) = &failed_reason {
                Error::PoolFailed {
                    reason: reason.clone(),
                }
            } else if replace && in_flight.retries > 0 {
                tracing::debug!(%request_id, pid = exit.pid, "re-queueing request of a dead worker");
                self.pending.push_front(Pending {
                    id: request_id,
                    created_at: in_flight.created_at,
                    payload: in_flight.payload,
                    reply,
                    retries: in_flight.retries - 1,
                    extras: None,
                });
                continue;
            } else {
                Error::WorkerLost {
                    request_id,
                    exit: exit_box.clone(),
                }
            };
            fx.fail(reply, error);
        }
        self.stats.last_exits.insert(worker.index, exit.to_string());
        if replace && failed_reason.is_none() {
            self.stats.restarts += 1;
        }
        let shown = if exit.requested() {
            WorkerState::Stopped
        } else {
            WorkerState::Crashed
        };
        fx.emit(Event::WorkerState {
            worker_id: exit.worker_id,
            pid: exit.pid,
            state: shown,
        });
        fx.emit(Event::WorkerExited(exit.clone()));
        match failed_reason {
            Some(reason) => fx.rare().failed = Some(reason),
            None if replace => {
                self.launch(worker.index, false, fx);
            }
            None => {}
        }
        self.dispatch(config, fx);
        fx.maintain = true;
        fx.notify = true;
        Some(exit)
    }

    /// Takes every queued request out of the queue, to be failed once the
    /// lock is released ([`fail_all`]): no caller is woken under the lock.
    pub(crate) fn take_pending(&mut self) -> VecDeque<Pending> {
        std::mem::take(&mut self.pending)
    }

    /// Workers not asked to stop (starting, ready or busy).
    pub(crate) fn active(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| !w.life.is_stopping())
            .count()
    }

    /// Whether the pool runs (or is starting) fewer workers than it should.
    pub(crate) fn short_of_target(&self) -> bool {
        self.active() + self.launching < self.target
    }

    /// Whether no worker holds a request and none is queued (an entry
    /// whose caller left is not: it will never run). A request whose
    /// caller left while a worker had it counts until the worker lets go
    /// of it (answers or dies).
    pub(crate) fn is_idle(&self) -> bool {
        self.workers.iter().all(|w| w.in_flight.is_empty())
            && self.pending.iter().all(|p| p.reply.is_canceled())
    }

    /// Takes one restart from the budget (`max_restarts` within
    /// `restart_window`); `Err` says the budget is spent, and why.
    pub(crate) fn spend_restart(&mut self, config: &Config, last: &str) -> Result<(), PoolFailure> {
        let now = Instant::now();
        while let Some(&t) = self.restarts.front() {
            if now.duration_since(t) > config.restart_window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() < config.max_restarts {
            self.restarts.push_back(now);
            Ok(())
        } else {
            Err(PoolFailure::RestartBudgetSpent {
                max_restarts: config.max_restarts,
                window: config.restart_window,
                last: last.to_owned(),
            })
        }
    }

    pub(super) fn refusal(&self, config: &Config) -> Option<Error> {
        match &self.phase {
            Phase::Running => None,
            Phase::Drained if config.hold_when_drained => None,
            Phase::Drained => Some(Error::Drained),
            Phase::SoftKilling | Phase::Stopped => Some(Error::ShuttingDown),
            Phase::Failed(reason) => Some(Error::PoolFailed {
                reason: reason.clone(),
            }),
        }
    }
}

/// What may be sent to a worker and not yet answered: its outbox's limit
/// less a reserve for the small frames that go there too.
fn room_bound(config: &Config) -> usize {
    let limit = config.outbox_limit();
    limit - (limit / 8).min(1 << 20)
}

/// What a request of `len` payload bytes counts against its worker's
/// outbox: the payload and its frame.
fn request_bytes(len: usize) -> usize {
    len + drover_proto::codec::MESSAGE_OVERHEAD
}
