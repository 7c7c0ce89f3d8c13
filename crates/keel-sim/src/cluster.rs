//! The cluster fixture: n nodes on the simulated network, the helpers the course test suites use
//! (`check_one_leader`, `one`, `wait`, ...), and invariant checks that run all the time.
//!
//! Checked as the run goes, failing it at once with node, index, term and seed:
//! - every node applies the same command at each index, in order, without gaps, and a snapshot
//!   it receives holds exactly what the others applied (state machine safety);
//! - at most one node sends AppendEntries as leader of a term (election safety);
//! - a new leader's log holds every entry committed in an earlier term (leader completeness);
//! - when an entry is first applied, the nodes whose disks hold it durably form a quorum of a
//!   configuration it could have been committed under: the one in force at its index, or one
//!   appended after it (a leader commits by its latest configuration); a quorum of a joint
//!   configuration is a majority of each half (with simulated storage, whose disks the
//!   fixture can read).
//!
//! Membership: the cluster starts with voters `0..n`; [`Cluster::add_node`] starts a node that
//! joins later (with no configuration of its own until the leader sends one), and
//! [`Cluster::change`] runs a membership call on whichever node leads.
//!
//! Checked at the end of a scenario: live nodes' logs agree on every index where they hold
//! entries of the same term, and on everything before it (log matching).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use keel::{
    Applied, ApplyStream, Config, Entry, Membership, MembershipError, MembershipStatus, NodeId,
    Payload, Raft, Request, Role, Snapshot, Storage,
};
use keel_disk::{DiskOptions, DiskStorage};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::net::SimNet;
use crate::runner::Sim;
use crate::storage::{SimDisk, SimStorage};

/// Distinguishes the temporary directories of clusters in one process.
static NEXT_CLUSTER: AtomicU64 = AtomicU64::new(0);

/// The election timeout the course suites reason with: tests wait multiples of it.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);

/// Applied entries between the snapshots a snapshotting cluster takes.
pub const SNAPSHOT_INTERVAL: u64 = 10;

/// Starts the service that consumes node `i`'s apply stream, in place of the fixture's own
/// checker (the KV scenarios run their store this way); returns the service's task, which a
/// crash aborts.
pub type ServiceFactory = Arc<dyn Fn(usize, Raft, ApplyStream) -> JoinHandle<()> + Send + Sync>;

/// Which storage the nodes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// [`SimStorage`]: in memory, durable after a simulated fsync delay; runs replay exactly.
    Simulated,
    /// `keel_disk::DiskStorage` in a temporary directory per node: real files and fsyncs; a
    /// crash leaves the files as they are. Runs do not replay exactly (real I/O takes real
    /// time), but every check applies.
    Disk,
}

/// The disk storage of node `i`: preallocated segments, as a real node has, but small ones, so
/// that the scenarios roll, preallocate and delete segments without writing much.
fn disk_options(i: usize) -> DiskOptions {
    DiskOptions {
        segment_size_bytes: 256 << 10,
        ..DiskOptions::new(i as u64, 1)
    }
}

/// How a cluster is built.
#[derive(Clone)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Start with a reliable network.
    pub reliable: bool,
    /// Have every node snapshot every [`SNAPSHOT_INTERVAL`] applied entries.
    pub snapshots: bool,
    /// Longest simulated time a write takes to become durable.
    pub max_fsync: Duration,
    /// The nodes' configuration (the seed is set per node by the fixture).
    pub config: Config,
    /// Fault injection for testing the fixture itself: a crash wipes the node's disk, so it
    /// forgets its term, vote and log. The safety checks must catch the consequences.
    pub amnesia: bool,
    /// A service to run on each node instead of the fixture's apply checker.
    pub service: Option<ServiceFactory>,
    /// The nodes' storage.
    pub storage: StorageKind,
}

impl ClusterOptions {
    /// `nodes` nodes, course-lab timing, 1 ms fsync.
    pub fn new(nodes: usize) -> Self {
        ClusterOptions {
            nodes,
            reliable: true,
            snapshots: false,
            max_fsync: Duration::from_millis(1),
            config: Config {
                // Small chunks, so that snapshot transfers take several RPCs in the scenarios.
                snapshot_chunk_bytes: 1024,
                ..Config::fast_elections()
            },
            amnesia: false,
            service: None,
            storage: StorageKind::Simulated,
        }
    }

    /// Uses `storage` for the nodes.
    pub fn storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
        self
    }

    /// Starts with an unreliable network.
    pub fn unreliable(mut self) -> Self {
        self.reliable = false;
        self
    }

    /// Snapshots every [`SNAPSHOT_INTERVAL`] entries.
    pub fn snapshots(mut self) -> Self {
        self.snapshots = true;
        self
    }
}

/// An n-node cluster on the simulated network. Node ids are `0..n`.
pub struct Cluster {
    sim: Sim,
    name: String,
    options: ClusterOptions,
    net: SimNet,
    /// The voters the cluster started with.
    members: Vec<NodeId>,
    /// Where disk-backed nodes keep their data dirs.
    root: PathBuf,
    nodes: Mutex<Vec<Node>>,
    checker: Arc<Mutex<Checker>>,
    started: Instant,
    _dirs: Option<TempDirs>,
}

struct Node {
    raft: Option<Raft>,
    disk: SimDisk,
    /// For [`StorageKind::Disk`]: the node's data dir.
    dir: PathBuf,
    storage: Option<NodeStorage>,
    consumer: Option<JoinHandle<()>>,
}

enum NodeStorage {
    Simulated(Arc<SimStorage>),
    Disk(Arc<DiskStorage>),
}

/// Temporary data dirs of a disk-backed cluster, removed when it ends.
struct TempDirs(PathBuf);

impl Drop for TempDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Background proposals (see [`Cluster::start_load`]).
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    proposed: Arc<Mutex<Vec<(u64, Bytes)>>>,
    task: JoinHandle<()>,
}

impl Load {
    /// Stops proposing; returns every proposal a leader took, with its index.
    pub async fn stop(self) -> Vec<(u64, Bytes)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        std::mem::take(&mut *self.proposed.lock())
    }
}

/// What the nodes applied, and the leaders seen per term.
struct Checker {
    /// Per node: index -> command (empty for a no-op), as applied in this incarnation.
    logs: Vec<BTreeMap<u64, Bytes>>,
    last_applied: Vec<u64>,
    /// Every entry any node applied: index -> (term, command).
    committed: BTreeMap<u64, (u64, Bytes)>,
    leaders: BTreeMap<u64, NodeId>,
    rafts: Vec<Option<Raft>>,
    /// Each node's disk, for the quorum check (simulated storage only).
    disks: Vec<Option<SimDisk>>,
    /// The configuration the cluster started with, and each applied configuration entry.
    committed_configs: BTreeMap<u64, Membership>,
    /// Every configuration seen in force on some node, by log index.
    seen_configs: BTreeMap<u64, Vec<Membership>>,
}

impl Cluster {
    /// Builds, starts and connects the cluster. Must run inside [`crate::run`].
    pub fn new(sim: &Sim, name: &str, options: ClusterOptions) -> Cluster {
        let n = options.nodes;
        let net = SimNet::new(sim.rng.clone());
        net.set_reliable(options.reliable);
        let members: Vec<NodeId> = (0..n as NodeId).collect();
        let checker = Arc::new(Mutex::new(Checker {
            logs: vec![BTreeMap::new(); n],
            last_applied: vec![0; n],
            committed: BTreeMap::new(),
            leaders: BTreeMap::new(),
            rafts: vec![None; n],
            disks: vec![None; n],
            committed_configs: BTreeMap::from([(
                0,
                Membership::with_voters(members.iter().copied()),
            )]),
            seen_configs: BTreeMap::new(),
        }));
        let observer_checker = checker.clone();
        let observer_sim = sim.clone();
        net.set_observer(Arc::new(move |_from, _to, request| {
            if let Request::AppendEntries(append) = request {
                observer_checker
                    .lock()
                    .leader_seen(&observer_sim, append.term, append.leader_id);
            }
        }));
        let root = std::env::temp_dir().join(format!(
            "keel-sim-{}-{}-{}",
            std::process::id(),
            name,
            NEXT_CLUSTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let dirs = (options.storage == StorageKind::Disk).then(|| TempDirs(root.clone()));
        let cluster = Cluster {
            sim: sim.clone(),
            name: name.to_string(),
            members,
            root: root.clone(),
            nodes: Mutex::new(
                (0..n)
                    .map(|i| Node {
                        raft: None,
                        disk: SimDisk::new(),
                        dir: root.join(format!("node{i}")),
                        storage: None,
                        consumer: None,
                    })
                    .collect(),
            ),
            options,
            net,
            checker,
            started: Instant::now(),
            _dirs: dirs,
        };
        for i in 0..n {
            cluster.start_node(i);
            cluster.connect(i);
        }
        cluster
    }

    /// Number of nodes: those the cluster started with, and those added since.
    pub fn n(&self) -> usize {
        self.nodes.lock().len()
    }

    /// Starts a new node, connected, that joins the cluster later: it has no configuration
    /// until the leader adds it ([`Cluster::change`] with `Raft::add_learner`) and sends it the
    /// log or a snapshot. Returns its index (and id).
    pub fn add_node(&self) -> usize {
        let i = {
            let mut nodes = self.nodes.lock();
            let i = nodes.len();
            nodes.push(Node {
                raft: None,
                disk: SimDisk::new(),
                dir: self.root.join(format!("node{i}")),
                storage: None,
                consumer: None,
            });
            let mut checker = self.checker.lock();
            checker.logs.push(BTreeMap::new());
            checker.last_applied.push(0);
            checker.rafts.push(None);
            checker.disks.push(None);
            i
        };
        self.start_node(i);
        self.connect(i);
        i
    }

    /// The node that leads among the connected ones, if exactly one claims to (in the newest
    /// term); no waiting.
    pub fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for i in 0..self.n() {
            if !self.connected(i) {
                continue;
            }
            if let Some(raft) = self.raft(i) {
                let status = raft.status();
                if status.role == Role::Leader
                    && best.is_none_or(|(term, _)| status.current_term > term)
                {
                    best = Some((status.current_term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Runs a membership call (`Raft::add_learner`, `promote`, ...) on the leader, retrying on
    /// another leader, or later, while the answer says the call may yet succeed (no leader,
    /// leadership lost, another change in flight, a learner still catching up), for up to
    /// `patience` of simulated time. Returns the last answer.
    pub async fn change<F, Fut>(
        &self,
        patience: Duration,
        call: F,
    ) -> Result<Membership, MembershipError>
    where
        F: Fn(Raft) -> Fut,
        Fut: std::future::Future<Output = Result<Membership, MembershipError>>,
    {
        let deadline = Instant::now() + patience;
        loop {
            let answer = match self.leader().and_then(|i| self.raft(i)) {
                Some(raft) => call(raft).await,
                None => Err(MembershipError::NotLeader { leader_hint: None }),
            };
            let retry = matches!(
                answer,
                Err(MembershipError::NotLeader { .. }
                    | MembershipError::LeadershipLost
                    | MembershipError::NotReady
                    | MembershipError::ChangeInProgress(_)
                    | MembershipError::NotCaughtUp { .. }
                    | MembershipError::Busy(_))
            );
            if !retry || Instant::now() >= deadline {
                return answer;
            }
            self.sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts proposing a new command every `interval` to whichever node leads, until
    /// [`Load::stop`]: the load membership changes and transfers run under.
    pub fn start_load(self: &Arc<Self>, interval: Duration) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let proposed = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (c, stop, proposed) = (self.clone(), stop.clone(), proposed.clone());
            async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let cmd = command(1_000_000_000 + n);
                    if let Some(raft) = c.leader().and_then(|i| c.raft(i))
                        && let Ok(p) = raft.propose(cmd.clone())
                    {
                        proposed.lock().push((p.index, cmd));
                    }
                    tokio::time::sleep(interval).await;
                }
            }
        });
        Load {
            stop,
            proposed,
            task,
        }
    }

    /// Waits until every node of `members` has applied the highest index any node applied,
    /// then checks that each of them applied every command of `proposals` that was
    /// acknowledged (applied by some node at the index it was proposed at): no acknowledged
    /// write was lost. Returns how many were acknowledged.
    pub async fn check_acknowledged(&self, members: &[usize], proposals: &[(u64, Bytes)]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (target, behind) = {
                let checker = self.checker.lock();
                let target = checker.last_applied.iter().copied().max().unwrap_or(0);
                let behind: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|&m| checker.last_applied[m] < target)
                    .collect();
                (target, behind)
            };
            if behind.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {behind:?} did not apply through index {target} within 30 s"
            );
            self.sleep(Duration::from_millis(50)).await;
        }
        let checker = self.checker.lock();
        let mut acknowledged = 0;
        for (index, cmd) in proposals {
            if checker.committed.get(index).map(|(_, c)| c) != Some(cmd) {
                continue;
            }
            acknowledged += 1;
            for &m in members {
                assert_eq!(
                    checker.logs[m].get(index),
                    Some(cmd),
                    "node {m} lacks the acknowledged write {} at index {index}",
                    show(cmd)
                );
            }
        }
        acknowledged
    }

    /// The configuration in force on node `i`, if it runs.
    pub fn membership(&self, i: usize) -> Option<MembershipStatus> {
        self.raft(i).map(|r| r.status().membership)
    }

    /// The simulated network.
    pub fn net(&self) -> &SimNet {
        &self.net
    }

    /// The run's random source.
    pub fn rand(&self, n: u64) -> u64 {
        self.sim.rng.below(n)
    }

    /// A random command, as the course suites propose.
    pub fn random_command(&self) -> Bytes {
        command(self.sim.rng.next_u64() % 1_000_000_000)
    }

    /// The live incarnation of node `i`, if it is running.
    pub fn raft(&self, i: usize) -> Option<Raft> {
        self.nodes.lock()[i].raft.clone()
    }

    /// Sleeps `duration` of simulated time.
    pub async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// Reconnects node `i` to the others.
    pub fn connect(&self, i: usize) {
        self.net.set_connected(i as NodeId, true);
    }

    /// Cuts node `i` off from the others.
    pub fn disconnect(&self, i: usize) {
        self.net.set_connected(i as NodeId, false);
    }

    /// Whether node `i` is connected.
    pub fn connected(&self, i: usize) -> bool {
        self.net.is_connected(i as NodeId)
    }

    /// Sets whether the network drops and delays messages.
    pub fn set_reliable(&self, reliable: bool) {
        self.net.set_reliable(reliable);
    }

    /// Splits the nodes into groups that reach only their own group (as the course's
    /// `partition`); client endpoints keep the links [`SimNet::set_client_links`] gave them.
    pub fn partition(&self, groups: &[&[usize]]) {
        let groups: Vec<Vec<NodeId>> = groups
            .iter()
            .map(|g| g.iter().map(|&i| i as NodeId).collect())
            .collect();
        let refs: Vec<&[NodeId]> = groups.iter().map(Vec::as_slice).collect();
        self.net.partition(&refs);
    }

    /// Sets whether replies are held back for long times.
    pub fn set_long_reordering(&self, on: bool) {
        self.net.set_long_reordering(on);
    }

    /// Starts (or restarts) node `i` from its disk: a crash first if it is running. Like the
    /// course's `start1`, it leaves the node's connectivity as it is (a crash disconnects).
    pub async fn start(&self, i: usize) {
        self.crash(i).await;
        self.start_node(i);
    }

    fn start_node(&self, i: usize) {
        let mut nodes = self.nodes.lock();
        let node = &mut nodes[i];
        let (storage, dyn_storage): (NodeStorage, Arc<dyn Storage>) = match self.options.storage {
            StorageKind::Simulated => {
                let s = SimStorage::open(&node.disk, self.sim.rng.clone(), self.options.max_fsync);
                (NodeStorage::Simulated(s.clone()), s)
            }
            StorageKind::Disk => {
                let s = Arc::new(
                    DiskStorage::open(&node.dir, disk_options(i))
                        .unwrap_or_else(|e| panic!("node {i} cannot open its data dir: {e}")),
                );
                (NodeStorage::Disk(s.clone()), s)
            }
        };
        let config = Config {
            rng_seed: Some(self.sim.rng.next_u64()),
            ..self.options.config.clone()
        };
        // Nodes added later start with no configuration: they wait to be added.
        let bootstrap = if i < self.members.len() {
            self.members.clone()
        } else {
            Vec::new()
        };
        let disk = match &storage {
            NodeStorage::Simulated(_) => Some(node.disk.clone()),
            NodeStorage::Disk(_) => None,
        };
        let (raft, stream) = Raft::new(
            i as NodeId,
            bootstrap,
            config,
            dyn_storage,
            self.net.transport(i as NodeId),
        )
        .expect("the fixture's configuration is valid");
        {
            let mut checker = self.checker.lock();
            checker.logs[i].clear();
            checker.last_applied[i] = 0;
            checker.rafts[i] = Some(raft.clone());
            checker.disks[i] = disk;
        }
        self.net.attach(raft.clone());
        node.consumer = Some(match &self.options.service {
            Some(factory) => factory(i, raft.clone(), stream),
            None => tokio::spawn(consume(
                self.sim.clone(),
                self.checker.clone(),
                i,
                raft.clone(),
                stream,
                self.options.snapshots,
            )),
        });
        node.raft = Some(raft);
        node.storage = Some(storage);
    }

    /// Crashes node `i`: writes not yet durable are lost, in-flight replies are dropped, its
    /// tasks stop and it is disconnected. Its disk is kept for a restart.
    pub async fn crash(&self, i: usize) {
        self.disconnect(i);
        let (raft, disk) = {
            let mut nodes = self.nodes.lock();
            let node = &mut nodes[i];
            let mut disk = None;
            match node.storage.take() {
                Some(NodeStorage::Simulated(storage)) => storage.crash(),
                Some(NodeStorage::Disk(storage)) => disk = Some(storage),
                None => {}
            }
            if self.options.amnesia {
                node.disk = SimDisk::new();
                let _ = std::fs::remove_dir_all(&node.dir);
            }
            self.net.detach(i as NodeId);
            if let Some(consumer) = node.consumer.take() {
                consumer.abort();
            }
            self.checker.lock().rafts[i] = None;
            (node.raft.take(), disk)
        };
        if let Some(disk) = disk {
            // Unwritten batches are dropped; the files stay as they are, as after a power cut
            // that spared what the OS already had.
            disk.crash().await;
        }
        if let Some(raft) = raft {
            raft.shutdown().await;
        }
    }

    /// Checks that exactly one connected node leads (in the newest term with a leader) and
    /// returns it; retries for about 5 s of simulated time, as the course suites do.
    pub async fn check_one_leader(&self) -> usize {
        for _ in 0..10 {
            let ms = 450 + self.rand(100);
            self.sleep(Duration::from_millis(ms)).await;
            let mut leaders: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
            for i in 0..self.n() {
                if !self.connected(i) {
                    continue;
                }
                if let Some(raft) = self.raft(i) {
                    let status = raft.status();
                    if status.role == Role::Leader {
                        leaders.entry(status.current_term).or_default().push(i);
                    }
                }
            }
            for (term, ids) in &leaders {
                assert!(
                    ids.len() <= 1,
                    "term {term} has {} leaders: {ids:?}",
                    ids.len()
                );
            }
            if let Some((_, ids)) = leaders.last_key_value() {
                return ids[0];
            }
        }
        panic!("expected one leader, got none");
    }

    /// Checks that every connected node is in the same term, and returns it.
    pub fn check_terms(&self) -> u64 {
        let mut term = None;
        for i in 0..self.n() {
            if !self.connected(i) {
                continue;
            }
            if let Some(raft) = self.raft(i) {
                let t = raft.status().current_term;
                match term {
                    None => term = Some(t),
                    Some(x) => assert_eq!(x, t, "servers disagree on term"),
                }
            }
        }
        term.expect("no connected node")
    }

    /// Checks that no connected node believes it leads.
    pub fn check_no_leader(&self) {
        for i in 0..self.n() {
            if !self.connected(i) {
                continue;
            }
            if let Some(raft) = self.raft(i) {
                assert_ne!(
                    raft.status().role,
                    Role::Leader,
                    "expected no leader among connected servers, but node {i} claims to be leader"
                );
            }
        }
    }

    /// The term node `i` is in, if it runs.
    pub fn term(&self, i: usize) -> Option<u64> {
        self.raft(i).map(|r| r.status().current_term)
    }

    /// How many nodes have applied an entry at `index`, and its command (empty for a no-op).
    pub fn n_committed(&self, index: u64) -> (usize, Option<Bytes>) {
        let checker = self.checker.lock();
        let mut count = 0;
        let mut command: Option<Bytes> = None;
        for (i, log) in checker.logs.iter().enumerate() {
            if let Some(c) = log.get(&index) {
                if let Some(prev) = &command {
                    assert_eq!(
                        prev, c,
                        "committed values do not match: index {index}, node {i}"
                    );
                }
                count += 1;
                command = Some(c.clone());
            }
        }
        (count, command)
    }

    /// Proposes `cmd` at each node in turn until a leader takes it, then waits for at least
    /// `expected` nodes to apply it; with `retry`, starts over (for up to 10 s) if it did not
    /// commit within 2 s. Returns its index. Fails the scenario if it never commits.
    pub async fn one(&self, cmd: Bytes, expected: usize, retry: bool) -> u64 {
        let t0 = Instant::now();
        let mut starts = 0;
        while t0.elapsed() < Duration::from_secs(10) {
            let mut index = None;
            for _ in 0..self.n() {
                starts = (starts + 1) % self.n();
                if !self.connected(starts) {
                    continue;
                }
                if let Some(raft) = self.raft(starts)
                    && let Ok(proposed) = raft.propose(cmd.clone())
                {
                    index = Some(proposed.index);
                    break;
                }
            }
            if let Some(index) = index {
                let t1 = Instant::now();
                while t1.elapsed() < Duration::from_secs(2) {
                    let (nd, c) = self.n_committed(index);
                    if nd > 0 && nd >= expected && c.as_ref() == Some(&cmd) {
                        return index;
                    }
                    self.sleep(Duration::from_millis(20)).await;
                }
                assert!(retry, "one({}) failed to reach agreement", show(&cmd));
            } else {
                self.sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("one({}) failed to reach agreement in 10 s", show(&cmd));
    }

    /// Waits until at least `n` nodes applied `index` and returns its command, or `None` if
    /// some node moved past `start_term` (the entry may then never commit).
    pub async fn wait(&self, index: u64, n: usize, start_term: Option<u64>) -> Option<Bytes> {
        let mut to = Duration::from_millis(10);
        for _ in 0..30 {
            let (nd, _) = self.n_committed(index);
            if nd >= n {
                break;
            }
            self.sleep(to).await;
            if to < Duration::from_secs(1) {
                to *= 2;
            }
            if let Some(start_term) = start_term {
                for i in 0..self.n() {
                    if self.term(i).is_some_and(|t| t > start_term) {
                        return None;
                    }
                }
            }
        }
        let (nd, cmd) = self.n_committed(index);
        assert!(nd >= n, "only {nd} decided for index {index}; wanted {n}");
        cmd
    }

    /// RPCs delivered to all nodes so far.
    pub fn rpc_total(&self) -> u64 {
        (0..self.n())
            .map(|i| self.net.traffic(i as NodeId).rpcs_received)
            .sum()
    }

    /// Bytes of requests and replies sent so far.
    pub fn bytes_total(&self) -> u64 {
        self.net.bytes_total()
    }

    /// The largest persisted Raft state (hard state and log, without snapshot) of any running
    /// node (of any node, with simulated storage).
    pub fn log_size(&self) -> usize {
        let nodes = self.nodes.lock();
        nodes
            .iter()
            .map(|n| match &n.storage {
                Some(NodeStorage::Disk(d)) => d.raft_state_size(),
                _ => n.disk.raft_state_size(),
            })
            .max()
            .unwrap_or(0)
    }

    /// The largest persisted snapshot of any running node (of any node, with simulated
    /// storage).
    pub fn snapshot_size(&self) -> usize {
        let nodes = self.nodes.lock();
        nodes
            .iter()
            .map(|n| match &n.storage {
                Some(NodeStorage::Disk(d)) => d.snapshot_size(),
                _ => n.disk.snapshot_size(),
            })
            .max()
            .unwrap_or(0)
    }

    /// Ends the scenario: checks log matching across live nodes, prints a summary line with the
    /// trace hash, and shuts every node down.
    pub async fn end(self) {
        if let Some(failure) = self.sim.failure() {
            panic!("{failure}");
        }
        self.check_log_matching();
        let (trace, events) = self.net.trace();
        self.sim.set_trace((trace, events));
        println!(
            "{}: seed {} ok: {:.1} s simulated, {} RPCs, {} bytes, {} events, trace {:016x}",
            self.name,
            self.sim.seed,
            self.started.elapsed().as_secs_f64(),
            self.rpc_total(),
            self.bytes_total(),
            events,
            trace
        );
        for i in 0..self.n() {
            self.crash(i).await;
        }
    }

    /// Log matching (Figure 3): if two logs hold an entry with the same index and term, they
    /// are identical up to it.
    pub fn check_log_matching(&self) {
        let rafts: Vec<(usize, Raft)> = (0..self.n())
            .filter_map(|i| self.raft(i).map(|r| (i, r)))
            .collect();
        for (x, (i, a)) in rafts.iter().enumerate() {
            for (j, b) in &rafts[x + 1..] {
                let (last_a, _, snap_a) = a.log_bounds();
                let (last_b, _, snap_b) = b.log_bounds();
                let low = snap_a.max(snap_b) + 1;
                let mut high = last_a.min(last_b);
                while high >= low
                    && a.log_entry(high).map(|e| e.term) != b.log_entry(high).map(|e| e.term)
                {
                    high -= 1;
                }
                for index in low..=high {
                    let (ea, eb) = (a.log_entry(index), b.log_entry(index));
                    assert_eq!(
                        ea, eb,
                        "log matching violated at index {index}: node {i} has {ea:?}, node {j} has \
                         {eb:?}, though both hold the same term at {high}"
                    );
                }
            }
        }
    }
}

impl Checker {
    /// Election safety and leader completeness, on every AppendEntries the network delivers.
    fn leader_seen(&mut self, sim: &Sim, term: u64, leader: NodeId) {
        match self.leaders.get(&term) {
            Some(&known) if known != leader => sim.fail(format!(
                "election safety violated: nodes {known} and {leader} both lead term {term}"
            )),
            Some(_) => {}
            None => {
                self.leaders.insert(term, leader);
                self.check_leader_completeness(sim, term, leader);
            }
        }
    }

    fn check_leader_completeness(&self, sim: &Sim, term: u64, leader: NodeId) {
        let Some(raft) = self.rafts.get(leader as usize).cloned().flatten() else {
            return;
        };
        let status = raft.status();
        // Only the incarnation that won the election can be checked.
        if status.role != Role::Leader || status.current_term != term {
            return;
        }
        for (&index, (entry_term, command)) in self.committed.range(status.snapshot_index + 1..) {
            if *entry_term >= term {
                continue;
            }
            let held = raft.log_entry(index);
            if held.as_ref().map(|e| e.term) != Some(*entry_term) {
                sim.fail(format!(
                    "leader completeness violated: node {leader}, leader of term {term}, lacks \
                     the entry committed at index {index} in term {entry_term} ({}); it holds \
                     {held:?}",
                    show(command)
                ));
                return;
            }
        }
    }

    /// State machine safety for one applied entry; returns a snapshot to take, if due.
    fn apply_entry(
        &mut self,
        sim: &Sim,
        i: usize,
        entry: Entry,
        snapshots: bool,
    ) -> Option<(u64, Bytes)> {
        let command = match &entry.payload {
            Payload::Noop => Bytes::new(),
            Payload::Command(bytes) => bytes.clone(),
            Payload::Config(membership) => Bytes::from(format!("config: {membership}")),
        };
        let expected = self.last_applied[i] + 1;
        if entry.index != expected {
            sim.fail(format!(
                "node {i} applied index {} (term {}) out of order: expected index {expected}",
                entry.index, entry.term
            ));
            return None;
        }
        for (j, log) in self.logs.iter().enumerate() {
            if let Some(other) = log.get(&entry.index)
                && *other != command
            {
                sim.fail(format!(
                    "state machine safety violated at index {} (term {}): node {i} applied {} \
                     but node {j} applied {}",
                    entry.index,
                    entry.term,
                    show(&command),
                    show(other)
                ));
                return None;
            }
        }
        if let Payload::Config(membership) = &entry.payload {
            self.committed_configs
                .insert(entry.index, membership.clone());
        }
        if !self.committed.contains_key(&entry.index) {
            self.check_commit_quorum(sim, entry.index, entry.term);
        }
        match self.committed.get(&entry.index) {
            Some((term, other)) if *term != entry.term || *other != command => {
                sim.fail(format!(
                    "state machine safety violated at index {}: node {i} applied term {} {}, \
                     earlier applied term {term} {}",
                    entry.index,
                    entry.term,
                    show(&command),
                    show(other)
                ));
                return None;
            }
            Some(_) => {}
            None => {
                self.committed
                    .insert(entry.index, (entry.term, command.clone()));
            }
        }
        self.logs[i].insert(entry.index, command);
        self.last_applied[i] = entry.index;
        (snapshots && entry.index.is_multiple_of(SNAPSHOT_INTERVAL))
            .then(|| (entry.index, encode_snapshot(&self.logs[i], entry.index)))
    }

    /// The first node to apply `index`: a quorum of a configuration it could have been
    /// committed under must hold it durably (see the module docs).
    fn check_commit_quorum(&mut self, sim: &Sim, index: u64, term: u64) {
        if self.disks.iter().any(Option::is_none) {
            return; // the real disk storage: its durable state cannot be read here
        }
        for raft in self.rafts.iter().flatten() {
            let status = raft.status().membership;
            let seen = self.seen_configs.entry(status.index).or_default();
            if !seen.contains(&status.membership) {
                seen.push(status.membership);
            }
        }
        let holders: BTreeSet<NodeId> = self
            .disks
            .iter()
            .enumerate()
            .filter(|(_, disk)| disk.as_ref().is_some_and(|d| d.holds(index, term)))
            .map(|(i, _)| i as NodeId)
            .collect();
        let in_force = self
            .committed_configs
            .range(..=index)
            .next_back()
            .map(|(_, m)| m.clone())
            .expect("the starting configuration is at index 0");
        let later = self
            .seen_configs
            .range(index + 1..)
            .flat_map(|(_, ms)| ms.iter().cloned());
        let mut candidates = std::iter::once(in_force.clone()).chain(later);
        if candidates.any(|m| is_quorum(&m, &holders)) {
            return;
        }
        sim.fail(format!(
            "commit without a quorum: index {index} (term {term}) is durable only on nodes \
             {holders:?}, which is no quorum of {in_force} (in force at it), nor of any \
             configuration seen after it"
        ));
    }

    /// A snapshot replaces what node `i` applied; it must hold exactly what the others applied.
    fn ingest_snapshot(&mut self, sim: &Sim, i: usize, snapshot: Snapshot) {
        let index = snapshot.meta.last_included_index;
        if index <= self.last_applied[i] {
            sim.fail(format!(
                "node {i} received a snapshot at index {index}, not past its last applied index {}",
                self.last_applied[i]
            ));
            return;
        }
        let Some(log) = decode_snapshot(snapshot.data) else {
            sim.fail(format!(
                "node {i} received an undecodable snapshot at index {index}"
            ));
            return;
        };
        for (entry_index, command) in &log {
            if *entry_index > index {
                sim.fail(format!(
                    "node {i}'s snapshot at {index} holds an entry at {entry_index}"
                ));
                return;
            }
            match self.committed.get(entry_index) {
                Some((_, c)) if c == command => {}
                other => {
                    sim.fail(format!(
                        "node {i}'s snapshot at {index} holds {} at index {entry_index}, but \
                         the cluster applied {:?} there",
                        show(command),
                        other.map(|(_, c)| show(c))
                    ));
                    return;
                }
            }
        }
        self.logs[i] = log;
        self.last_applied[i] = index;
    }
}

/// Feeds node `i`'s apply stream to the checker, and takes snapshots when due.
async fn consume(
    sim: Sim,
    checker: Arc<Mutex<Checker>>,
    i: usize,
    raft: Raft,
    mut stream: ApplyStream,
    snapshots: bool,
) {
    while let Some(batch) = stream.next_batch().await {
        for item in batch {
            let due = {
                let mut checker = checker.lock();
                match item {
                    Applied::Entry(entry) => checker.apply_entry(&sim, i, entry, snapshots),
                    Applied::Snapshot(snapshot) => {
                        checker.ingest_snapshot(&sim, i, snapshot);
                        None
                    }
                }
            };
            if let Some((index, data)) = due
                && let Err(error) = raft.snapshot(index, data)
                && raft.is_running()
            {
                sim.fail(format!("node {i} refused a snapshot at {index}: {error}"));
            }
        }
    }
}

/// The fixture's snapshot: every command applied through `index`.
fn encode_snapshot(log: &BTreeMap<u64, Bytes>, index: u64) -> Bytes {
    let mut out = BytesMut::new();
    for (i, command) in log.range(..=index) {
        out.put_u64_le(*i);
        out.put_u32_le(command.len() as u32);
        out.put_slice(command);
    }
    out.freeze()
}

fn decode_snapshot(mut data: Bytes) -> Option<BTreeMap<u64, Bytes>> {
    let mut log = BTreeMap::new();
    while data.has_remaining() {
        if data.remaining() < 12 {
            return None;
        }
        let index = data.get_u64_le();
        let len = data.get_u32_le() as usize;
        if data.remaining() < len {
            return None;
        }
        log.insert(index, data.split_to(len));
    }
    Some(log)
}

/// Whether `nodes` hold a majority of each voter set of `membership`.
fn is_quorum(membership: &Membership, nodes: &BTreeSet<NodeId>) -> bool {
    std::iter::once(membership.voters())
        .chain(membership.outgoing_voters())
        .all(|voters| !voters.is_empty() && voters.intersection(nodes).count() > voters.len() / 2)
}

/// A command carrying `value`, as the course suites' integer commands.
pub fn command(value: u64) -> Bytes {
    Bytes::from(value.to_string())
}

fn show(command: &Bytes) -> String {
    if command.is_empty() {
        return "no-op".into();
    }
    match std::str::from_utf8(command) {
        Ok(s) if s.len() <= 40 => format!("{s:?}"),
        _ => format!("<{} bytes>", command.len()),
    }
}
