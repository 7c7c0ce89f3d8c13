//! Prometheus metrics of a node, served at `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keel::{NodeId, Raft, Role};
use keel_kv::KvService;
use parking_lot::Mutex;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Traffic to one peer, as a transport counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    /// The peer.
    pub peer: NodeId,
    /// RPCs sent to it.
    pub rpcs: u64,
    /// Bytes sent to it.
    pub bytes_sent: u64,
    /// Bytes received from it.
    pub bytes_received: u64,
    /// RPCs that failed.
    pub errors: u64,
}

/// Something that counts traffic per peer (the TCP transport).
pub trait TrafficSource: Send + Sync + 'static {
    /// Counters per peer, since the node started.
    fn traffic(&self) -> Vec<PeerTraffic>;
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    /// Reads received over HTTP.
    pub reads: IntCounter,
    /// Writes received over HTTP.
    pub writes: IntCounter,
    /// Requests forwarded to the leader.
    pub forwarded: IntCounter,
    proposals: IntCounter,
    commits: IntCounter,
    leader_changes: IntCounter,
    term: IntGauge,
    is_leader: IntGauge,
    serving: IntGauge,
    storage_available: IntGauge,
    commit_index: IntGauge,
    applied_index: IntGauge,
    apply_lag: IntGauge,
    commit_latency: Histogram,
    fsync_latency: Histogram,
    snapshots_taken: IntCounter,
    snapshots_installed: IntCounter,
    snapshot_bytes: IntGauge,
    peer_rpcs: IntCounterVec,
    peer_bytes_sent: IntCounterVec,
    peer_bytes_received: IntCounterVec,
    peer_errors: IntCounterVec,
    voters: IntGauge,
    learners: IntGauge,
    configuration_joint: IntGauge,
    configuration_index: IntGauge,
    configuration_committed: IntGauge,
    transfer_target: IntGauge,
    traffic: Mutex<Option<Arc<dyn TrafficSource>>>,
    /// The current second's commit and fsync latencies, for the console's load charts.
    pub(crate) commit_window: crate::monitor::LatencyWindow,
    pub(crate) fsync_window: crate::monitor::LatencyWindow,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ]
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new_custom(Some("keel".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let per_peer = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["peer"]).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(latency_buckets()))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        Arc::new(Metrics {
            reads: counter("http_reads_total", "Reads received over HTTP."),
            writes: counter("http_writes_total", "Writes received over HTTP."),
            forwarded: counter("http_forwarded_total", "Requests forwarded to the leader."),
            proposals: counter("proposals_total", "Writes proposed to Raft by this node."),
            commits: counter("commits_total", "Writes this node answered as committed."),
            leader_changes: counter(
                "leader_changes_total",
                "Changes of leader seen by this node.",
            ),
            term: gauge("term", "Current Raft term."),
            is_leader: gauge("is_leader", "1 if this node is the leader."),
            serving: gauge(
                "serving",
                "1 while the node serves; 0 once it stopped (on data it cannot apply: see its log and /v1/status).",
            ),
            storage_available: gauge(
                "storage_available",
                "0 while the storage waits for a resource (a full disk, no file descriptors; the reason is in /v1/status); 1 otherwise.",
            ),
            commit_index: gauge("commit_index", "Highest log index known committed."),
            applied_index: gauge("applied_index", "Highest log index applied to the store."),
            apply_lag: gauge("apply_lag", "Committed entries not yet applied."),
            commit_latency: histogram(
                "commit_latency_seconds",
                "Time from proposing a write to applying it.",
            ),
            fsync_latency: histogram("fsync_latency_seconds", "Time of one storage fsync."),
            snapshots_taken: counter("snapshots_taken_total", "Snapshots this node took."),
            snapshots_installed: counter(
                "snapshots_installed_total",
                "Snapshots received from a leader and installed.",
            ),
            snapshot_bytes: gauge(
                "snapshot_bytes",
                "Size of the last snapshot this node took.",
            ),
            peer_rpcs: per_peer("peer_rpcs_total", "RPCs sent to a peer."),
            peer_bytes_sent: per_peer("peer_bytes_sent_total", "Bytes sent to a peer."),
            peer_bytes_received: per_peer(
                "peer_bytes_received_total",
                "Bytes received from a peer.",
            ),
            peer_errors: per_peer("peer_errors_total", "RPCs to a peer that failed."),
            voters: gauge(
                "voters",
                "Voters of the configuration in force (of both halves, when joint).",
            ),
            learners: gauge("learners", "Learners of the configuration in force."),
            configuration_joint: gauge(
                "configuration_joint",
                "1 while the configuration is the joint one of a membership change.",
            ),
            configuration_index: gauge(
                "configuration_index",
                "Log index of the configuration in force (0: the one the cluster started with).",
            ),
            configuration_committed: gauge(
                "configuration_committed",
                "1 if the configuration in force is committed.",
            ),
            transfer_target: gauge(
                "leadership_transfer_target",
                "On a leader handing leadership over, the node taking over; else 0.",
            ),
            traffic: Mutex::new(None),
            commit_window: Default::default(),
            fsync_window: Default::default(),
            registry,
        })
    }

    /// Records one commit latency.
    pub fn observe_commit(&self, latency: Duration) {
        self.commit_latency.observe(latency.as_secs_f64());
        self.commit_window.record(latency);
    }

    /// Records one fsync.
    pub fn observe_fsync(&self, latency: Duration) {
        self.fsync_latency.observe(latency.as_secs_f64());
        self.fsync_window.record(latency);
    }

    /// Sets where per-peer traffic counters come from.
    pub fn set_traffic_source(&self, source: Arc<dyn TrafficSource>) {
        *self.traffic.lock() = Some(source);
    }

    /// Connects the metrics to a KV service: commit latencies and leader changes.
    pub fn attach(self: &Arc<Self>, kv: &KvService) {
        let metrics = Arc::downgrade(self);
        kv.set_latency_observer(Arc::new(move |latency| {
            if let Some(m) = metrics.upgrade() {
                m.observe_commit(latency);
            }
        }));
        tokio::spawn(count_leader_changes(
            Arc::downgrade(self),
            kv.raft().clone(),
        ));
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self, kv: &KvService) -> String {
        let status = kv.raft().status();
        let counters = kv.counters();
        mirror(
            &self.proposals,
            counters.writes_proposed.load(Ordering::Relaxed),
        );
        mirror(
            &self.commits,
            counters.writes_committed.load(Ordering::Relaxed),
        );
        mirror(
            &self.snapshots_taken,
            counters.snapshots_taken.load(Ordering::Relaxed),
        );
        mirror(
            &self.snapshots_installed,
            counters.snapshots_installed.load(Ordering::Relaxed),
        );
        self.snapshot_bytes
            .set(counters.last_snapshot_bytes.load(Ordering::Relaxed) as i64);
        self.term.set(status.current_term as i64);
        let serving = kv.stopped_reason().is_none();
        self.serving.set(serving as i64);
        self.storage_available
            .set(status.storage_unavailable.is_none() as i64);
        self.is_leader
            .set((serving && status.role == Role::Leader) as i64);
        self.commit_index.set(status.commit_index as i64);
        let applied = kv.applied_index();
        self.applied_index.set(applied as i64);
        self.apply_lag
            .set(status.commit_index.saturating_sub(applied) as i64);
        let membership = &status.membership.membership;
        let voters = membership
            .members()
            .into_iter()
            .filter(|&m| membership.is_voter(m));
        self.voters.set(voters.count() as i64);
        self.learners.set(membership.learners().len() as i64);
        self.configuration_joint.set(membership.is_joint() as i64);
        self.configuration_index.set(status.membership.index as i64);
        self.configuration_committed
            .set(status.membership.committed as i64);
        self.transfer_target
            .set(status.transfer_to.unwrap_or(0) as i64);
        let source = self.traffic.lock().clone();
        if let Some(source) = source {
            for t in source.traffic() {
                let peer = t.peer.to_string();
                mirror(&self.peer_rpcs.with_label_values(&[&peer]), t.rpcs);
                mirror(
                    &self.peer_bytes_sent.with_label_values(&[&peer]),
                    t.bytes_sent,
                );
                mirror(
                    &self.peer_bytes_received.with_label_values(&[&peer]),
                    t.bytes_received,
                );
                mirror(&self.peer_errors.with_label_values(&[&peer]), t.errors);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory does not fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Brings a counter up to a value counted elsewhere.
fn mirror(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

async fn count_leader_changes(metrics: std::sync::Weak<Metrics>, raft: Raft) {
    let mut leadership = raft.leadership();
    let mut leader = leadership.borrow().leader_id;
    while leadership.changed().await.is_ok() {
        let now = leadership.borrow().leader_id;
        if now.is_some() && now != leader {
            let Some(metrics) = metrics.upgrade() else {
                return;
            };
            metrics.leader_changes.inc();
            tracing::info!(
                leader = now,
                term = leadership.borrow().term,
                "leader changed"
            );
        }
        leader = now;
    }
}
