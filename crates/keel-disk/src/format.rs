//! The bytes of every file keel-disk writes: encoding and decoding, no I/O.
//!
//! Integers are little-endian and fixed width; checksums are CRC32C. The crate docs draw the
//! layouts. Decoding never panics on bad input: it returns what is wrong, and the caller adds the
//! file name and offset.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keel::codec::{decode_membership, encode_entry_body, encode_membership};
use keel::{HardState, Membership, SnapshotMeta, WriteBatch};

use crate::bounds::LogBounds;
use crate::crcscan::CrcIndex;

/// The format this build writes, and the newest it reads. Version 2 added the group start to
/// records (`HAS_GROUP`); records of version 1 have none, and are read as before. Version 3
/// added the data dir's salt to the meta file, and seeds the checksum of every record in a
/// segment of version 3 with it ([`Seal`]). Version 4 added the cluster configuration to
/// snapshot files, and log entries that hold one (keel's `Payload::Config`, which an older
/// build cannot decode).
pub(crate) const FORMAT_VERSION: u32 = 4;

/// The first version whose snapshot files carry the cluster configuration.
pub(crate) const MEMBERSHIP_VERSION: u32 = 4;

/// The first version whose meta file holds a salt and whose segments' records are sealed.
pub(crate) const SALTED_VERSION: u32 = 3;

const META_MAGIC: &[u8; 8] = b"KEELMETA";
const SEGMENT_MAGIC: &[u8; 8] = b"KEELWAL\0";
const SNAPSHOT_MAGIC: &[u8; 8] = b"KEELSNAP";

/// magic, version, node id, cluster id, crc (versions 1 and 2).
const META_LEN_UNSALTED: usize = 8 + 4 + 8 + 8 + 4;
/// magic, version, node id, cluster id, salt, crc (version 3).
pub(crate) const META_LEN: usize = 8 + 4 + 8 + 8 + 8 + 4;
/// magic, version, seq, checkpoint, crc.
pub(crate) const SEGMENT_HEADER_LEN: usize = 8 + 4 + 8 + CHECKPOINT_LEN + 4;
/// magic, version, id, index, term, data length, data crc, header crc.
pub(crate) const SNAPSHOT_HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8 + 8 + 4 + 4;
/// length, crc.
pub(crate) const RECORD_HEADER_LEN: usize = 8;

const HARD_STATE_LEN: usize = 8 + 1 + 8;
const SNAPSHOT_REF_LEN: usize = 8 + 8 + 8 + 8 + 4;
/// hard state, has-snapshot flag, snapshot ref, first index, last index.
const CHECKPOINT_LEN: usize = HARD_STATE_LEN + 1 + SNAPSHOT_REF_LEN + 8 + 8;

const HAS_HARD_STATE: u8 = 1;
const HAS_SNAPSHOT: u8 = 2;
const HAS_TRUNCATE: u8 = 4;
const HAS_ENTRIES: u8 = 8;
const HAS_COMPACT: u8 = 16;
/// The record carries the offset in its segment where the write that holds it began.
const HAS_GROUP: u8 = 32;
/// The record is the last of the write that holds it.
const GROUP_END: u8 = 64;
const KNOWN_FLAGS: u8 = HAS_HARD_STATE
    | HAS_SNAPSHOT
    | HAS_TRUNCATE
    | HAS_ENTRIES
    | HAS_COMPACT
    | HAS_GROUP
    | GROUP_END;
/// Flags that say where a record sits, not what it holds.
const PLACE_FLAGS: u8 = HAS_GROUP | GROUP_END;

/// Why a header could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Written by a newer version of this crate.
    NewerVersion(u32),
    /// Anything else: wrong magic, short, bad checksum.
    Damaged(String),
}

/// Whose data dir this is (the `meta` file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub node_id: u64,
    pub cluster_id: u64,
}

/// What a record's checksum is seeded with: nothing in segments of versions 1 and 2; in
/// segments of version 3, the data dir's random salt. Recovery, after damage in the last
/// write, looks for valid records byte by byte to tell a torn write from corruption; without a
/// seed, a value a client stored could hold bytes that pass for a record (a CRC is no secret)
/// and make a torn write look like corruption. Unseen salt, no such bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seal(Option<u64>);

impl Seal {
    /// The checksum of versions 1 and 2.
    pub(crate) const NONE: Seal = Seal(None);

    /// Seeded with `salt`.
    pub(crate) fn salted(salt: u64) -> Seal {
        Seal(Some(salt))
    }

    /// The seal of a segment of `version` in a data dir with `salt` (`None`: an older dir,
    /// whose segments are all older too).
    pub(crate) fn for_segment(version: u32, salt: Option<u64>) -> Option<Seal> {
        match (version >= SALTED_VERSION, salt) {
            (false, _) => Some(Seal::NONE),
            (true, Some(salt)) => Some(Seal::salted(salt)),
            (true, None) => None,
        }
    }
}

/// Where the current snapshot lives and what it must contain: the log's reference to a
/// snapshot file, checked against the file at recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotRef {
    /// Names the file (`{id:020}.snap`); ids are never reused within a data dir's life.
    pub id: u64,
    pub meta: SnapshotMeta,
    /// Bytes of snapshot data.
    pub len: u64,
    /// CRC32C of the snapshot data.
    pub crc: u32,
}

/// Everything the segments before this one established, except their entries. Each segment
/// starts with one, so whole segments can be deleted once their entries are compacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotRef>,
    /// The log when the segment was started.
    pub log: LogBounds,
}

impl Checkpoint {
    /// The state of an empty data dir.
    pub(crate) fn empty() -> Self {
        Checkpoint {
            hard_state: HardState::default(),
            snapshot: None,
            log: LogBounds {
                first_index: 1,
                last_index: 0,
            },
        }
    }
}

/// A decoded log record: one [`WriteBatch`], with the snapshot replaced by its reference and the
/// entries left encoded (they are decoded straight into the recovered log).
#[derive(Debug)]
pub(crate) struct Record {
    pub hard_state: Option<HardState>,
    pub snapshot: Option<SnapshotRef>,
    pub truncate_after: Option<u64>,
    pub entries: Option<EntryRun>,
    pub compact_through: Option<u64>,
}

/// Consecutive encoded entries (`keel::codec::encode_entry_body` each), starting at
/// `first_index`.
#[derive(Debug)]
pub(crate) struct EntryRun {
    pub first_index: u64,
    pub count: u32,
    pub bodies: Bytes,
}

pub(crate) fn encode_meta(meta: Meta, salt: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_LEN);
    out.put_slice(META_MAGIC);
    out.put_u32_le(FORMAT_VERSION);
    out.put_u64_le(meta.node_id);
    out.put_u64_le(meta.cluster_id);
    out.put_u64_le(salt);
    out.put_u32_le(crc32c::crc32c(&out));
    out
}

/// Decodes a meta file: whose dir it is, the format version it was written in, and its salt
/// (none before version 3).
pub(crate) fn decode_meta(bytes: &[u8]) -> Result<(Meta, u32, Option<u64>), HeaderError> {
    let version = bytes
        .get(8..12)
        .map_or(0, |v| u32::from_le_bytes(v.try_into().expect("4 bytes")));
    let len = if version >= SALTED_VERSION {
        META_LEN
    } else {
        META_LEN_UNSALTED
    };
    let mut r = check_header(bytes, META_MAGIC, len)?;
    let meta = Meta {
        node_id: r.get_u64_le(),
        cluster_id: r.get_u64_le(),
    };
    let salt = (version >= SALTED_VERSION).then(|| r.get_u64_le());
    Ok((meta, version, salt))
}

pub(crate) fn encode_segment_header(seq: u64, checkpoint: &Checkpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_HEADER_LEN);
    out.put_slice(SEGMENT_MAGIC);
    out.put_u32_le(FORMAT_VERSION);
    out.put_u64_le(seq);
    put_hard_state(&mut out, checkpoint.hard_state);
    match &checkpoint.snapshot {
        Some(snapshot) => {
            out.put_u8(1);
            put_snapshot_ref(&mut out, snapshot);
        }
        None => {
            out.put_u8(0);
            out.put_bytes(0, SNAPSHOT_REF_LEN);
        }
    }
    out.put_u64_le(checkpoint.log.first_index);
    out.put_u64_le(checkpoint.log.last_index);
    out.put_u32_le(crc32c::crc32c(&out));
    debug_assert_eq!(out.len(), SEGMENT_HEADER_LEN);
    out
}

/// Decodes a segment header: its sequence number, checkpoint and format version.
pub(crate) fn decode_segment_header(bytes: &[u8]) -> Result<(u64, Checkpoint, u32), HeaderError> {
    let mut r = check_header(bytes, SEGMENT_MAGIC, SEGMENT_HEADER_LEN)?;
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("checked, so long enough"));
    let seq = r.get_u64_le();
    let hard_state = get_hard_state(&mut r).map_err(|e| HeaderError::Damaged(e.into()))?;
    let snapshot = match r.get_u8() {
        0 => {
            r.advance(SNAPSHOT_REF_LEN);
            None
        }
        1 => Some(get_snapshot_ref(&mut r)),
        _ => return Err(HeaderError::Damaged("invalid snapshot flag".into())),
    };
    let checkpoint = Checkpoint {
        hard_state,
        snapshot,
        log: LogBounds {
            first_index: r.get_u64_le(),
            last_index: r.get_u64_le(),
        },
    };
    // Indexes are at most MAX_INDEX (2^63 - 1), as on the wire: a node only ever adds one.
    let max = keel::codec::MAX_INDEX;
    if checkpoint.log.first_index == 0
        || checkpoint.log.last_index < checkpoint.log.first_index - 1
        || checkpoint.log.first_index > max
        || checkpoint.log.last_index > max
    {
        return Err(HeaderError::Damaged("invalid log bounds".into()));
    }
    Ok((seq, checkpoint, version))
}

/// The start of a snapshot file: its header, then the configuration block (`len:u32 crc:u32`
/// and the configuration's bytes, `keel::codec::encode_membership`; length 0 for none); the
/// data follows.
pub(crate) fn encode_snapshot_header(
    snapshot: &SnapshotRef,
    membership: Option<&Membership>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + 8);
    out.put_slice(SNAPSHOT_MAGIC);
    out.put_u32_le(FORMAT_VERSION);
    put_snapshot_ref(&mut out, snapshot);
    out.put_u32_le(crc32c::crc32c(&out));
    debug_assert_eq!(out.len(), SNAPSHOT_HEADER_LEN);
    let mut block = BytesMut::new();
    if let Some(membership) = membership {
        encode_membership(membership, &mut block);
    }
    out.put_u32_le(block.len() as u32);
    out.put_u32_le(crc32c::crc32c(&block));
    out.put_slice(&block);
    out
}

/// Decodes a snapshot file's header; returns what it describes and the file's format version
/// (the configuration block follows in version 4 on, then the data; both are checked by the
/// caller).
pub(crate) fn decode_snapshot_header(bytes: &[u8]) -> Result<(SnapshotRef, u32), HeaderError> {
    let mut r = check_header(bytes, SNAPSHOT_MAGIC, SNAPSHOT_HEADER_LEN)?;
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    Ok((get_snapshot_ref(&mut r), version))
}

/// Decodes the configuration block that follows a snapshot header (version 4 on): the
/// configuration, if the snapshot has one, and the block's length.
pub(crate) fn decode_snapshot_membership(
    bytes: &Bytes,
) -> Result<(Option<Membership>, usize), String> {
    if bytes.len() < 8 {
        return Err("the file ends inside its configuration block".into());
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let Some(block) = bytes.get(8..8 + len) else {
        return Err(format!(
            "its configuration block claims {len} bytes, more than the file holds"
        ));
    };
    if crc32c::crc32c(block) != crc {
        return Err("configuration checksum mismatch".into());
    }
    if len == 0 {
        return Ok((None, 8));
    }
    let membership =
        decode_membership(bytes.slice(8..8 + len)).map_err(|e| format!("configuration: {e}"))?;
    Ok((Some(membership), 8 + len))
}

/// Checks magic, version, length and trailing checksum of a fixed-size header; returns a reader
/// positioned after the version.
fn check_header<'a>(bytes: &'a [u8], magic: &[u8; 8], len: usize) -> Result<&'a [u8], HeaderError> {
    if bytes.len() < 12 || &bytes[..8] != magic {
        return Err(HeaderError::Damaged(
            "not a keel-disk file of this kind (bad magic)".into(),
        ));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version > FORMAT_VERSION {
        return Err(HeaderError::NewerVersion(version));
    }
    if version == 0 {
        return Err(HeaderError::Damaged("format version 0".into()));
    }
    if bytes.len() < len {
        return Err(HeaderError::Damaged(format!(
            "header truncated ({} of {len} bytes)",
            bytes.len()
        )));
    }
    let stored = u32::from_le_bytes(bytes[len - 4..len].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..len - 4]) != stored {
        return Err(HeaderError::Damaged("header checksum mismatch".into()));
    }
    Ok(&bytes[12..len - 4])
}

/// Appends one framed record holding `batch` (with `snapshot` standing for its snapshot) to
/// `out`. `group_start` is the offset in the segment where the write that will carry the
/// record begins (recovery uses it to tell a torn last write from damage). A record larger
/// than the 4 GiB frame limit is refused with its size, and nothing is appended.
pub(crate) fn encode_record(
    batch: &WriteBatch,
    snapshot: Option<&SnapshotRef>,
    group_start: u64,
    seal: Seal,
    out: &mut BytesMut,
) -> Result<(), usize> {
    let start = out.len();
    let entry_bytes: usize = batch.entries.iter().map(|e| e.encoded_len()).sum();
    out.reserve(
        RECORD_HEADER_LEN + 1 + 8 + HARD_STATE_LEN + SNAPSHOT_REF_LEN + 8 + 12 + 8 + entry_bytes,
    );
    out.put_u64_le(0); // length and crc, filled in below
    let mut flags = HAS_GROUP;
    if batch.hard_state.is_some() {
        flags |= HAS_HARD_STATE;
    }
    if snapshot.is_some() {
        flags |= HAS_SNAPSHOT;
    }
    if batch.truncate_after.is_some() {
        flags |= HAS_TRUNCATE;
    }
    if !batch.entries.is_empty() {
        flags |= HAS_ENTRIES;
    }
    if batch.compact_through.is_some() {
        flags |= HAS_COMPACT;
    }
    out.put_u8(flags);
    out.put_u64_le(group_start);
    if let Some(hard_state) = batch.hard_state {
        put_hard_state(out, hard_state);
    }
    if let Some(snapshot) = snapshot {
        put_snapshot_ref(out, snapshot);
    }
    if let Some(index) = batch.truncate_after {
        out.put_u64_le(index);
    }
    if let Some(first) = batch.entries.first() {
        out.put_u64_le(first.index);
        out.put_u32_le(batch.entries.len() as u32);
        for entry in &batch.entries {
            encode_entry_body(entry, out);
        }
    }
    if let Some(index) = batch.compact_through {
        out.put_u64_le(index);
    }
    let body_len = out.len() - start - RECORD_HEADER_LEN;
    let Ok(len) = u32::try_from(body_len) else {
        out.truncate(start);
        return Err(body_len);
    };
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = record_crc(
        seal,
        &out[start..start + 4],
        &out[start + RECORD_HEADER_LEN..],
    );
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The checksum covers the length field too, so a damaged length is caught like damaged data;
/// it starts from the seal's salt, if any.
fn record_crc(seal: Seal, len: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc_seed(seal, len), body)
}

/// The checksum of what a record's checksum covers before its body: the salt and the length.
fn crc_seed(seal: Seal, len: &[u8]) -> u32 {
    match seal.0 {
        None => crc32c::crc32c(len),
        Some(salt) => crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), len),
    }
}

/// Reads the frame at `offset`: returns the record body and where the next frame starts, or
/// why no valid frame starts there.
pub(crate) fn read_frame(
    data: &Bytes,
    offset: usize,
    seal: Seal,
) -> Result<(Bytes, usize), String> {
    let rest = &data[offset..];
    if rest.len() < RECORD_HEADER_LEN {
        return Err(format!(
            "record header truncated ({} of {RECORD_HEADER_LEN} bytes)",
            rest.len()
        ));
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    if len == 0 {
        return Err("zero record length".into());
    }
    let end = RECORD_HEADER_LEN + len;
    if end > rest.len() {
        return Err(format!(
            "record of {len} bytes runs past the end of the file ({} bytes left)",
            rest.len() - RECORD_HEADER_LEN
        ));
    }
    let stored = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if record_crc(seal, &rest[..4], &rest[RECORD_HEADER_LEN..end]) != stored {
        return Err("checksum mismatch".into());
    }
    Ok((
        data.slice(offset + RECORD_HEADER_LEN..offset + end),
        offset + end,
    ))
}

/// The valid frames that start in `data` after `offset`, as (where it starts, its body): the
/// test that tells damage in the middle of a log (valid records of later writes follow) from a
/// torn write at its end. After a frame is found, the search goes on where it ends.
///
/// Every offset is a candidate, and each claims a length: checking each candidate's bytes
/// would take time quadratic in `data`'s length when values are crafted to hold plausible
/// lengths everywhere. The candidates' checksums come from a [`CrcIndex`] instead, in time
/// independent of their lengths, and only a frame whose checksum matches is read.
pub(crate) fn valid_frames_after(data: &Bytes, offset: usize, seal: Seal) -> Vec<(usize, Bytes)> {
    let index = CrcIndex::new(data);
    let mut found = Vec::new();
    let mut start = offset + 1;
    while start + RECORD_HEADER_LEN <= data.len() {
        if checksum_matches(data, start, seal, &index)
            && let Ok((body, next)) = read_frame(data, start, seal)
        {
            #[cfg(test)]
            FRAMES_READ.with(|n| n.set(n.get() + 1));
            found.push((start, body));
            start = next;
            continue;
        }
        start += 1;
    }
    found
}

#[cfg(test)]
thread_local! {
    /// Frames `valid_frames_after` read whole (each costs its length), for the tests.
    static FRAMES_READ: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether a frame with a matching checksum starts at `start`, by `index`: no more than a few
/// dozen bytes looked at, however long the frame claims to be.
fn checksum_matches(data: &[u8], start: usize, seal: Seal, index: &CrcIndex<'_>) -> bool {
    let rest = &data[start..];
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    if len == 0 || RECORD_HEADER_LEN + len > rest.len() {
        return false;
    }
    let stored = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let body = start + RECORD_HEADER_LEN;
    index.append(crc_seed(seal, &rest[..4]), body, body + len) == stored
}

/// Marks the record that starts at `record_start` in `buf` as the last of its write, and
/// seals it again (the flag is covered by the checksum).
pub(crate) fn mark_group_end(buf: &mut [u8], record_start: usize, seal: Seal) {
    let body_start = record_start + RECORD_HEADER_LEN;
    let len = u32::from_le_bytes(
        buf[record_start..record_start + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let body_end = body_start + len as usize;
    buf[body_start] |= GROUP_END;
    let crc = record_crc(
        seal,
        &buf[record_start..record_start + 4],
        &buf[body_start..body_end],
    );
    buf[record_start + 4..body_start].copy_from_slice(&crc.to_le_bytes());
}

/// True if a record body whose checksum was verified is the last of its write.
pub(crate) fn is_group_end(body: &[u8]) -> bool {
    body.first().is_some_and(|flags| flags & GROUP_END != 0)
}

/// The group start of a record body whose checksum was verified: where, in its segment, the
/// write that carried it began. `None` for a record of format 1, or one too short to say.
pub(crate) fn group_start(body: &[u8]) -> Option<u64> {
    let flags = *body.first()?;
    if flags & HAS_GROUP == 0 || flags & !KNOWN_FLAGS != 0 {
        return None;
    }
    Some(u64::from_le_bytes(body.get(1..9)?.try_into().ok()?))
}

/// Decodes a record body whose checksum was verified.
pub(crate) fn decode_record(mut body: Bytes) -> Result<Record, String> {
    let r = &mut body;
    let flags = take_u8(r)?;
    if flags & !PLACE_FLAGS == 0 || flags & !KNOWN_FLAGS != 0 {
        return Err(format!("invalid record flags {flags:#04x}"));
    }
    if flags & HAS_GROUP != 0 {
        take_u64(r, "group start")?;
    }
    let hard_state = if flags & HAS_HARD_STATE != 0 {
        need(r, HARD_STATE_LEN, "hard state")?;
        Some(get_hard_state(r).map_err(String::from)?)
    } else {
        None
    };
    let snapshot = if flags & HAS_SNAPSHOT != 0 {
        need(r, SNAPSHOT_REF_LEN, "snapshot reference")?;
        Some(get_snapshot_ref(r))
    } else {
        None
    };
    let truncate_after = if flags & HAS_TRUNCATE != 0 {
        Some(take_u64(r, "truncation index")?)
    } else {
        None
    };
    let entries = if flags & HAS_ENTRIES != 0 {
        let first_index = take_u64(r, "first entry index")?;
        need(r, 4, "entry count")?;
        let count = r.get_u32_le();
        if first_index == 0 || count == 0 {
            return Err("invalid entry run".into());
        }
        let compact_len = if flags & HAS_COMPACT != 0 { 8 } else { 0 };
        let bodies_len = r
            .len()
            .checked_sub(compact_len)
            .ok_or("record truncated in its entries")?;
        Some(EntryRun {
            first_index,
            count,
            bodies: r.split_to(bodies_len),
        })
    } else {
        None
    };
    let compact_through = if flags & HAS_COMPACT != 0 {
        Some(take_u64(r, "compaction index")?)
    } else {
        None
    };
    if !r.is_empty() {
        return Err(format!(
            "{} unexpected bytes at the end of a record",
            r.len()
        ));
    }
    Ok(Record {
        hard_state,
        snapshot,
        truncate_after,
        entries,
        compact_through,
    })
}

fn need(r: &Bytes, len: usize, field: &str) -> Result<(), String> {
    if r.len() < len {
        return Err(format!("record truncated in its {field}"));
    }
    Ok(())
}

fn take_u8(r: &mut Bytes) -> Result<u8, String> {
    need(r, 1, "flags")?;
    Ok(r.get_u8())
}

fn take_u64(r: &mut Bytes, field: &str) -> Result<u64, String> {
    need(r, 8, field)?;
    Ok(r.get_u64_le())
}

fn put_hard_state(out: &mut impl BufMut, hard_state: HardState) {
    out.put_u64_le(hard_state.current_term);
    out.put_u8(hard_state.voted_for.is_some() as u8);
    out.put_u64_le(hard_state.voted_for.unwrap_or(0));
}

/// Reads a hard state; the caller checked that `HARD_STATE_LEN` bytes are there.
fn get_hard_state(r: &mut impl Buf) -> Result<HardState, &'static str> {
    let current_term = r.get_u64_le();
    if current_term > keel::codec::MAX_TERM {
        // Raft only ever adds one to it; a term this high cannot have been written by keel.
        return Err("current term out of range");
    }
    let has_vote = r.get_u8();
    let vote = r.get_u64_le();
    let voted_for = match has_vote {
        0 => None,
        1 => Some(vote),
        _ => return Err("invalid vote flag"),
    };
    Ok(HardState {
        current_term,
        voted_for,
    })
}

fn put_snapshot_ref(out: &mut impl BufMut, snapshot: &SnapshotRef) {
    out.put_u64_le(snapshot.id);
    out.put_u64_le(snapshot.meta.last_included_index);
    out.put_u64_le(snapshot.meta.last_included_term);
    out.put_u64_le(snapshot.len);
    out.put_u32_le(snapshot.crc);
}

/// Reads a snapshot reference; the caller checked that `SNAPSHOT_REF_LEN` bytes are there.
fn get_snapshot_ref(r: &mut impl Buf) -> SnapshotRef {
    SnapshotRef {
        id: r.get_u64_le(),
        meta: SnapshotMeta {
            last_included_index: r.get_u64_le(),
            last_included_term: r.get_u64_le(),
        },
        len: r.get_u64_le(),
        crc: r.get_u32_le(),
    }
}

#[cfg(test)]
mod tests {
    use keel::{Entry, Payload};

    use super::*;

    fn batch() -> WriteBatch {
        WriteBatch {
            hard_state: Some(HardState {
                current_term: 3,
                voted_for: Some(2),
            }),
            snapshot: None,
            truncate_after: Some(4),
            entries: vec![
                Entry {
                    index: 5,
                    term: 3,
                    payload: Payload::Noop,
                },
                Entry {
                    index: 6,
                    term: 3,
                    payload: Payload::Command(Bytes::from_static(b"put x 1")),
                },
            ],
            compact_through: Some(2),
        }
    }

    #[test]
    fn a_record_round_trips() {
        let snapshot = SnapshotRef {
            id: 7,
            meta: SnapshotMeta {
                last_included_index: 2,
                last_included_term: 1,
            },
            len: 10,
            crc: 99,
        };
        let mut out = BytesMut::new();
        encode_record(&batch(), Some(&snapshot), 94, SALTED, &mut out).expect("fits");
        let data = out.freeze();
        let (body, end) = read_frame(&data, 0, SALTED).expect("valid frame");
        assert_eq!(end, data.len());
        let record = decode_record(body).expect("valid record");
        assert_eq!(record.hard_state, batch().hard_state);
        assert_eq!(record.snapshot, Some(snapshot));
        assert_eq!(record.truncate_after, Some(4));
        assert_eq!(record.compact_through, Some(2));
        let run = record.entries.expect("entries");
        assert_eq!((run.first_index, run.count), (5, 2));
    }

    /// Junk crafted so that most offsets claim a length that fits (up to 2 MiB): no frame is
    /// found, and none is read whole (byte by byte, each such offset cost its length, and a
    /// damaged 64 MiB segment took days to open); a real frame after it is still found.
    #[test]
    fn crafted_lengths_everywhere_cost_no_frame_reads() {
        let mut junk = BytesMut::new();
        while junk.len() < 4 << 20 {
            junk.put_slice(&[0x00, 0x00, 0x20, 0x00]);
        }
        let mut frame = BytesMut::new();
        encode_record(&batch(), None, 0, SALTED, &mut frame).unwrap();
        junk.put_slice(&frame);
        let data = junk.freeze();
        FRAMES_READ.with(|n| n.set(0));
        let found = valid_frames_after(&data, 0, SALTED);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 4 << 20);
        assert_eq!(FRAMES_READ.with(|n| n.get()), 1, "frames read whole");
    }

    #[test]
    fn valid_frames_after_damage_are_found_with_their_group_and_zeros_are_not_one() {
        let mut out = BytesMut::new();
        encode_record(&batch(), None, 94, SALTED, &mut out).expect("fits");
        let first_len = out.len();
        encode_record(&batch(), None, 94, SALTED, &mut out).expect("fits");
        let second_len = out.len() - first_len;
        encode_record(&batch(), None, 5000, SALTED, &mut out).expect("fits");
        out[10] ^= 1; // damage the first record
        let data = out.freeze();
        assert!(read_frame(&data, 0, SALTED).is_err());
        let found = valid_frames_after(&data, 0, SALTED);
        let starts: Vec<usize> = found.iter().map(|(at, _)| *at).collect();
        assert_eq!(starts, [first_len, first_len + second_len]);
        let groups: Vec<Option<u64>> = found.iter().map(|(_, b)| group_start(b)).collect();
        assert_eq!(groups, [Some(94), Some(5000)]);
        assert_eq!(
            valid_frames_after(&data, first_len + second_len, SALTED).len(),
            0
        );
        assert!(valid_frames_after(&Bytes::from(vec![0u8; 4096]), 0, SALTED).is_empty());
    }

    /// Data dirs written before records carried their group start (format 1) still open.
    #[test]
    fn a_record_of_format_1_without_a_group_start_decodes() {
        let mut out = BytesMut::new();
        encode_record(&batch(), None, 94, Seal::NONE, &mut out).expect("fits");
        let (body, _) = read_frame(&out.freeze(), 0, Seal::NONE).expect("valid frame");
        let mut old = vec![body[0] & !HAS_GROUP];
        old.extend_from_slice(&body[9..]);
        let mut frame = BytesMut::new();
        frame.put_u32_le(old.len() as u32);
        let crc = record_crc(Seal::NONE, &frame[..4], &old);
        frame.put_u32_le(crc);
        frame.put_slice(&old);
        let (body, _) = read_frame(&frame.freeze(), 0, Seal::NONE).expect("valid frame");
        assert_eq!(group_start(&body), None);
        let record = decode_record(body).expect("a format 1 record");
        assert_eq!(record.truncate_after, Some(4));
        assert_eq!(record.entries.expect("entries").count, 2);
    }

    #[test]
    fn every_cut_of_a_record_is_an_invalid_frame() {
        let mut out = BytesMut::new();
        encode_record(&batch(), None, 94, SALTED, &mut out).expect("fits");
        let data = out.freeze();
        for len in 0..data.len() {
            assert!(
                read_frame(&data.slice(..len), 0, SALTED).is_err(),
                "prefix {len}"
            );
        }
    }

    #[test]
    fn headers_have_their_documented_sizes_and_reject_damage() {
        let checkpoint = Checkpoint::empty();
        let mut header = encode_segment_header(4, &checkpoint);
        assert_eq!(header.len(), SEGMENT_HEADER_LEN);
        assert_eq!(SEGMENT_HEADER_LEN, 94, "the crate docs give this size");
        assert_eq!(
            SNAPSHOT_HEADER_LEN, 52,
            "the corruption tests use this offset"
        );
        assert_eq!(
            decode_segment_header(&header),
            Ok((4, checkpoint, FORMAT_VERSION))
        );
        header[30] ^= 1;
        assert!(matches!(
            decode_segment_header(&header),
            Err(HeaderError::Damaged(_))
        ));
        let ids = Meta {
            node_id: 1,
            cluster_id: 2,
        };
        let mut meta = encode_meta(ids, 0x5a17);
        assert_eq!(meta.len(), META_LEN);
        assert_eq!(decode_meta(&meta), Ok((ids, FORMAT_VERSION, Some(0x5a17))));
        meta[8] = 9;
        assert_eq!(decode_meta(&meta), Err(HeaderError::NewerVersion(9)));
        // A meta file of format 2: no salt.
        let mut old = Vec::new();
        old.put_slice(META_MAGIC);
        old.put_u32_le(2);
        old.put_u64_le(1);
        old.put_u64_le(2);
        old.put_u32_le(crc32c::crc32c(&old));
        assert_eq!(decode_meta(&old), Ok((ids, 2, None)));
    }

    /// A record sealed with the dir's salt reads only with that salt; a record of format 2
    /// only without one. So bytes of a stored value that are a valid record under the known
    /// checksum are no record in a sealed segment.
    #[test]
    fn a_sealed_record_reads_only_with_its_salt() {
        let mut sealed = BytesMut::new();
        encode_record(&batch(), None, 94, SALTED, &mut sealed).expect("fits");
        let sealed = sealed.freeze();
        assert!(read_frame(&sealed, 0, SALTED).is_ok());
        assert!(read_frame(&sealed, 0, Seal::NONE).is_err());
        assert!(read_frame(&sealed, 0, Seal::salted(0x5a18)).is_err());
        let mut plain = BytesMut::new();
        encode_record(&batch(), None, 94, Seal::NONE, &mut plain).expect("fits");
        let plain = plain.freeze();
        assert!(read_frame(&plain, 0, Seal::NONE).is_ok());
        assert!(read_frame(&plain, 0, SALTED).is_err());
        // A client's value holding a whole unsealed record, found by the scan after damage,
        // is no record in a sealed segment.
        let mut segment = BytesMut::new();
        segment.put_bytes(0xee, 16);
        segment.put_slice(&plain);
        let segment = segment.freeze();
        assert_eq!(valid_frames_after(&segment, 0, Seal::NONE).len(), 1);
        assert!(valid_frames_after(&segment, 0, SALTED).is_empty());
        assert_eq!(Seal::for_segment(2, Some(1)), Some(Seal::NONE));
        assert_eq!(Seal::for_segment(3, Some(1)), Some(Seal::salted(1)));
        assert_eq!(Seal::for_segment(3, None), None);
    }

    const SALTED: Seal = Seal(Some(0x5a17));
}
