//! The rules of Figure 2 of the Raft paper, one test per sentence, checked on the state machine
//! alone: no runtime, no network, no storage. Each test builds a node's `State`, feeds it one
//! event through the same function the node's tasks call, and looks at what it decided (its
//! state, and the RPCs left in its outbox). The scenario suites in keel-sim check the same rules
//! as a cluster runs; these pin each one to the line of code that implements it.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::election::{self, become_leader, on_vote_reply, on_vote_request, start_election, tick};
use super::replication::{
    self, SentAppend, advance_commit, on_append_reply, on_append_request, propose,
};
use super::snapshot::{
    Chunk, ChunkWrite, Written, chunk_written, on_install_request, receive_chunk, spool_now,
};
use super::state::{Inbound, MAX_TERM_STEP, Outgoing, Role, State, TermCheck};
use crate::codec::MAX_TERM;
use crate::config::Config;
use crate::message::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest, VoteResponse,
};
use crate::storage::Recovered;
use crate::types::{Entry, HardState, Membership, NodeId, Payload};

fn config() -> Config {
    Config::fast_elections()
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Command(Bytes::from(format!("{index}@{term}"))),
    }
}

/// Node `id` of a cluster of `voters`, in `term`, with a log of entries of `log_terms`.
fn node(id: NodeId, voters: &[NodeId], term: u64, log_terms: &[u64]) -> State {
    let recovered = Recovered {
        hard_state: HardState {
            current_term: term,
            voted_for: None,
        },
        snapshot: None,
        entries: log_terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(i as u64 + 1, t))
            .collect(),
    };
    let voters = Membership::with_voters(voters.iter().copied());
    State::new(id, voters, &config(), recovered, 7, Instant::now())
}

/// Node 1 of {1, 2, 3}, elected leader in `term` with a log of `log_terms` (its no-op follows).
fn leader(term: u64, log_terms: &[u64]) -> State {
    let mut s = node(1, &[1, 2, 3], term - 1, log_terms);
    start_election(&mut s, &config(), Instant::now(), false);
    assert_eq!(s.current_term, term);
    for peer in [2, 3] {
        let campaign = s.campaign;
        let request = vote_request_of(&s);
        on_vote_reply(
            &mut s,
            &config(),
            Instant::now(),
            peer,
            &request,
            campaign,
            granted(term),
        );
    }
    assert_eq!(s.role, Role::Leader);
    s.outbox.clear();
    s
}

fn vote_request_of(s: &State) -> VoteRequest {
    VoteRequest {
        term: s.current_term,
        candidate_id: s.id,
        last_log_index: s.log.last_index(),
        last_log_term: s.log.last_term(),
        pre_vote: false,
        transfer: false,
    }
}

fn granted(term: u64) -> VoteResponse {
    VoteResponse {
        term,
        vote_granted: true,
    }
}

fn append(
    term: u64,
    prev: (u64, u64),
    entries: &[(u64, u64)],
    commit: u64,
) -> AppendEntriesRequest {
    AppendEntriesRequest {
        term,
        leader_id: 2,
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries: entries.iter().map(|&(i, t)| entry(i, t)).collect(),
        leader_commit: commit,
    }
}

fn log_terms(s: &State) -> Vec<u64> {
    (s.log.first_index()..=s.log.last_index())
        .map(|i| s.log.term_at(i).unwrap())
        .collect()
}

/// The peers the outbox sends AppendEntries to, with their (prev index, entry count).
fn appends(s: &State) -> Vec<(NodeId, u64, usize)> {
    s.outbox
        .iter()
        .filter_map(|out| match out {
            Outgoing::Append { peer, request, .. } => {
                Some((*peer, request.prev_log_index, request.entries.len()))
            }
            _ => None,
        })
        .collect()
}

fn later(d: Duration) -> Instant {
    Instant::now() + d
}

// All servers: "If RPC request or response contains term T > currentTerm: set currentTerm = T,
// convert to follower."

#[test]
fn a_newer_term_in_any_request_or_reply_makes_a_follower() {
    let now = Instant::now();
    for message in [
        Inbound::FromLeader(2),
        Inbound::Vote { transfer: false },
        Inbound::Reply,
        Inbound::PreVoteReply { granted: false },
    ] {
        for role in [Role::Follower, Role::Candidate, Role::Leader] {
            let mut s = match role {
                Role::Leader => leader(3, &[1]),
                _ => node(1, &[1, 2, 3], 3, &[1]),
            };
            s.role = role;
            let term = s.current_term;
            let check = s.check_term(&config(), now, term + 2, message);
            // A leader's own lease keeps it from adopting a vote request's term.
            if role == Role::Leader && message == (Inbound::Vote { transfer: false }) {
                assert_eq!(check, TermCheck::Lease);
                assert_eq!((s.role, s.current_term), (Role::Leader, term));
                continue;
            }
            assert_eq!(check, TermCheck::Newer, "{role:?} got {message:?}");
            assert_eq!(s.role, Role::Follower, "{role:?} got {message:?}");
            assert_eq!(s.current_term, term + 2);
            assert_eq!(s.voted_for, None);
        }
    }
}

#[test]
fn a_pre_vote_moves_nobodys_term() {
    let now = Instant::now();
    let mut s = node(1, &[1, 2, 3], 3, &[1]);
    assert_eq!(
        s.check_term(&config(), now, 4, Inbound::PreVote),
        TermCheck::PreVote
    );
    let granted = Inbound::PreVoteReply { granted: true };
    assert_eq!(s.check_term(&config(), now, 4, granted), TermCheck::PreVote);
    assert_eq!((s.current_term, s.role), (3, Role::Follower));
}

#[test]
fn within_the_leader_lease_vote_requests_of_newer_terms_are_ignored() {
    let mut s = node(1, &[1, 2, 3], 3, &[1]);
    let now = Instant::now();
    on_append_request(&mut s, &config(), now, append(3, (1, 1), &[], 0));
    let vote = Inbound::Vote { transfer: false };
    assert_eq!(s.check_term(&config(), now, 9, vote), TermCheck::Lease);
    assert_eq!(s.current_term, 3);
    // A candidate its leader sent (leadership transfer) passes the lease.
    let transfer = Inbound::Vote { transfer: true };
    assert_eq!(s.check_term(&config(), now, 9, transfer), TermCheck::Newer);
    // Without check-quorum there is no lease.
    let mut s = node(1, &[1, 2, 3], 3, &[1]);
    let no_lease = Config {
        check_quorum: false,
        ..config()
    };
    on_append_request(&mut s, &no_lease, now, append(3, (1, 1), &[], 0));
    assert_eq!(s.check_term(&no_lease, now, 9, vote), TermCheck::Newer);
    // The lease ends an election timeout after the leader was last heard from.
    let mut s = node(1, &[1, 2, 3], 3, &[1]);
    on_append_request(&mut s, &config(), now, append(3, (1, 1), &[], 0));
    let after = now + config().election_timeout_min;
    assert_eq!(s.check_term(&config(), after, 9, vote), TermCheck::Newer);
}

#[test]
fn a_stale_term_is_refused_and_changes_nothing() {
    let mut s = node(1, &[1, 2, 3], 5, &[1]);
    for message in [
        Inbound::FromLeader(2),
        Inbound::Vote { transfer: true },
        Inbound::Reply,
    ] {
        assert_eq!(
            s.check_term(&config(), Instant::now(), 4, message),
            TermCheck::Stale
        );
        assert_eq!((s.current_term, s.role), (5, Role::Follower));
    }
}

/// A term far ahead of this node's, or one no election could get past, comes only from a
/// forged or corrupted message: it is refused like a stale one. (Adopted, a term of 2^63 - 1
/// ended every election for good: nobody could campaign past it.)
#[test]
fn a_term_too_far_ahead_or_at_the_end_of_the_range_is_refused() {
    let now = Instant::now();
    let messages = [
        Inbound::FromLeader(2),
        Inbound::Vote { transfer: true },
        Inbound::Reply,
        Inbound::PreVoteReply { granted: false },
    ];
    for (current, term) in [
        (5, MAX_TERM),
        (5, 5 + MAX_TERM_STEP + 1),
        (MAX_TERM - 10, MAX_TERM),
    ] {
        for message in messages {
            let mut s = node(1, &[1, 2, 3], current, &[1]);
            let check = s.check_term(&config(), now, term, message);
            assert_eq!(check, TermCheck::Stale, "{current} -> {term}, {message:?}");
            assert_eq!((s.current_term, s.role), (current, Role::Follower));
        }
    }
    // Up to the bound, and short of the end, terms are adopted as usual; the node can still
    // campaign past them.
    for (current, term) in [(5, 5 + MAX_TERM_STEP), (MAX_TERM - 10, MAX_TERM - 1)] {
        let mut s = node(1, &[1, 2, 3], current, &[1]);
        let check = s.check_term(&config(), now, term, Inbound::Reply);
        assert_eq!(check, TermCheck::Newer, "{current} -> {term}");
        start_election(&mut s, &config(), now, false);
        assert_eq!((s.role, s.current_term), (Role::Candidate, term + 1));
    }
}

/// A node whose stored term is the last there is (written by a build without the bound above)
/// starts, follows a leader of its term, and never campaigns into a term no peer could decode.
#[test]
fn a_node_at_the_last_term_starts_and_never_campaigns_past_it() {
    let no_pre_vote = Config {
        pre_vote: false,
        ..config()
    };
    for c in [config(), no_pre_vote] {
        let mut s = node(1, &[1, 2, 3], MAX_TERM, &[1]);
        tick(&mut s, &c, later(c.election_timeout_max * 3));
        assert_eq!((s.role, s.current_term), (Role::Follower, MAX_TERM));
        assert!(s.outbox.is_empty(), "sent {:?}", s.outbox);
        start_election(&mut s, &c, Instant::now(), true);
        assert_eq!((s.role, s.current_term), (Role::Follower, MAX_TERM));
        on_append_request(&mut s, &c, Instant::now(), append(MAX_TERM, (1, 1), &[], 0));
        assert_eq!(s.leader_id, Some(2));
    }
}

// Followers: "Respond to RPCs from candidates and leaders." "If election timeout elapses without
// receiving AppendEntries RPC from current leader or granting vote to candidate: convert to
// candidate."

#[test]
fn a_follower_campaigns_only_after_an_election_timeout_of_silence() {
    let no_pre_vote = Config {
        pre_vote: false,
        ..config()
    };
    let mut s = node(1, &[1, 2, 3], 2, &[1]);
    tick(&mut s, &no_pre_vote, Instant::now());
    assert_eq!(s.role, Role::Follower);
    tick(
        &mut s,
        &no_pre_vote,
        later(no_pre_vote.election_timeout_max),
    );
    assert_eq!((s.role, s.current_term), (Role::Candidate, 3));
    // With pre-vote it asks first, without moving its term.
    let mut s = node(1, &[1, 2, 3], 2, &[1]);
    tick(&mut s, &config(), later(config().election_timeout_max));
    assert_eq!((s.role, s.current_term), (Role::PreCandidate, 2));
}

#[test]
fn hearing_from_the_leader_or_granting_a_vote_restarts_the_election_timeout() {
    let c = config();
    let t1 = later(c.election_timeout_max);
    let mut s = node(1, &[1, 2, 3], 2, &[1]);
    on_append_request(&mut s, &c, t1, append(2, (1, 1), &[], 0));
    tick(&mut s, &c, t1 + c.election_timeout_min / 2);
    assert_eq!(s.role, Role::Follower, "heard from the leader just now");

    let mut s = node(1, &[1, 2, 3], 2, &[1]);
    let request = VoteRequest {
        term: 3,
        candidate_id: 3,
        last_log_index: 1,
        last_log_term: 1,
        pre_vote: false,
        transfer: false,
    };
    assert!(on_vote_request(&mut s, &c, t1, &request).vote_granted);
    tick(&mut s, &c, t1 + c.election_timeout_min / 2);
    assert_eq!(s.role, Role::Follower, "granted a vote just now");
}

/// A leader deposed by a candidate whose vote it refuses (a transfer target that fell behind,
/// say) does not campaign at once on its leadership-old timer: it waits a full timeout.
#[test]
fn a_deposed_leader_waits_an_election_timeout_before_campaigning() {
    let c = config();
    let mut s = leader(2, &[1, 2, 2]);
    let t1 = later(c.election_timeout_max * 3);
    let request = VoteRequest {
        term: 3,
        candidate_id: 3,
        last_log_index: 2,
        last_log_term: 1,
        pre_vote: false,
        transfer: true,
    };
    assert!(
        !on_vote_request(&mut s, &c, t1, &request).vote_granted,
        "its log is behind"
    );
    assert_eq!((s.role, s.current_term), (Role::Follower, 3));
    tick(&mut s, &c, t1 + c.election_timeout_min / 2);
    assert_eq!(s.role, Role::Follower, "deposed just now");
    tick(&mut s, &c, t1 + c.election_timeout_max);
    assert_eq!(
        s.role,
        Role::PreCandidate,
        "an election timeout later, it may"
    );
}

// Candidates: "On conversion to candidate, start election: increment currentTerm, vote for self,
// reset election timer, send RequestVote RPCs to all other servers."

#[test]
fn a_candidate_moves_to_the_next_term_votes_for_itself_and_asks_everyone() {
    let mut s = node(1, &[1, 2, 3], 4, &[1, 4]);
    let now = Instant::now();
    start_election(&mut s, &config(), now, false);
    assert_eq!(
        (s.role, s.current_term, s.voted_for),
        (Role::Candidate, 5, Some(1))
    );
    assert_eq!(s.last_heard, now, "the election timer restarted");
    let [Outgoing::Votes { peers, request, .. }] = &s.outbox[..] else {
        panic!("expected one batch of vote requests, got {:?}", s.outbox);
    };
    assert_eq!(peers, &[2, 3]);
    assert_eq!(
        (
            request.term,
            request.last_log_index,
            request.last_log_term,
            request.pre_vote
        ),
        (5, 2, 4, false)
    );
}

// Candidates: "If votes received from majority of servers: become leader."

#[test]
fn votes_from_a_majority_make_a_leader_and_refusals_do_not() {
    let mut s = node(1, &[1, 2, 3, 4, 5], 1, &[1]);
    start_election(&mut s, &config(), Instant::now(), false);
    let request = vote_request_of(&s);
    let campaign = s.campaign;
    let now = Instant::now();
    let refused = VoteResponse {
        term: 2,
        vote_granted: false,
    };
    on_vote_reply(
        &mut s,
        &config(),
        now,
        2,
        &request,
        campaign,
        refused.clone(),
    );
    on_vote_reply(&mut s, &config(), now, 3, &request, campaign, granted(2));
    // The same voter twice counts once.
    on_vote_reply(&mut s, &config(), now, 3, &request, campaign, granted(2));
    assert_eq!(s.role, Role::Candidate, "2 of 5 votes");
    // A vote of an earlier round does not count.
    on_vote_reply(
        &mut s,
        &config(),
        now,
        4,
        &request,
        campaign - 1,
        granted(2),
    );
    assert_eq!(s.role, Role::Candidate);
    on_vote_reply(&mut s, &config(), now, 5, &request, campaign, granted(2));
    assert_eq!(s.role, Role::Leader, "3 of 5 votes");
}

// Candidates: "If AppendEntries RPC received from new leader: convert to follower."

#[test]
fn a_candidate_hearing_from_a_leader_of_its_term_follows_it() {
    let mut s = node(1, &[1, 2, 3], 1, &[1]);
    start_election(&mut s, &config(), Instant::now(), false);
    let response = on_append_request(&mut s, &config(), Instant::now(), append(2, (1, 1), &[], 0));
    assert!(response.success);
    assert_eq!(
        (s.role, s.leader_id, s.current_term),
        (Role::Follower, Some(2), 2)
    );
}

// Candidates: "If election timeout elapses: start new election."

#[test]
fn a_candidate_without_a_result_starts_a_new_election() {
    let c = Config {
        pre_vote: false,
        ..config()
    };
    let mut s = node(1, &[1, 2, 3], 1, &[1]);
    start_election(&mut s, &c, Instant::now(), false);
    let campaign = s.campaign;
    tick(&mut s, &c, later(c.election_timeout_max));
    assert_eq!((s.role, s.current_term), (Role::Candidate, 3));
    assert!(s.campaign > campaign);
}

// Leaders: "Upon election: send initial empty AppendEntries RPCs (heartbeat) to each server."
// (keel's heartbeat carries the new term's no-op, section 8.)

#[test]
fn a_new_leader_appends_a_no_op_and_sends_to_every_follower() {
    let mut s = node(1, &[1, 2, 3], 1, &[1, 1]);
    start_election(&mut s, &config(), Instant::now(), false);
    s.outbox.clear();
    become_leader(&mut s, &config(), Instant::now());
    assert_eq!(
        s.log.entry(3).map(|e| (e.term, &e.payload)),
        Some((2, &Payload::Noop))
    );
    assert_eq!(appends(&s), vec![(2, 2, 1), (3, 2, 1)]);
    for (&peer, p) in &s.progress {
        assert_eq!((p.next_index(), p.match_index()), (4, 0), "follower {peer}");
    }
}

// Leaders: "If command received from client: append entry to local log, respond after entry
// applied to state machine." "If last log index >= nextIndex for a follower: send AppendEntries
// RPC with log entries starting at nextIndex."

#[test]
fn a_proposal_is_appended_and_sent_from_next_index() {
    let mut s = leader(2, &[1]);
    let proposed = propose(&mut s, &config(), Payload::Command(Bytes::from("x"))).unwrap();
    assert_eq!((proposed.index, proposed.term), (3, 2));
    assert_eq!(s.log.last_index(), 3);
    // The no-op (index 2) is still in flight to both: a proposal waits for room in the window.
    assert!(appends(&s).is_empty());
    // Once follower 2 accepts the no-op, the reply sends it everything since, from next_index.
    let sent = SentAppend {
        term: 2,
        prev_log_index: 1,
        entries: 1,
        read_round: 0,
        generation: s.progress[&2].generation(),
    };
    on_append_reply(&mut s, &config(), Instant::now(), 2, sent, Some(success(2)));
    assert_eq!(appends(&s), vec![(2, 2, 1)]);
    assert!(propose(&mut node(1, &[1, 2, 3], 2, &[1]), &config(), Payload::Noop).is_err());
}

fn success(term: u64) -> AppendEntriesResponse {
    AppendEntriesResponse {
        term,
        success: true,
        conflict_index: 0,
        conflict_term: None,
    }
}

// Leaders: "If successful: update nextIndex and matchIndex for follower. If AppendEntries fails
// because of log inconsistency: decrement nextIndex and retry."

#[test]
fn success_moves_match_index_and_failure_moves_next_index_back_and_retries() {
    let mut s = leader(3, &[1, 1, 2, 2]);
    let now = Instant::now();
    let sent = SentAppend {
        term: 3,
        prev_log_index: 4,
        entries: 1,
        read_round: 0,
        generation: s.progress[&2].generation(),
    };
    on_append_reply(&mut s, &config(), now, 2, sent, Some(success(3)));
    let p = &s.progress[&2];
    assert_eq!((p.next_index(), p.match_index()), (6, 5));

    // Follower 3 has term 1 where the leader has term 2: it says where its term 1 starts.
    let refused = AppendEntriesResponse {
        term: 3,
        success: false,
        conflict_index: 3,
        conflict_term: Some(1),
    };
    s.outbox.clear();
    let sent = SentAppend {
        generation: s.progress[&3].generation(),
        ..sent
    };
    on_append_reply(&mut s, &config(), now, 3, sent, Some(refused));
    // The leader's last entry of term 1 is index 2, so it retries at once from index 3.
    assert_eq!(appends(&s), vec![(3, 2, 3)]);
}

// Leaders: "If there exists an N such that N > commitIndex, a majority of matchIndex[i] >= N,
// and log[N].term == currentTerm: set commitIndex = N."

#[test]
fn the_leader_commits_what_a_majority_holds_but_only_by_counting_its_own_terms_entries() {
    let mut s = leader(3, &[1, 1]);
    // Index 3 is this term's no-op; the leader's own copy counts once durable.
    s.persisted_index = 3;
    let now = Instant::now();
    let old = SentAppend {
        term: 3,
        prev_log_index: 1,
        entries: 1,
        read_round: 0,
        generation: s.progress[&2].generation(),
    };
    // A majority holds index 2, of term 1: not committed by counting (Figure 8).
    on_append_reply(&mut s, &config(), now, 2, old, Some(success(3)));
    assert_eq!(s.commit_index, 0);
    let new = SentAppend {
        prev_log_index: 2,
        generation: s.progress[&3].generation(),
        ..old
    };
    on_append_reply(&mut s, &config(), now, 3, new, Some(success(3)));
    assert_eq!(s.commit_index, 3, "the no-op commits, and with it index 2");
    // The leader's own copy counts only once durable.
    let mut s = leader(3, &[1, 1]);
    s.persisted_index = 2;
    let new = SentAppend {
        generation: s.progress[&2].generation(),
        ..new
    };
    on_append_reply(&mut s, &config(), now, 2, new, Some(success(3)));
    assert_eq!(s.progress[&2].match_index(), 3, "the reply counted");
    assert_eq!(s.commit_index, 0);
    s.persisted_index = 3;
    advance_commit(&mut s, &config(), Instant::now());
    assert_eq!(s.commit_index, 3);
}

// RequestVote receiver: "1. Reply false if term < currentTerm. 2. If votedFor is null or
// candidateId, and candidate's log is at least as up-to-date as receiver's log, grant vote."

#[test]
fn votes_are_refused_to_stale_terms_and_given_once_per_term_to_up_to_date_logs() {
    let c = config();
    let now = Instant::now();
    let ask = |term, candidate_id, last_log_index, last_log_term| VoteRequest {
        term,
        candidate_id,
        last_log_index,
        last_log_term,
        pre_vote: false,
        transfer: false,
    };
    let mut s = node(1, &[1, 2, 3], 4, &[1, 3]);
    assert!(
        !on_vote_request(&mut s, &c, now, &ask(3, 2, 9, 9)).vote_granted,
        "stale term"
    );
    assert!(
        !on_vote_request(&mut s, &c, now, &ask(5, 2, 9, 2)).vote_granted,
        "older last term"
    );
    assert!(
        !on_vote_request(&mut s, &c, now, &ask(5, 2, 1, 3)).vote_granted,
        "shorter log"
    );
    assert!(on_vote_request(&mut s, &c, now, &ask(5, 2, 2, 3)).vote_granted);
    assert_eq!(s.voted_for, Some(2));
    assert!(
        on_vote_request(&mut s, &c, now, &ask(5, 2, 2, 3)).vote_granted,
        "asked again"
    );
    assert!(
        !on_vote_request(&mut s, &c, now, &ask(5, 3, 5, 5)).vote_granted,
        "voted already"
    );
    assert!(
        on_vote_request(&mut s, &c, now, &ask(6, 3, 5, 5)).vote_granted,
        "a new term"
    );
    // The vote is staged for storage before the reply (the handler waits for it).
    assert_eq!(s.voted_for, Some(3));
}

#[test]
fn a_pre_vote_is_granted_on_the_log_alone_and_records_nothing() {
    let c = config();
    let mut s = node(1, &[1, 2, 3], 4, &[1, 3]);
    let pre = VoteRequest {
        term: 5,
        candidate_id: 2,
        last_log_index: 2,
        last_log_term: 3,
        pre_vote: true,
        transfer: false,
    };
    let response = on_vote_request(&mut s, &c, Instant::now(), &pre);
    assert_eq!((response.term, response.vote_granted), (5, true));
    assert_eq!((s.current_term, s.voted_for), (4, None));
    let behind = VoteRequest {
        last_log_term: 2,
        ..pre.clone()
    };
    assert!(!on_vote_request(&mut s, &c, Instant::now(), &behind).vote_granted);
    let current = VoteRequest { term: 4, ..pre };
    assert!(!on_vote_request(&mut s, &c, Instant::now(), &current).vote_granted);
}

// AppendEntries receiver: "1. Reply false if term < currentTerm. 2. Reply false if log doesn't
// contain an entry at prevLogIndex whose term matches prevLogTerm."

#[test]
fn appends_are_refused_for_a_stale_term_or_a_missing_or_mismatched_prev_entry() {
    let c = config();
    let now = Instant::now();
    let mut s = node(1, &[1, 2, 3], 3, &[1, 2, 2]);
    let r = on_append_request(&mut s, &c, now, append(2, (3, 2), &[], 0));
    assert_eq!((r.success, r.term), (false, 3));
    assert_eq!(s.leader_id, None, "a stale leader is not followed");
    // Too short: the hint is the end of the log.
    let r = on_append_request(&mut s, &c, now, append(3, (5, 3), &[], 0));
    assert_eq!(
        (r.success, r.conflict_index, r.conflict_term),
        (false, 4, None)
    );
    // A different term at prev: the hint is where that term starts.
    let r = on_append_request(&mut s, &c, now, append(3, (3, 3), &[], 0));
    assert_eq!(
        (r.success, r.conflict_index, r.conflict_term),
        (false, 2, Some(2))
    );
    let r = on_append_request(&mut s, &c, now, append(3, (3, 2), &[], 0));
    assert!(r.success);
}

// AppendEntries receiver: "3. If an existing entry conflicts with a new one (same index but
// different terms), delete the existing entry and all that follow it. 4. Append any new entries
// not already in the log."

#[test]
fn conflicting_entries_are_replaced_and_matching_ones_kept() {
    let c = config();
    let now = Instant::now();
    let mut s = node(1, &[1, 2, 3], 3, &[1, 2, 2, 2]);
    let r = on_append_request(&mut s, &c, now, append(3, (1, 1), &[(2, 2), (3, 3)], 0));
    assert!(r.success);
    assert_eq!(
        log_terms(&s),
        vec![1, 2, 3],
        "index 4 followed the conflict and went too"
    );
    // A stale, shorter request never truncates what a later one appended.
    let r = on_append_request(&mut s, &c, now, append(3, (1, 1), &[(2, 2)], 0));
    assert!(r.success);
    assert_eq!(log_terms(&s), vec![1, 2, 3]);
    let r = on_append_request(&mut s, &c, now, append(3, (3, 3), &[(4, 3), (5, 3)], 0));
    assert!(r.success);
    assert_eq!(log_terms(&s), vec![1, 2, 3, 3, 3]);
}

// AppendEntries receiver: "5. If leaderCommit > commitIndex, set commitIndex = min(leaderCommit,
// index of last new entry)."

#[test]
fn the_follower_commits_up_to_the_leaders_commit_within_what_it_was_sent() {
    let c = config();
    let now = Instant::now();
    let mut s = node(1, &[1, 2, 3], 3, &[1, 1, 1, 1, 1]);
    // The leader has committed 9, but this request vouches only for the log through index 3.
    on_append_request(&mut s, &c, now, append(3, (2, 1), &[(3, 1)], 9));
    assert_eq!(s.commit_index, 3);
    assert!(s.wake_applier, "the applier is woken to apply through it");
    // The commit index never moves back.
    on_append_request(&mut s, &c, now, append(3, (1, 1), &[], 1));
    assert_eq!(s.commit_index, 3);
}

// InstallSnapshot receiver: "1. Reply immediately if term < currentTerm ... 6. If existing log
// entry has same index and term as snapshot's last included entry, retain log entries following
// it and reply. 7. Discard the entire log."

#[test]
fn a_snapshot_arrives_in_chunks_and_replaces_the_log_it_covers() {
    let c = config();
    let now = Instant::now();
    let chunk = snapshot_chunk;
    let mut s = node(1, &[1, 2, 3], 3, &[1, 2, 2, 2, 3, 3]);
    let r = receive_chunk(&mut s, &c, now, chunk(2, 0, b"abc", false));
    assert_eq!((r.term, r.done), (3, false), "stale term");
    let r = receive_chunk(&mut s, &c, now, chunk(3, 0, b"abc", false));
    assert_eq!((r.next_offset, r.done), (3, false));
    // A chunk at the wrong offset is answered with where to continue.
    let r = receive_chunk(&mut s, &c, now, chunk(3, 5, b"f", true));
    assert_eq!((r.next_offset, r.done), (3, false));
    let r = receive_chunk(&mut s, &c, now, chunk(3, 3, b"def", true));
    assert_eq!((r.next_offset, r.done), (6, true));
    // The log held the snapshot's last entry: what follows it stays.
    assert_eq!((s.log.snapshot_index(), s.log.last_index()), (4, 6));
    assert_eq!(s.commit_index, 4);
    assert_eq!(&s.snapshot_data[..], b"abcdef");

    // A log that does not hold it is discarded.
    let mut s = node(1, &[1, 2, 3], 3, &[1, 1]);
    receive_chunk(&mut s, &c, now, chunk(3, 0, b"abc", false));
    receive_chunk(&mut s, &c, now, chunk(3, 3, b"def", true));
    assert_eq!((s.log.snapshot_index(), s.log.last_index()), (4, 4));
}

/// An InstallSnapshot chunk of six bytes "abcdef" at index 4 of term 2, from leader 2.
fn snapshot_chunk(
    term: u64,
    offset: u64,
    data: &'static [u8],
    done: bool,
) -> InstallSnapshotRequest {
    InstallSnapshotRequest {
        term,
        leader_id: 2,
        last_included_index: 4,
        last_included_term: 2,
        offset,
        total_len: 6,
        membership: Membership::with_voters([1, 2, 3]),
        data: Bytes::from_static(data),
        done,
    }
}

/// The receiver's decision on a chunk, under the lock (`on_install_request`).
fn offer(s: &mut State, now: Instant, request: InstallSnapshotRequest) -> Chunk {
    on_install_request(s, &config(), now, &request)
}

fn to_write(chunk: Chunk) -> ChunkWrite {
    match chunk {
        Chunk::Write(write) => write,
        Chunk::Answer(answer) => panic!("expected a write, got {answer:?}"),
    }
}

fn to_answer(chunk: Chunk) -> (u64, bool) {
    match chunk {
        Chunk::Answer(answer) => (answer.next_offset, answer.done),
        Chunk::Write(write) => panic!("expected an answer, got {write:?}"),
    }
}

#[test]
fn a_chunk_is_written_without_the_lock_and_counted_only_if_its_transfer_still_runs() {
    let now = Instant::now();
    let mut s = node(1, &[1, 2, 3], 3, &[1, 1]);
    // The first chunk leaves to be written; the state holds no data meanwhile.
    let first = to_write(offer(&mut s, now, snapshot_chunk(3, 0, b"abc", false)));
    // Another chunk while it is written is told where to continue: nothing is written twice.
    let busy = offer(&mut s, now, snapshot_chunk(3, 3, b"def", true));
    assert_eq!(to_answer(busy), (0, false));
    // The leader starts over (it timed out, say): a new transfer, whose write also leaves.
    let again = to_write(offer(&mut s, now, snapshot_chunk(3, 0, b"abc", false)));
    // The first write lands after it was replaced: thrown away, the new transfer untouched.
    let r = chunk_written(&mut s, spool_now(first, Bytes::from_static(b"abc")));
    assert_eq!((r.next_offset, r.done), (0, false));
    assert!(s.incoming_snapshot.as_ref().is_some_and(|i| i.writing));
    let r = chunk_written(&mut s, spool_now(again, Bytes::from_static(b"abc")));
    assert_eq!((r.next_offset, r.done), (3, false));
    let last = to_write(offer(&mut s, now, snapshot_chunk(3, 3, b"def", true)));
    let r = chunk_written(&mut s, spool_now(last, Bytes::from_static(b"def")));
    assert_eq!((r.next_offset, r.done), (6, true));
    assert_eq!(&s.snapshot_data[..], b"abcdef");
    assert_eq!(s.log.snapshot_index(), 4);
}

#[test]
fn a_write_that_lands_after_a_newer_term_or_fails_installs_nothing() {
    let c = config();
    let now = Instant::now();
    // A newer term arrives while the last chunk is written.
    let mut s = node(1, &[1, 2, 3], 3, &[1, 1]);
    receive_chunk(&mut s, &c, now, snapshot_chunk(3, 0, b"abc", false));
    let last = to_write(offer(&mut s, now, snapshot_chunk(3, 3, b"def", true)));
    s.check_term(&c, now, 4, Inbound::FromLeader(3));
    let r = chunk_written(&mut s, spool_now(last, Bytes::from_static(b"def")));
    assert_eq!((r.term, r.next_offset, r.done), (4, 0, false));
    assert_eq!(
        s.log.snapshot_index(),
        0,
        "a snapshot of a stale transfer was installed"
    );

    // The spool fails (a full disk): the transfer ends, the leader starts over.
    let mut s = node(1, &[1, 2, 3], 3, &[1, 1]);
    let first = to_write(offer(&mut s, now, snapshot_chunk(3, 0, b"abc", false)));
    let r = chunk_written(&mut s, Written::failed(first));
    assert_eq!((r.next_offset, r.done), (0, false));
    assert!(s.incoming_snapshot.is_none());
    let again = offer(&mut s, now, snapshot_chunk(3, 3, b"def", true));
    assert_eq!(
        to_answer(again),
        (0, false),
        "a chunk past a failed write was accepted"
    );

    // Entries past the snapshot commit while its last chunk is written: nothing to install.
    let mut s = node(1, &[1, 2, 3], 3, &[1, 1, 2, 2, 2]);
    receive_chunk(&mut s, &c, now, snapshot_chunk(3, 0, b"abc", false));
    let last = to_write(offer(&mut s, now, snapshot_chunk(3, 3, b"def", true)));
    s.commit_index = 5;
    let r = chunk_written(&mut s, spool_now(last, Bytes::from_static(b"def")));
    assert_eq!((r.next_offset, r.done), (6, true));
    assert_eq!(s.log.snapshot_index(), 0);
}

#[test]
fn a_chunk_that_does_not_end_where_it_says_ends_the_transfer() {
    let c = config();
    let now = Instant::now();
    let mut s = node(1, &[1, 2, 3], 3, &[1, 1]);
    // Says it is the last, but stops short of total_len.
    let r = receive_chunk(&mut s, &c, now, snapshot_chunk(3, 0, b"abc", true));
    assert_eq!((r.next_offset, r.done), (0, false));
    assert!(s.incoming_snapshot.is_none());
    // Runs past total_len.
    receive_chunk(&mut s, &c, now, snapshot_chunk(3, 0, b"abc", false));
    let r = receive_chunk(&mut s, &c, now, snapshot_chunk(3, 3, b"defg", true));
    assert_eq!((r.next_offset, r.done), (0, false));
    assert!(s.incoming_snapshot.is_none());
    assert_eq!(s.log.snapshot_index(), 0);
}

// Reads (thesis 6.4): a read is served at an index only once a quorum confirmed the leader still
// leads after the read arrived.

#[test]
fn a_read_waits_for_a_quorum_to_confirm_leadership() {
    let mut s = leader(2, &[1]);
    let mut reply = replication::start_read(&mut s, &config()).unwrap();
    let round = s.read_round_sent;
    assert!(round > 0, "the read's round went out");
    assert_eq!(appends(&s).len(), 2, "as a heartbeat to both followers");
    assert!(reply.try_recv().is_err());
    let heartbeat = SentAppend {
        term: 2,
        prev_log_index: 2,
        entries: 0,
        read_round: round,
        generation: s.progress[&3].generation(),
    };
    on_append_reply(
        &mut s,
        &config(),
        Instant::now(),
        3,
        heartbeat,
        Some(success(2)),
    );
    assert_eq!(reply.try_recv().unwrap(), Ok(2), "at the term's no-op");
}

// Check-quorum (thesis 6.2): a leader that has not heard from a majority for an election timeout
// steps down.

#[test]
fn a_leader_cut_off_from_its_quorum_steps_down() {
    let c = config();
    let mut s = leader(2, &[1]);
    let start = Instant::now();
    tick(&mut s, &c, start + c.election_timeout_max);
    assert_eq!(s.role, Role::Follower);
    // Without check-quorum it keeps leading.
    let mut s = leader(2, &[1]);
    let off = Config {
        check_quorum: false,
        ..c
    };
    election::tick(&mut s, &off, start + off.election_timeout_max * 2);
    assert_eq!(s.role, Role::Leader);
    // Hearing from one follower (a majority with itself) is enough.
    let mut s = leader(2, &[1]);
    let later = start + c.election_timeout_max;
    let heartbeat = SentAppend {
        term: 2,
        prev_log_index: 1,
        entries: 1,
        read_round: 0,
        generation: s.progress[&2].generation(),
    };
    on_append_reply(&mut s, &c, later, 2, heartbeat, Some(success(2)));
    tick(&mut s, &c, later + Duration::from_millis(10));
    assert_eq!(s.role, Role::Leader);
}

// Membership (section 6; thesis chapter 4) and leadership transfer (thesis 3.10), checked on the
// state alone like the rules above.

mod membership_rules {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::MembershipError;
    use crate::message::TimeoutNowRequest;
    use crate::raft::membership::{Change, propose_change};
    use crate::raft::transfer;

    fn config_entry(index: u64, term: u64, membership: Membership) -> (u64, u64, Membership) {
        (index, term, membership)
    }

    fn append_config(
        term: u64,
        prev: (u64, u64),
        (index, entry_term, membership): (u64, u64, Membership),
    ) -> AppendEntriesRequest {
        AppendEntriesRequest {
            term,
            leader_id: 2,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries: vec![Entry {
                index,
                term: entry_term,
                payload: Payload::Config(membership),
            }],
            leader_commit: 0,
        }
    }

    /// Takes the AppendEntries the leader queued for `peer` out of its outbox, as the records
    /// their replies are handled with.
    fn take_appends(s: &mut State, peer: NodeId) -> Vec<SentAppend> {
        let mut sent = Vec::new();
        s.outbox.retain(|out| match out {
            Outgoing::Append {
                peer: p,
                request,
                read_round,
                generation,
            } if *p == peer => {
                sent.push(SentAppend {
                    term: request.term,
                    prev_log_index: request.prev_log_index,
                    entries: request.entries.len() as u64,
                    read_round: *read_round,
                    generation: *generation,
                });
                false
            }
            _ => true,
        });
        sent
    }

    /// Answers every AppendEntries the leader sent `peer` with success, and those the answers
    /// made it send, until it sends `peer` nothing more.
    fn deliver(s: &mut State, c: &Config, now: Instant, peer: NodeId) {
        loop {
            let sent = take_appends(s, peer);
            if sent.is_empty() {
                return;
            }
            for one in sent {
                on_append_reply(s, c, now, peer, one, Some(success(s.current_term)));
            }
        }
    }

    /// A leader of {1, 2, 3} that has committed its term's no-op.
    fn settled_leader() -> State {
        let mut s = leader(2, &[1]);
        s.persisted_index = 2;
        let noop = SentAppend {
            term: 2,
            prev_log_index: 1,
            entries: 1,
            read_round: 0,
            generation: s.progress[&2].generation(),
        };
        on_append_reply(&mut s, &config(), Instant::now(), 2, noop, Some(success(2)));
        assert_eq!(s.commit_index, 2);
        s.outbox.clear();
        s
    }

    #[test]
    fn a_configuration_takes_effect_when_appended_and_is_undone_when_truncated() {
        let c = config();
        let now = Instant::now();
        let mut s = node(1, &[1, 2, 3], 2, &[1, 1]);
        let four = Membership::with_voters([1, 2, 3, 4]);
        let r = on_append_request(
            &mut s,
            &c,
            now,
            append_config(2, (2, 1), config_entry(3, 2, four.clone())),
        );
        assert!(r.success);
        assert_eq!(s.configs.current(), &four, "in force before it commits");
        assert_eq!(s.commit_index, 0);
        // A new leader replaces the entry: the configuration before it is back in force.
        let r = on_append_request(&mut s, &c, now, append(3, (2, 1), &[(3, 3)], 0));
        assert!(r.success);
        assert_eq!(s.configs.current(), &Membership::with_voters([1, 2, 3]));
    }

    #[test]
    fn a_candidate_asks_only_voters_and_a_joint_election_needs_both_majorities() {
        let c = config();
        let mut s = node(1, &[1, 2, 3], 1, &[1]);
        // Joint: old {1, 2, 3}, new {1, 4, 5}; learner 6.
        let joint = Membership::joint([1, 4, 5], [1, 2, 3], [6], BTreeMap::new()).unwrap();
        let r = on_append_request(
            &mut s,
            &c,
            Instant::now(),
            append_config(1, (1, 1), config_entry(2, 1, joint)),
        );
        assert!(r.success);
        start_election(&mut s, &c, Instant::now(), false);
        let Some(Outgoing::Votes { peers, .. }) = s.outbox.first() else {
            panic!("no vote requests: {:?}", s.outbox);
        };
        assert_eq!(
            peers,
            &[2, 3, 4, 5],
            "every voter of both halves, no learner"
        );
        let request = vote_request_of(&s);
        let campaign = s.campaign;
        let now = Instant::now();
        for peer in [2, 3] {
            on_vote_reply(&mut s, &c, now, peer, &request, campaign, granted(2));
        }
        assert_eq!(s.role, Role::Candidate, "a majority of the old voters only");
        on_vote_reply(&mut s, &c, now, 6, &request, campaign, granted(2));
        assert_eq!(s.role, Role::Candidate, "a learner's vote does not count");
        on_vote_reply(&mut s, &c, now, 4, &request, campaign, granted(2));
        assert_eq!(s.role, Role::Leader, "majorities of both halves");
    }

    #[test]
    fn a_joint_commit_needs_both_majorities_and_the_leader_then_leaves_the_joint_configuration() {
        let c = Config {
            max_promotion_lag: 0,
            ..config()
        };
        let now = Instant::now();
        let mut s = settled_leader();
        deliver(&mut s, &c, now, 3);
        let learner = propose_change(
            &mut s,
            &c,
            now,
            Change::AddLearner {
                id: 4,
                info: Bytes::new(),
            },
        )
        .unwrap();
        s.persisted_index = learner;
        deliver(&mut s, &c, now, 2);
        assert_eq!(s.commit_index, learner);
        // Promote 4 and remove 2 and 3 at once: new voters {1, 4}.
        let change = Change::Set {
            voters: [1, 4].into(),
            learners: Default::default(),
            info: BTreeMap::new(),
        };
        assert!(matches!(
            propose_change(&mut s, &c, now, change.clone()),
            Err(MembershipError::NotCaughtUp { id: 4, .. })
        ));
        // The learner is probed, refuses (its log is empty), and is sent everything.
        let probe = s
            .outbox
            .iter()
            .find_map(|out| match out {
                Outgoing::Append {
                    peer: 4, request, ..
                } => Some(request.prev_log_index),
                _ => None,
            })
            .expect("the learner is sent to");
        s.outbox
            .retain(|out| !matches!(out, Outgoing::Append { peer: 4, .. }));
        let empty = AppendEntriesResponse {
            term: 2,
            success: false,
            conflict_index: 1,
            conflict_term: None,
        };
        let sent = SentAppend {
            term: 2,
            prev_log_index: probe,
            entries: s.log.last_index() - probe,
            read_round: 0,
            generation: s.progress[&4].generation(),
        };
        on_append_reply(&mut s, &c, now, 4, sent, Some(empty));
        deliver(&mut s, &c, now, 4);
        assert_eq!(s.progress[&4].match_index(), learner);
        let joint = propose_change(&mut s, &c, now, change).unwrap();
        assert!(s.configs.current().is_joint());
        s.persisted_index = joint;
        // The new half alone (1 and 4) is not enough ...
        deliver(&mut s, &c, now, 4);
        assert_eq!(s.commit_index, learner);
        // ... with a majority of the old half too, it commits, and the leader appends the final
        // configuration by itself.
        deliver(&mut s, &c, now, 3);
        assert_eq!(s.commit_index, joint);
        let last = s.log.last_index();
        assert_eq!(last, joint + 1);
        let last_config = s.configs.current();
        assert!(!last_config.is_joint());
        assert_eq!(last_config.voters(), &[1, 4].into());
        // Members being removed still get the entries that remove them.
        assert!(s.progress.contains_key(&2) && s.progress.contains_key(&3));
        s.persisted_index = last;
        deliver(&mut s, &c, now, 4);
        assert_eq!(
            s.commit_index, last,
            "the new configuration commits with 1 and 4"
        );
        assert!(
            !s.progress.contains_key(&2),
            "and then the removed members are dropped"
        );
    }

    #[test]
    fn a_new_leader_changes_nothing_before_it_commits_an_entry_of_its_term() {
        let c = config();
        let mut s = leader(2, &[1]);
        let change = Change::AddLearner {
            id: 4,
            info: Bytes::new(),
        };
        assert_eq!(
            propose_change(&mut s, &c, Instant::now(), change.clone()),
            Err(MembershipError::NotReady)
        );
        let mut s = settled_leader();
        let index = propose_change(&mut s, &c, Instant::now(), change).unwrap();
        assert_eq!(index, 3);
        let second = Change::AddLearner {
            id: 5,
            info: Bytes::new(),
        };
        assert!(matches!(
            propose_change(&mut s, &c, Instant::now(), second),
            Err(MembershipError::ChangeInProgress(_))
        ));
    }

    #[test]
    fn learners_and_removed_members_never_campaign() {
        let c = config();
        let later = Instant::now() + c.election_timeout_max * 2;
        let learner = Membership::new([1, 2, 3], [4], BTreeMap::new()).unwrap();
        let mut s = node(4, &[], 1, &[]);
        tick(&mut s, &c, later);
        assert_eq!(s.role, Role::Follower, "a node waiting to join");
        on_append_request(
            &mut s,
            &c,
            Instant::now(),
            append_config(1, (0, 0), config_entry(1, 1, learner)),
        );
        tick(&mut s, &c, later);
        assert_eq!((s.role, s.current_term), (Role::Follower, 1), "a learner");
    }

    #[test]
    fn timeout_now_makes_a_voter_campaign_at_once_past_the_lease() {
        let c = config();
        let now = Instant::now();
        let mut s = node(2, &[1, 2, 3], 3, &[1]);
        on_append_request(&mut s, &c, now, append(3, (1, 1), &[], 0));
        let request = TimeoutNowRequest {
            term: 3,
            leader_id: 1,
        };
        let r = transfer::on_timeout_now(&mut s, &c, now, &request);
        assert_eq!(
            (r.term, s.role),
            (4, Role::Candidate),
            "no pre-vote, no waiting"
        );
        let Some(Outgoing::Votes { request, .. }) = s.outbox.first() else {
            panic!("no vote requests");
        };
        assert!(request.transfer && !request.pre_vote);
        // A voter that just heard from its leader votes for it anyway.
        let mut voter = node(3, &[1, 2, 3], 3, &[1]);
        on_append_request(&mut voter, &c, now, append(3, (1, 1), &[], 0));
        let vote = on_vote_request(&mut voter, &c, now, request);
        assert!(vote.vote_granted);
        // A stale TimeoutNow changes nothing.
        let mut s = node(2, &[1, 2, 3], 5, &[1]);
        transfer::on_timeout_now(&mut s, &c, now, &request_of(3));
        assert_eq!((s.role, s.current_term), (Role::Follower, 5));
    }

    fn request_of(term: u64) -> TimeoutNowRequest {
        TimeoutNowRequest { term, leader_id: 1 }
    }

    #[test]
    fn a_transferring_leader_takes_no_proposals_and_sends_timeout_now_once_the_target_caught_up() {
        let c = config();
        let now = Instant::now();
        let mut s = settled_leader();
        propose(&mut s, &c, Payload::Command(Bytes::from("x"))).unwrap();
        s.outbox.clear();
        assert_eq!(transfer::start(&mut s, &c, now, Some(3), false), Ok(3));
        assert!(matches!(
            propose(&mut s, &c, Payload::Noop),
            Err(crate::error::ProposeError::TransferringLeadership { to: 3 })
        ));
        assert!(
            !s.outbox
                .iter()
                .any(|o| matches!(o, Outgoing::TimeoutNow { .. })),
            "node 3 lacks entries yet"
        );
        let caught_up = SentAppend {
            term: 2,
            prev_log_index: 1,
            entries: 2,
            read_round: 0,
            generation: s.progress[&3].generation(),
        };
        on_append_reply(&mut s, &c, now, 3, caught_up, Some(success(2)));
        assert!(
            s.outbox
                .iter()
                .any(|o| matches!(o, Outgoing::TimeoutNow { peer: 3, .. }))
        );
        // Nobody took over within an election timeout: the leader leads on.
        tick(&mut s, &c, now + c.election_timeout_max);
        assert_eq!((s.role, s.transfer.is_none()), (Role::Leader, true));
        assert!(propose(&mut s, &c, Payload::Noop).is_ok());
    }

    /// A member removed and added back gets a new progress, and the replies to requests sent
    /// under the old one change nothing: they would count toward the wrong requests.
    #[test]
    fn replies_to_requests_sent_before_a_member_was_removed_do_not_count_once_it_is_back() {
        let c = config();
        let now = Instant::now();
        let mut s = settled_leader();
        let add = Change::AddLearner {
            id: 4,
            info: Bytes::new(),
        };
        let added = propose_change(&mut s, &c, now, add.clone()).unwrap();
        s.persisted_index = added;
        deliver(&mut s, &c, now, 2);
        assert_eq!(s.commit_index, added);
        // The learner's log is empty: it refuses the probe, and is sent everything.
        let probe = take_appends(&mut s, 4);
        let empty = AppendEntriesResponse {
            term: 2,
            success: false,
            conflict_index: 1,
            conflict_term: None,
        };
        on_append_reply(&mut s, &c, now, 4, probe[0], Some(empty.clone()));
        let mut old = take_appends(&mut s, 4);
        assert!(old.len() == 1 && old[0].entries > 0, "{old:?}");
        // Removed (the append still out), then added back.
        let removed = propose_change(&mut s, &c, now, Change::Remove(4)).unwrap();
        s.persisted_index = removed;
        deliver(&mut s, &c, now, 2);
        assert_eq!(s.commit_index, removed);
        assert!(
            !s.progress.contains_key(&4),
            "dropped once its removal committed"
        );
        // The entry removing it went out to it too.
        old.extend(take_appends(&mut s, 4));
        let again = propose_change(&mut s, &c, now, add).unwrap();
        let new = take_appends(&mut s, 4);
        assert_eq!(new.len(), 1, "a new probe");
        assert_ne!(new[0].generation, old[0].generation);
        let before = |s: &State| {
            let p = &s.progress[&4];
            (
                p.next_index(),
                p.match_index(),
                p.inflight_appends(),
                p.mode(),
            )
        };
        let fresh = before(&s);
        // The old requests' answers arrive, or their losses are reported: none counts.
        for &sent in &old {
            on_append_reply(&mut s, &c, now, 4, sent, Some(success(2)));
            on_append_reply(&mut s, &c, now, 4, sent, None);
        }
        assert_eq!(before(&s), fresh);
        assert!(take_appends(&mut s, 4).is_empty());
        // The new probe's answer does.
        on_append_reply(&mut s, &c, now, 4, new[0], Some(empty));
        let resent = take_appends(&mut s, 4);
        assert_eq!(resent.len(), 1);
        assert_eq!(
            (resent[0].prev_log_index, resent[0].entries),
            (0, again),
            "everything, from the start"
        );
    }

    /// The configuration that removes the leader commits while a transfer it was asked for
    /// runs: that transfer now ends in stepping down, taken over or not.
    #[test]
    fn a_removed_leader_steps_down_even_if_a_transfer_was_already_running() {
        let c = config();
        let now = Instant::now();
        let mut s = settled_leader();
        deliver(&mut s, &c, now, 3);
        let joint = propose_change(&mut s, &c, now, Change::Remove(1)).unwrap();
        assert!(s.configs.current().is_joint());
        // Shutdown's hand-over, or an operator, asks for a transfer meanwhile.
        assert_eq!(transfer::start(&mut s, &c, now, Some(2), false), Ok(2));
        for _ in 0..2 {
            s.persisted_index = s.log.last_index();
            deliver(&mut s, &c, now, 2);
            deliver(&mut s, &c, now, 3);
        }
        assert!(s.commit_index > joint);
        assert!(!s.configs.current().is_joint());
        assert!(!s.configs.current().is_voter(1));
        assert_eq!(s.commit_index, s.configs.current_index(), "out, committed");
        assert_eq!(s.role, Role::Leader, "until its successor takes over");
        assert!(s.transfer.as_ref().is_some_and(|t| t.step_down));
        // Node 2 never takes over: the leader steps down anyway.
        tick(&mut s, &c, now + c.election_timeout_max);
        assert_eq!(s.role, Role::Follower);
    }
}

/// What the transport is told to keep reaching: a removed leader until it is succeeded (it
/// must reach its successor to hand over), then no longer.
#[test]
fn a_removed_leader_is_reached_until_a_new_leader_is_known() {
    let c = config();
    let now = Instant::now();
    let mut s = node(2, &[1, 2, 3], 1, &[1]);
    let (watch, _) = tokio::sync::watch::channel(super::MembershipStatus {
        membership: Membership::default(),
        index: 0,
        committed: true,
    });
    let removal = AppendEntriesRequest {
        term: 1,
        leader_id: 1,
        prev_log_index: 1,
        prev_log_term: 1,
        entries: vec![Entry {
            index: 2,
            term: 1,
            payload: Payload::Config(Membership::with_voters([2, 3])),
        }],
        leader_commit: 2,
    };
    assert!(on_append_request(&mut s, &c, now, removal).success);
    let (membership, reach) = super::publish_membership(&watch, &mut s).expect("it changed");
    assert!(!membership.contains(1));
    assert_eq!(reach, [1, 3].into(), "node 1 still leads");
    let successor = AppendEntriesRequest {
        term: 2,
        leader_id: 3,
        prev_log_index: 2,
        prev_log_term: 1,
        entries: Vec::new(),
        leader_commit: 2,
    };
    assert!(on_append_request(&mut s, &c, now, successor).success);
    let (_, reach) = super::publish_membership(&watch, &mut s).expect("the leader changed");
    assert_eq!(reach, [3].into());
    assert!(
        super::publish_membership(&watch, &mut s).is_none(),
        "nothing changed since"
    );
}
