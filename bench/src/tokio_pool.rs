//! The hand-written pool: what a user would write instead of drover with
//! tokio alone (`--impl tokio`).
//!
//! The plain version, on purpose: `W` copies of this binary, each with one
//! end of a socket pair (its number in [`CHILD_ENV`]); both directions
//! carry tokio-util's `LengthDelimitedCodec` frames whose bodies are
//! bincode (serde, standard configuration) of [`Message`]. The parent
//! keeps, per child, a writer task fed by an unbounded channel and a
//! reader task that completes a map of pending replies (`oneshot`s under a
//! `Mutex`); callers pick children round-robin. A child answers each
//! message in turn with the same id and payload. No flow control, no
//! crash handling, no routing by load: what drover adds, this leaves out.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rustix::io::FdFlags;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::args::{EchoOptions, MAX_PAYLOAD};
use crate::error::Error;
use crate::report::EchoReport;
use crate::stats::Latencies;

/// The variable that makes this binary a child of the hand-written pool;
/// its value is the number of the inherited socket descriptor.
pub const CHILD_ENV: &str = "DROVER_BENCH_TOKIO_CHILD";

/// The inherited descriptor's number, if this process is such a child.
pub fn child_socket_env() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// One request or its answer.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    id: u64,
    payload: Bytes,
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_PAYLOAD + 64)
        .new_codec()
}

fn encode(message: &Message) -> Result<Bytes, Error> {
    bincode::serde::encode_to_vec(message, bincode::config::standard())
        .map(Bytes::from)
        .map_err(|e| Error::Raw {
            what: "encode",
            source: std::io::Error::other(e),
        })
}

fn decode(body: &[u8]) -> Result<Message, Error> {
    bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map(|(message, _)| message)
        .map_err(|e| Error::Raw {
            what: "decode",
            source: std::io::Error::other(e),
        })
}

/// The child: answers every message with itself until end of file.
///
/// # Errors
///
/// [`Error::RawChildSocket`] if `fd_number` is not an open socket,
/// [`Error::Raw`] if the socket fails or a message does not decode.
pub fn child(fd_number: &str) -> Result<(), Error> {
    let stream = crate::raw::child::claim(fd_number)?;
    stream
        .set_nonblocking(true)
        .map_err(Error::raw("nonblocking"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        let stream = UnixStream::from_std(stream).map_err(Error::raw("register"))?;
        let (read, write) = stream.into_split();
        let mut input = FramedRead::new(read, codec());
        let mut output = FramedWrite::new(write, codec());
        while let Some(frame) = input.next().await {
            let frame = frame.map_err(Error::raw("child read"))?;
            let message = decode(&frame)?;
            output
                .send(encode(&message)?)
                .await
                .map_err(Error::raw("child write"))?;
        }
        Ok(())
    })
}

/// The parent's end of one child.
struct Connection {
    send: mpsc::UnboundedSender<Bytes>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>,
}

/// Runs the echo workload over `options.workers` children of the
/// hand-written pool; every child is reaped.
///
/// # Errors
///
/// [`Error::Raw`] when spawning or a socket fails, [`Error::WrongAnswer`]
/// for an answer of the wrong length.
pub async fn run(options: &EchoOptions) -> Result<EchoReport, Error> {
    let program = std::env::current_exe().map_err(Error::CurrentExe)?;
    eprintln!(
        "drover-bench: hand-written tokio pool, {} children, {} requests of {} bytes, {} in flight",
        options.workers, options.requests, options.payload, options.concurrency
    );
    let started = Instant::now();
    let mut children = Vec::with_capacity(options.workers);
    let mut connections = Vec::with_capacity(options.workers);
    let mut tasks = JoinSet::new();
    for _ in 0..options.workers {
        let (child, stream) = spawn(&program)?;
        children.push(child);
        connections.push(connect(stream, &mut tasks)?);
    }
    let connections = Arc::new(connections);
    let ids = Arc::new(AtomicU64::new(0));
    // Each child answers once before the clock starts.
    for connection in connections.iter() {
        call(connection, &ids, Bytes::new()).await?;
    }
    let startup = started.elapsed();
    let outcome = drive(&connections, &ids, options).await;
    // Closing the sockets ends the children; then they are reaped.
    drop(connections);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    for mut child in children {
        let _ = child.wait();
    }
    let (elapsed, latencies) = outcome?;
    EchoReport::new(options, startup, elapsed, latencies)
}

/// Starts a copy of `program` as a child, with one end of a socket pair.
fn spawn(program: &Path) -> Result<(Child, UnixStream), Error> {
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(Error::raw("socketpair"))?;
    let theirs = OwnedFd::from(theirs);
    rustix::io::fcntl_setfd(&theirs, FdFlags::empty())
        .map_err(|e| Error::raw("clear close-on-exec")(e.into()))?;
    let child = Command::new(program)
        .env(CHILD_ENV, theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(Error::raw("spawn child"))?;
    drop(theirs);
    ours.set_nonblocking(true)
        .map_err(Error::raw("nonblocking"))?;
    let ours = UnixStream::from_std(ours).map_err(Error::raw("register"))?;
    Ok((child, ours))
}

/// Starts the writer and the reader of one child's socket.
fn connect(stream: UnixStream, tasks: &mut JoinSet<()>) -> Result<Connection, Error> {
    let (read, write) = stream.into_split();
    let (send, mut queued) = mpsc::unbounded_channel::<Bytes>();
    let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>> = Arc::default();
    tasks.spawn(async move {
        let mut output = FramedWrite::new(write, codec());
        while let Some(frame) = queued.recv().await {
            if output.send(frame).await.is_err() {
                return;
            }
        }
    });
    let answers = pending.clone();
    tasks.spawn(async move {
        let mut input = FramedRead::new(read, codec());
        while let Some(Ok(frame)) = input.next().await {
            let Ok(message) = decode(&frame) else {
                return;
            };
            let reply = answers.lock().unwrap().remove(&message.id);
            if let Some(reply) = reply {
                let _ = reply.send(message.payload);
            }
        }
    });
    Ok(Connection { send, pending })
}

/// One request to one child, and its answer.
async fn call(connection: &Connection, ids: &AtomicU64, payload: Bytes) -> Result<Bytes, Error> {
    let id = ids.fetch_add(1, Ordering::Relaxed);
    let (reply, answer) = oneshot::channel();
    connection.pending.lock().unwrap().insert(id, reply);
    let frame = encode(&Message { id, payload })?;
    let closed = || Error::Raw {
        what: "child gone",
        source: std::io::ErrorKind::BrokenPipe.into(),
    };
    connection.send.send(frame).map_err(|_| closed())?;
    answer.await.map_err(|_| closed())
}

/// The hand-written pool's side of the echo traffic: each request to the
/// next child in turn.
#[derive(Clone)]
struct Children {
    connections: Arc<Vec<Connection>>,
    ids: Arc<AtomicU64>,
}

impl crate::echo::Echo for Children {
    async fn call(&self, index: usize, payload: Bytes) -> Result<usize, Error> {
        let connection = &self.connections[index % self.connections.len()];
        Ok(call(connection, &self.ids, payload).await?.len())
    }
}

/// The echo traffic (`echo::drive_with`) over the children.
async fn drive(
    connections: &Arc<Vec<Connection>>,
    ids: &Arc<AtomicU64>,
    options: &EchoOptions,
) -> Result<(Duration, Latencies), Error> {
    let children = Children {
        connections: connections.clone(),
        ids: ids.clone(),
    };
    crate::echo::drive_with(options, children).await
}
