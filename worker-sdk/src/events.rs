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
    rx: broadcast::Receiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Events {
        Events { rx }
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
        drover_proto::recv_lossy(&mut self.rx).await
    }
}
