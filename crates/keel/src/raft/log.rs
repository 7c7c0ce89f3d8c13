//! The in-memory Raft log: the entries after the latest snapshot.
//!
//! The whole log since the snapshot stays in memory (as in etcd's raft), so replication and
//! applying never read the disk; storage only mirrors it for recovery. The service bounds its
//! size by taking snapshots.

use std::collections::VecDeque;
use std::ops::RangeInclusive;

use crate::types::{Entry, SnapshotMeta};

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// Everything up to here is covered by the snapshot.
    snapshot: SnapshotMeta,
    /// Entries `snapshot.last_included_index + 1 ..= last_index()`.
    entries: VecDeque<Entry>,
    /// Sum of `Entry::encoded_len` over `entries`.
    bytes: usize,
}

impl RaftLog {
    pub(crate) fn new(snapshot: SnapshotMeta, entries: Vec<Entry>) -> Self {
        let mut log = RaftLog {
            snapshot,
            entries: VecDeque::with_capacity(entries.len()),
            bytes: 0,
        };
        log.append(entries);
        log
    }

    pub(crate) fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot
    }

    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot.last_included_index
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.snapshot.last_included_index + 1
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.snapshot.last_included_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.entries
            .back()
            .map_or(self.snapshot.last_included_term, |e| e.term)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Term of the entry at `index`; known for the snapshot's last entry and every entry after.
    pub(crate) fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.last_included_index {
            return Some(self.snapshot.last_included_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Clones entries from `from` onwards, at most `max_count` of them and, past the first, at
    /// most `max_bytes` in total.
    pub(crate) fn slice(&self, from: u64, max_count: usize, max_bytes: usize) -> Vec<Entry> {
        let Some(offset) = from.checked_sub(self.first_index()) else {
            return Vec::new();
        };
        let start = (offset as usize).min(self.entries.len());
        let mut bytes = 0;
        let mut out = Vec::with_capacity((self.entries.len() - start).min(max_count));
        for entry in self.entries.range(start..) {
            bytes += entry.encoded_len();
            if out.len() == max_count || (bytes > max_bytes && !out.is_empty()) {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Clones the entries in `range`, which must lie within the log.
    pub(crate) fn range(&self, range: RangeInclusive<u64>) -> impl Iterator<Item = &Entry> {
        let first = self.first_index();
        assert!(
            *range.start() >= first && *range.end() <= self.last_index(),
            "range {range:?} outside log {first}..={}",
            self.last_index()
        );
        let start = (*range.start() - first) as usize;
        let end = (*range.end() + 1 - first) as usize;
        self.entries.range(start..end.max(start))
    }

    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index() + 1,
                "log entries must be consecutive"
            );
            assert!(
                entry.term >= self.last_term(),
                "log terms must not decrease"
            );
            self.bytes += entry.encoded_len();
            self.entries.push_back(entry);
        }
    }

    /// Removes every entry after `index`.
    pub(crate) fn truncate_after(&mut self, index: u64) {
        assert!(
            index >= self.snapshot.last_included_index,
            "cannot truncate into the snapshot"
        );
        let keep = (index - self.snapshot.last_included_index) as usize;
        while self.entries.len() > keep {
            let entry = self.entries.pop_back().expect("length checked");
            self.bytes -= entry.encoded_len();
        }
    }

    /// Drops the entries a new snapshot covers. If the log holds the snapshot's last entry, the
    /// entries after it stay; otherwise the log is replaced by the snapshot alone.
    pub(crate) fn install_snapshot(&mut self, meta: SnapshotMeta) -> LogReset {
        let index = meta.last_included_index;
        assert!(
            index > self.snapshot.last_included_index,
            "snapshots only move forward"
        );
        let reset = if self.term_at(index) == Some(meta.last_included_term) {
            while self.entries.front().is_some_and(|e| e.index <= index) {
                let entry = self.entries.pop_front().expect("front checked");
                self.bytes -= entry.encoded_len();
            }
            LogReset::KeptSuffix
        } else {
            self.entries.clear();
            self.bytes = 0;
            LogReset::Discarded
        };
        self.snapshot = meta;
        reset
    }

    /// The first index of the run of entries with the same term as the entry at `index`; the
    /// follower's conflict hint.
    pub(crate) fn first_index_of_term_at(&self, index: u64) -> u64 {
        let term = self.term_at(index).expect("index within the log");
        // Terms never decrease along the log, so a binary search finds where the run starts.
        let pos = partition_point(self.entries.as_slices(), |e| e.term < term);
        self.first_index() + pos as u64
    }

    /// The last index holding an entry of `term`, if the log has one; the leader's use of the
    /// follower's conflict hint.
    pub(crate) fn last_index_of_term(&self, term: u64) -> Option<u64> {
        let (a, b) = self.entries.as_slices();
        let pos = partition_point((a, b), |e| e.term <= term);
        if pos == 0 {
            return (self.snapshot.last_included_term == term
                && self.snapshot.last_included_index > 0)
                .then_some(self.snapshot.last_included_index);
        }
        let index = self.first_index() + pos as u64 - 1;
        (self.term_at(index) == Some(term)).then_some(index)
    }
}

/// What installing a snapshot did to the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogReset {
    /// The log held the snapshot's last entry; the entries after it remain.
    KeptSuffix,
    /// The log did not match the snapshot and was emptied.
    Discarded,
}

/// `partition_point` over the two halves of a `VecDeque`.
fn partition_point((a, b): (&[Entry], &[Entry]), pred: impl Fn(&Entry) -> bool) -> usize {
    let in_a = a.partition_point(&pred);
    if in_a < a.len() {
        in_a
    } else {
        a.len() + b.partition_point(&pred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Payload;

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Entry {
                index: i as u64 + 1,
                term,
                payload: Payload::Noop,
            })
            .collect();
        RaftLog::new(SnapshotMeta::default(), entries)
    }

    #[test]
    fn conflict_hints_find_term_boundaries() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4, 4]);
        assert_eq!(log.first_index_of_term_at(5), 3);
        assert_eq!(log.first_index_of_term_at(2), 1);
        assert_eq!(log.first_index_of_term_at(7), 6);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
        assert_eq!(log.last_index_of_term(4), Some(7));
        assert_eq!(log.last_index_of_term(9), None);
    }

    #[test]
    fn slice_respects_count_and_bytes_but_always_takes_one() {
        let log = log_with_terms(&[1; 10]);
        assert_eq!(log.slice(3, 4, usize::MAX).len(), 4);
        assert_eq!(log.slice(3, 100, 13 * 2).len(), 2);
        assert_eq!(log.slice(3, 100, 1).len(), 1);
        assert_eq!(log.slice(11, 100, 1000).len(), 0);
    }

    #[test]
    fn snapshot_keeps_a_matching_suffix_and_discards_a_conflicting_log() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        let reset = log.install_snapshot(SnapshotMeta {
            last_included_index: 2,
            last_included_term: 1,
        });
        assert_eq!(reset, LogReset::KeptSuffix);
        assert_eq!((log.first_index(), log.last_index()), (3, 4));
        assert_eq!(log.term_at(2), Some(1));

        let reset = log.install_snapshot(SnapshotMeta {
            last_included_index: 4,
            last_included_term: 3,
        });
        assert_eq!(reset, LogReset::Discarded);
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (5, 4, 3)
        );
        assert_eq!(log.last_index_of_term(3), Some(4));
    }
}
