//! Forwarding a request a follower cannot serve to the leader, and relaying its answer within
//! the node's body budget.

// Helpers return `Result<_, Response>` so an early answer can be `?`-propagated.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keel::NodeId;
use keel_kv::KvError;

use crate::body::Held;
use crate::http::{
    Api, CLIENT_ID_HEADER, ErrorCode, FORWARDED_HEADER, Incoming, REQUEST_SEQ_HEADER, error,
    kv_error,
};
use crate::listener::ClientCert;

/// How many times a request may be forwarded from node to node.
const MAX_FORWARDS: usize = 2;

/// How long a follower keeps an idle connection to the leader for forwarding.
const FORWARD_POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the forwarder looks whether the node's certificates were reloaded, at most.
const TLS_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The HTTP client a follower forwards requests to the leader with: over HTTPS, presenting the
/// node's certificate and trusting the cluster's CA as they are now. When the certificate files
/// change (a renewal, see `keel_net::PeerTls`), the next forwarded request builds a client with
/// the new ones; requests in flight finish on the old one.
pub(crate) struct Forwarder {
    tls: Option<Arc<keel_net::PeerTls>>,
    current: parking_lot::Mutex<Current>,
}

struct Current {
    /// What `client` was built with (`None`: plain HTTP).
    config: Option<Arc<rustls::ClientConfig>>,
    client: reqwest::Client,
    checked: std::time::Instant,
}

impl Forwarder {
    pub(crate) fn new(tls: Option<Arc<keel_net::PeerTls>>) -> Forwarder {
        let config = tls.as_ref().map(|tls| tls.forward_config());
        let client = build_client(config.as_deref());
        Forwarder {
            tls,
            current: parking_lot::Mutex::new(Current {
                config,
                client,
                checked: std::time::Instant::now(),
            }),
        }
    }

    /// The client to forward with now (a cheap handle: clones share one pool).
    pub(crate) fn client(&self) -> reqwest::Client {
        let mut current = self.current.lock();
        if let Some(tls) = &self.tls
            && current.checked.elapsed() >= TLS_RECHECK
        {
            current.checked = std::time::Instant::now();
            let config = tls.forward_config();
            if !current
                .config
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &config))
            {
                tracing::info!("forwarding to the leader with the reloaded certificates");
                current.client = build_client(Some(&config));
                current.config = Some(config);
            }
        }
        current.client.clone()
    }
}

fn build_client(config: Option<&rustls::ClientConfig>) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(match config {
            Some(config) => config.clone(),
            None => keel_net::tls::plain_http_only(),
        })
        .pool_max_idle_per_host(1024)
        // Well under the leader's idle timeout (30 s by default), so that a pooled
        // connection is seldom reused just as the leader closes it.
        .pool_idle_timeout(FORWARD_POOL_IDLE)
        .tcp_nodelay(true)
        // Only to the leader's own address: no proxy from the environment, no redirects.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client with a built TLS configuration builds")
}

/// The nodes a request was forwarded through (the forwarded header: their ids, comma
/// separated; empty for a request from a client), or `None` if the header is not such a list
/// (then it is not forwarded again).
///
/// Over HTTPS the header is believed only from the member that sent it, the last it names, as
/// proven by the certificate its connection presented: from anyone else (a client setting it,
/// to skip forwarding or pose as a node) it is ignored, as if absent. Over plain HTTP anyone can
/// set it.
fn forwarded_by(incoming: &Incoming) -> Option<Vec<NodeId>> {
    let Some(value) = incoming.headers.get(FORWARDED_HEADER) else {
        return Some(Vec::new());
    };
    if let Some(ClientCert(holder)) = incoming.extensions.get::<ClientCert>() {
        let sender = value
            .to_str()
            .ok()
            .and_then(|text| text.rsplit(',').next())
            .and_then(|id| id.trim().parse::<NodeId>().ok());
        let proven = matches!(
            (holder, sender),
            (Some(keel_net::Holder::Node(node)), Some(id)) if *node == id
        );
        if !proven {
            return Some(Vec::new());
        }
    }
    let text = value.to_str().ok()?;
    let ids: Option<Vec<NodeId>> = text.split(',').map(|id| id.trim().parse().ok()).collect();
    ids.filter(|ids| ids.len() <= MAX_FORWARDS)
}

/// Whether another node forwarded this request (as far as [`forwarded_by`] believes it).
pub(crate) fn forwarded(incoming: &Incoming) -> bool {
    forwarded_by(incoming).is_none_or(|via| !via.is_empty())
}

/// Sends a request this follower cannot serve to the leader and relays the answer; answers
/// the error itself when there is no leader to forward to.
pub(crate) async fn forward_or_fail(
    api: &Arc<Api>,
    e: &KvError,
    incoming: &Incoming,
    body: Bytes,
) -> Response {
    let KvError::NotLeader {
        leader_hint: Some(leader),
    } = e
    else {
        return kv_error(e);
    };
    forward(api, *leader, incoming, body)
        .await
        .unwrap_or_else(|| kv_error(e))
}

/// Sends a request this node cannot serve to `leader` and relays the answer; `None` if it
/// cannot be forwarded (it was forwarded already, the leader is this node, or its address is
/// unknown), for the caller to answer the error itself.
pub(crate) async fn forward(
    api: &Api,
    leader: NodeId,
    incoming: &Incoming,
    body: Bytes,
) -> Option<Response> {
    let own = api.kv.raft().id();
    let via = forwarded_by(incoming)?;
    // Never back to a node the request passed, and never far: leadership that moves while a
    // request is forwarded (a hand-over) may take it one hop more, a loop never.
    if leader == own || via.contains(&leader) || via.len() >= MAX_FORWARDS {
        return None;
    }
    let addr = api.directory.client_addr(leader)?;
    let Ok(_slot) = api.forward_slots.try_acquire() else {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &format!(
                "this node is forwarding {} requests to the leader already; retry later, or \
                 send to the leader",
                api.max_forwards
            ),
        ));
    };
    let mut chain: Vec<String> = via.iter().map(ToString::to_string).collect();
    chain.push(own.to_string());
    api.metrics.forwarded.inc();
    let path = incoming
        .uri
        .path_and_query()
        .map_or(incoming.uri.path(), |p| p.as_str());
    let mut request = api
        .forwarder
        .client()
        .request(
            incoming.method.clone(),
            format!("{}://{addr}{path}", api.forward_scheme),
        )
        .header(FORWARDED_HEADER, chain.join(","))
        .timeout(api.kv.options().request_timeout)
        .body(body);
    for name in [
        header::CONTENT_TYPE.as_str(),
        header::AUTHORIZATION.as_str(),
        CLIENT_ID_HEADER,
        REQUEST_SEQ_HEADER,
    ] {
        if let Some(value) = incoming.headers.get(name) {
            request = request.header(name, value.clone());
        }
    }
    // Believed by the leader only from a member's certificate: see `crate::auth`.
    if let Some((name, value)) = crate::auth::forwarded_identity(incoming) {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut headers = HeaderMap::new();
            for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
                if let Some(value) = answer.headers().get(&name) {
                    headers.insert(name, value.clone());
                }
            }
            // The longest answer a leader gives is a value, or an error about one. The value
            // was admitted by the limit of whichever member led then, not this one's.
            let limit = api
                .kv
                .options()
                .max_value_bytes
                .max(keel_kv::LARGEST_VALUE_LIMIT)
                .saturating_add(64 << 10);
            let mut held = Held::default();
            Some(match read_limited(api, answer, limit, &mut held).await {
                Ok(bytes) => relayed(status, headers, bytes),
                Err(Relay::Busy(response)) => response,
                Err(Relay::Failed(problem)) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "forward_failed",
                    &format!("leader {leader} at {addr} failed mid-answer: {problem}"),
                ),
            })
        }
        Err(err) => Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "forward_failed",
            &format!("cannot reach leader {leader} at {addr}: {err}"),
        )),
    }
}

/// The leader's answer as this node relays it. An error's code is kept with it (see
/// [`ErrorCode`]), read from the body of a 503 only: that is the one a forwarding node acts on.
pub(crate) fn relayed(status: StatusCode, headers: HeaderMap, bytes: Bytes) -> Response {
    let code = (status == StatusCode::SERVICE_UNAVAILABLE)
        .then(|| serde_json::from_slice::<keel_api::ErrorBody>(&bytes).ok())
        .flatten()
        .map(|body| ErrorCode(body.code));
    let mut response = (status, headers, bytes).into_response();
    if let Some(code) = code {
        response.extensions_mut().insert(code);
    }
    response
}

/// The part of a forwarded answer not charged to the body budget. The leader may already have
/// applied the request (a write), so refusing its answer would leave the client unsure of what
/// happened; and an answer this small is bounded by the connection limit anyway. Only values
/// read through a follower are larger, and a read is safe to retry.
const FREE_ANSWER_BYTES: usize = 64 << 10;

/// Why a forwarded answer was not relayed.
enum Relay {
    /// The leader's answer was cut short or too long.
    Failed(String),
    /// The node's body budget has no room for it.
    Busy(Response),
}

/// Reads a forwarded answer's body into the node's body budget (`held`), refusing one longer
/// than `limit` bytes.
async fn read_limited(
    api: &Api,
    mut answer: reqwest::Response,
    limit: usize,
    held: &mut Held,
) -> Result<Bytes, Relay> {
    let too_long = || Relay::Failed(format!("its answer is longer than {limit} bytes"));
    let known = answer.content_length();
    if let Some(length) = known {
        if length > limit as u64 {
            return Err(too_long());
        }
        let length = length as usize;
        held.take(api, length.saturating_sub(FREE_ANSWER_BYTES))
            .map_err(Relay::Busy)?;
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| Relay::Failed(e.to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_long());
        }
        if known.is_none() {
            let beyond_free = (body.len() + chunk.len()).saturating_sub(FREE_ANSWER_BYTES);
            let already = body.len().saturating_sub(FREE_ANSWER_BYTES);
            held.take(api, beyond_free - already).map_err(Relay::Busy)?;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A renewed certificate is what the forwarder presents from then on, without a restart:
    /// it builds a new client once the node's TLS files change.
    #[test]
    fn the_forwarder_follows_renewed_certificates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = keel_net::TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("node-1.pem"),
            key: dir.path().join("node-1-key.pem"),
        };
        let ca = keel_net::ClusterCa::generate("forward-test").expect("a CA");
        let issue = |when: std::time::SystemTime| {
            let issued = ca.node(1, &[]).expect("a node certificate");
            std::fs::write(&files.ca, ca.cert_pem()).expect("write");
            std::fs::write(&files.cert, issued.cert_pem).expect("write");
            std::fs::write(&files.key, issued.key_pem).expect("write");
            for path in [&files.ca, &files.cert, &files.key] {
                let file = std::fs::File::options().write(true).open(path).unwrap();
                file.set_modified(when).expect("set the file's time");
            }
        };
        let start = std::time::SystemTime::now();
        issue(start - std::time::Duration::from_secs(60));
        let tls = keel_net::PeerTls::load(files.clone(), keel_net::cluster_id("forward-test"), 1)
            .expect("valid certificates");
        let forwarder = Forwarder::new(Some(Arc::new(tls)));
        let _ = forwarder.client();
        let before = forwarder.current.lock().config.clone().expect("HTTPS");

        issue(start);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let _ = forwarder.client();
            let now = forwarder.current.lock().config.clone().expect("HTTPS");
            if !Arc::ptr_eq(&before, &now) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the forwarder still uses the old certificates"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
