//! Mutual TLS between members: members with certificates of the cluster's CA connect and learn
//! each other's client address; a dialer without a certificate, with one of another CA, of
//! another cluster, or naming another node is refused, and learns nothing about the cluster.
//! Changed certificate files are used by the next connection.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{CLUSTER, Pair, Raw, hello};
use keel::{NodeId, Transport, TransportError};
use keel_net::{ClusterCa, NetConfig, PeerTls, TcpTransport, TlsFiles};
use tokio::io::AsyncReadExt;

/// A temp dir with a CA of cluster `cluster` and certificates for nodes 1 to 3.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(name: &str, cluster: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("keel-net-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let certs = Certs { dir };
        certs.write(&ClusterCa::generate(cluster).expect("a CA"));
        certs
    }

    fn write(&self, ca: &ClusterCa) {
        std::fs::write(self.dir.join("ca.pem"), ca.cert_pem()).expect("write");
        for id in 1..=3 {
            let issued = ca.node(id, &[]).expect("a node certificate");
            std::fs::write(self.dir.join(format!("node-{id}.pem")), issued.cert_pem)
                .expect("write");
            std::fs::write(self.dir.join(format!("node-{id}-key.pem")), issued.key_pem)
                .expect("write");
        }
    }

    fn files(&self, id: NodeId) -> TlsFiles {
        files(&self.dir, id)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn files(dir: &Path, id: NodeId) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("node-{id}.pem")),
        key: dir.join(format!("node-{id}-key.pem")),
    }
}

/// The tests' cluster: its certificates name it, so the configs take its id from the name.
const NAME: &str = "tls-test";

fn tls(certs: &Certs, id: NodeId) -> Arc<PeerTls> {
    Arc::new(PeerTls::load(certs.files(id), keel_net::cluster_id(NAME), id).expect("valid certs"))
}

/// Tunes a test config to cluster [`NAME`] with the node's certificate from `certs`.
fn with_tls(certs: &Certs) -> impl Fn(&mut NetConfig) + '_ {
    move |c| {
        c.cluster_id = keel_net::cluster_id(NAME);
        c.tls = Some(tls(certs, c.node_id));
    }
}

/// A transport of node 2 dialing node 1 of `pair`, with `tls` as its TLS identity.
fn dialer(pair: &Pair, tls: Option<Arc<PeerTls>>) -> Arc<TcpTransport> {
    let mut config = pair.client.config().clone();
    config.tls = tls;
    TcpTransport::new(config).expect("valid config")
}

async fn call_fails(transport: &TcpTransport, what: &str) {
    let error = common::within(what, transport.call(1, common::vote(1)))
        .await
        .expect_err(what);
    assert_eq!(error, TransportError::Unreachable(1), "{what}");
    assert_eq!(
        transport.peer_client_addr(1),
        None,
        "{what}: learned an address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_certificates_of_the_cluster_ca_connect_over_tls() {
    let certs = Certs::new("connect", NAME);
    let pair = Pair::with_raft(with_tls(&certs));
    pair.assert_serves("a TLS handshake").await;
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
async fn dialers_without_the_right_certificate_are_refused_and_members_still_served() {
    let certs = Certs::new("refuse", NAME);
    let pair = Pair::start(common::Echo, with_tls(&certs));
    pair.assert_serves("start-up").await;

    // No TLS at all.
    call_fails(&dialer(&pair, None), "a plain dialer").await;

    // A certificate of another CA (for the same cluster name and node id).
    let other = Certs::new("refuse-other-ca", NAME);
    call_fails(&dialer(&pair, Some(tls(&other, 2))), "another CA").await;

    // A valid certificate of this CA, but for node 3, while the dialer claims to be node 2.
    call_fails(
        &dialer(&pair, Some(tls(&certs, 3))),
        "posing as node 2 with node 3's",
    )
    .await;

    // A certificate for node 2 of another cluster (checked before the CA, so its own CA will
    // do: a CA shared by two clusters is caught by the name).
    let another = Certs::new("refuse-other-cluster", "another-cluster");
    let foreign = PeerTls::load(another.files(2), keel_net::cluster_id("another-cluster"), 2)
        .expect("valid certs of the other cluster");
    call_fails(&dialer(&pair, Some(Arc::new(foreign))), "another cluster").await;

    pair.assert_serves("refused dialers").await;
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_naming_another_node_of_this_ca_cannot_pose_as_a_member() {
    // The same CA, the dialer's cert is for node 3 but it claims node 2: refused by the acceptor
    // after the TLS handshake, with the reason; a cert for node 2 of the same CA is served.
    let certs = Certs::new("pose", NAME);
    let pair = Pair::start(common::Echo, with_tls(&certs));
    let posing = dialer(&pair, Some(tls(&certs, 3)));
    call_fails(&posing, "posing").await;
    let honest = dialer(&pair, Some(tls(&certs, 2)));
    common::within("an honest call", honest.call(1, common::vote(1)))
        .await
        .expect("served");
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_dialer_learns_nothing_about_the_cluster() {
    let certs = Certs::new("plain", NAME);
    let pair = Pair::start(common::Echo, with_tls(&certs));
    let mut raw = Raw::connect(pair.addr()).await;
    raw.send(&hello(CLUSTER, 2, 1).encode()).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), raw.stream.read_to_end(&mut answer))
        .await
        .expect("the node closes the connection");
    // Closing a socket with unread input may send a reset rather than a FIN.
    assert!(
        read.is_ok()
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.contains("cluster") && !text.contains("node"),
        "a plain dialer was told {text:?}"
    );
    assert!(
        answer.first().is_none_or(|b| *b == 0x15),
        "anything sent back is a TLS alert, not a keel frame: {answer:?}"
    );
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificate_files_are_used_by_the_next_connection() {
    let certs = Certs::new("reload", NAME);
    let pair = Pair::start(common::Echo, with_tls(&certs));
    // A dialer whose certificates come from a new CA is refused...
    let renewed = Certs::new("reload-renewed", NAME);
    let dialer_a = dialer(&pair, Some(tls(&renewed, 2)));
    call_fails(&dialer_a, "before the server's files change").await;
    // ... until the server's files are replaced by ones of that CA: no restart, a handshake
    // after the next look at the files (at most a second later) reads them.
    for name in ["ca.pem", "node-1.pem", "node-1-key.pem"] {
        std::fs::copy(renewed.dir.join(name), certs.dir.join(name)).expect("copy");
    }
    let dialer_b = dialer(&pair, Some(tls(&renewed, 2)));
    let until = tokio::time::Instant::now() + common::DEADLINE;
    while dialer_b.call(1, common::vote(1)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < until,
            "not served with the new certificates within {:?}",
            common::DEADLINE
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pair.stop().await;
    dialer_a.shutdown().await;
    dialer_b.shutdown().await;
}
