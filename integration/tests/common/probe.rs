//! The requests of the sandbox test worker (`drover-sandbox-worker`),
//! shared by it and the tests.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};

/// What a test asks the sandboxed worker to try. `Echo` is the first
/// variant, as the test worker's, so `still_serves` works on both.
#[derive(Debug, Serialize, Deserialize)]
pub enum Probe {
    /// Answer the same text (a `String`).
    Echo(String),
    /// Read this file; the answer (`Outcome`) holds its text.
    Read(String),
    /// Write this text to this file, then read it back.
    Write(String, String),
    /// Open a TCP connection to this address ("127.0.0.1:port").
    Connect(String),
    /// Replace the worker with `/bin/sh -c 'exit 7'` (`execve`, no fork).
    Exec,
    /// `fork()`; the child exits at once, the worker waits for it.
    Fork,
    /// Start `/bin/true` as a child process (fork or clone, then exec).
    Spawn,
    /// The worker's own pid, as it sees it.
    Pid,
    /// The names in this directory.
    List(String),
    /// `kill(pid, 0)`: whether a signal could reach this process.
    Signal(u32),
}

/// What a probe did: `Ok` with what it saw, or `Err` with the
/// operating system's error.
pub type Outcome = Result<String, String>;
