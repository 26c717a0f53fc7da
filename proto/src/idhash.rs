//! Hashing of request ids.

/// Hashes request ids by their own bits: a v4 uuid is already random, so
/// running it through SipHash buys nothing on the request path.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdHasher;

impl std::hash::BuildHasher for IdHasher {
    type Hasher = IdHash;

    fn build_hasher(&self) -> IdHash {
        IdHash(0)
    }
}

/// The hasher of [`IdHasher`].
#[derive(Debug, Clone, Copy, Default)]
pub struct IdHash(u64);

impl std::hash::Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // A uuid hashes as its 16 bytes: fold them, eight at a time. Its
        // 16 bytes take a path of their own, without the loop (four
        // hashes per request, two on each side).
        if let Ok(id) = <&[u8; 16]>::try_from(bytes) {
            let (high, low) = split_words(id);
            self.0 = (self.0.rotate_left(5) ^ high).rotate_left(5) ^ low;
            return;
        }
        let words = bytes.chunks_exact(8);
        let rest = words.remainder();
        for word in words {
            let word: [u8; 8] = word.try_into().unwrap_or_default();
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(5) ^ n as u64;
    }
}

/// The two little-endian words of a uuid's bytes, first then second.
#[inline]
fn split_words(id: &[u8; 16]) -> (u64, u64) {
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&id[..8]);
    low.copy_from_slice(&id[8..]);
    (u64::from_le_bytes(high), u64::from_le_bytes(low))
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::hash::BuildHasher;

    use super::IdHasher;

    #[test]
    fn ids_spread_and_maps_work() {
        let ids: Vec<uuid::Uuid> = (0..10_000).map(|_| uuid::Uuid::new_v4()).collect();
        let hashes: HashSet<u64> = ids.iter().map(|id| IdHasher.hash_one(id)).collect();
        assert_eq!(hashes.len(), ids.len());
        let mut map: HashMap<uuid::Uuid, usize, IdHasher> = HashMap::default();
        for (i, id) in ids.iter().enumerate() {
            map.insert(*id, i);
        }
        assert!(ids.iter().enumerate().all(|(i, id)| map[id] == i));
    }

    #[test]
    fn sixteen_bytes_hash_as_any_other_length_would() {
        use std::hash::Hasher;

        // The fast path for a uuid folds exactly as the loop does.
        let bytes: Vec<u8> = (1..=24).collect();
        let folded = |bytes: &[u8]| {
            let mut h = super::IdHash(7);
            for word in bytes.chunks(8) {
                h.write(word);
            }
            h.finish()
        };
        let at_once = |bytes: &[u8]| {
            let mut h = super::IdHash(7);
            h.write(bytes);
            h.finish()
        };
        assert_eq!(at_once(&bytes[..16]), folded(&bytes[..16]));
        assert_eq!(at_once(&bytes), folded(&bytes));
        assert_ne!(at_once(&bytes[..16]), at_once(&bytes[8..24]));
    }
}
