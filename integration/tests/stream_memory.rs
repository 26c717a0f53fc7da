//! A gigabyte each way through one request, in bounded memory. Alone in
//! its file so the peak memory it measures is its own.

mod common;

use common::cmd::Pattern;
use common::{peak_rss_kb, pool, within, Cmd, LIMIT};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_stays_within_64_mib() {
    const GIB: u64 = 1024 * 1024 * 1024;
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let limit = std::time::Duration::from_secs(600);
    let answer = within(
        limit,
        "echo stream",
        pool.request(&Cmd::EchoStream)
            .stream(Pattern::new(GIB))
            .send(),
    )
    .await
    .unwrap();
    let mut stream = answer.stream().expect("the echo stream");
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut reference = Pattern::new(GIB);
    let mut reference_buf = vec![0u8; 256 * 1024];
    within(limit, "a gibibyte back", async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            // Compare with the pattern, byte for byte.
            reference.read_exact(&mut reference_buf[..n]).await.unwrap();
            assert!(
                buf[..n] == reference_buf[..n],
                "wrong bytes at offset {total}"
            );
            total += n as u64;
        }
    })
    .await;
    assert_eq!(total, GIB);

    let worker_peak: u64 = within(LIMIT, "worker peak", pool.enqueue(&Cmd::PeakRss))
        .await
        .unwrap()
        .data()
        .unwrap();
    let own_peak = peak_rss_kb();
    eprintln!("peak RSS: supervisor {own_peak} kB, worker {worker_peak} kB");
    assert!(own_peak < 64 * 1024, "supervisor peak {own_peak} kB");
    assert!(worker_peak < 64 * 1024, "worker peak {worker_peak} kB");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
