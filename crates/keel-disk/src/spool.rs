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
    /// Created by the first write, on the blocking thread that writes it.
    file: Option<Arc<File>>,
    dir: PathBuf,
}

impl DiskSpool {
    /// A new, empty spool in `dir` (its file is made by the first write).
    pub(crate) fn new(dir: &Path) -> DiskSpool {
        DiskSpool {
            file: None,
            dir: dir.to_path_buf(),
        }
    }
}

impl SnapshotSpool for DiskSpool {
    fn write(&mut self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        let file = self.file.clone();
        let dir = self.dir.clone();
        Box::pin(async move {
            let written = tokio::task::spawn_blocking(move || {
                let file = match file {
                    Some(file) => file,
                    None => Arc::new(
                        tempfile::tempfile_in(&dir)
                            .map_err(DiskError::io("create a snapshot spool file in", &dir))?,
                    ),
                };
                file.write_all_at(&data, offset).map_err(DiskError::io(
                    "write a snapshot chunk to a spool file in",
                    &dir,
                ))?;
                Ok(file)
            })
            .await
            .unwrap_or_else(|join| {
                Err(DiskError::io(
                    "write a snapshot chunk to a spool file in",
                    &self.dir,
                )(io::Error::other(join.to_string())))
            });
            self.file = Some(written?);
            Ok(())
        })
    }

    fn finish(self: Box<Self>, len: u64) -> Result<Bytes, StorageError> {
        let file = self.file.as_deref();
        let size = file.map_or(Ok(0), |file| file.metadata().map(|metadata| metadata.len()));
        let mapped = size.and_then(|size| {
            if size != len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the spool file holds {size} bytes, not the snapshot's {len}"),
                ));
            }
            match file {
                // Never written to.
                None => Ok(Bytes::new()),
                // SAFETY: this file has no name, so no other process can open it, and this
                // spool, its only writer, is consumed here: from now on the map is the only way
                // to it.
                Some(file) => unsafe { crate::mapped::map(file) },
            }
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
        let mut spool: Box<dyn SnapshotSpool> = Box::new(DiskSpool::new(dir.path()));
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
        let mut spool: Box<dyn SnapshotSpool> = Box::new(DiskSpool::new(dir.path()));
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
        let spool: Box<dyn SnapshotSpool> = Box::new(DiskSpool::new(dir.path()));
        assert!(spool.finish(0).unwrap().is_empty());
    }
}
