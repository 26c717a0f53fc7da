//! Everything the child needs, made in the supervisor before `fork`.
//!
//! Between `fork` and `exec` the child may only make async-signal-safe
//! system calls: no allocation, no lock (another thread of the parent may
//! have held the allocator's at the fork). So the landlock ruleset is
//! built here (its descriptor is all the child gets), the seccomp BPF
//! programs are compiled here, the cgroup is made here (the child only
//! writes "0" to a descriptor of its `cgroup.procs`), and the uid/gid map
//! lines and mount options are formatted here. The child side is
//! `spawn::apply_sandbox`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::settings::{Sandbox, SandboxFeature, SyscallMode, SyscallPreset, Syscalls, Violation};
use crate::error::Error;

/// What the child applies, in this order: cgroup, namespaces (with the
/// id maps, the private /tmp, the PID namespace's init), landlock,
/// seccomp.
#[derive(Debug, Default)]
pub(crate) struct ChildPlan {
    /// `cgroup.procs` of the worker's own cgroup, opened for writing.
    pub(crate) cgroup_procs: Option<OwnedFd>,
    /// `CLONE_NEW*` flags for `unshare`.
    pub(crate) unshare: libc::c_int,
    /// The lines for `/proc/self/uid_map` and `gid_map`, with a user
    /// namespace.
    pub(crate) id_maps: Option<(Vec<u8>, Vec<u8>)>,
    /// The tmpfs options for a private `/tmp`.
    pub(crate) tmpfs: Option<CString>,
    /// A worker binary under `/tmp`, kept reachable through the private
    /// `/tmp` (bound back in at its path).
    pub(crate) keep_program: Option<KeepProgram>,
    /// Fork the worker into the PID namespace, behind a waiting init.
    pub(crate) pid_init: bool,
    /// The landlock ruleset.
    pub(crate) landlock: Option<OwnedFd>,
    /// The seccomp programs, installed in order.
    pub(crate) filters: Vec<Vec<libc::sock_filter>>,
}

/// How a worker binary under `/tmp` stays where the private tmpfs on
/// `/tmp` would hide it: in its new mount namespace, before the tmpfs is
/// mounted, the child opens the binary again (a bind mount's source must
/// be in the caller's namespace) onto the descriptor number reserved here;
/// then makes its directories and an empty file at its path in the new
/// tmpfs and binds the binary onto that file, before `exec`.
#[derive(Debug)]
pub(crate) struct KeepProgram {
    /// The binary, opened `O_PATH` before the fork: its number is the
    /// child's to reuse (`reserved`).
    binary: OwnedFd,
    /// `/proc/self/fd/N` of that number.
    pub(crate) source: CString,
    /// The directories from `/tmp` down to the binary's, in order.
    pub(crate) dirs: Vec<CString>,
    /// The binary's path.
    pub(crate) target: CString,
}

impl KeepProgram {
    /// The descriptor number the child opens the binary onto.
    pub(crate) fn reserved(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.binary.as_raw_fd()
    }

    fn new(program: &Path) -> Result<KeepProgram, Error> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let binary = rustix::fs::open(
            program,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::SandboxSetup {
            what: "the worker binary kept through the private /tmp",
            path: program.to_path_buf(),
            source: e.into(),
        })?;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("a path holds no NUL");
        let mut dirs: Vec<CString> = program
            .ancestors()
            .skip(1)
            .take_while(|dir| dir.starts_with("/tmp") && *dir != Path::new("/tmp"))
            .map(c)
            .collect();
        dirs.reverse();
        Ok(KeepProgram {
            source: CString::new(format!("/proc/self/fd/{}", binary.as_raw_fd()))
                .expect("digits hold no NUL"),
            binary,
            dirs,
            target: c(program),
        })
    }
}

/// A worker's own cgroup directory, removed when dropped (after the
/// worker was reaped: the pool drops it with what is left of the spawn).
#[derive(Debug)]
pub(crate) struct CgroupDir(PathBuf);

impl Drop for CgroupDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            tracing::debug!(cgroup = %self.0.display(), "cannot remove a worker's cgroup: {e}");
        }
    }
}

/// Names workers' cgroups apart within one supervisor.
static CGROUP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Makes the plan for one worker. `program` is the worker binary's path;
/// `exec_path` the address of the path string the child's `execve` will
/// get (std's copy of it), which the `ExecAfterStart` filter lets through.
///
/// # Errors
///
/// [`Error::SandboxSetup`], naming what could not be made.
pub(crate) fn prepare(
    sandbox: &Sandbox,
    worker_uid: u32,
    worker_gid: u32,
    program: &Path,
    exec_path: u64,
) -> Result<(ChildPlan, Option<CgroupDir>), Error> {
    let mut plan = ChildPlan::default();
    let on = |f: fn(&SandboxFeature) -> bool| sandbox.enforces(f);
    let ns_on = |kind: &str| {
        sandbox.enforces(|f| matches!(f, SandboxFeature::Namespace { kind: k, .. } if *k == kind))
    };

    let mut cgroup_dir = None;
    if let Some(cgroup) = &sandbox.cgroup {
        if on(|f| matches!(f, SandboxFeature::Cgroup { .. })) {
            let (dir, procs) = make_cgroup(cgroup)?;
            plan.cgroup_procs = Some(procs);
            cgroup_dir = Some(dir);
        }
    }

    let mut flags = 0;
    if sandbox.network && ns_on("network") {
        flags |= libc::CLONE_NEWNET;
    }
    if sandbox.pid && ns_on("pid") {
        flags |= libc::CLONE_NEWPID;
        plan.pid_init = true;
    }
    if let Some(size) = sandbox.private_tmp {
        if ns_on("mount") {
            flags |= libc::CLONE_NEWNS;
            plan.tmpfs =
                Some(CString::new(format!("mode=1777,size={size}")).expect("digits hold no NUL"));
            if program.is_absolute() && program.starts_with("/tmp") {
                plan.keep_program = Some(KeepProgram::new(program)?);
            }
            // A path the worker is to reach under /tmp would be hidden by
            // its private /tmp: said now, not found missing by the worker.
            if let Some(fs) = &sandbox.fs {
                let hidden = fs
                    .read
                    .iter()
                    .chain(&fs.write)
                    .chain(&fs.exec)
                    .find(|path| path.starts_with("/tmp") && *path != Path::new("/tmp"));
                if let Some(path) = hidden {
                    return Err(Error::SandboxSetup {
                        what: "the allowed path",
                        path: path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "private_tmp gives the worker an empty /tmp of its own, which hides it; keep what the worker reads or writes outside /tmp",
                        ),
                    });
                }
            }
        }
    }
    if (sandbox.user || (flags != 0 && worker_uid != 0)) && ns_on("user") {
        flags |= libc::CLONE_NEWUSER;
        plan.id_maps = Some((
            format!("{worker_uid} {worker_uid} 1\n").into_bytes(),
            format!("{worker_gid} {worker_gid} 1\n").into_bytes(),
        ));
    }
    plan.unshare = flags;

    if let Some(fs) = &sandbox.fs {
        if on(|f| {
            matches!(
                f,
                SandboxFeature::Landlock | SandboxFeature::LandlockAbi { .. }
            )
        }) {
            let mut write = fs.write.clone();
            if plan.tmpfs.is_some() {
                // The private tmpfs is mounted on this directory: the rule
                // on it covers what is mounted there.
                write.push(PathBuf::from("/tmp"));
            }
            let mut exec = fs.exec.clone();
            exec.push(program.to_path_buf());
            if fs.system_paths {
                exec.extend(
                    super::settings::SYSTEM_LIBRARY_PATHS
                        .iter()
                        .map(PathBuf::from)
                        .filter(|p| p.exists()),
                );
            }
            plan.landlock = Some(landlock_ruleset(&fs.read, &write, &exec)?);
        }
    }

    if let Some(syscalls) = &sandbox.syscalls {
        if on(|f| matches!(f, SandboxFeature::Seccomp)) {
            plan.filters =
                seccomp_filters(syscalls, exec_path).map_err(|e| Error::SandboxSetup {
                    what: "seccomp filter for",
                    path: program.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                })?;
        }
    }
    Ok((plan, cgroup_dir))
}

/// Makes the worker's cgroup under the delegated one, sets its limits,
/// and opens its `cgroup.procs`.
fn make_cgroup(cgroup: &super::settings::Cgroup) -> Result<(CgroupDir, OwnedFd), Error> {
    let name = format!(
        "drover-{}-{}",
        std::process::id(),
        CGROUP_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let path = cgroup.parent.join(name);
    let setup = |what: &'static str, path: &Path, source: std::io::Error| Error::SandboxSetup {
        what,
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir(&path).map_err(|e| setup("cgroup", &path, e))?;
    let dir = CgroupDir(path.clone());
    let mut limits = Vec::new();
    if let Some(bytes) = cgroup.memory_max {
        limits.push(("memory.max", bytes.to_string()));
    }
    if let Some((quota, period)) = cgroup.cpu_max {
        limits.push(("cpu.max", format!("{quota} {period}")));
    }
    for (file, value) in limits {
        let file = path.join(file);
        std::fs::write(&file, value).map_err(|e| setup("cgroup limit", &file, e))?;
    }
    let procs = path.join("cgroup.procs");
    let fd = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map_err(|e| setup("cgroup", &procs, e))?;
    Ok((dir, fd.into()))
}

/// The landlock ruleset: every filesystem right this kernel knows is
/// handled (so denied), but for the paths given.
fn landlock_ruleset(
    read: &[PathBuf],
    write: &[PathBuf],
    exec: &[PathBuf],
) -> Result<OwnedFd, Error> {
    let abi = ABI::from(crate::spawn::kernel_landlock_abi());
    let all = AccessFs::from_all(abi);
    let exec_rights = AccessFs::from_read(abi);
    let read_rights = exec_rights & !BitFlags::from(AccessFs::Execute);
    let fail = |path: &Path, e: &dyn std::fmt::Display| Error::SandboxSetup {
        what: "landlock rule for",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(|e| fail(Path::new("/"), &e))?;
    let ruleset = if abi >= ABI::V6 {
        ruleset
            .scope(Scope::from_all(abi))
            .map_err(|e| fail(Path::new("/"), &e))?
    } else {
        ruleset
    };
    let mut created = ruleset.create().map_err(|e| fail(Path::new("/"), &e))?;
    let rules = read
        .iter()
        .map(|p| (p, read_rights))
        .chain(exec.iter().map(|p| (p, exec_rights)))
        .chain(write.iter().map(|p| (p, all)));
    for (path, rights) in rules {
        let is_dir = std::fs::metadata(path)
            .map_err(|e| fail(path, &e))?
            .is_dir();
        // Rights on directories only (list, make, remove) mean nothing on
        // a file, and the kernel refuses them there.
        let rights = if is_dir {
            rights
        } else {
            rights & AccessFs::from_file(abi)
        };
        let fd = PathFd::new(path).map_err(|e| fail(path, &e))?;
        created = created
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(|e| fail(path, &e))?;
    }
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or_else(|| fail(Path::new("/"), &"landlock made no ruleset"))
}

/// Why a seccomp program could not be compiled (seccompiler's errors,
/// which come as two types).
type FilterError = Box<dyn std::error::Error + Send + Sync>;

/// The seccomp programs for `syscalls`, compiled for this architecture.
fn seccomp_filters(
    syscalls: &Syscalls,
    exec_path: u64,
) -> Result<Vec<Vec<libc::sock_filter>>, FilterError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let deny = match syscalls.violation {
        Violation::Kill => SeccompAction::KillProcess,
        Violation::Errno(errno) => SeccompAction::Errno(errno as u32),
    };
    let cond = |arg: u8, len, op, value| SeccompCondition::new(arg, len, op, value);
    let exec_is_not_the_start = || -> Result<SeccompRule, FilterError> {
        Ok(SeccompRule::new(vec![cond(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::Ne,
            exec_path,
        )?])?)
    };
    let mut programs = Vec::new();
    match &syscalls.mode {
        SyscallMode::Deny(presets) => {
            let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
            let mut processes = false;
            for preset in presets {
                match preset {
                    SyscallPreset::Network => {
                        rules.insert(
                            libc::SYS_socket,
                            vec![SeccompRule::new(vec![cond(
                                0,
                                SeccompCmpArgLen::Dword,
                                SeccompCmpOp::Ne,
                                libc::AF_UNIX as u64,
                            )?])?],
                        );
                        for call in [
                            libc::SYS_io_uring_setup,
                            libc::SYS_io_uring_enter,
                            libc::SYS_io_uring_register,
                        ] {
                            rules.insert(call, Vec::new());
                        }
                    }
                    SyscallPreset::Processes => {
                        processes = true;
                        #[cfg(target_arch = "x86_64")]
                        for call in [libc::SYS_fork, libc::SYS_vfork] {
                            rules.insert(call, Vec::new());
                        }
                        rules.insert(
                            libc::SYS_clone,
                            vec![SeccompRule::new(vec![cond(
                                0,
                                SeccompCmpArgLen::Qword,
                                SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
                                0,
                            )?])?],
                        );
                    }
                    SyscallPreset::ExecAfterStart => {
                        rules.insert(libc::SYS_execve, vec![exec_is_not_the_start()?]);
                        rules.insert(libc::SYS_execveat, Vec::new());
                    }
                    SyscallPreset::Ptrace => {
                        for call in [
                            libc::SYS_ptrace,
                            libc::SYS_process_vm_readv,
                            libc::SYS_process_vm_writev,
                        ] {
                            rules.insert(call, Vec::new());
                        }
                    }
                }
            }
            if !rules.is_empty() {
                let filter = SeccompFilter::new(rules, SeccompAction::Allow, deny, arch)?;
                programs.push(BpfProgram::try_from(filter)?);
            }
            if processes {
                // clone3's flags sit behind a pointer no filter can read:
                // ENOSYS makes the C library use clone, which it can.
                let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
                let filter = SeccompFilter::new(
                    rules,
                    SeccompAction::Allow,
                    SeccompAction::Errno(libc::ENOSYS as u32),
                    arch,
                )?;
                programs.push(BpfProgram::try_from(filter)?);
            }
        }
        SyscallMode::AllowOnly(numbers) => {
            let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
                numbers.iter().map(|n| (*n, Vec::new())).collect();
            rules
                .entry(libc::SYS_execve)
                .or_insert(vec![SeccompRule::new(vec![cond(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::Eq,
                    exec_path,
                )?])?]);
            let filter = SeccompFilter::new(rules, deny, SeccompAction::Allow, arch)?;
            programs.push(BpfProgram::try_from(filter)?);
        }
    }
    Ok(programs
        .into_iter()
        .map(|program| {
            program
                .into_iter()
                .map(|i| libc::sock_filter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect()
        })
        .collect())
}

/// Whether a worker that died this way was killed by its seccomp filter:
/// `SIGSYS` with a filter set. The kernel tells a parent the signal only,
/// not which system call it was (that reaches the process itself, or the
/// audit log).
pub(crate) fn seccomp_kill(
    limits: &crate::builder::Limits,
    termination: crate::event::Termination,
) -> Option<crate::event::ExitReason> {
    let sandbox = limits.sandbox.as_ref()?;
    sandbox.syscalls.as_ref()?;
    (termination == crate::event::Termination::Signal(libc::SIGSYS))
        .then_some(crate::event::ExitReason::Seccomp)
}

/// What of the sandbox in `limits` is not enforced (best-effort mode).
pub(crate) fn unenforced(limits: &crate::builder::Limits) -> Vec<SandboxFeature> {
    limits
        .sandbox
        .as_ref()
        .map(|s| s.unenforced.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last instruction of a program is a return, and it returns the
    /// action its filter falls back to.
    fn ends_with_ret(program: &[libc::sock_filter]) {
        let last = program.last().expect("a program");
        assert_eq!(last.code, (libc::BPF_RET | libc::BPF_K) as u16);
    }

    #[test]
    fn every_preset_compiles_alone_and_together() {
        let presets = [
            SyscallPreset::Network,
            SyscallPreset::Processes,
            SyscallPreset::ExecAfterStart,
            SyscallPreset::Ptrace,
        ];
        for preset in presets {
            let programs = seccomp_filters(&Syscalls::deny([preset]), 0x1000).unwrap();
            // Processes adds the clone3 program.
            let want = if preset == SyscallPreset::Processes {
                2
            } else {
                1
            };
            assert_eq!(programs.len(), want, "{preset:?}");
            programs.iter().for_each(|p| ends_with_ret(p));
        }
        let all = seccomp_filters(
            &Syscalls::deny(presets).on_violation(Violation::Errno(libc::EPERM)),
            0x1000,
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        // No preset: nothing to install.
        assert!(seccomp_filters(&Syscalls::deny([]), 0).unwrap().is_empty());
    }

    #[test]
    fn an_allowlist_compiles_with_the_start_let_through() {
        let programs = seccomp_filters(
            &Syscalls::allow_only([libc::SYS_read, libc::SYS_write]),
            0x1000,
        )
        .unwrap();
        assert_eq!(programs.len(), 1);
        ends_with_ret(&programs[0]);
        // The start's path address is compared: its halves appear as
        // immediates of the program.
        assert!(
            programs[0].iter().any(|i| i.k == 0x1000),
            "{:?}",
            programs[0].len()
        );
    }
}
