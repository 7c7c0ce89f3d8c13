//! The values Raft stores and replicates: entries, hard state and snapshot metadata.

use bytes::Bytes;

/// Identifies one member of a cluster. Ids are chosen by the operator and never reused.
pub type NodeId = u64;

/// One slot of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub index: u64,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// What the entry carries.
    pub payload: Payload,
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The empty entry a new leader appends at the start of its term (Raft paper, section 8),
    /// so that it can commit everything earlier terms left behind.
    Noop,
    /// A command proposed by the service.
    Command(Bytes),
}

impl Entry {
    /// The command bytes, or an empty slice for a no-op.
    pub fn command(&self) -> &[u8] {
        match &self.payload {
            Payload::Noop => &[],
            Payload::Command(bytes) => bytes,
        }
    }

    /// Bytes this entry takes in the wire encoding; used for batch limits and size accounting.
    pub fn encoded_len(&self) -> usize {
        // term (8) + kind (1) + length (4) + data; the index is implied by the position.
        13 + self.command().len()
    }
}

/// The part of Raft's state that must survive a crash besides the log (Figure 2, "Persistent
/// state on all servers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Latest term this server has seen.
    pub current_term: u64,
    /// Candidate that received this server's vote in `current_term`.
    pub voted_for: Option<NodeId>,
}

/// Which prefix of the log a snapshot replaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot covers.
    pub last_included_index: u64,
    /// Term of that entry.
    pub last_included_term: u64,
}

/// A snapshot of the service's state machine, covering the log through
/// `meta.last_included_index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The prefix of the log the snapshot replaces.
    pub meta: SnapshotMeta,
    /// The service's serialized state; opaque to Raft.
    pub data: Bytes,
}
