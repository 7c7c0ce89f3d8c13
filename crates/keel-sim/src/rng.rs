//! The simulation's single source of randomness.

use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// A seeded random number generator shared by everything in one simulated run: the network's
/// faults, storage delays, the nodes' election timeouts and the scenario's own choices. One
/// seed therefore fixes the whole run.
#[derive(Clone)]
pub struct SimRng(Arc<Mutex<Xoshiro256PlusPlus>>);

impl SimRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng(Arc::new(Mutex::new(Xoshiro256PlusPlus::seed_from_u64(
            seed,
        ))))
    }

    /// A uniform integer in `0..n` (0 when `n` is 0).
    pub fn below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.0.lock().random_range(0..n)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// A fresh 64-bit value (seeds for nodes, random commands).
    pub fn next_u64(&self) -> u64 {
        self.0.lock().random()
    }
}
