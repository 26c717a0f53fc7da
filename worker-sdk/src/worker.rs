//! The public [`Worker`] handle: connecting, and the primitives a worker
//! calls from anywhere (`ready`, `busy`, `emit`, `ask`, hooks...).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_proto::{
    decode_value, encode_value, HandshakeError, Hello, Opening, ToSupervisor, WorkerEnd, WriterEnd,
    DEFAULT_MAX_FRAME_LENGTH,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::UnixStream;
use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::events::Events;
use crate::handler::Handler;
use crate::registry::RequestInfo;
use crate::shared::Shared;
use crate::signals::StopSignals;
use crate::socket::FromPassedFd;

/// A worker's connection to its supervisor: the primitives of the worker
/// side.
///
/// Get one with [`Worker::connect`], build whatever state the handler needs
/// (the pool's [`config`](Worker::config) arrives with the handshake), then
/// [`serve`](Worker::serve). `Worker` is a cheap handle: clone it into
/// handlers to call [`emit`](Worker::emit), [`busy`](Worker::busy) and
/// [`ready`](Worker::ready) from anywhere.
///
/// # Examples
///
/// ```no_run
/// use drover_worker::{Request, Worker};
///
/// #[tokio::main]
/// async fn main() -> Result<(), drover_worker::Error> {
///     let worker = Worker::connect().await?;
///     let greeting: String = worker.config().unwrap_or_else(|_| "hello".into());
///     worker
///         .serve(move |req: Request| {
///             let greeting = greeting.clone();
///             async move {
///                 let name: String = req.data()?;
///                 req.respond(&format!("{greeting}, {name}"))
///             }
///         })
///         .await
/// }
/// ```
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Shared>,
    /// Whether handlers are first polled in the serve loop (current-thread
    /// runtimes); see `start_request`.
    inline_first_poll: bool,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.inner.welcome().worker_id)
            .field("index", &self.inner.welcome().index)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Connects to the supervisor that started this process and completes
    /// the handshake (`Hello`, `Welcome`). The worker gets no request until
    /// [`serve`](Worker::serve) (or [`ready`](Worker::ready)).
    ///
    /// Once the inherited socket is found, SIGTERM and SIGINT no longer end
    /// the process: they are held for [`serve`](Worker::serve), which
    /// drains on the first one (see the `# Signals` section of [`serve`](Worker::serve)). A
    /// program that connects and does not serve handles them itself.
    ///
    /// # Errors
    ///
    /// [`Error::NotUnderSupervisor`] when the process was not started by a
    /// drover supervisor, [`Error::Orphaned`] when that supervisor is
    /// already gone, [`Error::Handshake`] when the handshake fails.
    pub async fn connect() -> Result<Worker, Error> {
        let std_stream = crate::fd::inherited_socket()?;
        // As early as possible: a signal that comes during the handshake
        // or the program's setup is held for `serve`, not fatal.
        let signals = StopSignals::listen();
        let shared = crate::fd::shared_sockets()?;
        let arenas = crate::fd::shared_memory(shared.len())?;
        Worker::handshake(std_stream, signals, shared, arenas).await
    }

    /// Connects over `socket`, a connected end of a socket pair whose
    /// other end a supervisor holds, instead of the socket a supervisor
    /// leaves in a worker process; listens to no signal (the process is
    /// not the worker's own).
    ///
    /// This is how `drover::testing`'s in-process pools run a worker on a
    /// thread of the test process; a worker binary uses
    /// [`connect`](Worker::connect).
    ///
    /// # Errors
    ///
    /// [`Error::Handshake`] when the handshake fails,
    /// [`Error::Disconnected`] when the other end closes first.
    pub async fn connect_over(socket: std::os::unix::net::UnixStream) -> Result<Worker, Error> {
        Worker::handshake(socket, StopSignals::none(), Vec::new(), None).await
    }

    async fn handshake(
        std_stream: std::os::unix::net::UnixStream,
        signals: StopSignals,
        shared: Vec<std::os::fd::OwnedFd>,
        arenas: Option<drover_proto::shm::Arenas>,
    ) -> Result<Worker, Error> {
        std_stream
            .set_nonblocking(true)
            .map_err(|e| Error::Handshake(e.into()))?;
        let stream = UnixStream::from_std(std_stream).map_err(|e| Error::Handshake(e.into()))?;
        // The frame limit is the supervisor's, adopted from its `Welcome`.
        let mut connection = Opening::<WorkerEnd>::new(stream, DEFAULT_MAX_FRAME_LENGTH);
        if let Some(arenas) = arenas {
            connection.share_memory(arenas);
        }
        let welcome = match connection.connect(Hello::new()).await {
            Ok(welcome) => welcome,
            Err(HandshakeError::Protocol(e)) => return Err(Error::Handshake(e)),
            // The connection ended (or the handshake failed in a way this
            // crate does not know yet): no supervisor to serve.
            Err(_) => return Err(Error::Disconnected),
        };
        let tasks = TaskTracker::new();
        let runtime = tokio::runtime::Handle::current();
        // The supervisor is trusted to read: no bound on what waits for it.
        let connection = connection.open(usize::MAX, &tasks, &runtime, |end| match end {
            WriterEnd::Finished => {}
            WriterEnd::Failed(e) => {
                tracing::error!(error = %e, "cannot write to the supervisor");
            }
            other => tracing::error!("the writer to the supervisor ended: {other:?}"),
        });
        let flavor = runtime.runtime_flavor();
        Ok(Worker {
            inline_first_poll: flavor == tokio::runtime::RuntimeFlavor::CurrentThread,
            inner: Arc::new(Shared::new(welcome, connection, tasks, signals, shared)),
        })
    }

    /// This worker's id in the pool (unique for the pool's life).
    pub fn id(&self) -> u64 {
        self.inner.welcome().worker_id
    }

    /// The slot this worker fills, `0..workers`; a replacement inherits the
    /// slot of the worker it replaces.
    pub fn index(&self) -> u32 {
        self.inner.welcome().index
    }

    /// Takes socket `index` of those the pool shares with every worker
    /// (`Builder::share_socket`, numbered in the order they were shared),
    /// as a `T`: a `tokio::net::TcpListener` to accept on, say. Each is
    /// taken once; `None` when there is no such socket (or it was taken).
    ///
    /// ```no_run
    /// # async fn run(worker: drover_worker::Worker) -> Result<(), drover_worker::Error> {
    /// let Some(listener) = worker.shared_socket::<tokio::net::TcpListener>(0)? else {
    ///     return Ok(()); // the pool shares no socket
    /// };
    /// loop {
    ///     let (connection, _) = listener.accept().await.map_err(drover_worker::Error::Socket)?;
    ///     // serve `connection`...
    /// #   drop(connection);
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Socket`] when the socket cannot be made a `T` (it is
    /// another kind of socket, or cannot be registered with the runtime);
    /// it is closed then.
    pub fn shared_socket<T: FromPassedFd>(&self, index: usize) -> Result<Option<T>, Error> {
        match self.inner.take_shared_socket(index) {
            Some(fd) => T::from_passed_fd(fd).map(Some).map_err(Error::Socket),
            None => Ok(None),
        }
    }

    /// Decodes the pool's configuration payload, sent with the handshake.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] naming `T` when the configuration is not a `T` (or
    /// the pool has none).
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(decode_value(&self.inner.welcome().config)?)
    }

    /// The frame limit agreed with the supervisor, in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.inner.max_frame_length()
    }

    /// Tells the supervisor this worker takes requests (again). `serve`
    /// calls it when it starts; call it after [`busy`](Worker::busy).
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the supervisor is gone.
    pub fn ready(&self) -> Result<(), Error> {
        self.inner.ready()
    }

    /// Tells the supervisor to route no new request here until
    /// [`ready`](Worker::ready). Requests in flight carry on. A soft kill
    /// waits for a busy worker to be ready again.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the supervisor is gone.
    pub fn busy(&self) -> Result<(), Error> {
        self.inner.busy()
    }

    /// Whether [`busy`](Worker::busy) is in force.
    pub fn is_busy(&self) -> bool {
        self.inner.stop.is_busy()
    }

    /// Sends a custom event to the supervisor, where it appears in its
    /// `events()` stream with this worker's pid.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if `payload` does not encode, [`Error::TooLarge`]
    /// if it is over the payload limit (with its name), [`Error::Disconnected`]
    /// if the supervisor is gone.
    pub fn emit<T: Serialize + ?Sized>(&self, name: &str, payload: &T) -> Result<(), Error> {
        let payload = encode_value(payload)?;
        let len = payload.len() + name.len();
        if len > self.inner.max_payload() {
            return Err(Error::TooLarge {
                what: format!("event {name:?}"),
                len,
                max: self.inner.max_payload(),
            });
        }
        self.inner.send(ToSupervisor::Event {
            name: name.to_owned(),
            payload: Bytes::from(payload),
        })
    }

    /// Asks the supervisor a question and waits for its answer: the
    /// application answers with the query handler it gave the pool
    /// (`Builder::on_query`). Lookups the supervisor holds (a price list, a
    /// user's settings) stay in one place, and workers ask for them.
    ///
    /// # Errors
    ///
    /// [`Error::Query`] when the supervisor answered with an error (or has
    /// no handler), [`Error::Value`] when a value does not encode or
    /// decode, [`Error::TooLarge`] when the question is over the payload
    /// limit, [`Error::Disconnected`] when the supervisor is gone.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future forgets the question; a late answer is dropped.
    pub async fn ask<T, R>(&self, name: &str, question: &T) -> Result<R, Error>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let payload = Bytes::from(encode_value(question)?);
        if payload.len() + name.len() > self.inner.max_payload() {
            return Err(Error::TooLarge {
                what: format!("query {name:?}"),
                len: payload.len() + name.len(),
                max: self.inner.max_payload(),
            });
        }
        // Forgotten if this future is dropped.
        let mut asked = self.inner.queries.ask();
        self.inner.send(ToSupervisor::Query {
            id: asked.id(),
            name: name.to_owned(),
            payload,
        })?;
        match asked.answer().await {
            Some(Ok(answer)) => Ok(decode_value(&answer)?),
            Some(Err(error)) => Err(Error::Query {
                name: name.to_owned(),
                message: error.message,
            }),
            None => Err(Error::Disconnected),
        }
    }

    /// Adds `value` to the statistic `name`: a batch run
    /// (`Supervisor::batch`) sums what its workers report, by name (rows
    /// parsed, bytes written, cache misses).
    ///
    /// # Errors
    ///
    /// As [`emit`](Worker::emit).
    pub fn add_stat(&self, name: &str, value: f64) -> Result<(), Error> {
        self.emit(drover_proto::EVENT_STAT, &(name, value))
    }

    /// Posts a job to the pool's job queue (`drover::queue`), due now: a
    /// worker can fan work out, or schedule a follow-up. The job is durable
    /// once the supervisor's queue runner has stored it; a runner must be
    /// started on this pool for it to be taken.
    ///
    /// # Errors
    ///
    /// As [`emit`](Worker::emit).
    pub fn post_job<T: Serialize + ?Sized>(&self, job: &T) -> Result<(), Error> {
        self.post_job_at_micros(0, job)
    }

    /// As [`post_job`](Worker::post_job), due after `delay`: a timer.
    ///
    /// # Errors
    ///
    /// As [`emit`](Worker::emit).
    pub fn post_job_after<T: Serialize + ?Sized>(
        &self,
        delay: Duration,
        job: &T,
    ) -> Result<(), Error> {
        self.post_job_at(std::time::SystemTime::now() + delay, job)
    }

    /// As [`post_job`](Worker::post_job), due at `time` (by the
    /// supervisor's clock, which the queue's runner reads): a timer. A
    /// time already past is due at once. Kept to the microsecond, as the
    /// queue keeps times.
    ///
    /// ```no_run
    /// # fn run(worker: &drover_worker::Worker) -> Result<(), drover_worker::Error> {
    /// use std::time::{Duration, SystemTime};
    /// let tomorrow = SystemTime::now() + Duration::from_secs(24 * 3600);
    /// worker.post_job_at(tomorrow, &("reminder", "ada@example.com"))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`emit`](Worker::emit).
    pub fn post_job_at<T: Serialize + ?Sized>(
        &self,
        time: std::time::SystemTime,
        job: &T,
    ) -> Result<(), Error> {
        // 0 means "now" on the wire: a time at (or before) the epoch is
        // sent as the first microsecond after it, long past either way.
        let due = drover_proto::timestamp_micros(time);
        self.post_job_at_micros(due.max(1), job)
    }

    fn post_job_at_micros<T: Serialize + ?Sized>(&self, due: u64, job: &T) -> Result<(), Error> {
        let job = encode_value(job)?;
        self.emit(drover_proto::EVENT_POST_JOB, &(due, job))
    }

    /// Sends a human-readable status line ("loading model 2 of 5") to the
    /// supervisor.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the supervisor is gone.
    pub fn status(&self, message: impl Into<String>) -> Result<(), Error> {
        self.inner.send(ToSupervisor::Status {
            message: message.into(),
        })
    }

    /// Subscribes to the events the supervisor sends to this worker
    /// (`broadcast` and targeted events). Only events that arrive after the
    /// call are seen: subscribe before [`serve`](Worker::serve) to see
    /// every event sent once the worker is ready.
    pub fn events(&self) -> Events {
        Events::new(self.inner.events.subscribe())
    }

    /// The requests in flight on this worker: received, not yet answered.
    pub fn requests(&self) -> Vec<RequestInfo> {
        self.inner.registry.snapshot()
    }

    /// Runs `hook` when the supervisor asks for a soft kill. The worker
    /// keeps answering its requests meanwhile, and exits only once the hook
    /// has finished, every request is answered and it is not
    /// [`busy`](Worker::busy). Without a hook it exits as soon as the last
    /// two hold.
    pub fn on_soft_kill<F, Fut>(&self, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner
            .stop
            .set_soft_kill_hook(Box::new(move || Box::pin(hook())));
    }

    /// Runs `hook` when the supervisor asks for a hard kill, just before
    /// [`serve`](Worker::serve) returns. Keep it short: the supervisor
    /// kills the process after a brief grace.
    pub fn on_hard_kill<F>(&self, hook: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.inner.stop.set_hard_kill_hook(Box::new(hook));
    }

    /// Serves requests with `handler` until the supervisor says to stop.
    ///
    /// Sends `Ready` first. Each request runs in its own task, so a worker
    /// can hold several at once (the supervisor decides how many, with its
    /// per-worker concurrency cap). CPU-heavy handlers should move their
    /// work to `tokio::task::spawn_blocking` so the connection keeps being
    /// served.
    ///
    /// Returns `Ok(())` after a soft kill (once everything is answered) or a
    /// hard kill; the caller should then let the process exit.
    ///
    /// # Signals
    ///
    /// SIGTERM and SIGINT mean a soft kill from outside the pool: a
    /// service manager stopping the whole unit (systemd's
    /// `KillMode=control-group` signals every process of it), or a
    /// terminal's Ctrl-C. On the first one the worker tells the supervisor
    /// (`Stopping`, so it routes nothing more here and reports the exit as
    /// the signal's doing, not a crash, and replaces the worker if the pool
    /// runs on), then drains exactly as for a soft kill: it finishes what
    /// it holds, runs the [`on_soft_kill`](Worker::on_soft_kill) hook, and
    /// `serve` returns `Ok(())` once the supervisor has acknowledged the
    /// `Stopping` (its `SoftKill` follows every request it routed here
    /// before it knew, so none is lost). A second signal while draining changes
    /// nothing; `SIGKILL` is the way to force an end. The signals are
    /// listened to from [`connect`](Worker::connect) on, so one that comes
    /// before `serve` (during a long setup) is held, and acted on when
    /// `serve` starts.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when the supervisor goes away (the worker
    /// must then exit), [`Error::Protocol`] when it breaks the protocol,
    /// [`Error::AlreadyServing`] on a second call.
    pub async fn serve<H: Handler>(self, handler: H) -> Result<(), Error> {
        crate::serve_loop::serve(&self.inner, self.inline_first_poll, handler).await
    }
}
