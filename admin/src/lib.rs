//! The admin endpoint of a drover pool: see it and steer it from outside
//! the application, as an operator of PHP-FPM, gunicorn or PM2 would.
//!
//! ```no_run
//! use drover_admin::Admin;
//!
//! # async fn run(pool: drover_supervisor::Supervisor) -> Result<(), Box<dyn std::error::Error>> {
//! // Before the pool is built, so its metrics reach the exporter:
//! let metrics = drover_admin::install_prometheus()?;
//! // ... build the pool ...
//! let admin = Admin::new(pool)
//!     .unix("/run/myapp/drover.sock")
//!     .metrics(metrics)
//!     .serve()
//!     .await?;
//! // ... on the way out: stop serving, remove the socket.
//! admin.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /status` | [`PoolStatus`](drover_supervisor::PoolStatus) as JSON |
//! | `GET /` | the status as an HTML page that refreshes itself |
//! | `GET /metrics` | every `metrics` series in the Prometheus text format |
//! | `POST /control/reload` | a rolling reload; answers once it is done |
//! | `POST /control/resize?workers=N` | resize to N (1 to the maximum) |
//! | `POST /control/drain` | drain: every worker exits, requests wait |
//! | `POST /control/resume` | start the workers of a drained pool again |
//!
//! A control action answers `200` with `{"done": action, "status": ...}`
//! once the pool has settled; a malformed one `400` naming what was wrong
//! (an unknown action, a size that is not a number, zero, over the
//! maximum), with the pool untouched; one the pool cannot do now (resume a
//! pool that is not drained) `409`; one sent while another runs `409`
//! naming the one running (control actions never interleave: the pool's
//! own operations are serialised too, so a reload asked by `SIGHUP` and a
//! resize asked here run one after the other). Every error body is
//! `{"error": "..."}`.
//!
//! # Where it listens, and who may talk to it
//!
//! By default on a Unix socket ([`Admin::unix`], [`default_socket`]),
//! created with mode `0600` (only the application's user may connect) and
//! removed on shutdown. On TCP ([`Admin::tcp`]) when the operator names an
//! address; anything but a loopback address needs a token
//! ([`Admin::token`]), and [`Admin::serve`] refuses to start without one.
//! With a token set, every request must carry it, as
//! `Authorization: Bearer <token>` or as the password of HTTP Basic
//! authentication (what a browser asks for); a request without it gets
//! `401` and changes nothing.
//!
//! # Why axum
//!
//! axum is hyper (the HTTP implementation underneath either way) with a
//! router, typed extractors and middleware: the endpoint is a handful of
//! routes, query parameters to check, one authentication layer and
//! graceful shutdown, which axum gives in a few lines each, and it serves
//! a `tokio::net::UnixListener` as readily as a TCP one. With bare hyper
//! this crate would hand-write routing, query parsing and the accept loop.
//! The client side ([`Client`], used by `drover-ctl`) is hyper's own
//! client connection over either socket: one request per connection, no
//! pool, nothing more needed.
//!
//! # Layout
//!
//! - `server.rs`: [`Admin`] (the settings), [`AdminServer`] (the running
//!   endpoint), binding the socket.
//! - `routes.rs`: the routes, authentication and control actions.
//! - `page.rs`: the HTML view.
//! - `prometheus.rs`: [`install_prometheus`].
//! - `client.rs`: [`Client`], what `drover-ctl` talks through.
//! - `error.rs`: [`AdminError`].

mod client;
mod error;
mod page;
mod prometheus;
mod routes;
mod server;

pub use client::{Client, Endpoint};
pub use error::AdminError;
pub use metrics_exporter_prometheus::PrometheusHandle;
pub use page::human_duration;
pub use prometheus::install_prometheus;
pub use server::{default_socket, Admin, AdminServer, DEFAULT_MAX_WORKERS};
