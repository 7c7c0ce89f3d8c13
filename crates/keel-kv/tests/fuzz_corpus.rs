//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, written by `cargo fuzz`) through
//! the same entry points the fuzz targets call, so that every input the fuzzer kept stays
//! covered by `cargo test`. A missing or empty corpus fails the test.
//!
//! `cargo test -p keel-kv --test fuzz_corpus -- --ignored` writes this crate's seed inputs (valid
//! encodings made with its own encoders) into the corpora, to start a fuzzer from.

include!("../../../fuzz/replay.rs");

#[test]
fn kv_corpus_replays() {
    replay("kv", keel_kv::fuzzing::kv);
}

#[test]
#[ignore = "writes the seed inputs into fuzz/corpus/kv"]
fn write_kv_seeds() {
    write_seeds("kv", keel_kv::fuzzing::seeds());
}

/// The inputs that crashed the `kv` target once (`fuzz/crashes/kv/`) run cleanly now.
#[test]
fn kv_crashes_stay_fixed() {
    replay_crashes("kv", keel_kv::fuzzing::kv);
}
