//! The values Raft stores and replicates: entries, hard state, snapshots and cluster
//! configurations.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Identifies one member of a cluster. Ids are chosen by the operator and never reused.
pub type NodeId = u64;

/// One slot of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub index: u64,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// What the entry carries.
    pub payload: Payload,
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The empty entry a new leader appends at the start of its term (Raft paper, section 8),
    /// so that it can commit everything earlier terms left behind.
    Noop,
    /// A command proposed by the service.
    Command(Bytes),
    /// A new cluster configuration (Raft paper, section 6). It takes effect on a node as soon
    /// as the node appends it; the apply stream delivers it in its place like any entry.
    Config(Membership),
}

impl Entry {
    /// The command bytes, or an empty slice for a no-op or a configuration.
    #[inline]
    pub fn command(&self) -> &[u8] {
        match &self.payload {
            Payload::Noop | Payload::Config(_) => &[],
            Payload::Command(bytes) => bytes,
        }
    }

    /// Bytes this entry takes in the wire encoding; used for batch limits and size accounting.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        // term (8) + kind (1) + length (4) + data; the index is implied by the position.
        13 + match &self.payload {
            Payload::Noop => 0,
            Payload::Command(bytes) => bytes.len(),
            Payload::Config(membership) => membership.encoded_len(),
        }
    }
}

/// The part of Raft's state that must survive a crash besides the log (Figure 2, "Persistent
/// state on all servers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Latest term this server has seen.
    pub current_term: u64,
    /// Candidate that received this server's vote in `current_term`.
    pub voted_for: Option<NodeId>,
}

/// Which prefix of the log a snapshot replaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot covers.
    pub last_included_index: u64,
    /// Term of that entry.
    pub last_included_term: u64,
}

/// A snapshot of the service's state machine, covering the log through
/// `meta.last_included_index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The prefix of the log the snapshot replaces.
    pub meta: SnapshotMeta,
    /// The cluster configuration in force at `meta.last_included_index` (section 7: a snapshot
    /// carries the latest configuration it covers). `None` only in snapshots stored by builds
    /// before membership changes, whose cluster is the one the node was started with.
    pub membership: Option<Membership>,
    /// The service's serialized state; opaque to Raft.
    pub data: Bytes,
}

/// A member's part in a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberRole {
    /// Votes in elections and counts toward commits (in a joint configuration, in the old
    /// configuration, the new one, or both).
    Voter,
    /// Receives the log and snapshots, but never votes, counts toward a commit or campaigns.
    Learner,
}

/// A cluster configuration: who votes, who only learns, and what the service attached to each
/// member (keel's server puts its addresses there). Cheap to clone.
///
/// During a membership change the configuration is *joint* (C_old,new in section 6 of the Raft
/// paper): [`voters`](Membership::voters) are the new voters and
/// [`outgoing_voters`](Membership::outgoing_voters) the old ones, and elections and commits need
/// a majority of each. A learner may also be an outgoing voter (a voter being demoted).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Membership(Arc<MembershipInner>);

#[derive(Clone, Default, PartialEq, Eq)]
struct MembershipInner {
    voters: BTreeSet<NodeId>,
    /// Non-empty exactly in a joint configuration.
    outgoing: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    info: BTreeMap<NodeId, Bytes>,
}

/// Why a set of members does not make a configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMembership {
    /// A member was listed both as a voter and as a learner.
    #[error("node {0} cannot be both a voter and a learner")]
    VoterAndLearner(NodeId),
    /// Information was attached to a node that is not a member.
    #[error("node {0} has member information but is not a member")]
    InfoForNonMember(NodeId),
}

impl Membership {
    /// A plain (not joint) configuration. `info` attaches the service's data to members.
    pub fn new(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
        info: BTreeMap<NodeId, Bytes>,
    ) -> Result<Membership, InvalidMembership> {
        Membership::joint(voters, std::iter::empty(), learners, info)
    }

    /// A configuration with `voters` and, if `outgoing` is not empty, the outgoing voters of a
    /// joint configuration.
    pub fn joint(
        voters: impl IntoIterator<Item = NodeId>,
        outgoing: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
        info: BTreeMap<NodeId, Bytes>,
    ) -> Result<Membership, InvalidMembership> {
        let inner = MembershipInner {
            voters: voters.into_iter().collect(),
            outgoing: outgoing.into_iter().collect(),
            learners: learners.into_iter().collect(),
            info,
        };
        if let Some(&id) = inner.voters.intersection(&inner.learners).next() {
            return Err(InvalidMembership::VoterAndLearner(id));
        }
        let membership = Membership(Arc::new(inner));
        if let Some(&id) = membership
            .0
            .info
            .keys()
            .find(|&&id| !membership.contains(id))
        {
            return Err(InvalidMembership::InfoForNonMember(id));
        }
        Ok(membership)
    }

    /// A configuration of `voters` alone, without learners or information: how a cluster
    /// starts.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership::new(voters, std::iter::empty(), BTreeMap::new())
            .expect("voters alone are a valid configuration")
    }

    /// The voters (of the new configuration, when joint).
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.0.voters
    }

    /// The voters of the old configuration, when joint.
    pub fn outgoing_voters(&self) -> Option<&BTreeSet<NodeId>> {
        (!self.0.outgoing.is_empty()).then_some(&self.0.outgoing)
    }

    /// The learners.
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.0.learners
    }

    /// Whether this is the joint configuration of a membership change.
    pub fn is_joint(&self) -> bool {
        !self.0.outgoing.is_empty()
    }

    /// Whether `id` votes: in the new voters or, when joint, the old ones.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.0.voters.contains(&id) || self.0.outgoing.contains(&id)
    }

    /// Whether `id` is a member in any role.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.0.learners.contains(&id)
    }

    /// `id`'s role, if it is a member (a voter, if it votes in either half of a joint
    /// configuration).
    pub fn role(&self, id: NodeId) -> Option<MemberRole> {
        if self.is_voter(id) {
            Some(MemberRole::Voter)
        } else if self.0.learners.contains(&id) {
            Some(MemberRole::Learner)
        } else {
            None
        }
    }

    /// Every member, in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let inner = &self.0;
        let mut all = inner.voters.clone();
        all.extend(&inner.outgoing);
        all.extend(&inner.learners);
        all
    }

    /// What the service attached to member `id`, if anything.
    pub fn info(&self, id: NodeId) -> Option<&Bytes> {
        self.0.info.get(&id)
    }

    /// Everything the service attached, by member.
    pub fn all_info(&self) -> &BTreeMap<NodeId, Bytes> {
        &self.0.info
    }

    /// The voter sets whose majorities decide: one, or two when joint.
    pub(crate) fn voter_sets(&self) -> impl Iterator<Item = &BTreeSet<NodeId>> {
        std::iter::once(&self.0.voters).chain(self.outgoing_voters())
    }

    /// Bytes of [`crate::codec::encode_membership`]'s encoding.
    #[cold]
    pub fn encoded_len(&self) -> usize {
        let inner = &self.0;
        let ids = inner.voters.len() + inner.outgoing.len() + inner.learners.len();
        let info: usize = inner.info.values().map(|b| 12 + b.len()).sum();
        1 + 16 + 8 * ids + info
    }
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Membership {
    /// `voters [1, 2, 3]`, `voters [1, 2, 4] (joint with [1, 2, 3]), learners [5]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.0;
        write!(f, "voters {:?}", inner.voters)?;
        if self.is_joint() {
            write!(f, " (joint with {:?})", inner.outgoing)?;
        }
        if !inner.learners.is_empty() {
            write!(f, ", learners {:?}", inner.learners)?;
        }
        Ok(())
    }
}
