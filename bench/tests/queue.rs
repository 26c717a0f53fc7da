//! The queue workload as its users run it: one JSON line with every
//! phase's figure (a small run of a debug build: what is printed, never
//! how fast).

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_drover-bench");

fn run(args: &[&str]) -> Option<Value> {
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
    Some(serde_json::from_str(lines[0]).expect("a JSON line"))
}

fn check(line: &Value, queue: &str) {
    assert_eq!(line["impl"], "drover");
    assert_eq!(line["queue"], queue);
    assert_eq!(line["jobs"], 50);
    assert_eq!(line["max_running"], 8);
    for field in [
        "insert_jobs_per_s",
        "drain_jobs_per_s",
        "push_many_jobs_per_s",
        "drain_again_jobs_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
    ] {
        assert!(
            line[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {line}"
        );
    }
}

#[test]
fn the_sqlite_queue_workload_prints_one_line() {
    let line = run(&[
        "--queue",
        "sqlite",
        "--requests",
        "50",
        "--concurrency",
        "8",
    ])
    .unwrap();
    check(&line, "sqlite");
}

#[test]
fn the_postgres_queue_workload_prints_one_line() {
    if std::env::var_os("DROVER_TEST_DATABASE_URL").is_none() {
        eprintln!("DROVER_TEST_DATABASE_URL is not set: skipping the PostgreSQL run");
        return;
    }
    let line = run(&["--queue", "pg", "--requests", "50", "--concurrency", "8"]).unwrap();
    check(&line, "pg");
}

#[test]
fn a_bad_queue_store_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["--queue", "mysql"])
        .output()
        .expect("run drover-bench");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected pg or sqlite"), "{stderr}");
}
