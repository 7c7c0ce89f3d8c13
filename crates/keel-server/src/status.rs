//! `GET /v1/status` and `GET /metrics`: the node's view of itself and of the cluster.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keel::Role;

use crate::http::Api;

/// The JSON of `GET /v1/status` (defined in `keel-api`, which clients read it with).
pub type StatusView = keel_api::NodeStatus;

/// Builds the status view of the node behind `api`: the node, and every member of the
/// configuration in force on it.
pub fn status_view(api: &Api) -> StatusView {
    let status = api.kv.raft().status();
    let stopped = api.kv.stopped_reason();
    let role = match status.role {
        _ if stopped.is_some() => "stopped",
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
            let (peer_addr, client_addr) = crate::members::member_addrs(api, membership, id);
            keel_api::MemberStatus {
                id,
                peer_addr,
                client_addr,
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
        stopped,
        storage_unavailable: status.storage_unavailable,
        disk_bytes: status.disk_bytes,
    }
}

pub(crate) async fn status(State(api): State<Arc<Api>>) -> Response {
    axum::Json(status_view(&api)).into_response()
}

pub(crate) async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let text = api.metrics.render(&api.kv);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}
