//! The log writer: turns a group of batches into one buffered write and one `fdatasync`.
//!
//! It does blocking I/O, so the writer task in `storage.rs` moves it onto tokio's blocking pool
//! for each call; only one call runs at a time, which is what orders the writes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use bytes::BytesMut;
use keel::{Snapshot, WriteBatch};

use crate::dir;
use crate::error::DiskError;
use crate::format::{self, Checkpoint, SEGMENT_HEADER_LEN, SnapshotRef};

/// The group buffer's starting size, and the most it keeps between groups.
const BUF_INITIAL_BYTES: usize = 64 << 10;
const BUF_KEEP_BYTES: usize = 8 << 20;

/// Called with the duration of every log `fdatasync`, for metrics.
pub type SyncObserver = std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync>;

/// Sizes the writer publishes for services deciding when to snapshot.
#[derive(Default)]
pub(crate) struct Figures {
    /// Bytes of segment files.
    pub log_disk_bytes: AtomicU64,
    /// `MemImage::raft_state_size` of the stored state.
    pub raft_state_bytes: AtomicU64,
    pub snapshot_bytes: AtomicU64,
    /// `fdatasync` calls on log segments since open.
    pub log_syncs: AtomicU64,
    /// Test probe: `fdatasync`s recovery made of the segment it found last.
    #[cfg(test)]
    pub recovery_syncs: AtomicU64,
    /// Test hook: fail every fsync from now on, as a dying disk would.
    #[cfg(test)]
    pub fail_syncs: std::sync::atomic::AtomicBool,
    pub sync_observer: parking_lot::Mutex<Option<SyncObserver>>,
    /// Set while the writer waits out a shortage (see [`until_available`]); `unavailable`
    /// says why.
    pub short: AtomicBool,
    pub unavailable: parking_lot::Mutex<Option<String>>,
    /// Set when the storage closes or crashes: a writer waiting out a shortage gives up.
    pub give_up: AtomicBool,
    /// Test hook: fail file creations and segment writes with ENOSPC while set, as a full disk
    /// would.
    #[cfg(test)]
    pub disk_full: AtomicBool,
}

/// The first pause before an operation that met a shortage runs again, and the longest.
const SHORTAGE_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);
const SHORTAGE_MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `op` until it succeeds or fails with anything but a shortage
/// ([`DiskError::is_shortage`]: a full disk, no file descriptors), pausing between attempts.
///
/// Every operation run this way leaves nothing behind when it fails that running it again does
/// not replace (a write at the same offset, a `.tmp` file created anew), and the writer's
/// state changes only once it succeeded: so a full disk delays writes, which stay queued and
/// unacknowledged, instead of stopping the storage for good. Meanwhile `figures.unavailable`
/// says why (a leader refuses proposals: `Storage::unavailable`). Gives up, returning the
/// error, once the storage closes.
fn until_available<T>(
    figures: &Figures,
    mut op: impl FnMut() -> Result<T, DiskError>,
) -> Result<T, DiskError> {
    let mut pause = SHORTAGE_FIRST_PAUSE;
    let mut since = None;
    loop {
        match op() {
            Ok(value) => {
                // A load first: the common case, every write, stays a plain read.
                if figures.short.load(Ordering::Relaxed)
                    && figures.short.swap(false, Ordering::Relaxed)
                {
                    figures.unavailable.lock().take();
                    tracing::warn!(
                        after = ?since.map(|s: std::time::Instant| s.elapsed()),
                        "the storage can write again; queued writes go on"
                    );
                }
                return Ok(value);
            }
            Err(error) if error.is_shortage() && !figures.give_up.load(Ordering::Relaxed) => {
                let reason = error.to_string();
                let mut unavailable = figures.unavailable.lock();
                if unavailable.as_deref() != Some(reason.as_str()) {
                    tracing::error!(
                        %error,
                        "the storage cannot write; writes wait (a leader refuses new ones) until \
                         the resource is back"
                    );
                    *unavailable = Some(reason);
                }
                drop(unavailable);
                figures.short.store(true, Ordering::Relaxed);
                since.get_or_insert_with(std::time::Instant::now);
                std::thread::sleep(pause);
                pause = (pause * 2).min(SHORTAGE_MAX_PAUSE);
            }
            Err(error) => return Err(error),
        }
    }
}

/// Test hook: the error a full disk gives `op` on `path`, while `Figures::disk_full` is set.
#[cfg(test)]
fn injected_shortage(figures: &Figures, op: &'static str, path: &Path) -> Result<(), DiskError> {
    if figures.disk_full.load(Ordering::Relaxed) {
        return Err(DiskError::io(op, path)(std::io::Error::from_raw_os_error(
            libc::ENOSPC,
        )));
    }
    Ok(())
}

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Figures")
            .field("log_disk_bytes", &self.log_disk_bytes)
            .field("raft_state_bytes", &self.raft_state_bytes)
            .field("snapshot_bytes", &self.snapshot_bytes)
            .field("log_syncs", &self.log_syncs)
            .finish_non_exhaustive()
    }
}

/// A segment file the writer knows about.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    pub seq: u64,
    /// Bytes of header and records written to it so far: where the next record goes.
    pub len: u64,
    /// Size of the file: `len`, or more if it was preallocated (the rest is zeros).
    pub file_len: u64,
    /// The state it starts from (its header's checkpoint).
    pub start: Checkpoint,
    /// What its records' checksums start from (by its header's version).
    pub seal: format::Seal,
}

/// Deletes obsolete files on a thread of its own, in the order given.
///
/// Freeing a file's blocks is where the cost is: this machine's file system discards them, and
/// unlinking a 64 MiB segment stalled the disk for about 45 ms, on every node of a local
/// cluster at once (they snapshot at the same log position). So a file is first renamed to a
/// `.tmp` name (recovery removes those; the rename keeps the log's segments contiguous), then
/// shrunk in steps with pauses between them, then unlinked. When the storage closes, what is
/// left is unlinked without pauses.
///
/// After a failure it deletes nothing more (a later segment deleted before an earlier one
/// would leave a gap in the log that recovery refuses); the files stay for the next recovery to
/// find obsolete.
///
/// Its queue holds at most `DELETE_QUEUE_BATCHES` batches. A writer that makes files obsolete
/// faster than they are freed then waits, and the deleter skips its pauses meanwhile: neither
/// the queue nor the obsolete files on disk grow without bound.
struct Deleter {
    sender: Option<std::sync::mpsc::SyncSender<Vec<PathBuf>>>,
    hurry: std::sync::Arc<AtomicBool>,
    /// Set when the storage closes: stop retrying deletions that met a shortage.
    closing: std::sync::Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Most batches of obsolete files queued for the deleter (one batch per compaction).
const DELETE_QUEUE_BATCHES: usize = 16;

/// How much a file shrinks at a time, and the pause after each step.
const SHRINK_STEP_BYTES: u64 = 4 << 20;
const SHRINK_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

impl Deleter {
    fn start(dir: &Path) -> Result<Deleter, DiskError> {
        let (sender, receiver) =
            std::sync::mpsc::sync_channel::<Vec<PathBuf>>(DELETE_QUEUE_BATCHES);
        let dir_handle = dir::open_dir_handle(dir)?;
        let data_dir = dir.to_path_buf();
        let hurry = std::sync::Arc::new(AtomicBool::new(false));
        let in_thread = hurry.clone();
        let closing = std::sync::Arc::new(AtomicBool::new(false));
        let in_closing = closing.clone();
        let thread = std::thread::Builder::new()
            .name("keel-disk-delete".into())
            .spawn(move || {
                let mut failed = false;
                for paths in receiver {
                    if failed {
                        continue;
                    }
                    // Out of file descriptors, say: try again a little later, unless closing.
                    let mut pause = SHORTAGE_FIRST_PAUSE;
                    let deleted = loop {
                        match delete_all(&paths, &data_dir, &dir_handle, &in_thread) {
                            Err(error) if error.is_shortage() && !in_closing.load(Ordering::Relaxed) => {
                                tracing::warn!(%error, "cannot delete obsolete log files yet; trying again");
                                std::thread::park_timeout(pause);
                                pause = (pause * 2).min(SHORTAGE_MAX_PAUSE);
                            }
                            other => break other,
                        }
                    };
                    if let Err(error) = deleted {
                        tracing::warn!(%error, "cannot delete obsolete log files; they stay until the next restart");
                        failed = true;
                    }
                }
            })
            .map_err(DiskError::io("start the file deleter thread for", dir))?;
        Ok(Deleter {
            sender: Some(sender),
            hurry,
            closing,
            thread: Some(thread),
        })
    }

    /// Queues `paths` for deletion. Returns whether the queue was full, so that this waited
    /// for the deleter to take a batch.
    fn delete(&self, paths: Vec<PathBuf>) -> bool {
        use std::sync::mpsc::TrySendError;
        let Some(sender) = &self.sender else {
            return false;
        };
        // The thread only ends after the sender is dropped, so it takes what is sent.
        match sender.try_send(paths) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(paths)) => {
                tracing::warn!(
                    "{DELETE_QUEUE_BATCHES} batches of obsolete log files wait for deletion; \
                     the log writer waits for the deleter, which stops pausing"
                );
                self.hurry.store(true, Ordering::Relaxed);
                if let Some(thread) = &self.thread {
                    thread.thread().unpark();
                }
                let _ = sender.send(paths);
                self.hurry.store(false, Ordering::Relaxed);
                true
            }
        }
    }
}

fn delete_all(
    paths: &[PathBuf],
    data_dir: &Path,
    dir_handle: &File,
    hurry: &AtomicBool,
) -> Result<(), DiskError> {
    let mut doomed = Vec::with_capacity(paths.len());
    for path in paths {
        let tmp = dir::tmp_path(path);
        match std::fs::rename(path, &tmp) {
            Ok(()) => doomed.push(tmp),
            // Renamed by an earlier attempt that then met a shortage.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && tmp.exists() => {
                doomed.push(tmp)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(DiskError::io("rename for deletion", path)(error)),
        }
    }
    dir::sync_dir(dir_handle, data_dir)?;
    for tmp in &doomed {
        shrink(tmp, hurry)?;
        dir::remove(tmp)?;
    }
    dir::sync_dir(dir_handle, data_dir)
}

/// Shrinks `path` to nothing a step at a time, pausing between steps (unless in a hurry).
fn shrink(path: &Path, hurry: &AtomicBool) -> Result<(), DiskError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(DiskError::io("open for deletion", path))?;
    let mut len = file.metadata().map_err(DiskError::io("stat", path))?.len();
    while len > SHRINK_STEP_BYTES && !hurry.load(Ordering::Relaxed) {
        len -= SHRINK_STEP_BYTES;
        file.set_len(len)
            .map_err(DiskError::io("shrink for deletion", path))?;
        file.sync_data()
            .map_err(DiskError::io("fsync for deletion", path))?;
        std::thread::park_timeout(SHRINK_PAUSE);
    }
    Ok(())
}

impl Drop for Deleter {
    /// Finishes the queued deletions, without pauses: once the storage is closed, nothing
    /// changes its files.
    fn drop(&mut self) {
        self.hurry.store(true, Ordering::Relaxed);
        self.closing.store(true, Ordering::Relaxed);
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The zero-filled file the next segment will be, prepared by a background thread.
struct Spare {
    seq: u64,
    thread: JoinHandle<Result<File, DiskError>>,
    control: std::sync::Arc<FillControl>,
}

impl Spare {
    /// Waits for the file, telling the thread to finish without pauses first: the writer
    /// needs it now. `None` if it failed (then creating the segment zero-fills it anew, or
    /// reports the error, most likely a full disk).
    fn take(self) -> Option<File> {
        self.control.hurry.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        match self.thread.join() {
            Ok(Ok(file)) => Some(file),
            Ok(Err(error)) => {
                tracing::warn!(%error, "preallocating the next segment failed");
                None
            }
            Err(_) => {
                tracing::warn!("the thread preallocating the next segment panicked");
                None
            }
        }
    }

    /// Tells the thread to give up, and waits for it.
    fn cancel(self) {
        self.control.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// Owns the data dir while the storage is open: the lock, the segment being appended to, and
/// the knowledge of which files are obsolete.
pub(crate) struct LogWriter {
    dir: PathBuf,
    dir_handle: File,
    /// Held, never read: the data dir's lock lasts as long as this file is open.
    _lock: File,
    segment_size_bytes: u64,
    /// Zero-fill segments to `segment_size_bytes` (`DiskOptions::preallocate`).
    preallocate: bool,
    /// The size of the current segment at which zero-filling the next one starts (see
    /// `spare_start`).
    spare_at_bytes: u64,
    /// The next segment's file, once the current one reaches `spare_at_bytes`.
    spare: Option<Spare>,
    /// Deletes obsolete files; started on first use.
    deleter: Option<Deleter>,
    /// Oldest first; the last one is open in `file`.
    segments: VecDeque<Segment>,
    file: File,
    /// What the log holds after everything written so far; the next segment's checkpoint.
    state: Checkpoint,
    next_snapshot_id: u64,
    /// The group's records, written with one call. Reused between groups.
    buf: BytesMut,
    /// Where the last record in `buf` starts: `flush` marks it as its write's last.
    last_record: Option<usize>,
    /// The data dir's salt (see `WriterParts::salt`).
    salt: u64,
    /// Snapshot files replaced by newer ones, deleted once the replacement is durable.
    replaced_snapshots: Vec<u64>,
    /// `Entry::encoded_len` of each entry the log holds, from `state.log.first_index` on, and
    /// their sum: for the size figure services compare with their log-size limit.
    entry_sizes: VecDeque<u32>,
    entry_bytes: u64,
    figures: std::sync::Arc<Figures>,
}

/// What `LogWriter::new` needs: the result of recovery, or of creating a new data dir.
pub(crate) struct WriterParts {
    pub dir: PathBuf,
    pub dir_handle: File,
    pub lock: File,
    pub segment_size_bytes: u64,
    pub preallocate: bool,
    pub spare_at_bytes: u64,
    pub segments: VecDeque<Segment>,
    /// The last segment, open for writing (at its `len`).
    pub file: File,
    pub state: Checkpoint,
    pub next_snapshot_id: u64,
    /// `Entry::encoded_len` of each entry the log holds.
    pub entry_sizes: VecDeque<u32>,
    pub figures: std::sync::Arc<Figures>,
    /// The data dir's salt, which seals the records of every segment this build starts.
    pub salt: u64,
}

impl LogWriter {
    pub(crate) fn new(parts: WriterParts) -> Self {
        assert!(
            !parts.segments.is_empty(),
            "the writer needs a segment to append to"
        );
        let writer = LogWriter {
            dir: parts.dir,
            dir_handle: parts.dir_handle,
            _lock: parts.lock,
            segment_size_bytes: parts.segment_size_bytes,
            preallocate: parts.preallocate,
            spare_at_bytes: parts.spare_at_bytes,
            spare: None,
            deleter: None,
            segments: parts.segments,
            file: parts.file,
            state: parts.state,
            next_snapshot_id: parts.next_snapshot_id,
            buf: BytesMut::with_capacity(BUF_INITIAL_BYTES),
            last_record: None,
            salt: parts.salt,
            replaced_snapshots: Vec::new(),
            entry_bytes: parts.entry_sizes.iter().map(|&n| u64::from(n)).sum(),
            entry_sizes: parts.entry_sizes,
            figures: parts.figures,
        };
        writer.publish_figures();
        writer
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes every batch of the group in order and makes them durable together. On error the
    /// caller must stop using the writer: what reached the disk is unknown.
    pub(crate) fn write_group(&mut self, batches: &[WriteBatch]) -> Result<(), DiskError> {
        self.buf.clear();
        let mut wrote = false;
        for batch in batches.iter().filter(|b| !b.is_empty()) {
            // The snapshot file is durable before the record that makes it current is written.
            let snapshot = match &batch.snapshot {
                Some(snapshot) => Some(self.write_snapshot(snapshot)?),
                None => None,
            };
            let start = self.buf.len();
            // The buffer is written at the segment's end in one call: every record in it
            // carries that offset as its group start.
            let group_start = self.current().len;
            let seal = self.current().seal;
            format::encode_record(batch, snapshot.as_ref(), group_start, seal, &mut self.buf)
                .map_err(|bytes| DiskError::RecordTooLarge { bytes })?;
            let previous = self.last_record.replace(start);
            // A record that would run past the segment's size starts the next segment instead
            // (unless it is the segment's first), so records stay within preallocated space.
            let before = group_start + start as u64;
            let after = group_start + self.buf.len() as u64;
            if after > self.segment_size_bytes && before > SEGMENT_HEADER_LEN as u64 {
                self.buf.truncate(start);
                self.last_record = previous;
                self.flush()?;
                // The new segment's checkpoint is the state before this record: `apply` below.
                self.roll()?;
                // Encoded again: its write now begins in the new segment (sealed as it is).
                let (group_start, seal) = (self.current().len, self.current().seal);
                format::encode_record(batch, snapshot.as_ref(), group_start, seal, &mut self.buf)
                    .map_err(|bytes| DiskError::RecordTooLarge { bytes })?;
                self.last_record = Some(0);
            }
            self.apply(batch, snapshot);
            wrote = true;
        }
        if wrote {
            self.flush()?;
            self.sync()?;
            self.publish_figures();
            self.prepare_spare();
        }
        Ok(())
    }

    /// Starts zero-filling the next segment's file in the background once the current segment
    /// reaches `spare_at_bytes`, so that rolling over finds it ready (or waits only for the
    /// rest of it, written without pauses).
    fn prepare_spare(&mut self) {
        let current = self.current();
        if !self.preallocate || self.spare.is_some() || current.len < self.spare_at_bytes {
            return;
        }
        let seq = current.seq + 1;
        let path = dir::tmp_path(&dir::segment_path(&self.dir, seq));
        let size = self.segment_size_bytes;
        let control = std::sync::Arc::new(FillControl::default());
        let pace = Pace {
            pause: std::time::Duration::from_millis(10),
            control: control.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("keel-disk-prealloc".into())
            .spawn(move || zero_filled_paced(&path, size, Some(pace)));
        match spawned {
            Ok(thread) => {
                self.spare = Some(Spare {
                    seq,
                    thread,
                    control,
                })
            }
            // Rolling over will zero-fill the segment itself.
            Err(error) => {
                tracing::warn!(%error, "cannot start the thread that preallocates segments")
            }
        }
    }

    /// True if files became obsolete: replaced snapshots, or segments whose entries are all
    /// compacted.
    pub(crate) fn has_garbage(&self) -> bool {
        !self.replaced_snapshots.is_empty() || self.obsolete_segments() > 0
    }

    /// Hands obsolete files to the deleter thread. Call only once the group that made them
    /// obsolete is durable.
    ///
    /// Deleting a 64 MiB segment and syncing the directory took about 45 ms on the development
    /// machine (its file system discards freed blocks), and a snapshot can free several: done
    /// here, that stalled every write queued behind it. Nothing waits for a deletion (recovery
    /// copes with obsolete files still present), so a thread of its own does them, in order.
    pub(crate) fn collect_garbage(&mut self) {
        if self.deleter.is_none() {
            match Deleter::start(&self.dir) {
                Ok(deleter) => self.deleter = Some(deleter),
                // Out of file descriptors or threads: the files stay obsolete until a later
                // group tries again (or the next recovery removes them).
                Err(error) => {
                    tracing::warn!(%error, "cannot start deleting obsolete log files yet");
                    return;
                }
            }
        }
        let mut paths: Vec<PathBuf> = std::mem::take(&mut self.replaced_snapshots)
            .into_iter()
            .map(|id| dir::snapshot_path(&self.dir, id))
            .collect();
        // Oldest first, so a crash part way leaves a contiguous run of segments.
        for _ in 0..self.obsolete_segments() {
            let segment = self.segments.pop_front().expect("counted above");
            paths.push(dir::segment_path(&self.dir, segment.seq));
        }
        self.publish_figures();
        self.deleter.as_ref().expect("started above").delete(paths);
    }

    /// Segments at the front whose entries are all compacted. Segment k is obsolete once the
    /// log starts after the last entry that existed when segment k + 1 began: every entry k or
    /// earlier segments still contributed had an index up to there. What else they recorded
    /// (hard state, snapshot, log bounds) is in the checkpoint of segment k + 1.
    fn obsolete_segments(&self) -> usize {
        let first_index = self.state.log.first_index;
        self.segments
            .iter()
            .skip(1)
            .take_while(|next| first_index > next.start.log.last_index)
            .count()
    }

    fn current(&self) -> &Segment {
        self.segments
            .back()
            .expect("the writer always has a segment")
    }

    fn current_path(&self) -> PathBuf {
        dir::segment_path(&self.dir, self.current().seq)
    }

    /// Follows the batch's effect on the log, as recovery will when it reads the record.
    fn apply(&mut self, batch: &WriteBatch, snapshot: Option<SnapshotRef>) {
        if let Some(hard_state) = batch.hard_state {
            self.state.hard_state = hard_state;
        }
        if let Some(replaced) = snapshot.and_then(|s| self.state.snapshot.replace(s)) {
            self.replaced_snapshots.push(replaced.id);
        }
        if let Some(index) = batch.truncate_after {
            self.state.log.truncate_after(index);
            let held = self.state.log.last_index + 1 - self.state.log.first_index;
            while self.entry_sizes.len() as u64 > held {
                let size = self.entry_sizes.pop_back().expect("length checked");
                self.entry_bytes -= u64::from(size);
            }
        }
        self.state.log.append(batch.entries.len() as u64);
        for entry in &batch.entries {
            // Within the 4 GiB record limit, which `encode_record` enforces.
            let size = entry.encoded_len() as u32;
            self.entry_sizes.push_back(size);
            self.entry_bytes += u64::from(size);
        }
        if let Some(index) = batch.compact_through {
            let old_first = self.state.log.first_index;
            self.state.log.compact_through(index);
            let compacted = self.state.log.first_index - old_first;
            for _ in 0..compacted.min(self.entry_sizes.len() as u64) {
                let size = self.entry_sizes.pop_front().expect("length checked");
                self.entry_bytes -= u64::from(size);
            }
        }
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Recovery tells a write that completed from one a crash cut short by this mark.
        if let Some(start) = self.last_record.take() {
            let seal = self.current().seal;
            format::mark_group_end(&mut self.buf, start, seal);
        }
        let offset = self.current().len;
        let path = self.current_path();
        let (file, buf) = (&self.file, &self.buf);
        until_available(&self.figures, || {
            #[cfg(test)]
            injected_shortage(&self.figures, "write segment", &path)?;
            file.write_all_at(buf, offset)
                .map_err(DiskError::io("write segment", &path))
        })?;
        let written = self.buf.len() as u64;
        let segment = self.segments.back_mut().expect("a segment");
        segment.len += written;
        segment.file_len = segment.file_len.max(segment.len);
        if self.buf.capacity() > BUF_KEEP_BYTES {
            // A huge batch grew the buffer; do not keep that memory for good.
            self.buf = BytesMut::with_capacity(BUF_INITIAL_BYTES);
        } else {
            self.buf.clear();
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), DiskError> {
        #[cfg(test)]
        if self.figures.fail_syncs.load(Ordering::Relaxed) {
            return Err(DiskError::Io {
                op: "fdatasync segment",
                path: self.current_path(),
                source: std::io::Error::other("injected failure"),
            });
        }
        self.figures.log_syncs.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        self.file.sync_data().map_err(|source| DiskError::Io {
            op: "fdatasync segment",
            path: self.current_path(),
            source,
        })?;
        if let Some(observe) = self.figures.sync_observer.lock().as_ref() {
            observe(started.elapsed());
        }
        Ok(())
    }

    /// Starts a sealed segment if the current one is of a format without seals (a dir of an
    /// older build), rather than append unsealed records to it for up to a segment's size.
    pub(crate) fn seal_from_now(&mut self) -> Result<(), DiskError> {
        if self.current().seal == format::Seal::NONE {
            self.roll()?;
        }
        Ok(())
    }

    /// Starts the next segment. The current one is made durable first, so that only the last
    /// segment can ever end in a torn write.
    fn roll(&mut self) -> Result<(), DiskError> {
        self.sync()?;
        let seq = self.current().seq + 1;
        let spare = match self.spare.take() {
            Some(spare) if spare.seq == seq => spare.take(),
            other => {
                self.spare = other;
                None
            }
        };
        let preallocate = self.preallocate.then_some(self.segment_size_bytes);
        let mut spare = spare;
        let (file, file_len) = until_available(&self.figures, || {
            #[cfg(test)]
            injected_shortage(&self.figures, "create", &self.dir)?;
            create_segment(
                &self.dir,
                &self.dir_handle,
                seq,
                &self.state,
                preallocate,
                spare.take(),
            )
        })?;
        self.file = file;
        self.segments.push_back(Segment {
            seq,
            len: SEGMENT_HEADER_LEN as u64,
            file_len,
            start: self.state,
            seal: format::Seal::salted(self.salt),
        });
        tracing::debug!(dir = %self.dir.display(), seq, "started a new log segment");
        Ok(())
    }

    /// Writes a snapshot file through a temporary file, fsync, rename and directory fsync.
    fn write_snapshot(&mut self, snapshot: &Snapshot) -> Result<SnapshotRef, DiskError> {
        let reference = SnapshotRef {
            id: self.next_snapshot_id,
            meta: snapshot.meta,
            len: snapshot.data.len() as u64,
            crc: crc32c::crc32c(&snapshot.data),
        };
        self.next_snapshot_id += 1;
        let path = dir::snapshot_path(&self.dir, reference.id);
        let header = format::encode_snapshot_header(&reference, snapshot.membership.as_ref());
        until_available(&self.figures, || {
            #[cfg(test)]
            injected_shortage(&self.figures, "create", &path)?;
            let mut file = dir::create_tmp(&path)?;
            let written = file
                .write_all(&header)
                .and_then(|()| file.write_all(&snapshot.data));
            if let Err(error) = written {
                // Give the space back at once: the next attempt starts the file anew.
                drop(file);
                let _ = std::fs::remove_file(dir::tmp_path(&path));
                return Err(DiskError::io("write snapshot", dir::tmp_path(&path))(error));
            }
            dir::install(file, &path, &self.dir_handle)
        })?;
        Ok(reference)
    }

    fn publish_figures(&self) {
        let disk_bytes = self.segments.iter().map(|s| s.file_len).sum();
        self.figures
            .log_disk_bytes
            .store(disk_bytes, Ordering::Relaxed);
        // The formula of `MemImage::raft_state_size`: hard state, entries, 8 bytes each.
        let raft_state_bytes = 17 + self.entry_bytes + 8 * self.entry_sizes.len() as u64;
        self.figures
            .raft_state_bytes
            .store(raft_state_bytes, Ordering::Relaxed);
        let snapshot_bytes = self.state.snapshot.map_or(0, |s| s.len);
        self.figures
            .snapshot_bytes
            .store(snapshot_bytes, Ordering::Relaxed);
    }
}

/// Where in its current segment node `node_id` starts zero-filling the next one: at 1/2, 5/8
/// or 3/4 of `segment_size_bytes`, by node id.
///
/// The members of a cluster write the same entries, so their segments fill at the same log
/// positions. Zero-filling a segment writes 64 MiB (by default) beside the log, and on a
/// machine where members share a disk, three fills at once slowed every member's `fdatasync`
/// together: the commit, which needs any two, had no faster pair to fall back on. Spread over
/// the segment, the fills overlap less. The fill itself takes about a second here, so even the
/// latest start leaves it a quarter of a segment to finish.
pub(crate) fn spare_start(segment_size_bytes: u64, node_id: u64) -> u64 {
    segment_size_bytes / 8 * (4 + (node_id % 3 + 2) % 3)
}

/// Creates segment `seq` starting from `checkpoint`, durable and in place, and returns it open
/// for writing, with its size. With `preallocate`, the file is zero-filled to that size: `spare`
/// if given (a file `zero_filled` prepared under the segment's temporary name), else here.
pub(crate) fn create_segment(
    dir: &Path,
    dir_handle: &File,
    seq: u64,
    checkpoint: &Checkpoint,
    preallocate: Option<u64>,
    spare: Option<File>,
) -> Result<(File, u64), DiskError> {
    let path = dir::segment_path(dir, seq);
    let tmp = dir::tmp_path(&path);
    let file = match (preallocate, spare) {
        (Some(_), Some(spare)) => spare,
        (Some(size), None) => zero_filled(&tmp, size)?,
        (None, _) => dir::create_tmp(&path)?,
    };
    file.write_all_at(&format::encode_segment_header(seq, checkpoint), 0)
        .map_err(DiskError::io("write", &tmp))?;
    let file = dir::install(file, &path, dir_handle)?;
    let file_len = file.metadata().map_err(DiskError::io("stat", &path))?.len();
    Ok((file, file_len))
}

/// Creates `path` holding `size` zero bytes, durably, and returns it open for writing.
///
/// Written rather than `fallocate`d: writes into allocated but unwritten extents still make
/// the file system update metadata at each `fdatasync`, which is what preallocating avoids.
fn zero_filled(path: &Path, size: u64) -> Result<File, DiskError> {
    zero_filled_paced(path, size, None)
}

/// Pacing of a background zero-fill: a chunk is written and made durable, then the thread
/// pauses, so that the fill never queues a large writeback ahead of the log's own `fdatasync`
/// calls (an unpaced 64 MiB fill stalled other writers' fsyncs by 100 ms and more).
struct Pace {
    pause: std::time::Duration,
    control: std::sync::Arc<FillControl>,
}

/// What the writer tells a background zero-fill (after setting a flag, it unparks the thread).
#[derive(Default)]
struct FillControl {
    /// The segment is needed now (the log rolled over): fill the rest without pausing.
    hurry: AtomicBool,
    /// The writer closed: give up (the `.tmp` file is removed by recovery).
    stop: AtomicBool,
}

fn zero_filled_paced(path: &Path, size: u64, pace: Option<Pace>) -> Result<File, DiskError> {
    const CHUNK_BYTES: usize = 1 << 20;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(DiskError::io("create", path))?;
    let zeros = vec![0u8; CHUNK_BYTES];
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK_BYTES as u64) as usize;
        if let Err(error) = file.write_all(&zeros[..n]) {
            // A full disk, most likely: give the space back rather than hold it.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(DiskError::io("zero-fill", path)(error));
        }
        left -= n as u64;
        if let Some(pace) = pace.as_ref().filter(|_| left > 0) {
            if pace.control.stop.load(Ordering::Relaxed) {
                return Err(DiskError::io("zero-fill", path)(std::io::Error::other(
                    "the storage closed",
                )));
            }
            if !pace.control.hurry.load(Ordering::Relaxed) {
                file.sync_data().map_err(DiskError::io("fsync", path))?;
                // Cut short by `unpark` when the writer hurries or stops the fill.
                std::thread::park_timeout(pace.pause);
            }
        }
    }
    file.sync_all().map_err(DiskError::io("fsync", path))?;
    Ok(file)
}

impl Drop for LogWriter {
    /// Waits for a segment being preallocated, so no thread writes in the data dir once the
    /// storage is closed (its file is a `.tmp` that the next recovery removes).
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            spare.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three consecutive node ids start their fills at three different points, none before half
    /// the segment (the fill needs time) and none after three quarters (it must finish first).
    #[test]
    fn members_start_zero_filling_the_next_segment_at_different_points() {
        let size = 64 << 20;
        for first in [0, 1, 7, u64::MAX - 2] {
            let starts: Vec<u64> = (0..3)
                .map(|i| spare_start(size, first.wrapping_add(i)))
                .collect();
            for &start in &starts {
                assert!((size / 2..=size / 4 * 3).contains(&start), "{starts:?}");
            }
            let mut distinct = starts.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "ids from {first}: {starts:?}");
        }
        assert_eq!(spare_start(size, 1), size / 2, "node 1 keeps the old point");
    }

    /// More obsolete files than the deleter's queue holds, each in a batch of its own and each
    /// big enough to make the deleter pause: the writer waits instead of queueing more, and
    /// every file is still deleted.
    #[test]
    fn the_deleter_queue_is_bounded_and_loses_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = DELETE_QUEUE_BATCHES + 8;
        let paths: Vec<PathBuf> = (0..files)
            .map(|i| {
                let path = dir.path().join(format!("obsolete-{i}"));
                // Sparse: costs no disk, but takes a shrink step and a pause to delete.
                let file = File::create(&path).unwrap();
                file.set_len(2 * SHRINK_STEP_BYTES).unwrap();
                path
            })
            .collect();
        let deleter = Deleter::start(dir.path()).unwrap();
        let waits = paths
            .iter()
            .filter(|path| deleter.delete(vec![(*path).clone()]))
            .count();
        assert!(
            waits > 0,
            "{files} batches went into a queue of {DELETE_QUEUE_BATCHES} without a wait"
        );
        drop(deleter);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "files left after the deleter finished: {left:?}"
        );
    }
}
