//! The data dir's files: their names, the lock, the meta file, and the write-then-rename step
//! every new file goes through.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::DiskError;
use crate::format::{self, HeaderError, Meta};

const LOCK_FILE: &str = "LOCK";
const META_FILE: &str = "meta";
const SEGMENT_SUFFIX: &str = ".wal";
const SNAPSHOT_SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"))
}

pub(crate) fn snapshot_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SNAPSHOT_SUFFIX}"))
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Takes the data dir's lock, creating the dir if needed. The lock is held while the returned
/// file stays open.
pub(crate) fn lock(dir: &Path) -> Result<File, DiskError> {
    create_durably(dir)?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(DiskError::io("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(DiskError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(DiskError::Io {
            op: "lock",
            path,
            source,
        }),
    }
}

/// Creates `dir` and any missing parents, and fsyncs the parent of each one created: until
/// then a power loss could take a new data dir, and with it the node's first vote, away.
fn create_durably(dir: &Path) -> Result<(), DiskError> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir).map_err(DiskError::io("create data dir", dir))?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            // A relative path's first component has the current directory as its parent.
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            File::open(parent)
                .and_then(|handle| handle.sync_all())
                .map_err(DiskError::io("fsync directory", parent))?;
        }
    }
    Ok(())
}

/// The files of a data dir, by kind.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub has_meta: bool,
    /// Segment sequence numbers, ascending.
    pub segments: Vec<u64>,
    /// Snapshot file ids, ascending.
    pub snapshots: Vec<u64>,
    /// Files an interrupted write left behind.
    pub temporary: Vec<PathBuf>,
}

pub(crate) fn list(dir: &Path) -> Result<Listing, DiskError> {
    let mut listing = Listing::default();
    let read = fs::read_dir(dir).map_err(DiskError::io("list data dir", dir))?;
    for item in read {
        let item = item.map_err(DiskError::io("list data dir", dir))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == META_FILE {
            listing.has_meta = true;
        } else if name.ends_with(TMP_SUFFIX) {
            listing.temporary.push(item.path());
        } else if let Some(seq) = numbered(name, SEGMENT_SUFFIX) {
            listing.segments.push(seq);
        } else if let Some(id) = numbered(name, SNAPSHOT_SUFFIX) {
            listing.snapshots.push(id);
        }
    }
    listing.segments.sort_unstable();
    listing.snapshots.sort_unstable();
    Ok(listing)
}

/// The number in a name like `00000000000000000042.wal`.
fn numbered(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks that the meta file names this node and cluster; returns the format version it was
/// written in, and the dir's salt (none before version 3).
pub(crate) fn check_meta(dir: &Path, expected: Meta) -> Result<(u32, Option<u64>), DiskError> {
    let path = dir.join(META_FILE);
    let bytes = fs::read(&path).map_err(DiskError::io("read meta file", &path))?;
    let (found, version, salt) =
        format::decode_meta(&bytes).map_err(|error| header_error(&path, error))?;
    if found.node_id != expected.node_id {
        return Err(DiskError::WrongNode {
            dir: dir.to_path_buf(),
            found: found.node_id,
            expected: expected.node_id,
        });
    }
    if found.cluster_id != expected.cluster_id {
        return Err(DiskError::WrongCluster {
            dir: dir.to_path_buf(),
            found: found.cluster_id,
            expected: expected.cluster_id,
        });
    }
    Ok((version, salt))
}

pub(crate) fn write_meta(
    dir: &Path,
    dir_handle: &File,
    meta: Meta,
    salt: u64,
) -> Result<(), DiskError> {
    let path = dir.join(META_FILE);
    let mut file = create_tmp(&path)?;
    file.write_all(&format::encode_meta(meta, salt))
        .map_err(DiskError::io("write", tmp_path(&path)))?;
    install(file, &path, dir_handle)?;
    Ok(())
}

/// Creates `path` + ".tmp", empty, for writing; [`install`] moves it into place.
pub(crate) fn create_tmp(path: &Path) -> Result<File, DiskError> {
    let tmp = tmp_path(path);
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(DiskError::io("create", tmp))
}

/// Makes a file written through [`create_tmp`] durable under its final name: fsync it, rename
/// it into place, fsync the directory. A crash at any step leaves either no file or the whole
/// file under `path` (and perhaps a `.tmp` that recovery removes).
pub(crate) fn install(file: File, path: &Path, dir_handle: &File) -> Result<File, DiskError> {
    let tmp = tmp_path(path);
    file.sync_all().map_err(DiskError::io("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(DiskError::io("rename into place", &tmp))?;
    sync_dir(dir_handle, path.parent().unwrap_or(Path::new(".")))?;
    Ok(file)
}

pub(crate) fn open_dir_handle(dir: &Path) -> Result<File, DiskError> {
    File::open(dir).map_err(DiskError::io("open data dir", dir))
}

/// Makes creations, renames and deletions in the data dir durable.
pub(crate) fn sync_dir(dir_handle: &File, dir: &Path) -> Result<(), DiskError> {
    dir_handle
        .sync_all()
        .map_err(DiskError::io("fsync data dir", dir))
}

/// Deletes a file; one that is already gone is fine.
pub(crate) fn remove(path: &Path) -> Result<(), DiskError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(DiskError::Io {
            op: "delete",
            path: path.to_path_buf(),
            source: error,
        }),
        _ => Ok(()),
    }
}

/// The error for a header that failed to decode.
pub(crate) fn header_error(path: &Path, error: HeaderError) -> DiskError {
    match error {
        HeaderError::NewerVersion(found) => DiskError::NewerFormat {
            path: path.to_path_buf(),
            found,
            supported: format::FORMAT_VERSION,
        },
        HeaderError::Damaged(problem) => DiskError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            problem,
        },
    }
}
