//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, written by `cargo fuzz`) through
//! the same entry points the fuzz targets call, so that every input the fuzzer kept stays
//! covered by `cargo test`. A missing or empty corpus fails the test.
//!
//! `cargo test -p keel-net --test fuzz_corpus -- --ignored` writes this crate's seed inputs (valid
//! encodings made with its own encoders) into the corpora, to start a fuzzer from.

use std::path::PathBuf;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Calls `run` on every file of the target's corpus; fails if there is none.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = corpus(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} is missing: {e}", dir.display()))
        .map(|item| item.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    for path in &files {
        let data = std::fs::read(path).expect("read a corpus file");
        // Name the input if it panics.
        eprintln!("replaying {}", path.display());
        run(&data);
    }
    println!("{target}: replayed {} inputs", files.len());
}

/// Writes `seeds` into the target's corpus as `seed_<name>`.
fn write_seeds(target: &str, seeds: Vec<(String, Vec<u8>)>) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).expect("create the corpus dir");
    for (name, data) in seeds {
        std::fs::write(dir.join(format!("seed_{name}")), data).expect("write a seed");
    }
}

#[test]
fn frames_corpus_replays() {
    replay("frames", keel_net::fuzzing::frames);
}

#[test]
#[ignore = "writes the seed inputs into fuzz/corpus/frames"]
fn write_frames_seeds() {
    write_seeds("frames", keel_net::fuzzing::seeds());
}
