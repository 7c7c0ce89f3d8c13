//! The HTTP API against in-process clusters (in-memory storage, in-process Raft network, real
//! HTTP on loopback).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel::{Config, LocalNetwork, MemStorage, NodeId, Raft, Role};
use keel_kv::{KvOptions, KvService};
use keel_server::{Api, Directory, Metrics, StatusView, router};
use parking_lot::Mutex;
use reqwest::StatusCode;

#[derive(Default)]
struct StaticDirectory {
    addrs: Mutex<BTreeMap<NodeId, String>>,
}

impl Directory for StaticDirectory {
    fn client_addr(&self, id: NodeId) -> Option<String> {
        self.addrs.lock().get(&id).cloned()
    }
    fn peer_addr(&self, _id: NodeId) -> Option<String> {
        None
    }
}

struct TestCluster {
    nodes: Vec<(Raft, String)>,
    directory: Arc<StaticDirectory>,
}

impl TestCluster {
    async fn start(n: u64, options: KvOptions) -> TestCluster {
        TestCluster::start_with_budget(n, options, None).await
    }

    /// Nodes holding at most `body_budget` bytes of request bodies at once (else the default).
    async fn start_with_budget(
        n: u64,
        options: KvOptions,
        body_budget: Option<usize>,
    ) -> TestCluster {
        let forwards = keel_server::http::MAX_FORWARDS_IN_FLIGHT;
        TestCluster::start_with_limits(n, options, body_budget, forwards).await
    }

    /// As [`TestCluster::start_with_budget`], each node forwarding at most `max_forwards`
    /// requests at once.
    async fn start_with_limits(
        n: u64,
        options: KvOptions,
        body_budget: Option<usize>,
        max_forwards: usize,
    ) -> TestCluster {
        let network = LocalNetwork::new();
        let directory = Arc::new(StaticDirectory::default());
        let members: Vec<NodeId> = (1..=n).collect();
        let mut nodes = Vec::new();
        for &id in &members {
            let config = Config {
                election_timeout_min: Duration::from_millis(150),
                election_timeout_max: Duration::from_millis(300),
                heartbeat_interval: Duration::from_millis(30),
                // A learner that is not up to date at all may not be promoted.
                max_promotion_lag: 0,
                ..Config::default()
            };
            let (raft, stream) = Raft::new(
                id,
                members.clone(),
                config,
                Arc::new(MemStorage::new()),
                network.transport(),
            )
            .unwrap();
            network.register(raft.clone());
            let (kv, _) = KvService::start(raft.clone(), stream, options.clone());
            let metrics = Metrics::new();
            metrics.attach(&kv);
            let budget = body_budget
                .unwrap_or_else(|| keel_server::default_body_budget(options.max_value_bytes));
            let options = keel_server::ApiOptions {
                body_budget: budget,
                max_forwards,
                ..keel_server::ApiOptions::new(&kv)
            };
            let api = Api::with_options(kv, directory.clone(), metrics, options);
            let app = router(api);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            tokio::spawn(async move { axum::serve(listener, app).await });
            directory.addrs.lock().insert(id, addr.clone());
            nodes.push((raft, addr));
        }
        let cluster = TestCluster { nodes, directory };
        cluster.leader().await;
        cluster
    }

    async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self
                .nodes
                .iter()
                .position(|(r, _)| r.status().role == Role::Leader)
            {
                return i;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.nodes[i].1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_requests_follow_the_documented_api() {
    let c = TestCluster::start(3, KvOptions::default()).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let http = http_client();
    let at = |path: &str| c.url(follower, path);
    let code = |body: serde_json::Value| body["code"].as_str().unwrap_or_default().to_string();

    // Asked of a follower, answered by the leader.
    let r = http.get(at("/v1/members")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let members: serde_json::Value = r.json().await.unwrap();
    assert_eq!(members["joint"], false);
    let ids: Vec<u64> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["role"], "voter");
            m["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);

    // Bad requests are refused with what is wrong, and change nothing.
    let post = |body: &'static str| http.post(at("/v1/members")).body(body).send();
    let cases = [
        ("{", "bad_body"),
        (
            r#"{"id": 4, "peer_addr": "nope", "client_addr": "127.0.0.1:1"}"#,
            "bad_member",
        ),
        (
            r#"{"id": 4, "peer_addr": "0.0.0.0:7000", "client_addr": "a:1"}"#,
            "bad_member",
        ),
        (
            r#"{"id": 4, "peer_addr": "127.0.0.1:7000", "client_addr": "a"}"#,
            "bad_member",
        ),
        (
            r#"{"id": 0, "peer_addr": "127.0.0.1:7000", "client_addr": "a:1"}"#,
            "bad_member",
        ),
        (
            r#"{"id": 2, "peer_addr": "127.0.0.1:7000", "client_addr": "a:1"}"#,
            "already_member",
        ),
    ];
    for (body, expected) in cases {
        let r = post(body).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(code(r.json().await.unwrap()), expected, "{body}");
    }
    for (request, expected) in [
        (http.delete(at("/v1/members/9")), "unknown_member"),
        (http.delete(at("/v1/members/x")), "bad_id"),
        (http.post(at("/v1/members/9/promote")), "unknown_member"),
        (
            http.post(at("/v1/leader")).body(r#"{"to": 9}"#),
            "invalid_target",
        ),
        (
            http.post(at("/v1/leader")).body(r#"{"to": "two"}"#),
            "bad_body",
        ),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{expected}");
        assert_eq!(code(r.json().await.unwrap()), expected);
    }

    // Node 4 (which never runs) joins as a learner, and cannot be promoted: it has nothing.
    let r = post(r#"{"id": 4, "peer_addr": "127.0.0.1:7000", "client_addr": "127.0.0.1:1"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let members: serde_json::Value = r.json().await.unwrap();
    let four = &members["members"][3];
    assert_eq!(four["id"], 4);
    assert_eq!(four["role"], "learner");
    assert_eq!(four["peer_addr"], "127.0.0.1:7000");
    assert_eq!(four["client_addr"], "127.0.0.1:1");
    // Once a change has committed, the configuration carries every member's addresses, so
    // every node's status shows them (a follower's too, for members it never talked to).
    for node in 0..3 {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status: serde_json::Value = get_json(&http, &c.url(node, "/v1/status")).await;
            let members = status["members"].as_array().unwrap().clone();
            if members.len() == 4 && members.iter().all(|m| m["client_addr"].is_string()) {
                break;
            }
            assert!(std::time::Instant::now() < until, "node {node}: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let r = http.post(at("/v1/members/4/promote")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code(body.clone()), "not_caught_up");
    assert!(
        body["error"].as_str().unwrap().contains("entries behind"),
        "{body}"
    );
    let r = http
        .post(at("/v1/leader"))
        .body(r#"{"to": 4}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "a learner cannot lead");
    let r = http.delete(at("/v1/members/4")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let status: StatusView = get_json(&http, &c.url(leader, "/v1/status")).await;
    assert_eq!(status.members.len(), 3);
    assert!(status.membership_committed && !status.joint);

    // Leadership moves on request.
    let r = http.post(at("/v1/leader")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let moved: serde_json::Value = r.json().await.unwrap();
    let new = moved["leader"].as_u64().expect("the new leader is known");
    assert_ne!(new, leader as u64 + 1);
}

/// Writes and reads sent while leadership moves (to any node, without retrying) all succeed:
/// a request that meets a leader handing over, or a node that does not know the new leader
/// yet, waits for it instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_a_leadership_transfer_wait_for_the_new_leader() {
    let c = Arc::new(TestCluster::start(3, KvOptions::default()).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let http = http_client();
                let mut failures = Vec::new();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let node = (w + n as usize) % 3;
                    let key = format!("/v1/kv/k{w}");
                    let r = if n.is_multiple_of(2) {
                        http.put(c.url(node, &key)).body(n.to_string()).send().await
                    } else {
                        http.get(c.url(node, &key)).send().await
                    };
                    let r = r.expect("the node answers");
                    let status = r.status();
                    if status != StatusCode::OK && status != StatusCode::NOT_FOUND {
                        failures.push(format!("{status}: {}", r.text().await.unwrap()));
                    }
                }
                (n, failures)
            })
        })
        .collect();
    let http = http_client();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let leader = c.leader().await;
        let r = http
            .post(c.url(leader, "/v1/leader"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut requests = 0;
    for worker in workers {
        let (n, failures) = worker.await.unwrap();
        requests += n;
        assert!(
            failures.is_empty(),
            "{} failed, e.g. {}",
            failures.len(),
            failures[0]
        );
    }
    assert!(requests > 100, "only {requests} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_follow_the_documented_api() {
    let c = TestCluster::start(1, KvOptions::default()).await;
    let http = http_client();
    let url = |p: &str| c.url(0, p);

    let r = http.get(url("/v1/kv/greeting")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found");

    let r = http
        .put(url("/v1/kv/greeting"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let put: serde_json::Value = r.json().await.unwrap();
    assert!(put["index"].as_u64().unwrap() > 0);

    let r = http
        .post(url("/v1/kv/greeting?op=append"))
        .body(", world")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(url("/v1/kv/greeting")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello, world");
    let r = http
        .get(url("/v1/kv/greeting?consistency=stale"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello, world");

    let cas = |expected: serde_json::Value, value: &str| {
        http.post(url("/v1/kv/greeting?op=cas"))
            .json(&serde_json::json!({"expected": expected, "value": value}))
            .send()
    };
    let r: serde_json::Value = cas(serde_json::json!("nope"), "x")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["succeeded"], false);
    let r: serde_json::Value = cas(serde_json::json!("hello, world"), "bye")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["succeeded"], true);
    let r: serde_json::Value = cas(serde_json::Value::Null, "again")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["succeeded"], false,
        "cas with null expects the key absent"
    );

    let r = http.delete(url("/v1/kv/greeting")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(url("/v1/kv/greeting")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Keys may contain slashes.
    let r = http
        .put(url("/v1/kv/a/b/c"))
        .body("deep")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(url("/v1/kv/a/b/c")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "deep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_with_the_same_session_applies_once() {
    let c = TestCluster::start(1, KvOptions::default()).await;
    let http = http_client();
    let append = || {
        http.post(c.url(0, "/v1/kv/log?op=append"))
            .header("Keel-Client-Id", "42")
            .header("Keel-Request-Seq", "1")
            .body("x")
            .send()
    };
    let first: serde_json::Value = append().await.unwrap().json().await.unwrap();
    let again: serde_json::Value = append().await.unwrap().json().await.unwrap();
    assert_eq!(first, again, "a retry answers with the original result");
    let r = http.get(c.url(0, "/v1/kv/log")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let options = KvOptions {
        max_value_bytes: 1024,
        max_key_bytes: 64,
        ..KvOptions::default()
    };
    let c = TestCluster::start(1, options).await;
    let http = http_client();
    let code = |r: reqwest::Response| async move {
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        (status, body["code"].as_str().unwrap().to_string())
    };

    let r = http
        .put(c.url(0, "/v1/kv/big"))
        .body(vec![b'v'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let refused: serde_json::Value = r.json().await.unwrap();
    assert_eq!(refused["code"], "value_too_large");
    let message = refused["error"].as_str().unwrap();
    assert_eq!(
        message,
        "the request body of 5000 bytes is longer than 2048; values may have at most 1024 bytes"
    );
    // A body of unknown length (chunked) is read only until it passes the bound.
    let chunks = futures_util::stream::iter(
        [1500, 1500, 1500].map(|n| Ok::<_, std::io::Error>(vec![b'v'; n])),
    );
    let r = http
        .put(c.url(0, "/v1/kv/big"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let refused: serde_json::Value = r.json().await.unwrap();
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.starts_with("the request body is longer than 2048 bytes (read 3000 before"),
        "{message}"
    );
    // A body within the read bound but over the value limit is measured whole.
    let r = http
        .put(c.url(0, "/v1/kv/big"))
        .body(vec![b'v'; 2000])
        .send()
        .await
        .unwrap();
    let refused: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        refused["error"],
        "value of 2000 bytes exceeds the maximum of 1024 bytes"
    );
    // A compare-and-set of values within the limit is read whole, however JSON escapes them
    // (a control character takes 6 bytes: \u0001).
    let escaped = "\u{1}".repeat(1000);
    let r = http
        .post(c.url(0, "/v1/kv/esc?op=cas"))
        .json(&serde_json::json!({ "expected": null, "value": escaped }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let r = http
        .post(c.url(0, "/v1/kv/esc?op=cas"))
        .json(&serde_json::json!({ "expected": escaped, "value": escaped }))
        .send()
        .await
        .unwrap();
    let swapped: serde_json::Value = r.json().await.unwrap();
    assert_eq!(swapped["succeeded"], true, "{swapped}");
    let long_key = "k".repeat(65);
    let r = http
        .get(c.url(0, &format!("/v1/kv/{long_key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "key_too_large".into())
    );
    let r = http
        .post(c.url(0, "/v1/kv/x?op=frobnicate"))
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(
        body.contains("\"code\":\"bad_op\"")
            && body.contains("not ?op=frobnicate")
            && !body.contains("Some("),
        "a message for people, not Rust debug text: {body}"
    );
    let r = http
        .post(c.url(0, "/v1/kv/x?op=cas"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (StatusCode::BAD_REQUEST, "bad_body".into()));
    let r = http
        .get(c.url(0, "/v1/kv/x?consistency=eventual"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::BAD_REQUEST, "bad_consistency".into())
    );
    let r = http
        .put(c.url(0, "/v1/kv/x"))
        .header("Keel-Client-Id", "banana")
        .header("Keel-Request-Seq", "1")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::BAD_REQUEST, "bad_header".into())
    );
    let r = http
        .put(c.url(0, "/v1/kv/x"))
        .header("Keel-Request-Seq", "1")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::BAD_REQUEST, "bad_header".into())
    );
    let r = http.get(c.url(0, "/v2/nothing")).send().await.unwrap();
    assert_eq!(code(r).await, (StatusCode::NOT_FOUND, "no_route".into()));
    let r = http.patch(c.url(0, "/v1/kv/x")).send().await.unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
    let r = http.delete(c.url(0, "/v1/status")).send().await.unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );

    // And the node still serves.
    let r = http
        .put(c.url(0, "/v1/kv/x"))
        .body("fine")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_would_make_the_value_too_large_gets_413_and_changes_nothing() {
    let options = KvOptions {
        max_value_bytes: 1024,
        ..KvOptions::default()
    };
    let c = TestCluster::start(1, options).await;
    let http = http_client();
    let append = |seq: u64, suffix: u8| {
        http.post(c.url(0, "/v1/kv/log?op=append"))
            .header("Keel-Client-Id", "7")
            .header("Keel-Request-Seq", seq.to_string())
            .body(vec![suffix; 600])
            .send()
    };

    let r = append(1, b'a').await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Each suffix is within the limit; the value they would make together is not.
    let r = append(2, b'b').await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let refused: serde_json::Value = r.json().await.unwrap();
    assert_eq!(refused["code"], "value_too_large", "{refused}");
    assert_eq!(
        refused["error"], "value of 1200 bytes exceeds the maximum of 1024 bytes",
        "{refused}"
    );
    let r = append(2, b'b').await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let again: serde_json::Value = r.json().await.unwrap();
    assert_eq!(again, refused, "a retry gets the same refusal");

    let r = http.get(c.url(0, "/v1/kv/log")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.bytes().await.unwrap(),
        vec![b'a'; 600],
        "the value is the first append only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_to_the_leader_and_status_shows_the_cluster() {
    let c = TestCluster::start(3, KvOptions::default()).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let http = http_client();

    let r = http
        .put(c.url(follower, "/v1/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let r = http.get(c.url(follower, "/v1/kv/k")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "v");

    let status: StatusView = get_json(&http, &c.url(leader, "/v1/status")).await;
    assert_eq!(status.role, "leader");
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|m| m.match_index.is_some()));
    assert_eq!(
        status.leader_addr.as_deref(),
        Some(c.nodes[leader].1.as_str())
    );

    let metrics = get_text(&http, &c.url(leader, "/metrics")).await;
    for name in [
        "keel_proposals_total",
        "keel_commits_total",
        "keel_commit_latency_seconds_bucket",
        "keel_apply_lag",
        "keel_leader_changes_total",
        "keel_term",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
}

/// `GET /v1/kv` lists keys by prefix in byte order, a page at a time, through any node, as
/// documented; a bad limit is a clear 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_by_prefix_a_page_at_a_time() {
    let c = TestCluster::start(3, KvOptions::default()).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let http = http_client();
    for (key, value) in [
        ("app/b", "22"),
        ("app/a", "1"),
        ("app/c", "333"),
        ("apq", "x"),
        ("b", ""),
    ] {
        let r = http
            .put(c.url(leader, &format!("/v1/kv/{key}")))
            .body(value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let list = |node: usize, query: &str| {
        let url = c.url(node, &format!("/v1/kv{query}"));
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<keel_api::KeyList>().await.unwrap()
        }
    };
    let names =
        |list: &keel_api::KeyList| list.keys.iter().map(|k| k.key.clone()).collect::<Vec<_>>();

    let all = list(follower, "").await;
    assert_eq!(names(&all), ["app/a", "app/b", "app/c", "apq", "b"]);
    assert_eq!(all.keys[1].size, 2);
    assert!(!all.more);
    let page = list(follower, "?prefix=app%2F&limit=2").await;
    assert_eq!(
        (names(&page), page.more),
        (vec!["app/a".to_string(), "app/b".into()], true)
    );
    let rest = list(leader, "?prefix=app/&limit=2&after=app/b").await;
    assert_eq!(
        (names(&rest), rest.more),
        (vec!["app/c".to_string()], false)
    );
    let stale = list(follower, "?prefix=ap&consistency=stale").await;
    assert_eq!(names(&stale), ["app/a", "app/b", "app/c", "apq"]);
    assert!(list(leader, "?prefix=zzz").await.keys.is_empty());

    for query in [
        "?limit=0",
        "?limit=1001",
        "?limit=ten",
        "?consistency=fresh",
    ] {
        let r = http
            .get(c.url(leader, &format!("/v1/kv{query}")))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        let code = body["code"].as_str().unwrap_or_default().to_string();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            code == "bad_limit" || code == "bad_consistency",
            "{query}: {code}"
        );
    }
}

/// A follower relays what the leader answers, but only what a leader could answer: a value
/// longer than its own limit is relayed (another member, leading then, may have admitted it),
/// a body longer than any value is refused, not buffered, and a redirect is passed on, not
/// followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_does_not_buffer_or_follow_what_a_false_leader_answers() {
    let options = KvOptions {
        max_value_bytes: 1024,
        ..KvOptions::default()
    };
    let c = TestCluster::start(3, options).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;

    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap().to_string();
    let location = format!("http://{fake_addr}/v1/kv/big");
    let app = axum::Router::new()
        .route(
            "/v1/kv/big",
            axum::routing::any(|| async { vec![b'x'; keel_kv::LARGEST_VALUE_LIMIT + (1 << 20)] }),
        )
        .route(
            "/v1/kv/mib",
            axum::routing::any(|| async { vec![b'y'; 1 << 20] }),
        )
        .route(
            "/v1/kv/moved",
            axum::routing::any(move || {
                let location = location.clone();
                async move {
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(reqwest::header::LOCATION, location)],
                    )
                }
            }),
        );
    tokio::spawn(async move { axum::serve(fake, app).await });
    let leader_id = c.nodes[leader].0.id();
    c.directory.addrs.lock().insert(leader_id, fake_addr);

    let http = http_client();
    let r = http
        .get(c.url(follower, "/v1/kv/mib"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), 1 << 20, "relayed whole");

    let r = http
        .put(c.url(follower, "/v1/kv/big"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("forward_failed") && body.contains("longer than"),
        "{body}"
    );

    let r = http
        .put(c.url(follower, "/v1/kv/moved"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TEMPORARY_REDIRECT,
        "passed on, not followed"
    );
}

/// A command this build cannot read came from a newer build, whose replicas apply it: skipping
/// it would leave this node's data silently different. A node that applies one stops instead
/// (here the leader, which committed it; a follower that never learns of the commit before the
/// others stop keeps running, without a quorum), and says so in `/v1/status` and `/metrics`
/// instead of reporting its last role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_from_a_newer_build_stops_the_service_instead_of_being_skipped() {
    let c = TestCluster::start(3, KvOptions::default()).await;
    let leader = c.leader().await;
    let http = http_client();
    let r = http
        .put(c.url(leader, "/v1/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Version byte 0x6a ('j'): no build so far wrote it.
    c.nodes[leader]
        .0
        .propose(bytes::Bytes::from_static(b"junk"))
        .expect("proposed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.nodes[leader].0.is_running() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leader still runs 10 s after applying a command of an unknown version"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = http.get(c.url(leader, "/v1/kv/k")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = http
        .get(c.url(leader, "/v1/kv/k?consistency=stale"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "stale reads too"
    );
    // The stopped node says so, rather than its last role.
    let status: serde_json::Value = get_json(&http, &c.url(leader, "/v1/status")).await;
    assert_eq!(status["role"], "stopped", "{status}");
    let reason = status["stopped"].as_str().unwrap_or_default();
    assert!(reason.contains("a command of a newer keel"), "{status}");
    let metrics = get_text(&http, &c.url(leader, "/metrics")).await;
    assert!(metrics.contains("keel_serving 0"), "{metrics}");
    assert!(metrics.contains("keel_is_leader 0"), "{metrics}");
}

/// Request bodies share one bounded budget: while a slow upload holds most of it (taken when
/// its head announced its length), a body that does not fit gets 503 at once, and a small one
/// still fits; once the upload is done its bytes are free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_share_a_bounded_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let options = KvOptions {
        max_value_bytes: 8192,
        // Also the grace period before a body must arrive at the minimum rate: long enough
        // for this test's slow upload.
        request_timeout: Duration::from_millis(5000),
        ..KvOptions::default()
    };
    let c = TestCluster::start_with_budget(1, options, Some(9000)).await;
    let addr = c.nodes[0].1.clone();

    // A slow upload of 8,000 bytes: 7,000 at once, then a byte every 100 ms until told to
    // finish.
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let slow = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = "PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 8000\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b's'; 7000]).await.unwrap();
        let mut sent = 7000;
        tokio::pin!(finished);
        loop {
            tokio::select! {
                _ = &mut finished => break,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if sent < 7900 {
                        stream.write_all(b"s").await.unwrap();
                        sent += 1;
                    }
                }
            }
        }
        stream.write_all(&vec![b's'; 8000 - sent]).await.unwrap();
        let mut answer = vec![0u8; 1024];
        let n = stream.read(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    });

    let http = http_client();
    let put = |body: Vec<u8>| {
        let request = http.put(c.url(0, "/v1/kv/other")).body(body);
        async move { request.send().await.unwrap() }
    };
    // Once the upload's bytes are held, a 3,000-byte body finds no room.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = put(vec![b'o'; 3000]).await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.headers().contains_key("retry-after"));
            let refused: serde_json::Value = r.json().await.unwrap();
            assert_eq!(refused["code"], "overloaded");
            assert!(
                refused["error"]
                    .as_str()
                    .unwrap()
                    .contains("hold all 9000 bytes"),
                "{refused}"
            );
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow upload never took the budget"
        );
    }
    // A small body still fits beside it.
    assert_eq!(put(vec![b'o'; 100]).await.status(), StatusCode::OK);

    finish.send(()).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the slow upload is answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Its bytes are free again.
    assert_eq!(put(vec![b'o'; 3000]).await.status(), StatusCode::OK);
}

/// A body that drips in (a byte every 100 ms of 8,000 declared) is cut once the grace period
/// (the request timeout) is over and it has not kept the minimum rate, although no single
/// pause reached the timeout; the budget its declared length took is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_drips_in_is_cut_after_the_grace_period_and_frees_the_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let options = KvOptions {
        max_value_bytes: 8192,
        request_timeout: Duration::from_millis(1000),
        ..KvOptions::default()
    };
    let c = TestCluster::start_with_budget(1, options, Some(9000)).await;
    let addr = c.nodes[0].1.clone();
    let started = tokio::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "PUT /v1/kv/drip HTTP/1.1\r\nHost: x\r\nContent-Length: 8000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'd'; 100]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let answered = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a dripping body still held after 20 s"
        );
        tokio::select! {
            read = stream.read(&mut answer) => break read.unwrap(),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                // The server may have answered and closed already.
                let _ = stream.write_all(b"d").await;
            }
        }
    };
    let answer = String::from_utf8_lossy(&answer[..answered]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(answer.contains("arrived at less than"), "{answer}");
    let http = http_client();
    let r = http
        .put(c.url(0, "/v1/kv/other"))
        .body(vec![b'o'; 8000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the budget was not given back");
}

/// A follower forwards at most so many requests at once: past that, one that needs the leader
/// gets 503 (`overloaded`) at once instead of another connection to the leader. Here the
/// leader's address leads to a server that accepts and never answers, so forwarded requests
/// hang until the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_a_bounded_number_of_requests_at_once() {
    let options = KvOptions {
        request_timeout: Duration::from_secs(30),
        ..KvOptions::default()
    };
    let c = TestCluster::start_with_limits(3, options, None, 2).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    c.directory
        .addrs
        .lock()
        .insert(leader as u64 + 1, silent_addr);
    let http = http_client();
    let hanging: Vec<_> = (0..2)
        .map(|i| {
            let request = http
                .put(c.url(follower, &format!("/v1/kv/hang{i}")))
                .body("v");
            tokio::spawn(async move { request.send().await.map(|r| r.status()) })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two writes never reached the silent leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = tokio::time::Instant::now();
    let r = http
        .put(c.url(follower, "/v1/kv/third"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the third request waited for the others (they hang for 30 s)"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "overloaded", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("forwarding 2 requests"),
        "{body}"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a third connection"
    );
    for task in hanging {
        task.abort();
    }
}

/// A follower relays the leader's answer to a write even when its body budget is full: the
/// leader has applied the write, so a 503 would leave the client unsure of what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answer_is_relayed_even_when_the_body_budget_is_full() {
    let c = TestCluster::start_with_budget(3, KvOptions::default(), Some(4)).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let http = http_client();
    let r = http
        .put(c.url(follower, "/v1/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let r = http.get(c.url(leader, "/v1/kv/k")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "v");
}

/// reqwest is built with TLS but no process-wide crypto provider (keel picks its own per
/// client); the tests' plain clients take ring's.
/// The JSON answer to a GET of `url`.
async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> T {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// The text answer to a GET of `url`.
async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

fn http_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

fn http_client() -> reqwest::Client {
    http_builder().build().expect("an HTTP client")
}
