//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, written by `cargo fuzz`) through
//! the same entry points the fuzz targets call, so that every input the fuzzer kept stays
//! covered by `cargo test`. A missing or empty corpus fails the test.
//!
//! `cargo test -p keel-net --test fuzz_corpus -- --ignored` writes this crate's seed inputs (valid
//! encodings made with its own encoders) into the corpora, to start a fuzzer from.

include!("../../../fuzz/replay.rs");

#[test]
fn frames_corpus_replays() {
    replay("frames", keel_net::fuzzing::frames);
}

#[test]
#[ignore = "writes the seed inputs into fuzz/corpus/frames"]
fn write_frames_seeds() {
    write_seeds("frames", keel_net::fuzzing::seeds());
}
