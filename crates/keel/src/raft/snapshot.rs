//! Snapshots (section 7): the service's own, and InstallSnapshot in bounded chunks for followers
//! that need entries the leader has compacted.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::replication::{Trigger, advance_commit, replicate};
use super::state::{Inbound, IncomingSnapshot, Outgoing, Role, State, TermCheck};
use super::{Shared, progress};
use crate::config::Config;
use crate::error::{RaftError, StorageError};
use crate::message::{InstallSnapshotRequest, InstallSnapshotResponse, Request, Response};
use crate::storage::{SnapshotSpool, Storage};
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

/// InstallSnapshot receiver implementation (Figure 13), one chunk at a time. The chunk is
/// checked under the state lock (`on_install_request`), written to the spool without it (a disk
/// write may take a while, and the snapshot is never held whole in memory), then counted under
/// the lock again (`chunk_written`), if its transfer is still the one under way.
pub(super) async fn handle_install(
    shared: &Arc<Shared>,
    request: InstallSnapshotRequest,
) -> Result<InstallSnapshotResponse, RaftError> {
    let now = Instant::now();
    let (decided, seq) = {
        let mut s = shared.lock();
        if s.shutdown {
            return Err(RaftError::Shutdown);
        }
        let decided = on_install_request(&mut s, &shared.config, now, &request);
        (decided, s.sync_point())
    };
    let write = match decided {
        Chunk::Answer(response) => return super::reply_when_durable(shared, seq, response).await,
        Chunk::Write(write) => write,
    };
    let written = spool_chunk(shared.storage.as_ref(), write, request.data).await;
    let (response, seq) = {
        let mut s = shared.lock();
        if s.shutdown {
            return Err(RaftError::Shutdown);
        }
        let response = chunk_written(&mut s, written);
        (response, s.sync_point())
    };
    super::reply_when_durable(shared, seq, response).await
}

/// What the receiver does with a chunk, decided under the state lock.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Answer at once: nothing to write.
    Answer(InstallSnapshotResponse),
    /// Write it to the spool (`spool_chunk`), then count it (`chunk_written`).
    Write(ChunkWrite),
}

/// A chunk to spool, with the spool taken out of the state meanwhile.
pub(crate) struct ChunkWrite {
    transfer: u64,
    offset: u64,
    /// The last chunk: finish the spool after writing it.
    done: bool,
    /// `None` for the first chunk: `spool_chunk` asks the storage for a spool.
    spool: Option<Box<dyn SnapshotSpool>>,
}

impl std::fmt::Debug for ChunkWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkWrite")
            .field("transfer", &self.transfer)
            .field("offset", &self.offset)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// A chunk's write, done.
pub(crate) struct Written {
    transfer: u64,
    outcome: Result<Spooled, StorageError>,
}

enum Spooled {
    /// More chunks to come: the spool, and how much it holds.
    Partial(Box<dyn SnapshotSpool>, u64),
    /// The whole snapshot.
    Finished(Bytes),
}

/// InstallSnapshot receiver implementation: "1. Reply immediately if term < currentTerm", then
/// steps 2 to 4 up to the write: which chunk comes next, and whether this is it.
pub(crate) fn on_install_request(
    s: &mut State,
    config: &Config,
    now: Instant,
    request: &InstallSnapshotRequest,
) -> Chunk {
    let leader = Inbound::FromLeader(request.leader_id);
    if s.check_term(config, now, request.term, leader) == TermCheck::Stale {
        return answer(s, 0, false);
    }
    s.leader_id = Some(request.leader_id);
    s.last_heard = now;
    let meta = SnapshotMeta {
        last_included_index: request.last_included_index,
        last_included_term: request.last_included_term,
    };
    // Everything through the commit index is already here: nothing to install.
    if meta.last_included_index <= s.commit_index {
        s.incoming_snapshot = None;
        return answer(s, request.total_len, true);
    }
    if request.total_len > config.max_snapshot_bytes {
        tracing::error!(
            node = s.id,
            bytes = request.total_len,
            max = config.max_snapshot_bytes,
            "refusing snapshot larger than max_snapshot_bytes"
        );
        return answer(s, 0, false);
    }
    let term = s.current_term;
    if request.offset == 0 {
        // 2. Create a new snapshot file if first chunk (the spool, when the chunk is written).
        s.snapshot_transfers += 1;
        s.incoming_snapshot = Some(IncomingSnapshot {
            transfer: s.snapshot_transfers,
            term,
            meta,
            membership: request.membership.clone(),
            total_len: request.total_len,
            received: 0,
            spool: None,
            writing: false,
        });
    }
    let Some(incoming) = s.incoming_snapshot.as_mut() else {
        return answer(s, 0, false);
    };
    if incoming.term != term
        || incoming.meta != meta
        || incoming.membership != request.membership
        || incoming.total_len != request.total_len
    {
        s.incoming_snapshot = None;
        return answer(s, 0, false);
    }
    let received = incoming.received;
    if incoming.writing || request.offset != received {
        return answer(s, received, false);
    }
    let end = received + request.data.len() as u64;
    if end > request.total_len || request.done != (end == request.total_len) {
        s.incoming_snapshot = None;
        return answer(s, 0, false);
    }
    // 3. Write data into the snapshot file at the given offset: the caller does, unlocked.
    incoming.writing = true;
    Chunk::Write(ChunkWrite {
        transfer: incoming.transfer,
        offset: received,
        done: request.done,
        spool: incoming.spool.take(),
    })
}

fn answer(s: &State, next_offset: u64, done: bool) -> Chunk {
    Chunk::Answer(InstallSnapshotResponse {
        term: s.current_term,
        next_offset,
        done,
    })
}

/// Writes a chunk to its transfer's spool (a new one for the first chunk), and finishes the
/// spool after the last.
pub(crate) async fn spool_chunk(storage: &dyn Storage, write: ChunkWrite, data: Bytes) -> Written {
    let end = write.offset + data.len() as u64;
    let outcome = async {
        let mut spool = match write.spool {
            Some(spool) => spool,
            None => storage.spool_snapshot()?,
        };
        spool.write(write.offset, data).await?;
        Ok(if write.done {
            Spooled::Finished(spool.finish(end)?)
        } else {
            Spooled::Partial(spool, end)
        })
    }
    .await;
    Written {
        transfer: write.transfer,
        outcome,
    }
}

/// Steps 4 to 8 of the receiver, after a chunk's write: count it and ask for the next, or on
/// the last one install the snapshot. The answer says where the leader should continue, and
/// whether the follower now holds everything the snapshot covers.
pub(crate) fn chunk_written(s: &mut State, written: Written) -> InstallSnapshotResponse {
    let reply = |s: &State, next_offset, done| InstallSnapshotResponse {
        term: s.current_term,
        next_offset,
        done,
    };
    let Some(incoming) = s
        .incoming_snapshot
        .as_mut()
        .filter(|incoming| incoming.transfer == written.transfer)
    else {
        // A newer term or a new transfer replaced this one meanwhile; its spool is dropped.
        return reply(s, 0, false);
    };
    incoming.writing = false;
    let spooled = match written.outcome {
        Ok(spooled) => spooled,
        Err(error) => {
            tracing::warn!(
                node = s.id,
                index = incoming.meta.last_included_index,
                "could not spool a snapshot chunk from the leader (it will send the snapshot \
                 again): {error}"
            );
            s.incoming_snapshot = None;
            return reply(s, 0, false);
        }
    };
    let data = match spooled {
        // 4. Reply and wait for more data chunks if done is false.
        Spooled::Partial(spool, end) => {
            incoming.spool = Some(spool);
            incoming.received = end;
            return reply(s, end, false);
        }
        Spooled::Finished(data) => data,
    };
    let incoming = s.incoming_snapshot.take().expect("matched above");
    let total_len = incoming.total_len;
    debug_assert_eq!(data.len() as u64, total_len);
    let meta = incoming.meta;
    // Entries may have been committed here while the last chunk was written.
    if meta.last_included_index <= s.commit_index {
        return reply(s, total_len, true);
    }
    // 5-8. Save the snapshot, keep log entries that follow it if the log has its last entry,
    // otherwise discard the log; the applier then hands the snapshot to the service.
    s.install_snapshot(Snapshot {
        meta,
        membership: Some(incoming.membership),
        data,
    });
    s.wake_applier = true;
    tracing::debug!(
        node = s.id,
        index = meta.last_included_index,
        bytes = total_len,
        "installed snapshot from leader"
    );
    reply(s, total_len, true)
}

/// The receiver's steps with the write in between done at once, in memory: what
/// `handle_install` does, for tests of the rules.
#[cfg(test)]
pub(crate) fn receive_chunk(
    s: &mut State,
    config: &Config,
    now: Instant,
    request: InstallSnapshotRequest,
) -> InstallSnapshotResponse {
    match on_install_request(s, config, now, &request) {
        Chunk::Answer(response) => response,
        Chunk::Write(write) => chunk_written(s, spool_now(write, request.data)),
    }
}

/// `spool_chunk` into memory, which finishes at once.
#[cfg(test)]
pub(crate) fn spool_now(write: ChunkWrite, data: Bytes) -> Written {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let storage = crate::storage::MemStorage::new();
    let mut spooling = std::pin::pin!(spool_chunk(&storage, write, data));
    let Poll::Ready(written) = spooling
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    else {
        panic!("an in-memory spool writes at once");
    };
    written
}

#[cfg(test)]
impl Written {
    /// The write of `write` failed, as a full disk fails it.
    pub(crate) fn failed(write: ChunkWrite) -> Written {
        Written {
            transfer: write.transfer,
            outcome: Err(StorageError::Closed),
        }
    }
}
