//! The worker the sandbox tests drive: on request it tries what a
//! compromised worker would (read a file, connect, exec, fork) and says
//! what happened, so a test can check the sandbox stopped it.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use drover_worker::Request;

#[path = "../../tests/common/probe.rs"]
mod probe;
use probe::{Outcome, Probe};

#[tokio::main]
async fn main() -> Result<(), drover_worker::Error> {
    drover_worker::serve(|req: Request| async move {
        match req.data::<Probe>()? {
            Probe::Echo(text) => req.respond(&text),
            probe => req.respond(&attempt(probe)),
        }
    })
    .await
}

fn attempt(probe: Probe) -> Outcome {
    let os = |e: std::io::Error| e.to_string();
    match probe {
        Probe::Echo(text) => Ok(text),
        Probe::Read(path) => std::fs::read_to_string(path).map_err(os),
        Probe::Write(path, text) => {
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(os)?;
            let mut back = String::new();
            std::fs::File::open(&path)
                .and_then(|mut f| f.read_to_string(&mut back))
                .map_err(os)?;
            Ok(back)
        }
        Probe::Connect(addr) => {
            let addr: SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .map(|s| format!("connected from {:?}", s.local_addr()))
                .map_err(os)
        }
        // Returns only if the exec failed.
        Probe::Exec => Err(os(std::process::Command::new("/bin/sh")
            .args(["-c", "exit 7"])
            .exec())),
        Probe::Fork => fork(),
        Probe::Spawn => std::process::Command::new("/bin/true")
            .status()
            .map(|s| s.to_string())
            .map_err(os),
        Probe::Pid => Ok(std::process::id().to_string()),
        Probe::Signal(pid) => {
            // SAFETY: signal 0 only checks that a signal could be sent.
            match unsafe { libc::kill(pid as libc::pid_t, 0) } {
                0 => Ok(format!("pid {pid} can be signalled")),
                _ => Err(std::io::Error::last_os_error().to_string()),
            }
        }
        Probe::List(dir) => {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map_err(os)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            Ok(names.join(","))
        }
    }
}

/// A bare `fork()`: the child exits at once; the worker reaps it.
fn fork() -> Outcome {
    // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if pid == 0 {
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just made; the status word is ours.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(format!("forked pid {pid}"))
}
