//! Real Raft nodes over real sockets: elections, replication, and a peer's restart.

mod common;

use std::sync::Arc;

use common::{Node, cluster, eventually, propose};
use keel_net::TcpServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_commit_on_every_node() {
    let mut nodes = cluster(&[1, 2, 3]);
    let (leader, proposed) = propose(&nodes, "x = 1").await;
    for node in &mut nodes {
        assert_eq!(node.applied_at(proposed.index).await, "x = 1");
    }
    // The leader and each follower learned each other's client addresses from the handshake of
    // the leader's connection (the followers may never have dialed anyone).
    let leader_id = nodes[leader].raft.id();
    for node in &nodes {
        let me = node.raft.id();
        let others: Vec<u64> = match me == leader_id {
            true => [1, 2, 3].into_iter().filter(|id| *id != me).collect(),
            false => vec![leader_id],
        };
        for other in others {
            let what = format!("node {me} to learn node {other}'s client address");
            let learned = eventually(&what, || node.transport.peer_client_addr(other)).await;
            assert_eq!(learned, common::client_addr(other));
        }
    }
    let stats = nodes[leader].transport.stats();
    assert!(
        stats
            .iter()
            .all(|s| s.connected && s.rpcs_sent > 0 && s.bytes_received > 0),
        "the leader talks to every follower: {stats:?}"
    );
    for node in &nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_redialed_and_catches_up() {
    let ids = [1, 2, 3];
    let mut nodes = cluster(&ids);
    let (leader, first) = propose(&nodes, "before").await;
    for node in &mut nodes {
        node.applied_at(first.index).await;
    }

    // Stop a follower, process and all; the others carry on without it.
    let follower = (leader + 1) % nodes.len();
    let follower_id = nodes[follower].raft.id();
    // Its configuration's listen_addr is the port its first server was handed.
    let follower_config = nodes[follower].transport.config().clone();
    assert_eq!(
        follower_config.listen_addr,
        nodes[follower].server.local_addr()
    );
    nodes[follower].stop().await;
    let (leader, second) = propose(&nodes, "while down").await;
    nodes[leader].applied_at(second.index).await;
    let connects_before = peer_connects(&nodes[leader], follower_id);

    // Restart it on the same port with the storage it had, the way a process restarts.
    let storage = Arc::clone(&nodes[follower].storage);
    nodes[follower] = Node::start(follower_config, &ids, storage, |transport| {
        TcpServer::bind(transport).expect("the port is free again")
    });

    let (leader, third) = propose(&nodes, "after").await;
    assert_eq!(nodes[follower].applied_at(second.index).await, "while down");
    assert_eq!(nodes[follower].applied_at(third.index).await, "after");
    let connects_after = peer_connects(&nodes[leader], follower_id);
    assert!(
        connects_after > connects_before,
        "the leader redialed the restarted node ({connects_before} -> {connects_after} connects)"
    );
    for node in &nodes {
        node.stop().await;
    }
}

fn peer_connects(node: &Node, peer: u64) -> u64 {
    node.transport
        .stats()
        .into_iter()
        .find(|s| s.id == peer)
        .map(|s| s.connects)
        .expect("a configured peer")
}
