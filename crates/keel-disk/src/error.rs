//! What can go wrong opening or writing a data dir, in words an operator can act on.

use std::io;
use std::path::PathBuf;

use keel::StorageError;

/// What to do about damage that recovery cannot repair on its own.
const RESTORE: &str = "restore this node from a peer: once `keel status` shows every other member up with lag 0, move the data dir away and restart this node empty";

/// Errors of [`DiskStorage`](crate::DiskStorage). Every message names the file or directory
/// concerned; those about damage also say what to do.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An operating-system call failed. After a failed fsync the storage stops for good: the
    /// page cache may have dropped the data, so retrying could report a lost write as durable.
    /// So does any other failure except a shortage ([`DiskError::is_shortage`]), which the
    /// writer waits out.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// The operation, e.g. "fdatasync segment".
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another `DiskStorage` in this one) has the data dir open.
    #[error(
        "data dir {dir} is in use: another process holds its lock file {dir}/LOCK; stop that \
         process, or give this node a data dir of its own"
    )]
    Locked {
        /// The data dir.
        dir: PathBuf,
    },
    /// The data dir was created for another node.
    #[error("data dir {dir} belongs to node {found}, not {expected}")]
    WrongNode {
        /// The data dir.
        dir: PathBuf,
        /// The node id recorded in the dir.
        found: u64,
        /// The node id this storage was opened for.
        expected: u64,
    },
    /// The data dir was created for another cluster.
    #[error("data dir {dir} belongs to cluster {found}, not {expected}")]
    WrongCluster {
        /// The data dir.
        dir: PathBuf,
        /// The cluster id recorded in the dir.
        found: u64,
        /// The cluster id this storage was opened for.
        expected: u64,
    },
    /// A file was written by a newer version of this crate.
    #[error(
        "{path} was written in format version {found}, but this build reads versions up to \
         {supported}; run a newer build of this node"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The version found in it.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A file's contents are damaged at a known place.
    #[error("{path} corrupt at offset {offset}: {problem}; {RESTORE}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage (of the record or header that fails its checks).
        offset: u64,
        /// What is wrong there.
        problem: String,
    },
    /// Files are missing or do not fit together (a segment or the snapshot the log refers to
    /// is gone, segments from different histories, ...).
    #[error("data dir {dir} is damaged: {problem}; {RESTORE}")]
    Damaged {
        /// The data dir.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// [`DiskStorage::open`](crate::DiskStorage::open) was called outside a tokio runtime.
    #[error("DiskStorage::open must be called within a tokio runtime (it spawns the log writer)")]
    NoRuntime,
    /// `recover()` was called a second time.
    #[error(
        "recover() was already called on the storage of {dir}: the recovered state is handed \
         over once, so that the storage does not keep the whole log in memory"
    )]
    AlreadyRecovered {
        /// The data dir.
        dir: PathBuf,
    },
    /// A write batch does not fit in one log record.
    #[error("a write batch of {bytes} bytes exceeds the log record limit of 4 GiB")]
    RecordTooLarge {
        /// Encoded size of the batch.
        bytes: usize,
    },
    /// The writer task ended without reporting an error (it panicked, or its runtime shut
    /// down while it wrote).
    #[error("the log writer of {dir} stopped unexpectedly: {reason}")]
    WriterStopped {
        /// The data dir.
        dir: PathBuf,
        /// What the runtime reported.
        reason: String,
    },
}

impl DiskError {
    /// An I/O error of `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| DiskError::Io { op, path, source }
    }

    /// Whether this is a shortage the machine may recover from (a full disk or quota, no file
    /// descriptors) met by an operation that can simply run again: creating, writing, renaming
    /// or opening a file. The writer waits such errors out instead of stopping.
    ///
    /// Never an fsync's error (every flushing operation is named after its call, `fsync` or
    /// `fdatasync`): after a failed fsync the kernel may have dropped the dirty pages, so a
    /// later one could "succeed" without the data (fsyncgate).
    pub fn is_shortage(&self) -> bool {
        match self {
            DiskError::Io { op, source, .. } => {
                !op.contains("sync")
                    && matches!(
                        source.raw_os_error(),
                        Some(libc::ENOSPC | libc::EDQUOT | libc::EMFILE | libc::ENFILE)
                    )
            }
            _ => false,
        }
    }
}

impl From<DiskError> for StorageError {
    fn from(error: DiskError) -> Self {
        StorageError::backend(error)
    }
}
