//! The HTTP listener and the loop that serves it: a bound on open client connections, and a
//! time limit on connections that ask for nothing.
//!
//! Each client connection holds one of the listener's permits for as long as it is open, so an
//! open connection must be one that is being used: otherwise a few thousand silent sockets would
//! take every permit and lock all clients out. [`serve`] closes a connection that goes an idle
//! timeout without sending a complete request head (see there for exactly when), and one that
//! reads nothing of its answers for as long. A request in progress is not timed here: the KV
//! service's request timeout bounds it, body included.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What an HTTP/2 client with prior knowledge sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Accepts at most `max_connections` client connections at once; past that it stops accepting
/// (the kernel's backlog holds the rest) until one closes. Sets TCP_NODELAY on each.
pub struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    https: Option<Https>,
}

/// Serving the client API over HTTPS with a node's certificate (see [`keel_net::PeerTls`]).
#[derive(Clone, Debug)]
pub struct Https {
    /// The node's certificates, reloaded when their files change.
    pub tls: Arc<keel_net::PeerTls>,
    /// Require clients to present a certificate of the cluster's CA.
    pub client_certs: bool,
}

impl BoundedListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener, max_connections: usize) -> Self {
        BoundedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            https: None,
        }
    }

    /// Serves HTTPS instead of plain HTTP: a TLS handshake first (within the idle timeout),
    /// then HTTP/2 or HTTP/1.1 as ALPN chose.
    pub fn with_https(mut self, https: Https) -> Self {
        self.https = Some(https);
        self
    }
}

/// A connection holding one of the listener's permits until it is dropped.
pub struct BoundedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// The first bytes, read to tell HTTP/1 from HTTP/2 and handed out again before the rest.
    preface: [u8; H2_PREFACE.len()],
    preface_len: usize,
    preface_replayed: usize,
    /// How long a write may wait for the client to make room before the connection fails.
    write_timeout: Duration,
    /// Running while a write waits for room.
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The protocol a client speaks, told by its first bytes.
enum Protocol {
    Http1,
    Http2,
}

impl BoundedStream {
    /// Reads the connection's first bytes, no more than HTTP/2's preface, to tell which protocol
    /// the client speaks; the next reads return them again. `None` if the client closed first.
    async fn read_preface(&mut self) -> io::Result<Option<Protocol>> {
        loop {
            let read = self
                .stream
                .read(&mut self.preface[self.preface_len..])
                .await?;
            if read == 0 {
                return Ok(None);
            }
            self.preface_len += read;
            if self.preface[..self.preface_len] != H2_PREFACE[..self.preface_len] {
                return Ok(Some(Protocol::Http1));
            }
            if self.preface_len == H2_PREFACE.len() {
                return Ok(Some(Protocol::Http2));
            }
        }
    }
}

impl Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        BoundedStream {
                            stream,
                            _permit: permit,
                            preface: [0; H2_PREFACE.len()],
                            preface_len: 0,
                            preface_replayed: 0,
                            write_timeout: crate::node::DEFAULT_CLIENT_IDLE_TIMEOUT,
                            write_stall: None,
                        },
                        addr,
                    );
                }
                Err(error) => {
                    // Out of file descriptors and the like: say so, wait a little, go on.
                    tracing::warn!(%error, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The HTTP/1 and HTTP/2 settings every connection is served with.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    idle_timeout: Duration,
}

/// Serves `app` over HTTP/1.1 and HTTP/2 (prior knowledge) on `listener` until `shutdown` is
/// cancelled; then stops listening, lets requests in flight finish, and returns once every
/// connection has closed.
///
/// `idle_timeout` bounds how long a connection may hold a permit without asking for anything:
/// - a new connection must send its first byte within it (a complete HTTP/2 preface, for an
///   HTTP/2 client);
/// - an HTTP/1 connection must then send each complete request head within it of that first
///   byte or of its previous response, so an idle keep-alive connection and one dribbling its
///   headers are closed alike;
/// - an HTTP/2 connection silent for half that long is pinged, and closed if the ping goes
///   unanswered for that long; one that answers pings but has no request in progress for that
///   long (since it opened, or since its last answer was ready) is sent a GOAWAY and closed,
///   once it has sent what it was sending;
/// - a client that reads nothing of an answer for that long (a write waits for room in its
///   socket all that time) has its connection failed.
///
/// A request being answered is not timed, whatever it waits for.
pub async fn serve(
    mut listener: BoundedListener,
    app: Router,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) {
    // hyper's HTTP/1 header timeout (and its 30 s default) only takes effect with a timer:
    // without one, as under `axum::serve`, a silent connection stays open for good.
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(idle_timeout / 2)
        .keep_alive_timeout(idle_timeout);
    let protocols = Arc::new(Protocols {
        http1,
        http2,
        idle_timeout,
    });
    let connections = TaskTracker::new();
    let https = listener.https.clone();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            (stream, _) = listener.accept() => stream,
        };
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            protocols.clone(),
            shutdown.clone(),
            https.clone(),
        ));
    }
    // Refuse new clients at once rather than leave them in the backlog.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection until it closes, times out, or shutdown has let its last request finish.
async fn serve_connection(
    mut stream: BoundedStream,
    app: Router,
    protocols: Arc<Protocols>,
    shutdown: CancellationToken,
    https: Option<Https>,
) {
    let idle_timeout = protocols.idle_timeout;
    stream.write_timeout = idle_timeout;
    if let Some(https) = https {
        let acceptor = tokio_rustls::TlsAcceptor::from(https.tls.https_config(https.client_certs));
        let tls = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = tokio::time::timeout(idle_timeout, acceptor.accept(stream)) => match accepted {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake with a client failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(?idle_timeout, "closing a client connection that did not finish its TLS handshake");
                    return;
                }
            },
        };
        let protocol = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        // Once per connection: parsing the certificate on every request cost a quarter of a
        // get's server CPU.
        let holder = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| https.tls.holder(cert));
        let peer = Some(ClientCert(holder));
        return serve_io(tls, protocol, app, protocols, shutdown, peer).await;
    }
    let protocol = tokio::select! {
        () = shutdown.cancelled() => return,
        read = tokio::time::timeout(idle_timeout, stream.read_preface()) => match read {
            Ok(Ok(Some(protocol))) => protocol,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::debug!(%error, "reading a client connection's first bytes failed");
                return;
            }
            Err(_) => {
                tracing::debug!(?idle_timeout, "closing a client connection that sent no request");
                return;
            }
        },
    };
    serve_io(stream, protocol, app, protocols, shutdown, None).await;
}

/// Marks a request that came over TLS, with whom the certificate its client presented names in
/// this cluster, if anyone: who is asking, as far as TLS proved it (see `forward.rs`, which
/// believes a forwarded request only from the member its certificate names, and `auth.rs`).
#[derive(Clone, Debug)]
pub(crate) struct ClientCert(pub Option<keel_net::Holder>);

/// Adds the connection's [`ClientCert`] to each of its requests.
struct WithPeer<S> {
    inner: S,
    peer: Option<ClientCert>,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for WithPeer<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        if let Some(peer) = &self.peer {
            request.extensions_mut().insert(peer.clone());
        }
        self.inner.call(request)
    }
}

/// Serves HTTP in `protocol` on `stream` (plain or TLS) until it closes, times out, or
/// shutdown has let its last request finish; then lingers before closing it.
async fn serve_io<S>(
    stream: S,
    protocol: Protocol,
    app: Router,
    protocols: Arc<Protocols>,
    shutdown: CancellationToken,
    peer: Option<ClientCert>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle_timeout = protocols.idle_timeout;
    let (io, returned) = GiveBack::new(stream);
    let io = TokioIo::new(io);
    let service = WithPeer {
        inner: TowerToHyperService::new(app),
        peer,
    };
    let served = match protocol {
        Protocol::Http1 => {
            let connection = protocols.http1.serve_connection(io, service);
            until_shutdown(connection, &shutdown, None).await
        }
        Protocol::Http2 => {
            let activity = Arc::new(Activity::new(idle_timeout));
            let service = Tracked {
                inner: service,
                activity: activity.clone(),
            };
            let connection = protocols.http2.serve_connection(io, service);
            until_shutdown(connection, &shutdown, Some(&activity)).await
        }
    };
    if let Err(error) = served {
        // Header timeouts, resets and the like: the client's business, not the operator's.
        tracing::debug!(%error, "client connection ended");
    }
    // hyper has dropped the connection, and with it the stream, which comes back here.
    if let Ok(mut stream) = returned.await {
        linger(&mut stream, idle_timeout.min(MAX_LINGER)).await;
    }
}

/// The longest a connection hyper is done with waits for its client to close it too.
const MAX_LINGER: Duration = Duration::from_secs(1);

/// Closes a connection hyper is done with gently: ends the writing half (the client reads a
/// clean end), then reads and drops whatever the client still sends until it closes its half,
/// for at most `limit`. A socket closed while data still arrives for it is answered with a
/// reset, and a client that gets one loses what it has not read yet: an HTTP/2 client still
/// acknowledging (with window updates) the last answer of a connection closing for idleness
/// would lose that answer's end.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, limit: Duration) {
    use tokio::io::AsyncWriteExt;
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    let drained = async { while let Ok(1..) = stream.read(&mut sink).await {} };
    let _ = tokio::time::timeout(limit, drained).await;
}

/// Drives `connection`; on shutdown, or once `idle` says it had no request in progress for its
/// timeout, asks it to finish the requests it has and accept no more.
async fn until_shutdown<C>(
    connection: C,
    shutdown: &CancellationToken,
    idle: Option<&Activity>,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut connection = pin!(connection);
    loop {
        tokio::select! {
            served = connection.as_mut() => return served,
            () = shutdown.cancelled() => break,
            () = sleep_until(idle.and_then(Activity::deadline)) => {
                if idle.is_some_and(Activity::is_idle) {
                    tracing::debug!("closing an HTTP/2 connection that asks for nothing");
                    break;
                }
            }
        }
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Lends a stream to hyper, which wants to own it, and sends it back when hyper drops it.
struct GiveBack<T> {
    io: Option<T>,
    back: Option<tokio::sync::oneshot::Sender<T>>,
}

impl<T> GiveBack<T> {
    fn new(io: T) -> (GiveBack<T>, tokio::sync::oneshot::Receiver<T>) {
        let (back, returned) = tokio::sync::oneshot::channel();
        let lent = GiveBack {
            io: Some(io),
            back: Some(back),
        };
        (lent, returned)
    }

    fn io(&mut self) -> Pin<&mut T>
    where
        T: Unpin,
    {
        Pin::new(self.io.as_mut().expect("only taken on drop"))
    }
}

impl<T> Drop for GiveBack<T> {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            let _ = back.send(io);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GiveBack<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GiveBack<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(T::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

/// The requests an HTTP/2 connection has in progress, and when it last had none.
struct Activity {
    /// How long the connection may have none before it is closed.
    timeout: Duration,
    state: parking_lot::Mutex<(usize, Instant)>,
}

impl Activity {
    fn new(timeout: Duration) -> Activity {
        Activity {
            timeout,
            state: parking_lot::Mutex::new((0, Instant::now())),
        }
    }

    /// When the connection will have asked for nothing for the timeout, if it stays as it is
    /// (`None`: too far in the future to say).
    fn deadline(&self) -> Option<Instant> {
        let (active, since) = *self.state.lock();
        match active {
            0 => since.checked_add(self.timeout),
            _ => Instant::now().checked_add(self.timeout),
        }
    }

    /// Whether the connection has had no request in progress for the timeout.
    fn is_idle(&self) -> bool {
        let (active, since) = *self.state.lock();
        active == 0 && since.elapsed() >= self.timeout
    }
}

/// Counts one request in progress while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        activity.state.lock().0 += 1;
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.0 -= 1;
        state.1 = Instant::now();
    }
}

/// A service that keeps its connection's [`Activity`]: a request counts from its arrival until
/// its answer is handed to the connection (or it is dropped). Sending an answer's body may take
/// longer; a connection closed meanwhile finishes sending it first.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: R) -> Self::Future {
        let busy = Busy::new(self.activity.clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(busy);
            answer
        })
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.preface_replayed < this.preface_len {
            let unread = &this.preface[this.preface_replayed..this.preface_len];
            let n = unread.len().min(buf.remaining());
            buf.put_slice(&unread[..n]);
            this.preface_replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl BoundedStream {
    /// Passes on a write's outcome, but fails a write that has waited for room past
    /// `write_timeout`: a client that reads nothing must not hold its permit for good. The timer
    /// exists only while a write waits.
    fn limit_stall(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if polled.is_ready() {
            self.write_stall = None;
            return polled;
        }
        let timeout = self.write_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing of its answer for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.limit_stall(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.limit_stall(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
