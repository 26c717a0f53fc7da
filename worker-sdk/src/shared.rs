//! The state every handle of one worker shares: the connection's sending
//! side, the registries, the stop state and the worker's tasks.
//!
//! [`Worker`](crate::Worker), [`Request`](crate::Request) and
//! [`PassedFd`](crate::PassedFd) each hold an `Arc<Shared>`. Each field
//! that is a concern of its own is a type of its own module, with its own
//! rules; what is here is what combines them (an answer is queued on the
//! outbox, then leaves the registry, then may wake a drain).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drover_proto::codec::max_payload;
use drover_proto::{
    new_credit, pump, Connection, FrameReader, IncomingStream, Outbox, Outgoing, RemoteError,
    RequestId, Streams, ToSupervisor, ToWorker, Welcome, WorkerEnd,
};
use tokio::io::AsyncRead;
use tokio::sync::{broadcast, oneshot};
use tokio_util::task::TaskTracker;

use crate::drain::StopState;
use crate::error::Error;
use crate::events::Event;
use crate::queries::Queries;
use crate::registry::{response, Registry, Tracked};
use crate::signals::StopSignals;

/// What `serve` takes, once: the read side of the connection and the stop
/// signals listened to since `connect`.
#[derive(Debug)]
pub(crate) struct Serving {
    pub(crate) reader: FrameReader<ToWorker>,
    pub(crate) signals: StopSignals,
}

/// State shared by the [`Worker`](crate::Worker) handles, the requests and
/// the worker's tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    welcome: Welcome,
    out: Outbox<ToSupervisor>,
    /// Every task the worker starts: the writer, handlers that wait,
    /// answer streams, the soft-kill hook.
    tasks: TaskTracker,
    serving: Mutex<Option<Serving>>,
    /// The sockets the pool shares with every worker, until taken.
    shared_sockets: Mutex<Vec<Option<std::os::fd::OwnedFd>>>,
    /// The requests in flight.
    pub(crate) registry: Registry,
    /// Streams coming in (a request's) and going out (an answer's): the
    /// connection's registry.
    pub(crate) streams: Arc<Streams>,
    /// The supervisor's events, for every subscription.
    pub(crate) events: broadcast::Sender<Event>,
    /// Questions asked of the supervisor, waiting for its answer.
    pub(crate) queries: Queries,
    /// Busy, the hooks, and what a soft kill waits for.
    pub(crate) stop: StopState,
}

impl Shared {
    /// The worker's state once its connection is open: `connection`'s
    /// reader waits in `serving` for `serve`, its writer runs on `tasks`.
    pub(crate) fn new(
        welcome: Welcome,
        connection: Connection<WorkerEnd>,
        tasks: TaskTracker,
        signals: StopSignals,
        shared_sockets: Vec<std::os::fd::OwnedFd>,
    ) -> Shared {
        let Connection {
            reader,
            outbox,
            streams,
            ..
        } = connection;
        Shared {
            welcome,
            out: outbox,
            tasks,
            serving: Mutex::new(Some(Serving { reader, signals })),
            shared_sockets: Mutex::new(shared_sockets.into_iter().map(Some).collect()),
            registry: Registry::default(),
            streams,
            events: crate::events::channel(),
            queries: Queries::default(),
            stop: StopState::default(),
        }
    }

    pub(crate) fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The frame limit agreed with the supervisor.
    pub(crate) fn max_frame_length(&self) -> usize {
        self.welcome.max_frame_length as usize
    }

    /// The largest payload that fits a frame with its message around it.
    pub(crate) fn max_payload(&self) -> usize {
        max_payload(self.max_frame_length())
    }

    /// Takes shared socket `index`, if there is one not yet taken.
    pub(crate) fn take_shared_socket(&self, index: usize) -> Option<std::os::fd::OwnedFd> {
        self.shared_sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)?
            .take()
    }

    /// The worker's tasks.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// What `serve` needs, the first time only.
    pub(crate) fn take_serving(&self) -> Option<Serving> {
        self.serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// A slot of the answers arena, if there is one with that much room.
    pub(crate) fn reserve_shared(&self, capacity: usize) -> Option<drover_proto::shm::SharedSlot> {
        self.out.reserve_shared(capacity)
    }

    /// Holds back the writer's wake-ups while the serve loop handles the
    /// frames it has read; dropping it writes their answers at once.
    pub(crate) fn hold_wakes(&self) -> drover_proto::HeldWakes {
        self.out.hold_wakes()
    }

    /// Queues `message` for the supervisor.
    pub(crate) fn send(&self, message: ToSupervisor) -> Result<(), Error> {
        self.out
            .send(Outgoing::Frame(message))
            .map_err(|_| Error::Disconnected)
    }

    /// Waits (at most `timeout`) until every frame queued so far has been
    /// written.
    pub(crate) async fn flush(&self, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.out.send(Outgoing::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }

    /// Says `Ready`: not busy (any more), and a drain waiting for that
    /// re-checks.
    pub(crate) fn ready(&self) -> Result<(), Error> {
        self.stop.set_busy(false);
        let sent = self.send(ToSupervisor::Ready);
        self.stop.wake();
        sent
    }

    /// Says `Busy`.
    pub(crate) fn busy(&self) -> Result<(), Error> {
        self.stop.set_busy(true);
        self.send(ToSupervisor::Busy)
    }

    /// Registers the incoming stream of request `id`.
    pub(crate) fn incoming_stream(&self, id: RequestId) -> IncomingStream {
        let (stream, chunks) =
            IncomingStream::new(id, self.out.streams(), "the supervisor".to_owned());
        self.streams.receive(id, chunks);
        stream
    }

    /// Sends the answer of a tracked request and forgets the request.
    pub(crate) fn finish(
        &self,
        tracked: &Tracked,
        result: Result<Bytes, RemoteError>,
    ) -> Result<(), Error> {
        self.answer(tracked, response(tracked.id, result))
    }

    /// Sends the answer of a tracked request, announcing a stream after
    /// it, forgets the request, and sends `source` as that stream in a
    /// task of its own, within the supervisor's credit.
    pub(crate) fn finish_with_stream<R>(
        self: &Arc<Self>,
        tracked: &Tracked,
        payload: Bytes,
        source: R,
    ) -> Result<(), Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let id = tracked.id;
        let credit = new_credit();
        self.streams.send(id, credit.clone());
        // Held from before the answer leaves the registry, so a drain never
        // sees neither the request nor its stream.
        let shared = self.clone();
        let pump = self.stop.hold(async move {
            if let Err(e) = pump(source, id, shared.out.streams(), credit).await {
                tracing::debug!(%id, "answer stream ended early: {e}");
            }
            shared.streams.stop(id);
        });
        self.answer(
            tracked,
            ToSupervisor::Response {
                id,
                stream: true,
                result: Ok(payload),
            },
        )?;
        self.tasks.spawn(pump);
        Ok(())
    }

    fn answer(&self, tracked: &Tracked, message: ToSupervisor) -> Result<(), Error> {
        // Queue the answer before the request leaves the registry: a soft
        // kill waiting for the registry to empty then flushes after it.
        let queued = self.out.queue(Outgoing::Frame(message));
        let alone = self.registry.remove(tracked.id) == 0;
        self.stop.wake_if_stopping();
        let wake = queued.map_err(|_| Error::Disconnected)?;
        // The last answer the supervisor waits for goes out from here, with
        // no turn of the writer's task (the serve loop's answers wait for it
        // to write them together, and owe no wake-up here).
        if alone {
            wake.direct().wake();
        }
        Ok(())
    }
}
