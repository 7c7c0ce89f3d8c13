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
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keel::NodeId;
use keel_kv::{Consistency, KvError, KvService, Write, WriteResult};
use serde::Deserialize;

use crate::auth::{Authenticator, Permission, allow_key};
pub use crate::body::default_body_budget;
use crate::body::{BodyHolds, key_and_body};
pub(crate) use crate::forward::forward;
use crate::forward::forward_or_fail;
use crate::metrics::Metrics;
pub use crate::status::{StatusView, status_view};

pub use keel_api::{CLIENT_ID_HEADER, FORWARDED_HEADER, REQUEST_SEQ_HEADER};

/// Where the members of the cluster are: what the node's transport learned from the
/// configuration and from handshakes.
pub trait Directory: Send + Sync + 'static {
    /// The address a member serves this API on, if known.
    fn client_addr(&self, id: NodeId) -> Option<String>;
    /// The address a member serves Raft traffic on, if known.
    fn peer_addr(&self, id: NodeId) -> Option<String>;
}

/// Requests a node forwards to the leader at once, unless told otherwise: with every client
/// connection multiplexing many HTTP/2 streams, nothing else would bound them.
pub const MAX_FORWARDS_IN_FLIGHT: usize = 1024;

/// What the handlers share.
pub struct Api {
    pub(crate) kv: KvService,
    pub(crate) directory: Arc<dyn Directory>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) forwarder: crate::forward::Forwarder,
    /// `http` or `https`: how the members serve clients, and so how requests are forwarded.
    pub(crate) forward_scheme: &'static str,
    /// Requests this node forwards to the leader at once (one permit each); past it a request
    /// that needs forwarding gets 503 (`overloaded`) at once. Bounds the connections to the
    /// leader too, as each request in flight holds at most one.
    pub(crate) forward_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) max_forwards: usize,
    /// Bytes of request bodies the node holds at once, over all requests: one permit a byte,
    /// held from the byte's arrival until its request is answered.
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
    pub(crate) body_budget_bytes: usize,
    /// How clients are authenticated, if they are.
    pub(crate) auth: Option<Arc<Authenticator>>,
    /// The node's recent events and load, for the console.
    pub(crate) monitor: Arc<crate::monitor::Monitor>,
    /// Console streams (`GET /v1/watch`) served at once, one permit each.
    pub(crate) watchers: Arc<tokio::sync::Semaphore>,
}

impl Api {
    /// The API of one node, with [`default_body_budget`].
    pub fn new(kv: KvService, directory: Arc<dyn Directory>, metrics: Arc<Metrics>) -> Arc<Api> {
        let options = ApiOptions::new(&kv);
        Api::with_options(kv, directory, metrics, options)
    }

    /// The API of one node, with `options`.
    pub fn with_options(
        kv: KvService,
        directory: Arc<dyn Directory>,
        metrics: Arc<Metrics>,
        options: ApiOptions,
    ) -> Arc<Api> {
        let ApiOptions {
            body_budget,
            tls,
            max_forwards,
            auth,
        } = options;
        let max_forwards = max_forwards.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let body_budget = body_budget.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let forwarder = crate::forward::Forwarder::new(tls.clone());
        let monitor = crate::monitor::Monitor::new(kv.raft().id());
        monitor.start(kv.clone(), metrics.clone());
        Arc::new(Api {
            kv,
            directory,
            metrics,
            forwarder,
            forward_scheme: if tls.is_some() { "https" } else { "http" },
            forward_slots: Arc::new(tokio::sync::Semaphore::new(max_forwards)),
            max_forwards,
            body_budget: Arc::new(tokio::sync::Semaphore::new(body_budget)),
            body_budget_bytes: body_budget,
            auth,
            monitor,
            watchers: crate::console::watchers(),
        })
    }

    /// How the node authenticates clients, if it does.
    pub fn authenticator(&self) -> Option<&Arc<Authenticator>> {
        self.auth.as_ref()
    }
}

/// How a node's API is set up, beyond its parts.
#[derive(Clone)]
pub struct ApiOptions {
    /// Bytes of request bodies and forwarded answers held at once; a request that finds no
    /// room gets 503 (`overloaded`) at once. Usually [`default_body_budget`].
    pub body_budget: usize,
    /// The node's certificates, when the cluster serves clients over HTTPS: requests are then
    /// forwarded to the leader over HTTPS, trusting the cluster's CA and presenting this node's
    /// certificate.
    pub tls: Option<Arc<keel_net::PeerTls>>,
    /// Most requests forwarded at once (usually [`MAX_FORWARDS_IN_FLIGHT`]).
    pub max_forwards: usize,
    /// Authenticate every request, and authorize it by the client's grants (see
    /// [`crate::auth`]); `None` lets everyone do everything.
    pub auth: Option<Arc<Authenticator>>,
}

impl ApiOptions {
    /// The defaults for `kv`'s limits: plain HTTP, no authentication.
    pub fn new(kv: &KvService) -> ApiOptions {
        ApiOptions {
            body_budget: default_body_budget(kv.options().max_value_bytes),
            tls: None,
            max_forwards: MAX_FORWARDS_IN_FLIGHT,
            auth: None,
        }
    }
}

/// The API's routes.
pub fn router(api: Arc<Api>) -> Router {
    let routes = Router::new()
        .route("/v1/kv", get(list_keys))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).post(post_key).delete(delete_key),
        )
        .route("/v1/status", get(crate::status::status))
        .route("/v1/cluster", get(crate::console::cluster))
        .route("/v1/events", get(crate::console::events))
        .route("/v1/history", get(crate::console::history))
        .route("/v1/watch", get(crate::console::watch))
        .route("/", get(crate::console::asset))
        .route("/ui", get(crate::console::asset))
        .route("/ui/", get(crate::console::asset))
        .route("/ui/{*file}", get(crate::console::asset))
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
        .route("/metrics", get(crate::status::metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no_route", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method (see the HTTP API in the README)",
            )
        });
    // Only on a node that authenticates: the layer costs every request a little.
    let routes = if api.auth.is_some() {
        routes.layer(axum::middleware::from_fn_with_state(
            api.clone(),
            crate::auth::authenticate,
        ))
    } else {
        routes
    };
    routes.with_state(api)
}

/// The routes of the monitoring listener (`NodeConfig::admin_listen`): `/metrics` and
/// `/v1/status`, read-only and without authentication.
pub fn admin_router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/status", get(crate::status::status))
        .route("/metrics", get(crate::status::metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no_route",
                "this listener serves /metrics and /v1/status only",
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
    response
        .extensions_mut()
        .insert(ErrorCode(code.to_string()));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

pub(crate) fn kv_error(e: &KvError) -> Response {
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
        | KvError::StorageUnavailable { .. }
        | KvError::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
    };
    let code = match e {
        KvError::NotLeader { .. } => "no_leader",
        other => other.code(),
    };
    error(status, code, &e.to_string())
}

/// The code of an error answer (`keel_api::ErrorBody::code`), kept with the response for this
/// node's own use (it is not sent): it says whether the request may be tried again.
#[derive(Clone, Debug)]
pub(crate) struct ErrorCode(pub String);

/// The request as received (without its body), kept for forwarding it unchanged.
pub(crate) type Incoming = axum::http::request::Parts;

pub(crate) type KeyPath = Result<Path<String>, PathRejection>;

/// The key a request is for, which its client must be allowed to `need`.
pub(crate) fn key_of(
    api: &Api,
    path: KeyPath,
    incoming: &Incoming,
    need: Permission,
) -> Result<Bytes, Response> {
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
    allow_key(incoming, need, key.as_bytes())?;
    Ok(Bytes::from(key))
}

/// The `consistency` a read asks for: `linearizable` (the default) or `stale`.
fn consistency_of(query: &BTreeMap<String, String>) -> Result<Consistency, Response> {
    match query.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("stale") => Ok(Consistency::Stale),
        Some(other) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_consistency",
            &format!("consistency must be linearizable or stale, not {other:?}"),
        )),
    }
}

/// Keys listed when a request names no `limit`.
const DEFAULT_LIST_LIMIT: usize = 100;

/// `GET /v1/kv?prefix=P&after=K&limit=N`: a page of the keys starting with `P` (every key
/// without it), after `K` if given, in byte order; read like a key (linearizable by default).
async fn list_keys(
    State(api): State<Arc<Api>>,
    Query(query): Query<BTreeMap<String, String>>,
    request: Request,
) -> Response {
    let (incoming, _) = request.into_parts();
    let prefix = query.get("prefix").map_or("", String::as_str);
    let after = query.get("after").map(String::as_str);
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIST_LIMIT,
        Some(Ok(limit)) if (1..=keel_api::MAX_LIST_LIMIT).contains(&limit) => limit,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_limit",
                &format!(
                    "limit must be a number from 1 to {}",
                    keel_api::MAX_LIST_LIMIT
                ),
            );
        }
    };
    let consistency = match consistency_of(&query) {
        Ok(consistency) => consistency,
        Err(response) => return response,
    };
    // Every key under the prefix must be readable: a grant for a shorter prefix (or none).
    if let Err(response) = allow_key(&incoming, Permission::Read, prefix.as_bytes()) {
        return response;
    }
    let list = || {
        api.kv.list(
            prefix.as_bytes(),
            after.map(str::as_bytes),
            limit,
            consistency,
        )
    };
    serve_read(&api, &incoming, list, |(keys, more)| {
        let keys = keys
            .into_iter()
            .map(|(key, size)| keel_api::KeyEntry {
                key: String::from_utf8_lossy(&key).into_owned(),
                size: size as u64,
            })
            .collect();
        axum::Json(keel_api::KeyList { keys, more }).into_response()
    })
    .await
}

/// Answers a read with `respond(read())`, or, where this node cannot serve it, by waiting for
/// a leader or forwarding to it, as long as leadership keeps moving within the request timeout.
async fn serve_read<T, Fut>(
    api: &Arc<Api>,
    incoming: &Incoming,
    read: impl Fn() -> Fut,
    respond: impl FnOnce(T) -> Response,
) -> Response
where
    Fut: Future<Output = Result<T, KvError>>,
{
    api.metrics.reads.inc();
    let mut leadership = api.kv.raft().leadership();
    let deadline = tokio::time::Instant::now() + api.kv.options().request_timeout;
    loop {
        let mut answer = read().await;
        if let Err(e) = &answer
            && awaits_leader(e)
        {
            answer = when_led(api, &read).await;
        }
        let e = match answer {
            Ok(value) => return respond(value),
            Err(e) => e,
        };
        let response = forward_or_fail(api, &e, incoming, Bytes::new()).await;
        // A read changes nothing: it may always be tried again.
        let from_client = !crate::forward::forwarded(incoming);
        if !leader_moved(&response, true, from_client, &mut leadership, deadline) {
            return response;
        }
    }
}

async fn get_key(
    State(api): State<Arc<Api>>,
    path: KeyPath,
    Query(query): Query<BTreeMap<String, String>>,
    request: Request,
) -> Response {
    let (incoming, _) = request.into_parts();
    let key = match key_of(&api, path, &incoming, Permission::Read) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let consistency = match consistency_of(&query) {
        Ok(consistency) => consistency,
        Err(response) => return response,
    };
    let read = || api.kv.read(&key, consistency);
    serve_read(&api, &incoming, read, |value| match value {
        Some(value) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            value,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "key not found"),
    })
    .await
}

async fn put_key(State(api): State<Arc<Api>>, path: KeyPath, request: Request) -> Response {
    let (incoming, body) = request.into_parts();
    let (key, value, _budget) =
        match key_and_body(&api, path, &incoming, body, BodyHolds::Value).await {
            Ok(kv) => kv,
            Err(response) => return response,
        };
    write(&api, incoming, value.clone(), Write::Put { key, value }).await
}

async fn delete_key(State(api): State<Arc<Api>>, path: KeyPath, request: Request) -> Response {
    let (incoming, _) = request.into_parts();
    let key = match key_of(&api, path, &incoming, Permission::Write) {
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
        // Answered before the body is read (a small one is drained first).
        other => {
            let message = match other {
                Some(op) => format!("POST needs ?op=append or ?op=cas, not ?op={op}"),
                None => "POST needs ?op=append or ?op=cas".to_string(),
            };
            let response = error(StatusCode::BAD_REQUEST, "bad_op", &message);
            return crate::body::refuse(body, response).await;
        }
    };
    let (key, body, _budget) = match key_and_body(&api, path, &incoming, body, holds).await {
        Ok(kv) => kv,
        Err(response) => return response,
    };
    match holds {
        BodyHolds::Value => {
            let write_op = Write::Append {
                key,
                value: body.clone(),
            };
            write(&api, incoming, body, write_op).await
        }
        BodyHolds::Cas => {
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
    }
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
    let owner = crate::auth::owner(&incoming);
    let is_cas = matches!(write_op, Write::Cas { .. });
    api.metrics.writes.inc();
    let mut leadership = api.kv.raft().leadership();
    let deadline = tokio::time::Instant::now() + api.kv.options().request_timeout;
    let pending = loop {
        let e = match api.kv.submit_as(owner, session, write_op.clone()) {
            Ok(pending) => break pending,
            Err(e) if awaits_leader(&e) => {
                // A leader hands over within milliseconds, and an election takes a few round
                // trips: wait for the next leader (within the request timeout), then write or
                // forward as usual, rather than fail the client.
                let submit =
                    || std::future::ready(api.kv.submit_as(owner, session, write_op.clone()));
                match when_led(api, submit).await {
                    Ok(pending) => break pending,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        let response = forward_or_fail(api, &e, &incoming, body.clone()).await;
        // With a session, the state machine applies a write once however often it is proposed.
        let repeatable = session.is_some();
        let from_client = !crate::forward::forwarded(&incoming);
        if !leader_moved(
            &response,
            repeatable,
            from_client,
            &mut leadership,
            deadline,
        ) {
            return response;
        }
    };
    // Kept only to forward the request; freed now, while still in cache, rather than after
    // the wait for the commit (under load, that drop alone cost 3% of the leader's CPU).
    drop((incoming, body));
    match pending.wait().await {
        Ok(result) => write_answer(is_cas, result),
        Err(e) => kv_error(&e),
    }
}

/// Whether a request that was forwarded to the leader, or refused, should be tried again on
/// this node: it may be tried again ([`may_try_again`]), it came from a client (not another
/// node: only the first node retries), this node's view of leadership changed since (the leader
/// it forwarded to handed over, perhaps to this node), and the request timeout has not passed.
fn leader_moved(
    response: &Response,
    repeatable: bool,
    from_client: bool,
    leadership: &mut tokio::sync::watch::Receiver<keel::Leadership>,
    deadline: tokio::time::Instant,
) -> bool {
    let retry = may_try_again(response, repeatable)
        && from_client
        && leadership.has_changed().unwrap_or(false)
        && tokio::time::Instant::now() < deadline;
    if retry {
        leadership.mark_unchanged();
    }
    retry
}

/// Whether a request that got `response` may be sent again: it failed for want of a leader
/// (503), and either sending it twice does no harm (`repeatable`: a read, or a write with a
/// session) or the answer says it was never proposed. A write that was proposed may already be
/// in the log, and commit, after its leader failed to answer it (`timeout`,
/// `leadership_lost`, `forward_failed`, `shutdown`): proposing it again would apply it twice.
fn may_try_again(response: &Response, repeatable: bool) -> bool {
    /// Refusals before the write reached the log (`KvService::submit`'s errors, and the budget
    /// of request bodies).
    const NEVER_PROPOSED: [&str; 4] = [
        "no_leader",
        "not_leader",
        "transferring_leadership",
        "overloaded",
    ];
    response.status() == StatusCode::SERVICE_UNAVAILABLE
        && (repeatable
            || response
                .extensions()
                .get::<ErrorCode>()
                .is_some_and(|ErrorCode(code)| NEVER_PROPOSED.contains(&code.as_str())))
}

/// Whether a request refused with `e` may succeed once a leader is known: the leader is
/// handing over, or this node knows of no leader (an election is under way).
fn awaits_leader(e: &KvError) -> bool {
    matches!(
        e,
        KvError::TransferringLeadership { .. } | KvError::NotLeader { leader_hint: None }
    )
}

/// Tries `attempt` again each time leadership changes (and every 10 ms: an abandoned transfer
/// changes no leadership) until it is no longer refused for want of a leader, or the request
/// timeout passes (then `Timeout`: no leader within it).
async fn when_led<T, Fut>(api: &Api, mut attempt: impl FnMut() -> Fut) -> Result<T, KvError>
where
    Fut: Future<Output = Result<T, KvError>>,
{
    let mut leadership = api.kv.raft().leadership();
    let deadline = tokio::time::Instant::now() + api.kv.options().request_timeout;
    loop {
        let step = tokio::time::sleep(std::time::Duration::from_millis(10));
        tokio::select! {
            _ = leadership.changed() => {}
            _ = step => {}
            _ = tokio::time::sleep_until(deadline) => return Err(KvError::Timeout),
        }
        match attempt().await {
            Err(e) if awaits_leader(&e) => continue,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(code: &str) -> Response {
        let body = keel_api::ErrorBody {
            error: "from the leader".to_string(),
            code: code.to_string(),
        };
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
        crate::forward::relayed(StatusCode::SERVICE_UNAVAILABLE, HeaderMap::new(), bytes)
    }

    /// A write without a session is proposed again only if its first try never reached a log:
    /// one that did may commit after its leader failed to answer, and would apply twice.
    #[test]
    fn a_write_is_tried_again_only_if_it_was_never_proposed_or_has_a_session() {
        let refused = |code| error(StatusCode::SERVICE_UNAVAILABLE, code, "here");
        for code in [
            "no_leader",
            "not_leader",
            "transferring_leadership",
            "overloaded",
        ] {
            assert!(may_try_again(&refused(code), false), "{code}");
            assert!(may_try_again(&relayed(code), false), "{code}, relayed");
        }
        for code in ["timeout", "leadership_lost", "forward_failed", "shutdown"] {
            assert!(!may_try_again(&refused(code), false), "{code}");
            assert!(!may_try_again(&relayed(code), false), "{code}, relayed");
            assert!(
                may_try_again(&refused(code), true),
                "{code}: a read, or a session"
            );
        }
        assert!(!may_try_again(
            &error(StatusCode::CONFLICT, "stale_request", "here"),
            true
        ));
        // A 503 that is not keel's (a proxy's page, say) says nothing of the write.
        let foreign = crate::forward::relayed(
            StatusCode::SERVICE_UNAVAILABLE,
            HeaderMap::new(),
            Bytes::from_static(b"<html>busy</html>"),
        );
        assert!(!may_try_again(&foreign, false));
        assert!(may_try_again(&foreign, true));
    }
}
