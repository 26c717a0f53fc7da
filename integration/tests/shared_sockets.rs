//! Sockets the pool shares with every worker (`Builder::share_socket`):
//! each worker process, replacements and reloaded ones included, inherits
//! the listener and accepts on it itself.

mod common;

use std::io::{BufRead, BufReader};

use common::{eventually, next_exit, pool, within, Cmd, LIMIT};
use drover::Error;

/// Has a worker accept one connection on the shared listener at `addr`
/// and checks it is the worker that answers: returns its pid.
async fn accepted_by_a_worker(pool: &drover::Supervisor, addr: std::net::SocketAddr) -> u32 {
    let accept = pool.enqueue(&Cmd::AcceptShared);
    let connect = tokio::task::spawn_blocking(move || {
        let stream = std::net::TcpStream::connect(addr).expect("connect to the shared listener");
        stream
            .set_read_timeout(Some(LIMIT))
            .expect("set a read timeout");
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("read the worker's line");
        line.trim().parse::<u32>().expect("a pid")
    });
    let (answer, served_by) = within(LIMIT, "accept on the shared listener", async {
        tokio::join!(accept, connect)
    })
    .await;
    let pid = answer.unwrap().data::<u32>().unwrap();
    assert_eq!(
        served_by.unwrap(),
        pid,
        "the worker that accepted is the one that answered"
    );
    pid
}

#[tokio::test]
async fn every_worker_inherits_the_shared_listener_replacements_and_reloads_included() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let pool = within(LIMIT, "spawn", pool(1).share_socket(listener).spawn())
        .await
        .unwrap();
    let mut events = pool.events();
    let first = accepted_by_a_worker(&pool, addr).await;

    // A replacement gets its own copy: the pool kept one.
    let _ = pool.enqueue(&Cmd::Exit(3)).await;
    let exit = next_exit(&mut events).await;
    assert_eq!(exit.pid, first);
    let second = accepted_by_a_worker(&pool, addr).await;
    assert_ne!(second, first, "a replacement accepted");

    // So does a worker started by a rolling reload.
    within(LIMIT, "reload", pool.reload()).await.unwrap();
    let third = accepted_by_a_worker(&pool, addr).await;
    assert_ne!(third, second, "the reloaded worker accepted");

    within(LIMIT, "soft kill", pool.soft_kill()).await;
    drop(pool);
    // Every copy of the listener is gone with the pool and its workers:
    // nobody listens any more.
    assert!(
        eventually(LIMIT, || std::net::TcpStream::connect(addr).is_err()).await,
        "the listener outlived the pool"
    );
}

#[tokio::test]
async fn a_pool_that_shares_nothing_gives_its_workers_nothing() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let err = within(LIMIT, "accept", pool.enqueue(&Cmd::AcceptShared))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message.contains("shares no socket")),
        "{err:?}"
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn more_shared_sockets_than_a_process_takes_are_refused_at_start() {
    let mut builder = pool(1);
    for _ in 0..17 {
        builder = builder.share_socket(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    }
    match within(LIMIT, "spawn", builder.spawn()).await {
        Err(Error::TooManySharedSockets { given, max }) => {
            assert_eq!((given, max), (17, 16));
        }
        other => panic!("expected TooManySharedSockets, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sandboxed_worker_with_no_network_of_its_own_accepts_on_the_shared_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Its own network namespace (no interface but loopback: it could not
    // bind 127.0.0.1 of ours) and PID namespace (the socket is put in
    // place after the fork of its init), landlock with no path allowed.
    let sandbox = drover::Sandbox::new()
        .network_namespace()
        .pid_namespace()
        .deny_all_paths();
    let pool = within(
        LIMIT,
        "spawn",
        pool(1).sandbox(sandbox).share_socket(listener).spawn(),
    )
    .await
    .unwrap();
    let pid = accepted_by_a_worker(&pool, addr).await;
    assert!(pid > 0);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
