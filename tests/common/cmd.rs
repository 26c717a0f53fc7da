//! The commands of the test worker, shared by it and the tests.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};

/// What a test asks this worker to do (the request payload).
#[derive(Debug, Serialize, Deserialize)]
pub enum Cmd {
    /// Answer the same text.
    Echo(String),
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
}
