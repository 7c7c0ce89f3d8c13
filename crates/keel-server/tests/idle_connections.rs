//! Client connections that ask for nothing are closed after the idle timeout, so they cannot hold
//! every connection permit; connections in use are left alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use keel_server::listener::{self, BoundedListener};
use keel_server::{Node, NodeConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Short, so that the tests wait for it a few times and still finish in seconds.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long anything the tests expect may take; far past the idle timeout.
const DEADLINE: Duration = Duration::from_secs(10);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Awaits `future`, failing the test if it takes past the deadline.
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after {DEADLINE:?}"))
}

/// A one-node cluster on loopback with at most `max_client_connections` HTTP clients.
async fn start_node(max_client_connections: usize) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary data dir");
    let peer: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let node = Node::start(NodeConfig {
        id: 1,
        cluster: "idle-connections".into(),
        data_dir: dir.path().to_path_buf(),
        peer_listen: peer,
        client_listen: "127.0.0.1:0".parse().unwrap(),
        client_advertise: None,
        peer_advertise: None,
        join: Vec::new(),
        join_as_voter: false,
        peers: BTreeMap::from([(1, peer)]),
        peer_secret: None,
        peer_secret_transition: false,
        peer_tls: None,
        insecure: false,
        https: false,
        https_client_certs: false,
        access_file: None,
        admin_listen: None,
        raft: keel::Config::default(),
        kv: keel_kv::KvOptions {
            // The body of a request must arrive within it.
            request_timeout: IDLE_TIMEOUT,
            ..keel_kv::KvOptions::default()
        },
        segment_size_bytes: 1 << 20,
        max_client_connections,
        client_idle_timeout: IDLE_TIMEOUT,
    })
    .await
    .expect("the node starts");
    (node, dir)
}

/// Serves `app` as a node does, with at most `max_connections` clients.
async fn serve_app(
    app: Router,
    max_connections: usize,
) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(listener::serve(
        BoundedListener::new(listener, max_connections),
        app,
        IDLE_TIMEOUT,
        stop.clone(),
    ));
    (addr, stop, server)
}

/// An app answering `/slow` after twice the idle timeout, and `/` at once.
fn slow_and_quick() -> Router {
    Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(IDLE_TIMEOUT * 2).await;
                "slow"
            }),
        )
        .route("/", get(|| async { "quick" }))
}

/// Sends `GET path` over HTTP/1.1 on a kept-alive connection and reads the whole answer.
async fn get_over_http1(stream: &mut BufReader<TcpStream>, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: keel\r\n\r\n");
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await.unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; content_length];
    stream.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// Sends the start of a request head a byte at a time, never finishing it, until the server
/// hangs up.
async fn dribble_headers(stream: TcpStream) {
    let (mut reader, mut writer) = stream.into_split();
    let mut answer = Vec::new();
    let dribble = async {
        let mut sent = writer
            .write_all(b"GET /v1/status HTTP/1.1\r\nHost: keel\r\nX-Slow: ")
            .await;
        while sent.is_ok() {
            tokio::time::sleep(IDLE_TIMEOUT / 10).await;
            sent = writer.write_all(b"z").await;
        }
    };
    tokio::select! {
        _ = reader.read_to_end(&mut answer) => {}
        () = dribble => {}
    }
}

/// Reads until the server closes the connection.
async fn closed_by_server(mut stream: TcpStream) {
    // An error (a reset) means closed as well as an end of stream does.
    let _ = stream.read_to_end(&mut Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_dribbling_connections_are_closed_so_a_waiting_client_gets_in() {
    let (node, _dir) = start_node(2).await;
    let addr = node.client_addr();

    // Two connections take both permits: one sends nothing, one dribbles a request head that
    // never ends.
    let silent = TcpStream::connect(addr).await.unwrap();
    let dribbler = tokio::spawn(dribble_headers(TcpStream::connect(addr).await.unwrap()));

    // A third client waits in the backlog until the idle timeout frees a permit, then is
    // served, and keeps its connection for a second request.
    let mut third = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let (status, body) = within(
        "the third client's first request (silent connections hold every permit?)",
        get_over_http1(&mut third, "/v1/status"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = within(
        "a second request on the same connection",
        get_over_http1(&mut third, "/v1/status"),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    within(
        "the server closing the silent connection",
        closed_by_server(silent),
    )
    .await;
    within("the server closing the dribbling connection", dribbler)
        .await
        .unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_idle_timeout_is_answered_and_keeps_its_connection() {
    let app = slow_and_quick();
    let (addr, stop, server) = serve_app(app, 2).await;

    let mut stream = BufReader::new(TcpStream::connect(addr).await.unwrap());
    assert_eq!(
        within("the slow request", get_over_http1(&mut stream, "/slow")).await,
        (200, "slow".into())
    );
    assert_eq!(
        within("a request after it", get_over_http1(&mut stream, "/")).await,
        (200, "quick".into())
    );

    // Shutdown closes the idle connection and ends the server.
    stop.cancel();
    within("serve to return after shutdown", server)
        .await
        .unwrap();
    within(
        "the connection to close at shutdown",
        closed_by_server(stream.into_inner()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served_and_silent_http2_connections_closed() {
    let app = slow_and_quick();
    let (addr, stop, server) = serve_app(app, 8).await;

    // A client that answers pings keeps its connection through a slow request.
    let client = http_builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    for (path, expected) in [("/slow", "slow"), ("/", "quick")] {
        let response = within(
            "an HTTP/2 request",
            client.get(format!("http://{addr}{path}")).send(),
        )
        .await
        .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.text().await.unwrap(), expected);
    }

    // A connection that stops partway through the preface, and one that sends the preface and
    // then nothing (so answers no ping), are closed.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(&H2_PREFACE[..16]).await.unwrap();
    let mut mute = TcpStream::connect(addr).await.unwrap();
    mute.write_all(H2_PREFACE).await.unwrap();
    within(
        "the server closing a connection with half a preface",
        closed_by_server(partial),
    )
    .await;
    within(
        "the server closing an HTTP/2 connection that answers no ping",
        closed_by_server(mute),
    )
    .await;

    drop(client);
    stop.cancel();
    within("serve to return after shutdown", server)
        .await
        .unwrap();
}

/// An HTTP/2 client that answers the server's pings (sent at half the idle timeout) but asks for
/// nothing is sent a GOAWAY and closed once it has had no request in progress for the idle
/// timeout: it would otherwise hold its permit for good. A request slower than the idle timeout
/// keeps the connection, and an answer still being sent when the connection closes arrives
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_that_only_answers_pings_is_closed() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    const BIG: usize = 16 << 20; // past HTTP/2's flow-control windows
    let app = slow_and_quick().route("/big", get(|| async { vec![7u8; BIG] }));
    let (addr, stop, server) = serve_app(app, 8).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let mut connection = tokio::spawn(connection);
    let request = |path: &str| {
        hyper::Request::get(format!("http://{addr}{path}"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    for path in ["/slow", "/"] {
        let answer = within(path, sender.send_request(request(path)))
            .await
            .expect("a request slower than the idle timeout keeps its connection");
        assert_eq!(answer.status(), 200);
    }
    let answered = std::time::Instant::now();
    let big = within("a big answer's head", sender.send_request(request("/big")))
        .await
        .unwrap();
    // The client reads it only after the idle timeout: the connection is closing by then, but
    // not before the answer has been sent.
    tokio::time::sleep(IDLE_TIMEOUT * 2).await;
    let body = within("a big answer's body", big.into_body().collect())
        .await
        .expect("the whole answer, though the connection closes")
        .to_bytes();
    assert!(body.len() == BIG && body.iter().all(|b| *b == 7));
    // The client keeps `sender`, and its connection answers pings, but asks for nothing more.
    within(
        "the server closing the idle HTTP/2 connection",
        &mut connection,
    )
    .await
    .unwrap()
    .expect("a GOAWAY is a clean close");
    assert!(
        answered.elapsed() >= IDLE_TIMEOUT * 9 / 10,
        "closed {:?} after the last answer, before the idle timeout",
        answered.elapsed()
    );
    assert!(sender.ready().await.is_err(), "the connection is closed");
    stop.cancel();
    within("serve to return after shutdown", server)
        .await
        .unwrap();
}

/// The header timeout ends with the request head: a client that announces a body and sends
/// none is answered 408 once the request timeout passes, rather than held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408() {
    let (node, _dir) = start_node(2).await;
    let mut stream = BufReader::new(TcpStream::connect(node.client_addr()).await.unwrap());
    stream
        .get_mut()
        .write_all(b"PUT /v1/kv/k HTTP/1.1\r\nHost: keel\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    let mut status_line = String::new();
    within("an answer to a request whose body never comes", async {
        stream.read_line(&mut status_line).await.unwrap()
    })
    .await;
    assert!(status_line.starts_with("HTTP/1.1 408"), "{status_line:?}");
    node.shutdown().await;
}

/// A client that asks for an answer and never reads it cannot hold its permit: once a write
/// has waited the idle timeout for room, the connection fails, and a waiting client gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_loses_its_connection_so_a_waiting_client_gets_in() {
    // Far more than loopback socket buffers hold.
    let big = bytes::Bytes::from(vec![b'x'; 64 << 20]);
    let app = Router::new()
        .route("/big", get(move || async move { big.clone() }))
        .route("/small", get(|| async { "ok" }));
    let (addr, stop, server) = serve_app(app, 1).await;

    let mut reader_of_nothing = TcpStream::connect(addr).await.unwrap();
    reader_of_nothing
        .write_all(b"GET /big HTTP/1.1\r\nHost: keel\r\n\r\n")
        .await
        .unwrap();
    let mut waiting = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let (status, body) = within(
        "the waiting client's request (a client reading nothing holds the only permit?)",
        get_over_http1(&mut waiting, "/small"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    drop(reader_of_nothing);
    stop.cancel();
    within("the server stopping", server).await.unwrap();
}

/// The body timeout bounds the gaps in a body and its average rate (after a grace period of the
/// timeout), not its length: a slow upload that keeps coming at 80 KiB/s, above the minimum, is
/// answered, though it takes twice the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_that_keeps_coming_is_accepted() {
    let (node, _dir) = start_node(2).await;
    let mut stream = BufReader::new(TcpStream::connect(node.client_addr()).await.unwrap());
    within("the node leading", async {
        loop {
            let (_, body) = get_over_http1(&mut stream, "/v1/status").await;
            if body.contains("\"role\":\"leader\"") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stream
        .get_mut()
        .write_all(b"PUT /v1/kv/k HTTP/1.1\r\nHost: keel\r\nContent-Length: 163840\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..10 {
        tokio::time::sleep(IDLE_TIMEOUT / 5).await;
        stream.get_mut().write_all(&[b's'; 16 << 10]).await.unwrap();
    }
    let mut status_line = String::new();
    within("an answer to a slow upload", async {
        stream.read_line(&mut status_line).await.unwrap()
    })
    .await;
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line:?}");
    node.shutdown().await;
}

/// reqwest is built with TLS but no process-wide crypto provider (keel picks its own per
/// client); the tests' plain clients take ring's.
fn http_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
