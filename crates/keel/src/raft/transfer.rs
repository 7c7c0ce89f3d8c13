//! Leadership transfer (Raft thesis, section 3.10).
//!
//! The leader stops taking proposals, brings the target's log up to date with its own, then
//! sends it TimeoutNow. The target starts an election at once, without a pre-vote, and its vote
//! requests say so (`VoteRequest::transfer`), so voters that still hear from the old leader vote
//! anyway instead of keeping their leader lease (see `State::check_term`). Its log is as
//! up-to-date as any, so it wins, normally within one round trip, and the old leader steps down
//! when it sees the new term. If no new leader shows up within an election timeout, the leader
//! abandons the transfer and takes proposals again.
//!
//! A leader removed from the voters hands over the same way once the configuration that removes
//! it commits, and then steps down even if the transfer fails (`Transfer::step_down`).

use std::sync::Arc;

use tokio::time::Instant;

use super::Shared;
use super::election;
use super::replication::{self, Trigger};
use super::state::{Inbound, Outgoing, Role, State, TermCheck};
use crate::config::Config;
use crate::error::TransferError;
use crate::message::{Request, Response, TimeoutNowRequest, TimeoutNowResponse};
use crate::types::NodeId;

/// A transfer in progress on the leader.
#[derive(Clone, Debug)]
pub(crate) struct Transfer {
    /// The voter taking over.
    pub target: NodeId,
    /// When it started; it is abandoned an election timeout later.
    pub started: Instant,
    /// TimeoutNow went out (it is sent once).
    pub timeout_sent: bool,
    /// Step down when it ends, taken over or not: this leader is no longer a voter.
    pub step_down: bool,
}

/// Starts handing leadership to `to`, or to the most up-to-date other voter. Returns the target.
pub(crate) fn start(
    s: &mut State,
    config: &Config,
    now: Instant,
    to: Option<NodeId>,
    step_down: bool,
) -> Result<NodeId, TransferError> {
    if s.shutdown {
        return Err(TransferError::Shutdown);
    }
    if s.role != Role::Leader {
        return Err(TransferError::NotLeader {
            leader_hint: s.leader_id,
        });
    }
    let target = match to {
        Some(id) if id != s.id && s.configs.current().voters().contains(&id) => id,
        Some(id) => return Err(TransferError::InvalidTarget(id)),
        None => most_up_to_date(s).ok_or(TransferError::NoTarget)?,
    };
    // A leader handing over because it was removed keeps that purpose whatever it is asked.
    let step_down = step_down || s.transfer.as_ref().is_some_and(|t| t.step_down);
    if let Some(t) = &mut s.transfer
        && t.target == target
    {
        t.step_down = step_down;
        return Ok(target);
    }
    tracing::info!(
        node = s.id,
        term = s.current_term,
        "handing leadership over to node {target}"
    );
    s.transfer = Some(Transfer {
        target,
        started: now,
        timeout_sent: false,
        step_down,
    });
    maybe_send_timeout_now(s);
    // Bring the target up to date now rather than on the next tick.
    replication::replicate(s, config, target, Trigger::Due);
    Ok(target)
}

/// The voter (of the new configuration, if joint) other than this leader whose log matches the
/// most of the leader's; ties go to the one heard from last, then to the lowest id.
fn most_up_to_date(s: &State) -> Option<NodeId> {
    s.configs
        .current()
        .voters()
        .iter()
        .filter(|&&id| id != s.id)
        .filter_map(|&id| s.progress.get(&id).map(|p| (id, p)))
        .max_by(|(a_id, a), (b_id, b)| {
            (a.match_index(), a.last_ack(), std::cmp::Reverse(*a_id)).cmp(&(
                b.match_index(),
                b.last_ack(),
                std::cmp::Reverse(*b_id),
            ))
        })
        .map(|(id, _)| id)
}

/// Sends TimeoutNow once the target holds everything the leader's log does.
pub(crate) fn maybe_send_timeout_now(s: &mut State) {
    let Some(t) = &s.transfer else {
        return;
    };
    if t.timeout_sent {
        return;
    }
    let target = t.target;
    let caught_up = s
        .progress
        .get(&target)
        .is_some_and(|p| p.match_index() == s.log.last_index());
    if !caught_up {
        return;
    }
    let request = TimeoutNowRequest {
        term: s.current_term,
        leader_id: s.id,
    };
    tracing::debug!(
        node = s.id,
        "node {target} is up to date: sending TimeoutNow"
    );
    s.outbox.push(Outgoing::TimeoutNow {
        peer: target,
        request,
    });
    if let Some(t) = &mut s.transfer {
        t.timeout_sent = true;
    }
}

/// The leader's election tick: a transfer that has not ended within an election timeout is
/// abandoned.
pub(crate) fn tick(s: &mut State, config: &Config, now: Instant) {
    let Some(t) = &s.transfer else {
        return;
    };
    if now.duration_since(t.started) < config.election_timeout_max {
        return;
    }
    let (target, step_down) = (t.target, t.step_down);
    s.transfer = None;
    if step_down {
        tracing::warn!(
            node = s.id,
            "node {target} did not take over; stepping down as a removed leader"
        );
        let term = s.current_term;
        s.become_follower(config, now, term, None);
    } else {
        tracing::warn!(
            node = s.id,
            "node {target} did not take over within {:?}; leading on",
            config.election_timeout_max
        );
    }
}

/// Sends TimeoutNow and handles its reply.
pub(super) async fn send_timeout_now(
    shared: Arc<Shared>,
    peer: NodeId,
    request: TimeoutNowRequest,
) {
    let call = shared.transport.call(peer, Request::TimeoutNow(request));
    let response = match tokio::time::timeout(shared.config.rpc_timeout, call).await {
        Ok(Ok(Response::TimeoutNow(response))) => response,
        _ => return,
    };
    let mut s = shared.lock();
    if !s.shutdown {
        s.check_term(
            &shared.config,
            Instant::now(),
            response.term,
            Inbound::Reply,
        );
    }
}

/// TimeoutNow receiver: a voter whose leader asks it to take over campaigns at once.
pub(crate) fn on_timeout_now(
    s: &mut State,
    config: &Config,
    now: Instant,
    request: &TimeoutNowRequest,
) -> TimeoutNowResponse {
    let leader = Inbound::FromLeader(request.leader_id);
    if s.check_term(config, now, request.term, leader) != TermCheck::Stale
        && s.configs.current().is_voter(s.id)
    {
        tracing::info!(
            node = s.id,
            "node {} hands leadership over: campaigning now",
            request.leader_id
        );
        election::start_election(s, config, now, true);
    }
    TimeoutNowResponse {
        term: s.current_term,
    }
}
