//! The sandbox: each test starts real workers (`drover-sandbox-worker`)
//! in a sandbox and has them try what a compromised worker would: read a
//! file outside their paths, connect to a listener this test opened,
//! exec `/bin/sh`, fork. Each attempt is also made without the sandbox,
//! where it works, so every refusal seen is the sandbox's doing.

mod common;
#[path = "common/probe.rs"]
mod probe;

use std::path::PathBuf;
use std::time::Duration;

use common::{alive, eventually, next_exit, still_serves, within, LIMIT};
use drover::{
    Builder, Cgroup, Error, Event, ExitReason, Sandbox, SandboxFeature, Supervisor, SyscallPreset,
    Syscalls, Termination, Violation,
};
use probe::{Outcome, Probe};

const WORKER: &str = env!("CARGO_BIN_EXE_drover-sandbox-worker");

/// A pool of one sandbox test worker in `sandbox` (none if `None`).
fn pool(sandbox: Option<Sandbox>) -> Builder {
    let builder = Supervisor::builder(WORKER)
        .start_timeout(Duration::from_secs(10))
        .soft_kill_grace(Duration::from_secs(10));
    match sandbox {
        Some(sandbox) => builder.sandbox(sandbox),
        None => builder,
    }
}

async fn start(sandbox: Option<Sandbox>) -> Supervisor {
    within(LIMIT, "spawn", pool(sandbox).spawn())
        .await
        .expect("the pool starts")
}

async fn attempt(pool: &Supervisor, probe: Probe) -> Outcome {
    let what = format!("{probe:?}");
    within(LIMIT, &what, pool.enqueue(&probe))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .data::<Outcome>()
        .unwrap()
}

/// Stops the pool and checks its worker is gone.
async fn stop(pool: Supervisor) {
    let pids: Vec<u32> = pool.health().iter().map(|h| h.pid).collect();
    within(LIMIT, "hard kill", pool.hard_kill()).await;
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived its pool");
    }
}

/// A directory of this test's own with `inside/allowed.txt` and
/// `outside.txt`, removed on drop; in cargo's temporary directory for
/// tests, not under /tmp, which a private /tmp hides.
struct Files {
    root: PathBuf,
}

impl Files {
    fn new(tag: &str) -> Files {
        // (A checkout under /tmp has its target directory there too: then
        // /var/tmp, which no private /tmp touches.)
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let base = if base.starts_with("/tmp") {
            PathBuf::from("/var/tmp")
        } else {
            base
        };
        let root = base.join(format!("drover-sandbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::write(root.join("inside/allowed.txt"), "inside").unwrap();
        std::fs::write(root.join("outside.txt"), "outside").unwrap();
        Files { root }
    }
    fn inside(&self) -> PathBuf {
        self.root.join("inside")
    }
    fn path(&self, name: &str) -> String {
        self.root.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// This kernel's landlock ABI, as a refused start reports it.
fn drover_abi() -> u8 {
    match Supervisor::builder(WORKER)
        .sandbox(Sandbox::new().deny_all_paths().landlock_abi(u8::MAX))
        .start()
    {
        Err(Error::SandboxUnsupported {
            feature: SandboxFeature::LandlockAbi { kernel, .. },
        }) => kernel,
        _ => 0,
    }
}

/// Waits (bounded) for the worker that held a request to die of it.
async fn lost(pool: &Supervisor, probe: Probe) -> Box<drover::WorkerExit> {
    let err = within(LIMIT, "the fatal request", pool.enqueue(&probe))
        .await
        .unwrap_err();
    match err {
        Error::WorkerLost { exit, .. } => exit,
        other => panic!("expected WorkerLost, got {other:?}"),
    }
}

#[tokio::test]
async fn landlock_allows_the_paths_named_and_denies_the_rest() {
    let files = Files::new("landlock");
    let open = start(None).await;
    assert_eq!(
        attempt(&open, Probe::Read(files.path("outside.txt"))).await,
        Ok("outside".into())
    );
    let me = std::process::id();
    let signal = attempt(&open, Probe::Signal(me)).await;
    assert!(signal.is_ok(), "{signal:?}");
    stop(open).await;

    let pool = start(Some(Sandbox::new().read(files.inside()))).await;
    assert_eq!(
        attempt(&pool, Probe::Read(files.path("inside/allowed.txt"))).await,
        Ok("inside".into())
    );
    let denied = attempt(&pool, Probe::Read(files.path("outside.txt"))).await;
    assert!(
        denied
            .as_ref()
            .is_err_and(|e| e.contains("Permission denied")),
        "{denied:?}"
    );
    // Read only: no writing where it may read.
    let write = attempt(
        &pool,
        Probe::Write(files.path("inside/new.txt"), "x".into()),
    )
    .await;
    assert!(write.is_err(), "{write:?}");
    assert!(!files.inside().join("new.txt").exists());
    // Nor anywhere else (/etc is not a library directory).
    let etc = attempt(&pool, Probe::Read("/etc/hostname".into())).await;
    assert!(etc.is_err(), "{etc:?}");
    // Landlock 6 and later scope signals: none reaches the supervisor.
    if drover_abi() >= 6 {
        let signal = attempt(&pool, Probe::Signal(me)).await;
        assert!(
            signal
                .as_ref()
                .is_err_and(|e| e.contains("Operation not permitted")),
            "{signal:?}"
        );
    }
    still_serves(&pool, 3).await;
    stop(pool).await;
}

#[tokio::test]
async fn landlock_write_paths_take_writes() {
    let files = Files::new("write");
    let pool = start(Some(Sandbox::new().write(files.inside()))).await;
    assert_eq!(
        attempt(
            &pool,
            Probe::Write(files.path("inside/new.txt"), "written".into())
        )
        .await,
        Ok("written".into())
    );
    assert_eq!(
        std::fs::read_to_string(files.inside().join("new.txt")).unwrap(),
        "written"
    );
    let outside = attempt(&pool, Probe::Write(files.path("new.txt"), "x".into())).await;
    assert!(outside.is_err(), "{outside:?}");
    assert!(!files.root.join("new.txt").exists());
    stop(pool).await;
}

/// Both network layers stop a connection to a listener this test opened
/// on 127.0.0.1, which an unsandboxed worker reaches.
#[tokio::test]
async fn a_sandboxed_worker_cannot_connect_to_a_local_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let open = start(None).await;
    let reached = attempt(&open, Probe::Connect(addr.clone())).await;
    assert!(reached.is_ok(), "{reached:?}");
    stop(open).await;

    let seccomp = Sandbox::new().syscalls(
        Syscalls::deny([SyscallPreset::Network]).on_violation(Violation::Errno(libc::EPERM)),
    );
    let namespace = Sandbox::new().network_namespace();
    for (sandbox, error) in [
        (seccomp, "Operation not permitted"),
        (namespace, "Network is unreachable"),
    ] {
        let pool = start(Some(sandbox)).await;
        let refused = attempt(&pool, Probe::Connect(addr.clone())).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains(error)),
            "{refused:?}, expected {error}"
        );
        // Its socket to the supervisor works throughout.
        still_serves(&pool, 3).await;
        stop(pool).await;
    }
}

/// `/bin/sh` runs without the sandbox (the worker becomes it and exits
/// 7); landlock refuses it (the binary is not among the paths), and the
/// ExecAfterStart filter kills the worker for trying, with a reason that
/// names seccomp.
#[tokio::test]
async fn a_sandboxed_worker_cannot_exec_a_shell() {
    let open = start(None).await;
    let exit = lost(&open, Probe::Exec).await;
    assert_eq!(exit.termination, Termination::Code(7), "{exit}");
    stop(open).await;

    let pool = start(Some(Sandbox::new().deny_all_paths())).await;
    let refused = attempt(&pool, Probe::Exec).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("Permission denied")),
        "{refused:?}"
    );
    still_serves(&pool, 2).await;
    stop(pool).await;

    let pool = start(Some(
        Sandbox::new().syscalls(Syscalls::deny([SyscallPreset::ExecAfterStart])),
    ))
    .await;
    let mut events = pool.events();
    let exit = lost(&pool, Probe::Exec).await;
    assert_seccomp_kill(&exit);
    assert_eq!(next_exit(&mut events).await.reason, ExitReason::Seccomp);
    // Replaced: the pool serves on.
    still_serves(&pool, 2).await;
    stop(pool).await;
}

fn assert_seccomp_kill(exit: &drover::WorkerExit) {
    assert_eq!(exit.reason, ExitReason::Seccomp, "{exit}");
    assert_eq!(exit.termination, Termination::Signal(31), "{exit}");
    let text = exit.to_string();
    assert!(text.contains("SIGSYS (seccomp)"), "{text}");
}

/// The Processes preset: no fork (EPERM when asked, a kill by default),
/// no child process; threads (the worker's runtime) still work.
#[tokio::test]
async fn a_sandboxed_worker_cannot_fork_when_denied() {
    let open = start(None).await;
    let forked = attempt(&open, Probe::Fork).await;
    assert!(forked.is_ok(), "{forked:?}");
    stop(open).await;

    let pool = start(Some(Sandbox::new().syscalls(
        Syscalls::deny([SyscallPreset::Processes]).on_violation(Violation::Errno(libc::EPERM)),
    )))
    .await;
    for probe in [Probe::Fork, Probe::Spawn] {
        let refused = attempt(&pool, probe).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("Operation not permitted")),
            "{refused:?}"
        );
    }
    still_serves(&pool, 3).await;
    stop(pool).await;

    let pool = start(Some(
        Sandbox::new().syscalls(Syscalls::deny([SyscallPreset::Processes])),
    ))
    .await;
    let exit = lost(&pool, Probe::Fork).await;
    assert_seccomp_kill(&exit);
    stop(pool).await;
}

/// Everything at once: requests work, and the layers stack.
#[tokio::test]
async fn every_layer_together_still_serves() {
    let files = Files::new("all");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sandbox = Sandbox::new()
        .read(files.inside())
        .syscalls(Syscalls::deny([
            SyscallPreset::Network,
            SyscallPreset::Processes,
            SyscallPreset::ExecAfterStart,
            SyscallPreset::Ptrace,
        ]))
        .network_namespace()
        .pid_namespace()
        .private_tmp();
    let pool = within(LIMIT, "spawn", pool(Some(sandbox)).workers(2).spawn())
        .await
        .unwrap();
    still_serves(&pool, 6).await;
    assert_eq!(
        attempt(&pool, Probe::Read(files.path("inside/allowed.txt"))).await,
        Ok("inside".into())
    );
    assert!(attempt(&pool, Probe::Read(files.path("outside.txt")))
        .await
        .is_err());
    assert_eq!(attempt(&pool, Probe::Pid).await, Ok("1".into()));
    // The network preset kills (its default) before the namespace's
    // unreachable network is even tried; a replacement takes over.
    assert_seccomp_kill(&*lost(&pool, Probe::Connect(addr)).await);
    still_serves(&pool, 2).await;
    stop(pool).await;
}

/// The PID namespace makes the worker process 1 of its own; the private
/// /tmp is empty, writable, and not the host's.
#[tokio::test]
async fn namespaces_give_the_worker_its_own_pids_and_tmp() {
    let pool = start(Some(Sandbox::new().pid_namespace().private_tmp())).await;
    let pid = pool.health()[0].pid;
    assert_eq!(attempt(&pool, Probe::Pid).await, Ok("1".into()));
    // Its /proc shows its namespace: itself, process 1.
    let procs = attempt(&pool, Probe::List("/proc".into())).await.unwrap();
    let pids: Vec<&str> = procs
        .split(',')
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(pids, ["1"], "{procs}");
    // The host's /tmp holds a file of this test's; the worker's does not.
    let name = format!("drover-sandbox-host-{}", std::process::id());
    let host = std::env::temp_dir().join(&name);
    std::fs::write(&host, "host").unwrap();
    let tmp = attempt(&pool, Probe::List("/tmp".into())).await.unwrap();
    let _ = std::fs::remove_file(&host);
    assert!(!tmp.contains(&name), "{tmp}");
    let mine = format!("/tmp/{name}-private");
    assert_eq!(
        attempt(&pool, Probe::Write(mine.clone(), "mine".into())).await,
        Ok("mine".into())
    );
    assert!(!std::path::Path::new(&mine).exists());
    still_serves(&pool, 2).await;
    assert!(alive(pid));
    // The pool knows it by its init's pid, whose only child it is.
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let worker: Vec<u32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(worker.len(), 1, "{children}");
    assert!(alive(worker[0]));
    stop(pool).await;
    assert!(!alive(worker[0]), "the worker outlived its init");
}

/// A worker that runs as another user gets a user namespace (its ids
/// mapped to themselves), in which the network namespace is made.
#[tokio::test]
async fn a_worker_of_another_user_gets_a_user_namespace() {
    // A copy nobody can reach, wherever this checkout lives.
    let copy = std::env::temp_dir().join(format!("drover-sandbox-worker-{}", std::process::id()));
    std::fs::copy(WORKER, &copy).unwrap();
    let builder = Supervisor::builder(&copy)
        .start_timeout(Duration::from_secs(10))
        .sandbox(Sandbox::new().network_namespace())
        .user(65534u32)
        .group(65534u32);
    let pool = within(LIMIT, "spawn", builder.spawn()).await;
    let _ = std::fs::remove_file(&copy);
    let pool = pool.unwrap();
    let map = attempt(&pool, Probe::Read("/proc/self/uid_map".into()))
        .await
        .unwrap();
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(fields, ["65534", "65534", "1"], "{map}");
    still_serves(&pool, 2).await;
    stop(pool).await;
}

/// A rule the kernel cannot enforce fails the start, naming it; in best
/// effort the pool runs and reports it.
#[tokio::test]
async fn an_unsupported_rule_fails_the_spawn_clearly() {
    let err = within(
        LIMIT,
        "spawn",
        pool(Some(Sandbox::new().deny_all_paths().landlock_abi(99))).spawn(),
    )
    .await
    .unwrap_err();
    let Error::SandboxUnsupported {
        feature: SandboxFeature::LandlockAbi { wanted: 99, kernel },
    } = &err
    else {
        panic!("expected an unsupported landlock ABI, got {err:?}");
    };
    assert!(*kernel < 99);
    assert!(err.to_string().contains("landlock ABI 99"), "{err}");

    let missing = PathBuf::from("/sys/fs/cgroup/drover-no-such-cgroup");
    let err = within(
        LIMIT,
        "spawn",
        pool(Some(
            Sandbox::new().cgroup(Cgroup::under(&missing).memory_max(64 << 20)),
        ))
        .spawn(),
    )
    .await
    .unwrap_err();
    let Error::SandboxUnsupported {
        feature: SandboxFeature::Cgroup { path, .. },
    } = &err
    else {
        panic!("expected an unusable cgroup, got {err:?}");
    };
    assert_eq!(path, &missing);
    assert!(err.to_string().contains("drover-no-such-cgroup"), "{err}");

    // A path to allow that does not exist is a configuration error.
    let err = within(
        LIMIT,
        "spawn",
        pool(Some(Sandbox::new().read("/nonexistent/drover"))).spawn(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::SandboxSetup { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/drover"), "{err}");

    // A worker looked up in PATH cannot be sandboxed.
    let err = Supervisor::builder("drover-sandbox-worker")
        .sandbox(Sandbox::new())
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::WorkerBinary { .. }), "{err:?}");
}

#[tokio::test]
async fn best_effort_runs_without_what_is_missing_and_says_so() {
    let files = Files::new("best");
    let sandbox = Sandbox::new()
        .read(files.inside())
        .landlock_abi(99)
        .best_effort();
    let pool = pool(Some(sandbox)).start().unwrap();
    let mut events = pool.events();
    let missing = within(LIMIT, "the unenforced event", async {
        loop {
            match events.recv().await {
                Some(Event::SandboxUnenforced { missing, .. }) => return missing,
                Some(_) => {}
                None => panic!("the pool's events ended"),
            }
        }
    })
    .await;
    assert!(
        matches!(
            missing[..],
            [SandboxFeature::LandlockAbi { wanted: 99, .. }]
        ),
        "{missing:?}"
    );
    within(LIMIT, "online", pool.online()).await.unwrap();
    assert_eq!(pool.health()[0].unenforced, missing);
    // Not enforced indeed: the file outside its paths is read.
    assert_eq!(
        attempt(&pool, Probe::Read(files.path("outside.txt"))).await,
        Ok("outside".into())
    );
    stop(pool).await;
}

/// With a writable cgroup v2 (this test's own, under the unified
/// hierarchy), each worker runs in a cgroup of its own, removed after
/// it; a limit whose controller the parent does not enable is refused.
#[tokio::test]
async fn each_worker_gets_a_cgroup_of_its_own() {
    let Some(parent) = test_cgroup() else {
        eprintln!("no writable cgroup v2 hierarchy here; only the refusals are tested");
        return;
    };
    let pool = start(Some(Sandbox::new().cgroup(Cgroup::under(&parent.0)))).await;
    let cgroup = attempt(&pool, Probe::Read("/proc/self/cgroup".into()))
        .await
        .unwrap();
    let name = parent.0.file_name().unwrap().to_string_lossy().into_owned();
    let line = cgroup
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in {cgroup}"));
    assert!(line.contains(&format!("/{name}/drover-")), "{line}");
    let own = children(&parent.0);
    assert_eq!(own.len(), 1, "{own:?}");
    stop(pool).await;
    assert!(
        eventually(LIMIT, || children(&parent.0).is_empty()).await,
        "the worker's cgroup was not removed: {:?}",
        children(&parent.0)
    );

    let controllers = std::fs::read_to_string(parent.0.join("cgroup.subtree_control")).unwrap();
    if !controllers.contains("memory") {
        let err =
            pool_err(Sandbox::new().cgroup(Cgroup::under(&parent.0).memory_max(64 << 20))).await;
        assert!(err.to_string().contains("memory controller"), "{err}");
    }
}

async fn pool_err(sandbox: Sandbox) -> Error {
    within(LIMIT, "spawn", pool(Some(sandbox)).spawn())
        .await
        .unwrap_err()
}

/// The worker cgroups made under `dir`.
fn children(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A cgroup v2 directory of this test's own, removed on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn test_cgroup() -> Option<TestCgroup> {
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let root = std::path::Path::new(root);
        if !root.join("cgroup.subtree_control").exists() {
            continue;
        }
        let dir = root.join(format!("drover-test-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_ok() {
            return Some(TestCgroup(dir));
        }
    }
    None
}

/// The allowlist mode: every call listed is allowed, `execve` only for
/// the worker's start. Here everything but `execve` is listed: the worker
/// serves, and its exec of a shell kills it.
#[tokio::test]
async fn an_allowlist_lets_only_its_calls_and_the_start_through() {
    let all_but_exec = (0..=470).filter(|&n| n != libc::SYS_execve && n != libc::SYS_execveat);
    let pool = start(Some(
        Sandbox::new().syscalls(Syscalls::allow_only(all_but_exec)),
    ))
    .await;
    still_serves(&pool, 3).await;
    assert_seccomp_kill(&*lost(&pool, Probe::Exec).await);
    stop(pool).await;

    // Nothing listed: the worker dies at its first call after the exec.
    let err = pool_err(Sandbox::new().syscalls(Syscalls::allow_only([]))).await;
    assert!(err.to_string().contains("SIGSYS"), "{err}");
}

/// The example runs as its users run it: each hostile document is
/// stopped by a layer, the pool goes on to the next upload.
#[test]
fn the_untrusted_example_stops_each_hostile_document() {
    use std::io::Read;
    let exe = std::env::current_exe().expect("test binary path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile folder");
    let mut child = common::KillOnDrop(
        std::process::Command::new(debug.join("examples/untrusted"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the example (built by cargo test)"),
    );
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the example did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "{status}: {out}");
    for expected in [
        "report.txt: 5 words",
        "!read-secret: refused (Permission denied",
        "!phone-home: refused (Network is unreachable",
        "hostile.txt: its worker was stopped: was killed by SIGSYS (seccomp)",
        "notes.txt: 6 words",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
}

/// An in-process pool (`drover::testing`) has no process to sandbox: a
/// sandbox is refused, never silently left out; in best effort it runs
/// and says so.
#[tokio::test]
async fn an_in_process_pool_refuses_a_sandbox() {
    async fn echo(req: drover::worker::Request) -> Result<(), drover::worker::Error> {
        let text: String = req.data()?;
        req.respond(&text)
    }
    let err = drover::testing::pool(echo)
        .sandbox(Sandbox::new().network_namespace())
        .start()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SandboxUnsupported {
                feature: SandboxFeature::InProcess
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("in-process"), "{err}");

    let pool = within(
        LIMIT,
        "spawn",
        drover::testing::pool(echo)
            .sandbox(Sandbox::new().network_namespace().best_effort())
            .spawn(),
    )
    .await
    .unwrap();
    assert_eq!(pool.health()[0].unenforced, [SandboxFeature::InProcess]);
    within(LIMIT, "hard kill", pool.hard_kill()).await;
}

/// A path under /tmp allowed to a worker whose /tmp is private would be
/// hidden from it: `spawn()` says so at once instead.
#[tokio::test]
async fn a_path_under_tmp_with_a_private_tmp_is_refused() {
    // It exists (a missing path is refused for that reason first).
    let uploads = PathBuf::from(format!("/tmp/drover-uploads-{}", std::process::id()));
    std::fs::create_dir_all(&uploads).unwrap();
    let sandbox = Sandbox::new().read(&uploads).private_tmp();
    let err = within(LIMIT, "spawn", pool(Some(sandbox)).spawn())
        .await
        .unwrap_err();
    let _ = std::fs::remove_dir_all(&uploads);
    assert!(
        matches!(&err, Error::SandboxSetup { path, .. } if *path == uploads),
        "{err:?}"
    );
    assert!(err.to_string().contains("private_tmp"), "{err}");
}
