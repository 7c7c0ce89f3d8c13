//! How long a leadership transfer takes on the simulated network: from the call of
//! `Raft::transfer_leadership(Some(target))` on the leader to the target's first commit as
//! leader, in simulated time. Prints figures; asserts nothing beyond the fixture's own safety
//! checks.
//!
//! `cargo bench -p keel-sim --bench transfer`
//!
//! Seeds 1 to 20 (`KEEL_SEEDS=n` for 1 to n, `KEEL_SEED=n` for one), each a fresh 3-node
//! cluster with the fixture's default options (course-lab timing: heartbeats every 100 ms,
//! elections after 300 to 600 ms; a reliable network; fsyncs of up to 1 ms) under a light
//! background load (a proposal every 5 ms). Per run it prints, in ms of simulated time since
//! the call:
//!
//! - `leader`: the first 1 ms poll that finds the target leading in the next term;
//! - `past`: the first poll that also finds its commit index past what it was when the call
//!   was made (the end point the measurement was first specified with);
//! - `commit`: the first poll that also finds its commit index past the last index of the old
//!   leader's log once the transfer began. The old leader takes no proposals from then on, so
//!   the next index is the new leader's no-op: this is its first commit, the end of the
//!   interval in which no write can commit;
//! - `answer`: when `transfer_leadership` returned (once the old leader heard from the new one).
//!
//! `past` can be met as soon as the target leads, if it learned of commits during the
//! hand-over: it then measures `leader`, not the first commit. `commit` is the figure to quote.
//!
//! Simulated time runs in whole milliseconds (tokio's timer), the network delivers at once and
//! each fsync waits up to 1 ms, i.e. 1 ms once rounded: the figures count the rounds of
//! fsyncs on the way, not what a real cluster takes.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use keel::{NodeId, Role};
use keel_sim::{Cluster, ClusterOptions, command, run_seed, seeds};
use tokio::time::Instant;

/// Seeds run unless `KEEL_SEEDS` or `KEEL_SEED` says otherwise.
const RUNS: u64 = 20;

/// How often the target's status is read, in simulated time.
const POLL: Duration = Duration::from_millis(1);

/// A transfer that has not ended by then is reported as stuck.
const GIVE_UP: Duration = Duration::from_secs(5);

/// One run's figures, in simulated time since the call (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// The target first seen leading in the next term.
    leader: Duration,
    /// ... with its commit index past the one it had at the call.
    past: Duration,
    /// ... with its commit index past the old leader's last index: its first commit.
    commit: Duration,
    /// `transfer_leadership` returned.
    answer: Duration,
    /// The leader at the call.
    old: usize,
    /// The node it handed over to.
    target: usize,
    /// The old leader's term.
    term: u64,
}

/// Runs every seed, printing a line per run (after the fixture's own summary line), then the
/// median, p90, max and min of each figure.
fn main() {
    let seeds = seeds(RUNS);
    println!(
        "leadership transfer on the simulated network: 3 nodes, ClusterOptions::new(3), a \
         proposal every 5 ms; ms of simulated time since transfer_leadership was called"
    );
    println!(
        "{:>4}  {:>8}  {:>8}  {:>8}  {:>8}  nodes",
        "seed", "leader", "past", "commit", "answer"
    );
    let mut timings = Vec::new();
    for seed in seeds {
        let timing = measure(seed);
        println!(
            "{seed:>4}  {:>8.1}  {:>8.1}  {:>8.1}  {:>8.1}  {} -> {} (term {} -> {})",
            ms(timing.leader),
            ms(timing.past),
            ms(timing.commit),
            ms(timing.answer),
            timing.old,
            timing.target,
            timing.term,
            timing.term + 1
        );
        timings.push(timing);
    }
    println!();
    for (name, pick) in [
        ("leader", (|t: &Timing| t.leader) as fn(&Timing) -> Duration),
        ("past", |t: &Timing| t.past),
        ("commit", |t: &Timing| t.commit),
        ("answer", |t: &Timing| t.answer),
    ] {
        let values: Vec<f64> = timings.iter().map(|t| ms(pick(t))).collect();
        println!("{name:>6}: {}", summary(&values));
    }
}

/// Runs one seed: a fresh cluster, 200 ms of load, then one transfer from the leader to the
/// next node.
fn measure(seed: u64) -> Timing {
    let result = RefCell::new(None);
    run_seed("transfer_bench", seed, |sim| {
        let result = &result;
        async move {
            let c = Arc::new(Cluster::new(&sim, "transfer_bench", ClusterOptions::new(3)));
            c.one(command(1), 3, true).await;
            let load = c.start_load(Duration::from_millis(5));
            // Let the load reach a steady state, with entries in flight, as in service.
            c.sleep(Duration::from_millis(200)).await;
            let timing = transfer_once(&c).await;
            load.stop().await;
            *result.borrow_mut() = Some(timing);
            match Arc::try_unwrap(c) {
                // Checks log matching over the run, and prints the fixture's summary line.
                Ok(c) => c.end().await,
                Err(_) => panic!("a task still holds the cluster"),
            }
        }
    });
    result
        .into_inner()
        .unwrap_or_else(|| panic!("seed {seed} measured nothing"))
}

/// Hands leadership from the current leader to the next node and times it.
async fn transfer_once(c: &Arc<Cluster>) -> Timing {
    let old = c.check_one_leader().await;
    let target = (old + 1) % c.n();
    let raft = c.raft(old).expect("the leader runs");
    let target_raft = c.raft(target).expect("the target runs");
    let term = raft.status().current_term;
    let target_commit = target_raft.status().commit_index;

    let started = Instant::now();
    let mut transfer = Box::pin({
        let raft = raft.clone();
        async move { raft.transfer_leadership(Some(target as NodeId)).await }
    });
    // Poll the call once by hand: its first poll starts the transfer (the leader refuses
    // proposals from then on), and nothing else runs before the leader's last index is read
    // here, so that index is exactly the last one of the old term.
    let first = std::future::poll_fn(|cx| Poll::Ready(Pin::as_mut(&mut transfer).poll(cx))).await;
    assert!(first.is_pending(), "the transfer ended at once: {first:?}");
    let last_old = raft.status().last_log_index;
    let answer = tokio::spawn(async move {
        let outcome = transfer.await;
        (outcome, Instant::now())
    });

    let (mut leader, mut past) = (None, None);
    let commit = loop {
        let s = target_raft.status();
        if s.role == Role::Leader && s.current_term == term + 1 {
            let now = started.elapsed();
            leader.get_or_insert(now);
            if s.commit_index > target_commit {
                past.get_or_insert(now);
            }
            if s.commit_index > last_old {
                break now;
            }
        }
        assert!(
            started.elapsed() < GIVE_UP,
            "node {target} did not lead and commit within {GIVE_UP:?}: {s:?}"
        );
        c.sleep(POLL).await;
        settle().await;
    };
    let (outcome, answered) = answer.await.expect("the transfer task");
    assert_eq!(outcome, Ok(Some(target as NodeId)), "the transfer's answer");
    Timing {
        leader: leader.expect("seen leading before committing"),
        past: past.expect("past its commit index before committing"),
        commit,
        answer: answered - started,
        old,
        target,
        term,
    }
}

/// Lets every task that woke at this instant of simulated time run before the status is read.
/// The poll's timer fires at the same instant as the nodes' (tokio's timer counts whole
/// milliseconds, so every simulated fsync ends on one), and without this the poll may read a
/// node's state before the node handles what happened at that instant, and see it 1 ms late.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// `d` in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `median .. ms  p90 .. ms  max .. ms  min .. ms  (n runs)`: the median of an even count is
/// the mean of the middle two; p90 is the nearest-rank value (the 18th of 20).
fn summary(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return "no runs".into();
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let p90 = v[(n * 9).div_ceil(10) - 1];
    format!(
        "median {median:.1} ms  p90 {p90:.1} ms  max {:.1} ms  min {:.1} ms  ({n} runs)",
        v[n - 1],
        v[0]
    )
}
