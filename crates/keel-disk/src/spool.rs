//! A snapshot arriving from the leader, spooled chunk by chunk to a file in the data dir, so
//! that it is never held whole in memory (see [`keel::Storage::spool_snapshot`]).
//!
//! The file has no name (`O_TMPFILE`, or created and unlinked at once), so nothing else can open
//! it and a crash leaves nothing behind. Once the last chunk is written the file is mapped into
//! memory and handed to Raft as `Bytes`: the kernel reads its pages in as the snapshot is stored
//! and restored, and can drop them again under memory pressure. The disk space is freed when the
//! last view of the snapshot is dropped (Raft keeps one until the next snapshot).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use keel::{BoxFuture, SnapshotSpool, StorageError};

use crate::error::DiskError;

/// One snapshot being received, in an unnamed file of the data dir.
pub(crate) struct DiskSpool {
    file: Arc<File>,
    dir: PathBuf,
}

impl DiskSpool {
    /// A new, empty spool in `dir`.
    pub(crate) fn create(dir: &Path) -> Result<DiskSpool, DiskError> {
        let file = tempfile::tempfile_in(dir)
            .map_err(DiskError::io("create a snapshot spool file in", dir))?;
        Ok(DiskSpool {
            file: Arc::new(file),
            dir: dir.to_path_buf(),
        })
    }
}

impl SnapshotSpool for DiskSpool {
    fn write(&mut self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        let file = self.file.clone();
        Box::pin(async move {
            let written = tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
                .await
                .unwrap_or_else(|join| Err(io::Error::other(join.to_string())));
            written.map_err(DiskError::io(
                "write a snapshot chunk to a spool file in",
                &self.dir,
            ))?;
            Ok(())
        })
    }

    fn finish(self: Box<Self>, len: u64) -> Result<Bytes, StorageError> {
        let mapped = self.file.metadata().and_then(|metadata| {
            if metadata.len() != len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the spool file holds {} bytes, not the snapshot's {len}",
                        metadata.len()
                    ),
                ));
            }
            // SAFETY: this file has no name, so no other process can open it, and this spool,
            // its only writer, is consumed here: from now on the map is the only way to it.
            unsafe { crate::mapped::map(&self.file) }
        });
        Ok(mapped.map_err(DiskError::io("map the snapshot spooled in", &self.dir))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_written_in_order_come_back_whole_from_a_file_with_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool: Box<dyn SnapshotSpool> = Box::new(DiskSpool::create(dir.path()).unwrap());
        let mut expected = Vec::new();
        let mut offset = 0u64;
        for i in 0..50u8 {
            let chunk = Bytes::from(vec![i; 1000 + i as usize]);
            expected.extend_from_slice(&chunk);
            let len = chunk.len() as u64;
            spool.write(offset, chunk).await.unwrap();
            offset += len;
        }
        // The spool names no file in the data dir, during the transfer or after.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let data = spool.finish(offset).unwrap();
        assert_eq!(&data[..], &expected[..]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_spool_that_holds_less_than_the_snapshot_is_an_error_not_a_short_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool: Box<dyn SnapshotSpool> = Box::new(DiskSpool::create(dir.path()).unwrap());
        spool.write(0, Bytes::from_static(b"abc")).await.unwrap();
        let error = spool.finish(4).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("holds 3 bytes, not the snapshot's 4"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_empty_snapshot_is_spooled_too() {
        let dir = tempfile::tempdir().unwrap();
        let spool: Box<dyn SnapshotSpool> = Box::new(DiskSpool::create(dir.path()).unwrap());
        assert!(spool.finish(0).unwrap().is_empty());
    }
}
