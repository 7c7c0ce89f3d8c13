//! Calls through the transport: many in flight on one connection, failing fast when the peer
//! dies or refuses, and the bounds on pending requests.

mod common;

use common::{Echo, Pair, Silent, eventually, vote, within};
use keel::{Response, Transport, TransportError};
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_on_one_connection_get_their_own_replies() {
    let pair = Pair::start(Echo, |_| {});
    let mut calls = JoinSet::new();
    for term in 1..=500u64 {
        let call = pair.client.call(1, vote(term));
        calls.spawn(async move { (term, call.await) });
    }
    while let Some(joined) = calls.join_next().await {
        let (term, reply) = joined.expect("call task");
        match reply {
            Ok(Response::Vote(v)) => assert_eq!(v.term, term, "a reply for another request"),
            other => panic!("request {term}: {other:?}"),
        }
    }
    let stats = &pair.client.stats()[0];
    assert_eq!(
        (stats.id, stats.connects, stats.rpcs_sent, stats.rpcs_failed),
        (1, 1, 500, 0)
    );
    assert_eq!(stats.pending, 0);
    assert_eq!(pair.server_transport.stats()[0].rpcs_served, 500);
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_fail_promptly_when_the_peer_dies() {
    let pair = Pair::start(Silent, |_| {});
    let mut calls = JoinSet::new();
    for term in 1..=20 {
        calls.spawn(pair.client.call(1, vote(term)));
    }
    eventually("20 requests pending", || {
        (pair.client.stats()[0].pending == 20).then_some(())
    })
    .await;
    pair.server.shutdown().await;
    // Well before any RPC timeout: the connection's end fails them all.
    within("the pending calls to fail", async {
        while let Some(joined) = calls.join_next().await {
            assert_eq!(
                joined.expect("call task"),
                Err(TransportError::Unreachable(1))
            );
        }
    })
    .await;
    assert_eq!(pair.client.stats()[0].pending, 0);
    // While the peer stays down, calls fail at once instead of queueing.
    let error = within("a call to a dead peer", pair.client.call(1, vote(1))).await;
    assert_eq!(error, Err(TransportError::Unreachable(1)));
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_peer_will_not_answer_fails_at_once() {
    // Echo refuses term 0 as a shut-down node does: the server sends an error frame.
    let pair = Pair::start(Echo, |_| {});
    let error = within("a refused request", pair.client.call(1, vote(0))).await;
    assert_eq!(error, Err(TransportError::Unreachable(1)));
    // The connection stays up for the next request.
    assert!(
        within("a request", pair.client.call(1, vote(5)))
            .await
            .is_ok()
    );
    assert_eq!(pair.client.stats()[0].connects, 1);
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pending_map_fails_calls_fast_and_abandoned_calls_free_their_slots() {
    let pair = Pair::start(Silent, |c| c.max_pending_per_peer = 4);
    let mut stuck: Vec<_> = (1..=4)
        .map(|term| pair.client.call(1, vote(term)))
        .collect();
    let first = stuck.remove(0);
    let mut waiting = JoinSet::new();
    for call in stuck {
        waiting.spawn(call);
    }
    // The first call is never polled; it still counts. (Once connected, the link has written
    // the queued frames, so only the pending limit is in play below.)
    eventually("4 requests pending on a connected link", || {
        let stats = &pair.client.stats()[0];
        (stats.pending == 4 && stats.connected).then_some(())
    })
    .await;
    let refused = within("a call over the limit", pair.client.call(1, vote(9))).await;
    assert!(
        matches!(refused, Err(TransportError::Overloaded(_))),
        "{refused:?}"
    );
    // A caller that gives up (Raft's timeout drops the future) frees its slot.
    drop(first);
    assert_eq!(pair.client.stats()[0].pending, 3);
    let next = pair.client.call(1, vote(10));
    let next = tokio::spawn(next);
    eventually("the new call to be pending", || {
        (pair.client.stats()[0].pending == 4).then_some(())
    })
    .await;
    waiting.abort_all();
    next.abort();
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peers_and_a_shut_down_transport_are_errors() {
    let pair = Pair::start(Echo, |_| {});
    assert_eq!(
        pair.client.call(99, vote(1)).await,
        Err(TransportError::UnknownPeer(99))
    );
    assert_eq!(
        pair.client.call(2, vote(1)).await,
        Err(TransportError::UnknownPeer(2)),
        "itself"
    );
    assert!(within("a call", pair.client.call(1, vote(1))).await.is_ok());
    pair.client.shutdown().await;
    assert_eq!(
        pair.client.call(1, vote(1)).await,
        Err(TransportError::Shutdown)
    );
    assert!(!pair.client.stats()[0].connected);
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_before_the_peer_listens_fails_then_the_link_recovers() {
    // The server's port is known but nothing accepts yet: the first dial is refused.
    let (mut listeners, mut peers) = common::listeners(&[1]);
    let addr = peers[&1];
    drop(listeners.remove(0));
    peers.insert(2, common::dead_addr());
    let client = keel_net::TcpTransport::new(common::config(2, &peers)).expect("config");
    let refused = within("a call to a closed port", client.call(1, vote(1))).await;
    assert_eq!(refused, Err(TransportError::Unreachable(1)));

    let server_transport = keel_net::TcpTransport::new(common::config(1, &peers)).expect("config");
    let server = keel_net::TcpServer::bind(&server_transport).expect("port still free");
    assert_eq!(server.local_addr(), addr);
    server.serve(Echo);
    // The link redials on its own (backoff at most 200 ms here); calls succeed once it is up.
    eventually("the link to come up", || {
        client.stats()[0].connected.then_some(())
    })
    .await;
    assert!(within("a call", client.call(1, vote(3))).await.is_ok());
    assert_eq!(
        client.peer_client_addr(1).as_deref(),
        Some(common::client_addr(1).as_str())
    );
    client.shutdown().await;
    server.shutdown().await;
    server_transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_raft_node_behind_a_live_server_fails_calls_at_once() {
    let pair = Pair::with_raft(|_| {});
    pair.assert_serves("start-up").await;
    let (raft, _) = pair.raft.as_ref().expect("a raft node");
    raft.shutdown().await;
    // Raft answers nothing once shut down; the server says so instead of letting the caller
    // wait for its timeout.
    let error = within("a call to a shut-down node", pair.client.call(1, vote(2))).await;
    assert_eq!(error, Err(TransportError::Unreachable(1)));
    assert_eq!(
        pair.client.stats()[0].connects,
        1,
        "the connection stays up"
    );
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handler_at_a_time_still_answers_every_request() {
    // Echo waits before most replies, so each request needs a handler slot; with one slot the
    // server reads the next request only once the previous one is answered.
    let pair = Pair::start(Echo, |c| c.max_handlers_per_connection = 1);
    let mut calls = JoinSet::new();
    for term in 1..=50u64 {
        let call = pair.client.call(1, vote(term));
        calls.spawn(async move { (term, call.await) });
    }
    within("50 replies through one handler slot", async {
        while let Some(joined) = calls.join_next().await {
            let (term, reply) = joined.expect("call task");
            assert!(
                matches!(&reply, Ok(Response::Vote(v)) if v.term == term),
                "{term}: {reply:?}"
            );
        }
    })
    .await;
    pair.stop().await;
}
