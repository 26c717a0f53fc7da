//! The worker binary the integration tests drive: it does, on command,
//! everything a worker may do, well or badly.
#![allow(unsafe_code)]

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use drover_worker::{Request, Worker};

#[path = "../common/cmd.rs"]
mod cmd;
use cmd::Cmd;

#[tokio::main]
async fn main() -> Result<(), drover_worker::Error> {
    if std::env::args().nth(1).as_deref() == Some("--supervise") {
        supervise().await;
        return Ok(());
    }
    // Keep a second handle on the socket for the misbehaving commands,
    // before the SDK claims it.
    // SAFETY: descriptor 3 is the socket the supervisor passed; it is only
    // borrowed for the duplication.
    let raw = rustix::io::fcntl_dupfd_cloexec(unsafe { BorrowedFd::borrow_raw(3) }, 10)
        .map(std::os::unix::net::UnixStream::from)
        .ok();

    let worker = Worker::connect().await?;
    if let Ok(mb) = std::env::var("DROVER_TEST_HOG_MB") {
        if worker.index() == 0 {
            let mb: usize = mb.parse().unwrap_or(200);
            let hog = vec![1u8; mb * 1024 * 1024];
            std::mem::forget(hog);
        }
    }

    let hook_worker = worker.clone();
    worker.on_soft_kill(move || async move {
        let _ = hook_worker.emit("soft-kill-hook", &std::process::id());
    });

    let events_worker = worker.clone();
    tokio::spawn(async move {
        let mut events = events_worker.events();
        while let Some(event) = events.recv().await {
            match event.name() {
                "wake" => {
                    let _ = events_worker.ready();
                }
                "ping-all" => {
                    let payload: String = event.data().unwrap_or_default();
                    let _ = events_worker.emit("pong", &(std::process::id(), payload));
                }
                _ => {}
            }
        }
    });

    let me = worker.clone();
    worker
        .serve(move |req: Request| {
            let me = me.clone();
            let raw = raw.as_ref().and_then(|s| s.try_clone().ok());
            async move {
                match req.data::<Cmd>()? {
                    Cmd::Echo(text) => req.respond(&text),
                    Cmd::Pid => req.respond(&std::process::id()),
                    Cmd::Sleep(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        req.respond(&std::process::id())
                    }
                    Cmd::Busy => {
                        me.busy()?;
                        req.respond(&std::process::id())
                    }
                    Cmd::Emit(name) => {
                        me.emit(&name, &std::process::id())?;
                        req.ack()
                    }
                    Cmd::Panic => panic!("told to panic"),
                    Cmd::Fail(text) => {
                        Err(drover_worker::Error::NotUnderSupervisor { reason: text })
                    }
                    Cmd::HugeFrame(len) => {
                        let mut raw = raw.expect("raw socket");
                        raw.write_all(&len.to_be_bytes()).expect("write");
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                    Cmd::Garbage => {
                        let mut raw = raw.expect("raw socket");
                        raw.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
                            .expect("write");
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                    Cmd::Exit(code) => std::process::exit(code),
                    Cmd::InFlight => {
                        let ids: Vec<String> =
                            me.requests().iter().map(|r| r.id.to_string()).collect();
                        req.respond(&ids)
                    }
                }
            }
        })
        .await
}

/// Runs a pool of two copies of this binary, prints their pids, and waits
/// to be killed: the tests check the workers die with it.
async fn supervise() {
    let exe = std::env::current_exe().expect("current_exe");
    let pool = drover::Supervisor::builder(exe)
        .workers(2)
        .spawn()
        .await
        .expect("spawn");
    let pids: Vec<String> = pool.health().iter().map(|h| h.pid.to_string()).collect();
    println!("{}", pids.join(" "));
    std::future::pending::<()>().await;
}
