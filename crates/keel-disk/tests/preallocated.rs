//! Preallocated segments: zero-filled to their size when created, written in place. Recovery
//! must tell their unwritten zeros from records, torn writes and damage, and writes after a
//! restart must land where the log ends, not at the end of the file.

mod common;

use std::path::Path;

use common::*;
use keel::{Storage, WriteBatch};
use keel_disk::DiskStorage;

const SEGMENT_BYTES: u64 = 4096;

/// Record end offsets of `batches` in one segment, found by writing them to a dir whose
/// segments grow with each append (the bytes of header and records are the same).
async fn record_ends(batches: &[WriteBatch]) -> Vec<u64> {
    let plain = tempfile::tempdir().unwrap();
    write_dir(plain.path(), options(), batches).await
}

fn zeros_from(path: &Path, offset: u64) -> bool {
    std::fs::read(path).unwrap()[offset as usize..]
        .iter()
        .all(|&b| b == 0)
}

#[tokio::test]
async fn segments_are_created_at_full_size_and_recover_to_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let batches = every_kind_of_batch();
    let ends = record_ends(&batches).await;
    write_dir(dir.path(), preallocated(SEGMENT_BYTES), &batches).await;
    let segment = last_segment(dir.path());
    assert_eq!(file_len(&segment), SEGMENT_BYTES);
    assert!(zeros_from(&segment, ends[ends.len() - 1]));
    assert_eq!(
        reopen(dir.path(), preallocated(SEGMENT_BYTES))
            .await
            .unwrap(),
        model(&batches)
    );
}

#[tokio::test]
async fn writes_after_a_restart_continue_where_the_log_ends() {
    let dir = tempfile::tempdir().unwrap();
    let options = preallocated(SEGMENT_BYTES);
    let first = vec![append(1..=3, 1)];
    write_dir(dir.path(), options.clone(), &first).await;
    let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
    storage.recover().unwrap();
    let second = vec![append(4..=5, 1), hard_state(2, None)];
    write_each(&storage, &second).await;
    close(&storage).await;
    let all: Vec<WriteBatch> = first.into_iter().chain(second).collect();
    assert_eq!(reopen(dir.path(), options).await.unwrap(), model(&all));
    assert_eq!(file_len(&last_segment(dir.path())), SEGMENT_BYTES);
}

#[tokio::test]
async fn a_cut_at_every_byte_of_the_last_records_recovers_the_complete_ones() {
    let dir = tempfile::tempdir().unwrap();
    let batches = every_kind_of_batch();
    let ends = record_ends(&batches).await;
    let options = preallocated(SEGMENT_BYTES);
    write_dir(dir.path(), options.clone(), &batches).await;
    let segment = last_segment(dir.path());
    let original = std::fs::read(&segment).unwrap();
    let name = segment.file_name().unwrap();

    // A crash in a preallocated segment leaves the bytes written so far, then the zeros (or,
    // for a write the disk reordered, junk) of the rest of the file.
    let from = ends[ends.len() - 4] as usize;
    for junk in [false, true] {
        for len in from..=ends[ends.len() - 1] as usize {
            let step = copy_dir(dir.path());
            let path = step.path().join(name);
            let mut bytes = original.clone();
            for (i, b) in bytes.iter_mut().enumerate().skip(len) {
                *b = if junk && i < ends[ends.len() - 1] as usize {
                    (i * 31 % 251) as u8
                } else {
                    0
                };
            }
            std::fs::write(&path, &bytes).unwrap();
            let intact = bytes
                .iter()
                .zip(&original)
                .take_while(|(a, b)| a == b)
                .count();
            let complete = ends.iter().filter(|&&e| e as usize <= intact).count();
            let recovered = reopen(step.path(), options.clone())
                .await
                .unwrap_or_else(|e| panic!("cut at {len} (junk: {junk}): {e}"));
            assert_eq!(
                recovered,
                model(&batches[..complete]),
                "cut at byte {len} (junk: {junk}) must recover the {complete} complete batches"
            );
            assert_eq!(file_len(&path), SEGMENT_BYTES, "the segment keeps its size");
            assert!(
                zeros_from(&path, ends[complete - 1]),
                "the torn bytes after the last good record are zeroed (cut at {len})"
            );
        }
    }
}

#[tokio::test]
async fn rolled_segments_use_the_prepared_spare_and_recover_whole() {
    let dir = tempfile::tempdir().unwrap();
    let options = preallocated(SEGMENT_BYTES);
    let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
    let batches: Vec<WriteBatch> = (1..=300).map(|i| append(i..=i, 1)).collect();
    write_each(&storage, &batches).await;
    let files = segments(dir.path());
    assert!(files.len() >= 4, "{} segments", files.len());
    for file in &files {
        assert!(
            file_len(file) >= SEGMENT_BYTES,
            "{} is preallocated",
            file.display()
        );
    }
    let on_disk: u64 = files.iter().map(|f| file_len(f)).sum();
    assert_eq!(storage.log_disk_bytes(), on_disk);
    close(&storage).await;
    assert_eq!(reopen(dir.path(), options).await.unwrap(), model(&batches));
    assert!(
        files_with_suffix(dir.path(), ".tmp").is_empty(),
        "recovery removes a spare segment that was being prepared"
    );
}

#[tokio::test]
async fn junk_in_the_zeros_of_an_earlier_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let options = preallocated(SEGMENT_BYTES);
    let batches: Vec<WriteBatch> = (1..=300).map(|i| append(i..=i, 1)).collect();
    write_dir(dir.path(), options.clone(), &batches).await;
    let first = segments(dir.path()).remove(0);
    let bytes = std::fs::read(&first).unwrap();
    let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert!(data_end < bytes.len(), "the segment ends in zeros");
    flip_byte(&first, bytes.len() as u64 - 1);
    let message = open_error(dir.path(), options).await;
    assert!(
        message.contains(&first.display().to_string())
            && message.contains("not the last segment, so not a torn write"),
        "{message}"
    );
}
