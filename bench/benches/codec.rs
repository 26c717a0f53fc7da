//! Encoding and decoding one `ToWorker::Request` through `MessageCodec`, for
//! payloads from 64 B to 1 MiB; throughput is the payload's bytes.
//!
//! `cargo bench -p drover-bench --bench codec`

use std::hint::black_box;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use drover_proto::{timestamp_micros, MessageCodec, ToWorker};
use tokio_util::codec::{Decoder, Encoder};
use uuid::Uuid;

/// Payload sizes and their labels.
const SIZES: [(usize, &str); 4] = [
    (64, "64B"),
    (4 * 1024, "4KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

fn request(size: usize) -> ToWorker {
    ToWorker::Request {
        id: Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef),
        created_at: timestamp_micros(SystemTime::now()),
        fds: 0,
        stream: false,
        payload: Bytes::from(vec![0xA5_u8; size]),
    }
}

/// Batches of cloned input for `decode`: small frames many at a time, a
/// 1 MiB frame few at a time.
fn batch_size(size: usize) -> BatchSize {
    if size >= 1024 * 1024 {
        BatchSize::LargeInput
    } else {
        BatchSize::SmallInput
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (size, label) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let message = request(size);
        let mut codec = MessageCodec::<ToWorker>::default();
        let mut buf = BytesMut::with_capacity(size + 128);
        group.bench_with_input(
            BenchmarkId::from_parameter(label),
            &message,
            |b, message| {
                b.iter(|| {
                    buf.clear();
                    // Cloning a `ToWorker::Request` copies its id and bumps the
                    // payload's reference count: no payload copy.
                    codec.encode(message.clone(), &mut buf).unwrap();
                    black_box(buf.len())
                })
            },
        );
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (size, label) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut codec = MessageCodec::<ToWorker>::default();
        let mut frame = BytesMut::new();
        codec.encode(request(size), &mut frame).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(label), &frame, |b, frame| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| {
                    let message = codec.decode(buf).unwrap();
                    assert!(matches!(message, Some(ToWorker::Request { .. })));
                    message
                },
                batch_size(size),
            )
        });
    }
    group.finish();
}

/// Every codec benchmark (what `criterion_group!` would generate, with a
/// doc comment: the workspace asks for docs on public items).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    encode(&mut c);
    decode(&mut c);
}

criterion_main!(benches);
