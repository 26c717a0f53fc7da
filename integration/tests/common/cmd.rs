//! The commands of the test worker, shared by it and the tests.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};

/// What a test asks this worker to do (the request payload).
#[derive(Debug, Serialize, Deserialize)]
pub enum Cmd {
    /// Answer the same text.
    Echo(String),
    /// Sleep this many milliseconds, then answer the same text.
    SlowEcho(String, u64),
    /// Answer this process's pid.
    Pid,
    /// Sleep, then answer the pid.
    Sleep(u64),
    /// Call `busy()`, answer the pid; `ready()` again on the event "wake".
    Busy,
    /// Emit an event of this name carrying the pid, then ack.
    Emit(String),
    /// Panic in the handler.
    Panic,
    /// Return an error from the handler.
    Fail(String),
    /// Write a frame header announcing this many bytes, then nothing.
    HugeFrame(u32),
    /// Write a well-framed body that is not a message.
    Garbage,
    /// Exit the process with this code.
    Exit(i32),
    /// Answer the ids of the requests in flight (`Worker::requests`).
    InFlight,
    /// Never answer, and ignore cancellation.
    Hang,
    /// Wait for the request's cancellation, then emit "cancelled" with the
    /// request id, then answer (an answer nobody must receive).
    WaitCancel,
    /// Busy-loop this many milliseconds on a blocking thread, then answer.
    Spin(u64),
    /// Emit this many events as fast as possible, then ack.
    Flood(u32),
    /// Write the start of a frame, then exit: the socket closes mid-frame.
    HalfFrame,
    /// Answer a request id the supervisor never sent, then hang.
    AnswerUnknown,
    /// Stop the process (SIGSTOP): it answers nothing, pings included.
    Freeze,
    /// Write these lines to stderr, then exit with code 1.
    StderrThenExit(Vec<String>),
    /// Allocate and keep this many MiB (a leak).
    Leak(usize),
    /// Allocate and touch this many MiB, then free them and answer.
    Alloc(usize),
    /// Answer `(working directory, NoNewPrivs from /proc/self/status)`.
    SelfInfo,
    /// Write this many 100-byte lines to stderr, then answer the count.
    Spew(usize),
    /// Send this status line, then ack.
    Status(String),
    /// Answer `(index, config)` where config is the pool's `String` config.
    Config,
    /// Take the passed socket, ack, then in a task read one line from it
    /// and answer `"<pid> <line>"` on it, and close it.
    ServeSocket,
    /// Send a valid frame with a descriptor attached: workers never do.
    SendFd,
    /// Send a frame with more descriptors attached than the supervisor
    /// makes room for: its ancillary data arrives truncated.
    SendManyFds,
    /// Answer at once with a stream that echoes the request's stream.
    EchoStream,
    /// Answer `(bytes, checksum)` of the request's stream, read to its end.
    SumStream,
    /// Answer with a stream of this many pattern bytes.
    StreamOut(u64),
    /// Answer with the request's own payload bytes, taken out of it
    /// (`Request::take_payload`), if the request is left empty; fail if not.
    EchoPayload,
    /// Answer `VmHWM` of this process, in kB.
    PeakRss,
    /// Ask the supervisor query `.0` with `.1`; answer its `String` answer,
    /// or fail with its error.
    Ask(String, String),
    /// Report statistic `.0` += `.1`, then answer the pid.
    Stat(String, f64),
    /// Answer `created_at()` of the request, in microseconds since the epoch.
    CreatedAt,
    /// Answer with this many bytes.
    Big(usize),
    /// Send a `Response` whose payload is said to be past the end of the
    /// shared-memory arena, behind the SDK's back.
    ShmLie,
    /// Send a `Release` of offset 4096 of the requests arena, where the
    /// supervisor placed nothing, behind the SDK's back.
    ShmBadRelease,
    /// Try to write, remap writable, shrink, grow and unseal the
    /// shared-memory arenas behind the SDK's back; answer what each
    /// attempt got, `(what, refused)`.
    ShmAttack,
    /// Answer this many bytes of 7s through shared memory while a thread
    /// scribbles over the answers arena, from before the answer is sent
    /// until this many milliseconds after.
    ShmScribble(usize, u64),
    /// Answer with bytes `.1` to `.2` of the request's own payload (the
    /// encoded command, text included), as they arrived: an answer that
    /// lies in the requests arena goes back as where it lies there.
    MirrorPart(String, usize, usize),
    /// Behind the SDK's back: `Release` the request's slot (offset 0 of
    /// the requests arena: the text makes it large, and it is the
    /// worker's first), then answer naming 100 bytes of that slot.
    ShmNameReleased(String),
    /// Behind the SDK's back: answer naming 4096 bytes at 32 MiB of the
    /// requests arena, where no request lies.
    ShmNameElsewhere,
    /// Keep the request's payload forever (never releasing its arena
    /// slot); answer its length.
    Keep(Vec<u8>),
    /// Open /dev/null this many times, keeping each; answer how many opened.
    OpenFiles(usize),
    /// Answer `(uid, gid)` of this process.
    Ids,
    /// Answer the value of this environment variable ("" if unset).
    Env(String),
    /// Answer the command-line arguments after the program's name.
    Args,
    /// Post this job to the pool's job queue, then ack.
    PostJob(Box<Cmd>),
    /// Exit with code 1 unless the file exists (creating it first); once it
    /// exists, answer the pid.
    CrashOnce(String),
    /// Write this many bytes of `x` to stderr in one line (in 1 MiB
    /// writes, the newline last), then ack.
    StderrLongLine(u64),
    /// Write a line of invalid UTF-8 to stderr, then ack.
    StderrBadUtf8,
    /// `eprintln!` this text (which panics on a broken pipe), then ack.
    Log(String),
    /// Take the passed socket and keep it, with a duplicate of it made
    /// without close-on-exec (`dup`), both open for the process's life;
    /// answer the socket's inode.
    DupSocket,
    /// Take the pool's shared socket 0 as a TCP listener, accept one
    /// connection on it, write this process's pid to it as a line, and
    /// answer the pid; fails when the pool shares no socket.
    AcceptShared,
    /// Start `sleep 1000` (standard streams on /dev/null) and leave it
    /// running, its `Child` forgotten; answer its pid.
    Grandchild,
    /// Answer `len` bytes of the pattern (`Pattern::byte`), written in
    /// pieces into `Request::answer_buffer(capacity)`, then one byte more:
    /// whether the buffer was still in shared memory once the pattern was
    /// written (1) or not (0).
    AnswerInPlace { len: usize, capacity: usize },
    /// Fork a copy that writes valid `Event` frames to the socket without
    /// end, and exit at once, leaving the copy with the socket open.
    ForkFlood,
    /// Emit "started" carrying the pid, sleep this many milliseconds, then
    /// answer the text.
    AnnouncedSlowEcho(String, u64),
    /// Write these bytes to the socket behind the SDK's back (a frame the
    /// test built, lying or broken), then wait.
    Raw(Vec<u8>),
    /// Answer with a stream, then push this many bytes of it in 64 KiB
    /// `StreamData` frames behind the SDK's back, ignoring credit.
    PushUncredited(u64),
    /// Stop this process (SIGSTOP) holding the request, never answering:
    /// a worker that reads nothing more.
    FreezeHolding,
    /// Post this job to the pool's job queue, due at this time
    /// (`Worker::post_job_at`), then ack.
    PostJobAt(std::time::SystemTime, Box<Cmd>),
    /// Log this text through `tracing` (at info), then ack: with
    /// `DROVER_TEST_TRACE` set the worker writes its log to stderr.
    TraceLog(String),
}

/// The typed tests' task: the worker answers its text in upper case, or
/// fails with it when it is `"fail"` (a worker started with
/// `DROVER_TEST_TASKS` serves only this).
#[derive(Debug, Serialize, Deserialize)]
pub struct Upper(pub String);

impl drover_proto::Task for Upper {
    type Output = String;
}

/// An `AsyncRead` of `len` bytes of a fixed pattern, made on the fly.
#[derive(Debug)]
pub struct Pattern {
    pub produced: u64,
    pub len: u64,
}

impl Pattern {
    pub fn new(len: u64) -> Pattern {
        Pattern { produced: 0, len }
    }

    /// The pattern's byte at `offset`.
    pub fn byte(offset: u64) -> u8 {
        (offset % 251) as u8
    }
}

impl tokio::io::AsyncRead for Pattern {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // One period of the pattern, copied in slices (fast even unoptimised).
        const PERIOD: usize = 251;
        static CYCLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let cycle = CYCLE.get_or_init(|| (0..2 * PERIOD as u64).map(Pattern::byte).collect());
        let n = (buf.remaining() as u64).min(self.len - self.produced) as usize;
        let mut offset = (self.produced % PERIOD as u64) as usize;
        let mut left = n;
        while left > 0 {
            let take = left.min(PERIOD);
            buf.put_slice(&cycle[offset..offset + take]);
            offset = (offset + take) % PERIOD;
            left -= take;
        }
        self.produced += n as u64;
        std::task::Poll::Ready(Ok(()))
    }
}

/// The checksum the stream tests use: a sum of bytes weighted by position.
pub fn checksum(sum: u64, offset: u64, bytes: &[u8]) -> u64 {
    bytes.iter().enumerate().fold(sum, |acc, (i, &b)| {
        acc.wrapping_add(u64::from(b).wrapping_mul(offset + i as u64 + 1))
    })
}
