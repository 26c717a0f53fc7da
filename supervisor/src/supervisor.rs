//! The public handle to a pool.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use drover_proto::{encode_value, ToWorker};
use serde::Serialize;

use crate::builder::{Builder, Config};
use crate::error::Error;
use crate::event::Events;
use crate::health::{read_rss, WorkerHealth};
use crate::lifecycle::StopOrder;
use crate::pool::{PoolState, RssReading, Shared};
use crate::request::RequestBuilder;
use crate::response::Response;
use crate::spawn::Spawner;

/// A pool of worker processes.
///
/// `Supervisor` is a cheap handle (`Clone + Send + Sync`): clone it into
/// as many tasks as need to send requests.
///
/// # Dropping
///
/// When the last handle is dropped, every queued request fails with
/// [`Error::ShuttingDown`] and every worker is killed at once (`SIGKILL`)
/// and reaped in the background on the runtime. To wait until every worker
/// has been reaped, call [`hard_kill`](Supervisor::hard_kill) or
/// [`soft_kill`](Supervisor::soft_kill) first.
///
/// # Examples
///
/// ```no_run
/// use drover_supervisor::Supervisor;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // The worker binary cargo builds next to this one (`src/bin/upper-worker.rs`).
/// let worker = std::env::current_exe()?.with_file_name("upper-worker");
/// let pool = Supervisor::builder(worker).workers(4).spawn().await?;
/// let answer = pool.enqueue("hello").await?;
/// println!("pid {} said {}", answer.pid(), answer.data::<String>()?);
/// pool.soft_kill().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Supervisor {
    handle: Arc<Handle>,
}

/// The last of these to drop stops the pool.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.begin_stop(&StopOrder::HardKill);
        shared.ask_workers_to_stop(&StopOrder::HardKill);
        shared.kill_all(StopOrder::HardKill);
        shared.tracker.close();
        // Stop the background tasks (the memory sampler); connection tasks
        // end once their process is reaped.
        shared.shutdown.cancel();
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("program", &self.handle.shared.spec().program)
            .field("workers", &self.handle.shared.workers())
            .finish_non_exhaustive()
    }
}

// Starting a pool lives here, beside the handle it returns, so that
// `builder.rs` (the settings) depends on nothing that uses it.
impl Builder {
    /// Starts the pool without waiting for the workers: requests enqueued
    /// now wait until a worker is ready. Subscribe to
    /// [`events`](Supervisor::events) before [`online`](Supervisor::online)
    /// to see every worker start.
    ///
    /// # Errors
    ///
    /// [`Error::WorkerBinary`] if the binary is missing or not executable,
    /// [`Error::Encode`] if the `config` value did not encode,
    /// [`Error::NoRuntime`] outside a tokio runtime.
    pub fn start(self) -> Result<Supervisor, Error> {
        let config = self.into_config()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        Supervisor::start(config, runtime)
    }

    /// Starts the pool and waits until every worker is ready ("online").
    ///
    /// # Errors
    ///
    /// As [`start`](Builder::start), and the first worker's failure to
    /// start ([`Error::Spawn`], [`Error::Handshake`]); then every worker
    /// already started is killed and reaped before this returns.
    pub async fn spawn(self) -> Result<Supervisor, Error> {
        let pool = self.start()?;
        match pool.online().await {
            Ok(()) => Ok(pool),
            Err(e) => {
                pool.hard_kill().await;
                Err(e)
            }
        }
    }
}

impl Supervisor {
    /// Starts configuring a pool of workers running `program`.
    pub fn builder(program: impl AsRef<Path>) -> Builder {
        Builder::new(program)
    }

    /// The pool's settings as it runs now (worker count after any resize,
    /// workers' settings after any reload).
    pub(crate) fn settings(&self) -> Config {
        self.shared().settings()
    }

    pub(crate) fn start(
        config: Config,
        runtime: tokio::runtime::Handle,
    ) -> Result<Supervisor, Error> {
        let spawner = Spawner::new(runtime.clone()).map_err(|source| Error::Spawn {
            path: config.program.clone(),
            source,
        })?;
        let shared = Arc::new(Shared::new(config, runtime, spawner));
        shared.change(|state, fx| {
            for index in 0..shared.config.workers {
                state.launch(index as u32, true, fx);
            }
        });
        let sampler = sample_memory(shared.clone());
        shared.tracker.spawn_on(sampler, &shared.runtime);
        let pinger = ping_workers(shared.clone());
        shared.tracker.spawn_on(pinger, &shared.runtime);
        Ok(Supervisor {
            handle: Arc::new(Handle { shared }),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Waits until every worker of the initial set has said `Ready`.
    ///
    /// # Errors
    ///
    /// The first worker's failure to start ([`Error::Spawn`],
    /// [`Error::Handshake`]); [`Error::ShuttingDown`] if the pool was
    /// stopped first. Each worker's start is bounded by the start timeout,
    /// so this never hangs.
    pub async fn online(&self) -> Result<(), Error> {
        self.shared().wait_until(PoolState::startup_outcome).await
    }

    /// Resolves the next time the pool is idle: no worker holds a request
    /// and no request is queued. At once if it is idle already.
    ///
    /// Requests count from the moment they are accepted (`enqueue`,
    /// `request(..).send()`, a batch's or a job queue's requests) until
    /// they are answered, failed or cancelled; a request whose caller left
    /// while a worker had it counts until that worker lets go of it (it
    /// answers, or dies). A request queued behind busy workers, or held in
    /// a drained pool, keeps it from being idle. What is not a request
    /// does not count: a worker that said `busy()` with nothing in flight,
    /// an answer's byte stream still being read, a job queue's jobs not
    /// yet sent (see `Runner::idle` in `drover-queue`).
    ///
    /// The pool is checked after each change that can make it idle (an
    /// answer, a failed or cancelled request, a worker's exit): a moment of
    /// idleness shorter than this task's wake-up (a caller that sends its
    /// next request as soon as it has an answer) may pass unseen.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # // An in-process pool (what `drover::testing` makes) stands in for a
    /// # // worker binary: it upper-cases text and echoes anything else.
    /// # let pool = drover_supervisor::Supervisor::builder("upper")
    /// #     .in_process(|socket| async move {
    /// #         let worker = drover_worker::Worker::connect_over(socket).await.unwrap();
    /// #         let _ = worker
    /// #             .serve(|req: drover_worker::Request| async move {
    /// #                 match req.data::<String>() {
    /// #                     Ok(text) => req.respond(&text.to_uppercase()),
    /// #                     Err(_) => {
    /// #                         let bytes = req.payload_bytes();
    /// #                         req.respond_bytes(bytes)
    /// #                     }
    /// #                 }
    /// #             })
    /// #             .await;
    /// #     })
    /// #     .spawn()
    /// #     .await?;
    /// // Replace the workers in a quiet moment.
    /// pool.idle().await;
    /// pool.reload().await?;
    /// # pool.soft_kill().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches the pool, and dropping it changes
    /// nothing.
    pub async fn idle(&self) {
        let shared = self.shared();
        // Idle once every answer taken out of the state is handed over,
        // too: a caller woken after `idle()` returns has its answer.
        shared
            .wait_until(|state| (state.is_idle() && shared.all_delivered()).then_some(()))
            .await;
    }

    /// Sends `payload` to a worker and waits for its answer, with the
    /// pool's default timeout and retries.
    ///
    /// The request goes to the best worker at once (see
    /// [`Routing`](crate::Routing)), or waits in the queue until one is
    /// free.
    ///
    /// # Errors
    ///
    /// Refusals, returned at once with nothing sent:
    /// [`Error::PayloadTooLarge`], [`Error::QueueFull`],
    /// [`Error::ShuttingDown`], [`Error::PoolFailed`], [`Error::Encode`].
    /// Failures: [`Error::Remote`] (the handler failed),
    /// [`Error::WorkerLost`] (the worker died holding it, retries spent),
    /// [`Error::Timeout`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the request: it leaves the queue if it is
    /// still there; if a worker has it, the worker is sent `Cancel` (its
    /// `Request::cancelled` fires) and its answer is discarded.
    pub fn enqueue<T: Serialize + ?Sized>(
        &self,
        payload: &T,
    ) -> impl Future<Output = Result<Response, Error>> + Send + '_ {
        // Encoded now (no effect on the pool); queued on the first poll.
        self.request(payload).send()
    }

    /// As [`enqueue`](Supervisor::enqueue), with a payload already encoded
    /// (the worker sees these exact bytes in `Request::payload`).
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Supervisor::enqueue).
    ///
    /// # Cancel safety
    ///
    /// As [`enqueue`](Supervisor::enqueue).
    pub fn enqueue_bytes(
        &self,
        payload: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Response, Error>> + Send + '_ {
        self.request_bytes(payload).send()
    }

    /// A request with options of its own: timeout, retries.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # // An in-process pool (what `drover::testing` makes) stands in for a
    /// # // worker binary: it upper-cases text and echoes anything else.
    /// # let pool = drover_supervisor::Supervisor::builder("upper")
    /// #     .in_process(|socket| async move {
    /// #         let worker = drover_worker::Worker::connect_over(socket).await.unwrap();
    /// #         let _ = worker
    /// #             .serve(|req: drover_worker::Request| async move {
    /// #                 match req.data::<String>() {
    /// #                     Ok(text) => req.respond(&text.to_uppercase()),
    /// #                     Err(_) => {
    /// #                         let bytes = req.payload_bytes();
    /// #                         req.respond_bytes(bytes)
    /// #                     }
    /// #                 }
    /// #             })
    /// #             .await;
    /// #     })
    /// #     .spawn()
    /// #     .await?;
    /// use std::time::Duration;
    /// let answer = pool
    ///     .request("render this")
    ///     .timeout(Duration::from_secs(2))
    ///     .retries(1)
    ///     .send()
    ///     .await?;
    /// # pool.soft_kill().await;
    /// # Ok(()) }
    /// ```
    pub fn request<T: Serialize + ?Sized>(&self, payload: &T) -> RequestBuilder<'_> {
        let payload = encode_value(payload)
            .map(Bytes::from)
            .map_err(|e| Box::new(Error::Encode(e)));
        self.builder_for(payload)
    }

    /// As [`request`](Supervisor::request), with a payload already encoded.
    pub fn request_bytes(&self, payload: impl Into<Bytes>) -> RequestBuilder<'_> {
        self.builder_for(Ok(payload.into()))
    }

    fn builder_for(&self, payload: Result<Bytes, Box<Error>>) -> RequestBuilder<'_> {
        RequestBuilder::new(self, payload)
    }

    /// Runs many jobs through the pool and reports how it went: okanjo's
    /// batch runs. Each job is an ordinary request; at most `concurrency`
    /// are in flight (by default the pool's capacity). Workers may report
    /// statistics (`Worker::add_stat`), summed in the report.
    pub fn batch<I: IntoIterator>(&self, jobs: I) -> crate::batch::Batch<'_, I::IntoIter> {
        let capacity = self.shared().workers() * self.shared().config.max_concurrency;
        crate::batch::Batch::new(self, jobs.into_iter(), capacity.max(1))
    }

    /// The largest payload a request or event can carry, in bytes: the
    /// payload limit, [`Builder::max_frame_length`] less 64 bytes of
    /// message (a worker's answers have the same limit).
    pub fn max_payload(&self) -> usize {
        self.shared().config.max_payload()
    }

    /// A snapshot of every worker: pid, memory, requests in flight, state.
    pub fn health(&self) -> Vec<WorkerHealth> {
        self.shared().health()
    }

    /// The pool's status: PHP-FPM's status page as a value (accepted
    /// requests, active and idle workers, the queue now and at its
    /// longest, how often it was full, slow requests, restarts) and each
    /// worker's (pid, state, memory, requests served and held, start time,
    /// last status line, how its slot's previous worker ended). Serialize
    /// it (serde) to publish it; the admin endpoint (`drover-admin`)
    /// serves it as JSON and HTML.
    pub fn status(&self) -> crate::status::PoolStatus {
        self.shared().status()
    }

    /// Subscribes to the pool's events from now on.
    pub fn events(&self) -> Events {
        Events::new(self.shared().events.subscribe())
    }

    /// Sends a custom event to every worker that finished its handshake;
    /// returns how many it was sent to.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::PayloadTooLarge`].
    pub fn broadcast<T: Serialize + ?Sized>(
        &self,
        name: &str,
        payload: &T,
    ) -> Result<usize, Error> {
        let message = self.event_message(name, payload)?;
        Ok(self.shared().send_all(&message))
    }

    /// Sends a custom event to one worker.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchWorker`] if no such worker is running,
    /// [`Error::Encode`], [`Error::PayloadTooLarge`].
    pub fn emit_to<T: Serialize + ?Sized>(
        &self,
        worker_id: u64,
        name: &str,
        payload: &T,
    ) -> Result<(), Error> {
        let message = self.event_message(name, payload)?;
        self.shared().send_to_worker(worker_id, message)
    }

    fn event_message<T: Serialize + ?Sized>(
        &self,
        name: &str,
        payload: &T,
    ) -> Result<ToWorker, Error> {
        let payload = encode_value(payload).map_err(Error::Encode)?;
        let size = payload.len() + name.len();
        let limit = self.max_payload();
        if size > limit {
            return Err(Error::PayloadTooLarge { size, limit });
        }
        Ok(ToWorker::Event {
            name: name.to_owned(),
            payload: Bytes::from(payload),
        })
    }

    /// Grows or shrinks the pool to `n` workers and waits until it has `n`
    /// ready workers (and those retired are gone).
    ///
    /// Shrinking retires idle workers first; a retired worker finishes what
    /// it holds (within the drain timeout) before it exits, so no request
    /// in flight is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Operation`] if `n` is 0 (a running pool needs a worker:
    /// [`drain`](Supervisor::drain) is how to stop them all), if the pool
    /// is not running, or stops while this waits (a soft or hard kill:
    /// then at once), or if it does not settle within the start timeout
    /// plus the drain timeout.
    pub async fn resize(&self, n: usize) -> Result<(), Error> {
        self.shared().resize(n).await
    }

    /// Replaces every worker with a fresh process, [`max_recycling`] at a
    /// time: each replacement is ready before the worker it replaces is
    /// retired, and the old one finishes what it holds. A new binary at the
    /// same path is picked up. Under steady load no request fails.
    ///
    /// [`max_recycling`]: Builder::max_recycling
    ///
    /// # Errors
    ///
    /// As [`resize`](Supervisor::resize).
    pub async fn reload(&self) -> Result<(), Error> {
        self.shared().reload(None).await
    }

    /// As [`reload`](Supervisor::reload), starting the new workers with the
    /// program, arguments, environment, `config` value, isolation limits and
    /// output capture of `builder`. Pool-wide settings (worker count, caps,
    /// timeouts, routing) stay as they are.
    ///
    /// A replacement that fails to start (a program that is not a drover
    /// worker, say) ends the reload at once with an error naming it,
    /// before any old worker retires; the old settings are put back, so
    /// the pool carries on as it was.
    ///
    /// # Errors
    ///
    /// As [`resize`](Supervisor::resize), [`Error::Operation`] for a
    /// replacement that failed to start, and the builder's own errors (a
    /// missing binary, a config value that does not encode).
    pub async fn reload_with(&self, builder: Builder) -> Result<(), Error> {
        let spec = builder.into_config()?;
        self.shared().reload(Some(spec)).await
    }

    /// Stops every worker gracefully (each finishes what it holds) and
    /// keeps the pool drained: requests made meanwhile wait in the queue
    /// for [`resume`](Supervisor::resume), or fail with [`Error::Drained`]
    /// (see [`Builder::hold_when_drained`]). Resolves when every worker has
    /// exited.
    ///
    /// # Errors
    ///
    /// As [`resize`](Supervisor::resize).
    pub async fn drain(&self) -> Result<(), Error> {
        self.shared().drain().await
    }

    /// Starts the workers again after [`drain`](Supervisor::drain); the
    /// requests held meanwhile run. Resolves when every worker is ready.
    ///
    /// # Errors
    ///
    /// [`Error::Operation`] if the pool is not drained or does not settle.
    pub async fn resume(&self) -> Result<(), Error> {
        self.shared().resume().await
    }

    /// Stops the pool gracefully and waits until every worker is reaped.
    ///
    /// New requests fail at once with [`Error::ShuttingDown`]. Requests
    /// already accepted (queued or in flight) are answered; then each worker
    /// is told to stop, and exits once its requests are answered, its
    /// soft-kill hook has run and it is not busy. Whatever is left when the
    /// soft-kill grace runs out is killed, and its requests fail.
    pub async fn soft_kill(&self) {
        self.soft_kill_as(StopOrder::SoftKill).await;
    }

    /// A soft kill with `order` (`SoftKill`, or `Recycle` for a cause),
    /// from which its workers' exit reasons come.
    pub(crate) async fn soft_kill_as(&self, order: StopOrder) {
        let shared = self.shared();
        shared.begin_stop(&StopOrder::SoftKill);
        let deadline = tokio::time::Instant::now() + shared.config.soft_kill_grace;
        let drained = tokio::time::timeout_at(
            deadline,
            shared.wait_until(|state| (state.queue_is_empty() || state.no_workers()).then_some(())),
        )
        .await;
        if drained.is_err() {
            tracing::warn!("soft kill: queued requests not done within the grace; failing them");
        }
        // Whatever could not run (grace over, or no worker left) fails now.
        shared.change(|state, fx| {
            let queued = state.take_pending();
            crate::pool::fail_all(queued, || Error::ShuttingDown, fx);
            fx.notify = true;
        });
        shared.ask_workers_to_stop(&order);
        let gone = tokio::time::timeout_at(deadline, self.all_reaped()).await;
        if gone.is_err() {
            shared.kill_all(StopOrder::SoftKillTimeout);
            self.all_reaped().await;
        }
        shared.begin_stop(&StopOrder::HardKill);
    }

    /// Stops the pool now and waits until every worker is reaped: queued
    /// requests fail with [`Error::ShuttingDown`], workers are told to stop
    /// and killed after the hard-kill grace, and their requests fail with
    /// [`Error::WorkerLost`].
    pub async fn hard_kill(&self) {
        let shared = self.shared();
        shared.begin_stop(&StopOrder::HardKill);
        shared.ask_workers_to_stop(&StopOrder::HardKill);
        let gone = tokio::time::timeout(shared.config.hard_kill_grace, self.all_reaped()).await;
        if gone.is_err() {
            shared.kill_all(StopOrder::HardKill);
            self.all_reaped().await;
        }
    }

    /// Waits until no worker process is left. Every process is killed by
    /// then (the callers made sure), so this is bounded by `SIGKILL`.
    async fn all_reaped(&self) {
        self.shared()
            .wait_until(|state| state.no_workers().then_some(()))
            .await;
    }
}

/// Samples every worker's resident memory at the health interval (each
/// worker is also sampled as it becomes ready: `Shared::worker_ready`).
async fn sample_memory(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.health_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let arenas = shared.spec().arenas_bytes();
        let readings: Vec<RssReading> = shared
            .pids()
            .into_iter()
            .map(|(worker_id, pid, ready)| RssReading {
                worker_id,
                ready,
                rss: read_rss(pid, arenas),
            })
            .collect();
        shared.record_rss(&readings);
        shared.log_slow_requests();
        shared.maintain();
    }
}

/// Pings every worker at the health-check interval; the pool kills those
/// whose ping goes unanswered past the timeout.
async fn ping_workers(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.ping_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        seq += 1;
        shared.health_check(seq);
    }
}
