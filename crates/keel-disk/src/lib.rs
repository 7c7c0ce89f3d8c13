//! keel-disk: durable storage for keel in a data directory.
//!
//! [`DiskStorage`] implements [`keel::Storage`] with an append-only, checksummed write-ahead
//! log and snapshot files. Writes from many RPCs share one `fdatasync` (group commit); a crash
//! at any moment leaves a data dir that recovers every write reported durable.
//!
//! keel's core keeps the whole log since the last snapshot in memory, so this storage never
//! serves reads while the node runs: reading the data dir back at [`DiskStorage::open`] is the
//! only read it ever does. Replication and applying read memory, never the disk.
//!
//! For services deciding when to snapshot, [`DiskStorage::raft_state_size`] and
//! [`DiskStorage::snapshot_size`] count the stored state as `keel::storage::MemImage` does;
//! [`DiskStorage::log_disk_bytes`] is the disk space the log takes.
//!
//! # Using it
//!
//! ```
//! use keel::{Entry, HardState, Payload, Storage, WriteBatch};
//! use keel_disk::{DiskOptions, DiskStorage};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let options = DiskOptions::new(1, 7); // node 1 of cluster 7
//! let storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
//! // `submit` only queues (Raft calls it under its state lock); `wait_durable` waits for fsync.
//! let seq = storage.submit(WriteBatch {
//!     hard_state: Some(HardState { current_term: 1, voted_for: Some(1) }),
//!     entries: vec![Entry { index: 1, term: 1, payload: Payload::Noop }],
//!     ..Default::default()
//! });
//! storage.wait_durable(seq).await.unwrap();
//! storage.close().await.unwrap();
//!
//! // After a restart, the node resumes from what was durable.
//! let storage = DiskStorage::open(dir.path(), options).unwrap();
//! let recovered = storage.recover().unwrap();
//! assert_eq!(recovered.hard_state.voted_for, Some(1));
//! assert_eq!(recovered.entries.len(), 1);
//! // A real node hands the storage to `keel::Raft::new` as `Arc<dyn Storage>` instead.
//! # storage.close().await.unwrap();
//! # }
//! ```
//!
//! # Files
//!
//! ```text
//! <data dir>/
//!   LOCK                       locked (flock) while a DiskStorage has the dir open
//!   meta                       format version, node id, cluster id, salt; written on first open
//!   00000000000000000003.wal   log segments, numbered without gaps; the highest is appended to
//!   00000000000000000004.wal
//!   00000000000000000002.snap  the snapshot the log refers to (numbered by snapshot id)
//!   *.tmp                      a file being written (a snapshot, the next segment being
//!                              zero-filled); removed by recovery
//! ```
//!
//! Integers are little-endian; checksums are CRC32C.
//!
//! ```text
//! meta       = "KEELMETA" version:u32 node_id:u64 cluster_id:u64 salt:u64 crc:u32
//!              (salt: random, made with the dir; since format version 3)
//!
//! segment    = header record* zeros*           (zeros: the unwritten rest, if preallocated)
//! header     = "KEELWAL\0" version:u32 seq:u64 checkpoint crc:u32           (94 bytes)
//! checkpoint = hard_state has_snapshot:u8 snapshot_ref first_index:u64 last_index:u64
//!
//!              +-----------+-----------+------------------------------+
//! record     = | len:u32   | crc:u32   | body (len bytes)             |
//!              +-----------+-----------+------------------------------+
//!                           crc = CRC32C(salt, then len bytes, then body)
//!                           (in segments of version 3; of versions 1 and 2, without salt)
//! body       = flags:u8 [group_start:u64] [hard_state] [snapshot_ref] [truncate_after:u64]
//!              [first_index:u64 count:u32 entry*] [compact_through:u64]
//!              (group_start: where in the segment the write carrying the record began, and
//!               a flag on the last record of each write; since format version 2, absent in
//!               records of version 1)
//! entry      = term:u64 kind:u8 len:u32 data          (keel::codec::encode_entry_body)
//!
//! hard_state   = current_term:u64 has_vote:u8 voted_for:u64
//! snapshot_ref = id:u64 last_included_index:u64 last_included_term:u64 len:u64 data_crc:u32
//!
//! snapshot   = "KEELSNAP" version:u32 snapshot_ref header_crc:u32 [configuration] data
//! configuration = len:u32 crc:u32 bytes       (keel::codec::encode_membership; len 0: none;
//!                                              since format version 4, absent before)
//! ```
//!
//! One record holds one [`keel::WriteBatch`], so a batch is applied whole or not at all. Its
//! snapshot is a reference to a snapshot file; the data, and the cluster configuration in
//! force at the snapshot's last index, live in that file. (Entries that hold a configuration
//! are log entries like any other, in keel's encoding.)
//!
//! Format versions: 2 added the group start to records, 3 the salt, 4 the configuration of
//! snapshot files (and entries holding one). Opening a dir of an older format moves its meta
//! file to this build's version before anything new is written, so that an older build then
//! refuses the dir instead of misreading it; the older files stay readable (a snapshot file of
//! format 3 comes back without a configuration, and the node runs with the cluster it is
//! started with until its next snapshot records one).
//!
//! The salt in record checksums is for recovery's scan after damage in the last write, which
//! looks for valid records byte by byte: without it, a stored value could hold bytes that pass
//! for a record (anyone can compute a CRC) and make a torn write look like corruption, and the
//! node refuse to start. The salt never leaves the data dir. Opening a dir of an older format
//! gives it a salt (the meta file is rewritten first); its older segments are read without.
//!
//! # Writing
//!
//! - **Group commit.** `submit` pushes the batch onto a queue and wakes the writer task; it never
//!   blocks. The writer takes every queued batch, encodes them into one buffer, writes it with
//!   one call and issues one `fdatasync`, then completes all their waiters at once. The I/O runs
//!   on tokio's blocking pool (`spawn_blocking`, which also keeps tokio's paused test clock
//!   still while a write is in flight); while batches keep arriving, the blocking task goes on
//!   with the next group rather than handing back to the writer task.
//! - **Segments.** A segment is created whole (header to a `.tmp` file, fsync, rename, directory
//!   fsync). When the next record would take the current one past `segment_size_bytes`, it is
//!   fsynced and the next one started (a record larger than that gets a segment of its own), so
//!   only the last segment can ever end in a torn write. Every segment header
//!   carries a *checkpoint*: the hard state, snapshot reference and log bounds at the moment it
//!   began, so the segments before it can be deleted once compaction covers their entries.
//! - **Snapshots.** The file is written to a `.tmp` file, fsynced, renamed into place and the
//!   directory fsynced; only then is the record referring to it written. The file it replaces
//!   is deleted once that record is durable. A snapshot file is never written again once in
//!   place, so it is read back at open through a memory map. A snapshot arriving from the
//!   leader is spooled to an unnamed file in the dir as its chunks arrive (`spool.rs`) and
//!   handed to Raft as a map of that file, which it then stores like any other.
//! - **Compaction.** Once a durable record compacts the log past the last entry that existed
//!   when segment *k + 1* began, segments up to *k* hold nothing live and are deleted, oldest
//!   first.
//! - **Preallocation.** With `DiskOptions::preallocate` (the default) a segment is created
//!   zero-filled to `segment_size_bytes` and records are written over the zeros at the log's
//!   end, so an `fdatasync` writes the data and nothing else: no block allocation, no new file
//!   size. On the development machine that made 4-16 KiB appends with `fdatasync` 30-45%
//!   faster than growing the file (about 25% for a single small record). A record that would
//!   run past the segment's size starts the next segment instead, and a background thread
//!   zero-fills the next segment's file (`<seq>.wal.tmp`) once the current one is half full,
//!   paced so its writeback never queues ahead of the log's `fdatasync`s; rolling over finds it
//!   ready or has the thread finish it without pauses. Zeros are never a record (a record's length is never
//!   0), which is how recovery finds where the log ends.
//! - **Failure.** A failed write or fsync stops the storage for good: every present and future
//!   waiter gets the error, which names the file and the operation. An fsync is never retried,
//!   because after a failed fsync the kernel may have dropped the unwritten pages.
//!
//! # Recovery
//!
//! [`DiskStorage::open`] reads the whole data dir before anything else happens:
//!
//! 1. The lock is taken, and `meta` must name this node and cluster, in a format version this
//!    build reads.
//! 2. Segments must be numbered without gaps; each header's checksum, number and checkpoint
//!    must fit the segment before it.
//! 3. Every record's checksum is verified and the records are applied in order, with the rules
//!    of `keel::storage::MemImage`. Anything that breaks those rules is damage.
//! 4. Where the records end, the rest of a segment must be zeros (the unwritten part of a
//!    preallocated segment, or of a grown one whose size reached the disk before its data).
//!    Otherwise the first bad record decides what the rest of the log is:
//!    - in the **last** segment, if no valid record of a later write starts anywhere after it
//!      (a length that runs past the end of the file, a cut header, a checksum mismatch on the
//!      final bytes, or a hole in the last write; see below), it is a **torn write**: the crash
//!      interrupted the last write, which was never reported durable. It is cut off, with a
//!      warning: the torn bytes are zeroed if zeros follow them (a preallocated segment keeps
//!      its size), or else the file is truncated to the last good record.
//!    - anywhere else (in an earlier segment, or with a valid record of a later write after
//!      it) it is **corruption**, and opening fails with an error naming the file and offset.
//!      Nothing is discarded silently.
//! 5. Entries that were in deleted segments must all be compacted; the snapshot the log refers
//!    to must exist and match its checksum. Snapshot files the log does not refer to (an
//!    install the crash interrupted, or one replaced but not yet deleted) and `.tmp` files are
//!    removed.
//! 6. The last segment is fsynced before the recovered state is handed out or any file is
//!    deleted: the previous process may have died between a write and its `fdatasync`, leaving
//!    records that are readable (from the page cache) but not yet durable, and Raft vouches for
//!    what it recovers without writing it again. A data dir created here is made durable in its
//!    parent directory too.
//!
//! Recovery reads a segment 1 MiB at a time (a record larger than that in one read), and
//! copies each entry's data out of what it read, so what it holds besides the recovered
//! entries stays one chunk or one record; only a damaged last record makes it read the rest of
//! that file at once. (Read whole, a preallocated segment's 64 MiB stayed resident after
//! recovery.)
//!
//! A power loss during the last write's `fdatasync` may persist that write's pages in any
//! order, so valid records can follow the damage. Each record carries where its write began:
//! if every valid record after the damage began at or before it, they all belong to the
//! damaged write, which was never reported durable, and the write is cut off from the damage
//! on like any torn write. A valid record of a later write is corruption, and so is the
//! damaged write's last record found intact with bytes after it: that write had completed,
//! and its `fdatasync` too, since the next write starts only after it.
//!
//! One limit follows: damage inside the *last* write looks exactly like a torn one, so it is
//! cut off (with a warning) even if that write had been fsynced: a checksum cannot tell them
//! apart. (Logs written by format version 1, whose records do not say where their write began,
//! only get this for their last record; valid records after damage are corruption there.)

#![warn(missing_docs)]

mod bounds;
mod crcscan;
mod dir;
mod error;
mod format;
/// Entry points for the fuzz targets in `fuzz/` and the corpus-replay tests; not part of the API.
#[doc(hidden)]
pub mod fuzzing;
mod mapped;
mod recovery;
mod spool;
mod storage;
mod writer;

pub use error::DiskError;
pub use storage::{DiskOptions, DiskStorage};
pub use writer::SyncObserver;
