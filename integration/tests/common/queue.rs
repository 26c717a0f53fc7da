//! Helpers for the job queue's tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use drover::queue::{JobQueue, JobValue, Stats, Store};

use super::LIMIT;

/// Polls the queue's stats until they are `want` (true) or [`LIMIT`]
/// passes (false, printing what they were).
pub async fn settled<S: Store, J: JobValue>(queue: &JobQueue<S, J>, want: Stats) -> bool {
    let deadline = Instant::now() + LIMIT;
    loop {
        if queue.stats().await.unwrap() == want {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("stats: {:?}", queue.stats().await.unwrap());
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many requests the pool's workers served, in all.
pub fn served(pool: &drover::Supervisor) -> u64 {
    pool.health().iter().map(|h| h.served).sum()
}
