//! Runs a scenario for a list of seeds, each on its own paused-clock runtime, and tells how to
//! replay a failure.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::rng::SimRng;

/// The seeds a scenario runs with: `KEEL_SEED=n` replays one seed; `KEEL_SEEDS=n` runs seeds
/// `1..=n` (a soak); otherwise `default_count` seeds.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("KEEL_SEED") {
        return vec![seed];
    }
    let count = env_u64("KEEL_SEEDS").unwrap_or(default_count);
    (1..=count).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

/// Shared by everything in one simulated run: the seed, its random source, and the first
/// invariant violation, which ends the run at once.
#[derive(Clone)]
pub struct Sim {
    /// The run's seed.
    pub seed: u64,
    /// The run's only source of randomness.
    pub rng: SimRng,
    failure: Arc<Mutex<Option<String>>>,
    failed: Arc<Notify>,
    trace: Arc<Mutex<Option<(u64, u64)>>>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        Sim {
            seed,
            rng: SimRng::new(seed),
            failure: Arc::new(Mutex::new(None)),
            failed: Arc::new(Notify::new()),
            trace: Arc::new(Mutex::new(None)),
        }
    }

    /// Records an invariant violation; the scenario stops with it at once. Safe to call from
    /// any task.
    pub fn fail(&self, message: String) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            *failure = Some(message);
            self.failed.notify_one();
        }
    }

    /// Records the run's message trace (hash, event count), for the report.
    pub fn set_trace(&self, trace: (u64, u64)) {
        *self.trace.lock() = Some(trace);
    }

    /// The violation recorded so far, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }
}

/// A scenario that takes longer than this (simulated) is stuck.
const MAX_SIMULATED: Duration = Duration::from_secs(900);

/// Result line of one seed's run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Simulated time the scenario took.
    pub simulated: Duration,
    /// Hash and count of the network's message events, if the scenario ended a cluster.
    pub trace: Option<(u64, u64)>,
}

/// Runs `scenario` once per seed of [`seeds`]. A failure (a panic or an invariant violation)
/// prints the seed and how to replay it, then fails the test.
pub fn run<F, Fut>(name: &str, default_seeds: u64, scenario: F)
where
    F: Fn(Sim) -> Fut,
    Fut: Future<Output = ()>,
{
    for seed in seeds(default_seeds) {
        run_seed(name, seed, &scenario);
    }
}

/// Runs `scenario` with one seed, on a current-thread runtime with a paused clock: time moves
/// only when every task is idle, so runs are fast and the same seed gives the same run.
pub fn run_seed<F, Fut>(name: &str, seed: u64, scenario: F) -> RunReport
where
    F: Fn(Sim) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("build a runtime");
    let sim = Sim::new(seed);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            let start = tokio::time::Instant::now();
            let failed = sim.failed.clone();
            tokio::select! {
                biased;
                _ = failed.notified() => {}
                _ = tokio::time::sleep(MAX_SIMULATED) => {
                    panic!("scenario did not finish within {MAX_SIMULATED:?} of simulated time");
                }
                _ = scenario(sim.clone()) => {}
            }
            start.elapsed()
        })
    }));
    // Drop the runtime (and every task of the scenario) before reporting.
    drop(runtime);
    let replay = format!("replay with: KEEL_SEED={seed} cargo test --workspace -- {name}");
    match outcome {
        Ok(simulated) => {
            if let Some(failure) = sim.failure() {
                panic!("scenario {name} failed with KEEL_SEED={seed}: {failure}\n{replay}");
            }
            RunReport {
                seed,
                simulated,
                trace: *sim.trace.lock(),
            }
        }
        Err(panic) => {
            eprintln!("scenario {name} failed with KEEL_SEED={seed}\n{replay}");
            resume_unwind(panic)
        }
    }
}
