//! The address book follows the configuration: a node that joins with no peers is reached by
//! the leader and learns every member's addresses from the configuration entry; a removed member
//! is hung up on and refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use common::{
    Node, Raw, Silent, client_addr, config, eventually, leader, listeners, propose, within,
};
use keel::{MemStorage, NodeId};
use keel_net::wire::FrameKind;
use keel_net::{MemberAddrs, TcpServer, TcpTransport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_learns_the_members_from_the_configuration_and_a_removed_one_is_cut_off() {
    let (listeners, peers) = listeners(&[1, 2, 3, 4]);
    let mut listeners = listeners.into_iter();
    let mut nodes: Vec<Node> = [1, 2, 3]
        .into_iter()
        .map(|id| {
            let listener = listeners.next().unwrap();
            let original: BTreeMap<NodeId, _> = peers
                .iter()
                .filter(|(i, _)| **i != 4)
                .map(|(&i, &a)| (i, a))
                .collect();
            let mut net = config(id, &peers);
            net.peers = original;
            Node::start(net, &[1, 2, 3], Arc::new(MemStorage::new()), |t| {
                TcpServer::from_listener(listener, t).unwrap()
            })
        })
        .collect();
    // Node 4 knows only itself, and starts with no configuration.
    let mut net = config(4, &peers);
    net.peers = BTreeMap::from([(4, peers[&4])]);
    let listener = listeners.next().unwrap();
    nodes.push(Node::start(net, &[], Arc::new(MemStorage::new()), |t| {
        TcpServer::from_listener(listener, t).unwrap()
    }));
    propose(&nodes, "before").await;

    // The leader adds node 4 as a learner, with every member's addresses.
    let info: BTreeMap<NodeId, Bytes> = peers
        .iter()
        .map(|(&id, &addr)| {
            let addrs = MemberAddrs {
                peer_addr: addr,
                client_addr: common::client_addr(id),
            };
            (id, addrs.encode())
        })
        .collect();
    let l = leader(&nodes).await;
    let added = within(
        "node 4 to be added",
        nodes[l]
            .raft
            .change_membership(BTreeSet::from([1, 2, 3]), BTreeSet::from([4]), info),
    )
    .await
    .expect("add node 4");
    assert!(added.learners().contains(&4));
    let (_, proposed) = propose(&nodes, "after").await;
    assert_eq!(&nodes[3].applied_at(proposed.index).await[..], b"after");
    for id in [1, 2, 3] {
        assert_eq!(nodes[3].transport.peer_addr(id), Some(peers[&id]));
        assert!(nodes[3].transport.peer_client_addr(id).is_some());
    }

    // Remove node 3: once that commits, the others hang up on it and refuse it.
    let l = leader(&nodes).await;
    let removed = if l == 2 { 1 } else { 2 };
    let gone = nodes[removed].raft.id();
    within("the removal", nodes[l].raft.remove(gone))
        .await
        .expect("remove");
    let stays = (0..4).find(|&i| i != removed).unwrap();
    eventually("the transport to drop the removed member", || {
        nodes[stays]
            .transport
            .peer_addr(gone)
            .is_none()
            .then_some(())
    })
    .await;
    let addr = nodes[stays].server.local_addr();
    let mut raw = Raw::connect(addr).await;
    raw.send(&common::hello(common::CLUSTER, gone, nodes[stays].raft.id()).encode())
        .await;
    let frame = raw.frame().await.expect("an answer");
    assert_eq!(frame.kind, FrameKind::HelloReject);
    assert!(
        keel_net::wire::decode_text(&frame.body).contains("removed from the cluster"),
        "{frame:?}"
    );
    for node in &nodes {
        node.stop().await;
    }
}

/// Raft calls only the nodes it needs, so two followers under a steady leader never call each
/// other; `connect_all` dials every peer at start, and the handshakes tell each node every other
/// member's client address (which `/v1/status` and the console show).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_all_tells_every_node_every_members_client_address_without_a_call() {
    let ids = [1, 2, 3];
    let (listeners, peers) = listeners(&ids);
    let nodes: Vec<(Arc<TcpTransport>, TcpServer)> = ids
        .iter()
        .zip(listeners)
        .map(|(&id, listener)| {
            let transport = TcpTransport::new(config(id, &peers)).expect("valid config");
            let server = TcpServer::from_listener(listener, &transport).expect("serve loopback");
            server.serve(Silent);
            (transport, server)
        })
        .collect();
    // Before: no handshake, so no node knows another's client address.
    for (transport, _) in &nodes {
        for &id in &ids {
            if id != transport.config().node_id {
                assert_eq!(transport.peer_client_addr(id), None);
            }
        }
    }
    // Only node 3 dials ahead; node 1 and 2 learn its address from its hello, and it learns
    // theirs from their acknowledgements. Nodes 1 and 2 still do not know each other.
    nodes[2].0.connect_all();
    for (transport, _) in &nodes[..2] {
        eventually("node 3's client address at nodes 1 and 2", || {
            transport.peer_client_addr(3)
        })
        .await;
    }
    for id in [1, 2] {
        let addr = eventually("nodes 1 and 2's client addresses at node 3", || {
            nodes[2].0.peer_client_addr(id)
        })
        .await;
        assert_eq!(addr, client_addr(id));
    }
    assert_eq!(nodes[0].0.peer_client_addr(2), None);
    nodes[0].0.connect_all();
    nodes[1].0.connect_all();
    // Called again, it starts nothing new: the links run already.
    nodes[2].0.connect_all();
    for (transport, _) in &nodes {
        for &id in &ids {
            let me = transport.config().node_id;
            if id != me {
                let addr = eventually(&format!("node {id}'s client address at node {me}"), || {
                    transport.peer_client_addr(id)
                })
                .await;
                assert_eq!(addr, client_addr(id));
            }
        }
    }
    let connects: u64 = nodes[2].0.stats().iter().map(|s| s.connects).sum();
    assert_eq!(
        connects,
        2,
        "node 3 dialed each peer once: {:?}",
        nodes[2].0.stats()
    );
    for (transport, server) in &nodes {
        server.shutdown().await;
        transport.shutdown().await;
    }
}
