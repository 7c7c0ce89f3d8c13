//! `keel serve`: one node of a real cluster, configured by flags, a TOML file, or both (flags
//! win).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use keel::NodeId;
use keel_kv::KvOptions;
use keel_net::TlsFiles;
use keel_server::{Node, NodeConfig, PeerSecret};
use serde::Deserialize;

use crate::CliError;

/// Flags of `keel serve`.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Read settings from this TOML file (flags given as well take precedence). See README.md for
    /// every key.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id: a positive integer, one of the ids in --peers (with --join, one no
    /// member has, or ever had).
    #[arg(long)]
    pub id: Option<NodeId>,
    /// Directory for this node's log and snapshots (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on for Raft traffic from the other nodes.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_addr: Option<String>,
    /// Address to serve the HTTP API on.
    #[arg(long, value_name = "HOST:PORT")]
    pub client_addr: Option<String>,
    /// The HTTP address other nodes should forward clients to, if not --client-addr (say, when
    /// listening on 0.0.0.0).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_client_addr: Option<String>,
    /// The peer address other nodes dial, if not --peer-addr (say, when listening on
    /// 0.0.0.0). A node that joins a cluster gives it to the others.
    #[arg(long, value_name = "IP:PORT")]
    pub advertise_peer_addr: Option<String>,
    /// For a new cluster: every member, this node included: ID=HOST:PORT of its peer address,
    /// comma-separated. Example: 1=10.0.0.1:7081,2=10.0.0.2:7081,3=10.0.0.3:7081. (Not with
    /// --join. Once the cluster's membership has changed, the data dir's configuration wins;
    /// these only say where the original members are.)
    #[arg(long, value_name = "ID=HOST:PORT,...", conflicts_with = "join")]
    pub peers: Option<String>,
    /// Join a running cluster instead: ask it, through any of these members' client
    /// addresses, to add this node (an empty one, with a new id) as a learner; it then learns
    /// the members and catches up. Restarting with --join again is harmless.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub join: Option<String>,
    /// With --join: once caught up, ask to become a voter (otherwise an operator promotes it:
    /// keel member promote ID).
    #[arg(long, requires = "join")]
    pub join_as_voter: bool,
    /// Cluster name: nodes of different clusters refuse each other's traffic, and a data dir
    /// remembers its cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// A file holding the cluster's peer secret (at least 16 bytes; trailing whitespace is
    /// ignored). Members prove to each other that they hold it whenever they connect, so a
    /// process without it cannot take part in elections or replication. Give every member the
    /// same file, or none. Make one with: keel secret > FILE
    #[arg(long, value_name = "FILE")]
    pub peer_secret_file: Option<PathBuf>,
    /// With --peer-secret-file: also connect with members that have no secret yet, so that a
    /// running cluster can move to a secret without an outage. Restart every member with the
    /// secret and this flag, one at a time; then restart each again without the flag.
    #[arg(long)]
    pub peer_secret_transition: bool,
    /// A directory made by `keel certs`: mutual TLS with the other members, with DIR/ca.pem,
    /// DIR/node-ID.pem and DIR/node-ID-key.pem (the flags below name other files). Every member
    /// must have TLS, or none. The files are read again when they change, and on SIGHUP.
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// The cluster CA's certificate (PEM), for peer TLS.
    #[arg(long, value_name = "FILE")]
    pub peer_ca: Option<PathBuf>,
    /// This node's certificate (PEM), naming it as node-ID.<cluster>.keel (see `keel certs`).
    #[arg(long, value_name = "FILE")]
    pub peer_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub peer_key: Option<PathBuf>,
    /// Serve the HTTP API over HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with this node's certificate
    /// (from --certs or --peer-cert; `keel certs --node ID=HOST` puts the host clients use in
    /// it). Followers then forward to the leader over HTTPS.
    #[arg(long)]
    pub https: bool,
    /// With --https: admit only clients that present a certificate of the cluster's CA (made by
    /// `keel certs --client NAME`).
    #[arg(long, requires = "https")]
    pub require_client_cert: bool,
    /// Authenticate clients by this access file (bearer tokens made by `keel token create`,
    /// and the client certificates it names) and allow each what its grants say: see
    /// docs/security.md. Read again when it changes, and on SIGHUP. Every member should have
    /// the same.
    #[arg(long, value_name = "FILE")]
    pub access: Option<PathBuf>,
    /// Also serve /metrics and /v1/status on this address without authentication, for
    /// monitoring that holds no credentials (HTTPS if the client API is).
    #[arg(long, value_name = "HOST:PORT")]
    pub admin_addr: Option<String>,
    /// Most client sessions one authenticated client may hold; past it, its own oldest are
    /// forgotten first. Every member must have the same. Default 10000.
    #[arg(long, value_name = "N")]
    pub max_sessions_per_client: Option<usize>,
    /// Start even though the peer port listens beyond loopback with neither TLS nor a peer
    /// secret, or the client port with plain HTTP or without authenticating clients, so that
    /// anyone who reaches them can take part in the cluster or read and change the data.
    #[arg(long)]
    pub insecure: bool,
    /// Leader heartbeat interval, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// Election timeout: a follower that hears no leader for a random time between this and
    /// twice this many milliseconds starts an election.
    #[arg(long, value_name = "MS")]
    pub election_timeout_ms: Option<u64>,
    /// Snapshot the store when the Raft log grows past this many bytes (each node at all,
    /// 7/8 or 3/4 of it, by id, so that members do not snapshot at once).
    #[arg(long, value_name = "BYTES")]
    pub max_raft_state_bytes: Option<u64>,
    /// How long a request may wait for a leader, a quorum and its commit before a 503.
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// Largest value accepted, in bytes (larger get 413).
    #[arg(long, value_name = "BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Largest key accepted, in bytes (larger get 413).
    #[arg(long, value_name = "BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Close an HTTP client connection that sends no complete request head for this many
    /// milliseconds after opening or after its previous response (an HTTP/2 one: that leaves a
    /// ping unanswered as long), so silent clients cannot use up the connection limit. Requests
    /// being answered are not cut. Default 30000.
    #[arg(long, value_name = "MS")]
    pub client_idle_timeout_ms: Option<u64>,
    /// Worker threads of the node's async runtime: 0 for one per CPU core, 1 for a single
    /// thread (best when several nodes share a small machine, as with `keel dev`).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// The TOML form of the same settings.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<NodeId>,
    data_dir: Option<PathBuf>,
    peer_addr: Option<String>,
    client_addr: Option<String>,
    advertise_client_addr: Option<String>,
    advertise_peer_addr: Option<String>,
    join: Option<Vec<String>>,
    join_as_voter: Option<bool>,
    cluster: Option<String>,
    peer_secret_file: Option<PathBuf>,
    peer_secret_transition: Option<bool>,
    certs: Option<PathBuf>,
    peer_ca: Option<PathBuf>,
    peer_cert: Option<PathBuf>,
    peer_key: Option<PathBuf>,
    insecure: Option<bool>,
    https: Option<bool>,
    require_client_cert: Option<bool>,
    access: Option<PathBuf>,
    admin_addr: Option<String>,
    max_sessions_per_client: Option<usize>,
    peers: Option<BTreeMap<String, String>>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    max_raft_state_bytes: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_value_bytes: Option<usize>,
    max_key_bytes: Option<usize>,
    client_idle_timeout_ms: Option<u64>,
}

fn resolve(what: &str, addr: &str) -> Result<SocketAddr, CliError> {
    addr.to_socket_addrs()
        .map_err(|e| CliError::Config(format!("bad {what} address {addr:?}: {e}")))?
        .next()
        .ok_or_else(|| {
            CliError::Config(format!("bad {what} address {addr:?}: resolves to nothing"))
        })
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(spec: &str) -> Result<BTreeMap<NodeId, SocketAddr>, CliError> {
    let mut peers = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            CliError::Config(format!("bad --peers entry {part:?}: expected ID=HOST:PORT"))
        })?;
        let id: NodeId = id.trim().parse().map_err(|_| {
            CliError::Config(format!(
                "bad --peers entry {part:?}: {id:?} is not a node id"
            ))
        })?;
        let addr = resolve(&format!("node {id}'s peer"), addr.trim())?;
        if peers.insert(id, addr).is_some() {
            return Err(CliError::Config(format!(
                "node {id} appears twice in --peers"
            )));
        }
    }
    if peers.is_empty() {
        return Err(CliError::Config("--peers lists no nodes".into()));
    }
    Ok(peers)
}

fn load_file(path: &Path) -> Result<FileConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Config(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| CliError::Config(format!("{}: {}", path.display(), e.message())))
}

/// Merges flags over the file and checks that nothing required is missing.
pub fn node_config(args: ServeArgs) -> Result<NodeConfig, CliError> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    let missing = |flag: &str| {
        CliError::Config(format!(
            "missing --{flag} (or `{}` in the config file)",
            flag.replace('-', "_")
        ))
    };
    let id = args.id.or(file.id).ok_or_else(|| missing("id"))?;
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .ok_or_else(|| missing("data-dir"))?;
    let peer_addr = args
        .peer_addr
        .or(file.peer_addr)
        .ok_or_else(|| missing("peer-addr"))?;
    let client_addr = args
        .client_addr
        .or(file.client_addr)
        .ok_or_else(|| missing("client-addr"))?;
    let join: Vec<String> = match (args.join, file.join) {
        (Some(list), _) => keel_client::parse_endpoints(&list),
        (None, Some(list)) => list,
        (None, None) => Vec::new(),
    };
    let join_as_voter = args.join_as_voter || file.join_as_voter.unwrap_or(false);
    if join_as_voter && join.is_empty() {
        return Err(CliError::Config(
            "--join-as-voter goes with --join: it says what to ask the cluster joined".into(),
        ));
    }
    let peers = match (args.peers, file.peers) {
        (Some(spec), _) => parse_peers(&spec)?,
        (None, Some(map)) => {
            let spec: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parse_peers(&spec.join(","))?
        }
        (None, None) if !join.is_empty() => BTreeMap::new(),
        (None, None) => {
            return Err(CliError::Config(
                "missing --peers (every member of a new cluster) or --join (members of a \
                 running one to join)"
                    .into(),
            ));
        }
    };
    if !join.is_empty() && !peers.is_empty() {
        return Err(CliError::Config(
            "give --peers to start a new cluster, or --join to join a running one, not both".into(),
        ));
    }
    if join.is_empty() && !peers.contains_key(&id) {
        return Err(CliError::Config(format!(
            "node {id} is not among the peers {:?}: --peers must list every member, this node too",
            peers.keys().collect::<Vec<_>>()
        )));
    }
    let peer_listen = resolve("--peer-addr", &peer_addr)?;
    let client_listen = resolve("--client-addr", &client_addr)?;
    let peer_advertise = args
        .advertise_peer_addr
        .or(file.advertise_peer_addr)
        .map(|addr| resolve("--advertise-peer-addr", &addr))
        .transpose()?;

    let mut raft = keel::Config::default();
    if let Some(ms) = args.heartbeat_ms.or(file.heartbeat_ms) {
        raft.heartbeat_interval = millis("--heartbeat-ms", ms)?;
    }
    if let Some(ms) = args.election_timeout_ms.or(file.election_timeout_ms) {
        raft.election_timeout_min = millis("--election-timeout-ms", ms)?;
        raft.election_timeout_max = raft.election_timeout_min * 2;
        raft.rpc_timeout = raft.election_timeout_min;
    }
    raft.validate()
        .map_err(|e| CliError::Config(e.to_string()))?;
    let mut kv = KvOptions::default();
    if let Some(bytes) = args.max_raft_state_bytes.or(file.max_raft_state_bytes) {
        kv.max_raft_state_bytes = bytes;
    }
    if let Some(ms) = args.request_timeout_ms.or(file.request_timeout_ms) {
        kv.request_timeout = millis("--request-timeout-ms", ms)?;
    }
    if let Some(bytes) = args.max_value_bytes.or(file.max_value_bytes) {
        kv.max_value_bytes = at_most("--max-value-bytes", bytes, MAX_VALUE_BYTES)?;
    }
    if let Some(n) = args
        .max_sessions_per_client
        .or(file.max_sessions_per_client)
    {
        if n == 0 {
            return Err(CliError::Config(
                "--max-sessions-per-client 0 would forget every session at once; give at \
                 least 1"
                    .into(),
            ));
        }
        kv.max_sessions_per_client = n;
    }
    if let Some(bytes) = args.max_key_bytes.or(file.max_key_bytes) {
        kv.max_key_bytes = at_most("--max-key-bytes", bytes, MAX_KEY_BYTES)?;
    }
    // A value must fit in one AppendEntries with room to spare.
    let value_room = kv.max_value_bytes.saturating_mul(2).saturating_add(4096);
    raft.max_append_bytes = raft.max_append_bytes.max(value_room);
    let peer_secret = match args.peer_secret_file.or(file.peer_secret_file) {
        Some(path) => Some(read_secret(&path)?),
        None => None,
    };
    let peer_secret_transition =
        args.peer_secret_transition || file.peer_secret_transition.unwrap_or(false);
    if peer_secret_transition && peer_secret.is_none() {
        return Err(CliError::Config(
            "--peer-secret-transition needs --peer-secret-file: the secret to move to".into(),
        ));
    }
    let certs = args.certs.or(file.certs);
    let peer_files = [
        args.peer_ca.or(file.peer_ca),
        args.peer_cert.or(file.peer_cert),
        args.peer_key.or(file.peer_key),
    ];
    let peer_tls = match (certs, peer_files) {
        (None, [None, None, None]) => None,
        (Some(dir), [ca, cert, key]) => {
            let default = crate::certs::node_files(&dir, id);
            Some(TlsFiles {
                ca: ca.unwrap_or(default.ca),
                cert: cert.unwrap_or(default.cert),
                key: key.unwrap_or(default.key),
            })
        }
        (None, [Some(ca), Some(cert), Some(key)]) => Some(TlsFiles { ca, cert, key }),
        (None, _) => {
            return Err(CliError::Config(
                "peer TLS needs --peer-ca, --peer-cert and --peer-key together (or --certs DIR)"
                    .into(),
            ));
        }
    };
    let client_idle_timeout = match args.client_idle_timeout_ms.or(file.client_idle_timeout_ms) {
        Some(ms) => millis("--client-idle-timeout-ms", ms)?,
        None => keel_server::node::DEFAULT_CLIENT_IDLE_TIMEOUT,
    };
    Ok(NodeConfig {
        id,
        cluster: args
            .cluster
            .or(file.cluster)
            .unwrap_or_else(|| "keel".into()),
        data_dir,
        peer_listen,
        client_listen,
        client_advertise: args.advertise_client_addr.or(file.advertise_client_addr),
        peer_advertise,
        peers,
        join,
        join_as_voter,
        peer_secret,
        peer_secret_transition,
        peer_tls,
        insecure: args.insecure || file.insecure.unwrap_or(false),
        https: args.https || file.https.unwrap_or(false),
        https_client_certs: args.require_client_cert || file.require_client_cert.unwrap_or(false),
        access_file: args.access.or(file.access),
        admin_listen: match args.admin_addr.or(file.admin_addr) {
            Some(addr) => Some(resolve("admin", &addr)?),
            None => None,
        },
        raft,
        kv,
        segment_size_bytes: keel_server::DEFAULT_SEGMENT_SIZE_BYTES,
        max_client_connections: 4096,
        client_idle_timeout,
    })
}

/// The largest `--max-value-bytes`: a request is held whole in memory (a compare-and-set
/// body up to twelve times it), and keel's own client reads answers of up to 64 MiB.
const MAX_VALUE_BYTES: usize = keel_client::MAX_VALUE_BYTES;
const _: () = assert!(MAX_VALUE_BYTES == keel_kv::LARGEST_VALUE_LIMIT);
/// The largest `--max-key-bytes`.
const MAX_KEY_BYTES: usize = 1 << 20;

fn at_most(flag: &str, value: usize, max: usize) -> Result<usize, CliError> {
    if value > max {
        return Err(CliError::Config(format!(
            "{flag} {value} is too large: at most {max}"
        )));
    }
    Ok(value)
}

/// Reads the peer secret, warning if other users may read it.
fn read_secret(path: &Path) -> Result<PeerSecret, CliError> {
    let secret = PeerSecret::from_file(path).map_err(|e| CliError::Config(e.0))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "peer secret {} can be read by other users (mode {:o}); chmod 600 it",
                path.display(),
                metadata.permissions().mode() & 0o777
            );
        }
    }
    Ok(secret)
}

/// The longest time a setting in milliseconds may give (a day): far beyond any sensible
/// timeout, and far from where doubling it or adding it to the clock would overflow.
const MAX_MILLIS: u64 = 86_400_000;

fn millis(flag: &str, ms: u64) -> Result<Duration, CliError> {
    if ms > MAX_MILLIS {
        return Err(CliError::Config(format!(
            "{flag} {ms} is too long: at most {MAX_MILLIS} (a day)"
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// Runs one node until SIGINT or SIGTERM, then shuts it down cleanly.
pub async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut config = node_config(args)?;
    let limit = raise_open_file_limit();
    config.max_client_connections = client_connection_cap(config.max_client_connections, limit);
    let node = Node::start(config)
        .await
        .map_err(|e| CliError::Start(e.to_string()))?;
    wait_for_signal_reloading(&node).await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

/// File descriptors a node keeps for everything but client connections: its log segments and
/// snapshots, peer connections, connections forwarding to the leader, and the runtime's own.
const RESERVED_FILES: u64 = 512;

/// Raises this process's soft limit on open files to its hard limit (many systems start
/// processes at 1024, far below what a server with thousands of clients needs), and returns the
/// soft limit in force after. Logged either way.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
        return 1024;
    }
    let soft: u64 = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                "raised the open-file limit from {soft} to {}",
                limit.rlim_max
            );
            return limit.rlim_max;
        }
        tracing::warn!(
            "cannot raise the open-file limit from {soft}: {}",
            std::io::Error::last_os_error()
        );
    }
    soft
}

/// The client connections a node with `limit` open files takes at once: at most `wanted`, and
/// no more than three quarters of what [`RESERVED_FILES`] leaves, so that clients cannot use up
/// the descriptors the log and the peers need (running out stops a node's storage).
fn client_connection_cap(wanted: usize, limit: u64) -> usize {
    let room = limit.saturating_sub(RESERVED_FILES) / 4 * 3;
    let cap = wanted
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(16);
    if cap < wanted {
        tracing::warn!(
            "client connections capped at {cap} by the open-file limit of {limit} (raise it: \
             ulimit -n, or LimitNOFILE= in a systemd unit)"
        );
    }
    cap
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM; reloads the node's certificates and access file
/// on SIGHUP.
async fn wait_for_signal_reloading(node: &Node) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return wait_for_signal().await;
    };
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading certificates and the access file");
                if let Err(error) = node.reload_certificates() {
                    tracing::error!("cannot reload the certificates, keeping the old ones: {error}");
                }
                if let Err(error) = node.reload_access() {
                    tracing::error!("cannot reload the access file, keeping the grants in use: {error}");
                }
            }
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            id: Some(1),
            data_dir: Some("/tmp/x".into()),
            peer_addr: Some("127.0.0.1:7081".into()),
            client_addr: Some("127.0.0.1:8081".into()),
            peers: Some("1=127.0.0.1:7081,2=127.0.0.1:7082".into()),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn client_connections_fit_in_the_open_file_limit() {
        assert_eq!(client_connection_cap(4096, 1_048_576), 4096);
        assert_eq!(client_connection_cap(4096, 1024), 384);
        assert_eq!(
            client_connection_cap(4096, 100),
            16,
            "never below a handful"
        );
    }

    #[test]
    fn flags_make_a_config() {
        let config = node_config(args()).unwrap();
        assert_eq!(config.peers.len(), 2);
        assert_eq!(config.cluster, "keel");
        assert_eq!(
            config.client_idle_timeout,
            keel_server::node::DEFAULT_CLIENT_IDLE_TIMEOUT
        );
        let quick = ServeArgs {
            client_idle_timeout_ms: Some(1500),
            ..args()
        };
        assert_eq!(
            node_config(quick).unwrap().client_idle_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(node_config(args()).unwrap().peer_tls, None);
        // --certs DIR names node ID's files in DIR; a flag names another file.
        let tls = ServeArgs {
            certs: Some("/etc/keel/certs".into()),
            peer_key: Some("/secure/key.pem".into()),
            ..args()
        };
        let files = node_config(tls).unwrap().peer_tls.unwrap();
        assert_eq!(files.ca, Path::new("/etc/keel/certs/ca.pem"));
        assert_eq!(files.cert, Path::new("/etc/keel/certs/node-1.pem"));
        assert_eq!(files.key, Path::new("/secure/key.pem"));
    }

    #[test]
    fn config_errors_say_what_to_fix() {
        let err = |a: ServeArgs| node_config(a).unwrap_err().to_string();
        assert_eq!(
            err(ServeArgs { id: None, ..args() }),
            "missing --id (or `id` in the config file)"
        );
        assert!(
            err(ServeArgs {
                id: Some(3),
                ..args()
            })
            .contains("node 3 is not among the peers")
        );
        assert!(
            err(ServeArgs {
                peers: Some("1=nowhere".into()),
                ..args()
            })
            .contains("bad node 1's peer address")
        );
        assert!(
            err(ServeArgs {
                peers: Some("one=127.0.0.1:1".into()),
                ..args()
            })
            .contains("is not a node id")
        );
        assert!(
            err(ServeArgs {
                client_addr: Some("127.0.0.1".into()),
                ..args()
            })
            .contains("bad --client-addr address")
        );
        assert!(
            err(ServeArgs {
                heartbeat_ms: Some(900),
                ..args()
            })
            .contains("heartbeat_interval")
        );
        assert_eq!(
            err(ServeArgs {
                max_value_bytes: Some((64 << 20) + 1),
                ..args()
            }),
            "--max-value-bytes 67108865 is too large: at most 67108864"
        );
        assert!(
            err(ServeArgs {
                max_key_bytes: Some(usize::MAX),
                ..args()
            })
            .starts_with("--max-key-bytes 18446744073709551615 is too large")
        );
        let largest = node_config(ServeArgs {
            max_value_bytes: Some(64 << 20),
            ..args()
        })
        .expect("64 MiB values are allowed");
        assert_eq!(largest.kv.max_value_bytes, 64 << 20);
    }

    #[test]
    fn a_config_file_is_read_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("keel-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keel.toml");
        std::fs::write(
            &path,
            "id = 2\ndata_dir = \"/tmp/n2\"\npeer_addr = \"127.0.0.1:7082\"\nclient_addr = \"127.0.0.1:8082\"\n\
             [peers]\n1 = \"127.0.0.1:7081\"\n2 = \"127.0.0.1:7082\"\n",
        )
        .unwrap();
        let config = node_config(ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(config.id, 2);
        assert!(config.peer_secret.is_none());

        let secret = dir.join("secret");
        std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
        let with_secret = |path: &Path| {
            node_config(ServeArgs {
                peer_secret_file: Some(path.to_path_buf()),
                ..args()
            })
        };
        assert!(with_secret(&secret).unwrap().peer_secret.is_some());
        let e = node_config(ServeArgs {
            peer_secret_transition: true,
            ..args()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "--peer-secret-transition needs --peer-secret-file: the secret to move to"
        );
        let moving = node_config(ServeArgs {
            peer_secret_file: Some(secret.clone()),
            peer_secret_transition: true,
            ..args()
        })
        .unwrap();
        assert!(moving.peer_secret_transition);
        std::fs::write(&secret, "short\n").unwrap();
        let e = with_secret(&secret).unwrap_err().to_string();
        assert!(e.contains("must be 16 to 4096 bytes long"), "{e}");
        let e = with_secret(&dir.join("missing")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read peer secret"), "{e}");
        std::fs::write(
            &path,
            format!("peer_secret_file = {:?}\n", secret.display()),
        )
        .unwrap();
        let e = node_config(ServeArgs {
            config: Some(path.clone()),
            ..args()
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("must be 16 to 4096"),
            "the file's key is read: {e}"
        );

        std::fs::write(&path, "id = 2\nbogus = 1\n").unwrap();
        let e = node_config(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
