//! A request as the worker's handler sees it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use drover_proto::{decode_value, encode_value, Message, RemoteError, RemoteErrorKind, RequestId};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use crate::error::Error;
use crate::socket::{FromPassedFd, PassedFd, PassedSocket};
use crate::worker::Inner;
use crate::ByteStream;
use drover_proto::IncomingStream;
use tokio::io::AsyncRead;

/// What the SDK knows of a request in flight; shared by the [`Request`], the
/// task running its handler and the worker's registry.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub(crate) id: RequestId,
    pub(crate) created_at: SystemTime,
    /// Set when the caller cancelled; `cancel_wake` wakes `cancelled()`.
    /// (A flag and a `Notify` cost no allocation, unlike a token.)
    cancelled: AtomicBool,
    cancel_wake: Notify,
    answer: Mutex<AnswerState>,
}

#[derive(Debug, Default)]
struct AnswerState {
    /// An answer (of any kind) has been sent: nothing more may be.
    answered: bool,
    /// The handler's future has finished.
    handler_done: bool,
    /// The `Request` value has been dropped.
    dropped: bool,
}

impl Tracked {
    pub(crate) fn new(id: RequestId, created_at: SystemTime) -> Tracked {
        Tracked {
            id,
            created_at,
            cancelled: AtomicBool::new(false),
            cancel_wake: Notify::new(),
            answer: Mutex::new(AnswerState::default()),
        }
    }

    /// Marks the request cancelled and wakes whoever waits for that.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.cancel_wake.notify_waiters();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Claims the right to answer; true exactly once.
    fn claim(&self) -> bool {
        let mut state = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        !std::mem::replace(&mut state.answered, true)
    }

    /// Records that the handler finished. Returns true if the caller must now
    /// answer with an error: the handler failed, or it returned while the
    /// request was already dropped unanswered.
    pub(crate) fn handler_finished(&self, failed: bool) -> bool {
        let mut state = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        state.handler_done = true;
        if !state.answered && (failed || state.dropped) {
            state.answered = true;
            return true;
        }
        false
    }

    /// Records that the `Request` was dropped; true if it was never answered
    /// and the handler is done, so the drop itself must answer.
    fn request_dropped(&self) -> bool {
        let mut state = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        state.dropped = true;
        if !state.answered && state.handler_done {
            state.answered = true;
            return true;
        }
        false
    }
}

/// One request, handed to the worker's handler.
///
/// Answer it exactly once, with [`respond`](Request::respond),
/// [`ack`](Request::ack) or [`fail`](Request::fail); each consumes the
/// request. A handler may also keep the request and answer it later, from
/// another task.
///
/// If the handler returns an error or panics before answering, the SDK
/// answers with an error that carries the handler's message. If the request
/// is dropped unanswered (after its handler returned), the caller gets an
/// error saying so. Either way the caller always hears back.
pub struct Request {
    tracked: Arc<Tracked>,
    payload: Bytes,
    fds: Vec<PassedFd>,
    stream: Option<IncomingStream>,
    worker: Arc<Inner>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.tracked.id)
            .field("created_at", &self.tracked.created_at)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Request {
    pub(crate) fn new(
        tracked: Arc<Tracked>,
        payload: Bytes,
        fds: Vec<PassedFd>,
        stream: Option<IncomingStream>,
        worker: Arc<Inner>,
    ) -> Request {
        Request {
            tracked,
            payload,
            fds,
            stream,
            worker,
        }
    }

    /// Takes the byte stream the caller sent with the request (an
    /// `AsyncRead`); `None` if none came, or it was taken already.
    ///
    /// The stream arrives as it is read, one window at a time: a request
    /// can carry far more than memory holds. It may outlive the answer
    /// (read it while streaming an answer back with
    /// [`respond_with_stream`](Request::respond_with_stream)). Dropping it
    /// early tells the caller's side to stop sending.
    pub fn stream(&mut self) -> Option<ByteStream> {
        self.stream.take()
    }

    /// Answers with `value` and then a byte stream read from `source`,
    /// which the caller reads with `Response::stream`. The stream is sent
    /// in a task of its own, within the caller's flow-control credit; a
    /// soft kill waits for it to finish. If `source` fails, the caller's
    /// read ends with an error saying so.
    ///
    /// # Errors
    ///
    /// As [`respond`](Request::respond).
    pub fn respond_with_stream<T, R>(self, value: &T, source: R) -> Result<(), Error>
    where
        T: Serialize + ?Sized,
        R: AsyncRead + Send + Unpin + 'static,
    {
        let bytes = Bytes::from(encode_value(value)?);
        if bytes.len() > self.worker.max_payload() {
            return self.answer_bytes(bytes);
        }
        if !self.tracked.claim() {
            return Ok(());
        }
        let id = self.tracked.id;
        let credit = self.worker.outgoing_stream(id);
        self.worker.finish_streaming(&self.tracked, bytes)?;
        self.worker.start_pump(id, source, credit);
        Ok(())
    }

    /// Whether a socket (or other descriptor) came with the request.
    pub fn has_socket(&self) -> bool {
        !self.fds.is_empty()
    }

    /// Takes the socket that came with the request, as `T`
    /// (`tokio::net::TcpStream`, `tokio::net::UnixStream`, `OwnedFd`).
    /// `Ok(None)` if none came (or it was taken already).
    ///
    /// The socket outlives the request: answer (`ack`) and keep serving it
    /// in a task. When the [`PassedSocket`] drops, the socket is closed and
    /// the supervisor told, so it routes new sockets to the workers holding
    /// the fewest.
    ///
    /// # Errors
    ///
    /// [`Error::Socket`] when the descriptor is not a `T` (it is then
    /// closed).
    pub fn socket<T: FromPassedFd>(&mut self) -> Result<Option<PassedSocket<T>>, Error> {
        if self.fds.is_empty() {
            return Ok(None);
        }
        self.fds
            .remove(0)
            .into_socket()
            .map(Some)
            .map_err(Error::Socket)
    }

    /// Takes every descriptor that came with the request, in order.
    pub fn take_fds(&mut self) -> Vec<PassedFd> {
        std::mem::take(&mut self.fds)
    }

    /// The request's id (a uuid v4 chosen by the supervisor).
    pub fn id(&self) -> RequestId {
        self.tracked.id
    }

    /// When the caller enqueued the request.
    pub fn created_at(&self) -> SystemTime {
        self.tracked.created_at
    }

    /// Decodes the request's payload as a `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] naming `T` when the payload is not a `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(decode_value(&self.payload)?)
    }

    /// The raw payload bytes, as the supervisor's caller encoded them.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The raw payload as shared bytes: a cheap reference to the frame it
    /// arrived in, no copy. Answering with it (`respond_bytes`) sends the
    /// same buffer back.
    pub fn payload_bytes(&self) -> Bytes {
        self.payload.clone()
    }

    /// Takes the raw payload out of the request (which is left with an
    /// empty one): for a handler that hands the bytes on, such as an echo,
    /// this costs not even the reference count of
    /// [`payload_bytes`](Request::payload_bytes).
    pub fn take_payload(&mut self) -> Bytes {
        std::mem::take(&mut self.payload)
    }

    /// Answers the request with `value`.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] if the encoded answer is over the payload limit
    /// (the frame limit less the message around it; the caller then gets
    /// an error answer saying so),
    /// [`Error::Value`] if it does not encode, [`Error::Disconnected`] if
    /// the supervisor is gone.
    pub fn respond<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        match encode_value(value) {
            Ok(bytes) => self.answer_bytes(Bytes::from(bytes)),
            Err(e) => {
                let message = e.to_string();
                self.answer(Err(RemoteError {
                    kind: RemoteErrorKind::Unsendable,
                    message,
                }))?;
                Err(e.into())
            }
        }
    }

    /// Answers the request with bytes the caller will decode itself.
    ///
    /// # Errors
    ///
    /// As [`respond`](Request::respond).
    pub fn respond_bytes(self, bytes: impl Into<Bytes>) -> Result<(), Error> {
        self.answer_bytes(bytes.into())
    }

    /// Marks the request done with an empty answer (`()` to the caller).
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the supervisor is gone.
    pub fn ack(self) -> Result<(), Error> {
        self.answer(Ok(Bytes::new()))
    }

    /// Fails the request: the caller gets an error carrying `error`'s text.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the supervisor is gone.
    pub fn fail(self, error: impl fmt::Display) -> Result<(), Error> {
        self.answer(Err(RemoteError {
            kind: RemoteErrorKind::Failed,
            message: error.to_string(),
        }))
    }

    /// Resolves when the caller cancelled the request (it timed out, or the
    /// caller dropped its future). A handler doing long work can `select!`
    /// on it and stop early; any answer after that is discarded.
    pub fn cancelled(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        let tracked = &self.tracked;
        async move {
            loop {
                let woken = tracked.cancel_wake.notified();
                tokio::pin!(woken);
                // Register before checking, so a cancel in between is seen.
                woken.as_mut().enable();
                if tracked.is_cancelled() {
                    return;
                }
                woken.await;
            }
        }
    }

    /// Whether the caller has cancelled the request.
    pub fn is_cancelled(&self) -> bool {
        self.tracked.is_cancelled()
    }

    fn answer_bytes(self, bytes: Bytes) -> Result<(), Error> {
        let max = self.worker.max_payload();
        if bytes.len() > max {
            let err = Error::TooLarge {
                what: format!("answer to request {}", self.tracked.id),
                len: bytes.len(),
                max,
            };
            self.answer(Err(RemoteError {
                kind: RemoteErrorKind::Unsendable,
                message: err.to_string(),
            }))?;
            return Err(err);
        }
        self.answer(Ok(bytes))
    }

    fn answer(&self, result: Result<Bytes, RemoteError>) -> Result<(), Error> {
        if !self.tracked.claim() {
            // Already answered (by an earlier error path): nothing to send.
            return Ok(());
        }
        self.worker.finish(&self.tracked, result)
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.tracked.request_dropped() {
            let _ = self.worker.finish(
                &self.tracked,
                Err(RemoteError {
                    kind: RemoteErrorKind::Dropped,
                    message: format!("request {} was dropped without an answer", self.tracked.id),
                }),
            );
        }
    }
}

/// A snapshot of one request in flight, from [`Worker::requests`].
///
/// [`Worker::requests`]: crate::Worker::requests
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The request's id.
    pub id: RequestId,
    /// When the caller enqueued it.
    pub created_at: SystemTime,
    /// Whether the caller has cancelled it.
    pub cancelled: bool,
}

/// Sends a response for a tracked request; shared by the handler wrapper.
pub(crate) fn response(id: RequestId, result: Result<Bytes, RemoteError>) -> Message {
    Message::Response {
        id,
        stream: false,
        result,
    }
}
