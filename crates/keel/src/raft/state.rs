//! All mutable state of a node, kept behind one mutex (the seed's "shared data and locks").
//!
//! Every change that must survive a crash goes through a method here that also stages it in
//! `staged`; the lock guard (`super::StateGuard`) submits the staged batch to storage before the
//! lock is released, so storage sees writes in exactly the order the state changed.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::log::{LogReset, RaftLog};
use super::membership::ConfigLog;
use super::progress::Progress;
use super::transfer::Transfer;
use crate::codec::MAX_TERM;
use crate::config::Config;
use crate::error::ReadIndexError;
use crate::message::{AppendEntriesRequest, TimeoutNowRequest, VoteRequest};
use crate::storage::{Recovered, SnapshotSpool, Storage, WriteBatch};
use crate::types::{Entry, HardState, Membership, NodeId, Payload, Snapshot, SnapshotMeta};

/// A node's role (Figure 2, "Rules for Servers"), plus the pre-candidate of the pre-vote phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Answers leaders and candidates.
    Follower,
    /// Asking peers whether they would vote, before starting a real election.
    PreCandidate,
    /// Running an election.
    Candidate,
    /// Accepts proposals and replicates them.
    Leader,
}

/// A linearizable read waiting for the leader to confirm it still leads.
#[derive(Debug)]
pub(crate) struct PendingRead {
    pub round: u64,
    pub index: u64,
    pub reply: oneshot::Sender<Result<u64, ReadIndexError>>,
}

/// What submitting the staged writes led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Submitted {
    /// Nothing was staged.
    Nothing,
    /// Durable already: `persisted_index` moved.
    Durable,
    /// Pending, and the persistence watcher was idle: it must be woken.
    WakeWatcher,
    /// Pending behind writes the watcher already waits for.
    Pending,
}

/// An RPC decided under the lock, sent from a task of its own once the lock is released (see
/// `super::StateGuard`).
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// One AppendEntries.
    Append {
        peer: NodeId,
        request: AppendEntriesRequest,
        /// The read-confirmation round the request carries.
        read_round: u64,
        /// The generation of the progress it was sent under.
        generation: u64,
    },
    /// A (pre-)vote request to each of `peers`. A real vote goes out only once this node's own
    /// vote for itself is durable: a candidate that crashed and forgot it could vote again in
    /// the same term and help elect a second leader.
    Votes {
        peers: Vec<NodeId>,
        request: VoteRequest,
        /// The (pre-)election round the replies count for.
        campaign: u64,
    },
    /// A transfer of the current snapshot, chunk by chunk.
    Snapshot {
        peer: NodeId,
        /// The generation of the progress it is sent under.
        generation: u64,
        term: u64,
        meta: SnapshotMeta,
        membership: Membership,
        data: Bytes,
    },
    /// TimeoutNow to the target of a leadership transfer.
    TimeoutNow {
        peer: NodeId,
        request: TimeoutNowRequest,
    },
}

/// What kind of message a term is checked for: the exceptions of [`State::check_term`] depend
/// on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A pre-vote request: it asks about a term without moving anyone to it.
    PreVote,
    /// A vote request. `transfer`: the candidate campaigns because its leader asked it to
    /// (leadership transfer), which passes the followers' leader lease.
    Vote { transfer: bool },
    /// AppendEntries, InstallSnapshot or TimeoutNow from the leader of the message's term.
    FromLeader(NodeId),
    /// A reply to a pre-vote this node asked for.
    PreVoteReply { granted: bool },
    /// Any other reply.
    Reply,
}

/// The most a message may raise a node's term. A member's term rises by one per election it
/// takes part in; a node cut off without pre-vote campaigns once per election timeout, and
/// would take centuries to get this far ahead. A forged message can raise the term at most this
/// much per (persisted) message, 2^31 of them before the terms run out.
pub(crate) const MAX_TERM_STEP: u64 = 1 << 32;

/// Whether a node at `current` may adopt `term` (> `current`): not too far ahead, and with
/// room to campaign past it.
pub(crate) fn adoptable(current: u64, term: u64) -> bool {
    term < MAX_TERM && term - current <= MAX_TERM_STEP
}

/// What the term of a message means for this node (see [`State::check_term`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TermCheck {
    /// Older than this node's: a request is refused, a reply dropped.
    Stale,
    /// This node's term. For a message from a leader, this node is now its follower.
    Current,
    /// Newer: adopted, and this node is now a follower (of the sender, if it leads).
    Newer,
    /// Newer, but not adopted: this node believes a leader is alive, and ignores vote requests
    /// meanwhile (the leader lease).
    Lease,
    /// Newer, but not adopted: a pre-vote request, or a pre-vote granted, moves nobody's term.
    PreVote,
}

/// A snapshot arriving in chunks from the leader, spooled as it comes (see
/// `super::snapshot::on_install_request`).
pub(crate) struct IncomingSnapshot {
    /// Which transfer this is: a chunk at offset 0 starts a new one, and a write that finishes
    /// after its transfer was replaced is thrown away.
    pub transfer: u64,
    pub term: u64,
    pub meta: SnapshotMeta,
    pub membership: Membership,
    pub total_len: u64,
    /// Bytes spooled so far: the offset of the next chunk.
    pub received: u64,
    /// `None` before the first chunk is written, and while a chunk is (the write runs without
    /// the state lock, and owns the spool meanwhile).
    pub spool: Option<Box<dyn SnapshotSpool>>,
    /// A chunk is being written; any other one is answered with `received`.
    pub writing: bool,
}

impl std::fmt::Debug for IncomingSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingSnapshot")
            .field("transfer", &self.transfer)
            .field("term", &self.term)
            .field("meta", &self.meta)
            .field("total_len", &self.total_len)
            .field("received", &self.received)
            .field("writing", &self.writing)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) struct State {
    /// This node.
    pub id: NodeId,
    /// The configurations the log holds; the latest is in force (see `super::membership`).
    pub configs: ConfigLog,
    /// The (generation, committed) of the configuration last published to watchers, and the
    /// leader the transport was last told to keep reaching.
    pub published_membership: (u64, bool, Option<NodeId>),

    // Persistent state on all servers (Figure 2); every change is staged for storage.
    pub current_term: u64,
    pub voted_for: Option<NodeId>,
    pub log: RaftLog,

    // Volatile state on all servers.
    pub commit_index: u64,
    /// Highest index handed to the apply stream.
    pub last_applied: u64,
    pub role: Role,
    pub leader_id: Option<NodeId>,
    /// Last time this node heard from a leader of its term (or granted a vote, or campaigned).
    pub last_heard: Instant,
    pub election_timeout: Duration,
    rng: Xoshiro256PlusPlus,

    // Candidates.
    /// Identifies the current (pre-)election round, so late replies to an earlier round do not
    /// count.
    pub campaign: u64,
    /// Answers to this round's (pre-)vote requests, this node's own included.
    pub votes: BTreeMap<NodeId, bool>,

    // Leaders.
    pub progress: BTreeMap<NodeId, Progress>,
    /// Progresses created so far: the next one's generation (see `Progress::generation`).
    pub progress_generations: u64,
    pub leader_since: Instant,
    /// Index of the no-op this leader appended when elected.
    pub term_start_index: u64,
    /// Read-confirmation rounds: new reads join the open round; a round is sent to followers
    /// once the previous one is confirmed by a quorum.
    pub read_round_open: u64,
    pub read_round_sent: u64,
    pub read_round_confirmed: u64,
    pub pending_reads: VecDeque<PendingRead>,
    /// A leadership transfer in progress (see `super::transfer`).
    pub transfer: Option<Transfer>,

    // Durability.
    staged: WriteBatch,
    /// Seq of the last batch submitted to storage.
    pub last_submitted_seq: u64,
    /// Writes submitted but not known durable: (seq, last log index once it is durable).
    pending_writes: VecDeque<(u64, u64)>,
    /// Highest log index known durable here: the leader's own "match index".
    pub persisted_index: u64,

    // Snapshots.
    /// Data of the latest snapshot (`log.snapshot_meta()`), kept to send to followers.
    pub snapshot_data: Bytes,
    pub incoming_snapshot: Option<IncomingSnapshot>,
    /// Snapshot transfers started to this node, which numbers them.
    pub snapshot_transfers: u64,

    /// A proposal staged entries and left submitting them to the persistence watcher, so that
    /// many proposals share one storage write.
    pub flush_requested: bool,

    // Work for after the lock is released (see `super::StateGuard`): waking other tasks and
    // spawning RPC tasks costs system calls that would otherwise lengthen every critical section.
    /// RPCs to send, each from its own task.
    pub outbox: Vec<Outgoing>,
    /// `commit_index` moved (or a snapshot arrived): the applier has work.
    pub wake_applier: bool,

    /// Set once by shutdown or a fatal error; every entry point checks it.
    pub shutdown: bool,
    pub fatal: Option<String>,
}

impl State {
    pub(crate) fn new(
        id: NodeId,
        bootstrap: Membership,
        config: &Config,
        recovered: Recovered,
        rng_seed: u64,
        now: Instant,
    ) -> Self {
        let (meta, membership, data) = match recovered.snapshot {
            Some(s) => (s.meta, s.membership, s.data),
            None => (SnapshotMeta::default(), None, Bytes::new()),
        };
        // The configuration the node was started with counts only until its log says otherwise.
        let configs = ConfigLog::new(
            membership.unwrap_or(bootstrap),
            meta.last_included_index,
            &recovered.entries,
        );
        let log = RaftLog::new(meta, recovered.entries);
        let persisted_index = log.last_index();
        let mut state = State {
            id,
            configs,
            published_membership: (u64::MAX, false, None),
            current_term: recovered.hard_state.current_term,
            voted_for: recovered.hard_state.voted_for,
            // Everything in the snapshot is committed; what follows is learned from a leader.
            commit_index: meta.last_included_index,
            last_applied: 0,
            log,
            role: Role::Follower,
            leader_id: None,
            last_heard: now,
            election_timeout: Duration::ZERO,
            rng: Xoshiro256PlusPlus::seed_from_u64(rng_seed),
            campaign: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            progress_generations: 0,
            leader_since: now,
            term_start_index: 0,
            read_round_open: 1,
            read_round_sent: 0,
            read_round_confirmed: 0,
            pending_reads: VecDeque::new(),
            transfer: None,
            staged: WriteBatch::default(),
            last_submitted_seq: 0,
            pending_writes: VecDeque::new(),
            persisted_index,
            snapshot_data: data,
            incoming_snapshot: None,
            snapshot_transfers: 0,
            flush_requested: false,
            outbox: Vec::new(),
            wake_applier: false,
            shutdown: false,
            fatal: None,
        };
        state.reset_election_timer(config, now);
        state
    }

    /// Restarts the election timeout with a fresh random length.
    pub(crate) fn reset_election_timer(&mut self, config: &Config, now: Instant) {
        self.last_heard = now;
        self.election_timeout = self
            .rng
            .random_range(config.election_timeout_min..config.election_timeout_max);
    }

    pub(crate) fn election_due(&self, now: Instant) -> bool {
        now.duration_since(self.last_heard) >= self.election_timeout
    }

    /// Updates term and vote, staging them for storage.
    pub(crate) fn set_hard_state(&mut self, current_term: u64, voted_for: Option<NodeId>) {
        assert!(current_term >= self.current_term, "terms never go back");
        self.current_term = current_term;
        self.voted_for = voted_for;
        self.staged.hard_state = Some(HardState {
            current_term,
            voted_for,
        });
    }

    /// The term gate: every request and reply passes here before anything else looks at it.
    ///
    /// Figure 2: "If RPC request or response contains term T > currentTerm: set currentTerm =
    /// T, convert to follower", and every receiver: "Reply false if term < currentTerm". Two
    /// exceptions, both decided here and nowhere else:
    /// - **Pre-vote** (thesis 9.6): a pre-vote request asks about a term without moving anyone
    ///   to it, and a granted pre-vote carries the term asked about, not one to adopt.
    /// - **Leader lease** (thesis 4.2.3, with check-quorum): a node that heard from a leader
    ///   within the minimum election timeout (or leads itself) ignores vote requests of newer
    ///   terms, so that a node cut off from the cluster (or removed from it) cannot depose a
    ///   working leader when it comes back. A candidate sent by its leader to take over
    ///   (leadership transfer) passes.
    ///
    /// And one bound: a term more than [`MAX_TERM_STEP`] above this node's, or one past which
    /// no election could go (at [`MAX_TERM`]), is refused like a stale one. Members reach terms
    /// one election at a time, so only a forged or corrupted message carries such a term; adopted,
    /// it would end every election for good (every node at 2^63 - 1 can campaign nowhere).
    ///
    /// A message from the leader of the current term also makes a candidate or pre-candidate
    /// its follower (Figure 2 "Candidates": "If AppendEntries RPC received from new leader:
    /// convert to follower").
    pub(crate) fn check_term(
        &mut self,
        config: &Config,
        now: Instant,
        term: u64,
        message: Inbound,
    ) -> TermCheck {
        if term < self.current_term {
            return TermCheck::Stale;
        }
        if term == self.current_term {
            if let Inbound::FromLeader(leader) = message
                && self.role != Role::Follower
            {
                self.become_follower(config, now, term, Some(leader));
            }
            return TermCheck::Current;
        }
        if !adoptable(self.current_term, term) {
            // Not a term any member reached by campaigning: a forged or corrupted message.
            tracing::warn!(
                node = self.id,
                term,
                current_term = self.current_term,
                "refused a message of a term too far ahead of this node's"
            );
            return TermCheck::Stale;
        }
        match message {
            Inbound::PreVote if self.in_lease(config, now) => TermCheck::Lease,
            Inbound::PreVote | Inbound::PreVoteReply { granted: true } => TermCheck::PreVote,
            Inbound::Vote { transfer: false } if self.in_lease(config, now) => TermCheck::Lease,
            Inbound::FromLeader(leader) => {
                self.become_follower(config, now, term, Some(leader));
                TermCheck::Newer
            }
            Inbound::Vote { .. } | Inbound::PreVoteReply { granted: false } | Inbound::Reply => {
                self.become_follower(config, now, term, None);
                TermCheck::Newer
            }
        }
    }

    /// True while this node believes a leader is alive: it leads itself, or heard from the
    /// leader of its term within the minimum election timeout. Only with check-quorum, which
    /// makes a leader that lost its quorum step down, so that the lease ends with it.
    pub(crate) fn in_lease(&self, config: &Config, now: Instant) -> bool {
        config.check_quorum
            && match self.role {
                Role::Leader => true,
                _ => {
                    self.leader_id.is_some()
                        && now.duration_since(self.last_heard) < config.election_timeout_min
                }
            }
    }

    /// Steps down to follower (Figure 2: "if RPC request or response contains term T >
    /// currentTerm: set currentTerm = T, convert to follower"). Does not reset the election
    /// timer: only hearing from a leader, granting a vote or campaigning does; except for a
    /// leader stepping down. A leader's timer is as old as its leadership, so it would campaign
    /// at once, against the candidate that deposed it (the target of a leadership transfer
    /// whose vote it refused, say): it waits a full election timeout like any follower.
    pub(crate) fn become_follower(
        &mut self,
        config: &Config,
        now: Instant,
        term: u64,
        leader: Option<NodeId>,
    ) {
        if term > self.current_term {
            self.set_hard_state(term, None);
            self.incoming_snapshot = None;
        }
        if self.role == Role::Leader {
            self.progress.clear();
            self.transfer = None;
            self.reset_election_timer(config, now);
        }
        self.fail_pending_reads();
        self.role = Role::Follower;
        self.leader_id = leader;
    }

    pub(crate) fn fail_pending_reads(&mut self) {
        for read in self.pending_reads.drain(..) {
            let _ = read.reply.send(Err(ReadIndexError::NotLeader {
                leader_hint: self.leader_id,
            }));
        }
    }

    /// Appends entries to the log and stages them. A configuration among them takes effect at
    /// once.
    pub(crate) fn append_to_log(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            if let Payload::Config(membership) = &entry.payload {
                self.configs.appended(entry.index, membership.clone());
            }
            self.staged.entries.push(entry.clone());
            self.log.append(Some(entry));
        }
    }

    /// Removes every log entry after `index` and stages the truncation.
    pub(crate) fn truncate_log_after(&mut self, index: u64) {
        assert!(
            index >= self.commit_index,
            "committed entries are never removed"
        );
        self.log.truncate_after(index);
        self.configs.truncated_after(index);
        self.staged.entries.retain(|e| e.index <= index);
        self.staged.truncate_after =
            Some(self.staged.truncate_after.map_or(index, |t| t.min(index)));
        self.forget_persisted_after(index);
    }

    /// Installs a snapshot in place of the log prefix it covers, and stages it.
    pub(crate) fn install_snapshot(&mut self, snapshot: Snapshot) {
        let old_snapshot_index = self.log.snapshot_index();
        let index = snapshot.meta.last_included_index;
        assert!(
            self.staged.entries.is_empty(),
            "snapshot staged after entries"
        );
        if self.log.install_snapshot(snapshot.meta) == LogReset::Discarded {
            self.staged.truncate_after = Some(index);
            self.configs.truncated_after(index);
            // The discarded entries may have been the ones counted durable.
            self.forget_persisted_after(old_snapshot_index);
        }
        self.configs
            .compacted_through(index, snapshot.membership.clone());
        self.staged.compact_through = Some(index);
        self.snapshot_data = snapshot.data.clone();
        self.staged.snapshot = Some(snapshot);
        self.commit_index = self.commit_index.max(index);
    }

    fn forget_persisted_after(&mut self, index: u64) {
        self.persisted_index = self.persisted_index.min(index);
        for (_, last) in &mut self.pending_writes {
            *last = (*last).min(index);
        }
    }

    /// Submits whatever is staged (nothing after shutdown: a stopped node writes nothing).
    pub(crate) fn submit_staged(&mut self, storage: &dyn Storage) -> Submitted {
        if self.staged.is_empty() {
            return Submitted::Nothing;
        }
        let batch = std::mem::take(&mut self.staged);
        if self.shutdown {
            return Submitted::Nothing;
        }
        let seq = storage.submit(batch);
        assert_eq!(
            seq,
            self.last_submitted_seq + 1,
            "storage seqs must be consecutive"
        );
        self.last_submitted_seq = seq;
        let was_idle = self.pending_writes.is_empty();
        self.pending_writes.push_back((seq, self.log.last_index()));
        let durable = storage.durable_now();
        if durable > 0 {
            self.writes_durable(durable);
        }
        if self.pending_writes.is_empty() {
            Submitted::Durable
        } else if was_idle {
            Submitted::WakeWatcher
        } else {
            Submitted::Pending
        }
    }

    /// True if the only staged changes are appended entries (which a leader may write later).
    pub(crate) fn staged_only_entries(&self) -> bool {
        let s = &self.staged;
        s.hard_state.is_none()
            && s.snapshot.is_none()
            && s.truncate_after.is_none()
            && s.compact_through.is_none()
    }

    /// Marks every write up to `seq` durable.
    pub(crate) fn writes_durable(&mut self, seq: u64) {
        while let Some(&(s, last)) = self.pending_writes.front() {
            if s > seq {
                break;
            }
            self.persisted_index = last;
            self.pending_writes.pop_front();
        }
    }

    pub(crate) fn newest_pending_write(&self) -> Option<u64> {
        self.pending_writes.back().map(|&(seq, _)| seq)
    }

    /// Figure 2's election restriction: is a candidate's log at least as up-to-date as ours?
    pub(crate) fn log_up_to_date(&self, last_log_index: u64, last_log_term: u64) -> bool {
        (last_log_term, last_log_index) >= (self.log.last_term(), self.log.last_index())
    }
}
