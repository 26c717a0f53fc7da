//! Taking ownership of the socket the supervisor left in this process.
//!
//! The one place in the SDK with `unsafe`: turning the descriptor number
//! named in the environment into an owned descriptor.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};

use drover_proto::shm::{ArenaFds, Arenas};
use drover_proto::{
    CHILD_FD, ENV_FD, ENV_PARENT_PID, ENV_SHARED_FDS, ENV_SHARED_MEMORY, MAX_SHARED_SOCKETS,
};
use rustix::fs::FileType;

use crate::error::{Error, NoSupervisor};

/// Finds and claims the inherited socket named by `DROVER_FD`, after checking
/// the parent is still the supervisor that started us.
pub(crate) fn inherited_socket() -> Result<std::os::unix::net::UnixStream, Error> {
    let not = |reason: NoSupervisor| Error::NotUnderSupervisor { reason };
    let raw = std::env::var(ENV_FD).map_err(|_| not(NoSupervisor::Unset))?;
    let fd: RawFd = raw
        .parse()
        .map_err(|_| not(NoSupervisor::NotANumber { value: raw.clone() }))?;
    if fd < 3 {
        return Err(not(NoSupervisor::StandardStream { fd }));
    }
    if let Ok(parent) = std::env::var(ENV_PARENT_PID) {
        if let Ok(expected) = parent.parse::<u32>() {
            let actual = rustix::process::getppid()
                .map(|p| p.as_raw_nonzero().get() as u32)
                .unwrap_or(0);
            if actual != expected {
                return Err(Error::Orphaned { expected, actual });
            }
        }
    }
    // Check the number names an open socket before anyone owns it.
    // SAFETY: the borrow lives only for this call; fcntl on a closed number
    // fails with EBADF, which is all we learn from it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).map_err(|e| {
        not(NoSupervisor::NotOpen {
            fd,
            source: e.into(),
        })
    })?;
    let unusable = |e: rustix::io::Errno| {
        not(NoSupervisor::Unusable {
            fd,
            source: e.into(),
        })
    };
    let stat = rustix::fs::fstat(borrowed).map_err(unusable)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
        return Err(not(NoSupervisor::NotASocket { fd }));
    }
    // SAFETY: the supervisor handed this descriptor to us and nothing else in
    // the process refers to it by number; from here it is owned once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Our own children must not inherit it.
    rustix::io::fcntl_setfd(owned.as_fd(), rustix::io::FdFlags::CLOEXEC).map_err(unusable)?;
    Ok(std::os::unix::net::UnixStream::from(owned))
}

/// Claims the sockets the pool shares with every worker: as many as
/// `DROVER_SHARED_FDS` says, the descriptors right after the supervisor's
/// socket. Each is made close-on-exec (the worker's own children do not
/// inherit it) and owned once from here. A count that does not parse, or
/// a descriptor that is not an open socket, is left alone and reported.
pub(crate) fn shared_sockets() -> Result<Vec<OwnedFd>, Error> {
    let not = |reason: NoSupervisor| Error::NotUnderSupervisor { reason };
    let Ok(raw) = std::env::var(ENV_SHARED_FDS) else {
        return Ok(Vec::new());
    };
    let count: usize = match raw.parse() {
        Ok(count) if count <= MAX_SHARED_SOCKETS => count,
        _ => return Err(not(NoSupervisor::SharedCount { value: raw })),
    };
    let mut sockets = Vec::with_capacity(count);
    for fd in (CHILD_FD + 1..).take(count) {
        // SAFETY: as for the supervisor's socket: the borrow lives only
        // for these checks.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let stat = rustix::fs::fstat(borrowed).map_err(|e| {
            not(NoSupervisor::NotOpen {
                fd,
                source: e.into(),
            })
        })?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
            return Err(not(NoSupervisor::NotASocket { fd }));
        }
        // SAFETY: the supervisor put this descriptor here for us, and
        // nothing else in the process refers to it by number.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        rustix::io::fcntl_setfd(owned.as_fd(), rustix::io::FdFlags::CLOEXEC).map_err(|e| {
            not(NoSupervisor::Unusable {
                fd,
                source: e.into(),
            })
        })?;
        sockets.push(owned);
    }
    Ok(sockets)
}

/// Maps the shared-memory arenas the supervisor made for this process, if
/// `DROVER_SHARED_MEMORY` says there are some: the two descriptors after
/// the `after` shared sockets (requests, then answers), checked to be
/// sealed memfds of the size it names. Once mapped, the descriptors are
/// closed: the mappings keep the memory.
pub(crate) fn shared_memory(after: usize) -> Result<Option<Arenas>, Error> {
    let Ok(value) = std::env::var(ENV_SHARED_MEMORY) else {
        return Ok(None);
    };
    let fail = |source: std::io::Error| Error::NotUnderSupervisor {
        reason: NoSupervisor::SharedMemory {
            value: value.clone(),
            source,
        },
    };
    let size: usize = value.parse().map_err(|_| {
        fail(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a size in bytes",
        ))
    })?;
    let first = CHILD_FD + 1 + after as RawFd;
    let mut claimed = Vec::with_capacity(2);
    for fd in [first, first + 1] {
        // SAFETY: as for the shared sockets: the borrow lives only for
        // this check.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let stat = rustix::fs::fstat(borrowed).map_err(|e| fail(e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("descriptor {fd} is not a memfd"),
            )));
        }
        // SAFETY: the supervisor put this descriptor here for us, and
        // nothing else in the process refers to it by number.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        claimed.push(owned);
    }
    let [requests, answers]: [OwnedFd; 2] = claimed.try_into().expect("two descriptors");
    let fds = ArenaFds { requests, answers };
    Arenas::adopt(&fds, size).map(Some).map_err(fail)
}
