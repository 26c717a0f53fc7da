//! What a user asks of the sandbox: the public settings.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// A sandbox for untrusted work, applied to each worker in the child
/// process between `fork` and `exec`
/// ([`Builder::sandbox`](crate::Builder::sandbox)). Every layer is opt in;
/// an empty `Sandbox` changes nothing but `no_new_privs`.
///
/// - **Filesystem** ([`read`](Sandbox::read), [`write`](Sandbox::write),
///   [`exec`](Sandbox::exec), landlock): once any path is named, every
///   other path is denied. The worker binary and the system's library
///   directories are readable and executable by default.
/// - **System calls** ([`syscalls`](Sandbox::syscalls), seccomp): named
///   presets, or an allowlist.
/// - **Namespaces**: [`network_namespace`](Sandbox::network_namespace)
///   (no interfaces, so no network at all),
///   [`pid_namespace`](Sandbox::pid_namespace),
///   [`private_tmp`](Sandbox::private_tmp) (a mount namespace with a
///   tmpfs on `/tmp`), and a user namespace whenever the worker would run
///   as a user other than root (so the others need no privilege).
/// - **cgroup v2** ([`cgroup`](Sandbox::cgroup)): memory and CPU limits
///   in a child cgroup of a delegated one.
///
/// **Enforced or refused**: `spawn()` (and `start()`) fail with
/// [`Error::SandboxUnsupported`](crate::Error::SandboxUnsupported), naming
/// the [`SandboxFeature`], when the kernel cannot enforce a rule asked
/// for, unless [`best_effort`](Sandbox::best_effort) is set: then the
/// pool runs without what is missing, and says so in
/// [`Event::SandboxUnenforced`](crate::Event::SandboxUnenforced) (once per
/// worker started) and in each [`WorkerHealth::unenforced`](crate::WorkerHealth::unenforced).
///
/// # Examples
///
/// ```no_run
/// use drover_supervisor::{Sandbox, Supervisor, SyscallPreset, Syscalls};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let sandbox = Sandbox::new()
///     .read("/srv/models")
///     .write("/var/spool/uploads")
///     .syscalls(Syscalls::deny([
///         SyscallPreset::Network,
///         SyscallPreset::Processes,
///         SyscallPreset::ExecAfterStart,
///         SyscallPreset::Ptrace,
///     ]))
///     .network_namespace()
///     .private_tmp();
/// let pool = Supervisor::builder("/usr/local/bin/thumbnailer")
///     .sandbox(sandbox)
///     .spawn()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    pub(crate) fs: Option<Filesystem>,
    pub(crate) syscalls: Option<Syscalls>,
    pub(crate) network: bool,
    pub(crate) pid: bool,
    pub(crate) private_tmp: Option<u64>,
    pub(crate) user: bool,
    pub(crate) cgroup: Option<Cgroup>,
    pub(crate) best_effort: bool,
    /// What the kernel cannot enforce, found when the pool starts (only
    /// ever non-empty in best-effort mode: otherwise the start fails).
    pub(crate) unenforced: Vec<SandboxFeature>,
}

/// The filesystem rules (landlock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filesystem {
    pub(crate) read: Vec<PathBuf>,
    pub(crate) write: Vec<PathBuf>,
    pub(crate) exec: Vec<PathBuf>,
    pub(crate) system_paths: bool,
    pub(crate) min_abi: u8,
}

/// The directories holding the dynamic loader and the shared libraries a
/// worker binary needs, readable and executable by default (those that
/// exist), with the loader's cache.
pub const SYSTEM_LIBRARY_PATHS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
];

impl Sandbox {
    /// An empty sandbox: add the layers you want.
    pub fn new() -> Sandbox {
        Sandbox::default()
    }

    fn fs(&mut self) -> &mut Filesystem {
        self.fs.get_or_insert_with(|| Filesystem {
            system_paths: true,
            min_abi: 1,
            ..Filesystem::default()
        })
    }

    /// Lets the worker read `path` (a file, or a directory and everything
    /// beneath it). Naming any path turns the filesystem layer on: every
    /// path not named is then denied, but for the worker binary and
    /// [`SYSTEM_LIBRARY_PATHS`]. The path must exist when the pool
    /// starts.
    pub fn read(mut self, path: impl AsRef<Path>) -> Sandbox {
        self.fs().read.push(path.as_ref().to_path_buf());
        self
    }

    /// Lets the worker read, write, create and remove files under `path`.
    pub fn write(mut self, path: impl AsRef<Path>) -> Sandbox {
        self.fs().write.push(path.as_ref().to_path_buf());
        self
    }

    /// Lets the worker read and execute files under `path`.
    pub fn exec(mut self, path: impl AsRef<Path>) -> Sandbox {
        self.fs().exec.push(path.as_ref().to_path_buf());
        self
    }

    /// Turns the filesystem layer on with nothing allowed but the worker
    /// binary and, unless [`without_system_paths`](Sandbox::without_system_paths),
    /// the library directories.
    pub fn deny_all_paths(mut self) -> Sandbox {
        self.fs();
        self
    }

    /// Does not allow [`SYSTEM_LIBRARY_PATHS`] by default: for a static
    /// worker binary, or to name each library with [`exec`](Sandbox::exec).
    pub fn without_system_paths(mut self) -> Sandbox {
        self.fs().system_paths = false;
        self
    }

    /// The landlock ABI version the filesystem rules need at least
    /// (default 1, the first). The pool refuses to start on a kernel
    /// whose landlock is older ([`SandboxFeature::LandlockAbi`]). Rules
    /// are always enforced with every right the kernel knows.
    pub fn landlock_abi(mut self, version: u8) -> Sandbox {
        self.fs().min_abi = version.max(1);
        self
    }

    /// Filters the worker's system calls (seccomp).
    pub fn syscalls(mut self, syscalls: Syscalls) -> Sandbox {
        self.syscalls = Some(syscalls);
        self
    }

    /// Runs each worker in a network namespace of its own with no
    /// interface (not even loopback up): it cannot reach any network
    /// address, while its socket to the supervisor (and any socket passed
    /// to it) keeps working.
    pub fn network_namespace(mut self) -> Sandbox {
        self.network = true;
        self
    }

    /// Runs each worker as process 1 of a PID namespace of its own: it
    /// sees and can signal only itself and what it starts.
    ///
    /// The worker is started through a small init: the child the
    /// supervisor forks makes the namespace, forks the worker into it and
    /// waits for it, passing its exit on (code or signal). So the pid the
    /// pool reports is that init's, which the worker's process group and
    /// kills reach as before; resident memory (`rss`, `max_rss`) is read
    /// from the worker's own process. A signal sent to that pid from
    /// outside reaches the init, whose death takes the worker with it
    /// (its parent-death signal). The worker sees itself as pid 1,
    /// and, with [`private_tmp`](Sandbox::private_tmp) (a mount
    /// namespace), gets a `/proc` of its namespace.
    pub fn pid_namespace(mut self) -> Sandbox {
        self.pid = true;
        self
    }

    /// Gives each worker a mount namespace of its own with a fresh tmpfs
    /// of 64 MiB at most on `/tmp`, writable by the worker (through the
    /// filesystem layer too), seen by no other process and gone with it.
    ///
    /// A worker binary under `/tmp` stays reachable: it is bound back in
    /// at its path. A path under `/tmp` given to [`read`](Sandbox::read),
    /// [`write`](Sandbox::write) or [`exec`](Sandbox::exec) makes `spawn()`
    /// fail with [`Error::SandboxSetup`](crate::Error::SandboxSetup) naming
    /// it: the worker could never see it.
    pub fn private_tmp(self) -> Sandbox {
        self.private_tmp_size(64 * 1024 * 1024)
    }

    /// As [`private_tmp`](Sandbox::private_tmp), with a size limit other
    /// than the default 64 MiB.
    pub fn private_tmp_size(mut self, max_bytes: u64) -> Sandbox {
        self.private_tmp = Some(max_bytes.max(4096));
        self
    }

    /// Makes a user namespace even when the worker runs as root (it is
    /// made anyway, whenever a namespace is asked for and the worker runs
    /// as another user, since making the others needs it). The worker's
    /// user and group ids are mapped to themselves.
    pub fn user_namespace(mut self) -> Sandbox {
        self.user = true;
        self
    }

    /// Puts each worker in a cgroup of its own, under a delegated cgroup
    /// v2 directory, with the limits set on [`Cgroup`].
    pub fn cgroup(mut self, cgroup: Cgroup) -> Sandbox {
        self.cgroup = Some(cgroup);
        self
    }

    /// Best-effort mode: a rule the kernel cannot enforce is left out
    /// instead of failing the start, and reported (an
    /// [`Event::SandboxUnenforced`](crate::Event::SandboxUnenforced) per
    /// worker started, and in `health()`). Configuration errors (a path
    /// to allow that does not exist) still fail.
    pub fn best_effort(mut self) -> Sandbox {
        self.best_effort = true;
        self
    }
}

/// Which system calls a worker may make (seccomp, applied in the child
/// before `exec`; the filter is built in the supervisor).
///
/// A call the filter forbids [kills the worker](Violation::Kill) by
/// default: it dies of `SIGSYS`, and its exit reason is
/// [`ExitReason::Seccomp`](crate::ExitReason::Seccomp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscalls {
    pub(crate) mode: SyscallMode,
    pub(crate) violation: Violation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyscallMode {
    Deny(Vec<SyscallPreset>),
    AllowOnly(Vec<i64>),
}

/// A named set of system calls to forbid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyscallPreset {
    /// No new socket but `AF_UNIX` ones (`socket` of any other family),
    /// and no `io_uring` (which could make sockets past the filter). The
    /// inherited socket and passed sockets keep working.
    Network,
    /// No new process: `fork`, `vfork`, and `clone` without
    /// `CLONE_THREAD`. Threads are allowed; `clone3`, whose flags a filter
    /// cannot read, fails with `ENOSYS` so the C library falls back to
    /// `clone`.
    Processes,
    /// No `execve` but the one that starts the worker, and no `execveat`.
    /// The start is told apart by the address of its path argument in the
    /// child; a compromised worker could map memory at that address and
    /// pass it, so pair this with the filesystem layer, which allows
    /// executing only the worker binary and the library directories.
    ExecAfterStart,
    /// No `ptrace`, `process_vm_readv`, `process_vm_writev`.
    Ptrace,
}

/// What a forbidden system call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Violation {
    /// Kill the worker (`SECCOMP_RET_KILL_PROCESS`): it dies of `SIGSYS`.
    #[default]
    Kill,
    /// Fail the call with this `errno` (for instance `libc::EPERM`).
    Errno(i32),
}

impl Syscalls {
    /// Forbids the system calls of each preset; every other call is
    /// allowed.
    pub fn deny(presets: impl IntoIterator<Item = SyscallPreset>) -> Syscalls {
        Syscalls {
            mode: SyscallMode::Deny(presets.into_iter().collect()),
            violation: Violation::Kill,
        }
    }

    /// Allows these system calls only (by number, `libc::SYS_read`, ...),
    /// besides the `execve` that starts the worker; every other call is
    /// forbidden. The list must hold everything the worker's runtime
    /// needs, from its first instruction on.
    pub fn allow_only(numbers: impl IntoIterator<Item = i64>) -> Syscalls {
        Syscalls {
            mode: SyscallMode::AllowOnly(numbers.into_iter().collect()),
            violation: Violation::Kill,
        }
    }

    /// What a forbidden call does (default [`Violation::Kill`]).
    pub fn on_violation(mut self, violation: Violation) -> Syscalls {
        self.violation = violation;
        self
    }
}

/// A cgroup v2 for each worker, made as a child of a delegated cgroup the
/// supervisor may write to (`/sys/fs/cgroup/<...>`), and removed when the
/// worker is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub(crate) parent: PathBuf,
    pub(crate) memory_max: Option<u64>,
    pub(crate) cpu_max: Option<(u64, u64)>,
}

impl Cgroup {
    /// Child cgroups of `parent`, a cgroup v2 directory the supervisor
    /// can write to, whose `cgroup.subtree_control` enables the
    /// controllers the limits need (`memory`, `cpu`).
    pub fn under(parent: impl AsRef<Path>) -> Cgroup {
        Cgroup {
            parent: parent.as_ref().to_path_buf(),
            memory_max: None,
            cpu_max: None,
        }
    }

    /// Each worker's memory limit (`memory.max`), in bytes: past it the
    /// kernel reclaims, then kills the worker.
    pub fn memory_max(mut self, bytes: u64) -> Cgroup {
        self.memory_max = Some(bytes);
        self
    }

    /// Each worker's CPU bandwidth (`cpu.max`): at most `quota_us` of CPU
    /// time per `period_us` (50_000 of 100_000 is half a core).
    pub fn cpu_max(mut self, quota_us: u64, period_us: u64) -> Cgroup {
        self.cpu_max = Some((quota_us.max(1000), period_us.max(1000)));
        self
    }
}

/// A sandbox feature the kernel (or the machine) cannot enforce: in
/// [`Error::SandboxUnsupported`](crate::Error::SandboxUnsupported), or, in
/// best-effort mode, in events and `health()`.
///
/// Serialized (serde) as an object whose `feature` names the variant in
/// snake case, beside its fields: `{"feature":"landlock_abi","wanted":9,"kernel":7}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "feature", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SandboxFeature {
    /// No landlock at all (not built in, or not enabled at boot).
    Landlock,
    /// Landlock, but older than the ABI asked for.
    LandlockAbi {
        /// The version asked for ([`Sandbox::landlock_abi`]).
        wanted: u8,
        /// The kernel's.
        kernel: u8,
    },
    /// No seccomp filters (`SECCOMP_SET_MODE_FILTER` with
    /// `SECCOMP_RET_KILL_PROCESS`).
    Seccomp,
    /// This namespace cannot be made ("network", "pid", "mount", "user").
    Namespace {
        /// Which one.
        kind: &'static str,
        /// Why not.
        reason: String,
    },
    /// The pool's workers are threads of the supervisor's process
    /// (`drover::testing`): no sandbox applies to them.
    InProcess,
    /// The cgroup asked for cannot be used.
    Cgroup {
        /// The parent cgroup given to [`Cgroup::under`].
        path: PathBuf,
        /// Why not: missing, not cgroup v2, not writable, a controller not
        /// enabled.
        reason: String,
    },
}

impl std::fmt::Display for SandboxFeature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxFeature::Landlock => {
                f.write_str("landlock (not in this kernel, or not enabled)")
            }
            SandboxFeature::LandlockAbi { wanted, kernel } => {
                write!(f, "landlock ABI {wanted} (this kernel has ABI {kernel})")
            }
            SandboxFeature::Seccomp => f.write_str("seccomp filters"),
            SandboxFeature::Namespace { kind, reason } => {
                write!(f, "a {kind} namespace ({reason})")
            }
            SandboxFeature::InProcess => {
                f.write_str("a sandbox for in-process workers (threads of this process)")
            }
            SandboxFeature::Cgroup { path, reason } => {
                write!(f, "cgroup v2 under {}: {reason}", path.display())
            }
        }
    }
}
