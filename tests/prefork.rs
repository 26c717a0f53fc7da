//! The prefork HTTP example, driven with real HTTP requests.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{alive, LIMIT};

/// `cargo test` builds the examples next to the test binaries' folder.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile folder");
    debug.join("examples").join(name)
}

fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
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

#[test]
fn prefork_http_serves_real_requests_from_its_workers() {
    let mut server = Command::new(example("prefork_http"))
        .args(["--port", "0", "--workers", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the example (built by cargo test)");
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the listening line");
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));

    let mut pids = HashSet::new();
    for i in 0..20 {
        let (head, body) = get(port, &format!("/page/{i}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let pid: u32 = head
            .lines()
            .find_map(|l| l.strip_prefix("x-worker-pid: "))
            .expect("x-worker-pid header")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            body,
            format!("hello from worker pid {pid}: GET /page/{i}\n")
        );
        assert_ne!(pid, server.id(), "the supervisor itself answered");
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 2, "both workers served: {pids:?}");

    // SIGTERM: a soft kill, then exit; no worker left behind.
    let pid = rustix::process::Pid::from_raw(server.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
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
