//! The worker's connection to its supervisor and its primitives.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use drover_proto::codec::max_payload;
use drover_proto::{
    decode_value, encode_value, new_credit, outbox, pump, timestamp_from_micros, write_loop, Chunk,
    FdReader, FrameReader, Hello, IncomingStream, Message, MessageCodec, Outbox, Outgoing,
    ProtocolError, RemoteError, RemoteErrorKind, RequestId, Streams, Welcome,
};
use futures::{FutureExt, SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use std::os::fd::OwnedFd;
use tokio::io::AsyncRead;
use tokio::net::UnixStream;
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::{broadcast, oneshot, Notify, Semaphore};
use tokio_util::codec::FramedWrite;

use crate::error::Error;
use crate::handler::Handler;
use crate::request::{response, Request, RequestInfo, Tracked};
use crate::socket::PassedFd;

type Reader = FrameReader;
type SoftKillHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;
type HardKillHook = Box<dyn FnOnce() + Send>;

/// How many supervisor events a slow subscriber may fall behind before it
/// loses the oldest.
const EVENT_BACKLOG: usize = 1024;

/// How long `serve` waits for its last answers to be written before it
/// returns.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by the [`Worker`] handles, the requests and the writer.
pub(crate) struct Inner {
    welcome: Welcome,
    max_frame_length: usize,
    out: Outbox,
    in_flight: Mutex<HashMap<RequestId, Arc<Tracked>, drover_proto::IdHasher>>,
    /// Woken when a request finishes or a stream ends during a soft kill,
    /// or `ready()` is called, so the serve loop can re-check whether the
    /// soft kill may complete.
    changed: Notify,
    /// A soft kill is waiting: only then do finishing requests wake the
    /// serve loop (otherwise each answer would cost it a spurious turn).
    stopping: AtomicBool,
    busy: AtomicBool,
    events: broadcast::Sender<Event>,
    reader: Mutex<Option<Reader>>,
    /// SIGTERM and SIGINT, listened to from `connect` on; `serve` takes them.
    signals: Mutex<Option<StopSignals>>,
    soft_kill_hook: Mutex<Option<SoftKillHook>>,
    hard_kill_hook: Mutex<Option<HardKillHook>>,
    /// Streams coming in (a request's) and going out (an answer's).
    streams: Streams,
    /// Answer streams still being sent: a soft kill waits for them.
    pumps: AtomicUsize,
    /// Questions asked of the supervisor, waiting for its answer.
    queries: Mutex<HashMap<u64, oneshot::Sender<Result<Bytes, RemoteError>>>>,
    next_query: AtomicU64,
}

impl Inner {
    fn wake_if_stopping(&self) {
        if self.stopping.load(Ordering::SeqCst) {
            self.changed.notify_one();
        }
    }

    /// Registers the incoming stream of request `id`.
    fn incoming_stream(&self, id: RequestId) -> IncomingStream {
        let (stream, chunks) =
            IncomingStream::new(id, self.out.clone(), "the supervisor".to_owned());
        self.streams.receive(id, chunks);
        stream
    }

    /// Sends `source` as the answer stream of request `id`, in a task; the
    /// answer itself must already be queued.
    pub(crate) fn start_pump<R>(self: &Arc<Self>, id: RequestId, source: R, credit: Arc<Semaphore>)
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.pumps.fetch_add(1, Ordering::SeqCst);
        let inner = self.clone();
        tokio::spawn(async move {
            if let Err(e) = pump(source, id, inner.out.clone(), credit).await {
                tracing::debug!(%id, "answer stream ended early: {e}");
            }
            inner.streams.stop(id);
            inner.pumps.fetch_sub(1, Ordering::SeqCst);
            inner.wake_if_stopping();
        });
    }

    /// Registers the credit of an answer stream about to start.
    pub(crate) fn outgoing_stream(&self, id: RequestId) -> Arc<Semaphore> {
        let credit = new_credit();
        self.streams.send(id, credit.clone());
        credit
    }

    pub(crate) fn send_message(&self, message: Message) -> Result<(), Error> {
        self.send(message)
    }

    fn send(&self, message: Message) -> Result<(), Error> {
        self.out
            .send(Outgoing::Frame(message))
            .map_err(|_| Error::Disconnected)
    }

    /// The largest payload that fits a frame with its message around it.
    pub(crate) fn max_payload(&self) -> usize {
        max_payload(self.max_frame_length)
    }

    /// Sends the answer of a tracked request, announcing a stream after
    /// it, and forgets the request.
    pub(crate) fn finish_streaming(&self, tracked: &Tracked, payload: Bytes) -> Result<(), Error> {
        self.answer(
            tracked,
            Message::Response {
                id: tracked.id,
                stream: true,
                result: Ok(payload),
            },
        )
    }

    /// Sends the answer of a tracked request and forgets the request.
    pub(crate) fn finish(
        &self,
        tracked: &Tracked,
        result: Result<Bytes, RemoteError>,
    ) -> Result<(), Error> {
        self.answer(tracked, response(tracked.id, result))
    }

    fn answer(&self, tracked: &Tracked, message: Message) -> Result<(), Error> {
        // Queue the answer before the request leaves the registry: a soft
        // kill waiting for the registry to empty then flushes after it.
        let sent = self.send(message);
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tracked.id);
        self.wake_if_stopping();
        sent
    }
}

/// The signals that tell a worker to stop from outside the pool: SIGTERM
/// (a service manager stopping the unit) and SIGINT (a terminal's Ctrl-C).
///
/// Listening replaces their default action (ending the process at once)
/// for the rest of the process's life; `serve` turns the first one into a
/// drain, later ones are absorbed.
struct StopSignals {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl StopSignals {
    /// Starts listening. A signal that cannot be listened to keeps its
    /// default action (with a warning).
    fn listen() -> StopSignals {
        let listen = |kind: SignalKind, name: &str| match tokio::signal::unix::signal(kind) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("cannot listen for {name} ({e}); it will end this worker at once");
                None
            }
        };
        StopSignals {
            term: listen(SignalKind::terminate(), "SIGTERM"),
            int: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The number of the next signal to arrive (one that arrived since
    /// `listen` counts).
    ///
    /// Cancel safe: a signal is never lost by dropping this future.
    async fn next(&mut self) -> i32 {
        async fn on(signal: &mut Option<Signal>) -> Option<()> {
            match signal {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            Some(()) = on(&mut self.term) => SignalKind::terminate().as_raw_value(),
            Some(()) = on(&mut self.int) => SignalKind::interrupt().as_raw_value(),
            // The runtime is shutting down: no signal will come.
            else => std::future::pending().await,
        }
    }
}

/// Where the serve loop stands on stopping.
struct Drain {
    /// A soft kill or a stop signal came: the loop returns once the hook
    /// has run, nothing is in flight and the worker is not busy.
    started: bool,
    /// A stop signal came (and `Stopping` was sent).
    signalled: bool,
    /// The supervisor's `SoftKill` came. After a signal the loop waits for
    /// it: it answers `Stopping`, and follows every request the supervisor
    /// routed here before it knew, so none is left unread.
    confirmed: bool,
    hook_done: bool,
    hook_done_tx: Option<oneshot::Sender<()>>,
}

impl Drain {
    /// Starts draining, once: takes the soft-kill hook and runs it in a
    /// task of its own. A second call changes nothing.
    fn start(&mut self, inner: &Inner) {
        if self.started {
            return;
        }
        self.started = true;
        inner.stopping.store(true, Ordering::SeqCst);
        let hook = inner
            .soft_kill_hook
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let done = self.hook_done_tx.take();
        match hook {
            Some(hook) => {
                tokio::spawn(async move {
                    hook().await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                });
            }
            None => self.hook_done = true,
        }
    }
}

/// An event sent by the supervisor, to one worker or to all of them
/// (`broadcast`).
#[derive(Debug, Clone)]
pub struct Event {
    name: String,
    payload: Bytes,
}

impl Event {
    /// The event's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decodes the event's payload as a `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] naming `T` when the payload is not a `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(decode_value(&self.payload)?)
    }
}

/// A subscription to the supervisor's events, from [`Worker::events`].
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the connection is closed.
    ///
    /// A subscriber that falls more than 1024 events behind loses the
    /// oldest ones; a warning says how many.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<Event> {
        drover_proto::recv_lossy(&mut self.rx).await
    }
}

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
    inner: Arc<Inner>,
    /// Whether handlers are first polled in the serve loop (current-thread
    /// runtimes); see `start_request`.
    inline_first_poll: bool,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.inner.welcome.worker_id)
            .field("index", &self.inner.welcome.index)
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
    /// drains on the first one (see [Signals](Worker::serve#signals)). A
    /// program that connects and does not serve handles them itself.
    ///
    /// # Errors
    ///
    /// [`Error::NotUnderSupervisor`] when the process was not started by a
    /// drover supervisor, [`Error::Orphaned`] when that supervisor is
    /// already gone, [`Error::Handshake`] when the handshake fails.
    pub async fn connect() -> Result<Worker, Error> {
        let std_stream = crate::fd::inherited_socket()?;
        std_stream
            .set_nonblocking(true)
            .map_err(|e| Error::Handshake(e.into()))?;
        let stream = UnixStream::from_std(std_stream).map_err(|e| Error::Handshake(e.into()))?;
        // As early as possible: a signal that comes during the handshake
        // or the program's setup is held for `serve`, not fatal.
        let signals = StopSignals::listen();
        let (read, write) = stream.into_split();
        let mut reader = FrameReader::new(FdReader::new(read), MessageCodec::default());
        let mut writer = FramedWrite::new(write, MessageCodec::default());
        writer
            .send(Message::Hello(Hello::new()))
            .await
            .map_err(Error::Handshake)?;
        let welcome = match reader.next().await {
            Some(Ok(Message::Welcome(welcome))) => welcome,
            Some(Ok(other)) => {
                return Err(Error::Handshake(ProtocolError::UnexpectedMessage {
                    expected: "Welcome",
                    got: other.kind(),
                }))
            }
            Some(Err(e)) => return Err(Error::Handshake(e)),
            None => return Err(Error::Disconnected),
        };
        let max_frame_length = welcome.max_frame_length as usize;
        reader.decoder_mut().set_max_frame_length(max_frame_length);
        writer.encoder_mut().set_max_frame_length(max_frame_length);

        let parts = writer.into_parts();
        // The supervisor is trusted to read: no bound on what waits for it.
        let (out, out_rx) = outbox(parts.codec, usize::MAX);
        tokio::spawn(async move {
            if let Err(e) = write_loop(parts.io, out_rx).await {
                tracing::error!(error = %e, "cannot write to the supervisor");
            }
        });
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let flavor = tokio::runtime::Handle::current().runtime_flavor();
        Ok(Worker {
            inline_first_poll: flavor == tokio::runtime::RuntimeFlavor::CurrentThread,
            inner: Arc::new(Inner {
                welcome,
                max_frame_length,
                out,
                in_flight: Mutex::new(HashMap::default()),
                streams: Streams::default(),
                pumps: AtomicUsize::new(0),
                stopping: AtomicBool::new(false),
                queries: Mutex::new(HashMap::new()),
                next_query: AtomicU64::new(1),
                changed: Notify::new(),
                busy: AtomicBool::new(false),
                events,
                reader: Mutex::new(Some(reader)),
                signals: Mutex::new(Some(signals)),
                soft_kill_hook: Mutex::new(None),
                hard_kill_hook: Mutex::new(None),
            }),
        })
    }

    /// This worker's id in the pool (unique for the pool's life).
    pub fn id(&self) -> u64 {
        self.inner.welcome.worker_id
    }

    /// The slot this worker fills, `0..workers`; a replacement inherits the
    /// slot of the worker it replaces.
    pub fn index(&self) -> u32 {
        self.inner.welcome.index
    }

    /// Decodes the pool's configuration payload, sent with the handshake.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] naming `T` when the configuration is not a `T` (or
    /// the pool has none).
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(decode_value(&self.inner.welcome.config)?)
    }

    /// The frame limit agreed with the supervisor, in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.inner.max_frame_length
    }

    /// Tells the supervisor this worker takes requests (again). `serve`
    /// calls it when it starts; call it after [`busy`](Worker::busy).
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the supervisor is gone.
    pub fn ready(&self) -> Result<(), Error> {
        self.inner.busy.store(false, Ordering::SeqCst);
        let sent = self.inner.send(Message::Ready);
        self.inner.changed.notify_one();
        sent
    }

    /// Tells the supervisor to route no new request here until
    /// [`ready`](Worker::ready). Requests in flight carry on. A soft kill
    /// waits for a busy worker to be ready again.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the supervisor is gone.
    pub fn busy(&self) -> Result<(), Error> {
        self.inner.busy.store(true, Ordering::SeqCst);
        self.inner.send(Message::Busy)
    }

    /// Whether [`busy`](Worker::busy) is in force.
    pub fn is_busy(&self) -> bool {
        self.inner.busy.load(Ordering::SeqCst)
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
        self.inner.send(Message::Event {
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
        let id = self.inner.next_query.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner
            .queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        // Forget the question if this future is dropped.
        struct Forget<'a>(&'a Inner, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0
                    .queries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&self.1);
            }
        }
        let _forget = Forget(&self.inner, id);
        self.inner.send(Message::Query {
            id,
            name: name.to_owned(),
            payload,
        })?;
        match rx.await {
            Ok(Ok(answer)) => Ok(decode_value(&answer)?),
            Ok(Err(error)) => Err(Error::Query {
                name: name.to_owned(),
                message: error.message,
            }),
            Err(_) => Err(Error::Disconnected),
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
        self.inner.send(Message::Status {
            message: message.into(),
        })
    }

    /// Subscribes to the events the supervisor sends to this worker
    /// (`broadcast` and targeted events). Only events that arrive after the
    /// call are seen: subscribe before [`serve`](Worker::serve) to see
    /// every event sent once the worker is ready.
    pub fn events(&self) -> Events {
        Events {
            rx: self.inner.events.subscribe(),
        }
    }

    /// The requests in flight on this worker: received, not yet answered.
    pub fn requests(&self) -> Vec<RequestInfo> {
        let in_flight = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<RequestInfo> = in_flight
            .values()
            .map(|t| RequestInfo {
                id: t.id,
                created_at: t.created_at,
                cancelled: t.is_cancelled(),
            })
            .collect();
        list.sort_by_key(|r| r.created_at);
        list
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
        *self
            .inner
            .soft_kill_hook
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Box::new(move || Box::pin(hook())));
    }

    /// Runs `hook` when the supervisor asks for a hard kill, just before
    /// [`serve`](Worker::serve) returns. Keep it short: the supervisor
    /// kills the process after a brief grace.
    pub fn on_hard_kill<F>(&self, hook: F)
    where
        F: FnOnce() + Send + 'static,
    {
        *self
            .inner
            .hard_kill_hook
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Box::new(hook));
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
        let mut reader = self
            .inner
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(Error::AlreadyServing)?;
        let mut signals = self
            .inner
            .signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let handler = Arc::new(handler);
        self.ready()?;
        let result = self
            .serve_loop(&mut reader, signals.as_mut(), handler)
            .await;
        // Streams still being read end now, with an error: nothing more
        // will arrive for them.
        self.inner.streams.cut("connection gone");
        // Questions still waiting get `Disconnected`.
        self.inner
            .queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.flush().await;
        result
    }

    async fn serve_loop<H: Handler>(
        &self,
        reader: &mut Reader,
        mut signals: Option<&mut StopSignals>,
        handler: Arc<H>,
    ) -> Result<(), Error> {
        let (hook_done_tx, mut hook_done_rx) = oneshot::channel::<()>();
        let mut drain = Drain {
            started: false,
            signalled: false,
            confirmed: false,
            hook_done: false,
            hook_done_tx: Some(hook_done_tx),
        };
        loop {
            if drain.started
                && drain.confirmed
                && drain.hook_done
                && !self.is_busy()
                && self.in_flight_count() == 0
                && self.inner.pumps.load(Ordering::SeqCst) == 0
            {
                return Ok(());
            }
            tokio::select! {
                frame = reader.next() => {
                    let mut frame = frame;
                    // Frames already read are handled in this turn, without
                    // another round of the select.
                    loop {
                        let message = match frame {
                            None => return Err(Error::Disconnected),
                            Some(Err(e)) => return Err(Error::Protocol(e)),
                            Some(Ok(message)) => message,
                        };
                        match message {
                            Message::Request { id, created_at, fds, stream, payload } => {
                                let fds = match reader.get_mut().take_fds(usize::from(fds)) {
                                    Some(fds) => fds,
                                    None => {
                                        return Err(Error::Protocol(ProtocolError::MissingDescriptors {
                                            id,
                                            declared: usize::from(fds),
                                            arrived: reader.get_ref().pending_fds(),
                                        }))
                                    }
                                };
                                let stream = stream.then(|| self.inner.incoming_stream(id));
                                self.start_request(id, created_at, payload, fds, stream, &handler).await;
                            }
                            Message::StreamData { id, bytes } => self.inner.streams.deliver(id, Chunk::Data(bytes)).map_err(Error::Protocol)?,
                            Message::StreamEnd { id } => self.inner.streams.deliver(id, Chunk::End).map_err(Error::Protocol)?,
                            Message::StreamAbort { id, reason } => self.inner.streams.deliver(id, Chunk::Abort(reason)).map_err(Error::Protocol)?,
                            Message::StreamCredit { id, bytes } => self.inner.streams.credit(id, bytes).map_err(Error::Protocol)?,
                            Message::StreamStop { id } => self.inner.streams.stop(id),
                            Message::QueryReply { id, result } => {
                                let waiting = self.inner.queries.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                                if let Some(waiting) = waiting {
                                    // The asker may have given up; then nobody wants it.
                                    let _ = waiting.send(result);
                                }
                            }
                            Message::Cancel { id } => {
                                let in_flight = self.inner.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                                if let Some(tracked) = in_flight.get(&id) {
                                    tracked.cancel();
                                }
                            }
                            Message::Event { name, payload } => {
                                // No subscriber is fine: the event is simply not wanted.
                                let _ = self.inner.events.send(Event { name, payload });
                            }
                            Message::Ping { seq } => self.inner.send(Message::Pong { seq })?,
                            Message::SoftKill => {
                                drain.confirmed = true;
                                drain.start(&self.inner);
                            }
                            Message::HardKill => {
                                let hook = self.inner.hard_kill_hook.lock().unwrap_or_else(|e| e.into_inner()).take();
                                if let Some(hook) = hook {
                                    hook();
                                }
                                return Ok(());
                            }
                            other => {
                                return Err(Error::Protocol(ProtocolError::UnexpectedMessage {
                                    expected: "a supervisor message",
                                    got: other.kind(),
                                }))
                            }
                        }
                        match reader.next_buffered() {
                            Some(next) => frame = Some(next),
                            None => break,
                        }
                    }
                }
                signal = next_signal(&mut signals), if !drain.signalled => {
                    // The first stop signal: tell the supervisor (even if a
                    // soft kill already runs; it keeps its own reason),
                    // then drain. Later ones are absorbed.
                    drain.signalled = true;
                    tracing::info!(signal, "told to stop by a signal; draining");
                    self.inner.send(Message::Stopping { signal })?;
                    drain.start(&self.inner);
                }
                _ = self.inner.changed.notified(), if drain.started => {}
                done = &mut hook_done_rx, if drain.started && !drain.hook_done => {
                    // A hook that panicked drops its sender: count it as done.
                    let _ = done;
                    drain.hook_done = true;
                }
            }
        }
    }

    fn in_flight_count(&self) -> usize {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Runs one request's handler in a task of its own.
    ///
    /// On a current-thread runtime the handler is first polled right here,
    /// and only becomes a task if it does not finish at once: a handler
    /// that answers without waiting (an echo, a lookup) then costs no task
    /// at all. On such a runtime a task would share this thread anyway, so
    /// nothing is lost; on a multi-thread runtime every handler gets a task,
    /// so a handler that hogs its thread never holds up this loop (and its
    /// answers to pings).
    async fn start_request<H: Handler>(
        &self,
        id: RequestId,
        created_at: u64,
        payload: Bytes,
        fds: Vec<OwnedFd>,
        stream: Option<IncomingStream>,
        handler: &Arc<H>,
    ) {
        let tracked = Arc::new(Tracked::new(id, timestamp_from_micros(created_at)));
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tracked.clone());
        let fds = fds
            .into_iter()
            .map(|fd| PassedFd::new(fd, id, self.inner.clone()))
            .collect();
        let request = Request::new(tracked.clone(), payload, fds, stream, self.inner.clone());
        let handler = handler.clone();
        let inner = self.inner.clone();
        let task = async move {
            let outcome = AssertUnwindSafe(handler.call(request)).catch_unwind().await;
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(RemoteError {
                    kind: RemoteErrorKind::Failed,
                    message: format!("handler failed on request {id}: {e}"),
                }),
                Err(panic) => Some(RemoteError {
                    kind: RemoteErrorKind::Panicked,
                    message: format!(
                        "handler panicked on request {id}: {}",
                        panic_message(&*panic)
                    ),
                }),
            };
            let failed = failure.is_some();
            if tracked.handler_finished(failed) {
                let error = failure.unwrap_or_else(|| RemoteError {
                    kind: RemoteErrorKind::Dropped,
                    message: format!("request {id} was dropped without an answer"),
                });
                let _ = inner.finish(&tracked, Err(error));
            }
        };
        if self.inline_first_poll {
            let mut task = Box::pin(task);
            let done =
                std::future::poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx).is_ready())).await;
            if !done {
                tokio::spawn(task);
            }
        } else {
            tokio::spawn(task);
        }
    }

    /// Waits until every frame queued so far has been written.
    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.out.send(Outgoing::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, rx).await;
        }
    }
}

/// The next stop signal, or never when the worker does not listen to any.
async fn next_signal(signals: &mut Option<&mut StopSignals>) -> i32 {
    match signals {
        Some(signals) => signals.next().await,
        None => std::future::pending().await,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
