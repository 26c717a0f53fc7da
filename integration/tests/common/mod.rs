//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cmd;
pub mod pg;
pub mod queue;

use std::future::Future;
use std::time::Duration;

#[allow(unused_imports)] // Not every test file sends commands.
pub use cmd::Cmd;
use drover::{Builder, Supervisor};

/// The test worker binary, built by cargo for the integration tests.
pub const WORKER: &str = env!("CARGO_BIN_EXE_drover-test-worker");

/// A generous bound for any single wait: a failure, never a hang.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A builder for a pool of `n` test workers with test-friendly timeouts.
pub fn pool(n: usize) -> Builder {
    Supervisor::builder(WORKER)
        .workers(n)
        .start_timeout(Duration::from_secs(10))
        .soft_kill_grace(Duration::from_secs(10))
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the command name in parentheses.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// This process's peak resident memory (VmHWM), in KiB.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(u64::MAX)
}

/// How many descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// A fresh, empty directory of this test process's own, named `name`,
/// and the path of a database file in it.
///
/// The directories of test processes that have ended are removed first,
/// so runs do not pile them up.
pub fn temp_db(name: &str) -> std::path::PathBuf {
    sweep_dead_test_dirs();
    let dir = std::env::temp_dir().join(format!("drover-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("jobs.db")
}

/// Removes the `drover-test-<pid>...` directories whose process is gone.
fn sweep_dead_test_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("drover-test-")) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(pid) = digits.parse::<u32>() {
            if pid != std::process::id() && !exists(pid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Whether `pid` exists at all (alive or zombie).
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pids of a pool's workers.
pub fn pids(pool: &Supervisor) -> Vec<u32> {
    pool.health().iter().map(|h| h.pid).collect()
}

/// Sends `n` echoes (each bounded) and checks every answer: the pool
/// still serves. Returns the pids that answered.
pub async fn still_serves(pool: &Supervisor, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    for i in 0..n {
        let text = format!("still serving {i}");
        let answer = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo(text.clone())))
            .await
            .unwrap();
        assert_eq!(answer.data::<String>().unwrap(), text);
        pids.push(answer.pid());
    }
    pids
}

/// Waits (bounded) for the next `WorkerExited` event.
pub async fn next_exit(events: &mut drover::Events) -> drover::WorkerExit {
    within(LIMIT, "an exit event", async {
        loop {
            match events.recv().await {
                Some(drover::Event::WorkerExited(exit)) => return exit,
                Some(_) => {}
                None => panic!("the pool's events ended"),
            }
        }
    })
    .await
}

/// Waits (bounded) for the next custom event named `name`.
pub async fn next_custom(events: &mut drover::Events, name: &str) -> drover::CustomEvent {
    within(LIMIT, name, async {
        loop {
            match events.recv().await {
                Some(drover::Event::Custom(e)) if e.name == name => return e,
                Some(_) => {}
                None => panic!("the pool's events ended"),
            }
        }
    })
    .await
}

/// Waits (bounded) for the pool to fail; returns the reason.
pub async fn next_pool_failure(events: &mut drover::Events) -> drover::PoolFailure {
    within(LIMIT, "the pool to fail", async {
        loop {
            match events.recv().await {
                Some(drover::Event::PoolFailed { reason }) => return reason,
                Some(_) => {}
                None => panic!("the pool's events ended"),
            }
        }
    })
    .await
}

/// Reads (bounded) the first line a child process writes to its piped
/// standard output.
pub async fn first_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("a piped stdout");
    within(
        LIMIT,
        "the child's first line",
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        }),
    )
    .await
    .expect("the reading task")
    .expect("a line")
}

/// A child process killed and reaped when the guard drops, so a failing
/// test never leaves it behind (an orphan would also hold the test's
/// output pipes open and hold up the test harness).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
