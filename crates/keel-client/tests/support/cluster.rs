// In-process keel clusters for the tests (and the crate example): Raft nodes on
// `keel::LocalNetwork` with in-memory storage, each serving the real HTTP API on loopback.
// (Plain comments: the crate example `include!`s this file, where inner docs are not allowed.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel::{Config, LocalNetwork, MemStorage, NodeId, Raft, Role};
use keel_kv::{KvOptions, KvService};
use keel_server::{Api, Directory, Metrics, router};

#[derive(Default)]
struct StaticDirectory {
    addrs: Mutex<BTreeMap<NodeId, String>>,
}

impl Directory for StaticDirectory {
    fn client_addr(&self, id: NodeId) -> Option<String> {
        self.addrs.lock().unwrap().get(&id).cloned()
    }
    fn peer_addr(&self, _id: NodeId) -> Option<String> {
        None
    }
}

/// One node: its Raft, where it serves HTTP, and the switch that stops its server.
pub struct Node {
    pub raft: Raft,
    pub addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub struct TestCluster {
    pub nodes: Vec<Node>,
    network: LocalNetwork,
}

impl TestCluster {
    /// `n` nodes with short election timeouts; returns without waiting for a leader.
    pub async fn start(n: u64, options: KvOptions) -> TestCluster {
        let network = LocalNetwork::new();
        let directory = Arc::new(StaticDirectory::default());
        let members: Vec<NodeId> = (1..=n).collect();
        let mut nodes = Vec::new();
        for &id in &members {
            let config = Config {
                election_timeout_min: Duration::from_millis(150),
                election_timeout_max: Duration::from_millis(300),
                heartbeat_interval: Duration::from_millis(30),
                ..Config::default()
            };
            let (raft, stream) = Raft::new(
                id,
                members.clone(),
                config,
                Arc::new(MemStorage::new()),
                network.transport(),
            )
            .expect("a valid test configuration");
            network.register(raft.clone());
            let (kv, _) = KvService::start(raft.clone(), stream, options.clone());
            let metrics = Metrics::new();
            metrics.attach(&kv);
            let app = router(Api::new(kv, directory.clone(), metrics));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            let addr = listener.local_addr().expect("a bound address").to_string();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
            });
            directory.addrs.lock().unwrap().insert(id, addr.clone());
            nodes.push(Node {
                raft,
                addr,
                stop: Some(stop),
                server: Some(server),
            });
        }
        TestCluster { nodes, network }
    }

    /// Every node's client address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// The index of the running leader, waiting up to 10 s for one.
    pub async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self
                .nodes
                .iter()
                .position(|n| n.raft.is_running() && n.raft.status().role == Role::Leader)
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

    /// Stops node `i` as a crash would: Raft stops, it leaves the network, its HTTP server
    /// closes its listener and idle connections.
    pub async fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.raft.shutdown().await;
        self.network.unregister(node.raft.id());
        if let Some(stop) = node.stop.take() {
            let _ = stop.send(());
        }
        // The server returns once its listener and every connection are closed: a client
        // that kept a connection open must not be answered by a node that is gone. Bounded,
        // in case a request still in flight never ends.
        if let Some(server) = node.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}

/// An address nothing listens on.
#[allow(dead_code)]
pub async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    listener.local_addr().expect("a bound address").to_string()
}
