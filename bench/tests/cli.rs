//! The benchmark binary as its users run it: one JSON line per run, for
//! drover, for raw, for the hand-written tokio pool and for the memory
//! measurements; a bad flag is a usage error. (Small runs of a debug build:
//! these check what is printed, never how fast.)

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_drover-bench");

/// Runs the benchmark and returns its one line of JSON.
fn run(args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run drover-bench");
    assert!(
        out.status.success(),
        "drover-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stdout: {stdout:?}");
    serde_json::from_str(lines[0]).expect("a JSON line")
}

fn check_echo(line: &Value, implementation: &str, payload: u64, concurrency: u64) {
    assert_eq!(line["impl"], implementation);
    assert_eq!(line["workers"], 2);
    assert_eq!(line["payload"], payload);
    assert_eq!(line["concurrency"], concurrency);
    assert_eq!(line["requests"], 300);
    for field in ["seconds", "rps", "p50_us", "p99_us", "startup_ms"] {
        assert!(
            line[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {line}"
        );
    }
    assert!(line["p99_us"].as_f64() >= line["p50_us"].as_f64(), "{line}");
    assert!(
        line["parent_peak_rss_kb"].as_u64().is_some_and(|v| v > 0),
        "{line}"
    );
}

#[test]
fn drover_raw_and_tokio_echo_print_one_line_each() {
    for (payload, concurrency) in [("64", "16"), ("70000", "4")] {
        let args = [
            "--requests",
            "300",
            "--payload",
            payload,
            "--concurrency",
            concurrency,
        ];
        let (payload, concurrency) = (payload.parse().unwrap(), concurrency.parse().unwrap());
        check_echo(&run(&args), "drover", payload, concurrency);
        let threads: Vec<&str> = args.iter().copied().chain(["--threads", "2"]).collect();
        check_echo(&run(&threads), "drover", payload, concurrency);
        let raw: Vec<&str> = args.iter().copied().chain(["--impl", "raw"]).collect();
        check_echo(&run(&raw), "raw", payload, concurrency);
        let tokio: Vec<&str> = args.iter().copied().chain(["--impl", "tokio"]).collect();
        check_echo(&run(&tokio), "tokio", payload, concurrency);
    }
}

#[test]
fn memory_prints_its_line() {
    let line = run(&["--memory"]);
    assert_eq!(line["mode"], "memory");
    assert_eq!(line["queued_requests"], 1_000_000);
    for field in ["idle_worker_rss_kb", "bench_worker_rss_kb"] {
        assert!(
            line[field].as_u64().is_some_and(|v| v > 0),
            "{field}: {line}"
        );
    }
    assert!(
        line["queued_bytes_per_request"]
            .as_f64()
            .is_some_and(|v| v > 64.0),
        "at least the payload itself: {line}"
    );
}

#[test]
fn a_bad_flag_is_a_usage_error_naming_it() {
    let out = Command::new(BIN).args(["--wrokers", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--wrokers"));
}

/// Reads one HTTP/1.1 response with a `content-length` from `stream` and
/// returns its body.
fn read_response(stream: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read the response head");
        assert_eq!(n, 1, "connection closed mid-head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("an ASCII head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a content-length")
        .parse()
        .expect("a number");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("read the body");
    body
}

/// The `--http` servers (drover passing connections to its workers, the
/// shared-listener ceiling, and drover's workers sharing the listener)
/// print their address, answer keep-alive and
/// `Connection: close` requests with the 13-byte body, and stop, every
/// process with them, when their standard input ends. (No wrk needed.)
#[test]
fn http_servers_answer_and_stop_when_stdin_ends() {
    use std::io::{BufRead, Read, Write};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    for implementation in ["drover", "hyper", "drover-listener"] {
        let mut server = Command::new(BIN)
            .args(["--http", implementation, "--workers", "2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        let stdout = server.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server's line within a minute");
        let line: Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(line["mode"], "http");
        assert_eq!(line["impl"], implementation);
        let pids: Vec<u64> = line["pids"]
            .as_array()
            .expect("pids")
            .iter()
            .map(|p| p.as_u64().expect("a pid"))
            .collect();
        assert_eq!(pids.len(), 2, "{line}");
        let addr = line["addr"].as_str().expect("an address").to_owned();
        let connect = || {
            let stream = std::net::TcpStream::connect(&addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream
        };

        // Keep-alive: three requests on one connection, on two at once.
        let mut streams = [connect(), connect()];
        for _ in 0..3 {
            for stream in &mut streams {
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                    .unwrap();
            }
            for stream in &mut streams {
                assert_eq!(read_response(stream), b"Hello, World!");
            }
        }
        drop(streams);

        // Connection: close: the server answers, then closes.
        for _ in 0..3 {
            let mut stream = connect();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .unwrap();
            assert_eq!(read_response(&mut stream), b"Hello, World!");
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).expect("end of file");
            assert!(rest.is_empty(), "{rest:?}");
        }

        drop(server.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = server.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = server.kill();
                let _ = server.wait();
                panic!("{implementation}: the server did not stop when its stdin ended");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{implementation}: {status}");
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "{implementation}: process {pid} outlived the server"
            );
        }
    }
}
