//! One task per worker process: spawn, handshake, serve the connection,
//! reap.
//!
//! The task owns the `Child` and the read half of the socket; a second task
//! writes frames. The process ends in exactly one place, the bottom of
//! [`run`], where `Child::wait` reaps it and the pool settles what it held.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use drover_proto::{
    fdio::DescriptorsLost, FrameReader, HandshakeError, Opening, ProtocolError, Streams,
    SupervisorEnd, ToSupervisor, Welcome, WhenWoken, WriterEnd,
};
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use crate::builder::Limits;
use crate::error::{Error, HandshakeFailure, Violation};
use crate::event::{Event, ExitReason, Termination, WorkerExit};
use crate::health::read_rss;
use crate::lifecycle::{guarded, panic_message, Kill};
use crate::output::{self, Stream, Tail};
use crate::pool::{Answer, AnswerBatch, Launch, Shared};
use crate::process::{kill_orphans, Process};

/// The connection's read side: what the worker says.
type Reader = FrameReader<ToSupervisor>;

/// How long a worker that closed its socket unasked has to exit before it
/// is killed.
const CLOSED_SOCKET_GRACE: Duration = Duration::from_secs(2);

/// How long, after a worker is reaped, its output pipes may take to reach
/// their end.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// Starts the task of worker `id` in slot `index`.
///
/// Whatever happens inside it, the pool hears of the end: a panic of the
/// connection task kills the process (and its group) and settles the
/// worker as any death is settled.
pub(crate) fn launch(shared: &Arc<Shared>, launch: Launch) {
    let Launch { id, index, initial } = launch;
    // The pid, once the process is registered with the pool.
    let registered = Arc::new(AtomicU32::new(0));
    let task = AssertUnwindSafe(run(shared.clone(), id, index, initial, registered.clone()));
    let pool = shared.clone();
    let task = async move {
        if let Err(panic) = task.catch_unwind().await {
            let detail = panic_message(&*panic);
            tracing::error!(
                worker_id = id,
                "the supervisor's connection task of a worker panicked: {detail}"
            );
            connection_panicked(
                &pool,
                id,
                index,
                initial,
                registered.load(Ordering::Acquire),
                detail,
            );
        }
    };
    shared.tracker.spawn_on(task, &shared.runtime);
}

/// Settles a worker whose connection task panicked: its `Child` was
/// dropped with the task (which kills it; tokio reaps it), its group is
/// killed, and the pool treats it as dead.
fn connection_panicked(
    shared: &Arc<Shared>,
    id: u64,
    index: u32,
    initial: bool,
    pid: u32,
    detail: String,
) {
    if pid == 0 {
        // Not registered yet: as a process that could not be started.
        let error = Error::Spawn {
            path: shared.spec().program.clone(),
            source: std::io::Error::other(format!("the task starting it panicked: {detail}")),
        };
        shared.spawn_failed(id, index, initial, error);
        return;
    }
    // Its `Child` went with the task and may be reaped already: the group
    // only, never a pid that may be another process's by now.
    kill_orphans(pid);
    shared.worker_exited(WorkerExit {
        worker_id: id,
        index,
        pid,
        termination: Termination::Signal(9),
        reason: ExitReason::TaskFailed {
            task: "connection",
            detail,
        },
        in_flight: Vec::new(),
        stderr_tail: Vec::new(),
    });
}

async fn run(shared: Arc<Shared>, id: u64, index: u32, initial: bool, registered: Arc<AtomicU32>) {
    // The settings at launch: a reload may replace them meanwhile.
    let spec = shared.spec();
    let started = match &spec.in_process {
        Some(main) => main
            .start()
            .map(|(process, stream)| (process, 0, stream, None, None, Default::default(), None))
            .map_err(|source| Error::Spawn {
                path: spec.program.clone(),
                source,
            }),
        None => shared.spawner.spawn(&spec).await.map(|spawned| {
            let process = Process::Os {
                child: spawned.child,
                pid: spawned.pid,
            };
            let pipes = (spawned.stderr, spawned.stdout);
            let sandbox = spawned.sandbox;
            (
                process,
                spawned.pid,
                spawned.stream,
                pipes.0,
                pipes.1,
                sandbox,
                spawned.arenas,
            )
        }),
    };
    // `_sandbox` (the worker's cgroup, ...) lives until this task ends,
    // after the reap.
    let (mut child, pid, stream, stderr, stdout, _sandbox, arenas) = match started {
        Ok(started) => started,
        Err(error) => {
            tracing::error!(worker_id = id, "{error}");
            shared.spawn_failed(id, index, initial, error);
            return;
        }
    };
    let kill = Kill::default();
    let tail: Tail = Arc::default();
    let capture = shared.config.capture_output;
    let mut drains = Vec::new();
    if let Some(stderr) = stderr {
        let task = output::drain(
            stderr,
            Stream::Stderr,
            pid,
            shared.name.clone(),
            capture,
            Some(tail.clone()),
        );
        let task = guarded(kill.clone(), "output", task);
        drains.push(shared.tracker.spawn_on(task, &shared.runtime));
    }
    if let Some(stdout) = stdout {
        let task = output::drain(
            stdout,
            Stream::Stdout,
            pid,
            shared.name.clone(),
            capture,
            None,
        );
        let task = guarded(kill.clone(), "output", task);
        drains.push(shared.tracker.spawn_on(task, &shared.runtime));
    }
    let max = shared.config.max_frame_length;
    let mut connection = Opening::<SupervisorEnd>::new(stream, max);
    if let Some(arenas) = arenas {
        connection.share_memory(arenas);
    }
    let streams = connection.streams().clone();
    shared.register(id, index, pid, kill.clone(), streams.clone());
    registered.store(pid, Ordering::Release);
    let missing = crate::sandbox::unenforced(&spec.limits);
    if !missing.is_empty() {
        shared.emit(Event::SandboxUnenforced {
            worker_id: id,
            pid,
            missing,
        });
    }

    let mut violation: Option<ExitReason> = None;
    let deadline = Instant::now() + shared.config.start_timeout;
    let welcome = Welcome {
        worker_id: id,
        index,
        max_frame_length: max as u32,
        config: spec.config.clone(),
    };
    let handshake = tokio::select! {
        result = tokio::time::timeout_at(deadline, handshake(&mut connection, welcome, &shared, id, pid)) => {
            match result {
                Ok(result) => result,
                Err(_) => Err(HandshakeFailure::Timeout { timeout: shared.config.start_timeout }),
            }
        }
        // Killed while starting (the pool is stopping): no error to report.
        _ = kill.cancelled() => Ok(()),
    };
    let mut reader = None;
    if let Err(failure) = handshake {
        // Give an exiting process a moment to be reaped, so the error can
        // say how it ended; then kill it.
        let failure = match failure {
            HandshakeFailure::Protocol(ProtocolError::Io(_))
            | HandshakeFailure::Protocol(ProtocolError::Truncated { .. }) => {
                exited_during_handshake(&mut child, deadline)
                    .await
                    .unwrap_or(failure)
            }
            other => other,
        };
        // Why it could not start is likely the last thing it wrote.
        let failure = match failure {
            HandshakeFailure::Exited { status, .. } => {
                for drain in drains.drain(..) {
                    let _ = tokio::time::timeout(OUTPUT_GRACE, drain).await;
                }
                let stderr = tail.lock().unwrap_or_else(|e| e.into_inner());
                HandshakeFailure::Exited {
                    status,
                    stderr: stderr.iter().cloned().collect(),
                }
            }
            other => other,
        };
        violation = Some(ExitReason::Handshake {
            detail: failure.to_string(),
        });
        if initial {
            shared.startup_failed(Error::Handshake {
                path: spec.program.clone(),
                pid,
                reason: failure,
            });
        } else {
            tracing::error!(
                pid,
                worker_id = id,
                "replacement worker failed its handshake: {failure}"
            );
        }
        child.kill();
    } else if !kill.is_cancelled() {
        let writer_kill = kill.clone();
        let on_end = move |end| writer_ended(pid, &writer_kill, end);
        let opened = connection.open(
            shared.config.outbox_limit(),
            &shared.tracker,
            &shared.runtime,
            on_end,
        );
        // Its handshake is done (whatever it set up is resident): sampled
        // now, no lock held, so its first `health()` is real.
        let arenas = spec.arenas_bytes();
        let rss = (pid != 0).then(|| read_rss(pid, arenas)).flatten();
        shared.worker_ready(id, opened.outbox, initial, rss);
        reader = Some(opened.reader);
    }

    let status = match &mut reader {
        // Serving: read what it says until it ends.
        Some(reader) => {
            serve(
                &shared,
                id,
                pid,
                &mut child,
                reader,
                &streams,
                &kill,
                &mut violation,
            )
            .await
        }
        // It failed its handshake (and was killed), or the pool stopped
        // while it started: only its end is left to see.
        None => {
            if violation.is_none() {
                child.kill();
            }
            child.wait().await
        }
    };
    let termination = match status {
        Ok(termination) => termination,
        Err(e) => {
            tracing::error!(pid, "cannot reap worker: {e}");
            Termination::Code(-1)
        }
    };
    // Grandchildren die with it: its process group goes too.
    child.kill_orphans();
    let reason = violation
        .or_else(|| kill.take_fault())
        .or_else(|| shared.stop_reason(id))
        .unwrap_or(ExitReason::Crashed);
    // Let the pipes deliver the last lines the process wrote (a grandchild
    // holding them open must not delay the report).
    for drain in drains {
        let _ = tokio::time::timeout(OUTPUT_GRACE, drain).await;
    }
    let stderr_tail: Vec<String> = tail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    let reason = match reason {
        ExitReason::Crashed => limit_hit(&spec.limits, termination, &stderr_tail)
            .or_else(|| crate::sandbox::seccomp_kill(&spec.limits, termination))
            .unwrap_or(ExitReason::Crashed),
        other => other,
    };
    shared.worker_exited(WorkerExit {
        worker_id: id,
        index,
        pid,
        termination,
        reason,
        in_flight: Vec::new(),
        stderr_tail,
    });
}

/// Reads the worker's messages until its process ends; returns its status.
// What one connection task holds, passed down rather than bundled: each
// is borrowed differently (the reader mutably, the rest shared).
#[allow(clippy::too_many_arguments)]
async fn serve(
    shared: &Arc<Shared>,
    id: u64,
    pid: u32,
    child: &mut Process,
    reader: &mut Reader,
    streams: &Streams,
    kill: &Kill,
    violation: &mut Option<ExitReason>,
) -> std::io::Result<Termination> {
    let mut killing = false;
    let mut eof = false;
    // Reused from one read to the next.
    let mut frames = Vec::with_capacity(BATCH);
    let mut answers = AnswerBatch::default();
    // Set when the socket closed unasked: the process gets a moment to exit.
    let mut kill_at: Option<Instant> = None;
    loop {
        if eof {
            // Only its end is left to see.
            tokio::select! {
                status = child.wait() => return status,
                _ = kill.cancelled(), if !killing => {
                    killing = true;
                    child.kill();
                }
                _ = sleep_until(kill_at), if !killing && kill_at.is_some() => {
                    killing = true;
                    child.kill();
                }
            }
            continue;
        }
        // Reading: frames are the hot path, woken for every batch; the
        // process's end and a kill are polled only when they wake (see
        // `WhenWoken`), not once per batch.
        let woke = {
            let rare = std::pin::pin!(async {
                tokio::select! {
                    status = child.wait() => Woke::Exited(status),
                    _ = kill.cancelled(), if !killing => Woke::Kill,
                }
            });
            let mut rare = WhenWoken::new(rare);
            loop {
                tokio::select! {
                    biased;
                    woke = &mut rare => break woke,
                    () = next_batch(reader, &mut frames) => {
                        let full = frames.len() >= BATCH;
                        match judge(&mut frames, reader, streams, shared, id, pid, &mut answers) {
                            Verdict::Continue => {}
                            Verdict::Closed => break Woke::Closed,
                            Verdict::Violation(detail) => break Woke::Violation(detail),
                        }
                        if full {
                            // More may be waiting: first let the callers
                            // these answers woke run, so that their next
                            // requests go out while this worker's later
                            // answers are read (see `BATCH`).
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }
        };
        match woke {
            Woke::Exited(status) => {
                // Answers it wrote just before exiting may still sit in the
                // socket: read them before settling its requests.
                let drain = async {
                    loop {
                        next_batch(reader, &mut frames).await;
                        match judge(&mut frames, reader, streams, shared, id, pid, &mut answers) {
                            Verdict::Continue => continue,
                            Verdict::Closed => return None,
                            Verdict::Violation(detail) => return Some(detail),
                        }
                    }
                };
                if let Ok(Some(detail)) = tokio::time::timeout(CLOSED_SOCKET_GRACE, drain).await {
                    tracing::error!(pid, worker_id = id, "worker broke the protocol: {detail}");
                    *violation = Some(ExitReason::ProtocolViolation {
                        detail: detail.to_string(),
                    });
                }
                return status;
            }
            Woke::Kill => {
                killing = true;
                child.kill();
            }
            Woke::Closed => {
                // The socket closed or failed: the process is on its way
                // out. A worker asked to stop gets the pool's grace; one
                // that was not, a short one.
                eof = true;
                if shared.stop_reason(id).is_none() {
                    kill_at = Some(Instant::now() + CLOSED_SOCKET_GRACE);
                }
            }
            Woke::Violation(detail) => {
                tracing::error!(pid, worker_id = id, "worker broke the protocol: {detail}");
                *violation = Some(ExitReason::ProtocolViolation {
                    detail: detail.to_string(),
                });
                eof = true;
                killing = true;
                child.kill();
            }
        }
    }
}

/// What ends a stretch of reading in [`serve`].
enum Woke {
    /// The process ended, so.
    Exited(std::io::Result<Termination>),
    /// The pool asked for it to be killed.
    Kill,
    /// The socket closed or failed.
    Closed,
    /// It broke the protocol, so.
    Violation(Violation),
}

/// Reads a crash as a resource limit at work, where the way it died fits
/// a limit that was set.
fn limit_hit(
    limits: &Limits,
    termination: Termination,
    stderr_tail: &[String],
) -> Option<ExitReason> {
    const SIGABRT: i32 = 6;
    const SIGKILL: i32 = 9;
    const SIGSEGV: i32 = 11;
    const SIGXCPU: i32 = 24;
    if let Some(seconds) = limits.cpu_seconds {
        if matches!(
            termination,
            Termination::Signal(SIGXCPU) | Termination::Signal(SIGKILL)
        ) {
            return Some(ExitReason::LimitExceeded {
                limit: format!("CPU time of {seconds} s (RLIMIT_CPU)"),
            });
        }
    }
    if let Some(bytes) = limits.address_space {
        let out_of_memory = stderr_tail
            .iter()
            .any(|line| line.contains("memory allocation") || line.contains("out of memory"));
        if out_of_memory
            || matches!(
                termination,
                Termination::Signal(SIGABRT) | Termination::Signal(SIGSEGV)
            )
        {
            return Some(ExitReason::LimitExceeded {
                limit: format!("address space of {bytes} bytes (RLIMIT_AS)"),
            });
        }
    }
    None
}

/// What one read from a worker's socket means.
enum Verdict {
    /// A message, handled.
    Continue,
    /// The socket closed (or failed): the process is ending.
    Closed,
    /// The worker broke the protocol, as described.
    Violation(Violation),
}

/// The frames of one batch: a message, an error, or the end (`None`).
type Frames = Vec<Option<Result<ToSupervisor, ProtocolError>>>;

/// At most this many frames are handled per batch, so that a flood of
/// answers from one worker still lets its task's other duties run; after
/// a full batch the task yields to the rest of the runtime. Without that
/// yield the connection read every answer waiting before any caller it
/// woke could send its next request, so the workers waited while the
/// supervisor settled a whole socketful, and the supervisor waited while
/// they answered: at 64 B, C = 256 its thread was 16% idle. Yielding:
/// 6% to 18% more requests per second in four sets of alternating runs,
/// level at 4 KiB.
const BATCH: usize = 64;

/// Waits for the next frame, then takes every frame that is ready without
/// waiting (up to [`BATCH`]) into `frames`; an error or the end of the
/// stream closes the batch.
fn next_batch<'a>(
    reader: &'a mut Reader,
    frames: &'a mut Frames,
) -> impl std::future::Future<Output = ()> + 'a {
    std::future::poll_fn(move |cx| loop {
        match reader.poll_next_unpin(cx) {
            Poll::Pending if frames.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(()),
            Poll::Ready(frame) => {
                let last = !matches!(frame, Some(Ok(_)));
                frames.push(frame);
                if last || frames.len() >= BATCH {
                    return Poll::Ready(());
                }
            }
        }
    })
}

/// Handles a batch of frames in order (answers together, under one lock)
/// and says what they mean for the connection. Leaves `frames` empty.
fn judge(
    frames: &mut Frames,
    reader: &Reader,
    streams: &Streams,
    shared: &Arc<Shared>,
    id: u64,
    pid: u32,
    answers: &mut AnswerBatch,
) -> Verdict {
    let mut verdict = Verdict::Continue;
    for frame in frames.drain(..) {
        verdict = match frame {
            Some(Ok(_)) if reader.get_ref().pending_fds() > 0 => {
                Verdict::Violation(Violation::Descriptors)
            }
            Some(Ok(ToSupervisor::Response { id, stream, result })) => {
                answers.answers.push(Answer { id, stream, result });
                continue;
            }
            Some(Ok(message)) => {
                // Answers read before this message are settled first (an
                // answer registers the stream that may follow it). Stream
                // frames go to this connection's streams, never through
                // the pool's lock.
                match shared
                    .on_answers(id, pid, answers)
                    .and_then(|()| shared.on_message(id, pid, message, streams))
                {
                    Ok(()) => continue,
                    Err(detail) => Verdict::Violation(detail),
                }
            }
            // Truncated ancillary data: descriptors were lost on the way.
            Some(Err(ProtocolError::Io(e))) if DescriptorsLost::is(&e) => {
                Verdict::Violation(Violation::DescriptorsLost(DescriptorsLost))
            }
            Some(Err(ProtocolError::Io(_))) | None => Verdict::Closed,
            Some(Err(error)) => Verdict::Violation(error.into()),
        };
        break;
    }
    frames.clear();
    // Answers that arrived before the end (or a violation) still count.
    if let Err(detail) = shared.on_answers(id, pid, answers) {
        if !matches!(verdict, Verdict::Violation(_)) {
            verdict = Verdict::Violation(detail);
        }
    }
    verdict
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// If the process has exited (or exits before `deadline`), the failure is
/// "exited during the handshake" with its status.
async fn exited_during_handshake(
    child: &mut Process,
    deadline: Instant,
) -> Option<HandshakeFailure> {
    match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => Some(HandshakeFailure::Exited {
            status,
            stderr: Vec::new(),
        }),
        _ => None,
    }
}

/// `Hello`, `Welcome`, then wait for `Ready` (proto's
/// [`Opening::accept`]); what the worker says while it sets up reaches
/// the pool as after the handshake.
async fn handshake(
    connection: &mut Opening<SupervisorEnd>,
    welcome: Welcome,
    shared: &Arc<Shared>,
    id: u64,
    pid: u32,
) -> Result<(), HandshakeFailure> {
    let on_early = |message: ToSupervisor, streams: &Streams| {
        let got = message.name();
        shared
            .on_message(id, pid, message, streams)
            .map_err(|_| ProtocolError::UnexpectedMessage {
                expected: "Ready",
                got,
            })
    };
    let hello = match connection.accept(welcome, on_early).await {
        Ok(hello) => hello,
        Err(HandshakeError::Protocol(e)) => return Err(e.into()),
        // The connection ended (or the handshake failed in a way this
        // crate does not know yet): the worker is going.
        Err(_) => {
            return Err(ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "socket closed",
            ))
            .into())
        }
    };
    if hello.pid != pid {
        tracing::debug!(
            pid,
            hello_pid = hello.pid,
            "worker reports another pid (started through a wrapper?)"
        );
    }
    Ok(())
}

/// What the end of the writer of worker `pid`'s connection means for it.
fn writer_ended(pid: u32, kill: &Kill, end: WriterEnd) {
    match end {
        WriterEnd::Finished => {}
        // The worker is gone: its connection task sees the end.
        WriterEnd::Failed(ProtocolError::Io(e)) => {
            tracing::debug!(pid, "writing to worker stopped: {e}");
        }
        // It stopped reading while more was sent to it.
        WriterEnd::Failed(ProtocolError::Stalled { queued, limit }) => {
            tracing::error!(
                pid,
                queued,
                limit,
                "worker stopped reading its socket (max_queued_bytes passed); killing it"
            );
            kill.fault(ExitReason::Stalled { queued, limit });
        }
        // Nothing more can be written to it (a message could not be
        // encoded): a worker that can be told nothing must not be routed
        // requests; it is replaced.
        WriterEnd::Failed(e) => {
            tracing::error!(pid, "cannot write to worker, killing it: {e}");
            kill.fault(ExitReason::TaskFailed {
                task: "writer",
                detail: e.to_string(),
            });
        }
        WriterEnd::Panicked(detail) => {
            tracing::error!(
                pid,
                "the supervisor's writer task of a worker panicked: {detail}"
            );
            kill.fault(ExitReason::TaskFailed {
                task: "writer",
                detail,
            });
        }
        // A way of ending this crate does not know yet: the connection
        // cannot be trusted to carry more.
        other => {
            tracing::error!(pid, "the writer to a worker ended: {other:?}");
            kill.fault(ExitReason::TaskFailed {
                task: "writer",
                detail: format!("{other:?}"),
            });
        }
    }
}
