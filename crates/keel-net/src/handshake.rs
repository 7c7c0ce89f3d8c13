//! Both halves of the handshake that opens every connection.
//!
//! The dialer sends a [`Hello`]; the acceptor checks it and answers with a [`HelloAck`] or a
//! hello_reject carrying the reason, after which it closes the connection. With a peer secret,
//! a [`Challenge`] and a [`ProofFrame`] come between the hello and the answer, and each side
//! checks the other's proof (see [`crate::auth`]). Both sides learn where the other serves
//! clients, and believe it only once the handshake succeeded.

use std::sync::Arc;

use keel::NodeId;
use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::auth::{self, Role, Transcript};
use crate::config::NetConfig;
use crate::framed::{ConnError, FrameReader, ReadHalf, WriteHalf};
use crate::peer::Peer;
use crate::transport::TcpTransport;
use crate::wire::{self, Challenge, FrameKind, Hello, HelloAck, ProofFrame};

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
    #[error("claims node id {0}, {REMOVED}")]
    Removed(NodeId),
    #[error("bad hello: {0}")]
    BadHello(ConnError),
    #[error(
        "node {0} sent no proof of the peer secret this node requires: give every member the \
         same peer_secret_file"
    )]
    NoProof(NodeId),
    #[error(
        "node {0} has a peer secret and this node has none: give every member the same \
         peer_secret_file, or none"
    )]
    UnexpectedSecret(NodeId),
    #[error(
        "node {0} sent a wrong proof of the peer secret (a member with another secret hangs up \
         instead: this one is no member)"
    )]
    WrongSecret(NodeId),
    #[error("node {from} gave no proof of the peer secret: {error}")]
    BadProof { from: NodeId, error: ConnError },
    #[error(
        "a dialer claiming to be node {0} hung up instead of proving it holds the peer secret: \
         a member does that when this node's proof fails it, so their secrets may differ"
    )]
    HungUp(NodeId),
    #[error("this node cannot make a random nonce: {0}")]
    NoNonce(std::io::Error),
    #[error("failed the TLS handshake: {0}")]
    Tls(std::io::Error),
    /// A refusal whose reason the dialer is not told: it has not proven it belongs to the
    /// cluster, and the reason would tell it about the cluster.
    #[error(transparent)]
    Hidden(Box<Refusal>),
    #[error("claims to be node {0}, but its certificate does not name that node of this cluster")]
    NotCertified(NodeId),
}

/// Words of the [`Refusal::Removed`] reason, by which a removed node learns to stop dialing.
const REMOVED: &str = "which was removed from the cluster";

/// Whether a dial failed because the acceptor says this node was removed from the cluster.
pub(crate) fn says_removed(error: &ConnError) -> bool {
    matches!(error, ConnError::Refused(reason) if reason.contains(REMOVED))
}

/// Words of the [`Refusal::NoProof`] reason, by which a dialer in transition mode learns to
/// prove the secret after all.
const NO_PROOF: &str = "sent no proof of the peer secret this node requires";
/// Words of the [`Refusal::UnexpectedSecret`] reason, by which a dialer in transition mode
/// learns to dial without a proof; and of a build from before peer secrets, which reads the
/// nonce as junk after the hello.
const NO_SECRET_HERE: [&str; 2] = ["has a peer secret and this node has none", "trailing bytes"];

/// What a dialer is told when the reason is [`Refusal::Hidden`].
pub(crate) const HIDDEN_REASON: &str = "refused (the node's log says why)";

impl Refusal {
    /// The reason sent to the dialer.
    fn public_reason(&self) -> String {
        match self {
            Refusal::Hidden(_) => HIDDEN_REASON.to_string(),
            refusal => refusal.to_string(),
        }
    }

    /// Whether the dialer is gone, so that a reject would not reach it.
    fn dialer_gone(&self) -> bool {
        matches!(
            self,
            Refusal::BadHello(ConnError::Closed | ConnError::Io(_))
                | Refusal::HungUp(_)
                | Refusal::BadProof {
                    error: ConnError::Closed | ConnError::Io(_),
                    ..
                }
        )
    }
}

/// A connection whose handshake succeeded.
pub(crate) struct Connected {
    pub reader: FrameReader<ReadHalf>,
    pub writer: WriteHalf,
}

/// Opens a dialed connection: with TLS, the TLS handshake, in which the acceptor must prove it
/// is node `to` of this cluster and this node presents its own certificate.
async fn open_dialed(
    stream: TcpStream,
    to: NodeId,
    config: &NetConfig,
) -> Result<(ReadHalf, WriteHalf), ConnError> {
    match &config.tls {
        None => {
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write)))
        }
        Some(tls) => {
            let connector = tokio_rustls::TlsConnector::from(tls.client_config());
            let stream = connector
                .connect(tls.server_name(to), stream)
                .await
                .map_err(ConnError::Tls)?;
            let (read, write) = tokio::io::split(stream);
            Ok((Box::new(read), Box::new(write)))
        }
    }
}

/// Opens an accepted connection: with TLS, the TLS handshake, in which the dialer must present
/// a certificate of the cluster's CA (returned, to be checked against the id it claims).
pub(crate) async fn open_accepted(
    stream: TcpStream,
    config: &NetConfig,
) -> Result<(ReadHalf, WriteHalf, Option<CertificateDer<'static>>), Refusal> {
    match &config.tls {
        None => {
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write), None))
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
            let stream = acceptor.accept(stream).await.map_err(Refusal::Tls)?;
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.clone().into_owned());
            let (read, write) = tokio::io::split(stream);
            Ok((Box::new(read), Box::new(write), cert))
        }
    }
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

/// Dials `peer` and introduces this node (and, with a peer secret, checks the acceptor's proof
/// and sends its own). On success the peer's client address is recorded. The caller bounds the
/// time it takes.
pub(crate) async fn dial(peer: &Peer, config: &NetConfig) -> Result<Connected, ConnError> {
    let addr = peer.addr.ok_or_else(|| {
        ConnError::Io(std::io::Error::other(format!(
            "no address is known for node {}",
            peer.id
        )))
    })?;
    let stream = TcpStream::connect(addr).await?;
    tune(&stream, config);
    let (read, mut writer) = open_dialed(stream, peer.id, config).await?;
    let nonce = match &config.peer_secret {
        Some(_) if !peer.plain_hello() => Some(auth::nonce()?),
        _ => None,
    };
    let hello = Hello {
        cluster_id: config.cluster_id,
        from: config.node_id,
        to: peer.id,
        client_addr: config.client_addr.clone(),
        nonce,
    };
    writer.write_all(&hello.encode()).await?;
    let mut reader = FrameReader::new(read, HANDSHAKE_MAX_FRAME_BYTES);
    let mut frame = reader.next_frame().await?;
    if let (Some(secret), Some(dialer_nonce)) = (&config.peer_secret, nonce) {
        match frame.kind {
            FrameKind::Challenge => {}
            // Accepting without a challenge is what a node without the secret does, or
            // anything else that answers on the peer's address: never believe it.
            FrameKind::HelloAck => {
                return Err(ConnError::Auth(format!(
                    "node {} accepted without proving it holds the peer secret: it has no \
                     peer_secret_file, or it is not a member",
                    peer.id
                )));
            }
            FrameKind::HelloReject => return Err(refused(peer, config, true, &frame.body)),
            kind => return Err(ConnError::Unexpected(kind)),
        }
        let challenge = Challenge::decode(frame.body).map_err(|error| ConnError::Body {
            kind: FrameKind::Challenge,
            error,
        })?;
        let transcript = Transcript {
            cluster_id: config.cluster_id,
            dialer: config.node_id,
            acceptor: peer.id,
            dialer_nonce,
            acceptor_nonce: challenge.nonce,
        };
        if !secret.verify(Role::Acceptor, &transcript, &challenge.proof) {
            return Err(ConnError::Auth(format!(
                "node {} failed to prove it holds this node's peer secret: their secrets differ",
                peer.id
            )));
        }
        let proof = ProofFrame {
            proof: secret.proof(Role::Dialer, &transcript),
        };
        writer.write_all(&proof.encode()).await?;
        frame = reader.next_frame().await?;
    }
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
        FrameKind::HelloReject => Err(refused(peer, config, nonce.is_some(), &frame.body)),
        kind => Err(ConnError::Unexpected(kind)),
    }
}

/// The dialer's error for a hello_reject with `body`. A refusal about peer secrets also tells
/// a dialer in transition mode how to dial next, and a reject from a build before peer secrets
/// gets a hint.
fn refused(peer: &Peer, config: &NetConfig, offered_proof: bool, body: &[u8]) -> ConnError {
    let mut reason = wire::decode_text(body);
    if offered_proof && NO_SECRET_HERE.iter().any(|words| reason.contains(words)) {
        if config.peer_secret_transition {
            peer.set_plain_hello(true);
            reason.push_str(" (transition mode: dialing it again without a proof)");
        } else if reason.contains(NO_SECRET_HERE[1]) {
            reason.push_str(
                " (the peer may be a build without peer secrets: upgrade it, or remove the \
                 secret from every member)",
            );
        }
    }
    if !offered_proof && config.peer_secret.is_some() && reason.contains(NO_PROOF) {
        // Dialed without a proof in transition mode, and the peer now wants one.
        peer.set_plain_hello(false);
    }
    ConnError::Refused(reason)
}

/// Reads the dialer's hello and accepts or refuses it. On success the dialer is of this
/// cluster and was not removed from it (and proved it holds the peer secret, if this node has
/// one), its client address is recorded and the ack is sent; on a refusal the reject is sent (if
/// the socket still takes it) and the caller closes the connection. The caller bounds the time.
pub(crate) async fn accept(
    config: &NetConfig,
    transport: &TcpTransport,
    cert: Option<&CertificateDer<'_>>,
    reader: &mut FrameReader<ReadHalf>,
    writer: &mut WriteHalf,
) -> Result<Arc<Peer>, Refusal> {
    let checked = async {
        let hello = read_hello(reader).await.map_err(Refusal::BadHello)?;
        if config.tls.is_none() && config.peer_secret.is_some() {
            // The dialer has proven nothing yet: tell it nothing about this cluster until it
            // proves it holds the secret (a dialer of another cluster cannot: the proofs cover
            // the cluster id).
            if hello.cluster_id != config.cluster_id {
                let refusal = Refusal::WrongCluster {
                    claimed: hello.cluster_id,
                    ours: config.cluster_id,
                };
                return Err(Refusal::Hidden(Box::new(refusal)));
            }
            authenticate(config, &hello, reader, writer).await?;
            check(config, transport, &hello)?;
        } else {
            check(config, transport, &hello)?;
            // With TLS the certificate says who the dialer is, before anything else is asked.
            if let Some(tls) = &config.tls
                && !cert.is_some_and(|cert| tls.names(cert, hello.from))
            {
                return Err(Refusal::NotCertified(hello.from));
            }
            authenticate(config, &hello, reader, writer).await?;
        }
        // Only now, proven: a node this one does not know yet gets an entry of its own.
        let peer = transport.accepted_peer(hello.from);
        Ok::<_, Refusal>((peer, hello))
    };
    match checked.await {
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
            if !refusal.dialer_gone() {
                let _ = writer
                    .write_all(&wire::encode_reject(&refusal.public_reason()))
                    .await;
            }
            Err(refusal)
        }
    }
}

/// With a peer secret: sends this node's nonce and proof, and checks the dialer's proof. Both
/// sides must have a secret, or neither.
async fn authenticate(
    config: &NetConfig,
    hello: &Hello,
    reader: &mut FrameReader<ReadHalf>,
    writer: &mut WriteHalf,
) -> Result<(), Refusal> {
    let (secret, dialer_nonce) = match (&config.peer_secret, hello.nonce) {
        (None, None) => return Ok(()),
        (None, Some(_)) => return Err(Refusal::UnexpectedSecret(hello.from)),
        (Some(_), None) if config.peer_secret_transition => {
            tracing::info!(
                peer = hello.from,
                "accepting node {} without a proof of the peer secret (transition mode)",
                hello.from
            );
            return Ok(());
        }
        (Some(_), None) => return Err(Refusal::NoProof(hello.from)),
        (Some(secret), Some(nonce)) => (secret, nonce),
    };
    let bad_proof = |error: ConnError| Refusal::BadProof {
        from: hello.from,
        error,
    };
    let transcript = Transcript {
        cluster_id: config.cluster_id,
        dialer: hello.from,
        acceptor: config.node_id,
        dialer_nonce,
        acceptor_nonce: auth::nonce().map_err(Refusal::NoNonce)?,
    };
    let challenge = Challenge {
        nonce: transcript.acceptor_nonce,
        proof: secret.proof(Role::Acceptor, &transcript),
    };
    writer
        .write_all(&challenge.encode())
        .await
        .map_err(|error| bad_proof(error.into()))?;
    let frame = reader.next_frame().await.map_err(|error| match error {
        ConnError::Closed => Refusal::HungUp(hello.from),
        error => bad_proof(error),
    })?;
    if frame.kind != FrameKind::Proof {
        return Err(bad_proof(ConnError::Unexpected(frame.kind)));
    }
    let proof = ProofFrame::decode(frame.body).map_err(|error| {
        bad_proof(ConnError::Body {
            kind: FrameKind::Proof,
            error,
        })
    })?;
    if !secret.verify(Role::Dialer, &transcript, &proof.proof) {
        return Err(Refusal::WrongSecret(hello.from));
    }
    Ok(())
}

async fn read_hello(reader: &mut FrameReader<ReadHalf>) -> Result<Hello, ConnError> {
    let frame = reader.next_frame().await?;
    if frame.kind != FrameKind::Hello {
        return Err(ConnError::Unexpected(frame.kind));
    }
    Hello::decode(frame.body).map_err(|error| ConnError::Body {
        kind: FrameKind::Hello,
        error,
    })
}

/// The acceptor's rules: same cluster, the dialer calls this node, is not this node, and was
/// not removed from the cluster. (A dialer this node does not know yet is accepted: see
/// `crate::members`.)
fn check(config: &NetConfig, transport: &TcpTransport, hello: &Hello) -> Result<(), Refusal> {
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
    if transport.was_removed(hello.from) {
        return Err(Refusal::Removed(hello.from));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dialer in transition mode, or one that was removed, reads these reasons: they must
    /// keep their words.
    #[test]
    fn the_reasons_a_transition_dialer_reads_say_what_it_looks_for() {
        let removed = ConnError::Refused(Refusal::Removed(4).to_string());
        assert!(says_removed(&removed));
        assert!(Refusal::NoProof(2).to_string().contains(NO_PROOF));
        assert!(
            Refusal::UnexpectedSecret(2)
                .to_string()
                .contains(NO_SECRET_HERE[0])
        );
        let old_build = Refusal::BadHello(ConnError::Body {
            kind: FrameKind::Hello,
            error: keel::codec::DecodeError::TrailingBytes(32),
        });
        assert!(old_build.to_string().contains(NO_SECRET_HERE[1]));
    }
}
