use super::*;
use crate::codec::MessageCodec;
use crate::fdio::FdReader;
use crate::message::ToWorker;
use crate::reader::FrameReader;
use futures::StreamExt;
use uuid::Uuid;

/// An outbox writing to one end of a socket pair, and a reader of the
/// other end.
fn connection(
    max: usize,
) -> (
    Outbox<ToWorker>,
    tokio::task::JoinHandle<Result<(), ProtocolError>>,
    FrameReader<ToWorker>,
) {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let (_, write) = a.into_split();
    let (read, _) = b.into_split();
    let (out, rx) = outbox(max, usize::MAX);
    let writer = tokio::spawn(write_loop(write, rx));
    (
        out,
        writer,
        FrameReader::new(FdReader::new(read), MessageCodec::new(max)),
    )
}

fn data(id: u128, bytes: Bytes) -> Outgoing<ToWorker> {
    Outgoing::Frame(ToWorker::Stream(StreamFrame::Data {
        id: Uuid::from_u128(id),
        bytes,
    }))
}

/// Reads data frames until the end: frame `i` of sender `s` (id `s << 32 |
/// i`) has `size(i)` bytes of `fill(s, i)`, each sender's arrive in order,
/// and sender `s` sent `counts[s]`.
async fn each_in_order<const N: usize>(
    reader: &mut FrameReader<ToWorker>,
    counts: [u128; N],
    size: impl Fn(u128) -> usize,
    fill: impl Fn(u128, u128) -> u8,
) {
    let mut next = [0u128; N];
    while let Some(message) = reader.next().await {
        let ToWorker::Stream(StreamFrame::Data { id, bytes }) = message.unwrap() else {
            panic!("not a data frame");
        };
        let (sender, i) = (id.as_u128() >> 32, id.as_u128() & 0xffff_ffff);
        assert_eq!(i, next[sender as usize], "sender {sender} out of order");
        next[sender as usize] += 1;
        assert_eq!(bytes.len(), size(i));
        assert!(bytes.iter().all(|&b| b == fill(sender, i)));
    }
    assert_eq!(next, counts);
}

/// Small frames and large payloads from several senders: each
/// sender's frames arrive whole and in its order, and the writer ends
/// once the last sender is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_whole_and_in_order_and_the_writer_ends_with_its_senders() {
    fn size(i: u128) -> usize {
        if i % 50 == 7 {
            COPY_LIMIT * 3
        } else {
            (i % 40) as usize
        }
    }
    let (out, writer, mut reader) = connection(1 << 22);
    let senders: Vec<_> = (0..4u128)
        .map(|sender| {
            let out = out.clone();
            tokio::spawn(async move {
                for i in 0..200u128 {
                    let bytes = Bytes::from(vec![(sender * 31 + i) as u8; size(i)]);
                    out.send(data(sender << 32 | i, bytes)).unwrap();
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    drop(out);
    for sender in senders {
        sender.await.unwrap();
    }
    each_in_order(&mut reader, [200; 4], size, |sender, i| {
        (sender * 31 + i) as u8
    })
    .await;
    writer.await.unwrap().unwrap();
}

/// Frames written by their senders themselves (`Wake::direct`) and by
/// the writer, from several threads, through a socket the peer only
/// starts reading once it is full: each sender's frames still arrive
/// whole and in its order, and the writer ends with its senders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_and_the_writer_keep_one_order_through_a_full_socket() {
    let (out, writer, mut reader) = connection(1 << 22);
    let size = |i: u128| {
        if i % 7 == 3 {
            9000
        } else {
            (i % 50) as usize * 20
        }
    };
    let senders: Vec<_> = (0..3u128)
        .map(|sender| {
            let out = out.clone();
            tokio::spawn(async move {
                for i in 0..400u128 {
                    let bytes = Bytes::from(vec![(sender * 17 + i) as u8; size(i)]);
                    let wake = out.queue(data(sender << 32 | i, bytes)).unwrap();
                    if i % 3 == 0 {
                        drop(wake);
                    } else {
                        drop(wake.direct());
                    }
                    if i % 32 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    drop(out);
    for sender in senders {
        sender.await.unwrap();
    }
    each_in_order(&mut reader, [400; 3], size, |sender, i| {
        (sender * 17 + i) as u8
    })
    .await;
    writer.await.unwrap().unwrap();
}

/// A direct wake-up writes its frame before the caller yields; held
/// wake-ups leave frames queued however often the writer could have
/// run, and write them all once let go.
#[tokio::test]
async fn a_direct_wake_writes_at_once_and_held_wakes_when_let_go() {
    let (out, _writer, mut reader) = connection(1 << 20);
    // A first frame through the writer, so the socket is known writable.
    out.send(data(0, Bytes::from_static(b"first"))).unwrap();
    reader.next().await.unwrap().unwrap();

    drop(
        out.queue(data(1, Bytes::from_static(b"direct")))
            .unwrap()
            .direct(),
    );
    assert_eq!(out.queued(), 0, "written before any other task ran");

    let held = out.hold_wakes();
    for id in 2..5 {
        out.send(data(id, Bytes::from(vec![id as u8; 100])))
            .unwrap();
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let frame = 100 + 22;
    assert_eq!(out.queued(), 3 * frame, "the writer was never woken");
    drop(held);
    assert_eq!(out.queued(), 0, "written as the wake-ups were let go");
    for id in 1..5u128 {
        let ToWorker::Stream(StreamFrame::Data { id: got, .. }) =
            reader.next().await.unwrap().unwrap()
        else {
            panic!("not a data frame");
        };
        assert_eq!(got.as_u128(), id);
    }
}

/// A frame with a descriptor, written by its sender itself, arrives
/// with the descriptor.
#[tokio::test]
async fn a_direct_wake_sends_a_frame_with_descriptors_at_once() {
    let (out, _writer, mut reader) = connection(1 << 20);
    out.send(data(0, Bytes::from_static(b"first"))).unwrap();
    reader.next().await.unwrap().unwrap();
    let (passed, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let carrying = ToWorker::Cancel {
        id: Uuid::from_u128(1),
    };
    let wake = out
        .queue(Outgoing::FrameWithFds(
            carrying.clone(),
            vec![passed.into()],
        ))
        .unwrap();
    drop(wake.direct());
    assert_eq!(out.queued(), 0, "sent before any other task ran");
    assert_eq!(reader.next().await.unwrap().unwrap(), carrying);
    assert_eq!(reader.get_mut().take_fds(1).map(|fds| fds.len()), Some(1));
}

/// A buffer the writer has written is kept, once nothing else holds
/// it, to encode the next frames into.
#[tokio::test]
async fn a_written_buffer_is_given_back_to_encode_into() {
    let (out, _writer, mut reader) = connection(1 << 20);
    out.send(data(1, Bytes::from(vec![1u8; 1000]))).unwrap();
    reader.next().await.unwrap().unwrap();
    // The writer gives the first batch's buffer back before it takes
    // the next batch, which the flush ends.
    out.send(data(2, Bytes::from(vec![2u8; 1000]))).unwrap();
    let (done, flushed) = oneshot::channel();
    out.send(Outgoing::Flush(done)).unwrap();
    flushed.await.expect("flushed");
    let queue = out.streams.shared.lock();
    let spare = queue.spares.last().expect("the written buffer is kept");
    assert!(spare.is_empty());
    assert!(spare.capacity() >= FIRST_BUFFER);
}

/// A flush is acknowledged once what was queued before it is written,
/// and descriptors arrive with the frame that carries them.
#[tokio::test]
async fn flushes_follow_their_frames_and_descriptors_their_frame() {
    let (out, _writer, mut reader) = connection(1 << 20);
    out.send(data(1, Bytes::from_static(b"first"))).unwrap();
    let (passed, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let carrying = ToWorker::Cancel {
        id: Uuid::from_u128(2),
    };
    out.send(Outgoing::FrameWithFds(
        carrying.clone(),
        vec![passed.into()],
    ))
    .unwrap();
    let (done, flushed) = oneshot::channel();
    out.send(Outgoing::Flush(done)).unwrap();
    flushed.await.expect("flushed");
    let first = reader.next().await.unwrap().unwrap();
    assert!(matches!(first, ToWorker::Stream(StreamFrame::Data { .. })));
    assert_eq!(reader.next().await.unwrap().unwrap(), carrying);
    assert_eq!(reader.get_mut().take_fds(1).map(|fds| fds.len()), Some(1));
}

/// A peer that stops reading: once more than the limit waits, the
/// send is refused, what was queued is dropped, and the writer stops
/// with `Stalled` even though its write never completes.
#[tokio::test]
async fn a_peer_that_stops_reading_stalls_the_outbox_at_its_limit() {
    let (a, _b) = tokio::net::UnixStream::pair().unwrap();
    let (_, write) = a.into_split();
    let limit = 1 << 20;
    let (out, rx) = outbox::<ToWorker>(1 << 20, limit);
    let writer = tokio::spawn(write_loop(write, rx));
    let chunk = Bytes::from(vec![1u8; 64 * 1024]);
    let mut sent = 0usize;
    let refused = loop {
        match out.send(data(1, chunk.clone())) {
            Ok(()) => sent += chunk.len(),
            Err(Closed) => break sent,
        }
        assert!(sent <= 64 << 20, "never refused");
        tokio::task::yield_now().await;
    };
    // Some went into the socket's buffer; no more than the limit waited.
    assert!(refused > limit, "refused after {refused} bytes");
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), writer)
        .await
        .expect("the writer stops")
        .unwrap();
    match result {
        Err(ProtocolError::Stalled { queued, limit: l }) => {
            assert_eq!(l, limit);
            assert!(queued > limit);
        }
        other => panic!("expected Stalled, got {other:?}"),
    }
    assert_eq!(out.queued(), 0, "nothing is kept once stalled");
    assert_eq!(out.send(data(2, Bytes::new())), Err(Closed));
}

/// Two large frames written in one batch: once the peer has read the
/// first, its bytes no longer count, though the batch is not done, so
/// a third fits under a limit that two and a half of them would pass.
#[tokio::test]
async fn what_a_batch_has_written_counts_off_the_limit_at_once() {
    use tokio::io::AsyncReadExt;
    let (a, mut peer) = tokio::net::UnixStream::pair().unwrap();
    let (_, write) = a.into_split();
    let frame = 1 << 20;
    let (out, rx) = outbox::<ToWorker>(4 << 20, frame * 5 / 2);
    // Both queued before the writer first runs: one batch.
    out.send(data(1, Bytes::from(vec![1u8; frame]))).unwrap();
    out.send(data(2, Bytes::from(vec![2u8; frame]))).unwrap();
    let writer = tokio::spawn(write_loop(write, rx));
    // The first frame, header and all, then a little of the second.
    let mut first = vec![0u8; frame + 64 * 1024];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        peer.read_exact(&mut first),
    )
    .await
    .expect("the first frame arrives")
    .unwrap();
    assert!(
        out.queued() < 2 * frame,
        "queued {} after a frame was read",
        out.queued()
    );
    out.send(data(3, Bytes::from(vec![3u8; frame])))
        .expect("a third frame fits: the first was written");
    drop(out);
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).await.unwrap();
    assert_eq!(first.len() + rest.len(), 3 * (frame + 22));
    writer.await.unwrap().unwrap();
}

/// A message over the frame limit stops the writer with that error,
/// and what is sent afterwards is refused.
#[tokio::test]
async fn a_message_over_the_limit_stops_the_writer() {
    let (out, writer, _reader) = connection(1024);
    out.send(data(1, Bytes::from(vec![0u8; 4096]))).unwrap();
    match writer.await.unwrap() {
        Err(ProtocolError::FrameTooLarge { max: 1024, .. }) => {}
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert!(out.is_closed());
    assert_eq!(out.send(data(2, Bytes::new())), Err(Closed));
}

/// Stream frames sent through the untyped handle arrive as the
/// direction's stream messages; the writer lives until the last
/// handle of either kind is gone.
#[tokio::test]
async fn the_stream_handle_sends_stream_frames_and_keeps_the_writer() {
    let (out, writer, mut reader) = connection(1 << 20);
    let streams = out.streams();
    drop(out);
    let id = Uuid::from_u128(5);
    streams.send(StreamFrame::Credit { id, bytes: 7 }).unwrap();
    assert_eq!(
        reader.next().await.unwrap().unwrap(),
        ToWorker::Stream(StreamFrame::Credit { id, bytes: 7 })
    );
    assert!(!writer.is_finished());
    drop(streams);
    writer.await.unwrap().unwrap();
    assert!(reader.next().await.is_none());
}
