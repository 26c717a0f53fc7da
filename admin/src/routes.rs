//! The routes: status, page, metrics, control actions; and the token
//! check in front of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use drover_supervisor::Supervisor;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

/// What every route shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pool: Supervisor,
    token: Option<String>,
    max_workers: usize,
    metrics: Option<PrometheusHandle>,
    refresh: Duration,
    /// Held (by the task running it) while a control action runs.
    control: Arc<tokio::sync::Mutex<()>>,
    /// The control action running, to name it to one refused meanwhile.
    running: Arc<Mutex<&'static str>>,
}

impl AppState {
    pub(crate) fn new(
        pool: Supervisor,
        token: Option<String>,
        max_workers: usize,
        metrics: Option<PrometheusHandle>,
        refresh: Duration,
    ) -> AppState {
        AppState {
            pool,
            token,
            max_workers,
            metrics,
            refresh,
            control: Arc::default(),
            running: Arc::new(Mutex::new("")),
        }
    }
}

/// The endpoint's routes, behind the token check.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/control/{action}", post(control))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// An error answer: `{"error": message}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Lets a request through only with the token, if one is set.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    if carries(request.headers(), token) {
        return next.run(request).await;
    }
    let mut answer = error(
        StatusCode::UNAUTHORIZED,
        "this admin endpoint needs its token: Authorization: Bearer <token> (or as the password of Basic authentication)",
    );
    answer.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"drover\""),
    );
    answer
}

/// Whether `headers` carry `token` as a bearer token or a Basic password.
fn carries(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = if let Some(bearer) = value.strip_prefix("Bearer ") {
        bearer.trim().to_owned()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((_, password)) => password.to_owned(),
            None => return false,
        }
    } else {
        return false;
    };
    constant_time_eq::constant_time_eq(given.as_bytes(), token.as_bytes())
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    Json(state.pool.status()).into_response()
}

async fn page(State(state): State<Arc<AppState>>) -> Response {
    Html(crate::page::render(&state.pool.status(), state.refresh)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            handle.render(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no metrics here: the application gave the admin endpoint no Prometheus recorder (Admin::metrics)",
        ),
    }
}

async fn not_found(request: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {}; there are GET /, /status, /metrics and POST /control/{{reload,resize,drain,resume}}",
            request.uri().path()
        ),
    )
}

async fn wrong_method(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let allowed = if path.starts_with("/control/") {
        "POST"
    } else {
        "GET"
    };
    let mut answer = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} {path}: use {allowed}", request.method()),
    );
    answer
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
    answer
}

/// A control action, checked.
#[derive(Debug, Clone, Copy)]
enum Action {
    Reload,
    Resize(usize),
    Drain,
    Resume,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Reload => "reload",
            Action::Resize(_) => "resize",
            Action::Drain => "drain",
            Action::Resume => "resume",
        }
    }

    /// `action` with `query`, or what is wrong with them.
    fn parse(
        action: &str,
        query: &HashMap<String, String>,
        max_workers: usize,
    ) -> Result<Action, String> {
        let action = match action {
            "reload" => Action::Reload,
            "drain" => Action::Drain,
            "resume" => Action::Resume,
            "resize" => {
                let Some(n) = query.get("workers") else {
                    return Err("resize needs the size: POST /control/resize?workers=N".to_owned());
                };
                let n: usize = n
                    .trim()
                    .parse()
                    .map_err(|_| format!("resize: workers={n:?} is not a number of workers"))?;
                if n == 0 {
                    return Err(
                        "resize to 0 is refused: a running pool needs a worker (drain stops them all)"
                            .to_owned(),
                    );
                }
                if n > max_workers {
                    return Err(format!(
                        "resize to {n} is over this endpoint's maximum of {max_workers} workers"
                    ));
                }
                Action::Resize(n)
            }
            other => {
                return Err(format!(
                    "unknown action {other:?}: the actions are reload, resize, drain and resume"
                ))
            }
        };
        let allowed: &[&str] = match action {
            Action::Resize(_) => &["workers"],
            _ => &[],
        };
        if let Some(extra) = query.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!("{} takes no parameter {extra:?}", action.name()));
        }
        Ok(action)
    }
}

async fn control(
    State(state): State<Arc<AppState>>,
    Path(action): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let action = match Action::parse(&action, &query, state.max_workers) {
        Ok(action) => action,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let Ok(guard) = state.control.clone().try_lock_owned() else {
        let running = *state.running.lock().unwrap_or_else(|e| e.into_inner());
        return error(
            StatusCode::CONFLICT,
            format!(
                "{} refused: a {running} is in progress; try again once it is done",
                action.name()
            ),
        );
    };
    *state.running.lock().unwrap_or_else(|e| e.into_inner()) = action.name();
    // Run in a task of its own: a client that hangs up does not cut the
    // operation short, and the lock is held until it is over.
    let pool = state.pool.clone();
    let task = tokio::spawn(async move {
        let result = match action {
            Action::Reload => pool.reload().await,
            Action::Resize(n) => pool.resize(n).await,
            Action::Drain => pool.drain().await,
            Action::Resume => pool.resume().await,
        };
        drop(guard);
        result
    });
    match task.await {
        Ok(Ok(())) => {
            tracing::info!("admin: {} done", action.name());
            Json(json!({ "done": action.name(), "status": state.pool.status() })).into_response()
        }
        Ok(Err(e @ drover_supervisor::Error::Operation { .. })) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the {} task failed: {e}", action.name()),
        ),
    }
}
