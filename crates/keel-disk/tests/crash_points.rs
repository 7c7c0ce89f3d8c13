//! A crash can stop a write at any byte. For every such point, recovery must return exactly
//! the batches whose bytes all reached the disk: a prefix of the writes, holding every write
//! that was reported durable.

mod common;

use std::path::Path;

use common::*;
use keel::{Storage, WriteBatch};
use keel_disk::DiskStorage;

/// Rewrites `path` to its first `len` bytes of `original`, then `fill` up to the original
/// length (nothing, zeros or junk: what a crash can leave after the last complete write).
/// Returns how many leading bytes are intact (a fill byte can happen to equal the original).
fn cut(path: &Path, original: &[u8], len: usize, fill: Fill) -> usize {
    let mut bytes = original[..len].to_vec();
    match fill {
        Fill::Nothing => {}
        Fill::Zeros => bytes.resize(original.len(), 0),
        Fill::Junk => bytes.extend((len..original.len()).map(|i| (i * 31 % 251) as u8)),
    }
    std::fs::write(path, &bytes).unwrap();
    bytes
        .iter()
        .zip(original)
        .take_while(|(a, b)| a == b)
        .count()
}

#[derive(Clone, Copy, Debug)]
enum Fill {
    Nothing,
    Zeros,
    Junk,
}

#[tokio::test]
async fn a_cut_at_every_byte_of_the_last_records_recovers_the_complete_ones() {
    let dir = tempfile::tempdir().unwrap();
    let batches = every_kind_of_batch();
    let sizes = write_dir(dir.path(), options(), &batches).await;
    let segment = last_segment(dir.path());
    let original = std::fs::read(&segment).unwrap();
    assert_eq!(original.len() as u64, sizes[sizes.len() - 1]);

    // Every byte of the last five records, with each kind of leftover after the cut. Each cut
    // starts from a copy of the intact dir: recovery repairs the dir it opens.
    let from = sizes[sizes.len() - 6] as usize;
    let name = segment.file_name().unwrap();
    for fill in [Fill::Nothing, Fill::Zeros, Fill::Junk] {
        for len in from..=original.len() {
            let step = copy_dir(dir.path());
            let segment = step.path().join(name);
            let intact = cut(&segment, &original, len, fill);
            let complete = sizes.iter().filter(|&&s| s as usize <= intact).count();
            let recovered = reopen(step.path(), options())
                .await
                .unwrap_or_else(|e| panic!("cut at {len} ({fill:?}): {e}"));
            assert_eq!(
                recovered,
                model(&batches[..complete]),
                "cut at byte {len} ({fill:?}) must recover the {complete} complete batches"
            );
            let after = std::fs::read(&segment).unwrap()[sizes[complete - 1] as usize..].to_vec();
            assert!(
                after.iter().all(|&b| b == 0),
                "the torn tail is cut off at the last good record (cut at {len}, {fill:?}); only \
                 zeros may follow it, which the next write overwrites"
            );
        }
    }
}

/// Where each record starts, from `from` to the end of the records, and where the last ends.
fn record_starts(bytes: &[u8], from: usize) -> Vec<usize> {
    let mut starts = vec![from];
    let mut at = from;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += 8 + len;
        starts.push(at);
    }
    starts
}

/// A power loss during the last write's fdatasync can persist its pages in any order, so a
/// later record of that write may survive an earlier one. Nothing in that write was reported
/// durable: recovery cuts it from the first damaged record, rather than calling it corruption
/// (which would stop the node until someone restored it).
#[tokio::test]
async fn a_hole_in_the_last_write_with_later_records_intact_is_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let before = vec![append(1..=2, 1), hard_state(2, Some(1)), append(3..=4, 2)];
    let sizes = write_dir(dir.path(), options(), &before).await;
    // Four batches queued before the (fresh) writer runs: one write, one fdatasync.
    let group: Vec<WriteBatch> = (5..=8).map(|i| append(i..=i, 2)).collect();
    let storage = DiskStorage::open(dir.path(), options()).unwrap();
    let seqs: Vec<u64> = group.iter().map(|b| storage.submit(b.clone())).collect();
    durable(&storage, seqs[3]).await;
    assert_eq!(
        storage.log_sync_count(),
        1,
        "the four batches went in one write"
    );
    close(&storage).await;

    let segment = last_segment(dir.path());
    let original = std::fs::read(&segment).unwrap();
    let starts = record_starts(&original, sizes[2] as usize);
    assert_eq!(starts.len(), 5, "four records after the earlier writes");
    let name = segment.file_name().unwrap();
    for hole in 0..4 {
        for fill in [0u8, 0x5a] {
            let step = copy_dir(dir.path());
            let segment = step.path().join(name);
            let mut bytes = original.clone();
            bytes[starts[hole]..starts[hole + 1]].fill(fill);
            std::fs::write(&segment, &bytes).unwrap();
            let recovered = reopen(step.path(), options())
                .await
                .unwrap_or_else(|e| panic!("record {hole} lost ({fill:#x}): {e}"));
            let mut kept = before.clone();
            kept.extend_from_slice(&group[..hole]);
            assert_eq!(
                recovered,
                model(&kept),
                "record {hole} of the last write lost ({fill:#x}): the records before it stay"
            );
            let after = std::fs::read(&segment).unwrap()[starts[hole]..].to_vec();
            assert!(
                after.iter().all(|&b| b == 0),
                "the rest of the torn write is cut off (record {hole}, {fill:#x})"
            );
        }
    }

    // A hole in that write once it had completed (its last record intact) with a later write
    // after it, torn itself, is damage: the next write starts only after an fdatasync.
    let next = append(9..=9, 2);
    let step = copy_dir(dir.path());
    let storage = DiskStorage::open(step.path(), options()).unwrap();
    let seq = storage.submit(next);
    durable(&storage, seq).await;
    close(&storage).await;
    let segment = step.path().join(name);
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.len();
    bytes[starts[1]..starts[2]].fill(0);
    bytes[starts[4]..end].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(&segment, &bytes).unwrap();
    let message = open_error(step.path(), options()).await;
    assert!(
        message.contains(&format!(
            "corrupt at offset {}: zero record length (the write it belongs to ends intact at \
             offset {}",
            starts[1], starts[4]
        )),
        "{message}"
    );

    // The same hole in an earlier write, with a complete write after it, is damage.
    let step = copy_dir(dir.path());
    let segment = step.path().join(name);
    let mut bytes = original.clone();
    bytes[sizes[1] as usize..sizes[2] as usize].fill(0x5a);
    std::fs::write(&segment, &bytes).unwrap();
    let message = open_error(step.path(), options()).await;
    assert!(
        message.contains(&format!(
            "corrupt at offset {}: record of 1515870810 bytes runs past the end of the file",
            sizes[1]
        )) && message.contains("a valid record of a later write follows"),
        "{message}"
    );
}

/// A write that rolls into a new segment continues there as a write of its own, starting
/// after the header: a hole in that part, with its later records intact, is a torn write too.
#[tokio::test]
async fn a_hole_in_the_part_of_a_write_that_rolled_into_a_new_segment_is_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(400);
    let batches: Vec<WriteBatch> = (1..=20).map(|i| append(i..=i, 1)).collect();
    let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
    let seqs: Vec<u64> = batches.iter().map(|b| storage.submit(b.clone())).collect();
    durable(&storage, seqs[19]).await;
    close(&storage).await;
    assert!(segments(dir.path()).len() >= 3, "the write rolled segments");

    let segment = last_segment(dir.path());
    let original = std::fs::read(&segment).unwrap();
    let starts = record_starts(&original, 94);
    let in_last = starts.len() - 1;
    assert!(in_last >= 2, "{in_last} records in the last segment");
    let earlier = batches.len() - in_last;
    let mut bytes = original.clone();
    bytes[starts[0]..starts[1]].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let recovered = reopen(dir.path(), options).await.unwrap();
    assert_eq!(recovered, model(&batches[..earlier]));
}

#[tokio::test]
async fn after_cutting_a_torn_tail_the_log_takes_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let batches = every_kind_of_batch();
    let sizes = write_dir(dir.path(), options(), &batches).await;
    let segment = last_segment(dir.path());
    let original = std::fs::read(&segment).unwrap();
    // Tear the last record in half.
    let half = (sizes[sizes.len() - 2] + sizes[sizes.len() - 1]) / 2;
    cut(&segment, &original, half as usize, Fill::Zeros);

    let storage = DiskStorage::open(dir.path(), options()).unwrap();
    let kept = &batches[..batches.len() - 1];
    assert_eq!(storage.recover().unwrap(), model(kept));
    let next = vec![append(9..=10, 3)];
    write_each(&storage, &next).await;
    close(&storage).await;
    let mut expected = kept.to_vec();
    expected.extend(next);
    assert_eq!(
        reopen(dir.path(), options()).await.unwrap(),
        model(&expected)
    );
}

#[tokio::test]
async fn a_cut_in_a_freshly_rolled_segment_keeps_the_earlier_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(200);
    let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
    // Write until a batch starts a new segment; it is then that segment's only record.
    let mut batches = Vec::new();
    loop {
        let index = batches.len() as u64 + 1;
        let before = segments(dir.path()).len();
        batches.push(append(index..=index, 1));
        write_each(&storage, &batches[batches.len() - 1..]).await;
        if index > 3 && segments(dir.path()).len() > before {
            break;
        }
    }
    close(&storage).await;
    let segment = last_segment(dir.path());
    let original = std::fs::read(&segment).unwrap();
    let header_len = 94;
    for len in header_len..original.len() {
        let step = copy_dir(dir.path());
        cut(
            &step.path().join(segment.file_name().unwrap()),
            &original,
            len,
            Fill::Nothing,
        );
        let recovered = reopen(step.path(), options.clone()).await.unwrap();
        assert_eq!(
            recovered,
            model(&batches[..batches.len() - 1]),
            "cut at {len}"
        );
    }
}

/// The data dir before and after a snapshot that compacts whole segments away.
struct SnapshotInstall {
    before: tempfile::TempDir,
    after: tempfile::TempDir,
    batches_before: Vec<WriteBatch>,
    batches_after: Vec<WriteBatch>,
}

async fn snapshot_install() -> SnapshotInstall {
    let options = small_segments(400);
    let before = tempfile::tempdir().unwrap();
    let mut batches: Vec<WriteBatch> = (1..=20).map(|i| append(i..=i, 1)).collect();
    batches.push(take_snapshot(5, 1, "the old snapshot"));
    write_dir(before.path(), options.clone(), &batches).await;
    let batches_before = batches.clone();

    let after = copy_dir(before.path());
    let install = take_snapshot(18, 1, "the new snapshot, through 18");
    let storage = DiskStorage::open(after.path(), options).unwrap();
    storage.recover().unwrap();
    write_each(&storage, std::slice::from_ref(&install)).await;
    close(&storage).await;
    batches.push(install);
    SnapshotInstall {
        before,
        after,
        batches_before,
        batches_after: batches,
    }
}

fn names(dir: &Path, suffix: &str) -> Vec<String> {
    files_with_suffix(dir, suffix)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn every_step_of_installing_a_snapshot_recovers_before_or_after_it() {
    let install = snapshot_install().await;
    let (before, after) = (install.before.path(), install.after.path());
    let old_model = model(&install.batches_before);
    let new_model = model(&install.batches_after);
    let old_snap = names(before, ".snap");
    let new_snap = names(after, ".snap");
    assert_eq!((old_snap.len(), new_snap.len()), (1, 1));
    assert_ne!(old_snap, new_snap);
    let deleted: Vec<String> = names(before, ".wal")
        .into_iter()
        .filter(|s| !names(after, ".wal").contains(s))
        .collect();
    assert!(
        !deleted.is_empty(),
        "the install compacts whole segments away"
    );
    let new_snap_bytes = std::fs::read(after.join(&new_snap[0])).unwrap();

    // 1. The new snapshot is being written to its temporary file.
    for len in [0, 10, new_snap_bytes.len() / 2, new_snap_bytes.len()] {
        let step = copy_dir(before);
        std::fs::write(
            step.path().join(format!("{}.tmp", new_snap[0])),
            &new_snap_bytes[..len],
        )
        .unwrap();
        assert_eq!(
            reopen(step.path(), options()).await.unwrap(),
            old_model,
            "tmp of {len} bytes"
        );
        assert!(
            names(step.path(), ".tmp").is_empty(),
            "recovery removes the tmp file"
        );
    }

    // 2. The snapshot was renamed into place, but the record that refers to it is not
    //    written, or only in part.
    let old_segment = last_segment(before);
    let old_tail = std::fs::read(&old_segment).unwrap();
    let new_tail = std::fs::read(after.join(old_segment.file_name().unwrap())).unwrap();
    assert!(
        new_tail.starts_with(&old_tail),
        "the record was appended to the same segment"
    );
    for len in old_tail.len()..new_tail.len() {
        let step = copy_dir(before);
        std::fs::write(step.path().join(&new_snap[0]), &new_snap_bytes).unwrap();
        std::fs::write(
            step.path().join(old_segment.file_name().unwrap()),
            &new_tail[..len],
        )
        .unwrap();
        assert_eq!(
            reopen(step.path(), options()).await.unwrap(),
            old_model,
            "record cut at {len}"
        );
        assert_eq!(
            names(step.path(), ".snap"),
            old_snap,
            "the new snapshot the log does not refer to is removed"
        );
    }

    // 3. The record is durable, but the old snapshot and the covered segments are not yet
    //    deleted, or only some of them (oldest first).
    for kept_segments in 0..=deleted.len() {
        for keep_old_snapshot in [true, false] {
            let step = copy_dir(after);
            for name in &deleted[deleted.len() - kept_segments..] {
                std::fs::copy(before.join(name), step.path().join(name)).unwrap();
            }
            if keep_old_snapshot {
                std::fs::copy(before.join(&old_snap[0]), step.path().join(&old_snap[0])).unwrap();
            }
            assert_eq!(
                reopen(step.path(), options()).await.unwrap(),
                new_model,
                "{kept_segments} covered segments left, old snapshot kept: {keep_old_snapshot}"
            );
            assert_eq!(names(step.path(), ".snap"), new_snap);
        }
    }

    // 4. Done.
    assert_eq!(reopen(after, options()).await.unwrap(), new_model);
}

#[tokio::test]
async fn a_crash_while_the_meta_file_is_written_leaves_a_fresh_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("meta.tmp"), b"KEELME").unwrap();
    assert_eq!(reopen(dir.path(), options()).await.unwrap(), model(&[]));
    // A crash after the meta file but before the first segment.
    std::fs::remove_file(dir.path().join("00000000000000000001.wal")).unwrap();
    assert_eq!(reopen(dir.path(), options()).await.unwrap(), model(&[]));
}

#[tokio::test]
async fn a_crash_while_a_segment_is_created_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(200);
    let batches: Vec<WriteBatch> = (1..=8).map(|i| append(i..=i, 1)).collect();
    write_dir(dir.path(), options.clone(), &batches).await;
    // The next segment's header was being written to its temporary file.
    let last = last_segment(dir.path());
    let seq: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    std::fs::write(
        dir.path().join(format!("{:020}.wal.tmp", seq + 1)),
        b"KEELWAL\0partial",
    )
    .unwrap();
    assert_eq!(reopen(dir.path(), options).await.unwrap(), model(&batches));
}

#[tokio::test]
async fn a_crash_while_an_obsolete_segment_is_being_deleted_recovers_after_the_install() {
    let install = snapshot_install().await;
    let (before, after) = (install.before.path(), install.after.path());
    let new_model = model(&install.batches_after);
    let deleted: Vec<String> = names(before, ".wal")
        .into_iter()
        .filter(|s| !names(after, ".wal").contains(s))
        .collect();
    // Deletion renames a segment to .tmp, shrinks it in steps, then unlinks it; oldest first.
    // A crash leaves the older ones gone, this one renamed and cut short, the newer ones whole.
    for doomed in 0..deleted.len() {
        let step = copy_dir(after);
        for name in &deleted[doomed + 1..] {
            std::fs::copy(before.join(name), step.path().join(name)).unwrap();
        }
        let bytes = std::fs::read(before.join(&deleted[doomed])).unwrap();
        std::fs::write(
            step.path().join(format!("{}.tmp", deleted[doomed])),
            &bytes[..bytes.len() / 2],
        )
        .unwrap();
        assert_eq!(
            reopen(step.path(), options()).await.unwrap(),
            new_model,
            "segment {} was being deleted",
            deleted[doomed]
        );
        assert!(
            names(step.path(), ".tmp").is_empty(),
            "recovery removes the half-deleted segment"
        );
    }
}
