//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, written by `cargo fuzz`) through
//! the same entry points the fuzz targets call, so that every input the fuzzer kept stays
//! covered by `cargo test`. A missing or empty corpus fails the test.
//!
//! `cargo test -p keel-disk --test fuzz_corpus -- --ignored` writes this crate's seed inputs (valid
//! encodings made with its own encoders) into the corpora, to start a fuzzer from.

include!("../../../fuzz/replay.rs");

#[test]
fn wal_corpus_replays() {
    replay("wal", keel_disk::fuzzing::wal);
}

#[test]
#[ignore = "writes the seed inputs into fuzz/corpus/wal"]
fn write_wal_seeds() {
    write_seeds("wal", keel_disk::fuzzing::wal_seeds());
}

#[test]
fn data_dir_corpus_replays() {
    replay("data_dir", keel_disk::fuzzing::data_dir);
}

#[test]
#[ignore = "writes the seed inputs into fuzz/corpus/data_dir"]
fn write_data_dir_seeds() {
    write_seeds("data_dir", keel_disk::fuzzing::data_dir_seeds());
}

/// The inputs that crashed the `data_dir` target once (`fuzz/crashes/data_dir/`) run cleanly now.
#[test]
fn data_dir_crashes_stay_fixed() {
    replay_crashes("data_dir", keel_disk::fuzzing::data_dir);
}
