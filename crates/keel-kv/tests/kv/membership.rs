//! Membership changes under client load: servers join as learners and are promoted, voters (the
//! leader among them) leave, leadership is handed over, while members crash and restart and
//! minorities are cut off. Clients append to and read their own key throughout. At the end
//! every client's appends must be in its key once and in order, the whole history must be
//! linearizable, and every member must run under one configuration.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use keel::{Membership, MembershipError, NodeId, Raft, TransferError};
use keel_check::{AppendOutcome, ClientAppends, check_appends};
use keel_sim::{Sim, run};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::SEEDS;
use crate::clerk::Clerk;
use crate::cluster::{KvCluster, MAX_RAFT_STATE_BYTES, NO_SNAPSHOTS};
use crate::generic::finish;

/// Simulated time the membership changes and faults go on for.
const CHURN: Duration = Duration::from_secs(20);

/// The churn keeps between this many voters and [`MAX_VOTERS`]: with three, any one member may
/// fail and the others still commit.
const MIN_VOTERS: usize = 3;

/// The most voters the churn grows to.
const MAX_VOTERS: usize = 5;

/// Servers a churn may start, counting those it removed (which keep running).
const MAX_SERVERS: usize = 12;

/// Clients appending and reading while the membership changes.
const CLIENTS: usize = 5;

/// Clients pause up to this long between requests (as in the generic scenarios: simulated
/// time is cheap, CPU time is not).
const CLIENT_PAUSE_MAX: Duration = Duration::from_millis(20);

/// The membership driver pauses up to this long between steps.
const STEP_PAUSE_MAX: Duration = Duration::from_millis(1000);

/// A fault lasts up to this long before the fault driver repairs it.
const FAULT_MAX: Duration = Duration::from_millis(3000);

/// The fault driver pauses up to this long between faults.
const FAULT_PAUSE_MAX: Duration = Duration::from_millis(1000);

/// How long one membership change may take, retries on new leaders included. Faults last at
/// most [`FAULT_MAX`], so a change still unfinished this long after it started is stuck.
const CHANGE_LIMIT: Duration = Duration::from_secs(30);

/// How long a read may take once the faults are over.
const READ_LIMIT: Duration = Duration::from_secs(30);

/// How long a hand-over may take to answer: it is abandoned after an election timeout, and
/// answers within two.
const TRANSFER_LIMIT: Duration = Duration::from_secs(10);

/// How long the members may take to agree on the configuration once the faults are over.
const AGREEMENT_LIMIT: Duration = Duration::from_secs(10);

/// Servers join, voters (the leader half the time) leave and leadership moves,
/// between three and five voters, while members crash and restart and minorities are cut off.
/// Removed servers keep running (out of the clients' reach), so they may try to disrupt the
/// others. Servers snapshot often, so that new ones catch up from snapshots as well as from
/// the log.
#[test]
fn membership_churn() {
    run("membership_churn", SEEDS, |sim| {
        churn(sim, "membership_churn", Network::Reliable)
    });
}

/// The same churn on a network that loses and delays messages.
#[test]
fn membership_churn_unreliable() {
    run("membership_churn_unreliable", SEEDS, |sim| {
        churn(sim, "membership_churn_unreliable", Network::Unreliable)
    });
}

/// Whether the network loses and delays messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Network {
    Reliable,
    Unreliable,
}

/// The churn scenario: clients run while one driver changes the membership and another
/// injects faults; then the checks.
async fn churn(sim: Sim, name: &'static str, network: Network) {
    let kv = KvCluster::new(&sim, name, MIN_VOTERS, MAX_RAFT_STATE_BYTES).growing_to(MAX_SERVERS);
    kv.set_reliable(network == Network::Reliable);
    let clients = Clients::start(&sim, &kv, CLIENTS);
    let until = Instant::now() + CHURN;
    // Faults come and go on their own schedule, so that they strike membership changes at any
    // point: before a joint configuration reaches the others, in it, after it.
    let (changes, faults) = tokio::join!(change_membership(&kv, until), inject_faults(&kv, until));
    // The fault driver repaired each fault before it returned: every member runs, and the
    // network is whole.
    clients.finish(&kv).await;
    let agreed = agreed_configuration(&kv).await;
    let voters = agreed.voters().len();
    assert!(
        (MIN_VOTERS..=MAX_VOTERS).contains(&voters),
        "the churn ended with {voters} voters ({agreed}), not {MIN_VOTERS} to {MAX_VOTERS}"
    );
    println!(
        "{name}: seed {}: {changes}, {faults}; ended on {agreed}",
        sim.seed
    );
    kv.end().await;
}

/// Every server the cluster started with is replaced, one at a time, while clients run: a new
/// server joins and is promoted, then an original one leaves and is decommissioned, the
/// leader first. The clerks, which knew only the original servers when they started, must
/// find the new ones.
#[test]
fn replace_every_member() {
    const NAME: &str = "replace_every_member";
    run(NAME, SEEDS, |sim| async move {
        let kv = KvCluster::new(&sim, NAME, 3, NO_SNAPSHOTS).growing_to(6);
        let clients = Clients::start(&sim, &kv, CLIENTS);
        let leader = kv.leader().await;
        let originals = std::iter::once(leader).chain((0..3).filter(|&i| i != leader));
        for old in originals {
            kv.sleep(Duration::from_millis(500)).await;
            let new = kv.add_server();
            add_learner(&kv, new).await;
            promote(&kv, new).await;
            let after = remove(&kv, old).await;
            assert!(
                !after.contains(old as NodeId) && after.voters().len() == 3,
                "replacing server {old} by {new} left {after}"
            );
            // Decommissioned: out of the clients' lists, and shut down.
            kv.retire_server(old);
            kv.crash(old).await;
        }
        kv.sleep(Duration::from_millis(500)).await;
        clients.finish(&kv).await;
        let agreed = agreed_configuration(&kv).await;
        assert_eq!(
            agreed.voters(),
            &BTreeSet::from([3, 4, 5]),
            "the new servers are the voters"
        );
        kv.end().await;
    });
}

/// What the membership driver did, for the summary line.
#[derive(Debug, Default)]
struct Changes {
    joined: usize,
    left: usize,
    leaders_left: usize,
    handovers: usize,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} joined, {} left ({} of them leading), {} hand-overs",
            self.joined, self.left, self.leaders_left, self.handovers
        )
    }
}

/// Until `until`, one membership step after another, at random: a server joins and is
/// promoted (below [`MAX_VOTERS`]), a voter leaves (above [`MIN_VOTERS`]), or the leader
/// hands over to another voter. Each change completes before the next starts.
async fn change_membership(kv: &KvCluster, until: Instant) -> Changes {
    let mut changes = Changes::default();
    while Instant::now() < until {
        let Some((leader, config)) = settled_configuration(kv) else {
            kv.sleep(Duration::from_millis(50)).await;
            continue;
        };
        let voters: Vec<usize> = config.voters().iter().map(|&id| id as usize).collect();
        let can_grow = voters.len() < MAX_VOTERS && kv.n() < MAX_SERVERS;
        match kv.rand(3) {
            0 if can_grow => {
                let new = kv.add_server();
                add_learner(kv, new).await;
                promote(kv, new).await;
                changes.joined += 1;
            }
            1 if voters.len() > MIN_VOTERS => {
                // Half the time the leader, else any voter (the leader again, maybe). A leader
                // that is no voter is one that was just removed and is handing over.
                let gone = if kv.rand(2) == 0 && voters.contains(&leader) {
                    leader
                } else {
                    voters[kv.rand(voters.len() as u64) as usize]
                };
                remove(kv, gone).await;
                kv.retire_server(gone);
                changes.left += 1;
                changes.leaders_left += usize::from(gone == leader);
            }
            _ => changes.handovers += usize::from(hand_over(kv).await),
        }
        kv.sleep(random_duration(kv, STEP_PAUSE_MAX)).await;
    }
    changes
}

/// The leader hands leadership to another voter, at random. Returns whether it did; it may
/// not, if the target is down or cut off (then it leads on), or the leader fails meanwhile.
async fn hand_over(kv: &KvCluster) -> bool {
    let Some(raft) = kv.leading().and_then(|i| kv.raft(i)) else {
        return false;
    };
    let others: Vec<NodeId> = raft
        .status()
        .membership
        .membership
        .voters()
        .iter()
        .copied()
        .filter(|&id| id != raft.id())
        .collect();
    if others.is_empty() {
        return false;
    }
    let to = others[kv.rand(others.len() as u64) as usize];
    let Ok(answer) = tokio::time::timeout(TRANSFER_LIMIT, raft.transfer_leadership(Some(to))).await
    else {
        let status = raft.status();
        panic!(
            "node {}'s hand-over to voter {to} has not returned within {TRANSFER_LIMIT:?}; the \
             node is {:?} in term {}, handing over to {:?}",
            raft.id(),
            status.role,
            status.current_term,
            status.transfer_to
        );
    };
    match answer {
        Ok(_) => true,
        Err(
            TransferError::Abandoned(_) | TransferError::NotLeader { .. } | TransferError::Shutdown,
        ) => false,
        Err(error) => panic!(
            "node {} could not hand leadership over to voter {to}: {error}",
            raft.id()
        ),
    }
}

/// What the fault driver did, for the summary line.
#[derive(Debug, Default)]
struct Faults {
    crashes: usize,
    leader_crashes: usize,
    partitions: usize,
    leader_partitions: usize,
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} crashes ({} of the leader), {} partitions ({} of the leader)",
            self.crashes, self.leader_crashes, self.partitions, self.leader_partitions
        )
    }
}

/// Until `until`, one fault after another, each repaired before the next: a member crashes
/// and restarts, or a minority of the voters (and some other servers) is cut off and
/// reconnected. Either strikes the leader half the time. Faults hit a minority of the
/// configuration they start under, so a change under way finishes once the fault is
/// repaired at the latest.
async fn inject_faults(kv: &KvCluster, until: Instant) -> Faults {
    let mut faults = Faults::default();
    while Instant::now() < until {
        kv.sleep(random_duration(kv, FAULT_PAUSE_MAX)).await;
        let Some((leader, config)) = latest_configuration(kv) else {
            kv.sleep(Duration::from_millis(50)).await;
            continue;
        };
        let voters: Vec<usize> = config.voters().iter().map(|&id| id as usize).collect();
        if kv.rand(2) == 0 {
            let members: Vec<usize> = config.members().iter().map(|&id| id as usize).collect();
            let victim = if kv.rand(2) == 0 {
                leader
            } else {
                members[kv.rand(members.len() as u64) as usize]
            };
            kv.crash(victim).await;
            kv.sleep(random_duration(kv, FAULT_MAX)).await;
            kv.restart(victim).await;
            faults.crashes += 1;
            faults.leader_crashes += usize::from(victim == leader);
        } else {
            let mut cut_off = BTreeSet::new();
            if kv.rand(2) == 0 {
                cut_off.insert(leader);
            }
            let size = 1 + kv.rand(((voters.len() - 1) / 2) as u64) as usize;
            while cut_off.len() < size {
                cut_off.insert(voters[kv.rand(voters.len() as u64) as usize]);
            }
            // Learners and servers outside the configuration land on either side.
            for i in 0..kv.n() {
                if !config.is_voter(i as NodeId) && kv.rand(2) == 0 {
                    cut_off.insert(i);
                }
            }
            let minority: Vec<usize> = cut_off.iter().copied().collect();
            let rest: Vec<usize> = (0..kv.n()).filter(|i| !cut_off.contains(i)).collect();
            // The rest is the first group: a server added meanwhile joins it.
            kv.partition(&[&rest, &minority]);
            kv.sleep(random_duration(kv, FAULT_MAX)).await;
            kv.connect_all();
            faults.partitions += 1;
            faults.leader_partitions += usize::from(cut_off.contains(&leader));
        }
    }
    faults
}

/// Server `id` joins as a learner, unless it is a member already: an earlier attempt whose
/// leader failed may have been finished by the next leader.
async fn add_learner(kv: &KvCluster, id: usize) -> Membership {
    let what = format!("adding server {id} as a learner");
    change(kv, &what, |raft| async move {
        if let Some(now) = settled(&raft)
            && now.contains(id as NodeId)
        {
            return Ok(now);
        }
        let info = Bytes::from(format!("server {id}"));
        raft.add_learner(id as NodeId, info).await
    })
    .await
}

/// Learner `id` becomes a voter, unless it is one already.
async fn promote(kv: &KvCluster, id: usize) -> Membership {
    let what = format!("promoting server {id}");
    change(kv, &what, |raft| async move {
        if let Some(now) = settled(&raft)
            && now.voters().contains(&(id as NodeId))
        {
            return Ok(now);
        }
        raft.promote(id as NodeId).await
    })
    .await
}

/// Voter `id` leaves, unless it has already.
async fn remove(kv: &KvCluster, id: usize) -> Membership {
    let what = format!("removing server {id}");
    change(kv, &what, |raft| async move {
        if let Some(now) = settled(&raft)
            && !now.contains(id as NodeId)
        {
            return Ok(now);
        }
        raft.remove(id as NodeId).await
    })
    .await
}

/// Runs a membership call on the leader until it succeeds, on whichever node leads by then:
/// it is retried while it may yet succeed, and after the leader crashed under it. Fails the
/// scenario if it does not succeed within [`CHANGE_LIMIT`].
async fn change<F, Fut>(kv: &KvCluster, what: &str, call: F) -> Membership
where
    F: Fn(Raft) -> Fut,
    Fut: Future<Output = Result<Membership, MembershipError>>,
{
    let deadline = Instant::now() + CHANGE_LIMIT;
    let attempts = async {
        loop {
            let patience = deadline.saturating_duration_since(Instant::now());
            match kv.change(patience, &call).await {
                Err(MembershipError::Shutdown) if Instant::now() < deadline => {
                    kv.sleep(Duration::from_millis(50)).await;
                }
                answer => return answer,
            }
        }
    };
    // A call in flight waits for its commit as long as its node leads: bound it too.
    match tokio::time::timeout(CHANGE_LIMIT, attempts).await {
        Ok(Ok(membership)) => membership,
        Ok(Err(error)) => panic!("{what}: {error}\n{}", configurations(kv)),
        Err(_) => panic!(
            "{what}: no answer within {CHANGE_LIMIT:?}\n{}",
            configurations(kv)
        ),
    }
}

/// The configuration on `raft`, if committed and not joint: one that no change is under way
/// from.
fn settled(raft: &Raft) -> Option<Membership> {
    let status = raft.status().membership;
    (status.committed && !status.membership.is_joint()).then_some(status.membership)
}

/// The leader, and its configuration if no change is under way.
fn settled_configuration(kv: &KvCluster) -> Option<(usize, Membership)> {
    let leader = kv.leading()?;
    Some((leader, settled(&kv.raft(leader)?)?))
}

/// The leader, and the configuration in force on it, committed or not.
fn latest_configuration(kv: &KvCluster) -> Option<(usize, Membership)> {
    let leader = kv.leading()?;
    Some((leader, kv.membership(leader)?.membership))
}

/// Waits until the leader's configuration is committed and not joint, every member of it runs
/// under it, committed, and the leader is one of its voters (a removed leader hands over);
/// returns it.
async fn agreed_configuration(kv: &KvCluster) -> Membership {
    let deadline = Instant::now() + AGREEMENT_LIMIT;
    loop {
        if let Some((leader, config)) = settled_configuration(kv) {
            let agree = config.members().iter().all(|&id| {
                kv.membership(id as usize)
                    .is_some_and(|s| s.committed && s.membership == config)
            });
            if agree && config.voters().contains(&(leader as NodeId)) {
                return config;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the members did not agree on a configuration led by one of its voters within \
             {AGREEMENT_LIMIT:?}\n{}",
            configurations(kv)
        );
        kv.sleep(Duration::from_millis(50)).await;
    }
}

/// Every server's configuration, for failure messages.
fn configurations(kv: &KvCluster) -> String {
    let leader = kv.leading();
    let mut lines = Vec::new();
    for i in 0..kv.n() {
        let line = match kv.membership(i) {
            None => format!("server {i}: down"),
            Some(s) => format!(
                "server {i}{}: {} at index {}{}",
                if leader == Some(i) { " (leader)" } else { "" },
                s.membership,
                s.index,
                if s.committed { "" } else { ", uncommitted" }
            ),
        };
        lines.push(line);
    }
    lines.join("\n")
}

/// A uniform random duration below `max`, from the run's seed.
fn random_duration(kv: &KvCluster, max: Duration) -> Duration {
    Duration::from_millis(kv.rand(max.as_millis() as u64))
}

/// The clients of a scenario: each appends to and reads its own key until told to stop.
struct Clients {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<ClientAppends>>,
}

impl Clients {
    /// Starts `count` clients, each with a clerk that reaches every server (those added later
    /// too).
    fn start(sim: &Sim, kv: &KvCluster, count: usize) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|cli| {
                let clerk = kv.clerk(&kv.all());
                tokio::spawn(client(sim.clone(), clerk, cli, stop.clone()))
            })
            .collect();
        Clients { stop, tasks }
    }

    /// Stops the clients, waits for their last requests, and checks that each client's key
    /// holds its appends once each and in order.
    async fn finish(self, kv: &KvCluster) {
        self.stop.store(true, Ordering::Relaxed);
        let mut reader = kv.clerk(&kv.all());
        for (cli, task) in self.tasks.into_iter().enumerate() {
            let appends = finish(cli, task).await;
            let value = tokio::time::timeout(READ_LIMIT, reader.get(&key(cli)))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "reading client {cli}'s key took over {READ_LIMIT:?} once the faults were \
                         over\n{}",
                        configurations(kv)
                    )
                })
                .unwrap_or_default();
            if let Err(error) = check_appends(&value, &[appends]) {
                panic!("client {cli}'s key {:?}: {error}", key(cli));
            }
        }
    }
}

/// One client, until `stop`: appends to its key half the time, else reads it and checks the
/// value against what its own appends built. Returns its appends.
async fn client(sim: Sim, mut clerk: Clerk, cli: usize, stop: Arc<AtomicBool>) -> ClientAppends {
    let key = key(cli);
    let mut appends = ClientAppends::new(clerk.client_id());
    let mut expected = String::new();
    clerk.put(&key, "").await;
    let mut j = 0;
    while !stop.load(Ordering::Relaxed) {
        if sim.rng.chance(500) {
            let token = format!("x {cli} {j} y");
            clerk.append(&key, &token).await;
            expected.push_str(&token);
            appends.push(token, AppendOutcome::Acknowledged);
            j += 1;
        } else {
            let value = clerk.get(&key).await;
            if value.as_deref() != Some(expected.as_str()) {
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

/// Client `cli`'s key.
fn key(cli: usize) -> String {
    cli.to_string()
}
