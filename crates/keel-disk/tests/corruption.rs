//! Damage that is not a torn write stops recovery with an error naming the file, the offset and
//! what to do. Nothing is discarded silently.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use keel::WriteBatch;

const RESTORE: &str = "restore this node from a peer: once `keel status` shows every other member up with lag 0, move the data dir away and restart this node empty";

/// A data dir of one segment; returns the offsets where each batch's record starts.
async fn one_segment(dir: &Path, batches: &[WriteBatch]) -> Vec<u64> {
    let sizes = write_dir(dir, options(), batches).await;
    assert_eq!(segments(dir).len(), 1);
    let mut starts = vec![94];
    starts.extend_from_slice(&sizes[..sizes.len() - 1]);
    starts
}

/// A data dir of several small segments.
async fn many_segments(dir: &Path, count: u64) -> Vec<WriteBatch> {
    let batches: Vec<WriteBatch> = (1..=count).map(|i| append(i..=i, 1)).collect();
    write_dir(dir, small_segments(200), &batches).await;
    assert!(segments(dir).len() >= 4, "{} segments", segments(dir).len());
    batches
}

fn assert_corrupt(message: &str, path: &Path, offset: u64, problem: &str) {
    let expected = format!("{} corrupt at offset {offset}: {problem}", path.display());
    assert!(
        message.starts_with(&expected),
        "expected `{expected}...`, got `{message}`"
    );
    assert!(message.ends_with(RESTORE), "{message}");
}

fn rename_segment(dir: &Path, from: &Path, to: &Path) {
    std::fs::rename(dir.join(from), dir.join(to)).unwrap();
}

#[tokio::test]
async fn a_flipped_byte_before_the_last_record_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let batches = vec![append(1..=3, 1), append(4..=6, 1), append(7..=9, 1)];
    let starts = one_segment(dir.path(), &batches).await;
    // A byte of entry data in the middle record; the last record is intact.
    flip_byte(&last_segment(dir.path()), starts[1] + 40);
    let message = open_error(dir.path(), options()).await;
    assert_corrupt(
        &message,
        &last_segment(dir.path()),
        starts[1],
        &format!(
            "checksum mismatch (a valid record of a later write follows at offset {}, so not a \
             torn write)",
            starts[2]
        ),
    );
}

#[tokio::test]
async fn a_damaged_length_field_in_the_middle_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let batches = vec![append(1..=3, 1), append(4..=6, 1), append(7..=9, 1)];
    let starts = one_segment(dir.path(), &batches).await;
    // The middle record's length now points far past the end of the file, as a torn record's
    // would; the valid record after it shows this is damage.
    let segment = last_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[starts[1] as usize + 3] = 0x7f;
    std::fs::write(&segment, bytes).unwrap();
    let message = open_error(dir.path(), options()).await;
    assert_corrupt(&message, &segment, starts[1], "record of ");
    assert!(
        message.contains("runs past the end of the file"),
        "{message}"
    );
    assert!(
        message.contains("a valid record of a later write follows"),
        "{message}"
    );
}

#[tokio::test]
async fn a_damaged_hard_state_record_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let batches = vec![append(1..=2, 1), hard_state(5, Some(2)), append(3..=3, 5)];
    let starts = one_segment(dir.path(), &batches).await;
    // The vote inside the hard-state record.
    flip_byte(&last_segment(dir.path()), starts[1] + 8 + 1 + 9);
    let message = open_error(dir.path(), options()).await;
    assert_corrupt(
        &message,
        &last_segment(dir.path()),
        starts[1],
        "checksum mismatch",
    );
}

#[tokio::test]
async fn damage_at_the_end_of_an_earlier_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    many_segments(dir.path(), 20).await;
    let first = segments(dir.path())[0].clone();
    let len = file_len(&first);
    flip_byte(&first, len - 1);
    let message = open_error(dir.path(), options()).await;
    assert!(
        message.contains("(not the last segment, so not a torn write)"),
        "{message}"
    );
    assert!(
        message.starts_with(&format!("{} corrupt at offset ", first.display())),
        "{message}"
    );
    assert!(message.ends_with(RESTORE), "{message}");
}

#[tokio::test]
async fn a_damaged_segment_header_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    many_segments(dir.path(), 20).await;
    // The checkpoint in the second segment's header: the hard state and log bounds.
    let second = segments(dir.path())[1].clone();
    flip_byte(&second, 30);
    let message = open_error(dir.path(), options()).await;
    assert_corrupt(&message, &second, 0, "header checksum mismatch");
}

#[tokio::test]
async fn a_missing_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    many_segments(dir.path(), 20).await;
    let second = segments(dir.path())[1].clone();
    std::fs::remove_file(&second).unwrap();
    let message = open_error(dir.path(), options()).await;
    assert!(
        message.starts_with(&format!(
            "data dir {} is damaged: log segment {} is missing (the segments go from 1 to 3)",
            dir.path().display(),
            second.display()
        )),
        "{message}"
    );
    assert!(message.ends_with(RESTORE), "{message}");
}

#[tokio::test]
async fn a_missing_first_segment_with_live_entries_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    many_segments(dir.path(), 20).await;
    let all = segments(dir.path());
    std::fs::remove_file(&all[0]).unwrap();
    let message = open_error(dir.path(), options()).await;
    assert!(
        message.contains("is damaged: log entries 1..=") && message.contains("are missing"),
        "{message}"
    );
    assert!(message.contains(&all[1].display().to_string()), "{message}");
}

#[tokio::test]
async fn swapped_segment_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    many_segments(dir.path(), 20).await;
    let all = segments(dir.path());
    let parked = PathBuf::from("parked");
    rename_segment(dir.path(), &all[1], &parked);
    rename_segment(dir.path(), &all[2], &all[1]);
    rename_segment(dir.path(), &parked, &all[2]);
    let message = open_error(dir.path(), options()).await;
    assert_corrupt(
        &message,
        &all[1],
        0,
        "its header says it is segment 3: segment files were renamed or mixed up",
    );
}

#[tokio::test]
async fn a_segment_from_another_history_is_reported() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    many_segments(ours.path(), 20).await;
    // Same shape of log, but another term and vote.
    let mut batches = vec![hard_state(9, Some(1))];
    batches.extend((1..=20).map(|i| append(i..=i, 9)));
    write_dir(theirs.path(), small_segments(200), &batches).await;
    let foreign = segments(theirs.path())[2].clone();
    let replaced = segments(ours.path())[2].clone();
    std::fs::copy(&foreign, &replaced).unwrap();
    let message = open_error(ours.path(), options()).await;
    assert_corrupt(
        &message,
        &replaced,
        0,
        "its header does not continue the previous segment",
    );
    assert!(message.contains("different histories"), "{message}");
}

#[tokio::test]
async fn a_damaged_snapshot_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let batches = vec![
        append(1..=5, 1),
        take_snapshot(4, 1, "the state machine at 4"),
    ];
    write_dir(dir.path(), options(), &batches).await;
    let snapshot = files_with_suffix(dir.path(), ".snap").pop().unwrap();

    // The header (52 bytes), the configuration block, then the 22 bytes of data.
    let data_start = std::fs::metadata(&snapshot).unwrap().len() - 22;
    let data_damaged = copy_dir(dir.path());
    let path = data_damaged.path().join(snapshot.file_name().unwrap());
    flip_byte(&path, data_start + 5);
    let message = open_error(data_damaged.path(), options()).await;
    assert_corrupt(
        &message,
        &path,
        data_start,
        "snapshot data checksum mismatch",
    );

    let configuration_damaged = copy_dir(dir.path());
    let path = configuration_damaged
        .path()
        .join(snapshot.file_name().unwrap());
    flip_byte(&path, 52 + 8 + 3);
    let message = open_error(configuration_damaged.path(), options()).await;
    assert_corrupt(&message, &path, 52, "configuration checksum mismatch");

    let header_damaged = copy_dir(dir.path());
    let path = header_damaged.path().join(snapshot.file_name().unwrap());
    flip_byte(&path, 20);
    let message = open_error(header_damaged.path(), options()).await;
    assert_corrupt(&message, &path, 0, "header checksum mismatch");

    let cut = copy_dir(dir.path());
    let path = cut.path().join(snapshot.file_name().unwrap());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let message = open_error(cut.path(), options()).await;
    assert_corrupt(
        &message,
        &path,
        data_start,
        "21 bytes of snapshot data, expected 22",
    );
}

#[tokio::test]
async fn a_missing_snapshot_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let batches = vec![append(1..=5, 1), take_snapshot(4, 1, "state")];
    write_dir(dir.path(), options(), &batches).await;
    let snapshot = files_with_suffix(dir.path(), ".snap").pop().unwrap();
    std::fs::remove_file(&snapshot).unwrap();
    let message = open_error(dir.path(), options()).await;
    assert!(
        message.starts_with(&format!(
            "data dir {} is damaged: the log refers to snapshot file {}, which is missing",
            dir.path().display(),
            snapshot.display()
        )),
        "{message}"
    );
}

#[tokio::test]
async fn a_damaged_meta_file_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), options(), &[append(1..=1, 1)]).await;
    let meta = dir.path().join("meta");
    // The node id.
    flip_byte(&meta, 12);
    let message = open_error(dir.path(), options()).await;
    assert_corrupt(&message, &meta, 0, "header checksum mismatch");
}
