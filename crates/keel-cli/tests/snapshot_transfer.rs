//! A member that is far behind catches up from the leader's snapshot. The snapshot is spooled to
//! a file in its data dir as the chunks arrive and installed as a view of that file, so it is
//! never held whole in memory: the follower's heap grows by the store it restores, not by the
//! store and the snapshot besides.

mod support;

use std::time::{Duration, Instant};

use keel_client::{Client, ClientOptions, Consistency};
use support::{Cluster, wait_for_leader};

/// Values of 64 KiB: the store's own overhead per key is small beside them.
const VALUE_BYTES: usize = 64 << 10;
/// 96 MiB of values: large beside what a node holds besides its store (runtime, buffers, the
/// allocator's slack; 10 to 20 MiB), so that a second copy of the store stands out.
const KEYS: usize = 1536;

/// The process's anonymous resident memory (heap and stacks, not mapped files), in bytes.
fn rss_anon(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_from_the_leader_is_spooled_to_disk_not_held_in_memory() {
    let mut cluster = Cluster::new("snapshot-transfer");
    // Small enough that the leader compacts its log while node 3 is away, large enough that it
    // does not write a snapshot of the whole store every few megabytes.
    let flags = ["--max-raft-state-bytes", "33554432"];
    cluster.start_with(0, &flags);
    cluster.start_with(1, &flags);
    let options = ClientOptions {
        deadline: Duration::from_secs(20),
        ..ClientOptions::with_endpoints(vec![cluster.endpoint(0), cluster.endpoint(1)])
    };
    let client = Client::new(options).expect("client");
    let leader = wait_for_leader(&client, &cluster, Duration::from_secs(30)).await;

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = client.new_session();
            tokio::spawn(async move {
                for k in (w..KEYS).step_by(8) {
                    let value = vec![(k % 251) as u8; VALUE_BYTES];
                    client
                        .put(&format!("key-{k:04}"), value)
                        .await
                        .unwrap_or_else(|e| panic!("put key-{k:04}: {e}"));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let leader_status = client
        .status(&cluster.endpoint(leader))
        .await
        .expect("status");
    assert!(
        leader_status.snapshot_index > 0,
        "the leader never snapshotted: {leader_status:?}"
    );

    // Node 3 starts empty: everything reaches it as one snapshot of about 96 MiB.
    cluster.start_with(2, &flags);
    let pid = cluster.children[2].as_ref().expect("node 3 runs").id();
    let node3 = cluster.endpoint(2);
    let started = Instant::now();
    let until = started + Duration::from_secs(60);
    let mut baseline = None;
    let mut peak = 0u64;
    loop {
        let anon = rss_anon(pid).expect("node 3's /proc status");
        peak = peak.max(anon);
        if let Ok(status) = client.status(&node3).await {
            // Once it answers, before the leader has sent it anything much.
            baseline.get_or_insert(anon);
            if status.snapshot_index > 0 && status.applied_index >= leader_status.commit_index {
                break;
            }
        }
        assert!(
            Instant::now() < until,
            "node 3 did not catch up within 60 s\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let caught_up = started.elapsed();
    let baseline = baseline.expect("node 3 answered");
    let settled = rss_anon(pid).expect("node 3's /proc status");
    let data = (KEYS * VALUE_BYTES) as u64;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    eprintln!(
        "node 3 caught up in {caught_up:?}; its anonymous memory: {:.1} MiB before, peak {:.1} \
         MiB, {:.1} MiB after; {:.1} MiB of values",
        mib(baseline),
        mib(peak),
        mib(settled),
        mib(data)
    );
    // The restored store is about `data`; a snapshot held in memory as well would double it.
    assert!(
        peak - baseline < data * 3 / 2,
        "node 3's heap grew by {:.1} MiB to install {:.1} MiB of values",
        mib(peak - baseline),
        mib(data)
    );

    // And everything arrived.
    let node3_client = Client::new(ClientOptions::with_endpoints(vec![node3])).expect("client");
    for k in [0, KEYS / 2, KEYS - 1] {
        let value = node3_client
            .get(&format!("key-{k:04}"), Consistency::Stale)
            .await
            .expect("a key from node 3");
        assert_eq!(value.len(), VALUE_BYTES);
        assert!(value.iter().all(|&b| b == (k % 251) as u8));
    }
}
