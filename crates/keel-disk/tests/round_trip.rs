//! What is written comes back: reopening a data dir recovers what `MemImage` says it should.

mod common;

use std::time::Duration;

use common::*;
use keel::{Storage, StorageError, WriteBatch};
use keel_disk::{DiskOptions, DiskStorage};

#[tokio::test]
async fn an_empty_data_dir_recovers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let recovered = reopen(&dir.path().join("node"), options()).await.unwrap();
    assert_eq!(recovered, model(&[]));
}

#[tokio::test]
async fn every_kind_of_write_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let batches = vec![
        hard_state(1, Some(3)),
        append(1..=5, 1),
        // A follower replacing a conflicting suffix, in one batch with its new term.
        WriteBatch {
            hard_state: Some(keel::HardState {
                current_term: 2,
                voted_for: None,
            }),
            truncate_after: Some(3),
            entries: entries(4..=6, 2),
            ..Default::default()
        },
        take_snapshot(4, 2, "state through 4"),
        append(7..=9, 2),
        hard_state(3, Some(1)),
    ];
    write_dir(dir.path(), options(), &batches).await;
    assert_eq!(
        reopen(dir.path(), options()).await.unwrap(),
        model(&batches)
    );
    // And again: opening changed nothing.
    assert_eq!(
        reopen(dir.path(), options()).await.unwrap(),
        model(&batches)
    );
}

#[tokio::test]
async fn writes_continue_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut batches = vec![append(1..=3, 1), take_snapshot(2, 1, "two")];
    write_dir(dir.path(), options(), &batches).await;
    let more = vec![append(4..=6, 1), take_snapshot(5, 1, "five")];
    let storage = DiskStorage::open(dir.path(), options()).unwrap();
    assert_eq!(storage.recover().unwrap(), model(&batches));
    write_each(&storage, &more).await;
    close(&storage).await;
    batches.extend(more);
    assert_eq!(
        reopen(dir.path(), options()).await.unwrap(),
        model(&batches)
    );
}

#[tokio::test]
async fn a_snapshot_past_the_log_resets_it() {
    let dir = tempfile::tempdir().unwrap();
    let batches = vec![
        append(1..=3, 1),
        // InstallSnapshot from a leader whose log this follower does not share.
        WriteBatch {
            snapshot: Some(snapshot(10, 3, "leader state")),
            truncate_after: Some(10),
            compact_through: Some(10),
            ..Default::default()
        },
        append(11..=12, 3),
    ];
    write_dir(dir.path(), options(), &batches).await;
    let recovered = reopen(dir.path(), options()).await.unwrap();
    assert_eq!(recovered, model(&batches));
    assert_eq!(recovered.entries.first().map(|e| e.index), Some(11));
}

#[tokio::test]
async fn segments_roll_and_compaction_deletes_the_ones_a_snapshot_covers() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(300);
    let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
    let mut batches: Vec<WriteBatch> = (1..=40).map(|i| append(i..=i, 1)).collect();
    write_each(&storage, &batches).await;
    let rolled = segments(dir.path()).len();
    assert!(
        rolled > 5,
        "40 entries in 300-byte segments: {rolled} segments"
    );
    let log_before = storage.log_disk_bytes();
    assert_eq!(storage.snapshot_size(), 0);
    let mut image = keel::storage::MemImage::new();
    batches.iter().for_each(|b| image.apply(b.clone()));
    assert_eq!(storage.raft_state_size(), image.raft_state_size());

    let compact = take_snapshot(35, 1, "state through 35");
    write_each(&storage, std::slice::from_ref(&compact)).await;
    image.apply(compact.clone());
    batches.push(compact);
    // The log-size figure drops at once, before any file is deleted.
    assert_eq!(storage.raft_state_size(), image.raft_state_size());
    // Obsolete files are deleted just after the group is reported durable. Left: the segments
    // holding entries 36..=40 (about four entries fit in a segment) and the one the snapshot's
    // record went to.
    eventually("covered segments are deleted", || {
        segments(dir.path()).len() <= 3 && storage.log_disk_bytes() < log_before / 4
    })
    .await;
    assert_eq!(storage.snapshot_size(), "state through 35".len());
    assert_eq!(files_with_suffix(dir.path(), ".snap").len(), 1);

    let replace = take_snapshot(40, 1, "state through 40");
    write_each(&storage, std::slice::from_ref(&replace)).await;
    batches.push(replace);
    eventually("the replaced snapshot is deleted", || {
        files_with_suffix(dir.path(), ".snap").len() == 1
    })
    .await;
    close(&storage).await;
    assert_eq!(reopen(dir.path(), options).await.unwrap(), model(&batches));
}

#[tokio::test]
async fn a_crash_keeps_every_write_reported_durable() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DiskStorage::open(dir.path(), options()).unwrap();
    let durable_batches = vec![hard_state(1, Some(3)), append(1..=10, 1)];
    write_each(&storage, &durable_batches).await;
    // Queued but never waited for: the crash may or may not have written them.
    let in_flight: Vec<WriteBatch> = (11..=20).map(|i| append(i..=i, 1)).collect();
    let seqs: Vec<u64> = in_flight
        .iter()
        .map(|b| storage.submit(b.clone()))
        .collect();
    storage.crash().await;
    for seq in seqs {
        // Each either became durable before the crash or fails with `Closed`.
        if let Err(error) = storage.wait_durable(seq).await {
            assert!(matches!(error, StorageError::Closed), "{error}");
        }
    }

    let recovered = reopen(dir.path(), options()).await.unwrap();
    let kept = (0..=in_flight.len())
        .find(|&k| {
            let mut prefix = durable_batches.clone();
            prefix.extend_from_slice(&in_flight[..k]);
            model(&prefix) == recovered
        })
        .expect("recovery returns a prefix of the submitted batches");
    println!(
        "the crash kept {kept} of {} queued batches",
        in_flight.len()
    );
}

#[tokio::test]
async fn many_queued_batches_become_durable_together() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DiskStorage::open(dir.path(), options()).unwrap();
    let batches: Vec<WriteBatch> = (1..=500).map(|i| append(i..=i, 1)).collect();
    let seqs: Vec<u64> = batches.iter().map(|b| storage.submit(b.clone())).collect();
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>(), "seqs count up from 1");
    durable(&storage, 500).await;
    // All were queued before the writer ran: one group, one fdatasync.
    assert_eq!(storage.log_sync_count(), 1);
    // Durability is ordered: everything before the last is durable too.
    for seq in [1, 250, 499] {
        durable(&storage, seq).await;
    }
    close(&storage).await;
    assert_eq!(
        reopen(dir.path(), options()).await.unwrap(),
        model(&batches)
    );
}

#[tokio::test(start_paused = true)]
async fn simulated_time_stands_still_while_a_write_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DiskStorage::open(dir.path(), options()).unwrap();
    for i in 1..=50 {
        let seq = storage.submit(append(i..=i, 1));
        // With the clock paused, tokio advances it whenever the runtime is idle; a write on the
        // blocking pool must keep it from jumping past this timeout.
        tokio::time::timeout(Duration::from_millis(1), storage.wait_durable(seq))
            .await
            .expect("simulated time advanced while the write was in flight")
            .expect("write failed");
    }
    storage.close().await.unwrap();
}

#[tokio::test]
async fn recovered_state_is_handed_over_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DiskStorage::open(dir.path(), options()).unwrap();
    storage.recover().unwrap();
    let error = storage.recover().unwrap_err().to_string();
    assert!(error.contains("recover() was already called"), "{error}");
    assert!(error.contains(&dir.path().display().to_string()), "{error}");
    close(&storage).await;
}

#[tokio::test]
async fn writes_after_close_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DiskStorage::open(dir.path(), options()).unwrap();
    write_each(&storage, &[append(1..=1, 1)]).await;
    close(&storage).await;
    let seq = storage.submit(append(2..=2, 1));
    assert!(matches!(
        storage.wait_durable(seq).await,
        Err(StorageError::Closed)
    ));
    assert_eq!(
        reopen(dir.path(), options()).await.unwrap(),
        model(&[append(1..=1, 1)])
    );
}

#[tokio::test]
async fn a_dropped_storage_releases_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DiskStorage::open(dir.path(), options()).unwrap();
    let seq = storage.submit(append(1..=1, 1));
    durable(&storage, seq).await;
    drop(storage);
    // The writer stops on its own; wait (with a deadline) until the lock is free.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let recovered = loop {
        match DiskStorage::open(dir.path(), options()) {
            Ok(storage) => {
                let recovered = storage.recover().unwrap();
                close(&storage).await;
                break recovered;
            }
            Err(keel_disk::DiskError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) => panic!("reopen failed: {error}"),
        }
    };
    assert_eq!(recovered, model(&[append(1..=1, 1)]));
}

#[test]
fn default_options_use_64_mib_segments() {
    let options = DiskOptions::new(1, 2);
    assert_eq!(options.segment_size_bytes, 64 << 20);
    assert_eq!((options.node_id, options.cluster_id), (1, 2));
}

#[tokio::test]
#[should_panic(expected = "appended entries must be consecutive and follow the log")]
async fn a_batch_that_breaks_the_contract_panics_in_submit() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DiskStorage::open(dir.path(), options()).unwrap();
    storage.submit(append(1..=3, 1));
    storage.submit(append(5..=5, 1));
}
