//! A deterministic mutational fuzzer over every decoding path of the
//! protocol, as both sides (the supervisor and the worker SDK) run them:
//!
//! - `codec`: [`MessageCodec::decode`] over a stream of frames fed in
//!   random pieces, then `decode_eof`, at frame limits of 64 bytes, 4 KiB
//!   and 1 MiB;
//! - `body`: [`MessageCodec::decode_body`] on one frame's body;
//! - `value`: [`decode_value`] into eight shapes of user value (a worker's
//!   answer is as untrusted as its frames);
//! - `socket`: a [`FrameReader`] over a real socket pair, the stream written
//!   in pieces of 1 byte to 64 KiB, some with `SCM_RIGHTS` descriptors.
//!
//! Inputs are valid encodings of every message of both directions
//! ([`ToWorker`] and [`ToSupervisor`], each case one direction, as each
//! side reads one; and of every value shape), mutated: bits flipped, bytes
//! set to values that matter to bincode's varints and to the kind, flag
//! and sub-kind bytes of the fixed layouts, lying length claims inserted
//! (`253` and a `u64` of 2^40, `u64::MAX`, ...), truncated, spliced, chunks
//! duplicated or cut, frame headers rewritten (to the limit, one past it,
//! 0, ...), garbage.
//!
//! Each decode runs under `catch_unwind` and a counting global allocator:
//! no input may panic, and none may make one allocation larger than the
//! bound its path promises (see [`SLACK`] and the `*_bound` functions).
//! The socket path also checks that every input ends the reader in bounded
//! time and that no received descriptor outlives the connection, with
//! descriptors attached to writes anywhere, inside a large frame's body
//! too.
//!
//! # Running it
//!
//! `cargo test -p drover-proto --test fuzz` runs [`DEFAULT_ITERATIONS`]
//! inputs per in-memory path (a quarter of that over sockets) from a
//! fixed seed, in a few seconds. A long run sets both:
//!
//! ```text
//! DROVER_FUZZ_ITERATIONS=2000000 DROVER_FUZZ_SEED=$RANDOM \
//!     cargo test -p drover-proto --test fuzz --release -- --nocapture
//! ```
//!
//! Every input is derived from the seed, the path and its iteration alone,
//! so a failure (which names all three and prints the input in hex) comes
//! back with the same seed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use drover_proto::fdio::send_with_fds;
use drover_proto::frame::LARGE_FRAME;
use drover_proto::{
    decode_value, encode_value, FdReader, FrameReader, Hello, MessageCodec, ProtocolError,
    RemoteError, RemoteErrorKind, StreamFrame, ToSupervisor, ToWorker, Welcome, Wire,
    DEFAULT_MAX_FRAME_LENGTH, FRAME_HEADER_LEN, MAGIC, MAX_FDS_PER_FRAME, PROTOCOL_VERSION,
};
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Decoder;
use uuid::Uuid;

/// Counts the largest single allocation made on this thread while armed.
// The workspace denies unsafe code; implementing `GlobalAlloc` needs it,
// and this module does nothing with it but forward to `System` (and read
// back, for a failure report, an input a live guard borrows).
#[allow(unsafe_code)]
mod meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::io::Write;
    use std::marker::PhantomData;

    /// An armed allocation over this aborts the test binary at once, after
    /// printing the case: no bound asserted here comes near it, and the
    /// process would not survive what it may be (2^40 bytes aborts in the
    /// system allocator; `u64::MAX` panics inside `Vec`).
    pub const HARD_CAP: usize = 256 << 20;

    /// The global allocator of this test binary.
    pub struct Meter;

    #[global_allocator]
    static METER: Meter = Meter;

    #[derive(Clone, Copy)]
    struct Case {
        path: &'static str,
        seed: u64,
        iteration: u64,
        input: *const u8,
        len: usize,
    }

    thread_local! {
        // Const-initialised and without destructors: reading them from the
        // allocator never allocates and works at any point of a thread's life.
        static ARMED: Cell<bool> = const { Cell::new(false) };
        static LARGEST: Cell<usize> = const { Cell::new(0) };
        static CASE: Cell<Option<Case>> = const { Cell::new(None) };
    }

    /// Names the input being decoded on this thread, for the report if an
    /// allocation over [`HARD_CAP`] ends the process; cleared on drop.
    pub struct CaseGuard<'a>(PhantomData<&'a [u8]>);

    pub fn case<'a>(
        path: &'static str,
        seed: u64,
        iteration: u64,
        input: &'a [u8],
    ) -> CaseGuard<'a> {
        CASE.with(|c| {
            c.set(Some(Case {
                path,
                seed,
                iteration,
                input: input.as_ptr(),
                len: input.len(),
            }))
        });
        CaseGuard(PhantomData)
    }

    impl Drop for CaseGuard<'_> {
        fn drop(&mut self) {
            CASE.with(|c| c.set(None));
        }
    }

    /// Runs `f` armed: returns what it returned (or its panic) and the
    /// largest single allocation (or reallocation's new size) it made.
    pub fn measure<R>(f: impl FnOnce() -> R) -> (std::thread::Result<R>, usize) {
        LARGEST.with(|l| l.set(0));
        ARMED.with(|a| a.set(true));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        ARMED.with(|a| a.set(false));
        (result, LARGEST.with(Cell::get))
    }

    fn note(size: usize) {
        if !ARMED.try_with(Cell::get).unwrap_or(false) {
            return;
        }
        LARGEST.with(|l| l.set(l.get().max(size)));
        if size > HARD_CAP {
            ARMED.with(|a| a.set(false));
            report(size);
            std::process::abort();
        }
    }

    /// Straight to the process's stderr: the test harness's capture would
    /// die with the process.
    fn report(size: usize) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "fuzz: one allocation of {size} bytes while decoding");
        if let Some(case) = CASE.with(Cell::get) {
            // SAFETY: the `CaseGuard` that set the case borrows the input
            // until it clears it.
            let input = unsafe { std::slice::from_raw_parts(case.input, case.len) };
            let _ = writeln!(
                err,
                "  path {}, DROVER_FUZZ_SEED={:#x}, iteration {}\n  input ({} bytes): {}",
                case.path,
                case.seed,
                case.iteration,
                input.len(),
                super::hex(input)
            );
        }
    }

    // SAFETY: every call is forwarded unchanged to `System`.
    unsafe impl GlobalAlloc for Meter {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration and the bounds asserted

/// The seed unless `DROVER_FUZZ_SEED` (decimal or `0x` hex) gives one.
const DEFAULT_SEED: u64 = 0x6472_6f76_6572_2121;

/// Inputs per in-memory path unless `DROVER_FUZZ_ITERATIONS` says; the
/// socket path runs a quarter as many.
const DEFAULT_ITERATIONS: u64 = 10_000;

/// The frame limits the codec and the reader are fuzzed at: below every
/// message but the smallest, around the small-frame copy threshold (1 KiB),
/// and above the reader's large-frame threshold.
const LIMITS: [usize; 3] = [64, 4096, 1 << 20];

/// What any decode may allocate beyond its path's bound: error messages,
/// a `Bytes`' shared header, a hash table's control bytes, a small hash
/// table's minimum size.
const SLACK: usize = 1024;

/// Room the reader reserves for each read of small frames (`READ_CHUNK`,
/// private to `reader.rs`).
const READ_CHUNK: usize = 64 * 1024;

/// The largest single allocation a [`FrameReader`] at `limit` may make:
///
/// - a large frame's body buffer, allocated whole when its header arrives:
///   up to the limit;
/// - its read buffer's amortised growth: when it reserves (a read chunk,
///   or the rest of a small frame in the codec) it holds at most one
///   partial small frame, `P = 4 + min(limit, LARGE_FRAME)` bytes, and the
///   doubling of a `BytesMut` then stays under `4P + 2 * READ_CHUNK` (the
///   read's reservation) or `6P` (the codec's).
///
/// So the bound does not move with the lengths a frame's body claims, nor
/// with how much was written: only with the limit.
fn reader_bound(limit: usize) -> usize {
    limit.max(read_buffer_bound(limit)) + SLACK
}

fn read_buffer_bound(limit: usize) -> usize {
    let partial = FRAME_HEADER_LEN + limit.min(LARGE_FRAME);
    (4 * partial + 2 * READ_CHUNK).max(6 * partial)
}

/// The codec, fed into a buffer with room for the rest of any small frame
/// (so that its own reservation never grows the buffer: that growth is
/// the reader's, bounded above), allocates nothing larger than one frame's
/// body: a copied payload, a decoded string. Bodies are at most the limit
/// and at most the input.
fn codec_bound(limit: usize, input: &[u8]) -> usize {
    limit.min(input.len()) + SLACK
}

/// `decode_body` allocates nothing larger than the body.
fn body_bound(body: &[u8]) -> usize {
    body.len() + SLACK
}

/// What `bounded.rs` promises for user values: a string or byte buffer is
/// at most the input; a sequence or map preallocates at most one element
/// per input byte. So one allocation is at most the input's length times
/// the largest element footprint of the type (for a hash map, with
/// hashbrown's rounding of `8/7` of the capacity up to a power of two and
/// its control byte per bucket: under `3 * (size + 1)` per element).
fn value_bound(input: &[u8], per_byte: usize) -> usize {
    input.len() * per_byte + SLACK
}

const fn hash_map_cost<T>() -> usize {
    3 * (std::mem::size_of::<T>() + 1)
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

fn seed() -> u64 {
    match std::env::var("DROVER_FUZZ_SEED") {
        Err(_) => DEFAULT_SEED,
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("DROVER_FUZZ_SEED={text:?}: {e}"))
        }
    }
}

fn iterations() -> u64 {
    match std::env::var("DROVER_FUZZ_ITERATIONS") {
        Err(_) => DEFAULT_ITERATIONS,
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("DROVER_FUZZ_ITERATIONS={text:?}: {e}")),
    }
}

/// The seed and the count for `path`, printed so a run can be replayed.
fn config(path: &'static str, divisor: u64) -> (u64, u64) {
    let (seed, count) = (seed(), (iterations() / divisor).max(1));
    println!("fuzz {path}: DROVER_FUZZ_SEED={seed:#x}, {count} inputs");
    (seed, count)
}

/// One input of one path, for failure reports.
#[derive(Clone, Copy, Debug)]
struct Case {
    path: &'static str,
    seed: u64,
    iteration: u64,
}

impl Case {
    fn rng(&self) -> Rng {
        Rng::for_case(self.seed, self.path, self.iteration)
    }

    fn fail(&self, input: &[u8], what: std::fmt::Arguments<'_>) -> ! {
        panic!(
            "fuzz {}: {what}\n  replay: DROVER_FUZZ_SEED={:#x}, and a \
             DROVER_FUZZ_ITERATIONS that reaches iteration {}\n  input ({} bytes): {}",
            self.path,
            self.seed,
            self.iteration,
            input.len(),
            hex(input)
        )
    }

    /// Fails on a panic, or on an allocation over `bound`.
    fn check<R>(
        &self,
        input: &[u8],
        what: &str,
        (result, largest): (std::thread::Result<R>, usize),
        bound: usize,
    ) -> R {
        let result = result.unwrap_or_else(|panic| {
            self.fail(
                input,
                format_args!("{what} panicked: {}", panic_text(&*panic)),
            )
        });
        if largest > bound {
            self.fail(
                input,
                format_args!("{what} made one allocation of {largest} bytes (bound {bound})"),
            );
        }
        result
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 64 * 1024;
    let mut text = String::with_capacity(2 * bytes.len().min(SHOWN) + 64);
    for b in &bytes[..bytes.len().min(SHOWN)] {
        let _ = write!(text, "{b:02x}");
    }
    if bytes.len() > SHOWN {
        let _ = write!(text, "... ({} more bytes)", bytes.len() - SHOWN);
    }
    text
}

/// The largest allocation seen on a path, and the least room it left under
/// its bound, printed at the end (`--nocapture`).
#[derive(Debug, Default)]
struct Stats {
    largest: usize,
    least_room: Option<usize>,
}

impl Stats {
    fn saw(&mut self, largest: usize, bound: usize) {
        self.largest = self.largest.max(largest);
        let room = bound - largest.min(bound);
        self.least_room = Some(self.least_room.map_or(room, |r| r.min(room)));
    }

    fn print(&self, path: &str, started: Instant) {
        println!(
            "fuzz {path}: largest allocation {} bytes, least room under the bound {:?} bytes, {:?}",
            self.largest,
            self.least_room,
            started.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------
// The generator

/// splitmix64: small, fast, and the same everywhere.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn for_case(seed: u64, path: &str, iteration: u64) -> Rng {
        let mut state = seed;
        for b in path.bytes() {
            state = (state ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut rng = Rng(state ^ iteration.wrapping_mul(0xd1b5_4a32_d192_ed03));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// In `0..=max`, log-uniform: each power of two as likely as the next.
    fn size(&mut self, max: usize) -> usize {
        let bits = (usize::BITS - max.leading_zeros()) as usize;
        let top = self.below(bits + 1);
        let span = (1u128 << top).min(max as u128 + 1) as u64;
        (self.next() % span) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// A number from the edges of bincode's varint widths, or any.
    fn number(&mut self) -> u64 {
        const EDGES: [u64; 14] = [
            0,
            1,
            250,
            251,
            252,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            1 << 32,
            1 << 40,
            u64::MAX - 1,
            u64::MAX,
        ];
        match self.below(3) {
            0 => self.pick(&EDGES),
            1 => self.next() >> self.below(64),
            _ => self.next(),
        }
    }

    fn number32(&mut self) -> u32 {
        self.number() as u32
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_u64_pair(self.next(), self.next())
    }

    /// A string whose length crosses bincode's varint edges (251, 65 536)
    /// now and then, with multi-byte characters for mutations to cut.
    fn text(&mut self) -> String {
        const PIECES: [&str; 10] = ["a", "Z", "0", " ", "é", "€", "😀", "\0", "\n", "drover"];
        let len = match self.below(8) {
            0 => 0,
            1..=3 => self.below(20),
            4 => 245 + self.below(16),
            5 => self.below(1200),
            6 if self.one_in(16) => 65_530 + self.below(12),
            _ => self.below(300),
        };
        let mut text = String::with_capacity(len + 4);
        while text.len() < len {
            text.push_str(self.pick(&PIECES));
        }
        text
    }

    /// A payload (a message's tail, a value's bytes): empty, small, around
    /// the codec's 1 KiB copy threshold, and with `large` past the reader's
    /// large-frame threshold now and then.
    fn payload(&mut self, large: bool) -> Vec<u8> {
        let len = match self.below(8) {
            0 | 1 => 0,
            2 | 3 => self.below(64),
            4 => 1000 + self.below(50),
            5 => self.below(5000),
            6 if large && self.one_in(2) => LARGE_FRAME - 100 + self.below(200),
            6 if large => self.below(300_000),
            _ => self.below(300),
        };
        self.bytes(len)
    }

    fn remote_error(&mut self) -> RemoteError {
        RemoteError {
            kind: self.pick(&[
                RemoteErrorKind::Failed,
                RemoteErrorKind::Panicked,
                RemoteErrorKind::Dropped,
                RemoteErrorKind::Unsendable,
            ]),
            message: self.text(),
        }
    }

    fn result(&mut self, large: bool) -> Result<Bytes, RemoteError> {
        if self.one_in(2) {
            Ok(self.payload(large).into())
        } else {
            Err(self.remote_error())
        }
    }
}

/// A direction's messages, as the corpus builds them.
trait Corpus: Wire + Clone + PartialEq + Unpin {
    /// How many kinds of message the corpus has of this direction (each
    /// stream frame's kind counts). [`Corpus::variant`] has no wildcard, so
    /// a new variant does not compile until it has an index there and a
    /// sample in [`Corpus::random`].
    const VARIANTS: usize;

    fn variant(&self) -> usize;

    /// A random message of variant `which`, with fields across their
    /// ranges.
    fn random(rng: &mut Rng, which: usize, large: bool) -> Self;

    /// The descriptors this message declares.
    fn fds(&self) -> usize;
}

fn stream_variant(frame: &StreamFrame) -> usize {
    match frame {
        StreamFrame::Data { .. } => 0,
        StreamFrame::End { .. } => 1,
        StreamFrame::Credit { .. } => 2,
        StreamFrame::Abort { .. } => 3,
        StreamFrame::Stop { .. } => 4,
    }
}

const STREAM_VARIANTS: usize = 5;

fn random_stream_frame(rng: &mut Rng, which: usize, large: bool) -> StreamFrame {
    match which {
        0 => StreamFrame::Data {
            id: rng.uuid(),
            bytes: rng.payload(large).into(),
        },
        1 => StreamFrame::End { id: rng.uuid() },
        2 => StreamFrame::Credit {
            id: rng.uuid(),
            bytes: rng.number32(),
        },
        3 => StreamFrame::Abort {
            id: rng.uuid(),
            reason: rng.text(),
        },
        4 => StreamFrame::Stop { id: rng.uuid() },
        _ => unreachable!("stream frame {which} of {STREAM_VARIANTS}"),
    }
}

impl Corpus for ToWorker {
    const VARIANTS: usize = 9 + STREAM_VARIANTS;

    fn variant(&self) -> usize {
        match self {
            ToWorker::Welcome(_) => 0,
            ToWorker::Cancel { .. } => 1,
            ToWorker::Event { .. } => 2,
            ToWorker::Ping { .. } => 3,
            ToWorker::SoftKill => 4,
            ToWorker::HardKill => 5,
            ToWorker::QueryReply { .. } => 6,
            ToWorker::Release { .. } => 7,
            ToWorker::Request { .. } => 8,
            ToWorker::Stream(frame) => 9 + stream_variant(frame),
        }
    }

    fn random(rng: &mut Rng, which: usize, large: bool) -> Self {
        match which {
            0 => ToWorker::Welcome(Welcome {
                worker_id: rng.number(),
                index: rng.number32(),
                max_frame_length: rng.number32(),
                config: rng.payload(false).into(),
            }),
            1 => ToWorker::Cancel { id: rng.uuid() },
            2 => ToWorker::Event {
                name: rng.text(),
                payload: rng.payload(large).into(),
            },
            3 => ToWorker::Ping { seq: rng.number() },
            4 => ToWorker::SoftKill,
            5 => ToWorker::HardKill,
            6 => ToWorker::QueryReply {
                id: rng.number(),
                result: rng.result(large),
            },
            7 => ToWorker::Release {
                offset: rng.number(),
            },
            8 => ToWorker::Request {
                id: rng.uuid(),
                created_at: rng.number(),
                fds: if rng.one_in(8) {
                    rng.number() as u8
                } else {
                    rng.below(MAX_FDS_PER_FRAME + 1) as u8
                },
                stream: rng.one_in(2),
                payload: rng.payload(large).into(),
            },
            n if n < Self::VARIANTS => ToWorker::Stream(random_stream_frame(rng, n - 9, large)),
            _ => unreachable!("variant {which} of {}", Self::VARIANTS),
        }
    }

    fn fds(&self) -> usize {
        match self {
            ToWorker::Request { fds, .. } => usize::from(*fds),
            _ => 0,
        }
    }
}

impl Corpus for ToSupervisor {
    const VARIANTS: usize = 11 + STREAM_VARIANTS;

    fn variant(&self) -> usize {
        match self {
            ToSupervisor::Hello(_) => 0,
            ToSupervisor::Ready => 1,
            ToSupervisor::Busy => 2,
            ToSupervisor::Event { .. } => 3,
            ToSupervisor::Pong { .. } => 4,
            ToSupervisor::Status { .. } => 5,
            ToSupervisor::Query { .. } => 6,
            ToSupervisor::SocketClosed { .. } => 7,
            ToSupervisor::Stopping { .. } => 8,
            ToSupervisor::Release { .. } => 9,
            ToSupervisor::Response { .. } => 10,
            ToSupervisor::Stream(frame) => 11 + stream_variant(frame),
        }
    }

    fn random(rng: &mut Rng, which: usize, large: bool) -> Self {
        match which {
            0 => ToSupervisor::Hello(Hello {
                magic: if rng.one_in(2) { MAGIC } else { rng.number32() },
                protocol_version: if rng.one_in(2) {
                    PROTOCOL_VERSION
                } else {
                    rng.number() as u16
                },
                pid: rng.number32(),
            }),
            1 => ToSupervisor::Ready,
            2 => ToSupervisor::Busy,
            3 => ToSupervisor::Event {
                name: rng.text(),
                payload: rng.payload(large).into(),
            },
            4 => ToSupervisor::Pong { seq: rng.number() },
            5 => ToSupervisor::Status {
                message: rng.text(),
            },
            6 => ToSupervisor::Query {
                id: rng.number(),
                name: rng.text(),
                payload: rng.payload(large).into(),
            },
            7 => ToSupervisor::SocketClosed { id: rng.uuid() },
            8 => ToSupervisor::Stopping {
                signal: rng.number() as i32,
            },
            9 => ToSupervisor::Release {
                offset: rng.number(),
            },
            10 => ToSupervisor::Response {
                id: rng.uuid(),
                stream: rng.one_in(2),
                result: rng.result(large),
            },
            n if n < Self::VARIANTS => {
                ToSupervisor::Stream(random_stream_frame(rng, n - 11, large))
            }
            _ => unreachable!("variant {which} of {}", Self::VARIANTS),
        }
    }

    fn fds(&self) -> usize {
        0
    }
}

/// `message` as one frame: header and body.
fn frame_of<M: Wire + Clone + std::fmt::Debug>(message: &M) -> Vec<u8> {
    let mut frame = BytesMut::new();
    MessageCodec::<M>::new(u32::MAX as usize)
        .encode_message(message.clone(), &mut frame)
        .unwrap_or_else(|e| panic!("the corpus encodes: {e}: {message:?}"));
    frame.to_vec()
}

/// The body of a random message's frame.
fn random_body<M: Corpus>(rng: &mut Rng, large: bool) -> Vec<u8> {
    let which = rng.below(M::VARIANTS);
    let mut frame = frame_of(&M::random(rng, which, large));
    frame.drain(..FRAME_HEADER_LEN);
    frame
}

/// A bincode varint claiming a length: the 8-byte form most often, the
/// claim one of those that broke decoders (2^40, `u64::MAX`, ...) or one
/// just past what `context` holds.
fn length_claim(rng: &mut Rng, context: usize) -> Vec<u8> {
    let claims = [
        1u64 << 40,
        u64::MAX,
        u64::MAX - 1,
        u32::MAX as u64,
        i64::MAX as u64,
        context as u64 + 1,
        2 * context as u64 + 2,
        1 << 20,
        rng.next(),
    ];
    let claim = rng.pick(&claims);
    let mut out = Vec::with_capacity(17);
    match rng.below(8) {
        0..=3 => {
            out.push(253);
            out.extend_from_slice(&claim.to_le_bytes());
        }
        4 | 5 => {
            out.push(252);
            out.extend_from_slice(&(claim as u32).to_le_bytes());
        }
        6 => {
            out.push(251);
            out.extend_from_slice(&(claim as u16).to_le_bytes());
        }
        _ => {
            out.push(254);
            out.extend_from_slice(&u128::from(claim).to_le_bytes());
        }
    }
    out
}

/// Bytes that matter to bincode (varint markers), to UTF-8 (its edges)
/// and to the fixed layouts (kinds, sub-kinds and flags: 0 to 4).
const INTERESTING: [u8; 11] = [0, 1, 2, 3, 4, 0x7f, 0x80, 0xfb, 0xfc, 0xfd, 0xff];

/// One mutation of `data`; `donor` is another valid input to splice from.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, donor: &[u8]) {
    let len = data.len();
    let at = rng.below(len + 1);
    match rng.below(12) {
        0 if len > 0 => data[at.min(len - 1)] ^= 1 << rng.below(8),
        1 if len > 0 => data[at.min(len - 1)] = rng.pick(&INTERESTING),
        2 => {
            let claim = length_claim(rng, len - at);
            data.splice(at..at, claim);
        }
        3 => {
            let claim = length_claim(rng, len - at);
            let end = (at + claim.len()).min(len);
            data.splice(at..end, claim);
        }
        4 => data.truncate(at),
        5 => {
            let from = rng.below(donor.len() + 1);
            data.truncate(at);
            data.extend_from_slice(&donor[from..]);
        }
        6 if len > 0 => {
            let start = rng.below(len);
            let end = start + 1 + rng.size(len - start - 1);
            let chunk = data[start..end].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, chunk);
        }
        7 if len > 0 => {
            let end = at + rng.size(len - at);
            data.drain(at..end);
        }
        8 => {
            let garbage = rng.size(len.max(64));
            *data = rng.bytes(garbage);
        }
        9 if len > 0 => {
            let delta = 1 + rng.below(16) as u8;
            let byte = &mut data[at.min(len - 1)];
            *byte = if rng.one_in(2) {
                byte.wrapping_add(delta)
            } else {
                byte.wrapping_sub(delta)
            };
        }
        10 => {
            let noise = 1 + rng.size(32);
            let noise = rng.bytes(noise);
            data.splice(at..at, noise);
        }
        // Another kind over these fields, or (a rare message's) another
        // variant index, or (a stream frame's) another sub-kind.
        11 if len > 0 => {
            if len < 2 || rng.one_in(2) {
                data[0] = rng.below(4) as u8;
            } else {
                data[1] = rng.below(16) as u8;
            }
        }
        _ => data.push(rng.pick(&INTERESTING)),
    }
}

/// Mutates `data` one to four times, three times in four.
fn maybe_mutate(rng: &mut Rng, data: &mut Vec<u8>, donor: &[u8]) {
    if !rng.one_in(4) {
        for _ in 0..1 + rng.size(3) {
            mutate(rng, data, donor);
        }
    }
}

/// A stream of 1 to 16 frames under correct headers, their bodies all
/// valid, or one of them mutated (valid frames before it), or each one
/// mutated with a chance of one in four, or of three in four; then, one
/// time in three, the stream itself mutated: headers rewritten, cut,
/// spliced, chunks duplicated, bytes changed, a garbage frame put in.
fn random_stream<M: Corpus>(rng: &mut Rng, limit: usize, large: bool) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut starts = Vec::new();
    let frames = 1 + rng.below(16);
    let mode = rng.below(4);
    let victim = rng.below(frames);
    for i in 0..frames {
        let mut body = random_body::<M>(rng, large);
        let mutated = match mode {
            0 => false,
            1 => i == victim,
            2 => rng.one_in(4),
            _ => !rng.one_in(4),
        };
        if mutated {
            let donor = random_body::<M>(rng, false);
            for _ in 0..1 + rng.size(3) {
                mutate(rng, &mut body, &donor);
            }
        }
        starts.push(stream.len());
        stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
        stream.extend_from_slice(&body);
    }
    if rng.one_in(3) {
        for _ in 0..1 + rng.size(3) {
            let len = stream.len();
            match rng.below(6) {
                0 | 1 => {
                    let at = rng.pick(&starts);
                    if at + FRAME_HEADER_LEN <= len {
                        let header = &mut stream[at..at + FRAME_HEADER_LEN];
                        let current = u32::from_be_bytes(header.try_into().unwrap());
                        let lengths = [
                            rng.next() as u32,
                            limit as u32,
                            limit as u32 + 1,
                            0,
                            LARGE_FRAME as u32 - 1,
                            LARGE_FRAME as u32,
                            u32::MAX,
                            current.wrapping_add(1),
                            current.wrapping_sub(1),
                        ];
                        header.copy_from_slice(&rng.pick(&lengths).to_be_bytes());
                    }
                }
                2 => stream.truncate(rng.below(len + 1)),
                3 => {
                    let donor = random_stream::<M>(rng, limit, false);
                    let from = rng.below(donor.len() + 1);
                    stream.truncate(rng.below(len + 1));
                    stream.extend_from_slice(&donor[from..]);
                }
                4 => {
                    // A garbage frame, header and all.
                    let body = rng.size(256);
                    let body = rng.bytes(body);
                    let at = rng.pick(&starts).min(len);
                    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
                    frame.extend_from_slice(&body);
                    stream.splice(at..at, frame);
                }
                _ => {
                    let donor = stream.clone();
                    mutate(rng, &mut stream, &donor);
                }
            }
        }
    }
    stream
}

// ---------------------------------------------------------------------------
// Path 1: the codec over a buffered stream

/// Feeds `input` to a codec at `limit` in random pieces, decoding all it
/// can after each (as a reader would), then `decode_eof`; stops at the
/// first error. Returns the largest allocation of the decodes.
fn run_codec<M: Corpus>(case: &Case, rng: &mut Rng, input: &[u8], limit: usize) -> usize {
    let mut codec = MessageCodec::<M>::new(limit);
    // Room for the rest of any small frame, so the codec's own reservation
    // never grows the buffer: what is measured is what decoding allocates.
    let mut buf = BytesMut::with_capacity(input.len() + FRAME_HEADER_LEN + LARGE_FRAME);
    let whole = rng.one_in(4);
    let mut fed = 0;
    let mut largest = 0;
    loop {
        let piece = if whole {
            input.len()
        } else {
            1 + rng.size(input.len().saturating_sub(fed + 1))
        };
        let piece = piece.min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + piece]);
        fed += piece;
        let done = fed == input.len();
        let measured = meter::measure(|| loop {
            let next = if done {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match next {
                Ok(Some(message)) => drop(message),
                Ok(None) => return true,
                Err(_) => return false,
            }
        });
        largest = largest.max(measured.1);
        let more = case.check(input, "MessageCodec::decode", measured, usize::MAX);
        if !more || done {
            return largest;
        }
    }
}

#[test]
fn codec_decode_survives_mutated_streams() {
    let (seed, count) = config("codec", 1);
    let started = Instant::now();
    let mut stats: [Stats; LIMITS.len()] = Default::default();
    for iteration in 0..count {
        let case = Case {
            path: "codec",
            seed,
            iteration,
        };
        let mut rng = case.rng();
        let large = rng.one_in(8);
        let to_worker = rng.one_in(2);
        let input = if to_worker {
            random_stream::<ToWorker>(&mut rng, 1 << 20, large)
        } else {
            random_stream::<ToSupervisor>(&mut rng, 1 << 20, large)
        };
        let _named = meter::case(case.path, seed, iteration, &input);
        for (stats, limit) in stats.iter_mut().zip(LIMITS) {
            let largest = if to_worker {
                run_codec::<ToWorker>(&case, &mut rng, &input, limit)
            } else {
                run_codec::<ToSupervisor>(&case, &mut rng, &input, limit)
            };
            let bound = codec_bound(limit, &input);
            stats.saw(largest, bound);
            if largest > bound {
                case.fail(
                    &input,
                    format_args!(
                        "at limit {limit} one allocation of {largest} bytes (bound {bound})"
                    ),
                );
            }
        }
    }
    for (stats, limit) in stats.iter().zip(LIMITS) {
        stats.print(&format!("codec at limit {limit}"), started);
    }
}

// ---------------------------------------------------------------------------
// Path 2: one frame's body

#[test]
fn decode_body_survives_mutated_bodies() {
    let (seed, count) = config("body", 1);
    let started = Instant::now();
    let mut stats = Stats::default();
    fn one<M: Corpus>(case: &Case, rng: &mut Rng, stats: &mut Stats) {
        let codec = MessageCodec::<M>::default();
        let large = rng.one_in(16);
        let mut body = random_body::<M>(rng, large);
        let donor = random_body::<M>(rng, false);
        maybe_mutate(rng, &mut body, &donor);
        let _named = meter::case(case.path, case.seed, case.iteration, &body);
        let bytes = Bytes::from(body.clone());
        let measured = meter::measure(|| drop(codec.decode_body(bytes)));
        let bound = body_bound(&body);
        stats.saw(measured.1, bound);
        case.check(&body, "MessageCodec::decode_body", measured, bound);
    }
    for iteration in 0..count {
        let case = Case {
            path: "body",
            seed,
            iteration,
        };
        let mut rng = case.rng();
        if rng.one_in(2) {
            one::<ToWorker>(&case, &mut rng, &mut stats);
        } else {
            one::<ToSupervisor>(&case, &mut rng, &mut stats);
        }
    }
    stats.print("body", started);
}

// ---------------------------------------------------------------------------
// Path 3: user values

/// A user type with unit, newtype, tuple and struct variants.
#[derive(Debug, Serialize, Deserialize)]
enum Shape {
    Unit,
    New(String),
    Tuple(u8, Vec<u64>),
    Struct {
        a: Option<String>,
        b: HashMap<String, Vec<u8>>,
    },
    Nested(Vec<Vec<u32>>),
}

/// [`Shape`] as the corpus writes it: the same encoding, with a map whose
/// order does not change from one run to the next (a `HashMap`'s does).
#[derive(Serialize)]
enum ShapeOut {
    Unit,
    New(String),
    Tuple(u8, Vec<u64>),
    Struct {
        a: Option<String>,
        b: BTreeMap<String, Vec<u8>>,
    },
    Nested(Vec<Vec<u32>>),
}

/// A valid encoding of a random value of one of the shapes decoded below.
fn random_value(rng: &mut Rng) -> Vec<u8> {
    fn strings(rng: &mut Rng) -> Vec<String> {
        (0..rng.size(20)).map(|_| rng.text()).collect()
    }
    fn map(rng: &mut Rng) -> BTreeMap<String, Vec<u8>> {
        (0..rng.size(20))
            .map(|_| (rng.text(), rng.payload(false)))
            .collect()
    }
    fn numbers(rng: &mut Rng) -> Vec<u64> {
        (0..rng.size(100)).map(|_| rng.number()).collect()
    }
    let encoded = match rng.below(8) {
        0 => encode_value(&rng.text()),
        1 => encode_value(&rng.payload(false)),
        2 => encode_value(&strings(rng)),
        3 => encode_value(&(rng.number32(), rng.text())),
        4 => encode_value(&map(rng)),
        5 => encode_value(&rng.one_in(4).then(|| numbers(rng))),
        6 => {
            let shape = match rng.below(5) {
                0 => ShapeOut::Unit,
                1 => ShapeOut::New(rng.text()),
                2 => ShapeOut::Tuple(rng.number() as u8, numbers(rng)),
                3 => ShapeOut::Struct {
                    a: rng.one_in(2).then(|| rng.text()),
                    b: map(rng),
                },
                _ => ShapeOut::Nested(
                    (0..rng.size(10))
                        .map(|_| (0..rng.size(50)).map(|_| rng.number32()).collect())
                        .collect(),
                ),
            };
            encode_value(&shape)
        }
        _ => encode_value(&Bytes::from(rng.payload(false))),
    };
    encoded.expect("the corpus encodes")
}

/// Decodes `input` as a `T`, whose elements take at most `per_byte` bytes
/// of memory per input byte.
fn check_value<T: DeserializeOwned>(case: &Case, stats: &mut Stats, input: &[u8], per_byte: usize) {
    let measured = meter::measure(|| drop(decode_value::<T>(input)));
    let bound = value_bound(input, per_byte);
    stats.saw(measured.1, bound);
    case.check(input, std::any::type_name::<T>(), measured, bound);
}

#[test]
fn decode_value_survives_mutated_values() {
    const STRING: usize = std::mem::size_of::<String>();
    const MAP: usize = hash_map_cost::<(String, Vec<u8>)>();
    const SHAPE: usize = max(MAP, max(std::mem::size_of::<Vec<u32>>(), 8));
    let (seed, count) = config("value", 1);
    let started = Instant::now();
    let mut stats = Stats::default();
    for iteration in 0..count {
        let case = Case {
            path: "value",
            seed,
            iteration,
        };
        let mut rng = case.rng();
        let mut input = random_value(&mut rng);
        let donor = random_value(&mut rng);
        maybe_mutate(&mut rng, &mut input, &donor);
        let _named = meter::case(case.path, seed, iteration, &input);
        check_value::<String>(&case, &mut stats, &input, 1);
        check_value::<Vec<u8>>(&case, &mut stats, &input, 1);
        check_value::<Vec<String>>(&case, &mut stats, &input, STRING);
        check_value::<(u32, String)>(&case, &mut stats, &input, 1);
        check_value::<HashMap<String, Vec<u8>>>(&case, &mut stats, &input, MAP);
        check_value::<Option<Vec<u64>>>(&case, &mut stats, &input, 8);
        check_value::<Shape>(&case, &mut stats, &input, SHAPE);
        check_value::<Bytes>(&case, &mut stats, &input, 1);
    }
    stats.print("value", started);
}

// ---------------------------------------------------------------------------
// Path 4: the frame reader over a socket pair

/// Serialises the tests that open descriptors, so that each can count the
/// process's open descriptors before and after.
static DESCRIPTORS: Mutex<()> = Mutex::new(());

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn dev_null() -> OwnedFd {
    std::fs::File::open("/dev/null")
        .expect("/dev/null opens")
        .into()
}

/// How reading one stream went.
#[derive(Debug)]
struct ReadOutcome<M> {
    /// The largest allocation of any poll of the reader.
    largest: usize,
    /// Messages decoded, then the error or `None` that ended the stream.
    messages: Vec<M>,
    end: Option<ProtocolError>,
}

/// Writes `input` into a fresh socket pair in random pieces (one in four
/// with one to eight descriptors attached, but see [`large_bodies`]) while a [`FrameReader`] at
/// `limit` reads it to its end, taking the descriptors each request
/// declares, as both sides do. Every poll of the reader is measured.
async fn read_through_socket<M: Corpus>(
    case: &Case,
    rng: &mut Rng,
    input: &[u8],
    limit: usize,
) -> ReadOutcome<M> {
    let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
    let (read, _) = a.into_split();
    let (_, write) = b.into_split();
    let mut writer_rng = Rng(rng.next());
    let writer = async move {
        let mut write = write;
        let mut at = 0;
        while at < input.len() {
            let piece = (1 + writer_rng.size(65_535)).min(input.len() - at);
            let data = &input[at..at + piece];
            let sent = if writer_rng.one_in(4) {
                let fds: Vec<OwnedFd> = (0..1 + writer_rng.below(MAX_FDS_PER_FRAME))
                    .map(|_| dev_null())
                    .collect();
                send_with_fds(&write, data, &fds).await
            } else {
                write.write_all(data).await.map(|()| piece)
            };
            match sent {
                Ok(sent) => at += sent,
                // The reader stopped at an error and hung up.
                Err(_) => return,
            }
        }
        // Dropping the write half ends the stream.
    };
    let mut reader = FrameReader::new(FdReader::new(read), MessageCodec::<M>::new(limit));
    let reader_rng = &mut *rng;
    let reading = async move {
        let mut outcome = ReadOutcome {
            largest: 0,
            messages: Vec::new(),
            end: None,
        };
        let take = |reader: &mut FrameReader<M>, outcome: &mut ReadOutcome<M>, message: M| {
            drop(reader.get_mut().take_fds(message.fds()));
            outcome.messages.push(message);
        };
        loop {
            let next = std::future::poll_fn(|cx| {
                let measured = meter::measure(|| Pin::new(&mut reader).poll_next(cx));
                outcome.largest = outcome.largest.max(measured.1);
                case.check(input, "FrameReader::poll_next", measured, usize::MAX)
            })
            .await;
            match next {
                Some(Ok(message)) => {
                    take(&mut reader, &mut outcome, message);
                    // What one read brought, without another poll, as the
                    // connection tasks drain it.
                    while reader_rng.one_in(2) {
                        let measured = meter::measure(|| reader.next_buffered());
                        outcome.largest = outcome.largest.max(measured.1);
                        match case.check(input, "FrameReader::next_buffered", measured, usize::MAX)
                        {
                            Some(Ok(message)) => take(&mut reader, &mut outcome, message),
                            Some(Err(error)) => {
                                outcome.end = Some(error);
                                return outcome;
                            }
                            None => break,
                        }
                    }
                }
                Some(Err(error)) => {
                    outcome.end = Some(error);
                    return outcome;
                }
                None => return outcome,
            }
        }
        // The reader, and every descriptor it holds, drops here.
    };
    let both = async { tokio::join!(writer, reading).1 };
    match tokio::time::timeout(Duration::from_secs(30), both).await {
        Ok(outcome) => outcome,
        Err(_) => case.fail(input, format_args!("the reader did not end within 30 s")),
    }
}

#[test]
fn frame_reader_survives_mutated_streams_over_a_socket_pair() {
    const BATCH: u64 = 64;
    let _descriptors = DESCRIPTORS.lock().unwrap_or_else(|e| e.into_inner());
    let (seed, count) = config("socket", 4);
    let started = Instant::now();
    let mut stats: [Stats; LIMITS.len()] = Default::default();
    // A first runtime sets up what lives as long as the process (tokio's
    // signal driver keeps a socket pair for the whole process), so that
    // what is counted next is only what the connections leave.
    drop(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
    );
    let before = open_descriptors();
    for first in (0..count).step_by(BATCH as usize) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            for iteration in first..(first + BATCH).min(count) {
                let case = Case {
                    path: "socket",
                    seed,
                    iteration,
                };
                let mut rng = case.rng();
                let which = rng.below(LIMITS.len());
                let limit = LIMITS[which];
                let large = limit > LARGE_FRAME && rng.one_in(3);
                let to_worker = rng.one_in(2);
                let input = if to_worker {
                    random_stream::<ToWorker>(&mut rng, limit, large)
                } else {
                    random_stream::<ToSupervisor>(&mut rng, limit, large)
                };
                let _named = meter::case(case.path, seed, iteration, &input);
                let largest = if to_worker {
                    read_through_socket::<ToWorker>(&case, &mut rng, &input, limit)
                        .await
                        .largest
                } else {
                    read_through_socket::<ToSupervisor>(&case, &mut rng, &input, limit)
                        .await
                        .largest
                };
                let bound = reader_bound(limit);
                stats[which].saw(largest, bound);
                if largest > bound {
                    case.fail(
                        &input,
                        format_args!(
                            "at limit {limit} one allocation of {largest} bytes (bound {bound})"
                        ),
                    );
                }
            }
        });
    }
    let after = open_descriptors();
    for (stats, limit) in stats.iter().zip(LIMITS) {
        stats.print(&format!("socket at limit {limit}"), started);
    }
    println!("fuzz socket: {before} descriptors open before, {after} after");
    assert!(
        after <= before,
        "descriptors leaked: {before} open before the socket fuzzing, {after} after"
    );
}

// ---------------------------------------------------------------------------
// The corpus itself

fn corpus_round_trips<M: Corpus>() {
    let mut codec = MessageCodec::<M>::new(u32::MAX as usize);
    for which in 0..M::VARIANTS {
        for iteration in 0..50 {
            let mut rng = Rng::for_case(DEFAULT_SEED, "corpus", iteration);
            let message = M::random(&mut rng, which, iteration % 10 == 0);
            assert_eq!(message.variant(), which, "{message:?}");
            let mut frame = BytesMut::from(&frame_of(&message)[..]);
            assert_eq!(codec.decode(&mut frame).unwrap(), Some(message));
            assert!(frame.is_empty());
        }
    }
}

#[test]
fn the_corpus_has_every_message_variant_and_round_trips() {
    corpus_round_trips::<ToWorker>();
    corpus_round_trips::<ToSupervisor>();
}

#[test]
fn the_meter_counts_what_is_allocated_while_armed_only() {
    let outside = vec![1u8; 1 << 20];
    let (result, largest) = meter::measure(|| outside.len());
    assert_eq!(result.unwrap(), 1 << 20);
    assert!(largest < 1024, "{largest}");
    let (result, largest) = meter::measure(|| vec![0u8; 3 << 20].len());
    assert_eq!(result.unwrap(), 3 << 20);
    assert!(largest >= 3 << 20, "{largest}");
}

// ---------------------------------------------------------------------------
// The known attacks, one by one

/// Stands in the field a peer lies about; found in the encoding and its
/// length prefix replaced with the lie.
const MARKER: &str = "\u{1}lying-length\u{1}";

/// Every message with a length-prefixed string or byte buffer among its
/// fields (the rare messages, in bincode: the fixed layouts have no
/// length field to lie with), the marker in that field.
fn lying_targets_to_worker() -> Vec<(&'static str, ToWorker)> {
    vec![
        (
            "Event.name",
            ToWorker::Event {
                name: MARKER.into(),
                payload: Bytes::from_static(b"the payload"),
            },
        ),
        (
            "Welcome.config",
            ToWorker::Welcome(Welcome {
                worker_id: 1,
                index: 0,
                max_frame_length: 1 << 20,
                config: Bytes::from_static(MARKER.as_bytes()),
            }),
        ),
        (
            "QueryReply's RemoteError.message",
            ToWorker::QueryReply {
                id: 7,
                result: Err(RemoteError {
                    kind: RemoteErrorKind::Failed,
                    message: MARKER.into(),
                }),
            },
        ),
    ]
}

/// As [`lying_targets_to_worker`], the other way.
fn lying_targets_to_supervisor() -> Vec<(&'static str, ToSupervisor)> {
    vec![
        (
            "Status.message",
            ToSupervisor::Status {
                message: MARKER.into(),
            },
        ),
        (
            "Event.name",
            ToSupervisor::Event {
                name: MARKER.into(),
                payload: Bytes::from_static(b"the payload"),
            },
        ),
        (
            "Query.name",
            ToSupervisor::Query {
                id: 7,
                name: MARKER.into(),
                payload: Bytes::new(),
            },
        ),
    ]
}

/// The claims that aborted (2^40: the allocator fails) or panicked
/// (`u64::MAX`: capacity overflow) before `bounded.rs`, as varints.
fn lying_claims() -> Vec<(&'static str, Vec<u8>)> {
    let long = |claim: u64| {
        let mut varint = vec![253];
        varint.extend_from_slice(&claim.to_le_bytes());
        varint
    };
    let mut u32_max = vec![252];
    u32_max.extend_from_slice(&u32::MAX.to_le_bytes());
    vec![
        ("2^40", long(1 << 40)),
        ("u64::MAX", long(u64::MAX)),
        ("u64::MAX - 1", long(u64::MAX - 1)),
        ("u32::MAX", u32_max),
    ]
}

/// `message`'s frame with the marker's length prefix replaced by `claim`
/// (the marker's bytes stay: the claim is past them all the same), and
/// `padding` bytes after the body (to make it a frame the codec splits off
/// rather than decodes in place).
fn lying_frame<M: Corpus>(message: &M, claim: &[u8], padding: usize) -> Vec<u8> {
    let frame = frame_of(message);
    let body = &frame[FRAME_HEADER_LEN..];
    let mut needle = vec![MARKER.len() as u8];
    needle.extend_from_slice(MARKER.as_bytes());
    let at = body
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the marker is in the encoding");
    let mut lie = body[..at].to_vec();
    lie.extend_from_slice(claim);
    lie.extend_from_slice(&body[at + 1..]);
    lie.resize(lie.len() + padding, 0x5a);
    let mut frame = (lie.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&lie);
    frame
}

/// Valid frames to put before a lie: a hot one, a small one in place, one
/// the codec splits off.
fn valid_to_worker() -> Vec<ToWorker> {
    vec![
        ToWorker::Ping { seq: 1 },
        ToWorker::Request {
            id: Uuid::from_u128(9),
            created_at: 5,
            fds: 0,
            stream: false,
            payload: Bytes::from_static(b"request"),
        },
        ToWorker::Stream(StreamFrame::Data {
            id: Uuid::from_u128(9),
            bytes: Bytes::from(vec![3u8; 3000]),
        }),
    ]
}

/// As [`valid_to_worker`], the other way.
fn valid_to_supervisor() -> Vec<ToSupervisor> {
    vec![
        ToSupervisor::Pong { seq: 1 },
        ToSupervisor::Response {
            id: Uuid::from_u128(9),
            stream: false,
            result: Ok(Bytes::from_static(b"answer")),
        },
        ToSupervisor::Stream(StreamFrame::Data {
            id: Uuid::from_u128(9),
            bytes: Bytes::from(vec![3u8; 3000]),
        }),
    ]
}

#[test]
fn lying_lengths_fail_cleanly_first_and_after_valid_frames() {
    lies_in_memory(valid_to_worker(), lying_targets_to_worker());
    lies_in_memory(valid_to_supervisor(), lying_targets_to_supervisor());
}

fn lies_in_memory<M: Corpus>(valid: Vec<M>, targets: Vec<(&'static str, M)>) {
    let case = Case {
        path: "lies",
        seed: 0,
        iteration: 0,
    };
    let mut before = Vec::new();
    for message in &valid {
        before.extend_from_slice(&frame_of(message));
    }
    for (field, message) in targets {
        for (claim_name, claim) in lying_claims() {
            for padding in [0, 2000] {
                let lie = lying_frame(&message, &claim, padding);
                let what = format!("{field} claiming {claim_name} (padding {padding})");
                // decode_body, on the body alone.
                let body = &lie[FRAME_HEADER_LEN..];
                let codec = MessageCodec::<M>::default();
                let measured = meter::measure(|| codec.decode_body(Bytes::copy_from_slice(body)));
                let decoded = case.check(body, &what, measured, body_bound(body));
                assert!(
                    matches!(decoded, Err(ProtocolError::Decode { .. })),
                    "{what}: {decoded:?}"
                );
                // The codec, as the first frame and after valid ones.
                for prefix in [&[][..], &before[..]] {
                    let mut input = prefix.to_vec();
                    input.extend_from_slice(&lie);
                    let mut codec = MessageCodec::<M>::new(DEFAULT_MAX_FRAME_LENGTH);
                    let mut buf = BytesMut::from(&input[..]);
                    let measured = meter::measure(|| {
                        let mut got = Vec::new();
                        loop {
                            match codec.decode_eof(&mut buf) {
                                Ok(Some(message)) => got.push(message),
                                Ok(None) => return (got, None),
                                Err(e) => return (got, Some(e)),
                            }
                        }
                    });
                    let bound = lie.len().max(prefix.len()) + SLACK;
                    let (got, end) = case.check(&input, &what, measured, bound);
                    let expected = if prefix.is_empty() {
                        &[][..]
                    } else {
                        &valid[..]
                    };
                    assert_eq!(got, expected, "{what}");
                    assert!(
                        matches!(end, Some(ProtocolError::Decode { .. })),
                        "{what}: {end:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn lying_lengths_fail_cleanly_over_a_socket_pair() {
    let _descriptors = DESCRIPTORS.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut rng = Rng::for_case(DEFAULT_SEED, "lies over a socket", 0);
        lies_over_a_socket(
            &mut rng,
            valid_to_worker(),
            lying_targets_to_worker(),
            ToWorker::HardKill,
        )
        .await;
        lies_over_a_socket(
            &mut rng,
            valid_to_supervisor(),
            lying_targets_to_supervisor(),
            ToSupervisor::Ready,
        )
        .await;
    });
}

async fn lies_over_a_socket<M: Corpus>(
    rng: &mut Rng,
    valid: Vec<M>,
    targets: Vec<(&'static str, M)>,
    after: M,
) {
    let case = Case {
        path: "lies over a socket",
        seed: 0,
        iteration: 0,
    };
    {
        for (field, message) in targets {
            for (claim_name, claim) in lying_claims().into_iter().take(2) {
                for after_valid in [false, true] {
                    let mut input = Vec::new();
                    if after_valid {
                        for message in &valid {
                            input.extend_from_slice(&frame_of(message));
                        }
                    }
                    input.extend_from_slice(&lying_frame(&message, &claim, 0));
                    // Never read: the connection is over at the lie.
                    input.extend_from_slice(&frame_of(&after));
                    let limit = DEFAULT_MAX_FRAME_LENGTH;
                    let outcome = read_through_socket::<M>(&case, rng, &input, limit).await;
                    let what = format!("{field} claiming {claim_name}");
                    let expected = if after_valid { &valid[..] } else { &[][..] };
                    assert_eq!(outcome.messages, expected, "{what}");
                    assert!(
                        matches!(outcome.end, Some(ProtocolError::Decode { .. })),
                        "{what}: {:?}",
                        outcome.end
                    );
                    // No frame here is large: the read buffer is all the
                    // reader allocates, whatever the limit.
                    let bound = read_buffer_bound(limit) + SLACK;
                    assert!(
                        outcome.largest <= bound,
                        "{what}: {} > {bound}",
                        outcome.largest
                    );
                }
            }
        }
    }
}

#[test]
fn lying_lengths_in_user_values_fail_cleanly() {
    let case = Case {
        path: "value lies",
        seed: 0,
        iteration: 0,
    };
    let mut stats = Stats::default();
    for (_, claim) in lying_claims() {
        for valid_prefix in [&[][..], &[3u8, b'a', b'b', b'c'][..]] {
            // A bare claim, after a valid first element, inside an enum
            // variant and an option.
            let mut inputs = Vec::new();
            let mut bare = valid_prefix.to_vec();
            bare.extend_from_slice(&claim);
            bare.extend_from_slice(b"abc");
            inputs.push(bare.clone());
            let mut tagged = vec![1];
            tagged.extend_from_slice(&bare);
            inputs.push(tagged);
            for input in &inputs {
                check_value::<String>(&case, &mut stats, input, 1);
                check_value::<Vec<u8>>(&case, &mut stats, input, 1);
                check_value::<Bytes>(&case, &mut stats, input, 1);
                check_value::<Vec<String>>(&case, &mut stats, input, std::mem::size_of::<String>());
                check_value::<Option<Vec<u64>>>(&case, &mut stats, input, 8);
                check_value::<HashMap<String, Vec<u8>>>(
                    &case,
                    &mut stats,
                    input,
                    hash_map_cost::<(String, Vec<u8>)>(),
                );
                check_value::<Shape>(
                    &case,
                    &mut stats,
                    input,
                    hash_map_cost::<(String, Vec<u8>)>(),
                );
                assert!(decode_value::<String>(input).is_err());
                assert!(decode_value::<Vec<String>>(input).is_err());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A bug the socket path found

/// A `StreamData` frame of 150 000 bytes written in three pieces (the
/// header and 70 000 bytes, 1 byte, the rest), the middle one with a
/// descriptor attached if `with_fd`, all before the reader runs; then the
/// reader, with the writer's half kept open, for five seconds.
///
/// The reader's first read takes 64 KiB; the rest of the body it reads the
/// fast way (a plain `read`, `FdReader`'s bulk path). That read meets the
/// segment that carries the descriptor: the kernel closes the descriptor
/// (a plain read has nowhere to put it) and ends the read right after that
/// segment, with the rest of the frame still queued; tokio takes a short
/// read for a drained socket and clears the read readiness, so nothing
/// wakes the reader until the peer writes again.
fn large_body_with_a_write_inside(with_fd: bool) -> Option<ToSupervisor> {
    let _descriptors = DESCRIPTORS.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
        let (read, _) = a.into_split();
        let (_, mut write) = b.into_split();
        let message = ToSupervisor::Stream(StreamFrame::Data {
            id: Uuid::from_u128(1),
            bytes: Bytes::from(vec![7u8; 150_000]),
        });
        let frame = frame_of(&message);
        let mut reader = FrameReader::new(
            FdReader::new(read),
            MessageCodec::<ToSupervisor>::new(1 << 20),
        );
        let writer = async {
            write.write_all(&frame[..70_000]).await.unwrap();
            if with_fd {
                send_with_fds(&write, &frame[70_000..70_001], &[dev_null()])
                    .await
                    .unwrap();
            } else {
                write.write_all(&frame[70_000..70_001]).await.unwrap();
            }
            write.write_all(&frame[70_001..]).await.unwrap();
            // The peer stays, silent.
            std::future::pending::<()>().await
        };
        let reading = tokio::time::timeout(Duration::from_secs(5), async {
            futures::StreamExt::next(&mut reader).await
        });
        tokio::select! {
            biased;
            () = writer => unreachable!(),
            read = reading => {
                let read = read.ok()?;
                Some(read.expect("a message").expect("the frame decodes"))
            }
        }
    })
}

#[test]
fn a_large_body_written_in_pieces_arrives() {
    assert!(large_body_with_a_write_inside(false).is_some());
}

/// Found by the socket path (`DROVER_FUZZ_SEED=0x64726f7665722121`,
/// iteration 36): descriptors in the middle of a large body ended a plain
/// read early, and the reader, told the socket was drained, waited for a
/// peer that had nothing more to send. Bulk reads now keep the socket's
/// readiness until the kernel says it is empty.
#[test]
fn descriptors_inside_a_large_body_do_not_stall_the_reader() {
    assert!(
        large_body_with_a_write_inside(true).is_some(),
        "the reader stalled with the rest of the frame in the socket"
    );
}
