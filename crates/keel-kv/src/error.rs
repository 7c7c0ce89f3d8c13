//! Errors of the KV service.

use keel::NodeId;

/// Why a request did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// This node does not lead; ask the hinted node.
    #[error("this node is not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node last heard from, if any.
        leader_hint: Option<NodeId>,
    },
    /// No leader or no quorum answered within the request timeout.
    #[error("no leader or quorum within the request timeout")]
    Timeout,
    /// Leadership changed before the write committed. It may or may not have been applied;
    /// retrying with the same client id and sequence number is safe.
    #[error(
        "leadership changed before the write committed; retry with the same client id and sequence"
    )]
    LeadershipLost,
    /// The client already had a newer request applied.
    #[error("request sequence number is older than the last applied one ({last_seq})")]
    Stale {
        /// The newest sequence number applied for this client.
        last_seq: u64,
    },
    /// The key is longer than the configured maximum.
    #[error("key of {size} bytes exceeds the maximum of {max} bytes")]
    KeyTooLarge {
        /// Key size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The value is longer than the configured maximum, or an append would have made it so
    /// (and was refused, leaving the value as it was).
    #[error("value of {size} bytes exceeds the maximum of {max} bytes")]
    ValueTooLarge {
        /// Value size: for an append, the size the whole value would have had.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Too many requests are waiting; retry later.
    #[error("too many requests in flight; retry later")]
    Overloaded,
    /// The leader is handing leadership to another node and takes no writes meanwhile; the
    /// new leader will, usually within milliseconds.
    #[error("this node is handing leadership over to node {to}; retry shortly")]
    TransferringLeadership {
        /// The node taking over.
        to: NodeId,
    },
    /// The leader's storage cannot make writes durable just now (a full disk, no file
    /// descriptors); it takes writes again once it can, and loses none it acknowledged.
    #[error("the leader's storage is unavailable: {reason}")]
    StorageUnavailable {
        /// What the storage reports.
        reason: String,
    },
    /// The node is shutting down.
    #[error("this node is shut down")]
    Shutdown,
}

impl KvError {
    /// A short, stable code for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            KvError::NotLeader { .. } => "not_leader",
            KvError::Timeout => "timeout",
            KvError::LeadershipLost => "leadership_lost",
            KvError::Stale { .. } => "stale_request",
            KvError::KeyTooLarge { .. } => "key_too_large",
            KvError::ValueTooLarge { .. } => "value_too_large",
            KvError::Overloaded => "overloaded",
            KvError::TransferringLeadership { .. } => "transferring_leadership",
            KvError::StorageUnavailable { .. } => "storage_unavailable",
            KvError::Shutdown => "shutdown",
        }
    }

    /// Whether a client may retry the same request (possibly on another node).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            KvError::KeyTooLarge { .. } | KvError::ValueTooLarge { .. } | KvError::Stale { .. }
        )
    }
}
