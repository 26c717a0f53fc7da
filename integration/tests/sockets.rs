//! Passed sockets: descriptors travel with requests as SCM_RIGHTS.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use common::{eventually, pids, pool, within, Cmd, LIMIT};
use drover::ExitReason;

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn own_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_sockets_are_served_and_nothing_leaks() {
    let pool = within(LIMIT, "spawn", pool(4).max_concurrency(4).spawn())
        .await
        .unwrap();
    let workers = pids(&pool);
    let before: HashMap<u32, usize> = workers.iter().map(|&p| (p, fd_count(p))).collect();
    let own_before = own_fd_count();

    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    for batch in 0..20 {
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let (ours, theirs) = UnixStream::pair().unwrap();
                    pool.request(&Cmd::ServeSocket)
                        .socket(theirs)
                        .send()
                        .await
                        .expect("acked");
                    // Talk to the worker over the passed socket itself.
                    tokio::task::spawn_blocking(move || {
                        let mut ours = ours;
                        writeln!(ours, "hello {batch}/{i}").unwrap();
                        let mut answer = String::new();
                        BufReader::new(&ours).read_line(&mut answer).unwrap();
                        let (pid, rest) = answer.trim_end().split_once(' ').unwrap();
                        assert_eq!(rest, format!("hello {batch}/{i}"));
                        pid.parse::<u32>().unwrap()
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for task in tasks {
            let pid = within(LIMIT, "a socket answer", task).await.unwrap();
            *per_pid.entry(pid).or_default() += 1;
        }
    }
    assert_eq!(per_pid.values().sum::<usize>(), 2000);
    assert_eq!(per_pid.len(), 4, "every worker served sockets: {per_pid:?}");
    assert!(
        eventually(LIMIT, || pool.health().iter().all(|h| h.open_sockets == 0)).await,
        "workers still hold sockets: {:?}",
        pool.health()
    );
    assert!(
        eventually(LIMIT, || workers.iter().all(|p| fd_count(*p) <= before[p])).await,
        "worker descriptors leaked: {before:?} -> {:?}",
        workers
            .iter()
            .map(|&p| (p, fd_count(p)))
            .collect::<HashMap<_, _>>()
    );
    assert!(
        eventually(LIMIT, || own_fd_count() <= own_before).await,
        "supervisor descriptors leaked: {own_before} -> {}",
        own_fd_count()
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn sockets_go_to_the_worker_holding_the_fewest() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    // Hold three sockets open; they spread over both workers.
    let mut held = Vec::new();
    for _ in 0..4 {
        let (ours, theirs) = UnixStream::pair().unwrap();
        within(
            LIMIT,
            "pass",
            pool.request(&Cmd::ServeSocket).socket(theirs).send(),
        )
        .await
        .unwrap();
        held.push(ours);
    }
    assert!(
        eventually(LIMIT, || pool.health().iter().all(|h| h.open_sockets == 2)).await,
        "{:?}",
        pool.health()
    );
    drop(held);
    assert!(
        eventually(LIMIT, || pool.health().iter().all(|h| h.open_sockets == 0)).await,
        "{:?}",
        pool.health()
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_request_without_a_socket_gets_a_clear_failure() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let err = within(LIMIT, "no socket", pool.enqueue(&Cmd::ServeSocket))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no socket came with the request"),
        "{err}"
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_worker_that_sends_descriptors_breaks_the_protocol() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let mut events = pool.events();
    let own_before = own_fd_count();
    let _ = within(LIMIT, "send fd", pool.request(&Cmd::SendFd).send()).await;
    let exit = common::next_exit(&mut events).await;
    assert!(
        matches!(&exit.reason, ExitReason::ProtocolViolation { detail } if detail.contains("descriptors")),
        "{exit}"
    );
    assert!(eventually(LIMIT, || pool.health().len() == 2).await);
    // The descriptor it sent was closed, not kept.
    assert!(eventually(LIMIT, || own_fd_count() <= own_before).await);
    within(LIMIT, "pid", pool.enqueue(&Cmd::Pid)).await.unwrap();
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn truncated_ancillary_data_is_a_protocol_violation() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    let own_before = own_fd_count();
    let _ = within(
        LIMIT,
        "send many fds",
        pool.request(&Cmd::SendManyFds).send(),
    )
    .await;
    let exit = common::next_exit(&mut events).await;
    assert!(
        matches!(&exit.reason, ExitReason::ProtocolViolation { detail } if detail.contains("truncated")),
        "{exit}"
    );
    assert!(
        eventually(LIMIT, || own_fd_count() <= own_before).await,
        "descriptors leaked"
    );
    assert!(eventually(LIMIT, || pool.health().len() == 1).await);
    within(LIMIT, "pid", pool.enqueue(&Cmd::Pid)).await.unwrap();
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
