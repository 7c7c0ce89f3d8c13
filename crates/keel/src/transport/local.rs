//! An in-process network that hands requests straight to the target's handler: no encoding, no
//! faults. For examples, benchmarks and embedding several nodes in one process.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::Transport;
use crate::BoxFuture;
use crate::error::TransportError;
use crate::message::{Request, Response};
use crate::raft::{Raft, WeakRaft};
use crate::types::NodeId;

/// Nodes in one process, reachable by id.
///
/// ```
/// # use keel::LocalNetwork;
/// let network = LocalNetwork::new();
/// let transport = network.transport(); // give this to Raft::new, then:
/// // network.register(raft.clone());
/// # let _ = transport;
/// ```
#[derive(Clone, Default)]
pub struct LocalNetwork {
    /// Weak: each node holds this network as its transport, so strong handles here would keep
    /// every node alive forever.
    nodes: Arc<RwLock<BTreeMap<NodeId, WeakRaft>>>,
}

impl LocalNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport for a node of this network.
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.clone())
    }

    /// Makes `raft` reachable under its id (replacing an earlier node with that id).
    pub fn register(&self, raft: Raft) {
        self.nodes.write().insert(raft.id(), raft.downgrade());
    }

    /// Makes node `id` unreachable.
    pub fn unregister(&self, id: NodeId) {
        self.nodes.write().remove(&id);
    }
}

impl Transport for LocalNetwork {
    fn call(
        &self,
        target: NodeId,
        request: Request,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        let node = self.nodes.read().get(&target).and_then(WeakRaft::upgrade);
        Box::pin(async move {
            let node = node.ok_or(TransportError::Unreachable(target))?;
            node.handle(request)
                .await
                .map_err(|_| TransportError::Unreachable(target))
        })
    }
}
