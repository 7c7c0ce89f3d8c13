//! Malformed input after a valid handshake closes that connection, and only that connection:
//! the server keeps serving its real peers.

mod common;

use common::{Pair, Raw, raw_frame, vote};
use keel_net::wire::{self, VERSION};

const MAX_FRAME_BYTES: usize = 1 << 20;

/// A server with a 1 MiB frame limit, node 2 connected to it for real, and a raw connection
/// that completed its handshake as node 3.
async fn setup() -> (Pair, Raw) {
    let pair = Pair::with_raft(|c| c.max_frame_bytes = MAX_FRAME_BYTES);
    pair.assert_serves("start-up").await;
    let raw = Raw::handshake(pair.addr(), 3, 1).await;
    (pair, raw)
}

/// Sends `bytes` as node 3 and checks that the server closes the connection and still answers
/// node 2.
async fn closes_the_connection(what: &str, bytes: &[u8]) {
    let (pair, mut raw) = setup().await;
    raw.send(bytes).await;
    raw.expect_closed(what).await;
    pair.assert_serves(what).await;
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_over_the_maximum_closes_the_connection() {
    let len = (MAX_FRAME_BYTES as u32 + 1).to_le_bytes();
    closes_the_connection("a length one over the maximum", &len).await;
    closes_the_connection("a length of u32::MAX", &u32::MAX.to_le_bytes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_the_connection() {
    closes_the_connection("garbage", &[0x10, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]).await;
    closes_the_connection(
        "a length shorter than the header",
        &[3, 0, 0, 0, VERSION, 4, 0],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_then_end_of_stream_closes_the_connection() {
    let (pair, mut raw) = setup().await;
    let frame = wire::encode_request(1, &vote(1));
    raw.send(&frame[..frame.len() / 2]).await;
    raw.half_close().await;
    raw.expect_closed("half a frame and EOF").await;
    pair.assert_serves("a truncated frame").await;
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kind_closes_the_connection() {
    closes_the_connection("an unknown kind", &raw_frame(VERSION, 0x42, 1, b"")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_out_of_place_closes_the_connection() {
    let ack = wire::HelloAck {
        client_addr: String::new(),
    };
    closes_the_connection("a hello_ack from the dialer", &ack.encode()).await;
    closes_the_connection(
        "a second hello",
        &common::hello(common::CLUSTER, 3, 1).encode(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_closes_the_connection() {
    let mut frame = wire::encode_request(1, &vote(1)).to_vec();
    frame[4] = VERSION + 1;
    closes_the_connection("a frame of version 2", &frame).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_does_not_decode_closes_the_connection() {
    closes_the_connection("an unknown request kind", &raw_frame(VERSION, 4, 1, &[9])).await;
    let mut frame = wire::encode_request(1, &vote(1)).to_vec();
    frame.push(0); // a trailing byte the frame's length covers
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    closes_the_connection("a request with a trailing byte", &frame).await;
}

/// A term no node could reach by counting: adopting it would make the next election's
/// `term + 1` overflow, for good, since the term is persisted and spreads to the other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_past_2_pow_63_closes_the_connection_and_is_not_adopted() {
    let (pair, mut raw) = setup().await;
    let term_before = pair.raft.as_ref().expect("a raft").0.status().current_term;
    raw.send(&wire::encode_request(1, &vote(u64::MAX))).await;
    raw.expect_closed("a term of u64::MAX").await;
    pair.assert_serves("a term of u64::MAX").await;
    let term_after = pair.raft.as_ref().expect("a raft").0.status().current_term;
    assert_eq!(term_after, term_before, "the term was not adopted");
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_requests_on_a_raw_connection_are_answered() {
    // The control for the tests above: the same raw connection, well-behaved, gets replies.
    let (pair, mut raw) = setup().await;
    raw.send(&wire::encode_request(41, &vote(1))).await;
    let reply = raw.frame().await.expect("a reply");
    assert_eq!(
        (reply.kind, reply.request_id),
        (wire::FrameKind::Response, 41)
    );
    assert!(keel::codec::decode_response(reply.body).is_ok());
    pair.stop().await;
}
