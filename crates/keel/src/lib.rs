//! keel: the Raft consensus algorithm as a library.
//!
//! A [`Raft`] node replicates a log of opaque commands across a cluster and hands every
//! committed command, in order, to your state machine through an [`ApplyStream`]. You provide
//! durable [`Storage`] (or use [`MemStorage`]) and a [`Transport`] that carries RPCs between
//! nodes (or use the in-process [`LocalNetwork`]); keel does elections, replication, persistence
//! ordering, snapshots and flow control.
//!
//! # A three-node cluster in one process
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use keel::{Applied, Config, LocalNetwork, MemStorage, Raft, Role};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let network = LocalNetwork::new();
//! let members = vec![1, 2, 3];
//! let mut nodes = Vec::new();
//! for id in members.clone() {
//!     let storage = Arc::new(MemStorage::new());
//!     let (raft, applied) =
//!         Raft::new(id, members.clone(), Config::default(), storage, network.transport())
//!             .expect("valid configuration");
//!     network.register(raft.clone());
//!     nodes.push((raft, applied));
//! }
//!
//! // Wait for an election, then propose on the leader.
//! let leader = loop {
//!     tokio::time::sleep(std::time::Duration::from_millis(50)).await;
//!     if let Some((raft, _)) = nodes.iter().find(|(r, _)| r.status().role == Role::Leader) {
//!         break raft.clone();
//!     }
//! };
//! let proposed = leader.propose(Bytes::from("hello")).expect("leader accepts");
//!
//! // Every node applies the command at the same index.
//! for (_, applied) in &mut nodes {
//!     loop {
//!         match applied.next().await.expect("node running") {
//!             Applied::Entry(e) if e.index == proposed.index => {
//!                 assert_eq!(e.command(), b"hello");
//!                 break;
//!             }
//!             _ => {} // the leader's no-op, or earlier entries
//!         }
//!     }
//! }
//! for (raft, _) in &nodes {
//!     raft.shutdown().await;
//! }
//! # }
//! ```
//!
//! # Changing the members
//!
//! A node started with no members waits to be added; the leader adds it as a learner, which
//! catches up without voting, then promotes it (see [`raft`]'s `membership` module for the
//! rules: joint consensus, one change at a time, learners promoted once caught up).
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use keel::{Config, LocalNetwork, MemStorage, MemberRole, Raft, Role};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let network = LocalNetwork::new();
//! let start = |id, members: Vec<u64>| {
//!     let (raft, _applied) = Raft::new(
//!         id, members, Config::default(), Arc::new(MemStorage::new()), network.transport(),
//!     )
//!     .expect("valid configuration");
//!     network.register(raft.clone());
//!     raft
//! };
//! let nodes: Vec<Raft> = (1..=3).map(|id| start(id, vec![1, 2, 3])).collect();
//! let newcomer = start(4, Vec::new()); // no members: it joins when added
//! let leader = loop {
//!     tokio::time::sleep(std::time::Duration::from_millis(50)).await;
//!     if let Some(raft) = nodes.iter().find(|r| r.status().role == Role::Leader) {
//!         break raft.clone();
//!     }
//! };
//! // Retried while the new leader has not yet committed an entry of its term.
//! let added = loop {
//!     match leader.add_learner(4, Bytes::new()).await {
//!         Ok(membership) => break membership,
//!         Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
//!     }
//! };
//! assert_eq!(added.role(4), Some(MemberRole::Learner));
//! let promoted = leader.promote(4).await.expect("node 4 caught up");
//! assert_eq!(promoted.role(4), Some(MemberRole::Voter));
//! leader.transfer_leadership(Some(4)).await.expect("node 4 takes over");
//! assert_eq!(newcomer.status().role, Role::Leader);
//! # for raft in nodes.iter().chain([&newcomer]) { raft.shutdown().await; }
//! # }
//! ```
//!
//! # How it is built
//!
//! See the [`raft`] module for the tasks and the lock, [`storage`] for the durability contract,
//! [`transport`] for the RPC contract and [`codec`] for the wire encoding.

#![warn(missing_docs)]

pub mod codec;
pub mod config;
pub mod error;
/// Entry points for the fuzz targets in `fuzz/` and the corpus-replay tests; not part of the API.
#[doc(hidden)]
pub mod fuzzing;
pub mod message;
pub mod raft;
pub mod storage;
pub mod transport;
pub mod types;
pub mod watermark;

use std::future::Future;
use std::pin::Pin;

pub use config::Config;
pub use error::{
    MembershipError, ProposeError, RaftError, ReadIndexError, StorageError, TransferError,
    TransportError,
};
pub use message::{Request, Response};
pub use raft::{
    Applied, ApplyStream, FollowerStatus, Leadership, MembershipStatus, Proposed, Raft, Role,
    Status, WeakRaft,
};
pub use storage::{MemSpool, MemStorage, Recovered, SnapshotSpool, Storage, WriteBatch};
pub use transport::{LocalNetwork, Transport};
pub use types::{
    Entry, HardState, InvalidMembership, MemberRole, Membership, NodeId, Payload, Snapshot,
    SnapshotMeta,
};
pub use watermark::Watermark;

/// A boxed, sendable future, as the storage and transport traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
