//! The byte streams on one worker's connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use drover_proto::{Chunk, ChunkSender, RequestId};
use tokio::sync::Semaphore;

/// Streams in flight on one connection: those arriving (answers' streams)
/// and those being sent (requests' streams, with their credit).
#[derive(Debug, Default)]
pub(crate) struct Streams {
    incoming: Mutex<HashMap<RequestId, ChunkSender>>,
    outgoing: Mutex<HashMap<RequestId, Arc<Semaphore>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Streams {
    /// Registers an arriving stream.
    pub(crate) fn receive(&self, id: RequestId, chunks: ChunkSender) {
        lock(&self.incoming).insert(id, chunks);
    }

    /// Hands a chunk to an arriving stream (dropped if its reader is gone);
    /// `last` forgets the stream.
    pub(crate) fn deliver(&self, id: RequestId, chunk: Chunk, last: bool) {
        let mut incoming = lock(&self.incoming);
        if let Some(chunks) = incoming.get(&id) {
            let _ = chunks.send(chunk);
        }
        if last {
            incoming.remove(&id);
        }
    }

    /// Registers a stream about to be sent, with its credit.
    pub(crate) fn send(&self, id: RequestId, credit: Arc<Semaphore>) {
        lock(&self.outgoing).insert(id, credit);
    }

    /// Adds credit to a stream being sent.
    pub(crate) fn credit(&self, id: RequestId, bytes: u32) {
        if let Some(credit) = lock(&self.outgoing).get(&id) {
            credit.add_permits(bytes as usize);
        }
    }

    /// Stops a stream being sent (its receiver wants no more, or it ended).
    pub(crate) fn stop(&self, id: RequestId) {
        if let Some(credit) = lock(&self.outgoing).remove(&id) {
            credit.close();
        }
    }

    /// The connection is gone: every arriving stream ends with an error
    /// saying why, every stream being sent stops.
    pub(crate) fn cut(&self, why: &str) {
        for (_, chunks) in lock(&self.incoming).drain() {
            let _ = chunks.send(Chunk::Abort(why.to_owned()));
        }
        for (_, credit) in lock(&self.outgoing).drain() {
            credit.close();
        }
    }
}
