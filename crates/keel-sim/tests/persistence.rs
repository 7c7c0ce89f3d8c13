//! Persistence and crash scenarios (the course suite's 2C).

use std::time::Duration;

use bytes::Bytes;
use keel_sim::{Cluster, ClusterOptions, ELECTION_TIMEOUT, StorageKind, command, run};
use parking_lot::Mutex;

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

on_both_storages!(
    persist_all_crash,
    persist_all_crash_on_disk,
    |sim, storage| async move {
        let servers = 3;
        let c = Cluster::new(
            &sim,
            "persist_all_crash",
            ClusterOptions::new(servers).storage(storage),
        );
        c.one(command(11), servers, true).await;

        // Crash and restart every node.
        for i in 0..servers {
            c.start(i).await;
        }
        for i in 0..servers {
            c.disconnect(i);
            c.connect(i);
        }
        c.one(command(12), servers, true).await;

        // Crash and restart the leader.
        let leader1 = c.check_one_leader().await;
        c.disconnect(leader1);
        c.start(leader1).await;
        c.connect(leader1);
        c.one(command(13), servers, true).await;

        // The leader again, with an entry committed while it is down.
        let leader2 = c.check_one_leader().await;
        c.disconnect(leader2);
        let index = c.one(command(14), servers - 1, true).await;
        c.start(leader2).await;
        c.connect(leader2);
        c.wait(index, servers, None).await; // wait for leader2 to join before killing i3

        // A follower.
        let i3 = (c.check_one_leader().await + 1) % servers;
        c.disconnect(i3);
        c.one(command(15), servers - 1, true).await;
        c.start(i3).await;
        c.connect(i3);
        c.one(command(16), servers, true).await;
        c.end().await;
    }
);

on_both_storages!(
    persist_followers_crash,
    persist_followers_crash_on_disk,
    |sim, storage| async move {
        let servers = 5;
        let c = Cluster::new(
            &sim,
            "persist_followers_crash",
            ClusterOptions::new(servers).storage(storage),
        );
        let mut value = 11;
        for _ in 0..5 {
            c.one(command(value), servers, true).await;
            value += 1;
            let leader1 = c.check_one_leader().await;
            c.disconnect((leader1 + 1) % servers);
            c.disconnect((leader1 + 2) % servers);
            c.one(command(value), servers - 2, true).await;
            value += 1;
            c.disconnect(leader1);
            c.disconnect((leader1 + 3) % servers);
            c.disconnect((leader1 + 4) % servers);
            c.start((leader1 + 1) % servers).await;
            c.start((leader1 + 2) % servers).await;
            c.connect((leader1 + 1) % servers);
            c.connect((leader1 + 2) % servers);
            c.sleep(ELECTION_TIMEOUT).await;
            c.start((leader1 + 3) % servers).await;
            c.connect((leader1 + 3) % servers);
            c.one(command(value), servers - 2, true).await;
            value += 1;
            c.connect((leader1 + 4) % servers);
            c.connect(leader1);
        }
        c.one(command(1000), servers, true).await;
        c.end().await;
    }
);

on_both_storages!(
    persist_partitioned_leader_and_follower_crash,
    persist_partitioned_leader_and_follower_crash_on_disk,
    |sim, storage| async move {
        let servers = 3;
        let c = Cluster::new(
            &sim,
            "persist_partitioned_leader_and_follower_crash",
            ClusterOptions::new(servers).storage(storage),
        );
        c.one(command(101), 3, true).await;
        let leader = c.check_one_leader().await;
        c.disconnect((leader + 2) % servers);
        c.one(command(102), 2, true).await;
        c.crash(leader).await;
        c.crash((leader + 1) % servers).await;
        c.connect((leader + 2) % servers);
        c.start(leader).await;
        c.connect(leader);
        c.one(command(103), 2, true).await;
        c.start((leader + 1) % servers).await;
        c.connect((leader + 1) % servers);
        c.one(command(104), servers, true).await;
        c.end().await;
    }
);

// The scenario of Figure 8: leaders crash right after proposing, so entries of old terms are
// replicated by later leaders; none may be committed by counting replicas alone.
on_both_storages!(figure_8, figure_8_on_disk, |sim, storage| async move {
    let servers = 5;
    let c = Cluster::new(
        &sim,
        "figure_8",
        ClusterOptions::new(servers).storage(storage),
    );
    c.one(c.random_command(), 1, true).await;
    let mut up = servers;
    for _ in 0..1000 {
        let mut leader = None;
        for i in 0..servers {
            if let Some(raft) = c.raft(i)
                && raft.propose(c.random_command()).is_ok()
            {
                leader = Some(i);
            }
        }
        let ms = if c.rand(1000) < 100 {
            c.rand(ELECTION_TIMEOUT.as_millis() as u64 / 2)
        } else {
            c.rand(13)
        };
        c.sleep(Duration::from_millis(ms)).await;
        if let Some(leader) = leader {
            c.crash(leader).await;
            up -= 1;
        }
        if up < 3 {
            let s = c.rand(servers as u64) as usize;
            if c.raft(s).is_none() {
                c.start(s).await;
                c.connect(s);
                up += 1;
            }
        }
    }
    for i in 0..servers {
        if c.raft(i).is_none() {
            c.start(i).await;
            c.connect(i);
        }
    }
    c.one(c.random_command(), servers, true).await;
    c.end().await;
});

on_both_storages!(
    unreliable_agree,
    unreliable_agree_on_disk,
    |sim, storage| async move {
        let servers = 5;
        let c = Cluster::new(
            &sim,
            "unreliable_agree",
            ClusterOptions::new(servers).storage(storage).unreliable(),
        );
        for iter in 1..50u64 {
            let batch = (0..4u64).map(|j| c.one(command(100 * iter + j), 1, true));
            let (_, _) = tokio::join!(futures_join_all(batch), c.one(command(iter), 1, true));
        }
        c.set_reliable(true);
        c.one(command(100), servers, true).await;
        c.end().await;
    }
);

on_both_storages!(
    figure_8_unreliable,
    figure_8_unreliable_on_disk,
    |sim, storage| async move {
        let servers = 5;
        let c = Cluster::new(
            &sim,
            "figure_8_unreliable",
            ClusterOptions::new(servers).storage(storage).unreliable(),
        );
        c.one(command(c.rand(10_000)), 1, true).await;
        let mut up = servers;
        for iter in 0..1000 {
            if iter == 200 {
                c.set_long_reordering(true);
            }
            let mut leader = None;
            for i in 0..servers {
                if let Some(raft) = c.raft(i)
                    && raft.propose(command(c.rand(10_000))).is_ok()
                    && c.connected(i)
                {
                    leader = Some(i);
                }
            }
            let ms = if c.rand(1000) < 100 {
                c.rand(ELECTION_TIMEOUT.as_millis() as u64 / 2)
            } else {
                c.rand(13)
            };
            c.sleep(Duration::from_millis(ms)).await;
            if let Some(leader) = leader
                && c.rand(1000) < ELECTION_TIMEOUT.as_millis() as u64 / 2
            {
                c.disconnect(leader);
                up -= 1;
            }
            if up < 3 {
                let s = c.rand(servers as u64) as usize;
                if !c.connected(s) {
                    c.connect(s);
                    up += 1;
                }
            }
        }
        for i in 0..servers {
            c.connect(i);
        }
        c.one(command(c.rand(10_000)), servers, true).await;
        c.end().await;
    }
);

/// Clients propose while nodes are disconnected, reconnected, crashed and restarted at random;
/// every value a client saw committed must be in the final log.
async fn churn(c: Cluster) {
    let servers = c.n();
    let stop = Mutex::new(false);
    let client = |me: u64| {
        let c = &c;
        let stop = &stop;
        async move {
            let mut values: Vec<Bytes> = Vec::new();
            while !*stop.lock() {
                let x = c.random_command();
                let mut index = None;
                for i in 0..servers {
                    if let Some(raft) = c.raft(i)
                        && let Ok(p) = raft.propose(x.clone())
                    {
                        index = Some(p.index);
                    }
                }
                if let Some(index) = index {
                    // Wait a while for it to commit.
                    for to in [10, 20, 50, 100, 200] {
                        let (nd, cmd) = c.n_committed(index);
                        if nd > 0 {
                            if cmd.as_ref() == Some(&x) {
                                values.push(x.clone());
                            }
                            break;
                        }
                        c.sleep(Duration::from_millis(to)).await;
                    }
                } else {
                    c.sleep(Duration::from_millis(79 + me * 17)).await;
                }
            }
            values
        }
    };
    let chaos = async {
        for _ in 0..20 {
            if c.rand(1000) < 200 {
                c.disconnect(c.rand(servers as u64) as usize);
            }
            if c.rand(1000) < 500 {
                let i = c.rand(servers as u64) as usize;
                if c.raft(i).is_none() {
                    c.start(i).await;
                }
                c.connect(i);
            }
            if c.rand(1000) < 200 {
                let i = c.rand(servers as u64) as usize;
                if c.raft(i).is_some() {
                    c.crash(i).await;
                }
            }
            // Make crash/restart infrequent enough that the cluster can make progress.
            c.sleep(ELECTION_TIMEOUT * 7 / 10).await;
        }
        c.sleep(ELECTION_TIMEOUT).await;
        c.set_reliable(true);
        for i in 0..servers {
            if c.raft(i).is_none() {
                c.start(i).await;
            }
            c.connect(i);
        }
        *stop.lock() = true;
    };
    let (_, a, b, d) = tokio::join!(chaos, client(0), client(1), client(2));
    c.sleep(ELECTION_TIMEOUT).await;
    let last = c.one(c.random_command(), servers, true).await;
    let mut really = Vec::new();
    for index in 1..=last {
        if let Some(cmd) = c.wait(index, servers, None).await {
            really.push(cmd);
        }
    }
    for value in a.iter().chain(&b).chain(&d) {
        assert!(
            really.contains(value),
            "didn't find a value a client saw committed"
        );
    }
    c.end().await;
}

on_both_storages!(
    reliable_churn,
    reliable_churn_on_disk,
    |sim, storage| async move {
        churn(Cluster::new(
            &sim,
            "reliable_churn",
            ClusterOptions::new(5).storage(storage),
        ))
        .await;
    }
);

on_both_storages!(
    unreliable_churn,
    unreliable_churn_on_disk,
    |sim, storage| async move {
        churn(Cluster::new(
            &sim,
            "unreliable_churn",
            ClusterOptions::new(5).storage(storage).unreliable(),
        ))
        .await;
    }
);

/// Awaits every future of `futures`, concurrently, on the current task.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("all ready")).collect()
}
