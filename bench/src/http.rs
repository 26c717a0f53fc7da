//! The prefork HTTP workload: a server for `wrk` to load, drover's way
//! or the ceiling's way.
//!
//! - **drover**: a pool of `W` copies of this binary; the supervisor (this
//!   process) accepts each TCP connection and passes it with a request;
//!   the worker takes it, acknowledges the request and serves HTTP/1.1 on
//!   it with hyper until the client closes it.
//! - **hyper**: the ceiling. `W` copies of this binary that accept on one
//!   listener they share (inherited as their standard input) and serve
//!   each connection with hyper: no hand-over at all.
//! - **drover-listener**: a drover pool that shares the listening socket
//!   with every worker (`Builder::share_socket`; replacements inherit it
//!   too), each accepting on it itself: the ceiling's shape under drover's
//!   supervision.
//!
//! Both answer every request with the same 13 bytes, through the same
//! [`respond`], each process on a current-thread runtime. The server
//! prints one JSON line (`{"mode":"http","impl":...,"addr":"127.0.0.1:P"}`)
//! once it takes connections, and serves until its standard input reaches
//! end of file or it gets SIGTERM or SIGINT; then it stops every process it
//! started and reaps it. The load comes from outside (`bench/http_table.py`
//! runs `wrk`).

use std::convert::Infallible;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;

use drover_supervisor::Supervisor;
use drover_worker::{Request, Worker};
use futures::stream::{FuturesUnordered, StreamExt};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;

/// Set in a drover worker's environment to make it an HTTP worker.
pub const WORKER_ENV: &str = "DROVER_BENCH_HTTP";

/// Set in a ceiling child's environment (to the parent's pid): its
/// standard input is the shared listener.
pub const CHILD_ENV: &str = "DROVER_BENCH_HTTP_CHILD";

/// What every request is answered with.
pub const BODY: &[u8] = b"Hello, World!";

/// Which server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpImpl {
    /// The supervisor accepts and passes each connection to a worker.
    Drover,
    /// Processes that accept on one shared listener: the ceiling.
    Hyper,
    /// A drover pool whose workers each get the listening socket once,
    /// passed with a request, and accept on it themselves: the ceiling's
    /// shape under drover's supervision.
    DroverListener,
}

impl HttpImpl {
    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            HttpImpl::Drover => "drover",
            HttpImpl::Hyper => "hyper",
            HttpImpl::DroverListener => "drover-listener",
        }
    }
}

/// The HTTP server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Which server.
    pub implementation: HttpImpl,
    /// Worker processes (drover) or accepting processes (hyper).
    pub workers: usize,
    /// The port on 127.0.0.1; 0 for any free one.
    pub port: u16,
}

/// The line printed once the server takes connections.
#[derive(Debug, Serialize)]
struct Listening {
    mode: &'static str,
    #[serde(rename = "impl")]
    implementation: &'static str,
    workers: usize,
    addr: String,
    /// The processes that serve HTTP.
    pids: Vec<u32>,
}

/// The one HTTP handler both servers run: `13` bytes, whatever was asked.
async fn respond(
    _request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    Ok(hyper::Response::new(Full::new(Bytes::from_static(BODY))))
}

/// Serves HTTP/1.1 on one connection until the client closes it.
async fn serve_connection<S>(socket: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(socket), hyper::service::service_fn(respond));
    // A client that goes away mid-request is the benchmark's business,
    // not an error of the server.
    let _ = connection.await;
}

/// Runs the server `options` asks for until told to stop.
///
/// # Errors
///
/// The listener, the pool or a child could not be started.
pub async fn serve(options: &HttpOptions) -> Result<(), Error> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", options.port))
        .map_err(Error::http("bind 127.0.0.1"))?;
    // Accepted connections inherit it: no system call per connection.
    rustix::net::sockopt::set_tcp_nodelay(&listener, true)
        .map_err(|e| Error::http("set TCP_NODELAY on the listener")(e.into()))?;
    let addr = listener
        .local_addr()
        .map_err(Error::http("read the listener's address"))?;
    let announce = |pids: Vec<u32>| {
        crate::report::print(&Listening {
            mode: "http",
            implementation: options.implementation.name(),
            workers: options.workers,
            addr: addr.to_string(),
            pids,
        })
    };
    match options.implementation {
        HttpImpl::DroverListener => {
            let program = std::env::current_exe().map_err(Error::CurrentExe)?;
            // Every worker, a replacement too, inherits the listener and
            // accepts on it itself.
            let pool = Supervisor::builder(program)
                .workers(options.workers)
                .env(WORKER_ENV, "1")
                .share_socket(listener)
                .spawn()
                .await?;
            let pids = pool.health().iter().map(|w| w.pid).collect();
            let outcome = match announce(pids) {
                Ok(()) => stop_signal().await,
                Err(e) => Err(e),
            };
            pool.soft_kill().await;
            outcome
        }
        HttpImpl::Drover => {
            let program = std::env::current_exe().map_err(Error::CurrentExe)?;
            let pool = Supervisor::builder(program)
                .workers(options.workers)
                .env(WORKER_ENV, "1")
                // A request only hands a connection over, and is answered
                // as soon as the worker holds it.
                .max_concurrency(1024)
                .spawn()
                .await?;
            let pids = pool.health().iter().map(|w| w.pid).collect();
            let outcome = match Readiness::new(listener).and_then(|l| announce(pids).map(|()| l)) {
                Ok(listener) => tokio::select! {
                    outcome = accept_and_pass(&listener, &pool) => outcome,
                    outcome = stop_signal() => outcome,
                },
                Err(e) => Err(e),
            };
            pool.soft_kill().await;
            outcome
        }
        HttpImpl::Hyper => {
            let program = std::env::current_exe().map_err(Error::CurrentExe)?;
            let mut children = Vec::with_capacity(options.workers);
            let mut started = Ok(());
            for _ in 0..options.workers {
                let spawned = listener
                    .try_clone()
                    .map_err(Error::http("share the listener"))
                    .and_then(|copy| {
                        tokio::process::Command::new(&program)
                            .env(CHILD_ENV, std::process::id().to_string())
                            .stdin(Stdio::from(OwnedFd::from(copy)))
                            .kill_on_drop(true)
                            .spawn()
                            .map_err(Error::http("start a hyper child"))
                    });
                match spawned {
                    Ok(child) => children.push(child),
                    Err(e) => {
                        started = Err(e);
                        break;
                    }
                }
            }
            drop(listener);
            let pids = children.iter().filter_map(|c| c.id()).collect();
            let outcome = match started.and_then(|()| announce(pids)) {
                Ok(()) => stop_signal().await,
                Err(e) => Err(e),
            };
            for child in &mut children {
                let _ = child.start_kill();
            }
            for mut child in children {
                let _ = child.wait().await;
            }
            outcome
        }
    }
}

/// The listening socket, registered with tokio for its readiness alone.
///
/// tokio's `TcpListener::accept` registers every connection it accepts
/// with the runtime, and passing it on deregisters it again: two
/// `epoll_ctl` calls per connection for a socket this process never
/// reads. tokio offers no readiness of a listener without accepting, so the
/// listening descriptor is registered through the stream type (readiness
/// of a descriptor is all the registration knows of it) and connections
/// are accepted with a plain `accept4`.
struct Readiness(tokio::net::TcpStream);

impl Readiness {
    fn new(listener: std::net::TcpListener) -> Result<Readiness, Error> {
        listener
            .set_nonblocking(true)
            .map_err(Error::http("make the listener non-blocking"))?;
        let fd = OwnedFd::from(listener);
        tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd))
            .map(Readiness)
            .map_err(Error::http("register the listener"))
    }

    /// The next connection waiting, if any (`Ok(None)` once none is).
    fn try_accept(&self) -> std::io::Result<Option<std::net::TcpStream>> {
        use rustix::net::SocketFlags;
        let accepted = self.0.try_io(tokio::io::Interest::READABLE, || {
            rustix::net::accept_with(&self.0, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
                .map_err(std::io::Error::from)
        });
        match accepted {
            Ok(fd) => Ok(Some(std::net::TcpStream::from(fd))),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The supervisor's accept loop: every connection goes to a worker with a
/// request of its own, whose answer says the worker took it. Each time the
/// listener is readable it accepts every connection waiting, and the
/// hand-overs wait in this one task (no task per connection).
async fn accept_and_pass(listener: &Readiness, pool: &Supervisor) -> Result<(), Error> {
    let mut passing = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(passed) = passing.next(), if !passing.is_empty() => {
                if let Err(e) = passed {
                    eprintln!("drover-bench: could not hand a connection over: {e}");
                }
            }
            ready = listener.0.readable() => {
                ready.map_err(Error::http("wait for connections"))?;
                loop {
                    match listener.try_accept() {
                        Ok(Some(stream)) => {
                            passing.push(pool.request_bytes(Bytes::new()).socket(stream).send());
                        }
                        Ok(None) => break,
                        // Out of descriptors, or a connection reset before
                        // it was taken: wait a moment, the next may do.
                        Err(e) => {
                            eprintln!("drover-bench: accept: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Waits until standard input reaches end of file, or SIGTERM or SIGINT.
async fn stop_signal() -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::http("watch SIGTERM"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::http("watch SIGINT"))?;
    // A thread of its own reads standard input (it blocks; the process
    // exits without waiting for it).
    let (ended, eof) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            // Anything read is ignored; end of file (or an error) ends the run.
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = ended.send(());
        })
        .map_err(Error::http("start the thread reading stdin"))?;
    tokio::select! {
        _ = terminate.recv() => {},
        _ = interrupt.recv() => {},
        _ = eof => {},
    }
    Ok(())
}

/// The drover worker's side: each request brings a connection, served on
/// the request's own task once the request is acknowledged.
///
/// # Errors
///
/// [`Error::Worker`] if the connection to the supervisor fails.
pub async fn worker(worker: Worker) -> Result<(), Error> {
    // `drover-listener`: the pool shares its listener with every worker.
    if let Some(listener) = worker.shared_socket::<TcpListener>(0)? {
        tokio::spawn(accept_in_worker(listener));
    }
    worker
        .serve(|mut req: Request| async move {
            let Some(socket) = req.socket::<TcpStream>()? else {
                return req.fail("no connection came with the request");
            };
            req.ack()?;
            serve_connection(socket).await;
            Ok(())
        })
        .await?;
    Ok(())
}

/// `drover-listener`'s worker side: accept on the listener the pool
/// shares with every worker for the rest of the worker's life, serving each
/// connection on a task of its own.
async fn accept_in_worker(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream));
            }
            // Another process took it, or it was reset: go on.
            Err(_) => continue,
        }
    }
}

/// A ceiling child: accept on the shared listener (standard input) and
/// serve every connection, until the parent goes.
///
/// # Errors
///
/// The listener cannot be taken or the runtime cannot start.
pub fn child(parent: &str) -> Result<(), Error> {
    // Die with the parent, and check it did not go before this was set.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| Error::http("set the parent-death signal")(e.into()))?;
    let parent_now = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    if parent.parse::<u32>().ok() != Some(parent_now) {
        return Ok(());
    }
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(Error::http("take the shared listener"))?;
    let listener = std::net::TcpListener::from(fd);
    listener
        .set_nonblocking(true)
        .map_err(Error::http("make the shared listener non-blocking"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        let listener =
            TcpListener::from_std(listener).map_err(Error::http("register the shared listener"))?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream));
                }
                // Another process took it, or it was reset: go on.
                Err(_) => continue,
            }
        }
    })
}

/// The ceiling child's parent pid, if this process is one.
pub fn child_env() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}
