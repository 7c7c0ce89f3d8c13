//! Leader election (Figure 2 "Candidates", section 5.2, the election restriction of 5.4.1) with
//! the pre-vote phase and leader stickiness of the Raft thesis (9.6).
//!
//! The decisions are plain functions of the [`State`]; the tasks around them only take the lock,
//! call them, and send what they left in the outbox.

use std::sync::Arc;

use tokio::time::Instant;

use super::Shared;
use super::quorum::{self, VoteResult};
use super::replication::{self, Trigger};
use super::state::{Inbound, Outgoing, Role, State, TermCheck};
use super::{membership, transfer};
use crate::codec::MAX_TERM;
use crate::config::Config;
use crate::error::RaftError;
use crate::message::{Request, Response, VoteRequest, VoteResponse};
use crate::types::{Entry, NodeId, Payload};

/// The election timer: sleeps a small constant, then looks at the state.
pub(super) async fn run_election_timer(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.config.tick).await;
        let now = Instant::now();
        let mut s = shared.lock();
        if s.shutdown {
            return;
        }
        tick(&mut s, &shared.config, now);
    }
}

/// One look of the election timer. Figure 2 "Followers": "If election timeout elapses without
/// receiving AppendEntries RPC from current leader or granting vote to candidate: convert to
/// candidate"; "Candidates": "If election timeout elapses: start new election". A leader checks
/// that it still hears from a quorum.
pub(crate) fn tick(s: &mut State, config: &Config, now: Instant) {
    match s.role {
        Role::Leader => {
            if config.check_quorum {
                check_quorum(s, config, now);
            }
            transfer::tick(s, config, now);
        }
        Role::Follower | Role::PreCandidate | Role::Candidate => {
            if !s.election_due(now) {
                return;
            }
            if s.configs.current().is_voter(s.id) {
                campaign(s, config, now);
            } else {
                // Learners, removed members and nodes waiting to join never campaign; but
                // one that has not heard from a leader for this long no longer knows who
                // leads, and must not send clients to a leader that may be long gone.
                s.leader_id = None;
                s.reset_election_timer(config, now);
            }
        }
    }
}

/// True (and logged) if this node's term is the last one there is, so that it cannot campaign:
/// the term gate never adopts such a term, but a data dir written by an older build might hold
/// one. The node still follows a leader of its term, and restarts its election timer.
fn terms_exhausted(s: &mut State, config: &Config, now: Instant) -> bool {
    if s.current_term < MAX_TERM {
        return false;
    }
    tracing::error!(
        node = s.id,
        term = s.current_term,
        "this node's term is the last there is, so it cannot campaign"
    );
    s.reset_election_timer(config, now);
    true
}

/// Starts a pre-vote round, or an election when pre-vote is off.
pub(crate) fn campaign(s: &mut State, config: &Config, now: Instant) {
    if terms_exhausted(s, config, now) {
        return;
    }
    if !config.pre_vote {
        start_election(s, config, now, false);
        return;
    }
    s.reset_election_timer(config, now);
    s.role = Role::PreCandidate;
    s.leader_id = None;
    start_round(s);
    tracing::debug!(node = s.id, term = s.current_term + 1, "starting pre-vote");
    if won(s) {
        start_election(s, config, now, false);
        return;
    }
    let request = VoteRequest {
        term: s.current_term + 1,
        candidate_id: s.id,
        last_log_index: s.log.last_index(),
        last_log_term: s.log.last_term(),
        pre_vote: true,
        transfer: false,
    };
    send_votes(s, request);
}

/// Figure 2: "On conversion to candidate: increment currentTerm, vote for self, reset election
/// timer, send RequestVote RPCs to all other servers." `transfer`: the leader handed leadership
/// to this node (TimeoutNow), which the vote requests tell the voters.
pub(crate) fn start_election(s: &mut State, config: &Config, now: Instant, transfer: bool) {
    if terms_exhausted(s, config, now) {
        return;
    }
    let term = s.current_term + 1;
    let id = s.id;
    s.set_hard_state(term, Some(id));
    s.reset_election_timer(config, now);
    s.role = Role::Candidate;
    s.leader_id = None;
    start_round(s);
    tracing::debug!(node = id, term, "starting election");
    if won(s) {
        become_leader(s, config, now);
        return;
    }
    let request = VoteRequest {
        term,
        candidate_id: id,
        last_log_index: s.log.last_index(),
        last_log_term: s.log.last_term(),
        pre_vote: false,
        transfer,
    };
    send_votes(s, request);
}

/// A new (pre-)election round, in which this node has voted for itself.
fn start_round(s: &mut State) {
    s.campaign += 1;
    s.votes.clear();
    s.votes.insert(s.id, true);
}

/// Asks every other voter (of both halves of a joint configuration), each from a task of its
/// own (a real vote only once this node's own vote is durable: see `Outgoing::Votes`).
fn send_votes(s: &mut State, request: VoteRequest) {
    let current = s.configs.current();
    let peers: Vec<NodeId> = current
        .members()
        .into_iter()
        .filter(|&v| v != s.id && current.is_voter(v))
        .collect();
    let campaign = s.campaign;
    s.outbox.push(Outgoing::Votes {
        peers,
        request,
        campaign,
    });
}

/// Whether the votes granted so far win the (pre-)election: a majority of the voters of the
/// configuration in force (of each half, when it is joint).
fn won(s: &State) -> bool {
    let voters = s.configs.current().voter_sets();
    quorum::vote_result(voters, |id| s.votes.get(&id).copied()) == VoteResult::Won
}

/// Sends one RequestVote (or pre-vote) and counts its reply.
pub(super) async fn request_vote_from(
    shared: Arc<Shared>,
    peer: NodeId,
    request: VoteRequest,
    campaign: u64,
) {
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
    on_vote_reply(
        &mut s,
        &shared.config,
        now,
        peer,
        &request,
        campaign,
        response,
    );
}

/// Counts a vote reply, if the round it belongs to is still running. Figure 2 "Candidates": "If
/// votes received from majority of servers: become leader"; a won pre-vote starts the election.
pub(crate) fn on_vote_reply(
    s: &mut State,
    config: &Config,
    now: Instant,
    peer: NodeId,
    request: &VoteRequest,
    campaign: u64,
    response: VoteResponse,
) {
    let kind = if request.pre_vote {
        Inbound::PreVoteReply {
            granted: response.vote_granted,
        }
    } else {
        Inbound::Reply
    };
    match s.check_term(config, now, response.term, kind) {
        TermCheck::Newer | TermCheck::Stale => return,
        TermCheck::Current | TermCheck::PreVote | TermCheck::Lease => {}
    }
    // The round must be the one the request was sent for, and still running.
    let (role, term) = if request.pre_vote {
        (Role::PreCandidate, request.term - 1)
    } else {
        (Role::Candidate, request.term)
    };
    if s.campaign != campaign || s.role != role || s.current_term != term {
        return;
    }
    s.votes.insert(peer, response.vote_granted);
    if won(s) {
        if request.pre_vote {
            start_election(s, config, now, request.transfer);
        } else {
            become_leader(s, config, now);
        }
    }
}

/// Figure 2 "Leaders": "Upon election: send initial empty AppendEntries RPCs (heartbeat) to each
/// server". Sets up replication state, appends the term's no-op (section 8) and sends it.
pub(crate) fn become_leader(s: &mut State, config: &Config, now: Instant) {
    let next_index = s.log.last_index() + 1;
    s.role = Role::Leader;
    s.leader_id = Some(s.id);
    s.leader_since = now;
    let id = s.id;
    s.progress.clear();
    membership::sync_progress(s, now);
    let term = s.current_term;
    s.term_start_index = next_index;
    s.read_round_confirmed = s.read_round_sent;
    s.append_to_log(Some(Entry {
        index: next_index,
        term,
        payload: Payload::Noop,
    }));
    tracing::info!(node = id, term, "became leader");
    replication::replicate_to_all(s, config, Trigger::Heartbeat);
}

/// Check-quorum: a leader that has not heard from a majority for the maximum election timeout
/// steps down, so that clients stop waiting on a leader cut off from its cluster.
fn check_quorum(s: &mut State, config: &Config, now: Instant) {
    let window = config.election_timeout_max;
    if now.duration_since(s.leader_since) < window {
        return;
    }
    let heard = |id| {
        let recent = id == s.id
            || s.progress
                .get(&id)
                .is_some_and(|p| now.duration_since(p.last_ack()) < window);
        Some(recent)
    };
    if quorum::vote_result(s.configs.current().voter_sets(), heard) != VoteResult::Won {
        tracing::warn!(
            node = s.id,
            term = s.current_term,
            "stepping down: no contact with a quorum for {window:?}"
        );
        let term = s.current_term;
        s.become_follower(config, now, term, None);
    }
}

/// RequestVote receiver (Figure 2), and the pre-vote variant that changes nothing.
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
        let response = on_vote_request(&mut s, &shared.config, now, &request);
        (response, s.sync_point())
    };
    super::reply_when_durable(shared, seq, response).await
}

/// RequestVote receiver implementation: "1. Reply false if term < currentTerm. 2. If votedFor is
/// null or candidateId, and candidate's log is at least as up-to-date as receiver's log, grant
/// vote." A pre-vote is granted on the same log comparison for a newer term, and moves nothing.
pub(crate) fn on_vote_request(
    s: &mut State,
    config: &Config,
    now: Instant,
    request: &VoteRequest,
) -> VoteResponse {
    let kind = if request.pre_vote {
        Inbound::PreVote
    } else {
        Inbound::Vote {
            transfer: request.transfer,
        }
    };
    let up_to_date = s.log_up_to_date(request.last_log_index, request.last_log_term);
    let refuse = |s: &State| VoteResponse {
        term: s.current_term,
        vote_granted: false,
    };
    match s.check_term(config, now, request.term, kind) {
        TermCheck::Stale | TermCheck::Lease => refuse(s),
        TermCheck::PreVote if up_to_date => VoteResponse {
            term: request.term,
            vote_granted: true,
        },
        TermCheck::PreVote => refuse(s),
        // A pre-vote for a term this node is already in: the candidate is behind.
        TermCheck::Current | TermCheck::Newer if request.pre_vote => refuse(s),
        TermCheck::Current | TermCheck::Newer => {
            let grant = s.voted_for.is_none_or(|v| v == request.candidate_id) && up_to_date;
            if grant {
                if s.voted_for.is_none() {
                    let term = s.current_term;
                    s.set_hard_state(term, Some(request.candidate_id));
                }
                s.reset_election_timer(config, now);
            }
            VoteResponse {
                term: s.current_term,
                vote_granted: grant,
            }
        }
    }
}
