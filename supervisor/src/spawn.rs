//! Starting one worker process with its end of a socket pair.
//!
//! The one module of the supervisor with `unsafe`: the code that runs in
//! the child between `fork` and `exec` (`pre_exec`). It only makes
//! async-signal-safe system calls (rustix's, and `close_range` / `fcntl`
//! through libc): set the parent-death signal, check the parent is still
//! there, apply the limits, put the socket on its agreed descriptor number,
//! and make every descriptor above it close-on-exec, so that a descriptor
//! the application opened without `O_CLOEXEC` never reaches a worker.
//!
//! With a [`Sandbox`](crate::Sandbox), the child also applies what the
//! supervisor prepared for it before the fork (`sandbox::prepare`): it
//! joins its cgroup, unshares namespaces, writes its id maps, mounts its
//! private `/tmp`, forks itself into a PID namespace, restricts itself
//! with the landlock ruleset and installs the seccomp programs: raw
//! system calls on descriptors, bytes and BPF already made, nothing
//! allocated ([`apply_sandbox`]).
//!
//! Each worker leads a process group of its own: a terminal's Ctrl-C (sent
//! to the foreground group) reaches the supervisor alone, which stops its
//! workers in order, and [`kill_group`](crate::process::kill_group) takes whatever a worker started
//! with it.
#![allow(unsafe_code)]

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;

use drover_proto::shm::{ArenaFds, Arenas};
use drover_proto::{
    CHILD_FD, ENV_FD, ENV_PARENT_PID, ENV_SHARED_FDS, ENV_SHARED_MEMORY, MAX_SHARED_SOCKETS,
};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, Resource, Rlimit, Signal};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::builder::{Config, Limits};
use crate::error::Error;

/// A started worker process and the supervisor's end of its socket.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: Child,
    /// The read end of the worker's standard error, always piped so its last
    /// lines can be reported when it dies.
    pub(crate) stderr: Option<tokio::process::ChildStderr>,
    /// The read end of its standard output, piped when output is captured.
    pub(crate) stdout: Option<tokio::process::ChildStdout>,
    pub(crate) pid: u32,
    pub(crate) stream: UnixStream,
    /// What the sandbox made for this worker (its cgroup, the worker
    /// behind a PID namespace's init): the worker task holds it until
    /// after the reap.
    pub(crate) sandbox: crate::sandbox::Hold,
    /// The supervisor's side of the worker's shared-memory arenas, if the
    /// pool gives it some.
    pub(crate) arenas: Option<Arenas>,
}

type Job = (Config, oneshot::Sender<Result<Spawned, Error>>);

/// A thread that lives as long as the pool and forks every worker.
///
/// Linux delivers a child's parent-death signal when the *thread* that
/// forked it exits, not the process. Tokio retires idle threads, and a
/// caller may spawn from any of them; forking from this one thread means a
/// worker dies with its supervisor, never with some retired thread.
#[derive(Debug)]
pub(crate) struct Spawner {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the thread; it ends when the `Spawner` is dropped.
    pub(crate) fn new(runtime: tokio::runtime::Handle) -> io::Result<Spawner> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("drover-spawner".into())
            .spawn(move || {
                // tokio's process driver needs its runtime to register the child.
                let _guard = runtime.enter();
                for (config, reply) in rx {
                    let _ = reply.send(spawn_retrying_busy(&config));
                }
            })?;
        Ok(Spawner { jobs })
    }

    /// Starts one worker process from the spawner thread.
    pub(crate) async fn spawn(&self, config: &Config) -> Result<Spawned, Error> {
        let (reply, result) = oneshot::channel();
        let gone = || Error::Spawn {
            path: config.program.clone(),
            source: io::Error::other("the spawner thread is gone"),
        };
        self.jobs
            .send((config.clone(), reply))
            .map_err(|_| gone())?;
        result.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// As [`spawn_worker`], trying again a few times when the binary is
/// "busy" (`ETXTBSY`): a binary just written (a deploy before a reload) can
/// be briefly held open for writing by a process that another thread
/// forked, until that process calls `exec`.
fn spawn_retrying_busy(config: &Config) -> Result<Spawned, Error> {
    let mut attempts = 0;
    loop {
        match spawn_worker(config) {
            Err(Error::Spawn { source, .. })
                if source.raw_os_error() == Some(Errno::TXTBSY.raw_os_error()) && attempts < 5 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10 * attempts));
            }
            result => return result,
        }
    }
}

/// Starts one worker process, the leader of a process group of its own.
///
/// The socket pair is made close-on-exec; the child's end is moved to
/// descriptor [`CHILD_FD`] (which `dup2` leaves inheritable) and its number
/// passed in `DROVER_FD`. Every descriptor above it is made close-on-exec
/// in the child, so no other descriptor of ours reaches the worker, even
/// one the application opened without `O_CLOEXEC`; then the pool's shared
/// sockets, if any, are moved to the numbers right after it, their count
/// in `DROVER_SHARED_FDS`, and after those the worker's two shared-memory
/// arenas (requests, then answers), their size in `DROVER_SHARED_MEMORY`.
fn spawn_worker(config: &Config) -> Result<Spawned, Error> {
    let spawn_error = |source: io::Error| Error::Spawn {
        path: config.program.clone(),
        source,
    };
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| spawn_error(e.into()))?;

    let mut command = Command::new(&config.program);
    let limits = config.limits.clone();
    if limits.env_clear {
        // Before any variable is set: clearing forgets those too.
        command.env_clear();
    }
    if let Some(dir) = &limits.current_dir {
        command.current_dir(dir);
    }
    if let Some(uid) = limits.uid {
        command.uid(uid);
    }
    if let Some(gid) = limits.gid {
        command.gid(gid);
    }
    command
        .args(&config.args)
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .env(ENV_FD, CHILD_FD.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        // Its own group (id = its pid): a terminal's Ctrl-C goes to the
        // supervisor only, and `kill_group` reaches what the worker started.
        .process_group(0)
        .kill_on_drop(true);
    if config.capture_output {
        command.stdout(Stdio::piped());
    }
    // Everything the sandbox needs in the child is made here, before the
    // fork: the child only makes raw system calls with it.
    let (plan, cgroup) = match &limits.sandbox {
        Some(sandbox) => {
            // The address of std's copy of the program path, which its
            // `execve` gets: the one exec the ExecAfterStart filter allows.
            // `get_program` borrows the very string std passes to
            // `execvp`, which passes it on unchanged for a path with a
            // '/' (the builder requires one); should std ever copy it,
            // every start under that filter would be refused, never let
            // through (the sandbox tests start workers under it).
            // The fork copies the address space: the address holds in the
            // child.
            let exec_path = command.as_std().get_program().as_bytes().as_ptr() as u64;
            let program = std::fs::canonicalize(&config.program).map_err(spawn_error)?;
            let uid = limits
                .uid
                .unwrap_or_else(|| rustix::process::geteuid().as_raw());
            let gid = limits
                .gid
                .unwrap_or_else(|| rustix::process::getegid().as_raw());
            let (plan, cgroup) = crate::sandbox::prepare(sandbox, uid, gid, &program, exec_path)?;
            (Some(plan), cgroup)
        }
        None => (None, None),
    };
    let parent = rustix::process::getpid();
    // In a PID namespace the worker's parent (its init) is outside it, so
    // its parent pid reads 0: the init's own check stands for it.
    let pid_init = plan.as_ref().is_some_and(|p| p.pid_init);
    if !pid_init {
        command.env(ENV_PARENT_PID, parent.as_raw_nonzero().to_string());
    }
    let their_fd = theirs.as_raw_fd();
    let (arenas, arena_fds) = match config.arena_size() {
        0 => (None, None),
        size => {
            let (arenas, fds) = Arenas::create(size).map_err(spawn_error)?;
            command.env(ENV_SHARED_MEMORY, size.to_string());
            (Some(arenas), Some(fds))
        }
    };
    // Held until the child has them (dropped after `spawn`).
    let shared =
        SharedCopies::dup(&config.shared_sockets.0, arena_fds.as_ref()).map_err(spawn_error)?;
    drop(arena_fds);
    let placement = shared.placement();
    if !config.shared_sockets.0.is_empty() {
        command.env(ENV_SHARED_FDS, config.shared_sockets.0.len().to_string());
    }
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (including the fallback loop of
    // `fcntl`, and the sandbox's, on what `prepare` made before the fork);
    // it allocates nothing on its success path and touches no lock.
    unsafe {
        command.pre_exec(move || {
            child_setup(their_fd, parent, &limits)?;
            match &plan {
                Some(plan) => apply_sandbox(plan, &placement),
                None => placement.apply(),
            }
        });
    }
    let mut child = command.spawn().map_err(spawn_error)?;
    drop(theirs);
    drop(shared);
    let stderr = child.stderr.take();
    let stdout = child.stdout.take();
    let pid = child.id().unwrap_or(0);
    let behind_init = pid_init
        .then(|| crate::sandbox::BehindInit::find(pid))
        .flatten();

    let std_stream = std::os::unix::net::UnixStream::from(ours);
    std_stream.set_nonblocking(true).map_err(spawn_error)?;
    let stream = UnixStream::from_std(std_stream).map_err(spawn_error)?;
    Ok(Spawned {
        child,
        stderr,
        stdout,
        pid,
        stream,
        sandbox: crate::sandbox::Hold {
            _cgroup: cgroup,
            _behind_init: behind_init,
        },
        arenas,
    })
}

/// The first descriptor made close-on-exec in the child: the one after
/// the socket's (the shared sockets are put in place after that).
const FIRST_CLOSED_FD: RawFd = CHILD_FD + 1;

/// The most descriptors put in place after the socket: the shared
/// sockets and the two arenas.
const MAX_PLACED: usize = MAX_SHARED_SOCKETS + 2;

/// The parent's copies of the pool's shared sockets (and of the worker's
/// arenas) for one child, each at a number above every number one is
/// moved to in the child (`CHILD_FD + 1 ..= CHILD_FD + MAX_PLACED`), so
/// that moving one never overwrites another that is still to be moved.
struct SharedCopies {
    copies: Vec<OwnedFd>,
}

impl SharedCopies {
    fn dup(
        sockets: &[std::sync::Arc<OwnedFd>],
        arenas: Option<&ArenaFds>,
    ) -> io::Result<SharedCopies> {
        let above = CHILD_FD + 1 + MAX_PLACED as RawFd;
        let arenas = arenas.into_iter().flat_map(|a| [&a.requests, &a.answers]);
        let copies = sockets
            .iter()
            .map(|socket| &**socket)
            .chain(arenas)
            .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, above).map_err(io::Error::from))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(SharedCopies { copies })
    }

    /// The numbers, in a form the child can use without allocating.
    fn placement(&self) -> Placement {
        let mut from = [0; MAX_PLACED];
        for (slot, copy) in from.iter_mut().zip(&self.copies) {
            *slot = copy.as_raw_fd();
        }
        Placement {
            from,
            len: self.copies.len().min(MAX_PLACED),
        }
    }
}

/// Where the child moves the shared sockets and arenas: `from[i]` to
/// `CHILD_FD + 1 + i`, inheritable.
#[derive(Clone, Copy)]
struct Placement {
    from: [RawFd; MAX_PLACED],
    len: usize,
}

impl Placement {
    /// Runs in the child, after everything that may still use a
    /// descriptor of the sandbox's plan (whose numbers may be among the
    /// targets) and before the seccomp filter: `dup2` of each copy onto its
    /// number, which clears close-on-exec there.
    fn apply(&self) -> io::Result<()> {
        for (i, &from) in self.from[..self.len].iter().enumerate() {
            // SAFETY: `from` is open in the child (the parent's copy,
            // inherited across fork, above every target number). The
            // target number is wrapped only so rustix can name it, and
            // never closed by us (ManuallyDrop): exec hands it to the
            // worker.
            let source = unsafe { BorrowedFd::borrow_raw(from) };
            let mut target =
                ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(CHILD_FD + 1 + i as RawFd) });
            rustix::io::dup2(source, &mut target)?;
        }
        Ok(())
    }
}

/// How far the fallback loop of [`cloexec_above_child_fd`] goes at most.
const FALLBACK_FD_CAP: u64 = 65_536;

/// Runs in the child between `fork` and `exec`.
///
/// Only async-signal-safe system calls, no allocation: the parent may have
/// had other threads holding locks (the allocator's) at the fork.
fn child_setup(fd: RawFd, parent: Pid, limits: &Limits) -> io::Result<()> {
    // Read before our own limits apply: lowering RLIMIT_NOFILE closes
    // nothing, so descriptors above a lower limit may still be open.
    let fd_bound = match rustix::process::getrlimit(Resource::Nofile).current {
        Some(soft) => soft.min(FALLBACK_FD_CAP),
        None => FALLBACK_FD_CAP,
    };
    // Die with the supervisor. The signal fires when the forking *thread*
    // exits; the worker also checks its parent pid when it connects.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    if rustix::process::getppid() != Some(parent) {
        // The supervisor died between fork and here: do not start at all.
        return Err(rustix::io::Errno::SRCH.into());
    }
    let rlimits = [
        (Resource::As, limits.address_space, 0),
        // The soft CPU limit sends SIGXCPU; the hard one, a second later, SIGKILL.
        (Resource::Cpu, limits.cpu_seconds, 1),
        (Resource::Nofile, limits.open_files, 0),
        (Resource::Nproc, limits.processes, 0),
    ];
    for (resource, limit, slack) in rlimits {
        if let Some(limit) = limit {
            rustix::process::setrlimit(
                resource,
                Rlimit {
                    current: Some(limit),
                    maximum: Some(limit.saturating_add(slack)),
                },
            )?;
        }
    }
    if limits.no_new_privs || limits.sandbox.is_some() {
        rustix::thread::set_no_new_privs(true)?;
    }
    if fd == CHILD_FD {
        // Already in place: only clear close-on-exec.
        // SAFETY: `fd` is open in the child (inherited across fork).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::empty())?;
    } else {
        // SAFETY: `fd` is open in the child (inherited across fork). The
        // target number is wrapped only so rustix can name it, and never
        // closed by us (ManuallyDrop): exec hands it to the worker.
        let source = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(CHILD_FD) });
        rustix::io::dup2(source, &mut target)?;
    }
    cloexec_above_child_fd(fd_bound);
    Ok(())
}

/// Applies the sandbox in the child, after [`child_setup`], in this order:
/// cgroup, namespaces (and the user namespace's id maps), private `/tmp`,
/// the PID namespace's init, landlock, the shared sockets put in place,
/// seccomp (last: nothing after it but std's `execve`, which it lets
/// through).
///
/// Async-signal-safe: raw system calls on what `sandbox::prepare` made
/// in the parent before the fork (descriptors, bytes, BPF programs);
/// nothing is allocated, no lock is touched.
fn apply_sandbox(plan: &crate::sandbox::ChildPlan, shared: &Placement) -> io::Result<()> {
    let check = |result: libc::c_long| {
        if result < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    if let Some(procs) = &plan.cgroup_procs {
        // "0" moves the writing process.
        rustix::io::write(procs, b"0")?;
    }
    if plan.unshare != 0 {
        // SAFETY: a system call on flags alone.
        check(unsafe { libc::unshare(plan.unshare) }.into())?;
    }
    if let Some((uid_map, gid_map)) = &plan.id_maps {
        // A process whose ids were just changed (std's setuid, for a
        // worker of another user) is not dumpable, which makes its /proc
        // files root's: it could not write its own maps.
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)?;
        write_proc(c"/proc/self/setgroups", b"deny")?;
        write_proc(c"/proc/self/uid_map", uid_map)?;
        write_proc(c"/proc/self/gid_map", gid_map)?;
    }
    if let Some(keep) = &plan.keep_program {
        // The binary, opened in this mount namespace (before the tmpfs
        // hides it) onto the number reserved for it.
        // SAFETY: a path made in the parent; the descriptor opened is
        // moved onto the reserved number (the child's copy of a
        // descriptor it owns) and closed.
        unsafe {
            let binary = libc::open(keep.target.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            check(binary.into())?;
            check(libc::dup3(binary, keep.reserved(), libc::O_CLOEXEC).into())?;
            libc::close(binary);
        }
    }
    if let Some(options) = &plan.tmpfs {
        // SAFETY: static strings and the options string made in the
        // parent; mount reads them and keeps nothing.
        unsafe {
            // Our mounts are ours alone: nothing propagates back out.
            check(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
                .into(),
            )?;
            check(
                libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    options.as_ptr().cast(),
                )
                .into(),
            )?;
        }
        if let Some(keep) = &plan.keep_program {
            // The worker binary lived under /tmp: its path is made again
            // in the new tmpfs and the binary (opened just above) bound
            // onto it, so `exec` finds it where it was.
            // SAFETY: strings made in the parent; each call reads them and
            // keeps nothing; the descriptor opened is closed at once.
            unsafe {
                for dir in &keep.dirs {
                    // Made just now, in an empty tmpfs: EEXIST cannot be.
                    check(libc::mkdir(dir.as_ptr(), 0o755).into())?;
                }
                let file = libc::open(
                    keep.target.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o755,
                );
                check(file.into())?;
                libc::close(file);
                check(
                    libc::mount(
                        keep.source.as_ptr(),
                        keep.target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                    .into(),
                )?;
            }
        }
    }
    if plan.pid_init {
        pid_namespace_init()?;
        // From here on: the worker, process 1 of its PID namespace.
        if plan.tmpfs.is_some() {
            // Its own /proc, showing its namespace only.
            // SAFETY: static strings.
            check(
                unsafe {
                    libc::mount(
                        c"proc".as_ptr(),
                        c"/proc".as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    )
                }
                .into(),
            )?;
        }
    }
    if let Some(ruleset) = &plan.landlock {
        // SAFETY: a system call on a descriptor we hold (made in the
        // parent, inherited by the fork) and a flags word.
        check(unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                ruleset.as_raw_fd(),
                0 as libc::c_uint,
            )
        })?;
    }
    shared.apply()?;
    for filter in &plan.filters {
        let program = libc::sock_fprog {
            len: u16::try_from(filter.len())
                .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: the kernel copies the program (compiled in the parent,
        // which the fork copied) and keeps no pointer to it.
        check(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_uint,
                &program as *const libc::sock_fprog,
            )
        })?;
    }
    Ok(())
}

/// Writes `bytes` to the `/proc` file `path` (the id maps).
fn write_proc(path: &std::ffi::CStr, bytes: &[u8]) -> io::Result<()> {
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::io::write(&fd, bytes)?;
    Ok(())
}

/// After `unshare(CLONE_NEWPID)`, which puts the caller's *children* in
/// the new namespace: forks the worker, which returns (as process 1 of
/// the namespace) to go on to `exec`; this process stays behind as its
/// init, outside the namespace, and never returns.
///
/// The init closes every descriptor (the worker's socket, its standard
/// streams, std's exec-error pipe, so that the spawn sees the worker's
/// `exec` alone), waits for the worker and exits as it did: with its
/// code, or killed by its signal. It keeps the parent-death signal set
/// before the fork; the worker gets its own, on the init. Killing the
/// process group (what the pool does) kills both.
fn pid_namespace_init() -> io::Result<()> {
    // SAFETY: fork in the child of a fork: both sides go on with raw
    // system calls only.
    let worker = unsafe { libc::fork() };
    if worker < 0 {
        return Err(io::Error::last_os_error());
    }
    if worker == 0 {
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        return Ok(());
    }
    // SAFETY: plain system calls on numbers; the status word is ours.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            0 as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        ) != 0
        {
            for fd in 0..1024 {
                libc::close(fd);
            }
        }
        let mut status: libc::c_int = 0;
        loop {
            let reaped = libc::waitpid(worker, &mut status, 0);
            if reaped == worker {
                break;
            }
            if reaped < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            // Die of the same signal, without a core file.
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_UNBLOCK, &all, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(127)
    }
}

/// The kernel's landlock ABI version; 0 or less where it has none.
pub(crate) fn kernel_landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with the VERSION flag the call reads no attribute (null, 0)
    // and only returns the version.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(version).unwrap_or(0)
}

/// Whether the kernel takes seccomp filters that kill the process
/// (`SECCOMP_RET_KILL_PROCESS`, Linux 4.14).
pub(crate) fn kernel_has_seccomp_kill() -> bool {
    let action: u32 = libc::SECCOMP_RET_KILL_PROCESS;
    // SAFETY: the call reads the one u32 it is given.
    unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0 as libc::c_uint,
            &action as *const u32,
        ) == 0
    }
}

/// Makes every descriptor above [`CHILD_FD`] close-on-exec, so that the
/// worker inherits the standard streams and its socket and nothing else.
///
/// Close-on-exec, not closed: std's `Command` keeps a close-on-exec pipe
/// open in the child to report a failed `exec` ("no such file"); closing
/// it would turn that error into a silent success. With `close_range`'s
/// `CLOSE_RANGE_CLOEXEC` (Linux 5.11) this is one system call; where it
/// fails (`ENOSYS` before 5.9, `EINVAL` before 5.11, `EPERM` under a
/// seccomp filter that does not know it) each number below `bound` gets
/// `fcntl(F_SETFD, FD_CLOEXEC)`, numbers not open failing harmlessly.
fn cloexec_above_child_fd(bound: u64) {
    // SAFETY: a plain system call on descriptor numbers, no memory passed;
    // it changes only the close-on-exec flag of descriptors we hold.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            FIRST_CLOSED_FD as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if !done {
        cloexec_loop(FIRST_CLOSED_FD, bound);
    }
}

/// The fallback of [`cloexec_above_child_fd`]: `FD_CLOEXEC` on every
/// number in `first..bound`, one `fcntl` each (`EBADF` for a number not
/// open, ignored). Raw numbers on purpose: most are not open, so no
/// `BorrowedFd` may name them.
fn cloexec_loop(first: RawFd, bound: u64) {
    let bound = RawFd::try_from(bound).unwrap_or(RawFd::MAX);
    for fd in first..bound {
        // SAFETY: `fcntl(F_SETFD)` takes a number and an int, touches no
        // memory, and only sets the flag of a descriptor that is open.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    /// What `ls -l /proc/self/fd` shows in a child started with `setup`
    /// run before its exec.
    fn child_fds(setup: Option<fn()>) -> String {
        let mut command = Command::new("ls");
        command.args(["-l", "/proc/self/fd"]).stdout(Stdio::piped());
        if let Some(setup) = setup {
            // SAFETY: the setup functions tested here only make
            // async-signal-safe system calls.
            unsafe {
                command.pre_exec(move || {
                    setup();
                    Ok(())
                });
            }
        }
        let output = command.output().expect("ls runs");
        assert!(output.status.success(), "ls failed: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A file of a unique name, open twice: once close-on-exec (std's
    /// default) and once without (`dup`).
    fn leaked_file(tag: &str) -> (std::path::PathBuf, std::fs::File, OwnedFd) {
        let path = std::env::temp_dir().join(format!(
            "drover-spawn-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let file = std::fs::File::create(&path).expect("temp file");
        // Numbered above the socket's whatever the other tests hold open
        // (the lowest free number could be 3), then made inheritable.
        let leaked = rustix::io::fcntl_dupfd_cloexec(&file, 10).expect("dup");
        rustix::io::fcntl_setfd(&leaked, rustix::io::FdFlags::empty()).expect("fcntl");
        (path, file, leaked)
    }

    #[test]
    fn close_range_leaves_nothing_inheritable() {
        let (path, _file, _leaked) = leaked_file("range");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // The control: without the setup, the child does inherit it.
        assert!(
            child_fds(None).contains(&name),
            "the test cannot see a leak"
        );
        let seen = child_fds(Some(|| cloexec_above_child_fd(FALLBACK_FD_CAP)));
        assert!(
            !seen.contains(&name),
            "the leaked file reached the child:\n{seen}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn fallback_loop_leaves_nothing_inheritable() {
        let (path, _file, _leaked) = leaked_file("loop");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            child_fds(None).contains(&name),
            "the test cannot see a leak"
        );
        let seen = child_fds(Some(|| cloexec_loop(FIRST_CLOSED_FD, 1024)));
        assert!(
            !seen.contains(&name),
            "the leaked file reached the child:\n{seen}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_missing_binary_is_still_an_error() {
        // std reports a failed exec through a close-on-exec pipe that the
        // setup must leave open.
        let mut command = Command::new("/nonexistent/drover-no-such-binary");
        // SAFETY: as in `child_fds`.
        unsafe {
            command.pre_exec(|| {
                cloexec_above_child_fd(FALLBACK_FD_CAP);
                Ok(())
            });
        }
        let error = command.spawn().expect_err("no such binary");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
