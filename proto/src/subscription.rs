//! A subscription to a broadcast of values, as a `Stream` and by `recv`.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::ReusableBoxFuture;

/// The values of a broadcast channel from the moment of subscribing: a
/// [`Stream`] that ends once the channel is closed, or [`recv`] one at a
/// time. A subscriber that fell behind loses the oldest values and the log
/// says how many, rather than the sender waiting for it.
///
/// Both sides' event subscriptions are built on it.
///
/// [`recv`]: Subscription::recv
pub struct Subscription<T> {
    /// The pending receive, which owns the receiver: kept across polls, so
    /// a value is never lost by dropping a `recv` future.
    next: ReusableBoxFuture<'static, (Option<T>, broadcast::Receiver<T>)>,
}

async fn receive<T: Clone>(mut rx: broadcast::Receiver<T>) -> (Option<T>, broadcast::Receiver<T>) {
    let value = crate::recv_lossy(&mut rx).await;
    (value, rx)
}

impl<T: Clone + Send + 'static> Subscription<T> {
    /// Subscribes through `rx`.
    pub fn new(rx: broadcast::Receiver<T>) -> Subscription<T> {
        Subscription {
            next: ReusableBoxFuture::new(receive(rx)),
        }
    }

    /// The next value; `None` once the channel is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no value is lost by dropping the future.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next value, as [`recv`](Subscription::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let (value, rx) = ready!(self.next.poll(cx));
        self.next.set(receive(rx));
        Poll::Ready(value)
    }
}

impl<T: Clone + Send + 'static> Stream for Subscription<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// Values arrive in order through `recv` and as a stream, a dropped
    /// `recv` loses none, and the stream ends when the sender goes.
    #[tokio::test]
    async fn values_arrive_and_the_stream_ends_with_the_channel() {
        let (tx, rx) = broadcast::channel(16);
        let mut subscription = Subscription::new(rx);
        // A receive polled once, then dropped, before anything is sent.
        assert!(futures::poll!(Box::pin(subscription.recv())).is_pending());
        for i in 0..4 {
            tx.send(i).unwrap();
        }
        assert_eq!(subscription.recv().await, Some(0));
        drop(tx);
        let rest: Vec<i32> = subscription.collect().await;
        assert_eq!(rest, vec![1, 2, 3]);
    }
}
