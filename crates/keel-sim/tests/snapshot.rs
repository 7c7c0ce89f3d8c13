//! Snapshot scenarios (the course suite's 2D). The fixture snapshots every 10 applied entries
//! and checks every snapshot a node receives against what the others applied.

use keel_sim::{Cluster, ClusterOptions, SNAPSHOT_INTERVAL, StorageKind, run};

const SEEDS: u64 = 3;

/// Real fsyncs take real time: fewer seeds on disk.
const DISK_SEEDS: u64 = 1;

/// Defines a scenario twice: on simulated storage (replays exactly from its seed) and on the real
/// disk storage in temporary directories (a crash leaves the files as they are).
macro_rules! on_both_storages {
    ($name:ident, $disk_name:ident, |$sim:ident, $storage:ident| $body:expr) => {
        #[test]
        fn $name() {
            run(stringify!($name), SEEDS, |$sim| {
                let $storage = StorageKind::Simulated;
                $body
            });
        }

        #[test]
        fn $disk_name() {
            run(stringify!($disk_name), DISK_SEEDS, |$sim| {
                let $storage = StorageKind::Disk;
                $body
            });
        }
    };
}

/// Persisted Raft state (hard state and log) may not grow past this, snapshots aside.
const MAX_LOG_SIZE: usize = 2000;

async fn snap_common(c: Cluster, disconnect: bool, crash: bool) {
    let servers = 3;
    c.one(c.random_command(), servers, true).await;
    let mut leader1 = c.check_one_leader().await;
    for i in 0..30 {
        let (mut victim, mut sender) = ((leader1 + 1) % servers, leader1);
        if i % 3 == 1 {
            sender = (leader1 + 1) % servers;
            victim = leader1;
        }
        if disconnect {
            c.disconnect(victim);
            c.one(c.random_command(), servers - 1, true).await;
        }
        if crash {
            c.crash(victim).await;
            c.one(c.random_command(), servers - 1, true).await;
        }
        // Perhaps send enough to get a snapshot.
        let nn = SNAPSHOT_INTERVAL / 2 + c.rand(SNAPSHOT_INTERVAL);
        if let Some(raft) = c.raft(sender) {
            for _ in 0..nn {
                let _ = raft.propose(c.random_command());
            }
        }
        // Let applier threads catch up with the proposals, maybe.
        if !disconnect && !crash {
            c.one(c.random_command(), servers, true).await;
        } else {
            c.one(c.random_command(), servers - 1, true).await;
        }
        let size = c.log_size();
        assert!(size < MAX_LOG_SIZE, "log size too large: {size} bytes");
        if disconnect {
            // Reconnect a follower, who may be behind and need to receive a snapshot.
            c.connect(victim);
            c.one(c.random_command(), servers, true).await;
            leader1 = c.check_one_leader().await;
        }
        if crash {
            c.start(victim).await;
            c.connect(victim);
            c.one(c.random_command(), servers, true).await;
            leader1 = c.check_one_leader().await;
        }
    }
    c.end().await;
}

on_both_storages!(
    snapshot_basic,
    snapshot_basic_on_disk,
    |sim, storage| async move {
        let c = Cluster::new(
            &sim,
            "snapshot_basic",
            ClusterOptions::new(3).storage(storage).snapshots(),
        );
        snap_common(c, false, false).await;
    }
);

on_both_storages!(
    snapshot_install,
    snapshot_install_on_disk,
    |sim, storage| async move {
        let c = Cluster::new(
            &sim,
            "snapshot_install",
            ClusterOptions::new(3).storage(storage).snapshots(),
        );
        snap_common(c, true, false).await;
    }
);

on_both_storages!(
    snapshot_install_unreliable,
    snapshot_install_unreliable_on_disk,
    |sim, storage| async move {
        let options = ClusterOptions::new(3)
            .storage(storage)
            .snapshots()
            .unreliable();
        let c = Cluster::new(&sim, "snapshot_install_unreliable", options);
        snap_common(c, true, false).await;
    }
);

on_both_storages!(
    snapshot_install_crash,
    snapshot_install_crash_on_disk,
    |sim, storage| async move {
        let c = Cluster::new(
            &sim,
            "snapshot_install_crash",
            ClusterOptions::new(3).storage(storage).snapshots(),
        );
        snap_common(c, false, true).await;
    }
);

on_both_storages!(
    snapshot_install_unreliable_crash,
    snapshot_install_unreliable_crash_on_disk,
    |sim, storage| async move {
        let options = ClusterOptions::new(3)
            .storage(storage)
            .snapshots()
            .unreliable();
        let c = Cluster::new(&sim, "snapshot_install_unreliable_crash", options);
        snap_common(c, false, true).await;
    }
);

// Crash all nodes repeatedly; after each restart the log continues past where it was.
on_both_storages!(
    snapshot_all_crash,
    snapshot_all_crash_on_disk,
    |sim, storage| async move {
        let servers = 3;
        let c = Cluster::new(
            &sim,
            "snapshot_all_crash",
            ClusterOptions::new(servers).storage(storage).snapshots(),
        );
        c.one(c.random_command(), servers, true).await;
        for _ in 0..5 {
            let nn = SNAPSHOT_INTERVAL / 2 + c.rand(SNAPSHOT_INTERVAL);
            for _ in 0..nn {
                c.one(c.random_command(), servers, true).await;
            }
            let index1 = c.one(c.random_command(), servers, true).await;
            for i in 0..servers {
                c.crash(i).await;
            }
            for i in 0..servers {
                c.start(i).await;
                c.connect(i);
            }
            let index2 = c.one(c.random_command(), servers, true).await;
            assert!(index2 > index1, "index decreased from {index1} to {index2}");
        }
        c.end().await;
    }
);

// Crash all, one operation, crash all again: the state a node restores from its snapshot and
// log is right (the fixture checks every restored snapshot against what was applied).
on_both_storages!(
    snapshot_init,
    snapshot_init_on_disk,
    |sim, storage| async move {
        let servers = 3;
        let c = Cluster::new(
            &sim,
            "snapshot_init",
            ClusterOptions::new(servers).storage(storage).snapshots(),
        );
        c.one(c.random_command(), servers, true).await;
        // Enough ops to make a snapshot.
        for _ in 0..=SNAPSHOT_INTERVAL {
            c.one(c.random_command(), servers, true).await;
        }
        for round in 0..2 {
            for i in 0..servers {
                c.crash(i).await;
            }
            for i in 0..servers {
                c.start(i).await;
                c.connect(i);
            }
            // A single op, to get something to be written back to persistent storage.
            c.one(c.random_command(), servers, true).await;
            let _ = round;
        }
        c.end().await;
    }
);
