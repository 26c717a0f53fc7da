//! The sandbox for untrusted work: landlock, seccomp, namespaces, cgroup
//! v2, opt in, applied to each worker between `fork` and `exec`.
//!
//! # Layout
//!
//! - `settings.rs`: what a user asks for: [`Sandbox`], [`Syscalls`] and
//!   its presets, [`Cgroup`], and [`SandboxFeature`], what may be missing.
//! - `support.rs`: what this kernel can enforce, checked once when the
//!   pool starts: a rule it cannot enforce fails the start
//!   ([`Error::SandboxUnsupported`](crate::Error::SandboxUnsupported)) or,
//!   in best-effort mode, is recorded and reported.
//! - `prepare.rs`: per worker, in the supervisor before `fork`: the
//!   landlock ruleset, the seccomp programs, the cgroup, the id maps.
//!   The child only makes raw system calls with what was prepared
//!   (`spawn::apply_sandbox`, the crate's one `unsafe` module).
//! - `pid_ns.rs`: a worker in a PID namespace is known to the pool by its
//!   init's pid; its memory is read from its own.
//!
//! # Order in the child
//!
//! After drover's own setup (parent-death signal, rlimits, descriptors):
//! join the cgroup; `unshare` the namespaces (the user namespace with
//! them, its id maps written); make `/` private and mount the tmpfs on
//! `/tmp`; fork the worker into the PID namespace behind a waiting init;
//! `no_new_privs`; landlock; seccomp last, so nothing before it needs a
//! call it forbids; then std's `execve`, which landlock allows for the
//! worker binary and the seccomp filter lets through once.

mod pid_ns;
mod prepare;
mod settings;
mod support;

pub(crate) use pid_ns::{memory_pid, BehindInit};
pub(crate) use prepare::{prepare, seccomp_kill, unenforced, CgroupDir, ChildPlan};
pub use settings::{
    Cgroup, Sandbox, SandboxFeature, SyscallPreset, Syscalls, Violation, SYSTEM_LIBRARY_PATHS,
};
pub(crate) use support::check;

/// What a sandboxed worker's spawn made that must live as long as the
/// worker: its cgroup (removed when dropped) and, in a PID namespace, the
/// worker behind its init (whose memory is read). Held by the worker's
/// task until after the reap; empty without a sandbox.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    pub(crate) _cgroup: Option<CgroupDir>,
    pub(crate) _behind_init: Option<BehindInit>,
}
