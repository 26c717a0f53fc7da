//! `Supervisor::handle_signals`: real signals sent to a supervisor in a
//! process of its own (`drover-test-supervisor <worker> signals`) while
//! requests are in flight: HUP replaces every worker, TTIN / TTOU change
//! the size, TERM drains and stops with nothing lost, a second TERM kills.

mod common;

use std::process::Stdio;

use rustix::process::{kill_process, Pid, Signal};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use common::{alive, within, LIMIT, WORKER};

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_drover-test-supervisor");

/// The supervisor process and what it prints.
struct Process {
    child: Child,
    pid: u32,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every worker pid it ever reported.
    seen: Vec<u32>,
}

impl Process {
    async fn start(args: &[&str]) -> (Process, Vec<u32>) {
        let mut child = tokio::process::Command::new(SUPERVISOR)
            .arg(WORKER)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("the supervisor starts");
        let pid = child.id().expect("a pid");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut process = Process {
            child,
            pid,
            lines,
            seen: Vec::new(),
        };
        let mut workers = Vec::new();
        loop {
            let line = process.line().await;
            if let Some(pid) = line.strip_prefix("worker ") {
                workers.push(pid.parse().expect("a pid"));
            } else if line == "ready" {
                break;
            } else {
                panic!("unexpected line: {line}");
            }
        }
        process.seen.extend(&workers);
        (process, workers)
    }

    async fn line(&mut self) -> String {
        let line = within(LIMIT, "a line from the supervisor", self.lines.next_line())
            .await
            .expect("reading its output")
            .expect("a line, not the end of its output");
        assert!(!line.starts_with("error"), "the supervisor failed: {line}");
        line
    }

    fn signal(&self, signal: Signal) {
        kill_process(Pid::from_raw(self.pid as i32).unwrap(), signal).expect("kill");
    }

    /// Reads `pool <phase> <pids>` lines until `done` holds for one;
    /// returns its ready pids.
    async fn until_pool(&mut self, what: &str, done: impl Fn(&str, &[u32]) -> bool) -> Vec<u32> {
        let mut read = Vec::new();
        loop {
            let line = within(LIMIT, what, self.line()).await;
            if let Some(rest) = line.strip_prefix("pool ") {
                let (phase, pids) = rest.split_once(' ').unwrap_or((rest, ""));
                let pids: Vec<u32> = pids
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse().unwrap())
                    .collect();
                self.seen.extend(&pids);
                if done(phase, &pids) {
                    return pids;
                }
            }
            read.push(line);
            assert!(read.len() < 10_000, "{what}: never seen in {read:?}");
        }
    }

    /// Reads up to `done`, checks the exit code is 0 and no worker it ever
    /// had is alive; returns the `load` and `stopped` lines.
    async fn finish(mut self) -> (String, String) {
        let (mut load, mut stopped) = (None, None);
        loop {
            let line = self.line().await;
            if line.starts_with("load ") {
                load = Some(line);
            } else if line.starts_with("stopped ") {
                stopped = Some(line);
            } else if line == "done" {
                break;
            }
        }
        let status = within(LIMIT, "its exit", self.child.wait()).await.unwrap();
        assert_eq!(status.code(), Some(0), "{status}");
        for &pid in &self.seen {
            assert!(!alive(pid), "worker {pid} outlived its supervisor");
        }
        (load.expect("a load line"), stopped.expect("a stopped line"))
    }
}

/// `load ok N err M ...`: (N, M).
fn load_counts(line: &str) -> (u64, u64) {
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[2].parse().unwrap(), words[4].parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hup_reloads_ttin_ttou_resize_and_term_drains_under_load() {
    let (mut process, first) = Process::start(&["signals"]).await;
    process
        .until_pool("the load to start", |phase, pids| {
            phase == "running" && pids.len() == 2
        })
        .await;

    process.signal(Signal::HUP);
    let reloaded = process
        .until_pool("every worker replaced after SIGHUP", |_, pids| {
            pids.len() == 2 && pids.iter().all(|p| !first.contains(p))
        })
        .await;

    process.signal(Signal::TTIN);
    let grown = process
        .until_pool("three workers after SIGTTIN", |_, pids| pids.len() == 3)
        .await;
    for pid in &reloaded {
        assert!(grown.contains(pid), "growing kept the workers: {grown:?}");
    }

    // (Signals of one kind sent together may arrive as one: each waits
    // for the last one's effect.)
    process.signal(Signal::TTOU);
    process
        .until_pool("two workers after a SIGTTOU", |_, pids| pids.len() == 2)
        .await;
    process.signal(Signal::TTOU);
    process
        .until_pool("one worker after two SIGTTOUs", |_, pids| pids.len() == 1)
        .await;
    // Never below one: a third is ignored, and the pool still serves.
    process.signal(Signal::TTOU);
    process.signal(Signal::TERM);
    // (The soft kill may be over before the next report: no wait for it.)
    let (load, stopped) = process.finish().await;
    let (ok, failed) = load_counts(&load);
    assert_eq!(failed, 0, "no request in flight was lost: {load}");
    assert!(ok > 0, "{load}");
    assert_eq!(stopped, "stopped 15 soft");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_softly_and_a_second_term_kills() {
    // A request that takes ten minutes holds the soft kill up...
    let (mut process, _) = Process::start(&["signals", "hang"]).await;
    assert_eq!(process.line().await, "hanging");
    process.signal(Signal::INT);
    process
        .until_pool("the soft kill to begin", |phase, _| {
            phase == "shutting_down" || phase == "stopped"
        })
        .await;
    // ...until a second signal kills the pool.
    process.signal(Signal::TERM);
    let (_, stopped) = process.finish().await;
    assert_eq!(stopped, "stopped 2 hard");
}
