//! A worker's answer, as the caller receives it.

use std::time::SystemTime;

use bytes::Bytes;
use drover_proto::{decode_value, RequestId};
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Response {
    pub(crate) id: RequestId,
    pub(crate) created_at: SystemTime,
    pub(crate) pid: u32,
    pub(crate) worker_id: u64,
    pub(crate) payload: Bytes,
}

impl Response {
    /// The request's id (a uuid v4).
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// When the request was enqueued.
    pub fn created_at(&self) -> SystemTime {
        self.created_at
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
        decode_value(&self.payload).map_err(|source| Error::Decode {
            request_id: self.id,
            pid: self.pid,
            source,
        })
    }

    /// The raw answer bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.payload
    }
}
