//! The acceptor's checks on a dialer's hello: each wrong claim is refused with its reason and
//! the connection closed, and real peers are served all along.

mod common;

use std::collections::BTreeSet;

use common::{CLUSTER, Pair, Raw, hello};
use keel::{Membership, Transport};
use keel_net::wire::{self, FrameKind};

/// Sends `hello` on a raw connection and returns the reason of the reject it must get, after
/// checking that the server then closes the connection.
async fn refusal(pair: &Pair, hello: wire::Hello) -> String {
    let mut raw = Raw::connect(pair.addr()).await;
    raw.send(&hello.encode()).await;
    let frame = raw.frame().await.expect("an answer to the hello");
    assert_eq!(
        frame.kind,
        FrameKind::HelloReject,
        "{hello:?} was not refused: {frame:?}"
    );
    raw.expect_closed("a reject").await;
    wire::decode_text(&frame.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_claims_are_refused_with_their_reason_and_real_peers_are_still_served() {
    let pair = Pair::with_raft(|_| {});
    pair.assert_serves("start-up").await;

    let reason = refusal(&pair, hello(7, 2, 1)).await;
    assert_eq!(
        reason,
        format!("claims cluster 7, this node is in cluster {CLUSTER}")
    );

    // A node this one does not know yet is accepted (a node joining the cluster is dialed by
    // the leader before it knows anyone) ...
    let mut raw = Raw::handshake(pair.addr(), 9, 1).await;
    raw.send(&wire::encode_request(1, &common::vote(1))).await;
    let frame = raw.frame().await.expect("an answer");
    assert_eq!(frame.kind, FrameKind::Response);
    // ... but not one removed from the cluster.
    pair.server_transport
        .members_changed(&Membership::with_voters([1, 2]), &BTreeSet::from([2]));
    let reason = refusal(&pair, hello(CLUSTER, 3, 1)).await;
    assert_eq!(
        reason,
        "claims node id 3, which was removed from the cluster"
    );
    // A node reached only as the leader, never a member of a configuration this node held (it
    // is joining and has not received one naming the leader), is not taken for removed when
    // it is no longer known as the leader.
    let members = Membership::with_voters([1, 2]);
    pair.server_transport
        .members_changed(&members, &BTreeSet::from([2, 9]));
    pair.server_transport
        .members_changed(&members, &BTreeSet::from([2]));
    let mut raw = Raw::handshake(pair.addr(), 9, 1).await;
    raw.send(&wire::encode_request(2, &common::vote(1))).await;
    let frame = raw.frame().await.expect("an answer");
    assert_eq!(frame.kind, FrameKind::Response, "{frame:?}");

    let reason = refusal(&pair, hello(CLUSTER, 1, 1)).await;
    assert_eq!(reason, "claims node id 1, which is this node's own id");

    let reason = refusal(&pair, hello(CLUSTER, 2, 5)).await;
    assert_eq!(reason, "calls node 5, but this is node 1");

    pair.assert_serves("refused handshakes").await;
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_a_valid_hello_first_is_refused() {
    let pair = Pair::start(common::Echo, |_| {});

    // Something that is not a keel node at all: an HTTP request.
    let mut raw = Raw::connect(pair.addr()).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let frame = raw.frame().await.expect("a reject");
    assert_eq!(frame.kind, FrameKind::HelloReject);
    let reason = wire::decode_text(&frame.body);
    assert!(reason.contains("exceeds the maximum"), "{reason}");
    raw.expect_closed("garbage instead of a hello").await;

    // A keel frame, but not a hello.
    let mut raw = Raw::connect(pair.addr()).await;
    raw.send(&wire::encode_request(1, &common::vote(1))).await;
    let frame = raw.frame().await.expect("a reject");
    assert_eq!(
        wire::decode_text(&frame.body),
        "bad hello: unexpected request frame"
    );
    raw.expect_closed("a request before the hello").await;

    // A hello without the magic.
    let mut raw = Raw::connect(pair.addr()).await;
    raw.send(&common::raw_frame(
        wire::VERSION,
        1,
        0,
        b"KEEX0123456701234567012345670\0",
    ))
    .await;
    let frame = raw.frame().await.expect("a reject");
    let reason = wire::decode_text(&frame.body);
    assert!(reason.contains("bad magic"), "{reason}");
    raw.expect_closed("a hello without magic").await;

    // A dialer of a future version learns why.
    let mut raw = Raw::connect(pair.addr()).await;
    let mut future_hello = hello(CLUSTER, 2, 1).encode().to_vec();
    future_hello[4] = wire::VERSION + 1;
    raw.send(&future_hello).await;
    let frame = raw.frame().await.expect("a reject");
    let reason = wire::decode_text(&frame.body);
    assert!(reason.contains("unsupported frame version 2"), "{reason}");
    raw.expect_closed("a hello of another version").await;

    pair.assert_serves("refused garbage").await;
    pair.stop().await;
}

/// Before a dialer has said who it is, the acceptor reads no frame larger than a hello, even
/// though frames of up to `max_frame_bytes` (64 MiB by default) are fine afterwards: else
/// anyone who can reach the port could make each connection buffer 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_before_the_hello_is_refused_without_reading_it() {
    let pair = Pair::start(common::Echo, |_| {});
    let mut raw = Raw::connect(pair.addr()).await;
    let mut header = common::raw_frame(wire::VERSION, 1, 0, b"");
    let len = 60u32 << 20;
    header[..4].copy_from_slice(&len.to_le_bytes());
    raw.send(&header).await;
    let frame = raw.frame().await.expect("a reject");
    assert_eq!(frame.kind, FrameKind::HelloReject);
    let reason = wire::decode_text(&frame.body);
    assert!(reason.contains("exceeds the maximum"), "{reason}");
    raw.expect_closed("a 60 MiB hello").await;
    pair.assert_serves("a 60 MiB hello").await;
    pair.stop().await;
}

/// A node forwards clients to the address a peer's hello gives, so anything but `HOST:PORT`
/// there (a path, a query, a user, a scheme, header-breaking bytes) is refused before it is
/// recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_whose_client_address_is_not_host_and_port_is_refused() {
    let pair = Pair::start(common::Echo, |_| {});
    for addr in [
        "evil.example/steal?x=:80",
        "user@evil.example:80",
        "http://evil.example:80",
        "evil.example:80\r\nX-Injected: 1",
        "evil.example",
    ] {
        let mut bad = hello(CLUSTER, 2, 1);
        bad.client_addr = addr.to_string();
        let reason = refusal(&pair, bad).await;
        assert!(
            reason.contains("client address is not HOST:PORT"),
            "{addr:?}: {reason}"
        );
    }
    assert_eq!(pair.server_transport.peer_client_addr(2), None);
    pair.assert_serves("bad client addresses").await;
    pair.stop().await;
}

/// Silent connections from one address (here 127.0.0.2) cannot take every connection slot
/// while they wait out the handshake timeout: past `max_handshakes_per_addr` from there, more are
/// closed at once, and a member dialing from another address is served without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_one_address_cannot_take_every_slot() {
    let pair = Pair::start(common::Echo, |c| {
        c.max_incoming_connections = 8;
        c.max_handshakes_per_addr = 2;
        c.handshake_timeout = std::time::Duration::from_secs(30);
    });
    let mut silent = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        silent.push(socket.connect(pair.addr()).await.unwrap());
    }
    // Long before the silent ones time out, node 2 (from 127.0.0.1) gets its answer.
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        pair.client.call(1, common::vote(1)),
    )
    .await
    .expect("a member waited behind silent connections");
    assert!(reply.is_ok(), "{reply:?}");
    drop(silent);
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_dialer_is_closed_after_the_handshake_timeout() {
    let pair = Pair::start(common::Echo, |c| {
        c.handshake_timeout = std::time::Duration::from_millis(200)
    });
    let mut raw = Raw::connect(pair.addr()).await;
    raw.expect_closed("saying nothing").await;
    pair.assert_serves("a silent dialer").await;
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dialer_reports_a_refusal_as_unreachable() {
    // Node 2 dials node 1 believing the cluster is 8: every call fails fast, none hangs.
    let pair = Pair::start(common::Echo, |_| {});
    let mut config = pair.client.config().clone();
    config.cluster_id = 8;
    let stranger = keel_net::TcpTransport::new(config).expect("valid config");
    let error = common::within(
        "a refused call",
        keel::Transport::call(&*stranger, 1, common::vote(1)),
    )
    .await
    .expect_err("a node of another cluster is refused");
    assert_eq!(error, keel::TransportError::Unreachable(1));
    assert_eq!(stranger.peer_client_addr(1), None);
    stranger.shutdown().await;
    pair.stop().await;
}
