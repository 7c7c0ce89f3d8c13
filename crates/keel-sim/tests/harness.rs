//! Tests of the simulator itself: runs replay from their seed, and the fixture's safety checks
//! catch a broken node.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use keel_sim::{Cluster, ClusterOptions, ELECTION_TIMEOUT, Sim, run_seed};

/// Figure 8 on an unreliable network with long reordering, shortened: enough crashes, drops and
/// delays to make any nondeterminism show.
async fn chaotic(sim: Sim, options: ClusterOptions, rounds: usize) {
    let servers = options.nodes;
    let c = Cluster::new(&sim, "chaotic", options);
    c.set_long_reordering(true);
    c.one(c.random_command(), 1, true).await;
    let mut up = servers;
    for _ in 0..rounds {
        let mut leader = None;
        for i in 0..servers {
            if let Some(raft) = c.raft(i)
                && raft.propose(c.random_command()).is_ok()
            {
                leader = Some(i);
                // A burst, so that several writes wait on storage at once.
                for _ in 0..4 {
                    let _ = raft.propose(c.random_command());
                }
            }
        }
        let ms = if c.rand(1000) < 100 {
            c.rand(ELECTION_TIMEOUT.as_millis() as u64 / 2)
        } else {
            c.rand(13)
        };
        c.sleep(Duration::from_millis(ms)).await;
        if let Some(leader) = leader {
            c.crash(leader).await;
            up -= 1;
        }
        if up < 3 {
            let s = c.rand(servers as u64) as usize;
            if c.raft(s).is_none() {
                c.start(s).await;
                c.connect(s);
                up += 1;
            }
        }
    }
    for i in 0..servers {
        if c.raft(i).is_none() {
            c.start(i).await;
            c.connect(i);
        }
    }
    c.one(c.random_command(), servers, true).await;
    c.end().await;
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let options = || ClusterOptions::new(5).unreliable();
    let first = run_seed("replay", 42, |sim| chaotic(sim, options(), 200));
    let second = run_seed("replay", 42, |sim| chaotic(sim, options(), 200));
    let other = run_seed("replay", 43, |sim| chaotic(sim, options(), 200));
    println!("seed 42: {first:?}\nseed 42: {second:?}\nseed 43: {other:?}");
    assert!(first.trace.is_some_and(|(_, events)| events > 300));
    assert_eq!(
        first.trace, second.trace,
        "same seed, different message traces"
    );
    assert_eq!(
        first.simulated, second.simulated,
        "same seed, different simulated time"
    );
    assert_ne!(
        first.trace, other.trace,
        "different seeds gave the same trace"
    );
}

#[test]
fn the_fixture_catches_a_majority_that_forgets_its_log() {
    // Two of three nodes crash and lose their term, vote and log. Together they are a majority
    // and elect one of themselves, in a term that may already have had a leader, and what it
    // commits overwrites entries the cluster already applied. A safety check must fail the run.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        run_seed("amnesia", 1, |sim| async move {
            let mut options = ClusterOptions::new(3);
            options.amnesia = true;
            let c = Cluster::new(&sim, "amnesia", options);
            for _ in 0..3 {
                c.one(c.random_command(), 3, true).await;
            }
            let leader = c.check_one_leader().await;
            let keeper = (leader + 1) % 3;
            for i in [leader, (leader + 2) % 3] {
                c.crash(i).await;
                c.start(i).await;
                c.connect(i);
            }
            // The keeper's log is ahead; isolate it so the forgetful pair decides alone, then
            // let it learn what they decided.
            c.disconnect(keeper);
            for _ in 0..3 {
                c.one(c.random_command(), 2, true).await;
            }
            c.connect(keeper);
            c.sleep(ELECTION_TIMEOUT * 3).await;
            c.end().await;
        })
    }));
    let panic = outcome.expect_err("a majority with amnesia went unnoticed");
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        message.contains("violated"),
        "unexpected failure: {message}"
    );
}
