//! The Raft node: a cheap, cloneable [`Raft`] handle over state shared by a few tasks.
//!
//! # Model
//!
//! All mutable state lives in one [`State`] behind one mutex. Critical sections are short and
//! never span an `.await`, a disk write or a network call. Around the state run:
//!
//! - the **election timer** (`election.rs`): sleeps a small constant, then checks how long it has
//!   been since it heard from a leader against a randomized timeout;
//! - the **heartbeat driver** (`replication.rs`): sleeps a small constant, then sends heartbeats
//!   to followers that have had nothing for a heartbeat interval;
//! - the **applier** (`apply.rs`): woken through a `Notify` (the condition variable) whenever
//!   `commit_index` moves, it hands committed entries to the apply stream in order;
//! - the **persistence watcher** (`persist.rs`): learns when storage made writes durable, which
//!   lets a leader count its own log toward a quorum;
//! - one short-lived task per outgoing RPC, which also handles that RPC's reply after re-taking
//!   the lock and re-checking that term and role are still those the request was sent under.
//!
//! Proposals and replies start replication directly (they do not wait for a heartbeat tick), so
//! everything proposed while an AppendEntries is in flight goes out together in the next one.
//!
//! # Where each rule lives
//!
//! | rule | file |
//! | --- | --- |
//! | terms of every request and reply (stale, current, newer; pre-vote, leader lease) | `state.rs` (`State::check_term`) |
//! | elections, pre-vote, check-quorum | `election.rs` |
//! | AppendEntries, commitment, ReadIndex | `replication.rs` |
//! | a follower's `next_index` / `match_index` and flow control | `progress.rs` |
//! | majorities and joint quorums | `quorum.rs` |
//! | configurations, joint consensus, learners | `membership.rs` |
//! | leadership transfer (TimeoutNow) | `transfer.rs` |
//! | snapshots and InstallSnapshot | `snapshot.rs` |
//! | each rule of Figure 2, tested on the state alone | `rules.rs` |

mod apply;
mod election;
mod log;
mod membership;
mod persist;
mod progress;
mod quorum;
mod replication;
#[cfg(test)]
mod rules;
mod snapshot;
mod state;
mod transfer;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use apply::{Applied, ApplyStream};
pub use state::Role;

use crate::config::Config;
use crate::error::{
    MembershipError, ProposeError, RaftError, ReadIndexError, StorageError, TransferError,
};
use crate::message::{Request, Response};
use crate::storage::Storage;
use crate::transport::Transport;
use crate::types::{Entry, Membership, NodeId, Payload};
use membership::Change;
use state::{Outgoing, State, Submitted};

/// Handle to a running Raft node. Cloning is cheap; all clones drive the same node.
#[derive(Clone)]
pub struct Raft {
    shared: Arc<Shared>,
}

/// A handle to a node that does not keep it alive (for transports and registries that the
/// node itself refers to, which would otherwise form a reference cycle).
#[derive(Clone)]
pub struct WeakRaft {
    shared: std::sync::Weak<Shared>,
}

impl WeakRaft {
    /// The node, if it still exists.
    pub fn upgrade(&self) -> Option<Raft> {
        self.shared.upgrade().map(|shared| Raft { shared })
    }
}

/// What a successful proposal was given: where it sits in the log, if it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposed {
    /// The log index of the new entry.
    pub index: u64,
    /// The term in which it was proposed. If the apply stream later delivers a different term
    /// at `index`, this proposal was lost to a leader change.
    pub term: u64,
}

/// A node's view of itself, as returned by [`Raft::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// Latest term seen.
    pub current_term: u64,
    /// The leader of `current_term`, if known.
    pub leader_id: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index handed to the apply stream.
    pub last_applied: u64,
    /// First index still in the log (after the snapshot).
    pub first_log_index: u64,
    /// Last index in the log.
    pub last_log_index: u64,
    /// Last index covered by the snapshot.
    pub snapshot_index: u64,
    /// Encoded bytes of the log entries after the snapshot.
    pub log_bytes: u64,
    /// On a leader: each follower's replication progress (learners', and members' being
    /// removed, included).
    pub followers: Vec<FollowerStatus>,
    /// The configuration in force (the latest in the log), where it is, and whether it is
    /// committed.
    pub membership: MembershipStatus,
    /// On a leader handing leadership over: the node taking over.
    pub transfer_to: Option<NodeId>,
    /// The error that stopped the node, if one did.
    pub fatal_error: Option<String>,
    /// Why the storage cannot make writes durable just now, if it cannot
    /// ([`Storage::unavailable`]).
    pub storage_unavailable: Option<String>,
    /// Bytes the storage takes on disk, if it says ([`Storage::disk_bytes`]).
    pub disk_bytes: Option<u64>,
}

/// The configuration a node is under, as published to [`Raft::membership`] subscribers on
/// every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipStatus {
    /// The configuration in force: the latest in the node's log (see the `raft::membership`
    /// docs: a configuration takes effect when appended).
    pub membership: Membership,
    /// Its log index; 0 for the configuration the node was started with.
    pub index: u64,
    /// Whether it is known committed.
    pub committed: bool,
}

/// The leader's view of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerStatus {
    /// The follower.
    pub id: NodeId,
    /// Highest index known replicated on it.
    pub match_index: u64,
    /// Next index to send it.
    pub next_index: u64,
    /// Time since it last answered, in milliseconds.
    pub last_contact_ms: u64,
}

/// Who leads, as published to [`Raft::leadership`] subscribers on every change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The term.
    pub term: u64,
    /// The leader of that term, if known.
    pub leader_id: Option<NodeId>,
    /// This node's role.
    pub role: Role,
}

pub(crate) struct Shared {
    /// Published on every change of the configuration in force or of its commitment.
    pub membership: watch::Sender<MembershipStatus>,
    /// This struct's own `Arc`, for tasks spawned where only `&Shared` is at hand.
    me: std::sync::Weak<Shared>,
    pub id: NodeId,
    pub config: Config,
    state: Mutex<State>,
    pub storage: Arc<dyn Storage>,
    pub transport: Arc<dyn Transport>,
    /// Kicks the applier when `commit_index` moves (or a snapshot arrives).
    pub apply_wake: Notify,
    /// Kicks the persistence watcher when a write is submitted.
    pub persist_wake: Notify,
    pub leadership: watch::Sender<Leadership>,
    /// Mirrors `State::shutdown`, for the checks that need no lock.
    stopped: AtomicBool,
    cancel: CancellationToken,
    tasks: TaskTracker,
    runtime: tokio::runtime::Handle,
}

/// The state lock. Dropping it submits whatever the critical section staged for storage, so the
/// storage sees writes in the order the state changed, and publishes leadership changes; then,
/// with the lock released, it wakes the tasks the critical section left work for and spawns the
/// RPC tasks it decided on (those cost system calls, which would lengthen every critical
/// section and the time other threads wait for the lock).
pub(crate) struct StateGuard<'a> {
    shared: &'a Shared,
    /// Held until drop.
    guard: Option<MutexGuard<'a, State>>,
    leadership: Leadership,
    /// Leave newly appended entries for the persistence watcher to submit (proposals do: many
    /// then share one storage write).
    defer_entries: bool,
    /// Wake the persistence watcher once the lock is released.
    wake_persist: bool,
}

impl Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.guard.as_deref().expect("the lock is held until drop")
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard
            .as_deref_mut()
            .expect("the lock is held until drop")
    }
}

impl StateGuard<'_> {
    /// Submits staged writes and returns the seq a reply must wait for: the newest write
    /// submitted by anyone, since this reply may vouch for state an earlier, still pending
    /// write holds (a repeated vote, entries another request appended).
    pub(crate) fn sync_point(&mut self) -> u64 {
        self.flush();
        self.last_submitted_seq
    }

    /// Submits the staged writes now (unless deferred, see `defer_entries`).
    pub(crate) fn flush(&mut self) {
        let shared = self.shared;
        let defer_entries = self.defer_entries;
        let s: &mut State = self;
        if defer_entries && s.staged_only_entries() {
            if !s.flush_requested {
                s.flush_requested = true;
                self.wake_persist = true;
            }
            return;
        }
        // Twice at most: a commit made possible by the first write may append an entry of its
        // own (leaving a joint configuration), which the second submits.
        for _ in 0..2 {
            match s.submit_staged(&*shared.storage) {
                Submitted::Nothing | Submitted::Pending => return,
                Submitted::WakeWatcher => {
                    self.wake_persist = true;
                    return;
                }
                Submitted::Durable => {
                    // Our own durable entries can only move the commit index if they passed it.
                    if s.role == Role::Leader && s.persisted_index > s.commit_index {
                        replication::advance_commit(s, &shared.config, Instant::now());
                    }
                }
            }
        }
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        self.flush();
        let shared = self.shared;
        let s: &mut State = self;
        let members_changed = publish_membership(&shared.membership, s);
        let now = Leadership {
            term: s.current_term,
            leader_id: s.leader_id,
            role: s.role,
        };
        let outbox = std::mem::take(&mut s.outbox);
        // Every write staged so far was just submitted: votes wait for this one.
        let submitted_seq = s.last_submitted_seq;
        let wake_applier = std::mem::take(&mut s.wake_applier);
        if now != self.leadership {
            // Under the lock, so that watchers see the changes in the order they happened.
            self.shared.leadership.send_replace(now);
        }
        drop(self.guard.take());
        if let Some((membership, reach)) = members_changed {
            // Before any RPC of this critical section goes out: it may be to a new member.
            self.shared.transport.members_changed(&membership, &reach);
        }
        if wake_applier {
            self.shared.apply_wake.notify_one();
        }
        if self.wake_persist {
            self.shared.persist_wake.notify_one();
        }
        if !outbox.is_empty()
            && let Some(shared) = self.shared.me.upgrade()
        {
            for out in outbox {
                shared.send(out, submitted_seq);
            }
        }
    }
}

/// Publishes the configuration in force if it, or whether it is committed, changed; then
/// returns it with every node the transport must still reach (see
/// `Transport::members_changed`): the members of the configuration in force and of the last
/// committed one, and the leader this node knows of. A leader removed from the cluster leads
/// until its successor takes over, and must reach it to hand over; once a new leader is
/// known, the removed one is dropped.
fn publish_membership(
    sender: &watch::Sender<MembershipStatus>,
    s: &mut State,
) -> Option<(Membership, BTreeSet<NodeId>)> {
    let generation = s.configs.generation();
    let index = s.configs.current_index();
    let committed = index <= s.commit_index;
    let leader = s.leader_id.filter(|&l| l != s.id);
    let now = (generation, committed, leader);
    if s.published_membership == now {
        return None;
    }
    let (published_generation, published_committed, _) = s.published_membership;
    s.published_membership = now;
    let membership = s.configs.current().clone();
    if (published_generation, published_committed) != (generation, committed) {
        sender.send_replace(MembershipStatus {
            membership: membership.clone(),
            index,
            committed,
        });
    }
    let mut reach = membership.members();
    reach.extend(
        s.configs
            .at(s.commit_index.max(s.log.snapshot_index()))
            .members(),
    );
    reach.extend(leader);
    reach.remove(&s.id);
    Some((membership, reach))
}

impl Shared {
    /// Takes the state lock. Entries that proposals left staged are submitted first, so that
    /// every other critical section starts with nothing staged and storage never sees them
    /// mixed with (and reordered against) a truncation, snapshot or term change.
    pub(crate) fn lock(&self) -> StateGuard<'_> {
        let mut guard = self.lock_deferring();
        guard.defer_entries = false;
        if guard.flush_requested {
            guard.flush_requested = false;
            guard.flush();
        }
        guard
    }

    /// Takes the state lock for a proposal: appended entries may stay staged after it (see
    /// `StateGuard::defer_entries`).
    pub(crate) fn lock_deferring(&self) -> StateGuard<'_> {
        let guard = self.state.lock();
        let leadership = Leadership {
            term: guard.current_term,
            leader_id: guard.leader_id,
            role: guard.role,
        };
        StateGuard {
            shared: self,
            guard: Some(guard),
            leadership,
            defer_entries: true,
            wake_persist: false,
        }
    }

    /// Sends an RPC the state decided on, from a task of its own. `submitted_seq` is the newest
    /// storage write submitted when the lock was released.
    fn send(self: &Arc<Self>, out: Outgoing, submitted_seq: u64) {
        match out {
            Outgoing::Append {
                peer,
                request,
                read_round,
                generation,
            } => {
                let task =
                    replication::send_append(self.clone(), peer, request, read_round, generation);
                self.spawn(task);
            }
            Outgoing::Votes {
                peers,
                request,
                campaign,
            } => {
                let shared = self.clone();
                self.spawn(async move {
                    // A real vote request vouches for this node's vote for itself.
                    if !request.pre_vote && shared.wait_durable(submitted_seq).await.is_err() {
                        return;
                    }
                    for peer in peers {
                        let task = election::request_vote_from(
                            shared.clone(),
                            peer,
                            request.clone(),
                            campaign,
                        );
                        shared.spawn(task);
                    }
                });
            }
            Outgoing::Snapshot {
                peer,
                generation,
                term,
                meta,
                membership,
                data,
            } => {
                let task = snapshot::send_snapshot(
                    self.clone(),
                    peer,
                    generation,
                    term,
                    meta,
                    membership,
                    data,
                );
                self.spawn(task);
            }
            Outgoing::TimeoutNow { peer, request } => {
                self.spawn(transfer::send_timeout_now(self.clone(), peer, request));
            }
        }
    }

    /// Runs `task` as part of this node: it stops at shutdown, and shutdown waits for it.
    pub(crate) fn spawn(self: &Arc<Self>, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn_on(
            async move {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {}
                    _ = task => {}
                }
            },
            &self.runtime,
        );
    }

    /// Waits until storage has made write `seq` durable. A storage failure stops the node.
    pub(crate) async fn wait_durable(&self, seq: u64) -> Result<(), RaftError> {
        if seq == 0 || self.storage.durable_now() >= seq {
            return Ok(());
        }
        match self.storage.wait_durable(seq).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.fail(&error);
                Err(RaftError::Storage(error))
            }
        }
    }

    /// Stops the node after a failure it cannot continue from (fail-stop: a node whose disk
    /// lies must not keep voting or acknowledging).
    pub(crate) fn fail(&self, error: &StorageError) {
        let mut s = self.lock();
        if !s.shutdown {
            if !matches!(error, StorageError::Closed) {
                tracing::error!(node = self.id, %error, "storage failed; stopping this node");
                s.fatal = Some(error.to_string());
            }
            s.shutdown = true;
            s.fail_pending_reads();
        }
        self.stopped.store(true, Ordering::Release);
        drop(s);
        self.cancel.cancel();
    }
}

impl Raft {
    /// Starts a node: resumes from whatever `storage` holds (term, vote, log, snapshot), spawns
    /// its tasks on the current tokio runtime and returns at once with a handle and the stream of
    /// committed entries.
    ///
    /// `members` lists the voters a new cluster starts with, this node included; give every
    /// member the same list. Once storage holds a configuration of its own (from a membership
    /// change, or a snapshot), that configuration is the one in force and `members` is ignored.
    /// A node that is to join a running cluster starts with no members: it never campaigns, and
    /// waits for the leader to add it ([`Raft::add_learner`]) and send it the log. Must be called
    /// within a tokio runtime.
    pub fn new(
        id: NodeId,
        members: Vec<NodeId>,
        config: Config,
        storage: Arc<dyn Storage>,
        transport: Arc<dyn Transport>,
    ) -> Result<(Raft, ApplyStream), RaftError> {
        config.validate()?;
        let voters: BTreeSet<NodeId> = members.into_iter().collect();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            RaftError::Config("Raft::new must be called within a tokio runtime".into())
        })?;
        let recovered = storage.recover()?;
        let stored_membership = recovered
            .snapshot
            .as_ref()
            .is_some_and(|s| s.membership.is_some())
            || recovered
                .entries
                .iter()
                .any(|e| matches!(e.payload, Payload::Config(_)));
        if !stored_membership && !voters.is_empty() && !voters.contains(&id) {
            return Err(RaftError::Config(format!(
                "node {id} is not among the members {voters:?}"
            )));
        }
        let seed = config.rng_seed.unwrap_or_else(rand::random);
        let bootstrap = Membership::with_voters(voters);
        let state = State::new(id, bootstrap, &config, recovered, seed, Instant::now());
        let (leadership, _) = watch::channel(Leadership {
            term: state.current_term,
            leader_id: None,
            role: Role::Follower,
        });
        let (membership, _) = watch::channel(MembershipStatus {
            membership: state.configs.current().clone(),
            index: state.configs.current_index(),
            committed: state.configs.current_index() <= state.commit_index,
        });
        let (apply_tx, apply_stream) = apply::channel(config.apply_buffer_batches);
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            membership,
            id,
            config,
            state: Mutex::new(state),
            storage,
            transport,
            apply_wake: Notify::new(),
            persist_wake: Notify::new(),
            leadership,
            stopped: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            runtime,
        });
        // Tell the transport who the members are (the first critical section publishes them).
        drop(shared.lock());
        shared.spawn(election::run_election_timer(shared.clone()));
        shared.spawn(replication::run_heartbeats(shared.clone()));
        shared.spawn(apply::run_applier(shared.clone(), apply_tx));
        shared.spawn(persist::run_persist_watcher(shared.clone()));
        tracing::debug!(node = id, "started");
        Ok((Raft { shared }, apply_stream))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// A handle that does not keep the node alive.
    pub fn downgrade(&self) -> WeakRaft {
        WeakRaft {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Appends `command` to the log if this node is the leader, and starts replicating it.
    /// Returns at once: it never waits for the entry to commit, for the network or for the disk.
    /// The entry is committed once the apply stream delivers it at the returned index with the
    /// returned term.
    pub fn propose(&self, command: Bytes) -> Result<Proposed, ProposeError> {
        let shared = &self.shared;
        let max = shared.config.max_append_bytes;
        if command.len() + 13 > max {
            return Err(ProposeError::TooLarge {
                size: command.len(),
                max: max - 13,
            });
        }
        // A leader whose own log cannot be written takes nothing new: the entries would pile up
        // in memory, and no client should wait on a disk that may stay full for hours.
        if let Some(reason) = shared.storage.unavailable() {
            return Err(ProposeError::StorageUnavailable { reason });
        }
        // The leader may write its own copy after sending it (Raft thesis 10.2.1): the entry
        // stays staged for the next critical section or the persistence watcher to submit,
        // together with those of other proposals.
        let mut s = shared.lock_deferring();
        replication::propose(&mut s, &shared.config, Payload::Command(command))
    }

    /// Confirms this node still leads and returns the index a linearizable read must wait for:
    /// once the state machine has applied through it, reading local state is linearizable
    /// (ReadIndex, Raft thesis 6.4). Costs one round of heartbeats, shared by all reads that
    /// arrive while it is in flight; writes nothing to the log.
    pub async fn read_index(&self) -> Result<u64, ReadIndexError> {
        let receiver = replication::start_read(&mut self.shared.lock(), &self.shared.config)?;
        receiver.await.unwrap_or(Err(ReadIndexError::Shutdown))
    }

    /// Adds `id` as a learner: it receives the log and snapshots but does not vote, so the
    /// cluster's quorums are unchanged while it catches up. `info` is what the service attaches
    /// to the member in the configuration (keel's server puts its addresses there; every member
    /// learns it with the configuration). Completes once the configuration is committed.
    ///
    /// Membership changes are made on the leader, one at a time; see the `raft::membership`
    /// module docs for the rules, and [`MembershipError`] for every refusal.
    pub async fn add_learner(
        &self,
        id: NodeId,
        info: Bytes,
    ) -> Result<Membership, MembershipError> {
        self.change(Change::AddLearner { id, info }).await
    }

    /// Makes learner `id` a voter, through a joint configuration. Refused with
    /// [`MembershipError::NotCaughtUp`] while its log lags more than
    /// [`Config::max_promotion_lag`] entries behind the leader's. Completes once the final
    /// configuration is committed.
    pub async fn promote(&self, id: NodeId) -> Result<Membership, MembershipError> {
        self.change(Change::Promote(id)).await
    }

    /// Removes member `id` (a voter through a joint configuration). Removing the leader itself
    /// works: it leads until the change commits, then hands leadership over and steps down.
    pub async fn remove(&self, id: NodeId) -> Result<Membership, MembershipError> {
        self.change(Change::Remove(id)).await
    }

    /// Changes the configuration to `voters` and `learners` in one change (through a joint
    /// configuration if the voters change). New voters must be learners that have caught up;
    /// `info` attaches (or replaces) what the service keeps for members. Completes once the final
    /// configuration is committed.
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        info: BTreeMap<NodeId, Bytes>,
    ) -> Result<Membership, MembershipError> {
        self.change(Change::Set {
            voters,
            learners,
            info,
        })
        .await
    }

    /// Proposes a change, then waits until the configuration it leads to is committed and not
    /// joint, or this node stops leading.
    async fn change(&self, change: Change) -> Result<Membership, MembershipError> {
        let mut membership = self.shared.membership.subscribe();
        let mut leadership = self.shared.leadership.subscribe();
        let (index, term) = {
            let mut s = self.shared.lock();
            let index =
                membership::propose_change(&mut s, &self.shared.config, Instant::now(), change)?;
            (index, s.current_term)
        };
        loop {
            {
                let now = membership.borrow_and_update();
                if now.committed && !now.membership.is_joint() && now.index >= index {
                    return Ok(now.membership.clone());
                }
            }
            {
                let l = leadership.borrow_and_update();
                // A leader never loses its own entries: while it leads in the same term, the
                // configurations after `index` are the change's own.
                if l.role != Role::Leader || l.term != term {
                    return Err(if self.is_running() {
                        MembershipError::LeadershipLost
                    } else {
                        MembershipError::Shutdown
                    });
                }
            }
            tokio::select! {
                changed = membership.changed() => if changed.is_err() { return Err(MembershipError::Shutdown) },
                changed = leadership.changed() => if changed.is_err() { return Err(MembershipError::Shutdown) },
                _ = self.shared.cancel.cancelled() => return Err(MembershipError::Shutdown),
            }
        }
    }

    /// Hands leadership to voter `to`, or with `None` to the most up-to-date other voter (Raft
    /// thesis, section 3.10): this leader stops taking proposals, brings the target up to date
    /// and tells it to campaign at once. Completes once this node has stepped down and heard
    /// from the new leader, with its id (`None` if none was heard from within two election
    /// timeouts); fails with [`TransferError::Abandoned`] if the target has not taken over
    /// within an election timeout, after which this node leads on.
    ///
    /// A service that stops a leader (for maintenance, a rolling restart) calls this first, so
    /// that the cluster does not wait an election timeout for a new leader.
    pub async fn transfer_leadership(
        &self,
        to: Option<NodeId>,
    ) -> Result<Option<NodeId>, TransferError> {
        let mut leadership = self.shared.leadership.subscribe();
        let target = {
            let mut s = self.shared.lock();
            transfer::start(&mut s, &self.shared.config, Instant::now(), to, false)?
        };
        // The transfer is abandoned an election timeout after it started: wait a little longer.
        let deadline = Instant::now() + self.shared.config.election_timeout_max * 2;
        let mut stepped_down = false;
        loop {
            {
                let l = *leadership.borrow_and_update();
                if l.role != Role::Leader {
                    // Deposed; the new leader is known once its first AppendEntries arrives,
                    // unless this node was removed (the new leader sends it nothing).
                    let removed = !self.shared.lock().configs.current().contains(self.id());
                    if l.leader_id.is_some() || removed || Instant::now() >= deadline {
                        return Ok(l.leader_id);
                    }
                    stepped_down = true;
                } else if stepped_down {
                    // The target did not win, and this node was elected again.
                    return Err(TransferError::Abandoned(target));
                }
            }
            if !stepped_down {
                let s = self.shared.lock();
                if s.shutdown {
                    return Err(TransferError::Shutdown);
                }
                if s.transfer.is_none() && s.role == Role::Leader {
                    return Err(TransferError::Abandoned(target));
                }
            }
            let step = tokio::time::sleep(self.shared.config.tick * 5);
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() { return Err(TransferError::Shutdown) },
                _ = self.shared.cancel.cancelled() => return Err(TransferError::Shutdown),
                _ = step => {}
            }
            if Instant::now() >= deadline {
                let l = *leadership.borrow();
                return match l.role {
                    Role::Leader => Err(TransferError::Abandoned(target)),
                    _ => Ok(l.leader_id),
                };
            }
        }
    }

    /// Subscribes to the configuration in force: it changes when a configuration entry is
    /// appended (or truncated, or arrives in a snapshot), and when it commits.
    pub fn membership(&self) -> watch::Receiver<MembershipStatus> {
        self.shared.membership.subscribe()
    }

    /// Tells Raft that the service has a snapshot covering everything through `index` (which it
    /// has applied). Raft stores it durably and discards the log through `index`. An index at or
    /// below the current snapshot is ignored.
    ///
    /// Fails if `index` is past the last entry the apply stream delivered, or after shutdown.
    pub fn snapshot(&self, index: u64, data: Bytes) -> Result<(), RaftError> {
        snapshot::take_snapshot(&self.shared, index, data)
    }

    /// The node's current view of itself.
    pub fn status(&self) -> Status {
        let s = self.shared.lock();
        let now = Instant::now();
        Status {
            id: self.shared.id,
            role: s.role,
            current_term: s.current_term,
            leader_id: s.leader_id,
            commit_index: s.commit_index,
            last_applied: s.last_applied,
            first_log_index: s.log.first_index(),
            last_log_index: s.log.last_index(),
            snapshot_index: s.log.snapshot_index(),
            log_bytes: s.log.bytes() as u64,
            followers: s
                .progress
                .iter()
                .map(|(&id, p)| FollowerStatus {
                    id,
                    match_index: p.match_index(),
                    next_index: p.next_index(),
                    last_contact_ms: now.duration_since(p.last_ack()).as_millis() as u64,
                })
                .collect(),
            membership: MembershipStatus {
                membership: s.configs.current().clone(),
                index: s.configs.current_index(),
                committed: s.configs.current_index() <= s.commit_index,
            },
            transfer_to: s.transfer.as_ref().map(|t| t.target),
            fatal_error: s.fatal.clone(),
            storage_unavailable: self.shared.storage.unavailable(),
            disk_bytes: self.shared.storage.disk_bytes(),
        }
    }

    /// Encoded bytes of the log entries after the snapshot: what a service compares with its
    /// log-size limit to decide when to snapshot. Cheaper than [`Raft::status`].
    pub fn log_bytes(&self) -> u64 {
        self.shared.lock().log.bytes() as u64
    }

    /// Subscribes to changes of term, leader and role.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.shared.leadership.subscribe()
    }

    /// The term and command of the entry at `index`, if the log still holds it. Meant for
    /// invariant checks in tests and debugging tools.
    pub fn log_entry(&self, index: u64) -> Option<Entry> {
        self.shared.lock().log.entry(index).cloned()
    }

    /// Index and term of the last log entry, and the snapshot's last index.
    pub fn log_bounds(&self) -> (u64, u64, u64) {
        let s = self.shared.lock();
        (
            s.log.last_index(),
            s.log.last_term(),
            s.log.snapshot_index(),
        )
    }

    /// Stops the node. When this returns, none of its tasks runs, and it sends, replies,
    /// applies and writes nothing more.
    pub async fn shutdown(&self) {
        {
            let mut s = self.shared.lock();
            s.shutdown = true;
            s.fail_pending_reads();
        }
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// Whether the node is still running.
    pub fn is_running(&self) -> bool {
        !self.shared.stopped.load(Ordering::Acquire)
    }

    /// Handles an RPC from a peer: the entry point for a transport's server side.
    ///
    /// Cancel-safe: a transport may drop the future at any point (the connection closed, the
    /// server stopped). Every state change happens at once under the lock; what remains is
    /// waiting for durability before the reply, and a dropped reply is a lost message, which
    /// Raft tolerates.
    pub async fn handle(&self, request: Request) -> Result<Response, RaftError> {
        Ok(match request {
            Request::Vote(r) => Response::Vote(self.request_vote(r).await?),
            Request::AppendEntries(r) => Response::AppendEntries(self.append_entries(r).await?),
            Request::InstallSnapshot(r) => {
                Response::InstallSnapshot(self.install_snapshot(r).await?)
            }
            Request::TimeoutNow(r) => Response::TimeoutNow(self.timeout_now(r).await?),
        })
    }

    /// TimeoutNow handler (leadership transfer): the leader asks this node to campaign now.
    pub async fn timeout_now(
        &self,
        request: crate::message::TimeoutNowRequest,
    ) -> Result<crate::message::TimeoutNowResponse, RaftError> {
        let (response, seq) = {
            let mut s = self.shared.lock();
            if s.shutdown {
                return Err(RaftError::Shutdown);
            }
            let response =
                transfer::on_timeout_now(&mut s, &self.shared.config, Instant::now(), &request);
            (response, s.sync_point())
        };
        reply_when_durable(&self.shared, seq, response).await
    }

    /// RequestVote (and pre-vote) handler.
    pub async fn request_vote(
        &self,
        request: crate::message::VoteRequest,
    ) -> Result<crate::message::VoteResponse, RaftError> {
        election::handle_vote(&self.shared, request).await
    }

    /// AppendEntries handler.
    pub async fn append_entries(
        &self,
        request: crate::message::AppendEntriesRequest,
    ) -> Result<crate::message::AppendEntriesResponse, RaftError> {
        replication::handle_append(&self.shared, request).await
    }

    /// InstallSnapshot handler (one chunk).
    pub async fn install_snapshot(
        &self,
        request: crate::message::InstallSnapshotRequest,
    ) -> Result<crate::message::InstallSnapshotResponse, RaftError> {
        snapshot::handle_install(&self.shared, request).await
    }
}

impl std::fmt::Debug for Raft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft").field("id", &self.shared.id).finish()
    }
}

/// Returns `response` once write `seq` (and so everything the response vouches for) is durable,
/// unless the node stopped meanwhile: a stopped node does not reply.
pub(crate) async fn reply_when_durable<T>(
    shared: &Shared,
    seq: u64,
    response: T,
) -> Result<T, RaftError> {
    shared.wait_durable(seq).await?;
    if shared.stopped.load(Ordering::Acquire) {
        return Err(RaftError::Shutdown);
    }
    Ok(response)
}
