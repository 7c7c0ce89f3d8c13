//! Servers snapshot their state when their Raft log passes [`MAX_RAFT_STATE_BYTES`] (the
//! course's 3B tests): a lagging server catches up through InstallSnapshot, the persisted state
//! stays bounded, and the generic scenarios hold with snapshots in play.

use std::sync::atomic::Ordering;

use keel_sim::{ELECTION_TIMEOUT, run};

use crate::SEEDS;
use crate::cluster::{KvCluster, MAX_RAFT_STATE_BYTES};
use crate::generic::Generic;

/// The Raft state may not grow past this multiple of the snapshot threshold.
const MAX_LOG_SIZE: usize = 8 * MAX_RAFT_STATE_BYTES as usize;

/// The course's bound on a snapshot of a small store.
const MAX_SMALL_SNAPSHOT_BYTES: usize = 500;

/// A server cut off while the others trim their logs must then catch up from a snapshot.
#[test]
fn snapshot_rpc_catches_up_lagging_server() {
    const NAME: &str = "snapshot_rpc_catches_up_lagging_server";
    run(NAME, SEEDS, |sim| async move {
        let kv = KvCluster::new(&sim, NAME, 3, MAX_RAFT_STATE_BYTES);
        let mut ck = kv.clerk(&kv.all());
        ck.put("a", "A").await;
        assert_eq!(ck.get("a").await.as_deref(), Some("A"));

        // A bunch of puts into the majority partition.
        kv.partition(&[&[0, 1], &[2]]);
        let mut ck1 = kv.clerk(&[0, 1]);
        for i in 0..50 {
            ck1.put(&i.to_string(), &i.to_string()).await;
        }
        kv.sleep(ELECTION_TIMEOUT).await;
        ck1.put("b", "B").await;
        // The majority has thrown away most of its log.
        let size = kv.log_size();
        assert!(
            size <= MAX_LOG_SIZE,
            "logs were not trimmed: {size} bytes > {MAX_LOG_SIZE}"
        );

        // A group that needs the lagging server, which must catch up.
        kv.partition(&[&[0, 2], &[1]]);
        let mut ck2 = kv.clerk(&[0, 2]);
        ck2.put("c", "C").await;
        ck2.put("d", "D").await;
        for (key, value) in [("a", "A"), ("b", "B"), ("1", "1"), ("49", "49")] {
            assert_eq!(ck2.get(key).await.as_deref(), Some(value), "key {key:?}");
        }
        let installed = kv
            .service(2)
            .counters()
            .snapshots_installed
            .load(Ordering::Relaxed);
        assert!(
            installed >= 1,
            "server 2 caught up without installing a snapshot"
        );

        // Now everybody.
        kv.connect_all();
        ck.put("e", "E").await;
        for (key, value) in [("c", "C"), ("e", "E"), ("1", "1")] {
            assert_eq!(ck.get(key).await.as_deref(), Some(value), "key {key:?}");
        }
        kv.end().await;
    });
}

/// Many writes to one key: the Raft state stays bounded, and so does the snapshot.
#[test]
fn snapshot_size_bounded() {
    const NAME: &str = "snapshot_size_bounded";
    run(NAME, SEEDS, |sim| async move {
        let kv = KvCluster::new(&sim, NAME, 3, MAX_RAFT_STATE_BYTES);
        let mut ck = kv.clerk(&kv.all());
        for _ in 0..200 {
            ck.put("x", "0").await;
            assert_eq!(ck.get("x").await.as_deref(), Some("0"));
            ck.put("x", "1").await;
            assert_eq!(ck.get("x").await.as_deref(), Some("1"));
        }
        let size = kv.log_size();
        assert!(
            size <= MAX_LOG_SIZE,
            "logs were not trimmed: {size} bytes > {MAX_LOG_SIZE}"
        );
        let snapshot = kv.snapshot_size();
        assert!(
            snapshot <= MAX_SMALL_SNAPSHOT_BYTES,
            "a snapshot of one key and one client takes {snapshot} bytes > {MAX_SMALL_SNAPSHOT_BYTES}"
        );
        kv.end().await;
    });
}

#[test]
fn snapshot_recover_one_client() {
    run("snapshot_recover_one_client", SEEDS, |sim| {
        Generic::clients(1)
            .restarts()
            .snapshots()
            .run(sim, "snapshot_recover_one_client")
    });
}

#[test]
fn snapshot_recover_many_clients() {
    run("snapshot_recover_many_clients", SEEDS, |sim| {
        Generic::clients(20)
            .restarts()
            .snapshots()
            .run(sim, "snapshot_recover_many_clients")
    });
}

#[test]
fn snapshot_unreliable() {
    run("snapshot_unreliable", SEEDS, |sim| {
        Generic::clients(5)
            .unreliable()
            .snapshots()
            .run(sim, "snapshot_unreliable")
    });
}

#[test]
fn snapshot_unreliable_recover() {
    run("snapshot_unreliable_recover", SEEDS, |sim| {
        Generic::clients(5)
            .unreliable()
            .restarts()
            .snapshots()
            .run(sim, "snapshot_unreliable_recover")
    });
}

#[test]
fn snapshot_unreliable_recover_partitions() {
    run("snapshot_unreliable_recover_partitions", SEEDS, |sim| {
        Generic::clients(5)
            .unreliable()
            .restarts()
            .partitions()
            .snapshots()
            .run(sim, "snapshot_unreliable_recover_partitions")
    });
}

/// The course's "linearizable" variant: 15 clients on 7 servers share random keys.
#[test]
fn snapshot_unreliable_recover_partitions_random_keys() {
    run(
        "snapshot_unreliable_recover_partitions_random_keys",
        SEEDS,
        |sim| {
            Generic::clients(15)
                .servers(7)
                .unreliable()
                .restarts()
                .partitions()
                .snapshots()
                .random_keys()
                .run(sim, "snapshot_unreliable_recover_partitions_random_keys")
        },
    );
}
