//! Leader election scenarios (the course suite's 2A).

use std::time::Duration;

use keel_sim::{Cluster, ClusterOptions, ELECTION_TIMEOUT, run};

const SEEDS: u64 = 3;

#[test]
fn initial_election() {
    run("initial_election", SEEDS, |sim| async move {
        let c = Cluster::new(&sim, "initial_election", ClusterOptions::new(3));
        c.check_one_leader().await;
        // Wait a bit to avoid racing with followers learning of the election.
        c.sleep(Duration::from_millis(50)).await;
        let term1 = c.check_terms();
        assert!(term1 >= 1, "term is {term1}, but should be at least 1");
        // With a reliable network and no failures, nobody campaigns again.
        c.sleep(2 * ELECTION_TIMEOUT).await;
        let term2 = c.check_terms();
        assert_eq!(
            term1, term2,
            "term changed even though there were no failures"
        );
        c.check_one_leader().await;
        c.end().await;
    });
}

#[test]
fn re_election() {
    run("re_election", SEEDS, |sim| async move {
        let c = Cluster::new(&sim, "re_election", ClusterOptions::new(3));
        let leader1 = c.check_one_leader().await;

        // If the leader disconnects, a new one should be elected.
        c.disconnect(leader1);
        let leader2 = c.check_one_leader().await;
        let term2 = c.check_terms();

        // The old leader rejoins: it must not disturb the new leader.
        c.connect(leader1);
        let leader3 = c.check_one_leader().await;
        assert_eq!(
            leader3, leader2,
            "the old leader's return deposed the new leader"
        );
        assert_eq!(
            c.check_terms(),
            term2,
            "the old leader's return changed the term"
        );

        // No quorum: no leader.
        c.disconnect(leader2);
        c.disconnect((leader2 + 1) % 3);
        c.sleep(2 * ELECTION_TIMEOUT).await;
        c.check_no_leader();

        // A quorum again: a leader.
        c.connect((leader2 + 1) % 3);
        c.check_one_leader().await;

        // The last node rejoins: still one leader.
        c.connect(leader2);
        c.check_one_leader().await;
        c.end().await;
    });
}

#[test]
fn many_elections() {
    run("many_elections", SEEDS, |sim| async move {
        let n = 7;
        let c = Cluster::new(&sim, "many_elections", ClusterOptions::new(n));
        c.check_one_leader().await;
        for _ in 0..10 {
            // Cut off three random nodes (possibly the same one twice): either the leader
            // survives or the remaining four elect a new one.
            let cut: Vec<usize> = (0..3).map(|_| c.rand(n as u64) as usize).collect();
            for &i in &cut {
                c.disconnect(i);
            }
            c.check_one_leader().await;
            for &i in &cut {
                c.connect(i);
            }
        }
        c.check_one_leader().await;
        c.end().await;
    });
}
