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

/// A subscription to the supervisor's events, from
/// [`Worker::events`](crate::Worker::events): [`recv`] them one
/// at a time, or use it as a [`Stream`](futures::Stream) (`StreamExt`'s
/// `filter`, `take_while`, ...), which ends once the connection is closed. A
/// subscriber more than 1024 events behind loses the oldest ones; a
/// warning in the log says how many. Both are cancel safe: no event is
/// lost by dropping a future.
///
/// [`recv`]: drover_proto::Subscription::recv
pub type Events = drover_proto::Subscription<Event>;
