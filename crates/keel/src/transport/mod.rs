//! How RPCs reach peers: the [`Transport`] trait, and an in-process [`LocalNetwork`].
//!
//! A transport promises nothing about ordering: requests to the same peer may arrive in any
//! order, twice never, or not at all, and replies likewise. Raft copes with all of it. Its server
//! side hands each incoming request to [`crate::Raft::handle`].

mod local;

pub use local::LocalNetwork;

use std::collections::BTreeSet;

use crate::BoxFuture;
use crate::error::TransportError;
use crate::message::{Request, Response};
use crate::types::{Membership, NodeId};

/// Sends one RPC to a peer and brings back its reply.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to `target` and completes with its reply or an error. Raft bounds how
    /// long it waits (`Config::rpc_timeout`), so a transport need not time out by itself.
    fn call(
        &self,
        target: NodeId,
        request: Request,
    ) -> BoxFuture<'static, Result<Response, TransportError>>;

    /// The configuration in force changed, or committed (a member was added or removed, a
    /// change was undone): a transport that keeps an address book updates it from what the
    /// service attached to each member ([`Membership::info`]). `reach` is every node this node
    /// must still be able to talk to: the members of `membership`, and those of the last
    /// committed configuration (a member being removed must still hear of its removal); a
    /// transport may close connections to nodes that have left it. Called outside Raft's lock,
    /// before any RPC to a new member is sent, and once when the node starts. The default does
    /// nothing.
    fn members_changed(&self, membership: &Membership, reach: &BTreeSet<NodeId>) {
        let _ = (membership, reach);
    }
}
