//! [`TcpTransport`]: the client side, implementing [`keel::Transport`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use keel::{BoxFuture, NodeId, Request, Response, Transport, TransportError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, NetConfig};
use crate::link;
use crate::peer::{LinkState, Peer, PendingCall};
use crate::stats::PeerStats;
use crate::wire;

/// Carries a node's RPCs to its peers over TCP: one connection per peer, dialed on the first
/// call and kept up (redialed with backoff when lost), with any number of requests in flight on
/// it up to `max_pending_per_peer`.
///
/// Give it to [`keel::Raft::new`], and to [`crate::TcpServer::bind`] so that client addresses
/// learned from incoming handshakes show in [`TcpTransport::peer_client_addr`].
pub struct TcpTransport {
    config: Arc<NetConfig>,
    /// The other members, by id.
    peers: BTreeMap<NodeId, Arc<Peer>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl TcpTransport {
    /// A transport for `config.node_id`. Dials nothing yet, so it can be created before the
    /// peers run; spawns its tasks on the runtime of the first call.
    pub fn new(config: NetConfig) -> Result<Arc<TcpTransport>, ConfigError> {
        config.validate()?;
        let peers = config
            .remote_peers()
            .map(|(id, addr)| {
                (
                    id,
                    Arc::new(Peer::new(id, addr, config.max_pending_per_peer)),
                )
            })
            .collect();
        Ok(Arc::new(TcpTransport {
            config: Arc::new(config),
            peers,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

    /// The configuration this transport was created with.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Where peer `id` serves clients, as it said in its last handshake with this node (in
    /// either direction); `None` until one happened.
    pub fn peer_client_addr(&self, id: NodeId) -> Option<String> {
        self.peers.get(&id)?.client_addr()
    }

    /// Counters of every peer, by id.
    pub fn stats(&self) -> Vec<PeerStats> {
        self.peers.values().map(|peer| peer.stats()).collect()
    }

    /// Stops the links to all peers: pending calls fail with `TransportError::Shutdown`, so do
    /// all later ones, and when this returns every connection is closed and no task runs.
    pub async fn shutdown(&self) {
        for peer in self.peers.values() {
            peer.set_state(LinkState::Shutdown);
        }
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    pub(crate) fn peers(&self) -> &BTreeMap<NodeId, Arc<Peer>> {
        &self.peers
    }

    pub(crate) fn shared_config(&self) -> &Arc<NetConfig> {
        &self.config
    }
}

impl Transport for TcpTransport {
    fn call(
        &self,
        target: NodeId,
        request: Request,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        let queued = self.queue_call(target, &request);
        Box::pin(async move { queued?.reply().await })
    }
}

impl TcpTransport {
    /// The synchronous part of a call: encode, register, queue, and start the peer's link task
    /// on the first call.
    fn queue_call(&self, target: NodeId, request: &Request) -> Result<PendingCall, TransportError> {
        let peer = self
            .peers
            .get(&target)
            .ok_or(TransportError::UnknownPeer(target))?;
        let id = peer.next_request_id();
        let frame = wire::encode_request(id, request);
        if wire::frame_len(&frame) > self.config.max_frame_bytes {
            // A bug in configuration, not a network fault: NetConfig::check_raft_config catches it.
            tracing::error!(
                peer = target,
                "a {} request of {} bytes exceeds max_frame_bytes ({}); not sent",
                request.kind(),
                frame.len(),
                self.config.max_frame_bytes
            );
            peer.counters.rpcs_failed.fetch_add(1, Ordering::Relaxed);
            return Err(TransportError::TooLarge(frame.len()));
        }
        let (call, start) = peer
            .enqueue(id, frame, self.config.max_pending_per_peer)
            .inspect_err(|_| {
                peer.counters.rpcs_failed.fetch_add(1, Ordering::Relaxed);
            })?;
        if start {
            self.tasks.spawn(link::run_link(
                peer.clone(),
                self.config.clone(),
                self.cancel.clone(),
            ));
        }
        Ok(call)
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        // Without a shutdown, the link tasks would outlive the transport.
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("node_id", &self.config.node_id)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish()
    }
}
