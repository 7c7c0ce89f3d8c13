//! The web console every node serves at `/ui/` (assets embedded in the binary from
//! `crates/keel-server/console/`), and the JSON behind it: `GET /v1/events` and
//! `GET /v1/history` (this node's rings, see [`crate::monitor`]), `GET /v1/cluster` (every
//! member's status and events, fetched by this node and merged) and `GET /v1/watch` (the same,
//! as server-sent events, once a second).
//!
//! The page talks only to the node that served it; that node fetches the other members, so
//! the browser needs no cross-origin access to them. The assets are public (they hold no
//! data); the JSON needs `admin` on a node that authenticates, and the page sends the token its
//! user gives it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keel_api::{ClusterMember, ClusterView, Events, History, NodeStatus};
use tokio::sync::Semaphore;

use crate::http::{Api, error};
use crate::monitor::{SAMPLE_INTERVAL, merge_events};

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const STYLE_CSS: &str = include_str!("../console/style.css");

/// How long the node waits for another member's status when assembling the cluster view.
const MEMBER_TIMEOUT: Duration = Duration::from_millis(1500);

/// Streams (`GET /v1/watch`) a node serves at once; past it, 503 `overloaded`.
pub const MAX_WATCHERS: usize = 64;

/// Whether `path` is one of the console's assets, served to anyone (they hold no data).
pub(crate) fn is_asset(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// `GET /ui/...`: the page and its script and style; `/` and `/ui` lead to `/ui/`.
pub(crate) async fn asset(request: Request) -> Response {
    let (body, content_type) = match request.uri().path() {
        "/ui/" | "/ui/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/ui/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/ui/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        "/" | "/ui" => {
            return (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/")]).into_response();
        }
        _ => return error(StatusCode::NOT_FOUND, "no_route", "no such console file"),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            // The page loads nothing but its own files and talks only to its own node.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /v1/events`: this node's events, oldest first.
pub(crate) async fn events(State(api): State<Arc<Api>>) -> Response {
    axum::Json(Events {
        node_id: api.kv.raft().id(),
        events: api.monitor.events(),
    })
    .into_response()
}

/// `GET /v1/history`: this node's load, a sample a second, oldest first.
pub(crate) async fn history(State(api): State<Arc<Api>>) -> Response {
    axum::Json(History {
        node_id: api.kv.raft().id(),
        interval_ms: SAMPLE_INTERVAL.as_millis() as u64,
        samples: api.monitor.samples(),
    })
    .into_response()
}

/// `GET /v1/cluster`: the cluster as this node sees it.
pub(crate) async fn cluster(State(api): State<Arc<Api>>, request: Request) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    axum::Json(cluster_view(&api, authorization.as_ref()).await).into_response()
}

/// `GET /v1/watch`: a `cluster` event (as `GET /v1/cluster`) and a `sample` event (this
/// node's newest) every second, as server-sent events, while the client reads them.
pub(crate) async fn watch(State(api): State<Arc<Api>>, request: Request) -> Response {
    let Ok(permit) = api.watchers.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &format!("this node serves {MAX_WATCHERS} console streams already"),
        );
    };
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let api = Arc::downgrade(&api);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(2);
    tokio::spawn(async move {
        let _permit = permit;
        let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(api) = api.upgrade() else {
                return;
            };
            let view = cluster_view(&api, authorization.as_ref()).await;
            let mut text = sse("cluster", &view);
            if let Some(sample) = api.monitor.last_sample() {
                text.push_str(&sse("sample", &sample));
            }
            drop(api);
            // The client went away (or stopped reading): end the stream.
            if sender.send(Ok(Bytes::from(text))).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One server-sent event.
fn sse(event: &str, data: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(data).expect("plain data serializes");
    format!("event: {event}\ndata: {json}\n\n")
}

/// What a member answered when asked for its status and events.
type Fetched = Result<(NodeStatus, Vec<keel_api::Event>), String>;

/// Every member's own status and events, fetched (this node's read locally), merged into the
/// cluster's picture.
pub async fn cluster_view(api: &Api, authorization: Option<&HeaderValue>) -> ClusterView {
    let own = crate::status::status_view(api);
    let own_id = own.node_id;
    let mut fetched: std::collections::BTreeMap<u64, Fetched> = std::collections::BTreeMap::new();
    fetched.insert(own_id, Ok((own.clone(), api.monitor.events())));
    // Members whose client address this node knows first; then the others, at the addresses
    // the members reached meanwhile (the leader's) report.
    let mut addresses: std::collections::BTreeMap<u64, String> = own
        .members
        .iter()
        .filter_map(|m| Some((m.id, m.client_addr.clone()?)))
        .collect();
    for _round in 0..2 {
        let wanted: Vec<(u64, String)> = own
            .members
            .iter()
            .filter(|m| !fetched.contains_key(&m.id))
            .filter_map(|m| Some((m.id, addresses.get(&m.id)?.clone())))
            .collect();
        let answers =
            futures_util::future::join_all(wanted.into_iter().map(|(id, addr)| async move {
                (id, fetch_member(api, &addr, authorization).await)
            }))
            .await;
        for (id, answer) in answers {
            if let Ok((status, _)) = &answer {
                for member in &status.members {
                    if let Some(addr) = &member.client_addr {
                        addresses.entry(member.id).or_insert_with(|| addr.clone());
                    }
                }
            }
            fetched.insert(id, answer);
        }
    }

    // The leader's view of the others' progress.
    let leader_id = own.leader_id.or_else(|| {
        fetched
            .values()
            .filter_map(|f| f.as_ref().ok())
            .find(|(s, _)| s.role == "leader")
            .map(|(s, _)| s.node_id)
    });
    let leader = leader_id.and_then(|l| fetched.get(&l)?.as_ref().ok().map(|(s, _)| s.clone()));
    let term = fetched
        .values()
        .filter_map(|f| f.as_ref().ok())
        .map(|(s, _)| s.term)
        .max()
        .unwrap_or(own.term);

    let mut voters = 0i64;
    let mut live_voters = 0i64;
    let members = own
        .members
        .iter()
        .map(|member| {
            let configured_role = member.role.clone().unwrap_or_else(|| "voter".into());
            let answer = fetched.get(&member.id);
            let status = answer.and_then(|a| a.as_ref().ok()).map(|(s, _)| s.clone());
            let error = match answer {
                Some(Err(e)) => Some(e.clone()),
                None => Some("its client address is not known yet".to_string()),
                Some(Ok(_)) => None,
            };
            if configured_role == "voter" {
                voters += 1;
                if status.as_ref().is_some_and(|s| s.role != "stopped") {
                    live_voters += 1;
                }
            }
            let progress = leader
                .as_ref()
                .and_then(|l| l.members.iter().find(|m| m.id == member.id));
            ClusterMember {
                id: member.id,
                client_addr: addresses.get(&member.id).cloned(),
                peer_addr: member.peer_addr.clone(),
                configured_role,
                reachable: status.is_some(),
                error,
                lag: leader.as_ref().and_then(|l| {
                    let matched = progress?.match_index?;
                    Some(l.last_log_index.saturating_sub(matched))
                }),
                last_contact_ms: progress.and_then(|p| p.last_contact_ms),
                status,
            }
        })
        .collect();
    let quorum = voters / 2 + 1;
    let events = merge_events(
        fetched
            .into_values()
            .filter_map(Result::ok)
            .map(|(_, events)| events),
    );
    ClusterView {
        node_id: own_id,
        leader_id,
        term,
        joint: own.joint,
        voters: voters as u64,
        tolerance: live_voters - quorum,
        members,
        events,
    }
}

/// Another member's status and events, over HTTP(S) like forwarding (with the client's
/// `Authorization`, for members that authenticate by token).
async fn fetch_member(api: &Api, addr: &str, authorization: Option<&HeaderValue>) -> Fetched {
    let client = api.forwarder.client();
    let get = |path: &str| {
        let mut request = client
            .get(format!("{}://{addr}{path}", api.forward_scheme))
            .timeout(MEMBER_TIMEOUT);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value.clone());
        }
        async move {
            let answer = request.send().await.map_err(|e| describe(&e))?;
            let status = answer.status();
            let body = answer.bytes().await.map_err(|e| describe(&e))?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(format!("{status}: {text}"));
            }
            Ok(body)
        }
    };
    let (status, events) = tokio::join!(get("/v1/status"), get("/v1/events"));
    let status: NodeStatus =
        serde_json::from_slice(&status?).map_err(|e| format!("a status that is not JSON: {e}"))?;
    // Events are a nicety: a member of an older build has none.
    let events = events
        .ok()
        .and_then(|body| serde_json::from_slice::<Events>(&body).ok())
        .map_or_else(Vec::new, |e| e.events);
    Ok((status, events))
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "no answer in time".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        error.to_string()
    }
}

/// A fresh budget of [`MAX_WATCHERS`] streams.
pub(crate) fn watchers() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_WATCHERS))
}
