//! The course's GenericTest: for a few rounds, clients append to and read keys while the
//! scenario loses messages, partitions the servers at random, or crashes and restarts all of
//! them. With one key per client, each client checks every read against the value its own
//! appends built, and at the end of each round its appends must all be in its key, once and in
//! order. The whole history must be linearizable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keel_check::{AppendOutcome, ClientAppends, check_appends};
use keel_sim::{ELECTION_TIMEOUT, Sim};
use tokio::task::JoinHandle;

use crate::clerk::Clerk;
use crate::cluster::{KvCluster, MAX_RAFT_STATE_BYTES, NO_SNAPSHOTS};

/// Rounds of client load (the course's NITER).
const ROUNDS: usize = 3;

/// Simulated time clients run in each round.
const CLIENT_LOAD: Duration = Duration::from_secs(5);

/// Clients pause up to this long between requests. Requests on the simulated network take a
/// few milliseconds, so without pauses a round would be tens of thousands of operations:
/// simulated time is cheap, CPU time is not.
const CLIENT_PAUSE_MAX: Duration = Duration::from_millis(20);

/// How long a client may take to finish its last request once the round's faults are over.
const CLIENT_FINISH_LIMIT: Duration = Duration::from_secs(30);

/// The shape of one GenericTest scenario.
#[derive(Clone, Copy, Debug)]
pub struct Generic {
    clients: usize,
    servers: usize,
    unreliable: bool,
    restarts: bool,
    partitions: bool,
    max_raft_state_bytes: u64,
    random_keys: bool,
}

impl Generic {
    /// `clients` clients on 5 servers, reliable network, no faults, no snapshots, one key per
    /// client.
    pub fn clients(clients: usize) -> Self {
        Generic {
            clients,
            servers: 5,
            unreliable: false,
            restarts: false,
            partitions: false,
            max_raft_state_bytes: NO_SNAPSHOTS,
            random_keys: false,
        }
    }

    /// On `servers` servers.
    pub fn servers(self, servers: usize) -> Self {
        Generic { servers, ..self }
    }

    /// The network loses and delays messages.
    pub fn unreliable(self) -> Self {
        Generic {
            unreliable: true,
            ..self
        }
    }

    /// Every server crashes and restarts at the end of each round.
    pub fn restarts(self) -> Self {
        Generic {
            restarts: true,
            ..self
        }
    }

    /// Random partitions come and go while the clients run.
    pub fn partitions(self) -> Self {
        Generic {
            partitions: true,
            ..self
        }
    }

    /// Servers snapshot when their Raft state passes [`MAX_RAFT_STATE_BYTES`].
    pub fn snapshots(self) -> Self {
        Generic {
            max_raft_state_bytes: MAX_RAFT_STATE_BYTES,
            ..self
        }
    }

    /// Clients put, append and read random keys shared by all; only linearizability is
    /// checked.
    pub fn random_keys(self) -> Self {
        Generic {
            random_keys: true,
            ..self
        }
    }

    /// Runs the scenario.
    pub async fn run(self, sim: Sim, name: &'static str) {
        let kv = KvCluster::new(&sim, name, self.servers, self.max_raft_state_bytes);
        kv.set_reliable(!self.unreliable);
        let mut checker = kv.clerk(&kv.all());
        for _ in 0..ROUNDS {
            let stop = Arc::new(AtomicBool::new(false));
            let clients: Vec<JoinHandle<ClientAppends>> = (0..self.clients)
                .map(|cli| {
                    let clerk = kv.clerk(&kv.all());
                    tokio::spawn(self.client(sim.clone(), clerk, cli, stop.clone()))
                })
                .collect();
            if self.partitions {
                // Some operations without interruption first.
                kv.sleep(Duration::from_secs(1)).await;
                partition_at_random(&kv, CLIENT_LOAD).await;
            } else {
                kv.sleep(CLIENT_LOAD).await;
            }
            stop.store(true, Ordering::Relaxed);
            if self.partitions {
                // A client may have sent a request to a minority; it completes once that
                // server learns of a newer term.
                kv.connect_all();
                kv.sleep(ELECTION_TIMEOUT).await;
            }
            if self.restarts {
                kv.crash_all().await;
                kv.sleep(ELECTION_TIMEOUT).await;
                kv.restart_all().await;
            }
            for (cli, client) in clients.into_iter().enumerate() {
                let appends = finish(cli, client).await;
                let value = checker.get(&key(cli)).await.unwrap_or_default();
                if !self.random_keys
                    && let Err(error) = check_appends(&value, &[appends])
                {
                    panic!("client {cli}'s key {:?}: {error}", key(cli));
                }
            }
            if self.max_raft_state_bytes == NO_SNAPSHOTS {
                let size = kv.snapshot_size();
                assert_eq!(
                    size, 0,
                    "a server without a log limit took a snapshot of {size} bytes"
                );
            } else {
                // After the servers processed every request and had time to snapshot.
                let size = kv.log_size();
                let max = 8 * self.max_raft_state_bytes as usize;
                assert!(
                    size <= max,
                    "logs were not trimmed: {size} bytes of Raft state > {max}"
                );
            }
        }
        kv.end().await;
    }

    /// One client of one round, until `stop`: appends (half the time), puts (with random
    /// keys, a tenth of the rest) or reads. Returns its appends to its own key.
    async fn client(
        self,
        sim: Sim,
        mut clerk: Clerk,
        cli: usize,
        stop: Arc<AtomicBool>,
    ) -> ClientAppends {
        let mut appends = ClientAppends::new(clerk.client_id());
        // With one key per client: the value this client's own writes built.
        let mut expected = String::new();
        if !self.random_keys {
            clerk.put(&key(cli), "").await;
        }
        let mut j = 0;
        while !stop.load(Ordering::Relaxed) {
            let key = if self.random_keys {
                key(sim.rng.below(self.clients as u64) as usize)
            } else {
                key(cli)
            };
            let token = format!("x {cli} {j} y");
            if sim.rng.chance(500) {
                clerk.append(&key, &token).await;
                if !self.random_keys {
                    expected.push_str(&token);
                    appends.push(token, AppendOutcome::Acknowledged);
                }
                j += 1;
            } else if self.random_keys && sim.rng.chance(100) {
                clerk.put(&key, &token).await;
                j += 1;
            } else {
                let value = clerk.get(&key).await;
                if !self.random_keys && value.as_deref() != Some(expected.as_str()) {
                    sim.fail(format!(
                        "client {cli} read a wrong value of key {key:?}: wanted {expected:?}, got \
                         {value:?}"
                    ));
                    return std::future::pending().await;
                }
            }
            let pause_ms = sim.rng.below(CLIENT_PAUSE_MAX.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        appends
    }
}

/// Client `cli`'s key.
fn key(cli: usize) -> String {
    cli.to_string()
}

/// Waits for a client to finish its last request.
pub async fn finish(cli: usize, client: JoinHandle<ClientAppends>) -> ClientAppends {
    match tokio::time::timeout(CLIENT_FINISH_LIMIT, client).await {
        Ok(Ok(appends)) => appends,
        Ok(Err(error)) => std::panic::resume_unwind(error.into_panic()),
        Err(_) => panic!(
            "client {cli} did not finish its last request within {CLIENT_FINISH_LIMIT:?} after \
             the faults ended"
        ),
    }
}

/// For `duration`, splits the servers into two random groups, again every election timeout
/// plus up to 200 ms (the course's partitioner).
async fn partition_at_random(kv: &KvCluster, duration: Duration) {
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..kv.n() {
            if kv.rand(2) == 0 {
                a.push(i);
            } else {
                b.push(i);
            }
        }
        kv.partition(&[&a, &b]);
        kv.sleep(ELECTION_TIMEOUT + Duration::from_millis(kv.rand(200)))
            .await;
    }
}
