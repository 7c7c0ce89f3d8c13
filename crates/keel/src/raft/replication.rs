//! Log replication (Figure 2 AppendEntries, sections 5.3 and 5.4), flow control, commitment
//! and leadership confirmation for reads.
//!
//! Flow control follows etcd's raft: a follower whose log position is unknown is *probed* with
//! one AppendEntries at a time; once one succeeds, it is in *replicate* mode and up to
//! `max_inflight_appends` requests are pipelined, each carrying everything from `next_index` up
//! to the batch limits. `next_index` advances optimistically when a request is sent; a failure
//! moves it back (using the follower's conflict hint) and returns to probing.

use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::progress::{self, ReplicationMode};
use super::state::{Inbound, Outgoing, PendingRead, Role, State, TermCheck};
use super::{Proposed, Shared, membership, quorum, snapshot, transfer};
use crate::config::Config;
use crate::error::{ProposeError, RaftError, ReadIndexError};
use crate::message::{AppendEntriesRequest, AppendEntriesResponse, Request, Response};
use crate::types::{Entry, NodeId, Payload};

/// The heartbeat driver: sleeps a small constant, then, on a leader, sends to every follower
/// that has had nothing for a heartbeat interval (and retries lost appends).
pub(super) async fn run_heartbeats(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.config.tick).await;
        let mut s = shared.lock();
        if s.shutdown {
            return;
        }
        if s.role == Role::Leader {
            replicate_to_all(&mut s, &shared.config, Trigger::Due);
        }
    }
}

/// Why replication is being looked at; decides whether a heartbeat may go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    /// Entries were appended: send them if flow control allows, nothing else.
    NewEntries,
    /// A tick or a reply: send entries if allowed, else a heartbeat if one is due (the interval
    /// passed, or a read round waits to be confirmed).
    Due,
    /// Send something now (a new leader announcing itself).
    Heartbeat,
}

/// Figure 2 "Leaders": "If command received from client: append entry to local log", then send
/// it to every follower whose window has room. Refused while leadership is being handed over.
pub(crate) fn propose(
    s: &mut State,
    config: &Config,
    payload: Payload,
) -> Result<Proposed, ProposeError> {
    if let Some(t) = &s.transfer
        && s.role == Role::Leader
        && !s.shutdown
    {
        return Err(ProposeError::TransferringLeadership { to: t.target });
    }
    append_entry(s, config, payload)
}

/// Appends an entry on the leader and sends it to every follower whose window has room. The
/// leader's own copy is written later, together with other proposals' (Raft thesis 10.2.1: the
/// leader may write its log in parallel with sending it).
pub(crate) fn append_entry(
    s: &mut State,
    config: &Config,
    payload: Payload,
) -> Result<Proposed, ProposeError> {
    if s.shutdown {
        return Err(ProposeError::Shutdown);
    }
    if s.role != Role::Leader {
        return Err(ProposeError::NotLeader {
            leader_hint: s.leader_id,
        });
    }
    let uncommitted = s.log.last_index() - s.commit_index;
    if uncommitted >= config.max_uncommitted_entries {
        return Err(ProposeError::Overloaded { uncommitted });
    }
    let proposed = Proposed {
        index: s.log.last_index() + 1,
        term: s.current_term,
    };
    s.append_to_log(Some(Entry {
        index: proposed.index,
        term: proposed.term,
        payload,
    }));
    replicate_to_all(s, config, Trigger::NewEntries);
    Ok(proposed)
}

/// Sends to every follower whatever `trigger` calls for.
pub(crate) fn replicate_to_all(s: &mut State, config: &Config, trigger: Trigger) {
    // Walks the followers by id rather than collecting them: this runs for every proposal.
    let mut next = s.progress.keys().next().copied();
    while let Some(peer) = next {
        replicate(s, config, peer, trigger);
        next = s
            .progress
            .range((Excluded(peer), Unbounded))
            .next()
            .map(|(&id, _)| id);
    }
}

/// Sends AppendEntries to `peer` as flow control allows: new entries if the window has room,
/// else an empty heartbeat if `trigger` calls for one. Each request gets its own task.
pub(crate) fn replicate(s: &mut State, config: &Config, peer: NodeId, mut trigger: Trigger) {
    // Read the clock only when a heartbeat decision or a send needs it: this runs per proposal.
    let mut now: Option<Instant> = None;
    loop {
        let State {
            id,
            progress,
            log,
            current_term,
            commit_index,
            read_round_sent,
            ..
        } = s;
        let Some(p) = progress.get_mut(&peer) else {
            return;
        };
        if p.mode() == ReplicationMode::Snapshot {
            return;
        }
        if p.needs_snapshot(log.snapshot_index()) {
            snapshot::start_transfer(s, peer);
            return;
        }
        if p.is_paused(config.max_inflight_rpcs) {
            return;
        }
        // New proposals start a send only when nothing is in flight to this follower: then an
        // idle cluster replicates at once, while under load each reply sends everything proposed
        // since, instead of every proposal sending its own small request.
        let send_entries = p.may_send_entries(
            log.last_index(),
            trigger == Trigger::NewEntries,
            config.max_inflight_appends,
        );
        if !send_entries {
            let heartbeat = match trigger {
                Trigger::NewEntries => false,
                Trigger::Heartbeat => true,
                Trigger::Due => {
                    p.read_round_sent() < *read_round_sent || {
                        let t = *now.get_or_insert_with(Instant::now);
                        t.duration_since(p.last_sent()) >= config.heartbeat_interval
                    }
                }
            };
            if !heartbeat {
                return;
            }
        }
        let entries = if send_entries {
            log.slice(
                p.next_index(),
                config.max_append_entries,
                config.max_append_bytes,
            )
        } else {
            Vec::new()
        };
        let prev_log_index = p.next_index() - 1;
        let prev_log_term = log
            .term_at(prev_log_index)
            .expect("next_index is past the snapshot, so its predecessor's term is known");
        let count = entries.len() as u64;
        let read_round = *read_round_sent;
        p.sent(count, read_round, *now.get_or_insert_with(Instant::now));
        let pipelining = p.pipelining(count);
        let generation = p.generation();
        let request = AppendEntriesRequest {
            term: *current_term,
            leader_id: *id,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: *commit_index,
        };
        // Sent from its own task once the lock is released (`StateGuard::drop`).
        s.outbox.push(Outgoing::Append {
            peer,
            request,
            read_round,
            generation,
        });
        trigger = Trigger::NewEntries;
        if !pipelining {
            return;
        }
    }
}

/// One AppendEntries: send it, then handle the reply under the lock, after checking the term and
/// role it was sent under still hold.
pub(super) async fn send_append(
    shared: Arc<Shared>,
    peer: NodeId,
    request: AppendEntriesRequest,
    read_round: u64,
    generation: u64,
) {
    let term = request.term;
    let prev_log_index = request.prev_log_index;
    let count = request.entries.len() as u64;
    let call = shared.transport.call(peer, Request::AppendEntries(request));
    let response = match tokio::time::timeout(shared.config.rpc_timeout, call).await {
        Ok(Ok(Response::AppendEntries(response))) => Some(response),
        _ => None,
    };
    let now = Instant::now();
    let mut s = shared.lock();
    if s.shutdown {
        return;
    }
    let sent = SentAppend {
        term,
        prev_log_index,
        entries: count,
        read_round,
        generation,
    };
    on_append_reply(&mut s, &shared.config, now, peer, sent, response);
}

/// What a reply handler needs to know of the AppendEntries it answers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SentAppend {
    pub term: u64,
    pub prev_log_index: u64,
    pub entries: u64,
    pub read_round: u64,
    /// The generation of the follower's progress it was sent under.
    pub generation: u64,
}

/// Handles the reply to an AppendEntries (`None`: lost or timed out), after checking that the
/// term and role it was sent under still hold. Figure 2 "Leaders": "If successful: update
/// nextIndex and matchIndex for follower. If AppendEntries fails because of log inconsistency:
/// decrement nextIndex and retry."
pub(crate) fn on_append_reply(
    s: &mut State,
    config: &Config,
    now: Instant,
    peer: NodeId,
    sent: SentAppend,
    response: Option<AppendEntriesResponse>,
) {
    if let Some(r) = &response
        && s.check_term(config, now, r.term, Inbound::Reply) == TermCheck::Newer
    {
        return;
    }
    if s.role != Role::Leader || s.current_term != sent.term {
        return;
    }
    let st: &mut State = s;
    let Some(p) = progress::sent_under(&mut st.progress, peer, sent.generation) else {
        return;
    };
    p.returned(sent.entries > 0);
    let Some(response) = response else {
        p.lost(sent.prev_log_index, sent.entries);
        return;
    };
    p.heard(sent.read_round, now);
    let mut matched = false;
    if response.success {
        matched = p.accepted(sent.prev_log_index + sent.entries);
    } else {
        // Move next_index back to where the follower's hint says the logs may agree: past the
        // leader's last entry of the conflicting term, or to the follower's first entry of it.
        let hint = response
            .conflict_term
            .and_then(|t| st.log.last_index_of_term(t).map(|i| i + 1))
            .unwrap_or(response.conflict_index);
        p.rejected(sent.prev_log_index, hint);
    }
    if matched {
        advance_commit(s, config, now);
        if s.transfer.is_some() {
            transfer::maybe_send_timeout_now(s);
        }
    }
    confirm_reads(s, config);
    replicate(s, config, peer, Trigger::Due);
}

/// Figure 2: "If there exists an N such that N > commitIndex, a majority of matchIndex[i] >= N,
/// and log[N].term == currentTerm: set commitIndex = N." The majority is of the voters of the
/// configuration in force (of each half, when joint), the leader among them only if it votes,
/// and its own entry counts only once durable; the term check is the Figure 8 rule (never
/// commit an old term's entry by counting).
pub(crate) fn advance_commit(s: &mut State, config: &Config, now: Instant) {
    let n = quorum::committed_index(s.configs.current().voter_sets(), |id| {
        if id == s.id {
            s.persisted_index
        } else {
            s.progress.get(&id).map_or(0, |p| p.match_index())
        }
    });
    if n > s.commit_index && s.log.term_at(n) == Some(s.current_term) {
        let previous = s.commit_index;
        s.commit_index = n;
        s.wake_applier = true;
        membership::on_commit(s, config, now, previous);
    }
}

/// AppendEntries receiver implementation (Figure 2).
pub(super) async fn handle_append(
    shared: &Arc<Shared>,
    request: AppendEntriesRequest,
) -> Result<AppendEntriesResponse, RaftError> {
    let now = Instant::now();
    let (response, seq) = {
        let mut s = shared.lock();
        if s.shutdown {
            return Err(RaftError::Shutdown);
        }
        let response = on_append_request(&mut s, &shared.config, now, request);
        (response, s.sync_point())
    };
    super::reply_when_durable(shared, seq, response).await
}

/// AppendEntries receiver implementation: "1. Reply false if term < currentTerm", then steps 2
/// to 5 (`accept_entries`). Hearing from the leader of the current term resets the election
/// timer.
pub(crate) fn on_append_request(
    s: &mut State,
    config: &Config,
    now: Instant,
    request: AppendEntriesRequest,
) -> AppendEntriesResponse {
    let leader = Inbound::FromLeader(request.leader_id);
    if s.check_term(config, now, request.term, leader) == TermCheck::Stale {
        return AppendEntriesResponse {
            term: s.current_term,
            success: false,
            conflict_index: 0,
            conflict_term: None,
        };
    }
    s.leader_id = Some(request.leader_id);
    s.last_heard = now;
    accept_entries(s, request)
}

/// Steps 2 to 5 of the AppendEntries receiver.
fn accept_entries(s: &mut State, request: AppendEntriesRequest) -> AppendEntriesResponse {
    let term = s.current_term;
    let last_new_index = request.prev_log_index + request.entries.len() as u64;
    let mut prev_log_index = request.prev_log_index;
    let mut prev_log_term = request.prev_log_term;
    let mut entries = request.entries;
    let snapshot_index = s.log.snapshot_index();
    if prev_log_index < snapshot_index {
        // Everything through the snapshot is committed, hence identical to the leader's log:
        // skip the entries it covers and check consistency at the snapshot instead.
        let skip = (snapshot_index - prev_log_index).min(entries.len() as u64) as usize;
        entries.drain(..skip);
        prev_log_index = snapshot_index;
        prev_log_term = s
            .log
            .term_at(snapshot_index)
            .expect("snapshot term is known");
        if entries.is_empty() && last_new_index <= snapshot_index {
            return AppendEntriesResponse {
                term,
                success: true,
                conflict_index: 0,
                conflict_term: None,
            };
        }
    }
    // 2. Reply false if log doesn't contain an entry at prevLogIndex whose term matches
    // prevLogTerm, with a hint that lets the leader skip a whole term per round trip.
    if prev_log_index > s.log.last_index() {
        return AppendEntriesResponse {
            term,
            success: false,
            conflict_index: s.log.last_index() + 1,
            conflict_term: None,
        };
    }
    let local_term = s.log.term_at(prev_log_index).expect("index within the log");
    if local_term != prev_log_term {
        return AppendEntriesResponse {
            term,
            success: false,
            conflict_index: s.log.first_index_of_term_at(prev_log_index),
            conflict_term: Some(local_term),
        };
    }
    // 3. If an existing entry conflicts with a new one (same index but different terms), delete
    // the existing entry and all that follow it. Entries already present are kept as they are:
    // a stale, shorter request must never truncate what a later one appended.
    let mut present = 0;
    for entry in &entries {
        match s.log.term_at(entry.index) {
            Some(t) if t == entry.term => present += 1,
            Some(_) => {
                s.truncate_log_after(entry.index - 1);
                break;
            }
            None => break,
        }
    }
    // 4. Append any new entries not already in the log.
    if present < entries.len() {
        entries.drain(..present);
        s.append_to_log(entries);
    }
    // 5. If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of last new
    // entry).
    let commit = request.leader_commit.min(last_new_index);
    if commit > s.commit_index {
        s.commit_index = commit;
        s.wake_applier = true;
    }
    AppendEntriesResponse {
        term,
        success: true,
        conflict_index: 0,
        conflict_term: None,
    }
}

/// Registers a linearizable read. Reads share confirmation rounds: while one round of
/// heartbeats is in flight, new reads join the next, which goes out when the first completes.
pub(crate) fn start_read(
    s: &mut State,
    config: &Config,
) -> Result<oneshot::Receiver<Result<u64, ReadIndexError>>, ReadIndexError> {
    if s.shutdown {
        return Err(ReadIndexError::Shutdown);
    }
    if s.role != Role::Leader {
        return Err(ReadIndexError::NotLeader {
            leader_hint: s.leader_id,
        });
    }
    if s.pending_reads.len() >= config.max_pending_reads {
        return Err(ReadIndexError::Overloaded);
    }
    // Reading at the term's no-op (or later) makes the read wait until that no-op is applied,
    // which shows that every entry committed before this leader's term is applied too.
    let index = s.commit_index.max(s.term_start_index);
    let (reply, receiver) = oneshot::channel();
    let current = s.configs.current();
    if !current.is_joint() && current.voters().len() == 1 && current.voters().contains(&s.id) {
        let _ = reply.send(Ok(index));
        return Ok(receiver);
    }
    let round = s.read_round_open;
    s.pending_reads.push_back(PendingRead {
        round,
        index,
        reply,
    });
    if s.read_round_confirmed == s.read_round_sent {
        send_read_round(s, config);
    }
    Ok(receiver)
}

/// Closes the open read round and sends it to every follower.
fn send_read_round(s: &mut State, config: &Config) {
    s.read_round_sent = s.read_round_open;
    s.read_round_open += 1;
    replicate_to_all(s, config, Trigger::Due);
}

/// Completes the reads whose round a quorum has answered in this term.
pub(crate) fn confirm_reads(s: &mut State, config: &Config) {
    if s.pending_reads.is_empty() {
        return;
    }
    let confirmed = quorum::committed_index(s.configs.current().voter_sets(), |id| {
        if id == s.id {
            s.read_round_sent
        } else {
            s.progress.get(&id).map_or(0, |p| p.read_round_acked())
        }
    });
    if confirmed <= s.read_round_confirmed {
        return;
    }
    s.read_round_confirmed = confirmed;
    while s
        .pending_reads
        .front()
        .is_some_and(|r| r.round <= confirmed)
    {
        let read = s.pending_reads.pop_front().expect("front checked");
        let _ = read.reply.send(Ok(read.index));
    }
    if !s.pending_reads.is_empty() && s.read_round_confirmed == s.read_round_sent {
        send_read_round(s, config);
    }
}
