//! The raw parent: spawn the children, drive them from blocking threads,
//! reap them.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::FdFlags;

use super::slots::Slots;
use super::CHILD_ENV;
use crate::args::EchoOptions;
use crate::error::Error;
use crate::report::EchoReport;
use crate::stats::Latencies;

/// Buffer size of both directions of every socket.
const BUFFER: usize = 64 * 1024;

/// Runs the echo workload over `options.workers` raw children.
///
/// Children are always reaped: on success each exits at end of file once
/// its socket is closed; on an error path each is killed and reaped.
///
/// # Errors
///
/// [`Error::Raw`] when spawning or a socket fails,
/// [`Error::WrongAnswer`] for an answer of the wrong length,
/// [`Error::RawChild`] when a child exits with a failure.
pub fn run(options: &EchoOptions) -> Result<EchoReport, Error> {
    let program = std::env::current_exe().map_err(Error::CurrentExe)?;
    eprintln!(
        "drover-bench: raw, {} children, {} frames in flight per socket at most ({}), \
         {} requests of {} bytes, {} in flight",
        options.workers,
        options.per_worker(),
        if options.per_worker() == 1 {
            "one thread per socket in use"
        } else {
            "a writer and a reader thread per socket"
        },
        options.requests,
        options.payload,
        options.concurrency
    );
    let started = Instant::now();
    // Spawned one at a time from this thread, before any other thread
    // exists: see `RawChild::spawn` on why that matters.
    let mut children = Vec::with_capacity(options.workers);
    for _ in 0..options.workers {
        children.push(RawChild::spawn(&program)?);
    }
    for child in &mut children {
        child.first_frame()?;
    }
    let startup = started.elapsed();
    eprintln!(
        "drover-bench: children answering in {:.1} ms",
        startup.as_secs_f64() * 1e3
    );
    let outcome = drive(&children, options);
    let mut reaped = Ok(());
    for child in children {
        let finished = child.finish();
        if reaped.is_ok() {
            reaped = finished;
        }
    }
    let (elapsed, latencies) = outcome?;
    reaped?;
    EchoReport::new(options, startup, elapsed, latencies)
}

/// One raw child and the parent's end of its socket.
#[derive(Debug)]
struct RawChild {
    /// `None` once reaped.
    child: Option<Child>,
    stream: UnixStream,
}

impl RawChild {
    /// Starts a copy of `program` as a raw child.
    ///
    /// The pair is made close-on-exec (as std always does); only the
    /// child's end is then made inheritable, and closed here as soon as
    /// the child holds it. Children are spawned one by one from a single
    /// thread, so no other child can inherit that end meanwhile.
    fn spawn(program: &Path) -> Result<RawChild, Error> {
        let (ours, theirs) = UnixStream::pair().map_err(Error::raw("socketpair"))?;
        let theirs = OwnedFd::from(theirs);
        rustix::io::fcntl_setfd(&theirs, FdFlags::empty())
            .map_err(|e| Error::raw("clear close-on-exec")(e.into()))?;
        let child = Command::new(program)
            .env(CHILD_ENV, theirs.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(Error::raw("spawn child"))?;
        drop(theirs);
        Ok(RawChild {
            child: Some(child),
            stream: ours,
        })
    }

    /// Sends an empty frame and waits for its echo: the child is up.
    fn first_frame(&mut self) -> Result<(), Error> {
        self.stream
            .write_all(&0u32.to_be_bytes())
            .map_err(Error::raw("write first frame"))?;
        let mut header = [0u8; 4];
        self.stream
            .read_exact(&mut header)
            .map_err(Error::raw("read first answer"))?;
        match u32::from_be_bytes(header) {
            0 => Ok(()),
            got => Err(Error::WrongAnswer {
                index: 0,
                sent: 0,
                got: got as usize,
            }),
        }
    }

    /// Closes the socket (the child sees end of file and exits) and reaps
    /// the child.
    fn finish(mut self) -> Result<(), Error> {
        // Also wakes a child that still had frames to answer: its write
        // fails and it exits.
        let _ = self.stream.shutdown(Shutdown::Both);
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait().map_err(Error::raw("wait for child"))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::RawChild {
                pid: child.id(),
                status,
            })
        }
    }
}

impl Drop for RawChild {
    /// The error path (a later child failed to spawn or answer): kill and
    /// reap, so no process outlives the run.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Keeps at most `C` frames in flight over all sockets and at most
/// `ceil(C / W)` on each.
///
/// With more than one frame in flight per socket, each socket has a
/// writer and a reader thread: one thread alone could block writing a
/// large request while the child blocks writing an answer nobody reads.
/// With one frame per socket (`C <= W`) there is nothing to pipeline, and
/// a hand-off between two threads per request would be the dominant cost
/// of the "ceiling"; so `C` sockets each get one thread that writes a
/// request and reads its answer, and the other `W - C` children idle.
fn drive(children: &[RawChild], options: &EchoOptions) -> Result<(Duration, Latencies), Error> {
    let mut frame = Vec::with_capacity(4 + options.payload);
    frame.extend_from_slice(&(options.payload as u32).to_be_bytes());
    frame.extend_from_slice(&crate::payload::random(options.payload));
    let per_socket = options.per_worker();
    let used = children.len().min(options.concurrency);
    let lanes: Vec<Lane> = children[..used]
        .iter()
        .map(|child| Lane {
            stream: &child.stream,
            slots: Slots::new(per_socket),
        })
        .collect();
    let shared = Shared {
        frame: &frame,
        payload: options.payload,
        total: options.requests,
        per_lane: options.requests.div_ceil(used),
        next: AtomicUsize::new(0),
        in_flight: Slots::new(options.concurrency),
    };
    let started = Instant::now();
    let results: Vec<Result<Latencies, Error>> = thread::scope(|scope| {
        let shared = &shared;
        let threads: Vec<_> = lanes
            .iter()
            .map(|lane| {
                if per_socket == 1 {
                    return (None, scope.spawn(move || lane.ping_pong(shared)));
                }
                // Never full: the lane's slots keep fewer entries in it.
                let (sent_tx, sent_rx) = sync_channel(per_socket);
                let writer = scope.spawn(move || lane.write_requests(shared, sent_tx));
                let reader = scope.spawn(move || lane.read_answers(shared, sent_rx));
                (Some(writer), reader)
            })
            .collect();
        threads
            .into_iter()
            .map(|(writer, reader)| {
                let written = writer.map_or(Ok(()), join);
                let read = join(reader);
                written.and(read)
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut all = Latencies::with_capacity(options.requests);
    for latencies in results {
        all.merge(latencies?);
    }
    Ok((elapsed, all))
}

/// A thread's result; its panic is this thread's panic.
fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// What every thread shares.
#[derive(Debug)]
struct Shared<'a> {
    /// One whole request frame, header included.
    frame: &'a [u8],
    payload: usize,
    total: usize,
    /// Latencies one reader expects to record, to size its buffer.
    per_lane: usize,
    /// The next request number to send.
    next: AtomicUsize,
    /// Frames in flight over all sockets, at most `C`.
    in_flight: Slots,
}

impl Shared<'_> {
    /// Stops every thread after a failure.
    fn abort(&self, lane: &Lane) {
        self.in_flight.close();
        lane.slots.close();
        // The child sees end of file, this lane's other thread an error.
        let _ = lane.stream.shutdown(Shutdown::Both);
    }
}

/// One socket: its frames in flight and its stream.
#[derive(Debug)]
struct Lane<'a> {
    stream: &'a UnixStream,
    /// Frames in flight on this socket, at most `ceil(C / W)`.
    slots: Slots,
}

impl Lane<'_> {
    /// The writer thread: takes a slot of this lane and one of the whole
    /// run, a request number, then sends the frame and tells the reader
    /// when. Buffered frames are flushed before it blocks.
    fn write_requests(
        &self,
        shared: &Shared<'_>,
        sent: SyncSender<(usize, Instant)>,
    ) -> Result<(), Error> {
        let mut out = BufWriter::with_capacity(BUFFER, self.stream);
        let result = (|| -> std::io::Result<()> {
            loop {
                if !self.slots.try_acquire() {
                    out.flush()?;
                    if !self.slots.acquire() {
                        return Ok(());
                    }
                }
                if !shared.in_flight.try_acquire() {
                    out.flush()?;
                    if !shared.in_flight.acquire() {
                        return Ok(());
                    }
                }
                let index = shared.next.fetch_add(1, Ordering::Relaxed);
                if index >= shared.total {
                    // Give both back: another writer may wait for them.
                    self.slots.release();
                    shared.in_flight.release();
                    return Ok(());
                }
                if sent.send((index, Instant::now())).is_err() {
                    // The reader stopped on an error; it reports it.
                    return Ok(());
                }
                out.write_all(shared.frame)?;
            }
        })()
        .and_then(|()| out.flush());
        match result {
            // End of input for the child: it answers what it has, then
            // exits.
            Ok(()) => {
                let _ = self.stream.shutdown(Shutdown::Write);
                Ok(())
            }
            Err(e) => {
                shared.abort(self);
                Err(Error::raw("write request")(e))
            }
        }
    }

    /// The one thread of a socket that holds one frame at a time: write a
    /// request, read its answer, again.
    fn ping_pong(&self, shared: &Shared<'_>) -> Result<Latencies, Error> {
        let mut latencies = Latencies::with_capacity(shared.per_lane);
        let mut body = vec![0u8; shared.payload];
        let mut stream = self.stream;
        let result = (|| loop {
            let index = shared.next.fetch_add(1, Ordering::Relaxed);
            if index >= shared.total {
                return Ok(());
            }
            let at = Instant::now();
            stream
                .write_all(shared.frame)
                .map_err(Error::raw("write request"))?;
            read_answer(&mut stream, &mut body, index)?;
            latencies.record(at.elapsed());
        })();
        match result {
            Ok(()) => {
                let _ = self.stream.shutdown(Shutdown::Write);
                Ok(latencies)
            }
            Err(e) => {
                let _ = self.stream.shutdown(Shutdown::Both);
                Err(e)
            }
        }
    }

    /// The reader thread: reads one answer per frame the writer announced,
    /// in order, and records its latency.
    fn read_answers(
        &self,
        shared: &Shared<'_>,
        sent: Receiver<(usize, Instant)>,
    ) -> Result<Latencies, Error> {
        let mut input = BufReader::with_capacity(BUFFER, self.stream);
        let mut body = vec![0u8; shared.payload];
        let mut latencies = Latencies::with_capacity(shared.per_lane);
        let result = (|| {
            while let Ok((index, at)) = sent.recv() {
                read_answer(&mut input, &mut body, index)?;
                latencies.record(at.elapsed());
                self.slots.release();
                shared.in_flight.release();
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(latencies),
            Err(e) => {
                shared.abort(self);
                Err(e)
            }
        }
    }
}

/// Reads the answer to request `index` into `body`, which has the
/// request's payload length.
fn read_answer(input: &mut impl Read, body: &mut [u8], index: usize) -> Result<(), Error> {
    let mut header = [0u8; 4];
    input
        .read_exact(&mut header)
        .map_err(Error::raw("read answer"))?;
    let got = u32::from_be_bytes(header) as usize;
    if got != body.len() {
        return Err(Error::WrongAnswer {
            index,
            sent: body.len(),
            got,
        });
    }
    input.read_exact(body).map_err(Error::raw("read answer"))
}
