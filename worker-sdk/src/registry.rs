//! The requests in flight and the rules by which each is answered exactly
//! once.
//!
//! A request is answered by whichever comes first of: the handler
//! (`respond`, `ack`, `fail`), the handler's failure (an error or a panic
//! before it answered), or the drop of an unanswered [`Request`] once its
//! handler is done. [`Tracked`] holds the state those three race on; the
//! one that wins sends the answer, the others send nothing.
//!
//! [`Request`]: crate::Request

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use drover_proto::{IdHasher, RemoteError, RequestId, ToSupervisor};
use tokio::sync::Notify;

/// What the SDK knows of a request in flight; shared by the [`Request`],
/// the task running its handler and the [`Registry`].
///
/// [`Request`]: crate::Request
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

    /// Resolves once the request is cancelled.
    pub(crate) async fn cancelled(&self) {
        loop {
            let woken = self.cancel_wake.notified();
            tokio::pin!(woken);
            // Register before checking, so a cancel in between is seen.
            woken.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            woken.await;
        }
    }

    /// Claims the right to answer; true exactly once.
    pub(crate) fn claim(&self) -> bool {
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
    pub(crate) fn request_dropped(&self) -> bool {
        let mut state = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        state.dropped = true;
        if !state.answered && state.handler_done {
            state.answered = true;
            return true;
        }
        false
    }
}

/// The requests received and not yet answered, by id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    in_flight: Mutex<HashMap<RequestId, Arc<Tracked>, IdHasher>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, Arc<Tracked>, IdHasher>> {
        // Plain data: a panic elsewhere leaves it usable.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks a request just received.
    pub(crate) fn insert(&self, tracked: Arc<Tracked>) {
        self.lock().insert(tracked.id, tracked);
    }

    /// Forgets an answered request; returns how many are still in flight.
    pub(crate) fn remove(&self, id: RequestId) -> usize {
        let mut in_flight = self.lock();
        in_flight.remove(&id);
        in_flight.len()
    }

    /// Fires the `cancelled()` of request `id`, if it is still in flight.
    pub(crate) fn cancel(&self, id: RequestId) {
        if let Some(tracked) = self.lock().get(&id) {
            tracked.cancel();
        }
    }

    /// How many requests are in flight.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The requests in flight, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<RequestInfo> {
        let mut list: Vec<RequestInfo> = self
            .lock()
            .values()
            .map(|t| RequestInfo {
                id: t.id,
                created_at: t.created_at,
                cancelled: t.is_cancelled(),
            })
            .collect();
        list.sort_by_key(|r| r.created_at);
        list
    }
}

/// A snapshot of one request in flight, from [`Worker::requests`].
///
/// [`Worker::requests`]: crate::Worker::requests
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// The request's id.
    pub id: RequestId,
    /// When the caller enqueued it.
    pub created_at: SystemTime,
    /// Whether the caller has cancelled it.
    pub cancelled: bool,
}

/// The answer to request `id`, with no stream after it.
pub(crate) fn response(id: RequestId, result: Result<Bytes, RemoteError>) -> ToSupervisor {
    ToSupervisor::Response {
        id,
        stream: false,
        result,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tracked(n: u128) -> Arc<Tracked> {
        Arc::new(Tracked::new(
            RequestId::from_u128(n),
            SystemTime::UNIX_EPOCH + Duration::from_secs(n as u64),
        ))
    }

    /// The handler answers: nobody else may, whatever happens next.
    #[test]
    fn an_answer_is_claimed_once() {
        let t = tracked(1);
        assert!(t.claim());
        assert!(!t.claim());
        assert!(!t.handler_finished(true));
        assert!(!t.request_dropped());
    }

    /// A handler that fails before answering: its task answers, with the
    /// error; the later drop does not.
    #[test]
    fn a_failed_handler_answers_once() {
        let t = tracked(1);
        assert!(t.handler_finished(true));
        assert!(!t.request_dropped());
        assert!(!t.claim());
    }

    /// A request dropped unanswered: whichever of the drop and the
    /// handler's end comes last answers, once.
    #[test]
    fn a_dropped_request_answers_once_in_either_order() {
        let t = tracked(1);
        assert!(!t.handler_finished(false));
        assert!(t.request_dropped());
        assert!(!t.claim());

        let t = tracked(2);
        assert!(!t.request_dropped());
        assert!(t.handler_finished(false));
        assert!(!t.claim());
    }

    /// A request kept alive after its handler returned may still answer.
    #[test]
    fn a_kept_request_answers_later() {
        let t = tracked(1);
        assert!(!t.handler_finished(false));
        assert!(t.claim());
        assert!(!t.request_dropped());
    }

    /// The registry lists requests oldest first, cancels by id (waking
    /// `cancelled()`), and forgets answered ones.
    #[tokio::test]
    async fn registry_tracks_cancels_and_forgets() {
        let registry = Registry::default();
        let (old, young) = (tracked(1), tracked(2));
        registry.insert(young.clone());
        registry.insert(old.clone());
        assert_eq!(registry.len(), 2);
        let ids: Vec<_> = registry.snapshot().iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![old.id, young.id]);

        let waiting = tokio::spawn({
            let young = young.clone();
            async move { young.cancelled().await }
        });
        tokio::task::yield_now().await;
        registry.cancel(young.id);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("cancelled() was not woken")
            .unwrap();
        let snapshot = registry.snapshot();
        assert!(!snapshot[0].cancelled && snapshot[1].cancelled);

        registry.remove(old.id);
        registry.remove(young.id);
        assert_eq!(registry.len(), 0);
        // Unknown ids change nothing.
        registry.cancel(old.id);
        registry.remove(old.id);
    }
}
