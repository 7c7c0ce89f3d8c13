//! Peer authentication: with a peer secret, a connection is made only between two nodes that
//! both prove they hold it; every other combination is refused on both sides, with the cause,
//! and what an unproven side said (its client address) is not believed.

mod common;

use common::{CLUSTER, Pair, Raw, hello};
use keel::{Transport, TransportError};
use keel_net::wire::{self, Challenge, FrameKind, HelloAck, ProofFrame};
use keel_net::{NetConfig, PeerSecret, TcpTransport};
use tokio::io::AsyncWriteExt;

fn secret(text: &str) -> PeerSecret {
    PeerSecret::new(text).expect("a valid secret")
}

fn with_secret(text: &'static str) -> impl Fn(&mut NetConfig) {
    move |c| c.peer_secret = Some(secret(text))
}

/// A transport of node 2 that dials node 1 of `pair` with `peer_secret` (not in transition).
fn dialer(pair: &Pair, peer_secret: Option<PeerSecret>) -> std::sync::Arc<TcpTransport> {
    let mut config = pair.client.config().clone();
    config.peer_secret = peer_secret;
    config.peer_secret_transition = false;
    TcpTransport::new(config).expect("valid config")
}

async fn call_fails(transport: &TcpTransport, what: &str) {
    let error = common::within(what, transport.call(1, common::vote(1)))
        .await
        .expect_err(what);
    assert_eq!(error, TransportError::Unreachable(1), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_the_same_secret_connect_and_learn_each_others_client_address() {
    let pair = Pair::with_raft(with_secret("the same secret for all"));
    pair.assert_serves("an authenticated handshake").await;
    assert_eq!(
        pair.client.peer_client_addr(1),
        Some(common::client_addr(1))
    );
    assert_eq!(
        pair.server_transport.peer_client_addr(2),
        Some(common::client_addr(2))
    );
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_with_another_secret_or_none_is_refused_and_real_peers_are_served() {
    let pair = Pair::start(common::Echo, with_secret("the cluster's secret"));

    // A node with the wrong secret: the acceptor's proof does not verify, so the dialer closes
    // before sending its own, and its calls fail fast.
    let wrong = dialer(&pair, Some(secret("some other secret")));
    call_fails(&wrong, "a call with the wrong secret").await;
    assert_eq!(wrong.peer_client_addr(1), None, "an unproven acceptor");
    assert_eq!(
        pair.server_transport.peer_client_addr(2),
        None,
        "the acceptor believed a dialer that never proved the secret"
    );
    wrong.shutdown().await;

    // A node without a secret is told why.
    let mut raw = Raw::connect(pair.addr()).await;
    raw.send(&hello(CLUSTER, 2, 1).encode()).await;
    let frame = raw.frame().await.expect("a reject");
    assert_eq!(frame.kind, FrameKind::HelloReject);
    assert_eq!(
        wire::decode_text(&frame.body),
        "node 2 sent no proof of the peer secret this node requires: give every member the \
         same peer_secret_file"
    );
    raw.expect_closed("a hello without a nonce").await;
    let none = dialer(&pair, None);
    call_fails(&none, "a call without a secret").await;
    none.shutdown().await;

    // Something that answers the challenge with a made-up proof, claiming a client address.
    let mut raw = Raw::connect(pair.addr()).await;
    let mut claim = hello(CLUSTER, 2, 1);
    claim.client_addr = "attacker.example:80".into();
    claim.nonce = Some([7; 32]);
    raw.send(&claim.encode()).await;
    let frame = raw.frame().await.expect("a challenge");
    assert_eq!(frame.kind, FrameKind::Challenge);
    let challenge = Challenge::decode(frame.body).expect("a valid challenge");
    assert_ne!(challenge.nonce, [7; 32]);
    raw.send(&ProofFrame { proof: [0; 32] }.encode()).await;
    let frame = raw.frame().await.expect("a reject");
    assert_eq!(frame.kind, FrameKind::HelloReject);
    assert_eq!(
        wire::decode_text(&frame.body),
        "node 2 sent a wrong proof of the peer secret (a member with another secret hangs up \
         instead: this one is no member)"
    );
    raw.expect_closed("a wrong proof").await;
    assert_eq!(
        pair.server_transport.peer_client_addr(2),
        None,
        "the client address of an unproven dialer was believed"
    );

    // A request instead of the proof.
    let mut raw = Raw::connect(pair.addr()).await;
    raw.send(&claim.encode()).await;
    assert_eq!(
        raw.frame().await.expect("a challenge").kind,
        FrameKind::Challenge
    );
    raw.send(&wire::encode_request(1, &common::vote(1))).await;
    let frame = raw.frame().await.expect("a reject");
    assert_eq!(
        wire::decode_text(&frame.body),
        "node 2 gave no proof of the peer secret: unexpected request frame"
    );
    raw.expect_closed("a request instead of a proof").await;

    // A dialer of another cluster, or calling another node, or claiming the acceptor's own
    // id, learns nothing about this cluster: the first is refused without a reason, the others
    // only after they proved the secret (which they cannot).
    let mut raw = Raw::connect(pair.addr()).await;
    let mut foreign = hello(7, 2, 1);
    foreign.nonce = Some([7; 32]);
    raw.send(&foreign.encode()).await;
    let frame = raw.frame().await.expect("a reject");
    assert_eq!(frame.kind, FrameKind::HelloReject);
    assert_eq!(
        wire::decode_text(&frame.body),
        "refused (the node's log says why)"
    );
    raw.expect_closed("a hello of another cluster").await;
    for (from, to) in [(2, 5), (1, 1)] {
        let mut raw = Raw::connect(pair.addr()).await;
        let mut probe = hello(CLUSTER, from, to);
        probe.nonce = Some([7; 32]);
        raw.send(&probe.encode()).await;
        let frame = raw.frame().await.expect("a challenge");
        assert_eq!(frame.kind, FrameKind::Challenge, "{from} -> {to}");
        raw.send(&ProofFrame { proof: [0; 32] }.encode()).await;
        let frame = raw.frame().await.expect("a reject");
        let reason = wire::decode_text(&frame.body);
        assert!(reason.contains("wrong proof"), "{from} -> {to}: {reason}");
        raw.expect_closed("an unproven probe").await;
    }

    pair.assert_serves("eight unproven dialers").await;
    assert_eq!(
        pair.server_transport.peer_client_addr(2),
        Some(common::client_addr(2))
    );
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acceptor_without_a_secret_refuses_a_dialer_that_has_one() {
    let pair = Pair::start(common::Echo, |_| {});
    let mut raw = Raw::connect(pair.addr()).await;
    let mut claim = hello(CLUSTER, 2, 1);
    claim.nonce = Some([1; 32]);
    raw.send(&claim.encode()).await;
    let frame = raw.frame().await.expect("a reject");
    assert_eq!(frame.kind, FrameKind::HelloReject);
    assert_eq!(
        wire::decode_text(&frame.body),
        "node 2 has a peer secret and this node has none: give every member the same \
         peer_secret_file, or none"
    );
    raw.expect_closed("a hello with a nonce").await;
    let with = dialer(&pair, Some(secret("a secret node 1 lacks")));
    call_fails(&with, "a call with a secret to a node without").await;
    with.shutdown().await;
    pair.assert_serves("a dialer with a secret").await;
    pair.stop().await;
}

/// Whatever answers on a peer's address without proving the secret (a node without one, or an
/// impostor) is never taken for the peer: not by accepting at once, nor with a made-up proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_with_a_secret_does_not_believe_an_acceptor_that_proves_nothing() {
    for answer in ["ack", "made-up proof"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (_, mut peers) = common::listeners(&[2]);
        peers.insert(1, listener.local_addr().expect("bound"));
        let mut config = common::config(2, &peers);
        config.peer_secret = Some(secret("the cluster's secret"));
        let transport = TcpTransport::new(config).expect("valid config");
        let impostor = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut raw = Raw::from_stream(stream);
            let hello = raw.frame().await.expect("a hello");
            let hello = wire::Hello::decode(hello.body).expect("a valid hello");
            assert!(
                hello.nonce.is_some(),
                "a dialer with a secret sends a nonce"
            );
            let reply = match answer {
                "ack" => HelloAck {
                    client_addr: "impostor.example:80".into(),
                }
                .encode(),
                _ => Challenge {
                    nonce: [5; 32],
                    proof: [6; 32],
                }
                .encode(),
            };
            raw.stream.write_all(&reply).await.expect("write");
            // The dialer hangs up rather than sending a proof or a request.
            raw.expect_closed(answer).await;
        });
        call_fails(&transport, answer).await;
        assert_eq!(transport.peer_client_addr(1), None, "{answer}");
        common::within("the impostor to see the connection closed", impostor)
            .await
            .expect("the impostor's checks pass");
        transport.shutdown().await;
    }
}

/// Transition mode, for turning a secret on without an outage: a node with the secret connects
/// both ways with a node without one, and with a node that holds the secret (strict or in
/// transition) still proves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_transition_mode_a_node_connects_with_members_with_and_without_the_secret() {
    let transition = |c: &mut NetConfig| {
        c.peer_secret = Some(secret("the cluster's new secret"));
        c.peer_secret_transition = true;
    };

    // A transition acceptor takes a dialer without a secret, and one with it.
    let pair = Pair::start(common::Echo, transition);
    let plain = dialer(&pair, None);
    common::within("a call without a secret", plain.call(1, common::vote(1)))
        .await
        .expect("a transition node accepts a dialer without a secret");
    plain.shutdown().await;
    let strict = dialer(&pair, Some(secret("the cluster's new secret")));
    common::within("a call with the secret", strict.call(1, common::vote(1)))
        .await
        .expect("a transition node accepts a dialer that proves the secret");
    strict.shutdown().await;
    let wrong = dialer(&pair, Some(secret("some other secret")));
    call_fails(&wrong, "a call with another secret").await;
    wrong.shutdown().await;
    // A proof, when offered, must still be right: a made-up one is refused.
    let mut raw = Raw::connect(pair.addr()).await;
    let mut claim = hello(CLUSTER, 2, 1);
    claim.nonce = Some([7; 32]);
    raw.send(&claim.encode()).await;
    assert_eq!(
        raw.frame().await.expect("a challenge").kind,
        FrameKind::Challenge
    );
    raw.send(&ProofFrame { proof: [0; 32] }.encode()).await;
    assert_eq!(
        raw.frame().await.expect("a reject").kind,
        FrameKind::HelloReject
    );
    pair.stop().await;

    // A transition dialer reaches an acceptor without a secret: refused with its proof, it
    // dials again without one.
    let pair = Pair::start(common::Echo, |_| {});
    let mut config = pair.client.config().clone();
    transition(&mut config);
    let moving = TcpTransport::new(config).expect("valid config");
    let reply = common::within("a call that gets through after one refusal", async {
        loop {
            match moving.call(1, common::vote(1)).await {
                Ok(reply) => return reply,
                Err(TransportError::Unreachable(_)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(matches!(reply, keel::Response::Vote(_)));
    moving.shutdown().await;
    pair.stop().await;

    // Without a secret, transition mode is a configuration error.
    let pair = Pair::start(common::Echo, |_| {});
    let mut config = pair.client.config().clone();
    config.peer_secret_transition = true;
    assert!(TcpTransport::new(config).is_err());
    pair.stop().await;
}
