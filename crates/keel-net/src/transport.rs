//! [`TcpTransport`]: the client side, implementing [`keel::Transport`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use keel::{BoxFuture, Membership, NodeId, Request, Response, Transport, TransportError};
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, NetConfig};
use crate::link;
use crate::members::MemberAddrs;
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
    /// The address book: the other members by id, and nodes that dialed this one before it
    /// knew them (see [`crate::members`]).
    peers: RwLock<BTreeMap<NodeId, Arc<Peer>>>,
    /// Who Raft last said this node must reach, and who left that set since.
    reach: Mutex<Reach>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Default)]
struct Reach {
    /// The nodes of the last `members_changed` (at first, the configured peers).
    now: BTreeSet<NodeId>,
    /// Members that left it: their handshakes are refused. (Ids are never reused; a removal
    /// that is undone brings the node back.)
    removed: BTreeSet<NodeId>,
    /// Every node that was a member of a configuration this node followed (and the configured
    /// peers). Only these can be removed: a node that was reached only as the leader Raft knew
    /// of (a joining node hears from a leader that no configuration it holds yet names) is
    /// just no longer reached when it is no longer known as the leader, not refused.
    members: BTreeSet<NodeId>,
    /// Members without an address this node has warned about.
    warned: BTreeSet<NodeId>,
}

impl TcpTransport {
    /// A transport for `config.node_id`. Dials nothing yet, so it can be created before the
    /// peers run; spawns its tasks on the runtime of the first call.
    pub fn new(config: NetConfig) -> Result<Arc<TcpTransport>, ConfigError> {
        config.validate()?;
        let peers: BTreeMap<NodeId, Arc<Peer>> = config
            .remote_peers()
            .map(|(id, addr)| {
                (
                    id,
                    Arc::new(Peer::new(id, Some(addr), config.max_pending_per_peer)),
                )
            })
            .collect();
        let reach = Reach {
            now: peers.keys().copied().collect(),
            members: peers.keys().copied().collect(),
            ..Reach::default()
        };
        Ok(Arc::new(TcpTransport {
            config: Arc::new(config),
            peers: RwLock::new(peers),
            reach: Mutex::new(reach),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

    /// The configuration this transport was created with.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Dials every peer with a known address now, rather than on the first call to it. Raft
    /// calls only the nodes it needs (a follower, none while the leader is heard), so a follower
    /// would otherwise learn another follower's client address only from a campaign; the
    /// handshakes tell every node every member's (see [`TcpTransport::peer_client_addr`]). The
    /// connections then stay up like any other, redialed with backoff. Call it within the
    /// runtime the transport's tasks are to run on.
    pub fn connect_all(&self) {
        for peer in self.peers.read().values() {
            if peer.addr.is_some() && peer.start_link() {
                self.spawn_link(peer);
            }
        }
    }

    fn spawn_link(&self, peer: &Arc<Peer>) {
        self.tasks.spawn(link::run_link(
            peer.clone(),
            self.config.clone(),
            self.cancel.clone(),
        ));
    }

    /// Where peer `id` serves clients, as it said in its last handshake with this node (in
    /// either direction); `None` until one happened.
    pub fn peer_client_addr(&self, id: NodeId) -> Option<String> {
        self.peer(id)?.client_addr()
    }

    /// Where peer `id` is dialed, if this node knows.
    pub fn peer_addr(&self, id: NodeId) -> Option<std::net::SocketAddr> {
        self.peer(id)?.addr
    }

    /// Counters of every peer, by id.
    pub fn stats(&self) -> Vec<PeerStats> {
        self.peers
            .read()
            .values()
            .map(|peer| peer.stats())
            .collect()
    }

    /// Stops the links to all peers: pending calls fail with `TransportError::Shutdown`, so do
    /// all later ones, and when this returns every connection is closed and no task runs.
    pub async fn shutdown(&self) {
        for peer in self.peers.read().values() {
            peer.set_state(LinkState::Shutdown);
        }
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        self.peers.read().get(&id).cloned()
    }

    /// Whether `id` was removed from the cluster (its handshakes are refused).
    pub(crate) fn was_removed(&self, id: NodeId) -> bool {
        self.reach.lock().removed.contains(&id)
    }

    /// The entry of a dialer the server accepted: the known peer, or a new entry without an
    /// address for a node this one does not know yet.
    pub(crate) fn accepted_peer(&self, id: NodeId) -> Arc<Peer> {
        if let Some(peer) = self.peer(id) {
            return peer;
        }
        tracing::info!(
            peer = id,
            "accepting node {id}, which is not a member this node knows of (yet)"
        );
        let mut peers = self.peers.write();
        peers
            .entry(id)
            .or_insert_with(|| Arc::new(Peer::new(id, None, self.config.max_pending_per_peer)))
            .clone()
    }

    /// Follows a configuration change (see [`crate::members`]).
    fn follow(&self, membership: &Membership, reach: &BTreeSet<NodeId>) {
        let mut book = self.reach.lock();
        let mut peers = self.peers.write();
        book.members.extend(membership.members());
        let left: Vec<NodeId> = book.now.difference(reach).copied().collect();
        for id in left {
            if !book.members.contains(&id) {
                continue;
            }
            if let Some(peer) = peers.remove(&id) {
                tracing::info!(
                    peer = id,
                    "node {id} left the cluster: closing its connections"
                );
                peer.set_state(LinkState::Shutdown);
                peer.gone.cancel();
            }
            book.removed.insert(id);
        }
        for &id in reach {
            book.removed.remove(&id);
            if id == self.config.node_id {
                continue;
            }
            let addrs = membership
                .info(id)
                .map(|info| MemberAddrs::decode(info))
                .transpose()
                .unwrap_or_else(|error| {
                    tracing::warn!(peer = id, "member {id}'s addresses do not decode: {error}");
                    None
                });
            let known = peers.get(&id).and_then(|p| p.addr);
            match addrs {
                Some(addrs) if known != Some(addrs.peer_addr) => {
                    let peer = Arc::new(Peer::new(
                        id,
                        Some(addrs.peer_addr),
                        self.config.max_pending_per_peer,
                    ));
                    let client = peers
                        .get(&id)
                        .and_then(|p| p.client_addr())
                        .unwrap_or(addrs.client_addr);
                    if !client.is_empty() {
                        peer.set_client_addr(client);
                    }
                    tracing::info!(peer = id, "node {id} is at {}", addrs.peer_addr);
                    if let Some(old) = peers.insert(id, peer) {
                        // Dial the new address from now on; the old entry's connections end.
                        old.set_state(LinkState::Shutdown);
                    }
                }
                Some(addrs) => {
                    if let Some(peer) = peers.get(&id)
                        && peer.client_addr().is_none()
                        && !addrs.client_addr.is_empty()
                    {
                        peer.set_client_addr(addrs.client_addr);
                    }
                }
                None if known.is_none() && membership.contains(id) && book.warned.insert(id) => {
                    tracing::warn!(
                        peer = id,
                        "no peer address is known for member {id}: it is in the configuration \
                         without addresses and not among this node's --peers"
                    );
                }
                None => {}
            }
        }
        book.now = reach.clone();
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

    fn members_changed(&self, membership: &Membership, reach: &BTreeSet<NodeId>) {
        self.follow(membership, reach);
    }
}

impl TcpTransport {
    /// The synchronous part of a call: encode, register, queue, and start the peer's link task
    /// on the first call.
    fn queue_call(&self, target: NodeId, request: &Request) -> Result<PendingCall, TransportError> {
        let peer = self
            .peer(target)
            .filter(|peer| peer.addr.is_some())
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
            self.spawn_link(&peer);
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
            .field("peers", &self.peers.read().keys().collect::<Vec<_>>())
            .finish()
    }
}
