//! Configuring a pool.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use drover_proto::{encode_value, DEFAULT_MAX_FRAME_LENGTH};
use serde::Serialize;

use crate::account::{resolve, Account, Kind, Unresolved};
use crate::error::{BinaryProblem, Error};
use crate::routing::Routing;

/// Everything a pool is configured with; see [`Builder`] for each setting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub(crate) name: Option<String>,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    /// The worker count the pool starts with. A running pool keeps the
    /// count of its last resize: read it with `Shared::workers` (and the
    /// settings as they run with `Shared::settings`), never here.
    pub(crate) workers: usize,
    pub(crate) start_timeout: Duration,
    pub(crate) max_frame_length: usize,
    pub(crate) max_queued_bytes: usize,
    pub(crate) max_concurrency: usize,
    pub(crate) max_queue: usize,
    pub(crate) routing: Routing,
    pub(crate) health_interval: Duration,
    pub(crate) max_restarts: usize,
    pub(crate) restart_window: Duration,
    pub(crate) soft_kill_grace: Duration,
    pub(crate) hard_kill_grace: Duration,
    pub(crate) config: Bytes,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) kill_after: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) capture_output: bool,
    pub(crate) max_requests: Option<(u64, u64)>,
    pub(crate) max_rss: Option<u64>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_recycling: usize,
    pub(crate) drain_timeout: Duration,
    pub(crate) hold_when_drained: bool,
    pub(crate) limits: Limits,
    pub(crate) on_query: Option<crate::query::QueryHandler>,
    /// Workers are threads of this process running this, not processes
    /// (`drover::testing`).
    pub(crate) in_process: Option<crate::process::InProcess>,
    pub(crate) slow_request_log: Option<Duration>,
    /// Sockets every worker process inherits (`Builder::share_socket`).
    pub(crate) shared_sockets: SharedSockets,
    /// Bytes of each of a worker process's two shared-memory arenas, 0
    /// for none (`Builder::shared_memory`); `None` for the default (see
    /// [`Config::arena_size`]).
    pub(crate) shared_memory: Option<usize>,
}

/// The size of each of a worker's two shared-memory arenas unless
/// configured (`Builder::shared_memory`): room for one payload at the
/// default frame limit, or many smaller ones.
pub const DEFAULT_SHARED_MEMORY: usize = 64 * 1024 * 1024;

/// The sockets a pool shares with every worker; equal when they are the
/// same descriptors.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedSockets(pub(crate) Vec<std::sync::Arc<std::os::fd::OwnedFd>>);

impl PartialEq for SharedSockets {
    fn eq(&self, other: &SharedSockets) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| std::sync::Arc::ptr_eq(a, b))
    }
}

/// Default bound on the bytes waiting to be written to one worker.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 128 * 1024 * 1024;

impl Config {
    /// Bytes of each of a worker's two shared-memory arenas: as set, or
    /// [`DEFAULT_SHARED_MEMORY`], but at most an eighth of an address-space
    /// limit (both arenas are mapped in the worker: a quarter of it).
    pub(crate) fn arena_size(&self) -> usize {
        match (self.shared_memory, self.limits.address_space) {
            (Some(bytes), _) => bytes,
            (None, Some(limit)) => {
                DEFAULT_SHARED_MEMORY.min(usize::try_from(limit / 8).unwrap_or(usize::MAX))
            }
            (None, None) => DEFAULT_SHARED_MEMORY,
        }
    }

    /// Bytes of both of a worker's arenas together: what its memory
    /// reading leaves out at most.
    pub(crate) fn arenas_bytes(&self) -> u64 {
        2 * self.arena_size() as u64
    }

    /// The bound on bytes queued to one worker: the setting, but never
    /// less than one whole frame.
    pub(crate) fn outbox_limit(&self) -> usize {
        self.max_queued_bytes
            .max(self.max_frame_length + drover_proto::FRAME_HEADER_LEN)
    }

    /// These settings with what a reload replaces taken from `new`: the
    /// program, its arguments and environment, the `config` value, the
    /// isolation limits and output capture (see `Supervisor::reload_with`).
    /// The rest belongs to the pool and stays as it is.
    pub(crate) fn reloaded_with(&self, new: Config) -> Config {
        Config {
            program: new.program,
            args: new.args,
            env: new.env,
            config: new.config,
            limits: new.limits,
            capture_output: new.capture_output,
            in_process: new.in_process,
            ..self.clone()
        }
    }

    /// The largest payload a frame can carry with its message around it.
    pub(crate) fn max_payload(&self) -> usize {
        drover_proto::codec::max_payload(self.max_frame_length)
    }
}

/// Isolation settings applied in the child before `exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) address_space: Option<u64>,
    pub(crate) cpu_seconds: Option<u64>,
    pub(crate) open_files: Option<u64>,
    pub(crate) processes: Option<u64>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) current_dir: Option<PathBuf>,
    pub(crate) env_clear: bool,
    pub(crate) no_new_privs: bool,
    /// The sandbox, if any (checked against the kernel in `into_config`).
    pub(crate) sandbox: Option<crate::sandbox::Sandbox>,
}

/// Builds a [`Supervisor`](crate::Supervisor): which binary, how many workers, and the pool's
/// limits. Every setting has a default; only the binary is required.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use drover_supervisor::Supervisor;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Supervisor::builder(std::env::current_exe()?.with_file_name("my-worker"))
///     .workers(4)
///     .max_concurrency(8)
///     .start_timeout(Duration::from_secs(5))
///     .spawn()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
    config_error: Option<drover_proto::ValueError>,
    /// A user or group name that did not resolve: `spawn` fails with it.
    account_error: Option<Unresolved>,
}

impl Builder {
    pub(crate) fn new(program: impl AsRef<Path>) -> Builder {
        Builder {
            config: Config {
                name: None,
                program: program.as_ref().to_path_buf(),
                args: Vec::new(),
                env: Vec::new(),
                workers: 1,
                start_timeout: Duration::from_secs(10),
                max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
                max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
                max_concurrency: 1,
                max_queue: 10_000,
                routing: Routing::default(),
                health_interval: Duration::from_millis(500),
                max_restarts: 5,
                restart_window: Duration::from_secs(120),
                soft_kill_grace: Duration::from_secs(30),
                hard_kill_grace: Duration::from_millis(500),
                config: Bytes::new(),
                timeout: None,
                retries: 0,
                kill_after: Duration::from_secs(2),
                ping_interval: Duration::from_secs(5),
                ping_timeout: Duration::from_secs(30),
                capture_output: false,
                max_requests: None,
                max_rss: None,
                max_age: None,
                max_recycling: 1,
                drain_timeout: Duration::from_secs(30),
                hold_when_drained: true,
                limits: Limits::default(),
                on_query: None,
                in_process: None,
                slow_request_log: None,
                shared_sockets: SharedSockets::default(),
                shared_memory: None,
            },
            config_error: None,
            account_error: None,
        }
    }

    /// Logs a request still running `threshold` after it was sent to its
    /// worker, once, at warn, with its id, the worker's pid, how long it
    /// has run and the worker's last status line; and counts it
    /// (`PoolStatus::slow`, `drover_slow_requests_total`). PHP-FPM's
    /// `request_slowlog_timeout`. Checked at each `health_interval`, so a
    /// request is logged up to one interval past the threshold. Off by
    /// default.
    pub fn slow_request_log(mut self, threshold: Duration) -> Builder {
        self.config.slow_request_log = Some(threshold);
        self
    }

    /// The pool's name, in its metrics' `pool` label and its log lines
    /// (default: the binary's file name; a group's name in [`Groups`]).
    ///
    /// [`Groups`]: crate::Groups
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.config.name = Some(name.into());
        self
    }

    pub(crate) fn has_name(&self) -> bool {
        self.config.name.is_some()
    }

    /// Number of worker processes (default 1; at least 1).
    pub fn workers(mut self, n: usize) -> Builder {
        self.config.workers = n.max(1);
        self
    }

    /// Adds a command-line argument for every worker.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Builder {
        self.config.args.push(arg.into());
        self
    }

    /// Adds command-line arguments for every worker.
    pub fn args<I, S>(mut self, args: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.config.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for every worker (they inherit the
    /// supervisor's environment besides).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Builder {
        self.config.env.push((key.into(), value.into()));
        self
    }

    /// How long a worker may take from its start to `Ready` (default 10 s).
    /// A binary that is not a drover worker fails within this time.
    pub fn start_timeout(mut self, timeout: Duration) -> Builder {
        self.config.start_timeout = timeout;
        self
    }

    /// The largest frame either side may send, in bytes (default 64 MiB;
    /// at least 1024). A payload over the payload limit, this less 64
    /// bytes of message ([`Supervisor::max_payload`](crate::Supervisor::max_payload)), is refused before
    /// it is sent, by either side, with an error naming both; a worker that
    /// sends a larger frame is killed and replaced.
    pub fn max_frame_length(mut self, bytes: usize) -> Builder {
        self.config.max_frame_length = bytes.clamp(1024, u32::MAX as usize);
        self
    }

    /// The most bytes that may wait to be written to one worker (default
    /// 128 MiB; never less than one frame of [`max_frame_length`]): the
    /// requests, events, stream data and replies the supervisor queued
    /// for it and the worker has not read yet. A worker that stops
    /// reading its socket while more is sent to it (a broadcast, say) is
    /// killed once its queue passes this bound, with the exit reason
    /// [`ExitReason::Stalled`](crate::ExitReason::Stalled), and replaced;
    /// its requests are retried or fail saying so. So no worker can make
    /// the supervisor's memory grow without bound.
    ///
    /// Requests themselves never pass it: one goes to a worker only while
    /// the requests it has in flight (their payloads and frames) stay under
    /// this bound less a small reserve, so large payloads sent faster than
    /// a worker reads them wait in the pool's queue instead (a worker with
    /// nothing in flight takes any request).
    ///
    /// [`max_frame_length`]: Builder::max_frame_length
    pub fn max_queued_bytes(mut self, bytes: usize) -> Builder {
        self.config.max_queued_bytes = bytes;
        self
    }

    /// How many requests one worker holds at once (default 1, as a
    /// gunicorn sync worker or a PHP-FPM child). Raise it for workers that
    /// serve requests concurrently.
    pub fn max_concurrency(mut self, n: usize) -> Builder {
        self.config.max_concurrency = n.max(1);
        self
    }

    /// How many requests may wait for a worker (default 10,000). Past it,
    /// `enqueue` fails at once with [`Error::QueueFull`].
    pub fn max_queue(mut self, n: usize) -> Builder {
        self.config.max_queue = n;
        self
    }

    /// The routing policy (default [`Routing::LeastLoaded`]).
    pub fn routing(mut self, routing: Routing) -> Builder {
        self.config.routing = routing;
        self
    }

    /// How often each worker's resident memory is sampled (default 500 ms),
    /// besides once as it becomes ready, so `health()` shows it from then.
    pub fn health_interval(mut self, interval: Duration) -> Builder {
        self.config.health_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The restart budget: at most `max` replacements of crashed workers
    /// within `window` (default 5 in 120 s). Past it the pool fails.
    pub fn restarts(mut self, max: usize, window: Duration) -> Builder {
        self.config.max_restarts = max;
        self.config.restart_window = window;
        self
    }

    /// How long a soft kill waits for workers to finish before it kills
    /// them (default 30 s).
    pub fn soft_kill_grace(mut self, grace: Duration) -> Builder {
        self.config.soft_kill_grace = grace;
        self
    }

    /// How long a hard kill waits after asking before it sends `SIGKILL`
    /// (default 500 ms).
    pub fn hard_kill_grace(mut self, grace: Duration) -> Builder {
        self.config.hard_kill_grace = grace;
        self
    }

    /// The default timeout of every request (default: none). A request
    /// past it fails with [`Error::Timeout`] at once; its worker is sent
    /// `Cancel`, and is killed and replaced if it still holds the request
    /// after [`kill_after`](Builder::kill_after).
    pub fn timeout(mut self, timeout: Duration) -> Builder {
        self.config.timeout = Some(timeout);
        self
    }

    /// The default number of retries of a request whose worker dies while
    /// holding it (default 0). A retried request keeps its id.
    pub fn retries(mut self, retries: u32) -> Builder {
        self.config.retries = retries;
        self
    }

    /// How long a worker may keep working on a timed-out request before it
    /// is killed and replaced (default 2 s).
    pub fn kill_after(mut self, grace: Duration) -> Builder {
        self.config.kill_after = grace;
        self
    }

    /// How often each worker is pinged (default 5 s), and how long a ping
    /// may go unanswered before the worker is killed and replaced (default
    /// 30 s). Workers answer pings from their connection task, never from
    /// behind a handler, so a long CPU-bound request does not fail them.
    pub fn health_check(mut self, interval: Duration, timeout: Duration) -> Builder {
        self.config.ping_interval = interval.max(Duration::from_millis(10));
        self.config.ping_timeout = timeout;
        self
    }

    /// Captures each worker's standard output and error line by line into
    /// `tracing` (target `drover::output`, with the worker's pid), instead
    /// of passing them through to the supervisor's own (default: pass
    /// through). Either way the pipes are always drained, so a chatty
    /// worker never blocks, and the last 20 lines of standard error are
    /// kept for [`WorkerExit::stderr_tail`](crate::WorkerExit::stderr_tail).
    pub fn capture_output(mut self, capture: bool) -> Builder {
        self.config.capture_output = capture;
        self
    }

    /// Recycles a worker after it has answered `n` requests, plus a random
    /// jitter in `0..=jitter` drawn per worker so they do not all recycle
    /// at once (gunicorn's `max_requests` and `max_requests_jitter`).
    pub fn max_requests(mut self, n: u64, jitter: u64) -> Builder {
        self.config.max_requests = Some((n.max(1), jitter));
        self
    }

    /// Recycles a worker whose resident memory passes `bytes` (checked at
    /// each memory sample).
    pub fn max_rss(mut self, bytes: u64) -> Builder {
        self.config.max_rss = Some(bytes);
        self
    }

    /// Recycles a worker once it has run this long.
    pub fn max_age(mut self, age: Duration) -> Builder {
        self.config.max_age = Some(age);
        self
    }

    /// How many workers may be recycling at once (default 1): recycling and
    /// rolling reloads never take more than this many workers out of
    /// service at a time, whatever the timing.
    pub fn max_recycling(mut self, n: usize) -> Builder {
        self.config.max_recycling = n.max(1);
        self
    }

    /// How long a retiring worker (recycled, reloaded, resized away,
    /// drained) may take to finish what it holds before it is killed
    /// (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Builder {
        self.config.drain_timeout = timeout;
        self
    }

    /// Whether requests made while the pool is drained wait in the queue
    /// for [`resume`](crate::Supervisor::resume) (the default) or fail at once with
    /// [`Error::Drained`].
    pub fn hold_when_drained(mut self, hold: bool) -> Builder {
        self.config.hold_when_drained = hold;
        self
    }

    /// Limits each worker's address space (`RLIMIT_AS`) to `bytes`: an
    /// allocation past it fails in the worker, which dies, and its exit
    /// names the limit. The worker's two shared-memory arenas are mapped
    /// in it and count: unless [`shared_memory`](Builder::shared_memory)
    /// sizes them, each is at most an eighth of this limit.
    pub fn limit_address_space(mut self, bytes: u64) -> Builder {
        self.config.limits.address_space = Some(bytes);
        self
    }

    /// Limits each worker's CPU time (`RLIMIT_CPU`) to `seconds`.
    pub fn limit_cpu_seconds(mut self, seconds: u64) -> Builder {
        self.config.limits.cpu_seconds = Some(seconds);
        self
    }

    /// Limits each worker's open descriptors (`RLIMIT_NOFILE`).
    pub fn limit_open_files(mut self, n: u64) -> Builder {
        self.config.limits.open_files = Some(n);
        self
    }

    /// Limits the processes each worker's user may run (`RLIMIT_NPROC`).
    pub fn limit_processes(mut self, n: u64) -> Builder {
        self.config.limits.processes = Some(n);
        self
    }

    /// Runs the workers as this user, by id (`user(33)`) or by name
    /// (`user("www-data")`, looked up now, in the supervisor); the
    /// supervisor must be allowed to switch to it.
    ///
    /// # Errors
    ///
    /// A name that no user has makes `spawn` (and `start`) fail with
    /// [`Error::UnknownAccount`] naming it.
    pub fn user(mut self, user: impl Into<Account>) -> Builder {
        match resolve(user.into(), Kind::User) {
            Ok(uid) => self.config.limits.uid = Some(uid),
            Err(e) => {
                self.account_error.get_or_insert(e);
            }
        }
        self
    }

    /// Runs the workers with this group, by id or by name, as
    /// [`user`](Builder::user); the supervisor must be allowed to.
    ///
    /// # Errors
    ///
    /// As [`user`](Builder::user), for a group.
    pub fn group(mut self, group: impl Into<Account>) -> Builder {
        match resolve(group.into(), Kind::Group) {
            Ok(gid) => self.config.limits.gid = Some(gid),
            Err(e) => {
                self.account_error.get_or_insert(e);
            }
        }
        self
    }

    /// The workers' working directory (default: the supervisor's).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Builder {
        self.config.limits.current_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Starts the workers with an empty environment, but for the variables
    /// set with [`env`](Builder::env) (and drover's own).
    pub fn env_clear(mut self) -> Builder {
        self.config.limits.env_clear = true;
        self
    }

    /// Sets `no_new_privs` on the workers: neither they nor their children
    /// can gain privileges through set-user-id binaries.
    pub fn no_new_privs(mut self, on: bool) -> Builder {
        self.config.limits.no_new_privs = on;
        self
    }

    /// Runs every worker in `sandbox`: filesystem rules (landlock),
    /// system-call filters (seccomp), namespaces, a cgroup; see
    /// [`Sandbox`](crate::Sandbox) for what each layer stops. A sandbox
    /// also sets `no_new_privs`, and needs the worker binary named by a
    /// path (with a `/`), not looked up in `PATH`.
    ///
    /// # Errors
    ///
    /// `spawn` (and `start`) fail with
    /// [`Error::SandboxUnsupported`] naming the feature when the kernel
    /// cannot enforce a rule (unless the sandbox is best effort), and with
    /// [`Error::SandboxSetup`] for a path that cannot be used.
    pub fn sandbox(mut self, sandbox: crate::sandbox::Sandbox) -> Builder {
        self.config.limits.sandbox = Some(sandbox);
        self
    }

    /// Answers the questions workers ask (`Worker::ask`): lookups the
    /// supervisor holds, shared by every worker. Each query runs `handler`
    /// in a task of its own. Without a handler, every query gets an error.
    ///
    /// ```no_run
    /// # use drover_supervisor::{Query, Supervisor};
    /// let builder = Supervisor::builder("bin/pricer").on_query(|query: Query| async move {
    ///     let name = query.name().to_owned();
    ///     match name.as_str() {
    ///         "rate" => { let _ = query.reply(&1.08_f64); }
    ///         other => query.fail(format!("no lookup named {other}")),
    ///     }
    /// });
    /// ```
    pub fn on_query<F, Fut>(mut self, handler: F) -> Builder
    where
        F: Fn(crate::query::Query) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.config.on_query = Some(crate::query::QueryHandler::new(handler));
        self
    }

    /// Runs each worker as a thread of this process instead of a process:
    /// `main` gets the worker's end of its connection (a connected
    /// `UnixStream`) and runs a worker on it (the worker SDK's
    /// `Worker::connect_over`), on a tokio runtime of the worker's own.
    ///
    /// This is the plumbing of `drover::testing`, whose pools are made for
    /// unit tests: use those. Settings that act on a process (limits, user
    /// and group, environment, arguments, output capture) do not apply;
    /// workers report pid 0 and no memory.
    #[doc(hidden)]
    pub fn in_process<F, Fut>(mut self, main: F) -> Builder
    where
        F: Fn(std::os::unix::net::UnixStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.config.in_process = Some(crate::process::InProcess::new(main));
        self
    }

    /// Shares `socket` with every worker process the pool starts,
    /// replacements included: each inherits a descriptor of its own of
    /// it, which it takes with `Worker::shared_socket` (the first socket
    /// shared is number 0, and so on). The pool keeps its own descriptor
    /// for its life.
    ///
    /// This is how workers accept on one listening socket themselves, as
    /// a prefork server's do: the kernel hands each connection to one
    /// worker that is waiting in `accept`, and the supervisor is not on
    /// the connection's path at all (passing each accepted connection
    /// with a request instead, `RequestBuilder::socket`, lets the pool
    /// route it by load, at the cost of a hand-over). Kept across a
    /// reload; at most 16 per pool. The worker's sandbox, if any, applies
    /// to what it does with the socket (a worker with no network
    /// namespace of its own still accepts on an inherited listener).
    /// In-process pools (`drover::testing`) share nothing: their workers
    /// are threads, and `Worker::shared_socket` finds no socket there.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), drover_supervisor::Error> {
    /// let listener = std::net::TcpListener::bind("127.0.0.1:8080").expect("bind");
    /// let pool = drover_supervisor::Supervisor::builder("./target/release/http-worker")
    ///     .workers(4)
    ///     .share_socket(listener)
    ///     .spawn()
    ///     .await?;
    /// # drop(pool); Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Starting the pool fails with [`Error::TooManySharedSockets`] when
    /// more than 16 are shared.
    pub fn share_socket(mut self, socket: impl Into<std::os::fd::OwnedFd>) -> Builder {
        self.config
            .shared_sockets
            .0
            .push(std::sync::Arc::new(socket.into()));
        self
    }

    /// Sizes the two shared-memory arenas each worker process gets, one
    /// for requests and one for answers: `bytes` each (default
    /// [`DEFAULT_SHARED_MEMORY`], 64 MiB), 0 for none.
    ///
    /// A payload of 20 KiB or more that fits in its arena crosses through
    /// it instead of the socket: the supervisor copies a request in and
    /// the worker reads it where it lies; the worker writes an answer in
    /// and the supervisor copies it out before anyone sees it, so a worker
    /// that scribbles on the memory can corrupt only its own answer. The
    /// worker can only map the requests arena read-only, and neither side
    /// can shrink or grow either one. A payload that does not fit (the
    /// arena is full of payloads still held, or it is larger) goes through
    /// the socket, as every payload does with `shared_memory(0)`.
    ///
    /// An answer that is the request's own bytes, or a slice of them (an
    /// echo, a filter that passes its input on: the worker answers with
    /// `Request::payload_bytes` or a slice of it), is not copied by the
    /// worker: it names where those bytes lie in the requests arena, and
    /// the supervisor copies them out of there, memory that only it writes.
    ///
    /// The memory is only what payloads have used: an arena's pages are
    /// allocated as payloads first touch them, lowest offsets first, and
    /// stay with the worker until it exits. They count toward the
    /// worker's address-space limit (twice `bytes`, both mappings; with
    /// [`limit_address_space`](Builder::limit_address_space) and no size
    /// given here, each arena is at most an eighth of that limit) and
    /// toward its memory cgroup, but not toward its
    /// [`rss`](crate::WorkerHealth::rss) reading. In-process workers
    /// (`drover::testing`) have no arenas.
    ///
    /// The supervisor's side of each connection keeps the buffers it
    /// copies large payloads into (answers out of the arena, and frames of
    /// 64 KiB or more through the socket) for reuse: up to 16 MiB of
    /// buffers of at most 4 MiB each, and larger buffers (up to 128 MiB in
    /// all) only while they are reused, each freed once it has lain
    /// unused for a second. A fresh buffer of tens of megabytes costs more
    /// in page faults than the copy into it.
    pub fn shared_memory(mut self, bytes: usize) -> Builder {
        self.config.shared_memory = Some(bytes);
        self
    }

    /// A configuration value every worker receives with its handshake
    /// (`Worker::config`).
    pub fn config<T: Serialize + ?Sized>(mut self, value: &T) -> Builder {
        match encode_value(value) {
            Ok(bytes) => self.config.config = Bytes::from(bytes),
            Err(e) => self.config_error = Some(e),
        }
        self
    }

    pub(crate) fn into_config(self) -> Result<Config, Error> {
        if let Some(e) = self.config_error {
            return Err(Error::Encode(e));
        }
        if let Some(e) = self.account_error {
            return Err(e.into());
        }
        check_program(&self.config.program)?;
        if self.config.shared_sockets.0.len() > drover_proto::MAX_SHARED_SOCKETS {
            return Err(Error::TooManySharedSockets {
                given: self.config.shared_sockets.0.len(),
                max: drover_proto::MAX_SHARED_SOCKETS,
            });
        }
        let mut config = self.config;
        if let Some(sandbox) = config.limits.sandbox.take() {
            let in_process = config.in_process.is_some();
            if !in_process && config.program.components().count() == 1 {
                return Err(Error::WorkerBinary {
                    path: config.program,
                    problem: BinaryProblem::NotAPath,
                });
            }
            config.limits.sandbox = Some(crate::sandbox::check(
                sandbox,
                config.limits.uid,
                in_process,
            )?);
        }
        Ok(config)
    }
}

/// Fails early, naming the path, when the binary cannot possibly start.
fn check_program(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |problem: BinaryProblem| Error::WorkerBinary {
        path: path.to_path_buf(),
        problem,
    };
    // A bare name is looked up in PATH by the operating system at spawn.
    if path.components().count() == 1 && !path.exists() {
        return Ok(());
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad(BinaryProblem::Missing),
        _ => bad(BinaryProblem::Unreadable(e)),
    })?;
    if !meta.is_file() {
        return Err(bad(BinaryProblem::NotAFile));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(bad(BinaryProblem::NotExecutable));
    }
    Ok(())
}
