//! Starting one worker process with its end of a socket pair.
//!
//! The one module of the supervisor with `unsafe`: the code that runs in
//! the child between `fork` and `exec` (`pre_exec`). It only makes system
//! calls (rustix's, which are async-signal-safe): set the parent-death
//! signal, check the parent is still there, and put the socket on its
//! agreed descriptor number.
#![allow(unsafe_code)]

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::Stdio;

use drover_proto::{CHILD_FD, ENV_FD, ENV_PARENT_PID};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, Resource, Rlimit, Signal};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::builder::{Config, Limits};
use crate::error::Error;

/// A started worker process and the supervisor's end of its socket.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: Child,
    /// The read end of the worker's standard error, always piped so its last
    /// lines can be reported when it dies.
    pub(crate) stderr: Option<tokio::process::ChildStderr>,
    /// The read end of its standard output, piped when output is captured.
    pub(crate) stdout: Option<tokio::process::ChildStdout>,
    pub(crate) pid: u32,
    pub(crate) stream: UnixStream,
}

type Job = (Config, oneshot::Sender<Result<Spawned, Error>>);

/// A thread that lives as long as the pool and forks every worker.
///
/// Linux delivers a child's parent-death signal when the *thread* that
/// forked it exits, not the process. Tokio retires idle threads, and a
/// caller may spawn from any of them; forking from this one thread means a
/// worker dies with its supervisor, never with some retired thread.
#[derive(Debug)]
pub(crate) struct Spawner {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the thread; it ends when the `Spawner` is dropped.
    pub(crate) fn new(runtime: tokio::runtime::Handle) -> io::Result<Spawner> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("drover-spawner".into())
            .spawn(move || {
                // tokio's process driver needs its runtime to register the child.
                let _guard = runtime.enter();
                for (config, reply) in rx {
                    let _ = reply.send(spawn_retrying_busy(&config));
                }
            })?;
        Ok(Spawner { jobs })
    }

    /// Starts one worker process from the spawner thread.
    pub(crate) async fn spawn(&self, config: &Config) -> Result<Spawned, Error> {
        let (reply, result) = oneshot::channel();
        let gone = || Error::Spawn {
            path: config.program.clone(),
            source: io::Error::other("the spawner thread is gone"),
        };
        self.jobs
            .send((config.clone(), reply))
            .map_err(|_| gone())?;
        result.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// As [`spawn_worker`], trying again a few times when the binary is
/// "busy" (`ETXTBSY`): a binary just written (a deploy before a reload) can
/// be briefly held open for writing by a process that another thread
/// forked, until that process calls `exec`.
fn spawn_retrying_busy(config: &Config) -> Result<Spawned, Error> {
    let mut attempts = 0;
    loop {
        match spawn_worker(config) {
            Err(Error::Spawn { source, .. })
                if source.raw_os_error() == Some(rustix::io::Errno::TXTBSY.raw_os_error())
                    && attempts < 5 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10 * attempts));
            }
            result => return result,
        }
    }
}

/// Starts one worker process.
///
/// The socket pair is made close-on-exec; the child's end is moved to
/// descriptor [`CHILD_FD`] (which `dup2` leaves inheritable) and its number
/// passed in `DROVER_FD`. No other descriptor of ours reaches the child.
fn spawn_worker(config: &Config) -> Result<Spawned, Error> {
    let spawn_error = |source: io::Error| Error::Spawn {
        path: config.program.clone(),
        source,
    };
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| spawn_error(e.into()))?;

    let mut command = Command::new(&config.program);
    let limits = config.limits.clone();
    if limits.env_clear {
        // Before any variable is set: clearing forgets those too.
        command.env_clear();
    }
    if let Some(dir) = &limits.current_dir {
        command.current_dir(dir);
    }
    if let Some(uid) = limits.uid {
        command.uid(uid);
    }
    if let Some(gid) = limits.gid {
        command.gid(gid);
    }
    command
        .args(&config.args)
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .env(ENV_FD, CHILD_FD.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if config.capture_output {
        command.stdout(Stdio::piped());
    }
    let parent = rustix::process::getpid();
    command.env(ENV_PARENT_PID, parent.as_raw_nonzero().to_string());
    let their_fd = theirs.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls; it allocates nothing on its success
    // path and touches no lock.
    unsafe {
        command.pre_exec(move || child_setup(their_fd, parent, &limits));
    }
    let mut child = command.spawn().map_err(spawn_error)?;
    drop(theirs);
    let stderr = child.stderr.take();
    let stdout = child.stdout.take();
    let pid = child.id().unwrap_or(0);

    let std_stream = std::os::unix::net::UnixStream::from(ours);
    std_stream.set_nonblocking(true).map_err(spawn_error)?;
    let stream = UnixStream::from_std(std_stream).map_err(spawn_error)?;
    Ok(Spawned {
        child,
        stderr,
        stdout,
        pid,
        stream,
    })
}

/// Runs in the child between `fork` and `exec`.
fn child_setup(fd: RawFd, parent: Pid, limits: &Limits) -> io::Result<()> {
    // Die with the supervisor. The signal fires when the forking *thread*
    // exits; the worker also checks its parent pid when it connects.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    if rustix::process::getppid() != Some(parent) {
        // The supervisor died between fork and here: do not start at all.
        return Err(rustix::io::Errno::SRCH.into());
    }
    let rlimits = [
        (Resource::As, limits.address_space, 0),
        // The soft CPU limit sends SIGXCPU; the hard one, a second later, SIGKILL.
        (Resource::Cpu, limits.cpu_seconds, 1),
        (Resource::Nofile, limits.open_files, 0),
        (Resource::Nproc, limits.processes, 0),
    ];
    for (resource, limit, slack) in rlimits {
        if let Some(limit) = limit {
            rustix::process::setrlimit(
                resource,
                Rlimit {
                    current: Some(limit),
                    maximum: Some(limit.saturating_add(slack)),
                },
            )?;
        }
    }
    if limits.no_new_privs {
        rustix::thread::set_no_new_privs(true)?;
    }
    if fd == CHILD_FD {
        // Already in place: only clear close-on-exec.
        // SAFETY: `fd` is open in the child (inherited across fork).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::empty())?;
    } else {
        // SAFETY: `fd` is open in the child (inherited across fork). The
        // target number is wrapped only so rustix can name it, and never
        // closed by us (ManuallyDrop): exec hands it to the worker.
        let source = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(CHILD_FD) });
        rustix::io::dup2(source, &mut target)?;
    }
    Ok(())
}
