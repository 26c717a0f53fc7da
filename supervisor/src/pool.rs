//! The pool's state and every change to it.
//!
//! One `std::sync::Mutex` guards [`PoolState`]; every change happens in a
//! short critical section with no `.await` inside, and callers are woken
//! (oneshot replies, events) only after the lock is released. Routing a
//! request is such a critical section, run by the caller of `enqueue` or by
//! the connection task of the worker that just freed a slot, so a request
//! reaches a worker's writer with no hop through a central task.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use drover_proto::{
    new_credit, pump, Chunk, IncomingStream, Message, Outbox, Outgoing, RemoteError, RequestId,
    Streams,
};
use tokio::io::AsyncRead;
use tokio::sync::{broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use drover_proto::IdHasher;

use crate::builder::Config;
use crate::error::Error;
use crate::event::{CustomEvent, Event, ExitReason, WorkerExit};
use crate::health::{WorkerHealth, WorkerState};
use crate::query::Query;
use crate::response::Response;
use crate::routing::{pick, Candidate};
use crate::worker::{guarded, Kill};

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

/// Where a caller's answer goes.
pub(crate) type Reply = oneshot::Sender<Result<Response, Error>>;

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
    /// The callers' answers, handed over once the lock is released.
    replies: Vec<(Reply, Result<Response, Error>)>,
}

/// How long to wait before trying again to start a worker whose process
/// could not be started.
const SPAWN_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// How many events a slow subscriber may fall behind.
const EVENT_BACKLOG: usize = 4096;

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
    Failed(String),
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
}

/// One worker process, from spawn to reaping.
#[derive(Debug)]
pub(crate) struct WorkerEntry {
    pub(crate) id: u64,
    pub(crate) index: u32,
    pub(crate) pid: u32,
    pub(crate) state: WorkerState,
    /// The writer's queue; `None` until the handshake is done.
    pub(crate) tx: Option<Outbox>,
    pub(crate) in_flight: HashMap<RequestId, InFlight, IdHasher>,
    pub(crate) rss: Option<u64>,
    pub(crate) status: Option<String>,
    pub(crate) served: u64,
    /// Set when the pool asks this worker to stop, with the reason.
    pub(crate) stop: Option<ExitReason>,
    /// Cancelled to have the connection task kill the process.
    pub(crate) kill: Kill,
    /// Byte streams on its connection.
    pub(crate) streams: Arc<Streams>,
    /// Passed sockets it holds open (sent, not yet reported closed).
    pub(crate) open_sockets: usize,
    /// The health-check ping awaiting its pong: sequence number, sent at.
    pub(crate) ping: Option<(u64, Instant)>,
    pub(crate) started_at: Instant,
    /// Recycle once it has served this many (`max_requests` + jitter).
    pub(crate) recycle_at: Option<u64>,
    /// When a retiring worker is killed if it has not exited.
    pub(crate) drain_deadline: Option<Instant>,
}

impl WorkerEntry {
    pub(crate) fn send(&self, message: Message) {
        if let Some(tx) = &self.tx {
            // A closed queue means the connection is ending; its task will
            // settle whatever this worker held.
            let _ = tx.send(Outgoing::Frame(message));
        }
    }

    fn health(&self) -> WorkerHealth {
        WorkerHealth {
            worker_id: self.id,
            index: self.index,
            pid: self.pid,
            rss: self.rss,
            in_flight: self.in_flight.len(),
            state: self.state,
            status: self.status.clone(),
            served: self.served,
            open_sockets: self.open_sockets,
            age: self.started_at.elapsed(),
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
    pub(crate) phase: Phase,
    pub(crate) startup: Startup,
    pub(crate) workers: Vec<WorkerEntry>,
    pub(crate) pending: VecDeque<Pending>,
    /// How many workers the pool should run.
    pub(crate) target: usize,
    /// Workers launched and not yet registered (their process is being
    /// started): counted with the active ones against `target`.
    pub(crate) launching: usize,
    /// Where the tasks that send request streams are tracked.
    tracker: TaskTracker,
    /// Callers that left while (possibly) queued since the queue was last
    /// swept.
    pub(crate) left_queue: usize,
    cursor: usize,
    /// Routing's view of the workers, rebuilt for each choice (kept to
    /// reuse its allocation).
    candidates: Vec<Candidate>,
    /// When each recent restart happened, for the restart budget.
    restarts: VecDeque<Instant>,
    /// Workers that ended before they were ready (the latest few): id and
    /// why, so an operation waiting for them can say so at once.
    pub(crate) failed_starts: VecDeque<(u64, String)>,
}

/// Fails each of `requests` with its own `error()`, skipping callers that
/// already left. Called with the pool's lock released.
pub(crate) fn fail_all(requests: VecDeque<Pending>, error: impl Fn() -> Error) {
    for request in requests {
        let _ = request.reply.send(Err(error()));
    }
}

/// How many failed starts [`PoolState::failed_starts`] remembers.
const FAILED_STARTS_KEPT: usize = 16;

impl PoolState {
    /// Records that worker `id` ended before it was ready.
    fn start_failed(&mut self, id: u64, why: String) {
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

    /// Chooses a worker for the next request, if one can take it.
    fn choose(&mut self, config: &Config, with_socket: bool) -> Option<usize> {
        let candidate = |w: &WorkerEntry| Candidate {
            sockets: w.open_sockets,
            eligible: w.state == WorkerState::Ready
                && w.tx.is_some()
                && w.stop.is_none()
                && w.in_flight.len() < config.max_concurrency,
            in_flight: w.in_flight.len(),
            rss: w.rss,
        };
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(self.workers.iter().map(candidate));
        pick(config.routing, with_socket, candidates, &mut self.cursor)
    }

    fn send_to(&mut self, index: usize, request: Pending) {
        let worker = &mut self.workers[index];
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
            },
        );
        let message = Message::Request {
            id: request.id,
            created_at: request.created_at,
            fds: fds.len() as u8,
            stream: stream.is_some(),
            payload: request.payload,
        };
        if fds.is_empty() {
            worker.send(message);
        } else {
            worker.open_sockets += fds.len();
            if let Some(tx) = &worker.tx {
                let _ = tx.send(Outgoing::FrameWithFds(message, fds));
            }
        }
        // (The outbox is cloned only for a stream: each clone is two atomic
        // operations on a line the writer's thread uses too.)
        let streamed = stream.and_then(|source| Some((source, worker.tx.clone()?)));
        if let Some((source, tx)) = streamed {
            let id = request.id;
            let credit = new_credit();
            worker.streams.send(id, credit.clone());
            let streams = worker.streams.clone();
            // The caller's reader runs in this task: if it panics, the
            // worker waiting for the stream's end is killed, not left.
            self.tracker
                .spawn(guarded(worker.kill.clone(), "stream", async move {
                    if let Err(e) = pump(source, id, tx, credit).await {
                        tracing::debug!(%id, "request stream ended early: {e}");
                    }
                    streams.stop(id);
                }));
        }
    }

    /// Moves queued requests to workers while any can take one.
    pub(crate) fn dispatch(&mut self, config: &Config) {
        while let Some(front) = self.pending.front() {
            let with_socket = front.extras.as_ref().is_some_and(|e| !e.fds.is_empty());
            let Some(index) = self.choose(config, with_socket) else {
                return;
            };
            while let Some(request) = self.pending.pop_front() {
                // A caller that left while queued is skipped here, not
                // searched for when it leaves.
                if !request.reply.is_closed() {
                    self.send_to(index, request);
                    break;
                }
            }
        }
    }

    /// Takes every queued request out of the queue, to be failed once the
    /// lock is released ([`fail_all`]): no caller is woken under the lock.
    pub(crate) fn take_pending(&mut self) -> VecDeque<Pending> {
        std::mem::take(&mut self.pending)
    }

    /// Workers not asked to stop (starting, ready or busy).
    pub(crate) fn active(&self) -> usize {
        self.workers.iter().filter(|w| w.stop.is_none()).count()
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
            && self.pending.iter().all(|p| p.reply.is_closed())
    }

    /// Takes one restart from the budget (`max_restarts` within
    /// `restart_window`); `Err` says the budget is spent, and why.
    pub(crate) fn spend_restart(&mut self, config: &Config, last: &str) -> Result<(), String> {
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
            Err(format!(
                "restart budget spent: {} restarts within {:?}; last: {last}",
                config.max_restarts, config.restart_window
            ))
        }
    }

    fn refusal(&self, config: &Config) -> Option<Error> {
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

/// What the pool's handles and tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    state: Mutex<PoolState>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the pool is gone for good: every task ends.
    pub(crate) shutdown: CancellationToken,
    /// Bumped after every change a waiter might care about (a worker
    /// ready or gone, the queue emptied, startup done).
    changed: watch::Sender<u64>,
    next_worker_id: AtomicU64,
    /// What workers are started with: the builder's settings, those a
    /// reload replaces taken from the reload's (`Config::reloaded_with`).
    /// Its worker count is the initial one: the count the pool keeps is
    /// `PoolState::target`.
    spec: Mutex<Arc<Config>>,
    /// Serialises pool operations (resize, reload, drain, resume).
    pub(crate) operations: tokio::sync::Mutex<()>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) spawner: crate::spawn::Spawner,
    pub(crate) metrics: crate::metrics::Metrics,
    /// The pool's name (the builder's, or the binary's file name).
    pub(crate) name: Arc<str>,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        runtime: tokio::runtime::Handle,
        spawner: crate::spawn::Spawner,
    ) -> Shared {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let workers = config.workers;
        let tracker = TaskTracker::new();
        let name = config.name.clone().unwrap_or_else(|| {
            config
                .program
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "drover".to_owned())
        });
        let metrics = crate::metrics::Metrics::new(&name);
        Shared {
            spec: Mutex::new(Arc::new(config.clone())),
            operations: tokio::sync::Mutex::new(()),
            config,
            state: Mutex::new(PoolState {
                phase: Phase::Running,
                startup: Startup::Waiting(workers),
                workers: Vec::with_capacity(workers),
                pending: VecDeque::new(),
                target: workers,
                launching: 0,
                tracker: tracker.clone(),
                left_queue: 0,
                cursor: 0,
                candidates: Vec::with_capacity(workers),
                restarts: VecDeque::new(),
                failed_starts: VecDeque::new(),
            }),
            events,
            tracker,
            shutdown: CancellationToken::new(),
            changed: watch::channel(0).0,
            next_worker_id: AtomicU64::new(1),
            runtime,
            spawner,
            metrics,
            name: name.into(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves plain data behind; carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The settings new workers start with.
    pub(crate) fn spec(&self) -> Arc<Config> {
        self.spec.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the settings new workers start with.
    pub(crate) fn set_spec(&self, spec: Config) {
        *self.spec.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(spec);
    }

    /// How many workers the pool keeps: the builder's count, then the last
    /// resize's.
    pub(crate) fn workers(&self) -> usize {
        self.lock().target
    }

    /// The pool's settings as it runs now: those its workers start with
    /// (after any reload) and the worker count it keeps (after any resize).
    /// What a declaration is compared with (`Groups::set_groups`).
    pub(crate) fn settings(&self) -> Config {
        let mut settings = Config::clone(&self.spec());
        settings.workers = self.workers();
        settings
    }

    pub(crate) fn next_worker_id(&self) -> u64 {
        self.next_worker_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn emit(&self, event: Event) {
        // No subscriber is fine: nobody is listening.
        let _ = self.events.send(event);
    }

    pub(crate) fn emit_state(&self, worker_id: u64, pid: u32, state: WorkerState) {
        self.emit(Event::WorkerState {
            worker_id,
            pid,
            state,
        });
    }

    pub(crate) fn notify(&self) {
        // Only `wait_until` subscribes, and it checks the state after
        // subscribing: with no subscriber there is nobody to tell.
        if self.changed.receiver_count() > 0 {
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Waits until `done` holds for the state (checked after each change).
    pub(crate) async fn wait_until<T>(
        &self,
        mut done: impl FnMut(&mut PoolState) -> Option<T>,
    ) -> T {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(value) = done(&mut self.lock()) {
                return value;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`: unreachable, but never spin.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Accepts a request: straight to a worker if one is free, else queued.
    pub(crate) fn submit(&self, request: Pending) -> Result<(), Error> {
        let mut state = self.lock();
        if let Some(refusal) = state.refusal(&self.config) {
            return Err(refusal);
        }
        if state.pending.is_empty() {
            let with_socket = request.extras.as_ref().is_some_and(|e| !e.fds.is_empty());
            if let Some(index) = state.choose(&self.config, with_socket) {
                state.send_to(index, request);
                return Ok(());
            }
        }
        if state.pending.len() >= self.config.max_queue && state.left_queue > 0 {
            // Callers left the queue since the last count: drop their
            // entries before deciding it is full.
            state.pending.retain(|p| !p.reply.is_closed());
            state.left_queue = 0;
        }
        if state.pending.len() >= self.config.max_queue {
            return Err(Error::QueueFull {
                limit: self.config.max_queue,
            });
        }
        state.pending.push_back(request);
        Ok(())
    }

    /// The caller of request `id` went away: forget it if queued, tell its
    /// worker if running. Its answer, if one comes, is dropped.
    ///
    /// Returns the id of the worker that holds it, if one does.
    pub(crate) fn cancel(&self, id: RequestId) -> Option<u64> {
        let mut state = self.lock();
        for worker in &mut state.workers {
            if let Some(in_flight) = worker.in_flight.get_mut(&id) {
                in_flight.reply = None;
                worker.send(Message::Cancel { id });
                return Some(worker.id);
            }
        }
        // Queued (or just answered): its entry, if queued, is skipped when
        // it comes up, since its caller's receiver is gone. No search: a
        // wave of cancellations in a long queue stays linear.
        state.left_queue += 1;
        drop(state);
        // The queue may hold nothing live any more (`idle()`).
        self.notify();
        None
    }

    /// Kills worker `worker_id` if it still holds the timed-out request.
    pub(crate) fn kill_if_still_holding(&self, worker_id: u64, request_id: RequestId) {
        let mut state = self.lock();
        if let Some(worker) = state.worker_mut(worker_id) {
            if worker.in_flight.contains_key(&request_id) && worker.stop.is_none() {
                tracing::warn!(
                    pid = worker.pid,
                    %request_id,
                    "worker still holds a timed-out request after the kill-after grace; killing it"
                );
                worker.stop = Some(ExitReason::TimedOut { request_id });
                worker.kill.cancel();
            }
        }
    }

    /// One round of health checks: kill workers whose ping went
    /// unanswered too long, ping the others.
    pub(crate) fn health_check(&self, seq: u64) {
        let now = Instant::now();
        let timeout = self.config.ping_timeout;
        let mut state = self.lock();
        for worker in state
            .workers
            .iter_mut()
            .filter(|w| w.tx.is_some() && w.stop.is_none())
        {
            match worker.ping {
                Some((_, sent)) if now.duration_since(sent) > timeout => {
                    let unanswered_for = now.duration_since(sent);
                    tracing::warn!(
                        pid = worker.pid,
                        ?unanswered_for,
                        "worker failed its health check; killing it"
                    );
                    worker.stop = Some(ExitReason::HealthCheck { unanswered_for });
                    worker.kill.cancel();
                }
                Some(_) => {}
                None => {
                    worker.ping = Some((seq, now));
                    worker.send(Message::Ping { seq });
                }
            }
        }
    }

    /// Records a newly started worker process.
    pub(crate) fn register(&self, id: u64, index: u32, pid: u32, kill: Kill) {
        let recycle_at = self.config.max_requests.map(|(n, jitter)| {
            // Any uniform randomness will do; a v4 uuid is 122 random bits.
            let random = uuid::Uuid::new_v4().as_u128() as u64;
            n + if jitter == 0 {
                0
            } else {
                random % (jitter + 1)
            }
        });
        let mut state = self.lock();
        state.launching = state.launching.saturating_sub(1);
        let stop = match state.phase {
            Phase::Running => None,
            // The pool began stopping while this one was being started.
            _ => {
                kill.cancel();
                Some(ExitReason::HardKill)
            }
        };
        state.workers.push(WorkerEntry {
            id,
            index,
            pid,
            state: WorkerState::Starting,
            tx: None,
            in_flight: HashMap::default(),
            rss: None,
            status: None,
            served: 0,
            stop,
            kill,
            ping: None,
            streams: Arc::default(),
            open_sockets: 0,
            started_at: Instant::now(),
            recycle_at,
            drain_deadline: None,
        });
        drop(state);
        self.emit(Event::WorkerSpawned {
            worker_id: id,
            index,
            pid,
        });
    }

    /// A worker finished its handshake: it may take requests. `rss` is its
    /// resident size read just now (with no lock held), recorded with the
    /// change, so whoever sees it ready sees its memory as it is once
    /// ready, not as it started or none until the next sample.
    pub(crate) fn worker_ready(
        self: &Arc<Self>,
        id: u64,
        tx: Outbox,
        initial: bool,
        rss: Option<u64>,
    ) {
        let mut state = self.lock();
        let mut online = false;
        if let Some(worker) = state.worker_mut(id) {
            worker.tx = Some(tx);
            if rss.is_some() {
                worker.rss = rss;
            }
            if worker.state == WorkerState::Starting {
                worker.state = WorkerState::Ready;
            }
            if let Some(reason) = &worker.stop {
                // Asked to stop while starting: pass the request on now.
                let message = match reason {
                    ExitReason::SoftKill | ExitReason::Recycled(_) => Message::SoftKill,
                    _ => Message::HardKill,
                };
                worker.state = WorkerState::Stopping;
                worker.send(message);
            }
        }
        if initial {
            if let Startup::Waiting(n) = &mut state.startup {
                *n -= 1;
                if *n == 0 {
                    state.startup = Startup::Online;
                    online = true;
                }
            }
        }
        let pid = state.worker_mut(id).map(|w| (w.pid, w.state));
        state.dispatch(&self.config);
        if rss.is_some() {
            self.metrics.sample(&state);
        }
        drop(state);
        if let Some((pid, worker_state)) = pid {
            self.emit_state(id, pid, worker_state);
        }
        if online {
            self.emit(Event::Online);
        }
        self.maintain();
        self.notify();
    }

    /// A worker process could not even be started. The initial set fails
    /// the pool's start; a replacement is tried again after a pause, on
    /// the restart budget, so a binary that vanished fails the pool rather
    /// than shrinking it silently.
    pub(crate) fn spawn_failed(self: &Arc<Self>, id: u64, index: u32, initial: bool, error: Error) {
        let mut state = self.lock();
        state.launching = state.launching.saturating_sub(1);
        state.start_failed(id, error.to_string());
        if initial {
            drop(state);
            self.startup_failed(error);
            return;
        }
        if state.phase != Phase::Running || !state.short_of_target() {
            return;
        }
        match state.spend_restart(&self.config, &error.to_string()) {
            Ok(()) => {
                state.launching += 1;
                drop(state);
                tracing::error!("{error}; trying again in {SPAWN_RETRY_DELAY:?}");
                let shared = self.clone();
                let retry = async move {
                    tokio::select! {
                        _ = tokio::time::sleep(SPAWN_RETRY_DELAY) => {
                            shared.lock().launching -= 1;
                            crate::worker::launch(&shared, shared.next_worker_id(), index, false);
                        }
                        _ = shared.shutdown.cancelled() => {}
                    }
                };
                self.tracker.spawn_on(retry, &self.runtime);
            }
            Err(reason) => {
                drop(state);
                self.fail(reason);
            }
        }
    }

    /// Fails the pool for good: queued requests fail, every worker is
    /// killed, events say why.
    pub(crate) fn fail(&self, reason: String) {
        let mut state = self.lock();
        state.phase = Phase::Failed(reason.clone());
        let queued = state.take_pending();
        for worker in &mut state.workers {
            worker.stop.get_or_insert(ExitReason::PoolFailed);
            worker.kill.cancel();
        }
        drop(state);
        fail_all(queued, || Error::PoolFailed {
            reason: reason.clone(),
        });
        tracing::error!("pool failed: {reason}");
        self.emit(Event::PoolFailed { reason });
        self.notify();
    }

    /// A worker of the initial set failed to start.
    pub(crate) fn startup_failed(&self, error: Error) {
        let mut state = self.lock();
        if let Startup::Waiting(_) = state.startup {
            state.startup = Startup::Failed(Some(error));
        }
        drop(state);
        self.notify();
    }

    /// Handles one message from a worker after its handshake. An `Err`
    /// names a protocol violation: the caller kills the worker.
    pub(crate) fn on_message(
        self: &Arc<Self>,
        id: u64,
        pid: u32,
        message: Message,
    ) -> Result<(), String> {
        let worker_id = id;
        match message {
            Message::Response { id, stream, result } => {
                let mut batch = AnswerBatch::default();
                batch.answers.push(Answer { id, stream, result });
                return self.on_answers(worker_id, pid, &mut batch);
            }
            Message::Busy => {
                let mut state = self.lock();
                let mut changed = false;
                if let Some(worker) = state.worker_mut(id) {
                    if worker.state == WorkerState::Ready {
                        worker.state = WorkerState::Busy;
                        changed = true;
                    }
                }
                drop(state);
                if changed {
                    self.emit_state(id, pid, WorkerState::Busy);
                }
            }
            Message::Ready => {
                let mut state = self.lock();
                let mut changed = false;
                if let Some(worker) = state.worker_mut(id) {
                    if worker.state == WorkerState::Busy {
                        worker.state = WorkerState::Ready;
                        changed = true;
                    }
                }
                state.dispatch(&self.config);
                drop(state);
                if changed {
                    self.emit_state(id, pid, WorkerState::Ready);
                }
                self.notify();
            }
            Message::Event { name, payload } => {
                self.emit(Event::Custom(CustomEvent::new(name, id, pid, payload)));
            }
            Message::Status { message } => {
                let mut state = self.lock();
                if let Some(worker) = state.worker_mut(id) {
                    worker.status = Some(message.clone());
                }
                drop(state);
                self.emit(Event::WorkerStatus {
                    worker_id: id,
                    pid,
                    message,
                });
            }
            Message::StreamData {
                id: request_id,
                bytes,
            } => {
                self.streams_of(id)
                    .deliver(request_id, Chunk::Data(bytes))
                    .map_err(|e| e.to_string())?;
            }
            Message::StreamEnd { id: request_id } => {
                self.streams_of(id)
                    .deliver(request_id, Chunk::End)
                    .map_err(|e| e.to_string())?;
            }
            Message::StreamAbort {
                id: request_id,
                reason,
            } => {
                self.streams_of(id)
                    .deliver(request_id, Chunk::Abort(reason))
                    .map_err(|e| e.to_string())?;
            }
            Message::StreamCredit {
                id: request_id,
                bytes,
            } => {
                self.streams_of(id)
                    .credit(request_id, bytes)
                    .map_err(|e| e.to_string())?;
            }
            Message::StreamStop { id: request_id } => {
                self.streams_of(id).stop(request_id);
            }
            Message::Query {
                id: query_id,
                name,
                payload,
            } => {
                let out = self.lock().worker_mut(id).and_then(|w| w.tx.clone());
                if let Some(out) = out {
                    let max_payload = self.config.max_payload();
                    let query = Query::new(query_id, name, payload, pid, id, out, max_payload);
                    match &self.config.on_query {
                        Some(handler) => {
                            self.tracker.spawn_on(handler.call(query), &self.runtime);
                        }
                        None => query.fail("this pool answers no queries (no on_query handler)"),
                    }
                }
            }
            Message::Stopping { signal } => {
                // A signal from outside the pool: the worker drains. It
                // gets nothing new, and its exit is that signal's doing.
                let mut state = self.lock();
                let mut changed = false;
                if let Some(worker) = state.worker_mut(id) {
                    if worker.stop.is_none() {
                        worker.stop = Some(ExitReason::Signalled { signal });
                        worker.drain_deadline = Some(Instant::now() + self.config.drain_timeout);
                    }
                    // The answer it waits for before it exits: queued after
                    // every request routed to it, so it reads them all.
                    worker.send(Message::SoftKill);
                    if worker.state != WorkerState::Stopping {
                        worker.state = WorkerState::Stopping;
                        changed = true;
                    }
                }
                drop(state);
                tracing::info!(pid, signal, "worker told to stop by a signal; it drains");
                if changed {
                    self.emit_state(id, pid, WorkerState::Stopping);
                }
                self.maintain();
                self.notify();
            }
            Message::SocketClosed { .. } => {
                let mut state = self.lock();
                if let Some(worker) = state.worker_mut(id) {
                    worker.open_sockets = worker.open_sockets.saturating_sub(1);
                }
            }
            Message::Pong { seq } => {
                let mut state = self.lock();
                if let Some(worker) = state.worker_mut(id) {
                    if worker.ping.is_some_and(|(sent, _)| sent == seq) {
                        worker.ping = None;
                    }
                }
            }
            other => {
                return Err(format!(
                    "it sent a {} message, which workers never send",
                    other.kind()
                ))
            }
        }
        Ok(())
    }

    /// Settles a batch of answers from worker `id`, read together, under
    /// one lock: each leaves the worker's in-flight table, the freed slots
    /// are refilled from the queue, and only then, with the lock released,
    /// are the callers handed their answers. Leaves `batch` empty.
    ///
    /// `Err` names the first answer to a request the worker did not hold
    /// (a protocol violation); the answers before it are settled.
    pub(crate) fn on_answers(
        self: &Arc<Self>,
        id: u64,
        pid: u32,
        batch: &mut AnswerBatch,
    ) -> Result<(), String> {
        let AnswerBatch { answers, replies } = batch;
        if answers.is_empty() {
            return Ok(());
        }
        let mut outcome = Ok(());
        let mut due = false;
        // One reading of the clock for the batch's latencies.
        let now = drover_proto::timestamp_micros(SystemTime::now());
        {
            let mut state = self.lock();
            let Some(worker) = state.worker_mut(id) else {
                answers.clear();
                return Ok(());
            };
            for Answer {
                id: request_id,
                stream,
                result,
            } in answers.drain(..)
            {
                let Some(in_flight) = worker.in_flight.remove(&request_id) else {
                    outcome = Err(format!(
                        "it answered request {request_id}, which it was never given (or had already answered)"
                    ));
                    break;
                };
                worker.served += 1;
                due |= worker
                    .recycle_at
                    .is_some_and(|quota| worker.served >= quota);
                // An answer stream is registered before anything of it can
                // arrive (this connection's task reads it).
                let incoming = match (&result, &worker.tx) {
                    (Ok(_), Some(tx)) if stream => {
                        let (incoming, chunks) = IncomingStream::new(
                            request_id,
                            tx.clone(),
                            format!("worker pid {pid}"),
                        );
                        worker.streams.receive(request_id, chunks);
                        Some(incoming)
                    }
                    _ => None,
                };
                let Some(reply) = in_flight.reply else {
                    continue;
                };
                let answer = match result {
                    Ok(payload) => {
                        self.metrics
                            .answered(now.saturating_sub(in_flight.created_at));
                        Ok(Response {
                            id: request_id,
                            created_at: in_flight.created_at,
                            pid,
                            worker_id: id,
                            payload,
                            stream: incoming.map(|s| Arc::new(Mutex::new(Some(s)))),
                        })
                    }
                    Err(RemoteError { kind, message }) => Err(Error::Remote {
                        request_id,
                        pid,
                        kind,
                        message,
                    }),
                };
                replies.push((reply, answer));
            }
            // After a violation the rest are dropped with the connection.
            answers.clear();
            state.dispatch(&self.config);
        }
        if due {
            self.maintain();
        }
        for (reply, answer) in replies.drain(..) {
            // The caller may have just left; then nobody wants it.
            let _ = reply.send(answer);
        }
        self.notify();
        outcome
    }

    /// The streams on worker `id`'s connection (a fresh, empty set if the
    /// worker is gone: whatever arrives for it is dropped).
    fn streams_of(&self, id: u64) -> Arc<Streams> {
        self.lock()
            .worker_mut(id)
            .map(|w| w.streams.clone())
            .unwrap_or_default()
    }

    /// The stop reason the pool recorded for worker `id`, if any.
    pub(crate) fn stop_reason(&self, id: u64) -> Option<ExitReason> {
        self.lock().worker_mut(id).and_then(|w| w.stop.clone())
    }

    /// A worker process ended and was reaped: settle what it held (retry
    /// or fail each request), report it, and replace it if it was not
    /// asked to stop.
    pub(crate) fn worker_exited(self: &Arc<Self>, exit: WorkerExit) {
        let mut state = self.lock();
        let Some(pos) = state.workers.iter().position(|w| w.id == exit.worker_id) else {
            return;
        };
        let worker = state.workers.remove(pos);
        worker.streams.cut(&exit.to_string());
        if worker.tx.is_none() {
            // It never got past its handshake.
            state.start_failed(worker.id, exit.to_string());
        }
        let mut exit = exit;
        exit.in_flight = worker.in_flight.keys().copied().collect();
        let replace = !exit.requested() && state.phase == Phase::Running && state.short_of_target();
        let mut failed_reason = None;
        // A worker stopped by a signal from outside did not crash: its
        // replacement costs no restart.
        let signalled = matches!(exit.reason, ExitReason::Signalled { .. });
        if replace && !signalled {
            if let Err(reason) = state.spend_restart(&self.config, &exit.to_string()) {
                // Nothing more is accepted from here; `fail` does the rest.
                state.phase = Phase::Failed(reason.clone());
                failed_reason = Some(reason);
            }
        }
        // Settle the requests it held: re-queue (at the front, in order of
        // arrival) those with retries left, fail the rest.
        let exit_box = Box::new(exit.clone());
        let mut failures = Vec::new();
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
                state.pending.push_front(Pending {
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
            failures.push((reply, error));
        }
        state.dispatch(&self.config);
        let replacement =
            (replace && failed_reason.is_none()).then(|| (self.next_worker_id(), worker.index));
        drop(state);

        for (reply, error) in failures {
            // The caller may have just left; then nobody wants it.
            let _ = reply.send(Err(error));
        }
        if exit.requested() {
            tracing::debug!(
                pid = exit.pid,
                worker_id = exit.worker_id,
                "worker stopped: {}",
                exit.reason
            );
        } else {
            tracing::warn!(
                pid = exit.pid,
                worker_id = exit.worker_id,
                "worker ended: {exit}"
            );
        }
        self.metrics.worker_exit(&exit.reason);
        let final_state = if exit.requested() {
            WorkerState::Stopped
        } else {
            WorkerState::Crashed
        };
        self.emit_state(exit.worker_id, exit.pid, final_state);
        self.emit(Event::WorkerExited(exit));
        if let Some(reason) = failed_reason {
            self.fail(reason);
        }
        if let Some((id, index)) = replacement {
            self.metrics.restart();
            crate::worker::launch(self, id, index, false);
        }
        self.maintain();
        self.notify();
    }

    /// Snapshot of every worker.
    pub(crate) fn health(&self) -> Vec<WorkerHealth> {
        let state = self.lock();
        let mut list: Vec<WorkerHealth> = state.workers.iter().map(WorkerEntry::health).collect();
        list.sort_by_key(|h| (h.index, h.worker_id));
        list
    }

    /// Sends `message` to every worker past its handshake; returns how many.
    pub(crate) fn send_all(&self, message: &Message) -> usize {
        let state = self.lock();
        let mut sent = 0;
        for worker in state.workers.iter().filter(|w| w.tx.is_some()) {
            worker.send(message.clone());
            sent += 1;
        }
        sent
    }

    /// Sends `message` to one worker.
    pub(crate) fn send_to_worker(&self, worker_id: u64, message: Message) -> Result<(), Error> {
        let mut state = self.lock();
        match state.worker_mut(worker_id) {
            Some(worker) if worker.tx.is_some() => {
                worker.send(message);
                Ok(())
            }
            _ => Err(Error::NoSuchWorker { worker_id }),
        }
    }

    /// Stops taking requests and asks every worker to stop with `reason`
    /// (soft or hard kill). Returns false if the pool was already stopping
    /// this way or harder.
    pub(crate) fn begin_stop(&self, reason: ExitReason) {
        let mut state = self.lock();
        let mut queued = VecDeque::new();
        match reason {
            ExitReason::SoftKill => {
                if matches!(state.phase, Phase::Running | Phase::Drained) {
                    state.phase = Phase::SoftKilling;
                }
            }
            _ => {
                if !matches!(state.phase, Phase::Failed(_)) {
                    state.phase = Phase::Stopped;
                }
                queued = state.take_pending();
            }
        }
        drop(state);
        fail_all(queued, || Error::ShuttingDown);
        self.notify();
    }

    /// Sends the stop message to every worker not yet stopping.
    pub(crate) fn ask_workers_to_stop(&self, reason: &ExitReason) {
        let mut state = self.lock();
        for worker in &mut state.workers {
            let harder = matches!(reason, ExitReason::HardKill)
                && !matches!(worker.stop, Some(ExitReason::HardKill));
            if worker.stop.is_none() || harder {
                worker.stop = Some(reason.clone());
                worker.state = WorkerState::Stopping;
                worker.send(match reason {
                    ExitReason::SoftKill | ExitReason::Recycled(_) => Message::SoftKill,
                    _ => Message::HardKill,
                });
            }
        }
    }

    /// Kills every worker still running, recording `reason` for those the
    /// pool had not yet asked to stop.
    pub(crate) fn kill_all(&self, reason: ExitReason) {
        let mut state = self.lock();
        for worker in &mut state.workers {
            match worker.stop {
                Some(ExitReason::SoftKill) if reason == ExitReason::SoftKillTimeout => {
                    worker.stop = Some(reason.clone());
                }
                None => worker.stop = Some(reason.clone()),
                _ => {}
            }
            worker.kill.cancel();
        }
    }

    /// Records fresh memory readings, and refreshes the gauges.
    pub(crate) fn record_rss(&self, readings: &[RssReading]) {
        let mut state = self.lock();
        for reading in readings {
            if let Some(worker) = state.worker_mut(reading.worker_id) {
                // A reading from before the handshake never replaces the
                // one taken when the worker became ready.
                let stale = !reading.ready && worker.tx.is_some();
                if reading.rss.is_some() && !stale {
                    worker.rss = reading.rss;
                }
            }
        }
        self.metrics.sample(&state);
    }

    /// Every worker, for the memory sampler: `(worker id, pid, whether
    /// its handshake is done)`.
    pub(crate) fn pids(&self) -> Vec<(u64, u32, bool)> {
        self.lock()
            .workers
            .iter()
            .map(|w| (w.id, w.pid, w.tx.is_some()))
            .collect()
    }
}
