//! Opening a data dir: check whose it is, replay the log, load the snapshot, repair a torn
//! tail, and hand the writer its files. The crate docs state the rules this module follows.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use keel::codec::decode_entry_body;
use keel::{Entry, Payload, Recovered, Snapshot};

use crate::DiskOptions;
use crate::bounds::LogBounds;
use crate::dir::{self, Listing};
use crate::error::DiskError;
use crate::format::{
    self, Checkpoint, Meta, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, Seal, SnapshotRef,
};
use crate::writer::{self, Figures, LogWriter, Segment, WriterParts};

/// An opened data dir: the writer that owns it, what it held, and the log's bounds (which
/// `submit` checks batches against).
pub(crate) struct Opened {
    pub writer: LogWriter,
    pub recovered: Recovered,
    pub log: LogBounds,
}

pub(crate) fn open(
    dir: &Path,
    options: &DiskOptions,
    figures: Arc<Figures>,
) -> Result<Opened, DiskError> {
    let lock = dir::lock(dir)?;
    let dir_handle = dir::open_dir_handle(dir)?;
    let meta = Meta {
        node_id: options.node_id,
        cluster_id: options.cluster_id,
    };
    let listing = dir::list(dir)?;
    let mut meta_version = format::FORMAT_VERSION;
    // The dir's salt: from its meta file, or new (for a new dir, or one of a format without
    // salts, whose meta file is rewritten with it before any record it seals is written).
    let mut dir_salt = None;
    if listing.has_meta {
        (meta_version, dir_salt) = dir::check_meta(dir, meta)?;
    } else if !listing.segments.is_empty() || !listing.snapshots.is_empty() {
        return Err(damaged(
            dir,
            "its meta file is missing, but log segments or snapshots are present",
        ));
    }
    let salt = match dir_salt {
        Some(salt) => salt,
        None => new_salt(dir)?,
    };
    // A new dir, or an older one with no segment yet (its first segment is about to be made,
    // sealed): the salt goes into the meta file first.
    if !listing.has_meta || (dir_salt.is_none() && listing.segments.is_empty()) {
        dir::write_meta(dir, &dir_handle, meta, salt)?;
        meta_version = format::FORMAT_VERSION;
        dir_salt = Some(salt);
    }

    let mut replay = if listing.segments.is_empty() {
        if !listing.snapshots.is_empty() {
            return Err(damaged(dir, "it holds snapshot files but no log segments"));
        }
        let checkpoint = Checkpoint::empty();
        let preallocate = options.preallocate.then_some(options.segment_size_bytes);
        writer::create_segment(dir, &dir_handle, 1, &checkpoint, preallocate, None)?;
        let mut replay = Replay::new(dir, dir_salt);
        replay.segment(1, true)?;
        replay
    } else {
        replay_segments(dir, &listing, dir_salt)?
    };
    let state = replay.finish()?;
    let snapshot = state.snapshot.map(|r| load_snapshot(dir, r)).transpose()?;

    // Everything checked out; only now change files.
    if let Some(torn) = &replay.torn {
        cut_torn_tail(torn)?;
    }
    let last = *replay.segments.back().expect("at least one segment");
    let last_path = dir::segment_path(dir, last.seq);
    let file = OpenOptions::new()
        .write(true)
        .open(&last_path)
        .map_err(DiskError::io("open segment", &last_path))?;
    // What we just read may exist only in the page cache: the previous process may have died
    // between a write and its fdatasync. Raft will vouch for this state (repeat a vote, ack
    // entries it already holds) without writing it again, so it must be durable first; and
    // before `remove_leftovers` deletes a snapshot file an unsynced record may have replaced.
    // Only the last segment can hold unsynced records: a segment is synced before the next
    // one is started.
    file.sync_data()
        .map_err(DiskError::io("fdatasync segment", &last_path))?;
    #[cfg(test)]
    figures
        .recovery_syncs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if meta_version < format::FORMAT_VERSION {
        // This build writes records an older one cannot read: say so in the meta file before
        // the first of them, so that an older build refuses the dir as newer, rather than
        // reporting its new records as damage. The salt that seals them goes in with it.
        dir::write_meta(dir, &dir_handle, meta, salt)?;
    }
    remove_leftovers(dir, &dir_handle, &listing, state.snapshot)?;

    let next_snapshot_id = listing
        .snapshots
        .iter()
        .copied()
        .chain([replay.max_snapshot_id])
        .max()
        .unwrap_or(0)
        + 1;
    let entry_sizes = replay
        .entries
        .iter()
        .map(|e| e.encoded_len() as u32)
        .collect();
    let recovered = Recovered {
        hard_state: state.hard_state,
        entries: replay.entries_after(snapshot.as_ref()),
        snapshot,
    };
    let mut writer = LogWriter::new(WriterParts {
        dir: dir.to_path_buf(),
        dir_handle,
        lock,
        segment_size_bytes: options.segment_size_bytes,
        preallocate: options.preallocate,
        spare_at_bytes: writer::spare_start(options.segment_size_bytes, options.node_id),
        segments: std::mem::take(&mut replay.segments),
        file,
        state,
        next_snapshot_id,
        entry_sizes,
        figures,
        salt,
    });
    writer.seal_from_now()?;
    Ok(Opened {
        writer,
        recovered,
        log: state.log,
    })
}

/// A new random salt for the dir's records.
fn new_salt(dir: &Path) -> Result<u64, DiskError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| DiskError::Io {
        op: "make a random salt for",
        path: dir.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    Ok(u64::from_le_bytes(bytes))
}

fn replay_segments(dir: &Path, listing: &Listing, salt: Option<u64>) -> Result<Replay, DiskError> {
    for pair in listing.segments.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(damaged(
                dir,
                format!(
                    "log segment {} is missing (the segments go from {} to {})",
                    dir::segment_path(dir, pair[0] + 1).display(),
                    pair[0],
                    pair[1]
                ),
            ));
        }
    }
    let mut replay = Replay::new(dir, salt);
    let last = listing.segments.len() - 1;
    for (i, &seq) in listing.segments.iter().enumerate() {
        replay.segment(seq, i == last)?;
    }
    Ok(replay)
}

/// The log as replayed so far, in `MemImage`'s terms: the same bounds, the same entries.
struct Replay {
    dir: PathBuf,
    /// Hard state, snapshot and bounds; `None` until the first segment's header is read.
    state: Option<Checkpoint>,
    /// Entries `first_index..=missing_through` were written in segments that are gone (deleted
    /// by compaction, which must have covered them by the end of the replay).
    missing_through: u64,
    /// The entries held: from after `missing_through` (or from `first_index`) to `last_index`.
    entries: VecDeque<Entry>,
    segments: VecDeque<Segment>,
    max_snapshot_id: u64,
    torn: Option<TornTail>,
    /// The dir's salt, from its meta file (none before format 3).
    salt: Option<u64>,
}

/// A partly written record at the end of the last segment.
struct TornTail {
    path: PathBuf,
    /// Where the last good record ends.
    offset: u64,
    /// Where the bytes of the torn write end: the file's end, or where the zeros of a
    /// preallocated segment begin.
    dirty_end: u64,
    file_len: u64,
    problem: String,
}

impl Replay {
    fn new(dir: &Path, salt: Option<u64>) -> Self {
        Replay {
            salt,
            dir: dir.to_path_buf(),
            state: None,
            missing_through: 0,
            entries: VecDeque::new(),
            segments: VecDeque::new(),
            max_snapshot_id: 0,
            torn: None,
        }
    }

    fn segment(&mut self, seq: u64, last: bool) -> Result<(), DiskError> {
        let path = dir::segment_path(&self.dir, seq);
        let mut file = SegmentFile::open(&path)?;
        file.fill(0, SEGMENT_HEADER_LEN as u64)?;
        let (found_seq, start, version) =
            format::decode_segment_header(&file.data).map_err(|e| dir::header_error(&path, e))?;
        let corrupt = |offset: u64, problem: String| DiskError::Corrupt {
            path: path.clone(),
            offset,
            problem,
        };
        let Some(seal) = Seal::for_segment(version, self.salt) else {
            return Err(corrupt(
                0,
                format!(
                    "it is of format {version}, but the dir's meta file is older and has no salt \
                     for its records: files of different data dirs were mixed"
                ),
            ));
        };
        if found_seq != seq {
            return Err(corrupt(
                0,
                format!(
                    "its header says it is segment {found_seq}: segment files were renamed or mixed up"
                ),
            ));
        }
        match self.state {
            None => {
                self.missing_through = start.log.last_index;
                self.state = Some(start);
            }
            Some(state) if state != start => {
                return Err(corrupt(
                    0,
                    format!(
                        "its header does not continue the previous segment (header {start:?}, \
                         log so far {state:?}): the segments come from different histories"
                    ),
                ));
            }
            Some(_) => {}
        }
        if let Some(snapshot) = start.snapshot {
            self.max_snapshot_id = self.max_snapshot_id.max(snapshot.id);
        }

        let mut offset = SEGMENT_HEADER_LEN as u64;
        while offset < file.len {
            file.fill_record(offset)?;
            let at = (offset - file.base) as usize;
            match format::read_frame(&file.data, at, seal) {
                Ok((body, next)) => {
                    self.apply(body)
                        .map_err(|problem| corrupt(offset, problem))?;
                    offset = file.base + next as u64;
                }
                // The unwritten rest of a preallocated segment. No record starts with a zero
                // length, so zeros are never mistaken for one.
                Err(_) if file.rest_is_zero(offset)? => break,
                Err(problem) if !last => {
                    return Err(corrupt(
                        offset,
                        format!("{problem} (not the last segment, so not a torn write)"),
                    ));
                }
                Err(problem) => {
                    // A damaged last record: the rest of the file decides (read whole, once).
                    // Valid records may follow it only within the same write (whose pages a
                    // crash may have persisted out of order): those carry a group start at or
                    // before the damage. A record of a later write means the damage is in a
                    // write that had completed, which is corruption.
                    let rest = file.read_rest(offset)?;
                    let frames = format::valid_frames_after(&rest, 0, seal);
                    let later_write = frames.iter().find(|(_, body)| {
                        format::group_start(body).is_none_or(|start| start > offset)
                    });
                    if let Some((at, _)) = later_write {
                        return Err(corrupt(
                            offset,
                            format!(
                                "{problem} (a valid record of a later write follows at offset \
                                 {}, so not a torn write)",
                                offset + *at as u64
                            ),
                        ));
                    }
                    // The damaged write's last record is intact and more was written after
                    // it: that write had completed, and its fdatasync with it (the next write
                    // starts only then). Damage, not a torn write.
                    let group_end = frames
                        .iter()
                        .find(|(_, body)| format::is_group_end(body))
                        .map(|(at, body)| at + RECORD_HEADER_LEN + body.len());
                    if let Some(end) = group_end
                        && rest[end..].iter().any(|&b| b != 0)
                    {
                        return Err(corrupt(
                            offset,
                            format!(
                                "{problem} (the write it belongs to ends intact at offset {} and \
                                 a later write follows, so not a torn write)",
                                offset + end as u64
                            ),
                        ));
                    }
                    let dirty = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                    self.torn = Some(TornTail {
                        path: path.clone(),
                        offset,
                        dirty_end: offset + dirty as u64,
                        file_len: file.len,
                        problem,
                    });
                    break;
                }
            }
        }
        // What the file will hold once a torn tail is cut (see `cut_torn_tail`).
        let file_len = match &self.torn {
            Some(torn) if torn.path == path && torn.dirty_end >= torn.file_len => torn.offset,
            _ => file.len,
        };
        self.segments.push_back(Segment {
            seq,
            len: offset,
            file_len,
            start,
            seal,
        });
        Ok(())
    }

    /// Applies one record, as `MemImage::apply` applies its batch; anything `MemImage` would
    /// assert on is damage here.
    fn apply(&mut self, body: Bytes) -> Result<(), String> {
        let record = format::decode_record(body)?;
        let state = self.state.as_mut().expect("the header is read first");
        if let Some(hard_state) = record.hard_state {
            state.hard_state = hard_state;
        }
        if let Some(snapshot) = record.snapshot {
            self.max_snapshot_id = self.max_snapshot_id.max(snapshot.id);
            state.snapshot = Some(snapshot);
        }
        if let Some(index) = record.truncate_after {
            state.log.truncate_after(index);
            let last = state.log.last_index;
            while self.entries.back().is_some_and(|e| e.index > last) {
                self.entries.pop_back();
            }
            self.missing_through = self.missing_through.min(last);
        }
        if let Some(run) = record.entries {
            if run.first_index != state.log.next_index() {
                return Err(format!(
                    "its entries start at index {} but the log ends at {}",
                    run.first_index, state.log.last_index
                ));
            }
            if run.first_index.checked_add(u64::from(run.count)).is_none() {
                return Err("entry indexes overflow".into());
            }
            let mut bodies = run.bodies;
            for index in run.first_index..run.first_index + u64::from(run.count) {
                let mut entry = decode_entry_body(&mut bodies, index)
                    .map_err(|e| format!("entry {index}: {e}"))?;
                // A slice would keep the chunk it was read into (a megabyte, or a whole large
                // record) in memory for as long as this entry stays in the log; a copy holds
                // only the entry.
                if let Payload::Command(data) = &mut entry.payload {
                    *data = Bytes::copy_from_slice(data);
                }
                self.entries.push_back(entry);
            }
            if !bodies.is_empty() {
                return Err(format!("{} bytes after its last entry", bodies.len()));
            }
            state.log.append(u64::from(run.count));
        }
        if let Some(index) = record.compact_through {
            state.log.compact_through(index);
            while self.entries.front().is_some_and(|e| e.index <= index) {
                self.entries.pop_front();
            }
        }
        Ok(())
    }

    /// The replayed state, once every entry the log still holds was found.
    fn finish(&self) -> Result<Checkpoint, DiskError> {
        let state = self.state.expect("at least one segment was read");
        if self.missing_through >= state.log.first_index {
            let first = self.segments.front().expect("at least one segment").seq;
            return Err(damaged(
                &self.dir,
                format!(
                    "log entries {}..={} are missing: segments before {} that held them were \
                     deleted",
                    state.log.first_index,
                    self.missing_through,
                    dir::segment_path(&self.dir, first).display()
                ),
            ));
        }
        Ok(state)
    }

    /// The entries a starting node gets: those after the snapshot.
    fn entries_after(&mut self, snapshot: Option<&Snapshot>) -> Vec<Entry> {
        let after = snapshot.map_or(0, |s| s.meta.last_included_index);
        let mut entries = Vec::from(std::mem::take(&mut self.entries));
        let covered = entries.partition_point(|e| e.index <= after);
        entries.drain(..covered);
        entries
    }
}

/// Removes snapshot files the log does not refer to (one replaced before a crash, or one whose
/// install did not complete) and files an interrupted write left behind.
fn remove_leftovers(
    dir: &Path,
    dir_handle: &std::fs::File,
    listing: &Listing,
    current: Option<SnapshotRef>,
) -> Result<(), DiskError> {
    let unreferenced = listing
        .snapshots
        .iter()
        .filter(|&&id| current.is_none_or(|current| current.id != id))
        .map(|&id| dir::snapshot_path(dir, id));
    let mut removed = false;
    for path in unreferenced.chain(listing.temporary.iter().cloned()) {
        tracing::info!(path = %path.display(), "removing a file the log does not refer to");
        dir::remove(&path)?;
        removed = true;
    }
    if removed {
        dir::sync_dir(dir_handle, dir)?;
    }
    Ok(())
}

/// Maps the snapshot the log refers to and checks it against the reference (reading it
/// whole, for the checksum, once).
fn load_snapshot(dir: &Path, reference: SnapshotRef) -> Result<Snapshot, DiskError> {
    let path = dir::snapshot_path(dir, reference.id);
    // SAFETY: a snapshot file is written whole under a temporary name and renamed into place,
    // never written again, and only removed once a newer one replaces it (which leaves a map
    // intact); the data dir's lock keeps other keel processes out of it.
    let data = match File::open(&path).and_then(|file| unsafe { crate::mapped::map(&file) }) {
        Ok(data) => data,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(damaged(
                dir,
                format!(
                    "the log refers to snapshot file {}, which is missing",
                    path.display()
                ),
            ));
        }
        Err(source) => {
            return Err(DiskError::Io {
                op: "read snapshot",
                path,
                source,
            });
        }
    };
    let (found, version) =
        format::decode_snapshot_header(&data).map_err(|e| dir::header_error(&path, e))?;
    let corrupt_at = |offset: usize, problem: String| DiskError::Corrupt {
        path: path.clone(),
        offset: offset as u64,
        problem,
    };
    if found != reference {
        return Err(DiskError::Corrupt {
            path: path.clone(),
            offset: 0,
            problem: format!("its header describes {found:?}, but the log expects {reference:?}"),
        });
    }
    let rest = data.slice(format::SNAPSHOT_HEADER_LEN..);
    // Snapshots of builds before membership changes carry no configuration: the node's
    // cluster is then the one it is started with.
    let (membership, block_len) = if version >= format::MEMBERSHIP_VERSION {
        format::decode_snapshot_membership(&rest)
            .map_err(|problem| corrupt_at(format::SNAPSHOT_HEADER_LEN, problem))?
    } else {
        (None, 0)
    };
    let body = rest.slice(block_len..);
    let corrupt = |problem| corrupt_at(format::SNAPSHOT_HEADER_LEN + block_len, problem);
    if body.len() as u64 != reference.len {
        return Err(corrupt(format!(
            "{} bytes of snapshot data, expected {}",
            body.len(),
            reference.len
        )));
    }
    if crc32c::crc32c(&body) != reference.crc {
        return Err(corrupt("snapshot data checksum mismatch".into()));
    }
    Ok(Snapshot {
        meta: reference.meta,
        membership,
        data: body,
    })
}

/// Cuts a partly written record off the end of the last segment, durably: the file is
/// truncated to the last good record, or, if it was preallocated (zeros follow the torn
/// bytes), the torn bytes are zeroed so the segment keeps its preallocated size.
fn cut_torn_tail(torn: &TornTail) -> Result<(), DiskError> {
    tracing::warn!(
        path = %torn.path.display(),
        offset = torn.offset,
        bytes_cut = torn.dirty_end - torn.offset,
        problem = %torn.problem,
        "cutting a torn write off the end of the log (a crash interrupted the last write; it was \
         never reported durable)"
    );
    let file = OpenOptions::new()
        .write(true)
        .open(&torn.path)
        .map_err(DiskError::io("open segment", &torn.path))?;
    if torn.dirty_end < torn.file_len {
        let zeros = vec![0u8; (torn.dirty_end - torn.offset) as usize];
        file.write_all_at(&zeros, torn.offset)
            .map_err(DiskError::io("zero torn write in segment", &torn.path))?;
    } else {
        file.set_len(torn.offset)
            .map_err(DiskError::io("truncate segment", &torn.path))?;
    }
    file.sync_all()
        .map_err(DiskError::io("fsync segment", &torn.path))
}

/// How much of a segment file recovery reads at a time.
const READ_CHUNK_BYTES: u64 = 1 << 20;

/// A segment file read in chunks: `data` holds the file's bytes from `base` on. Replaying a
/// segment never holds more than a chunk or one record (a 64 MiB preallocated segment, read
/// whole, stayed resident in the allocator after recovery).
struct SegmentFile {
    file: fs::File,
    path: PathBuf,
    len: u64,
    base: u64,
    data: Bytes,
}

impl SegmentFile {
    fn open(path: &Path) -> Result<SegmentFile, DiskError> {
        let file = fs::File::open(path).map_err(DiskError::io("read segment", path))?;
        let len = file
            .metadata()
            .map_err(DiskError::io("read segment", path))?
            .len();
        Ok(SegmentFile {
            file,
            path: path.to_path_buf(),
            len,
            base: 0,
            data: Bytes::new(),
        })
    }

    /// Makes `data` hold the file from `offset` for at least `need` bytes, or to its end.
    fn fill(&mut self, offset: u64, need: u64) -> Result<(), DiskError> {
        let end = offset.saturating_add(need).min(self.len);
        if offset >= self.base && end <= self.base + self.data.len() as u64 {
            return Ok(());
        }
        let read_end = end.max(offset.saturating_add(READ_CHUNK_BYTES).min(self.len));
        self.data = self.read(offset, read_end)?;
        self.base = offset;
        Ok(())
    }

    /// Makes `data` hold the whole record at `offset` (as far as the file goes): its header,
    /// then as many bytes as the header's length says.
    fn fill_record(&mut self, offset: u64) -> Result<(), DiskError> {
        let header = RECORD_HEADER_LEN as u64;
        self.fill(offset, header)?;
        let at = (offset - self.base) as usize;
        if let Some(len) = self.data.get(at..at + 4) {
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes"));
            self.fill(offset, header + u64::from(len))?;
        }
        Ok(())
    }

    /// Whether the file holds only zeros from `offset` to its end, read a chunk at a time.
    fn rest_is_zero(&mut self, offset: u64) -> Result<bool, DiskError> {
        let mut from = offset;
        while from < self.len {
            self.fill(from, READ_CHUNK_BYTES)?;
            let at = (from - self.base) as usize;
            if self.data[at..].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            from = self.base + self.data.len() as u64;
        }
        Ok(true)
    }

    /// The file from `offset` to its end.
    fn read_rest(&self, offset: u64) -> Result<Bytes, DiskError> {
        self.read(offset, self.len)
    }

    fn read(&self, from: u64, to: u64) -> Result<Bytes, DiskError> {
        let mut buf = vec![0; (to - from) as usize];
        self.file
            .read_exact_at(&mut buf, from)
            .map_err(DiskError::io("read segment", &self.path))?;
        Ok(Bytes::from(buf))
    }
}

fn damaged(dir: &Path, problem: impl Into<String>) -> DiskError {
    DiskError::Damaged {
        dir: dir.to_path_buf(),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bytes::BytesMut;
    use keel::{Entry, Payload, Storage, WriteBatch};

    use crate::{DiskOptions, DiskStorage};

    fn append(first: u64, count: u64) -> WriteBatch {
        WriteBatch {
            entries: (first..first + count)
                .map(|index| Entry {
                    index,
                    term: 1,
                    payload: Payload::Noop,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Recovered entries own their data: a slice of the segment file's buffer would keep the
    /// whole file (64 MiB when preallocated) in memory while any of its entries is in the log.
    #[tokio::test]
    async fn recovered_entries_do_not_keep_the_segment_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let storage = DiskStorage::open(dir.path(), DiskOptions::new(1, 1)).unwrap();
        let seq = storage.submit(WriteBatch {
            entries: (1..=3)
                .map(|index| Entry {
                    index,
                    term: 1,
                    payload: Payload::Command(bytes::Bytes::from(vec![index as u8; 100])),
                })
                .collect(),
            ..Default::default()
        });
        storage.wait_durable(seq).await.unwrap();
        storage.close().await.unwrap();

        let storage = DiskStorage::open(dir.path(), DiskOptions::new(1, 1)).unwrap();
        let recovered = storage.recover().unwrap();
        assert_eq!(recovered.entries.len(), 3);
        for entry in recovered.entries {
            let Payload::Command(data) = entry.payload else {
                panic!("entry {} is not a command", entry.index)
            };
            assert_eq!(data, vec![entry.index as u8; 100]);
            assert!(
                data.is_unique(),
                "entry {} shares its buffer (a slice of the segment file)",
                entry.index
            );
        }
        storage.close().await.unwrap();
    }

    /// A record the previous process wrote but did not live to fsync is readable from the page
    /// cache, and Raft will vouch for what recovery returns (repeat a vote, acknowledge entries)
    /// without writing it again. So opening syncs the last segment, torn tail or not; fsync
    /// cannot be observed from here, so this pins that the sync happens.
    #[tokio::test]
    async fn opening_makes_what_it_read_durable() {
        let dir = tempfile::tempdir().unwrap();
        let storage = DiskStorage::open(dir.path(), DiskOptions::new(1, 1)).unwrap();
        assert_eq!(storage.recovery_sync_count(), 1, "a fresh data dir");
        let seq = storage.submit(append(1, 3));
        storage.wait_durable(seq).await.unwrap();
        storage.close().await.unwrap();

        let storage = DiskStorage::open(dir.path(), DiskOptions::new(1, 1)).unwrap();
        assert_eq!(storage.recover().unwrap().entries.len(), 3);
        assert_eq!(storage.recovery_sync_count(), 1, "a clean reopen");
        storage.close().await.unwrap();
    }

    /// An older build reads the meta file's version first: opening a data dir of format 2
    /// moves it to this build's version, with a salt, before any new record is written. Its
    /// segments keep their unsealed records, and the next records go to a sealed segment
    /// started at once: all read back.
    #[tokio::test]
    async fn opening_a_dir_of_an_older_format_marks_it_with_this_one() {
        let dir = tempfile::tempdir().unwrap();
        let options = DiskOptions {
            segment_size_bytes: 64 << 10,
            ..DiskOptions::new(1, 1)
        };
        let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
        storage.close().await.unwrap();
        // Make it a dir of format 2: its meta file without a salt, its segment's header of
        // version 2.
        let meta_path = dir.path().join("meta");
        std::fs::write(&meta_path, format_2_meta()).unwrap();
        let segment = crate::dir::segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let header = crate::format::SEGMENT_HEADER_LEN;
        let crc = crc32c::crc32c(&bytes[..header - 4]);
        bytes[header - 4..header].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&segment, &bytes).unwrap();

        let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
        let (_, version, salt) =
            crate::format::decode_meta(&std::fs::read(&meta_path).unwrap()).unwrap();
        assert_eq!(version, crate::format::FORMAT_VERSION);
        assert!(salt.is_some());
        let sealed = std::fs::read(crate::dir::segment_path(dir.path(), 2)).unwrap();
        assert_eq!(
            u32::from_le_bytes(sealed[8..12].try_into().unwrap()),
            crate::format::FORMAT_VERSION,
            "a sealed segment follows the old one at once"
        );
        // Enough to fill segment 1 (of format 2) and go on in sealed ones.
        let mut expected = Vec::new();
        for i in 0..40 {
            let batch = sized(1 + i * 10, &[500; 10]);
            expected.extend(batch.entries.clone());
            let seq = storage.submit(batch);
            storage.wait_durable(seq).await.unwrap();
        }
        storage.close().await.unwrap();
        assert!(
            crate::dir::segment_path(dir.path(), 3).exists(),
            "it rolled"
        );

        let storage = DiskStorage::open(dir.path(), options).unwrap();
        assert_eq!(storage.recover().unwrap().entries, expected);
        storage.close().await.unwrap();
    }

    /// A data dir of format 3 (before membership changes): its snapshot file has no
    /// configuration block. It opens, its snapshot comes back without a configuration (the node
    /// then runs with the cluster it is started with), the dir moves to this build's format,
    /// and the snapshots written after carry their configuration.
    #[tokio::test]
    async fn a_dir_of_format_3_opens_and_its_next_snapshot_carries_the_configuration() {
        use keel::{Membership, Snapshot, SnapshotMeta};
        let dir = tempfile::tempdir().unwrap();
        let options = DiskOptions::new(1, 1);
        let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
        let seq = storage.submit(append(1, 5));
        storage.wait_durable(seq).await.unwrap();
        let old_snapshot = Snapshot {
            meta: SnapshotMeta {
                last_included_index: 4,
                last_included_term: 1,
            },
            membership: None,
            data: bytes::Bytes::from_static(b"state at 4"),
        };
        let seq = storage.submit(WriteBatch {
            snapshot: Some(old_snapshot.clone()),
            compact_through: Some(4),
            ..Default::default()
        });
        storage.wait_durable(seq).await.unwrap();
        storage.close().await.unwrap();

        // Rewrite every file as format 3 wrote it.
        let restamp = |path: &std::path::Path, header_len: usize| {
            let mut bytes = std::fs::read(path).unwrap();
            bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
            let crc = crc32c::crc32c(&bytes[..header_len - 4]);
            bytes[header_len - 4..header_len].copy_from_slice(&crc.to_le_bytes());
            bytes
        };
        let meta_path = dir.path().join("meta");
        std::fs::write(&meta_path, restamp(&meta_path, crate::format::META_LEN)).unwrap();
        let segment = crate::dir::segment_path(dir.path(), 1);
        let header = crate::format::SEGMENT_HEADER_LEN;
        std::fs::write(&segment, restamp(&segment, header)).unwrap();
        let snapshot_path = crate::dir::snapshot_path(dir.path(), 1);
        let mut bytes = restamp(&snapshot_path, crate::format::SNAPSHOT_HEADER_LEN);
        // Format 3 has no configuration block between the header and the data: this one is
        // empty (8 bytes: length 0 and its checksum).
        let start = crate::format::SNAPSHOT_HEADER_LEN;
        assert_eq!(&bytes[start..start + 4], &0u32.to_le_bytes());
        bytes.drain(start..start + 8);
        std::fs::write(&snapshot_path, &bytes).unwrap();

        let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
        let recovered = storage.recover().unwrap();
        assert_eq!(recovered.snapshot, Some(old_snapshot));
        assert_eq!(recovered.entries.len(), 1);
        let (_, version, _) =
            crate::format::decode_meta(&std::fs::read(&meta_path).unwrap()).unwrap();
        assert_eq!(
            version,
            crate::format::FORMAT_VERSION,
            "the dir moved to format 4"
        );
        let membership = Membership::new(
            [1, 2, 3],
            [4],
            std::collections::BTreeMap::from([(4, bytes::Bytes::from_static(b"addresses"))]),
        )
        .unwrap();
        let new_snapshot = Snapshot {
            meta: SnapshotMeta {
                last_included_index: 5,
                last_included_term: 1,
            },
            membership: Some(membership),
            data: bytes::Bytes::from_static(b"state at 5"),
        };
        let seq = storage.submit(WriteBatch {
            snapshot: Some(new_snapshot.clone()),
            compact_through: Some(5),
            ..Default::default()
        });
        storage.wait_durable(seq).await.unwrap();
        storage.close().await.unwrap();

        let storage = DiskStorage::open(dir.path(), options).unwrap();
        assert_eq!(storage.recover().unwrap().snapshot, Some(new_snapshot));
        storage.close().await.unwrap();
    }

    /// The meta file of node 1 of cluster 1 as a build of format 2 wrote it (no salt).
    fn format_2_meta() -> Vec<u8> {
        use bytes::BufMut;
        let mut meta = Vec::new();
        meta.put_slice(b"KEELMETA");
        meta.put_u32_le(2);
        meta.put_u64_le(1);
        meta.put_u64_le(1);
        meta.put_u32_le(crc32c::crc32c(&meta));
        meta
    }

    /// An older build that died between writing its meta file and its first segment left a
    /// meta file without a salt and no segment: this build gives it a salt before it makes
    /// the first (sealed) segment.
    #[tokio::test]
    async fn an_older_dir_without_a_segment_yet_opens() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta"), format_2_meta()).unwrap();

        let storage = DiskStorage::open(dir.path(), DiskOptions::new(1, 1)).unwrap();
        let seq = storage.submit(append(1, 3));
        storage.wait_durable(seq).await.unwrap();
        storage.close().await.unwrap();
        let storage = DiskStorage::open(dir.path(), DiskOptions::new(1, 1)).unwrap();
        assert_eq!(storage.recover().unwrap().entries.len(), 3);
        storage.close().await.unwrap();
    }

    fn sized(first: u64, sizes: &[usize]) -> WriteBatch {
        WriteBatch {
            entries: sizes
                .iter()
                .zip(first..)
                .map(|(&size, index)| Entry {
                    index,
                    term: 1,
                    payload: Payload::Command(bytes::Bytes::from(vec![index as u8; size])),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Recovery reads segments a chunk at a time: records that straddle chunks, a record
    /// larger than a chunk, the zero tail after them, and a torn last record past the first
    /// chunk all come out as when the file was read whole.
    #[tokio::test]
    async fn records_across_read_chunks_are_recovered_and_a_torn_tail_is_cut() {
        // Many records of 5,000 bytes (they straddle each 1 MiB boundary), one of 1.5 MiB, and
        // a small last one.
        let batches = [
            sized(1, &[5_000; 300]),
            sized(301, &[1_500_000]),
            sized(302, &[5_000; 100]),
            sized(402, &[10]),
        ];
        let expected: Vec<Entry> = batches.iter().flat_map(|b| b.entries.clone()).collect();
        for preallocate in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let options = DiskOptions {
                preallocate,
                ..DiskOptions::new(1, 1)
            };
            let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
            for batch in &batches {
                let seq = storage.submit(batch.clone());
                storage.wait_durable(seq).await.unwrap();
            }
            storage.close().await.unwrap();

            let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
            assert_eq!(storage.recover().unwrap().entries, expected, "{options:?}");
            storage.close().await.unwrap();

            if !preallocate {
                // Cut the last record short: recovery keeps everything before it.
                let path = crate::dir::segment_path(dir.path(), 1);
                let len = std::fs::metadata(&path).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(len - 5)
                    .unwrap();
                let storage = DiskStorage::open(dir.path(), options).unwrap();
                assert_eq!(
                    storage.recover().unwrap().entries,
                    expected[..expected.len() - 1]
                );
                storage.close().await.unwrap();
            }
        }
    }

    /// A record with a valid checksum that breaks the log's rules is damage, not a torn write:
    /// the checksum shows the bytes are as written, so something wrote them wrong.
    #[tokio::test]
    async fn a_checksummed_record_that_breaks_the_log_rules_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        // Segments that grow with each append, so the record below goes right after the log.
        let options = DiskOptions {
            preallocate: false,
            ..DiskOptions::new(1, 1)
        };
        let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
        let seq = storage.submit(append(1, 3));
        storage.wait_durable(seq).await.unwrap();
        storage.close().await.unwrap();

        // Entries 7..=8 do not follow entry 3.
        let path = crate::dir::segment_path(dir.path(), 1);
        let offset = std::fs::metadata(&path).unwrap().len();
        let mut record = BytesMut::new();
        let meta = std::fs::read(dir.path().join("meta")).unwrap();
        let (_, _, salt) = crate::format::decode_meta(&meta).unwrap();
        let seal = crate::format::Seal::salted(salt.expect("a dir of this build has a salt"));
        crate::format::encode_record(&append(7, 2), None, offset, seal, &mut record).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&record).unwrap();

        let error = DiskStorage::open(dir.path(), options).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} corrupt at offset {offset}: its entries start at index 7 but the log ends at \
                 3; restore this node from a peer: once `keel status` shows every other member \
                 up with lag 0, move the data dir away and restart this node empty",
                path.display()
            )
        );
    }
}
