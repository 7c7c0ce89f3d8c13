//! The course's KV scenario suite (kvraft, parts A and B) on keel's deterministic simulator:
//! KV servers on every node of a simulated cluster, clerks that retry across servers, faults
//! (lost messages, partitions, crashes of every server), and every client history checked for
//! linearizability with keel-check.
//!
//! Each scenario runs for several seeds and replays exactly from its seed:
//!
//! ```text
//! KEEL_SEED=17 cargo test -p keel-kv --test kv persist_partitions   # replay one seed
//! KEEL_SEEDS=30 cargo test -p keel-kv --release                     # soak: seeds 1..=30
//! ```

mod clerk;
mod cluster;
mod generic;
mod history;

mod basic;
mod membership;
mod partitions;
mod persistence;
mod replay;
mod snapshots;

/// Seeds per scenario in a normal test run.
const SEEDS: u64 = 3;
