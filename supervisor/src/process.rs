//! What a worker runs as: a process of its own, or (for tests) a thread
//! of this one.
//!
//! The connection task (`worker.rs`) sees a worker only through
//! [`Process`]: it waits for it to end, kills it, and kills what it left
//! behind. A worker process is a `Child`, in a process group of its own.
//! An in-process worker ([`InProcess`], what `drover::testing` builds on)
//! runs on a thread of its own with a tokio runtime of its own, given its
//! end of a socket pair: the same protocol and the same connection code,
//! but no isolation. Killing it stops its runtime, which drops every task
//! it started; a panic that escapes it ends it as a crash (exit code 101).
//! Its pid is reported as 0 (no process), which every process-group kill
//! ignores.

use std::fmt;
use std::future::Future;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;

use tokio::process::Child;
use tokio::sync::oneshot;

use crate::event::Termination;

/// The body of an in-process worker: it gets its end of the connection and
/// runs a worker on it until the supervisor tells it to stop.
type Main = dyn Fn(UnixStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// How an in-process pool starts a worker (`Builder::in_process`).
#[derive(Clone)]
pub(crate) struct InProcess(Arc<Main>);

impl InProcess {
    pub(crate) fn new<F, Fut>(main: F) -> InProcess
    where
        F: Fn(UnixStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        InProcess(Arc::new(move |socket| Box::pin(main(socket))))
    }

    /// Starts one worker on a thread of its own, with a runtime of its
    /// own; returns it and the supervisor's end of its connection
    /// (registered with the caller's runtime).
    pub(crate) fn start(&self) -> std::io::Result<(Process, tokio::net::UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        let ours = tokio::net::UnixStream::from_std(ours)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (kill, killed) = oneshot::channel::<()>();
        let (end, ended) = oneshot::channel();
        let main = self.0.clone();
        std::thread::Builder::new()
            .name("drover-in-process-worker".to_owned())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(async move {
                        tokio::select! {
                            () = main(theirs) => Termination::Code(0),
                            _ = killed => Termination::Signal(SIGKILL),
                        }
                    })
                });
                let termination = std::panic::catch_unwind(run)
                    // As a Rust program that panicked in `main` exits.
                    .unwrap_or(Termination::Code(101));
                // Every task the worker started (its handlers too) is
                // dropped with its runtime, as a process's would end; a
                // blocking one is left to finish on its own.
                runtime.shutdown_background();
                let _ = end.send(termination);
            })?;
        Ok((
            Process::Thread {
                kill: Some(kill),
                ended,
                termination: None,
            },
            ours,
        ))
    }
}

impl fmt::Debug for InProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InProcess(..)")
    }
}

impl PartialEq for InProcess {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One worker, as its connection task sees it.
#[derive(Debug)]
pub(crate) enum Process {
    /// A process of its own (its pid leads its process group).
    Os { child: Child, pid: u32 },
    /// A thread of this process, running the worker on a runtime of its
    /// own.
    Thread {
        /// Ends the worker: its runtime stops and drops every task.
        kill: Option<oneshot::Sender<()>>,
        ended: oneshot::Receiver<Termination>,
        /// How it ended, once it has.
        termination: Option<Termination>,
    },
}

impl Process {
    /// Waits for it to end (again and again: the first answer is kept).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn wait(&mut self) -> std::io::Result<Termination> {
        match self {
            Process::Os { child, .. } => child.wait().await.map(Termination::from_status),
            Process::Thread {
                ended, termination, ..
            } => {
                if termination.is_none() {
                    // A thread that vanished without a word was killed
                    // with its process: not reachable, but never hang.
                    *termination =
                        Some((&mut *ended).await.unwrap_or(Termination::Signal(SIGKILL)));
                }
                Ok(termination.unwrap_or(Termination::Code(0)))
            }
        }
    }

    /// Kills it: the process and its process group, or the task.
    pub(crate) fn kill(&mut self) {
        match self {
            Process::Os { child, pid } => {
                kill_group(*pid);
                let _ = child.start_kill();
            }
            Process::Thread { kill, .. } => {
                if let Some(kill) = kill.take() {
                    let _ = kill.send(());
                }
            }
        }
    }

    /// Kills what is left of a reaped worker's process group (the children
    /// it left behind): the group only, since the pid itself may already
    /// be another process's. Nothing for a task.
    pub(crate) fn kill_orphans(&self) {
        if let Process::Os { pid, .. } = self {
            kill_orphans(*pid);
        }
    }
}

const SIGKILL: i32 = 9;

/// Kills the process group `pid` led (nothing for pid 0, an in-process
/// worker's).
pub(crate) fn kill_orphans(pid: u32) {
    if let Some(group) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
}

/// Kills worker `pid` and its process group with `SIGKILL`.
///
/// Every worker leads a group of its own (its group id is its pid), so
/// this also kills whatever it started and left in the group: the
/// grandchildren a crashing worker would otherwise leave running. The
/// process itself is signalled too, in case it left its group (`setsid`,
/// `setpgid`). A group or process already gone (`ESRCH`) is not an error;
/// other failures are logged at debug level.
///
/// Call it only for a worker not yet reaped: until then its pid names it
/// and nothing else. After the reap, kill the group alone
/// (`kill_process_group`), right away: the kernel hands out no pid still
/// in use as a group id, so while anything of the group lives the group
/// kill reaches exactly that, whereas the bare pid may already be another
/// process's.
pub(crate) fn kill_group(pid: u32) {
    // 0 would name our own group; a pid over i32::MAX is no pid.
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    for result in [
        rustix::process::kill_process_group(pid, rustix::process::Signal::KILL),
        rustix::process::kill_process(pid, rustix::process::Signal::KILL),
    ] {
        if let Err(e) = result {
            if e != rustix::io::Errno::SRCH {
                tracing::debug!(
                    pid = pid.as_raw_nonzero().get(),
                    "cannot kill worker or its group: {e}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::kill_group;

    /// Whether `pid` is a live (not zombie) process.
    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                stat.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    != Some("Z")
            }
            Err(_) => false,
        }
    }

    #[test]
    fn kill_group_takes_the_grandchildren() {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!; wait",
            ])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("sh runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the grandchild's pid");
        let grandchild: u32 = line.trim().parse().expect("a pid");
        assert!(alive(grandchild));
        kill_group(child.id());
        child.wait().expect("reaped");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive(grandchild) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            !alive(grandchild),
            "the grandchild {grandchild} outlived kill_group"
        );
    }

    #[test]
    fn kill_group_of_nothing_does_nothing() {
        // Pid 0 would be our own group: never signalled.
        kill_group(0);
        kill_group(u32::MAX);
    }
}
