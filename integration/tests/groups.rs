//! What a pool reports of itself must match what it runs: a group's
//! declared size after any sequence of `set_groups` calls, resident memory
//! as soon as a worker is ready, and the payload limit named the same way
//! on both sides.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{eventually, pids, pool, within, Cmd, LIMIT};
use drover::{Error, GroupSpec, Groups, GroupsDiff, RemoteErrorKind, WorkerState};

/// A group `a` of `n` test workers with `MARK` set to `mark`.
fn group(n: usize, mark: &str) -> GroupSpec {
    GroupSpec::new("a", pool(n).env("MARK", mark))
}

fn only(kind: &str) -> GroupsDiff {
    let mut diff = GroupsDiff::default();
    let list = match kind {
        "added" => &mut diff.added,
        "changed" => &mut diff.changed,
        "unchanged" => &mut diff.unchanged,
        other => panic!("no such kind {other}"),
    };
    list.push("a".to_owned());
    diff
}

/// Declares `spec`, checks the diff, then that group `a` runs exactly
/// `n` ready workers; returns their pids.
async fn declare(groups: &Groups, spec: GroupSpec, kind: &str, n: usize) -> HashSet<u32> {
    let diff = within(LIMIT, "set_groups", groups.set_groups([spec]))
        .await
        .unwrap();
    assert_eq!(diff, only(kind), "declaring {n} workers");
    let pool = groups.group("a").unwrap();
    let health = pool.health();
    assert_eq!(health.len(), n, "declared {n} workers, running {health:?}");
    assert!(
        health.iter().all(|h| h.state == WorkerState::Ready),
        "{health:?}"
    );
    pids(&pool).into_iter().collect()
}

/// The `MARK` a request to group `a` sees.
async fn mark(groups: &Groups) -> String {
    within(LIMIT, "env", groups.enqueue("a", &Cmd::Env("MARK".into())))
        .await
        .unwrap()
        .data()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_size_follows_every_declaration() {
    let groups = Groups::new();
    let mut now = declare(&groups, group(2, "x"), "added", 2).await;
    // (declared count, what the diff must say)
    let steps = [
        (3, "changed"),
        (3, "unchanged"),
        (2, "changed"),
        (2, "unchanged"),
        (5, "changed"),
        (1, "changed"),
        (1, "unchanged"),
    ];
    for (n, kind) in steps {
        let before = now.clone();
        now = declare(&groups, group(n, "x"), kind, n).await;
        if kind == "unchanged" {
            assert_eq!(now, before, "an unchanged group's workers were touched");
        } else if now.len() > before.len() {
            assert!(
                now.is_superset(&before),
                "grown in place: {before:?} -> {now:?}"
            );
        } else {
            assert!(
                now.is_subset(&before),
                "shrunk in place: {before:?} -> {now:?}"
            );
        }
    }
    within(LIMIT, "soft kill", groups.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_settings_replace_the_pool_with_or_without_the_count() {
    let groups = Groups::new();
    let first = declare(&groups, group(2, "x"), "added", 2).await;
    // Count alone: in place.
    let grown = declare(&groups, group(3, "x"), "changed", 3).await;
    assert!(grown.is_superset(&first));
    // Another setting alone, after a resize: a new pool of the same size.
    let replaced = declare(&groups, group(3, "y"), "changed", 3).await;
    assert!(replaced.is_disjoint(&grown), "not replaced");
    assert_eq!(mark(&groups).await, "y");
    declare(&groups, group(3, "y"), "unchanged", 3).await;
    // Both at once: a new pool of the new size.
    let both = declare(&groups, group(2, "z"), "changed", 2).await;
    assert!(both.is_disjoint(&replaced), "not replaced");
    assert_eq!(mark(&groups).await, "z");
    let same = declare(&groups, group(2, "z"), "unchanged", 2).await;
    assert_eq!(same, both);
    // Arguments count as another setting too.
    let args = GroupSpec::new("a", pool(4).env("MARK", "z").arg("--extra"));
    let with_args = declare(&groups, args, "changed", 4).await;
    assert!(with_args.is_disjoint(&same), "not replaced");
    let seen: Vec<String> = within(LIMIT, "args", groups.enqueue("a", &Cmd::Args))
        .await
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(seen, vec!["--extra"]);
    let args = GroupSpec::new("a", pool(4).env("MARK", "z").arg("--extra"));
    declare(&groups, args, "unchanged", 4).await;
    within(LIMIT, "soft kill", groups.soft_kill()).await;
}

/// A group's pool operated on directly (resized, reloaded with other
/// settings) is compared as it runs, not as it was built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_operated_on_directly_is_brought_back_to_its_declaration() {
    let groups = Groups::new();
    let built = declare(&groups, group(2, "x"), "added", 2).await;
    let pool = groups.group("a").unwrap();
    within(LIMIT, "resize", pool.resize(4)).await.unwrap();
    let resized = pids(&pool).into_iter().collect::<HashSet<u32>>();
    assert!(resized.is_superset(&built));
    let back = declare(&groups, group(2, "x"), "changed", 2).await;
    assert!(back.is_subset(&resized), "shrunk in place");
    within(
        LIMIT,
        "reload",
        pool.reload_with(common::pool(2).env("MARK", "elsewhere")),
    )
    .await
    .unwrap();
    assert_eq!(mark(&groups).await, "elsewhere");
    declare(&groups, group(2, "x"), "changed", 2).await;
    assert_eq!(mark(&groups).await, "x");
    declare(&groups, group(2, "x"), "unchanged", 2).await;
    within(LIMIT, "soft kill", groups.soft_kill()).await;
}

/// The resident size `health()` shows right after `spawn()` (and after a
/// replacement or a resize) is the worker's, as it is once ready, not
/// none or a reading of a process just started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_real_memory_as_soon_as_a_worker_is_ready() {
    const HOG_MB: u64 = 32;
    let hog = HOG_MB * 1024 * 1024;
    let pool = within(
        LIMIT,
        "spawn",
        pool(1)
            .health_interval(Duration::from_secs(60))
            .env("DROVER_TEST_HOG_MB", HOG_MB.to_string())
            .spawn(),
    )
    .await
    .unwrap();
    let health = pool.health();
    assert!(
        health[0].rss.is_some_and(|rss| rss >= hog),
        "right after spawn: {:?} (the worker holds {HOG_MB} MiB)",
        health[0].rss
    );

    // A replacement (same slot, index 0: it holds as much).
    let first = health[0].pid;
    let _ = within(LIMIT, "exit", pool.enqueue(&Cmd::Exit(1))).await;
    let mut seen = None;
    assert!(
        eventually(LIMIT, || {
            let health = pool.health();
            match health.iter().find(|h| h.pid != first) {
                Some(h) if h.state == WorkerState::Ready => {
                    seen = Some(h.rss);
                    true
                }
                _ => false,
            }
        })
        .await,
        "no replacement became ready"
    );
    let rss = seen.flatten();
    assert!(
        rss.is_some_and(|rss| rss >= hog),
        "a replacement as it became ready: {rss:?}"
    );

    // A worker added by a resize (index 1 holds nothing extra).
    within(LIMIT, "resize", pool.resize(2)).await.unwrap();
    let added = pool.health();
    assert_eq!(added.len(), 2);
    assert!(
        added.iter().all(|h| h.rss.is_some_and(|rss| rss > 0)),
        "right after resize: {added:?}"
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// The payload limit, named the same way by either side: the limit that
/// was passed and the setting it comes from.
const LIMIT_TEXT: &str =
    "exceeds the payload limit of 65472 bytes (max_frame_length 65536 less 64 bytes of message)";

#[tokio::test]
async fn the_supervisor_names_the_payload_limit_and_its_setting() {
    let pool = within(LIMIT, "spawn", pool(1).max_frame_length(65536).spawn())
        .await
        .unwrap();
    assert_eq!(pool.max_payload(), 65472);

    // From the supervisor: a request too large to send.
    let err = within(LIMIT, "big request", pool.enqueue_bytes(vec![0u8; 70_000]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::PayloadTooLarge {
                size: 70_000,
                limit: 65472
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("payload of 70000 bytes {LIMIT_TEXT}; nothing was sent")
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_worker_names_the_payload_limit_as_the_supervisor_does() {
    let pool = within(LIMIT, "spawn", pool(1).max_frame_length(65536).spawn())
        .await
        .unwrap();
    // From the worker: an answer too large to send.
    let err = within(LIMIT, "big answer", pool.enqueue(&Cmd::Big(70_000)))
        .await
        .unwrap_err();
    let Error::Remote {
        kind: RemoteErrorKind::Unsendable,
        message,
        request_id,
        ..
    } = &err
    else {
        panic!("expected an unsendable answer, got {err:?}");
    };
    // A vector of 70,000 bytes encodes as its length (a varint of 5 bytes),
    // then the bytes.
    assert_eq!(
        message,
        &format!("answer to request {request_id} of 70005 bytes {LIMIT_TEXT}")
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
