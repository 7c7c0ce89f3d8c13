//! Per-peer counters, for metrics.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use keel::NodeId;

/// Counters of one peer, updated without locks by the connections to and from it.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub rpcs_sent: AtomicU64,
    pub rpcs_failed: AtomicU64,
    pub rpcs_served: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub connects: AtomicU64,
}

/// What [`crate::TcpTransport::stats`] reports about one peer. Counters only grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub id: NodeId,
    /// Where it is dialed, if known (a node that dialed this one before its address was
    /// known has none yet).
    pub addr: Option<SocketAddr>,
    /// Whether the outgoing connection to it is up (handshake done).
    pub connected: bool,
    /// Where it serves clients, as learned from a handshake in either direction.
    pub client_addr: Option<String>,
    /// Requests sent to it (queued for the connection).
    pub rpcs_sent: u64,
    /// Calls to it that failed: refused locally, connection lost, error frame or bad reply.
    pub rpcs_failed: u64,
    /// Requests from it this node's server answered.
    pub rpcs_served: u64,
    /// Bytes sent to it, on both the outgoing and the incoming connection.
    pub bytes_sent: u64,
    /// Bytes received from it, on both connections.
    pub bytes_received: u64,
    /// Successful handshakes of the outgoing connection (1 + reconnections).
    pub connects: u64,
    /// Requests awaiting its reply now.
    pub pending: usize,
}
