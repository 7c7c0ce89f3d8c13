//! The persistence watcher: learns when storage made the node's writes durable.
//!
//! Followers wait for durability inside their RPC handlers before replying. The leader instead
//! sends entries to followers while its own write is still in flight (Raft thesis 10.2.1), and
//! this task tells it when its own copy is durable, so it can count itself toward the quorum.

use std::sync::Arc;

use super::Shared;
use super::replication::advance_commit;
use super::state::Role;

pub(super) async fn run_persist_watcher(shared: Arc<Shared>) {
    loop {
        let newest = {
            let s = shared.lock();
            if s.shutdown {
                return;
            }
            // Taking the lock submitted what proposals left staged, in one batch.
            s.newest_pending_write()
        };
        let Some(seq) = newest else {
            shared.persist_wake.notified().await;
            continue;
        };
        if shared.wait_durable(seq).await.is_err() {
            return;
        }
        let mut s = shared.lock();
        s.writes_durable(seq);
        if s.role == Role::Leader {
            advance_commit(&mut s, &shared.config, tokio::time::Instant::now());
        }
    }
}
