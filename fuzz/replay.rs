// Shared by each crate's `tests/fuzz_corpus.rs` (through `include!`): replaying the committed
// corpora (`fuzz/corpus/<target>/`) and the inputs that once crashed (`fuzz/crashes/<target>/`)
// through the entry points the fuzz targets call, and writing a crate's seed inputs.

/// `fuzz/<kind>/<target>` of this repository.
fn fuzz_dir(kind: &str, target: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target)
}

/// Calls `run` on every file of `fuzz/<kind>/<target>`; fails if there is none.
fn replay_dir(kind: &str, target: &str, run: fn(&[u8])) {
    let dir = fuzz_dir(kind, target);
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", dir.display()))
        .map(|item| item.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for path in &files {
        let data = std::fs::read(path).expect("read an input");
        // Name the input if it panics.
        eprintln!("replaying {}", path.display());
        run(&data);
    }
    println!("{target}: replayed {} inputs of {kind}", files.len());
}

/// Calls `run` on every file of the target's corpus; fails if there is none.
#[allow(dead_code)]
fn replay(target: &str, run: fn(&[u8])) {
    replay_dir("corpus", target, run);
}

/// The inputs that crashed the target once run cleanly now.
#[allow(dead_code)]
fn replay_crashes(target: &str, run: fn(&[u8])) {
    replay_dir("crashes", target, run);
}

/// Writes `seeds` into the target's corpus as `seed_<name>`.
#[allow(dead_code)]
fn write_seeds(target: &str, seeds: Vec<(String, Vec<u8>)>) {
    let dir = fuzz_dir("corpus", target);
    std::fs::create_dir_all(&dir).expect("create the corpus dir");
    for (name, data) in seeds {
        std::fs::write(dir.join(format!("seed_{name}")), data).expect("write a seed");
    }
}
