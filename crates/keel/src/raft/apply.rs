//! The applier: one task that hands committed entries (and snapshots from the leader) to the
//! service, strictly in log order, through a bounded stream.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Shared;
use crate::types::{Entry, Snapshot};

/// One item of the apply stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A committed entry, at the next index. No-ops are included, so consumers see every index.
    Entry(Entry),
    /// A snapshot that replaces the service's state with the state through its last index (from
    /// storage at start-up, or from the leader). Entries after it follow. Its data may be a map
    /// of a file ([`crate::Storage::spool_snapshot`]): a service copies what it keeps out of it
    /// rather than holding slices, which would keep the snapshot alive.
    Snapshot(Snapshot),
}

impl Applied {
    /// The log index this item brings the service to.
    pub fn index(&self) -> u64 {
        match self {
            Applied::Entry(e) => e.index,
            Applied::Snapshot(s) => s.meta.last_included_index,
        }
    }
}

/// The committed entries of one node, in index order, each exactly once in this incarnation.
///
/// The stream is bounded: while its consumer is slow, the applier waits, and entries stay in the
/// Raft log instead of piling up in memory twice. It ends when the node shuts down.
#[derive(Debug)]
pub struct ApplyStream {
    receiver: mpsc::Receiver<Vec<Applied>>,
    buffered: std::vec::IntoIter<Applied>,
}

pub(super) fn channel(batches: usize) -> (mpsc::Sender<Vec<Applied>>, ApplyStream) {
    let (sender, receiver) = mpsc::channel(batches);
    let stream = ApplyStream {
        receiver,
        buffered: Vec::new().into_iter(),
    };
    (sender, stream)
}

impl ApplyStream {
    /// The next item, or `None` once the node has shut down.
    pub async fn next(&mut self) -> Option<Applied> {
        loop {
            if let Some(item) = self.buffered.next() {
                return Some(item);
            }
            self.buffered = self.receiver.recv().await?.into_iter();
        }
    }

    /// The next items, as many as are ready (at most `Config::max_apply_batch` per batch), or
    /// `None` once the node has shut down. Cheaper than `next` per item under load.
    pub async fn next_batch(&mut self) -> Option<Vec<Applied>> {
        if self.buffered.len() > 0 {
            return Some(std::mem::take(&mut self.buffered).collect());
        }
        self.receiver.recv().await
    }
}

/// Waits for `commit_index` to pass `last_applied` (the condition variable is `apply_wake`),
/// then sends the newly committed entries, a bounded batch at a time.
pub(super) async fn run_applier(shared: Arc<Shared>, sender: mpsc::Sender<Vec<Applied>>) {
    loop {
        let batch = {
            let mut s = shared.lock();
            if s.shutdown {
                return;
            }
            if s.log.snapshot_index() > s.last_applied {
                // The log moved past what the service has: it must load the snapshot first.
                s.last_applied = s.log.snapshot_index();
                let meta = s.log.snapshot_meta();
                let snapshot = Snapshot {
                    meta,
                    membership: Some(s.configs.at(meta.last_included_index).clone()),
                    data: s.snapshot_data.clone(),
                };
                Some(vec![Applied::Snapshot(snapshot)])
            } else if s.commit_index > s.last_applied {
                let from = s.last_applied + 1;
                let to = s
                    .commit_index
                    .min(s.last_applied + shared.config.max_apply_batch as u64);
                let batch: Vec<Applied> = s
                    .log
                    .range(from..=to)
                    .cloned()
                    .map(Applied::Entry)
                    .collect();
                s.last_applied = to;
                Some(batch)
            } else {
                None
            }
        };
        match batch {
            Some(batch) => {
                if sender.send(batch).await.is_err() {
                    // The consumer dropped the stream; keep the node running without applying.
                    return;
                }
            }
            None => shared.apply_wake.notified().await,
        }
    }
}
