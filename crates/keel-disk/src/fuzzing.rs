//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz run wal`, `cargo fuzz run
//! data_dir`) and for the corpus-replay test (`tests/fuzz_corpus.rs`), which feeds them every
//! committed corpus input. Not part of the API: each function takes arbitrary bytes and panics
//! only on a bug. They are the public door to the crate's private readers (`format`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use keel::codec::decode_entry_body;
use keel::{
    Entry, HardState, Membership, Payload, Recovered, Snapshot, SnapshotMeta, Storage, WriteBatch,
};

use crate::format::{self, Checkpoint, Meta, RECORD_HEADER_LEN, Seal, SnapshotRef};
use crate::{DiskOptions, DiskStorage};

/// The salt of the records [`wal`] reads when its input says they are sealed.
const SALT: u64 = 0x5a17_5a17_0000_0001;

/// Reads arbitrary bytes as keel-disk's log and file headers do.
///
/// Input: `control:u8` then the bytes. Bit 0 of `control` set: records are read without a salt
/// (format 1 and 2 segments); clear: sealed with a fixed salt. The bytes are read as:
/// - one record body (`format::decode_record`, as if its checksum had matched), its entries
///   decoded as recovery decodes them;
/// - a run of framed records from the start (`format::read_frame`), each decoded likewise;
/// - the scan for valid frames after where that run stopped (`format::valid_frames_after`),
///   which must find exactly the frames a byte-by-byte `format::read_frame` scan finds;
/// - a meta file, a segment header, a snapshot header and a snapshot's configuration block;
///   what decodes must encode and decode to the same value.
pub fn wal(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let seal = if control & 1 == 0 {
        Seal::salted(SALT)
    } else {
        Seal::NONE
    };
    let data = Bytes::copy_from_slice(rest);

    record(data.clone());

    let mut at = 0;
    while let Ok((body, next)) = format::read_frame(&data, at, seal) {
        assert!(
            next > at && next <= data.len(),
            "frame {at}..{next} out of bounds"
        );
        assert_eq!(body.len(), next - at - RECORD_HEADER_LEN);
        record(body);
        at = next;
        if at >= data.len() {
            break;
        }
    }

    // The byte-by-byte scan below costs the input's length squared.
    if at < data.len() && data.len() <= 64 << 10 {
        let found = format::valid_frames_after(&data, at, seal);
        let mut expected = Vec::new();
        let mut start = at + 1;
        while start + RECORD_HEADER_LEN <= data.len() {
            match format::read_frame(&data, start, seal) {
                Ok((body, next)) => {
                    expected.push((start, body));
                    start = next;
                }
                Err(_) => start += 1,
            }
        }
        assert_eq!(found, expected, "the scan missed or invented frames");
        for (_, body) in found {
            record(body);
        }
    }

    headers(&data);
}

/// Decodes a record body as recovery does.
fn record(body: Bytes) {
    let _ = format::group_start(&body);
    let _ = format::is_group_end(&body);
    let Ok(record) = format::decode_record(body) else {
        return;
    };
    if let Some(run) = record.entries
        && run.first_index.checked_add(u64::from(run.count)).is_some()
    {
        let mut bodies = run.bodies;
        for index in run.first_index..run.first_index + u64::from(run.count) {
            let Ok(entry) = decode_entry_body(&mut bodies, index) else {
                break;
            };
            assert_eq!(entry.index, index);
        }
    }
}

/// The fixed-size headers, and the configuration block of a snapshot file.
fn headers(data: &Bytes) {
    if let Ok((meta, version, salt)) = format::decode_meta(data)
        && version == format::FORMAT_VERSION
    {
        let salt = salt.expect("a meta file of this format has a salt");
        let again = format::decode_meta(&format::encode_meta(meta, salt));
        assert_eq!(again, Ok((meta, version, Some(salt))));
    }
    if let Ok((seq, checkpoint, _)) = format::decode_segment_header(data) {
        let again = format::decode_segment_header(&format::encode_segment_header(seq, &checkpoint));
        assert_eq!(again, Ok((seq, checkpoint, format::FORMAT_VERSION)));
    }
    if let Ok((snapshot, _)) = format::decode_snapshot_header(data) {
        let encoded = format::encode_snapshot_header(&snapshot, None);
        let again = format::decode_snapshot_header(&encoded);
        assert_eq!(again, Ok((snapshot, format::FORMAT_VERSION)));
    }
    if let Ok((membership, len)) = format::decode_snapshot_membership(data) {
        assert!((8..=data.len()).contains(&len));
        let snapshot = SnapshotRef {
            id: 1,
            meta: SnapshotMeta::default(),
            len: 0,
            crc: 0,
        };
        let encoded = format::encode_snapshot_header(&snapshot, membership.as_ref());
        let block = Bytes::from(encoded).slice(format::SNAPSHOT_HEADER_LEN..);
        let again = format::decode_snapshot_membership(&block).map(|(m, _)| m);
        assert_eq!(again, Ok(membership));
    }
}

/// Valid inputs for [`wal`], for seeding the fuzzer's corpus: records of every kind, sealed
/// and not, a damaged run, and each kind of header. Each is (name, input).
pub fn wal_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (control, seal, name) in [
        (0u8, Seal::salted(SALT), "sealed"),
        (1, Seal::NONE, "plain"),
    ] {
        let mut run = BytesMut::new();
        let mut group = 94;
        for batch in batches() {
            let snapshot = batch.snapshot.as_ref().map(snapshot_ref);
            let start = run.len();
            format::encode_record(&batch, snapshot.as_ref(), group, seal, &mut run)
                .expect("a small record");
            format::mark_group_end(&mut run, start, seal);
            group += (run.len() - start) as u64;
        }
        let mut input = vec![control];
        input.extend_from_slice(&run);
        seeds.push((format!("records_{name}"), input.clone()));
        // Damage in the second record: the scan after it must find the rest.
        input[1 + 40] ^= 0xff;
        seeds.push((format!("records_{name}_damaged"), input));
    }
    // One record body, unframed.
    let mut one = BytesMut::new();
    format::encode_record(&batches()[2], None, 94, Seal::NONE, &mut one).expect("small");
    let mut input = vec![1];
    input.extend_from_slice(&one[RECORD_HEADER_LEN..]);
    seeds.push(("record_body".into(), input));

    let meta = Meta {
        node_id: 3,
        cluster_id: 42,
    };
    let mut input = vec![0];
    input.extend_from_slice(&format::encode_meta(meta, SALT));
    seeds.push(("meta".into(), input));
    let checkpoint = Checkpoint {
        hard_state: HardState {
            current_term: 2,
            voted_for: Some(1),
        },
        snapshot: Some(snapshot_ref(&snapshot(3, 1))),
        log: crate::bounds::LogBounds {
            first_index: 4,
            last_index: 9,
        },
    };
    let mut input = vec![0];
    input.extend_from_slice(&format::encode_segment_header(2, &checkpoint));
    seeds.push(("segment_header".into(), input));
    let snap = snapshot(3, 1);
    let mut input = vec![0];
    input.extend_from_slice(&format::encode_snapshot_header(
        &snapshot_ref(&snap),
        snap.membership.as_ref(),
    ));
    input.extend_from_slice(&snap.data);
    seeds.push(("snapshot_header".into(), input.clone()));
    // The configuration block alone.
    let mut block = vec![0];
    block.extend_from_slice(&input[1 + format::SNAPSHOT_HEADER_LEN..]);
    seeds.push(("snapshot_membership".into(), block));
    seeds
}

fn snapshot_ref(snapshot: &Snapshot) -> SnapshotRef {
    SnapshotRef {
        id: snapshot.meta.last_included_index,
        meta: snapshot.meta,
        len: snapshot.data.len() as u64,
        crc: crc32c::crc32c(&snapshot.data),
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range
        .map(|index| Entry {
            index,
            term,
            payload: match index % 3 {
                0 => Payload::Noop,
                _ => Payload::Command(Bytes::from(format!("command {index} of term {term}"))),
            },
        })
        .collect()
}

fn membership(index: u64) -> Membership {
    Membership::new(
        [1, 2, 3],
        [index % 7 + 4],
        BTreeMap::from([(2, Bytes::from(format!("node 2 at {index}")))]),
    )
    .expect("a valid configuration")
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
        },
        membership: Some(membership(index)),
        data: Bytes::from(format!("state through {index}")),
    }
}

/// A history with a batch of every kind: votes, appends, a configuration entry, snapshots
/// that compact the log, a truncation.
fn batches() -> Vec<WriteBatch> {
    let hard_state = |current_term, voted_for| {
        Some(HardState {
            current_term,
            voted_for,
        })
    };
    vec![
        WriteBatch {
            hard_state: hard_state(1, Some(3)),
            ..Default::default()
        },
        WriteBatch {
            entries: entries(1..=6, 1),
            ..Default::default()
        },
        WriteBatch {
            snapshot: Some(snapshot(3, 1)),
            compact_through: Some(3),
            ..Default::default()
        },
        WriteBatch {
            hard_state: hard_state(2, None),
            ..Default::default()
        },
        WriteBatch {
            hard_state: hard_state(2, Some(1)),
            truncate_after: Some(5),
            entries: entries(6..=8, 2),
            ..Default::default()
        },
        WriteBatch {
            entries: vec![Entry {
                index: 9,
                term: 2,
                payload: Payload::Config(membership(9)),
            }],
            ..Default::default()
        },
        WriteBatch {
            entries: entries(10..=12, 2),
            ..Default::default()
        },
        WriteBatch {
            snapshot: Some(snapshot(10, 2)),
            compact_through: Some(10),
            ..Default::default()
        },
        WriteBatch {
            entries: entries(13..=14, 2),
            ..Default::default()
        },
        WriteBatch {
            hard_state: hard_state(3, Some(2)),
            entries: entries(15..=18, 3),
            ..Default::default()
        },
        WriteBatch {
            entries: entries(19..=24, 3),
            ..Default::default()
        },
        WriteBatch {
            entries: entries(25..=30, 3),
            ..Default::default()
        },
    ]
}

/// The data dirs [`data_dir`] damages, as (file name, bytes) each.
type Files = Vec<(String, Vec<u8>)>;

/// Node and cluster of the data dirs.
const NODE: u64 = 3;
const CLUSTER: u64 = 42;
/// Most damage operations applied per input.
const MAX_OPS: usize = 32;
/// Bytes of one damage operation.
const OP_BYTES: usize = 8;

/// How each base data dir was written, and is opened again: small segments that grow with each
/// append (so the history spans several, and compaction deleted some), and small preallocated
/// ones (zero-filled tails).
fn base_options() -> [DiskOptions; 2] {
    let grown = DiskOptions {
        segment_size_bytes: 400,
        preallocate: false,
        ..DiskOptions::new(NODE, CLUSTER)
    };
    let preallocated = DiskOptions {
        segment_size_bytes: 2048,
        preallocate: true,
        ..grown.clone()
    };
    [grown, preallocated]
}

/// Opens a damaged copy of a small valid data dir with [`DiskStorage::open`]: it must return
/// `Ok` or `Err`, never panic. If it opens, what it recovered must come back the same from a
/// second open (recovery repairs only what it must, once).
///
/// Input: `base:u8` (bit 0 picks one of two data dirs, see `base_options`), then operations
/// of 8 bytes, `kind:u8 file:u8 offset:u16 value:u32`, applied in order to the files' bytes
/// (`file` picks a file by its sorted name; `offset` is taken modulo the file's length):
/// 0 xor a byte, 1 set a byte, 2 truncate, 3 remove the file, 4 append `value & 63` bytes,
/// 5 fix every checksum (so that damage reaches the checks behind them), 6 write a `u32`,
/// 7 write a `u64` (`value` or `u64::MAX - value`), 8 rename (to another segment or snapshot
/// number, or to a `.tmp`), 9 zero a range.
pub fn data_dir(data: &[u8]) {
    let Some((&base, ops)) = data.split_first() else {
        return;
    };
    let which = usize::from(base & 1);
    let mut files = bases()[which].clone();
    for op in ops.chunks_exact(OP_BYTES).take(MAX_OPS) {
        damage(&mut files, op);
    }
    let options = base_options()[which].clone();

    let dir = TempDir::new();
    for (name, bytes) in &files {
        std::fs::write(dir.0.join(name), bytes).expect("write a file of the data dir");
    }
    let first = open_and_close(&dir.0, &options);
    if let Ok(first) = first {
        let second = open_and_close(&dir.0, &options);
        assert_eq!(
            second.as_ref(),
            Ok(&first),
            "a data dir that opened recovered something else, or failed, when opened again"
        );
    }
}

/// Opens the dir, takes what it recovered, closes it; the error as text.
fn open_and_close(dir: &Path, options: &DiskOptions) -> Result<Recovered, String> {
    runtime().block_on(async {
        let storage = DiskStorage::open(dir, options.clone()).map_err(|e| e.to_string())?;
        let recovered = storage.recover().expect("the first recover succeeds");
        storage.close().await.expect("closing without writes");
        Ok(recovered)
    })
}

fn damage(files: &mut Files, op: &[u8]) {
    let kind = op[0] % 10;
    let value = u32::from_le_bytes(op[4..8].try_into().expect("4 bytes"));
    if kind == 5 {
        reseal(files);
        return;
    }
    if files.is_empty() {
        return;
    }
    let file = usize::from(op[1]) % files.len();
    let (name, bytes) = &mut files[file];
    let offset = match bytes.len() {
        0 => 0,
        len => usize::from(u16::from_le_bytes([op[2], op[3]])) % len,
    };
    match kind {
        0 if !bytes.is_empty() => bytes[offset] ^= (value as u8).max(1),
        1 if !bytes.is_empty() => bytes[offset] = value as u8,
        2 => bytes.truncate(usize::from(u16::from_le_bytes([op[2], op[3]])) % (bytes.len() + 1)),
        3 => {
            files.remove(file);
        }
        4 => bytes.extend(std::iter::repeat_n(
            (value >> 8) as u8,
            (value & 63) as usize,
        )),
        6 => put(bytes, offset, &value.to_le_bytes()),
        7 => {
            let wide = if value & 1 == 0 {
                u64::from(value)
            } else {
                u64::MAX - u64::from(value >> 1)
            };
            put(bytes, offset, &wide.to_le_bytes());
        }
        8 => {
            let number = u64::from(value >> 2) % 24;
            let renamed = match value & 3 {
                0 => format!("{number:020}.wal"),
                1 => format!("{number:020}.snap"),
                _ => format!("{name}.tmp"),
            };
            name.clone_from(&renamed);
            // A rename over another file replaces it.
            let mut i = 0;
            files.retain(|(n, _)| {
                let keep = i == file || *n != renamed;
                i += 1;
                keep
            });
        }
        9 => {
            let end = (offset + (value as usize & 0xffff)).min(bytes.len());
            bytes[offset..end].fill(0);
        }
        _ => {}
    }
}

/// Overwrites `bytes` from `offset` with `value`, as far as the file goes.
fn put(bytes: &mut [u8], offset: usize, value: &[u8]) {
    let end = (offset + value.len()).min(bytes.len());
    bytes[offset..end].copy_from_slice(&value[..end - offset]);
}

/// Recomputes every checksum the files carry (meta, segment headers, records, snapshot
/// headers and configuration blocks), where their lengths allow, as the writer would have.
fn reseal(files: &mut Files) {
    let salt = files
        .iter()
        .find(|(name, _)| name == "meta")
        .and_then(|(_, meta)| {
            let version = u32::from_le_bytes(meta.get(8..12)?.try_into().ok()?);
            let salt = meta.get(28..36)?;
            (version >= format::SALTED_VERSION)
                .then(|| u64::from_le_bytes(salt.try_into().expect("8 bytes")))
        });
    for (name, bytes) in files.iter_mut() {
        let version = bytes
            .get(8..12)
            .map_or(0, |v| u32::from_le_bytes(v.try_into().expect("4 bytes")));
        if name == "meta" {
            let len = if version >= format::SALTED_VERSION {
                format::META_LEN
            } else {
                format::META_LEN - 8
            };
            seal_header(bytes, len);
        } else if name.ends_with(".wal") {
            seal_header(bytes, format::SEGMENT_HEADER_LEN);
            let salt = salt.filter(|_| version >= format::SALTED_VERSION);
            let mut at = format::SEGMENT_HEADER_LEN;
            while let Some(len) = bytes.get(at..at + 4) {
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                let end = at + RECORD_HEADER_LEN + len;
                if len == 0 || end > bytes.len() {
                    break;
                }
                let mut crc = match salt {
                    Some(salt) => crc32c::crc32c(&salt.to_le_bytes()),
                    None => 0,
                };
                crc = crc32c::crc32c_append(crc, &bytes[at..at + 4]);
                crc = crc32c::crc32c_append(crc, &bytes[at + RECORD_HEADER_LEN..end]);
                bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
                at = end;
            }
        } else if name.ends_with(".snap") {
            seal_header(bytes, format::SNAPSHOT_HEADER_LEN);
            let at = format::SNAPSHOT_HEADER_LEN;
            if let Some(len) = bytes.get(at..at + 4) {
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                if let Some(block) = bytes.get(at + 8..at + 8 + len) {
                    let crc = crc32c::crc32c(block);
                    bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
                }
            }
        }
    }
}

/// Sets the trailing checksum of a fixed-size header of `len` bytes.
fn seal_header(bytes: &mut [u8], len: usize) {
    if bytes.len() >= len {
        let crc = crc32c::crc32c(&bytes[..len - 4]);
        bytes[len - 4..len].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The base data dirs, written once per process with [`DiskStorage`] itself.
fn bases() -> &'static [Files; 2] {
    static BASES: OnceLock<[Files; 2]> = OnceLock::new();
    BASES.get_or_init(|| base_options().map(|options| write_base(&options)))
}

fn write_base(options: &DiskOptions) -> Files {
    let dir = TempDir::new();
    runtime().block_on(async {
        let storage = DiskStorage::open(&dir.0, options.clone()).expect("open a new data dir");
        for batch in batches() {
            let seq = storage.submit(batch);
            storage.wait_durable(seq).await.expect("a durable write");
        }
        storage.close().await.expect("close");
    });
    let mut files: Files = std::fs::read_dir(&dir.0)
        .expect("list the data dir")
        .map(|item| {
            let path = item.expect("a dir entry").path();
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read a file"))
        })
        .filter(|(name, _)| name != "LOCK")
        .collect();
    files.sort();
    files
}

/// A current-thread runtime for this thread, kept for every call.
fn runtime() -> &'static tokio::runtime::Runtime {
    thread_local! {
        static RUNTIME: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
        ));
    }
    RUNTIME.with(|runtime| *runtime)
}

/// Valid inputs for [`data_dir`], for seeding the fuzzer's corpus: each base dir untouched,
/// and each with one damage of each kind. Each is (name, input).
pub fn data_dir_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for base in 0..2u8 {
        seeds.push((format!("base{base}"), vec![base]));
        let files = &bases()[usize::from(base)];
        let last_segment = files
            .iter()
            .rposition(|(name, _)| name.ends_with(".wal"))
            .expect("a segment") as u8;
        for kind in 0..10u8 {
            let mut input = vec![base];
            // The last segment, well inside it; then fix the checksums.
            input.extend_from_slice(&[kind, last_segment, 200, 0, 0x21, 0x43, 0, 0]);
            if kind != 5 {
                input.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0]);
            }
            seeds.push((format!("base{base}_op{kind}"), input));
        }
    }
    seeds
}

/// A fresh directory, removed when dropped: in /dev/shm where there is one, so that the
/// fsyncs of opening cost nothing.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = parent.join(format!(
            "keel-disk-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
