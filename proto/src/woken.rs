//! A future polled only once something woke it.
//!
//! A connection's loop waits on its socket and, beside it, on rare things:
//! the process exiting, a kill, a stop signal. `tokio::select!` polls every
//! branch each time the loop wakes, and at one request at a time the loop
//! wakes for every frame; polling a child's exit, a cancellation token and
//! two signal streams each time cost the supervisor about 900 instructions
//! and the worker about 850 per request (callgrind, the echo benchmark at
//! C = 1), most of them instruction-cache misses on a path that is never
//! taken. [`WhenWoken`] gives the inner future a waker of its own and polls
//! it only after that waker fired: otherwise a poll costs a waker
//! registration and one atomic swap.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// `future`, polled only when its own waker fired since its last poll (and
/// on the first poll).
#[derive(Debug)]
pub struct WhenWoken<F> {
    future: F,
    flag: Arc<Flag>,
    waker: Waker,
}

#[derive(Debug)]
struct Flag {
    woken: AtomicBool,
    outer: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.outer.wake();
    }
}

impl<F: Future + Unpin> WhenWoken<F> {
    /// Wraps `future` (pin it first if it is not `Unpin`:
    /// `WhenWoken::new(std::pin::pin!(f))`).
    pub fn new(future: F) -> WhenWoken<F> {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            outer: AtomicWaker::new(),
        });
        WhenWoken {
            future,
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future + Unpin> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is read: a wake-up between the two
        // wakes this caller again, so none is lost.
        this.flag.outer.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        Pin::new(&mut this.future).poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, and then wakes itself
    /// through the waker it was last given.
    struct Counted {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
    }

    impl Future for Counted {
        type Output = usize;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<usize> {
            let polls = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(polls)
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn the_inner_future_is_polled_first_and_then_only_after_its_waker_fired() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let mut gated = WhenWoken::new(Counted {
            polls: polls.clone(),
            ready: ready.clone(),
        });
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Not woken: many outer polls, no inner one, even once it could
        // finish.
        ready.store(true, Ordering::SeqCst);
        for _ in 0..10 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Its own waker fires: the next poll reaches it.
        gated.waker.wake_by_ref();
        assert_eq!(Pin::new(&mut gated).poll(&mut cx), Poll::Ready(2));
    }

    #[tokio::test]
    async fn a_wake_from_another_task_reaches_the_waiting_caller() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let waiter = notify.clone();
        let gated = WhenWoken::new(Box::pin(async move {
            waiter.notified().await;
            7
        }));
        let task = tokio::spawn(gated);
        tokio::task::yield_now().await;
        notify.notify_one();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the gated future finished")
            .unwrap();
        assert_eq!(got, 7);
    }
}
