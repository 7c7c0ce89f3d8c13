//! What a node keeps about each peer: the state of the outgoing connection, the requests
//! awaiting replies on it, the client address learned in handshakes, and counters.
//!
//! The state and the pending requests sit behind one lock, so that "the connection went down"
//! and "fail everything pending on it" are one step: a call either sees the link down and fails
//! at once, or registers before the drop and is failed by it. Nothing waits forever.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use keel::{NodeId, Response, TransportError};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::stats::{Counters, PeerStats};

type ReplySender = oneshot::Sender<Result<Response, TransportError>>;

/// The outgoing connection's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Nothing was ever sent to the peer, nor was it dialed ahead; no task runs for it yet.
    Idle,
    /// Dialing or handshaking: calls queue and go out once connected.
    Connecting,
    /// Handshake done: calls go out as soon as queued.
    Connected,
    /// The last dial failed or the connection dropped; waiting out the backoff. Calls fail at
    /// once rather than queue for seconds.
    Down,
    /// The transport was shut down.
    Shutdown,
}

struct Link {
    state: LinkState,
    /// Requests sent and not yet answered, by request id.
    pending: HashMap<u64, ReplySender>,
}

/// One peer, shared by the transport's calls, the peer's link task and the server.
pub(crate) struct Peer {
    pub id: NodeId,
    /// Where it is dialed; `None` for a node that dialed this one before this node learned
    /// its address (see `crate::members`): calls to it fail until the address is known.
    pub addr: Option<SocketAddr>,
    /// Cancelled when the peer leaves the address book: its connections close.
    pub gone: CancellationToken,
    link: Mutex<Link>,
    /// Frames for the link task to write. Twice as deep as the pending limit: frames of callers
    /// that gave up stay queued until written, and should not crowd out live calls.
    queue: mpsc::Sender<Bytes>,
    /// The other end of `queue`, until the link task takes it.
    queue_receiver: Mutex<Option<mpsc::Receiver<Bytes>>>,
    /// Ids are never reused, so a late reply can never be taken for another request's.
    next_request_id: AtomicU64,
    client_addr: Mutex<Option<String>>,
    /// In peer-secret transition mode: the peer turned a proof away, so dial it without one.
    plain_hello: AtomicBool,
    pub counters: Counters,
}

impl Peer {
    pub(crate) fn new(id: NodeId, addr: Option<SocketAddr>, max_pending: usize) -> Peer {
        let (queue, receiver) = mpsc::channel(2 * max_pending);
        Peer {
            id,
            addr,
            gone: CancellationToken::new(),
            link: Mutex::new(Link {
                state: LinkState::Idle,
                pending: HashMap::new(),
            }),
            queue,
            queue_receiver: Mutex::new(Some(receiver)),
            next_request_id: AtomicU64::new(1),
            client_addr: Mutex::new(None),
            plain_hello: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers request `id` and queues its frame. Returns the reply receiver, and whether the
    /// caller must start the link task (the first call to this peer).
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        id: u64,
        frame: Bytes,
        max_pending: usize,
    ) -> Result<(PendingCall, bool), TransportError> {
        let mut link = self.link.lock();
        let start = match link.state {
            LinkState::Shutdown => return Err(TransportError::Shutdown),
            LinkState::Down => return Err(TransportError::Unreachable(self.id)),
            LinkState::Idle => {
                link.state = LinkState::Connecting;
                true
            }
            LinkState::Connecting | LinkState::Connected => false,
        };
        if link.pending.len() >= max_pending || self.queue.try_send(frame).is_err() {
            tracing::debug!(
                peer = self.id,
                "{max_pending} requests pending; failing a call"
            );
            return Err(TransportError::Overloaded(self.id));
        }
        let (sender, receiver) = oneshot::channel();
        link.pending.insert(id, sender);
        drop(link);
        self.counters.rpcs_sent.fetch_add(1, Ordering::Relaxed);
        let call = PendingCall {
            peer: self.clone(),
            id,
            reply: receiver,
            settled: false,
        };
        Ok((call, start))
    }

    /// Leaves `Idle` for `Connecting` without a call: whether the caller must start the link
    /// task (false if it runs already, or the transport was shut down).
    pub(crate) fn start_link(&self) -> bool {
        let mut link = self.link.lock();
        let start = link.state == LinkState::Idle;
        if start {
            link.state = LinkState::Connecting;
        }
        start
    }

    /// The queue's receiving end, for the link task (taken once).
    pub(crate) fn take_queue(&self) -> mpsc::Receiver<Bytes> {
        self.queue_receiver
            .lock()
            .take()
            .expect("a peer's link task is started once, by whoever left Idle")
    }

    /// Hands a reply to the caller of request `id`, if it still waits.
    pub(crate) fn deliver(&self, id: u64, reply: Result<Response, TransportError>) {
        let sender = self.link.lock().pending.remove(&id);
        if let Some(sender) = sender {
            let _ = sender.send(reply); // the caller may have just given up
        }
    }

    /// Moves the link to `state` (never out of `Shutdown`). Moving to `Down` fails every pending
    /// request with `Unreachable`, and to `Shutdown` with `Shutdown`.
    pub(crate) fn set_state(&self, state: LinkState) {
        let failed: Vec<ReplySender> = {
            let mut link = self.link.lock();
            if link.state == LinkState::Shutdown {
                return;
            }
            link.state = state;
            match state {
                LinkState::Down | LinkState::Shutdown => {
                    link.pending.drain().map(|(_, s)| s).collect()
                }
                _ => Vec::new(),
            }
        };
        let error = match state {
            LinkState::Shutdown => TransportError::Shutdown,
            _ => TransportError::Unreachable(self.id),
        };
        for sender in failed {
            let _ = sender.send(Err(error.clone()));
        }
    }

    /// Whether to dial this peer without a proof (peer-secret transition mode only).
    pub(crate) fn plain_hello(&self) -> bool {
        self.plain_hello.load(Ordering::Relaxed)
    }

    pub(crate) fn set_plain_hello(&self, plain: bool) {
        self.plain_hello.store(plain, Ordering::Relaxed);
    }

    pub(crate) fn client_addr(&self) -> Option<String> {
        self.client_addr.lock().clone()
    }

    pub(crate) fn set_client_addr(&self, addr: String) {
        *self.client_addr.lock() = Some(addr);
    }

    pub(crate) fn stats(&self) -> PeerStats {
        let (connected, pending) = {
            let link = self.link.lock();
            (link.state == LinkState::Connected, link.pending.len())
        };
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PeerStats {
            id: self.id,
            addr: self.addr,
            connected,
            client_addr: self.client_addr(),
            rpcs_sent: load(&c.rpcs_sent),
            rpcs_failed: load(&c.rpcs_failed),
            rpcs_served: load(&c.rpcs_served),
            bytes_sent: load(&c.bytes_sent),
            bytes_received: load(&c.bytes_received),
            connects: load(&c.connects),
            pending,
        }
    }
}

/// A request on its way: resolves to the reply, or to an error when the connection drops.
/// Dropping it (the caller timed out) forgets the request, so it no longer counts as pending.
pub(crate) struct PendingCall {
    peer: Arc<Peer>,
    id: u64,
    reply: oneshot::Receiver<Result<Response, TransportError>>,
    /// The request left `pending` (answered or failed), so dropping has nothing to forget.
    settled: bool,
}

impl PendingCall {
    pub(crate) async fn reply(mut self) -> Result<Response, TransportError> {
        let reply = (&mut self.reply)
            .await
            .unwrap_or(Err(TransportError::Unreachable(self.peer.id)));
        self.settled = true;
        if reply.is_err() {
            self.peer
                .counters
                .rpcs_failed
                .fetch_add(1, Ordering::Relaxed);
        }
        reply
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.settled {
            self.peer.link.lock().pending.remove(&self.id);
        }
    }
}
