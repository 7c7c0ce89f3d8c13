//! The KV cluster fixture: the simulator's cluster with a [`KvService`] on every node, and the
//! clerks that reach the services through the simulated network, all recording into one
//! [`History`].
//!
//! The cluster can grow: [`KvCluster::add_server`] starts a server that is no member until a
//! membership change ([`KvCluster::change`]) adds it, and clerks that reach every server reach
//! it too. A server a change removed can be retired ([`KvCluster::retire_server`]): clerks no
//! longer reach it, as clients whose server list follows the configuration.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keel::{Membership, MembershipError, MembershipStatus, NodeId, Raft};
use keel_kv::{KvOptions, KvService};
use keel_sim::{Cluster, ClusterOptions, ServiceFactory, Sim};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::clerk::Clerk;
use crate::history::History;

/// How long a server lets a request wait for a leader, a quorum or its commit before it
/// answers `Timeout` (about an election timeout, like the course's servers).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// Clerks' network endpoints are numbered from here, clear of the servers' ids.
const CLERK_ENDPOINT_BASE: NodeId = 1000;

/// `max_raft_state_bytes` of a service that never snapshots.
pub const NO_SNAPSHOTS: u64 = u64::MAX;

/// The course's `maxraftstate` for the snapshot scenarios.
pub const MAX_RAFT_STATE_BYTES: u64 = 1000;

/// The service each node runs now, as the cluster's service factory started it.
///
/// A client call reaches a node through [`keel_sim::SimNet::call_with`], which hands over the
/// node's live Raft handle; the service started on that handle is the one registered here, since
/// the cluster attaches a node's Raft to the network and starts its service in one step, with
/// no await between.
#[derive(Clone)]
pub struct Services(Arc<Mutex<Vec<Option<KvService>>>>);

impl Services {
    fn new() -> Self {
        Services(Arc::new(Mutex::new(Vec::new())))
    }

    /// Records the service node `i` runs now; the registry grows with the cluster.
    fn register(&self, i: usize, service: KvService) {
        let mut services = self.0.lock();
        if services.len() <= i {
            services.resize(i + 1, None);
        }
        services[i] = Some(service);
    }

    /// The service of node `id`, if it was ever started.
    pub fn get(&self, id: NodeId) -> Option<KvService> {
        self.0.lock().get(id as usize).cloned().flatten()
    }
}

/// An n-server KV cluster on the simulated network.
pub struct KvCluster {
    sim: Sim,
    name: &'static str,
    cluster: Cluster,
    services: Services,
    history: History,
    clerks_made: Cell<u64>,
    /// The servers each clerk endpoint reaches, to link clerks to servers added later.
    clerk_links: RefCell<BTreeMap<NodeId, Vec<usize>>>,
    /// Servers out of the clients' reach for good (see [`KvCluster::retire_server`]).
    retired: RefCell<BTreeSet<usize>>,
    /// How many servers the cluster may grow to (see [`KvCluster::growing_to`]).
    max_servers: usize,
}

impl KvCluster {
    /// Starts `servers` KV servers that snapshot when their Raft log passes
    /// `max_raft_state_bytes` ([`NO_SNAPSHOTS`] for never), on a reliable network where calls
    /// to an unreachable server fail within 100 ms (the course's KV setting).
    pub fn new(sim: &Sim, name: &'static str, servers: usize, max_raft_state_bytes: u64) -> Self {
        let services = Services::new();
        let history = History::new();
        let options = KvOptions {
            max_raft_state_bytes,
            request_timeout: REQUEST_TIMEOUT,
            clock: simulated_clock(Instant::now()),
            ..KvOptions::default()
        };
        let registry = services.clone();
        let factory: ServiceFactory = Arc::new(move |i, raft, stream| {
            let (service, task) = KvService::start(raft, stream, options.clone());
            registry.register(i, service);
            task
        });
        let cluster = Cluster::new(
            sim,
            name,
            ClusterOptions {
                service: Some(factory),
                ..ClusterOptions::new(servers)
            },
        );
        cluster.net().set_long_delays(false);
        KvCluster {
            sim: sim.clone(),
            name,
            cluster,
            services,
            history,
            clerks_made: Cell::new(0),
            clerk_links: RefCell::new(BTreeMap::new()),
            retired: RefCell::new(BTreeSet::new()),
            max_servers: servers,
        }
    }

    /// Lets the cluster grow to `max_servers` servers with [`KvCluster::add_server`]. A clerk
    /// tries server ids below the count it was made with, so clerks made from now on try every
    /// id the cluster may ever have, and find the servers added after them.
    pub fn growing_to(self, max_servers: usize) -> Self {
        assert!(
            max_servers >= self.n() && self.clerks_made.get() == 0,
            "set the room to grow before making clerks, to at least the servers there are"
        );
        KvCluster {
            max_servers,
            ..self
        }
    }

    /// Number of servers.
    pub fn n(&self) -> usize {
        self.cluster.n()
    }

    /// Every server, but those retired.
    pub fn all(&self) -> Vec<usize> {
        let retired = self.retired.borrow();
        (0..self.n()).filter(|i| !retired.contains(i)).collect()
    }

    /// A new clerk, with its own client id, whose endpoint reaches exactly `servers`.
    pub fn clerk(&self, servers: &[usize]) -> Clerk {
        let k = self.clerks_made.get();
        self.clerks_made.set(k + 1);
        let endpoint = CLERK_ENDPOINT_BASE + k;
        self.connect_clerk(endpoint, servers);
        Clerk::new(
            self.sim.clone(),
            self.cluster.net().clone(),
            self.services.clone(),
            self.history.clone(),
            endpoint,
            self.max_servers,
        )
    }

    /// Lets the clerk at `endpoint` reach exactly `servers`.
    pub fn connect_clerk(&self, endpoint: NodeId, servers: &[usize]) {
        self.set_links(endpoint, servers);
        self.clerk_links
            .borrow_mut()
            .insert(endpoint, servers.to_vec());
    }

    /// Starts a new server, connected, that is no member yet: a membership change adds it
    /// ([`KvCluster::change`] with `Raft::add_learner`). Clerks that reach every server reach
    /// it too. Returns its index (and node id).
    pub fn add_server(&self) -> usize {
        assert!(
            self.n() < self.max_servers,
            "the cluster may grow to {} servers only (see `KvCluster::growing_to`)",
            self.max_servers
        );
        let everyone = self.all();
        let i = self.cluster.add_node();
        for (&endpoint, servers) in self.clerk_links.borrow_mut().iter_mut() {
            if *servers == everyone {
                servers.push(i);
                self.set_links(endpoint, servers);
            }
        }
        i
    }

    /// Takes server `i`, which a membership change removed, out of every clerk's reach, as a
    /// client's server list follows the configuration; the server itself keeps running (and
    /// may try to disrupt the others). Clerks must not keep asking removed servers: two that
    /// never hear from the leader again can keep pointing a clerk at each other as leader.
    pub fn retire_server(&self, i: usize) {
        self.retired.borrow_mut().insert(i);
        for (&endpoint, servers) in self.clerk_links.borrow_mut().iter_mut() {
            if servers.contains(&i) {
                servers.retain(|&s| s != i);
                self.set_links(endpoint, servers);
            }
        }
    }

    fn set_links(&self, endpoint: NodeId, servers: &[usize]) {
        let ids: Vec<NodeId> = servers.iter().map(|&s| s as NodeId).collect();
        self.cluster.net().set_client_links(endpoint, &ids);
    }

    /// Runs a membership call on whichever server leads, retrying while it may yet succeed,
    /// for up to `patience` (see `keel_sim::Cluster::change`).
    pub async fn change<F, Fut>(
        &self,
        patience: Duration,
        call: F,
    ) -> Result<Membership, MembershipError>
    where
        F: Fn(Raft) -> Fut,
        Fut: Future<Output = Result<Membership, MembershipError>>,
    {
        self.cluster.change(patience, call).await
    }

    /// The configuration in force on server `i`, if it runs.
    pub fn membership(&self, i: usize) -> Option<MembershipStatus> {
        self.cluster.membership(i)
    }

    /// The Raft node of server `i`, if it runs.
    pub fn raft(&self, i: usize) -> Option<Raft> {
        self.cluster.raft(i)
    }

    /// The server that leads now, if exactly one does in the newest term; no waiting.
    pub fn leading(&self) -> Option<usize> {
        self.cluster.leader()
    }

    /// The live service of server `i`.
    pub fn service(&self, i: usize) -> KvService {
        self.services
            .get(i as NodeId)
            .expect("every server's service starts with the cluster")
    }

    /// Sets whether the network loses and delays messages.
    pub fn set_reliable(&self, reliable: bool) {
        self.cluster.set_reliable(reliable);
    }

    /// Splits the servers into groups that reach only their own group; clerks keep their links.
    pub fn partition(&self, groups: &[&[usize]]) {
        self.cluster.partition(groups);
    }

    /// Connects every server to every other (the course's `ConnectAll`).
    pub fn connect_all(&self) {
        self.cluster.net().heal();
        for i in 0..self.n() {
            self.cluster.connect(i);
        }
    }

    /// Crashes every server: what was not durable is lost.
    pub async fn crash_all(&self) {
        for i in 0..self.n() {
            self.cluster.crash(i).await;
        }
    }

    /// Crashes server `i`: what was not durable is lost, and it is cut off until restarted.
    pub async fn crash(&self, i: usize) {
        self.cluster.crash(i).await;
    }

    /// Starts server `i` again from its disk (crashing it first if it runs), and connects it.
    pub async fn restart(&self, i: usize) {
        self.cluster.start(i).await;
        self.cluster.connect(i);
    }

    /// Starts every server again from its disk, and connects it.
    pub async fn restart_all(&self) {
        for i in 0..self.n() {
            self.cluster.start(i).await;
            self.cluster.connect(i);
        }
    }

    /// A server that leads, once exactly one does (waits up to about 5 s).
    pub async fn leader(&self) -> usize {
        self.cluster.check_one_leader().await
    }

    /// The largest persisted Raft state (hard state and log) of any server.
    pub fn log_size(&self) -> usize {
        self.cluster.log_size()
    }

    /// The largest persisted snapshot of any server.
    pub fn snapshot_size(&self) -> usize {
        self.cluster.snapshot_size()
    }

    /// A uniform random number in `0..n`, from the run's seed.
    pub fn rand(&self, n: u64) -> u64 {
        self.sim.rng.below(n)
    }

    /// Sleeps `duration` of simulated time.
    pub async fn sleep(&self, duration: Duration) {
        self.cluster.sleep(duration).await;
    }

    /// Ends the scenario: the simulator's end-of-run checks (log matching), then the whole
    /// client history must be linearizable.
    pub async fn end(self) {
        let operations = self.history.len();
        self.cluster.end().await;
        self.history.assert_linearizable(self.name, self.sim.seed);
        println!(
            "{}: seed {}: {operations} client operations, linearizable",
            self.name, self.sim.seed
        );
    }
}

/// The service's clock: simulated milliseconds since `epoch`, so that runs replay.
fn simulated_clock(epoch: Instant) -> keel_kv::Clock {
    Arc::new(move || epoch.elapsed().as_millis() as u64)
}
