//! Helpers shared by the integration tests: configurations on loopback, clusters of real Raft
//! nodes, stand-in handlers, raw sockets speaking the wire format, and waiting with deadlines.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use keel::message::{VoteRequest, VoteResponse};
use keel::{
    Applied, ApplyStream, BoxFuture, Config, MemStorage, NodeId, Proposed, Raft, RaftError,
    Request, Response, Role, Transport,
};
use keel_net::wire::{self, Frame};
use keel_net::{NetConfig, RpcHandler, TcpServer, TcpTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any wait for a condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub const CLUSTER: u64 = 3;

/// Waits for `future`, failing the test with `what` if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Polls `check` until it returns `Some`, failing the test with `what` after [`DEADLINE`].
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    within(what, async {
        loop {
            if let Some(value) = check() {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Loopback listeners on ports the OS picks, and the id → address map they make.
pub fn listeners(ids: &[NodeId]) -> (Vec<TcpListener>, BTreeMap<NodeId, SocketAddr>) {
    let listeners: Vec<TcpListener> = ids
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    let peers = ids
        .iter()
        .zip(&listeners)
        .map(|(id, l)| (*id, l.local_addr().expect("bound")))
        .collect();
    (listeners, peers)
}

/// An address where nothing listens (dials to it are refused).
pub fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("bound")
}

/// A configuration for tests: quick redials and handshakes.
pub fn config(id: NodeId, peers: &BTreeMap<NodeId, SocketAddr>) -> NetConfig {
    let mut config = NetConfig::new(CLUSTER, id, peers[&id], client_addr(id), peers.clone());
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(200);
    config.handshake_timeout = Duration::from_secs(2);
    config
}

pub fn client_addr(id: NodeId) -> String {
    format!("node-{id}.example:8080")
}

/// One Raft node on real sockets.
pub struct Node {
    pub raft: Raft,
    pub applied: ApplyStream,
    pub server: TcpServer,
    pub transport: Arc<TcpTransport>,
    pub storage: Arc<MemStorage>,
}

impl Node {
    /// Starts node `id` on `server`'s socket with `storage` (kept across restarts).
    pub fn start(
        config: NetConfig,
        members: &[NodeId],
        storage: Arc<MemStorage>,
        server: impl FnOnce(&Arc<TcpTransport>) -> TcpServer,
    ) -> Node {
        let id = config.node_id;
        let transport = TcpTransport::new(config).expect("valid config");
        let server = server(&transport);
        let (raft, applied) = Raft::new(
            id,
            members.to_vec(),
            Config::fast_elections(),
            storage.clone(),
            transport.clone(),
        )
        .expect("valid raft config");
        server.serve(raft.clone());
        Node {
            raft,
            applied,
            server,
            transport,
            storage,
        }
    }

    pub async fn stop(&self) {
        self.raft.shutdown().await;
        self.server.shutdown().await;
        self.transport.shutdown().await;
    }

    /// Reads the apply stream until the entry at `index`, and returns its command.
    pub async fn applied_at(&mut self, index: u64) -> Bytes {
        let id = self.raft.id();
        within(&format!("node {id} to apply index {index}"), async {
            loop {
                match self.applied.next().await {
                    Some(Applied::Entry(e)) if e.index == index => {
                        return Bytes::copy_from_slice(e.command());
                    }
                    Some(_) => {}
                    None => panic!("node {id} stopped before applying index {index}"),
                }
            }
        })
        .await
    }
}

/// Starts a cluster of real Raft nodes on loopback.
pub fn cluster(ids: &[NodeId]) -> Vec<Node> {
    let (listeners, peers) = listeners(ids);
    ids.iter()
        .zip(listeners)
        .map(|(&id, listener)| {
            Node::start(config(id, &peers), ids, Arc::new(MemStorage::new()), |t| {
                TcpServer::from_listener(listener, t).expect("serve loopback")
            })
        })
        .collect()
}

/// The index of the node that leads, once one does.
pub async fn leader(nodes: &[Node]) -> usize {
    eventually("a leader", || {
        nodes
            .iter()
            .position(|n| n.raft.is_running() && n.raft.status().role == Role::Leader)
    })
    .await
}

/// Proposes `command` on whichever node leads, retrying through elections; returns that node's
/// index and where the entry went.
pub async fn propose(nodes: &[Node], command: &'static str) -> (usize, Proposed) {
    within(&format!("a leader to accept {command:?}"), async {
        loop {
            let leader = leader(nodes).await;
            match nodes[leader].raft.propose(Bytes::from(command)) {
                Ok(proposed) => return (leader, proposed),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
}

/// A vote request whose term identifies it.
pub fn vote(term: u64) -> Request {
    Request::Vote(VoteRequest {
        term,
        candidate_id: 2,
        last_log_index: 0,
        last_log_term: 0,
        pre_vote: true,
        transfer: false,
    })
}

/// Answers a vote request with its own term, after a delay that depends on the term (so that
/// replies come back out of order); refuses with `RaftError::Shutdown` a term of 0.
pub struct Echo;

impl RpcHandler for Echo {
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Response, RaftError>> {
        Box::pin(async move {
            let Request::Vote(vote) = request else {
                panic!("Echo only answers votes, got {request:?}")
            };
            if vote.term == 0 {
                return Err(RaftError::Shutdown);
            }
            tokio::time::sleep(Duration::from_micros(vote.term % 7 * 300)).await;
            Ok(Response::Vote(VoteResponse {
                term: vote.term,
                vote_granted: true,
            }))
        })
    }
}

/// Never answers.
pub struct Silent;

impl RpcHandler for Silent {
    fn handle(&self, _: Request) -> BoxFuture<'static, Result<Response, RaftError>> {
        Box::pin(std::future::pending())
    }
}

/// Node 1 served by a handler, and a transport of node 2 that calls it. Node 1's peers are 2
/// and 3, at addresses where nothing listens, so node 1 never reaches them by itself.
pub struct Pair {
    pub server: TcpServer,
    pub server_transport: Arc<TcpTransport>,
    pub client: Arc<TcpTransport>,
    /// Node 1, when it is a real Raft node.
    pub raft: Option<(Raft, ApplyStream)>,
}

impl Pair {
    /// Node 1 answers with `handler`.
    pub fn start(handler: impl RpcHandler, tune: impl Fn(&mut NetConfig)) -> Pair {
        Pair::build(tune, |_, server| {
            server.serve(handler);
            None
        })
    }

    /// Node 1 is a real Raft node of members 1, 2 and 3.
    pub fn with_raft(tune: impl Fn(&mut NetConfig)) -> Pair {
        Pair::build(tune, |transport, server| {
            let storage = Arc::new(MemStorage::new());
            let members = vec![1, 2, 3];
            let (raft, applied) = Raft::new(
                1,
                members,
                Config::fast_elections(),
                storage,
                transport.clone(),
            )
            .expect("valid raft config");
            server.serve(raft.clone());
            Some((raft, applied))
        })
    }

    fn build(
        tune: impl Fn(&mut NetConfig),
        serve: impl FnOnce(&Arc<TcpTransport>, &TcpServer) -> Option<(Raft, ApplyStream)>,
    ) -> Pair {
        let (mut listeners, mut peers) = listeners(&[1]);
        peers.insert(2, dead_addr());
        peers.insert(3, dead_addr());
        let mut server_config = config(1, &peers);
        tune(&mut server_config);
        let server_transport = TcpTransport::new(server_config).expect("valid config");
        let server = TcpServer::from_listener(listeners.remove(0), &server_transport)
            .expect("serve loopback");
        let raft = serve(&server_transport, &server);
        let mut client_config = config(2, &peers);
        tune(&mut client_config);
        let client = TcpTransport::new(client_config).expect("valid config");
        Pair {
            server,
            server_transport,
            client,
            raft,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Asserts that node 2 gets a reply from node 1.
    pub async fn assert_serves(&self, after: &str) {
        let reply = within(
            &format!("a reply from node 1 after {after}"),
            self.client.call(1, vote(1)),
        )
        .await
        .unwrap_or_else(|e| panic!("after {after}, node 1 did not answer: {e}"));
        assert!(
            matches!(reply, Response::Vote(_)),
            "after {after}: {reply:?}"
        );
    }

    pub async fn stop(&self) {
        if let Some((raft, _)) = &self.raft {
            raft.shutdown().await;
        }
        self.server.shutdown().await;
        self.client.shutdown().await;
        self.server_transport.shutdown().await;
    }
}

/// A raw connection that speaks the wire format by hand.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Speaks the wire format on a stream of the test's own (say, one it accepted).
    pub fn from_stream(stream: TcpStream) -> Raw {
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the server");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects and completes a valid handshake as node `from` of cluster [`CLUSTER`].
    pub async fn handshake(addr: SocketAddr, from: NodeId, to: NodeId) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.send(&hello(CLUSTER, from, to).encode()).await;
        let ack = raw.frame().await.expect("an answer to the hello");
        assert_eq!(
            ack.kind,
            wire::FrameKind::HelloAck,
            "valid hello refused: {ack:?}"
        );
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the server");
    }

    /// Closes the sending direction (the server reads end of stream).
    pub async fn half_close(&mut self) {
        self.stream.shutdown().await.expect("half-close");
    }

    /// The next frame, or `None` once the server closed the connection.
    pub async fn frame(&mut self) -> Option<Frame> {
        within("a frame or the end of the connection", async {
            loop {
                if let Some(frame) =
                    wire::decode_frame(&mut self.buf, 1 << 20).expect("valid frames")
                {
                    return Some(frame);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => return None,
                    Ok(_) => {}
                    // Closing a socket with unread input sends a reset rather than a FIN.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                    Err(e) => panic!("reading from the server: {e}"),
                }
            }
        })
        .await
    }

    /// Asserts that the server closes the connection without sending anything more.
    pub async fn expect_closed(&mut self, after: &str) {
        if let Some(frame) = self.frame().await {
            panic!("after {after}, expected the server to close the connection, got {frame:?}");
        }
    }
}

pub fn hello(cluster_id: u64, from: NodeId, to: NodeId) -> wire::Hello {
    wire::Hello {
        cluster_id,
        from,
        to,
        client_addr: client_addr(from),
        nonce: None,
    }
}

/// A frame with every header field chosen by the test.
pub fn raw_frame(version: u8, kind: u8, request_id: u64, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&((10 + body.len()) as u32).to_le_bytes());
    frame.push(version);
    frame.push(kind);
    frame.extend_from_slice(&request_id.to_le_bytes());
    frame.extend_from_slice(body);
    frame
}
