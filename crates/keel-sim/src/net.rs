//! The simulated network: in process, on tokio's paused clock, with the faults of the well-known
//! course labrpc, and every message through the real wire encoding.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use keel::codec::{decode_request, decode_response, encode_request, encode_response};
use keel::{BoxFuture, NodeId, Raft, Request, Response, Transport, TransportError};
use parking_lot::Mutex;

use crate::rng::SimRng;

/// Called with every request the network delivers (after its delay, before the handler runs),
/// so a test can check invariants on the traffic itself.
pub type Observer = Arc<dyn Fn(NodeId, NodeId, &Request) + Send + Sync>;

/// The simulated network. Cheap to clone; all clones are the same network.
#[derive(Clone)]
pub struct SimNet {
    inner: Arc<Mutex<NetInner>>,
    rng: SimRng,
}

struct NetInner {
    reliable: bool,
    long_reordering: bool,
    long_delays: bool,
    nodes: BTreeMap<NodeId, Endpoint>,
    /// Client endpoints and the nodes each can reach.
    clients: BTreeMap<NodeId, BTreeSet<NodeId>>,
    observer: Option<Observer>,
    rpcs_total: u64,
    bytes_total: u64,
    /// A running hash of every delivery decision, to show two runs were identical.
    trace: DefaultHasher,
    events: u64,
    /// Events are stamped with the simulated time since this instant (an `Instant` itself
    /// hashes the real time the run started at).
    epoch: tokio::time::Instant,
}

#[derive(Default)]
struct Endpoint {
    raft: Option<Raft>,
    /// Bumped at every crash and restart: messages for an earlier incarnation are dropped.
    incarnation: u64,
    connected: bool,
    group: u32,
    rpcs_received: u64,
    bytes_sent: u64,
}

/// Per-node traffic counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeTraffic {
    /// RPCs this node received.
    pub rpcs_received: u64,
    /// Bytes of requests and replies this node sent.
    pub bytes_sent: u64,
}

impl SimNet {
    /// A reliable network without nodes, drawing its faults from `rng`.
    pub fn new(rng: SimRng) -> Self {
        SimNet {
            inner: Arc::new(Mutex::new(NetInner {
                reliable: true,
                long_reordering: false,
                long_delays: true,
                nodes: BTreeMap::new(),
                clients: BTreeMap::new(),
                observer: None,
                rpcs_total: 0,
                bytes_total: 0,
                trace: DefaultHasher::new(),
                events: 0,
                epoch: tokio::time::Instant::now(),
            })),
            rng,
        }
    }

    /// The transport node `from` uses to reach the others.
    pub fn transport(&self, from: NodeId) -> Arc<dyn Transport> {
        Arc::new(SimTransport {
            net: self.clone(),
            from,
        })
    }

    /// Unreliable: about 10% of requests and 10% of replies are lost, and requests are delayed
    /// 0 to 27 ms.
    pub fn set_reliable(&self, reliable: bool) {
        self.inner.lock().reliable = reliable;
    }

    /// Long reordering: about two thirds of replies are held back 200 ms to 2.2 s.
    pub fn set_long_reordering(&self, on: bool) {
        self.inner.lock().long_reordering = on;
    }

    /// Long delays: a call to an unreachable node fails only after up to 7 s (else up to 100 ms).
    pub fn set_long_delays(&self, on: bool) {
        self.inner.lock().long_delays = on;
    }

    /// Sets the traffic observer.
    pub fn set_observer(&self, observer: Observer) {
        self.inner.lock().observer = Some(observer);
    }

    /// Makes `raft` the live incarnation of its node (after a start or restart).
    pub fn attach(&self, raft: Raft) {
        let mut inner = self.inner.lock();
        let endpoint = inner.nodes.entry(raft.id()).or_default();
        endpoint.raft = Some(raft);
        endpoint.incarnation += 1;
    }

    /// Crashes node `id` as far as the network is concerned: nothing reaches it, and replies it
    /// was about to send are lost.
    pub fn detach(&self, id: NodeId) {
        let mut inner = self.inner.lock();
        let endpoint = inner.nodes.entry(id).or_default();
        endpoint.raft = None;
        endpoint.incarnation += 1;
    }

    /// Connects or disconnects node `id` from every other node.
    pub fn set_connected(&self, id: NodeId, connected: bool) {
        self.inner.lock().nodes.entry(id).or_default().connected = connected;
    }

    /// Whether node `id` is connected.
    pub fn is_connected(&self, id: NodeId) -> bool {
        self.inner
            .lock()
            .nodes
            .get(&id)
            .is_some_and(|e| e.connected)
    }

    /// Splits the nodes into groups that only reach their own group; `groups` lists the members
    /// of each group. Nodes not listed form a group of their own.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut inner = self.inner.lock();
        for endpoint in inner.nodes.values_mut() {
            endpoint.group = u32::MAX;
        }
        for (g, members) in groups.iter().enumerate() {
            for id in members.iter() {
                inner.nodes.entry(*id).or_default().group = g as u32;
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&self) {
        for endpoint in self.inner.lock().nodes.values_mut() {
            endpoint.group = 0;
        }
    }

    /// RPCs delivered to node `id` so far.
    pub fn traffic(&self, id: NodeId) -> NodeTraffic {
        self.inner
            .lock()
            .nodes
            .get(&id)
            .map_or_else(NodeTraffic::default, |e| NodeTraffic {
                rpcs_received: e.rpcs_received,
                bytes_sent: e.bytes_sent,
            })
    }

    /// RPCs sent by anyone so far.
    pub fn rpcs_total(&self) -> u64 {
        self.inner.lock().rpcs_total
    }

    /// Bytes of requests and replies sent by anyone so far.
    pub fn bytes_total(&self) -> u64 {
        self.inner.lock().bytes_total
    }

    /// A hash of every message event so far and the count of events: equal for two runs of the
    /// same scenario with the same seed.
    pub fn trace(&self) -> (u64, u64) {
        let inner = self.inner.lock();
        (inner.trace.finish(), inner.events)
    }

    fn record(inner: &mut NetInner, event: impl Hash) {
        inner.epoch.elapsed().hash(&mut inner.trace);
        event.hash(&mut inner.trace);
        inner.events += 1;
    }

    async fn call(
        &self,
        from: NodeId,
        to: NodeId,
        request: Request,
    ) -> Result<Response, TransportError> {
        let mut buf = BytesMut::new();
        encode_request(&request, &mut buf);
        let wire = buf.freeze();
        let kind = request.kind();
        drop(request);
        let len = wire.len();
        let observer = self.inner.lock().observer.clone();
        let reply = self
            .call_with(from, to, kind, len, move |raft: Raft| {
                let request = decode_request(wire).expect("the simulator decodes what it encoded");
                if let Some(observer) = observer {
                    observer(from, to, &request);
                }
                async move {
                    let response = raft.handle(request).await.ok()?;
                    let mut buf = BytesMut::new();
                    encode_response(&response, &mut buf);
                    let wire = buf.freeze();
                    let len = wire.len();
                    Some((wire, len))
                }
            })
            .await?;
        decode_response(reply).map_err(|e| TransportError::BadReply(e.to_string()))
    }

    /// Carries one call from `from` to the live incarnation of node `to` through the network's
    /// faults: `serve` runs at delivery time (after the request's delay) with the target's Raft
    /// handle and returns the server's work, whose reply (and its size in bytes) comes back
    /// through the same faults. The KV scenarios use it for client requests; `label` and
    /// `request_len` feed the trace and byte counters.
    pub async fn call_with<R, Fut>(
        &self,
        from: NodeId,
        to: NodeId,
        label: &'static str,
        request_len: usize,
        serve: impl FnOnce(Raft) -> Fut,
    ) -> Result<R, TransportError>
    where
        R: Send + 'static,
        Fut: Future<Output = Option<(R, usize)>> + Send + 'static,
    {
        // Decide at send time, as a packet leaving the machine would.
        let (reliable, reachable) = {
            let mut inner = self.inner.lock();
            inner.rpcs_total += 1;
            inner.bytes_total += request_len as u64;
            if let Some(e) = inner.nodes.get_mut(&from) {
                e.bytes_sent += request_len as u64;
            }
            let reachable = link_up(&inner, from, to);
            Self::record(
                &mut inner,
                ("send", from, to, label, request_len, reachable),
            );
            (inner.reliable, reachable)
        };
        if !reachable {
            let max_ms = if self.inner.lock().long_delays {
                7000
            } else {
                100
            };
            tokio::time::sleep(Duration::from_millis(self.rng.below(max_ms))).await;
            return Err(TransportError::Unreachable(to));
        }
        if !reliable {
            tokio::time::sleep(Duration::from_millis(self.rng.below(27))).await;
            if self.rng.chance(100) {
                self.record_event(("request lost", from, to));
                return Err(TransportError::Lost);
            }
        }

        // Deliver to whatever incarnation is live now; the reply must come back from the same
        // one.
        let (raft, incarnation) = {
            let mut inner = self.inner.lock();
            let Some(endpoint) = inner.nodes.get_mut(&to) else {
                return Err(TransportError::Unreachable(to));
            };
            let Some(raft) = endpoint.raft.clone() else {
                return Err(TransportError::Unreachable(to));
            };
            endpoint.rpcs_received += 1;
            (raft, endpoint.incarnation)
        };
        // The handler runs as its own task, as on a real server: a caller that gives up does not
        // stop it half-way.
        let work = serve(raft);
        let handled = tokio::spawn(work).await;
        let Ok(Some((reply, reply_len))) = handled else {
            return Err(TransportError::Unreachable(to));
        };
        let (long_reordering, reliable) = {
            let mut inner = self.inner.lock();
            let alive = inner
                .nodes
                .get(&to)
                .is_some_and(|e| e.incarnation == incarnation && e.raft.is_some());
            Self::record(&mut inner, ("reply", from, to, reply_len, alive));
            if !alive {
                return Err(TransportError::Unreachable(to));
            }
            inner.bytes_total += reply_len as u64;
            if let Some(e) = inner.nodes.get_mut(&to) {
                e.bytes_sent += reply_len as u64;
            }
            (inner.long_reordering, inner.reliable)
        };
        if !reliable && self.rng.chance(100) {
            self.record_event(("reply lost", from, to));
            return Err(TransportError::Lost);
        }
        if long_reordering && self.rng.below(900) < 600 {
            let extra = self.rng.below(1 + self.rng.below(2000));
            tokio::time::sleep(Duration::from_millis(200 + extra)).await;
        }
        Ok(reply)
    }

    /// Declares `client` a client endpoint (not a node) that reaches exactly `servers`, whatever
    /// the partitions among nodes: the course's KV suites connect clerks this way.
    pub fn set_client_links(&self, client: NodeId, servers: &[NodeId]) {
        self.inner
            .lock()
            .clients
            .insert(client, servers.iter().copied().collect());
    }

    fn record_event(&self, event: impl Hash) {
        Self::record(&mut self.inner.lock(), event);
    }
}

fn link_up(inner: &NetInner, from: NodeId, to: NodeId) -> bool {
    if let Some(servers) = inner.clients.get(&from) {
        return servers.contains(&to) && inner.nodes.get(&to).is_some_and(|e| e.raft.is_some());
    }
    match (inner.nodes.get(&from), inner.nodes.get(&to)) {
        (Some(a), Some(b)) => a.connected && b.connected && a.group == b.group && b.raft.is_some(),
        _ => false,
    }
}

struct SimTransport {
    net: SimNet,
    from: NodeId,
}

impl Transport for SimTransport {
    fn call(
        &self,
        target: NodeId,
        request: Request,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        let net = self.net.clone();
        let from = self.from;
        Box::pin(async move { net.call(from, target, request).await })
    }
}
