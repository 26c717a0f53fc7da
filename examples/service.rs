//! drover in production: a small HTTP service whose work runs in a pool,
//! with what an operator needs around it. This one binary is both sides.
//!
//! ```sh
//! cargo run --features admin --example service -- --port 8080 --workers 2 --max-workers 8
//! curl 'http://127.0.0.1:8080/upper?text=hello'     # HELLO, from a worker
//! cargo run -p drover-ctl -- status                  # the pool, like pm2 ls
//! cargo run -p drover-ctl -- resize 4
//! curl --unix-socket "${XDG_RUNTIME_DIR:-/tmp}/drover.sock" http://localhost/metrics
//! kill -HUP <pid>                                    # a rolling reload
//! ```
//!
//! - **Signals** (`Supervisor::handle_signals`): SIGTERM / Ctrl-C stop the
//!   pool gracefully (a second one kills it), SIGHUP reloads every worker,
//!   SIGTTIN / SIGTTOU add or remove one.
//! - **Admin endpoint** (`drover::admin`): on the Unix socket given with
//!   `--admin-socket` (default `drover_admin::default_socket()`: in
//!   `$RUNTIME_DIRECTORY` under systemd), mode 0600; or on TCP with
//!   `--admin-addr` (a token from `$DROVER_ADMIN_TOKEN` is then required
//!   off loopback). `/status`, `/` (HTML), `/metrics`, `/control/...`.
//! - **Metrics**: every drover series in the Prometheus format, on the
//!   admin endpoint's `/metrics`.
//! - **Dynamic sizing** between `--workers` and `--max-workers`; a
//!   request running over a second is logged at warn.
//!
//! The README's "Running in production" section has a systemd unit for it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use drover::admin::Admin;
use drover::worker::{Request, Worker};
use drover::{Autoscale, Supervisor};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if drover::worker::is_worker_process() {
        worker().await?;
        return Ok(());
    }
    service().await
}

/// The work: upper-case a text (standing in for rendering, parsing, ...),
/// saying what it does in its status line (the admin page shows it).
async fn worker() -> Result<(), drover::worker::Error> {
    let worker = Worker::connect().await?;
    let me = worker.clone();
    worker
        .serve(move |req: Request| {
            let me = me.clone();
            async move {
                let text: String = req.data()?;
                me.status(format!("upper-casing {} bytes", text.len()))?;
                req.respond(&text.to_uppercase())
            }
        })
        .await
}

/// The service's command line.
struct Options {
    port: u16,
    workers: usize,
    max_workers: usize,
    admin_socket: Option<PathBuf>,
    admin_addr: Option<SocketAddr>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        port: 8080,
        workers: 2,
        max_workers: 8,
        admin_socket: None,
        admin_addr: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => options.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--workers" => {
                options.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?
            }
            "--max-workers" => {
                options.max_workers = value()?
                    .parse()
                    .map_err(|e| format!("--max-workers: {e}"))?
            }
            "--admin-socket" => options.admin_socket = Some(value()?.into()),
            "--admin-addr" => {
                options.admin_addr =
                    Some(value()?.parse().map_err(|e| format!("--admin-addr: {e}"))?)
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; use --port N --workers N --max-workers N \
                     --admin-socket PATH --admin-addr HOST:PORT"
                ))
            }
        }
    }
    Ok(options)
}

async fn service() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    // The recorder first: the pool registers its series as it is built.
    let metrics = drover::admin::install_prometheus()?;
    let pool = Supervisor::builder(std::env::current_exe()?)
        .name("service")
        .workers(options.workers)
        .slow_request_log(Duration::from_secs(1))
        .spawn()
        .await?;
    // Listening from here: a SIGTERM now is handled, not fatal.
    let signals = pool.handle_signals()?;
    let scaling = tokio::spawn(
        pool.autoscale(
            Autoscale::new(options.workers, options.max_workers.max(options.workers))
                .idle_timeout(Duration::from_secs(30)),
        )?,
    );

    let mut admin = Admin::new(pool.clone())
        .metrics(metrics)
        .max_workers(options.max_workers.max(options.workers));
    if let Some(path) = &options.admin_socket {
        admin = admin.unix(path);
    }
    if let Some(addr) = options.admin_addr {
        admin = admin.tcp(addr);
    }
    if let Ok(token) = std::env::var("DROVER_ADMIN_TOKEN") {
        admin = admin.token(token);
    }
    let admin = admin.serve().await?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("admin on {}", admin.endpoint());
    println!("pid {}", std::process::id());

    let accept = async {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    continue;
                }
            };
            let pool = pool.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let pool = pool.clone();
                    async move { Ok::<_, Infallible>(answer(&pool, request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = connection.await {
                    eprintln!("connection error: {e}");
                }
            });
        }
    };
    // Serve until a signal has stopped the pool (its soft kill answers
    // what was accepted; requests meanwhile get 503).
    let stopped = tokio::select! {
        stopped = signals => stopped,
        () = accept => unreachable!("the accept loop never ends"),
    };
    admin.shutdown().await;
    let _ = scaling.await;
    println!(
        "stopped by signal {}{}; every worker reaped",
        stopped.signal,
        if stopped.hard { " (killed)" } else { "" }
    );
    Ok(())
}

/// `GET /upper?text=...`: the text, upper-cased by a worker.
async fn answer(
    pool: &Supervisor,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let reply = |code: u16, body: String| {
        hyper::Response::builder()
            .status(code)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if request.uri().path() != "/upper" {
        return reply(404, "try GET /upper?text=hello\n".to_owned());
    }
    let text = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("text=")))
        .unwrap_or("")
        .to_owned();
    match pool.enqueue(&text).await {
        Ok(answer) => match answer.data::<String>() {
            Ok(upper) => reply(200, format!("{upper}\n")),
            Err(e) => reply(500, format!("{e}\n")),
        },
        Err(e @ (drover::Error::ShuttingDown | drover::Error::QueueFull { .. })) => {
            reply(503, format!("{e}\n"))
        }
        Err(e) => reply(500, format!("{e}\n")),
    }
}
