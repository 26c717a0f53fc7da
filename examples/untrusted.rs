//! Untrusted documents, parsed by sandboxed workers.
//!
//! `cargo run --example untrusted`
//!
//! The supervisor writes a few "uploads" to a spool directory and hands
//! each one's name to a pool of sandboxed workers, which parse it (count
//! its words). The parser here obeys commands hidden in a document, as a
//! compromised parser would: read a secret, phone home, run a shell. The
//! sandbox stops each one:
//!
//! - landlock lets the workers read the spool and nothing else;
//! - seccomp forbids new processes, `execve` after the start and `ptrace`
//!   (a forbidden call kills the worker: it dies of `SIGSYS`, its exit
//!   reason says seccomp, and the pool replaces it);
//! - a network namespace leaves no interface to reach anything with (the
//!   `Network` preset would kill the worker for trying instead); a
//!   PID namespace hides every other process; a private /tmp is the
//!   worker's alone.
//!
//! This one binary is both sides: started by the supervisor (which sets
//! `DROVER_FD`), it serves as a worker.

use std::path::PathBuf;

use drover::worker::Request;
use drover::{Error, Sandbox, Supervisor, SyscallPreset, Syscalls};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if drover::worker::is_worker_process() {
        drover::worker::serve(parse).await?;
    } else {
        supervisor().await?;
    }
    Ok(())
}

/// The worker: parse the upload named in the request. A line starting
/// with `!` is obeyed, as a parser with a hole in it would.
async fn parse(req: Request) -> Result<(), drover::worker::Error> {
    let path: PathBuf = req.data()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => return req.respond(&format!("cannot read the upload: {e}")),
    };
    let mut report = format!("{} words", text.split_whitespace().count());
    for line in text.lines() {
        let outcome = match line.trim() {
            "!read-secret" => std::fs::read_to_string("/etc/passwd")
                .map(|s| format!("read {} bytes of /etc/passwd", s.len())),
            "!phone-home" => {
                std::net::TcpStream::connect("127.0.0.1:9").map(|_| "connected out".to_owned())
            }
            "!shell" => {
                use std::os::unix::process::CommandExt;
                // Only returns if the exec failed.
                Err(std::process::Command::new("/bin/sh").exec())
            }
            _ => continue,
        };
        let outcome = outcome.unwrap_or_else(|e| format!("refused ({e})"));
        report.push_str(&format!("; {line}: {outcome}"));
    }
    req.respond(&report)
}

async fn supervisor() -> Result<(), Box<dyn std::error::Error>> {
    // Not under /tmp: the workers' private /tmp hides the host's (and a
    // program that itself lives under /tmp keeps its spool in /var/tmp).
    let exe = std::env::current_exe()?;
    let name = format!("untrusted-spool-{}", std::process::id());
    let spool = if exe.starts_with("/tmp") {
        std::path::Path::new("/var/tmp").join(name)
    } else {
        exe.with_file_name(name)
    };
    std::fs::create_dir_all(&spool)?;
    let uploads = [
        ("report.txt", "quarterly figures, all in order"),
        (
            "sneaky.txt",
            "an innocent looking letter\n!read-secret\n!phone-home",
        ),
        ("hostile.txt", "nothing to see\n!shell"),
        ("notes.txt", "the last upload of the day"),
    ];
    for (name, body) in uploads {
        std::fs::write(spool.join(name), body)?;
    }

    let sandbox = Sandbox::new()
        .read(&spool)
        .syscalls(Syscalls::deny([
            SyscallPreset::Processes,
            SyscallPreset::ExecAfterStart,
            SyscallPreset::Ptrace,
        ]))
        .network_namespace()
        .pid_namespace()
        .private_tmp();
    let pool = Supervisor::builder(std::env::current_exe()?)
        .workers(2)
        .sandbox(sandbox)
        .spawn()
        .await?;
    println!("pool online: {} sandboxed workers", pool.health().len());

    for (name, _) in uploads {
        match pool.enqueue(&spool.join(name)).await {
            Ok(answer) => println!("{name}: {}", answer.data::<String>()?),
            Err(Error::WorkerLost { exit, .. }) => {
                println!("{name}: its worker was stopped: {}", exit.reason);
            }
            Err(e) => return Err(e.into()),
        }
    }
    pool.soft_kill().await;
    std::fs::remove_dir_all(&spool)?;
    Ok(())
}
