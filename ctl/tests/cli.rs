//! `drover-ctl`, the real binary, against a real admin endpoint in front
//! of a real pool.
//!
//! This program is also the pool's worker (drover's one-binary way: when
//! a supervisor started it, it serves), so it is its own test runner
//! (`harness = false`): each test runs in turn, and the last line says
//! how many passed and failed.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use drover::admin::{Admin, AdminServer, Endpoint};
use drover::worker::Request;
use drover::Supervisor;

const CTL: &str = env!("CARGO_BIN_EXE_drover-ctl");

/// The bound on every wait: a failure, never a hang.
const LIMIT: Duration = Duration::from_secs(30);

type Test = fn() -> Pin<Box<dyn Future<Output = ()>>>;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if drover::worker::is_worker_process() {
        return match runtime.block_on(drover::worker::serve(echo)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let tests: [(&str, Test); 4] = [
        ("status_prints_a_table_and_json", || {
            Box::pin(status_prints_a_table_and_json())
        }),
        ("control_commands_steer_the_pool", || {
            Box::pin(control_commands_steer_the_pool())
        }),
        ("a_missing_socket_is_named", || {
            Box::pin(a_missing_socket_is_named())
        }),
        ("refusals_and_bad_arguments_are_clear", || {
            Box::pin(refusals_and_bad_arguments_are_clear())
        }),
    ];
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(test())));
        match outcome {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn echo(request: Request) -> Result<(), drover::worker::Error> {
    let text: String = request.data()?;
    request.respond(&text)
}

/// A pool of `n` workers (this program) named `name`, and its admin
/// endpoint on a socket of its own.
async fn serve(n: usize, name: &str) -> (Supervisor, AdminServer, PathBuf) {
    let exe = std::env::current_exe().expect("this program's path");
    let pool = tokio::time::timeout(
        LIMIT,
        Supervisor::builder(exe).workers(n).name(name).spawn(),
    )
    .await
    .expect("the pool starts in time")
    .expect("the pool starts");
    let dir = std::env::temp_dir().join(format!("drover-ctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join(format!("{name}.sock"));
    let server = Admin::new(pool.clone())
        .unix(&socket)
        .serve()
        .await
        .unwrap();
    (pool, server, socket)
}

/// What `drover-ctl` printed and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn ctl(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(CTL);
    command
        .args(args)
        .env_remove("DROVER_ADMIN_SOCKET")
        .env_remove("DROVER_ADMIN_ADDR")
        .env_remove("DROVER_ADMIN_TOKEN")
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("drover-ctl {args:?} did not finish"))
        .expect("drover-ctl runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn on(socket: &Path) -> String {
    socket.to_str().unwrap().to_owned()
}

fn pids(pool: &Supervisor) -> Vec<u32> {
    let mut pids: Vec<u32> = pool.health().iter().map(|h| h.pid).collect();
    pids.sort_unstable();
    pids
}

async fn status_prints_a_table_and_json() {
    let (pool, server, socket) = serve(2, "ctl-status").await;
    let answer = pool.enqueue("hello").await.unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "hello");

    let run = ctl(&["--socket", &on(&socket), "status"], &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("pool ctl-status: running, 2 workers wanted"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("1 accepted"), "{}", run.stdout);
    for pid in pids(&pool) {
        let row = run
            .stdout
            .lines()
            .find(|l| l.contains(&format!(" {pid} ")))
            .unwrap_or_else(|| panic!("no row for {pid}: {}", run.stdout));
        assert!(row.contains("ready"), "{row}");
        assert!(row.contains("MiB"), "{row}");
    }

    // The socket from the environment, the status as JSON.
    let run = ctl(
        &["status", "--json"],
        &[("DROVER_ADMIN_SOCKET", &on(&socket))],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let status: drover::PoolStatus = serde_json::from_str(&run.stdout).expect("JSON");
    let mut listed: Vec<u32> = status.workers.iter().map(|w| w.pid).collect();
    listed.sort_unstable();
    assert_eq!(listed, pids(&pool));
    assert_eq!(status.accepted, 1);

    server.shutdown().await;
    pool.soft_kill().await;
}

async fn control_commands_steer_the_pool() {
    let (pool, server, socket) = serve(2, "ctl-control").await;
    let socket = on(&socket);
    let run = ctl(&["--socket", &socket, "resize", "3"], &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("resized: 3 workers"),
        "{}",
        run.stdout
    );
    assert_eq!(pids(&pool).len(), 3);

    let before = pids(&pool);
    let run = ctl(&["--socket", &socket, "reload", "--json"], &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let status: drover::PoolStatus = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(status.workers.len(), 3);
    assert!(pids(&pool).iter().all(|p| !before.contains(p)));

    let run = ctl(&["--socket", &socket, "drain"], &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("drained"), "{}", run.stdout);
    assert!(pids(&pool).is_empty());
    let run = ctl(&["--socket", &socket, "resume"], &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(pids(&pool).len(), 3);
    let answer = pool.enqueue("after").await.unwrap();
    assert_eq!(answer.data::<String>().unwrap(), "after");

    // Zero is the endpoint's to refuse: it says why, nothing changes.
    let before = pids(&pool);
    let run = ctl(&["--socket", &socket, "resize", "0"], &[]).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("400"), "{}", run.stderr);
    assert!(
        run.stderr.contains("resize to 0 is refused"),
        "{}",
        run.stderr
    );
    assert_eq!(pids(&pool), before);

    server.shutdown().await;
    pool.soft_kill().await;
}

async fn a_missing_socket_is_named() {
    let run = ctl(&["--socket", "/nonexistent/drover.sock", "status"], &[]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("no admin socket at /nonexistent/drover.sock"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());

    // A socket file nobody serves on (its process gone) refuses.
    let dir = std::env::temp_dir().join(format!("drover-ctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stale = dir.join("stale.sock");
    let _ = std::fs::remove_file(&stale);
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let run = ctl(&["--socket", &on(&stale), "status"], &[]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains(&format!("cannot connect to unix:{}", stale.display())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
    let _ = std::fs::remove_file(&stale);
}

async fn refusals_and_bad_arguments_are_clear() {
    let (pool, server, _) = serve(1, "ctl-refusals").await;
    drop(server);
    let token_server = Admin::new(pool.clone())
        .tcp("127.0.0.1:0".parse().unwrap())
        .token("t0ken")
        .serve()
        .await
        .unwrap();
    let Endpoint::Tcp(addr) = token_server.endpoint().clone() else {
        panic!("TCP")
    };
    let addr = addr.to_string();
    let run = ctl(&["--addr", &addr, "resize", "2"], &[]).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert!(run.stderr.contains("needs its token"), "{}", run.stderr);
    assert_eq!(pids(&pool).len(), 1, "a refused request changes nothing");
    let run = ctl(
        &["--addr", &addr, "status"],
        &[("DROVER_ADMIN_TOKEN", "t0ken")],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    // Nobody listens: the address is named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let run = ctl(&["--addr", &closed_addr, "status"], &[]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains(&format!("cannot connect to http://{closed_addr}")),
        "{}",
        run.stderr
    );

    // What the command line gets wrong, clap says, with code 2.
    let run = ctl(&["resize", "many"], &[]).await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("invalid value 'many'"),
        "{}",
        run.stderr
    );
    let run = ctl(&["restart"], &[]).await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("unrecognized subcommand 'restart'"),
        "{}",
        run.stderr
    );

    token_server.shutdown().await;
    pool.soft_kill().await;
}
