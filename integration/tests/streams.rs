//! Byte streams both ways, multiplexed with flow control.

mod common;

use std::time::{Duration, Instant};

use common::cmd::{checksum, Pattern};
use common::{pids, pool, within, Cmd, LIMIT};
use tokio::io::AsyncReadExt;

/// Reads `stream` to its end; returns (bytes, checksum).
async fn drain(mut stream: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<(u64, u64)> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut total, mut sum) = (0u64, 0u64);
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, sum));
        }
        sum = checksum(sum, total, &buf[..n]);
        total += n as u64;
    }
}

fn expected(len: u64) -> (u64, u64) {
    let bytes: Vec<u8> = (0..len).map(Pattern::byte).collect();
    (len, checksum(0, 0, &bytes))
}

#[tokio::test]
async fn a_stream_goes_to_a_worker_and_one_comes_back() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let len = 3 * 1024 * 1024 + 17;
    let answer = within(
        LIMIT,
        "sum",
        pool.request(&Cmd::SumStream)
            .stream(Pattern::new(len))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(answer.data::<(u64, u64)>().unwrap(), expected(len));

    let answer = within(LIMIT, "stream out", pool.enqueue(&Cmd::StreamOut(len)))
        .await
        .unwrap();
    let stream = answer.stream().expect("a stream came with the answer");
    assert!(answer.stream().is_none(), "a stream is taken once");
    assert_eq!(
        within(LIMIT, "read", drain(stream)).await.unwrap(),
        expected(len)
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_up_only_its_own_stream() {
    let pool = within(LIMIT, "spawn", pool(1).max_concurrency(16).spawn())
        .await
        .unwrap();
    let len = 8 * 1024 * 1024;
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(
            within(LIMIT, "stream out", pool.enqueue(&Cmd::StreamOut(len)))
                .await
                .unwrap(),
        );
    }
    // The first is read very slowly: a kilobyte every 5 ms.
    let slow_stream = answers[0].stream().unwrap();
    let slow = tokio::spawn(async move {
        let mut stream = slow_stream;
        let mut buf = [0u8; 1024];
        let mut total = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => panic!("slow stream failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        total
    });
    let fast: Vec<_> = answers[1..]
        .iter()
        .map(|a| tokio::spawn(drain(a.stream().unwrap())))
        .collect();
    for task in fast {
        let got = within(LIMIT, "a fast stream", task).await.unwrap().unwrap();
        assert_eq!(got.0, len);
    }
    // Ordinary requests to the same worker are answered meanwhile.
    for i in 0..10 {
        let text = format!("meanwhile {i}");
        let answer = within(
            Duration::from_secs(5),
            "echo",
            pool.enqueue(&Cmd::Echo(text.clone())),
        )
        .await
        .unwrap();
        assert_eq!(answer.data::<String>().unwrap(), text);
    }
    assert!(!slow.is_finished(), "the slow reader finished early");
    let read = within(LIMIT, "slow reader", slow).await.unwrap();
    assert!(
        read < len as usize,
        "the slow reader read everything: {read}"
    );
    drop(answers);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_worker_killed_mid_stream_fails_the_read_naming_it() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let pid = pids(&pool)[0];
    let answer = within(
        LIMIT,
        "stream out",
        pool.enqueue(&Cmd::StreamOut(u64::MAX / 2)),
    )
    .await
    .unwrap();
    let mut stream = answer.stream().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    // Some of it arrives...
    let n = within(LIMIT, "first bytes", stream.read(&mut buf))
        .await
        .unwrap();
    assert!(n > 0);
    // ...then the worker dies.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let err = within(LIMIT, "the read to fail", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => panic!("the stream ended cleanly"),
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    })
    .await;
    let text = err.to_string();
    assert!(
        text.contains(&pid.to_string()) && text.contains("cut short"),
        "{text}"
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_failing_source_fails_the_workers_read() {
    struct Broken(u32);
    impl tokio::io::AsyncRead for Broken {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0 == 0 {
                return std::task::Poll::Ready(Err(std::io::Error::other("disk on fire")));
            }
            self.0 -= 1;
            buf.put_slice(&[1; 1000]);
            std::task::Poll::Ready(Ok(()))
        }
    }
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let err = within(
        LIMIT,
        "sum",
        pool.request(&Cmd::SumStream).stream(Broken(10)).send(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    // The pool is fine.
    within(LIMIT, "pid", pool.enqueue(&Cmd::Pid)).await.unwrap();
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn dropping_an_answer_stream_stops_the_worker_sending() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let answer = within(
        LIMIT,
        "stream out",
        pool.enqueue(&Cmd::StreamOut(u64::MAX / 2)),
    )
    .await
    .unwrap();
    drop(answer.stream());
    drop(answer);
    // The worker's pump stops; a soft kill (which waits for pumps) ends.
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
