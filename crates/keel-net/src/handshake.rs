//! Both halves of the handshake that opens every connection.
//!
//! The dialer sends a [`Hello`]; the acceptor checks it and answers with a [`HelloAck`] or a
//! hello_reject carrying the reason, after which it closes the connection. Both sides learn
//! where the other serves clients.

use std::collections::BTreeMap;
use std::sync::Arc;

use keel::NodeId;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::config::NetConfig;
use crate::framed::{ConnError, FrameReader};
use crate::peer::Peer;
use crate::wire::{self, FrameKind, Hello, HelloAck};

/// The largest frame either side reads before the handshake completes: room for a hello, an
/// ack or a reject (a client address is at most 1024 bytes), so that anyone who can reach the
/// peer port cannot make a node buffer `max_frame_bytes` per connection before saying who it
/// is. The connection's reader is raised to `max_frame_bytes` once the peer is accepted.
pub(crate) const HANDSHAKE_MAX_FRAME_BYTES: usize = 8 << 10;

/// Why an acceptor refuses a dialer. The text goes into the reject frame and the log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("claims cluster {claimed}, this node is in cluster {ours}")]
    WrongCluster { claimed: u64, ours: u64 },
    #[error("calls node {target}, but this is node {ours}")]
    WrongTarget { target: NodeId, ours: NodeId },
    #[error("claims node id {0}, which is this node's own id")]
    OwnId(NodeId),
    #[error("claims node id {claimed}, which is not a configured peer (peers: {peers:?})")]
    NotAPeer { claimed: NodeId, peers: Vec<NodeId> },
    #[error("bad hello: {0}")]
    BadHello(ConnError),
}

/// A connection whose handshake succeeded.
pub(crate) struct Connected {
    pub reader: FrameReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

/// Sets the socket options every connection uses; failures only cost performance or dead-peer
/// detection, so they are logged, not fatal.
pub(crate) fn tune(stream: &TcpStream, config: &NetConfig) {
    // Frames are written in batches already; Nagle's algorithm would only add latency.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!("setting TCP_NODELAY failed: {error}");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(timeout) = config.tcp_user_timeout
        && let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout))
    {
        tracing::debug!("setting TCP_USER_TIMEOUT failed: {error}");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = config;
}

/// Dials `peer` and introduces this node. On success the peer's client address is recorded.
/// The caller bounds the time it takes.
pub(crate) async fn dial(peer: &Peer, config: &NetConfig) -> Result<Connected, ConnError> {
    let stream = TcpStream::connect(peer.addr).await?;
    tune(&stream, config);
    let (read, mut writer) = stream.into_split();
    let hello = Hello {
        cluster_id: config.cluster_id,
        from: config.node_id,
        to: peer.id,
        client_addr: config.client_addr.clone(),
    };
    writer.write_all(&hello.encode()).await?;
    let mut reader = FrameReader::new(read, HANDSHAKE_MAX_FRAME_BYTES);
    let frame = reader.next_frame().await?;
    match frame.kind {
        FrameKind::HelloAck => {
            let ack = HelloAck::decode(frame.body).map_err(|error| ConnError::Body {
                kind: FrameKind::HelloAck,
                error,
            })?;
            peer.set_client_addr(ack.client_addr);
            reader.set_max_frame_bytes(config.max_frame_bytes);
            Ok(Connected { reader, writer })
        }
        FrameKind::HelloReject => Err(ConnError::Refused(wire::decode_text(&frame.body))),
        kind => Err(ConnError::Unexpected(kind)),
    }
}

/// Reads the dialer's hello and accepts or refuses it. On success the dialer is one of `peers`,
/// its client address is recorded and the ack is sent; on a refusal the reject is sent (if the
/// socket still takes it) and the caller closes the connection. The caller bounds the time.
pub(crate) async fn accept(
    config: &NetConfig,
    peers: &BTreeMap<NodeId, Arc<Peer>>,
    reader: &mut FrameReader<OwnedReadHalf>,
    writer: &mut OwnedWriteHalf,
) -> Result<Arc<Peer>, Refusal> {
    let checked = match read_hello(reader).await {
        Ok(hello) => check(config, peers, &hello).map(|peer| (peer, hello)),
        Err(error) => Err(Refusal::BadHello(error)),
    };
    match checked {
        Ok((peer, hello)) => {
            peer.set_client_addr(hello.client_addr);
            let ack = HelloAck {
                client_addr: config.client_addr.clone(),
            };
            writer
                .write_all(&ack.encode())
                .await
                .map_err(|error| Refusal::BadHello(error.into()))?;
            reader.set_max_frame_bytes(config.max_frame_bytes);
            Ok(peer)
        }
        Err(refusal) => {
            if !matches!(
                refusal,
                Refusal::BadHello(ConnError::Closed | ConnError::Io(_))
            ) {
                let _ = writer
                    .write_all(&wire::encode_reject(&refusal.to_string()))
                    .await;
            }
            Err(refusal)
        }
    }
}

async fn read_hello(reader: &mut FrameReader<OwnedReadHalf>) -> Result<Hello, ConnError> {
    let frame = reader.next_frame().await?;
    if frame.kind != FrameKind::Hello {
        return Err(ConnError::Unexpected(frame.kind));
    }
    Hello::decode(frame.body).map_err(|error| ConnError::Body {
        kind: FrameKind::Hello,
        error,
    })
}

/// The acceptor's rules: same cluster, the dialer calls this node, and it is a configured peer
/// other than this node.
fn check(
    config: &NetConfig,
    peers: &BTreeMap<NodeId, Arc<Peer>>,
    hello: &Hello,
) -> Result<Arc<Peer>, Refusal> {
    if hello.cluster_id != config.cluster_id {
        return Err(Refusal::WrongCluster {
            claimed: hello.cluster_id,
            ours: config.cluster_id,
        });
    }
    if hello.to != config.node_id {
        return Err(Refusal::WrongTarget {
            target: hello.to,
            ours: config.node_id,
        });
    }
    if hello.from == config.node_id {
        return Err(Refusal::OwnId(hello.from));
    }
    peers
        .get(&hello.from)
        .cloned()
        .ok_or_else(|| Refusal::NotAPeer {
            claimed: hello.from,
            peers: peers.keys().copied().collect(),
        })
}
