//! One request on its way: its options ([`RequestBuilder`]), the future
//! that waits for its answer ([`SendFuture`], a hand-written state machine
//! kept small because a caller may hold a million), and what it may carry
//! ([`Passable`] sockets).

use std::fmt;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use drover_proto::RequestId;
use tokio::io::AsyncRead;

use crate::error::Error;
use crate::pool::{Extras, Pending, Shared};
use crate::response::Response;
use crate::supervisor::Supervisor;

/// One request with its options, from [`Supervisor::request`].
#[derive(Debug)]
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder<'a> {
    pool: &'a Supervisor,
    /// Boxed error: keeps every request future small.
    payload: Result<Bytes, Box<Error>>,
    extras: Option<Box<Extras>>,
    /// The timeout in microseconds, 0 for none: 8 bytes where an
    /// `Option<Duration>` takes 16, in a future every queued request holds.
    timeout_us: u64,
    retries: u32,
}

impl<'a> RequestBuilder<'a> {
    /// A request of `payload` (or the error encoding it gave) with the
    /// pool's defaults.
    pub(crate) fn new(pool: &'a Supervisor, payload: Result<Bytes, Box<Error>>) -> Self {
        let config = &pool.shared().config;
        RequestBuilder {
            pool,
            payload,
            timeout_us: config.timeout.map_or(0, micros_at_least_one),
            retries: config.retries,
            extras: None,
        }
    }

    /// Fails the request with [`Error::Timeout`] if it is not answered
    /// within `timeout` of being sent, queueing included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_us = micros_at_least_one(timeout);
        self
    }

    /// How many times the request is re-sent if its worker dies holding it.
    /// (A request that carries a socket is never re-sent: the socket went
    /// with the first attempt.)
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sends a byte stream read from `source` with the request; the
    /// worker reads it with `Request::stream`. It is sent as the worker
    /// reads it, a window (256 KiB) at a time on the worker's one
    /// connection, so it may be larger than memory and a slow reader holds
    /// up only this stream. If `source` fails, the worker's read ends with
    /// an error saying so. (A request with a stream is never re-sent.)
    pub fn stream<R: AsyncRead + Send + Unpin + 'static>(mut self, source: R) -> Self {
        self.extras.get_or_insert_with(Default::default).stream = Some(Box::new(source));
        self
    }

    /// Passes an open socket (or any descriptor) with the request, as
    /// `SCM_RIGHTS` on the worker's connection; the worker gets it with
    /// `Request::socket`. The supervisor's copy is closed once it is handed
    /// over (or when the request fails before that). Requests with a
    /// socket go to the worker holding the fewest passed sockets open, then
    /// the lowest RSS.
    pub fn socket(mut self, socket: impl Passable) -> Self {
        match socket.into_fd() {
            Ok(fd) => {
                let fds = &mut self.extras.get_or_insert_with(Default::default).fds;
                if fds.len() < drover_proto::MAX_FDS_PER_FRAME {
                    fds.push(fd);
                } else if self.payload.is_ok() {
                    self.payload = Err(Box::new(Error::TooManySockets {
                        max: drover_proto::MAX_FDS_PER_FRAME,
                    }));
                }
            }
            Err(e) => {
                if self.payload.is_ok() {
                    self.payload = Err(Box::new(Error::Socket { source: e }));
                }
            }
        }
        self
    }

    /// Sends the request and waits for its answer.
    ///
    /// # Errors
    ///
    /// As [`Supervisor::enqueue`].
    ///
    /// # Cancel safety
    ///
    /// As [`Supervisor::enqueue`].
    pub fn send(self) -> SendFuture<'a> {
        SendFuture {
            state: SendState::Start(self),
        }
    }

    /// Checks and queues the request; the synchronous half of `send`.
    fn submit(self, waker: &Waker) -> Result<(&'a Arc<Shared>, RequestId, Answer), Error> {
        let payload = self.payload.map_err(|e| *e)?;
        let limit = self.pool.max_payload();
        if payload.len() > limit {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                limit,
            });
        }
        let shared = self.pool.shared();
        let (reply, answer) = crate::reply::slot(waker);
        let id = crate::request_id::next();
        shared.submit(Pending {
            id,
            created_at: drover_proto::now_micros(),
            payload,
            reply,
            retries: self.retries,
            extras: self.extras,
        })?;
        Ok((shared, id, answer))
    }
}

type Answer = crate::reply::Answer<Result<Response, Error>>;

/// The future of [`RequestBuilder::send`] (and of `enqueue`): it queues
/// the request when first polled, then waits for the answer.
///
/// Written out as a state machine rather than an `async fn` so that it
/// stays small (under 100 bytes): a caller with a million requests queued
/// holds a million of these.
///
/// # Cancel safety
///
/// Dropping it cancels the request: it leaves the queue if it is still
/// there; if a worker has it, the worker is sent `Cancel` and its answer
/// is discarded.
///
/// # Panics
///
/// If polled again after it completed.
#[must_use = "a request does nothing until its future is awaited"]
pub struct SendFuture<'a> {
    state: SendState<'a>,
}

enum SendState<'a> {
    /// Not polled yet: nothing queued.
    Start(RequestBuilder<'a>),
    /// Queued or running, no timeout.
    Waiting {
        answer: Answer,
        guard: CancelOnDrop<'a>,
    },
    /// Queued or running, with a timeout (boxed: timers are large, and only
    /// such requests pay for one).
    Timed(Pin<Box<dyn Future<Output = Result<Response, Error>> + Send + 'a>>),
    /// Completed.
    Done,
}

impl fmt::Debug for SendFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            SendState::Start(_) => "not sent",
            SendState::Waiting { .. } | SendState::Timed(_) => "waiting for the answer",
            SendState::Done => "done",
        };
        f.debug_struct("SendFuture").field("state", &state).finish()
    }
}

impl Future for SendFuture<'_> {
    type Output = Result<Response, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut self.state {
                SendState::Start(_) => {
                    let SendState::Start(builder) =
                        std::mem::replace(&mut self.state, SendState::Done)
                    else {
                        unreachable!("matched just above");
                    };
                    let timeout =
                        (builder.timeout_us > 0).then(|| Duration::from_micros(builder.timeout_us));
                    let pool = builder.pool;
                    let (shared, id, answer) = match builder.submit(cx.waker()) {
                        Ok(queued) => queued,
                        Err(error) => {
                            pool.shared().metrics.refused();
                            return Poll::Ready(Err(error));
                        }
                    };
                    let guard = CancelOnDrop {
                        shared,
                        id,
                        armed: true,
                    };
                    match timeout {
                        None => {
                            // The slot holds this waker already: nothing
                            // to poll until it is woken.
                            self.state = SendState::Waiting { answer, guard };
                            return Poll::Pending;
                        }
                        Some(after) => {
                            self.state =
                                SendState::Timed(Box::pin(wait_or_time_out(answer, guard, after)));
                        }
                    }
                }
                SendState::Waiting { answer, guard } => {
                    let result =
                        ready!(Pin::new(answer).poll(cx)).unwrap_or(Err(Error::ShuttingDown));
                    guard.armed = false;
                    guard.shared.metrics.request(&result);
                    trace_outcome(guard.id, &result);
                    self.state = SendState::Done;
                    return Poll::Ready(result);
                }
                SendState::Timed(waiting) => {
                    let result = ready!(waiting.as_mut().poll(cx));
                    self.state = SendState::Done;
                    return Poll::Ready(result);
                }
                SendState::Done => panic!("drover: a request future was polled after it completed"),
            }
        }
    }
}

/// A timeout in whole microseconds, at least one (zero means none).
fn micros_at_least_one(d: Duration) -> u64 {
    (d.as_micros().min(u64::MAX as u128) as u64).max(1)
}

/// What can be passed to a worker with [`RequestBuilder::socket`]: open
/// sockets and descriptors.
pub trait Passable {
    /// The descriptor to pass.
    ///
    /// # Errors
    ///
    /// A tokio socket that cannot leave its runtime registration.
    fn into_fd(self) -> std::io::Result<OwnedFd>;
}

impl Passable for OwnedFd {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        Ok(self)
    }
}

impl Passable for std::net::TcpStream {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        Ok(self.into())
    }
}

impl Passable for std::os::unix::net::UnixStream {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        Ok(self.into())
    }
}

impl Passable for tokio::net::TcpStream {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
}

impl Passable for tokio::net::UnixStream {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
}

/// Waits for the answer, failing with [`Error::Timeout`] after `after`; the worker
/// holding the request is sent `Cancel`, and killed if it still holds it
/// after the kill-after grace.
async fn wait_or_time_out(
    answer: Answer,
    mut guard: CancelOnDrop<'_>,
    after: Duration,
) -> Result<Response, Error> {
    if let Ok(result) = tokio::time::timeout(after, answer).await {
        guard.armed = false;
        let result = result.unwrap_or(Err(Error::ShuttingDown));
        guard.shared.metrics.request(&result);
        trace_outcome(guard.id, &result);
        return result;
    }
    guard.armed = false;
    let (shared, id) = (guard.shared, guard.id);
    if let Some(worker_id) = shared.cancel(id) {
        // Give the worker the kill-after grace to give up.
        let watchdog = {
            let shared = shared.clone();
            let grace = shared.config.kill_after;
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(grace) => shared.kill_if_still_holding(worker_id, id),
                    _ = shared.shutdown.cancelled() => {}
                }
            }
        };
        shared.tracker.spawn_on(watchdog, &shared.runtime);
    }
    let timed_out = Err(Error::Timeout {
        request_id: id,
        after,
    });
    shared.metrics.request(&timed_out);
    trace_outcome(id, &timed_out);
    timed_out
}

/// Logs how request `id` ended (at debug level) in a span named
/// `drover.request` with its id and the pid of the worker that had it, the
/// names the worker SDK's span for the same request uses: a request's
/// lines on both sides are found by its id. Nothing is stored per request
/// for it, and with no subscriber listening at debug level it costs one
/// check.
fn trace_outcome(id: RequestId, result: &Result<Response, Error>) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let pid = match result {
        Ok(response) => Some(response.pid()),
        Err(Error::Remote { pid, .. }) | Err(Error::Decode { pid, .. }) => Some(*pid),
        Err(Error::WorkerLost { exit, .. }) => Some(exit.pid),
        Err(_) => None,
    };
    let span = tracing::debug_span!("drover.request", id = %id, pid);
    let _entered = span.enter();
    match result {
        Ok(response) => {
            let micros = drover_proto::now_micros().saturating_sub(response.created_at);
            tracing::debug!(micros, "answered");
        }
        Err(error) => tracing::debug!("failed: {error}"),
    }
}

/// Cancels the request if `enqueue`'s future is dropped before its answer.
struct CancelOnDrop<'a> {
    shared: &'a Arc<Shared>,
    id: RequestId,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.shared.cancel(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SendFuture;

    /// A caller may hold a million of these: keep them small.
    #[test]
    fn a_request_future_stays_small() {
        let size = std::mem::size_of::<SendFuture<'static>>();
        assert!(size <= 96, "SendFuture is {size} bytes");
    }
}
