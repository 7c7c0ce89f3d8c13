//! Tunables of a Raft node, with defaults fit for a cluster on a local network.

use std::time::Duration;

use crate::error::RaftError;

/// Settings of one node. All members of a cluster should use the same timing settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// How often the leader sends a heartbeat to an idle follower.
    pub heartbeat_interval: Duration,
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_timeout_min, election_timeout_max)` starts an election.
    pub election_timeout_min: Duration,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// The small constant the election and heartbeat tasks sleep between looks at the state.
    pub tick: Duration,
    /// How long an RPC may take before its task gives up on it (bounds the RPCs in flight to a
    /// peer that does not answer).
    pub rpc_timeout: Duration,
    /// Most entries one AppendEntries carries.
    pub max_append_entries: usize,
    /// Most bytes of entries one AppendEntries carries (a larger single entry is refused at
    /// proposal time).
    pub max_append_bytes: usize,
    /// Most AppendEntries carrying entries in flight to one follower (pipelining depth).
    pub max_inflight_appends: usize,
    /// Most RPCs of any kind in flight to one peer, heartbeats included.
    pub max_inflight_rpcs: usize,
    /// Bytes of snapshot data per InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot a follower accepts from a leader.
    pub max_snapshot_bytes: u64,
    /// Proposals are refused with `Overloaded` while this many entries wait to commit.
    pub max_uncommitted_entries: u64,
    /// Reads waiting for leadership confirmation before `read_index` refuses more.
    pub max_pending_reads: usize,
    /// Most entries handed to the apply stream in one batch.
    pub max_apply_batch: usize,
    /// Batches the apply stream buffers before the applier waits for the consumer.
    pub apply_buffer_batches: usize,
    /// Ask "would you vote for me?" before starting an election (Raft thesis 9.6), so a node
    /// that was cut off does not disrupt a healthy leader when it comes back.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a majority for an election timeout, and
    /// followers that hear from a leader ignore vote requests for the minimum election timeout.
    pub check_quorum: bool,
    /// A learner is promoted to voter only when its log is within this many entries of the
    /// leader's: a voter that lags far behind would leave the cluster less able to commit than
    /// before the change, until it caught up.
    pub max_promotion_lag: u64,
    /// Seed of the node's random choices (election timeouts); `None` draws one from the OS.
    /// The simulator sets it so that runs replay.
    pub rng_seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            tick: Duration::from_millis(10),
            rpc_timeout: Duration::from_millis(1000),
            max_append_entries: 4096,
            max_append_bytes: 4 << 20,
            max_inflight_appends: 8,
            max_inflight_rpcs: 32,
            snapshot_chunk_bytes: 1 << 20,
            max_snapshot_bytes: 4 << 30,
            max_uncommitted_entries: 65_536,
            max_pending_reads: 65_536,
            max_apply_batch: 1024,
            apply_buffer_batches: 16,
            pre_vote: true,
            check_quorum: true,
            max_promotion_lag: 1000,
            rng_seed: None,
        }
    }
}

impl Config {
    /// Timing for tests and simulations in the style of the well-known course labs: heartbeats
    /// every 100 ms, elections after 300 to 600 ms of silence.
    pub fn fast_elections() -> Self {
        Config {
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            rpc_timeout: Duration::from_millis(1000),
            ..Config::default()
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), RaftError> {
        let fail = |msg: String| Err(RaftError::Config(msg));
        if self.tick.is_zero() || self.heartbeat_interval.is_zero() {
            return fail("tick and heartbeat_interval must be positive".into());
        }
        if self.election_timeout_min >= self.election_timeout_max {
            return fail(format!(
                "election_timeout_min ({:?}) must be below election_timeout_max ({:?})",
                self.election_timeout_min, self.election_timeout_max
            ));
        }
        if self.heartbeat_interval * 2 > self.election_timeout_min {
            return fail(format!(
                "heartbeat_interval ({:?}) must be at most half of election_timeout_min ({:?}), \
                 or followers time out between heartbeats",
                self.heartbeat_interval, self.election_timeout_min
            ));
        }
        if self.tick > self.heartbeat_interval {
            return fail(format!(
                "tick ({:?}) must not exceed heartbeat_interval ({:?})",
                self.tick, self.heartbeat_interval
            ));
        }
        for (name, value) in [
            ("max_append_entries", self.max_append_entries),
            ("max_append_bytes", self.max_append_bytes),
            ("max_inflight_appends", self.max_inflight_appends),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("max_apply_batch", self.max_apply_batch),
            ("apply_buffer_batches", self.apply_buffer_batches),
            ("max_pending_reads", self.max_pending_reads),
        ] {
            if value == 0 {
                return fail(format!("{name} must be positive"));
            }
        }
        if self.max_inflight_rpcs <= self.max_inflight_appends {
            return fail(format!(
                "max_inflight_rpcs ({}) must exceed max_inflight_appends ({}) to leave room for \
                 heartbeats",
                self.max_inflight_rpcs, self.max_inflight_appends
            ));
        }
        if self.max_uncommitted_entries == 0 {
            return fail("max_uncommitted_entries must be positive".into());
        }
        if self.snapshot_chunk_bytes > u32::MAX as usize
            || self.max_append_bytes > u32::MAX as usize
        {
            return fail("snapshot_chunk_bytes and max_append_bytes must fit in 32 bits".into());
        }
        Ok(())
    }
}
