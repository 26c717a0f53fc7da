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
    assert!(
        line["idle_worker_rss_kb"].as_u64().is_some_and(|v| v > 0),
        "{line}"
    );
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
