//! Membership changes: configurations as log entries, joint consensus and learners (Raft paper,
//! section 6; Raft thesis, chapter 4).
//!
//! # Configurations are log entries
//!
//! A configuration ([`Membership`]: voters, learners, and during a change the outgoing voters of
//! the joint configuration C_old,new) travels as an entry of its own ([`Payload::Config`]), each
//! one whole, never a delta. [`ConfigLog`] keeps the ones a node's log holds: the configuration
//! in force at the snapshot (or the one the node was started with), and every configuration
//! entry after it.
//!
//! **A configuration takes effect on a node as soon as the node appends it**, committed or not
//! (the thesis, section 4.1), rather than once it is applied (as in etcd's raft). Every rule
//! that counts votes then reads the configuration from the log alone, the same way on every
//! node and at every moment: a candidate asks the voters of its latest configuration, a leader
//! commits by a majority of (both halves of) its latest configuration, and nothing depends on
//! how far a node's applier has got. The price is that a configuration entry may be removed
//! again: a new leader can truncate an uncommitted one from a follower's log. [`ConfigLog`]
//! then falls back to the configuration before it ([`ConfigLog::truncated_after`]), which is
//! exactly the configuration that follower used before it appended the truncated entry.
//!
//! # Joint consensus
//!
//! Any change of the voters, one voter or several at once, goes through the joint configuration:
//! the leader appends C_old,new (the new voters, with the old ones as
//! [`Membership::outgoing_voters`]); from then on every election and every commit needs a
//! majority of C_old *and* of C_new ([`super::quorum`]). Once C_old,new commits, the leader
//! appends C_new by itself ([`on_commit`]); a leader elected while the configuration is joint
//! does the same once it has committed an entry of its own term, so a change in C_old,new is
//! always finished by whoever leads next, and one that never reached a majority is truncated
//! and abandoned: never both. Changing learners alone does not change any quorum and is one
//! step.
//!
//! At most one change is in flight: a change is refused while the latest configuration is joint
//! or not yet committed. And a leader proposes a change only once it has committed an entry of
//! its own term (its no-op): without that, the single-server change bug Ongaro reported on
//! raft-dev in 2015 lets two leaders of different terms each commit a configuration that the
//! other never saw, with quorums that do not overlap.
//!
//! # Learners
//!
//! A learner receives entries and snapshots like a voter, but its acknowledgements count toward
//! no commit, it never campaigns, and candidates do not ask it for votes. A learner becomes a
//! voter only when its log is within [`Config::max_promotion_lag`] entries of the leader's; a
//! promotion before that is refused with the lag. (A node that is a voter in a configuration
//! it has not received yet may be asked for its vote and gives it by the usual rules: that
//! vote counts only for a candidate whose configuration makes the node a voter, and refusing it
//! could leave a cluster that just promoted the node without a majority.)
//!
//! # Removing the leader
//!
//! A leader can remove itself: it keeps leading through C_old,new and C_new, counting itself only
//! where it is a voter, and once C_new commits it hands leadership to the most up-to-date voter
//! of C_new (section 3.10, see `transfer.rs`) and steps down, to a node that is no voter and
//! never campaigns again. A removed node cannot disrupt the others: it stops campaigning as soon
//! as it appends a configuration without itself, and one that never learned of its removal (it
//! was down while it was removed) has an older log and meets the others' pre-vote and leader
//! lease. With pre-vote and check-quorum both turned off, only the transport keeps it out
//! (keel-net refuses removed nodes' connections), so keep at least one of them on.
//!
//! # Snapshots and restarts
//!
//! A snapshot carries the configuration in force at its last index, so a node that catches up
//! from a snapshot, or restarts from one, knows its cluster; the configurations in the log after
//! it are found again when the node recovers its log.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use tokio::time::Instant;

use super::progress::Progress;
use super::replication::{self, Trigger};
use super::state::{Role, State};
use super::transfer;
use crate::config::Config;
use crate::error::{MembershipError, ProposeError};
use crate::types::{Entry, Membership, NodeId, Payload};

/// The configurations a node's log holds. The latest is the one in force.
#[derive(Debug)]
pub(crate) struct ConfigLog {
    /// In force at `base_index`: the snapshot's configuration, or the one the node started with
    /// (at index 0).
    base: Membership,
    base_index: u64,
    /// Configuration entries after `base_index`, in log order.
    entries: VecDeque<(u64, Membership)>,
    /// Bumped at every change of the configuration in force, so that watchers see each one.
    generation: u64,
}

impl ConfigLog {
    /// The configurations of a log that starts after `base_index`, where `base` is in force.
    pub(crate) fn new<'a>(
        base: Membership,
        base_index: u64,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> ConfigLog {
        let mut log = ConfigLog {
            base,
            base_index,
            entries: VecDeque::new(),
            generation: 0,
        };
        for entry in entries {
            if let Payload::Config(membership) = &entry.payload {
                log.appended(entry.index, membership.clone());
            }
        }
        log
    }

    /// The configuration in force: the latest in the log.
    #[inline]
    pub(crate) fn current(&self) -> &Membership {
        self.entries.back().map_or(&self.base, |(_, m)| m)
    }

    /// The log index of the configuration in force (0: the one the node started with).
    #[inline]
    pub(crate) fn current_index(&self) -> u64 {
        self.entries.back().map_or(self.base_index, |&(i, _)| i)
    }

    /// The configuration in force at `index`: the latest at or before it.
    pub(crate) fn at(&self, index: u64) -> &Membership {
        assert!(
            index >= self.base_index,
            "configuration at {index} asked for, before the snapshot at {}",
            self.base_index
        );
        self.entries
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base, |(_, m)| m)
    }

    /// Counts changes of the configuration in force.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// A configuration entry was appended at `index`.
    pub(crate) fn appended(&mut self, index: u64, membership: Membership) {
        assert!(
            index > self.current_index(),
            "configuration entries are appended in log order"
        );
        self.entries.push_back((index, membership));
        self.generation += 1;
    }

    /// The log lost every entry after `index`: configurations there no longer count, and the
    /// one before them is in force again.
    pub(crate) fn truncated_after(&mut self, index: u64) {
        while self.entries.back().is_some_and(|&(i, _)| i > index) {
            self.entries.pop_back();
            self.generation += 1;
        }
    }

    /// A snapshot now covers the log through `index`, and `membership` (from the snapshot, if
    /// it says) was in force there. The configuration in force does not change if the log kept
    /// its entries past `index`.
    pub(crate) fn compacted_through(&mut self, index: u64, membership: Option<Membership>) {
        if index <= self.base_index {
            return;
        }
        let before = self.current().clone();
        let at = membership.unwrap_or_else(|| self.at(index).clone());
        while self.entries.front().is_some_and(|&(i, _)| i <= index) {
            self.entries.pop_front();
        }
        self.base = at;
        self.base_index = index;
        if *self.current() != before {
            self.generation += 1;
        }
    }
}

/// A membership change an operator asks for.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// A new learner, with what the service attaches to it.
    AddLearner { id: NodeId, info: Bytes },
    /// A learner becomes a voter.
    Promote(NodeId),
    /// A member leaves.
    Remove(NodeId),
    /// The voters and learners become these; `info` attaches (or replaces) the service's data
    /// for members.
    Set {
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        info: BTreeMap<NodeId, Bytes>,
    },
}

/// Proposes `change` on the leader. Returns the index of the configuration entry it appended
/// (the joint configuration, for a change of voters; its final configuration follows by
/// itself), or of the configuration in force if the change asks for what already is.
pub(crate) fn propose_change(
    s: &mut State,
    config: &Config,
    now: Instant,
    change: Change,
) -> Result<u64, MembershipError> {
    if s.shutdown {
        return Err(MembershipError::Shutdown);
    }
    if s.role != Role::Leader {
        return Err(MembershipError::NotLeader {
            leader_hint: s.leader_id,
        });
    }
    if let Some(t) = &s.transfer {
        return Err(MembershipError::Busy(format!(
            "it is handing leadership over to node {}",
            t.target
        )));
    }
    if s.commit_index < s.term_start_index {
        return Err(MembershipError::NotReady);
    }
    let current = s.configs.current().clone();
    if current.is_joint() || s.configs.current_index() > s.commit_index {
        return Err(MembershipError::ChangeInProgress(current.to_string()));
    }
    let Target {
        voters,
        learners,
        info,
    } = target(&current, change)?;
    if voters.is_empty() {
        return Err(MembershipError::NoVoters);
    }
    for &id in &voters {
        if current.voters().contains(&id) {
            continue;
        }
        if !current.learners().contains(&id) {
            return Err(MembershipError::Invalid(format!(
                "node {id} must join as a learner and catch up before it can vote"
            )));
        }
        let lag = promotion_lag(s, id);
        if lag > config.max_promotion_lag {
            return Err(MembershipError::NotCaughtUp {
                id,
                lag,
                max_lag: config.max_promotion_lag,
            });
        }
    }
    let unchanged = voters == *current.voters()
        && learners == *current.learners()
        && info == *current.all_info();
    if unchanged {
        return Ok(s.configs.current_index());
    }
    let next = if voters == *current.voters() {
        Membership::new(voters, learners, info)
    } else {
        Membership::joint(voters, current.voters().iter().copied(), learners, info)
    }
    .map_err(|e| MembershipError::Invalid(e.to_string()))?;
    let index = append_config(s, config, now, next).map_err(|e| match e {
        ProposeError::Overloaded { .. } => MembershipError::Busy(e.to_string()),
        ProposeError::NotLeader { leader_hint } => MembershipError::NotLeader { leader_hint },
        ProposeError::Shutdown => MembershipError::Shutdown,
        other => MembershipError::Busy(other.to_string()),
    })?;
    tracing::info!(
        node = s.id,
        index,
        "proposed configuration {}",
        s.configs.current()
    );
    Ok(index)
}

/// The members a change asks for.
#[derive(Debug)]
struct Target {
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    info: BTreeMap<NodeId, Bytes>,
}

/// The voters, learners and information `change` asks for, from `current` (not joint).
fn target(current: &Membership, change: Change) -> Result<Target, MembershipError> {
    let mut voters = current.voters().clone();
    let mut learners = current.learners().clone();
    let mut info = current.all_info().clone();
    match change {
        Change::AddLearner { id, info: data } => {
            if current.contains(id) {
                return Err(MembershipError::AlreadyMember(id));
            }
            learners.insert(id);
            info.insert(id, data);
        }
        Change::Promote(id) => {
            if voters.contains(&id) {
                return Err(MembershipError::Invalid(format!(
                    "node {id} is a voter already"
                )));
            }
            if !learners.remove(&id) {
                return Err(MembershipError::UnknownMember(id));
            }
            voters.insert(id);
        }
        Change::Remove(id) => {
            if !voters.remove(&id) && !learners.remove(&id) {
                return Err(MembershipError::UnknownMember(id));
            }
        }
        Change::Set {
            voters: new_voters,
            learners: new_learners,
            info: updates,
        } => {
            if let Some(id) = new_voters.intersection(&new_learners).next() {
                return Err(MembershipError::Invalid(format!(
                    "node {id} cannot be both a voter and a learner"
                )));
            }
            voters = new_voters;
            learners = new_learners;
            info.extend(updates);
        }
    }
    // The outgoing voters of the joint configuration keep theirs until they leave.
    info.retain(|id, _| voters.contains(id) || learners.contains(id) || current.is_voter(*id));
    Ok(Target {
        voters,
        learners,
        info,
    })
}

/// How many entries of the leader's log learner `id` lacks.
pub(crate) fn promotion_lag(s: &State, id: NodeId) -> u64 {
    let matched = s.progress.get(&id).map_or(0, |p| p.match_index());
    s.log.last_index().saturating_sub(matched)
}

/// Appends a configuration entry on the leader, makes it the one in force, and starts sending
/// it. Bypasses the checks of a proposal that concern clients only (a leadership transfer).
fn append_config(
    s: &mut State,
    config: &Config,
    now: Instant,
    membership: Membership,
) -> Result<u64, ProposeError> {
    let proposed = replication::append_entry(s, config, Payload::Config(membership))?;
    sync_progress(s, now);
    // New members hear from the leader right away, not a heartbeat interval later.
    replication::replicate_to_all(s, config, Trigger::Heartbeat);
    Ok(proposed.index)
}

/// What the leader does once its commit index moved past `previous`, if that committed its
/// configuration (or, for a joint one inherited from an earlier term, its own first entry):
/// leave a committed joint configuration, stop replicating to members the committed
/// configuration removed, and hand leadership over if that configuration no longer makes it a
/// voter. Runs on every commit, so it looks at nothing more unless one of those happened (or
/// a committed joint configuration is still to be left: leaving it may have had to wait).
pub(crate) fn on_commit(s: &mut State, config: &Config, now: Instant, previous: u64) {
    let index = s.configs.current_index();
    let committed_now = previous < index && index <= s.commit_index;
    let joint_to_leave = s.configs.current().is_joint()
        && index <= s.commit_index
        && s.commit_index >= s.term_start_index;
    if s.role != Role::Leader || !(committed_now || joint_to_leave) {
        return;
    }
    let current = s.configs.current().clone();
    if current.is_joint() {
        if s.commit_index < s.term_start_index {
            // A joint configuration inherited from an earlier term: leave it once this
            // leader has committed an entry of its own (see the module docs).
            return;
        }
        let info = current
            .all_info()
            .iter()
            .filter(|(id, _)| current.voters().contains(id) || current.learners().contains(id))
            .map(|(&id, data)| (id, data.clone()))
            .collect();
        let leave = Membership::new(
            current.voters().iter().copied(),
            current.learners().iter().copied(),
            info,
        )
        .expect("the new half of a valid joint configuration is valid");
        match append_config(s, config, now, leave) {
            Ok(index) => tracing::info!(
                node = s.id,
                index,
                "leaving the joint configuration for {}",
                s.configs.current()
            ),
            // Overloaded: the next commit tries again.
            Err(error) => {
                tracing::debug!(node = s.id, %error, "cannot leave the joint configuration yet")
            }
        }
        return;
    }
    sync_progress(s, now);
    if current.is_voter(s.id) {
        return;
    }
    if let Some(t) = &mut s.transfer {
        // A transfer already running (an operator's, or shutdown's) now ends in stepping
        // down whether or not its target takes over: this commit happens only once.
        t.step_down = true;
        return;
    }
    tracing::info!(
        node = s.id,
        "removed from the voters by {current}; handing leadership over"
    );
    if transfer::start(s, config, now, None, true).is_err() {
        // No voter to hand over to, ever: step down.
        let term = s.current_term;
        s.become_follower(config, now, term, None);
    }
}

/// Keeps the leader's replication progress to the members it must send to: those of the
/// configuration in force, and those of the last committed one. A member being removed gets
/// the entries that remove it while they are uncommitted, and learns it is out if it is up;
/// once its removal commits it gets nothing more (a member that was down then never learns it,
/// see the module docs). A member added back later gets a new progress (a new generation).
pub(crate) fn sync_progress(s: &mut State, now: Instant) {
    let mut wanted = s.configs.current().members();
    wanted.extend(
        s.configs
            .at(s.commit_index.max(s.log.snapshot_index()))
            .members(),
    );
    wanted.remove(&s.id);
    let next_index = s.log.last_index() + 1;
    s.progress.retain(|id, _| wanted.contains(id));
    for id in wanted {
        if !s.progress.contains_key(&id) {
            s.progress_generations += 1;
            let progress = Progress::new(next_index, now, s.progress_generations);
            s.progress.insert(id, progress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, membership: Option<Membership>) -> Entry {
        Entry {
            index,
            term: 1,
            payload: membership.map_or(Payload::Noop, Payload::Config),
        }
    }

    fn voters(ids: &[NodeId]) -> Membership {
        Membership::with_voters(ids.iter().copied())
    }

    #[test]
    fn the_latest_configuration_is_in_force_and_truncation_reverts_it() {
        let log = [
            entry(1, None),
            entry(2, Some(voters(&[1, 2, 3, 4]))),
            entry(3, None),
            entry(4, Some(voters(&[1, 2, 4]))),
        ];
        let mut configs = ConfigLog::new(voters(&[1, 2, 3]), 0, &log);
        assert_eq!(configs.current(), &voters(&[1, 2, 4]));
        assert_eq!(configs.current_index(), 4);
        assert_eq!(configs.at(1), &voters(&[1, 2, 3]));
        assert_eq!(configs.at(3), &voters(&[1, 2, 3, 4]));
        let generation = configs.generation();
        configs.truncated_after(3);
        assert_eq!(configs.current(), &voters(&[1, 2, 3, 4]));
        assert!(configs.generation() > generation);
        configs.truncated_after(1);
        assert_eq!(
            (configs.current(), configs.current_index()),
            (&voters(&[1, 2, 3]), 0)
        );
    }

    #[test]
    fn compaction_keeps_the_configuration_in_force_at_the_snapshot() {
        let log = [
            entry(2, Some(voters(&[1, 2]))),
            entry(5, Some(voters(&[1, 2, 3]))),
        ];
        let mut configs = ConfigLog::new(voters(&[1]), 0, &log);
        configs.compacted_through(3, None);
        assert_eq!(configs.at(3), &voters(&[1, 2]));
        assert_eq!(configs.current(), &voters(&[1, 2, 3]));
        // A snapshot from the leader that replaced the whole log brings its own.
        configs.compacted_through(9, Some(voters(&[4, 5, 6])));
        assert_eq!(
            (configs.current(), configs.current_index()),
            (&voters(&[4, 5, 6]), 9)
        );
    }

    fn plan(current: &Membership, change: Change) -> Result<Membership, MembershipError> {
        let Target {
            voters: v,
            learners: l,
            info: i,
        } = target(current, change)?;
        if v == *current.voters() {
            Ok(Membership::new(v, l, i).unwrap())
        } else {
            Ok(Membership::joint(v, current.voters().iter().copied(), l, i).unwrap())
        }
    }

    #[test]
    fn changes_of_voters_go_through_a_joint_configuration_and_of_learners_do_not() {
        let three = voters(&[1, 2, 3]);
        let add = plan(
            &three,
            Change::AddLearner {
                id: 4,
                info: Bytes::from("addr"),
            },
        )
        .unwrap();
        assert!(!add.is_joint());
        assert_eq!(add.learners(), &BTreeSet::from([4]));
        assert_eq!(add.info(4), Some(&Bytes::from("addr")));

        let promote = plan(&add, Change::Promote(4)).unwrap();
        assert!(promote.is_joint());
        assert_eq!(promote.voters(), &BTreeSet::from([1, 2, 3, 4]));
        assert_eq!(promote.outgoing_voters(), Some(&BTreeSet::from([1, 2, 3])));
        assert!(promote.learners().is_empty());

        let remove = plan(&three, Change::Remove(1)).unwrap();
        assert_eq!(remove.voters(), &BTreeSet::from([2, 3]));
        assert!(
            remove.is_voter(1),
            "node 1 votes in the old half until the change ends"
        );
    }

    #[test]
    fn bad_changes_say_what_is_wrong() {
        let three = voters(&[1, 2, 3]);
        let add = |id| Change::AddLearner {
            id,
            info: Bytes::new(),
        };
        assert_eq!(plan(&three, add(2)), Err(MembershipError::AlreadyMember(2)));
        assert_eq!(
            plan(&three, Change::Remove(9)),
            Err(MembershipError::UnknownMember(9))
        );
        assert_eq!(
            plan(&three, Change::Promote(9)),
            Err(MembershipError::UnknownMember(9))
        );
        assert!(matches!(
            plan(&three, Change::Promote(2)),
            Err(MembershipError::Invalid(_))
        ));
        let both = Change::Set {
            voters: BTreeSet::from([1, 2]),
            learners: BTreeSet::from([2]),
            info: BTreeMap::new(),
        };
        assert!(matches!(
            plan(&three, both),
            Err(MembershipError::Invalid(_))
        ));
    }
}
