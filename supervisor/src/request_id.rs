//! Request ids: uuids of version 4 in form, made without drawing from a
//! random-number generator for every request.
//!
//! Each thread draws one random uuid when it first makes an id and keeps
//! its high half; the low half is a counter of the thread's ids passed
//! through a permutation of its 62 free bits (the other two are the
//! variant's). So a thread never repeats an id (it would take 2^62 of
//! them), two threads share one only if their 60 random high bits match,
//! and the low half looks as random as a v4 uuid's to the hash tables that
//! hash ids by their own bits (`drover_proto::IdHasher`). What such an id
//! does not have is a v4 uuid's unpredictability: from one id, the next
//! ones of the same thread can be worked out. Nothing in drover relies on
//! that (a worker can answer or cancel only requests it was given).
//!
//! Why: `Uuid::new_v4` costs about 100 instructions per request, 2.5% of
//! the supervisor's (callgrind, 64 B echoes at C = 256); this costs about
//! 20.

use std::cell::Cell;

use drover_proto::RequestId;

/// The low half's bits other than the variant's.
const FREE: u64 = (1 << 62) - 1;

/// The RFC 9562 variant, in the low half's top two bits.
const VARIANT: u64 = 0b10 << 62;

thread_local! {
    /// This thread's random high half, the key its counter is mixed
    /// with, and the counter; `None` until its first id.
    static IDS: Cell<Option<(u64, u64, u64)>> = const { Cell::new(None) };
}

/// A new request id, unique in this process and, with overwhelming
/// likelihood, among all of drover's processes.
pub(crate) fn next() -> RequestId {
    IDS.with(|ids| {
        let (high, key, count) = ids.get().unwrap_or_else(|| {
            let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
            (high, low, 0)
        });
        ids.set(Some((high, key, count + 1)));
        RequestId::from_u64_pair(high, VARIANT | permute(count ^ key))
    })
}

/// A permutation of the 62-bit numbers that scatters neighbours (a
/// multiply-xorshift mixer: each step is invertible modulo 2^62).
fn permute(x: u64) -> u64 {
    let mut x = x & FREE;
    x ^= x >> 31;
    x = x.wrapping_mul(0x7fb5_d329_728e_a185) & FREE;
    x ^= x >> 27;
    x = x.wrapping_mul(0x81da_def4_bc2d_d44d) & FREE;
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_version_4_uuids_and_never_repeat() {
        let ids: Vec<RequestId> = (0..200_000).map(|_| next()).collect();
        for id in &ids[..100] {
            assert_eq!(id.get_version_num(), 4, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
        let distinct: HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Another thread draws its own high half.
        let other = std::thread::spawn(next).join().unwrap();
        assert_ne!(other.as_u64_pair().0, ids[0].as_u64_pair().0);
    }

    #[test]
    fn neighbouring_counts_differ_in_about_half_their_bits() {
        // The hash tables index by the low bits and tag by the high ones:
        // consecutive ids must not cluster in either.
        let mut differing = 0;
        let n = 10_000;
        for count in 0..n {
            differing += (permute(count) ^ permute(count + 1)).count_ones();
        }
        let mean = f64::from(differing) / n as f64;
        assert!((25.0..37.0).contains(&mean), "{mean} of 62 bits differ");
    }

    #[test]
    fn the_mixer_is_a_permutation_of_its_bits() {
        // Invertible steps keep distinct inputs apart: spot-check a spread
        // of them, and that nothing leaves the 62 bits.
        let inputs: Vec<u64> = (0..100_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & FREE)
            .collect();
        let outputs: HashSet<u64> = inputs.iter().map(|&x| permute(x)).collect();
        assert_eq!(outputs.len(), inputs.len());
        assert!(outputs.iter().all(|&x| x <= FREE));
    }
}
