//! [`Admin`], the endpoint's settings, and [`AdminServer`], the endpoint
//! running.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drover_supervisor::Supervisor;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::Endpoint;
use crate::error::AdminError;
use crate::routes::{router, AppState};

/// The largest size `POST /control/resize` accepts unless
/// [`Admin::max_workers`] says otherwise.
pub const DEFAULT_MAX_WORKERS: usize = 256;

/// How often the Prometheus recorder's upkeep runs.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Where the admin socket is by default: `drover.sock` in
/// `$RUNTIME_DIRECTORY` (what systemd's `RuntimeDirectory=` sets), else in
/// `$XDG_RUNTIME_DIR`, else in the temporary directory. `drover-ctl` looks
/// there too (unless given `--socket` or `DROVER_ADMIN_SOCKET`).
pub fn default_socket() -> PathBuf {
    let dir = ["RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"]
        .iter()
        .find_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    // systemd may list several directories, separated by colons.
    let dir = dir
        .to_str()
        .and_then(|d| d.split(':').next())
        .map(PathBuf::from)
        .unwrap_or(dir);
    dir.join("drover.sock")
}

/// The admin endpoint's settings: where it listens, the token, the largest
/// size a resize may ask for, the metrics it serves. [`serve`](Admin::serve)
/// starts it.
#[derive(Debug)]
pub struct Admin {
    pool: Supervisor,
    listen: Endpoint,
    token: Option<String>,
    max_workers: usize,
    metrics: Option<PrometheusHandle>,
    refresh: Duration,
}

impl Admin {
    /// The endpoint of `pool`, on the [`default_socket`], with no token,
    /// resizes up to [`DEFAULT_MAX_WORKERS`], no metrics, the HTML view
    /// refreshing every 2 seconds.
    pub fn new(pool: Supervisor) -> Admin {
        Admin {
            pool,
            listen: Endpoint::Unix(default_socket()),
            token: None,
            max_workers: DEFAULT_MAX_WORKERS,
            metrics: None,
            refresh: Duration::from_secs(2),
        }
    }

    /// Listens on a Unix socket at `path`, created with mode `0600` and
    /// removed on shutdown. A stale socket left there by a process that
    /// is gone is replaced.
    pub fn unix(mut self, path: impl AsRef<Path>) -> Admin {
        self.listen = Endpoint::Unix(path.as_ref().to_path_buf());
        self
    }

    /// Listens on TCP at `addr` (port 0: any free port, see
    /// [`AdminServer::endpoint`]). Anything but a loopback address needs a
    /// [`token`](Admin::token).
    pub fn tcp(mut self, addr: SocketAddr) -> Admin {
        self.listen = Endpoint::Tcp(addr);
        self
    }

    /// Every request must carry `token` (`Authorization: Bearer <token>`,
    /// or as the password of HTTP Basic authentication); one without it
    /// gets `401` and changes nothing.
    pub fn token(mut self, token: impl Into<String>) -> Admin {
        self.token = Some(token.into());
        self
    }

    /// The largest size `POST /control/resize` accepts.
    pub fn max_workers(mut self, n: usize) -> Admin {
        self.max_workers = n;
        self
    }

    /// Serves `/metrics` from this Prometheus recorder (see
    /// [`install_prometheus`](crate::install_prometheus)); without one,
    /// `/metrics` answers `404` saying so.
    pub fn metrics(mut self, handle: PrometheusHandle) -> Admin {
        self.metrics = Some(handle);
        self
    }

    /// How often the HTML view reloads itself (at least one second).
    pub fn refresh(mut self, every: Duration) -> Admin {
        self.refresh = every.max(Duration::from_secs(1));
        self
    }

    /// Binds the socket or address and serves on the current tokio
    /// runtime until [`AdminServer::shutdown`] (or the server is dropped).
    ///
    /// # Errors
    ///
    /// [`AdminError::TokenRequired`] for a TCP address that is not
    /// loopback with no token; [`AdminError::InUse`] if another process
    /// serves on the socket; [`AdminError::Bind`] if the operating system
    /// refuses.
    pub async fn serve(self) -> Result<AdminServer, AdminError> {
        let shutdown = CancellationToken::new();
        let has_token = self.token.is_some();
        let state = Arc::new(AppState::new(
            self.pool,
            self.token,
            self.max_workers,
            self.metrics.clone(),
            self.refresh,
        ));
        let app = router(state);
        let stop = shutdown.clone().cancelled_owned();
        let (endpoint, socket, task): (Endpoint, Option<PathBuf>, JoinHandle<()>) =
            match self.listen {
                Endpoint::Tcp(addr) => {
                    if !addr.ip().is_loopback() && !has_token {
                        return Err(AdminError::TokenRequired { addr });
                    }
                    let listener =
                        TcpListener::bind(addr)
                            .await
                            .map_err(|source| AdminError::Bind {
                                place: addr.to_string(),
                                source,
                            })?;
                    let bound = listener.local_addr().map_err(|source| AdminError::Bind {
                        place: addr.to_string(),
                        source,
                    })?;
                    let server = axum::serve(listener, app.clone()).with_graceful_shutdown(stop);
                    let task = tokio::spawn(async move {
                        if let Err(e) = server.await {
                            tracing::error!("admin endpoint on {bound}: {e}");
                        }
                    });
                    (Endpoint::Tcp(bound), None, task)
                }
                Endpoint::Unix(path) => {
                    let listener = bind_unix(&path).await?;
                    let server = axum::serve(listener, app.clone()).with_graceful_shutdown(stop);
                    let shown = path.clone();
                    let task = tokio::spawn(async move {
                        if let Err(e) = server.await {
                            tracing::error!("admin endpoint on {}: {e}", shown.display());
                        }
                    });
                    (Endpoint::Unix(path.clone()), Some(path), task)
                }
            };
        let upkeep = self.metrics.map(|handle| {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(UPKEEP_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = ticker.tick() => handle.run_upkeep(),
                    }
                }
            })
        });
        tracing::info!("admin endpoint on {endpoint}");
        Ok(AdminServer {
            endpoint,
            socket,
            shutdown,
            task: Some(task),
            upkeep,
        })
    }
}

/// Binds a Unix socket at `path` with mode `0600`: bound under a
/// temporary name, its mode set, then renamed into place, so nobody can
/// connect before its mode is right.
async fn bind_unix(path: &Path) -> Result<UnixListener, AdminError> {
    let place = path.display().to_string();
    let bind_error = |source| AdminError::Bind {
        place: place.clone(),
        source,
    };
    if path.exists() {
        // A live endpoint answers; a stale socket file refuses.
        match tokio::net::UnixStream::connect(path).await {
            Ok(_) => {
                return Err(AdminError::InUse {
                    path: path.to_path_buf(),
                })
            }
            Err(_) => std::fs::remove_file(path).map_err(bind_error)?,
        }
    }
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.new", std::process::id()));
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging).map_err(bind_error)?;
    let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&staging, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(bind_error(e));
    }
    Ok(listener)
}

/// The admin endpoint, serving. [`shutdown`](AdminServer::shutdown) stops
/// it and removes its socket; dropping it does both too, without waiting
/// for open connections.
#[derive(Debug)]
pub struct AdminServer {
    endpoint: Endpoint,
    socket: Option<PathBuf>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    upkeep: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Where it listens (with the port the system chose, for port 0).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Stops taking connections, lets the open ones finish, and removes
    /// the socket file.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(upkeep) = self.upkeep.take() {
            let _ = upkeep.await;
        }
        self.remove_socket();
    }

    fn remove_socket(&mut self) {
        if let Some(path) = self.socket.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("cannot remove the admin socket {}: {e}", path.display());
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(upkeep) = self.upkeep.take() {
            upkeep.abort();
        }
        self.remove_socket();
    }
}
