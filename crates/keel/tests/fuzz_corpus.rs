//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, written by `cargo fuzz`) through
//! the same entry points the fuzz targets call, so that every input the fuzzer kept stays
//! covered by `cargo test`. A missing or empty corpus fails the test.
//!
//! `cargo test -p keel --test fuzz_corpus -- --ignored` writes this crate's seed inputs (valid
//! encodings made with its own encoders) into the corpora, to start a fuzzer from.

include!("../../../fuzz/replay.rs");

#[test]
fn raft_codec_corpus_replays() {
    replay("raft_codec", keel::fuzzing::raft_codec);
}

#[test]
#[ignore = "writes the seed inputs into fuzz/corpus/raft_codec"]
fn write_raft_codec_seeds() {
    write_seeds("raft_codec", keel::fuzzing::seeds());
}
