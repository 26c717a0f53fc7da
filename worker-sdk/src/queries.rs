//! Questions asked of the supervisor (`Worker::ask`), waiting for its
//! answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use drover_proto::RemoteError;
use tokio::sync::oneshot;

/// What the supervisor answers to a question.
type Answer = Result<Bytes, RemoteError>;

/// The questions waiting for an answer, by the id the worker chose.
#[derive(Debug)]
pub(crate) struct Queries {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next: AtomicU64,
}

impl Default for Queries {
    fn default() -> Queries {
        Queries {
            waiting: Mutex::default(),
            next: AtomicU64::new(1),
        }
    }
}

impl Queries {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<Answer>>> {
        // Plain data: a panic elsewhere leaves it usable.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new question; it is forgotten when the returned
    /// [`Question`] drops.
    pub(crate) fn ask(&self) -> Question<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        Question {
            queries: self,
            id,
            answer: rx,
        }
    }

    /// Hands the supervisor's answer to question `id`, if it still waits.
    pub(crate) fn answer(&self, id: u64, answer: Answer) {
        let waiting = self.lock().remove(&id);
        if let Some(waiting) = waiting {
            // The asker may have given up; then nobody wants it.
            let _ = waiting.send(answer);
        }
    }

    /// The connection is gone: every question still waiting gets no
    /// answer.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

/// One question waiting for its answer; dropping it forgets the question,
/// and a late answer is dropped.
#[derive(Debug)]
pub(crate) struct Question<'a> {
    queries: &'a Queries,
    id: u64,
    answer: oneshot::Receiver<Answer>,
}

impl Question<'_> {
    /// The id the question goes to the supervisor with.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The supervisor's answer; `None` when the connection closed first.
    pub(crate) async fn answer(&mut self) -> Option<Answer> {
        (&mut self.answer).await.ok()
    }
}

impl Drop for Question<'_> {
    fn drop(&mut self) {
        self.queries.lock().remove(&self.id);
    }
}
