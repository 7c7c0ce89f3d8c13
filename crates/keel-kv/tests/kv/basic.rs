//! Clients on a healthy or lossy network, without partitions or crashes (the course's 3A
//! basic, concurrent and unreliable tests).

use keel_check::{AppendOutcome, ClientAppends, check_appends};
use keel_sim::run;

use crate::SEEDS;
use crate::cluster::{KvCluster, NO_SNAPSHOTS};
use crate::generic::{Generic, finish};

#[test]
fn one_client() {
    run("one_client", SEEDS, |sim| {
        Generic::clients(1).run(sim, "one_client")
    });
}

#[test]
fn concurrent_clients() {
    run("concurrent_clients", SEEDS, |sim| {
        Generic::clients(5).run(sim, "concurrent_clients")
    });
}

#[test]
fn unreliable_network() {
    run("unreliable_network", SEEDS, |sim| {
        Generic::clients(5)
            .unreliable()
            .run(sim, "unreliable_network")
    });
}

/// Five clients append to one key over a lossy network: each append appears once, and each
/// client's in the order it issued them.
///
/// Unlike the course's version, each client also reads the key after each append (and must see
/// its own appends so far). Appends alone can be ordered in exponentially many ways that only
/// the final read tells apart, which no linearizability search decides in time; the reads pin
/// the order down as the history goes.
#[test]
fn unreliable_network_one_key() {
    const CLIENTS: usize = 5;
    const APPENDS: usize = 10;
    run("unreliable_network_one_key", SEEDS, |sim| async move {
        let kv = KvCluster::new(&sim, "unreliable_network_one_key", 5, NO_SNAPSHOTS);
        kv.set_reliable(false);
        let mut ck = kv.clerk(&kv.all());
        ck.put("k", "").await;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|me| {
                let sim = sim.clone();
                let mut clerk = kv.clerk(&kv.all());
                tokio::spawn(async move {
                    let mut appends = ClientAppends::new(clerk.client_id());
                    for n in 0..APPENDS {
                        let token = format!("x {me} {n} y");
                        clerk.append("k", &token).await;
                        appends.push(token, AppendOutcome::Acknowledged);
                        let value = clerk.get("k").await.unwrap_or_default();
                        if let Err(error) = check_appends(&value, std::slice::from_ref(&appends)) {
                            sim.fail(format!(
                                "client {me} read key \"k\" after its append: {error}"
                            ));
                        }
                    }
                    appends
                })
            })
            .collect();
        let mut appends = Vec::new();
        for (me, client) in clients.into_iter().enumerate() {
            appends.push(finish(me, client).await);
        }
        let value = ck.get("k").await.unwrap_or_default();
        if let Err(error) = check_appends(&value, &appends) {
            panic!("key \"k\": {error}");
        }
        kv.end().await;
    });
}
