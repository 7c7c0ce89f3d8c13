//! [`DiskStorage`]: the queue `submit` pushes onto, the writer task that drains it in groups,
//! and the durability record `wait_durable` registers with.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use keel::{BoxFuture, Recovered, SnapshotSpool, Storage, StorageError, WriteBatch};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::bounds::LogBounds;
use crate::error::DiskError;
use crate::recovery;
use crate::writer::{Figures, LogWriter};

/// How to open a data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskOptions {
    /// The node this data dir belongs to; recorded on first open and checked on every open.
    pub node_id: u64,
    /// The cluster the node belongs to; recorded and checked like `node_id`.
    pub cluster_id: u64,
    /// A new segment is started once the current one reaches this size (a segment holds at
    /// least one record, so it can exceed it by one record). Compaction deletes whole segments,
    /// so smaller segments free disk space sooner; larger ones mean fewer files.
    pub segment_size_bytes: u64,
    /// Create segments zero-filled to `segment_size_bytes`, so that appends overwrite blocks
    /// the file already has and an `fdatasync` writes only the data: on the development
    /// machine that made a 4-16 KiB append + `fdatasync` 30-45% faster than growing the file.
    /// The next segment is zero-filled by a background thread while the current one fills,
    /// starting at 1/2, 5/8 or 3/4 of it by node id (so that the members of a cluster, which
    /// fill their segments at the same log positions, do not all zero-fill at once).
    /// Costs a segment's size of disk space up front (and one more while the next is being
    /// prepared). Off: segments grow with each append.
    pub preallocate: bool,
}

impl DiskOptions {
    /// The default segment size: 64 MiB.
    pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 << 20;

    /// Options for `node_id` of `cluster_id`, with the default segment size, preallocated.
    pub fn new(node_id: u64, cluster_id: u64) -> Self {
        DiskOptions {
            node_id,
            cluster_id,
            segment_size_bytes: Self::DEFAULT_SEGMENT_SIZE_BYTES,
            preallocate: true,
        }
    }
}

/// Durable [`Storage`] in a data dir: a write-ahead log with group commit, and snapshot files.
///
/// Open it with [`DiskStorage::open`] inside a tokio runtime, hand it to `keel::Raft::new` (as
/// `Arc<dyn Storage>`), and [`close`](DiskStorage::close) it when the node stops. See the
/// crate docs for the files and the recovery rules.
pub struct DiskStorage {
    shared: Arc<Shared>,
    dir: PathBuf,
    recovered: Mutex<Option<Recovered>>,
    writer_task: Mutex<Option<JoinHandle<()>>>,
}

/// What `submit`, `wait_durable` and the writer task share.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer task when `queue` gets work or is closed.
    wake: Notify,
    /// Wakes the blocking writer while it lingers for more work (see `LINGER`).
    ready: parking_lot::Condvar,
    durable: Mutex<Durability>,
    /// `durable.seq`, readable without the lock (`Storage::durable_now`).
    durable_seq: std::sync::atomic::AtomicU64,
    figures: Arc<Figures>,
}

struct Queue {
    /// Batches submitted but not yet taken by the writer, in submission order.
    pending: Vec<WriteBatch>,
    /// Seq of the last batch submitted.
    last_seq: u64,
    /// Seq of the last batch queued for writing: the last of `pending` if any. Behind
    /// `last_seq` once `close` was called, since later batches are not written.
    queued_seq: u64,
    /// The log as it will be once every submitted batch is written; `submit` checks new batches
    /// against it.
    log: LogBounds,
    mode: Mode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Accepting batches.
    Open,
    /// `close` was called: the writer writes what is queued, then stops.
    Closing,
    /// Nothing more is written: crashed, failed, or closed.
    Stopped,
}

/// How far the log is durable, why the storage stopped (if it did), and who waits for what.
#[derive(Default)]
struct Durability {
    seq: u64,
    stopped: Option<StorageError>,
    /// Waiters for writes not yet durable, sorted by seq: each fsync wakes exactly those it made
    /// durable (a broadcast would wake every waiter on every fsync). As many as writes in
    /// flight, which the caller bounds.
    waiting: VecDeque<(u64, oneshot::Sender<Result<(), StorageError>>)>,
}

impl Durability {
    /// Marks writes through `seq` durable and takes their waiters.
    fn advance(&mut self, seq: u64) -> Vec<oneshot::Sender<Result<(), StorageError>>> {
        self.seq = self.seq.max(seq);
        let done = self.waiting.partition_point(|(s, _)| *s <= self.seq);
        self.waiting.drain(..done).map(|(_, w)| w).collect()
    }
}

impl DiskStorage {
    /// Opens (or creates) the data dir `dir` for `options.node_id`, recovers its contents and
    /// starts the log writer.
    ///
    /// Recovery runs synchronously here: it replays the log, verifying every checksum, cuts a
    /// torn last record off, and fails with a [`DiskError`] naming the file and offset on any
    /// other damage. Creating a new data dir with `preallocate` zero-fills its first segment
    /// here too (64 MiB by default: a fraction of a second). Must be called within a tokio
    /// runtime.
    pub fn open(dir: &Path, options: DiskOptions) -> Result<DiskStorage, DiskError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DiskError::NoRuntime)?;
        let figures = Arc::new(Figures::default());
        let opened = recovery::open(dir, &options, figures.clone())?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                last_seq: 0,
                queued_seq: 0,
                log: opened.log,
                mode: Mode::Open,
            }),
            wake: Notify::new(),
            ready: parking_lot::Condvar::new(),
            durable: Mutex::new(Durability::default()),
            durable_seq: std::sync::atomic::AtomicU64::new(0),
            figures,
        });
        let writer_task = runtime.spawn(run_writer(shared.clone(), opened.writer));
        Ok(DiskStorage {
            shared,
            dir: dir.to_path_buf(),
            recovered: Mutex::new(Some(opened.recovered)),
            writer_task: Mutex::new(Some(writer_task)),
        })
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of hard state and log as `keel::storage::MemImage::raft_state_size` counts them
    /// (each entry's encoded length plus 8, plus 17), as of the last durable write: the figure
    /// services compare with their log-size limit to decide when to snapshot. It drops as soon
    /// as a snapshot compacts the log, while [`log_disk_bytes`](Self::log_disk_bytes) drops only
    /// when whole segments are deleted.
    pub fn raft_state_size(&self) -> usize {
        self.shared.figures.raft_state_bytes.load(Ordering::Relaxed) as usize
    }

    /// Bytes of the current snapshot's data (0 without a snapshot), as
    /// `MemImage::snapshot_size` counts them.
    pub fn snapshot_size(&self) -> usize {
        self.shared.figures.snapshot_bytes.load(Ordering::Relaxed) as usize
    }

    /// Bytes of log segment files on disk: what the log costs in disk space, including records
    /// that truncation or compaction made obsolete but whose segments are still in use.
    pub fn log_disk_bytes(&self) -> u64 {
        self.shared.figures.log_disk_bytes.load(Ordering::Relaxed)
    }

    /// Calls `observer` with the duration of every log `fdatasync` from now on (for a latency
    /// histogram).
    pub fn set_sync_observer(&self, observer: crate::writer::SyncObserver) {
        *self.shared.figures.sync_observer.lock() = Some(observer);
    }

    /// `fdatasync` calls on log segments since open: with group commit, far fewer than the
    /// batches written.
    pub fn log_sync_count(&self) -> u64 {
        self.shared.figures.log_syncs.load(Ordering::Relaxed)
    }

    /// Writes everything submitted so far, stops the writer and releases the data dir. Later
    /// submissions are not written; their waiters get [`StorageError::Closed`]. Returns the
    /// error that stopped the storage earlier, if one did.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.shared.figures.give_up.store(true, Ordering::Relaxed);
        {
            let mut queue = self.shared.queue.lock();
            if queue.mode == Mode::Open {
                queue.mode = Mode::Closing;
            }
        }
        self.shared.ready.notify_one();
        self.shared.wake.notify_one();
        self.join_writer().await;
        match self.shared.durable.lock().stopped.clone() {
            None | Some(StorageError::Closed) => Ok(()),
            Some(error) => Err(error),
        }
    }

    /// Simulates a crash, for tests: drops every batch not yet handed to the disk, fails their
    /// waiters with [`StorageError::Closed`], and stops the writer once the write in flight (if
    /// any) returns, without reporting it durable. Files stay as they are; the data dir is
    /// released when this returns.
    pub async fn crash(&self) {
        self.shared.figures.give_up.store(true, Ordering::Relaxed);
        {
            let mut queue = self.shared.queue.lock();
            queue.mode = Mode::Stopped;
            queue.pending.clear();
        }
        self.shared.stop(StorageError::Closed);
        self.shared.wake.notify_one();
        self.join_writer().await;
    }

    async fn join_writer(&self) {
        let task = self.writer_task.lock().take();
        if let Some(task) = task {
            // A panic in the writer was already reported to the waiters.
            let _ = task.await;
        }
    }

    /// Test probe: how many times opening synced the segment it found last.
    #[cfg(test)]
    pub(crate) fn recovery_sync_count(&self) -> u64 {
        self.shared
            .figures
            .recovery_syncs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Test hook: fail file creations and segment writes with ENOSPC while `full`.
    #[cfg(test)]
    pub(crate) fn set_disk_full(&self, full: bool) {
        self.shared
            .figures
            .disk_full
            .store(full, std::sync::atomic::Ordering::Relaxed);
    }

    /// Test hook: make every fsync from now on fail, as a dying disk's would.
    #[cfg(test)]
    pub(crate) fn fail_syncs(&self) {
        self.shared
            .figures
            .fail_syncs
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for DiskStorage {
    /// Lets the writer finish what was submitted, then stop; nobody waits for it. Use
    /// [`DiskStorage::close`] to know when the data dir is released.
    fn drop(&mut self) {
        self.shared.figures.give_up.store(true, Ordering::Relaxed);
        let mut queue = self.shared.queue.lock();
        if queue.mode == Mode::Open {
            queue.mode = Mode::Closing;
        }
        drop(queue);
        self.shared.wake.notify_one();
    }
}

impl std::fmt::Debug for DiskStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStorage")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Storage for DiskStorage {
    /// Returns what `open` recovered. The state is handed over, not kept: a second call is an
    /// error, so the storage does not pin the recovered log in memory for the node's life.
    fn recover(&self) -> Result<Recovered, StorageError> {
        self.recovered.lock().take().ok_or_else(|| {
            DiskError::AlreadyRecovered {
                dir: self.dir.clone(),
            }
            .into()
        })
    }

    /// Queues the batch for the writer and wakes it; never blocks on I/O.
    ///
    /// # Panics
    ///
    /// If the batch breaks the storage contract (entries that do not follow the log), as
    /// `MemImage::apply` does, or holds an entry of term 0: that is a bug in the caller.
    fn submit(&self, batch: WriteBatch) -> u64 {
        let mut queue = self.shared.queue.lock();
        check_batch(&mut queue.log, &batch);
        queue.last_seq += 1;
        let seq = queue.last_seq;
        if queue.mode == Mode::Open {
            queue.pending.push(batch);
            queue.queued_seq = seq;
            drop(queue);
            self.shared.ready.notify_one();
            self.shared.wake.notify_one();
        }
        seq
    }

    fn wait_durable(&self, seq: u64) -> BoxFuture<'static, Result<(), StorageError>> {
        let receiver = {
            let mut durable = self.shared.durable.lock();
            if durable.seq >= seq {
                return Box::pin(std::future::ready(Ok(())));
            }
            if let Some(error) = &durable.stopped {
                return Box::pin(std::future::ready(Err(error.clone())));
            }
            let (sender, receiver) = oneshot::channel();
            let at = durable.waiting.partition_point(|(s, _)| *s <= seq);
            durable.waiting.insert(at, (seq, sender));
            receiver
        };
        Box::pin(async move { receiver.await.unwrap_or(Err(StorageError::Closed)) })
    }

    /// Why the writer waits: the shortage it met (a full disk, no file descriptors), while it
    /// lasts.
    fn unavailable(&self) -> Option<String> {
        if !self.shared.figures.short.load(Ordering::Relaxed) {
            return None;
        }
        self.shared.figures.unavailable.lock().clone()
    }

    fn disk_bytes(&self) -> Option<u64> {
        Some(self.log_disk_bytes() + self.snapshot_size() as u64)
    }

    /// A spool file in the data dir, with no name (see `crate::spool`).
    fn spool_snapshot(&self) -> Result<Box<dyn SnapshotSpool>, StorageError> {
        Ok(Box::new(crate::spool::DiskSpool::new(&self.dir)))
    }

    fn durable_now(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }
}

/// Moves `log` by `batch`, panicking where `MemImage::apply` would, and on entries of term 0
/// (Raft's terms start at 1, and `keel::codec` refuses to decode term 0, so such a log could
/// not be recovered).
fn check_batch(log: &mut LogBounds, batch: &WriteBatch) {
    if let Some(index) = batch.truncate_after {
        log.truncate_after(index);
    }
    for (i, entry) in batch.entries.iter().enumerate() {
        assert_eq!(
            entry.index,
            log.next_index() + i as u64,
            "appended entries must be consecutive and follow the log"
        );
        assert_ne!(entry.term, 0, "entry {} has term 0", entry.index);
    }
    log.append(batch.entries.len() as u64);
    if let Some(index) = batch.compact_through {
        log.compact_through(index);
    }
}

impl Shared {
    /// Stops the storage: every waiter for a write that is not durable gets `error`. The first
    /// reason sticks.
    fn stop(&self, error: StorageError) {
        let (waiting, error) = {
            let mut durable = self.durable.lock();
            let error = durable.stopped.get_or_insert(error).clone();
            (std::mem::take(&mut durable.waiting), error)
        };
        for (_, waiter) in waiting {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    /// Publishes that writes through `seq` are durable and wakes their waiters.
    fn publish_durable(&self, seq: u64) {
        let woken = {
            let mut durable = self.durable.lock();
            let woken = durable.advance(seq);
            self.durable_seq.store(durable.seq, Ordering::Release);
            woken
        };
        for waiter in woken {
            let _ = waiter.send(Ok(()));
        }
    }
}

/// The writer task: waits for batches, then has them written on tokio's blocking pool.
///
/// The I/O runs in `spawn_blocking` rather than on a thread of our own: tokio's paused test
/// clock does not auto-advance while a blocking task runs, so simulated time stands still
/// while a write is in flight, as it would for any other pending work.
async fn run_writer(shared: Arc<Shared>, writer: LogWriter) {
    let dir = writer.dir().to_path_buf();
    let mut writer = Some(writer);
    loop {
        match next_step(&shared) {
            Step::Wait => shared.wake.notified().await,
            Step::Stop => {
                // Dropping the writer waits for its helper threads (a segment being zero-filled,
                // files being deleted): blocking work, kept off the runtime's workers.
                let w = writer.take().expect("the writer is back after each step");
                let _ = tokio::task::spawn_blocking(move || drop(w)).await;
                return;
            }
            Step::Write => {
                let mut w = writer.take().expect("the writer is back after each step");
                let on_pool = shared.clone();
                let written = tokio::task::spawn_blocking(move || {
                    // A writer that does not go on is dropped here, on the blocking pool.
                    write_while_queued(&on_pool, &mut w).then_some(w)
                })
                .await;
                match written {
                    Ok(Some(w)) => writer = Some(w),
                    Ok(None) => return,
                    Err(error) => {
                        let error = DiskError::WriterStopped {
                            dir,
                            reason: error.to_string(),
                        };
                        report(&shared, Err(error), None);
                        return;
                    }
                }
            }
        }
    }
}

/// What the writer task does next.
enum Step {
    /// Nothing is queued.
    Wait,
    /// Batches are queued.
    Write,
    /// The storage stopped (crashed, failed, or closed with nothing left to write).
    Stop,
}

fn next_step(shared: &Shared) -> Step {
    let mut queue = shared.queue.lock();
    match queue.mode {
        Mode::Stopped => Step::Stop,
        _ if !queue.pending.is_empty() => Step::Write,
        Mode::Open => Step::Wait,
        Mode::Closing => {
            queue.mode = Mode::Stopped;
            drop(queue);
            shared.stop(StorageError::Closed);
            Step::Stop
        }
    }
}

/// Group commit, on the blocking pool: takes everything queued, writes it with one fdatasync,
/// tells the waiters, and repeats while batches keep arriving (so a busy log pays the hand-off
/// to the blocking pool once, not once per group). Files a group made obsolete (compaction, a
/// replaced snapshot) are deleted after its waiters were told. Returns whether the writer goes
/// on.
/// How long the blocking writer waits for more work before handing the writer back to the
/// async task. A writer that waits for each write and submits the next at once (one client, one
/// follower) finds it still here, which saves two thread hand-offs per write.
const LINGER: std::time::Duration = std::time::Duration::from_micros(250);

fn write_while_queued(shared: &Shared, writer: &mut LogWriter) -> bool {
    // The queue's previous buffer, reused for the next group.
    let mut spare = Vec::new();
    loop {
        let (mut group, last_seq) = {
            let mut queue = shared.queue.lock();
            if queue.mode == Mode::Open && queue.pending.is_empty() {
                shared.ready.wait_for(&mut queue, LINGER);
            }
            if queue.mode == Mode::Stopped || queue.pending.is_empty() {
                return true;
            }
            let group = std::mem::replace(&mut queue.pending, std::mem::take(&mut spare));
            (group, queue.queued_seq)
        };
        let written = writer.write_group(&group);
        group.clear();
        spare = group;
        if !report(shared, written, Some(last_seq)) {
            return false;
        }
        if writer.has_garbage() {
            writer.collect_garbage();
        }
    }
}

/// Reports the outcome of a writer step: on success, publishes `durable_seq` (if given); on
/// error, stops the storage for good. Returns whether the writer goes on.
fn report(shared: &Shared, result: Result<(), DiskError>, durable_seq: Option<u64>) -> bool {
    let mut queue = shared.queue.lock();
    if queue.mode == Mode::Stopped {
        // Crashed while the step ran: report nothing more.
        return false;
    }
    match result {
        Ok(()) => {
            drop(queue);
            if let Some(seq) = durable_seq {
                shared.publish_durable(seq);
            }
            true
        }
        Err(error) => {
            // Never retry: after a failed fsync the kernel may have dropped the dirty pages,
            // so a later fsync could "succeed" without the data (fsyncgate).
            tracing::error!(%error, "storage I/O failed; the storage is stopped for good");
            queue.mode = Mode::Stopped;
            queue.pending.clear();
            drop(queue);
            shared.stop(StorageError::backend(error));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use keel::{Entry, HardState, Payload};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            index,
            term: 1,
            payload: Payload::Command(bytes::Bytes::from_static(b"x")),
        }
    }

    /// A batch submitted after `close` is not written, so it must never be reported durable,
    /// even when the writer's last group went to disk after it was submitted.
    #[tokio::test]
    async fn a_batch_submitted_while_closing_is_not_reported_durable() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};

        let dir = tempfile::tempdir().expect("temp dir");
        let storage = DiskStorage::open(dir.path(), DiskOptions::new(1, 1)).expect("open");
        let queued = storage.submit(WriteBatch {
            entries: vec![entry(1)],
            ..Default::default()
        });
        // Start closing; the writer cannot run before this test task yields (one thread), so
        // batch 1 is still queued.
        let mut closing = Box::pin(storage.close());
        let polled = closing
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(matches!(polled, Poll::Pending), "the writer has work left");
        let late = storage.submit(WriteBatch {
            entries: vec![entry(2)],
            ..Default::default()
        });
        let late_durable = storage.wait_durable(late);
        closing.await.expect("closed cleanly");

        storage
            .wait_durable(queued)
            .await
            .expect("written before closing");
        let late_durable = late_durable.await;
        assert!(
            matches!(late_durable, Err(StorageError::Closed)),
            "a batch that was never written: {late_durable:?}"
        );
        let reopened = DiskStorage::open(dir.path(), DiskOptions::new(1, 1)).expect("reopen");
        assert_eq!(reopened.recover().expect("recover").entries.len(), 1);
        reopened.close().await.expect("close");
    }

    #[tokio::test]
    async fn a_failed_fsync_stops_the_storage_and_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = DiskStorage::open(dir.path(), DiskOptions::new(1, 1)).expect("open");
        let seq = storage.submit(WriteBatch {
            entries: vec![entry(1)],
            ..Default::default()
        });
        storage.wait_durable(seq).await.expect("durable");

        storage.fail_syncs();
        let failed = storage.submit(WriteBatch {
            entries: vec![entry(2)],
            ..Default::default()
        });
        let error = storage
            .wait_durable(failed)
            .await
            .expect_err("fsync failed");
        let message = error.to_string();
        assert!(
            message.contains("fdatasync segment") && message.contains("00000000000000000001.wal"),
            "{message}"
        );
        // Earlier writes stay durable; later ones fail with the same error, without retrying.
        storage.wait_durable(seq).await.expect("still durable");
        let later = storage.submit(WriteBatch {
            hard_state: Some(HardState {
                current_term: 2,
                voted_for: None,
            }),
            ..Default::default()
        });
        let error = storage.wait_durable(later).await.expect_err("stopped");
        assert_eq!(error.to_string(), message);
        assert_eq!(
            storage.close().await.expect_err("failed").to_string(),
            message
        );
    }

    /// Waits (in real time: the writer sleeps on a blocking thread) until `ready` holds.
    async fn eventually(what: &str, ready: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !ready() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A full disk is waited out: the write stays queued and unacknowledged, the storage says
    /// why, and once space is back the write and every later one becomes durable, and is there
    /// after a restart. Whichever file operation meets the shortage: appending to a segment,
    /// starting the next segment, writing a snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_delays_writes_and_loses_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = DiskOptions {
            // Small segments, so that the writes below start new ones.
            segment_size_bytes: 4096,
            preallocate: false,
            ..DiskOptions::new(1, 1)
        };
        let storage = DiskStorage::open(dir.path(), options.clone()).expect("open");
        let mut index = 0;
        let mut append = |n: usize| {
            let entries = (0..n)
                .map(|_| {
                    index += 1;
                    Entry {
                        payload: Payload::Command(bytes::Bytes::from(vec![7u8; 300])),
                        ..entry(index)
                    }
                })
                .collect();
            storage.submit(WriteBatch {
                entries,
                ..Default::default()
            })
        };
        let first = append(3);
        storage.wait_durable(first).await.expect("durable");
        for round in 0..3 {
            storage.set_disk_full(true);
            // Round 0 writes into the current segment; round 1 starts new segments (more than a
            // segment's worth); round 2 writes a snapshot.
            let blocked = match round {
                0 => append(1),
                1 => append(30),
                _ => storage.submit(WriteBatch {
                    snapshot: Some(keel::Snapshot {
                        meta: keel::SnapshotMeta {
                            last_included_index: 10,
                            last_included_term: 1,
                        },
                        membership: None,
                        data: bytes::Bytes::from_static(b"state at 10"),
                    }),
                    compact_through: Some(10),
                    ..Default::default()
                }),
            };
            eventually("the storage reports the shortage", || {
                storage.unavailable().is_some()
            })
            .await;
            let reason = storage.unavailable().expect("unavailable");
            assert!(reason.contains("No space left on device"), "{reason}");
            assert!(
                storage.durable_now() < blocked,
                "round {round}: reported durable while the disk is full"
            );
            // More writes queue behind it meanwhile.
            let behind = append(2);
            storage.set_disk_full(false);
            tokio::time::timeout(
                std::time::Duration::from_secs(20),
                storage.wait_durable(behind),
            )
            .await
            .expect("written once space is back")
            .expect("durable");
            assert_eq!(storage.unavailable(), None, "round {round}");
        }
        storage.close().await.expect("closed cleanly");

        let reopened = DiskStorage::open(dir.path(), options).expect("reopen");
        let recovered = reopened.recover().expect("recover");
        assert_eq!(
            recovered
                .snapshot
                .as_ref()
                .map(|s| s.meta.last_included_index),
            Some(10)
        );
        let indexes: Vec<u64> = recovered.entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, (11..=index).collect::<Vec<_>>());
        reopened.close().await.expect("close");
    }

    /// Closing a storage that waits out a shortage gives up on the queued writes (they were
    /// never acknowledged) instead of waiting for space for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_gives_up_waiting_for_space() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = DiskStorage::open(dir.path(), DiskOptions::new(1, 1)).expect("open");
        storage.set_disk_full(true);
        let seq = storage.submit(WriteBatch {
            entries: vec![entry(1)],
            ..Default::default()
        });
        let waiting = storage.wait_durable(seq);
        eventually("the storage reports the shortage", || {
            storage.unavailable().is_some()
        })
        .await;
        let closed = tokio::time::timeout(std::time::Duration::from_secs(20), storage.close())
            .await
            .expect("close returns");
        let message = closed
            .expect_err("the write was not made durable")
            .to_string();
        assert!(message.contains("No space left on device"), "{message}");
        assert!(waiting.await.is_err(), "never acknowledged");
    }
}
