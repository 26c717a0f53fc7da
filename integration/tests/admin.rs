//! The admin endpoint (`drover::admin`), driven with real HTTP requests
//! on a real Unix socket and a real TCP port, in front of a real pool; its
//! HTML view loaded in a real headless browser.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use drover::admin::{Admin, AdminError, AdminServer, Client, Endpoint, PrometheusHandle};
use drover::Supervisor;

use common::{eventually, pids, pool, within, Cmd, KillOnDrop, LIMIT};

/// The process's Prometheus recorder, installed before any pool is built.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| drover::admin::install_prometheus().expect("the recorder installs"))
        .clone()
}

/// A socket path of this test's own.
fn socket(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.sock"))
}

/// A pool of `n` workers named `name` (each test its own: the metrics of
/// the process's pools are rendered together).
async fn spawn(n: usize, name: &str) -> Supervisor {
    prometheus();
    within(LIMIT, "spawn", pool(n).name(name).spawn())
        .await
        .unwrap()
}

async fn on_loopback(admin: Admin) -> (AdminServer, Client) {
    let server = admin
        .tcp("127.0.0.1:0".parse().unwrap())
        .serve()
        .await
        .unwrap();
    let client = Client::new(server.endpoint().clone()).timeout(LIMIT);
    (server, client)
}

/// `{"error": ...}` of an answer.
fn error_of(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    value["error"].as_str().expect("an error").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_serves_status_page_and_metrics_and_is_removed_on_shutdown() {
    let pool = spawn(2, "admin-test").await;
    within(LIMIT, "echo", pool.enqueue(&Cmd::Echo("x".into())))
        .await
        .unwrap();
    let path = socket("status");
    let server = Admin::new(pool.clone())
        .unix(&path)
        .metrics(prometheus())
        .serve()
        .await
        .unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let client = Client::new(Endpoint::Unix(path.clone())).timeout(LIMIT);
    let status = client.status().await.unwrap();
    assert_eq!(status.name, "admin-test");
    assert_eq!(status.accepted, 1);
    let mut served: Vec<u32> = status.workers.iter().map(|w| w.pid).collect();
    let mut running = pids(&pool);
    served.sort_unstable();
    running.sort_unstable();
    assert_eq!(served, running);

    let (code, page) = client.send("GET", "/").await.unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");
    for pid in &running {
        assert!(
            page.contains(&format!("data-pid=\"{pid}\"")),
            "{pid} in {page}"
        );
    }

    let (code, metrics) = client.send("GET", "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("drover_requests_total{pool=\"admin-test\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("drover_request_run_seconds_bucket{pool=\"admin-test\""));
    assert!(metrics.contains("# TYPE drover_workers gauge"));

    let (code, body) = client.send("GET", "/nowhere").await.unwrap();
    assert_eq!(code, 404);
    assert!(error_of(&body).contains("/nowhere"), "{body}");

    // A second endpoint on a live socket is refused; the first keeps it.
    let second = Admin::new(pool.clone()).unix(&path).serve().await;
    assert!(
        matches!(second, Err(AdminError::InUse { .. })),
        "{second:?}"
    );
    within(LIMIT, "shutdown", server.shutdown()).await;
    assert!(!path.exists(), "the socket is removed on shutdown");
    let gone = client.status().await;
    assert!(matches!(gone, Err(AdminError::NoSocket { .. })), "{gone:?}");
    assert!(gone
        .unwrap_err()
        .to_string()
        .contains(path.to_str().unwrap()));

    // A stale socket file (its server gone) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    let server = Admin::new(pool.clone()).unix(&path).serve().await.unwrap();
    assert!(client.status().await.is_ok());
    drop(server);
    assert!(!path.exists(), "dropping the server removes the socket too");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_actions_change_the_pool_and_bad_ones_change_nothing() {
    let pool = spawn(2, "admin-control").await;
    let (server, client) = on_loopback(Admin::new(pool.clone()).max_workers(4)).await;

    let status = client.control("resize", Some(3)).await.unwrap();
    assert_eq!(status.target_workers, 3);
    assert_eq!(pids(&pool).len(), 3);

    let before = pids(&pool);
    for (path, wanted) in [
        ("/control/restart", "unknown action \"restart\""),
        ("/control/resize", "needs the size"),
        ("/control/resize?workers=abc", "\"abc\" is not a number"),
        ("/control/resize?workers=0", "resize to 0 is refused"),
        (
            "/control/resize?workers=5",
            "over this endpoint's maximum of 4",
        ),
        (
            "/control/reload?workers=2",
            "takes no parameter \"workers\"",
        ),
    ] {
        let (code, body) = client.send("POST", path).await.unwrap();
        assert_eq!(code, 400, "{path}: {body}");
        assert!(error_of(&body).contains(wanted), "{path}: {body}");
    }
    let (code, body) = client.send("GET", "/control/reload").await.unwrap();
    assert_eq!(code, 405, "{body}");
    assert_eq!(pids(&pool), before, "bad requests changed nothing");
    assert_eq!(pool.status().target_workers, 3);

    // What the pool did meanwhile, for the failure message should the
    // reload not come back (it once did not, after 30 s where it takes
    // 15 ms: a retired worker missed the wake-up of its drain, since
    // fixed in the worker SDK).
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let (log, mut events, started) = (log.clone(), pool.events(), std::time::Instant::now());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let line = format!("{:?} {event:?}", started.elapsed());
                log.lock().unwrap().push(line);
            }
        })
    };
    let status = match client.control("reload", None).await {
        Ok(status) => status,
        Err(e) => panic!(
            "reload: {e}\nstatus: {:?}\nhealth: {:?}\nevents:\n{}",
            pool.status(),
            pool.health(),
            log.lock().unwrap().join("\n")
        ),
    };
    recorder.abort();
    assert_eq!(status.workers.len(), 3);
    let after = pids(&pool);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} {after:?}"
    );

    // A resume of a running pool cannot run: 409, with the pool's reason.
    let refused = client.control("resume", None).await;
    match refused {
        Err(AdminError::Refused {
            status: 409,
            message,
        }) => {
            assert!(message.contains("not drained"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // A drain held up by a slow request; meanwhile another action is
    // refused, naming the one in progress.
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::Sleep(3000)).await.map(|_| ()) })
    };
    assert!(eventually(LIMIT, || pool.status().active == 1).await);
    let drain = {
        let client = client.clone();
        tokio::spawn(async move { client.control("drain", None).await })
    };
    assert!(eventually(LIMIT, || pool.status().phase == "drained").await);
    let (code, body) = client.send("POST", "/control/reload").await.unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(error_of(&body).contains("a drain is in progress"), "{body}");
    let drained = within(LIMIT, "drain", drain).await.unwrap().unwrap();
    assert!(drained.workers.is_empty());
    within(LIMIT, "slow request", slow).await.unwrap().unwrap();
    let resumed = client.control("resume", None).await.unwrap();
    assert_eq!(resumed.workers.len(), 3);
    common::still_serves(&pool, 3).await;

    server.shutdown().await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_off_loopback_and_checked_when_set() {
    let pool = spawn(1, "admin-token").await;
    let open = Admin::new(pool.clone())
        .tcp("0.0.0.0:0".parse().unwrap())
        .serve()
        .await;
    match open {
        Err(e @ AdminError::TokenRequired { .. }) => {
            assert!(e.to_string().contains("needs a token"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    let server = Admin::new(pool.clone())
        .tcp("0.0.0.0:0".parse().unwrap())
        .token("s3cret")
        .serve()
        .await
        .unwrap();
    let Endpoint::Tcp(addr) = server.endpoint().clone() else {
        panic!("a TCP endpoint")
    };
    let local = Endpoint::Tcp(format!("127.0.0.1:{}", addr.port()).parse().unwrap());
    let before = pids(&pool);
    for client in [
        Client::new(local.clone()),
        Client::new(local.clone()).token("wrong"),
    ] {
        let (code, body) = client
            .send("POST", "/control/resize?workers=2")
            .await
            .unwrap();
        assert_eq!(code, 401, "{body}");
        assert!(error_of(&body).contains("needs its token"));
        let (code, _) = client.send("GET", "/status").await.unwrap();
        assert_eq!(code, 401);
        let refused = client.status().await;
        assert!(
            matches!(refused, Err(AdminError::Refused { status: 401, .. })),
            "{refused:?}"
        );
    }
    assert_eq!(pids(&pool), before, "a refused request changed nothing");
    assert_eq!(pool.status().target_workers, 1);

    let client = Client::new(local.clone()).token("s3cret").timeout(LIMIT);
    assert_eq!(
        client
            .control("resize", Some(2))
            .await
            .unwrap()
            .target_workers,
        2
    );

    // A browser's way: the token as the Basic password.
    let basic = basic_get(addr.port(), "operator:s3cret").await;
    assert!(basic.starts_with("HTTP/1.1 200"), "{basic}");
    let basic = basic_get(addr.port(), "operator:nope").await;
    assert!(basic.starts_with("HTTP/1.1 401"), "{basic}");
    assert!(basic.contains("www-authenticate: Basic"), "{basic}");

    server.shutdown().await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// `GET /status` with Basic credentials `user:password`, the raw answer.
async fn basic_get(port: u16, credentials: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let encoded = base64_encode(credentials.as_bytes());
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "GET /status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {encoded}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    within(LIMIT, "an answer", stream.read_to_string(&mut answer))
        .await
        .unwrap();
    answer
}

/// Standard base64 (the test's own, to check the server's decoding).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Debian's Chromium, if it is installed (`.ci/run` installs it).
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_view_in_a_real_browser_shows_every_worker() {
    let Some(browser) = chromium() else {
        println!("SKIPPED the_html_view_in_a_real_browser_shows_every_worker: no chromium on this machine (apt-get install chromium)");
        return;
    };
    let pool = spawn(3, "admin-html").await;
    within(
        LIMIT,
        "status line",
        pool.enqueue(&Cmd::Status("<b>parsing</b> & co".into())),
    )
    .await
    .unwrap();
    let (server, _) = on_loopback(Admin::new(pool.clone()).refresh(Duration::from_secs(1))).await;
    let url = format!("{}/", server.endpoint());
    let profile = std::env::temp_dir().join(format!("drover-chromium-{}", std::process::id()));
    let child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=500",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let dom = within(
        LIMIT * 2,
        "chromium's DOM",
        tokio::task::spawn_blocking(move || {
            let mut dom = String::new();
            std::io::Read::read_to_string(&mut { stdout }, &mut dom).map(|_| dom)
        }),
    )
    .await
    .unwrap()
    .expect("the DOM");
    let status = within(
        LIMIT,
        "chromium's exit",
        tokio::task::spawn_blocking(move || {
            let status = child.0.wait();
            drop(child);
            status
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "chromium: {status}");
    let _ = std::fs::remove_dir_all(&profile);
    for pid in pids(&pool) {
        assert!(
            dom.contains(&format!("<td class=\"n\">{pid}</td>")),
            "worker {pid} on the page: {dom}"
        );
    }
    // What a worker says is shown as text, never as markup.
    assert!(dom.contains("&lt;b&gt;parsing&lt;/b&gt; &amp; co"), "{dom}");
    server.shutdown().await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_queue_reports_its_depth_dead_jobs_and_start_delay() {
    use drover::queue::{JobQueue, SqliteStore};
    let pool = spawn(1, "admin-jobs").await;
    let queue = JobQueue::builder(SqliteStore::in_memory().await.unwrap())
        .max_attempts(1)
        .build();
    let (server, client) = on_loopback(Admin::new(pool.clone()).metrics(prometheus())).await;
    queue.push(&Cmd::Echo("a job".into())).await.unwrap();
    queue.push(&Cmd::Fail("no ink".into())).await.unwrap();
    let runner = queue.start(pool.clone());
    let mut metrics = String::new();
    let seen = within(LIMIT, "the job metrics", async {
        loop {
            metrics = client.send("GET", "/metrics").await.unwrap().1;
            if metrics.contains("drover_jobs{queue=\"default\",state=\"dead\"} 1")
                && metrics.contains("drover_jobs{queue=\"default\",state=\"ready\"} 0")
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(seen, "{metrics}");
    assert!(
        metrics.contains("drover_job_start_delay_seconds_count{queue=\"default\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("drover_jobs{queue=\"default\",state=\"running\"} 0"));
    within(LIMIT, "stop", runner.stop()).await;
    server.shutdown().await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
