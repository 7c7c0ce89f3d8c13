//! Crash-consistent storage for simulated nodes.
//!
//! A [`SimDisk`] is the part of a machine that survives a crash: the state that was durable at
//! the moment of the crash. A [`SimStorage`] is one incarnation's access to it: writes queue up
//! and become durable a short random (simulated) time later, a group at a time, like a disk with
//! fsync latency. Crashing the incarnation throws away whatever was not yet durable, so a node
//! that replies before its writes are durable is caught by the scenarios.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel::storage::MemImage;
use keel::{
    BoxFuture, MemSpool, Recovered, SnapshotSpool, Storage, StorageError, Watermark, WriteBatch,
};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::rng::SimRng;

/// What survives a crash. Cheap to clone; clones are the same disk.
#[derive(Clone, Default)]
pub struct SimDisk {
    durable: Arc<Mutex<MemImage>>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        SimDisk {
            durable: Arc::new(Mutex::new(MemImage::new())),
        }
    }

    /// Bytes of durable hard state and log (not the snapshot).
    pub fn raft_state_size(&self) -> usize {
        self.durable.lock().raft_state_size()
    }

    /// Bytes of the durable snapshot.
    pub fn snapshot_size(&self) -> usize {
        self.durable.lock().snapshot_size()
    }

    /// Whether the durable state holds the entry at `index` of `term` (see
    /// [`MemImage::holds`]).
    pub fn holds(&self, index: u64, term: u64) -> bool {
        self.durable.lock().holds(index, term)
    }

    /// A copy of the durable state.
    pub fn image(&self) -> MemImage {
        self.durable.lock().clone()
    }
}

/// One incarnation's storage on a [`SimDisk`].
pub struct SimStorage {
    disk: SimDisk,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    durable: Watermark,
    flusher: AbortHandle,
    rng: SimRng,
    max_fsync: Duration,
}

struct Queue {
    pending: VecDeque<(u64, WriteBatch)>,
    last_seq: u64,
    crashed: bool,
    durable: Watermark,
}

impl SimStorage {
    /// Opens `disk` for a new incarnation whose writes take up to `max_fsync` of simulated time
    /// to become durable. Must be called within the simulation's runtime.
    pub fn open(disk: &SimDisk, rng: SimRng, max_fsync: Duration) -> Arc<Self> {
        let durable = Watermark::new();
        let queue = Arc::new(Mutex::new(Queue {
            pending: VecDeque::new(),
            last_seq: 0,
            crashed: false,
            durable: durable.clone(),
        }));
        let wake = Arc::new(Notify::new());
        let flusher = tokio::spawn(flush_loop(
            disk.clone(),
            queue.clone(),
            wake.clone(),
            rng.clone(),
            max_fsync,
        ))
        .abort_handle();
        Arc::new(SimStorage {
            disk: disk.clone(),
            queue,
            wake,
            durable,
            flusher,
            rng,
            max_fsync,
        })
    }

    /// The machine crashed: writes not yet durable are lost, and nothing more is written.
    pub fn crash(&self) {
        self.flusher.abort();
        let mut queue = self.queue.lock();
        queue.crashed = true;
        queue.pending.clear();
        queue.durable.close();
    }
}

impl Drop for SimStorage {
    fn drop(&mut self) {
        self.crash();
    }
}

/// The simulated fsync: waits a random delay, then makes everything queued durable at once.
async fn flush_loop(
    disk: SimDisk,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    rng: SimRng,
    max_fsync: Duration,
) {
    loop {
        if queue.lock().pending.is_empty() {
            wake.notified().await;
            continue;
        }
        let delay_us = rng.below(max_fsync.as_micros() as u64 + 1);
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        let mut queue = queue.lock();
        let mut last = None;
        let mut image = disk.durable.lock();
        while let Some((seq, batch)) = queue.pending.pop_front() {
            image.apply(batch);
            last = Some(seq);
        }
        drop(image);
        if let Some(seq) = last
            && !queue.crashed
        {
            queue.durable.advance(seq);
        }
    }
}

impl Storage for SimStorage {
    fn recover(&self) -> Result<Recovered, StorageError> {
        Ok(self.disk.durable.lock().recovered())
    }

    fn submit(&self, batch: WriteBatch) -> u64 {
        let mut queue = self.queue.lock();
        queue.last_seq += 1;
        let seq = queue.last_seq;
        if !queue.crashed {
            queue.pending.push_back((seq, batch));
            self.wake.notify_one();
        }
        seq
    }

    fn wait_durable(&self, seq: u64) -> BoxFuture<'static, Result<(), StorageError>> {
        let durable = self.durable.clone();
        Box::pin(async move {
            durable
                .wait_for(seq)
                .await
                .map_err(|_| StorageError::Closed)
        })
    }

    /// A spool whose every write takes a random delay, like a disk's: leaders change, nodes
    /// crash and chunks arrive again while a chunk is being written.
    fn spool_snapshot(&self) -> Result<Box<dyn SnapshotSpool>, StorageError> {
        Ok(Box::new(SimSpool {
            inner: MemSpool::default(),
            queue: self.queue.clone(),
            rng: self.rng.clone(),
            max_write: self.max_fsync,
        }))
    }
}

/// A snapshot being received by a simulated node: in memory, written with simulated latency.
struct SimSpool {
    inner: MemSpool,
    queue: Arc<Mutex<Queue>>,
    rng: SimRng,
    max_write: Duration,
}

impl SnapshotSpool for SimSpool {
    fn write(&mut self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let delay_us = self.rng.below(self.max_write.as_micros() as u64 + 1);
            tokio::time::sleep(Duration::from_micros(delay_us)).await;
            if self.queue.lock().crashed {
                return Err(StorageError::Closed);
            }
            self.inner.write(offset, data).await
        })
    }

    fn finish(self: Box<Self>, len: u64) -> Result<Bytes, StorageError> {
        Box::new(self.inner).finish(len)
    }
}
