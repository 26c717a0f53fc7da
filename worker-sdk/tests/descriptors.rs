//! The worker side of passed descriptors, with this test playing the
//! supervisor on a real socket pair: a descriptor nobody takes is closed
//! and reported; a request that declares descriptors that never came is a
//! protocol violation. (One test in this file: it sets the environment the
//! SDK reads.)

use std::io::Read;
use std::os::fd::IntoRawFd;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use drover_proto::{MessageCodec, ProtocolError, ToSupervisor, ToWorker, Welcome};
use drover_worker::{Error, Request, Worker};
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};

const LIMIT: Duration = Duration::from_secs(30);

fn frame(message: ToWorker) -> Bytes {
    let mut buf = BytesMut::new();
    MessageCodec::<ToSupervisor>::default()
        .encode_message(message, &mut buf)
        .unwrap();
    buf.freeze()
}

#[tokio::test]
async fn descriptors_nobody_takes_are_closed_and_missing_ones_are_a_violation() {
    let (supervisor, worker_end) = std::os::unix::net::UnixStream::pair().unwrap();
    // The SDK takes its socket from DROVER_FD, as in a real worker.
    std::env::set_var(drover_proto::ENV_FD, worker_end.into_raw_fd().to_string());
    std::env::set_var(
        drover_proto::ENV_PARENT_PID,
        rustix::process::getppid()
            .unwrap()
            .as_raw_nonzero()
            .to_string(),
    );
    supervisor.set_nonblocking(true).unwrap();
    let (read, write) = tokio::net::UnixStream::from_std(supervisor)
        .unwrap()
        .into_split();
    let mut from_worker = FramedRead::new(read, MessageCodec::<ToSupervisor>::default());

    let worker = tokio::spawn(async move {
        let worker = Worker::connect().await?;
        // A handler that answers without taking the socket.
        worker.serve(|req: Request| async move { req.ack() }).await
    });

    let hello = tokio::time::timeout(LIMIT, from_worker.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(hello.name(), "Hello");
    let mut to_worker = FramedWrite::new(write, MessageCodec::<ToSupervisor>::default());
    to_worker
        .send(ToWorker::Welcome(Welcome {
            worker_id: 1,
            index: 0,
            max_frame_length: 1 << 20,
            config: Bytes::new(),
        }))
        .await
        .unwrap();
    let ready = tokio::time::timeout(LIMIT, from_worker.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ready.name(), "Ready");
    let write = to_worker.into_inner();

    // A request with a socket the handler never takes.
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let id = uuid::Uuid::new_v4();
    let request = frame(ToWorker::Request {
        id,
        created_at: 0,
        fds: 1,
        stream: false,
        payload: Bytes::new(),
    });
    let sent = drover_proto::fdio::send_with_fds(&write, &request, &[theirs.into()])
        .await
        .unwrap();
    assert_eq!(sent, request.len());
    let mut saw_answer = false;
    let mut saw_closed = false;
    while !(saw_answer && saw_closed) {
        let message = tokio::time::timeout(LIMIT, from_worker.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match message {
            ToSupervisor::Response { id: answered, .. } if answered == id => saw_answer = true,
            ToSupervisor::SocketClosed { id: closed } if closed == id => saw_closed = true,
            other => panic!("unexpected {}", other.name()),
        }
    }
    // The worker's copy is closed: our end reads end of file.
    ours.set_read_timeout(Some(LIMIT)).unwrap();
    let mut rest = Vec::new();
    assert_eq!(ours.read_to_end(&mut rest).unwrap(), 0);

    // A request that declares a descriptor that never comes.
    let lying = frame(ToWorker::Request {
        id: uuid::Uuid::new_v4(),
        created_at: 0,
        fds: 1,
        stream: false,
        payload: Bytes::new(),
    });
    let mut write = write;
    tokio::io::AsyncWriteExt::write_all(&mut write, &lying)
        .await
        .unwrap();
    let outcome = tokio::time::timeout(LIMIT, worker).await.unwrap().unwrap();
    match outcome {
        Err(Error::Protocol(ProtocolError::MissingDescriptors {
            declared: 1,
            arrived: 0,
            ..
        })) => {}
        other => panic!("expected MissingDescriptors, got {other:?}"),
    }
}
