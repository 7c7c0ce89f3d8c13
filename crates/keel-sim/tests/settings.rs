//! The election options, each turned off and on: pre-vote (thesis 9.6) and check-quorum with its
//! leader lease (thesis 6.2 and 4.2.3). Every combination must elect leaders, agree and stay safe
//! through failures (the fixture checks safety as it runs), and each option must do what it is
//! for: with check-quorum a leader cut off from its quorum steps down; with pre-vote a node cut
//! off from the others does not raise its term, so it cannot disrupt the cluster when it returns.

use std::time::Duration;

use keel_sim::{Cluster, ClusterOptions, ELECTION_TIMEOUT, command, run};

const SEEDS: u64 = 3;

fn options(nodes: usize, pre_vote: bool, check_quorum: bool) -> ClusterOptions {
    let mut options = ClusterOptions::new(nodes);
    options.config.pre_vote = pre_vote;
    options.config.check_quorum = check_quorum;
    options
}

/// Elections, agreement and recovery from failures with the given options.
async fn elect_and_agree(c: &Cluster) {
    let n = c.n();
    let mut value = 100;
    let mut next = || {
        value += 1;
        command(value)
    };
    c.one(next(), n, true).await;
    // The leader fails and comes back.
    for _ in 0..3 {
        let leader = c.check_one_leader().await;
        c.disconnect(leader);
        c.one(next(), n - 1, true).await;
        c.connect(leader);
        c.one(next(), n, true).await;
    }
    // A minority is cut off, then the network turns unreliable.
    c.partition(&[&[0, 1, 2], &[3, 4]]);
    c.one(next(), 3, true).await;
    c.partition(&[&[0, 1, 2, 3, 4]]);
    c.set_reliable(false);
    for _ in 0..10 {
        c.one(next(), 1, true).await;
    }
    c.set_reliable(true);
    c.one(next(), n, true).await;
}

/// With check-quorum a leader that hears from no quorum steps down; without, it stays leader.
async fn isolated_leader(c: &Cluster, check_quorum: bool) {
    let leader = c.check_one_leader().await;
    let old = c.raft(leader).expect("the leader runs");
    c.disconnect(leader);
    c.sleep(3 * ELECTION_TIMEOUT).await;
    let role = old.status().role;
    if check_quorum {
        assert_ne!(
            role,
            keel::Role::Leader,
            "an isolated leader kept leading with check-quorum on"
        );
    } else {
        assert_eq!(
            role,
            keel::Role::Leader,
            "an isolated leader stepped down with check-quorum off"
        );
    }
    c.connect(leader);
    c.check_one_leader().await;
}

/// With pre-vote a node cut off from the others keeps its term; without, it campaigns in ever
/// newer terms.
async fn isolated_follower(c: &Cluster, pre_vote: bool) {
    let leader = c.check_one_leader().await;
    let follower = (leader + 1) % c.n();
    let before = c.term(follower).expect("the follower runs");
    c.disconnect(follower);
    c.sleep(5 * ELECTION_TIMEOUT).await;
    let after = c.term(follower).expect("the follower runs");
    if pre_vote {
        assert_eq!(
            after, before,
            "an isolated node raised its term with pre-vote on"
        );
    } else {
        assert!(
            after > before,
            "an isolated node never campaigned with pre-vote off"
        );
    }
    c.connect(follower);
    c.sleep(Duration::from_millis(100)).await;
    c.one(command(1), c.n(), true).await;
}

macro_rules! with_settings {
    ($name:ident, $pre_vote:expr, $check_quorum:expr) => {
        #[test]
        fn $name() {
            run(stringify!($name), SEEDS, |sim| async move {
                let c = Cluster::new(
                    &sim,
                    stringify!($name),
                    options(5, $pre_vote, $check_quorum),
                );
                elect_and_agree(&c).await;
                isolated_leader(&c, $check_quorum).await;
                isolated_follower(&c, $pre_vote).await;
                c.end().await;
            });
        }
    };
}

with_settings!(pre_vote_on_check_quorum_on, true, true);
with_settings!(pre_vote_on_check_quorum_off, true, false);
with_settings!(pre_vote_off_check_quorum_on, false, true);
with_settings!(pre_vote_off_check_quorum_off, false, false);
