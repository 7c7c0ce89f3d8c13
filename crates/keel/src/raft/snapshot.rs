//! Snapshots (section 7): the service's own, and InstallSnapshot in bounded chunks for followers
//! that need entries the leader has compacted.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::replication::{Trigger, advance_commit, replicate};
use super::state::{Inbound, IncomingSnapshot, Outgoing, Role, State, TermCheck};
use super::{Shared, progress};
use crate::config::Config;
use crate::error::RaftError;
use crate::message::{InstallSnapshotRequest, InstallSnapshotResponse, Request, Response};
use crate::types::{Membership, NodeId, Snapshot, SnapshotMeta};

/// The service has applied through `index` and serialized its state as `data`.
pub(super) fn take_snapshot(shared: &Shared, index: u64, data: Bytes) -> Result<(), RaftError> {
    let mut s = shared.lock();
    if s.shutdown {
        return Err(RaftError::Shutdown);
    }
    if index <= s.log.snapshot_index() {
        return Ok(());
    }
    if index > s.last_applied {
        return Err(RaftError::InvalidSnapshot(format!(
            "snapshot at index {index} is past the last applied entry {}",
            s.last_applied
        )));
    }
    let term = s
        .log
        .term_at(index)
        .expect("applied entries past the snapshot are in the log");
    let membership = Some(s.configs.at(index).clone());
    s.install_snapshot(Snapshot {
        meta: SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
        },
        membership,
        data,
    });
    Ok(())
}

/// Starts sending the current snapshot to `peer`, which needs entries the log no longer has.
pub(crate) fn start_transfer(s: &mut State, peer: NodeId) {
    let meta = s.log.snapshot_meta();
    let membership = s.configs.at(meta.last_included_index).clone();
    let data = s.snapshot_data.clone();
    let term = s.current_term;
    let Some(p) = s.progress.get_mut(&peer) else {
        return;
    };
    p.snapshot_started();
    let generation = p.generation();
    tracing::debug!(
        node = s.id,
        peer,
        index = meta.last_included_index,
        bytes = data.len(),
        "sending snapshot"
    );
    s.outbox.push(Outgoing::Snapshot {
        peer,
        generation,
        term,
        meta,
        membership,
        data,
    });
}

/// Sends the snapshot chunk by chunk, each chunk an RPC whose reply says where to continue.
pub(super) async fn send_snapshot(
    shared: Arc<Shared>,
    peer: NodeId,
    generation: u64,
    term: u64,
    meta: SnapshotMeta,
    membership: Membership,
    data: Bytes,
) {
    let total_len = data.len() as u64;
    let chunk = shared.config.snapshot_chunk_bytes as u64;
    let mut offset = 0u64;
    // Bound the restarts a confused follower can cause within one transfer.
    let mut restarts = 0;
    let installed = loop {
        let end = (offset + chunk).min(total_len);
        let request = InstallSnapshotRequest {
            term,
            leader_id: shared.id,
            last_included_index: meta.last_included_index,
            last_included_term: meta.last_included_term,
            offset,
            total_len,
            membership: membership.clone(),
            data: data.slice(offset as usize..end as usize),
            done: end == total_len,
        };
        let call = shared
            .transport
            .call(peer, Request::InstallSnapshot(request));
        let response = match tokio::time::timeout(shared.config.rpc_timeout, call).await {
            Ok(Ok(Response::InstallSnapshot(response))) => response,
            _ => break false,
        };
        {
            let mut s = shared.lock();
            if s.shutdown {
                return;
            }
            let now = Instant::now();
            if s.check_term(&shared.config, now, response.term, Inbound::Reply) == TermCheck::Newer
            {
                return;
            }
            if s.role != Role::Leader || s.current_term != term {
                return;
            }
            match progress::sent_under(&mut s.progress, peer, generation) {
                Some(p) => p.heard(0, now),
                // The member was removed (and perhaps added back): this transfer is moot.
                None => return,
            }
        }
        if response.done {
            break true;
        }
        if response.next_offset != end {
            restarts += 1;
            if restarts > 3 {
                break false;
            }
        }
        offset = response.next_offset.min(total_len);
    };
    let mut s = shared.lock();
    if s.shutdown || s.role != Role::Leader || s.current_term != term {
        return;
    }
    let Some(p) = progress::sent_under(&mut s.progress, peer, generation) else {
        return;
    };
    p.snapshot_done(installed.then_some(meta.last_included_index));
    if installed {
        advance_commit(&mut s, &shared.config, Instant::now());
        replicate(&mut s, &shared.config, peer, Trigger::Due);
    }
    // On failure the next heartbeat tick starts a new transfer (next_index is still covered by
    // the snapshot).
}

/// InstallSnapshot receiver implementation (Figure 13), one chunk at a time.
pub(super) async fn handle_install(
    shared: &Arc<Shared>,
    request: InstallSnapshotRequest,
) -> Result<InstallSnapshotResponse, RaftError> {
    let now = Instant::now();
    let (response, seq) = {
        let mut s = shared.lock();
        if s.shutdown {
            return Err(RaftError::Shutdown);
        }
        let response = on_install_request(&mut s, &shared.config, now, request);
        (response, s.sync_point())
    };
    super::reply_when_durable(shared, seq, response).await
}

/// InstallSnapshot receiver implementation: "1. Reply immediately if term < currentTerm", then
/// steps 2 to 8 (`accept_chunk`).
pub(crate) fn on_install_request(
    s: &mut State,
    config: &Config,
    now: Instant,
    request: InstallSnapshotRequest,
) -> InstallSnapshotResponse {
    let leader = Inbound::FromLeader(request.leader_id);
    if s.check_term(config, now, request.term, leader) == TermCheck::Stale {
        return InstallSnapshotResponse {
            term: s.current_term,
            next_offset: 0,
            done: false,
        };
    }
    s.leader_id = Some(request.leader_id);
    s.last_heard = now;
    let (next_offset, done) = accept_chunk(s, config, request);
    InstallSnapshotResponse {
        term: s.current_term,
        next_offset,
        done,
    }
}

/// Steps 2 to 8 of the receiver: buffer the chunk; on the last one, install the snapshot.
/// Returns the offset the leader should send next, and whether the follower now holds
/// everything the snapshot covers.
fn accept_chunk(s: &mut State, config: &Config, request: InstallSnapshotRequest) -> (u64, bool) {
    let meta = SnapshotMeta {
        last_included_index: request.last_included_index,
        last_included_term: request.last_included_term,
    };
    // Everything through the commit index is already here: nothing to install.
    if meta.last_included_index <= s.commit_index {
        s.incoming_snapshot = None;
        return (request.total_len, true);
    }
    if request.total_len > config.max_snapshot_bytes {
        tracing::error!(
            node = s.id,
            bytes = request.total_len,
            max = config.max_snapshot_bytes,
            "refusing snapshot larger than max_snapshot_bytes"
        );
        return (0, false);
    }
    let term = s.current_term;
    if request.offset == 0 {
        // 2. Create a new snapshot buffer if first chunk. Reserve at most one chunk up front:
        // total_len is the sender's claim.
        s.incoming_snapshot = Some(IncomingSnapshot {
            term,
            meta,
            membership: request.membership.clone(),
            data: BytesMut::with_capacity(request.data.len()),
        });
    }
    let Some(incoming) = s.incoming_snapshot.as_mut() else {
        return (0, false);
    };
    if incoming.term != term || incoming.meta != meta || incoming.membership != request.membership {
        s.incoming_snapshot = None;
        return (0, false);
    }
    let received = incoming.data.len() as u64;
    if request.offset != received {
        return (received, false);
    }
    if received + request.data.len() as u64 > request.total_len {
        s.incoming_snapshot = None;
        return (0, false);
    }
    // 3. Write data into the snapshot buffer at the given offset.
    incoming.data.extend_from_slice(&request.data);
    let received = incoming.data.len() as u64;
    // 4. Reply and wait for more data chunks if done is false.
    if !request.done {
        return (received, false);
    }
    let incoming = s.incoming_snapshot.take().expect("checked above");
    if received != request.total_len {
        return (0, false);
    }
    // 5-8. Save the snapshot, keep log entries that follow it if the log has its last entry,
    // otherwise discard the log; the applier then hands the snapshot to the service.
    s.install_snapshot(Snapshot {
        meta,
        membership: Some(incoming.membership),
        data: incoming.data.freeze(),
    });
    s.wake_applier = true;
    tracing::debug!(
        node = s.id,
        index = meta.last_included_index,
        bytes = received,
        "installed snapshot from leader"
    );
    (received, true)
}
