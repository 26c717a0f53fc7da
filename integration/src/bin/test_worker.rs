//! The worker binary the integration tests drive: it does, on command,
//! everything a worker may do, well or badly.
#![allow(unsafe_code)]

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use drover_worker::{Request, Worker};

#[path = "../../tests/common/cmd.rs"]
mod cmd;
use cmd::{checksum, Cmd, Pattern};

/// How many copies `Cmd::ForkFlood` leaves writing.
const FLOODERS: usize = 4;

fn main() -> Result<(), drover_worker::Error> {
    // Both runtime flavours are tested: the SDK runs handlers differently
    // on each.
    let mut runtime = match std::env::var("DROVER_TEST_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run())
}

async fn run() -> Result<(), drover_worker::Error> {
    if std::env::var_os("DROVER_TEST_TRACE").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .init();
    }
    if std::env::args().nth(1).as_deref() == Some("--supervise") {
        supervise().await;
        return Ok(());
    }
    if std::env::args().nth(1).as_deref() == Some("--queue-batches") {
        queue_batches_until_killed(std::env::args().nth(2).expect("a database path")).await;
        return Ok(());
    }
    if std::env::args().nth(1).as_deref() == Some("--queue-crash") {
        queue_until_killed(std::env::args().nth(2).expect("a database path")).await;
        return Ok(());
    }
    if std::env::var_os("DROVER_TEST_TASKS").is_some() {
        return drover_worker::serve_tasks(|cmd::Upper(text)| async move {
            if text == "fail" {
                return Err(format!("told to fail: {text}"));
            }
            Ok(text.to_uppercase())
        })
        .await;
    }
    if std::env::var_os("DROVER_TEST_SERVE_WITH").is_some() {
        return serve_with_state().await;
    }
    // Keep a second handle on the socket for the misbehaving commands,
    // before the SDK claims it.
    // SAFETY: descriptor 3 is the socket the supervisor passed; it is only
    // borrowed for the duplication.
    let raw = rustix::io::fcntl_dupfd_cloexec(unsafe { BorrowedFd::borrow_raw(3) }, 10)
        .map(std::os::unix::net::UnixStream::from)
        .ok();

    if let Ok(hex) = std::env::var("DROVER_TEST_RAW_FIRST") {
        // These bytes, in hex, before anything else: a frame before `Hello`.
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect();
        let mut raw = raw.expect("raw socket");
        let _ = raw.write_all(&bytes);
        std::thread::sleep(Duration::from_secs(60));
        return Ok(());
    }
    if std::env::var_os("DROVER_TEST_BAD_VERSION").is_some() {
        bad_version_handshake(raw.expect("raw socket"));
        return Ok(());
    }

    // The arenas too, for the commands that attack them.
    let arenas = std::sync::Arc::new(shared_memory_fds());
    let worker = Worker::connect().await?;
    if let Ok(after) = std::env::var("DROVER_TEST_CRASH_AFTER_ID") {
        if worker.id() > after.parse().unwrap_or(u64::MAX) {
            eprintln!("worker {} crashing at start, as told", worker.id());
            std::process::exit(1);
        }
    }
    if let Ok(mb) = std::env::var("DROVER_TEST_HOG_MB") {
        if worker.index() == 0 {
            let mb: usize = mb.parse().unwrap_or(200);
            let hog = vec![1u8; mb * 1024 * 1024];
            std::mem::forget(hog);
        }
    }

    let hook_worker = worker.clone();
    worker.on_soft_kill(move || async move {
        let _ = hook_worker.emit("soft-kill-hook", &std::process::id());
    });
    let hard_hook_worker = worker.clone();
    worker.on_hard_kill(move || {
        let _ = hard_hook_worker.emit("hard-kill-hook", &std::process::id());
    });

    // Subscribe before serving, so no event sent after `Ready` is missed.
    let events_worker = worker.clone();
    let mut events = worker.events();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event.name() {
                "wake" => {
                    let _ = events_worker.ready();
                }
                "ping-all" => {
                    let payload: String = event.data().unwrap_or_default();
                    let _ = events_worker.emit("pong", &(std::process::id(), payload));
                }
                _ => {}
            }
        }
    });

    let me = worker.clone();
    worker
        .serve(move |mut req: Request| {
            let me = me.clone();
            let raw = raw.as_ref().and_then(|s| s.try_clone().ok());
            let arenas = arenas.clone();
            async move {
                match req.data::<Cmd>()? {
                    Cmd::Echo(text) => req.respond(&text),
                    Cmd::EchoPayload => {
                        let payload = req.take_payload();
                        if req.payload().is_empty() && req.payload_bytes().is_empty() {
                            req.respond_bytes(payload)
                        } else {
                            req.fail("the payload was still there after take_payload")
                        }
                    }
                    Cmd::Pid => req.respond(&std::process::id()),
                    Cmd::SlowEcho(text, ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        req.respond(&text)
                    }
                    Cmd::Sleep(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        req.respond(&std::process::id())
                    }
                    Cmd::Busy => {
                        me.busy()?;
                        req.respond(&std::process::id())
                    }
                    Cmd::Emit(name) => {
                        me.emit(&name, &std::process::id())?;
                        req.ack()
                    }
                    Cmd::Panic => panic!("told to panic"),
                    Cmd::Fail(text) => req.fail(text),
                    Cmd::HugeFrame(len) => {
                        let mut raw = raw.expect("raw socket");
                        raw.write_all(&len.to_be_bytes()).expect("write");
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                    Cmd::Garbage => {
                        let mut raw = raw.expect("raw socket");
                        raw.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
                            .expect("write");
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                    Cmd::Exit(code) => std::process::exit(code),
                    Cmd::Hang => std::future::pending().await,
                    Cmd::WaitCancel => {
                        req.cancelled().await;
                        me.emit("cancelled", &req.id().to_string())?;
                        req.respond("answered after cancel")
                    }
                    Cmd::Spin(ms) => {
                        tokio::task::spawn_blocking(move || {
                            let until = std::time::Instant::now() + Duration::from_millis(ms);
                            let mut x = 0u64;
                            while std::time::Instant::now() < until {
                                x = x.wrapping_mul(31).wrapping_add(7);
                            }
                            x
                        })
                        .await
                        .expect("spin");
                        req.respond(&std::process::id())
                    }
                    Cmd::Flood(n) => {
                        for i in 0..n {
                            me.emit("flood", &i)?;
                        }
                        req.ack()
                    }
                    Cmd::HalfFrame => {
                        let mut raw = raw.expect("raw socket");
                        raw.write_all(&[0, 0, 0, 100, 1, 2, 3]).expect("write");
                        std::process::exit(0)
                    }
                    Cmd::AnswerUnknown => {
                        let mut raw = raw.expect("raw socket");
                        let frame = frame(drover_proto::ToSupervisor::Response {
                            id: drover_proto::RequestId::from_u128(42),
                            stream: false,
                            result: Ok(bytes::Bytes::from_static(b"surprise")),
                        });
                        raw.write_all(&frame).expect("write");
                        std::future::pending().await
                    }
                    Cmd::Freeze => {
                        let _ = rustix::process::kill_process(
                            rustix::process::getpid(),
                            rustix::process::Signal::STOP,
                        );
                        req.ack()
                    }
                    Cmd::StderrThenExit(lines) => {
                        for line in lines {
                            eprintln!("{line}");
                        }
                        std::process::exit(1)
                    }
                    Cmd::CrashOnce(path) => {
                        if std::fs::metadata(&path).is_err() {
                            std::fs::write(&path, b"crashed once").expect("marker");
                            std::process::exit(1);
                        }
                        req.respond(&std::process::id())
                    }
                    Cmd::Leak(mb) => {
                        std::mem::forget(vec![1u8; mb * 1024 * 1024]);
                        req.respond(&std::process::id())
                    }
                    Cmd::Alloc(mb) => {
                        let block = vec![1u8; mb * 1024 * 1024];
                        let sum: u64 = block.iter().step_by(4096).map(|&b| u64::from(b)).sum();
                        req.respond(&sum)
                    }
                    Cmd::SelfInfo => {
                        let cwd = std::env::current_dir()
                            .map(|d| d.display().to_string())
                            .unwrap_or_default();
                        let status =
                            std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                        let nnp = status
                            .lines()
                            .find_map(|l| l.strip_prefix("NoNewPrivs:"))
                            .map(|v| v.trim().to_owned())
                            .unwrap_or_default();
                        req.respond(&(cwd, nnp))
                    }
                    Cmd::Spew(lines) => {
                        let line = format!("{}\n", "x".repeat(99));
                        let mut stderr = std::io::stderr().lock();
                        for _ in 0..lines {
                            stderr.write_all(line.as_bytes()).expect("stderr");
                        }
                        drop(stderr);
                        req.respond(&lines)
                    }
                    Cmd::Status(text) => {
                        me.status(text)?;
                        req.ack()
                    }
                    Cmd::Config => {
                        let config: String = me.config().unwrap_or_default();
                        req.respond(&(me.index(), config))
                    }
                    Cmd::ServeSocket => {
                        let mut req = req;
                        let socket = req.socket::<tokio::net::UnixStream>()?;
                        let Some(mut socket) = socket else {
                            return req.fail("no socket came with the request");
                        };
                        req.ack()?;
                        tokio::spawn(async move {
                            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
                            let mut line = String::new();
                            let mut reader = tokio::io::BufReader::new(&mut *socket);
                            if reader.read_line(&mut line).await.is_ok() {
                                let answer = format!("{} {}", std::process::id(), line);
                                let _ = socket.write_all(answer.as_bytes()).await;
                            }
                        });
                        Ok(())
                    }
                    Cmd::SendFd => {
                        let raw = raw.expect("raw socket");
                        raw.set_nonblocking(true).expect("nonblocking");
                        let stream = tokio::net::UnixStream::from_std(raw).expect("tokio stream");
                        let (_read, write) = stream.into_split();
                        let frame = frame(drover_proto::ToSupervisor::Status {
                            message: "with a gift".into(),
                        });
                        let gift = std::fs::File::open("/dev/null").expect("open");
                        drover_proto::fdio::send_with_fds(&write, &frame, &[gift.into()])
                            .await
                            .expect("send");
                        std::future::pending().await
                    }
                    Cmd::EchoStream => {
                        let mut req = req;
                        let Some(stream) = req.stream() else {
                            return req.fail("no stream came with the request");
                        };
                        req.respond_with_stream(&(), stream)
                    }
                    Cmd::SumStream => {
                        use tokio::io::AsyncReadExt;
                        let mut req = req;
                        let Some(mut stream) = req.stream() else {
                            return req.fail("no stream came with the request");
                        };
                        let mut buf = vec![0u8; 64 * 1024];
                        let (mut total, mut sum) = (0u64, 0u64);
                        loop {
                            let n = match stream.read(&mut buf).await {
                                Ok(n) => n,
                                Err(e) => return req.fail(e),
                            };
                            if n == 0 {
                                break;
                            }
                            sum = checksum(sum, total, &buf[..n]);
                            total += n as u64;
                        }
                        req.respond(&(total, sum))
                    }
                    Cmd::StreamOut(len) => req.respond_with_stream(&(), Pattern::new(len)),
                    Cmd::PeakRss => {
                        let status =
                            std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                        let kb: u64 = status
                            .lines()
                            .find_map(|l| l.strip_prefix("VmHWM:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                            .unwrap_or(0);
                        req.respond(&kb)
                    }
                    Cmd::SendManyFds => {
                        use std::os::fd::AsFd;
                        let raw = raw.expect("raw socket");
                        let frame = frame(drover_proto::ToSupervisor::Status {
                            message: "gifts".into(),
                        });
                        let files: Vec<std::fs::File> = (0..32)
                            .map(|_| std::fs::File::open("/dev/null").expect("open"))
                            .collect();
                        let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
                        let mut space = [std::mem::MaybeUninit::<u8>::uninit();
                            rustix::cmsg_space!(ScmRights(32))];
                        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
                        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
                        rustix::net::sendmsg(
                            &raw,
                            &[std::io::IoSlice::new(&frame)],
                            &mut control,
                            rustix::net::SendFlags::empty(),
                        )
                        .expect("sendmsg");
                        std::future::pending().await
                    }
                    Cmd::Ask(name, question) => match me.ask::<_, String>(&name, &question).await {
                        Ok(answer) => req.respond(&answer),
                        Err(e) => req.fail(e),
                    },
                    Cmd::Stat(name, value) => {
                        me.add_stat(&name, value)?;
                        req.respond(&std::process::id())
                    }
                    Cmd::CreatedAt => {
                        let micros = req
                            .created_at()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_micros() as u64;
                        req.respond(&micros)
                    }
                    Cmd::Big(len) => req.respond(&vec![7u8; len]),
                    Cmd::ShmLie => {
                        let mut raw = raw.expect("raw socket");
                        let mut body = vec![0x01];
                        body.extend_from_slice(req.id().as_bytes());
                        body.push(0x04);
                        body.extend_from_slice(&(1u64 << 40).to_le_bytes());
                        body.extend_from_slice(&4096u64.to_le_bytes());
                        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
                        frame.extend_from_slice(&body);
                        raw.write_all(&frame).expect("write");
                        std::future::pending().await
                    }
                    Cmd::ShmBadRelease => {
                        let mut raw = raw.expect("raw socket");
                        raw.write_all(&frame(drover_proto::ToSupervisor::Release { offset: 4096 }))
                            .expect("write");
                        std::future::pending().await
                    }
                    Cmd::ShmAttack => {
                        let (requests, answers) = arenas.as_ref().as_ref().expect("arenas");
                        req.respond(&attack_arenas(requests, answers))
                    }
                    Cmd::ShmScribble(len, ms) => {
                        let (_, answers) = arenas.as_ref().as_ref().expect("arenas");
                        let map = memmap2::MmapOptions::new()
                            .len(len.next_multiple_of(4096) + 4096)
                            .map_raw(answers)
                            .expect("map the answers arena");
                        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                        let scribbling = stop.clone();
                        let scribbler = std::thread::spawn(move || {
                            let mut round = 0u8;
                            while !scribbling.load(std::sync::atomic::Ordering::Relaxed) {
                                round = round.wrapping_add(1);
                                // SAFETY: the mapping is ours and this long.
                                unsafe {
                                    std::ptr::write_bytes(map.as_mut_ptr(), round, map.len())
                                };
                            }
                        });
                        let answered = req.respond(&vec![7u8; len]);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        scribbler.join().expect("scribbler");
                        answered
                    }
                    Cmd::MirrorPart(_, start, end) => {
                        let payload = req.take_payload();
                        req.respond_bytes(payload.slice(start..end))
                    }
                    Cmd::ShmNameReleased(_) => {
                        let mut raw = raw.expect("raw socket");
                        raw.write_all(&frame(drover_proto::ToSupervisor::Release { offset: 0 }))
                            .expect("write");
                        raw.write_all(&own_arena_answer(req.id(), 0, 100))
                            .expect("write");
                        std::future::pending().await
                    }
                    Cmd::ShmNameElsewhere => {
                        let mut raw = raw.expect("raw socket");
                        raw.write_all(&own_arena_answer(req.id(), 32 << 20, 4096))
                            .expect("write");
                        std::future::pending().await
                    }
                    Cmd::Keep(bytes) => {
                        static KEPT: std::sync::Mutex<Vec<bytes::Bytes>> =
                            std::sync::Mutex::new(Vec::new());
                        KEPT.lock().unwrap().push(req.take_payload());
                        req.respond(&bytes.len())
                    }
                    Cmd::OpenFiles(n) => {
                        let opened: Vec<std::fs::File> = (0..n)
                            .map_while(|_| std::fs::File::open("/dev/null").ok())
                            .collect();
                        req.respond(&opened.len())
                    }
                    Cmd::Ids => req.respond(&(
                        rustix::process::getuid().as_raw(),
                        rustix::process::getgid().as_raw(),
                    )),
                    Cmd::Args => req.respond(&std::env::args().skip(1).collect::<Vec<_>>()),
                    Cmd::Env(name) => req.respond(&std::env::var(&name).unwrap_or_default()),
                    Cmd::PostJob(job) => {
                        me.post_job(&*job)?;
                        req.ack()
                    }
                    Cmd::InFlight => {
                        let ids: Vec<String> =
                            me.requests().iter().map(|r| r.id.to_string()).collect();
                        req.respond(&ids)
                    }
                    Cmd::StderrLongLine(len) => {
                        // On a blocking thread: the pipe is slower than
                        // the runtime must be (pings).
                        tokio::task::spawn_blocking(move || {
                            let chunk = vec![b'x'; 1024 * 1024];
                            let mut stderr = std::io::stderr().lock();
                            let mut left = len;
                            while left > 0 {
                                let n = left.min(chunk.len() as u64) as usize;
                                stderr.write_all(&chunk[..n]).expect("stderr");
                                left -= n as u64;
                            }
                            stderr.write_all(b"\n").expect("stderr");
                        })
                        .await
                        .expect("the long line");
                        req.ack()
                    }
                    Cmd::StderrBadUtf8 => {
                        std::io::stderr()
                            .write_all(b"\xff\xfe bad \xc3\x28\n")
                            .expect("stderr");
                        req.ack()
                    }
                    Cmd::Log(text) => {
                        eprintln!("{text}");
                        req.ack()
                    }
                    Cmd::DupSocket => {
                        let mut req = req;
                        let socket = req.socket::<std::os::fd::OwnedFd>()?;
                        let Some(socket) = socket else {
                            return req.fail("no socket came with the request");
                        };
                        let inode = match rustix::fs::fstat(&*socket) {
                            Ok(stat) => stat.st_ino,
                            Err(e) => return req.fail(e),
                        };
                        // `dup` makes the copy without close-on-exec.
                        let copy = match rustix::io::dup(&*socket) {
                            Ok(copy) => copy,
                            Err(e) => return req.fail(e),
                        };
                        std::mem::forget(copy);
                        std::mem::forget(socket);
                        req.respond(&inode)
                    }
                    Cmd::AcceptShared => {
                        use tokio::io::AsyncWriteExt;
                        let Some(listener) = me.shared_socket::<tokio::net::TcpListener>(0)? else {
                            return req.fail("the pool shares no socket");
                        };
                        let (mut connection, _) = listener
                            .accept()
                            .await
                            .map_err(drover_worker::Error::Socket)?;
                        let line = format!("{}\n", std::process::id());
                        connection
                            .write_all(line.as_bytes())
                            .await
                            .map_err(drover_worker::Error::Socket)?;
                        req.respond(&std::process::id())
                    }
                    Cmd::Grandchild => {
                        let child = std::process::Command::new("sleep")
                            .arg("1000")
                            .stdin(std::process::Stdio::null())
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::null())
                            .spawn();
                        match child {
                            Ok(child) => {
                                let pid = child.id();
                                std::mem::forget(child);
                                req.respond(&pid)
                            }
                            Err(e) => req.fail(e),
                        }
                    }
                    Cmd::AnswerInPlace { len, capacity } => {
                        let mut answer = req.answer_buffer(capacity);
                        let pattern: Vec<u8> = (0..len as u64).map(Pattern::byte).collect();
                        for piece in pattern.chunks(10_000) {
                            answer
                                .write_all(piece)
                                .expect("an answer buffer takes every write");
                        }
                        let in_shared_memory = answer.in_shared_memory();
                        answer.extend_from_slice(&[u8::from(in_shared_memory)]);
                        req.respond_buffer(answer)
                    }
                    Cmd::ForkFlood => {
                        let raw = raw.expect("raw socket");
                        // What the copies write is made before the fork:
                        // they allocate nothing. One frame per write, so
                        // that the copies' frames never interleave.
                        let mut frame = bytes::BytesMut::new();
                        let event = drover_proto::ToSupervisor::Event {
                            name: "flood".to_owned(),
                            payload: bytes::Bytes::from(vec![7u8; 32 * 1024]),
                        };
                        drover_proto::codec::encode_message(
                            event,
                            drover_proto::DEFAULT_MAX_FRAME_LENGTH,
                            &mut frame,
                        )
                        .expect("an event frame");
                        // The socket is non-blocking (the SDK set it so):
                        // the copies block instead, to never cut a frame.
                        let _ = rustix::fs::fcntl_setfl(&raw, rustix::fs::OFlags::empty());
                        for _ in 0..FLOODERS {
                            // SAFETY: the child only writes a buffer made
                            // before the fork and exits; it takes no lock.
                            if unsafe { libc::fork() } == 0 {
                                while (&raw).write_all(&frame).is_ok() {}
                                // SAFETY: ends the child without running the
                                // parent's exit handlers.
                                unsafe { libc::_exit(0) };
                            }
                        }
                        std::process::exit(0)
                    }
                    Cmd::Raw(bytes) => {
                        let mut raw = raw.expect("raw socket");
                        // The supervisor may kill it mid-write: fine.
                        let _ = raw.write_all(&bytes);
                        std::future::pending().await
                    }
                    Cmd::TraceLog(text) => {
                        tracing::info!("{text}");
                        req.ack()
                    }
                    Cmd::FreezeHolding => {
                        let _ = rustix::process::kill_process(
                            rustix::process::getpid(),
                            rustix::process::Signal::STOP,
                        );
                        std::future::pending().await
                    }
                    Cmd::PushUncredited(total) => {
                        let mut raw = raw.expect("raw socket");
                        let id = req.id();
                        let head = frame(drover_proto::ToSupervisor::Response {
                            id,
                            stream: true,
                            result: Ok(bytes::Bytes::new()),
                        });
                        let data = frame(drover_proto::ToSupervisor::Stream(
                            drover_proto::StreamFrame::Data {
                                id,
                                bytes: bytes::Bytes::from(vec![7u8; 64 * 1024]),
                            },
                        ));
                        tokio::task::spawn_blocking(move || {
                            let mut pushed = 0;
                            let mut result = write_all_waiting(&mut raw, &head);
                            while result.is_ok() && pushed < total {
                                result = write_all_waiting(&mut raw, &data);
                                pushed += 64 * 1024;
                            }
                        })
                        .await
                        .expect("push");
                        std::future::pending().await
                    }
                    Cmd::AnnouncedSlowEcho(text, ms) => {
                        me.emit("started", &std::process::id())?;
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        req.respond(&text)
                    }
                    Cmd::PostJobAt(at, job) => {
                        me.post_job_at(at, &*job)?;
                        req.ack()
                    }
                }
            }
        })
        .await
}

/// Runs a pool of two copies of this binary, prints their pids, and waits
/// to be killed: the tests check the workers die with it.
async fn supervise() {
    let pool = pool_of_self().await;
    let pids: Vec<String> = pool.health().iter().map(|h| h.pid.to_string()).collect();
    println!("{}", pids.join(" "));
    std::future::pending::<()>().await;
}

/// Says `Hello` with a protocol version from the future, then waits.
fn bad_version_handshake(mut raw: std::os::unix::net::UnixStream) {
    let hello = drover_proto::Hello {
        protocol_version: 99,
        ..drover_proto::Hello::new()
    };
    raw.write_all(&frame(drover_proto::ToSupervisor::Hello(hello)))
        .expect("write");
    std::thread::sleep(Duration::from_secs(60));
}

/// Runs two minute-long jobs from a queue in `path`, says so, and waits to
/// be killed: the queue tests' crash.
async fn queue_until_killed(path: String) {
    use drover::queue::{JobQueue, SqliteStore};
    let store = SqliteStore::open(&path)
        .await
        .expect("the queue's database");
    let queue = JobQueue::builder(store)
        .lease(Duration::from_millis(500))
        .build();
    let pool = pool_of_self().await;
    for _ in 0..2 {
        queue.push(&Cmd::Sleep(60_000)).await.expect("push");
    }
    let _runner = queue.start(pool.clone());
    while !pool.health().iter().all(|h| h.in_flight == 1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("running");
    std::future::pending::<()>().await;
}

/// Drains a queue in `path` (jobs pushed by the test) in batches, with
/// one-second leases; says "draining" once a tenth of them completed,
/// and goes on until killed: the queue tests' SIGKILL mid-batch.
async fn queue_batches_until_killed(path: String) {
    use drover::queue::{JobQueue, SqliteStore};
    let store = SqliteStore::open(&path)
        .await
        .expect("the queue's database");
    let queue = JobQueue::<_, Cmd>::builder(store)
        .lease(Duration::from_secs(1))
        .max_running(64)
        .build();
    let total = queue.stats().await.expect("stats").ready;
    let pool = pool_of_self().await;
    let _runner = queue.start(pool.clone());
    while queue.finished().await.expect("finished").completed < total / 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("draining");
    std::future::pending::<()>().await;
}

/// Writes all of `bytes` to the raw socket, which shares the SDK's
/// non-blocking mode: a full socket buffer is waited out, not an error.
fn write_all_waiting(
    raw: &mut std::os::unix::net::UnixStream,
    mut bytes: &[u8],
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match raw.write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One message as a frame, for the commands that write to the socket
/// behind the SDK's back.
fn frame(message: drover_proto::ToSupervisor) -> bytes::BytesMut {
    let mut frame = bytes::BytesMut::new();
    drover_proto::MessageCodec::<drover_proto::ToWorker>::default()
        .encode_message(message, &mut frame)
        .expect("encode");
    frame
}

/// A `Response` frame for `id` whose payload is said to be `len` bytes at
/// `offset` of the requests arena (the supervisor's own).
fn own_arena_answer(id: drover_worker::RequestId, offset: u64, len: u64) -> Vec<u8> {
    let mut body = vec![0x01];
    body.extend_from_slice(id.as_bytes());
    body.push(0x04);
    body.extend_from_slice(&(offset | drover_proto::shm::OWN_ARENA).to_le_bytes());
    body.extend_from_slice(&len.to_le_bytes());
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Copies of the shared-memory arenas' descriptors (requests, answers),
/// taken before the SDK claims and closes them.
fn shared_memory_fds() -> Option<(std::fs::File, std::fs::File)> {
    std::env::var_os(drover_proto::ENV_SHARED_MEMORY)?;
    let sockets: i32 = std::env::var(drover_proto::ENV_SHARED_FDS)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let first = drover_proto::CHILD_FD + 1 + sockets;
    let copy = |fd| {
        // SAFETY: the supervisor put the arena here; it is only borrowed
        // for the duplication.
        rustix::io::fcntl_dupfd_cloexec(unsafe { BorrowedFd::borrow_raw(fd) }, 30)
            .map(std::fs::File::from)
            .ok()
    };
    Some((copy(first)?, copy(first + 1)?))
}

/// Everything a hostile worker might try on its arenas, and whether the
/// system refused it.
fn attack_arenas(requests: &std::fs::File, answers: &std::fs::File) -> Vec<(String, bool)> {
    let len = requests.metadata().map_or(4096, |m| m.len()) as usize;
    let mut outcomes = vec![
        (
            "map the requests arena writable".to_owned(),
            memmap2::MmapOptions::new()
                .len(len)
                .map_raw(requests)
                .is_err(),
        ),
        (
            "write(2) to the requests arena".to_owned(),
            rustix::io::write(requests, b"scribble").is_err(),
        ),
    ];
    for (name, file) in [("requests", requests), ("answers", answers)] {
        outcomes.push((format!("shrink the {name} arena"), file.set_len(0).is_err()));
        outcomes.push((
            format!("grow the {name} arena"),
            file.set_len(len as u64 * 2).is_err(),
        ));
        outcomes.push((
            format!("add a seal to the {name} arena"),
            rustix::fs::fcntl_add_seals(file, rustix::fs::SealFlags::WRITE).is_err(),
        ));
    }
    // Writable mappings of the answers arena are its own to scribble on,
    // and allowed: what the scribble test is about.
    outcomes
}

/// A pool of two copies of this binary, for the modes where it supervises.
async fn pool_of_self() -> drover::Supervisor {
    let exe = std::env::current_exe().expect("current_exe");
    drover::Supervisor::builder(exe)
        .workers(2)
        .spawn()
        .await
        .expect("spawn")
}

/// A worker built with `serve_with`: its state is made once, from the
/// pool's config, and every request is answered with
/// `(times setup ran in this process, the state)`.
async fn serve_with_state() -> Result<(), drover_worker::Error> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SETUPS: AtomicUsize = AtomicUsize::new(0);
    drover_worker::serve_with(
        |worker: Worker| async move {
            SETUPS.fetch_add(1, Ordering::SeqCst);
            let config: String = worker.config()?;
            Ok::<_, drover_worker::Error>(config.to_uppercase())
        },
        |req: Request, state: std::sync::Arc<String>| async move {
            req.respond(&(SETUPS.load(Ordering::SeqCst), state.as_str()))
        },
    )
    .await
}
