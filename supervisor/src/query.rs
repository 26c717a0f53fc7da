//! Questions workers ask the supervisor (`Worker::ask`), and their answers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use drover_proto::{encode_value, Outbox, RemoteError, RemoteErrorKind, ToWorker};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

type Handler = dyn Fn(Query) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// The application's answerer of queries, set with
/// [`Builder::on_query`](crate::Builder::on_query).
#[derive(Clone)]
pub(crate) struct QueryHandler(Arc<Handler>);

impl QueryHandler {
    pub(crate) fn new<F, Fut>(handler: F) -> QueryHandler
    where
        F: Fn(Query) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        QueryHandler(Arc::new(move |query| Box::pin(handler(query))))
    }

    pub(crate) fn call(&self, query: Query) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        (self.0)(query)
    }
}

impl fmt::Debug for QueryHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QueryHandler")
    }
}

impl PartialEq for QueryHandler {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A question from a worker. Answer it once with [`reply`](Query::reply)
/// or [`fail`](Query::fail); dropped unanswered, the worker gets an error
/// saying so.
pub struct Query {
    id: u64,
    name: String,
    payload: Bytes,
    pid: u32,
    worker_id: u64,
    out: Option<Outbox<ToWorker>>,
    /// The largest answer that fits a frame.
    max_payload: usize,
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Query {
    pub(crate) fn new(
        id: u64,
        name: String,
        payload: Bytes,
        pid: u32,
        worker_id: u64,
        out: Outbox<ToWorker>,
        max_payload: usize,
    ) -> Query {
        Query {
            id,
            name,
            payload,
            pid,
            worker_id,
            out: Some(out),
            max_payload,
        }
    }

    /// What is asked.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The asking worker's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The asking worker's id.
    pub fn worker_id(&self) -> u64 {
        self.worker_id
    }

    /// Decodes the question as a `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] naming `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        crate::error::decode_from(&self.payload, drover_proto::RequestId::nil(), self.pid)
    }

    /// Answers with `value`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if it does not encode, [`Error::PayloadTooLarge`]
    /// if it is over the payload limit; the worker then gets an error
    /// saying so.
    pub fn reply<T: Serialize + ?Sized>(mut self, value: &T) -> Result<(), Error> {
        match encode_value(value) {
            Ok(bytes) if bytes.len() > self.max_payload => {
                let error = Error::PayloadTooLarge {
                    size: bytes.len(),
                    limit: self.max_payload,
                };
                self.send(Err(format!("the answer to query {:?}: {error}", self.name)));
                Err(error)
            }
            Ok(bytes) => {
                self.send(Ok(Bytes::from(bytes)));
                Ok(())
            }
            Err(e) => {
                self.send(Err(e.to_string()));
                Err(Error::Encode(e))
            }
        }
    }

    /// Answers with an error the worker sees as `Error::Query`.
    pub fn fail(mut self, error: impl fmt::Display) {
        self.send(Err(error.to_string()));
    }

    fn send(&mut self, result: Result<Bytes, String>) {
        if let Some(out) = self.out.take() {
            let result = result.map_err(|message| RemoteError {
                kind: RemoteErrorKind::Failed,
                message,
            });
            // The worker may be gone; then nobody is waiting.
            let _ = out.send_message(ToWorker::QueryReply {
                id: self.id,
                result,
            });
        }
    }
}

impl Drop for Query {
    fn drop(&mut self) {
        if self.out.is_some() {
            let message = format!(
                "the supervisor dropped query {:?} without an answer",
                self.name
            );
            self.send(Err(message));
        }
    }
}
