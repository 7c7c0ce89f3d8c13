//! One node as a process runs it: disk storage, the TCP transport, Raft, the KV service and the
//! HTTP API, started together and stopped together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keel::{NodeId, Raft};
use keel_disk::{DiskError, DiskOptions, DiskStorage};
use keel_kv::{KvOptions, KvService};
use keel_net::{NetConfig, PeerTls, TcpServer, TcpTransport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::{Api, ApiOptions, Directory, router};
use crate::listener::{self, BoundedListener};
use crate::metrics::{Metrics, PeerTraffic, TrafficSource};

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id; must be a key of `peers`.
    pub id: NodeId,
    /// Name of the cluster; nodes of different clusters refuse each other, and a data dir
    /// remembers the cluster it belongs to.
    pub cluster: String,
    /// Where the node keeps its log and snapshots.
    pub data_dir: PathBuf,
    /// Where the node listens for its peers' Raft traffic.
    pub peer_listen: SocketAddr,
    /// Where the node serves the HTTP API.
    pub client_listen: SocketAddr,
    /// The HTTP address other nodes forward clients to (default: `client_listen`).
    pub client_advertise: Option<String>,
    /// The peer address other nodes dial (default: `peer_listen`); what a node that joins a
    /// cluster gives the others.
    pub peer_advertise: Option<SocketAddr>,
    /// Every member's id and peer address, this node included, for a new cluster; empty for a
    /// node that joins one (`join`). Once the cluster's configuration has changed, the data
    /// dir's configuration is the one in force and this only supplies addresses of the
    /// original members.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Join a running cluster through these client endpoints (`host:port` of members' HTTP
    /// API): ask to be added as a learner, then catch up. Asking again after a restart is
    /// harmless: a node that is a member already asks nothing.
    pub join: Vec<String>,
    /// With `join`: once caught up, ask to be promoted to voter.
    pub join_as_voter: bool,
    /// The secret every member proves it holds when connecting to another (see
    /// [`keel_net::auth`]); `None` accepts any peer that names the cluster and a member's id.
    pub peer_secret: Option<keel_net::PeerSecret>,
    /// With a `peer_secret`, also connect with peers that have none (see
    /// [`keel_net::NetConfig::peer_secret_transition`]).
    pub peer_secret_transition: bool,
    /// Mutual TLS with the other members (see [`keel_net::tls`]): the CA, this node's
    /// certificate and key.
    pub peer_tls: Option<keel_net::TlsFiles>,
    /// Start even if the peer port listens beyond loopback with neither TLS nor a peer secret.
    pub insecure: bool,
    /// Serve the HTTP API over HTTPS with this node's certificate (`peer_tls` is required);
    /// requests are then forwarded to the leader over HTTPS too.
    pub https: bool,
    /// With `https`: require clients to present a certificate of the cluster's CA.
    pub https_client_certs: bool,
    /// Authenticate clients by this access file (bearer tokens, and the client certificates it
    /// names), and authorize them by its grants (see [`crate::auth`]). Without it, a node
    /// requiring client certificates gives every certificate of the CA every permission, and
    /// any other node lets everyone do everything.
    pub access_file: Option<PathBuf>,
    /// Also serve `/metrics` and `/v1/status`, without authentication, on this address (for
    /// monitoring that holds no credentials): plain HTTP or HTTPS as the client API is.
    pub admin_listen: Option<SocketAddr>,
    /// Raft timing and limits.
    pub raft: keel::Config,
    /// KV service limits.
    pub kv: KvOptions,
    /// Size at which log segments roll.
    pub segment_size_bytes: u64,
    /// Most HTTP client connections open at once; more wait in the listen backlog.
    pub max_client_connections: usize,
    /// How long an HTTP client connection may stay open without asking for anything, so that
    /// silent connections cannot take all `max_client_connections`. An HTTP/1 connection is
    /// closed when it takes longer than this to send its first byte, or then a complete request
    /// head (after its first byte or its previous response); an HTTP/2 connection when it leaves
    /// unanswered, this long, a ping sent after this long a silence. A request being answered is
    /// not cut (`kv.request_timeout` bounds it). Usually [`DEFAULT_CLIENT_IDLE_TIMEOUT`]; see
    /// [`listener::serve`].
    pub client_idle_timeout: Duration,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// The data dir could not be opened.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The data dir belongs to another cluster.
    #[error(
        "data dir {dir} belongs to another cluster (id {found:#x}); this node was started with \
         --cluster {name:?} (id {expected:#x}). Use the data dir's cluster name, or another \
         data dir"
    )]
    ForeignDataDir {
        /// The data dir.
        dir: PathBuf,
        /// The cluster id recorded in it.
        found: u64,
        /// This node's cluster name.
        name: String,
        /// Its id.
        expected: u64,
    },
    /// A listening address could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Peers or clients.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Raft refused to start.
    #[error(transparent)]
    Raft(#[from] keel::RaftError),
}

/// Most connections to the monitoring listener at once.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Waits for every task (a stopped one's panic is not this caller's concern).
async fn futures_join_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// Size at which log segments roll, unless configured otherwise.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = DiskOptions::DEFAULT_SEGMENT_SIZE_BYTES;

/// How long a client connection may stay silent, unless configured otherwise: long enough for
/// any client that means to send a request, short enough that a flood of silent connections
/// frees its permits within a minute.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub use keel_net::cluster_id;

/// A running node.
pub struct Node {
    /// Asking the cluster to add this node, when it joins one.
    join_task: Option<JoinHandle<()>>,
    raft: Raft,
    kv: KvService,
    disk: Arc<DiskStorage>,
    transport: Arc<TcpTransport>,
    peer_server: TcpServer,
    http_stop: CancellationToken,
    http_tasks: Vec<JoinHandle<()>>,
    client_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    auth: Option<Arc<crate::auth::Authenticator>>,
    peer_addr: SocketAddr,
}

/// Members' addresses, as the transport knows them (from the configuration and handshakes).
struct NetDirectory {
    id: NodeId,
    own_client_addr: String,
    own_peer_addr: SocketAddr,
    transport: Arc<TcpTransport>,
}

impl Directory for NetDirectory {
    fn client_addr(&self, id: NodeId) -> Option<String> {
        if id == self.id {
            return Some(self.own_client_addr.clone());
        }
        self.transport.peer_client_addr(id)
    }
    fn peer_addr(&self, id: NodeId) -> Option<String> {
        if id == self.id {
            return Some(self.own_peer_addr.to_string());
        }
        self.transport.peer_addr(id).map(|a| a.to_string())
    }
}

struct NetTraffic(Arc<TcpTransport>);

impl TrafficSource for NetTraffic {
    fn traffic(&self) -> Vec<PeerTraffic> {
        self.0
            .stats()
            .into_iter()
            .map(|s| PeerTraffic {
                peer: s.id,
                rpcs: s.rpcs_sent,
                bytes_sent: s.bytes_sent,
                bytes_received: s.bytes_received,
                errors: s.rpcs_failed,
            })
            .collect()
    }
}

impl Node {
    /// Reads the TLS certificate files again now (they are also read again when they change,
    /// before the next connection). On an error the certificates in use stay.
    pub fn reload_certificates(&self) -> Result<(), keel_net::TlsError> {
        match &self.transport.config().tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// Reads the access file again now (it is also read again when it changes). On an error the
    /// grants in use stay.
    pub fn reload_access(&self) -> Result<(), String> {
        match &self.auth {
            Some(auth) => auth.reload(),
            None => Ok(()),
        }
    }

    /// Where `/metrics` and `/v1/status` are served without authentication, if they are
    /// (`admin_listen`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Opens the data dir, binds both addresses, and starts Raft, the KV service and the HTTP
    /// API. Fails with an error that says what to fix.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let id = config.id;
        let joining = !config.join.is_empty();
        if !joining && !config.peers.contains_key(&id) {
            return Err(NodeError::Config(format!(
                "node {id} is not in the peer list {:?}; add {id}=HOST:PORT to --peers",
                config.peers.keys().collect::<Vec<_>>()
            )));
        }
        if joining && config.peers.keys().any(|&p| p != id) {
            return Err(NodeError::Config(
                "a node that joins a cluster learns the members from it: give --join, not \
                 --peers"
                    .into(),
            ));
        }
        let peer_advertise = config.peer_advertise.unwrap_or(config.peer_listen);
        if joining && (peer_advertise.ip().is_unspecified() || peer_advertise.port() == 0) {
            return Err(NodeError::Config(format!(
                "the other members must be able to dial this node, and {peer_advertise} is no \
                 address to dial: give --advertise-peer-addr"
            )));
        }
        if config.client_idle_timeout.is_zero() {
            return Err(NodeError::Config(
                "the client idle timeout is 0, which would close every connection at once; \
                 give it a positive number of milliseconds"
                    .into(),
            ));
        }
        if config.https && config.peer_tls.is_none() {
            return Err(NodeError::Config(
                "HTTPS serves the node's certificate: give the certificates too (--certs DIR)"
                    .into(),
            ));
        }
        if config.https_client_certs && !config.https {
            return Err(NodeError::Config(
                "client certificates are asked for in the TLS handshake: they need HTTPS (--https)"
                    .into(),
            ));
        }
        let cluster_id = cluster_id(&config.cluster);

        let peer_tls = if let Some(files) = &config.peer_tls {
            let tls = PeerTls::load(files.clone(), cluster_id, id)
                .map_err(|e| NodeError::Config(format!("peer TLS: {e}")))?;
            Some(Arc::new(tls))
        } else {
            None
        };
        if peer_tls.is_none()
            && config.peer_secret.is_none()
            && !config.peer_listen.ip().is_loopback()
        {
            if !config.insecure {
                return Err(NodeError::Config(format!(
                    "the peer port {} is reachable beyond this machine, and peers are not \
                     authenticated: anyone who reaches it could vote, replicate and forge \
                     writes. Give every member certificates (keel certs, then --certs DIR), or \
                     at least the same --peer-secret-file; or --insecure to run like this anyway",
                    config.peer_listen
                )));
            }
            tracing::warn!(
                "INSECURE: peer connections are neither encrypted nor authenticated (--insecure): \
                 anyone who can reach {} can take part in this cluster's elections and \
                 replication",
                config.peer_listen
            );
        }

        let authenticates = config.access_file.is_some() || config.https_client_certs;
        if config.https && !authenticates && !config.client_listen.ip().is_loopback() {
            if !config.insecure {
                return Err(NodeError::Config(format!(
                    "the client port {} is reachable beyond this machine, and clients are not \
                     authenticated: anyone who reaches it could read, write and change the \
                     membership. Give an access file (--access FILE; keel token create makes \
                     tokens), or --require-client-cert; or --insecure to run like this anyway",
                    config.client_listen
                )));
            }
            tracing::warn!(
                "INSECURE: the client API at {} does not authenticate clients (--insecure)",
                config.client_listen
            );
        }
        if let Some(admin) = config.admin_listen
            && !config.https
            && !admin.ip().is_loopback()
            && !config.insecure
        {
            return Err(NodeError::Config(format!(
                "the admin port {admin} is reachable beyond this machine over plain HTTP: \
                 serve HTTPS (--https), bind it to loopback, or --insecure"
            )));
        }
        if let Some(admin) = config.admin_listen
            && !config.https
            && !admin.ip().is_loopback()
        {
            tracing::warn!(
                "INSECURE: the admin port {admin} serves /metrics and /v1/status over plain HTTP \
                 beyond this machine (--insecure)"
            );
        }
        let auth = if authenticates {
            let auth = crate::auth::Authenticator::new(config.access_file.as_deref())
                .map_err(NodeError::Config)?;
            Some(Arc::new(auth))
        } else {
            None
        };

        if !config.https && !config.client_listen.ip().is_loopback() {
            if !config.insecure {
                return Err(NodeError::Config(format!(
                    "the client port {} is reachable beyond this machine over plain HTTP: \
                     anyone on the way can read and change what clients send. Serve HTTPS \
                     (--https, with --certs DIR; --require-client-cert to admit only clients \
                     with a certificate of the cluster's CA), or --insecure to run like this anyway",
                    config.client_listen
                )));
            }
            tracing::warn!(
                "INSECURE: the client API at {} is plain HTTP (--insecure)",
                config.client_listen
            );
        }

        let mut disk_options = DiskOptions::new(id, cluster_id);
        disk_options.segment_size_bytes = config.segment_size_bytes;
        let disk = match DiskStorage::open(&config.data_dir, disk_options) {
            Ok(disk) => Arc::new(disk),
            Err(DiskError::WrongCluster {
                dir,
                found,
                expected,
            }) => {
                return Err(NodeError::ForeignDataDir {
                    dir,
                    found,
                    name: config.cluster.clone(),
                    expected,
                });
            }
            Err(e) => return Err(e.into()),
        };

        let http_listener = tokio::net::TcpListener::bind(config.client_listen)
            .await
            .map_err(|source| NodeError::Bind {
                what: "clients",
                addr: config.client_listen,
                source,
            })?;
        let client_addr = http_listener
            .local_addr()
            .map_err(|source| NodeError::Bind {
                what: "clients",
                addr: config.client_listen,
                source,
            })?;
        // What peers forward clients to: the bound address (its port, if 0 was asked for).
        let client_advertise = config
            .client_advertise
            .clone()
            .unwrap_or_else(|| client_addr.to_string());

        let mut peers = config.peers.clone();
        peers.insert(id, peer_advertise);
        let mut net = NetConfig::new(
            cluster_id,
            id,
            config.peer_listen,
            client_advertise.clone(),
            peers,
        );
        net.peer_secret = config.peer_secret.clone();
        net.peer_secret_transition = config.peer_secret_transition;
        net.tls = peer_tls.clone();
        net.max_frame_bytes = net.max_frame_bytes.max(
            config
                .raft
                .max_append_bytes
                .max(config.raft.snapshot_chunk_bytes)
                + (1 << 20),
        );
        net.check_raft_config(&config.raft)
            .map_err(|e| NodeError::Config(e.to_string()))?;
        if net.peer_secret_transition {
            tracing::warn!(
                "peer secret transition mode: peers without the secret are accepted too; once \
                 every member holds it, restart each without --peer-secret-transition"
            );
        }
        let transport = TcpTransport::new(net).map_err(|e| NodeError::Config(e.to_string()))?;
        let peer_server = TcpServer::bind(&transport).map_err(|source| NodeError::Bind {
            what: "peers",
            addr: config.peer_listen,
            source,
        })?;

        // A joining node starts with no configuration: the leader sends it one.
        let members: Vec<NodeId> = if joining {
            Vec::new()
        } else {
            config.peers.keys().copied().collect()
        };
        let (raft, stream) = Raft::new(
            id,
            members,
            config.raft.clone(),
            disk.clone(),
            transport.clone(),
        )?;
        peer_server.serve(raft.clone());
        // So that every node learns every member's client address, followers each other's too.
        transport.connect_all();
        let (kv, _apply_task) = KvService::start(raft.clone(), stream, config.kv.clone());

        let metrics = Metrics::new();
        metrics.attach(&kv);
        let fsyncs = Arc::downgrade(&metrics);
        disk.set_sync_observer(Arc::new(move |latency| {
            if let Some(metrics) = fsyncs.upgrade() {
                metrics.observe_fsync(latency);
            }
        }));
        metrics.set_traffic_source(Arc::new(NetTraffic(transport.clone())));
        let directory = Arc::new(NetDirectory {
            id,
            own_client_addr: client_advertise.clone(),
            own_peer_addr: peer_advertise,
            transport: transport.clone(),
        });
        let https_tls = if config.https { peer_tls.clone() } else { None };
        let api = Api::with_options(
            kv.clone(),
            directory,
            metrics,
            ApiOptions {
                tls: https_tls.clone(),
                auth: auth.clone(),
                ..ApiOptions::new(&kv)
            },
        );
        let app = router(api.clone());
        let https = https_tls.map(|tls| listener::Https {
            tls,
            client_certs: config.https_client_certs,
        });
        let mut listener = BoundedListener::new(http_listener, config.max_client_connections);
        if let Some(https) = https.clone() {
            listener = listener.with_https(https);
        }
        let http_stop = CancellationToken::new();
        let mut http_tasks = vec![tokio::spawn(listener::serve(
            listener,
            app,
            config.client_idle_timeout,
            http_stop.clone(),
        ))];
        let mut admin_addr = None;
        if let Some(addr) = config.admin_listen {
            let bound = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind {
                    what: "monitoring",
                    addr,
                    source,
                })?;
            admin_addr = bound.local_addr().ok();
            let mut listener = BoundedListener::new(bound, MAX_ADMIN_CONNECTIONS);
            // Monitoring holds no credentials: HTTPS, but no client certificate asked for.
            if let Some(https) = https {
                listener = listener.with_https(listener::Https {
                    client_certs: false,
                    ..https
                });
            }
            http_tasks.push(tokio::spawn(listener::serve(
                listener,
                crate::http::admin_router(api),
                config.client_idle_timeout,
                http_stop.clone(),
            )));
        }
        let peer_addr = peer_server.local_addr();
        tracing::info!(node = id, %peer_addr, %client_addr, data_dir = %config.data_dir.display(), "node started");
        let join_task = joining.then(|| {
            let request = crate::join::JoinRequest {
                id,
                peer_addr: peer_advertise,
                client_addr: client_advertise,
                endpoints: config.join.clone(),
                as_voter: config.join_as_voter,
                tls: if config.https { peer_tls.clone() } else { None },
            };
            tokio::spawn(crate::join::join(raft.clone(), request))
        });
        Ok(Node {
            join_task,
            raft,
            kv,
            disk,
            transport,
            peer_server,
            http_stop,
            http_tasks,
            client_addr,
            admin_addr,
            auth,
            peer_addr,
        })
    }

    /// If this node leads, hands leadership to the most up-to-date follower (bounded by two
    /// election timeouts; a failure is logged, and the node stops anyway).
    pub async fn hand_over(&self) {
        if self.raft.status().role != keel::Role::Leader {
            return;
        }
        match self.raft.transfer_leadership(None).await {
            Ok(leader) => tracing::info!(
                "handed leadership over to node {}",
                leader.map_or("?".into(), |l| l.to_string())
            ),
            Err(keel::TransferError::NoTarget) => {}
            Err(error) => tracing::warn!(%error, "could not hand leadership over"),
        }
    }

    /// The node's Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The node's KV service.
    pub fn kv(&self) -> &KvService {
        &self.kv
    }

    /// Where the HTTP API listens.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where the peer server listens.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Stops serving clients, then Raft, the peer network, and finally the disk (after
    /// everything queued is written). A leader first hands leadership to the most up-to-date
    /// follower, so the cluster does not wait an election timeout for a new one.
    pub async fn shutdown(self) {
        if let Some(task) = &self.join_task {
            task.abort();
        }
        self.hand_over().await;
        self.http_stop.cancel();
        // In-flight requests end when Raft stops; do not wait for slow clients forever.
        self.raft.shutdown().await;
        let _ =
            tokio::time::timeout(Duration::from_secs(5), futures_join_all(self.http_tasks)).await;
        self.peer_server.shutdown().await;
        self.transport.shutdown().await;
        if let Err(error) = self.disk.close().await {
            tracing::error!(%error, "storage had failed before shutdown");
        }
        tracing::info!("node stopped");
    }
}
