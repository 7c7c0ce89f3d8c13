//! Where a node's durable state lives: the [`Storage`] trait and an in-memory implementation.
//!
//! Raft calls [`Storage::submit`] with its state lock held, so submission only queues the write
//! (it must not block on I/O), and writes become durable in submission order. Raft then waits for
//! durability with [`Storage::wait_durable`] *without* the lock, before it sends any reply or vote
//! that depends on the write. This split lets a disk implementation put many writes from many
//! RPCs behind one fsync (group commit), and keeps the lock free while the disk works.

mod mem;
mod spool;

pub use mem::{MemImage, MemStorage};
pub use spool::{MemSpool, SnapshotSpool};

use crate::BoxFuture;
use crate::error::StorageError;
use crate::types::{Entry, HardState, Snapshot};

/// Everything a node persisted, as read back when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Last saved term and vote.
    pub hard_state: HardState,
    /// Latest durable snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot: consecutive entries starting at the snapshot's
    /// `last_included_index + 1` (or at 1 without a snapshot).
    pub entries: Vec<Entry>,
}

/// One atomic group of changes. A storage applies its parts in the order of the fields:
/// hard state, snapshot, truncation, new entries, compaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// New term and vote.
    pub hard_state: Option<HardState>,
    /// A snapshot to store in place of the current one. It must be durable before anything it
    /// covers is compacted away.
    pub snapshot: Option<Snapshot>,
    /// Remove every entry with an index above this one (a conflicting suffix).
    pub truncate_after: Option<u64>,
    /// Entries to append: consecutive, with terms of at least 1, continuing the log where
    /// it ends after the truncation (an emptied log continues at its first index, which
    /// compaction moves past the snapshot).
    pub entries: Vec<Entry>,
    /// Remove every entry with an index up to and including this one; it is covered by the
    /// snapshot stored in this or an earlier batch.
    pub compact_through: Option<u64>,
}

impl WriteBatch {
    /// True if the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.truncate_after.is_none()
            && self.entries.is_empty()
            && self.compact_through.is_none()
    }
}

/// Durable storage for one node's hard state, log and snapshot.
///
/// Implementations must keep the ordering promise: a write is applied after every write
/// submitted before it, and `wait_durable(n)` completes only when writes `1..=n` are all durable.
/// After a crash, recovery must return a state that includes every write reported durable.
pub trait Storage: Send + Sync + 'static {
    /// Reads the persisted state. Raft calls it exactly once, when the node starts, so an
    /// implementation may hand over what it recovered at open and keep no copy.
    fn recover(&self) -> Result<Recovered, StorageError>;

    /// Queues `batch` after every earlier one and returns its sequence number (starting at 1,
    /// increasing by one per call). Must not block: Raft holds its state lock while calling it.
    fn submit(&self, batch: WriteBatch) -> u64;

    /// Completes when every write up to and including `seq` is durable, or with the error that
    /// stopped the storage (after which the node stops).
    fn wait_durable(&self, seq: u64) -> BoxFuture<'static, Result<(), StorageError>>;

    /// The highest seq already durable, if the storage can tell without waiting (0 if not).
    /// Raft checks it right after submitting, so a storage that is durable at once (in memory)
    /// costs no wake-ups.
    fn durable_now(&self) -> u64 {
        0
    }

    /// Why writes cannot be made durable just now, while a shortage the storage waits out
    /// lasts (a full disk, no file descriptors): `None` when all is well. Writes submitted
    /// meanwhile stay queued and become durable once the resource is back; a leader refuses
    /// new proposals meanwhile ([`ProposeError::StorageUnavailable`](crate::ProposeError)).
    /// Errors after which nothing can be trusted (a failed fsync) are not shortages: they stop
    /// the storage through `wait_durable`.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// A new place for a snapshot arriving from the leader, written a chunk at a time as the
    /// chunks arrive and handed back whole by [`SnapshotSpool::finish`] to be installed (through
    /// [`Storage::submit`], like any snapshot). A storage on disk spools to a file, so that a
    /// large snapshot is never held whole in memory; the default holds it in memory. An error
    /// fails just this transfer (the leader sends the snapshot again later).
    fn spool_snapshot(&self) -> Result<Box<dyn SnapshotSpool>, StorageError> {
        Ok(Box::<MemSpool>::default())
    }

    /// Bytes the log and snapshot take on disk, if the storage keeps them there.
    fn disk_bytes(&self) -> Option<u64> {
        None
    }
}
