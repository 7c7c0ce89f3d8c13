//! Membership and leadership over HTTP. Every request here is decided by the leader: a follower
//! forwards it, as it does writes.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /v1/members` | 200 [`keel_api::Members`]: the configuration in force on the leader |
//! | `POST /v1/members` with [`keel_api::AddMember`] | 200 `Members` once the node is a learner |
//! | `POST /v1/members/{id}/promote` | 200 `Members` once the learner is a voter |
//! | `DELETE /v1/members/{id}` | 200 `Members` once the member is gone |
//! | `POST /v1/leader` with [`keel_api::TransferLeader`] (`{}` for any) | 200 [`keel_api::LeaderChanged`] |
//!
//! Errors, as JSON like the rest of the API: 400 a malformed request, an unknown or duplicate
//! id, a change that would leave no voters, a target that cannot lead; 409 another change in
//! progress; 412 a learner that has not caught up (the lag is in the message); 503 no leader,
//! a leader that has yet to commit an entry of its term, a change that did not commit within
//! the request timeout (it may still: `GET /v1/members` tells), or a transfer the target did not
//! complete.
//!
//! A change waits until it is committed (for a change of voters: until the joint configuration
//! and the final one are). The new member's addresses travel in the configuration
//! ([`keel_net::MemberAddrs`]), together with those of every member that has none there yet
//! (the ones a cluster started with), so a joining node learns everyone from the entry that adds
//! it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keel::{MemberRole, Membership, MembershipError, NodeId, Raft, TransferError};
use keel_api::{AddMember, LeaderChanged, Member, Members, TransferLeader, role};
use keel_net::MemberAddrs;

use crate::http::{Api, Incoming, error, forward};

/// The most bytes a membership or leadership request body may have.
const MAX_BODY_BYTES: usize = 64 << 10;

/// `voter` or `learner`: a member's role as the API names it.
pub fn role_name(membership: &Membership, id: NodeId) -> &'static str {
    match membership.role(id) {
        Some(MemberRole::Learner) => role::LEARNER,
        _ => role::VOTER,
    }
}

/// Member `id`'s peer and client addresses: as the configuration records them (every member's,
/// once one change has committed), else as this node learned them from the member itself.
pub(crate) fn member_addrs(
    api: &Api,
    membership: &Membership,
    id: NodeId,
) -> (Option<String>, Option<String>) {
    let addrs = membership
        .info(id)
        .and_then(|info| MemberAddrs::decode(info).ok());
    let peer_addr = addrs
        .as_ref()
        .map(|a| a.peer_addr.to_string())
        .or_else(|| api.directory.peer_addr(id));
    let client_addr = addrs
        .map(|a| a.client_addr)
        .filter(|a| !a.is_empty())
        .or_else(|| api.directory.client_addr(id));
    (peer_addr, client_addr)
}

/// The configuration as `GET /v1/members` shows it.
fn members_view(api: &Api, membership: &Membership) -> Members {
    let members = membership
        .members()
        .into_iter()
        .map(|id| {
            let (peer_addr, client_addr) = member_addrs(api, membership, id);
            Member {
                id,
                role: role_name(membership, id).to_string(),
                peer_addr,
                client_addr,
            }
        })
        .collect();
    Members {
        members,
        joint: membership.is_joint(),
    }
}

fn json(value: &impl serde::Serialize) -> Response {
    axum::Json(value).into_response()
}

/// `GET /v1/members`: answered by the leader (a follower forwards), so it shows the latest
/// configuration.
pub(crate) async fn list(State(api): State<Arc<Api>>, request: Request) -> Response {
    let (incoming, _) = request.into_parts();
    let raft = api.kv.raft();
    let status = raft.status();
    if status.role == keel::Role::Leader {
        return json(&members_view(&api, &status.membership.membership));
    }
    not_leader(&api, status.leader_id, incoming, Bytes::new()).await
}

/// `POST /v1/members`: adds a learner.
pub(crate) async fn add(State(api): State<Arc<Api>>, request: Request) -> Response {
    let (incoming, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let add: AddMember = match serde_json::from_slice(&body) {
        Ok(add) => add,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                &format!(
                    "expected {{\"id\": N, \"peer_addr\": \"IP:PORT\", \"client_addr\": \
                     \"HOST:PORT\"}}: {e}"
                ),
            );
        }
    };
    let addrs = match checked_addrs(&add) {
        Ok(addrs) => addrs,
        Err(problem) => return error(StatusCode::BAD_REQUEST, "bad_member", &problem),
    };
    let raft = api.kv.raft().clone();
    let current = raft.status().membership.membership;
    if current.contains(add.id) {
        return membership_error(&MembershipError::AlreadyMember(add.id));
    }
    let mut learners = current.learners().clone();
    learners.insert(add.id);
    let mut info = missing_addrs(&api, &current);
    info.insert(add.id, addrs.encode());
    let voters = current.voters().clone();
    let change = raft.change_membership(voters, learners, info);
    finish(&api, incoming, body, change).await
}

/// `POST /v1/members/{id}/promote`: makes a learner a voter.
pub(crate) async fn promote(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    on_member(&api, &id, request, |raft, id| async move {
        raft.promote(id).await
    })
    .await
}

/// `DELETE /v1/members/{id}`: removes a member (the leader too).
pub(crate) async fn remove(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    on_member(&api, &id, request, |raft, id| async move {
        raft.remove(id).await
    })
    .await
}

/// A change to the member named in the path.
async fn on_member<F, Fut>(api: &Api, id: &str, request: Request, change: F) -> Response
where
    F: FnOnce(Raft, NodeId) -> Fut,
    Fut: Future<Output = Result<Membership, MembershipError>>,
{
    let (incoming, _) = request.into_parts();
    let Some(id) = member_id(id) else {
        return bad_id(id);
    };
    let raft = api.kv.raft().clone();
    finish(api, incoming, Bytes::new(), change(raft, id)).await
}

/// `POST /v1/leader`: hands leadership over.
pub(crate) async fn transfer(State(api): State<Arc<Api>>, request: Request) -> Response {
    let (incoming, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let wanted: TransferLeader = if body.iter().all(u8::is_ascii_whitespace) {
        TransferLeader::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(wanted) => wanted,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    &format!("expected {{\"to\": N}} or {{}}: {e}"),
                );
            }
        }
    };
    let raft = api.kv.raft().clone();
    let timeout = api.kv.options().request_timeout;
    match tokio::time::timeout(timeout, raft.transfer_leadership(wanted.to)).await {
        Ok(Ok(leader)) => json(&LeaderChanged { leader }),
        Ok(Err(TransferError::NotLeader { leader_hint })) => {
            not_leader(&api, leader_hint, incoming, body).await
        }
        Ok(Err(e)) => {
            let (status, code) = match e {
                TransferError::InvalidTarget(_) => (StatusCode::BAD_REQUEST, "invalid_target"),
                TransferError::NoTarget => (StatusCode::CONFLICT, "no_target"),
                TransferError::Abandoned(_) => (StatusCode::SERVICE_UNAVAILABLE, "abandoned"),
                TransferError::Shutdown | TransferError::NotLeader { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "shutdown")
                }
            };
            error(status, code, &e.to_string())
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            &format!("no new leader within {timeout:?}"),
        ),
    }
}

/// Waits (up to the request timeout) for a change to commit and answers it, forwarding it to
/// the leader if this node is not the leader.
async fn finish(
    api: &Api,
    incoming: Incoming,
    body: Bytes,
    change: impl Future<Output = Result<Membership, MembershipError>>,
) -> Response {
    let timeout = api.kv.options().request_timeout;
    match tokio::time::timeout(timeout, change).await {
        Ok(Ok(membership)) => json(&members_view(api, &membership)),
        Ok(Err(MembershipError::NotLeader { leader_hint })) => {
            not_leader(api, leader_hint, incoming, body).await
        }
        Ok(Err(e)) => membership_error(&e),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            &format!(
                "the change did not commit within {timeout:?}; it may still: GET /v1/members \
                 shows the configuration"
            ),
        ),
    }
}

/// Forwards to the leader, or says there is none to forward to.
async fn not_leader(
    api: &Api,
    leader_hint: Option<NodeId>,
    incoming: Incoming,
    body: Bytes,
) -> Response {
    if let Some(leader) = leader_hint
        && let Some(response) = forward(api, leader, &incoming, body).await
    {
        return response;
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_leader",
        "no leader is known to this node; retry shortly",
    )
}

fn membership_error(e: &MembershipError) -> Response {
    let (status, code) = match e {
        MembershipError::UnknownMember(_) => (StatusCode::BAD_REQUEST, "unknown_member"),
        MembershipError::AlreadyMember(_) => (StatusCode::BAD_REQUEST, "already_member"),
        MembershipError::NoVoters => (StatusCode::BAD_REQUEST, "no_voters"),
        MembershipError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_change"),
        MembershipError::ChangeInProgress(_) => (StatusCode::CONFLICT, "change_in_progress"),
        MembershipError::NotCaughtUp { .. } => (StatusCode::PRECONDITION_FAILED, "not_caught_up"),
        MembershipError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        MembershipError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        MembershipError::LeadershipLost => (StatusCode::SERVICE_UNAVAILABLE, "leadership_lost"),
        MembershipError::NotLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
        MembershipError::Shutdown => (StatusCode::SERVICE_UNAVAILABLE, "shutdown"),
    };
    error(status, code, &e.to_string())
}

/// The addresses of every member the configuration has none for (those a cluster started
/// with), as this node knows them, so that a node joining learns everyone from the entry that
/// adds it.
fn missing_addrs(api: &Api, current: &Membership) -> BTreeMap<NodeId, Bytes> {
    current
        .members()
        .into_iter()
        .filter(|&id| current.info(id).is_none())
        .filter_map(|id| {
            let peer_addr: SocketAddr = api.directory.peer_addr(id)?.parse().ok()?;
            let client_addr = api.directory.client_addr(id).unwrap_or_default();
            Some((
                id,
                MemberAddrs {
                    peer_addr,
                    client_addr,
                }
                .encode(),
            ))
        })
        .collect()
}

/// The new member's addresses, if they are ones a node can be reached at.
fn checked_addrs(add: &AddMember) -> Result<MemberAddrs, String> {
    if add.id == 0 {
        return Err("node ids are positive".into());
    }
    let peer_addr: SocketAddr = add.peer_addr.parse().map_err(|_| {
        format!(
            "peer_addr {:?} is not IP:PORT (the address the node listens on for its peers)",
            add.peer_addr
        )
    })?;
    if peer_addr.ip().is_unspecified() || peer_addr.port() == 0 {
        return Err(format!(
            "peer_addr {peer_addr} is not an address other nodes can dial"
        ));
    }
    let client = &add.client_addr;
    if !keel_net::is_client_addr(client) {
        return Err(format!("client_addr {client:?} is not HOST:PORT"));
    }
    Ok(MemberAddrs {
        peer_addr,
        client_addr: client.clone(),
    })
}

fn member_id(text: &str) -> Option<NodeId> {
    text.parse().ok().filter(|&id| id > 0)
}

fn bad_id(text: &str) -> Response {
    let shown: String = text.chars().take(40).collect();
    error(
        StatusCode::BAD_REQUEST,
        "bad_id",
        &format!("{shown:?} is not a node id (a positive integer)"),
    )
}

/// A small request body, read whole.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("membership requests are at most {MAX_BODY_BYTES} bytes"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refusal has its status and code (the README's table).
    #[test]
    fn every_membership_error_has_its_status_and_code() {
        let table = [
            (MembershipError::UnknownMember(9), 400, "unknown_member"),
            (MembershipError::AlreadyMember(2), 400, "already_member"),
            (MembershipError::NoVoters, 400, "no_voters"),
            (MembershipError::Invalid("x".into()), 400, "invalid_change"),
            (
                MembershipError::ChangeInProgress("x".into()),
                409,
                "change_in_progress",
            ),
            (
                MembershipError::NotCaughtUp {
                    id: 4,
                    lag: 5000,
                    max_lag: 1000,
                },
                412,
                "not_caught_up",
            ),
            (MembershipError::NotReady, 503, "not_ready"),
            (MembershipError::Busy("x".into()), 503, "busy"),
            (MembershipError::LeadershipLost, 503, "leadership_lost"),
            (MembershipError::Shutdown, 503, "shutdown"),
        ];
        for (e, status, code) in table {
            let response = membership_error(&e);
            assert_eq!(response.status().as_u16(), status, "{e:?}");
            let body = body_text(response);
            assert!(
                body.contains(&format!("\"code\":\"{code}\"")),
                "{e:?}: {body}"
            );
        }
    }

    fn body_text(response: Response) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 16))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
