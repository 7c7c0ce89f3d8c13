//! Snapshot files read through a memory map, as `Bytes`: the kernel pages them in as they are
//! read and can drop the pages again, so a snapshot need not fit in the memory a node spares.

use std::fs::File;
use std::io;

use bytes::Bytes;

/// All of `file`, mapped read-only.
///
/// # Safety
///
/// Nothing may write or truncate `file` while the returned bytes, or any slice of them, live: a
/// write would show through them, and reading past a truncation is a fault (SIGBUS). Removing or
/// renaming the file is fine.
pub(crate) unsafe fn map(file: &File) -> io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        // A map cannot be empty.
        return Ok(Bytes::new());
    }
    // SAFETY: the caller's promise.
    let map = unsafe { memmap2::Mmap::map(file) }?;
    Ok(Bytes::from_owner(map))
}
