//! A worker's answer, as the caller receives it.

use std::time::SystemTime;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use drover_proto::IncomingStream;
use drover_proto::RequestId;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A byte stream that came with an answer (or goes with a request's
/// worker): an `AsyncRead`.
pub use drover_proto::IncomingStream as ByteStream;

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Response {
    pub(crate) id: RequestId,
    /// Microseconds since the Unix epoch.
    pub(crate) created_at: u64,
    pub(crate) pid: u32,
    pub(crate) worker_id: u64,
    pub(crate) payload: Bytes,
    /// The answer's byte stream, until taken.
    pub(crate) stream: Option<Arc<Mutex<Option<IncomingStream>>>>,
}

impl Response {
    /// The request's id (a uuid, version 4 in form: unique, not
    /// unpredictable; see [`RequestId`]).
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// When the request was enqueued.
    pub fn created_at(&self) -> SystemTime {
        drover_proto::timestamp_from_micros(self.created_at)
    }

    /// The pid of the worker that answered.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The id of the worker that answered.
    pub fn worker_id(&self) -> u64 {
        self.worker_id
    }

    /// Decodes the answer as a `T` (`()` for an `ack`).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`], naming `T`, the request and the worker, when the
    /// answer is not a `T`. The pool is unaffected.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        crate::error::decode_from(&self.payload, self.id, self.pid)
    }

    /// Takes the byte stream the worker sent after its answer
    /// (`Request::respond_with_stream`): an `AsyncRead`. `None` if it sent
    /// none, or the stream was taken already (clones share it).
    ///
    /// The stream arrives as it is read, a window at a time, so it can be
    /// larger than memory. If the worker dies or aborts it, the read ends
    /// with an error naming the worker; dropping it early tells the worker
    /// to stop.
    pub fn stream(&self) -> Option<ByteStream> {
        self.stream
            .as_ref()
            .and_then(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).take())
    }

    /// The raw answer bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.payload
    }
}
