//! drover as a prefork HTTP server, the way gunicorn runs: the supervisor
//! accepts TCP connections and passes each one to a worker, which serves
//! HTTP on it with hyper.
//!
//! ```sh
//! cargo run --example prefork_http -- --port 8080 --workers 4
//! curl -i http://127.0.0.1:8080/       # x-worker-pid says who answered
//! ```
//!
//! Ctrl-C (or SIGTERM) soft-kills the pool: connections being served
//! finish, every worker is reaped. This one binary is both sides.

use std::convert::Infallible;

use drover::worker::{Request, Worker};
use drover::Supervisor;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if drover::worker::is_worker_process() {
        worker().await?;
    } else {
        supervisor().await?;
    }
    Ok(())
}

/// The worker: each request brings a connection; serve HTTP on it.
async fn worker() -> Result<(), drover::worker::Error> {
    let worker = Worker::connect().await?;
    worker
        .serve(|mut req: Request| async move {
            let Some(socket) = req.socket::<tokio::net::TcpStream>()? else {
                return req.fail("no connection came with the request");
            };
            // The request is done once the connection is taken; the
            // connection lives on in its own task.
            req.ack()?;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let pid = std::process::id();
                        let body = format!(
                            "hello from worker pid {pid}: {} {}\n",
                            request.method(),
                            request.uri()
                        );
                        let response = hyper::Response::builder()
                            .header("x-worker-pid", pid.to_string())
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from(body)))
                            .expect("a valid response");
                        Ok::<_, Infallible>(response)
                    },
                );
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service);
                if let Err(e) = connection.await {
                    eprintln!("worker {}: connection error: {e}", std::process::id());
                }
            });
            Ok(())
        })
        .await
}

/// The supervisor: accept, pass on, repeat until told to stop.
async fn supervisor() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 8080u16;
    let mut workers = 4usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--workers" => workers = args.next().ok_or("--workers needs a value")?.parse()?,
            other => {
                return Err(format!("unknown argument {other:?}; use --port N --workers N").into())
            }
        }
    }
    let pool = Supervisor::builder(std::env::current_exe()?)
        .workers(workers)
        // A request here only hands a connection over.
        .max_concurrency(64)
        .spawn()
        .await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "listening on http://{} with {workers} workers",
        listener.local_addr()?
    );

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(connection) => connection,
                    Err(e) => {
                        eprintln!("accept failed: {e}");
                        continue;
                    }
                };
                let pool = pool.clone();
                tokio::spawn(async move {
                    if let Err(e) = pool.request(&()).socket(stream).send().await {
                        eprintln!("could not hand a connection over: {e}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    println!("shutting down");
    pool.soft_kill().await;
    println!("every worker reaped");
    Ok(())
}
