//! Every server crashes and restarts between rounds, with what it persisted (the course's 3A
//! persistence tests); no snapshots, so a restarted server replays its whole log.

use keel_sim::run;

use crate::SEEDS;
use crate::generic::Generic;

#[test]
fn persist_one_client() {
    run("persist_one_client", SEEDS, |sim| {
        Generic::clients(1)
            .restarts()
            .run(sim, "persist_one_client")
    });
}

#[test]
fn persist_concurrent_clients() {
    run("persist_concurrent_clients", SEEDS, |sim| {
        Generic::clients(5)
            .restarts()
            .run(sim, "persist_concurrent_clients")
    });
}

#[test]
fn persist_concurrent_clients_unreliable() {
    run("persist_concurrent_clients_unreliable", SEEDS, |sim| {
        Generic::clients(5)
            .unreliable()
            .restarts()
            .run(sim, "persist_concurrent_clients_unreliable")
    });
}

#[test]
fn persist_partitions() {
    run("persist_partitions", SEEDS, |sim| {
        Generic::clients(5)
            .restarts()
            .partitions()
            .run(sim, "persist_partitions")
    });
}

#[test]
fn persist_partitions_unreliable() {
    run("persist_partitions_unreliable", SEEDS, |sim| {
        Generic::clients(5)
            .unreliable()
            .restarts()
            .partitions()
            .run(sim, "persist_partitions_unreliable")
    });
}

/// The course's "linearizable" variant: 15 clients on 7 servers share random keys.
#[test]
fn persist_partitions_unreliable_random_keys() {
    run("persist_partitions_unreliable_random_keys", SEEDS, |sim| {
        Generic::clients(15)
            .servers(7)
            .unreliable()
            .restarts()
            .partitions()
            .random_keys()
            .run(sim, "persist_partitions_unreliable_random_keys")
    });
}
