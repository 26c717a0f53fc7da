//! The arenas' bookkeeping and both sides' resolution of descriptors.

use std::collections::BTreeMap;

use super::*;

#[test]
fn slots_are_pages_taken_lowest_first_and_merged_when_freed() {
    let mut slots = Slots::new(16 * PAGE);
    let a = slots.take(1).unwrap();
    let b = slots.take(PAGE + 1).unwrap();
    let c = slots.take(PAGE).unwrap();
    assert_eq!((a, b, c), (0, PAGE, 3 * PAGE));
    assert_eq!(slots.take(13 * PAGE), None, "only 12 pages are left");
    slots.free(b).unwrap();
    assert_eq!(slots.free(b), None, "a slot is freed once");
    assert_eq!(slots.free(PAGE / 2), None, "no slot starts there");
    // The hole left by b is reused first.
    assert_eq!(slots.take(2 * PAGE), Some(PAGE));
    slots.free(a).unwrap();
    slots.free(c).unwrap();
    slots.free(PAGE).unwrap();
    assert!(slots.live.is_empty());
    assert_eq!(slots.held, 0);
    assert_eq!(
        slots.free,
        BTreeMap::from([(0, 16 * PAGE)]),
        "all merged back"
    );
    assert_eq!(slots.take(16 * PAGE), Some(0));
}

/// A slot being written in place is not the peer's to release until
/// it is sent; only the exact bytes of one are sent where they lie.
#[test]
fn a_reserved_slot_is_released_only_by_its_writer_until_sent() {
    let (arenas, _fds) = Arenas::create(16 * PAGE).unwrap();
    let arena = arenas.outbound;
    let mut slot = arena.reserve(3 * PAGE).unwrap();
    assert!(slot.push(&[7; 100]));
    assert!(matches!(
        arena.free(0),
        Err(ProtocolError::BadRelease { offset: 0, .. })
    ));
    let bytes = slot.into_bytes();
    // A slice of it is copied as any payload would be.
    assert!(arena.sent_in_place(&bytes[1..]).is_none());
    assert_eq!(arena.sent_in_place(&bytes), Some(descriptor(0, 100)));
    // Sent: dropping the bytes leaves the slot to the peer's Release.
    drop(bytes);
    assert_eq!(arena.in_use(), 3 * PAGE);
    arena.free(0).unwrap();
    assert_eq!(arena.in_use(), 0);
    // Never sent: dropping frees it.
    let slot = arena.reserve(PAGE).unwrap();
    drop(slot.into_bytes());
    assert_eq!(arena.in_use(), 0);
    assert!(arena.reserve(0).is_none());
    assert!(arena.reserve(17 * PAGE).is_none());
}

#[test]
fn the_worker_cannot_write_requests_nor_resize_either_arena() {
    let (_supervisor, fds) = Arenas::create(8 * PAGE).unwrap();
    let worker = Arenas::adopt(&fds, 8 * PAGE).unwrap();
    assert!(worker.lend);
    // No writable mapping of the requests arena, no write, no resize.
    assert!(MmapOptions::new()
        .len(8 * PAGE)
        .map_raw(fds.requests.as_raw_fd())
        .is_err());
    assert!(rustix::io::write(&fds.requests, b"x").is_err());
    for fd in [&fds.requests, &fds.answers] {
        assert!(rustix::fs::ftruncate(fd, 0).is_err());
        assert!(rustix::fs::ftruncate(fd, 64 * PAGE as u64).is_err());
        assert!(rustix::fs::fcntl_add_seals(fd, SealFlags::empty()).is_err());
    }
    // The wrong size is refused, naming it.
    let error = Arenas::adopt(&fds, 4 * PAGE).unwrap_err();
    assert!(error.to_string().contains("32768 bytes"), "{error}");
}

/// The two sides of a pair of arenas of `pages` pages, as a
/// connection sets them up: each side's arena it writes, the readers'
/// resolutions on each side, and the offsets each side released.
struct Pair {
    requests: Arc<Outbound>,
    answers: Arc<Outbound>,
    map: usize,
    at_worker: Arc<Inbound>,
    at_supervisor: Arc<Inbound>,
    released: Arc<Mutex<Vec<u64>>>,
}

fn pair(pages: usize) -> Pair {
    let (supervisor, fds) = Arenas::create(pages * PAGE).unwrap();
    let worker = Arenas::adopt(&fds, pages * PAGE).unwrap();
    let released = Arc::new(Mutex::new(Vec::new()));
    let inbound = |arenas: Arenas| {
        let released = released.clone();
        let own = (!arenas.lend).then(|| arenas.outbound.clone());
        Arc::new(Inbound::new(
            arenas.inbound,
            arenas.lend,
            Box::new(move |o| released.lock().unwrap().push(o)),
            Arc::default(),
            own,
        ))
    };
    let requests = supervisor.outbound.clone();
    let map = requests.map.as_ptr() as usize;
    Pair {
        requests,
        answers: worker.outbound.clone(),
        map,
        at_worker: inbound(worker),
        at_supervisor: inbound(supervisor),
        released,
    }
}

#[test]
fn payloads_cross_both_ways_and_bad_descriptors_are_named() {
    let Pair {
        requests: to_worker,
        answers: to_supervisor,
        at_worker,
        at_supervisor,
        released,
        ..
    } = pair(64);

    // A request, lent in place to the worker until its last Bytes goes.
    let request: Vec<u8> = (0..3 * PAGE).map(|i| i as u8).collect();
    let descriptor = to_worker.place(&request).unwrap();
    let lent = at_worker.take(&descriptor, usize::MAX).unwrap();
    assert_eq!(&lent[..], &request[..]);
    let slice = lent.slice(10..20);
    drop(lent);
    assert!(
        released.lock().unwrap().is_empty(),
        "a slice still holds it"
    );
    drop(slice);
    assert_eq!(*released.lock().unwrap(), [0]);
    to_worker.free(0).unwrap();
    assert_eq!(to_worker.in_use(), 0);

    // An answer, copied out by the supervisor and released at once.
    let answer = vec![9u8; PAGE + 5];
    let descriptor = to_supervisor.place(&answer).unwrap();
    let copied = at_supervisor.take(&descriptor, usize::MAX).unwrap();
    assert_eq!(&copied[..], &answer[..]);
    assert_eq!(*released.lock().unwrap(), [0, 0]);

    // Out of the arena, over the limit, cut short: each named.
    let bad = |offset: u64, len: u64| {
        let mut d = [0u8; DESCRIPTOR_LEN];
        d[..8].copy_from_slice(&offset.to_le_bytes());
        d[8..].copy_from_slice(&len.to_le_bytes());
        d
    };
    let error = at_supervisor.take(&bad(63 * PAGE as u64, 2 * PAGE as u64), usize::MAX);
    assert!(error.unwrap_err().contains("passes the end"));
    let error = at_supervisor.take(&bad(u64::MAX >> 1, 2), usize::MAX);
    assert!(error.unwrap_err().contains("passes the end"));
    let error = at_supervisor.take(&bad(0, 100), 99);
    assert!(error.unwrap_err().contains("over the payload limit of 99"));
    let error = at_supervisor.take(&[0; 15], usize::MAX);
    assert!(error.unwrap_err().contains("15 bytes"));
    assert!(matches!(
        to_worker.free(PAGE as u64),
        Err(ProtocolError::BadRelease { offset, .. }) if offset == PAGE as u64
    ));

    // A payload larger than the arena does not fit: the socket takes it.
    assert!(to_worker.place(&vec![0; 65 * PAGE]).is_none());
}

/// An answer made of a request's own bytes is copied out of the requests
/// arena, the slot untouched: it stays the worker's until it releases it,
/// and a slot the worker released cannot be named again.
#[test]
fn an_answer_naming_its_requests_bytes_is_copied_out_of_the_requests_arena() {
    let Pair {
        requests,
        map,
        at_worker,
        at_supervisor,
        released,
        ..
    } = pair(64);
    let request: Vec<u8> = (0..3 * PAGE).map(|i| (i * 7) as u8).collect();
    let sent = requests.place(&request).unwrap();
    let lent = at_worker.take(&sent, usize::MAX).unwrap();

    // The worker answers with a slice of it: copied out by the supervisor,
    // nothing released.
    let answer = at_supervisor
        .take(&own_descriptor(100, 2 * PAGE), usize::MAX)
        .unwrap();
    assert_eq!(&answer[..], &lent[100..100 + 2 * PAGE]);
    let at = answer.as_ptr() as usize;
    assert!(!(map..map + 64 * PAGE).contains(&at), "copied out");
    assert!(released.lock().unwrap().is_empty());
    assert_eq!(requests.in_use(), 3 * PAGE, "still the worker's");

    // Released by the worker, the slot is free for the next request, and
    // naming it again is refused.
    drop(lent);
    assert_eq!(*released.lock().unwrap(), [0]);
    requests.free(0).unwrap();
    assert_eq!(requests.in_use(), 0);
    let error = at_supervisor
        .take(&own_descriptor(0, 10), usize::MAX)
        .unwrap_err();
    assert!(
        error.contains("lies in no payload sent to this worker"),
        "{error}"
    );
    assert_eq!(requests.place(&[2; PAGE]), Some(descriptor(0, PAGE)));
    assert_eq!(&answer[..], &request[100..100 + 2 * PAGE], "the copy stays");
}

/// A slot the worker releases while the supervisor copies an answer out
/// of it is freed only once the copy is done.
#[test]
fn a_slot_released_while_an_answer_is_copied_out_is_freed_after() {
    let Pair { requests, .. } = pair(16);
    let sent = requests.place(&[5; 2 * PAGE]).unwrap();
    assert_eq!(sent, descriptor(0, 2 * PAGE));
    let view = requests.view(PAGE, PAGE).unwrap();
    requests.free(0).unwrap();
    assert_eq!(requests.in_use(), 0, "the worker holds it no more");
    assert!(matches!(
        requests.free(0),
        Err(ProtocolError::BadRelease { offset: 0, .. })
    ));
    assert_eq!(
        requests.view(0, 10).unwrap_err(),
        "lies in a payload the worker released"
    );
    assert_eq!(
        requests.place(&[6; 2 * PAGE]),
        Some(descriptor(2 * PAGE, 2 * PAGE)),
        "not taken again while copied"
    );
    assert_eq!(view.as_ref(), &[5; PAGE][..]);
    drop(view);
    assert_eq!(
        requests.place(&[7; 2 * PAGE]),
        Some(descriptor(0, 2 * PAGE))
    );
}

/// A range that is not a payload sent to the worker and held by it is
/// named as such, and only the supervisor's side accepts the mark.
#[test]
fn an_answer_naming_anything_else_of_the_requests_arena_is_refused() {
    let Pair {
        requests,
        at_worker,
        at_supervisor,
        ..
    } = pair(64);
    requests.place(&[1; 2 * PAGE]).unwrap();
    requests.place(&[2; PAGE]).unwrap();
    let refused = |offset: usize, len: usize| {
        at_supervisor
            .take(&own_descriptor(offset, len), usize::MAX)
            .unwrap_err()
    };
    // Outside every slot, across two, past the arena's end.
    assert!(refused(3 * PAGE, 10).contains("lies in no payload sent to this worker"));
    assert!(refused(PAGE, 2 * PAGE).contains("lies in no payload"));
    assert!(refused(60 * PAGE, 8 * PAGE).contains("lies in no payload"));
    let mut huge = own_descriptor(0, 0);
    huge[..8].copy_from_slice(&(OWN_ARENA | (u64::MAX >> 1)).to_le_bytes());
    huge[8..].copy_from_slice(&u64::MAX.to_le_bytes());
    let error = at_supervisor.take(&huge, usize::MAX).unwrap_err();
    assert!(error.contains("passes the end of it"), "{error}");
    // Over the payload limit.
    let error = at_supervisor.take(&own_descriptor(0, 100), 99).unwrap_err();
    assert!(error.contains("over the payload limit of 99"), "{error}");
    // A slot still being written is not the worker's yet.
    let slot = requests.reserve(PAGE).unwrap();
    assert!(refused(3 * PAGE, 10).contains("not sent yet"));
    drop(slot);
    // The worker's side never takes the mark.
    let error = at_worker
        .take(&own_descriptor(0, 10), usize::MAX)
        .unwrap_err();
    assert!(
        error.contains("only a worker's answers may name"),
        "{error}"
    );
}

/// The worker's writer recognises bytes lent from the requests arena, and
/// only those: a slice of them is named where it lies; bytes elsewhere,
/// or reaching past the arena's end, are not.
#[test]
fn only_bytes_lying_in_the_lent_arena_are_named_there() {
    let (_supervisor, fds) = Arenas::create(8 * PAGE).unwrap();
    let worker = Arenas::adopt(&fds, 8 * PAGE).unwrap();
    let map = &worker.inbound;
    // SAFETY: a read-only view of the mapping, which `worker` keeps.
    let whole = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
    assert_eq!(
        lent_descriptor(map, &whole[PAGE..3 * PAGE]),
        Some(own_descriptor(PAGE, 2 * PAGE))
    );
    assert_eq!(
        lent_descriptor(map, whole),
        Some(own_descriptor(0, 8 * PAGE))
    );
    let elsewhere = vec![0u8; 3 * PAGE];
    assert_eq!(lent_descriptor(map, &elsewhere), None);
    // Reaching past the end, or starting before the arena or at its end.
    assert_eq!(offset_within(1000, 100, 1090, 10), Some(90));
    assert_eq!(offset_within(1000, 100, 1090, 11), None);
    assert_eq!(offset_within(1000, 100, 999, 1), None);
    assert_eq!(offset_within(1000, 100, 1100, 0), None);
    let descriptor = own_descriptor(PAGE, 10);
    assert_eq!(
        u64::from_le_bytes(descriptor[..8].try_into().unwrap()),
        OWN_ARENA | PAGE as u64
    );
}
