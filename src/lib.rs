//! drover: run work in a pool of long-lived worker processes.
//!
//! Put crash-prone, leaky or CPU-heavy work (native libraries, parsers,
//! renderers, untrusted input) in separate processes, and talk to them as
//! if they were an async function: a [`Supervisor`] inside your tokio
//! application starts the workers, routes each request to the one under the
//! least pressure, and hands back typed answers. A crash, a leak or a hang
//! costs one worker, which is replaced; never your service.
//!
//! This crate is the facade: [`Supervisor`] and the rest of the supervisor
//! side at the root, the worker side under [`worker`], the wire protocol
//! under [`proto`]. A worker-only binary may depend on `drover-worker`
//! alone.
//!
//! # Quick start
//!
//! A pool has two sides: the supervisor, inside your application, and the
//! worker program it starts N times. The worker is either a binary of its
//! own beside your application, or your application itself, started as a
//! worker.
//!
//! ## A worker binary in `src/bin/`
//!
//! Cargo builds each file in `src/bin/` as a binary named after it, into
//! the same folder as the application (`target/debug/`, or
//! `target/release/` with `--release`). The worker,
//! `src/bin/upper-worker.rs`:
//!
//! ```no_run
//! use drover::worker::Request;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), drover::worker::Error> {
//!     drover::worker::serve(|req: Request| async move {
//!         let text: String = req.data()?;
//!         req.respond(&text.to_uppercase())
//!     })
//!     .await
//! }
//! ```
//!
//! The application, `src/main.rs`, starts the worker found beside its own
//! executable (right in debug and in release, and wherever the two are
//! installed together):
//!
//! ```no_run
//! use drover::Supervisor;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let worker = std::env::current_exe()?.with_file_name("upper-worker");
//!     let pool = Supervisor::builder(worker).workers(4).spawn().await?;
//!     let answer = pool.enqueue("hello").await?;
//!     println!("worker {} answered {}", answer.pid(), answer.data::<String>()?);
//!     pool.soft_kill().await;
//!     Ok(())
//! }
//! ```
//!
//! - `cargo build` builds both binaries, `cargo run` only the one it runs
//!   (`default-run = "myapp"` under `[package]` says which): run
//!   `cargo build && cargo run`, or the pool starts the worker of an older
//!   build, or fails naming the missing path.
//! - Integration tests (`tests/`) start
//!   `Supervisor::builder(env!("CARGO_BIN_EXE_upper-worker"))`: `cargo
//!   test` builds the worker first and sets that variable to its path.
//!   Cargo sets it for integration tests and benchmarks only, never when
//!   it compiles the application; and a test's own executable sits in
//!   `target/debug/deps/`, away from the worker.
//!
//! ## One binary that is both
//!
//! Every example in `examples/` is one program that serves when a
//! supervisor started it ([`worker::is_worker_process`]) and is the
//! supervisor otherwise, starting copies of itself: nothing to lay out or
//! to build first, and the path is right wherever the program runs.
//!
//! ```no_run
//! use drover::worker::Request;
//! use drover::Supervisor;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     if drover::worker::is_worker_process() {
//!         // Started by the supervisor below: be one of its workers.
//!         drover::worker::serve(upper).await?;
//!         return Ok(());
//!     }
//!     // The supervisor: its workers are this same program.
//!     let pool = Supervisor::builder(std::env::current_exe()?).workers(4).spawn().await?;
//!     let answer = pool.enqueue("hello").await?;
//!     println!("worker {} answered {}", answer.pid(), answer.data::<String>()?);
//!     pool.soft_kill().await;
//!     Ok(())
//! }
//!
//! async fn upper(req: Request) -> Result<(), drover::worker::Error> {
//!     let text: String = req.data()?;
//!     req.respond(&text.to_uppercase())
//! }
//! ```
//!
//! The check comes first in `main`, so that a worker starts nothing of the
//! application's (listeners, files, a pool of its own).
//!
//! ## In a unit test, without a worker binary
//!
//! [`testing`] runs the same handler in-process, behind the same
//! [`Supervisor`] API (with no isolation: see its limits):
//!
//! ```
//! use drover::worker::Request;
//!
//! async fn upper(req: Request) -> Result<(), drover::worker::Error> {
//!     let text: String = req.data()?;
//!     req.respond(&text.to_uppercase())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = drover::testing::pool(upper).workers(2).spawn().await?;
//! let answer = pool.enqueue("hello").await?;
//! assert_eq!(answer.data::<String>()?, "HELLO");
//! pool.soft_kill().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `drover-supervisor` (re-exported here): pool, routing, lifecycle.
//! - `drover-worker` ([`worker`]): the SDK a worker binary links.
//! - `drover-proto` ([`proto`]): messages, frame codec, handshake.
//! - `drover-queue` (`queue`, feature `queue`): a durable job queue with
//!   timers.
//! - [`testing`] (here): in-process pools for unit tests.
//!
//! # Features
//!
//! None is on by default: the pool and the worker SDK need none.
//!
//! - `queue`: the durable job queue, [`queue`], with no store.
//! - `sqlite`: the queue with [`queue::SqliteStore`] (SQLite's C code is
//!   compiled in).
//! - `postgres`: the queue with [`queue::PgStore`].
//!
//! # Platforms
//!
//! Linux only: drover relies on calls other systems do not have (the
//! parent-death signal, `no_new_privs`, `close_range`, and more to come);
//! elsewhere the build of `drover-proto`, which every part of drover
//! depends on, stops with one error saying so.
#![forbid(unsafe_code)]

pub use drover_supervisor::*;

// The README's Rust blocks, compiled (and run unless `no_run`) by
// `cargo test --doc`; its job-queue snippet needs both stores
// (`cargo test --workspace` turns them on, through drover-integration).
#[cfg(all(doctest, feature = "sqlite", feature = "postgres"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod testing;

/// The worker side: what a worker binary uses (the `drover-worker` crate).
pub mod worker {
    pub use drover_worker::*;
}

#[cfg(feature = "queue")]
/// The durable job queue with timers, run by a pool (the `drover-queue`
/// crate): SQLite or PostgreSQL.
pub mod queue {
    pub use drover_queue::*;
}

/// What the wire protocol shared by both sides (the `drover-proto` crate)
/// gives users: request types tied to their answers, the encoding of
/// values into payloads, the protocol's version and its limits. The rest
/// of `drover-proto` is the supervisor's and the worker SDK's plumbing.
pub mod proto {
    pub use drover_proto::{
        decode_value, encode_value, HandshakeError, ProtocolError, RemoteErrorKind, RequestId,
        Task, ValueError, MAX_FDS_PER_FRAME, PROTOCOL_VERSION, STREAM_WINDOW,
    };
}
