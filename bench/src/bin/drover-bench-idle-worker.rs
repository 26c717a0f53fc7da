//! The smallest worker a user would build with the SDK: it answers every
//! request with an empty acknowledgement. `drover-bench --memory` reads
//! its resident memory while idle; the bench binary itself, which also
//! holds the HTTP, queue and hand-written-pool workloads, is a larger
//! program to map.

use drover_worker::{Request, Worker};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        Worker::connect()
            .await?
            .serve(|req: Request| async move { req.ack() })
            .await
    })?;
    Ok(())
}
