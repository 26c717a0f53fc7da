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
    /// Exit with code 1 unless the file exists (creating it first); once it
    /// exists, answer the pid.
    CrashOnce(String),
}
