//! The admin crate's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What can go wrong serving the admin endpoint or talking to one.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A TCP address other than loopback was asked for with no token.
    #[error("the admin endpoint on {addr} is not a loopback address, so it needs a token (Admin::token)")]
    TokenRequired {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The socket or address could not be bound.
    #[error("cannot listen on {place}: {source}")]
    Bind {
        /// The socket's path or the address.
        place: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Another process already serves on this Unix socket.
    #[error("another process already serves on {path}")]
    InUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// The Prometheus recorder could not be installed (another recorder
    /// is installed already, say).
    #[error("cannot install the Prometheus recorder: {0}")]
    Prometheus(#[from] metrics_exporter_prometheus::BuildError),
    /// The client found no admin socket at this path.
    #[error("no admin socket at {path}: is the application running, with its admin endpoint on? (set the path with --socket or DROVER_ADMIN_SOCKET)")]
    NoSocket {
        /// The path tried.
        path: PathBuf,
    },
    /// The client could not connect.
    #[error("cannot connect to {place}: {source}")]
    Connect {
        /// The socket's path or the address.
        place: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed (the endpoint closed the connection, say).
    #[error("talking to {place}: {source}")]
    Http {
        /// The socket's path or the address.
        place: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// No answer came within the client's time limit.
    #[error("{place} did not answer within {limit:?}")]
    Timeout {
        /// The socket's path or the address.
        place: String,
        /// The limit.
        limit: std::time::Duration,
    },
    /// The endpoint refused the request (`401`, `400`, `409`, ...): its
    /// status code and the error it gave.
    #[error("the admin endpoint answered {status}: {message}")]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The `error` of its answer (or the body, if it had none).
        message: String,
    },
    /// The endpoint's answer was not what this client expects.
    #[error("unexpected answer from the admin endpoint: {0}")]
    BadAnswer(String),
}
