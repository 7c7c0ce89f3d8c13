//! Every operation against a real in-process node, and the typed errors a CLI prints.

mod support;

use std::sync::Arc;

use keel_client::{Client, ClientError, ClientOptions, Consistency};
use keel_kv::KvOptions;
use support::cluster::TestCluster;

async fn client_of(cluster: &TestCluster) -> Client {
    Client::new(ClientOptions::with_endpoints(cluster.endpoints())).expect("valid endpoints")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_does_what_the_api_documents() {
    let cluster = TestCluster::start(1, KvOptions::default()).await;
    let client = client_of(&cluster).await;
    let linear = Consistency::Linearizable;

    let missing = client.get("greeting", linear).await;
    assert_eq!(
        missing,
        Err(ClientError::NotFound {
            key: "greeting".into()
        })
    );

    let put = client.put("greeting", "hello").await.expect("put");
    let appended = client.append("greeting", ", world").await.expect("append");
    assert!(appended.index > put.index, "{appended:?} after {put:?}");
    assert_eq!(
        client.get("greeting", linear).await.unwrap(),
        "hello, world"
    );
    assert_eq!(
        client.get("greeting", Consistency::Stale).await.unwrap(),
        "hello, world"
    );

    let miss = client.cas("greeting", Some(b"nope"), b"x").await.unwrap();
    assert!(!miss.succeeded, "cas with the wrong expected value");
    let hit = client
        .cas("greeting", Some(b"hello, world"), b"bye")
        .await
        .unwrap();
    assert!(hit.succeeded, "cas with the right expected value");
    assert!(hit.index > miss.index);
    let absent = client.cas("greeting", None, b"again").await.unwrap();
    assert!(!absent.succeeded, "cas expecting absence of a present key");
    let created = client.cas("fresh", None, b"new").await.unwrap();
    assert!(created.succeeded, "cas expecting absence of an absent key");
    assert_eq!(client.get("fresh", linear).await.unwrap(), "new");

    client.delete("greeting").await.expect("delete");
    assert!(matches!(
        client.get("greeting", linear).await,
        Err(ClientError::NotFound { .. })
    ));
    client
        .delete("greeting")
        .await
        .expect("deleting an absent key");

    // Binary values travel as they are.
    let binary: Vec<u8> = (0..=255).collect();
    client.put("bin", binary.clone()).await.unwrap();
    assert_eq!(client.get("bin", linear).await.unwrap(), binary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_slashes_and_reserved_characters_round_trip() {
    let cluster = TestCluster::start(1, KvOptions::default()).await;
    let client = client_of(&cluster).await;
    let keys = [
        "a/b/c",
        "a/../b",
        "with space",
        "q?x=1&y=2",
        "hash#tag",
        "percent%20",
        "ünïcødé",
        "/leading",
        "trailing/",
        "a//b",
        "...",
    ];
    for key in keys {
        client.put(key, key.to_string()).await.expect(key);
    }
    for key in keys {
        let value = client.get(key, Consistency::Linearizable).await.expect(key);
        assert_eq!(value, key, "key {key:?} read back another key's value");
    }
    // The client's encoding names the same key as the plain path the server documents.
    let http = support::fake::http_builder().build().unwrap();
    let raw = http
        .get(format!("http://{}/v1/kv/a/b/c", cluster.nodes[0].addr))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.text().await.unwrap(), "a/b/c");

    for bad in ["", ".", ".."] {
        let e = client.put(bad, "v").await.unwrap_err();
        assert_eq!(e.kind(), "invalid_input", "{bad:?}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_server_refuses_fail_at_once_with_its_reason() {
    let options = KvOptions {
        max_value_bytes: 1024,
        max_key_bytes: 64,
        ..KvOptions::default()
    };
    let cluster = TestCluster::start(1, options).await;
    let client = client_of(&cluster).await;
    client.put("warm", "up").await.expect("a leader");
    let retries = client.retry_count();

    let e = client.put("big", vec![b'v'; 2000]).await.unwrap_err();
    assert!(matches!(e, ClientError::TooLarge { .. }), "{e:?}");
    assert!(e.to_string().contains("1024"), "{e}");
    let e = client
        .get(&"k".repeat(65), Consistency::Linearizable)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::TooLarge { .. }), "{e:?}");
    assert_eq!(client.retry_count(), retries, "4xx answers are not retried");

    let e = client.cas("k", Some(&[0xff]), b"v").await.unwrap_err();
    assert_eq!(e.kind(), "invalid_input", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_on_one_session_all_apply_once() {
    let cluster = TestCluster::start(3, KvOptions::default()).await;
    let client = Arc::new(client_of(&cluster).await);
    let writers: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.append("log", "x").await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().expect("every append succeeds");
    }
    let value = client.get("log", Consistency::Linearizable).await.unwrap();
    assert_eq!(value, "x".repeat(20));

    // Other sessions write in parallel with their own client ids.
    let other = client.new_session();
    assert_ne!(other.client_id(), client.client_id());
    other.append("log", "y").await.unwrap();
    assert_eq!(
        client.get("log", Consistency::Linearizable).await.unwrap(),
        format!("{}y", "x".repeat(20))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_answer_http2_clients_too() {
    let cluster = TestCluster::start(1, KvOptions::default()).await;
    let mut options = ClientOptions::with_endpoints(cluster.endpoints());
    options.http2 = true;
    let client = Client::new(options).expect("valid endpoints");
    let put = client.put("over", "h2").await.expect("put over HTTP/2");
    assert!(put.index > 0);
    assert_eq!(
        client.get("over", Consistency::Linearizable).await.unwrap(),
        "h2"
    );
    assert!(matches!(
        client.get("absent", Consistency::Linearizable).await,
        Err(ClientError::NotFound { .. })
    ));
}
