//! [`Client`]: requests to an admin endpoint, as `drover-ctl` sends them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use drover_supervisor::PoolStatus;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::AdminError;

/// Where an admin endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket at this path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "http://{addr}"),
        }
    }
}

/// A client of an admin endpoint: one HTTP/1.1 request per connection.
///
/// ```no_run
/// use drover_admin::{Client, Endpoint};
///
/// # async fn run() -> Result<(), drover_admin::AdminError> {
/// let client = Client::new(Endpoint::Unix("/run/myapp/drover.sock".into()));
/// let status = client.status().await?;
/// println!("{} workers", status.workers.len());
/// client.control("resize", Some(8)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client of the endpoint at `endpoint`, with no token, waiting at
    /// most 120 s for an answer (a reload of a large pool takes a while).
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            token: None,
            timeout: Duration::from_secs(120),
        }
    }

    /// Sends `token` with every request (`Authorization: Bearer`).
    pub fn token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// How long to wait for an answer.
    pub fn timeout(mut self, limit: Duration) -> Client {
        self.timeout = limit;
        self
    }

    /// Sends `method` `path` (with its query) and returns the answer's
    /// status code and body, whatever the code.
    ///
    /// # Errors
    ///
    /// [`AdminError::NoSocket`] if the socket does not exist,
    /// [`AdminError::Connect`] if it refuses, [`AdminError::Http`] if the
    /// exchange breaks off, [`AdminError::Timeout`].
    pub async fn send(&self, method: &str, path: &str) -> Result<(u16, String), AdminError> {
        let place = self.endpoint.to_string();
        let exchange = async {
            match &self.endpoint {
                Endpoint::Unix(socket) => {
                    let stream = tokio::net::UnixStream::connect(socket).await.map_err(
                        |source| match source.kind() {
                            std::io::ErrorKind::NotFound => AdminError::NoSocket {
                                path: socket.clone(),
                            },
                            _ => AdminError::Connect {
                                place: place.clone(),
                                source,
                            },
                        },
                    )?;
                    self.exchange(stream, method, path).await
                }
                Endpoint::Tcp(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|source| AdminError::Connect {
                            place: place.clone(),
                            source,
                        })?;
                    self.exchange(stream, method, path).await
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| AdminError::Timeout {
                place: place.clone(),
                limit: self.timeout,
            })?
    }

    async fn exchange<S>(
        &self,
        stream: S,
        method: &str,
        path: &str,
    ) -> Result<(u16, String), AdminError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |source| AdminError::Http {
            place: self.endpoint.to_string(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| {
            AdminError::BadAnswer(format!("cannot make the request {method} {path}: {e}"))
        })?;
        let answer = async {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        // The connection is driven beside the exchange, and ends with it.
        tokio::select! {
            answer = answer => answer.map_err(http),
            ended = connection => match ended {
                Err(e) => Err(http(e)),
                Ok(()) => Err(AdminError::BadAnswer("the connection closed before the answer".to_owned())),
            },
        }
    }

    /// The pool's status (`GET /status`).
    ///
    /// # Errors
    ///
    /// As [`send`](Client::send); [`AdminError::Refused`] for an answer
    /// other than `200` (`401` without the right token);
    /// [`AdminError::BadAnswer`] if it is not a status.
    pub async fn status(&self) -> Result<PoolStatus, AdminError> {
        let body = self.expect_ok("GET", "/status").await?;
        serde_json::from_str(&body).map_err(|e| AdminError::BadAnswer(format!("{e}: {body}")))
    }

    /// Runs control action `action` (`reload`, `resize` with `workers`,
    /// `drain`, `resume`) and returns the status once it is done.
    ///
    /// # Errors
    ///
    /// As [`status`](Client::status); the endpoint's refusals (`400` for a
    /// malformed action, `409` for one that cannot run now) as
    /// [`AdminError::Refused`] with its reason.
    pub async fn control(
        &self,
        action: &str,
        workers: Option<usize>,
    ) -> Result<PoolStatus, AdminError> {
        let path = match workers {
            Some(n) => format!("/control/{action}?workers={n}"),
            None => format!("/control/{action}"),
        };
        let body = self.expect_ok("POST", &path).await?;
        #[derive(serde::Deserialize)]
        struct Done {
            status: PoolStatus,
        }
        serde_json::from_str::<Done>(&body)
            .map(|d| d.status)
            .map_err(|e| AdminError::BadAnswer(format!("{e}: {body}")))
    }

    async fn expect_ok(&self, method: &str, path: &str) -> Result<String, AdminError> {
        let (status, body) = self.send(method, path).await?;
        if status == 200 {
            return Ok(body);
        }
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        Err(AdminError::Refused { status, message })
    }
}
