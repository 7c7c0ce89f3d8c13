//! Leader election (Figure 2 "Candidates", section 5.2, the election restriction of 5.4.1) with
//! the pre-vote phase and leader stickiness of the Raft thesis (9.6).

use std::sync::Arc;

use tokio::time::Instant;

use super::progress::Progress;
use super::quorum::{self, VoteResult};
use super::replication;
use super::state::{Role, State};
use super::{Shared, StateGuard};
use crate::error::RaftError;
use crate::message::{Request, Response, VoteRequest, VoteResponse};
use crate::types::{Entry, NodeId, Payload};

/// The election timer: sleeps a small constant, then looks at the state. A follower or
/// candidate that has not heard from a leader for its randomized timeout campaigns; a leader
/// checks that it still hears from a quorum.
pub(super) async fn run_election_timer(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.config.tick).await;
        let now = Instant::now();
        let mut s = shared.lock();
        if s.shutdown {
            return;
        }
        match s.role {
            Role::Leader => {
                if shared.config.check_quorum {
                    check_quorum(&shared, &mut s, now);
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if s.election_due(now) {
                    campaign(&shared, &mut s, now);
                }
            }
        }
    }
}

/// Starts a pre-vote round, or an election when pre-vote is off.
fn campaign(shared: &Arc<Shared>, s: &mut StateGuard<'_>, now: Instant) {
    if !shared.config.pre_vote {
        start_election(shared, s, now);
        return;
    }
    s.reset_election_timer(&shared.config, now);
    s.role = Role::PreCandidate;
    s.leader_id = None;
    s.campaign += 1;
    s.votes.clear();
    s.votes.push(shared.id);
    tracing::debug!(
        node = shared.id,
        term = s.current_term + 1,
        "starting pre-vote"
    );
    if won(shared, s) {
        start_election(shared, s, now);
        return;
    }
    let request = VoteRequest {
        term: s.current_term + 1,
        candidate_id: shared.id,
        last_log_index: s.log.last_index(),
        last_log_term: s.log.last_term(),
        pre_vote: true,
    };
    for peer in shared.peers() {
        shared.spawn(request_vote_from(
            shared.clone(),
            peer,
            request.clone(),
            s.campaign,
        ));
    }
}

/// Figure 2: "On conversion to candidate: increment currentTerm, vote for self, reset election
/// timer, send RequestVote RPCs to all other servers."
fn start_election(shared: &Arc<Shared>, s: &mut StateGuard<'_>, now: Instant) {
    let term = s.current_term + 1;
    s.set_hard_state(term, Some(shared.id));
    s.reset_election_timer(&shared.config, now);
    s.role = Role::Candidate;
    s.leader_id = None;
    s.campaign += 1;
    s.votes.clear();
    s.votes.push(shared.id);
    tracing::debug!(node = shared.id, term, "starting election");
    if won(shared, s) {
        become_leader(shared, s, now);
        return;
    }
    let request = VoteRequest {
        term,
        candidate_id: shared.id,
        last_log_index: s.log.last_index(),
        last_log_term: s.log.last_term(),
        pre_vote: false,
    };
    // Our own vote must be durable before we ask for others: a candidate that crashed and forgot
    // it could vote again in the same term and help elect a second leader.
    let seq = s.sync_point();
    let campaign = s.campaign;
    let task_shared = shared.clone();
    shared.spawn(async move {
        if task_shared.wait_durable(seq).await.is_err() {
            return;
        }
        let s = task_shared.lock();
        if s.campaign != campaign || s.role != Role::Candidate {
            return;
        }
        for peer in task_shared.peers() {
            task_shared.spawn(request_vote_from(
                task_shared.clone(),
                peer,
                request.clone(),
                campaign,
            ));
        }
    });
}

/// Sends one RequestVote (or pre-vote) and counts its reply, if the round it belongs to is still
/// running when the reply comes back.
async fn request_vote_from(shared: Arc<Shared>, peer: NodeId, request: VoteRequest, campaign: u64) {
    let call = shared.transport.call(peer, Request::Vote(request.clone()));
    let response = match tokio::time::timeout(shared.config.rpc_timeout, call).await {
        Ok(Ok(Response::Vote(response))) => response,
        _ => return,
    };
    let now = Instant::now();
    let mut s = shared.lock();
    if s.shutdown {
        return;
    }
    // A granted pre-vote carries the term we asked about, not a newer one we must adopt.
    if response.term > s.current_term && !(request.pre_vote && response.vote_granted) {
        s.become_follower(response.term, None);
        return;
    }
    let (role, term) = if request.pre_vote {
        (Role::PreCandidate, request.term - 1)
    } else {
        (Role::Candidate, request.term)
    };
    if s.campaign != campaign || s.role != role || s.current_term != term || !response.vote_granted
    {
        return;
    }
    if !s.votes.contains(&peer) {
        s.votes.push(peer);
    }
    if won(&shared, &s) {
        if request.pre_vote {
            start_election(&shared, &mut s, now);
        } else {
            become_leader(&shared, &mut s, now);
        }
    }
}

/// Whether the votes granted so far win the (pre-)election.
fn won(shared: &Shared, s: &State) -> bool {
    let granted = |id| s.votes.contains(&id).then_some(true);
    quorum::vote_result([&shared.voters], granted) == VoteResult::Won
}

/// Figure 2 "Leaders": set up replication state, append the term's no-op (section 8) and send
/// initial heartbeats.
fn become_leader(shared: &Arc<Shared>, s: &mut StateGuard<'_>, now: Instant) {
    let next_index = s.log.last_index() + 1;
    s.role = Role::Leader;
    s.leader_id = Some(shared.id);
    s.leader_since = now;
    s.progress = shared
        .peers()
        .map(|peer| (peer, Progress::new(next_index, now)))
        .collect();
    let term = s.current_term;
    s.term_start_index = next_index;
    s.read_round_confirmed = s.read_round_sent;
    s.append_to_log(Some(Entry {
        index: next_index,
        term,
        payload: Payload::Noop,
    }));
    tracing::info!(node = shared.id, term, "became leader");
    replication::replicate_to_all(shared, s, replication::Trigger::Heartbeat);
}

/// Check-quorum: a leader that has not heard from a majority for the maximum election timeout
/// steps down, so that clients stop waiting on a leader cut off from its cluster.
fn check_quorum(shared: &Arc<Shared>, s: &mut StateGuard<'_>, now: Instant) {
    let window = shared.config.election_timeout_max;
    if now.duration_since(s.leader_since) < window {
        return;
    }
    let heard = |id| {
        let recent = id == shared.id
            || s.progress
                .get(&id)
                .is_some_and(|p| now.duration_since(p.last_ack()) < window);
        Some(recent)
    };
    if quorum::vote_result([&shared.voters], heard) != VoteResult::Won {
        tracing::warn!(
            node = shared.id,
            term = s.current_term,
            "stepping down: no contact with a quorum for {window:?}"
        );
        let term = s.current_term;
        s.become_follower(term, None);
    }
}

/// True while this node believes a leader is alive; it then ignores vote requests, so a node
/// that was cut off cannot depose a working leader (thesis 9.6).
fn in_lease(shared: &Shared, s: &StateGuard<'_>, now: Instant) -> bool {
    shared.config.check_quorum
        && match s.role {
            Role::Leader => true,
            _ => {
                s.leader_id.is_some()
                    && now.duration_since(s.last_heard) < shared.config.election_timeout_min
            }
        }
}

/// RequestVote receiver implementation (Figure 2), and the pre-vote variant that changes nothing.
pub(super) async fn handle_vote(
    shared: &Arc<Shared>,
    request: VoteRequest,
) -> Result<VoteResponse, RaftError> {
    let now = Instant::now();
    let (response, seq) = {
        let mut s = shared.lock();
        if s.shutdown {
            return Err(RaftError::Shutdown);
        }
        let up_to_date = s.log_up_to_date(request.last_log_index, request.last_log_term);
        let response = if request.pre_vote {
            let grant = request.term > s.current_term && up_to_date && !in_lease(shared, &s, now);
            VoteResponse {
                term: if grant { request.term } else { s.current_term },
                vote_granted: grant,
            }
        } else if request.term > s.current_term && in_lease(shared, &s, now) {
            VoteResponse {
                term: s.current_term,
                vote_granted: false,
            }
        } else {
            if request.term > s.current_term {
                s.become_follower(request.term, None);
            }
            // 1. Reply false if term < currentTerm. 2. If votedFor is null or candidateId, and
            // the candidate's log is at least as up-to-date as the receiver's, grant the vote.
            let grant = request.term == s.current_term
                && s.voted_for.is_none_or(|v| v == request.candidate_id)
                && up_to_date;
            if grant {
                if s.voted_for.is_none() {
                    let term = s.current_term;
                    s.set_hard_state(term, Some(request.candidate_id));
                }
                s.reset_election_timer(&shared.config, now);
            }
            VoteResponse {
                term: s.current_term,
                vote_granted: grant,
            }
        };
        (response, s.sync_point())
    };
    super::reply_when_durable(shared, seq, response).await
}
