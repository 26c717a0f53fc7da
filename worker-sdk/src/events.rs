//! Events from the supervisor and the subscriptions that receive them.

use bytes::Bytes;
use drover_proto::decode_value;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::error::Error;

/// How many supervisor events a slow subscriber may fall behind before it
/// loses the oldest.
const EVENT_BACKLOG: usize = 1024;

/// Where the serve loop publishes the supervisor's events, for every
/// subscription.
pub(crate) fn channel() -> broadcast::Sender<Event> {
    broadcast::channel(EVENT_BACKLOG).0
}

/// An event sent by the supervisor, to one worker or to all of them
/// (`broadcast`).
#[derive(Debug, Clone)]
pub struct Event {
    name: String,
    payload: Bytes,
}

impl Event {
    pub(crate) fn new(name: String, payload: Bytes) -> Event {
        Event { name, payload }
    }

    /// The event's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decodes the event's payload as a `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] naming `T` when the payload is not a `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(decode_value(&self.payload)?)
    }
}

/// A subscription to the supervisor's events, from [`Worker::events`].
///
/// [`Worker::events`]: crate::Worker::events
#[derive(Debug)]
pub struct Events {
    inner: drover_proto::Subscription<Event>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Events {
        Events {
            inner: drover_proto::Subscription::new(rx),
        }
    }

    /// The next event; `None` once the connection is closed.
    ///
    /// A subscriber that falls more than 1024 events behind loses the
    /// oldest ones; a warning says how many.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<Event> {
        self.inner.recv().await
    }
}

/// The same events as a [`Stream`](futures::Stream), ending when the
/// connection is closed: for `StreamExt` combinators (`filter`, `take_while`,
/// `timeout` ...). As cancel safe as [`recv`](Events::recv).
impl futures::Stream for Events {
    type Item = Event;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.get_mut().inner.poll_recv(cx)
    }
}
