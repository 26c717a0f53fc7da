//! The examples, run as their users run them: the prefork HTTP server
//! driven with real HTTP requests, the stream hasher on a real stream.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{alive, KillOnDrop, LIMIT};

/// `cargo test` builds the examples next to the test binaries' folder.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile folder");
    debug.join("examples").join(name)
}

/// Sends one GET on an open connection and reads the whole answer.
fn get_on(mut stream: TcpStream, path: &str) -> (String, String) {
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_owned(), body.to_owned())
}

fn worker_pid(head: &str) -> u32 {
    head.lines()
        .find_map(|l| l.strip_prefix("x-worker-pid: "))
        .expect("x-worker-pid header")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn prefork_http_serves_real_requests_from_its_workers() {
    let mut server = KillOnDrop(
        Command::new(example("prefork_http"))
            .args(["--port", "0", "--workers", "2"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the example (built by cargo test)"),
    );
    let mut stdout = BufReader::new(server.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the listening line");
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));

    // Four connections open at once: each goes to the worker holding the
    // fewest, so both serve.
    let open: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let mut pids = HashSet::new();
    for (i, stream) in open.into_iter().enumerate() {
        let (head, body) = get_on(stream, &format!("/together/{i}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let pid = worker_pid(&head);
        assert_eq!(
            body,
            format!("hello from worker pid {pid}: GET /together/{i}\n")
        );
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 2, "both workers served: {pids:?}");
    // And one after another.
    for i in 0..20 {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (head, body) = get_on(stream, &format!("/page/{i}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let pid = worker_pid(&head);
        assert!(pids.contains(&pid), "an unknown pid {pid} answered");
        assert_ne!(pid, server.0.id(), "the supervisor itself answered");
        assert_eq!(
            body,
            format!("hello from worker pid {pid}: GET /page/{i}\n")
        );
    }

    // SIGTERM: a soft kill, then exit; no worker left behind.
    let pid = rustix::process::Pid::from_raw(server.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the example did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("every worker reaped"), "{rest}");
    for worker in pids {
        assert!(!alive(worker), "worker {worker} outlived the example");
    }
}

#[test]
fn stream_hash_streams_through_a_worker_and_agrees_with_itself() {
    let mut child = KillOnDrop(
        Command::new(example("stream_hash"))
            .arg("16")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the example (built by cargo test)"),
    );
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "stream_hash did not finish");
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
    assert!(out.contains("streamed 16777216 bytes"), "{out}");
    assert!(
        out.contains("the supervisor's own count and checksum agree"),
        "{out}"
    );
}

/// Sends one GET over the Unix socket at `path`; the whole answer.
fn get_unix(path: &std::path::Path, target: &str) -> (String, String) {
    let mut stream = std::os::unix::net::UnixStream::connect(path).expect("the admin socket");
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_owned(), body.to_owned())
}

#[test]
fn the_service_example_serves_reports_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("drover-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("admin.sock");
    let mut server = KillOnDrop(
        Command::new(example("service"))
            .args(["--port", "0", "--workers", "2", "--max-workers", "3"])
            .arg("--admin-socket")
            .arg(&socket)
            .env_remove("DROVER_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the example (built by cargo test --workspace)"),
    );
    let mut stdout = BufReader::new(server.0.stdout.take().unwrap());
    let mut line = || {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a line");
        line.trim().to_owned()
    };
    let listening = line();
    let port: u16 = listening
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listening:?}"));
    assert_eq!(line(), format!("admin on unix:{}", socket.display()));
    assert_eq!(line(), format!("pid {}", server.0.id()));

    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (head, body) = get_on(stream, "/upper?text=hello");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "HELLO\n");

    let (head, status) = get_unix(&socket, "/status");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let status: drover::PoolStatus = serde_json::from_str(&status).expect("a status");
    assert_eq!(status.name, "service");
    assert_eq!(status.workers.len(), 2);
    assert_eq!(status.accepted, 1);
    assert!(status
        .workers
        .iter()
        .any(|w| w.status.as_deref() == Some("upper-casing 5 bytes")));
    let (_, metrics) = get_unix(&socket, "/metrics");
    assert!(
        metrics.contains("drover_request_run_seconds_count{pool=\"service\"} 1"),
        "{metrics}"
    );

    let pid = rustix::process::Pid::from_raw(server.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + LIMIT;
    let exit = loop {
        if let Some(exit) = server.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the example did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    assert_eq!(line(), "stopped by signal 15; every worker reaped");
    assert!(!socket.exists(), "the admin socket is removed");
    for worker in status.workers {
        assert!(
            !alive(worker.pid),
            "worker {} outlived the example",
            worker.pid
        );
    }
}
