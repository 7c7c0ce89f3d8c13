//! Retries: across endpoints, through 503s, with the same sequence number, until a deadline.

mod support;

use std::time::Duration;

use keel_client::{Client, ClientError, ClientOptions, Consistency};
use keel_kv::KvOptions;
use support::cluster::{TestCluster, closed_port};
use support::fake::{FakeNode, LossyProxy};

fn options(endpoints: Vec<String>) -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(5),
        ..ClientOptions::with_endpoints(endpoints)
    }
}

const NO_LEADER: (u16, &str) = (503, r#"{"error":"no leader","code":"no_leader"}"#);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_moves_on_to_the_next_endpoint_and_stays_there() {
    let cluster = TestCluster::start(1, KvOptions::default()).await;
    let closed = closed_port().await;
    let live = cluster.nodes[0].addr.clone();
    let client = Client::new(options(vec![closed.clone(), live.clone()])).unwrap();

    client
        .put("k", "v")
        .await
        .expect("the live endpoint answers");
    assert!(client.retry_count() >= 1, "the closed port was tried first");
    assert_eq!(client.current_endpoint(), live);

    let retries = client.retry_count();
    assert_eq!(
        client.get("k", Consistency::Linearizable).await.unwrap(),
        "v"
    );
    assert_eq!(
        client.retry_count(),
        retries,
        "the next call starts at the endpoint that answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_with_the_same_client_id_and_sequence_number() {
    let node = FakeNode::start(&[NO_LEADER, NO_LEADER]).await;
    let client = Client::new(options(vec![node.addr.clone()])).unwrap();

    let written = client
        .append("k", "x")
        .await
        .expect("the third attempt succeeds");
    assert_eq!(written.index, 1);
    let second = client.put("k", "y").await.unwrap();
    assert_eq!(second.index, 1);

    let requests = node.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    let id = client.client_id().to_string();
    let sessions: Vec<_> = requests
        .iter()
        .map(|r| (r.client_id.as_deref(), r.seq.as_deref()))
        .collect();
    assert_eq!(
        sessions,
        [
            (Some(id.as_str()), Some("1")),
            (Some(id.as_str()), Some("1")),
            (Some(id.as_str()), Some("1")),
            (Some(id.as_str()), Some("2")),
        ],
        "retries reuse the seq, a new write takes the next"
    );
    assert!(
        requests[..3]
            .iter()
            .all(|r| r.path == "/v1/kv/k?op=append" && r.body == b"x")
    );
    assert_eq!(requests[3].method, "PUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_was_lost_applies_once() {
    let cluster = TestCluster::start(1, KvOptions::default()).await;
    let proxy = LossyProxy::start(&cluster.nodes[0].addr, 1).await;
    let client = Client::new(options(vec![proxy.addr.clone()])).unwrap();

    // The node had no leader at first: wait through 503s until it has, losing no answer yet.
    let direct = Client::new(options(cluster.endpoints())).unwrap();
    direct.put("ready", "1").await.unwrap();

    let written = client.append("log", "x").await.expect("append");
    let requests = proxy.requests();
    assert_eq!(
        requests.len(),
        2,
        "one lost answer, one retry: {requests:#?}"
    );
    assert_eq!(requests[0].seq, requests[1].seq);
    let value = direct.get("log", Consistency::Linearizable).await.unwrap();
    assert_eq!(value, "x", "the retried append applied once");
    assert!(written.index > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_retried() {
    let node = FakeNode::start(&[(
        400,
        r#"{"error":"Keel-Client-Id must not be 0","code":"bad_header"}"#,
    )])
    .await;
    let client = Client::new(options(vec![node.addr.clone()])).unwrap();
    let e = client.put("k", "v").await.unwrap_err();
    assert_eq!(
        e,
        ClientError::BadRequest {
            code: "bad_header".into(),
            message: "Keel-Client-Id must not be 0".into()
        }
    );
    assert_eq!(node.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_node_answering_the_call_fails_at_the_deadline_naming_each_endpoint() {
    let closed = closed_port().await;
    let busy = FakeNode::start(&[NO_LEADER; 100]).await;
    let client = Client::new(ClientOptions {
        deadline: Duration::from_millis(500),
        ..ClientOptions::with_endpoints([closed.clone(), busy.addr.clone()])
    })
    .unwrap();

    let started = std::time::Instant::now();
    let e = client.delete("k").await.unwrap_err();
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(3), "gave up after {waited:?}");
    let ClientError::Unavailable { failures, .. } = &e else {
        panic!("expected Unavailable, got {e:?}");
    };
    assert_eq!(failures.len(), 2, "{e}");
    let message = e.to_string();
    assert!(message.starts_with("no node answered within "), "{message}");
    assert!(
        message.contains(&format!("{closed}: connection refused")),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}: 503 no_leader: no leader", busy.addr)),
        "{message}"
    );
    assert!(!message.contains('\n'));
    let requests = busy.requests();
    assert!(
        requests.len() >= 2 && requests.windows(2).all(|w| w[0].seq == w[1].seq),
        "every attempt carried the same seq: {requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_continue_through_a_leader_crash() {
    let mut cluster = TestCluster::start(3, KvOptions::default()).await;
    let leader = cluster.leader().await;
    let client = Client::new(ClientOptions::with_endpoints(cluster.endpoints())).unwrap();
    assert!(client.prefer_endpoint(&cluster.nodes[leader].addr));
    client.append("log", "a").await.unwrap();

    cluster.kill(leader).await;
    client
        .append("log", "b")
        .await
        .expect("a new leader takes the write");
    assert_ne!(client.current_endpoint(), cluster.nodes[leader].addr);
    assert!(client.retry_count() >= 1);
    assert_eq!(
        client.get("log", Consistency::Linearizable).await.unwrap(),
        "ab"
    );
}

/// An endpoint that answers with more than any KV answer can hold is not read to the end: the
/// client gives up on that answer and reports why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_longer_than_any_value_is_refused_not_buffered() {
    let huge = bytes::Bytes::from(vec![b'x'; keel_client::MAX_VALUE_BYTES + (1 << 20)]);
    let app = axum::Router::new().fallback(move || {
        let huge = huge.clone();
        async move { huge }
    });
    let addr = support::fake::serve(app).await;
    let client = Client::new(ClientOptions {
        deadline: Duration::from_millis(500),
        ..ClientOptions::with_endpoints(vec![addr])
    })
    .unwrap();
    let error = client
        .get("k", Consistency::Linearizable)
        .await
        .expect_err("a 65 MiB answer");
    assert!(
        error.to_string().contains("longer than 67174400 bytes"),
        "{error}"
    );
}
