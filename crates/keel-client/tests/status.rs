//! The status table of a real three-node cluster, with one endpoint that does not answer.

mod support;

use std::time::Duration;

use keel_client::{Client, ClientOptions, ClusterStatus};
use keel_kv::KvOptions;
use support::cluster::{TestCluster, closed_port};

/// Asks for the cluster status until every live node agrees on one leader, for up to 10 s.
async fn settled_status(client: &Client) -> ClusterStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let cluster = client.cluster_status().await;
        let answered: Vec<_> = cluster
            .endpoints
            .iter()
            .filter_map(|e| e.status.as_ref().ok())
            .collect();
        let leaders = answered.iter().filter(|s| s.is_leader()).count();
        let agreed = answered
            .iter()
            .all(|s| s.leader_id.is_some() && s.leader_id == answered[0].leader_id);
        if leaders == 1 && agreed {
            return cluster;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster did not settle on one leader within 10 s:\n{cluster}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_shows_one_leader_and_the_unreachable_endpoint() {
    let cluster = TestCluster::start(3, KvOptions::default()).await;
    let closed = closed_port().await;
    let mut endpoints = cluster.endpoints();
    endpoints.push(closed.clone());
    let client = Client::new(ClientOptions::with_endpoints(endpoints)).unwrap();
    client.put("k", "v").await.unwrap();

    let status = settled_status(&client).await;
    let table = status.table();
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines.len(),
        6,
        "a header, one row per endpoint and the configuration:\n{table}"
    );
    assert_eq!(
        lines[5], "configuration (index 0): voters 1, 2, 3",
        "{table}"
    );
    assert!(lines[0].starts_with("ID  ADDRESS"), "{table}");
    let column = |line: &str, i: usize| line.split_whitespace().nth(i).map(str::to_string);
    let roles: Vec<_> = lines[1..5].iter().map(|l| column(l, 2)).collect();
    assert_eq!(
        roles
            .iter()
            .filter(|r| r.as_deref() == Some("leader"))
            .count(),
        1,
        "{table}"
    );
    assert_eq!(
        roles
            .iter()
            .filter(|r| r.as_deref() == Some("follower"))
            .count(),
        2,
        "{table}"
    );
    let unreachable = lines[4];
    assert_eq!(column(unreachable, 1).as_deref(), Some(closed.as_str()));
    assert_eq!(column(unreachable, 2).as_deref(), Some("unreachable"));
    for line in &lines[1..4] {
        assert_eq!(column(line, 3).as_deref(), Some("voter"), "{table}");
    }
    assert!(unreachable.ends_with("connection refused"), "{table}");

    // Every live row names the same leader, and the leader's row is that node.
    let (leader_endpoint, leader) = status.leader().expect("a leader");
    for line in &lines[1..4] {
        assert_eq!(column(line, 8), Some(leader.node_id.to_string()), "{table}");
    }
    assert_eq!(
        leader_endpoint,
        cluster.nodes[leader.node_id as usize - 1].addr
    );
    assert_eq!(client.find_leader().await.unwrap(), leader_endpoint);

    // One node's status on its own.
    let one = client.status(&cluster.nodes[0].addr).await.unwrap();
    assert_eq!(one.node_id, 1);
    assert_eq!(one.members.len(), 3);
    let e = client.status(&closed).await.unwrap_err();
    assert_eq!(e.to_string(), format!("{closed}: connection refused"));
}
