//! The isolation boundary between processes: descriptors a worker must
//! not inherit, process groups (what a worker starts dies with it), and
//! SIGTERM / SIGINT from outside the pool reaching the supervisor and its
//! workers.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;

use common::{alive, eventually, next_exit, pids, pool, within, Cmd, LIMIT, WORKER};
use drover::{ExitReason, Termination};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// The supervisor binary of the signal tests (`tests/bin/test_supervisor.rs`).
const SUPERVISOR: &str = env!("CARGO_BIN_EXE_drover-test-supervisor");

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(pid as i32).expect("a pid")
}

/// The targets of every descriptor of process `pid` (`/proc/<pid>/fd`),
/// by number.
fn fd_targets(pid: u32) -> Vec<(i32, String)> {
    let mut targets = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/<pid>/fd") {
        let entry = entry.expect("an entry");
        let Ok(number) = entry.file_name().to_string_lossy().parse() else {
            continue;
        };
        // A descriptor closed meanwhile has no target.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            targets.push((number, target.display().to_string()));
        }
    }
    targets
}

/// How `/proc/<pid>/fd` names a socket or a pipe: by its inode.
fn socket_target(fd: impl AsFd) -> String {
    let stat = rustix::fs::fstat(fd).expect("fstat");
    format!("socket:[{}]", stat.st_ino)
}

/// The process group of `pid`, from `/proc/<pid>/stat`.
fn pgid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // After the command name in parentheses: state, ppid, pgrp.
    let rest = stat.rsplit(')').next().expect("a stat line");
    rest.split_whitespace()
        .nth(2)
        .expect("pgrp")
        .parse()
        .expect("a number")
}

/// A process the test started indirectly (a worker's child), killed on drop
/// if it is still there, so a failing test leaves nothing running.
struct Stray(u32);

impl Drop for Stray {
    fn drop(&mut self) {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        if alive(self.0) && cmdline.starts_with(b"sleep\0") {
            let _ = rustix::process::kill_process(pid_of(self.0), Signal::KILL);
        }
    }
}

// ---------------------------------------------------------------------------
// Descriptors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_inherits_a_descriptor_it_was_not_given() {
    // Descriptors of the application without close-on-exec, numbered above
    // the workers' socket (the lowest free number could be 3): a file and
    // a socket, duplicated and their flag cleared.
    let path = std::env::temp_dir().join(format!(
        "drover-leak-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    let file = std::fs::File::create(&path).expect("a temp file");
    let (socket, _peer) = UnixStream::pair().expect("a socket pair");
    let inheritable = |fd: std::os::fd::BorrowedFd<'_>| -> OwnedFd {
        let copy = rustix::io::fcntl_dupfd_cloexec(fd, 10).expect("dup");
        rustix::io::fcntl_setfd(&copy, rustix::io::FdFlags::empty()).expect("fcntl");
        copy
    };
    let leaked_file = inheritable(file.as_fd());
    let leaked_socket = inheritable(socket.as_fd());
    for fd in [leaked_file.as_fd(), leaked_socket.as_fd()] {
        let flags = rustix::io::fcntl_getfd(fd).expect("fcntl");
        assert!(
            !flags.contains(rustix::io::FdFlags::CLOEXEC),
            "the test leaks nothing"
        );
    }
    let file_target = path.display().to_string();
    let leaked_target = socket_target(&leaked_socket);

    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    // A socket passed to the one worker, inheritable until it is passed; the
    // worker keeps it and a duplicate made without close-on-exec.
    let (_ours, theirs) = UnixStream::pair().expect("a socket pair");
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty()).expect("fcntl");
    let passed_target = socket_target(&theirs);
    let answer = within(
        LIMIT,
        "the socket to be taken",
        pool.request(&Cmd::DupSocket).socket(theirs).send(),
    )
    .await
    .expect("the worker took the socket");
    let holder = answer.pid();
    let inode: u64 = answer.data().unwrap();
    assert_eq!(format!("socket:[{inode}]"), passed_target);

    within(LIMIT, "resize to 6", pool.resize(6)).await.unwrap();
    let workers = pids(&pool);
    assert_eq!(workers.len(), 6, "{workers:?}");
    assert!(workers.contains(&holder));

    // The control: the holder shows the passed socket twice, so a leak
    // would be seen.
    let held = fd_targets(holder);
    let copies = held.iter().filter(|(_, t)| *t == passed_target).count();
    assert_eq!(copies, 2, "the holder's descriptors: {held:?}");

    // Every socket and pipe the test process holds is named by an inode
    // of its own; a worker may share only its standard streams with us
    // (its standard output, and standard error's pipe).
    let ours: Vec<String> = fd_targets(std::process::id())
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| t.starts_with("socket:") || t.starts_with("pipe:"))
        .collect();
    for &pid in &workers {
        let targets = fd_targets(pid);
        for (fd, target) in &targets {
            assert_ne!(
                target, &file_target,
                "worker {pid} inherited the file on {fd}"
            );
            assert_ne!(
                target, &leaked_target,
                "worker {pid} inherited the socket on {fd}"
            );
            if pid != holder {
                assert_ne!(
                    target, &passed_target,
                    "worker {pid} has the passed socket on {fd}"
                );
            }
            if *fd > 2 {
                assert!(
                    !ours.contains(target),
                    "worker {pid} shares {target} (its descriptor {fd}) with the test: {targets:?}"
                );
            }
        }
        // Its end of its own socket is where the SDK found it.
        assert!(
            targets
                .iter()
                .any(|(fd, t)| *fd == 3 && t.starts_with("socket:")),
            "worker {pid}: {targets:?}"
        );
    }

    within(LIMIT, "soft kill", pool.soft_kill()).await;
    drop(leaked_file);
    drop(file);
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_binary_still_fails_to_spawn() {
    // std reports a failed `exec` through a close-on-exec pipe, which the
    // child's descriptor hygiene must leave open. A bare name is looked up
    // in PATH by `exec` itself (a path would be checked before the spawn).
    let result = within(
        LIMIT,
        "spawn",
        drover::Supervisor::builder("drover-no-such-worker-binary")
            .workers(1)
            .spawn(),
    )
    .await;
    match result {
        Err(drover::Error::Spawn { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{source}");
        }
        Err(other) => panic!("expected a spawn error, got {other}"),
        Ok(pool) => {
            pool.hard_kill().await;
            panic!("a pool of a binary that does not exist started");
        }
    }
}

// ---------------------------------------------------------------------------
// Process groups

/// Asks the pool's worker to start a grandchild; returns the worker's pid
/// and the grandchild's.
async fn grandchild(pool: &drover::Supervisor) -> (u32, Stray) {
    let answer = within(LIMIT, "a grandchild", pool.request(&Cmd::Grandchild).send())
        .await
        .expect("a grandchild");
    let grandchild: u32 = answer.data().unwrap();
    assert!(alive(grandchild), "the grandchild {grandchild} is running");
    assert_eq!(
        pgid(grandchild),
        answer.pid(),
        "it is in its worker's group"
    );
    (answer.pid(), Stray(grandchild))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_worker_takes_its_grandchildren_with_it() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let (worker, stray) = grandchild(&pool).await;

    let crashed = within(LIMIT, "the crash", pool.request(&Cmd::Exit(1)).send()).await;
    assert!(crashed.is_err(), "the worker exited without answering");
    let exit = next_exit(&mut events).await;
    assert_eq!(exit.pid, worker);
    assert_eq!(exit.termination, Termination::Code(1));
    assert!(
        eventually(LIMIT, || !alive(stray.0)).await,
        "the grandchild {} outlived its crashed worker {worker} (needs kill_group after the reap)",
        stray.0
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_kill_takes_the_grandchildren_too() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let (first, first_stray) = grandchild(&pool).await;
    let (second, second_stray) = grandchild(&pool).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    assert!(!alive(first) && !alive(second), "the workers are reaped");
    for stray in [&first_stray, &second_stray] {
        assert!(
            eventually(LIMIT, || !alive(stray.0)).await,
            "the grandchild {} outlived the soft kill (needs kill_group after the reap)",
            stray.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_leads_a_process_group_of_its_own() {
    let pool = within(LIMIT, "spawn", pool(3).spawn()).await.unwrap();
    let ours = pgid(std::process::id());
    for pid in pids(&pool) {
        assert_eq!(pgid(pid), pid, "worker {pid} leads its group");
        assert_ne!(pgid(pid), ours);
    }
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

// ---------------------------------------------------------------------------
// Signals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_worker_drains_it_and_it_is_replaced() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let mut events = pool.events();
    let request = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.request(&Cmd::AnnouncedSlowEcho("drained".into(), 1000))
                .send()
                .await
        })
    };
    let started = common::next_custom(&mut events, "started").await;
    let worker = started.pid;
    // Twice: the second changes nothing.
    for _ in 0..2 {
        rustix::process::kill_process(pid_of(worker), Signal::TERM).expect("kill");
    }
    let answer = within(LIMIT, "the answer", request).await.unwrap();
    let answer = answer.expect("the request held when the signal came is answered");
    assert_eq!(answer.pid(), worker);
    assert_eq!(answer.data::<String>().unwrap(), "drained");
    let exit = next_exit(&mut events).await;
    assert_eq!(exit.pid, worker);
    assert_eq!(exit.reason, ExitReason::Signalled { signal: 15 }, "{exit}");
    assert_eq!(exit.termination, Termination::Code(0), "{exit}");
    assert!(
        eventually(LIMIT, || {
            let now = pids(&pool);
            now.len() == 2 && !now.contains(&worker)
        })
        .await,
        "the worker was replaced: {:?}",
        pids(&pool)
    );
    let answer = within(LIMIT, "a request", pool.request(&Cmd::Pid).send()).await;
    assert!(answer.is_ok(), "the pool serves on: {answer:?}");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// `drover-test-supervisor` running in a process group of its own, and
/// what it printed.
struct SupervisorProcess {
    child: Child,
    pid: u32,
    lines: Lines<BufReader<ChildStdout>>,
    workers: Vec<u32>,
}

impl SupervisorProcess {
    /// Starts it and reads up to `sent`: both slow requests are running.
    async fn start() -> SupervisorProcess {
        let mut child = tokio::process::Command::new(SUPERVISOR)
            .arg(WORKER)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Its own group, as a shell's job would be.
            .process_group(0)
            // The backstop of a failing test; its workers then die with it.
            .kill_on_drop(true)
            .spawn()
            .expect("the supervisor starts");
        let pid = child.id().expect("a pid");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut process = SupervisorProcess {
            child,
            pid,
            lines,
            workers: Vec::new(),
        };
        loop {
            let line = process.line().await;
            if let Some(pid) = line.strip_prefix("worker ") {
                process.workers.push(pid.parse().expect("a pid"));
            } else if line == "ready" {
                break;
            } else {
                panic!("unexpected line from the supervisor: {line}");
            }
        }
        assert_eq!(process.workers.len(), 2);
        assert_eq!(process.line().await, "sent");
        process
    }

    /// The next line it prints.
    async fn line(&mut self) -> String {
        within(LIMIT, "a line from the supervisor", self.lines.next_line())
            .await
            .expect("reading its output")
            .expect("a line, not the end of its output")
    }

    /// The lines it prints after the signal, up to `done`, then its exit,
    /// which must be code 0; and no worker of it may be left.
    async fn finish(mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            assert!(
                !line.starts_with("error"),
                "the supervisor failed: {line} after {lines:?}"
            );
            if line == "done" {
                break;
            }
            lines.push(line);
        }
        let status = within(LIMIT, "the supervisor's exit", self.child.wait())
            .await
            .expect("reaped");
        assert_eq!(status.code(), Some(0), "{status} after {lines:?}");
        for &pid in &self.workers {
            assert!(
                !alive(pid),
                "worker {pid} outlived its supervisor: {lines:?}"
            );
        }
        lines
    }
}

/// Checks both requests were answered and every worker's exit was
/// reported, with a reason among `truthful` and exit code 0.
fn check_outcome(lines: &[String], workers: &[u32], truthful: &[&str]) {
    let answers: Vec<&String> = lines.iter().filter(|l| l.starts_with("answer ")).collect();
    assert_eq!(answers.len(), 2, "{lines:?}");
    for answer in answers {
        assert!(
            answer.starts_with("answer ok slow-"),
            "a request failed: {lines:?}"
        );
    }
    for &pid in workers {
        let exit = lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("exit {pid} ")))
            .unwrap_or_else(|| panic!("no exit reported for worker {pid}: {lines:?}"));
        let (reason, termination) = exit.split_once(' ').expect("reason and termination");
        assert!(
            truthful.contains(&reason),
            "worker {pid}'s exit reason {reason} is not one of {truthful:?}: {lines:?}"
        );
        assert_eq!(termination, "exit code 0", "worker {pid}: {lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_every_process_drains_the_whole_pool() {
    // What systemd's KillMode=control-group does: every process of the
    // unit gets SIGTERM at once.
    let supervisor = SupervisorProcess::start().await;
    for &pid in [supervisor.pid].iter().chain(&supervisor.workers) {
        rustix::process::kill_process(pid_of(pid), Signal::TERM).expect("kill");
    }
    let workers = supervisor.workers.clone();
    let lines = supervisor.finish().await;
    assert!(lines.contains(&"signal 15".to_owned()), "{lines:?}");
    // A worker that got the signal drained: the supervisor may report that
    // ("signalled"), or its own soft kill if that reached the worker first.
    check_outcome(&lines, &workers, &["signalled", "soft_kill"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_to_the_foreground_group_reaches_the_supervisor_alone() {
    // What a terminal's Ctrl-C does: SIGINT to the foreground process
    // group, which holds the supervisor but none of its workers.
    let supervisor = SupervisorProcess::start().await;
    for &pid in &supervisor.workers {
        assert_eq!(pgid(pid), pid, "worker {pid} leads its own group");
        assert_ne!(pgid(pid), supervisor.pid);
    }
    rustix::process::kill_process_group(pid_of(supervisor.pid), Signal::INT).expect("kill");
    let workers = supervisor.workers.clone();
    let lines = supervisor.finish().await;
    assert!(lines.contains(&"signal 2".to_owned()), "{lines:?}");
    // The workers never saw the signal: the supervisor's soft kill stopped
    // them.
    check_outcome(&lines, &workers, &["soft_kill"]);
}
