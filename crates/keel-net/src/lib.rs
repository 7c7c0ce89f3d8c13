//! keel-net: carries keel's RPCs between processes over TCP.
//!
//! [`TcpTransport`] is the client side: it implements [`keel::Transport`] with one long-lived
//! connection per peer, on which any number of requests are in flight at once, told apart by
//! request ids. [`TcpServer`] is the server side: it accepts peers' connections and hands their
//! requests to [`keel::Raft::handle`]. Both come from one [`NetConfig`].
//!
//! # A three-node cluster on loopback
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use keel::{Applied, Config, MemStorage, Raft, Role};
//! use keel_net::{NetConfig, TcpServer, TcpTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Bind every listener first (port 0: the OS picks), so the peers' addresses are known.
//! let listeners: Vec<_> = (0..3)
//!     .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
//!     .collect();
//! let peers: BTreeMap<u64, _> =
//!     (1..=3).zip(listeners.iter().map(|l| l.local_addr().unwrap())).collect();
//!
//! let mut nodes = Vec::new();
//! for (id, listener) in (1..=3).zip(listeners) {
//!     let addr = peers[&id];
//!     let config = NetConfig::new(7, id, addr, format!("127.0.0.1:{}", 8000 + id), peers.clone());
//!     config.check_raft_config(&Config::fast_elections()).unwrap();
//!     let transport = TcpTransport::new(config).unwrap();
//!     let server = TcpServer::from_listener(listener, &transport).unwrap();
//!     let storage = Arc::new(MemStorage::new());
//!     let (raft, applied) =
//!         Raft::new(id, vec![1, 2, 3], Config::fast_elections(), storage, transport.clone())
//!             .unwrap();
//!     server.serve(raft.clone());
//!     nodes.push((raft, applied, server, transport));
//! }
//!
//! let leader = loop {
//!     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//!     if let Some(i) = nodes.iter().position(|(r, ..)| r.status().role == Role::Leader) {
//!         break i;
//!     }
//! };
//! let proposed = nodes[leader].0.propose(Bytes::from("hello")).unwrap();
//! for (_, applied, ..) in &mut nodes {
//!     while let Some(item) = applied.next().await {
//!         if let Applied::Entry(e) = item && e.index == proposed.index {
//!             assert_eq!(e.command(), b"hello");
//!             break;
//!         }
//!     }
//! }
//! // The handshakes of its connections told the leader where the others serve clients.
//! let (raft, _, _, transport) = &nodes[leader];
//! for id in [1, 2, 3].into_iter().filter(|id| *id != raft.id()) {
//!     assert_eq!(transport.peer_client_addr(id), Some(format!("127.0.0.1:{}", 8000 + id)));
//! }
//! for (raft, _, server, transport) in &nodes {
//!     raft.shutdown().await;
//!     server.shutdown().await;
//!     transport.shutdown().await;
//! }
//! # }
//! ```
//!
//! # Frames
//!
//! Every message is one frame; integers are little-endian ([`wire`] has the details).
//!
//! ```text
//!  0        4         5      6              14
//!  +--------+---------+------+--------------+------------------------------+
//!  | len    | version | kind | request_id   | body (len - 10 bytes)        |
//!  | u32    | u8 = 1  | u8   | u64          |                              |
//!  +--------+---------+------+--------------+------------------------------+
//!
//!  kind 1 hello         magic "KEEL", cluster_id u64, from u64, to u64, client_addr (u16 len + UTF-8)
//!                       [, nonce (32 bytes) with a peer secret]
//!       2 hello_ack     client_addr (u16 len + UTF-8)
//!       3 hello_reject  reason (UTF-8)
//!       4 request       keel::codec::encode_request bytes
//!       5 response      keel::codec::encode_response bytes, same request_id as the request
//!       6 error         reason (UTF-8): the request with this id gets no reply
//!       7 challenge     nonce (32 bytes), proof (32 bytes): the acceptor's, with a peer secret
//!       8 proof         proof (32 bytes): the dialer's, with a peer secret
//! ```
//!
//! A length above `max_frame_bytes` (default 64 MiB) or below the header, a version other than
//! [`wire::VERSION`], an unknown kind, a body that does not decode, a frame kind the protocol
//! does not allow at that point, or end of stream inside a frame: each closes that connection
//! with a log line saying which, and nothing else. The length is checked before anything is
//! read or allocated for the frame, and a frame's buffer grows with the bytes that arrive, not
//! with the length it claims.
//!
//! # Handshake
//!
//! ```text
//!  dialer                                           acceptor
//!    | -- hello(cluster_id, from, to, client_addr) --> |  same cluster? to == itself?
//!    |                                                 |  not itself, not removed?
//!    | <------------- hello_ack(client_addr) --------- |  yes: serve requests
//!    | <------------- hello_reject(reason) ----------- |  no: log the reason, close
//! ```
//!
//! With a peer secret ([`NetConfig::peer_secret`], see [`auth`]) both sides prove they hold it
//! before anything else is believed, the hello's client address included:
//!
//! ```text
//!  dialer                                           acceptor
//!    | -- hello(..., nonce_d) ------------------------> |  the checks above
//!    | <------------ challenge(nonce_a, proof_a) ------ |
//!    |  proof_a right? else close                       |
//!    | -- proof(proof_d) -----------------------------> |  proof_d right?
//!    | <------------- hello_ack(client_addr) ---------- |  yes: serve requests
//!    | <------------- hello_reject(reason) ------------ |  no: log the reason, close
//! ```
//!
//! A node with a secret refuses a dialer without one and never accepts an acceptor that skips
//! the challenge; a node without one refuses a dialer that sends a nonce. So members with
//! different settings refuse each other, each with a log line naming the cause. (A build from
//! before peer secrets refuses a hello with a nonce as malformed; the dialer's log line then
//! says that the peer may be such a build.)
//!
//! The whole exchange, dialing included, must finish within `handshake_timeout`. A refusal is
//! logged on both sides with its reason, e.g. `refused a connection: peer 10.0.0.5:4411 claims
//! cluster 7, this node is in cluster 3`. Both sides record the other's client address
//! ([`TcpTransport::peer_client_addr`]), so that a node can forward client requests to the
//! leader.
//!
//! # TLS
//!
//! With [`NetConfig::tls`] (see [`tls`]), every connection first runs a TLS 1.3 handshake in
//! which both sides present certificates of the cluster's CA: the dialer checks that the
//! acceptor's names the node it calls, and the acceptor that the dialer's names the node its
//! hello claims. The frames above then travel inside TLS. A dialer without a valid certificate
//! is dropped during the TLS handshake, before it can send a hello, so it learns nothing about
//! the cluster. `cargo bench -p keel-net --bench rpc` prints figures for both.
//!
//! # Membership
//!
//! The address book follows the cluster's configuration (see [`members`]): members added later
//! are dialed at the [`MemberAddrs`] their configuration entry carries, removed members are hung
//! up on once their removal commits and refused after, and a dialer of this cluster that this
//! node does not know yet is accepted (a joining node hears from the leader first).
//!
//! # What is bounded
//!
//! | what | bound | when it is reached |
//! | --- | --- | --- |
//! | requests awaiting replies from a peer | `max_pending_per_peer` | the call fails at once (`TransportError::Overloaded`) |
//! | frames queued for a connection | twice `max_pending_per_peer` (room for frames of callers that gave up) | as above |
//! | one frame | 8 KiB until the handshake completes, then `max_frame_bytes` | the connection closes |
//! | request handlers of one incoming connection | `max_handlers_per_connection` | the server stops reading that connection |
//! | incoming connections | `max_incoming_connections`, and one per peer (a newer one closes the older) | the server stops accepting |
//! | connections in their handshake from one IP address | `max_handshakes_per_addr` | more from there are closed at once |
//! | dial attempts | backoff from `backoff_min` doubling to `backoff_max`, reset by a handshake | calls fail at once while waiting |
//! | a handshake | `handshake_timeout` | the connection closes |
//! | unacknowledged sent data | `tcp_user_timeout` (Linux) | the kernel fails the connection; it is redialed |
//!
//! When a connection drops, every request pending on it fails at once with
//! `TransportError::Unreachable`; a request the server answers with an error frame (its node is
//! shutting down) fails the same way, without waiting for Raft's timeout.
//!
//! # Throughput
//!
//! A caller encodes its request in its own task and queues the frame; the connection's one
//! writer lets the other ready tasks run first (one `yield_now`, no timer), then takes
//! everything queued and writes it with one vectored write, so frames go out as soon as they
//! are queued and many share a system call under load. Readers pull whatever the socket has
//! into one buffer and split frames off it without copying. `TCP_NODELAY` is set. The server
//! answers a request inline when its handler is ready at the first poll, and spawns a task only
//! for one that waits (for the disk, typically). `cargo bench -p keel-net --bench rpc` prints
//! round trips per second over loopback.

#![warn(missing_docs)]

pub mod auth;
pub mod certs;
mod config;
mod framed;
/// Entry points for the fuzz targets in `fuzz/` and the corpus-replay tests; not part of the API.
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod link;
pub mod members;
mod peer;
mod server;
mod stats;
pub mod tls;
mod transport;
pub mod wire;

pub use auth::PeerSecret;
pub use certs::{CertError, ClusterCa, Issued};
pub use config::{ConfigError, MAX_CLIENT_ADDR_BYTES, MIN_FRAME_BYTES, NetConfig, is_client_addr};
pub use members::{MemberAddrs, MemberAddrsError};
pub use server::{RpcHandler, TcpServer};
pub use stats::PeerStats;
pub use tls::{Holder, PeerTls, TlsError, TlsFiles};
pub use transport::TcpTransport;

/// A cluster name as the 64-bit id the transport and the data dir carry (FNV-1a, stable across
/// versions and platforms).
pub fn cluster_id(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_stable_and_distinct() {
        assert_eq!(cluster_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(cluster_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(cluster_id("keel"), cluster_id("keel-dev"));
    }
}
