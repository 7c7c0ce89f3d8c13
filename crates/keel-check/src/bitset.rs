//! The set of operations linearized so far, one bit per operation, as a memo key.

use std::hash::{Hash, Hasher};

/// A fixed-size set of operation indices, compared by its bits and hashed by a fingerprint
/// kept up to date on every change (Zobrist hashing: the XOR of a fixed random word per
/// member). The search looks a set up in its memo at every step, and hashing thousands of
/// bits each time would dominate the search.
#[derive(Clone, Debug)]
pub(crate) struct Bitset {
    words: Vec<u64>,
    fingerprint: u64,
}

impl Bitset {
    /// An empty set able to hold `0..len`.
    pub(crate) fn new(len: usize) -> Self {
        Bitset {
            words: vec![0; len.div_ceil(64)],
            fingerprint: 0,
        }
    }

    /// Adds `index`, which must not be in the set.
    pub(crate) fn insert(&mut self, index: usize) {
        let (word, bit) = (index / 64, 1 << (index % 64));
        assert_eq!(self.words[word] & bit, 0, "{index} is already in the set");
        self.words[word] |= bit;
        self.fingerprint ^= member_key(index);
    }

    /// Removes `index`, which must be in the set.
    pub(crate) fn remove(&mut self, index: usize) {
        let (word, bit) = (index / 64, 1 << (index % 64));
        assert_ne!(self.words[word] & bit, 0, "{index} is not in the set");
        self.words[word] &= !bit;
        self.fingerprint ^= member_key(index);
    }
}

impl PartialEq for Bitset {
    fn eq(&self, other: &Self) -> bool {
        // Equal sets have equal fingerprints; comparing those first is a cheap early exit.
        self.fingerprint == other.fingerprint && self.words == other.words
    }
}

impl Eq for Bitset {}

impl Hash for Bitset {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint);
    }
}

/// A fixed pseudo-random word for each index (SplitMix64's output function).
fn member_key(index: usize) -> u64 {
    let mut z = (index as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::Bitset;
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};

    fn hash_of(set: &Bitset) -> u64 {
        let mut hasher = DefaultHasher::new();
        set.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn sets_built_in_different_orders_are_equal_and_hash_equal() {
        let mut a = Bitset::new(130);
        let mut b = Bitset::new(130);
        for i in [0, 63, 64, 129] {
            a.insert(i);
        }
        for i in [129, 5, 64, 63, 0] {
            b.insert(i);
        }
        assert_ne!(a, b);
        b.remove(5);
        assert_eq!(a, b);
        assert_eq!(hash_of(&a), hash_of(&b));
    }
}
