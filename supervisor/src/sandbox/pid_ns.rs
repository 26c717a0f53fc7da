//! Which process to read a worker's memory from, when it runs in a PID
//! namespace.
//!
//! The pool knows a worker in a PID namespace by the pid of its init (the
//! child the supervisor forked, which forked the worker into the
//! namespace and waits for it): that pid's process group and kills reach
//! the worker too. Its memory does not: so the init's pid is mapped here
//! to the worker's own (its pid outside the namespace), for as long as
//! the worker's spawn lives, and `health::read_rss` reads that.

use std::collections::HashMap;
use std::sync::Mutex;

static WORKERS: Mutex<Option<HashMap<u32, u32>>> = Mutex::new(None);

/// The pid whose memory is worker `pid`'s: its own, or the worker's
/// behind a PID namespace's init.
pub(crate) fn memory_pid(pid: u32) -> u32 {
    let map = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
    map.as_ref()
        .and_then(|m| m.get(&pid).copied())
        .unwrap_or(pid)
}

/// A worker behind a PID namespace's init, known until dropped.
#[derive(Debug)]
pub(crate) struct BehindInit {
    init: u32,
}

impl BehindInit {
    /// Finds the worker the init `init` forked (its only child) and maps
    /// the init's pid to it. `None` if the init has no child (the worker
    /// died already) or `/proc` does not say.
    pub(crate) fn find(init: u32) -> Option<BehindInit> {
        let children =
            std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).ok()?;
        let worker: u32 = children.split_whitespace().next()?.parse().ok()?;
        WORKERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(init, worker);
        Some(BehindInit { init })
    }
}

impl Drop for BehindInit {
    fn drop(&mut self) {
        if let Some(map) = WORKERS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            map.remove(&self.init);
        }
    }
}
