//! Where a follower puts a snapshot that arrives from the leader, chunk by chunk (see
//! [`Storage::spool_snapshot`](super::Storage::spool_snapshot)).

use bytes::{Bytes, BytesMut};

use crate::BoxFuture;
use crate::error::StorageError;

/// One snapshot being received. Raft writes each chunk as it arrives, in order and without
/// its state lock held, and calls [`SnapshotSpool::finish`] after the last; a transfer that is
/// abandoned (a new leader, a new snapshot, an error) just drops its spool.
pub trait SnapshotSpool: Send {
    /// Appends `data` at `offset`, which is the length of everything written so far. A spool
    /// on disk does the write on a blocking thread, so that a slow disk holds up no task.
    fn write(&mut self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>>;

    /// The whole snapshot, `len` bytes (everything written). A spool that keeps it in a file
    /// returns a view of the file (a memory map), so the snapshot need not fit in memory.
    fn finish(self: Box<Self>, len: u64) -> Result<Bytes, StorageError>;
}

/// A spool in memory, for storages that keep everything in memory anyway.
#[derive(Debug, Default)]
pub struct MemSpool {
    data: BytesMut,
}

impl SnapshotSpool for MemSpool {
    fn write(&mut self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        assert_eq!(
            offset,
            self.data.len() as u64,
            "chunks are spooled in order"
        );
        self.data.extend_from_slice(&data);
        Box::pin(std::future::ready(Ok(())))
    }

    fn finish(self: Box<Self>, len: u64) -> Result<Bytes, StorageError> {
        assert_eq!(
            len,
            self.data.len() as u64,
            "a spool finishes with what it holds"
        );
        Ok(self.data.freeze())
    }
}
