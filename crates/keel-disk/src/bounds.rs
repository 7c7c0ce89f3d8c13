//! Where the stored log starts and ends, moved by a batch exactly as `keel::storage::MemImage`
//! moves it. Three places follow these rules: `submit` (to refuse batches that break the
//! contract), the writer (to know what each new segment's checkpoint says) and recovery.

/// The stored log holds entries `first_index..=last_index` (none if `last_index < first_index`).
/// Entries below `first_index` were compacted; `first_index` only moves up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogBounds {
    pub first_index: u64,
    pub last_index: u64,
}

impl LogBounds {
    /// Removes every entry after `index`; compacted entries stay compacted.
    pub(crate) fn truncate_after(&mut self, index: u64) {
        self.last_index = self.last_index.min(index.max(self.first_index - 1));
    }

    /// The index the next appended entry must have.
    pub(crate) fn next_index(&self) -> u64 {
        self.last_index + 1
    }

    pub(crate) fn append(&mut self, count: u64) {
        self.last_index = self.last_index.saturating_add(count);
    }

    /// Removes every entry up to `index`. Compacting past the end leaves an empty log that
    /// continues after `index`.
    pub(crate) fn compact_through(&mut self, index: u64) {
        self.first_index = self.first_index.max(index.saturating_add(1));
        self.last_index = self.last_index.max(self.first_index - 1);
    }
}
