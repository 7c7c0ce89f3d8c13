//! The HTTP API every node serves. Requests that need the leader are forwarded to it when this
//! node is a follower, so clients can talk to any node.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /v1/kv/{key}[?consistency=linearizable\|stale]` | 200 raw value, or 404 |
//! | `PUT /v1/kv/{key}` (raw value) | 200 `{"index": N}` |
//! | `POST /v1/kv/{key}?op=append` (raw suffix) | 200 `{"index": N}` |
//! | `POST /v1/kv/{key}?op=cas` (`{"expected": "old" or null, "value": "new"}`) | 200 `{"succeeded": bool, "index": N}` |
//! | `DELETE /v1/kv/{key}` | 200 `{"index": N}` |
//! | `GET /v1/status` | JSON view of the node and the cluster |
//! | `GET /v1/members`, `POST /v1/members`, `POST /v1/members/{id}/promote`, `DELETE /v1/members/{id}`, `POST /v1/leader` | membership and leadership (see [`crate::members`]) |
//! | `GET /metrics` | Prometheus text format |
//!
//! Writes may carry `Keel-Client-Id` and `Keel-Request-Seq` headers for exactly-once retries.
//! Errors are JSON `{"error": "...", "code": "..."}`: 400 malformed, 404 no such key, 409 stale
//! sequence number, 413 key or value too large (for an append, the value it would make; it is
//! refused and the value left as it was), 408 when a request body stops arriving for the
//! request timeout, 503 (with `Retry-After`) when there is no leader or quorum within the
//! request timeout, or (`overloaded`) when the node's budget for request bodies and forwarded
//! answers has no room for this one.

// Handlers return `Result<_, Response>` so an early answer can be `?`-propagated; the size of
// axum's Response is not worth boxing on this path.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use keel::{NodeId, Role};
use keel_kv::{Consistency, KvError, KvService, Write, WriteResult};
use serde::Deserialize;

use crate::metrics::Metrics;

pub use keel_api::{CLIENT_ID_HEADER, FORWARDED_HEADER, REQUEST_SEQ_HEADER};

/// Where the members of the cluster are: what the node's transport learned from the
/// configuration and from handshakes.
pub trait Directory: Send + Sync + 'static {
    /// The address a member serves this API on, if known.
    fn client_addr(&self, id: NodeId) -> Option<String>;
    /// The address a member serves Raft traffic on, if known.
    fn peer_addr(&self, id: NodeId) -> Option<String>;
}

/// How long a follower keeps an idle connection to the leader for forwarding.
const FORWARD_POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the handlers share.
pub struct Api {
    pub(crate) kv: KvService,
    pub(crate) directory: Arc<dyn Directory>,
    pub(crate) metrics: Arc<Metrics>,
    forwarder: reqwest::Client,
    /// Bytes of request bodies the node holds at once, over all requests: one permit a byte,
    /// held from the byte's arrival until its request is answered.
    body_budget: Arc<tokio::sync::Semaphore>,
    body_budget_bytes: usize,
}

/// The bytes of request bodies (and forwarded answers) a node holds at once unless told
/// otherwise: 256 MiB, or the largest request the limits allow if that is more.
pub fn default_body_budget(max_value_bytes: usize) -> usize {
    (256usize << 20).max(cas_body_bound(max_value_bytes))
}

impl Api {
    /// The API of one node, with [`default_body_budget`].
    pub fn new(kv: KvService, directory: Arc<dyn Directory>, metrics: Arc<Metrics>) -> Arc<Api> {
        let budget = default_body_budget(kv.options().max_value_bytes);
        Api::with_body_budget(kv, directory, metrics, budget)
    }

    /// The API of one node holding at most `body_budget` bytes of request bodies and forwarded
    /// answers at once; a request that finds no room gets 503 (`overloaded`) at once.
    pub fn with_body_budget(
        kv: KvService,
        directory: Arc<dyn Directory>,
        metrics: Arc<Metrics>,
        body_budget: usize,
    ) -> Arc<Api> {
        let body_budget = body_budget.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let forwarder = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            // Well under the leader's idle timeout (30 s by default), so that a pooled
            // connection is seldom reused just as the leader closes it.
            .pool_idle_timeout(FORWARD_POOL_IDLE)
            .tcp_nodelay(true)
            // Only to the leader's own address: no proxy from the environment, no redirects.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client without TLS builds");
        Arc::new(Api {
            kv,
            directory,
            metrics,
            forwarder,
            body_budget: Arc::new(tokio::sync::Semaphore::new(body_budget)),
            body_budget_bytes: body_budget,
        })
    }
}

/// The API's routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).post(post_key).delete(delete_key),
        )
        .route("/v1/status", get(status))
        .route(
            "/v1/members",
            get(crate::members::list).post(crate::members::add),
        )
        .route(
            "/v1/members/{id}/promote",
            axum::routing::post(crate::members::promote),
        )
        .route(
            "/v1/members/{id}",
            axum::routing::delete(crate::members::remove),
        )
        .route("/v1/leader", axum::routing::post(crate::members::transfer))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no_route", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method (see the HTTP API in the README)",
            )
        })
        .with_state(api)
}

/// A JSON error answer.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = keel_api::ErrorBody {
        error: message.to_string(),
        code: code.to_string(),
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn kv_error(e: &KvError) -> Response {
    let status = match e {
        KvError::KeyTooLarge { .. } | KvError::ValueTooLarge { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        KvError::Stale { .. } => StatusCode::CONFLICT,
        KvError::NotLeader { .. }
        | KvError::Timeout
        | KvError::LeadershipLost
        | KvError::Overloaded
        | KvError::TransferringLeadership { .. }
        | KvError::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
    };
    let code = match e {
        KvError::NotLeader { .. } => "no_leader",
        other => other.code(),
    };
    error(status, code, &e.to_string())
}

/// The request as received (without its body), kept for forwarding it unchanged.
pub(crate) type Incoming = axum::http::request::Parts;

type KeyPath = Result<Path<String>, PathRejection>;

fn key_of(api: &Api, path: KeyPath) -> Result<Bytes, Response> {
    let Path(key) = path.map_err(|e| error(StatusCode::BAD_REQUEST, "bad_key", &e.body_text()))?;
    let max = api.kv.options().max_key_bytes;
    if key.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_key",
            "the key is empty",
        ));
    }
    if key.len() > max {
        return Err(kv_error(&KvError::KeyTooLarge {
            size: key.len(),
            max,
        }));
    }
    Ok(Bytes::from(key))
}

async fn get_key(
    State(api): State<Arc<Api>>,
    path: KeyPath,
    Query(query): Query<BTreeMap<String, String>>,
    request: Request,
) -> Response {
    let key = match key_of(&api, path) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let consistency = match query.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Consistency::Linearizable,
        Some("stale") => Consistency::Stale,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_consistency",
                &format!("consistency must be linearizable or stale, not {other:?}"),
            );
        }
    };
    api.metrics.reads.inc();
    match api.kv.read(&key, consistency).await {
        Ok(Some(value)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            value,
        )
            .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "key not found"),
        Err(e) => {
            let (incoming, _) = request.into_parts();
            forward_or_fail(&api, &e, incoming, Bytes::new()).await
        }
    }
}

async fn put_key(State(api): State<Arc<Api>>, path: KeyPath, request: Request) -> Response {
    let (incoming, body) = request.into_parts();
    let (key, value, _budget) = match key_and_body(&api, path, body, BodyHolds::Value).await {
        Ok(kv) => kv,
        Err(response) => return response,
    };
    write(&api, incoming, value.clone(), Write::Put { key, value }).await
}

async fn delete_key(State(api): State<Arc<Api>>, path: KeyPath, request: Request) -> Response {
    let (incoming, _) = request.into_parts();
    let key = match key_of(&api, path) {
        Ok(key) => key,
        Err(response) => return response,
    };
    write(&api, incoming, Bytes::new(), Write::Delete { key }).await
}

/// Body of a compare-and-set.
#[derive(Deserialize)]
struct CasBody {
    expected: Option<String>,
    value: String,
}

async fn post_key(
    State(api): State<Arc<Api>>,
    path: KeyPath,
    Query(query): Query<BTreeMap<String, String>>,
    request: Request,
) -> Response {
    let (incoming, body) = request.into_parts();
    let holds = match query.get("op").map(String::as_str) {
        Some("cas") => BodyHolds::Cas,
        Some("append") => BodyHolds::Value,
        // Answered before the body is read.
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_op",
                &format!("POST needs ?op=append or ?op=cas, not {other:?}"),
            );
        }
    };
    let (key, body, _budget) = match key_and_body(&api, path, body, holds).await {
        Ok(kv) => kv,
        Err(response) => return response,
    };
    match query.get("op").map(String::as_str) {
        Some("append") => {
            let write_op = Write::Append {
                key,
                value: body.clone(),
            };
            write(&api, incoming, body, write_op).await
        }
        Some("cas") => {
            let cas: CasBody = match serde_json::from_slice(&body) {
                Ok(cas) => cas,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_body",
                        &format!(
                            "a cas body is JSON {{\"expected\": \"old\" or null, \"value\": \"new\"}}: {e}"
                        ),
                    );
                }
            };
            let write_op = Write::Cas {
                key,
                expected: cas.expected.map(Bytes::from),
                value: Bytes::from(cas.value),
            };
            write(&api, incoming, body, write_op).await
        }
        other => error(
            StatusCode::BAD_REQUEST,
            "bad_op",
            &format!("POST needs ?op=append or ?op=cas, not {other:?}"),
        ),
    }
}

/// What a request body carries, which bounds how much of it is read.
#[derive(Clone, Copy)]
enum BodyHolds {
    /// A value, raw (put, append).
    Value,
    /// Two values as JSON strings (compare-and-set), where an escape takes up to 6 bytes for
    /// one (`\u0001`).
    Cas,
}

/// The most of a compare-and-set body read: two values, escaped at worst, and the JSON around.
fn cas_body_bound(max_value_bytes: usize) -> usize {
    max_value_bytes.saturating_mul(12).saturating_add(1024)
}

/// Reads the key and the body, holding the body's bytes in the node's body budget (the permit
/// returned) until the caller drops it.
async fn key_and_body(
    api: &Api,
    path: KeyPath,
    body: Body,
    holds: BodyHolds,
) -> Result<(Bytes, Bytes, Held), Response> {
    let key = key_of(api, path)?;
    // Past the value limit the KV service refuses the value with its exact size; the body is
    // read a little further so that it can, and no further.
    let value_max = api.kv.options().max_value_bytes;
    let max = match holds {
        BodyHolds::Value => value_max.saturating_add(1024),
        BodyHolds::Cas => cas_body_bound(value_max),
    };
    // A body of known length (most are) takes its bytes of the budget before any is read, or
    // is turned away at once; one of unknown length (chunked) takes them part by part.
    let mut held = Held::default();
    let known = axum::body::HttpBody::size_hint(&body).exact();
    if let Some(length) = known {
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if length > max {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "value_too_large",
                &format!(
                    "the request body of {length} bytes is longer than {max}; values may have \
                     at most {} bytes",
                    api.kv.options().max_value_bytes
                ),
            ));
        }
        held.take(api, length)?;
    }
    // The header timeout ends with the request head, and the request timeout starts after
    // the body: a client that announces a body and then stops sending would otherwise hold
    // its connection for good. So the body must keep coming: each part of it within the
    // request timeout of the one before (a deadline on the whole would fail slow uploads).
    let idle = api.kv.options().request_timeout;
    let mut body = body;
    // Most bodies arrive in one part, kept as it is: no allocation, no copy.
    let mut first: Option<Bytes> = None;
    let mut more: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    &format!("the request body stopped arriving for {idle:?}"),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(error(StatusCode::BAD_REQUEST, "bad_body", &e.to_string()));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            len += data.len();
            if len > max {
                // Reading stops here: the body's whole length is not known.
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "value_too_large",
                    &format!(
                        "the request body is longer than {max} bytes (read {len} before \
                         stopping); values may have at most {} bytes",
                        api.kv.options().max_value_bytes
                    ),
                ));
            }
            if known.is_none() {
                held.take(api, data.len())?;
            }
            match first {
                None => first = Some(data),
                Some(_) => more.push(data),
            }
        }
    }
    let value = match first {
        None => Bytes::new(),
        Some(first) if more.is_empty() => first,
        Some(first) => {
            let mut all = bytes::BytesMut::with_capacity(len);
            all.extend_from_slice(&first);
            more.iter().for_each(|part| all.extend_from_slice(part));
            all.freeze()
        }
    };
    Ok((key, value, held))
}

/// Bytes of the node's body budget that a request holds, given back when it is dropped.
#[derive(Default)]
struct Held(Option<tokio::sync::OwnedSemaphorePermit>);

impl Held {
    /// Takes `bytes` more of the budget, or fails at once (503) if it has no room: waiting
    /// would hold what was taken so far, and tokio's semaphore lets a waiter claim every
    /// permit that frees up, so waiters would starve everyone else.
    fn take(&mut self, api: &Api, bytes: usize) -> Result<(), Response> {
        if bytes == 0 {
            return Ok(());
        }
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|count| api.body_budget.clone().try_acquire_many_owned(count).ok())
            .ok_or_else(|| budget_exhausted(api))?;
        match &mut self.0 {
            Some(held) => held.merge(permit),
            None => self.0 = Some(permit),
        }
        Ok(())
    }
}

fn budget_exhausted(api: &Api) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        &format!(
            "request bodies in progress hold all {} bytes this node takes at once; retry later",
            api.body_budget_bytes
        ),
    )
}

fn session(headers: &HeaderMap) -> Result<Option<(u64, u64)>, Response> {
    let parse = |name: &str| -> Result<Option<u64>, Response> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_header",
                    &format!("{name} must be an unsigned integer"),
                )
            })
    };
    match (parse(CLIENT_ID_HEADER)?, parse(REQUEST_SEQ_HEADER)?) {
        (None, None) => Ok(None),
        (Some(client), Some(seq)) if client != 0 => Ok(Some((client, seq))),
        (Some(0), Some(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_header",
            "Keel-Client-Id must not be 0",
        )),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_header",
            "Keel-Client-Id and Keel-Request-Seq go together",
        )),
    }
}

async fn write(api: &Arc<Api>, incoming: Incoming, body: Bytes, write_op: Write) -> Response {
    let session = match session(&incoming.headers) {
        Ok(session) => session,
        Err(response) => return response,
    };
    let is_cas = matches!(write_op, Write::Cas { .. });
    api.metrics.writes.inc();
    let pending = match api.kv.submit(session, write_op.clone()) {
        Ok(pending) => pending,
        Err(KvError::TransferringLeadership { .. }) => {
            // The leader hands over within milliseconds: wait for it, then write (or forward)
            // as usual, rather than fail the client.
            match after_transfer(api, session, write_op).await {
                Ok(pending) => pending,
                Err(e) => return forward_or_fail(api, &e, incoming, body).await,
            }
        }
        Err(e) => return forward_or_fail(api, &e, incoming, body).await,
    };
    // Kept only to forward the request; freed now, while still in cache, rather than after
    // the wait for the commit (under load, that drop alone cost 3% of the leader's CPU).
    drop((incoming, body));
    match pending.wait().await {
        Ok(result) => write_answer(is_cas, result),
        Err(e) => kv_error(&e),
    }
}

/// Submits a write refused during a leadership transfer again once the transfer has ended
/// (leadership moved, or the transfer was abandoned), within the request timeout.
async fn after_transfer(
    api: &Api,
    session: Option<(u64, u64)>,
    write_op: Write,
) -> Result<keel_kv::PendingWrite, KvError> {
    let raft = api.kv.raft();
    let mut leadership = raft.leadership();
    let deadline = tokio::time::Instant::now() + api.kv.options().request_timeout;
    loop {
        // A short step too: an abandoned transfer changes no leadership.
        let step = tokio::time::sleep(std::time::Duration::from_millis(10));
        tokio::select! {
            _ = leadership.changed() => {}
            _ = step => {}
            _ = tokio::time::sleep_until(deadline) => return Err(KvError::Timeout),
        }
        match api.kv.submit(session, write_op.clone()) {
            Err(KvError::TransferringLeadership { .. }) => continue,
            other => return other,
        }
    }
}

fn write_answer(is_cas: bool, result: WriteResult) -> Response {
    // Written by hand: this runs for every write, and the shape is fixed.
    let body = if is_cas {
        format!(
            "{{\"succeeded\":{},\"index\":{}}}",
            result.succeeded, result.index
        )
    } else {
        format!("{{\"index\":{}}}", result.index)
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Sends a request this follower cannot serve to the leader and relays the answer; answers
/// the error itself when there is no leader to forward to.
async fn forward_or_fail(api: &Arc<Api>, e: &KvError, incoming: Incoming, body: Bytes) -> Response {
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
    incoming: Incoming,
    body: Bytes,
) -> Option<Response> {
    if incoming.headers.contains_key(FORWARDED_HEADER) || leader == api.kv.raft().id() {
        return None;
    }
    let addr = api.directory.client_addr(leader)?;
    api.metrics.forwarded.inc();
    let path = incoming
        .uri
        .path_and_query()
        .map_or(incoming.uri.path(), |p| p.as_str());
    let mut request = api
        .forwarder
        .request(incoming.method.clone(), format!("http://{addr}{path}"))
        .header(FORWARDED_HEADER, api.kv.raft().id().to_string())
        .timeout(api.kv.options().request_timeout)
        .body(body);
    for name in [
        header::CONTENT_TYPE.as_str(),
        CLIENT_ID_HEADER,
        REQUEST_SEQ_HEADER,
    ] {
        if let Some(value) = incoming.headers.get(name) {
            request = request.header(name, value.clone());
        }
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
                Ok(bytes) => (status, headers, bytes).into_response(),
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

/// The JSON of `GET /v1/status` (defined in `keel-api`, which clients read it with).
pub type StatusView = keel_api::NodeStatus;

/// Builds the status view of the node behind `api`: the node, and every member of the
/// configuration in force on it.
pub fn status_view(api: &Api) -> StatusView {
    let status = api.kv.raft().status();
    let role = match status.role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre_candidate",
    };
    let membership = &status.membership.membership;
    let members = membership
        .members()
        .into_iter()
        .map(|id| {
            let follower = status.followers.iter().find(|f| f.id == id);
            let is_self_leader = id == status.id && status.role == Role::Leader;
            keel_api::MemberStatus {
                id,
                peer_addr: api.directory.peer_addr(id),
                client_addr: api.directory.client_addr(id),
                match_index: follower
                    .map(|f| f.match_index)
                    .or(is_self_leader.then_some(status.last_log_index)),
                last_contact_ms: follower
                    .map(|f| f.last_contact_ms)
                    .or(is_self_leader.then_some(0)),
                role: Some(crate::members::role_name(membership, id).to_string()),
            }
        })
        .collect();
    StatusView {
        node_id: status.id,
        role: role.to_string(),
        term: status.current_term,
        leader_id: status.leader_id,
        leader_addr: status.leader_id.and_then(|l| api.directory.client_addr(l)),
        commit_index: status.commit_index,
        applied_index: api.kv.applied_index(),
        last_log_index: status.last_log_index,
        snapshot_index: status.snapshot_index,
        members,
        joint: membership.is_joint(),
        membership_index: status.membership.index,
        membership_committed: status.membership.committed,
        transfer_to: status.transfer_to,
    }
}

async fn status(State(api): State<Arc<Api>>) -> Response {
    axum::Json(status_view(&api)).into_response()
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let text = api.metrics.render(&api.kv);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}
