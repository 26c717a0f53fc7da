//! The serve loop: reads the supervisor's frames until a soft kill is
//! done, a hard kill comes or the connection ends, and starts each
//! request's handler.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use drover_proto::{
    timestamp_from_micros, FrameReader, HeldWakes, IncomingStream, ProtocolError, RemoteError,
    RemoteErrorKind, RequestId, ToSupervisor, ToWorker, WhenWoken,
};
use futures::{FutureExt, StreamExt};

use crate::drain::Drain;
use crate::error::Error;
use crate::events::Event;
use crate::handler::Handler;
use crate::registry::Tracked;
use crate::request::Request;
use crate::shared::{Serving, Shared};
use crate::signals::StopSignals;
use crate::socket::PassedFd;

/// How long `serve` waits for its last answers to be written before it
/// returns.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Most frames handled before their answers are written, while the
/// supervisor keeps the socket full. The supervisor settles answers 64 at
/// a time and lets their callers send again after each 64 (its
/// connection's `BATCH`): answers written as often keep it busy while
/// this worker handles the rest. At 64 B, C = 256, 64 instead of 256: 3%
/// to 5% more requests per second (medians of six alternating runs), level
/// at 4 KiB.
const MAX_HELD_FRAMES: usize = 64;

/// `Worker::serve`: says `Ready`, serves, and on the way out ends what
/// waits on the connection and flushes the last answers.
pub(crate) async fn serve<H: Handler>(
    shared: &Arc<Shared>,
    inline_first_poll: bool,
    handler: H,
) -> Result<(), Error> {
    let Serving {
        mut reader,
        mut signals,
    } = shared.take_serving().ok_or(Error::AlreadyServing)?;
    let handler = Arc::new(handler);
    shared.ready()?;
    let result = serve_loop(
        shared,
        inline_first_poll,
        &mut reader,
        &mut signals,
        handler,
    )
    .await;
    // Streams still being read end now, with an error: nothing more
    // will arrive for them.
    shared.streams.cut("connection gone");
    // Questions still waiting get `Disconnected`.
    shared.queries.clear();
    shared.flush(FLUSH_TIMEOUT).await;
    result
}

async fn serve_loop<H: Handler>(
    shared: &Arc<Shared>,
    inline_first_poll: bool,
    reader: &mut FrameReader<ToWorker>,
    signals: &mut StopSignals,
    handler: Arc<H>,
) -> Result<(), Error> {
    let mut drain = Drain::default();
    // Polled only when a signal wakes it, not every time a frame does.
    let stop_signal = std::pin::pin!(signals.next());
    let mut stop_signal = WhenWoken::new(stop_signal);
    // The writer's wake-ups, held while frames are handled and more may
    // be waiting to be read: the answers go out together, written here
    // (no turn of the writer's task for them, unless the socket is full),
    // once the socket is read dry or `MAX_HELD_FRAMES` were handled.
    let mut held: Option<HeldWakes> = None;
    let mut handled = 0;
    loop {
        // One reading of the holds for the check and for the wait below.
        let holds_empty = shared.stop.holds_empty();
        if drain.done_with(holds_empty, &shared.stop, &shared.registry) {
            return Ok(());
        }
        tokio::select! {
            frame = next_frame(reader, &mut held) => {
                let mut frame = frame;
                if held.is_none() {
                    held = Some(shared.hold_wakes());
                    handled = 0;
                }
                // Frames already read are handled in this turn, without
                // another round of the select.
                loop {
                    let message = match frame {
                        None => return Err(Error::Disconnected),
                        Some(Err(e)) => return Err(Error::Protocol(e)),
                        Some(Ok(message)) => message,
                    };
                    match message {
                        ToWorker::Request { id, created_at, fds, stream, payload } => {
                            let fds = match reader.get_mut().take_fds(usize::from(fds)) {
                                Some(fds) => fds,
                                None => {
                                    return Err(Error::Protocol(ProtocolError::MissingDescriptors {
                                        id,
                                        declared: usize::from(fds),
                                        arrived: reader.get_ref().pending_fds(),
                                    }))
                                }
                            };
                            let stream = stream.then(|| shared.incoming_stream(id));
                            let started = Started { id, created_at, payload, fds, stream };
                            start_request(shared, inline_first_poll, started, &handler).await;
                        }
                        ToWorker::Stream(frame) => shared.streams.on_frame(frame).map_err(Error::Protocol)?,
                        ToWorker::QueryReply { id, result } => shared.queries.answer(id, result),
                        ToWorker::Cancel { id } => shared.registry.cancel(id),
                        ToWorker::Event { name, payload } => {
                            // No subscriber is fine: the event is simply not wanted.
                            let _ = shared.events.send(Event::new(name, payload));
                        }
                        ToWorker::Ping { seq } => shared.send(ToSupervisor::Pong { seq })?,
                        ToWorker::SoftKill => {
                            drain.confirmed = true;
                            drain.start(&shared.stop, shared.tasks());
                        }
                        ToWorker::HardKill => {
                            if let Some(hook) = shared.stop.take_hard_kill_hook() {
                                hook();
                            }
                            return Ok(());
                        }
                        // The reader frees the arena slot and never hands a
                        // `Release` on.
                        ToWorker::Release { .. } => {}
                        ToWorker::Welcome(_) => {
                            return Err(Error::Protocol(ProtocolError::UnexpectedMessage {
                                expected: "a message after the handshake",
                                got: "Welcome",
                            }))
                        }
                    }
                    handled += 1;
                    match reader.next_buffered() {
                        Some(next) => frame = Some(next),
                        None => break,
                    }
                }
                if handled >= MAX_HELD_FRAMES {
                    held = None;
                }
            }
            signal = &mut stop_signal, if !drain.signalled => {
                held = None;
                // The first stop signal: tell the supervisor (even if a
                // soft kill already runs; it keeps its own reason),
                // then drain. Later ones are absorbed.
                drain.signalled = true;
                tracing::info!(signal, "told to stop by a signal; draining");
                shared.send(ToSupervisor::Stopping { signal })?;
                drain.start(&shared.stop, shared.tasks());
            }
            () = shared.stop.changed(holds_empty), if drain.started => held = None,
        }
    }
}

/// The next frame, letting go of the held wake-ups (which writes what they
/// held back) as soon as the socket has nothing more to read.
fn next_frame<'a>(
    reader: &'a mut FrameReader<ToWorker>,
    held: &'a mut Option<HeldWakes>,
) -> impl Future<Output = Option<Result<ToWorker, ProtocolError>>> + 'a {
    std::future::poll_fn(move |cx| {
        let next = reader.poll_next_unpin(cx);
        if next.is_pending() {
            *held = None;
        }
        next
    })
}

/// A request as it came off the wire.
struct Started {
    id: RequestId,
    created_at: u64,
    payload: Bytes,
    fds: Vec<OwnedFd>,
    stream: Option<IncomingStream>,
}

/// Runs one request's handler in a task of its own, on the worker's
/// tracker.
///
/// On a current-thread runtime the handler is first polled right here,
/// and only becomes a task if it does not finish at once: a handler
/// that answers without waiting (an echo, a lookup) then costs no task
/// at all. On such a runtime a task would share this thread anyway, so
/// nothing is lost; on a multi-thread runtime every handler gets a task,
/// so a handler that hogs its thread never holds up this loop (and its
/// answers to pings).
async fn start_request<H: Handler>(
    shared: &Arc<Shared>,
    inline_first_poll: bool,
    started: Started,
    handler: &Arc<H>,
) {
    let Started {
        id,
        created_at,
        payload,
        fds,
        stream,
    } = started;
    let tracked = Arc::new(Tracked::new(id, timestamp_from_micros(created_at)));
    shared.registry.insert(tracked.clone());
    // (Most requests pass no socket: skip the collect's setup for them.)
    let fds = if fds.is_empty() {
        Vec::new()
    } else {
        fds.into_iter()
            .map(|fd| PassedFd::new(fd, id, shared.clone()))
            .collect()
    };
    let request = Request::new(tracked.clone(), payload, fds, stream, shared.clone());
    let handler = handler.clone();
    let worker = shared.clone();
    let task = async move {
        let outcome = AssertUnwindSafe(handler.call(request)).catch_unwind().await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(RemoteError {
                kind: RemoteErrorKind::Failed,
                message: format!("handler failed on request {id}: {e}"),
            }),
            Err(panic) => Some(RemoteError {
                kind: RemoteErrorKind::Panicked,
                message: format!(
                    "handler panicked on request {id}: {}",
                    panic_message(&*panic)
                ),
            }),
        };
        let failed = failure.is_some();
        if tracked.handler_finished(failed) {
            let error = failure.unwrap_or_else(|| RemoteError {
                kind: RemoteErrorKind::Dropped,
                message: format!("request {id} was dropped without an answer"),
            });
            let _ = worker.finish(&tracked, Err(error));
        }
    };
    // A span per request, so that a handler's logs carry the request's id
    // (the supervisor's log of the same request names it too), made only
    // when a subscriber wants debug spans: then it is one cached check per
    // request. A span made and left unused is not free: where anything in
    // the process turns on tracing's `log` feature (sqlx does), every span
    // and every poll of the task it instruments also asks `log` whether it
    // wants them, which measured a third of the throughput of 64-byte
    // requests (drover-bench, 64 B, C = 256: 0.90 M against 1.36 M rps).
    let task = if tracing::enabled!(tracing::Level::DEBUG) {
        futures::future::Either::Left(tracing::Instrument::instrument(
            task,
            tracing::debug_span!("drover.request", %id, pid = std::process::id()),
        ))
    } else {
        futures::future::Either::Right(task)
    };
    if inline_first_poll {
        let mut task = Box::pin(task);
        let done = std::future::poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx).is_ready())).await;
        if !done {
            shared.tasks().spawn(task);
        }
    } else {
        shared.tasks().spawn(task);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
