//! Leadership transfer (Raft thesis, section 3.10) on the simulated network: under load, to a
//! follower that lags, to one that crashed (abandoned: the old leader leads on), and the
//! requests it refuses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel::{NodeId, ProposeError, Role, TransferError};
use keel_sim::{Cluster, ClusterOptions, ELECTION_TIMEOUT, command, run};
use tokio::time::Instant;

const SEEDS: u64 = 3;

async fn end(c: Arc<Cluster>) {
    match Arc::try_unwrap(c) {
        Ok(c) => c.end().await,
        Err(_) => panic!("a task still holds the cluster"),
    }
}

#[test]
fn transfer_under_load_loses_no_acknowledged_write() {
    run("transfer_under_load", SEEDS, |sim| async move {
        let options = ClusterOptions::new(3);
        let election_timeout_min = options.config.election_timeout_min;
        let c = Arc::new(Cluster::new(&sim, "transfer_under_load", options));
        c.one(command(1), 3, true).await;
        let load = c.start_load(Duration::from_millis(5));
        for round in 0..5 {
            c.sleep(Duration::from_millis(200)).await;
            let old = c.check_one_leader().await;
            let term = c.term(old).unwrap();
            let target = (old + 1 + round % 2) % 3;
            let started = Instant::now();
            let answer = c
                .raft(old)
                .unwrap()
                .transfer_leadership(Some(target as NodeId))
                .await;
            assert_eq!(answer, Ok(Some(target as NodeId)), "round {round}");
            let took = started.elapsed();
            assert!(
                took < election_timeout_min,
                "the transfer took {took:?}, as long as an election timeout"
            );
            assert_eq!(c.term(target), Some(term + 1));
            assert_eq!(c.raft(target).unwrap().status().role, Role::Leader);
        }
        let proposals = load.stop().await;
        let acked = c.check_acknowledged(&[0, 1, 2], &proposals).await;
        assert!(acked > 50, "only {acked} writes committed under load");
        end(c).await;
    });
}

#[test]
fn transfer_to_the_most_up_to_date_follower() {
    run(
        "transfer_to_the_most_up_to_date_follower",
        SEEDS,
        |sim| async move {
            let c = Cluster::new(&sim, "transfer_any", ClusterOptions::new(5));
            c.one(command(1), 5, true).await;
            let old = c.check_one_leader().await;
            // Two followers fall behind; the pick must be one of the others.
            let behind = [(old + 1) % 5, (old + 2) % 5];
            for &i in &behind {
                c.disconnect(i);
            }
            for v in 2..10 {
                c.one(command(v), 3, true).await;
            }
            for &i in &behind {
                c.connect(i);
            }
            let new = c.raft(old).unwrap().transfer_leadership(None).await;
            let new = new.expect("transfer").expect("the new leader is known") as usize;
            assert!(new != old && !behind.contains(&new), "picked {new}");
            assert_eq!(c.check_one_leader().await, new);
            c.end().await;
        },
    );
}

#[test]
fn transfer_to_a_lagging_follower_catches_it_up_first() {
    run("transfer_to_a_lagging_follower", SEEDS, |sim| async move {
        let c = Cluster::new(&sim, "transfer_lagging", ClusterOptions::new(3));
        c.one(command(1), 3, true).await;
        let old = c.check_one_leader().await;
        let target = (old + 1) % 3;
        c.disconnect(target);
        let mut last = 0;
        for v in 2..40 {
            last = c.one(command(v), 2, true).await;
        }
        c.connect(target);
        let raft = c.raft(old).unwrap();
        let transfer = tokio::spawn({
            let raft = raft.clone();
            async move { raft.transfer_leadership(Some(target as NodeId)).await }
        });
        c.sleep(Duration::from_millis(1)).await;
        // Meanwhile the leader takes no proposals.
        if raft.status().role == Role::Leader {
            assert_eq!(
                raft.propose(command(99)),
                Err(ProposeError::TransferringLeadership {
                    to: target as NodeId
                })
            );
        }
        assert_eq!(transfer.await.unwrap(), Ok(Some(target as NodeId)));
        let status = c.raft(target).unwrap().status();
        assert_eq!(status.role, Role::Leader);
        assert!(
            status.last_log_index > last,
            "it holds the log and its own no-op"
        );
        c.one(command(100), 3, true).await;
        c.end().await;
    });
}

#[test]
fn a_transfer_to_a_crashed_follower_is_abandoned_and_the_leader_resumes() {
    run("transfer_to_a_crashed_follower", SEEDS, |sim| async move {
        let c = Cluster::new(&sim, "transfer_crashed", ClusterOptions::new(3));
        c.one(command(1), 3, true).await;
        let old = c.check_one_leader().await;
        let term = c.term(old).unwrap();
        let target = (old + 1) % 3;
        let raft = c.raft(old).unwrap();
        let transfer = tokio::spawn({
            let raft = raft.clone();
            async move { raft.transfer_leadership(Some(target as NodeId)).await }
        });
        c.sleep(Duration::from_millis(1)).await;
        c.crash(target).await;
        assert_eq!(
            transfer.await.unwrap(),
            Err(TransferError::Abandoned(target as NodeId))
        );
        let status = raft.status();
        assert_eq!((status.role, status.current_term), (Role::Leader, term));
        assert_eq!(status.transfer_to, None);
        raft.propose(command(2))
            .expect("the leader takes proposals again");
        c.one(command(3), 2, true).await;
        c.end().await;
    });
}

#[test]
fn transfers_the_leader_cannot_make_are_refused() {
    run("transfers_that_cannot_be_made", SEEDS, |sim| async move {
        let c = Cluster::new(&sim, "transfer_refused", ClusterOptions::new(3));
        c.one(command(1), 3, true).await;
        let learner = c.add_node();
        c.change(Duration::from_secs(10), |raft| async move {
            raft.add_learner(learner as NodeId, Bytes::new()).await
        })
        .await
        .unwrap();
        let leader = c.check_one_leader().await;
        let raft = c.raft(leader).unwrap();
        let refused = [
            (
                leader as NodeId,
                TransferError::InvalidTarget(leader as NodeId),
            ),
            (
                learner as NodeId,
                TransferError::InvalidTarget(learner as NodeId),
            ),
            (42, TransferError::InvalidTarget(42)),
        ];
        for (to, error) in refused {
            assert_eq!(raft.transfer_leadership(Some(to)).await, Err(error));
        }
        let follower = c.raft((leader + 1) % 3).unwrap();
        assert!(matches!(
            follower.transfer_leadership(None).await,
            Err(TransferError::NotLeader { .. })
        ));
        assert_eq!(c.check_one_leader().await, leader);
        c.sleep(ELECTION_TIMEOUT).await;
        c.end().await;
    });
}
