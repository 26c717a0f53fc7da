//! What this kernel and machine can enforce: checked once, when a pool
//! starts, so that a rule that cannot be enforced fails `spawn()` (or is
//! reported, in best-effort mode) before any worker runs.

use std::path::Path;

use super::settings::{Sandbox, SandboxFeature};
use crate::error::Error;

/// Checks every layer `sandbox` asks for against the kernel, for a worker
/// running as `uid`. Returns the sandbox with what cannot be enforced
/// recorded (best-effort mode), or the error naming the first missing
/// feature.
///
/// # Errors
///
/// [`Error::SandboxUnsupported`] for a missing feature (unless best
/// effort), [`Error::SandboxSetup`] for a path that cannot be used.
pub(crate) fn check(
    mut sandbox: Sandbox,
    uid: Option<u32>,
    in_process: bool,
) -> Result<Sandbox, Error> {
    if in_process {
        // Threads of this process (`drover::testing`): nothing of the
        // sandbox can apply, and saying so beats a silent skip.
        let feature = SandboxFeature::InProcess;
        if !sandbox.best_effort {
            return Err(Error::SandboxUnsupported { feature });
        }
        sandbox.unenforced = vec![feature];
        return Ok(sandbox);
    }
    let mut missing = Vec::new();
    if let Some(fs) = &sandbox.fs {
        for path in fs.read.iter().chain(&fs.write).chain(&fs.exec) {
            if let Err(source) = std::fs::metadata(path) {
                return Err(Error::SandboxSetup {
                    what: "path to allow",
                    path: path.clone(),
                    source,
                });
            }
        }
        let kernel = crate::spawn::kernel_landlock_abi();
        if kernel <= 0 {
            missing.push(SandboxFeature::Landlock);
        } else if i32::from(fs.min_abi) > kernel {
            missing.push(SandboxFeature::LandlockAbi {
                wanted: fs.min_abi,
                kernel: u8::try_from(kernel).unwrap_or(u8::MAX),
            });
        }
    }
    if sandbox.syscalls.is_some() && !crate::spawn::kernel_has_seccomp_kill() {
        missing.push(SandboxFeature::Seccomp);
    }
    let worker_uid = uid.unwrap_or_else(|| rustix::process::geteuid().as_raw());
    let mut kinds = Vec::new();
    if sandbox.network {
        kinds.push(("network", "net"));
    }
    if sandbox.pid {
        kinds.push(("pid", "pid"));
    }
    if sandbox.private_tmp.is_some() {
        kinds.push(("mount", "mnt"));
    }
    // Without privilege the other namespaces are made inside a user
    // namespace: where that cannot be made, neither can they.
    let needs_user = !kinds.is_empty() && worker_uid != 0;
    let user_missing = if sandbox.user || needs_user {
        namespace_missing("user", "user")
    } else {
        None
    };
    for (kind, file) in kinds {
        let reason = namespace_missing(kind, file).or_else(|| {
            user_missing.as_ref().map(|why| {
                format!("a worker that is not root makes it in a user namespace, and {why}")
            })
        });
        if let Some(reason) = reason {
            missing.push(SandboxFeature::Namespace { kind, reason });
        }
    }
    if let Some(reason) = user_missing {
        missing.push(SandboxFeature::Namespace {
            kind: "user",
            reason,
        });
    }
    if let Some(cgroup) = &sandbox.cgroup {
        if let Some(reason) = cgroup_unusable(
            &cgroup.parent,
            cgroup.memory_max.is_some(),
            cgroup.cpu_max.is_some(),
        ) {
            missing.push(SandboxFeature::Cgroup {
                path: cgroup.parent.clone(),
                reason,
            });
        }
    }
    if let Some(feature) = missing.first() {
        if !sandbox.best_effort {
            return Err(Error::SandboxUnsupported {
                feature: feature.clone(),
            });
        }
        tracing::warn!(
            "sandbox in best-effort mode; not enforced: {}",
            missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    sandbox.unenforced = missing;
    Ok(sandbox)
}

impl Sandbox {
    /// Whether the layer a feature names is on (asked for and not
    /// recorded as unenforced).
    pub(crate) fn enforces(&self, is: impl Fn(&SandboxFeature) -> bool) -> bool {
        !self.unenforced.iter().any(is)
    }
}

/// Why namespaces of `kind` cannot be made here, if they cannot.
fn namespace_missing(kind: &str, file: &str) -> Option<String> {
    if !Path::new("/proc/self/ns").join(file).exists() {
        return Some(format!("the kernel has no /proc/self/ns/{file}"));
    }
    if kind != "user" {
        return None;
    }
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some("user.max_user_namespaces is 0".into());
    }
    if rustix::process::geteuid().as_raw() != 0 {
        if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
            return Some("kernel.unprivileged_userns_clone is 0".into());
        }
        if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
            return Some("kernel.apparmor_restrict_unprivileged_userns is 1".into());
        }
    }
    None
}

/// Why the cgroup v2 directory `parent` cannot take the workers' cgroups,
/// if it cannot.
fn cgroup_unusable(parent: &Path, memory: bool, cpu: bool) -> Option<String> {
    let meta = match std::fs::metadata(parent) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("cannot be used ({e})")),
    };
    if !meta.is_dir() {
        return Some("is not a directory".into());
    }
    let Ok(controllers) = std::fs::read_to_string(parent.join("cgroup.subtree_control")) else {
        return Some("is not a cgroup v2 directory (no cgroup.subtree_control)".into());
    };
    if rustix::fs::access(parent, rustix::fs::Access::WRITE_OK).is_err() {
        return Some("is not writable by the supervisor (not delegated to its user)".into());
    }
    for (wanted, name) in [(memory, "memory"), (cpu, "cpu")] {
        if wanted && !controllers.split_whitespace().any(|c| c == name) {
            return Some(format!(
                "the {name} controller is not enabled for its children \
                 (cgroup.subtree_control holds {:?}; write +{name} to it)",
                controllers.trim()
            ));
        }
    }
    None
}
