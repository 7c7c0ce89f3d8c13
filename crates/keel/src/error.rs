//! The errors keel's public API returns.

use std::sync::Arc;

use crate::types::NodeId;

/// Why a proposal was not appended to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader appends; try the hinted node, if any.
    #[error("this node is not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node last heard from in its current term.
        leader_hint: Option<NodeId>,
    },
    /// Too many entries are waiting to commit (`Config::max_uncommitted_entries`); retry once
    /// some commit.
    #[error("too many uncommitted entries ({uncommitted}); retry after earlier ones commit")]
    Overloaded {
        /// Entries appended but not yet committed.
        uncommitted: u64,
    },
    /// The command cannot fit in one AppendEntries (`Config::max_append_bytes`).
    #[error("command of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Size of the command.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The leader is handing leadership over (section 3.10) and takes no proposals meanwhile;
    /// retry at the new leader, or here once the transfer is abandoned.
    #[error("this node is handing leadership over to node {to}")]
    TransferringLeadership {
        /// The node taking over.
        to: NodeId,
    },
    /// This node's storage cannot make writes durable just now (`Storage::unavailable`: a
    /// full disk, say); retry once it can. Nothing is appended meanwhile.
    #[error("this node's storage is unavailable: {reason}")]
    StorageUnavailable {
        /// What the storage reports, e.g. the disk error it waits out.
        reason: String,
    },
    /// The node was shut down or stopped on a fatal error.
    #[error("this node is shut down")]
    Shutdown,
}

/// Why a membership change was refused or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader changes the membership; try the hinted node, if any.
    #[error("this node is not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node last heard from in its current term.
        leader_hint: Option<NodeId>,
    },
    /// Another change has not finished (its configuration is joint or not yet committed).
    #[error("another membership change is in progress ({0}); retry once it completes")]
    ChangeInProgress(String),
    /// A new leader must commit an entry of its own term before it changes the membership (the
    /// fix for the single-server change bug reported on raft-dev in 2015); this takes one round
    /// trip after an election.
    #[error("the leader has not yet committed an entry of its term; retry shortly")]
    NotReady,
    /// The id names no member.
    #[error("node {0} is not a member")]
    UnknownMember(NodeId),
    /// The id is already a member.
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    /// The change would leave the cluster without voters.
    #[error("the change would leave no voters")]
    NoVoters,
    /// The change is not one this API makes (see the message).
    #[error("{0}")]
    Invalid(String),
    /// A learner may become a voter only once its log is within
    /// `Config::max_promotion_lag` entries of the leader's.
    #[error(
        "node {id} is {lag} entries behind the leader (at most {max_lag} for a promotion); retry \
         once it has caught up"
    )]
    NotCaughtUp {
        /// The learner.
        id: NodeId,
        /// Entries it lacks of the leader's log.
        lag: u64,
        /// The most allowed.
        max_lag: u64,
    },
    /// The leader is busy (too many uncommitted entries, or a leadership transfer).
    #[error("the leader cannot take the change now: {0}")]
    Busy(String),
    /// This node stopped leading before the change committed: it may still complete under the
    /// next leader, or be abandoned; read the membership to find out.
    #[error("leadership was lost before the change committed; check the membership")]
    LeadershipLost,
    /// The node was shut down or stopped on a fatal error.
    #[error("this node is shut down")]
    Shutdown,
}

/// Why leadership could not be handed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader hands leadership over; try the hinted node, if any.
    #[error("this node is not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node last heard from in its current term.
        leader_hint: Option<NodeId>,
    },
    /// The target is not a voter of the configuration (or is this node itself).
    #[error("node {0} cannot take over: it is not another voting member")]
    InvalidTarget(NodeId),
    /// No other voter to hand over to.
    #[error("there is no other voter to hand leadership to")]
    NoTarget,
    /// The target did not win an election within an election timeout; this node leads on.
    #[error("node {0} did not take over within an election timeout; the leader resumed")]
    Abandoned(NodeId),
    /// The node was shut down or stopped on a fatal error.
    #[error("this node is shut down")]
    Shutdown,
}

/// Why a linearizable read could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadIndexError {
    /// Only the leader serves reads; try the hinted node, if any.
    #[error("this node is not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node last heard from in its current term.
        leader_hint: Option<NodeId>,
    },
    /// Too many reads are waiting for leadership confirmation.
    #[error("too many reads waiting for confirmation; retry later")]
    Overloaded,
    /// The node was shut down or stopped on a fatal error.
    #[error("this node is shut down")]
    Shutdown,
}

/// Errors of storage implementations. Cloneable so that one failure can be reported to every
/// waiter of a group commit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The storage was closed (or its node crashed) before the write became durable.
    #[error("storage is closed")]
    Closed,
    /// An I/O or integrity failure of the backend; the node stops on it.
    #[error(transparent)]
    Backend(Arc<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// Wraps any backend error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        StorageError::Backend(Arc::new(error))
    }
}

/// Why a transport could not deliver a request or bring back its reply. Raft treats every kind
/// the same way (the RPC failed and may be retried), so the variants are for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer is not reachable (disconnected, partitioned, crashed, refused).
    #[error("peer {0} is unreachable")]
    Unreachable(NodeId),
    /// The request or its reply was lost.
    #[error("message lost")]
    Lost,
    /// The transport has too many requests waiting for this peer; the request was not sent.
    #[error("too many requests pending for peer {0}")]
    Overloaded(NodeId),
    /// The request is larger than the transport can carry.
    #[error("request of {0} bytes exceeds the transport's frame limit")]
    TooLarge(usize),
    /// The peer is not part of the configuration the transport knows.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The peer answered with something that is not a valid reply.
    #[error("bad reply: {0}")]
    BadReply(String),
    /// The transport was shut down.
    #[error("transport is shut down")]
    Shutdown,
}

/// Errors from creating a node or from its RPC handlers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RaftError {
    /// The node was shut down or stopped on a fatal error; it does not answer.
    #[error("this node is shut down")]
    Shutdown,
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The service asked for a snapshot Raft cannot take.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// Reading or writing durable state failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}
