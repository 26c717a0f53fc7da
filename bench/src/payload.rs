//! The request payload: the same pseudo-random bytes for drover and raw.

/// `len` pseudo-random bytes (xorshift64, fixed seed: every run and both
/// implementations send the same bytes).
pub fn random(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bytes_are_repeatable_and_not_constant() {
        let a = super::random(4096);
        assert_eq!(a, super::random(4096));
        let distinct: std::collections::HashSet<u8> = a.iter().copied().collect();
        assert!(distinct.len() > 200, "{} distinct bytes", distinct.len());
    }
}
