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
