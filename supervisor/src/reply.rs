//! Where a caller's answer is left for it: one slot per request, shared by
//! the request's future and the pool's entry for it.
//!
//! Hand-written for speed and size, in place of a general one-shot
//! channel: the answer is set once, under the pool's lock, and taken once,
//! so a slot is a small mutex around the answer and the caller's waker,
//! which it holds from the start (a request's future never polls its
//! answer before it was woken). Measured on the echo benchmark (64 B,
//! C = 256; callgrind counts of the whole supervisor, and `drover-bench
//! --memory`): with tokio's oneshot, 4,308 instructions per request and
//! 408 bytes per queued request; with futures' oneshot, 4,173 and 424;
//! with this slot, 4,170 and 392.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// A new slot: the pool's end and the caller's, which `waker` is woken
/// for (so the caller need not poll its answer before one can be there:
/// a request's future returns `Pending` right after queueing it).
pub(crate) fn slot<T>(waker: &Waker) -> (Reply<T>, Answer<T>) {
    let shared = Arc::new(Slot {
        inner: Mutex::new(Inner {
            value: None,
            waker: Some(waker.clone()),
            reply_gone: false,
        }),
    });
    (
        Reply {
            slot: Some(shared.clone()),
        },
        Answer { slot: shared },
    )
}

struct Slot<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The pool's end is gone, with or without an answer.
    reply_gone: bool,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Plain data: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pool's end: gives the answer once.
pub(crate) struct Reply<T> {
    /// Taken by `send`, so that its drop has nothing left to do.
    slot: Option<Arc<Slot<T>>>,
}

impl<T> Reply<T> {
    /// Leaves `value` for the caller and wakes it; a caller that left
    /// already never sees it.
    pub(crate) fn send(mut self, value: T) {
        if let Some(slot) = self.slot.take() {
            close(&slot, Some(value));
        }
    }

    /// Whether the caller left (its future was dropped): its answer would
    /// be thrown away.
    pub(crate) fn is_canceled(&self) -> bool {
        // Only the two ends hold a slot: one left means the caller did.
        self.slot
            .as_ref()
            .is_none_or(|slot| Arc::strong_count(slot) == 1)
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        // Unanswered: the caller hears that nothing will come.
        if let Some(slot) = self.slot.take() {
            close(&slot, None);
        }
    }
}

/// The pool's end is done with `slot`, leaving `value` if any: wakes the
/// caller.
fn close<T>(slot: &Slot<T>, value: Option<T>) {
    let waker = {
        let mut inner = slot.lock();
        inner.value = value;
        inner.reply_gone = true;
        inner.waker.take()
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl<T> std::fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("canceled", &self.is_canceled())
            .finish()
    }
}

/// The pool's end went without answering (the pool is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unanswered;

/// The caller's end: a future of the answer.
pub(crate) struct Answer<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Answer<T> {
    /// The answer if it came, without waiting: `Ok(None)` while it may
    /// still come.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Result<Option<T>, Unanswered> {
        let mut inner = self.slot.lock();
        match inner.value.take() {
            Some(value) => Ok(Some(value)),
            None if inner.reply_gone => Err(Unanswered),
            None => Ok(None),
        }
    }
}

impl<T> Future for Answer<T> {
    type Output = Result<T, Unanswered>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.slot.lock();
        if let Some(value) = inner.value.take() {
            return Poll::Ready(Ok(value));
        }
        if inner.reply_gone {
            return Poll::Ready(Err(Unanswered));
        }
        match &mut inner.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> std::fmt::Debug for Answer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_answer_sent_from_another_task_wakes_the_caller() {
        let (reply, answer) = slot::<u32>(Waker::noop());
        let caller = tokio::spawn(answer);
        tokio::task::yield_now().await;
        reply.send(7);
        let got = tokio::time::timeout(Duration::from_secs(10), caller)
            .await
            .expect("the caller was woken")
            .unwrap();
        assert_eq!(got, Ok(7));
    }

    #[tokio::test]
    async fn a_reply_dropped_unanswered_wakes_the_caller_with_unanswered() {
        let (reply, answer) = slot::<u32>(Waker::noop());
        let caller = tokio::spawn(answer);
        tokio::task::yield_now().await;
        drop(reply);
        let got = tokio::time::timeout(Duration::from_secs(10), caller)
            .await
            .expect("the caller was woken")
            .unwrap();
        assert_eq!(got, Err(Unanswered));
    }

    #[test]
    fn an_answer_sent_before_the_first_poll_is_there_and_a_caller_that_left_is_seen() {
        let (reply, mut answer) = slot::<u32>(Waker::noop());
        assert!(!reply.is_canceled());
        assert_eq!(answer.try_recv(), Ok(None));
        reply.send(3);
        assert_eq!(answer.try_recv(), Ok(Some(3)));
        assert_eq!(
            answer.try_recv(),
            Err(Unanswered),
            "taken once, and the end is gone"
        );

        let (reply, answer) = slot::<u32>(Waker::noop());
        drop(answer);
        assert!(reply.is_canceled());
        reply.send(1); // thrown away, without a panic
    }
}
