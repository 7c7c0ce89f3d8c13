//! keel-kv: a replicated key-value store on the keel Raft library.
//!
//! - [`KvService`] runs on every node: writes ([`Write`]) go through the Raft log and are
//!   answered once applied; a client id and sequence number make a retried write apply once
//!   and return the original result. Reads are linearizable by default (ReadIndex: the leader
//!   confirms it still leads with one round of heartbeats, waits until it has applied the
//!   commit index it recorded, then reads), or stale on request.
//! - [`KvState`] is the deterministic state machine: the map and the client sessions, expired by
//!   the timestamps leaders put in the log, never by a local clock. Likewise it refuses an append
//!   that would make a value longer than the limit its leader put in the log.
//! - Snapshots of the state are taken when the Raft log exceeds
//!   [`KvOptions::max_raft_state_bytes`], and restored on restart or from the leader.

#![warn(missing_docs)]

pub mod command;
pub mod error;
/// Entry points for the fuzz targets in `fuzz/` and the corpus-replay tests; not part of the API.
#[doc(hidden)]
pub mod fuzzing;
pub mod service;
pub mod state;

pub use command::{Command, Write};
pub use error::KvError;
pub use service::{
    Clock, Consistency, KvCounters, KvOptions, KvService, LatencyObserver, PendingWrite,
    leader_hint, snapshot_threshold, system_clock,
};
pub use state::{KvState, Outcome, SessionPolicy, TooLarge, WriteResult};

/// The largest `max_value_bytes` keel's own tools use: `keel serve` refuses more, keel's client
/// reads answers of that size, and a follower relays a leader's answer of that size whatever
/// its own limit (the limit that admitted a value was its leader's at the time).
pub const LARGEST_VALUE_LIMIT: usize = 64 << 20;
