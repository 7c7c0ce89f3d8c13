//! Storage in memory: for tests, benchmarks and nodes whose durability comes from elsewhere.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Recovered, Storage, WriteBatch};
use crate::BoxFuture;
use crate::error::StorageError;
use crate::types::{Entry, HardState, Snapshot};

/// The state a storage holds, with the rules for applying a [`WriteBatch`]; shared by
/// [`MemStorage`] and the simulator's crash-consistent storage.
#[derive(Clone, Debug, Default)]
pub struct MemImage {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// Consecutive entries; the first has index `first_index`.
    entries: VecDeque<Entry>,
    first_index: u64,
    entry_bytes: usize,
}

impl MemImage {
    /// An empty image: no term, no vote, no entries, no snapshot.
    pub fn new() -> Self {
        MemImage {
            first_index: 1,
            ..Default::default()
        }
    }

    /// Applies a batch. Panics if the batch breaks the storage contract (entries that do not
    /// follow the log), which is a bug in the caller, never a matter of input.
    pub fn apply(&mut self, batch: WriteBatch) {
        if let Some(hard_state) = batch.hard_state {
            self.hard_state = hard_state;
        }
        if let Some(snapshot) = batch.snapshot {
            self.snapshot = Some(snapshot);
        }
        if let Some(index) = batch.truncate_after {
            let keep = index.saturating_sub(self.first_index - 1) as usize;
            while self.entries.len() > keep {
                let entry = self.entries.pop_back().expect("length checked");
                self.entry_bytes -= entry.encoded_len();
            }
        }
        for entry in batch.entries {
            if self.entries.is_empty() {
                // An empty log continues where truncation or compaction left it.
                assert_eq!(
                    entry.index, self.first_index,
                    "append to an empty log must start at its first index"
                );
            } else {
                assert_eq!(
                    entry.index,
                    self.first_index + self.entries.len() as u64,
                    "appended entries must be consecutive"
                );
            }
            self.entry_bytes += entry.encoded_len();
            self.entries.push_back(entry);
        }
        if let Some(index) = batch.compact_through {
            while self.entries.front().is_some_and(|e| e.index <= index) {
                let entry = self.entries.pop_front().expect("front checked");
                self.entry_bytes -= entry.encoded_len();
            }
            self.first_index = self.first_index.max(index + 1);
        }
    }

    /// What a node starting from this image recovers.
    pub fn recovered(&self) -> Recovered {
        let after = self
            .snapshot
            .as_ref()
            .map_or(0, |s| s.meta.last_included_index);
        Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self
                .entries
                .iter()
                .filter(|e| e.index > after)
                .cloned()
                .collect(),
        }
    }

    /// Bytes the hard state and log would take on disk (not counting the snapshot): the figure
    /// services compare with their log-size limit.
    pub fn raft_state_size(&self) -> usize {
        17 + self.entry_bytes + 8 * self.entries.len()
    }

    /// Bytes of the snapshot data.
    pub fn snapshot_size(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |s| s.data.len())
    }

    /// The saved hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The saved snapshot.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Whether the saved state holds the entry at `index` of `term`: in the log, or covered by
    /// the snapshot (which only ever covers committed entries).
    pub fn holds(&self, index: u64, term: u64) -> bool {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.last_included_index >= index)
        {
            return true;
        }
        index
            .checked_sub(self.first_index)
            .and_then(|offset| self.entries.get(usize::try_from(offset).ok()?))
            .is_some_and(|e| e.index == index && e.term == term)
    }

    /// The saved log entries (possibly including some covered by the snapshot).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

/// A [`Storage`] that keeps everything in memory; every write is "durable" as soon as it is
/// submitted. Cloning gives another handle to the same contents, so a test can keep one across a
/// node's restart, the way a machine keeps its disk.
#[derive(Clone, Debug)]
pub struct MemStorage {
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Debug)]
struct MemInner {
    image: MemImage,
    last_seq: u64,
}

impl Default for MemStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStorage {
    /// Empty storage.
    pub fn new() -> Self {
        MemStorage {
            inner: Arc::new(Mutex::new(MemInner {
                image: MemImage::new(),
                last_seq: 0,
            })),
        }
    }

    /// A copy of the current contents.
    pub fn image(&self) -> MemImage {
        self.inner.lock().image.clone()
    }

    /// Bytes of hard state and log, as [`MemImage::raft_state_size`].
    pub fn raft_state_size(&self) -> usize {
        self.inner.lock().image.raft_state_size()
    }
}

impl Storage for MemStorage {
    fn recover(&self) -> Result<Recovered, StorageError> {
        Ok(self.inner.lock().image.recovered())
    }

    fn submit(&self, batch: WriteBatch) -> u64 {
        let mut inner = self.inner.lock();
        inner.image.apply(batch);
        inner.last_seq += 1;
        inner.last_seq
    }

    fn wait_durable(&self, _seq: u64) -> BoxFuture<'static, Result<(), StorageError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn durable_now(&self) -> u64 {
        self.inner.lock().last_seq
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::types::{Payload, SnapshotMeta};

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            payload: Payload::Command(Bytes::from(format!("c{index}"))),
        }
    }

    #[test]
    fn truncate_append_and_compact_follow_the_batch_order() {
        let mut image = MemImage::new();
        image.apply(WriteBatch {
            entries: (1..=5).map(|i| entry(i, 1)).collect(),
            ..Default::default()
        });
        image.apply(WriteBatch {
            truncate_after: Some(3),
            entries: vec![entry(4, 2)],
            ..Default::default()
        });
        let indexes: Vec<_> = image.entries().map(|e| (e.index, e.term)).collect();
        assert_eq!(indexes, vec![(1, 1), (2, 1), (3, 1), (4, 2)]);

        image.apply(WriteBatch {
            snapshot: Some(Snapshot {
                meta: SnapshotMeta {
                    last_included_index: 2,
                    last_included_term: 1,
                },
                membership: None,
                data: Bytes::from_static(b"state"),
            }),
            compact_through: Some(2),
            ..Default::default()
        });
        let recovered = image.recovered();
        assert_eq!(recovered.entries.first().map(|e| e.index), Some(3));
        assert_eq!(
            recovered.snapshot.unwrap().data,
            Bytes::from_static(b"state")
        );
    }

    #[test]
    fn a_snapshot_past_the_log_resets_it() {
        let mut image = MemImage::new();
        image.apply(WriteBatch {
            entries: (1..=3).map(|i| entry(i, 1)).collect(),
            ..Default::default()
        });
        image.apply(WriteBatch {
            snapshot: Some(Snapshot {
                meta: SnapshotMeta {
                    last_included_index: 10,
                    last_included_term: 3,
                },
                membership: None,
                data: Bytes::new(),
            }),
            truncate_after: Some(10),
            compact_through: Some(10),
            ..Default::default()
        });
        assert_eq!(image.entries().count(), 0);
        image.apply(WriteBatch {
            entries: vec![entry(11, 3)],
            ..Default::default()
        });
        assert_eq!(image.recovered().entries, vec![entry(11, 3)]);
    }
}
