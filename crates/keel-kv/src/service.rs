//! The KV service on one node: proposes writes through Raft and answers them once applied,
//! serves linearizable reads through ReadIndex, and snapshots its state when the Raft log grows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use keel::{Applied, ApplyStream, NodeId, ProposeError, Raft, ReadIndexError, Role, Watermark};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::command::{Command, MAX_FIELD_BYTES, Write};
use crate::error::KvError;
use crate::state::{KvState, Outcome, SessionPolicy, WriteResult};

/// Settings of the KV service.
#[derive(Clone)]
pub struct KvOptions {
    /// Take a snapshot when the Raft log since the last one exceeds this many bytes. Each node
    /// snapshots at all, 7/8 or 3/4 of it, by node id (see `snapshot_threshold`), so that the
    /// members of a cluster, whose logs grow alike, do not all snapshot at once.
    pub max_raft_state_bytes: u64,
    /// Client sessions idle this long are forgotten (decided from the log's timestamps).
    pub session_ttl: Duration,
    /// Most client sessions kept.
    pub max_sessions: usize,
    /// Most sessions kept for one authenticated client (see [`KvService::submit_as`]); past
    /// it, that client's own oldest are forgotten first. Like `max_sessions`, every member
    /// must have the same.
    pub max_sessions_per_client: usize,
    /// How long a request may wait for a leader, a quorum or its commit.
    pub request_timeout: Duration,
    /// Longest key accepted. At most [`MAX_FIELD_BYTES`], what the log's and snapshots'
    /// encodings hold: [`KvService::start`] lowers a larger setting to it.
    pub max_key_bytes: usize,
    /// Longest value accepted, for a put or a compare-and-set, and longest value an append may
    /// make. Every command carries its leader's limit, so replicas agree on which appends they
    /// refuse even if their nodes were started with different limits. At most
    /// [`MAX_FIELD_BYTES`], like `max_key_bytes`.
    pub max_value_bytes: usize,
    /// Most writes waiting for their commit on this node.
    pub max_pending_writes: usize,
    /// The leader's clock, in milliseconds since the Unix epoch, stamped into every command
    /// (the simulator substitutes its own, so that runs replay).
    pub clock: Clock,
}

/// A source of wall-clock milliseconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock in milliseconds since the Unix epoch.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

impl std::fmt::Debug for KvOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvOptions")
            .field("max_raft_state_bytes", &self.max_raft_state_bytes)
            .field("session_ttl", &self.session_ttl)
            .field("max_sessions", &self.max_sessions)
            .field("max_sessions_per_client", &self.max_sessions_per_client)
            .field("request_timeout", &self.request_timeout)
            .field("max_key_bytes", &self.max_key_bytes)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("max_pending_writes", &self.max_pending_writes)
            .finish_non_exhaustive()
    }
}

impl Default for KvOptions {
    fn default() -> Self {
        KvOptions {
            max_raft_state_bytes: 64 << 20,
            session_ttl: Duration::from_secs(600),
            max_sessions: 100_000,
            max_sessions_per_client: 10_000,
            request_timeout: Duration::from_secs(5),
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            max_pending_writes: 65_536,
            clock: system_clock(),
        }
    }
}

impl KvOptions {
    fn policy(&self) -> SessionPolicy {
        SessionPolicy {
            // A TTL past u64::MAX ms is forever either way.
            ttl_ms: u64::try_from(self.session_ttl.as_millis()).unwrap_or(u64::MAX),
            max_sessions: self.max_sessions,
            max_sessions_per_owner: self.max_sessions_per_client,
        }
    }

    /// These options with the key and value limits lowered to what an encoding holds, so that
    /// every write the service accepts can be encoded.
    fn within_encoding(self) -> KvOptions {
        if self.max_key_bytes > MAX_FIELD_BYTES || self.max_value_bytes > MAX_FIELD_BYTES {
            tracing::warn!(
                max_key_bytes = self.max_key_bytes,
                max_value_bytes = self.max_value_bytes,
                "key and value limits above {MAX_FIELD_BYTES} bytes are lowered to it"
            );
        }
        KvOptions {
            max_key_bytes: self.max_key_bytes.min(MAX_FIELD_BYTES),
            max_value_bytes: self.max_value_bytes.min(MAX_FIELD_BYTES),
            ..self
        }
    }
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every write that completed before the read began (ReadIndex on the leader).
    #[default]
    Linearizable,
    /// Whatever this node has applied; may be behind.
    Stale,
}

/// Counters the service keeps for metrics.
#[derive(Debug, Default)]
pub struct KvCounters {
    /// Writes proposed.
    pub writes_proposed: AtomicU64,
    /// Writes answered successfully.
    pub writes_committed: AtomicU64,
    /// Reads answered.
    pub reads: AtomicU64,
    /// Snapshots this node took.
    pub snapshots_taken: AtomicU64,
    /// Bytes of the last snapshot this node took.
    pub last_snapshot_bytes: AtomicU64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: AtomicU64,
}

/// Observes commit latencies (propose to applied); the HTTP layer plugs a histogram in here.
pub type LatencyObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// The KV service of one node. Cheap to clone.
#[derive(Clone)]
pub struct KvService {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    options: KvOptions,
    state: Mutex<KvState>,
    waiters: Mutex<BTreeMap<u64, Waiter>>,
    /// Index applied to `state`, for reads waiting on their ReadIndex.
    applied: Watermark,
    counters: KvCounters,
    latency: Mutex<Option<LatencyObserver>>,
    /// This node's point for snapshots: `snapshot_threshold(max_raft_state_bytes, id)`.
    snapshot_at_bytes: u64,
    /// Why the service stopped on data it cannot apply, once it has.
    stopped: Mutex<Option<String>>,
}

struct Waiter {
    term: u64,
    proposed_at: tokio::time::Instant,
    reply: oneshot::Sender<Result<WriteResult, KvError>>,
}

impl KvService {
    /// Starts the service on a Raft node: spawns the task that applies the node's committed
    /// entries, and the task that fails pending writes when the node loses leadership.
    pub fn start(
        raft: Raft,
        stream: ApplyStream,
        options: KvOptions,
    ) -> (KvService, JoinHandle<()>) {
        let options = options.within_encoding();
        let applied = Watermark::new();
        let snapshot_at_bytes = snapshot_threshold(options.max_raft_state_bytes, raft.id());
        let inner = Arc::new(Inner {
            snapshot_at_bytes,
            state: Mutex::new(KvState::new(options.policy())),
            raft,
            options,
            waiters: Mutex::new(BTreeMap::new()),
            applied,
            counters: KvCounters::default(),
            latency: Mutex::new(None),
            stopped: Mutex::new(None),
        });
        let task = tokio::spawn(apply_loop(inner.clone(), stream));
        tokio::spawn(watch_leadership(Arc::downgrade(&inner)));
        (KvService { inner }, task)
    }

    /// Why the service stopped serving, if it has: data it cannot apply (then its Raft node is
    /// stopped too), or the node shutting down. `None` while it serves.
    pub fn stopped_reason(&self) -> Option<String> {
        if let Some(reason) = self.inner.stopped.lock().clone() {
            return Some(reason);
        }
        (!self.inner.raft.is_running()).then(|| "the node is shut down".to_string())
    }

    /// The Raft node under the service.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The service's options.
    pub fn options(&self) -> &KvOptions {
        &self.inner.options
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &KvCounters {
        &self.inner.counters
    }

    /// Sets the observer of commit latencies.
    pub fn set_latency_observer(&self, observer: LatencyObserver) {
        *self.inner.latency.lock() = Some(observer);
    }

    /// Index of the last entry applied to the store.
    pub fn applied_index(&self) -> u64 {
        self.inner.applied.get()
    }

    /// Number of keys in the store.
    pub fn key_count(&self) -> usize {
        self.inner.state.lock().len()
    }

    /// Checks a write against the size limits.
    pub fn validate(&self, write: &Write) -> Result<(), KvError> {
        let options = &self.inner.options;
        let key = write.key().len();
        if key > options.max_key_bytes {
            return Err(KvError::KeyTooLarge {
                size: key,
                max: options.max_key_bytes,
            });
        }
        let value = write.value_len();
        if value > options.max_value_bytes {
            return Err(KvError::ValueTooLarge {
                size: value,
                max: options.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Replicates `write` and answers once it is applied. With a session (`client_id`, `seq`),
    /// a retry of the same request is applied once and answered with the original result.
    ///
    /// An append that would make the value longer than `max_value_bytes` is refused when it is
    /// applied, with [`KvError::ValueTooLarge`], and leaves the value as it was.
    pub async fn write(
        &self,
        session: Option<(u64, u64)>,
        write: Write,
    ) -> Result<WriteResult, KvError> {
        self.submit(session, write)?.wait().await
    }

    /// The first half of [`KvService::write`]: proposes `write` at once and returns what waits
    /// for its answer. Errors here mean the write was not proposed (`NotLeader` among them, so
    /// a caller can forward the request); the caller can then drop what it kept for that case
    /// before waiting.
    pub fn submit(
        &self,
        session: Option<(u64, u64)>,
        write: Write,
    ) -> Result<PendingWrite, KvError> {
        self.submit_as(0, session, write)
    }

    /// [`KvService::submit`] for an authenticated client: `owner` (not 0; keel's server hashes
    /// the client's authenticated name to it) owns the session, so the same client
    /// id of another owner is another session, and each owner's sessions are capped apart
    /// (`max_sessions_per_client`). 0 is the anonymous owner, as `submit`.
    pub fn submit_as(
        &self,
        owner: u64,
        session: Option<(u64, u64)>,
        write: Write,
    ) -> Result<PendingWrite, KvError> {
        self.validate(&write)?;
        let inner = &self.inner;
        let (client_id, seq) = session.unwrap_or((0, 0));
        let command = Command {
            owner,
            client_id,
            seq,
            time_ms: (inner.options.clock)(),
            max_value_bytes: Some(inner.options.max_value_bytes as u64),
            write,
        }
        .encode();
        let (index, receiver) = {
            // Holding the waiters lock across `propose` means the apply loop cannot answer the
            // index before the waiter is registered.
            let mut waiters = inner.waiters.lock();
            if waiters.len() >= inner.options.max_pending_writes {
                return Err(KvError::Overloaded);
            }
            let proposed = inner.raft.propose(command).map_err(|e| match e {
                ProposeError::NotLeader { leader_hint } => KvError::NotLeader { leader_hint },
                ProposeError::Overloaded { .. } => KvError::Overloaded,
                ProposeError::TooLarge { size, max } => KvError::ValueTooLarge { size, max },
                ProposeError::Shutdown => KvError::Shutdown,
                ProposeError::StorageUnavailable { reason } => {
                    KvError::StorageUnavailable { reason }
                }
                ProposeError::TransferringLeadership { to } => {
                    KvError::TransferringLeadership { to }
                }
            })?;
            let (reply, receiver) = oneshot::channel();
            waiters.insert(
                proposed.index,
                Waiter {
                    term: proposed.term,
                    proposed_at: tokio::time::Instant::now(),
                    reply,
                },
            );
            (proposed.index, receiver)
        };
        inner
            .counters
            .writes_proposed
            .fetch_add(1, Ordering::Relaxed);
        Ok(PendingWrite {
            service: self.clone(),
            index,
            receiver,
        })
    }

    /// Reads `key`.
    pub async fn read(
        &self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Bytes>, KvError> {
        self.read_with(consistency, |state| state.get(key)).await
    }

    /// Up to `limit` keys starting with `prefix` (after `after`, if given), in byte order, with
    /// their values' sizes, and whether more follow ([`KvState::list`]), read as
    /// [`KvService::read`] reads a key.
    pub async fn list(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<(Vec<(Bytes, usize)>, bool), KvError> {
        self.read_with(consistency, |state| state.list(prefix, after, limit))
            .await
    }

    /// Runs `read` on the state once it is as fresh as `consistency` asks.
    async fn read_with<T>(
        &self,
        consistency: Consistency,
        read: impl FnOnce(&KvState) -> T,
    ) -> Result<T, KvError> {
        let inner = &self.inner;
        if consistency == Consistency::Linearizable {
            let timeout = inner.options.request_timeout;
            let index = match tokio::time::timeout(timeout, inner.raft.read_index()).await {
                Ok(Ok(index)) => index,
                Ok(Err(ReadIndexError::NotLeader { leader_hint })) => {
                    return Err(KvError::NotLeader { leader_hint });
                }
                Ok(Err(ReadIndexError::Overloaded)) => return Err(KvError::Overloaded),
                Ok(Err(ReadIndexError::Shutdown)) => return Err(KvError::Shutdown),
                Err(_) => return Err(KvError::Timeout),
            };
            match tokio::time::timeout(timeout, inner.applied.wait_for(index)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(KvError::Shutdown),
                Err(_) => return Err(KvError::Timeout),
            }
        } else if !inner.raft.is_running() {
            // A stopped node (shut down, or stopped on data it cannot apply) serves nothing.
            return Err(KvError::Shutdown);
        }
        inner.counters.reads.fetch_add(1, Ordering::Relaxed);
        Ok(read(&inner.state.lock()))
    }
}

/// A write proposed by [`KvService::submit`], waiting for its answer.
#[must_use = "a proposed write is answered only through `wait`"]
pub struct PendingWrite {
    service: KvService,
    index: u64,
    receiver: oneshot::Receiver<Result<WriteResult, KvError>>,
}

impl PendingWrite {
    /// Waits until the write is applied (or fails), within the request timeout.
    pub async fn wait(self) -> Result<WriteResult, KvError> {
        let inner = &self.service.inner;
        match tokio::time::timeout(inner.options.request_timeout, self.receiver).await {
            Ok(Ok(result)) => {
                if result.is_ok() {
                    inner
                        .counters
                        .writes_committed
                        .fetch_add(1, Ordering::Relaxed);
                }
                result
            }
            Ok(Err(_)) => Err(KvError::Shutdown),
            Err(_) => {
                inner.waiters.lock().remove(&self.index);
                Err(KvError::Timeout)
            }
        }
    }
}

/// Applies committed entries in order, answers the writes waiting for them, and snapshots the
/// store when the log has grown past the limit.
async fn apply_loop(inner: Arc<Inner>, mut stream: ApplyStream) {
    let mut outcomes = Vec::new();
    while let Some(batch) = stream.next_batch().await {
        let mut installed = None;
        let mut corrupt = None;
        let applied = {
            let mut state = inner.state.lock();
            for item in batch {
                match item {
                    Applied::Entry(entry) => {
                        let outcome = match &entry.payload {
                            // Configurations are Raft's business; to the store they are no-ops.
                            keel::Payload::Noop | keel::Payload::Config(_) => {
                                state.apply_noop(entry.index)
                            }
                            keel::Payload::Command(bytes) => state.apply(entry.index, bytes),
                        };
                        if let Outcome::Invalid(invalid) = &outcome {
                            if invalid.is_newer_version() {
                                // Skipping it would leave this replica's data different from
                                // the newer replicas', silently. Stop until this node is
                                // upgraded.
                                let reason = format!(
                                    "the log holds a command of a newer keel at index {}; \
                                     stopped the service: upgrade this node",
                                    entry.index
                                );
                                tracing::error!(index = entry.index, "{reason}");
                                corrupt = Some(reason);
                                break;
                            }
                            tracing::warn!(index = entry.index, %invalid, "skipped an invalid log entry");
                        }
                        outcomes.push((entry.index, entry.term, outcome));
                    }
                    Applied::Snapshot(snapshot) => {
                        let index = snapshot.meta.last_included_index;
                        match KvState::decode(snapshot.data, inner.options.policy()) {
                            Ok(restored) => {
                                *state = restored;
                                installed = Some(index);
                                inner
                                    .counters
                                    .snapshots_installed
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => {
                                // The snapshot passed Raft's checks but not ours: its bytes are
                                // not a state this service wrote. Stop rather than serve wrong
                                // data.
                                let reason = format!(
                                    "cannot restore the snapshot at index {index}: {error}; \
                                     stopped the service"
                                );
                                tracing::error!(index, "{reason}");
                                corrupt = Some(reason);
                                break;
                            }
                        }
                    }
                }
            }
            state.applied_index()
        };
        if let Some(reason) = corrupt {
            *inner.stopped.lock() = Some(reason);
            inner.raft.shutdown().await;
            break;
        }
        inner.applied.advance(applied);
        answer_waiters(&inner, &mut outcomes, installed);
        maybe_snapshot(&inner);
    }
    // The node shut down: nobody will answer the writes and reads still waiting.
    inner.applied.close();
    for (_, waiter) in std::mem::take(&mut *inner.waiters.lock()) {
        let _ = waiter.reply.send(Err(KvError::Shutdown));
    }
}

fn answer_waiters(inner: &Inner, outcomes: &mut Vec<(u64, u64, Outcome)>, installed: Option<u64>) {
    let latency = inner.latency.lock().clone();
    // Take the waiters out under the lock, answer them outside it: request handlers take the
    // same lock to register.
    let mut answered = Vec::with_capacity(outcomes.len());
    {
        let mut waiters = inner.waiters.lock();
        if let Some(index) = installed {
            // A snapshot replaced entries whose results this node never computed.
            let later = waiters.split_off(&(index + 1));
            for (_, waiter) in std::mem::replace(&mut *waiters, later) {
                answered.push((waiter, Err(KvError::LeadershipLost)));
            }
        }
        if !waiters.is_empty() {
            for (index, term, outcome) in outcomes.drain(..) {
                if let Some(waiter) = waiters.remove(&index) {
                    let result = answer(waiter.term, term, outcome);
                    answered.push((waiter, result));
                }
            }
        }
        outcomes.clear();
    }
    for (waiter, answer) in answered {
        if let Some(observe) = &latency {
            observe(waiter.proposed_at.elapsed());
        }
        let _ = waiter.reply.send(answer);
    }
}

/// What a write proposed in `proposed_term` gets, given what was applied at its index.
fn answer(proposed_term: u64, applied_term: u64, outcome: Outcome) -> Result<WriteResult, KvError> {
    if proposed_term != applied_term {
        // Another leader's entry took this index: ours was never committed here.
        return Err(KvError::LeadershipLost);
    }
    match outcome {
        Outcome::Written(result) => Ok(result),
        Outcome::TooLarge(refused) => Err(KvError::ValueTooLarge {
            size: usize::try_from(refused.size).unwrap_or(usize::MAX),
            max: usize::try_from(refused.max).unwrap_or(usize::MAX),
        }),
        Outcome::Stale { last_seq } => Err(KvError::Stale { last_seq }),
        Outcome::Noop | Outcome::Invalid(_) => Err(KvError::LeadershipLost),
    }
}

/// The log size at which node `id` snapshots: all, 7/8 or 3/4 of `max_raft_state_bytes`, by id,
/// never more than it.
///
/// Members of a cluster apply the same entries, so with one threshold they all snapshot (and
/// compact, and free segments) at the same moment. Measured with three nodes sharing one disk at
/// 256 clients, 30 s per run, seven alternating pairs: with the thresholds (and the segment
/// zero-fills, see keel-disk) spread by id, p99.9 was 41–60 ms against 42–125 ms, and the worst
/// request 51–73 ms against 59–244 ms, at the same throughput.
pub fn snapshot_threshold(max_raft_state_bytes: u64, id: NodeId) -> u64 {
    max_raft_state_bytes - max_raft_state_bytes / 8 * ((id % 3 + 2) % 3)
}

fn maybe_snapshot(inner: &Inner) {
    if inner.raft.log_bytes() <= inner.snapshot_at_bytes {
        return;
    }
    let (index, data) = {
        let state = inner.state.lock();
        (state.applied_index(), state.encode())
    };
    let bytes = data.len() as u64;
    match inner.raft.snapshot(index, data) {
        Ok(()) => {
            inner
                .counters
                .snapshots_taken
                .fetch_add(1, Ordering::Relaxed);
            inner
                .counters
                .last_snapshot_bytes
                .store(bytes, Ordering::Relaxed);
            tracing::debug!(index, bytes, "took a snapshot");
        }
        Err(error) => tracing::warn!(index, %error, "could not take a snapshot"),
    }
}

/// Fails pending writes as soon as this node stops leading, so clients retry elsewhere instead
/// of waiting for their timeout.
/// Writes proposed by a leader that stepped down wait up to the request timeout divided by this
/// for the next leader to commit them, before they fail with `LeadershipLost`.
const LEADERSHIP_LOSS_GRACE_DIVISOR: u32 = 5;

async fn watch_leadership(inner: std::sync::Weak<Inner>) {
    let Some(mut leadership) = inner.upgrade().map(|i| i.raft.leadership()) else {
        return;
    };
    let mut led_term: Option<u64> = None;
    loop {
        let now = *leadership.borrow_and_update();
        let leading = (now.role == Role::Leader).then_some(now.term);
        if let Some(lost_term) = led_term
            && leading != led_term
        {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            // The next leader may still commit them: after a hand-over it holds everything
            // this node appended (its log was caught up before it took over). The apply loop
            // answers those that commit; what is left after the grace fails.
            let grace = strong.options.request_timeout / LEADERSHIP_LOSS_GRACE_DIVISOR;
            drop(strong);
            let inner = inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let mut waiters = inner.waiters.lock();
                let lost: Vec<u64> = waiters
                    .iter()
                    .filter(|(_, w)| w.term == lost_term)
                    .map(|(&index, _)| index)
                    .collect();
                for index in lost {
                    if let Some(waiter) = waiters.remove(&index) {
                        let _ = waiter.reply.send(Err(KvError::LeadershipLost));
                    }
                }
            });
        }
        led_term = leading;
        if leadership.changed().await.is_err() {
            return;
        }
    }
}

/// The node id a `KvError::NotLeader` points at, for forwarding.
pub fn leader_hint(error: &KvError) -> Option<NodeId> {
    match error {
        KvError::NotLeader { leader_hint } => *leader_hint,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{KvOptions, snapshot_threshold};
    use crate::command::MAX_FIELD_BYTES;

    #[test]
    fn limits_are_lowered_to_what_an_encoding_holds() {
        let options = KvOptions {
            max_key_bytes: usize::MAX,
            max_value_bytes: usize::MAX,
            session_ttl: Duration::MAX,
            ..KvOptions::default()
        }
        .within_encoding();
        assert_eq!(options.max_key_bytes, MAX_FIELD_BYTES);
        assert_eq!(options.max_value_bytes, MAX_FIELD_BYTES);
        assert_eq!(options.policy().ttl_ms, u64::MAX, "not truncated");
        let options = KvOptions::default().within_encoding();
        assert_eq!(options.max_value_bytes, 1 << 20, "kept");
    }

    /// Three consecutive ids snapshot at three different sizes, none above the limit and none
    /// below three quarters of it.
    #[test]
    fn members_snapshot_at_different_sizes_within_the_limit() {
        let max = 64 << 20;
        for first in [0, 1, 7, u64::MAX - 2] {
            let at: Vec<u64> = (0..3)
                .map(|i| snapshot_threshold(max, first.wrapping_add(i)))
                .collect();
            for &a in &at {
                assert!((max / 4 * 3..=max).contains(&a), "{at:?}");
            }
            let mut distinct = at.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "ids from {first}: {at:?}");
        }
        assert_eq!(
            snapshot_threshold(max, 1),
            max,
            "node 1 snapshots at the limit itself"
        );
        assert_eq!(snapshot_threshold(0, 2), 0);
    }
}
