//! Membership changes on real `keel serve` processes while clients write: a fourth node joins
//! as a learner and is promoted, the original leader is removed (it hands leadership over), a
//! member is killed with SIGKILL and replaced by a fresh node. The history must be linearizable
//! and no acknowledged write lost. And a leader stopped with SIGTERM hands over at once.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use keel_client::{Client, ClientError, ClientOptions, Members};
use support::{Cluster, History, check_clients, client_loop, wait_for_leader, wait_until};

/// Retries `call` while the cluster refuses it for now (a learner still catching up, another
/// change in flight, no leader) or it answers `None` (not there yet), for up to `limit`.
async fn until_done<F, Fut>(what: &str, cluster: &Cluster, limit: Duration, call: F) -> Members
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<Members>, ClientError>>,
{
    let until = Instant::now() + limit;
    loop {
        let wait = match call().await {
            Ok(Some(members)) => return members,
            Ok(None) => "not yet".to_string(),
            Err(e @ (ClientError::Refused { .. } | ClientError::Unavailable { .. })) => {
                e.to_string()
            }
            Err(e) => panic!("{what}: {e}\n{}", cluster.logs()),
        };
        assert!(
            Instant::now() < until,
            "{what}: still {wait} after {limit:?}\n{}",
            cluster.logs()
        );
        println!("{what}: {wait}; retrying");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn role_of(members: &Members, id: u64) -> Option<&str> {
    members
        .members
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.role.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_leave_and_are_replaced_while_clients_write() {
    let mut cluster = Cluster::with_room("membership", 2);
    for i in 0..3 {
        cluster.start(i);
    }
    let options = ClientOptions {
        deadline: Duration::from_secs(20),
        ..ClientOptions::with_endpoints(cluster.endpoints())
    };
    let admin = Client::new(options).expect("client");
    wait_for_leader(&admin, &cluster, Duration::from_secs(30)).await;

    let start = Instant::now();
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (1..=4u64)
        .map(|id| {
            let client = admin.new_session();
            tokio::spawn(client_loop(
                id,
                client,
                start,
                history.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let progress = |history: &History| history.lock().len();
    let more_load = |what: &'static str| {
        let history = history.clone();
        let before = progress(&history);
        async move {
            wait_until(
                || progress(&history) >= before + 100,
                Duration::from_secs(30),
                what,
            )
            .await;
        }
    };
    more_load("initial load").await;

    // Node 4 joins by itself (as a learner), and is promoted by the operator.
    cluster.start_joining(3, false);
    let limit = Duration::from_secs(60);
    let joined = until_done("node 4 joins", &cluster, limit, || async {
        let members = admin.members().await?;
        Ok(role_of(&members, 4).is_some().then_some(members))
    })
    .await;
    assert_eq!(role_of(&joined, 4), Some("learner"), "{joined:?}");
    let promoted = until_done("promote node 4", &cluster, limit, || async {
        admin.promote_member(4).await.map(Some)
    })
    .await;
    assert_eq!(role_of(&promoted, 4), Some("voter"));
    assert!(!promoted.joint);
    more_load("load with four voters").await;

    // The original leader is removed: it hands leadership over and steps down.
    let old_leader = wait_for_leader(&admin, &cluster, Duration::from_secs(30)).await;
    let old_id = old_leader as u64 + 1;
    let after = until_done("remove the leader", &cluster, limit, || async {
        admin.remove_member(old_id).await.map(Some)
    })
    .await;
    assert_eq!(role_of(&after, old_id), None);
    // It leads until the change commits, then hands over.
    let until = Instant::now() + Duration::from_secs(30);
    let new_leader = loop {
        let leader = wait_for_leader(&admin, &cluster, Duration::from_secs(30)).await;
        if leader != old_leader {
            break leader;
        }
        assert!(
            Instant::now() < until,
            "the removed leader kept leading\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // By a hand-over (TimeoutNow), not an election after a timeout: the followers that
    // committed the removal kept talking to the removed leader until it was succeeded.
    wait_until(
        || {
            cluster
                .log(new_leader)
                .contains("hands leadership over: campaigning now")
        },
        Duration::from_secs(10),
        "the new leader to have been handed leadership",
    )
    .await;
    cluster.terminate(old_leader);
    more_load("load after removing the leader").await;

    // Another member dies for good; a fresh node replaces it.
    let dead = (0..4)
        .find(|&i| i != old_leader && i != new_leader)
        .expect("a follower");
    cluster.kill(dead);
    more_load("load with a member dead").await;
    cluster.start_joining(4, true);
    until_done("node 5 joins as a voter", &cluster, limit, || async {
        let members = admin.members().await?;
        let voter = role_of(&members, 5) == Some("voter") && !members.joint;
        Ok(voter.then_some(members))
    })
    .await;
    let dead_id = dead as u64 + 1;
    let last = until_done("remove the dead member", &cluster, limit, || async {
        admin.remove_member(dead_id).await.map(Some)
    })
    .await;
    let voters: Vec<u64> = last
        .members
        .iter()
        .filter(|m| m.role == "voter")
        .map(|m| m.id)
        .collect();
    let live: Vec<usize> = (0..5).filter(|&i| i != old_leader && i != dead).collect();
    assert_eq!(
        voters,
        live.iter().map(|&i| i as u64 + 1).collect::<Vec<_>>(),
        "{last:?}"
    );
    more_load("load after the replacement").await;

    let operations = check_clients(&admin, &cluster, &live, &stop, clients, &history).await;
    println!("{operations} operations, linearizable");
}

/// SIGTERM to the leader: it hands leadership to a follower before it exits, so the next leader
/// is elected in the very next term, without waiting out an election timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_leadership_over() {
    let mut cluster = Cluster::new("sigterm");
    for i in 0..3 {
        cluster.start(i);
    }
    let admin = Client::new(ClientOptions::with_endpoints(cluster.endpoints())).expect("client");
    let leader = wait_for_leader(&admin, &cluster, Duration::from_secs(30)).await;
    admin.put("k", "v").await.expect("a write");
    let term = admin
        .status(&cluster.endpoint(leader))
        .await
        .expect("status")
        .term;
    cluster.terminate(leader);
    assert!(
        cluster
            .log(leader)
            .contains("handed leadership over to node"),
        "{}",
        cluster.log(leader)
    );
    let next = wait_for_leader(&admin, &cluster, Duration::from_secs(30)).await;
    let status = admin.status(&cluster.endpoint(next)).await.expect("status");
    assert_eq!(
        status.term,
        term + 1,
        "an election timeout passed: {status:?}"
    );
    admin
        .put("k", "w")
        .await
        .expect("a write after the hand-over");
}
