//! A request as the worker's handler sees it.
//!
//! [`Request`] is the handler's face of a request; the rules by which it
//! is answered exactly once live with the registry (`registry.rs`).

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use drover_proto::{
    decode_value, encode_value, IncomingStream, RemoteError, RemoteErrorKind, RequestId, Task,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::AsyncRead;

use crate::answer_buffer::AnswerBuffer;
use crate::error::Error;
use crate::registry::Tracked;
use crate::shared::Shared;
use crate::socket::{FromPassedFd, PassedFd, PassedSocket};
use crate::ByteStream;

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
    worker: Arc<Shared>,
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
        worker: Arc<Shared>,
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
        self.worker.finish_with_stream(&self.tracked, bytes, source)
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

    /// The request's id (chosen by the supervisor: a uuid, version 4 in
    /// form, unique but not unpredictable).
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

    /// The payload decoded as the [`Task`] `T`: as [`data`](Request::data),
    /// for a request type whose answer type is tied to it (answer with
    /// [`respond_task`](Request::respond_task)).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] naming `T` when the payload is not a `T`.
    pub fn task<T: Task>(&self) -> Result<T, Error> {
        self.data::<T>()
    }

    /// Answers the task `T` with its output, and only with that type: a
    /// worker and a caller that share `T` cannot disagree on the answer.
    ///
    /// # Errors
    ///
    /// As [`respond`](Request::respond).
    pub fn respond_task<T: Task>(self, output: &T::Output) -> Result<(), Error> {
        self.respond(output)
    }

    /// The raw payload bytes, as the supervisor's caller encoded them.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The raw payload as shared bytes: a cheap reference to the frame it
    /// arrived in, no copy. Answering with it (`respond_bytes`) sends the
    /// same buffer back; with one that arrived in shared memory (below),
    /// or any slice of it, the answer goes back as where it lies there:
    /// this side copies nothing, and the supervisor copies it out.
    ///
    /// A payload of 20 KiB or more usually arrived in the shared memory
    /// the supervisor writes requests into, and these bytes are read where
    /// they lie there: the slot is given back when the last of them is
    /// dropped. Bytes kept for long keep their slot; once the arena is
    /// full of kept payloads, later ones come through the socket instead
    /// (slower, never lost).
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

    /// A buffer of `capacity` bytes to write a large answer into where it
    /// will cross to the supervisor, saving this side's copy of it; send it
    /// with [`respond_buffer`](Request::respond_buffer). See
    /// [`AnswerBuffer`] for when it is an ordinary buffer instead.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::Write;
    ///
    /// # async fn handler(req: drover_worker::Request) -> Result<(), drover_worker::Error> {
    /// let mut answer = req.answer_buffer(1 << 20);
    /// for line in 0..10_000 {
    ///     writeln!(answer, "line {line}").expect("an answer buffer never fails a write");
    /// }
    /// req.respond_buffer(answer)
    /// # }
    /// ```
    pub fn answer_buffer(&self, capacity: usize) -> AnswerBuffer {
        AnswerBuffer::new(capacity, self.worker.clone())
    }

    /// Answers the request with the bytes written into `buffer`, as
    /// [`respond_bytes`](Request::respond_bytes) would send them.
    ///
    /// # Errors
    ///
    /// As [`respond`](Request::respond).
    pub fn respond_buffer(self, buffer: AnswerBuffer) -> Result<(), Error> {
        self.answer_bytes(buffer.into_bytes())
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
        self.tracked.cancelled()
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
