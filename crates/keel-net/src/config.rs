//! Settings of a node's network endpoint, shared by its [`crate::TcpTransport`] and
//! [`crate::TcpServer`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keel::NodeId;

use crate::auth::PeerSecret;
use crate::tls::PeerTls;
use crate::wire;

/// Smallest `max_frame_bytes` accepted: room for any handshake frame and a small RPC.
pub const MIN_FRAME_BYTES: usize = 64 << 10;

/// Longest client address a hello or hello_ack carries.
pub const MAX_CLIENT_ADDR_BYTES: usize = 1024;

/// Whether `addr` is a client address a node may be told and forward to: `HOST:PORT` and
/// nothing else, HOST a DNS name or IPv4 address (letters, digits, `-` and dots) or an IPv6
/// address in brackets, PORT 1 to 65535, at most [`MAX_CLIENT_ADDR_BYTES`] in all. Peers' hellos
/// and configuration entries carry such addresses, and a node builds URLs from them: no path,
/// query, user or scheme may ride along.
pub fn is_client_addr(addr: &str) -> bool {
    if addr.len() > MAX_CLIENT_ADDR_BYTES {
        return false;
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let port_ok = (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            (1..=253).contains(&host.len())
                && host.split('.').all(|label| {
                    (1..=63).contains(&label.len())
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    };
    port_ok && host_ok
}

/// Where a node listens, who its peers are, and the bounds of its connections.
///
/// Every member of a cluster can be given the same `peers` map: the entry for the node's own id,
/// if present, is ignored.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Identifies the cluster; a peer claiming another cluster is refused. Guards against a
    /// node of one cluster joining another by a stale address.
    pub cluster_id: u64,
    /// This node's id.
    pub node_id: NodeId,
    /// Where [`crate::TcpServer::bind`] listens for peers.
    pub listen_addr: SocketAddr,
    /// Where this node serves clients (its HTTP address), told to peers in the handshake so that
    /// they can forward client requests here. May be empty.
    pub client_addr: String,
    /// The peers' ids and the addresses their servers listen on.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The secret every member holds; when set, peers must prove they hold it in every
    /// handshake, in both directions (see [`crate::auth`]). Every member must have the same
    /// one, or none.
    pub peer_secret: Option<PeerSecret>,
    /// With a `peer_secret`, also connect with peers that have none, for turning a secret on
    /// in a running cluster without an outage: this node then accepts a dialer that proves
    /// nothing, and dials a peer that turns its proof away with a plain hello. Members that
    /// both hold the secret still prove it to each other. Meant for one round of restarts;
    /// then restart every member without it.
    pub peer_secret_transition: bool,
    /// Mutual TLS between members (see [`crate::tls`]): every connection is encrypted, and each
    /// side proves with a certificate of the cluster's CA which node it is. Every member must
    /// have it, or none.
    pub tls: Option<Arc<PeerTls>>,
    /// Largest frame accepted or sent, counting everything after the length field. Must exceed
    /// the largest RPC Raft sends; see [`NetConfig::check_raft_config`].
    pub max_frame_bytes: usize,
    /// Requests awaiting a reply from one peer; a call beyond it fails at once.
    pub max_pending_per_peer: usize,
    /// Requests of one incoming connection handled at once; past it the server stops reading
    /// that connection until one finishes (backpressure through TCP).
    pub max_handlers_per_connection: usize,
    /// Incoming connections open at once; past it the server stops accepting.
    pub max_incoming_connections: usize,
    /// Incoming connections from one IP address in their handshake at once; more from there
    /// are closed at once, so that silent connections from one address cannot take every slot
    /// (members on one machine share an address: leave room for them all).
    pub max_handshakes_per_addr: usize,
    /// Time for a connection's handshake: dialing, hello and answer.
    pub handshake_timeout: Duration,
    /// First wait before redialing a peer after a failed dial or a lost connection.
    pub backoff_min: Duration,
    /// The wait doubles after each failed dial up to this; a successful handshake resets it.
    pub backoff_max: Duration,
    /// How long sent data may stay unacknowledged before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`, Linux only), so that a connection to a machine that died fails and
    /// is redialed instead of hanging. `None` keeps the system default (many minutes).
    pub tcp_user_timeout: Option<Duration>,
}

/// A [`NetConfig`] that cannot work, with what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid network configuration: {0}")]
pub struct ConfigError(pub String);

impl NetConfig {
    /// A configuration with default bounds and timeouts.
    pub fn new(
        cluster_id: u64,
        node_id: NodeId,
        listen_addr: SocketAddr,
        client_addr: impl Into<String>,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> NetConfig {
        NetConfig {
            cluster_id,
            node_id,
            listen_addr,
            client_addr: client_addr.into(),
            peers,
            peer_secret: None,
            peer_secret_transition: false,
            tls: None,
            max_frame_bytes: 64 << 20,
            max_pending_per_peer: 1024,
            max_handlers_per_connection: 256,
            max_incoming_connections: 64,
            max_handshakes_per_addr: 16,
            handshake_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            tcp_user_timeout: Some(Duration::from_secs(10)),
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(msg));
        if !(MIN_FRAME_BYTES..=u32::MAX as usize).contains(&self.max_frame_bytes) {
            return fail(format!(
                "max_frame_bytes ({}) must be between {MIN_FRAME_BYTES} and {}",
                self.max_frame_bytes,
                u32::MAX
            ));
        }
        if self.client_addr.len() > MAX_CLIENT_ADDR_BYTES {
            return fail(format!(
                "client_addr is {} bytes long, the most is {MAX_CLIENT_ADDR_BYTES}",
                self.client_addr.len()
            ));
        }
        if !self.client_addr.is_empty() && !is_client_addr(&self.client_addr) {
            return fail(format!(
                "client_addr {:?} is not HOST:PORT",
                self.client_addr
            ));
        }
        for (name, value) in [
            ("max_pending_per_peer", self.max_pending_per_peer),
            (
                "max_handlers_per_connection",
                self.max_handlers_per_connection,
            ),
            ("max_incoming_connections", self.max_incoming_connections),
            ("max_handshakes_per_addr", self.max_handshakes_per_addr),
        ] {
            if value == 0 {
                return fail(format!("{name} must be positive"));
            }
        }
        if self.handshake_timeout.is_zero() || self.backoff_min.is_zero() {
            return fail("handshake_timeout and backoff_min must be positive".into());
        }
        if self.backoff_min > self.backoff_max {
            return fail(format!(
                "backoff_min ({:?}) must not exceed backoff_max ({:?})",
                self.backoff_min, self.backoff_max
            ));
        }
        if self.peer_secret_transition && self.peer_secret.is_none() {
            return fail("peer_secret_transition needs a peer_secret to move to".into());
        }
        if self.tcp_user_timeout.is_some_and(|t| t.is_zero()) {
            return fail(
                "tcp_user_timeout must be positive (or None for the system default)".into(),
            );
        }
        Ok(())
    }

    /// Checks that the largest RPC `raft` sends (a full AppendEntries or snapshot chunk) fits in
    /// a frame, with room for the headers.
    pub fn check_raft_config(&self, raft: &keel::Config) -> Result<(), ConfigError> {
        // The core codec's own headers are under 64 bytes; the rest is entries or chunk data.
        let largest =
            raft.max_append_bytes.max(raft.snapshot_chunk_bytes) + 64 + wire::HEADER_BYTES;
        if largest > self.max_frame_bytes {
            return Err(ConfigError(format!(
                "max_frame_bytes ({}) is smaller than Raft's largest RPC (about {largest} bytes, \
                 from max_append_bytes {} and snapshot_chunk_bytes {})",
                self.max_frame_bytes, raft.max_append_bytes, raft.snapshot_chunk_bytes
            )));
        }
        Ok(())
    }

    /// The peers to dial: `peers` without this node itself.
    pub(crate) fn remote_peers(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.peers
            .iter()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(id, addr)| (*id, *addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NetConfig {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        NetConfig::new(1, 1, addr, "127.0.0.1:8000", BTreeMap::from([(2, addr)]))
    }

    #[test]
    fn defaults_are_valid_and_fit_the_default_raft_config() {
        config().validate().unwrap();
        config()
            .check_raft_config(&keel::Config::default())
            .unwrap();
    }

    #[test]
    fn client_addresses_are_host_and_port_and_nothing_else() {
        for good in [
            "127.0.0.1:8081",
            "node-4.example.com:443",
            "[::1]:8081",
            "localhost:1",
            "a:65535",
        ] {
            assert!(is_client_addr(good), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "host:0",
            "host:65536",
            "host:+80",
            ":80",
            "evil.example/x?:80",
            "user@host:80",
            "http://host:80",
            "host :80",
            "ho..st:80",
            "[::1:80",
            "[nope]:80",
            "host:80\r\nX: y",
        ] {
            assert!(!is_client_addr(bad), "{bad:?}");
        }
        assert!(!is_client_addr(&format!("{}:80", "a".repeat(300))));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let mut c = config();
        c.max_frame_bytes = 100;
        assert!(c.validate().unwrap_err().0.contains("max_frame_bytes"));
        let mut c = config();
        c.backoff_min = Duration::from_secs(5);
        assert!(c.validate().unwrap_err().0.contains("backoff_min"));
        let mut c = config();
        c.max_pending_per_peer = 0;
        assert!(c.validate().unwrap_err().0.contains("max_pending_per_peer"));
        let mut c = config();
        c.max_frame_bytes = 1 << 20;
        let raft = keel::Config::default(); // 4 MiB appends
        assert!(
            c.check_raft_config(&raft)
                .unwrap_err()
                .0
                .contains("max_append_bytes")
        );
    }
}
