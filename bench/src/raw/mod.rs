//! The raw ceiling: the echo workload over plain socket pairs.
//!
//! The parent starts `W` copies of this binary, each with one end of a
//! `socketpair(AF_UNIX, SOCK_STREAM)` as an inherited descriptor whose
//! number is in [`CHILD_ENV`]. Both directions carry bare frames:
//!
//! ```text
//! +----------------+----------------------+
//! | length: u32 BE | body: `length` bytes |
//! +----------------+----------------------+
//!   4 bytes          at most MAX_PAYLOAD (64 MiB - 64)
//! ```
//!
//! A child answers each frame with the same frame and exits 0 at end of
//! file on a frame boundary. The parent's first frame to each child is
//! empty: its answer marks the child started, as `Ready` does in drover.
//!
//! - `parent.rs`: spawning, the writer and reader threads, reaping.
//! - `child.rs`: the echo loop (the crate's only `unsafe`, claiming the
//!   inherited descriptor).
//! - `slots.rs`: the counting semaphore that bounds frames in flight.

pub mod child;
pub mod parent;
mod slots;

/// The variable that makes this binary a raw child; its value is the
/// number of the inherited socket descriptor.
pub const CHILD_ENV: &str = "DROVER_BENCH_RAW_CHILD";

/// The inherited descriptor's number, if this process is a raw child.
pub fn child_socket_env() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}
