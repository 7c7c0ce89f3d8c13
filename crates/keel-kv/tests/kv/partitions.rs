//! Partitions: a majority makes progress, a minority does not until it rejoins (the course's
//! TestOnePartition3A), and clients under partitions that come and go.

use std::time::Duration;

use keel_sim::{ELECTION_TIMEOUT, run};

use crate::SEEDS;
use crate::cluster::{KvCluster, NO_SNAPSHOTS};
use crate::generic::Generic;

/// How long requests sent to a minority must stay unanswered.
const MINORITY_WAIT: Duration = Duration::from_secs(1);

/// How long those requests may take to complete once the partition heals (the course's 3 s).
const COMPLETION_AFTER_HEAL: Duration = Duration::from_secs(3);

#[test]
fn majority_progresses_and_minority_waits_for_heal() {
    const NAME: &str = "majority_progresses_and_minority_waits_for_heal";
    run(NAME, SEEDS, |sim| async move {
        let kv = KvCluster::new(&sim, NAME, 5, NO_SNAPSHOTS);
        let mut ck = kv.clerk(&kv.all());
        ck.put("1", "13").await;

        // Progress in the majority, which holds the leader.
        let (majority, minority) = split_around_leader(&kv).await;
        kv.partition(&[&majority, &minority]);
        let mut ck_majority = kv.clerk(&majority);
        let mut ck_minority_put = kv.clerk(&minority);
        let mut ck_minority_get = kv.clerk(&minority);
        ck_majority.put("1", "14").await;
        assert_eq!(ck_majority.get("1").await.as_deref(), Some("14"));

        // No progress in the minority.
        let (put_endpoint, get_endpoint) = (ck_minority_put.endpoint(), ck_minority_get.endpoint());
        let put = tokio::spawn(async move { ck_minority_put.put("1", "15").await });
        let get = tokio::spawn(async move { ck_minority_get.get("1").await });
        kv.sleep(MINORITY_WAIT).await;
        assert!(!put.is_finished(), "a put sent to the minority completed");
        assert!(!get.is_finished(), "a get sent to the minority completed");
        assert_eq!(ck_majority.get("1").await.as_deref(), Some("14"));
        ck_majority.put("1", "16").await;
        assert_eq!(ck_majority.get("1").await.as_deref(), Some("16"));

        // Completion after the partition heals.
        kv.connect_all();
        kv.connect_clerk(put_endpoint, &kv.all());
        kv.connect_clerk(get_endpoint, &kv.all());
        kv.sleep(ELECTION_TIMEOUT).await;
        tokio::time::timeout(COMPLETION_AFTER_HEAL, put)
            .await
            .expect("the minority's put did not complete after the partition healed")
            .expect("the put's task failed");
        tokio::time::timeout(COMPLETION_AFTER_HEAL, get)
            .await
            .expect("the minority's get did not complete after the partition healed")
            .expect("the get's task failed");
        assert_eq!(ck.get("1").await.as_deref(), Some("15"));
        kv.end().await;
    });
}

/// A majority holding the current leader, and the other servers (the course's
/// `make_partition`).
async fn split_around_leader(kv: &KvCluster) -> (Vec<usize>, Vec<usize>) {
    let leader = kv.leader().await;
    let mut others = (0..kv.n()).filter(|&i| i != leader);
    let mut majority: Vec<usize> = others.by_ref().take(kv.n() / 2).collect();
    majority.push(leader);
    (majority, others.collect())
}

#[test]
fn many_partitions_one_client() {
    run("many_partitions_one_client", SEEDS, |sim| {
        Generic::clients(1)
            .partitions()
            .run(sim, "many_partitions_one_client")
    });
}

#[test]
fn many_partitions_many_clients() {
    run("many_partitions_many_clients", SEEDS, |sim| {
        Generic::clients(5)
            .partitions()
            .run(sim, "many_partitions_many_clients")
    });
}
