//! Several named pools under one handle, declared as a whole.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::builder::{Builder, Config};
use crate::error::Error;
use crate::event::RecycleCause;
use crate::lifecycle::StopOrder;
use crate::response::Response;
use crate::supervisor::Supervisor;

/// One declared group: a name and the builder of its pool.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    name: String,
    builder: Builder,
}

impl GroupSpec {
    /// Declares group `name`, run as `builder` describes (its own binary,
    /// arguments, environment, worker count and settings).
    pub fn new(name: impl Into<String>, builder: Builder) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            builder,
        }
    }
}

/// What [`Groups::set_groups`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupsDiff {
    /// Groups started.
    pub added: Vec<String>,
    /// Groups torn down gracefully.
    pub removed: Vec<String>,
    /// Groups whose settings changed: resized in place when only the
    /// worker count changed, else replaced by a new pool (the new one
    /// online before the old one is torn down).
    pub changed: Vec<String>,
    /// Groups left alone.
    pub unchanged: Vec<String>,
}

/// Several named worker pools, each with its own binary and settings,
/// managed declaratively.
///
/// [`set_groups`](Groups::set_groups) takes the whole desired set: groups
/// that are new start, those no longer declared are torn down gracefully
/// (their workers finish what they hold), changed ones are resized or
/// replaced, and unchanged ones are left alone, same processes and all.
/// Each declaration is compared with its group's pool as it runs: the
/// worker count of its last resize and its workers' settings after any
/// reload (whether `set_groups` or its caller did them), so after every
/// call the running groups are the declared ones.
///
/// # Examples
///
/// ```no_run
/// use drover_supervisor::{GroupSpec, Groups, Supervisor};
///
/// # async fn run() -> Result<(), drover_supervisor::Error> {
/// let groups = Groups::new();
/// groups
///     .set_groups([
///         GroupSpec::new("thumbnails", Supervisor::builder("bin/thumbs").workers(4)),
///         GroupSpec::new("pdf", Supervisor::builder("bin/pdf").workers(2)),
///     ])
///     .await?;
/// let answer = groups.enqueue("pdf", "report.html").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Groups {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    groups: Mutex<BTreeMap<String, Supervisor>>,
    /// Serialises `set_groups` calls.
    changes: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Groups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Groups")
            .field("names", &self.names())
            .finish()
    }
}

impl Groups {
    /// No groups yet.
    pub fn new() -> Groups {
        Groups::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Supervisor>> {
        self.inner.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The names of the running groups, sorted.
    pub fn names(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    /// The pool of group `name`.
    pub fn group(&self, name: &str) -> Option<Supervisor> {
        self.map().get(name).cloned()
    }

    /// Sends `payload` to group `name`; see [`Supervisor::enqueue`].
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchGroup`], and as [`Supervisor::enqueue`].
    pub async fn enqueue<T: Serialize + ?Sized>(
        &self,
        name: &str,
        payload: &T,
    ) -> Result<Response, Error> {
        let group = self.group(name).ok_or_else(|| Error::NoSuchGroup {
            name: name.to_owned(),
        })?;
        group.enqueue(payload).await
    }

    /// Makes the running groups match `specs`; see [`Groups`].
    ///
    /// Every spec is checked before anything changes (a missing binary, a
    /// duplicate name). Removed groups are torn down with a graceful soft
    /// kill, their exits reported as recycled for `GroupRemoved`.
    ///
    /// # Errors
    ///
    /// [`Error::Operation`] for duplicate names; a new group's failure to
    /// start (the groups changed before it stay changed).
    pub async fn set_groups(
        &self,
        specs: impl IntoIterator<Item = GroupSpec>,
    ) -> Result<GroupsDiff, Error> {
        let _serial = self.inner.changes.lock().await;
        let mut wanted: Vec<(String, Builder, Config)> = Vec::new();
        let mut seen = HashSet::new();
        for spec in specs {
            if !seen.insert(spec.name.clone()) {
                return Err(Error::Operation {
                    operation: crate::error::Operation::SetGroups,
                    reason: crate::error::OperationError::DuplicateGroup { name: spec.name },
                });
            }
            // A group's pool is named after the group unless told otherwise.
            let builder = if spec.builder.has_name() {
                spec.builder
            } else {
                spec.builder.name(spec.name.clone())
            };
            let config = builder.clone().into_config()?;
            wanted.push((spec.name, builder, config));
        }
        let mut diff = GroupsDiff::default();

        let current: Vec<String> = self.names();
        for name in current {
            if !seen.contains(&name) {
                let removed = self.map().remove(&name);
                if let Some(pool) = removed {
                    pool.soft_kill_as(StopOrder::Recycle(RecycleCause::GroupRemoved))
                        .await;
                }
                diff.removed.push(name);
            }
        }

        for (name, builder, config) in wanted {
            // Compared with the pool as it runs (its count after a resize,
            // its workers' settings after a reload), never as it was built.
            let existing = self.group(&name).map(|pool| {
                let running = pool.settings();
                (pool, running)
            });
            match existing {
                None => {
                    let pool = builder.spawn().await?;
                    self.map().insert(name.clone(), pool);
                    diff.added.push(name);
                }
                Some((_, running)) if running == config => diff.unchanged.push(name),
                Some((pool, running)) if only_count_differs(&running, &config) => {
                    pool.resize(config.workers).await?;
                    diff.changed.push(name);
                }
                Some((old, _)) => {
                    let fresh = builder.spawn().await?;
                    self.map().insert(name.clone(), fresh);
                    old.soft_kill_as(StopOrder::Recycle(RecycleCause::Reload))
                        .await;
                    diff.changed.push(name);
                }
            }
        }
        Ok(diff)
    }

    /// Soft-kills every group and forgets them.
    pub async fn soft_kill(&self) {
        let all: Vec<Supervisor> = std::mem::take(&mut *self.map()).into_values().collect();
        futures::future::join_all(all.iter().map(Supervisor::soft_kill)).await;
    }

    /// Hard-kills every group and forgets them.
    pub async fn hard_kill(&self) {
        let all: Vec<Supervisor> = std::mem::take(&mut *self.map()).into_values().collect();
        futures::future::join_all(all.iter().map(Supervisor::hard_kill)).await;
    }
}

fn only_count_differs(a: &Config, b: &Config) -> bool {
    let mut b = b.clone();
    b.workers = a.workers;
    *a == b
}
