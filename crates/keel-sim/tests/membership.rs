//! Membership changes on the simulated network: learners, promotion, removal (of the leader
//! too), replacing a member, growing and shrinking, changes cut short by partitions and crashes,
//! and the 2015 single-server change counterexample. The fixture checks safety throughout, with
//! the configurations in force (a commit needs a quorum of its configuration; of both halves
//! when joint).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel::{MemberRole, Membership, MembershipError, NodeId, Role};
use keel_sim::{Cluster, ClusterOptions, ELECTION_TIMEOUT, command, run};

const SEEDS: u64 = 3;

/// How long a membership call may keep retrying (no leader yet, a change in flight, a learner
/// still catching up).
const PATIENCE: Duration = Duration::from_secs(30);

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

async fn add_learner(c: &Cluster, id: usize) -> Membership {
    let info = Bytes::from(format!("node {id}"));
    c.change(PATIENCE, |raft| {
        let info = info.clone();
        async move { raft.add_learner(id as NodeId, info).await }
    })
    .await
    .unwrap_or_else(|e| panic!("adding learner {id}: {e}"))
}

async fn promote(c: &Cluster, id: usize) -> Membership {
    c.change(
        PATIENCE,
        |raft| async move { raft.promote(id as NodeId).await },
    )
    .await
    .unwrap_or_else(|e| panic!("promoting {id}: {e}"))
}

async fn remove(c: &Cluster, id: usize) -> Membership {
    c.change(
        PATIENCE,
        |raft| async move { raft.remove(id as NodeId).await },
    )
    .await
    .unwrap_or_else(|e| panic!("removing {id}: {e}"))
}

/// Waits until every node of `nodes` is under `membership`, committed.
async fn agree_on(c: &Cluster, nodes: &[usize], membership: &Membership) {
    for _ in 0..200 {
        let all = nodes.iter().all(|&i| {
            c.membership(i)
                .is_some_and(|m| m.committed && m.membership == *membership)
        });
        if all {
            return;
        }
        c.sleep(Duration::from_millis(50)).await;
    }
    let seen: Vec<_> = nodes.iter().map(|&i| (i, c.membership(i))).collect();
    panic!("nodes did not agree on {membership}: {seen:?}");
}

/// The cluster as an `Arc`, for background load; `end` unwraps it again.
async fn end(c: Arc<Cluster>) {
    match Arc::try_unwrap(c) {
        Ok(c) => c.end().await,
        Err(_) => panic!("a task still holds the cluster"),
    }
}

#[test]
fn add_a_learner_under_load_then_promote_it() {
    run(
        "add_a_learner_under_load_then_promote_it",
        SEEDS,
        |sim| async move {
            let c = Arc::new(Cluster::new(&sim, "add_learner", ClusterOptions::new(3)));
            c.one(command(1), 3, true).await;
            let load = c.start_load(Duration::from_millis(10));
            let learner = c.add_node();
            let added = add_learner(&c, learner).await;
            assert_eq!(added.voters(), &set(&[0, 1, 2]));
            assert_eq!(added.learners(), &set(&[3]));
            assert_eq!(added.info(3), Some(&Bytes::from("node 3")));
            agree_on(&c, &[0, 1, 2, 3], &added).await;

            // A learner never campaigns: cut off, it keeps its term.
            let term = c.term(learner).unwrap();
            c.disconnect(learner);
            c.sleep(3 * ELECTION_TIMEOUT).await;
            assert_eq!(c.term(learner), Some(term), "a lone learner campaigned");
            assert_ne!(c.raft(learner).unwrap().status().role, Role::Candidate);
            c.connect(learner);

            let promoted = promote(&c, learner).await;
            assert!(!promoted.is_joint());
            assert_eq!(promoted.voters(), &set(&[0, 1, 2, 3]));
            assert_eq!(promoted.role(3), Some(MemberRole::Voter));
            agree_on(&c, &[0, 1, 2, 3], &promoted).await;
            let proposals = load.stop().await;
            let acked = c.check_acknowledged(&[0, 1, 2, 3], &proposals).await;
            assert!(acked > 10, "only {acked} writes committed under load");
            c.one(command(2), 4, true).await;
            end(c).await;
        },
    );
}

#[test]
fn a_learner_never_counts_toward_a_commit() {
    run(
        "a_learner_never_counts_toward_a_commit",
        SEEDS,
        |sim| async move {
            let c = Cluster::new(&sim, "learner_no_commit", ClusterOptions::new(3));
            c.one(command(1), 3, true).await;
            let learner = c.add_node();
            add_learner(&c, learner).await;
            c.one(command(2), 4, true).await;
            // The leader and the learner alone are no quorum of {0, 1, 2}.
            let leader = c.check_one_leader().await;
            for i in 0..3 {
                if i != leader {
                    c.disconnect(i);
                }
            }
            let raft = c.raft(leader).unwrap();
            let proposed = raft.propose(command(3)).unwrap();
            c.sleep(ELECTION_TIMEOUT / 2).await;
            let (count, _) = c.n_committed(proposed.index);
            assert_eq!(count, 0, "an entry committed with one voter and a learner");
            assert!(raft.status().commit_index < proposed.index);
            for i in 0..3 {
                c.connect(i);
            }
            c.one(command(4), 4, true).await;
            c.end().await;
        },
    );
}

#[test]
fn a_learner_is_promoted_only_once_caught_up() {
    run(
        "a_learner_is_promoted_only_once_caught_up",
        SEEDS,
        |sim| async move {
            let mut options = ClusterOptions::new(3);
            options.config.max_promotion_lag = 5;
            let c = Cluster::new(&sim, "promotion_lag", options);
            for v in 0..20 {
                c.one(command(v), 3, true).await;
            }
            let learner = c.add_node();
            c.disconnect(learner);
            let added = add_learner(&c, learner).await;
            let leader = c.check_one_leader().await;
            let refused = c.raft(leader).unwrap().promote(learner as NodeId).await;
            match refused {
                Err(MembershipError::NotCaughtUp { id, lag, max_lag }) => {
                    assert_eq!((id, max_lag), (learner as NodeId, 5));
                    assert!(lag > 5, "lag {lag}");
                }
                other => panic!("promoting a learner that lags: {other:?}"),
            }
            agree_on(&c, &[0, 1, 2], &added).await;
            c.connect(learner);
            let promoted = promote(&c, learner).await;
            assert_eq!(promoted.voters(), &set(&[0, 1, 2, 3]));
            c.end().await;
        },
    );
}

#[test]
fn bad_changes_are_refused_and_change_nothing() {
    run(
        "bad_changes_are_refused_and_change_nothing",
        SEEDS,
        |sim| async move {
            let c = Cluster::new(&sim, "bad_changes", ClusterOptions::new(3));
            c.one(command(1), 3, true).await;
            let leader = c.check_one_leader().await;
            let raft = c.raft(leader).unwrap();
            let before = raft.status().membership;
            let none = raft
                .change_membership(BTreeSet::new(), set(&[0, 1, 2]), BTreeMap::new())
                .await;
            assert_eq!(none, Err(MembershipError::NoVoters));
            assert_eq!(
                raft.promote(7).await,
                Err(MembershipError::UnknownMember(7))
            );
            assert_eq!(raft.remove(7).await, Err(MembershipError::UnknownMember(7)));
            assert_eq!(
                raft.add_learner(1, Bytes::new()).await,
                Err(MembershipError::AlreadyMember(1))
            );
            // A voter must have been a learner first.
            let direct = raft
                .change_membership(set(&[0, 1, 2, 9]), BTreeSet::new(), BTreeMap::new())
                .await;
            assert!(
                matches!(direct, Err(MembershipError::Invalid(_))),
                "{direct:?}"
            );
            let follower = (leader + 1) % 3;
            assert!(matches!(
                c.raft(follower).unwrap().remove(2).await,
                Err(MembershipError::NotLeader { .. })
            ));
            assert_eq!(
                raft.status().membership,
                before,
                "a refusal changed the configuration"
            );

            // A second change while one is in flight: with no follower reachable the first cannot
            // commit.
            for i in 0..3 {
                if i != leader {
                    c.disconnect(i);
                }
            }
            let first = tokio::spawn({
                let raft = raft.clone();
                async move { raft.add_learner(5, Bytes::new()).await }
            });
            c.sleep(Duration::from_millis(10)).await;
            let second = raft.add_learner(6, Bytes::new()).await;
            assert!(
                matches!(second, Err(MembershipError::ChangeInProgress(_))),
                "{second:?}"
            );
            for i in 0..3 {
                c.connect(i);
            }
            // The first either completes, or (if the leader stepped down meanwhile) is lost.
            let first = first.await.unwrap();
            assert!(
                first.is_ok() || first == Err(MembershipError::LeadershipLost),
                "{first:?}"
            );
            c.one(command(2), 3, true).await;
            c.end().await;
        },
    );
}

#[test]
fn remove_a_follower() {
    run("remove_a_follower", SEEDS, |sim| async move {
        let c = Cluster::new(&sim, "remove_follower", ClusterOptions::new(3));
        c.one(command(1), 3, true).await;
        let leader = c.check_one_leader().await;
        let gone = (leader + 1) % 3;
        let stay = (leader + 2) % 3;
        let after = remove(&c, gone).await;
        assert_eq!(after.voters(), &set(&[leader as NodeId, stay as NodeId]));
        agree_on(&c, &[leader, stay], &after).await;
        // Two voters commit alone.
        c.one(command(2), 2, true).await;
        // The removed node learned it is out, and never campaigns again.
        c.sleep(ELECTION_TIMEOUT).await;
        let term = c.term(leader).unwrap();
        c.disconnect(gone);
        c.sleep(3 * ELECTION_TIMEOUT).await;
        c.connect(gone);
        c.sleep(3 * ELECTION_TIMEOUT).await;
        assert_eq!(
            c.term(leader),
            Some(term),
            "the removed node disturbed the cluster"
        );
        assert_eq!(c.check_one_leader().await, leader);
        c.end().await;
    });
}

#[test]
fn remove_the_leader() {
    run("remove_the_leader", SEEDS, |sim| async move {
        let c = Arc::new(Cluster::new(&sim, "remove_leader", ClusterOptions::new(3)));
        c.one(command(1), 3, true).await;
        let load = c.start_load(Duration::from_millis(10));
        let old = c.check_one_leader().await;
        let term = c.term(old).unwrap();
        let after = remove(&c, old).await;
        assert!(!after.contains(old as NodeId));
        // It hands over: a new leader in the next term, without waiting an election timeout.
        let new = c.check_one_leader().await;
        assert_ne!(new, old);
        assert_eq!(
            c.term(new),
            Some(term + 1),
            "leadership was not handed over"
        );
        let rest: Vec<usize> = (0..3).filter(|&i| i != old).collect();
        agree_on(&c, &rest, &after).await;
        let proposals = load.stop().await;
        c.check_acknowledged(&rest, &proposals).await;
        // The old leader is out and stays quiet.
        c.sleep(3 * ELECTION_TIMEOUT).await;
        let status = c.raft(old).unwrap().status();
        assert_ne!(status.role, Role::Leader);
        assert_eq!(c.term(new), Some(term + 1));
        c.one(command(2), 2, true).await;
        end(c).await;
    });
}

#[test]
fn replace_a_crashed_member() {
    run("replace_a_crashed_member", SEEDS, |sim| async move {
        let c = Arc::new(Cluster::new(
            &sim,
            "replace_crashed",
            ClusterOptions::new(3),
        ));
        c.one(command(1), 3, true).await;
        let leader = c.check_one_leader().await;
        let dead = (leader + 1) % 3;
        c.crash(dead).await;
        let load = c.start_load(Duration::from_millis(10));
        let fresh = c.add_node();
        add_learner(&c, fresh).await;
        promote(&c, fresh).await;
        let after = remove(&c, dead).await;
        let live: Vec<usize> = (0..4).filter(|&i| i != dead).collect();
        assert_eq!(
            after.voters(),
            &live.iter().map(|&i| i as NodeId).collect::<BTreeSet<_>>()
        );
        agree_on(&c, &live, &after).await;
        let proposals = load.stop().await;
        c.check_acknowledged(&live, &proposals).await;
        // Any one of the three may now fail.
        let leader = c.check_one_leader().await;
        c.disconnect(leader);
        c.one(command(2), 2, true).await;
        c.connect(leader);
        end(c).await;
    });
}

#[test]
fn grow_to_five_and_shrink_back_on_an_unreliable_network() {
    run("grow_to_five_and_shrink_back", SEEDS, |sim| async move {
        let c = Arc::new(Cluster::new(
            &sim,
            "grow_and_shrink",
            ClusterOptions::new(3).unreliable(),
        ));
        c.one(command(1), 3, true).await;
        let load = c.start_load(Duration::from_millis(20));
        let (a, b) = (c.add_node(), c.add_node());
        add_learner(&c, a).await;
        add_learner(&c, b).await;
        let five = c
            .change(PATIENCE, |raft| async move {
                raft.change_membership(set(&[0, 1, 2, 3, 4]), BTreeSet::new(), BTreeMap::new())
                    .await
            })
            .await
            .expect("grow to five");
        assert_eq!(five.voters(), &set(&[0, 1, 2, 3, 4]));
        agree_on(&c, &[0, 1, 2, 3, 4], &five).await;
        // Two of five may fail now.
        c.disconnect(0);
        c.disconnect(1);
        c.one(command(2), 3, true).await;
        c.connect(0);
        c.connect(1);
        let three = c
            .change(PATIENCE, |raft| async move {
                raft.change_membership(set(&[0, 1, 2]), BTreeSet::new(), BTreeMap::new())
                    .await
            })
            .await
            .expect("shrink to three");
        assert_eq!(three.voters(), &set(&[0, 1, 2]));
        agree_on(&c, &[0, 1, 2], &three).await;
        let proposals = load.stop().await;
        c.set_reliable(true);
        c.check_acknowledged(&[0, 1, 2], &proposals).await;
        end(c).await;
    });
}

#[test]
fn a_minority_cannot_change_the_configuration() {
    run(
        "a_minority_cannot_change_the_configuration",
        SEEDS,
        |sim| async move {
            let c = Cluster::new(&sim, "minority_change", ClusterOptions::new(5));
            c.one(command(1), 5, true).await;
            let before = c.membership(0).unwrap().membership;
            let leader = c.check_one_leader().await;
            let buddy = (leader + 1) % 5;
            let majority: Vec<usize> = (0..5).filter(|&i| i != leader && i != buddy).collect();
            c.partition(&[&[leader, buddy], &majority]);
            // The cut-off leader appends the change but cannot commit it.
            let raft = c.raft(leader).unwrap();
            let change = tokio::spawn(async move { raft.remove(majority_first(leader)).await });
            c.sleep(3 * ELECTION_TIMEOUT).await;
            let answer = change.await.unwrap();
            assert_eq!(answer, Err(MembershipError::LeadershipLost), "{answer:?}");
            // The majority goes on under the old configuration.
            c.one(command(2), 3, true).await;
            for &i in &majority {
                assert_eq!(c.membership(i).unwrap().membership, before);
            }
            // Healed, the minority's uncommitted change is truncated: everyone is back on the
            // configuration the cluster never left.
            c.partition(&[&[0, 1, 2, 3, 4]]);
            c.one(command(3), 5, true).await;
            agree_on(&c, &[0, 1, 2, 3, 4], &before).await;
            c.end().await;
        },
    );
}

/// A voter other than `leader` (the one the cut-off leader tries to remove).
fn majority_first(leader: usize) -> NodeId {
    ((leader + 2) % 5) as NodeId
}

#[test]
fn a_leader_crash_in_the_middle_of_a_joint_configuration() {
    run(
        "a_leader_crash_in_a_joint_configuration",
        6,
        |sim| async move {
            let c = Cluster::new(&sim, "crash_in_joint", ClusterOptions::new(5));
            c.one(command(1), 5, true).await;
            let before = c.membership(0).unwrap().membership;
            let leader = c.check_one_leader().await;
            let raft = c.raft(leader).unwrap();
            let gone = ((leader + 1) % 5) as NodeId;
            let change = tokio::spawn(async move { raft.remove(gone).await });
            // Crash the leader at a random moment of the change: before the joint configuration
            // reached anyone, after it reached some, or once it committed.
            c.sleep(Duration::from_millis(c.rand(40))).await;
            c.crash(leader).await;
            let _ = change.await;
            let rest: Vec<usize> = (0..5).filter(|&i| i != leader).collect();
            c.one(command(2), 3, true).await;
            c.sleep(2 * ELECTION_TIMEOUT).await;
            // The next leader finished the change or abandoned it, never both, and nobody is left
            // in the joint configuration.
            let now = c.membership(rest[0]).unwrap().membership;
            assert!(!now.is_joint(), "left in a joint configuration: {now}");
            let finished = !now.contains(gone) && now.voters().len() == 4;
            assert!(
                finished || now == before,
                "neither finished nor abandoned: {now}"
            );
            let survivors: Vec<usize> = rest
                .iter()
                .copied()
                .filter(|&i| now.contains(i as NodeId))
                .collect();
            agree_on(&c, &survivors, &now).await;
            c.start(leader).await;
            c.connect(leader);
            c.one(command(3), survivors.len(), true).await;
            c.end().await;
        },
    );
}

#[test]
fn a_configuration_entry_truncated_by_a_new_leader_is_undone() {
    run("a_configuration_entry_truncated", SEEDS, |sim| async move {
        let c = Cluster::new(&sim, "truncated_config", ClusterOptions::new(3));
        c.one(command(1), 3, true).await;
        let before = c.membership(0).unwrap().membership;
        let leader = c.check_one_leader().await;
        for i in 0..3 {
            if i != leader {
                c.disconnect(i);
            }
        }
        let raft = c.raft(leader).unwrap();
        let change = tokio::spawn(async move { raft.add_learner(9, Bytes::new()).await });
        c.sleep(Duration::from_millis(50)).await;
        let pending = c.membership(leader).unwrap();
        assert!(pending.membership.contains(9), "takes effect when appended");
        assert!(!pending.committed);
        // The others elect a leader of their own, which commits entries of its term.
        c.disconnect(leader);
        for i in 0..3 {
            if i != leader {
                c.connect(i);
            }
        }
        c.one(command(2), 2, true).await;
        c.connect(leader);
        c.one(command(3), 3, true).await;
        let _ = change.await;
        // The old leader's configuration entry was replaced: it is back under the old one.
        agree_on(&c, &[0, 1, 2], &before).await;
        let at = pending.index;
        let raft = c.raft(leader).unwrap();
        assert!(
            !matches!(
                raft.log_entry(at).map(|e| e.payload),
                Some(keel::Payload::Config(_))
            ),
            "the configuration entry survived"
        );
        c.end().await;
    });
}

#[test]
fn a_new_member_caught_up_by_a_snapshot_learns_the_configuration() {
    run(
        "a_new_member_caught_up_by_a_snapshot",
        SEEDS,
        |sim| async move {
            let c = Cluster::new(&sim, "snapshot_config", ClusterOptions::new(3).snapshots());
            for v in 0..40 {
                c.one(command(v), 3, true).await;
            }
            let learner = c.add_node();
            let added = add_learner(&c, learner).await;
            agree_on(&c, &[0, 1, 2, learner], &added).await;
            let status = c.raft(learner).unwrap().status();
            assert!(status.snapshot_index > 0, "the learner was sent a snapshot");
            // More entries and snapshots, then a restart: it recovers the configuration from disk.
            for v in 40..80 {
                c.one(command(v), 4, true).await;
            }
            c.start(learner).await;
            c.connect(learner);
            let recovered = c.membership(learner).unwrap();
            assert_eq!(
                recovered.membership, added,
                "after a restart from its snapshot"
            );
            promote(&c, learner).await;
            c.one(command(100), 4, true).await;
            c.end().await;
        },
    );
}

/// The counterexample Ongaro posted to raft-dev in 2015 for single-server changes, replayed
/// here: a leader's change reaches only part of the cluster, another leader (of a later term)
/// makes a change of its own, and the first comes back. Without the fix (a leader changes the
/// membership only after committing an entry of its own term) two leaders could commit under
/// quorums that do not overlap. The fixture's checks must find nothing.
#[test]
fn the_2015_single_server_change_counterexample() {
    run(
        "the_2015_single_server_counterexample",
        SEEDS,
        |sim| async move {
            let c = Cluster::new(&sim, "ongaro_2015", ClusterOptions::new(4));
            let learner = c.add_node();
            add_learner(&c, learner).await;
            c.one(command(1), 5, true).await;
            // S1 (the leader) starts adding S5 as a voter, but only S5 hears of it.
            let s1 = c.check_one_leader().await;
            let others: Vec<usize> = (0..4).filter(|&i| i != s1).collect();
            c.partition(&[&[s1, learner], &others]);
            let raft = c.raft(s1).unwrap();
            let change = tokio::spawn(async move { raft.promote(learner as NodeId).await });
            c.sleep(Duration::from_millis(50)).await;
            // The other three elect S2, which removes S1 and commits that.
            let after = c
                .change(
                    PATIENCE,
                    |raft| async move { raft.remove(s1 as NodeId).await },
                )
                .await;
            let _ = change.await;
            let after = after.expect("the majority removes S1");
            // S1 comes back with S5 and a third node; its change must not win.
            c.partition(&[&[s1, learner, others[0]], &[others[1], others[2]]]);
            c.sleep(3 * ELECTION_TIMEOUT).await;
            c.partition(&[&[0, 1, 2, 3, learner]]);
            c.sleep(3 * ELECTION_TIMEOUT).await;
            c.one(command(2), 3, true).await;
            agree_on(&c, &others, &after).await;
            c.end().await;
        },
    );
}
