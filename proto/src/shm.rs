//! Shared memory for large payloads: two arenas per worker, mapped once by
//! both processes, so that a payload of [`SHARED_PAYLOAD_MIN`] bytes or more
//! crosses without the socket: a request with one copy (into the arena; the
//! worker reads it where it lies), an answer with two (into the arena, and
//! out of it by the supervisor before anything reads it; one, out, for an
//! answer written in place or made of the request's own bytes). The connection's
//! writer makes the copy in as it writes the frame (`transport`), so no
//! sender holds a lock meanwhile.
//!
//! ```text
//!              requests arena                      answers arena
//!   supervisor  writes (allocates its slots)        reads: copies out, then frees
//!   worker      reads in place (mapping read-only)  writes (allocates its slots)
//! ```
//!
//! Both are memfds the supervisor creates for each worker process when it
//! starts it, sealed against shrinking and growing (so neither side can
//! make the other's mapping fault past the end of its file); the requests
//! arena is also sealed against every new writable mapping
//! (`F_SEAL_FUTURE_WRITE`), so the worker can only ever map it read-only.
//!
//! A payload in an arena travels as a descriptor in its frame's tail,
//! offset then length (two `u64` LE, 16 bytes), with the message's
//! `FLAG_SHARED` bit set. Who allocated a slot frees it when the peer
//! says `Release` with its offset: the worker once the last `Bytes` of a
//! request's payload is dropped, the supervisor as soon as it has copied
//! an answer out. A payload that does not fit (the arena is full, or the
//! payload is larger than it) goes through the socket as always.
//!
//! An answer that is a request's own bytes, or a slice of them (an echo, a
//! filter that passes its input on, a part cut out of it), is not copied
//! by the worker: it sends the descriptor of where those bytes already lie
//! in the requests arena, its offset marked with [`OWN_ARENA`], and the
//! supervisor copies them out of there, memory that only it writes (the
//! worker's mapping is read-only by the seal) and that it does not write
//! again while it copies (the slot is held meanwhile). They are copied out
//! rather than lent to the caller: a kept answer would keep the whole
//! arena, every page its payloads ever touched, after its worker is gone,
//! and the seal that keeps the worker from writing it also keeps those
//! pages from being given back.
//!
//! # What a hostile worker can do with it
//!
//! - **Write into the answers arena while the supervisor copies from it.**
//!   The supervisor never makes a reference into that memory: it copies
//!   the range out (a byte copy through a raw pointer) into a buffer of
//!   its own before anything looks at it. What the worker changes is at
//!   worst a corrupt answer, its own.
//! - **Name a range outside the arena, or larger than the frame limit.**
//!   A [`ProtocolError::Decode`](crate::ProtocolError) naming it; the
//!   connection ends.
//! - **Make the supervisor copy a lot for a 16-byte frame.** Each copy is
//!   bounded by the payload limit, and costs the supervisor what reading
//!   the same payload from the socket would.
//! - **Release a request slot early, twice, or one never handed out.**
//!   Early: the supervisor may put a later request of the same worker
//!   there, which only that worker reads. A slot that is not live is a
//!   protocol error.
//! - **Never release.** Its arena fills up and its requests go through
//!   the socket again.
//! - **Point at pages it never wrote, or punched out (`fallocate`).** The
//!   supervisor's copy reads zeros, and the kernel may charge the pages
//!   the read brings in to the supervisor's memory cgroup: at most the
//!   answers arena's size for each worker, as a bound on what any worker
//!   can make the supervisor hold.
//! - **Shrink, grow or write the requests arena, or map it writable.**
//!   The seals refuse it.
//! - **Answer with a range of the requests arena that is not a request's
//!   payload it holds** (outside every slot, across two, in a slot it
//!   released, or in one not yet sent to it). A protocol error naming it:
//!   what the supervisor copies out of its own arena is always bytes it
//!   wrote and sent to this worker.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::ProtocolError;
use crate::reader::{BufferPool, Pooled};

mod slots;
use slots::Slots;

/// Payloads at least this large travel through the arenas (when they
/// fit); smaller ones are cheaper through the socket, where they need no
/// `Release` afterwards. Measured with the echo benchmark (C = 16, 2
/// workers): through the arenas 16 KiB payloads ran at 0.9 of the
/// socket's rate, 20 KiB ones at 1.4 to 1.9 times it, 32 KiB at 2.5 to 4.
pub const SHARED_PAYLOAD_MIN: usize = 20 * 1024;

/// Slots are whole pages: a payload never shares a page with another.
const PAGE: usize = 4096;

/// Bytes of a payload's descriptor in its frame: offset and length.
pub const DESCRIPTOR_LEN: usize = 16;

/// Set in a descriptor's offset: the range lies in the arena the receiver
/// writes (its requests arena), not the sender's: a worker's answer made
/// of a request's own bytes. Offsets are far below it.
pub const OWN_ARENA: u64 = 1 << 63;

/// Faults in every page of a fresh buffer's capacity in one system call
/// (`MADV_POPULATE_WRITE`), rather than one page fault per page as the
/// copy into it touches them: for a 64 MiB payload the copy then runs at
/// the speed of a warm one, and only the kernel's zeroing of the pages
/// remains. Best effort: a kernel without it (before 5.14) faults as usual.
pub(crate) fn populate(buffer: &mut Vec<u8>) {
    let spare = buffer.spare_capacity_mut();
    if spare.len() < POPULATE_MIN {
        return;
    }
    // The advice works on whole pages: the ones inside the spare capacity.
    let start = spare.as_mut_ptr() as usize;
    let first = start.next_multiple_of(PAGE);
    let end = (start + spare.len()) / PAGE * PAGE;
    if end <= first {
        return;
    }
    // SAFETY: the range is whole pages inside memory this Vec owns and
    // nothing else refers to (its spare capacity); populating writes
    // nothing a Rust reference could see, it only makes the pages present.
    let _ = unsafe {
        rustix::mm::madvise(
            first as *mut std::ffi::c_void,
            end - first,
            rustix::mm::Advice::LinuxPopulateWrite,
        )
    };
}

/// Buffers smaller than this are left to fault in as they are written.
const POPULATE_MIN: usize = 1 << 20;

/// The seals of the requests arena.
fn request_seals() -> SealFlags {
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::FUTURE_WRITE | SealFlags::SEAL
}

/// The seals of the answers arena.
fn answer_seals() -> SealFlags {
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
}

/// One worker's two arenas, as one side holds them: the one it writes
/// payloads into and the one its peer does.
#[derive(Debug)]
pub struct Arenas {
    pub(crate) outbound: Arc<Outbound>,
    /// Shared by the reader, which resolves the peer's descriptors, and on
    /// the worker's side by the writer, which recognises payloads lent from
    /// it ([`lent_descriptor`]): held by both, so that its addresses are
    /// never reused by another mapping while either compares against them.
    pub(crate) inbound: Arc<MmapRaw>,
    /// The worker's view of the requests arena, which only the trusted
    /// supervisor writes: its payloads are lent in place. The supervisor
    /// copies the worker's out.
    pub(crate) lend: bool,
}

/// The descriptors of a new pair of arenas, for the worker process.
#[derive(Debug)]
pub struct ArenaFds {
    /// The requests arena (sealed read-only for every new mapping).
    pub requests: OwnedFd,
    /// The answers arena.
    pub answers: OwnedFd,
}

impl Arenas {
    /// The supervisor's side of two new arenas of `size` bytes each
    /// (rounded up to whole pages), and the descriptors to give the worker.
    ///
    /// # Errors
    ///
    /// The system call that failed: `memfd_create`, `ftruncate`, `mmap` or
    /// `fcntl(F_ADD_SEALS)`.
    pub fn create(size: usize) -> io::Result<(Arenas, ArenaFds)> {
        let size = size.div_ceil(PAGE) * PAGE;
        let requests = memfd("drover-requests", size)?;
        // Mapped writable before the seal that forbids new writable
        // mappings: this one stays the only one.
        let outbound = MmapOptions::new().len(size).map_raw(requests.as_raw_fd())?;
        rustix::fs::fcntl_add_seals(&requests, request_seals())?;
        let answers = memfd("drover-answers", size)?;
        rustix::fs::fcntl_add_seals(&answers, answer_seals())?;
        let inbound = Arc::new(
            MmapOptions::new()
                .len(size)
                .map_raw_read_only(answers.as_raw_fd())?,
        );
        let arenas = Arenas {
            outbound: Arc::new(Outbound::new(outbound)),
            inbound,
            lend: false,
        };
        Ok((arenas, ArenaFds { requests, answers }))
    }

    /// The worker's side of the arenas the supervisor made, `size` bytes
    /// each as it says.
    ///
    /// # Errors
    ///
    /// `InvalidData` if either is not that size or lacks its seals (it is
    /// not what a drover supervisor hands out), or the failed system call.
    pub fn adopt(fds: &ArenaFds, size: usize) -> io::Result<Arenas> {
        let size = size.div_ceil(PAGE) * PAGE;
        for (fd, what, seals) in [
            (&fds.requests, "requests", request_seals()),
            (&fds.answers, "answers", answer_seals()),
        ] {
            let len = rustix::fs::fstat(fd)?.st_size;
            let has = rustix::fs::fcntl_get_seals(fd)?;
            if usize::try_from(len).ok() != Some(size) || !has.contains(seals) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the {what} arena is {len} bytes with seals {has:?}, \
                         where {size} bytes with {seals:?} were announced"
                    ),
                ));
            }
        }
        let inbound = Arc::new(
            MmapOptions::new()
                .len(size)
                .map_raw_read_only(fds.requests.as_raw_fd())?,
        );
        let outbound = MmapOptions::new()
            .len(size)
            .map_raw(fds.answers.as_raw_fd())?;
        Ok(Arenas {
            outbound: Arc::new(Outbound::new(outbound)),
            inbound,
            lend: true,
        })
    }
}

fn memfd(name: &str, size: usize) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, size as u64)?;
    Ok(fd)
}

/// The arena this side writes payloads into, and its slots.
#[derive(Debug)]
pub(crate) struct Outbound {
    map: MmapRaw,
    slots: Mutex<Slots>,
    /// Payloads placed so far.
    placed: std::sync::atomic::AtomicU64,
    /// Told whenever a slot is freed.
    pub(crate) freed: tokio::sync::Notify,
}

impl Outbound {
    fn new(map: MmapRaw) -> Outbound {
        let slots = Slots::new(map.len());
        Outbound {
            map,
            slots: Mutex::new(slots),
            placed: std::sync::atomic::AtomicU64::new(0),
            freed: tokio::sync::Notify::new(),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        // Plain bookkeeping: a panic elsewhere leaves it usable.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies `payload` into a free slot; its descriptor, or `None` if no
    /// slot is large enough (the payload then goes through the socket).
    pub(crate) fn place(&self, payload: &[u8]) -> Option<[u8; DESCRIPTOR_LEN]> {
        let offset = {
            let mut slots = self.slots();
            let offset = slots.take(payload.len())?;
            // Being written: neither the peer's to release nor to name in
            // an answer (`view`) until the copy is done.
            slots.reserved.insert(offset);
            offset
        };
        // SAFETY: `take` hands out ranges inside the mapping only, each to
        // one caller until it is freed, so nothing else in this process
        // writes there meanwhile, nor reads it (`view` refuses a reserved
        // slot); the peer's mapping of it is read-only (the requests
        // arena's seal) or, for the answers arena, the peer only reads it.
        // The source is a slice we borrow.
        unsafe {
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                payload.len(),
            );
        }
        self.slots().reserved.remove(&offset);
        self.placed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(descriptor(offset, payload.len()))
    }

    /// The peer is done with the slot at `offset`.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadRelease`] if no slot handed out starts there.
    pub(crate) fn free(&self, offset: u64) -> Result<(), ProtocolError> {
        let live = usize::try_from(offset).ok().and_then(|o| {
            let mut slots = self.slots();
            // Not sent yet: being written here, not the peer's to release.
            if slots.reserved.contains(&o) {
                return None;
            }
            slots.release(o)
        });
        if live.is_some() {
            self.freed.notify_waiters();
        }
        live.ok_or(ProtocolError::BadRelease {
            offset,
            reason: "no payload placed there is held",
        })
    }

    /// Bytes of the arena in slots the peer has not released yet (whole
    /// pages; a slot released while an answer is copied out of it is not
    /// counted).
    pub(crate) fn in_use(&self) -> usize {
        let slots = self.slots();
        slots.held - slots.lingering
    }

    /// The `len` bytes at `offset` of this arena, which the peer names as
    /// its answer, held (their slot neither freed nor taken again) while
    /// the returned guard lives.
    ///
    /// # Errors
    ///
    /// Why the range is not one the peer may name: it lies in no payload
    /// this side placed and the peer holds (outside every slot, across
    /// two, in one being written, or in one it released).
    pub(crate) fn view(self: &Arc<Self>, offset: usize, len: usize) -> Result<View, &'static str> {
        let mut slots = self.slots();
        let end = offset.checked_add(len).ok_or("passes the end of it")?;
        let (&slot, _) = slots
            .live
            .range(..=offset)
            .next_back()
            .filter(|&(&start, &room)| end <= start + room)
            .ok_or("lies in no payload sent to this worker")?;
        if slots.reserved.contains(&slot) {
            return Err("lies in a payload not sent yet");
        }
        if slots.released.contains(&slot) {
            return Err("lies in a payload the worker released");
        }
        *slots.views.entry(slot).or_insert(0) += 1;
        Ok(View {
            arena: self.clone(),
            slot,
            offset,
            len,
        })
    }

    /// A slot of at least `capacity` bytes, to be written in place; `None`
    /// if none is free.
    pub(crate) fn reserve(self: &Arc<Self>, capacity: usize) -> Option<SharedSlot> {
        if capacity == 0 || capacity > self.map.len() {
            return None;
        }
        let offset = {
            let mut slots = self.slots();
            let offset = slots.take(capacity)?;
            slots.reserved.insert(offset);
            offset
        };
        Some(SharedSlot {
            reserved: Reserved {
                arena: self.clone(),
                offset,
            },
            capacity,
            len: 0,
        })
    }

    /// If `payload` is a [`SharedSlot`]'s bytes (whole, as
    /// [`SharedSlot::into_bytes`] made them), the descriptor that sends it
    /// as it lies: the slot is the peer's to release from now on.
    pub(crate) fn sent_in_place(&self, payload: &[u8]) -> Option<[u8; DESCRIPTOR_LEN]> {
        let mut slots = self.slots();
        let offset = self.reserved_at(&slots, payload)?;
        slots.reserved.remove(&offset);
        Some(descriptor(offset, payload.len()))
    }

    /// Whether `payload` is a [`SharedSlot`]'s bytes not yet sent.
    pub(crate) fn is_in_place(&self, payload: &[u8]) -> bool {
        self.reserved_at(&self.slots(), payload).is_some()
    }

    /// The offset of the reserved slot `payload` starts, if it lies in this
    /// arena at the start of one and within it.
    fn reserved_at(&self, slots: &Slots, payload: &[u8]) -> Option<usize> {
        let at = (payload.as_ptr() as usize).checked_sub(self.map.as_ptr() as usize)?;
        let within = slots
            .live
            .get(&at)
            .is_some_and(|&room| payload.len() <= room);
        (within && slots.reserved.contains(&at)).then_some(at)
    }

    /// Whether `bytes` lie in this arena's mapping.
    #[cfg(test)]
    pub(crate) fn lies_in(&self, bytes: &[u8]) -> bool {
        let start = self.map.as_ptr() as usize;
        (start..start + self.map.len()).contains(&(bytes.as_ptr() as usize))
    }

    /// How many payloads have been placed.
    #[cfg(test)]
    pub(crate) fn placed(&self) -> u64 {
        self.placed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The descriptor of `len` bytes at `offset`: both as u64, little-endian.
fn descriptor(offset: usize, len: usize) -> [u8; DESCRIPTOR_LEN] {
    let mut descriptor = [0; DESCRIPTOR_LEN];
    descriptor[..8].copy_from_slice(&(offset as u64).to_le_bytes());
    descriptor[8..].copy_from_slice(&(len as u64).to_le_bytes());
    descriptor
}

/// If `payload` lies in `lent` (the peer's arena as mapped here, whose
/// payloads are lent in place: the worker's view of the requests arena),
/// the descriptor that names it there, marked [`OWN_ARENA`].
pub(crate) fn lent_descriptor(lent: &MmapRaw, payload: &[u8]) -> Option<[u8; DESCRIPTOR_LEN]> {
    let (start, len) = (lent.as_ptr() as usize, lent.len());
    let offset = offset_within(start, len, payload.as_ptr() as usize, payload.len())?;
    Some(own_descriptor(offset, payload.len()))
}

/// Where `n` bytes at address `at` lie in the `len` bytes from `start`,
/// if they lie wholly inside them.
fn offset_within(start: usize, len: usize, at: usize, n: usize) -> Option<usize> {
    let offset = at.checked_sub(start)?;
    (offset < len && n <= len - offset).then_some(offset)
}

/// The descriptor of `len` bytes at `offset` of the receiver's own arena.
pub(crate) fn own_descriptor(offset: usize, len: usize) -> [u8; DESCRIPTOR_LEN] {
    let mut descriptor = descriptor(offset, len);
    descriptor[..8].copy_from_slice(&(offset as u64 | OWN_ARENA).to_le_bytes());
    descriptor
}

/// A slot of this side's arena, reserved for a payload written straight
/// into it (a worker's `Request::answer_buffer`): sent, it crosses with no
/// copy on this side; dropped unsent, the slot is free again.
#[derive(Debug)]
pub struct SharedSlot {
    reserved: Reserved,
    capacity: usize,
    len: usize,
}

impl SharedSlot {
    /// Bytes it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data`, if it fits; `false` (and nothing written) if not.
    #[inline]
    pub fn push(&mut self, data: &[u8]) -> bool {
        if data.len() > self.capacity - self.len {
            return false;
        }
        let arena = &self.reserved.arena;
        // SAFETY: the slot (`capacity` bytes from `offset`, inside the
        // mapping: `Slots::take` hands out only such ranges) is reserved
        // for this value alone until it is sent or dropped, and the peer
        // only ever reads this arena; `data` is a slice we borrow, not in
        // the slot (the slot is only reachable through `&mut self`).
        unsafe {
            let at = arena.map.as_mut_ptr().add(self.reserved.offset + self.len);
            if data.len() <= 16 {
                // A serializer's few bytes: a call to memcpy would cost
                // more than the copy.
                for (i, &byte) in data.iter().enumerate() {
                    at.add(i).write(byte);
                }
            } else {
                std::ptr::copy_nonoverlapping(data.as_ptr(), at, data.len());
            }
        }
        self.len += data.len();
        true
    }

    /// What is written so far.
    pub fn as_slice(&self) -> &[u8] {
        self.reserved.slice(self.len)
    }

    /// The bytes written, as a payload: queued on this side's outbox, they
    /// are sent where they lie.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(Written {
            reserved: self.reserved,
            len: self.len,
        })
    }
}

/// A reserved slot; frees it when dropped, unless it was sent.
#[derive(Debug)]
struct Reserved {
    arena: Arc<Outbound>,
    offset: usize,
}

impl Reserved {
    fn slice(&self, len: usize) -> &[u8] {
        // SAFETY: `len` is at most the slot's capacity, inside the mapping,
        // which `arena` keeps alive; nothing writes the slot while this
        // borrow lasts (writes need `&mut SharedSlot`, and once it is
        // `Written` nothing writes it at all; the peer only reads).
        unsafe { std::slice::from_raw_parts(self.arena.map.as_ptr().add(self.offset), len) }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut slots = self.arena.slots();
        if slots.reserved.remove(&self.offset) {
            slots.free(self.offset);
            drop(slots);
            self.arena.freed.notify_waiters();
        }
    }
}

/// A [`SharedSlot`]'s bytes once written, the owner of their `Bytes`.
struct Written {
    reserved: Reserved,
    len: usize,
}

impl AsRef<[u8]> for Written {
    fn as_ref(&self) -> &[u8] {
        self.reserved.slice(self.len)
    }
}

/// Bytes of a payload this side placed, named by the peer as its answer,
/// held (never freed, so never written again) while they are copied out.
#[derive(Debug)]
pub(crate) struct View {
    arena: Arc<Outbound>,
    slot: usize,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `view` checked the range lies inside a live slot, inside
        // the mapping that `arena` keeps alive. Nothing writes it while
        // this exists: this side writes a slot only between `take` and the
        // end of `place`, and `view` refuses a slot until then; the slot
        // is not freed (so not taken again) while a view of it lives; the
        // peer's mapping is read-only (the requests arena's seals).
        unsafe { std::slice::from_raw_parts(self.arena.map.as_ptr().add(self.offset), self.len) }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let freed = self.arena.slots().unview(self.slot);
        if freed {
            self.arena.freed.notify_waiters();
        }
    }
}

/// What sends `Release` for an offset of the peer's arena.
pub(crate) type Release = Box<dyn Fn(u64) + Send + Sync>;

/// The arena the peer writes payloads into, as the reader resolves their
/// descriptors.
pub(crate) struct Inbound {
    map: Arc<MmapRaw>,
    lend: bool,
    release: Release,
    pool: Arc<BufferPool>,
    /// The supervisor's own (requests) arena, where the worker's answers
    /// may name bytes of its requests ([`OWN_ARENA`]); `None` on the
    /// worker's side, where nothing may.
    own: Option<Arc<Outbound>>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("len", &self.map.len())
            .field("lend", &self.lend)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    pub(crate) fn new(
        map: Arc<MmapRaw>,
        lend: bool,
        release: Release,
        pool: Arc<BufferPool>,
        own: Option<Arc<Outbound>>,
    ) -> Self {
        Inbound {
            map,
            lend,
            release,
            pool,
            own,
        }
    }

    /// The payload `descriptor` names, at most `max_payload` bytes: lent in
    /// place (released when its last `Bytes` drops) or copied out
    /// (released now).
    ///
    /// # Errors
    ///
    /// What was wrong with the descriptor.
    pub(crate) fn take(
        self: &Arc<Self>,
        descriptor: &[u8],
        max_payload: usize,
    ) -> Result<Bytes, String> {
        let Ok(descriptor) = <[u8; DESCRIPTOR_LEN]>::try_from(descriptor) else {
            return Err(format!(
                "a shared-memory payload's descriptor of {} bytes, where {DESCRIPTOR_LEN} are needed",
                descriptor.len()
            ));
        };
        let [offset, len] = [&descriptor[..8], &descriptor[8..]]
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        if offset & OWN_ARENA != 0 {
            return self.take_own(offset & !OWN_ARENA, len, max_payload);
        }
        let arena = self.map.len();
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .filter(|&(o, l)| o.checked_add(l).is_some_and(|end| end <= arena));
        let Some((offset, len)) = range else {
            return Err(format!(
                "a shared-memory payload of {len} bytes at offset {offset} passes the end of \
                 the {arena}-byte arena"
            ));
        };
        if len > max_payload {
            return Err(format!(
                "a shared-memory payload of {len} bytes, over the payload limit of {max_payload}"
            ));
        }
        if self.lend {
            return Ok(Bytes::from_owner(Lent {
                inbound: self.clone(),
                offset,
                len,
            }));
        }
        let mut body = self.pool.take(len);
        // SAFETY: the range is inside the mapping (checked above), which
        // lives as long as `self`; `body` has room for `len` bytes (`take`
        // gives at least that capacity) and is ours alone. The source is
        // memory the worker may be writing right now: it is only ever
        // copied through this raw pointer, never borrowed as a slice, so
        // what it changes reaches the copy as some bytes of its answer and
        // nothing else.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(offset), body.as_mut_ptr(), len);
            body.set_len(len);
        }
        (self.release)(offset as u64);
        Ok(Bytes::from_owner(Pooled::new(body, self.pool.clone())))
    }
}

impl Inbound {
    /// The payload at `offset` of this side's own arena, named by the peer
    /// as its answer: copied out of it, its slot held meanwhile.
    fn take_own(&self, offset: u64, len: u64, max_payload: usize) -> Result<Bytes, String> {
        let Some(own) = &self.own else {
            return Err(format!(
                "a shared-memory payload of {len} bytes at offset {offset} of this side's own \
                 arena, which only a worker's answers may name"
            ));
        };
        if usize::try_from(len).map_or(true, |l| l > max_payload) {
            return Err(format!(
                "a shared-memory payload of {len} bytes, over the payload limit of {max_payload}"
            ));
        }
        let range = usize::try_from(offset).ok().zip(usize::try_from(len).ok());
        let view = range
            .ok_or("passes the end of it")
            .and_then(|(o, l)| own.view(o, l))
            .map_err(|reason| {
                format!(
                    "an answer of {len} bytes at offset {offset} of the requests arena {reason}"
                )
            })?;
        // Copied, not lent to the caller: a kept answer would keep the
        // whole arena (every page its payloads ever touched) after its
        // worker is gone, and the seal that keeps the worker from writing
        // it also keeps those pages from being given back.
        let bytes: &[u8] = view.as_ref();
        let mut body = self.pool.take(bytes.len());
        body.extend_from_slice(bytes);
        Ok(Bytes::from_owner(Pooled::new(body, self.pool.clone())))
    }
}

/// A request's payload lent in place from the requests arena (the
/// worker's side); dropping the last `Bytes` of it releases the slot.
struct Lent {
    inbound: Arc<Inbound>,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range was checked to be inside the mapping, which
        // `inbound` keeps alive. This side's mapping is read-only, and the
        // supervisor (trusted by the worker) writes a slot only while it
        // is free, and this one is not until `drop` releases it: the bytes
        // do not change while the slice exists.
        unsafe { std::slice::from_raw_parts(self.inbound.map.as_ptr().add(self.offset), self.len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        (self.inbound.release)(self.offset as u64);
    }
}

#[cfg(test)]
mod tests;
