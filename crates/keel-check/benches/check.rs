//! Prints how long `check` takes on generated linearizable KV histories.
//!
//! Run with `cargo bench -p keel-check`.

use std::time::{Duration, Instant};

use keel_check::{CheckResult, KvModel, check};

#[path = "../tests/common/mod.rs"]
mod common;

use common::Workload;

/// Each case is checked on this many histories (seeds 0, 1, ...).
const RUNS: u64 = 3;

/// A check still running after this long is abandoned and counted as a timeout.
const TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let one_key: &[&str] = &["k"];
    let ten_keys: &[&str] = &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let workload = |op_count, client_count, keys, distinct_values, unknown_per_mille| Workload {
        op_count,
        client_count,
        keys,
        distinct_values,
        unknown_per_mille,
    };
    // The cost grows steeply with the number of operations in flight at once on one key;
    // the 20-client case shows where it turns.
    let cases = [
        (
            "5000 ops, 10 clients, 1 key",
            workload(5_000, 10, one_key, None, 0),
        ),
        (
            "  same, 10% unknown outcomes",
            workload(5_000, 10, one_key, None, 100),
        ),
        (
            "  same, 8 distinct values",
            workload(5_000, 10, one_key, Some(8), 0),
        ),
        (
            "  same, 8 distinct values, 10% unknown",
            workload(5_000, 10, one_key, Some(8), 100),
        ),
        (
            "5000 ops, 15 clients, 1 key",
            workload(5_000, 15, one_key, None, 0),
        ),
        (
            "5000 ops, 20 clients, 1 key",
            workload(5_000, 20, one_key, None, 0),
        ),
        (
            "20000 ops, 10 clients, 10 keys, 2% unknown",
            workload(20_000, 10, ten_keys, None, 20),
        ),
    ];
    for (name, workload) in cases {
        let mut timings = Vec::new();
        let mut failures = Vec::new();
        for seed in 0..RUNS {
            let history = common::concurrent_history(seed, &workload);
            let started = Instant::now();
            let result = check(&KvModel, &history, TIMEOUT);
            match result {
                CheckResult::Ok => timings.push(started.elapsed()),
                CheckResult::Timeout => failures.push(format!("seed {seed} timed out")),
                // The generator only makes linearizable histories: anything else is a bug.
                other => panic!("{name}, seed {seed}: {other}"),
            }
        }
        let mean_ms = timings.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3
            / timings.len().max(1) as f64;
        let slowest_ms = timings.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1e3);
        println!(
            "{name:<45} mean {mean_ms:>8.1} ms   slowest {slowest_ms:>8.1} ms   {}",
            failures.join(", ")
        );
    }
}
