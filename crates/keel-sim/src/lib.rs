//! Deterministic simulation for keel: a simulated network with the faults of the well-known
//! course test harness, crash-consistent storage, and a cluster fixture that checks Raft's
//! safety properties as a scenario runs.
//!
//! Everything runs on one thread under tokio's paused clock, and every random choice comes from
//! one seeded generator ([`SimRng`]), so a scenario replays exactly from its seed:
//!
//! ```text
//! KEEL_SEED=17 cargo test -p keel-sim figure_8      # replay one seed
//! KEEL_SEEDS=300 cargo test -p keel-sim --release   # soak: seeds 1..=300 for every scenario
//! ```

#![warn(missing_docs)]

pub mod cluster;
pub mod net;
pub mod rng;
pub mod runner;
pub mod storage;

pub use cluster::{
    Cluster, ClusterOptions, ELECTION_TIMEOUT, Load, SNAPSHOT_INTERVAL, ServiceFactory,
    StorageKind, command,
};
pub use net::{NodeTraffic, SimNet};
pub use rng::SimRng;
pub use runner::{RunReport, Sim, run, run_seed, seeds};
pub use storage::{SimDisk, SimStorage};
