//! [`TcpServer`]: the server side. Accepts peers' connections, checks their handshakes and hands
//! their requests to Raft.
//!
//! Each incoming connection runs in one task that reads requests and writes replies. A request
//! whose handler is ready at once is answered in that task; one that waits (Raft's handlers wait
//! for the disk) gets a task of its own, at most `max_handlers_per_connection` at once. A newer connection from the same peer closes the older
//! one, so a peer that vanished without closing its socket leaves nothing behind once it
//! reconnects.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use keel::codec;
use keel::{BoxFuture, NodeId, Raft, RaftError, Request, Response};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::framed::{self, ConnError, FrameReader, ReadHalf, WriteHalf};
use crate::handshake::{self, Refusal};
use crate::peer::Peer;
use crate::transport::TcpTransport;
use crate::wire::{self, FrameKind};

/// Connections the kernel queues while the server is busy or at `max_incoming_connections`.
const LISTEN_BACKLOG: u32 = 1024;

/// What answers the requests a [`TcpServer`] receives: a [`keel::Raft`] node, or a stand-in in
/// tests and tools.
pub trait RpcHandler: Send + Sync + 'static {
    /// Answers one request. An error means "no reply": the caller is sent an error frame and
    /// fails at once instead of waiting for its timeout.
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Response, RaftError>>;
}

impl RpcHandler for Raft {
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Response, RaftError>> {
        let raft = self.clone();
        Box::pin(async move { Raft::handle(&raft, request).await })
    }
}

/// Listens for peers' connections. Bind it before starting Raft (so that a bad address fails
/// early), then [`serve`](TcpServer::serve) the node.
pub struct TcpServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// Until `serve` takes it.
    listener: Mutex<Option<TcpListener>>,
}

struct Shared {
    transport: Arc<TcpTransport>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The open connection of each peer, so that a newer one can close it.
    incoming: Mutex<HashMap<NodeId, (u64, CancellationToken)>>,
    next_connection: AtomicU64,
    /// Connections still in their handshake, by the address they come from.
    handshaking: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place among those in their handshake from its address; given back when
/// dropped (the handshake ended, either way).
struct Handshaking {
    from: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Handshaking {
    /// A place for a connection from `from`, unless `max` from there are in their handshake.
    fn try_new(
        counts: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        from: IpAddr,
        max: usize,
    ) -> Option<Self> {
        let mut map = counts.lock();
        let count = map.entry(from).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Handshaking {
            from,
            counts: counts.clone(),
        })
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        let mut map = self.counts.lock();
        if let Some(count) = map.get_mut(&self.from) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.from);
            }
        }
    }
}

impl TcpServer {
    /// Listens on `transport.config().listen_addr`, with `SO_REUSEADDR` so that a restarted
    /// node gets its port back at once. Must be called within a tokio runtime.
    pub fn bind(transport: &Arc<TcpTransport>) -> io::Result<TcpServer> {
        let addr = transport.config().listen_addr;
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Self::with_listener(socket.listen(LISTEN_BACKLOG)?, transport)
    }

    /// Serves on a listener bound by the caller (say, on port 0 to learn the port before
    /// writing the peers' configurations); `listen_addr` is then not used. Must be called within
    /// a tokio runtime.
    pub fn from_listener(
        listener: std::net::TcpListener,
        transport: &Arc<TcpTransport>,
    ) -> io::Result<TcpServer> {
        listener.set_nonblocking(true)?;
        Self::with_listener(TcpListener::from_std(listener)?, transport)
    }

    fn with_listener(
        listener: TcpListener,
        transport: &Arc<TcpTransport>,
    ) -> io::Result<TcpServer> {
        Ok(TcpServer {
            local_addr: listener.local_addr()?,
            listener: Mutex::new(Some(listener)),
            shared: Arc::new(Shared {
                transport: transport.clone(),
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
                incoming: Mutex::new(HashMap::new()),
                next_connection: AtomicU64::new(0),
                handshaking: Arc::new(Mutex::new(HashMap::new())),
            }),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts accepting connections and handing their requests to `handler` (a [`keel::Raft`]);
    /// returns at once.
    ///
    /// # Panics
    ///
    /// If called twice, or after [`shutdown`](TcpServer::shutdown).
    pub fn serve(&self, handler: impl RpcHandler) {
        let listener = self
            .listener
            .lock()
            .take()
            .expect("TcpServer::serve is called once, before shutdown");
        let shared = self.shared.clone();
        let handler: Arc<dyn RpcHandler> = Arc::new(handler);
        self.shared
            .tasks
            .spawn(accept_loop(shared, listener, handler));
    }

    /// Stops accepting, closes every connection and stops every request handler; when this
    /// returns, no task of the server runs and its port is free.
    pub async fn shutdown(&self) {
        self.listener.lock().take();
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl std::fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpServer")
            .field("node_id", &self.shared.transport.config().node_id)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, handler: Arc<dyn RpcHandler>) {
    let config = shared.transport.shared_config().clone();
    let slots = Arc::new(Semaphore::new(config.max_incoming_connections));
    loop {
        // Waiting for a slot before accepting leaves excess connections in the kernel's backlog.
        let slot = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                let Some(place) = Handshaking::try_new(
                    &shared.handshaking,
                    addr.ip(),
                    config.max_handshakes_per_addr,
                ) else {
                    // Silent connections from one address must not take every slot.
                    tracing::debug!(
                        "closed a connection from {addr} at once: {} from its address are in \
                         their handshake already",
                        config.max_handshakes_per_addr
                    );
                    continue;
                };
                let connection =
                    serve_connection(shared.clone(), handler.clone(), stream, addr, slot, place);
                shared.tasks.spawn(connection);
            }
            Err(error) => {
                // Out of file descriptors, say: pause instead of spinning on the error.
                tracing::warn!("accepting a connection failed: {error}");
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(config.backoff_min) => {}
                }
            }
        }
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    handler: Arc<dyn RpcHandler>,
    stream: TcpStream,
    addr: SocketAddr,
    _slot: OwnedSemaphorePermit,
    handshaking: Handshaking,
) {
    let config = shared.transport.shared_config().clone();
    handshake::tune(&stream, &config);
    let handshake = async {
        let (read, mut writer, cert) = handshake::open_accepted(stream, &config).await?;
        let mut reader = FrameReader::new(read, handshake::HANDSHAKE_MAX_FRAME_BYTES);
        let peer = handshake::accept(
            &config,
            &shared.transport,
            cert.as_ref(),
            &mut reader,
            &mut writer,
        )
        .await?;
        Ok((peer, reader, writer))
    };
    let accepted = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        accepted = tokio::time::timeout(config.handshake_timeout, handshake) => {
            accepted.unwrap_or(Err(Refusal::BadHello(ConnError::HandshakeTimeout)))
        }
    };
    drop(handshaking);
    let (peer, reader, writer) = match accepted {
        Ok(accepted) => accepted,
        Err(Refusal::BadHello(ConnError::Closed)) => {
            tracing::debug!("peer {addr} closed the connection before its hello");
            return;
        }
        Err(refusal @ Refusal::Removed(_)) => {
            // Expected while a removed node has not learned it is out; it dials rarely.
            tracing::debug!("refused a connection: peer {addr} {refusal}");
            return;
        }
        Err(refusal) => {
            tracing::warn!("refused a connection: peer {addr} {refusal}");
            return;
        }
    };
    tracing::info!(
        peer = peer.id,
        "accepted a connection from node {} at {addr}",
        peer.id
    );

    let cancel = shared.cancel.child_token();
    let connection = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let older = shared
        .incoming
        .lock()
        .insert(peer.id, (connection, cancel.clone()));
    if let Some((_, older)) = older {
        older.cancel();
    }
    // A peer that leaves the address book (removed from the cluster) is hung up on.
    let gone = peer.gone.clone();
    let error = tokio::select! {
        error = serve_requests(&shared, &handler, &peer, reader, writer, &cancel) => error,
        _ = gone.cancelled() => ConnError::Removed,
    };
    cancel.cancel(); // stops this connection's handlers
    {
        let mut incoming = shared.incoming.lock();
        if incoming
            .get(&peer.id)
            .is_some_and(|(c, _)| *c == connection)
        {
            incoming.remove(&peer.id);
        }
    }
    let message = format!("connection from node {} at {addr} ended: {error}", peer.id);
    match error {
        ConnError::Closed
        | ConnError::Superseded
        | ConnError::ShuttingDown
        | ConnError::Removed => {
            tracing::info!(peer = peer.id, "{message}")
        }
        _ => tracing::warn!(peer = peer.id, "{message}"),
    }
}

/// Serves one connection after its handshake until it fails or `cancel` fires; returns why it
/// ended.
async fn serve_requests(
    shared: &Shared,
    handler: &Arc<dyn RpcHandler>,
    peer: &Arc<Peer>,
    mut reader: FrameReader<ReadHalf>,
    mut writer: WriteHalf,
    cancel: &CancellationToken,
) -> ConnError {
    let max_handlers = shared.transport.config().max_handlers_per_connection;
    // Replies wait in `queue` for the writer. A handler task holds a slot until its reply is
    // queued; replies made inline wait for room, which pauses reading too.
    let slots = Arc::new(Semaphore::new(max_handlers));
    let (replies, mut queue) = mpsc::channel::<Bytes>(max_handlers);
    let reading = async {
        loop {
            let frame = match reader.next_frame().await {
                Ok(frame) => frame,
                Err(error) => return error,
            };
            peer.counters
                .bytes_received
                .fetch_add(frame.wire_len() as u64, Ordering::Relaxed);
            if frame.kind != FrameKind::Request {
                return ConnError::Unexpected(frame.kind);
            }
            let request = match codec::decode_request(frame.body) {
                Ok(request) => request,
                Err(error) => {
                    return ConnError::Body {
                        kind: FrameKind::Request,
                        error,
                    };
                }
            };
            let request_id = frame.request_id;
            let mut handling = handler.handle(request);
            // Most requests are answered without waiting (no disk write to wait for, or none
            // left): answer those here, with no task, and their replies leave in one write.
            // Polling with a no-op waker is fine: whoever polls the future next registers its
            // own waker.
            let polled = handling
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
            if let Poll::Ready(reply) = polled {
                let frame = reply_frame(peer, request_id, reply);
                if replies.send(frame).await.is_err() {
                    return ConnError::Closed; // the writer is gone; select! has its error
                }
                continue;
            }
            // At the limit, stop reading: the peer's requests wait in TCP buffers, not here.
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let peer = peer.clone();
            let replies = replies.clone();
            let cancel = cancel.clone();
            shared.tasks.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    reply = handling => {
                        let _ = replies.send(reply_frame(&peer, request_id, reply)).await;
                        drop(slot); // only now: the reply holds a place in the queue until sent
                    }
                }
            });
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => match shared.cancel.is_cancelled() {
            true => ConnError::ShuttingDown,
            false => ConnError::Superseded,
        },
        error = reading => error,
        written = framed::write_frames(&mut writer, &mut queue, &peer.counters.bytes_sent) => {
            written.err().unwrap_or(ConnError::Closed)
        }
    }
}

fn reply_frame(peer: &Peer, request_id: u64, reply: Result<Response, RaftError>) -> Bytes {
    match reply {
        Ok(response) => {
            peer.counters.rpcs_served.fetch_add(1, Ordering::Relaxed);
            wire::encode_response(request_id, &response)
        }
        // Typically RaftError::Shutdown: the node will not answer, so say so at once.
        Err(error) => wire::encode_error(request_id, &error.to_string()),
    }
}
