//! What the pool's handles and tasks share: the lock around
//! [`PoolState`], and everything carried out once it is released.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use drover_proto::{
    IncomingStream, Outbox, RemoteError, RequestId, Streams, ToSupervisor, ToWorker,
};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builder::Config;
use crate::error::{Error, PoolFailure, Violation};
use crate::event::{CustomEvent, Event, ExitReason, WorkerExit};
use crate::health::{WorkerHealth, WorkerState};
use crate::lifecycle::{Kill, StopOrder};
use crate::query::Query;
use crate::response::Response;

use super::effects::{Effects, Rare};
use super::state::{
    fail_all, Answer, AnswerBatch, Pending, Phase, PoolState, RssReading, Startup, WorkerEntry,
};

/// How long to wait before trying again to start a worker whose process
/// could not be started.
const SPAWN_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How many events a slow subscriber may fall behind.
const EVENT_BACKLOG: usize = 4096;

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
    /// Answers taken out of the state and not yet handed to their callers
    /// (counted under the lock, uncounted once sent): `idle()` waits for
    /// them too.
    undelivered: AtomicUsize,
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
            state: Mutex::new(PoolState::new(workers)),
            events,
            tracker,
            shutdown: CancellationToken::new(),
            changed: watch::channel(0).0,
            undelivered: AtomicUsize::new(0),
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

    /// Runs `change` on the state under the lock, then carries out what
    /// it left to do.
    pub(crate) fn change<T>(
        self: &Arc<Self>,
        change: impl FnOnce(&mut PoolState, &mut Effects) -> T,
    ) -> T {
        let mut fx = Effects::default();
        let mut state = self.lock();
        let value = change(&mut state, &mut fx);
        self.hold(&fx);
        drop(state);
        self.apply(&mut fx);
        value
    }

    /// Counts the answers `fx` holds as not yet delivered; called with
    /// the lock that took them out of the state still held.
    fn hold(&self, fx: &Effects) {
        if !fx.replies.is_empty() {
            self.undelivered
                .fetch_add(fx.replies.len(), Ordering::SeqCst);
        }
    }

    /// Whether every answer taken out of the state has been handed over
    /// (what `idle()` waits for, with the state idle).
    pub(crate) fn all_delivered(&self) -> bool {
        self.undelivered.load(Ordering::SeqCst) == 0
    }

    /// Carries out (and empties) `fx`, with the lock released: writers
    /// woken, kills told, streams cut, tasks started, callers answered,
    /// events sent, the pool failed, workers launched, then `maintain`
    /// and waiters told.
    pub(crate) fn apply(self: &Arc<Self>, fx: &mut Effects) {
        // Dropping a `Wake` wakes its writer.
        fx.wake = None;
        // A request or a batch of answers leaves only its writer's
        // wake-up and replies: then there is no rest to look at.
        let mut rare = fx.rare.take();
        if let Some(rare) = rare.as_deref_mut() {
            rare.more_wakes.clear();
            for kill in rare.kills.drain(..) {
                kill.cancel();
            }
            for (streams, why) in rare.cuts.drain(..) {
                streams.cut(&why);
            }
            for task in rare.tasks.drain(..) {
                self.tracker.spawn_on(task, &self.runtime);
            }
        }
        if !fx.replies.is_empty() {
            let delivered = fx.replies.len();
            for (reply, answer) in fx.replies.drain(..) {
                // The caller may have just left; then nobody wants it.
                reply.send(answer);
            }
            self.undelivered.fetch_sub(delivered, Ordering::SeqCst);
            fx.notify = true;
        }
        if let Some(rare) = rare {
            let Rare {
                events,
                failed,
                launches,
                ..
            } = *rare;
            for event in events {
                self.emit(event);
            }
            if let Some(reason) = failed {
                self.fail(reason);
            }
            for launch in launches {
                crate::worker::launch(self, launch);
            }
        }
        if std::mem::take(&mut fx.maintain) {
            self.maintain();
        }
        if std::mem::take(&mut fx.notify) {
            self.notify();
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        // No subscriber is fine: nobody is listening.
        let _ = self.events.send(event);
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
    #[inline]
    pub(crate) fn submit(self: &Arc<Self>, request: Pending) -> Result<(), Error> {
        let mut fx = Effects::default();
        let result = self.lock().submit(&self.config, request, &mut fx);
        self.apply(&mut fx);
        result
    }

    /// The caller of request `id` went away: forget it if queued, tell its
    /// worker if running. Its answer, if one comes, is dropped.
    ///
    /// Returns the id of the worker that holds it, if one does.
    pub(crate) fn cancel(self: &Arc<Self>, id: RequestId) -> Option<u64> {
        self.change(|state, fx| state.cancel(id, fx))
    }

    /// Kills worker `worker_id` if it still holds the timed-out request.
    pub(crate) fn kill_if_still_holding(self: &Arc<Self>, worker_id: u64, request_id: RequestId) {
        self.change(|state, fx| state.kill_if_still_holding(worker_id, request_id, fx));
    }

    /// One round of health checks: kill workers whose ping went
    /// unanswered too long, ping the others.
    pub(crate) fn health_check(self: &Arc<Self>, seq: u64) {
        let timeout = self.config.ping_timeout;
        self.change(|state, fx| state.health_check(seq, Instant::now(), timeout, fx));
    }

    /// Records a newly started worker process.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: u64,
        index: u32,
        pid: u32,
        kill: Kill,
        streams: Arc<Streams>,
    ) {
        let recycle_at = self.config.max_requests.map(|(n, jitter)| {
            // Any uniform randomness will do; a v4 uuid is 122 random bits.
            let random = uuid::Uuid::new_v4().as_u128() as u64;
            n + if jitter == 0 {
                0
            } else {
                random % (jitter + 1)
            }
        });
        self.change(|state, fx| state.register(id, index, pid, kill, streams, recycle_at, fx))
    }

    /// A worker finished its handshake: it may take requests. `rss` is its
    /// resident size read just now (with no lock held), recorded with the
    /// change, so whoever sees it ready sees its memory as it is once
    /// ready, not as it started or none until the next sample.
    pub(crate) fn worker_ready(
        self: &Arc<Self>,
        id: u64,
        tx: Outbox<ToWorker>,
        initial: bool,
        rss: Option<u64>,
    ) {
        let mut fx = Effects::default();
        let mut state = self.lock();
        state.worker_ready(&self.config, id, tx, initial, rss, &mut fx);
        let gauges = rss.is_some().then(|| state.gauges());
        drop(state);
        if let Some(gauges) = gauges {
            self.metrics.sample(&gauges);
        }
        self.apply(&mut fx);
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
                            shared.change(|state, fx| {
                                state.launching -= 1;
                                state.launch(index, false, fx);
                            });
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
    pub(crate) fn fail(self: &Arc<Self>, reason: PoolFailure) {
        tracing::error!("pool failed: {reason}");
        self.change(|state, fx| {
            state.phase = Phase::Failed(reason.clone());
            let queued = state.take_pending();
            fail_all(
                queued,
                || Error::PoolFailed {
                    reason: reason.clone(),
                },
                fx,
            );
            state.kill_all(StopOrder::PoolFailed, fx);
            fx.emit(Event::PoolFailed { reason });
            fx.notify = true;
        });
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

    /// Handles one message from a worker after its handshake (stream
    /// frames go to the connection's `streams`, never through the pool's
    /// lock). An `Err` names a protocol violation: the caller kills the
    /// worker.
    pub(crate) fn on_message(
        self: &Arc<Self>,
        id: u64,
        pid: u32,
        message: ToSupervisor,
        streams: &Streams,
    ) -> Result<(), Violation> {
        let worker_id = id;
        match message {
            ToSupervisor::Stream(frame) => {
                streams.on_frame(frame)?;
            }
            ToSupervisor::Response { id, stream, result } => {
                let mut batch = AnswerBatch::default();
                batch.answers.push(Answer { id, stream, result });
                return self.on_answers(worker_id, pid, &mut batch);
            }
            ToSupervisor::Busy => self.change(|state, fx| {
                if let Some(worker) = state.worker_mut(id) {
                    if worker.life.busy() {
                        fx.emit(worker.state_event(WorkerState::Busy));
                    }
                }
            }),
            ToSupervisor::Ready => self.change(|state, fx| {
                if let Some(worker) = state.worker_mut(id) {
                    if worker.life.unbusy() {
                        fx.emit(worker.state_event(WorkerState::Ready));
                    }
                }
                state.dispatch(&self.config, fx);
                fx.notify = true;
            }),
            ToSupervisor::Event { name, payload } => {
                self.emit(Event::Custom(CustomEvent::new(name, id, pid, payload)));
            }
            ToSupervisor::Status { message } => self.change(|state, fx| {
                if let Some(worker) = state.worker_mut(id) {
                    worker.status = Some(message.clone());
                }
                fx.emit(Event::WorkerStatus {
                    worker_id: id,
                    pid,
                    message,
                });
            }),
            ToSupervisor::Query {
                id: query_id,
                name,
                payload,
            } => {
                let out = self
                    .lock()
                    .worker_mut(id)
                    .and_then(|w| w.life.outbox().cloned());
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
            ToSupervisor::Stopping { signal } => {
                // A signal from outside the pool: the worker drains. It
                // gets nothing new, and its exit is that signal's doing.
                tracing::info!(pid, signal, "worker told to stop by a signal; it drains");
                let deadline = Instant::now() + self.config.drain_timeout;
                self.change(|state, fx| {
                    if let Some(worker) = state.worker_mut(id) {
                        // The answer it waits for before it exits
                        // (`SoftKill`): queued after every request routed
                        // to it, so it reads them all.
                        let (changed, delivery) = worker.life.signalled(signal, deadline);
                        worker.deliver(delivery, fx);
                        if changed {
                            fx.emit(worker.state_event(WorkerState::Stopping));
                        }
                    }
                    fx.maintain = true;
                    fx.notify = true;
                });
            }
            // The connection's reader frees the arena slot and never hands
            // a `Release` on.
            ToSupervisor::Release { .. } => {}
            ToSupervisor::SocketClosed { .. } => {
                let mut state = self.lock();
                if let Some(worker) = state.worker_mut(id) {
                    worker.open_sockets = worker.open_sockets.saturating_sub(1);
                }
            }
            ToSupervisor::Pong { seq } => {
                let mut state = self.lock();
                if let Some(worker) = state.worker_mut(id) {
                    if worker.ping.is_some_and(|(sent, _)| sent == seq) {
                        worker.ping = None;
                    }
                }
            }
            ToSupervisor::Hello(_) => {
                return Err(Violation::SecondHello);
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
    ) -> Result<(), Violation> {
        let AnswerBatch { answers, effects } = batch;
        if answers.is_empty() {
            return Ok(());
        }
        let mut outcome = Ok(());
        // One reading of the clock for the batch's latencies.
        let now = drover_proto::now_micros();
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
                    outcome = Err(Violation::UnknownAnswer { request_id });
                    break;
                };
                worker.answered(&in_flight);
                worker.served += 1;
                effects.maintain |= worker
                    .recycle_at
                    .is_some_and(|quota| worker.served >= quota);
                // An answer stream is registered before anything of it can
                // arrive (this connection's task reads it).
                let incoming = match (&result, worker.life.outbox()) {
                    (Ok(_), Some(tx)) if stream => {
                        let (incoming, chunks) = IncomingStream::new(
                            request_id,
                            tx.streams(),
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
                        self.metrics.answered(
                            in_flight.sent_at.saturating_sub(in_flight.created_at),
                            now.saturating_sub(in_flight.sent_at),
                        );
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
                effects.replies.push((reply, answer));
            }
            // After a violation the rest are dropped with the connection.
            answers.clear();
            state.dispatch(&self.config, effects);
            self.hold(effects);
        }
        effects.notify = true;
        self.apply(effects);
        outcome
    }

    /// Why worker `id` ends, if the pool ordered it to stop.
    pub(crate) fn stop_reason(&self, id: u64) -> Option<ExitReason> {
        self.lock()
            .worker_mut(id)
            .and_then(|w| w.life.exit_reason())
    }

    /// A worker process ended and was reaped: settle what it held (retry
    /// or fail each request), report it, and replace it if it was not
    /// asked to stop.
    pub(crate) fn worker_exited(self: &Arc<Self>, exit: WorkerExit) {
        let mut fx = Effects::default();
        let mut state = self.lock();
        let Some(exit) = state.worker_exited(&self.config, exit, &mut fx) else {
            return;
        };
        self.hold(&fx);
        drop(state);
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
        if fx.launches_any() {
            self.metrics.restart();
        }
        self.apply(&mut fx);
    }

    /// Snapshot of every worker.
    pub(crate) fn health(&self) -> Vec<WorkerHealth> {
        let unenforced = crate::sandbox::unenforced(&self.spec().limits);
        let state = self.lock();
        let mut list: Vec<WorkerHealth> = state.workers.iter().map(WorkerEntry::health).collect();
        drop(state);
        list.sort_by_key(|h| (h.index, h.worker_id));
        for health in &mut list {
            health.unenforced.clone_from(&unenforced);
        }
        list
    }

    /// The pool's status now (`Supervisor::status`).
    pub(crate) fn status(&self) -> crate::status::PoolStatus {
        self.lock().status(&self.name)
    }

    /// Sends `message` to every worker past its handshake; returns how many.
    pub(crate) fn send_all(self: &Arc<Self>, message: &ToWorker) -> usize {
        self.change(|state, fx| {
            let mut sent = 0;
            for worker in state.workers.iter().filter(|w| w.life.outbox().is_some()) {
                worker.send(message.clone(), fx);
                sent += 1;
            }
            sent
        })
    }

    /// Sends `message` to one worker.
    pub(crate) fn send_to_worker(
        self: &Arc<Self>,
        worker_id: u64,
        message: ToWorker,
    ) -> Result<(), Error> {
        self.change(|state, fx| match state.worker_mut(worker_id) {
            Some(worker) if worker.life.outbox().is_some() => {
                worker.send(message, fx);
                Ok(())
            }
            _ => Err(Error::NoSuchWorker { worker_id }),
        })
    }

    /// Stops taking requests for a soft kill (`StopOrder::SoftKill`: what
    /// is accepted still runs) or a hard one (any other order: what is
    /// queued fails). The workers are told by `ask_workers_to_stop`.
    pub(crate) fn begin_stop(self: &Arc<Self>, order: &StopOrder) {
        self.change(|state, fx| {
            match order {
                StopOrder::SoftKill => {
                    if matches!(state.phase, Phase::Running | Phase::Drained) {
                        state.phase = Phase::SoftKilling;
                    }
                }
                _ => {
                    if !matches!(state.phase, Phase::Failed(_)) {
                        state.phase = Phase::Stopped;
                    }
                    let queued = state.take_pending();
                    fail_all(queued, || Error::ShuttingDown, fx);
                }
            }
            fx.notify = true;
        });
    }

    /// Gives `order` to every worker not yet stopping (a hard kill to
    /// every worker not yet hard-killed) and tells them.
    pub(crate) fn ask_workers_to_stop(self: &Arc<Self>, order: &StopOrder) {
        self.change(|state, fx| {
            for worker in &mut state.workers {
                let delivery = worker.life.stop(order.clone());
                worker.deliver(delivery, fx);
            }
        });
    }

    /// Kills every worker still running, with `order` for those the pool
    /// had not yet ordered to stop.
    pub(crate) fn kill_all(self: &Arc<Self>, order: StopOrder) {
        self.change(|state, fx| state.kill_all(order, fx));
    }

    /// Records fresh memory readings, and refreshes the gauges.
    pub(crate) fn record_rss(&self, readings: &[RssReading]) {
        let mut state = self.lock();
        for reading in readings {
            if let Some(worker) = state.worker_mut(reading.worker_id) {
                // A reading from before the handshake never replaces the
                // one taken when the worker became ready.
                let stale = !reading.ready && worker.life.outbox().is_some();
                if reading.rss.is_some() && !stale {
                    worker.rss = reading.rss;
                }
            }
        }
        let gauges = state.gauges();
        drop(state);
        self.metrics.sample(&gauges);
    }

    /// Every worker, for the memory sampler: `(worker id, pid, whether
    /// its handshake is done)`.
    pub(crate) fn pids(&self) -> Vec<(u64, u32, bool)> {
        self.lock()
            .workers
            .iter()
            .map(|w| (w.id, w.pid, w.life.outbox().is_some()))
            .collect()
    }
}
