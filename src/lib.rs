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
//! # The two sides
//!
//! The supervisor:
//!
//! ```no_run
//! use drover::Supervisor;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), drover::Error> {
//!     let pool = Supervisor::builder("target/debug/upper").workers(4).spawn().await?;
//!     let answer = pool.enqueue("hello").await?;
//!     println!("worker {} answered {}", answer.pid(), answer.data::<String>()?);
//!     pool.soft_kill().await;
//!     Ok(())
//! }
//! ```
//!
//! The worker (`upper`):
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
//! # Layout
//!
//! - `drover-supervisor` (re-exported here): pool, routing, lifecycle.
//! - `drover-worker` ([`worker`]): the SDK a worker binary links.
//! - `drover-proto` ([`proto`]): messages, frame codec, handshake.
//! - `drover-queue` ([`queue`]): a durable job queue with timers.
#![forbid(unsafe_code)]

pub use drover_supervisor::*;

/// The worker side: what a worker binary uses (the `drover-worker` crate).
pub mod worker {
    pub use drover_worker::*;
}

/// The durable job queue with timers, run by a pool (the `drover-queue`
/// crate): SQLite or PostgreSQL.
pub mod queue {
    pub use drover_queue::*;
}

/// The wire protocol shared by both sides (the `drover-proto` crate).
pub mod proto {
    pub use drover_proto::*;
}
