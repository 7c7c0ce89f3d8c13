//! The address book follows the configuration: a node that joins with no peers is reached by
//! the leader and learns every member's addresses from the configuration entry; a removed member
//! is hung up on and refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use common::{Node, Raw, config, eventually, leader, listeners, propose, within};
use keel::{MemStorage, NodeId};
use keel_net::wire::FrameKind;
use keel_net::{MemberAddrs, TcpServer};

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
