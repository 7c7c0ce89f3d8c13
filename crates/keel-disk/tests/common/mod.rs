//! Helpers shared by the integration tests: building batches, the `MemImage` reference, and
//! reopening data dirs.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use keel::storage::MemImage;
use keel::{
    Entry, HardState, Membership, Payload, Recovered, Snapshot, SnapshotMeta, Storage, WriteBatch,
};
use keel_disk::{DiskError, DiskOptions, DiskStorage};

/// How long any single wait on a real disk may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub const NODE: u64 = 3;
pub const CLUSTER: u64 = 42;

/// Options whose segments grow with each append, so that a segment's length is where its last
/// record ends (most tests cut and inspect files by those offsets). `preallocated` tests the
/// other kind.
pub fn options() -> DiskOptions {
    DiskOptions {
        preallocate: false,
        ..DiskOptions::new(NODE, CLUSTER)
    }
}

/// Options with zero-filled segments of `bytes`.
pub fn preallocated(bytes: u64) -> DiskOptions {
    DiskOptions {
        segment_size_bytes: bytes,
        preallocate: true,
        ..options()
    }
}

/// Options with segments small enough that a few batches roll them.
pub fn small_segments(bytes: u64) -> DiskOptions {
    DiskOptions {
        segment_size_bytes: bytes,
        ..options()
    }
}

pub fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Command(Bytes::from(format!("command {index} of term {term}"))),
    }
}

pub fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

pub fn append(range: std::ops::RangeInclusive<u64>, term: u64) -> WriteBatch {
    WriteBatch {
        entries: entries(range, term),
        ..Default::default()
    }
}

pub fn hard_state(current_term: u64, voted_for: Option<u64>) -> WriteBatch {
    WriteBatch {
        hard_state: Some(HardState {
            current_term,
            voted_for,
        }),
        ..Default::default()
    }
}

pub fn snapshot(index: u64, term: u64, data: &str) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
        },
        // A configuration that differs from snapshot to snapshot, so that a test comparing
        // what it wrote with what it recovered checks the configuration too.
        membership: Some(
            Membership::new(
                [1, 2, 3],
                [index % 7 + 4],
                BTreeMap::from([(2, Bytes::from(format!("node 2 at {index}")))]),
            )
            .expect("a valid configuration"),
        ),
        data: Bytes::from(data.to_owned()),
    }
}

/// A snapshot taken by the service at `index`, compacting the log through it.
pub fn take_snapshot(index: u64, term: u64, data: &str) -> WriteBatch {
    WriteBatch {
        snapshot: Some(snapshot(index, term, data)),
        compact_through: Some(index),
        ..Default::default()
    }
}

/// What recovery must return after `batches` were all durable.
pub fn model(batches: &[WriteBatch]) -> Recovered {
    let mut image = MemImage::new();
    for batch in batches {
        image.apply(batch.clone());
    }
    image.recovered()
}

/// Waits for `seq` to be durable, failing the test after `DEADLINE`.
pub async fn durable(storage: &DiskStorage, seq: u64) {
    tokio::time::timeout(DEADLINE, storage.wait_durable(seq))
        .await
        .expect("write did not become durable before the deadline")
        .expect("write failed");
}

/// Submits each batch and waits for it; returns the size of the last segment after each.
pub async fn write_each(storage: &DiskStorage, batches: &[WriteBatch]) -> Vec<u64> {
    let mut sizes = Vec::new();
    for batch in batches {
        let seq = storage.submit(batch.clone());
        durable(storage, seq).await;
        sizes.push(file_len(&last_segment(storage.dir())));
    }
    sizes
}

/// Opens `dir`, writes `batches` one at a time, closes it.
pub async fn write_dir(dir: &Path, options: DiskOptions, batches: &[WriteBatch]) -> Vec<u64> {
    let storage = DiskStorage::open(dir, options).expect("open");
    let sizes = write_each(&storage, batches).await;
    close(&storage).await;
    sizes
}

pub async fn close(storage: &DiskStorage) {
    tokio::time::timeout(DEADLINE, storage.close())
        .await
        .expect("close did not finish before the deadline")
        .expect("close");
}

/// Opens `dir`, takes what it recovered and closes it again.
pub async fn reopen(dir: &Path, options: DiskOptions) -> Result<Recovered, DiskError> {
    let storage = DiskStorage::open(dir, options)?;
    let recovered = storage.recover().expect("first recover");
    close(&storage).await;
    Ok(recovered)
}

/// The open error for `dir`, as its message.
pub async fn open_error(dir: &Path, options: DiskOptions) -> String {
    match reopen(dir, options).await {
        Ok(_) => panic!("opening {} should fail", dir.display()),
        Err(error) => error.to_string(),
    }
}

pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    files_with_suffix(dir, ".wal")
}

pub fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("a segment")
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

/// Copies every file of `from` (flat) into a new temp dir.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("temp dir");
    for item in std::fs::read_dir(from).expect("list dir") {
        let path = item.expect("dir entry").path();
        std::fs::copy(&path, to.path().join(path.file_name().expect("name"))).expect("copy");
    }
    to
}

/// Flips every bit of the byte at `offset` in `path`.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 0xff;
    std::fs::write(path, bytes).expect("write");
}

/// Waits until `condition` holds, checking every millisecond; fails the test after `DEADLINE`.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A log whose last batches are of every kind a torn write can hit.
pub fn every_kind_of_batch() -> Vec<WriteBatch> {
    vec![
        hard_state(1, Some(3)),
        append(1..=6, 1),
        take_snapshot(3, 1, "state through 3"),
        hard_state(2, None),
        WriteBatch {
            hard_state: Some(keel::HardState {
                current_term: 2,
                voted_for: Some(1),
            }),
            truncate_after: Some(5),
            entries: entries(6..=8, 2),
            ..Default::default()
        },
        append(9..=9, 2),
    ]
}
