//! Operating a pool: resize, rolling reload, recycling, drain and resume,
//! groups, lifecycle, per-worker setup, isolation limits, output capture.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, exists, pids, pool, within, Cmd, LIMIT};
use drover::{Error, Event, ExitReason, GroupSpec, Groups, RecycleCause, Supervisor, WorkerState};

/// Requests sent in a loop from a few tasks until stopped; counts answers
/// and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(pool: &Supervisor, tasks: usize, work_ms: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let tasks = (0..tasks)
            .map(|t| {
                let (pool, stop, ok) = (pool.clone(), stop.clone(), ok.clone());
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let text = format!("{t}/{i}");
                        match pool.enqueue(&Cmd::SlowEcho(text.clone(), work_ms)).await {
                            Ok(answer) if answer.data::<String>().ok() == Some(text) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => failures.push("wrong answer".to_owned()),
                            Err(e) => failures.push(e.to_string()),
                        }
                        i += 1;
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, tasks }
    }

    /// Stops the load; returns (answers, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(within(LIMIT, "load task", task).await.unwrap());
        }
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

fn ready_count(pool: &Supervisor) -> usize {
    pool.health()
        .iter()
        .filter(|h| matches!(h.state, WorkerState::Ready | WorkerState::Busy))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_up_and_down_under_load_fails_nothing() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let mut events = pool.events();
    let load = Load::start(&pool, 6, 2);
    for n in [8, 1, 3] {
        within(LIMIT, "resize", pool.resize(n)).await.unwrap();
        assert_eq!(
            ready_count(&pool),
            n,
            "after resize({n}): {:?}",
            pool.health()
        );
        assert_eq!(
            pool.health().len(),
            n,
            "retired workers are gone after resize({n})"
        );
    }
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(ok > 0);
    // Every worker that left was resized away, none crashed.
    let mut resized = 0;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await
    {
        if let Event::WorkerExited(exit) = event {
            assert_eq!(
                exit.reason,
                ExitReason::Recycled(RecycleCause::Resize),
                "{exit}"
            );
            resized += 1;
        }
    }
    assert_eq!(resized, 7, "8 -> 1 retires seven");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_reload_under_load_replaces_every_pid_and_fails_nothing() {
    let pool = within(LIMIT, "spawn", pool(3).spawn()).await.unwrap();
    let mut events = pool.events();
    let before: HashSet<u32> = pids(&pool).into_iter().collect();
    let load = Load::start(&pool, 4, 5);
    within(LIMIT, "reload", pool.reload()).await.unwrap();
    let after: HashSet<u32> = pids(&pool).into_iter().collect();
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(ok > 0);
    assert_eq!(after.len(), 3);
    assert!(
        before.is_disjoint(&after),
        "pids kept: {before:?} -> {after:?}"
    );
    let mut reloaded = 0;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await
    {
        if let Event::WorkerExited(exit) = event {
            assert_eq!(
                exit.reason,
                ExitReason::Recycled(RecycleCause::Reload),
                "{exit}"
            );
            assert!(exit.requested());
            reloaded += 1;
        }
    }
    assert_eq!(reloaded, 3);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_new_settings_reaches_new_workers() {
    let pool = within(LIMIT, "spawn", pool(2).config(&"old".to_string()).spawn())
        .await
        .unwrap();
    let answer = within(LIMIT, "config", pool.enqueue(&Cmd::Config))
        .await
        .unwrap();
    assert_eq!(answer.data::<(u32, String)>().unwrap().1, "old");
    within(
        LIMIT,
        "reload",
        pool.reload_with(common::pool(2).config(&"new".to_string())),
    )
    .await
    .unwrap();
    for _ in 0..4 {
        let answer = within(LIMIT, "config", pool.enqueue(&Cmd::Config))
            .await
            .unwrap();
        assert_eq!(answer.data::<(u32, String)>().unwrap().1, "new");
    }
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_recycles_without_failures_or_stalls() {
    let pool = within(LIMIT, "spawn", pool(3).max_requests(100, 20).spawn())
        .await
        .unwrap();
    let mut events = pool.events();
    // More callers than workers: requests wait in the queue while workers
    // recycle.
    let tasks: Vec<_> = (0..12)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let text = format!("{t}/{i}");
                    let answer = pool
                        .enqueue(&Cmd::Echo(text.clone()))
                        .await
                        .expect("no request fails");
                    assert_eq!(answer.data::<String>().unwrap(), text);
                }
            })
        })
        .collect();
    for task in tasks {
        within(LIMIT, "requests", task).await.unwrap();
    }
    // Each worker serves about 400 of the 1200, so recycles about three
    // times: at least six exits come, each a recycle at its quota. (Those
    // of the last workers may come after the last answer: wait for them,
    // bounded, rather than for a quiet moment.)
    let recycled = within(LIMIT, "six recycles", async {
        let mut recycled = 0;
        while recycled < 6 {
            match events.recv().await {
                Some(Event::WorkerExited(exit)) => match exit.reason {
                    ExitReason::Recycled(RecycleCause::MaxRequests { served }) => {
                        // At its quota (100 plus up to 20 of jitter) or,
                        // when another worker held the recycling slot, a
                        // little after: a due worker keeps serving until
                        // its turn.
                        assert!(served >= 100, "recycled after only {served}");
                        recycled += 1;
                    }
                    other => panic!("unexpected exit: {other}"),
                },
                Some(_) => {}
                None => panic!("the pool's events ended"),
            }
        }
        recycled
    })
    .await;
    assert!(recycled >= 6, "only {recycled} recycles for 1200 requests");
    assert!(
        eventually(LIMIT, || ready_count(&pool) == 3
            && pool.health().len() == 3)
        .await,
        "the pool did not return to full size: {:?}",
        pool.health()
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn max_rss_recycles_a_leaking_worker() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2)
            .max_rss(100 * 1024 * 1024)
            .health_interval(Duration::from_millis(20))
            .spawn(),
    )
    .await
    .unwrap();
    let mut events = pool.events();
    let leaker: u32 = within(LIMIT, "leak", pool.enqueue(&Cmd::Leak(150)))
        .await
        .unwrap()
        .data()
        .unwrap();
    let exit = common::next_exit(&mut events).await;
    assert_eq!(exit.pid, leaker);
    assert!(
        matches!(exit.reason, ExitReason::Recycled(RecycleCause::MaxRss { limit, rss }) if limit == 100 << 20 && rss > limit),
        "{exit}"
    );
    assert!(eventually(LIMIT, || ready_count(&pool) == 2).await);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_holds_requests_and_resume_answers_them() {
    let pool = within(LIMIT, "spawn", pool(2).spawn()).await.unwrap();
    let old = pids(&pool);
    within(LIMIT, "drain", pool.drain()).await.unwrap();
    assert!(pool.health().is_empty());
    for pid in old {
        assert!(!exists(pid));
    }
    let held: Vec<_> = (0..5)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.enqueue(&Cmd::Echo(format!("held {i}"))).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert!(
        held.iter().all(|t| !t.is_finished()),
        "a held request finished while drained"
    );
    within(LIMIT, "resume", pool.resume()).await.unwrap();
    for (i, task) in held.into_iter().enumerate() {
        let answer = within(LIMIT, "held answer", task)
            .await
            .unwrap()
            .expect("answered after resume");
        assert_eq!(answer.data::<String>().unwrap(), format!("held {i}"));
    }
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_drained_pool_can_refuse_instead() {
    let pool = within(LIMIT, "spawn", pool(1).hold_when_drained(false).spawn())
        .await
        .unwrap();
    within(LIMIT, "drain", pool.drain()).await.unwrap();
    let err = within(LIMIT, "refused", pool.enqueue(&Cmd::Pid))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Drained), "{err:?}");
    within(LIMIT, "resume", pool.resume()).await.unwrap();
    within(LIMIT, "pid", pool.enqueue(&Cmd::Pid)).await.unwrap();
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn set_groups_keeps_adds_and_removes() {
    let groups = Groups::new();
    let diff = within(
        LIMIT,
        "first",
        groups.set_groups([
            GroupSpec::new("keep", pool(2)),
            GroupSpec::new("drop", pool(1)),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(diff.added, vec!["keep", "drop"]);
    let kept_pids = pids(&groups.group("keep").unwrap());
    let dropped_pids = pids(&groups.group("drop").unwrap());
    let answer = within(LIMIT, "to a group", groups.enqueue("drop", &Cmd::Pid))
        .await
        .unwrap();
    assert!(dropped_pids.contains(&answer.pid()));

    let diff = within(
        LIMIT,
        "second",
        groups.set_groups([
            GroupSpec::new("keep", pool(2)),
            GroupSpec::new("new", pool(1)),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(diff.unchanged, vec!["keep"]);
    assert_eq!(diff.added, vec!["new"]);
    assert_eq!(diff.removed, vec!["drop"]);
    assert_eq!(groups.names(), vec!["keep", "new"]);
    assert_eq!(
        pids(&groups.group("keep").unwrap()),
        kept_pids,
        "the kept group was touched"
    );
    for pid in dropped_pids {
        assert!(!exists(pid), "removed group's worker {pid} still exists");
    }
    let err = within(LIMIT, "gone", groups.enqueue("drop", &Cmd::Pid))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchGroup { name } if name == "drop"),
        "{err:?}"
    );
    within(LIMIT, "new group", groups.enqueue("new", &Cmd::Pid))
        .await
        .unwrap();

    // Only the count changed: resized in place.
    let diff = within(
        LIMIT,
        "third",
        groups.set_groups([
            GroupSpec::new("keep", pool(3)),
            GroupSpec::new("new", pool(1)),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(diff.changed, vec!["keep"]);
    let now: HashSet<u32> = pids(&groups.group("keep").unwrap()).into_iter().collect();
    assert_eq!(now.len(), 3);
    assert!(kept_pids.iter().all(|p| now.contains(p)));
    within(LIMIT, "soft kill", groups.soft_kill()).await;
}

#[tokio::test]
async fn status_lines_and_states_show_in_health_and_events() {
    let pool = within(LIMIT, "spawn", pool(1).spawn()).await.unwrap();
    let mut events = pool.events();
    within(
        LIMIT,
        "status",
        pool.enqueue(&Cmd::Status("loading model 2 of 5".into())),
    )
    .await
    .unwrap();
    assert!(
        eventually(LIMIT, || pool.health()[0].status.as_deref()
            == Some("loading model 2 of 5"))
        .await
    );
    within(LIMIT, "busy", pool.enqueue(&Cmd::Busy))
        .await
        .unwrap();
    let mut saw_status = false;
    let mut saw_busy = false;
    within(LIMIT, "events", async {
        while !(saw_status && saw_busy) {
            match events.recv().await {
                Some(Event::WorkerStatus { message, .. }) => {
                    saw_status = message == "loading model 2 of 5"
                }
                Some(Event::WorkerState {
                    state: WorkerState::Busy,
                    ..
                }) => saw_busy = true,
                _ => {}
            }
        }
    })
    .await;
    pool.broadcast("wake", &()).unwrap();
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    let mut stopped = false;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(100), events.recv()).await
    {
        stopped |= matches!(
            event,
            Event::WorkerState {
                state: WorkerState::Stopped,
                ..
            }
        );
    }
    assert!(stopped, "no stopped state event");
}

#[tokio::test]
async fn each_worker_gets_the_config_and_its_index() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(3)
            .max_concurrency(1)
            .config(&"shared setup".to_string())
            .spawn(),
    )
    .await
    .unwrap();
    // Three at once, one per worker (each holds one request at a time).
    let calls: Vec<_> = (0..3).map(|_| pool.enqueue(&Cmd::Config)).collect();
    let mut indices = HashSet::new();
    for answer in within(LIMIT, "config", futures::future::join_all(calls)).await {
        let (index, config): (u32, String) = answer.unwrap().data().unwrap();
        assert_eq!(config, "shared setup");
        indices.insert(index);
    }
    assert_eq!(indices, HashSet::from([0, 1, 2]));
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn an_address_space_limit_kills_a_worker_that_allocates_past_it() {
    let limit = 1024 * 1024 * 1024;
    let pool = within(LIMIT, "spawn", pool(1).limit_address_space(limit).spawn())
        .await
        .unwrap();
    let sum: u64 = within(LIMIT, "small", pool.enqueue(&Cmd::Alloc(16)))
        .await
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(sum, 16 * 256);
    let err = within(LIMIT, "big", pool.enqueue(&Cmd::Alloc(2048)))
        .await
        .unwrap_err();
    let Error::WorkerLost { exit, .. } = &err else {
        panic!("expected WorkerLost, got {err:?}");
    };
    assert!(
        matches!(&exit.reason, ExitReason::LimitExceeded { limit } if limit.contains("1073741824")),
        "{exit}"
    );
    assert!(
        err.to_string()
            .contains("address space of 1073741824 bytes"),
        "{err}"
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn no_new_privs_and_the_working_directory_are_seen_inside() {
    let dir = std::env::temp_dir();
    let pool = within(
        LIMIT,
        "spawn",
        pool(1)
            .no_new_privs(true)
            .current_dir(&dir)
            .env_clear()
            .spawn(),
    )
    .await
    .unwrap();
    let (cwd, nnp): (String, String) = within(LIMIT, "info", pool.enqueue(&Cmd::SelfInfo))
        .await
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(
        std::path::Path::new(&cwd).canonicalize().unwrap(),
        dir.canonicalize().unwrap()
    );
    assert_eq!(nnp, "1");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// Counts `drover::output` events seen by tracing that name the pool
/// "spewer" and carry a pid.
struct CountOutput(Arc<AtomicUsize>);

#[derive(Default)]
struct Fields {
    pool: String,
    pid: bool,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "pool" {
            self.pool = value.to_owned();
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, _value: u64) {
        self.pid |= field.name() == "pid";
    }

    fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountOutput {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() == "drover::output" {
            let mut fields = Fields::default();
            event.record(&mut fields);
            if fields.pool == "spewer" && fields.pid {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::test]
async fn captured_output_reaches_tracing_and_never_blocks_the_worker() {
    use tracing_subscriber::layer::SubscriberExt;
    let lines = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(CountOutput(lines.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let pool = within(
        LIMIT,
        "spawn",
        pool(1).name("spewer").capture_output(true).spawn(),
    )
    .await
    .unwrap();
    // 100,000 lines of 100 bytes: 10 MB, far more than a pipe holds.
    let n: usize = within(LIMIT, "spew", pool.enqueue(&Cmd::Spew(100_000)))
        .await
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(n, 100_000);
    assert!(
        eventually(LIMIT, || lines.load(Ordering::Relaxed) >= 100_000).await,
        "only {} lines reached tracing",
        lines.load(Ordering::Relaxed)
    );
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn max_age_recycles_and_the_pool_stays_full() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2)
            .max_age(Duration::from_millis(300))
            .health_interval(Duration::from_millis(20))
            .spawn(),
    )
    .await
    .unwrap();
    let mut events = pool.events();
    let first = common::next_exit(&mut events).await;
    assert!(
        matches!(first.reason, ExitReason::Recycled(RecycleCause::MaxAge { age }) if age >= Duration::from_millis(300)),
        "{first}"
    );
    assert!(first.requested());
    let second = common::next_exit(&mut events).await;
    assert!(
        matches!(
            second.reason,
            ExitReason::Recycled(RecycleCause::MaxAge { .. })
        ),
        "{second}"
    );
    assert!(eventually(LIMIT, || ready_count(&pool) == 2).await);
    within(LIMIT, "pid", pool.enqueue(&Cmd::Pid)).await.unwrap();
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// Counts drover's warnings and errors, and its "recycling" lines.
struct RecycleLog {
    warnings: Arc<AtomicUsize>,
    recycling: Arc<AtomicUsize>,
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecycleLog {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        if !meta.target().starts_with("drover") {
            return;
        }
        if *meta.level() <= tracing::Level::WARN {
            self.warnings.fetch_add(1, Ordering::Relaxed);
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.contains("recycling worker") {
            self.recycling.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test]
async fn an_intended_recycle_is_logged_as_such_never_as_a_failure() {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = Arc::new(AtomicUsize::new(0));
    let recycling = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(RecycleLog {
        warnings: warnings.clone(),
        recycling: recycling.clone(),
    });
    let _guard = tracing::subscriber::set_default(subscriber);
    let pool = within(LIMIT, "spawn", pool(2).max_requests(5, 0).spawn())
        .await
        .unwrap();
    let mut events = pool.events();
    for i in 0..30 {
        let text = format!("{i}");
        let answer = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo(text.clone())))
            .await
            .unwrap();
        assert_eq!(answer.data::<String>().unwrap(), text);
    }
    // Settled: two ready workers and no retiring one.
    assert!(
        eventually(LIMIT, || ready_count(&pool) == 2
            && pool.health().len() == 2)
        .await
    );
    let mut recycled = 0;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await
    {
        if let Event::WorkerExited(exit) = event {
            assert!(
                matches!(
                    exit.reason,
                    ExitReason::Recycled(RecycleCause::MaxRequests { .. })
                ),
                "{exit}"
            );
            recycled += 1;
        }
    }
    assert!(recycled >= 1, "no worker was recycled");
    // Every recycle had its own line, at info level.
    assert_eq!(recycling.load(Ordering::Relaxed), recycled);
    within(LIMIT, "soft kill", pool.soft_kill()).await;
    assert_eq!(
        warnings.load(Ordering::Relaxed),
        0,
        "a recycle was logged as a warning or error"
    );
}

#[tokio::test]
async fn serve_with_builds_state_once_and_hands_it_to_every_request() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2)
            .env("DROVER_TEST_SERVE_WITH", "1")
            .config(&"model weights".to_string())
            .spawn(),
    )
    .await
    .unwrap();
    for _ in 0..20 {
        let (setups, state): (usize, String) = within(LIMIT, "state", pool.enqueue(&Cmd::Pid))
            .await
            .unwrap()
            .data()
            .unwrap();
        assert_eq!(setups, 1, "setup ran more than once in a worker");
        assert_eq!(state, "MODEL WEIGHTS");
    }
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn cpu_and_open_file_limits_apply_and_a_cpu_kill_names_its_limit() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(1).limit_open_files(32).limit_cpu_seconds(1).spawn(),
    )
    .await
    .unwrap();
    let opened: usize = within(LIMIT, "open", pool.enqueue(&Cmd::OpenFiles(100)))
        .await
        .unwrap()
        .data()
        .unwrap();
    assert!(opened < 32, "opened {opened} files under a limit of 32");
    // Two seconds of CPU under a one-second limit.
    let err = within(LIMIT, "spin", pool.enqueue(&Cmd::Spin(2_500)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CPU time of 1 s"), "{err}");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn workers_run_as_the_user_and_group_asked() {
    if !rustix::process::getuid().is_root() {
        eprintln!("not root: cannot switch users; skipping");
        return;
    }
    // `nobody` on Debian.
    let pool = within(LIMIT, "spawn", pool(1).user(65534).group(65534).spawn())
        .await
        .unwrap();
    let ids: (u32, u32) = within(LIMIT, "ids", pool.enqueue(&Cmd::Ids))
        .await
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(ids, (65534, 65534));
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_new_environment_and_arguments() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2).env("DROVER_TEST_MARK", "old").spawn(),
    )
    .await
    .unwrap();
    let old: String = within(
        LIMIT,
        "env",
        pool.enqueue(&Cmd::Env("DROVER_TEST_MARK".into())),
    )
    .await
    .unwrap()
    .data()
    .unwrap();
    assert_eq!(old, "old");
    within(
        LIMIT,
        "reload",
        pool.reload_with(
            common::pool(2)
                .env("DROVER_TEST_MARK", "new")
                .arg("--ignored-arg"),
        ),
    )
    .await
    .unwrap();
    for _ in 0..4 {
        let now: String = within(
            LIMIT,
            "env",
            pool.enqueue(&Cmd::Env("DROVER_TEST_MARK".into())),
        )
        .await
        .unwrap()
        .data()
        .unwrap();
        assert_eq!(now, "new");
        let args: Vec<String> = within(LIMIT, "args", pool.enqueue(&Cmd::Args))
            .await
            .unwrap()
            .data()
            .unwrap();
        assert_eq!(args, vec!["--ignored-arg"]);
    }
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// An operation waiting for the pool to settle ends once the pool stops
/// under it, with an error naming the pool's phase, instead of waiting out
/// its own time limit (start timeout + drain timeout + 5 s: over two
/// minutes here). An autoscaler resizing as the pool was soft-killed used
/// to hang so.
#[tokio::test]
async fn a_resize_under_way_ends_when_the_pool_stops() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2)
            .max_concurrency(1)
            .drain_timeout(Duration::from_secs(120))
            .spawn(),
    )
    .await
    .unwrap();
    // Both workers busy for a minute: the one resized away cannot go.
    let busy: Vec<_> = (0..2)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.enqueue(&Cmd::SlowEcho(format!("{i}"), 60_000)).await })
        })
        .collect();
    assert!(
        eventually(LIMIT, || pool.status().active == 2).await,
        "{:?}",
        pool.status()
    );
    let resizing = tokio::spawn({
        let pool = pool.clone();
        async move { pool.resize(1).await }
    });
    assert!(
        eventually(LIMIT, || pool
            .status()
            .workers
            .iter()
            .any(|w| w.state == WorkerState::Stopping))
        .await,
        "a worker retires: {:?}",
        pool.status()
    );
    within(LIMIT, "hard kill", pool.hard_kill()).await;
    let resized = within(LIMIT, "the resize to end", resizing).await.unwrap();
    let Err(Error::Operation { reason, .. }) = &resized else {
        panic!("expected the resize to fail, got {resized:?}");
    };
    assert!(reason.to_string().contains("stopped"), "{reason}");
    for request in busy {
        let answer = within(LIMIT, "a busy request", request).await.unwrap();
        assert!(answer.is_err(), "{answer:?}");
    }
}
