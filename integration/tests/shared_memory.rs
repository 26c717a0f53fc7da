//! Large payloads through the workers' shared-memory arenas: intact both
//! ways, falling back to the socket when they do not fit, and a worker
//! that lies about them, attacks them, scribbles on them or never
//! releases them hurts nobody but itself.

mod common;

use common::cmd::Pattern;
use common::{alive, eventually, exists, pool, still_serves, within, Cmd, LIMIT};
use drover::{Error, ExitReason, Supervisor};

/// A text of `len` bytes that differs at every offset a slot could start,
/// so a payload read from the wrong place, or half of another, shows.
fn text(len: usize, seed: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + ((i / 7 + i * 13 + seed) % 26) as u8))
        .collect()
}

/// Sends a text of `len` bytes to be echoed and checks it came back as it
/// went; the pid of the worker that answered.
async fn echoes_intact(pool: &Supervisor, len: usize, seed: usize) -> u32 {
    let sent = text(len, seed);
    let answer = within(LIMIT, "echo", pool.enqueue(&Cmd::Echo(sent.clone())))
        .await
        .expect("echo");
    assert!(
        answer.data::<String>().unwrap() == sent,
        "the echo of {len} bytes came back changed"
    );
    answer.pid()
}

/// Checks every request slot comes back once its worker has let go of it.
async fn every_slot_comes_back(pool: &Supervisor) {
    assert!(
        eventually(LIMIT, || pool
            .health()
            .iter()
            .all(|h| h.shared_memory_held == 0))
        .await,
        "{:?}",
        pool.health()
    );
}

/// Sends `cmd`, which makes the worker break the shared-memory protocol,
/// and checks the request fails naming `expect`, the worker is reaped and
/// replaced, and the pool serves on.
async fn killed_for(cmd: Cmd, expect: &str) {
    let pool = within(LIMIT, "spawn", pool(2).spawn())
        .await
        .expect("spawn");
    let err = within(LIMIT, "violator", pool.enqueue(&cmd))
        .await
        .unwrap_err();
    let Error::WorkerLost { exit, .. } = &err else {
        panic!("expected WorkerLost, got {err:?}");
    };
    assert!(
        matches!(exit.reason, ExitReason::ProtocolViolation { .. }),
        "{exit:?}"
    );
    let text = err.to_string();
    assert!(text.contains(expect), "{text}");
    assert!(!exists(exit.pid), "the violator was not reaped");
    assert!(
        eventually(LIMIT, || pool.health().len() == 2
            && pool.health().iter().all(|h| h.pid != exit.pid))
        .await,
        "not replaced: {:?}",
        pool.health()
    );
    still_serves(&pool, 10).await;
    echoes_intact(&pool, 1 << 20, 2).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn large_payloads_cross_both_ways_intact_and_those_that_do_not_fit_take_the_socket() {
    // 4 MiB arenas: of 24 requests of up to 3 MiB in flight at once, some
    // fit and some do not; every one must come back as it went.
    let pool = within(
        LIMIT,
        "spawn",
        pool(2).max_concurrency(12).shared_memory(4 << 20).spawn(),
    )
    .await
    .expect("spawn");
    let sizes = [128 << 10, 1 << 20, 100, (3 << 20) + 5, 200 << 10, 64 << 10];
    let mut calls = Vec::new();
    for i in 0..24 {
        let pool = pool.clone();
        calls.push(tokio::spawn(async move {
            echoes_intact(&pool, sizes[i % sizes.len()], i).await
        }));
    }
    for call in calls {
        within(LIMIT, "echoes", call).await.unwrap();
    }
    // The worker's own large answers, and a payload through the bytes API.
    let answer = within(LIMIT, "big", pool.enqueue(&Cmd::Big(2 << 20)))
        .await
        .unwrap();
    assert_eq!(answer.data::<Vec<u8>>().unwrap(), vec![7u8; 2 << 20]);
    // Every request slot comes back once its worker has let go of it.
    every_slot_comes_back(&pool).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn without_shared_memory_large_payloads_take_the_socket() {
    let pool = within(LIMIT, "spawn", pool(1).shared_memory(0).spawn())
        .await
        .expect("spawn");
    echoes_intact(&pool, 3 << 20, 1).await;
    let env = within(
        LIMIT,
        "env",
        pool.enqueue(&Cmd::Env("DROVER_SHARED_MEMORY".into())),
    )
    .await
    .unwrap();
    assert_eq!(env.data::<String>().unwrap(), "", "no arenas were made");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_worker_lying_about_shared_memory_is_killed_and_replaced() {
    killed_for(Cmd::ShmLie, "passes the end of the").await;
}

#[tokio::test]
async fn a_worker_releasing_what_it_was_never_given_is_killed_and_replaced() {
    killed_for(
        Cmd::ShmBadRelease,
        "Release of shared-memory offset 4096: no payload placed there is held",
    )
    .await;
}

#[tokio::test]
async fn a_worker_naming_a_request_slot_it_released_is_killed_and_replaced() {
    killed_for(
        Cmd::ShmNameReleased(text(64 << 10, 1)),
        "an answer of 100 bytes at offset 0 of the requests arena lies in no payload sent to \
         this worker",
    )
    .await;
}

#[tokio::test]
async fn a_worker_naming_requests_memory_no_request_lies_in_is_killed_and_replaced() {
    killed_for(
        Cmd::ShmNameElsewhere,
        "an answer of 4096 bytes at offset 33554432 of the requests arena lies in no payload",
    )
    .await;
}

/// Answers made of a request's own bytes are named where they lie in the
/// requests arena and copied out of it; the callers here keep every
/// answer while later requests use the arenas again. Each must read as the
/// bytes the worker named, and every slot comes back.
#[tokio::test]
async fn answers_made_of_the_requests_own_bytes_arrive_intact_kept_or_not() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2).max_concurrency(8).shared_memory(8 << 20).spawn(),
    )
    .await
    .expect("spawn");
    let sizes = [640 << 10, 100 << 10, 1 << 20, 30 << 10];
    let mut calls = Vec::new();
    for i in 0..32 {
        let pool = pool.clone();
        calls.push(tokio::spawn(async move {
            let len = sizes[i % sizes.len()];
            // Whole (the text and the few bytes around it), or a part cut
            // out of the middle.
            let (start, end) = if i % 2 == 0 {
                (0, len + 64)
            } else {
                (len / 3, len / 2)
            };
            let mut cmd = Cmd::MirrorPart(text(len, i), start, end);
            let encoded = drover::proto::encode_value(&cmd).unwrap();
            let end = end.min(encoded.len());
            if let Cmd::MirrorPart(_, _, whole) = &mut cmd {
                *whole = end;
            }
            let expected = drover::proto::encode_value(&cmd).unwrap()[start..end].to_vec();
            let answer = within(LIMIT, "mirror", pool.enqueue(&cmd)).await.unwrap();
            assert!(
                answer.bytes()[..] == expected[..],
                "the answer of bytes {start}..{end} of a {len}-byte request came back changed"
            );
            (answer, expected)
        }));
    }
    let mut kept = Vec::new();
    for call in calls {
        kept.push(within(LIMIT, "mirrors", call).await.unwrap());
    }
    // Kept answers still read as they arrived once later requests have
    // used the arenas again.
    for i in 0..8 {
        echoes_intact(&pool, 1 << 20, 100 + i).await;
    }
    for (i, (answer, expected)) in kept.iter().enumerate() {
        assert!(
            answer.bytes()[..] == expected[..],
            "kept answer {i} changed under later requests"
        );
    }
    drop(kept);
    every_slot_comes_back(&pool).await;
    for i in 0..4 {
        echoes_intact(&pool, 2 << 20, 200 + i).await;
    }
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// Many callers on two runtime threads, each holding its answers for a
/// while or not at all, while the supervisor's writer places new requests
/// in the slots the workers release: every answer made of a request's own
/// bytes must read as what the worker named whenever its caller checks
/// it, and the arenas come back empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_the_requests_own_bytes_stay_intact_under_load_on_two_threads() {
    let pool = within(
        LIMIT,
        "spawn",
        pool(2).max_concurrency(16).shared_memory(4 << 20).spawn(),
    )
    .await
    .expect("spawn");
    let mut callers = Vec::new();
    for caller in 0..16usize {
        let pool = pool.clone();
        callers.push(tokio::spawn(async move {
            let mut held = std::collections::VecDeque::new();
            for round in 0..24usize {
                let len = (24 << 10) + ((caller * 7919 + round * 104_729) % (300 << 10));
                let start = (round * 131) % 1024;
                let cmd = Cmd::MirrorPart(text(len, caller * 100 + round), start, len);
                let expected = drover::proto::encode_value(&cmd).unwrap()[start..len].to_vec();
                let answer = within(LIMIT, "mirror", pool.enqueue(&cmd)).await.unwrap();
                assert!(
                    answer.bytes()[..] == expected[..],
                    "caller {caller} round {round}"
                );
                // Keep up to `caller % 4` answers, checking each again as
                // it goes.
                held.push_back((answer, expected));
                while held.len() > caller % 4 {
                    let (answer, expected) = held.pop_front().unwrap();
                    assert!(
                        answer.bytes()[..] == expected[..],
                        "caller {caller}: a held answer changed"
                    );
                }
            }
        }));
    }
    for caller in callers {
        within(LIMIT, "callers", caller).await.unwrap();
    }
    every_slot_comes_back(&pool).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_worker_cannot_write_remap_resize_or_unseal_its_arenas() {
    let pool = within(LIMIT, "spawn", pool(1).spawn())
        .await
        .expect("spawn");
    let answer = within(LIMIT, "attack", pool.enqueue(&Cmd::ShmAttack))
        .await
        .unwrap();
    let outcomes: Vec<(String, bool)> = answer.data().unwrap();
    assert_eq!(outcomes.len(), 8, "{outcomes:?}");
    for (what, refused) in &outcomes {
        assert!(refused, "a worker could {what}");
    }
    // And the arenas still carry payloads afterwards.
    echoes_intact(&pool, 1 << 20, 3).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_worker_scribbling_on_shared_memory_corrupts_only_its_own_answers() {
    let pool = within(LIMIT, "spawn", pool(2).max_concurrency(4).spawn())
        .await
        .expect("spawn");
    let len = 1 << 20;
    let scribbled = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.enqueue(&Cmd::ShmScribble(len, 300)).await })
    };
    // Meanwhile other large requests run, on both workers.
    let mut calls = Vec::new();
    for i in 0..16 {
        let pool = pool.clone();
        calls.push(tokio::spawn(async move {
            let sent = text(512 << 10, i);
            let answer = pool.enqueue(&Cmd::Echo(sent.clone())).await.expect("echo");
            (answer.pid(), answer.data::<String>().map(|got| got == sent))
        }));
    }
    let scribbled = within(LIMIT, "scribbled answer", scribbled)
        .await
        .unwrap()
        .expect("the scribbler's answer still arrives");
    let scribbler = scribbled.pid();
    // Its answer is its own business: whatever bytes it holds, the right
    // number of them, or an answer that does not decode.
    if let Ok(bytes) = scribbled.data::<Vec<u8>>() {
        assert_eq!(bytes.len(), len);
    }
    for call in calls {
        let (pid, intact) = within(LIMIT, "echoes", call).await.unwrap();
        if pid != scribbler {
            assert_eq!(
                intact.ok(),
                Some(true),
                "worker {pid}'s answer was corrupted"
            );
        }
    }
    assert!(
        alive(scribbler),
        "scribbling on its own answers is no violation"
    );
    still_serves(&pool, 10).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn a_worker_that_never_releases_its_requests_gets_them_through_the_socket() {
    // 2 MiB arenas, and a worker that keeps every request's payload: after
    // the first, none fits, and all still arrive.
    let pool = within(LIMIT, "spawn", pool(1).shared_memory(2 << 20).spawn())
        .await
        .expect("spawn");
    for i in 0..6 {
        let kept = vec![i as u8; (1 << 20) + i];
        let answer = within(LIMIT, "keep", pool.enqueue(&Cmd::Keep(kept)))
            .await
            .unwrap();
        assert_eq!(answer.data::<usize>().unwrap(), (1 << 20) + i);
    }
    // What it keeps shows in its health: the first kept payload holds
    // just over a MiB of the arena, and the others could not fit beside it.
    let held = pool.health()[0].shared_memory_held;
    assert!((1 << 20) < held && held <= 2 << 20, "held {held}");
    echoes_intact(&pool, 1 << 20, 9).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn large_payloads_faster_than_a_worker_reads_wait_rather_than_kill_it() {
    // 24 requests of 1.5 MiB at once to one worker that takes 8, through a
    // 4 MiB outbox and the socket: they wait their turn in the queue, and
    // the worker is never taken for one that stopped reading.
    let pool = within(
        LIMIT,
        "spawn",
        pool(1)
            .max_concurrency(8)
            .max_frame_length(2 << 20)
            .max_queued_bytes(4 << 20)
            .shared_memory(0)
            .spawn(),
    )
    .await
    .expect("spawn");
    let pid = pool.health()[0].pid;
    let mut calls = Vec::new();
    for i in 0..24 {
        let pool = pool.clone();
        calls.push(tokio::spawn(async move {
            echoes_intact(&pool, 3 << 19, i).await
        }));
    }
    for call in calls {
        within(LIMIT, "echoes", call).await.unwrap();
    }
    assert_eq!(pool.health()[0].pid, pid, "the worker was replaced");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

#[tokio::test]
async fn an_address_space_limit_sizes_the_arenas_unless_told_and_a_misfit_is_named() {
    // Unless sized, each arena is at most an eighth of the limit.
    let limit = 256 << 20;
    let pool = within(LIMIT, "spawn", pool(1).limit_address_space(limit).spawn())
        .await
        .expect("spawn");
    let env = within(
        LIMIT,
        "env",
        pool.enqueue(&Cmd::Env("DROVER_SHARED_MEMORY".into())),
    )
    .await
    .unwrap();
    assert_eq!(env.data::<String>().unwrap(), (limit / 8).to_string());
    echoes_intact(&pool, 1 << 20, 5).await;
    within(LIMIT, "soft kill", pool.soft_kill()).await;

    // Arenas sized past what the limit lets the worker map: it cannot
    // start, and says why.
    let err = within(
        LIMIT,
        "spawn",
        common::pool(1)
            .limit_address_space(limit)
            .shared_memory(limit as usize)
            .spawn(),
    )
    .await
    .unwrap_err();
    // The worker's own last words are in the error: the SDK's error
    // about its arenas (this worker's `main` returns it, so it is printed
    // as Debug).
    let text = err.to_string();
    assert!(
        text.contains("It said:") && text.contains("SharedMemory"),
        "{text}"
    );
}

#[tokio::test]
async fn a_sandboxed_worker_reads_and_writes_its_arenas() {
    // Every layer at once: its own user, network, PID and mount
    // namespaces, landlock with no path allowed, every seccomp preset.
    // The arenas are put in place with the shared sockets, after the fork
    // of the PID namespace's init and before the filter.
    use drover::{Sandbox, SyscallPreset, Syscalls};
    let sandbox = Sandbox::new()
        .user_namespace()
        .network_namespace()
        .pid_namespace()
        .deny_all_paths()
        .syscalls(Syscalls::deny([
            SyscallPreset::Network,
            SyscallPreset::Processes,
            SyscallPreset::ExecAfterStart,
            SyscallPreset::Ptrace,
        ]));
    let pool = within(LIMIT, "spawn", pool(1).sandbox(sandbox).spawn())
        .await
        .expect("spawn");
    echoes_intact(&pool, 3 << 20, 7).await;
    let outcomes: Vec<(String, bool)> = within(LIMIT, "attack", pool.enqueue(&Cmd::ShmAttack))
        .await
        .unwrap()
        .data()
        .unwrap();
    assert!(outcomes.iter().all(|(_, refused)| *refused), "{outcomes:?}");
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}

/// A handler writes its answer into `answer_buffer`: in the shared memory
/// when it reaches 20 KiB and there is room (growing past the room it
/// asked for into a larger one), in an ordinary buffer otherwise (too
/// small, or a pool with no shared memory); the caller gets the same
/// bytes every way.
#[tokio::test]
async fn an_answer_written_in_place_arrives_whatever_buffer_it_ends_in() {
    let pattern = |len: usize| (0..len as u64).map(Pattern::byte).collect::<Vec<u8>>();
    for (shared_memory, len, capacity, in_place) in [
        (None, 1 << 20, (1 << 20) + 1, true),
        (None, 30_000, 1 << 20, true),
        // The pattern fills it; the one byte after it spills it.
        (None, 1 << 20, 1 << 20, true),
        // Past its room it grows into a larger one.
        (None, 300_000, 100_000, true),
        // Started as an ordinary buffer, it moves in at 20 KiB.
        (None, 1 << 20, 0, true),
        (None, 100, 100, false),
        (Some(0), 1 << 20, (1 << 20) + 1, false),
    ] {
        let mut builder = pool(1);
        if let Some(bytes) = shared_memory {
            builder = builder.shared_memory(bytes);
        }
        let pool = within(LIMIT, "spawn", builder.spawn())
            .await
            .expect("spawn");
        let answer = within(
            LIMIT,
            "the answer",
            pool.enqueue(&Cmd::AnswerInPlace { len, capacity }),
        )
        .await
        .expect("answer");
        let bytes = answer.bytes();
        let (flag, body) = bytes.split_last().expect("at least the flag");
        assert!(
            body == &pattern(len)[..],
            "{len} bytes from a buffer of {capacity} came back changed"
        );
        assert_eq!(
            *flag == 1,
            in_place,
            "{len} bytes from a buffer of {capacity}, shared memory {shared_memory:?}"
        );
        within(LIMIT, "soft kill", pool.soft_kill()).await;
    }
}
