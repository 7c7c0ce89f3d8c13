//! The RPCs of Figure 2 as plain values, plus the pre-vote of the Raft thesis (section 9.6) and
//! the TimeoutNow of its leadership transfer (section 3.10).
//!
//! A [`crate::Transport`] carries a [`Request`] to a peer and brings back its [`Response`];
//! [`crate::codec`] turns both into bytes.

use bytes::Bytes;

use crate::types::{Entry, Membership, NodeId};

/// RequestVote arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// Candidate's term; for a pre-vote, the term it would campaign in.
    pub term: u64,
    /// Candidate requesting the vote.
    pub candidate_id: NodeId,
    /// Index of the candidate's last log entry.
    pub last_log_index: u64,
    /// Term of the candidate's last log entry.
    pub last_log_term: u64,
    /// A pre-vote asks "would you vote for me?" without changing anyone's term or vote.
    pub pre_vote: bool,
    /// The candidate campaigns because its leader handed leadership to it (TimeoutNow): voters
    /// that still hear from that leader vote anyway (their leader lease does not apply).
    pub transfer: bool,
}

/// RequestVote results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteResponse {
    /// The responder's current term (for a granted pre-vote, the term asked about).
    pub term: u64,
    /// True means the candidate received the vote.
    pub vote_granted: bool,
}

/// AppendEntries arguments; with no entries it is a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntriesRequest {
    /// Leader's term.
    pub term: u64,
    /// So followers can redirect clients.
    pub leader_id: NodeId,
    /// Index of the log entry immediately preceding the new ones.
    pub prev_log_index: u64,
    /// Term of the `prev_log_index` entry.
    pub prev_log_term: u64,
    /// Entries to store, at indexes `prev_log_index + 1` onwards.
    pub entries: Vec<Entry>,
    /// Leader's commit index.
    pub leader_commit: u64,
}

/// AppendEntries results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntriesResponse {
    /// The responder's current term, for the leader to update itself.
    pub term: u64,
    /// True if the follower contained an entry matching `prev_log_index` and `prev_log_term`.
    pub success: bool,
    /// On failure, where the leader should look next: the first index of `conflict_term` in the
    /// follower's log, or the follower's last index + 1 if its log is too short.
    pub conflict_index: u64,
    /// On failure, the term of the follower's entry at `prev_log_index`, if it has one.
    pub conflict_term: Option<u64>,
}

/// InstallSnapshot arguments: one chunk of the leader's snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshotRequest {
    /// Leader's term.
    pub term: u64,
    /// So followers can redirect clients.
    pub leader_id: NodeId,
    /// The snapshot replaces all entries up through and including this index.
    pub last_included_index: u64,
    /// Term of `last_included_index`.
    pub last_included_term: u64,
    /// Byte offset where this chunk is positioned in the snapshot data.
    pub offset: u64,
    /// Size of the whole snapshot data, so the follower can refuse one it cannot hold.
    pub total_len: u64,
    /// The configuration in force at `last_included_index` (every chunk carries it).
    pub membership: Membership,
    /// Raw bytes of the chunk, starting at `offset`.
    pub data: Bytes,
    /// True if this is the last chunk.
    pub done: bool,
}

/// InstallSnapshot results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshotResponse {
    /// The responder's current term, for the leader to update itself.
    pub term: u64,
    /// The offset of the next chunk the follower expects; 0 asks the leader to start over.
    pub next_offset: u64,
    /// True once the follower holds everything through `last_included_index` (it installed the
    /// snapshot, or already had those entries committed).
    pub done: bool,
}

/// TimeoutNow arguments: the leader hands leadership over to a follower it brought up to date,
/// which starts an election at once (Raft thesis, section 3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutNowRequest {
    /// Leader's term.
    pub term: u64,
    /// The leader handing over.
    pub leader_id: NodeId,
}

/// TimeoutNow results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutNowResponse {
    /// The responder's current term (after it started its election, the new term).
    pub term: u64,
}

/// Any RPC a node sends to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// RequestVote (or pre-vote).
    Vote(VoteRequest),
    /// AppendEntries (or heartbeat).
    AppendEntries(AppendEntriesRequest),
    /// One chunk of InstallSnapshot.
    InstallSnapshot(InstallSnapshotRequest),
    /// TimeoutNow (leadership transfer).
    TimeoutNow(TimeoutNowRequest),
}

/// The reply to a [`Request`] of the same kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Reply to [`Request::Vote`].
    Vote(VoteResponse),
    /// Reply to [`Request::AppendEntries`].
    AppendEntries(AppendEntriesResponse),
    /// Reply to [`Request::InstallSnapshot`].
    InstallSnapshot(InstallSnapshotResponse),
    /// Reply to [`Request::TimeoutNow`].
    TimeoutNow(TimeoutNowResponse),
}

impl Request {
    /// The sender's term.
    pub fn term(&self) -> u64 {
        match self {
            Request::Vote(r) => r.term,
            Request::AppendEntries(r) => r.term,
            Request::InstallSnapshot(r) => r.term,
            Request::TimeoutNow(r) => r.term,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Vote(r) if r.pre_vote => "pre_vote",
            Request::Vote(_) => "request_vote",
            Request::AppendEntries(_) => "append_entries",
            Request::InstallSnapshot(_) => "install_snapshot",
            Request::TimeoutNow(_) => "timeout_now",
        }
    }
}
