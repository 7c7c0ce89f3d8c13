//! Property test: random histories of the batches keel's core produces, with reopens and
//! crashes in between, recover exactly what `MemImage` (the reference) holds.

mod common;

use bytes::Bytes;
use common::*;
use keel::storage::MemImage;
use keel::{Entry, HardState, Payload, Storage, WriteBatch};
use keel_disk::{DiskOptions, DiskStorage};
use proptest::prelude::*;

/// One step of a history, in terms the interpreter turns into a batch the core could submit.
#[derive(Clone, Debug)]
enum Op {
    /// The leader appends `count` entries of its term, each with `size` bytes of command.
    Append { count: u8, size: u16 },
    /// A new term, with a vote or not, and entries of that term in the same batch.
    NewTerm { vote: Option<u8>, count: u8 },
    /// A follower drops up to `back` entries of a conflicting suffix (never below the
    /// compaction point or the snapshot) and appends `count` new ones.
    Replace { back: u8, count: u8 },
    /// The service snapshots at some applied index; compacting through it or, rarely, later.
    Snapshot { at: u8, compact: bool },
    /// Compacts through the snapshot, if an earlier snapshot did not.
    Compact,
    /// InstallSnapshot from a leader `ahead` entries past this log: the log is reset.
    Reset { ahead: u8 },
    /// Close and reopen; recovery must match the model.
    Reopen,
    /// Submit `queued` appends, wait for the first `waited`, crash, reopen: recovery must
    /// match the model after some prefix that includes the waited ones.
    Crash { queued: u8, waited: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..6u8, 0..300u16).prop_map(|(count, size)| Op::Append { count, size }),
        2 => (proptest::option::of(1..4u8), 0..3u8)
            .prop_map(|(vote, count)| Op::NewTerm { vote, count }),
        2 => (0..6u8, 0..4u8).prop_map(|(back, count)| Op::Replace { back, count }),
        2 => (any::<u8>(), prop::bool::weighted(0.8))
            .prop_map(|(at, compact)| Op::Snapshot { at, compact }),
        1 => Just(Op::Compact),
        1 => (0..5u8).prop_map(|ahead| Op::Reset { ahead }),
        2 => Just(Op::Reopen),
        1 => (1..6u8, 0..6u8).prop_map(|(queued, waited)| Op::Crash { queued, waited }),
    ]
}

/// The reference image, with the log bounds the core would know.
#[derive(Clone, Debug)]
struct Model {
    image: MemImage,
    first_index: u64,
    last_index: u64,
    snapshot_index: u64,
    term: u64,
}

impl Model {
    fn new() -> Self {
        Model {
            image: MemImage::new(),
            first_index: 1,
            last_index: 0,
            snapshot_index: 0,
            term: 0,
        }
    }

    fn apply(&mut self, batch: &WriteBatch) {
        self.image.apply(batch.clone());
        if let Some(hard_state) = batch.hard_state {
            self.term = hard_state.current_term;
        }
        if let Some(snapshot) = &batch.snapshot {
            self.snapshot_index = snapshot.meta.last_included_index;
        }
        if let Some(index) = batch.truncate_after {
            self.last_index = self.last_index.min(index.max(self.first_index - 1));
        }
        self.last_index += batch.entries.len() as u64;
        if let Some(index) = batch.compact_through {
            self.first_index = self.first_index.max(index + 1);
            self.last_index = self.last_index.max(self.first_index - 1);
        }
    }

    fn entries(&self, count: u8, size: u16) -> Vec<Entry> {
        (self.last_index + 1..=self.last_index + u64::from(count))
            .map(|index| Entry {
                index,
                term: self.term,
                payload: match size {
                    0 => Payload::Noop,
                    _ => Payload::Command(Bytes::from(vec![index as u8; usize::from(size)])),
                },
            })
            .collect()
    }

    fn term_at(&self, index: u64) -> u64 {
        self.image
            .entries()
            .find(|e| e.index == index)
            .map(|e| e.term)
            .expect("snapshot point is in the log")
    }

    /// The batch `op` stands for, if it makes sense in this state.
    fn batch(&self, op: &Op) -> Option<WriteBatch> {
        match *op {
            Op::Append { count, size } => Some(WriteBatch {
                entries: self.entries(count, size),
                ..Default::default()
            }),
            Op::NewTerm { vote, count } => {
                let mut next = self.clone();
                next.term += 1;
                Some(WriteBatch {
                    hard_state: Some(HardState {
                        current_term: next.term,
                        voted_for: vote.map(u64::from),
                    }),
                    entries: next.entries(count, 20),
                    ..Default::default()
                })
            }
            Op::Replace { back, count } => {
                let floor = (self.first_index - 1).max(self.snapshot_index);
                let keep = self.last_index.saturating_sub(u64::from(back)).max(floor);
                let mut kept = self.clone();
                kept.last_index = keep;
                Some(WriteBatch {
                    truncate_after: Some(keep),
                    entries: kept.entries(count, 30),
                    ..Default::default()
                })
            }
            Op::Snapshot { at, compact } => {
                let applied = self.last_index.checked_sub(self.snapshot_index)?;
                if applied == 0 || self.last_index < self.first_index {
                    return None;
                }
                let index = self.snapshot_index + 1 + u64::from(at) * (applied - 1) / 255;
                Some(WriteBatch {
                    snapshot: Some(snapshot(index, self.term_at(index), &format!("at {index}"))),
                    compact_through: compact.then_some(index),
                    ..Default::default()
                })
            }
            Op::Compact => (self.first_index <= self.snapshot_index).then(|| WriteBatch {
                compact_through: Some(self.snapshot_index),
                ..Default::default()
            }),
            Op::Reset { ahead } => {
                let index = self.last_index.max(self.snapshot_index) + 1 + u64::from(ahead);
                Some(WriteBatch {
                    snapshot: Some(snapshot(index, self.term, &format!("reset to {index}"))),
                    truncate_after: Some(index),
                    compact_through: Some(index),
                    ..Default::default()
                })
            }
            Op::Reopen | Op::Crash { .. } => None,
        }
    }
}

fn segment_bytes(dir: &std::path::Path) -> u64 {
    segments(dir).iter().map(|p| file_len(p)).sum()
}

async fn run_history(ops: Vec<Op>, preallocate: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let options = DiskOptions {
        segment_size_bytes: 512,
        preallocate,
        ..options()
    };
    let mut model = Model::new();
    let mut storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
    let first = hard_state(1, None);
    write_each(&storage, std::slice::from_ref(&first)).await;
    model.apply(&first);

    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Reopen => {
                close(&storage).await;
                storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
                prop_assert_eq!(
                    storage.recover().unwrap(),
                    model.image.recovered(),
                    "step {}: reopen",
                    step
                );
                prop_assert_eq!(storage.log_disk_bytes(), segment_bytes(dir.path()));
                prop_assert_eq!(storage.snapshot_size(), model.image.snapshot_size());
            }
            Op::Crash { queued, waited } => {
                let mut candidates = vec![model.clone()];
                let mut seqs = Vec::new();
                for _ in 0..*queued {
                    let mut next = candidates.last().unwrap().clone();
                    let batch = next.batch(&Op::Append { count: 1, size: 8 }).unwrap();
                    seqs.push(storage.submit(batch.clone()));
                    next.apply(&batch);
                    candidates.push(next);
                }
                let waited = usize::from(*waited).min(seqs.len());
                if waited > 0 {
                    durable(&storage, seqs[waited - 1]).await;
                }
                storage.crash().await;
                storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
                let recovered = storage.recover().unwrap();
                let kept = candidates
                    .iter()
                    .position(|m| m.image.recovered() == recovered);
                prop_assert!(
                    kept.is_some_and(|k| k >= waited),
                    "step {}: after a crash with {} of {} queued writes durable, recovery \
                     returned {:?}",
                    step,
                    waited,
                    seqs.len(),
                    recovered
                );
                model = candidates.swap_remove(kept.unwrap());
            }
            op => {
                if let Some(batch) = model.batch(op) {
                    write_each(&storage, std::slice::from_ref(&batch)).await;
                    model.apply(&batch);
                }
            }
        }
        // The size figures of the durable state, as the reference counts them.
        prop_assert_eq!(
            storage.raft_state_size(),
            model.image.raft_state_size(),
            "step {}: raft state size",
            step
        );
        prop_assert_eq!(storage.snapshot_size(), model.image.snapshot_size());
    }
    close(&storage).await;
    prop_assert_eq!(
        reopen(dir.path(), options).await.unwrap(),
        model.image.recovered(),
        "final reopen"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_histories_recover_what_the_model_holds(
        ops in prop::collection::vec(op(), 1..40),
        preallocate in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run_history(ops, preallocate))?;
    }
}
