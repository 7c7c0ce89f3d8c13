//! Log agreement scenarios (the course suite's 2B).

use std::time::Duration;

use bytes::Bytes;
use keel_sim::{Cluster, ClusterOptions, ELECTION_TIMEOUT, command, run};

const SEEDS: u64 = 3;

#[test]
fn basic_agree() {
    run("basic_agree", SEEDS, |sim| async move {
        let servers = 3;
        let c = Cluster::new(&sim, "basic_agree", ClusterOptions::new(servers));
        let mut last = None;
        for i in 1..=3u64 {
            let cmd = command(i * 100);
            let index = c.one(cmd, servers, false).await;
            // Each command lands right after the previous one (the leader's no-op comes first).
            if let Some(last) = last {
                assert_eq!(index, last + 1, "got index {index} after {last}");
            }
            last = Some(index);
        }
        c.end().await;
    });
}

#[test]
fn rpc_bytes() {
    run("rpc_bytes", SEEDS, |sim| async move {
        let servers = 3;
        let c = Cluster::new(&sim, "rpc_bytes", ClusterOptions::new(servers));
        c.one(command(99), servers, false).await;
        let bytes0 = c.bytes_total();
        let mut sent = 0u64;
        for _ in 0..10 {
            let cmd: Bytes = (0..5000)
                .map(|_| b'a' + c.rand(26) as u8)
                .collect::<Vec<_>>()
                .into();
            sent += cmd.len() as u64;
            c.one(cmd, servers, false).await;
        }
        let got = c.bytes_total() - bytes0;
        let expected = servers as u64 * sent;
        assert!(
            got <= expected + 50_000,
            "too many RPC bytes; got {got}, expected at most {}",
            expected + 50_000
        );
        c.end().await;
    });
}

#[test]
fn follower_failure() {
    run("follower_failure", SEEDS, |sim| async move {
        let servers = 3;
        let c = Cluster::new(&sim, "follower_failure", ClusterOptions::new(servers));
        c.one(command(101), servers, false).await;

        // Disconnect one follower: the other two still agree.
        let leader1 = c.check_one_leader().await;
        c.disconnect((leader1 + 1) % servers);
        c.one(command(102), servers - 1, false).await;
        c.sleep(ELECTION_TIMEOUT).await;
        c.one(command(103), servers - 1, false).await;

        // Disconnect the remaining follower: nothing commits.
        let leader2 = c.check_one_leader().await;
        c.disconnect((leader2 + 1) % servers);
        c.disconnect((leader2 + 2) % servers);
        let proposed = c
            .raft(leader2)
            .expect("leader runs")
            .propose(command(104))
            .expect("leader rejected the proposal");
        c.sleep(2 * ELECTION_TIMEOUT).await;
        let (n, _) = c.n_committed(proposed.index);
        assert_eq!(n, 0, "{n} committed but no majority");
        c.end().await;
    });
}

#[test]
fn leader_failure() {
    run("leader_failure", SEEDS, |sim| async move {
        let servers = 3;
        let c = Cluster::new(&sim, "leader_failure", ClusterOptions::new(servers));
        c.one(command(101), servers, false).await;

        // Disconnect the first leader: the others elect a new one and agree.
        let leader1 = c.check_one_leader().await;
        c.disconnect(leader1);
        c.one(command(102), servers - 1, false).await;
        c.sleep(ELECTION_TIMEOUT).await;
        c.one(command(103), servers - 1, false).await;

        // Disconnect the new leader too: whatever anyone accepts cannot commit.
        let leader2 = c.check_one_leader().await;
        c.disconnect(leader2);
        let mut proposed = Vec::new();
        for i in 0..servers {
            if let Some(p) = c.raft(i).and_then(|r| r.propose(command(104)).ok()) {
                proposed.push(p.index);
            }
        }
        c.sleep(2 * ELECTION_TIMEOUT).await;
        for index in proposed {
            let (n, cmd) = c.n_committed(index);
            assert!(
                n == 0 || cmd != Some(command(104)),
                "{n} committed 104 at index {index} without a majority"
            );
        }
        c.end().await;
    });
}

#[test]
fn fail_agree() {
    run("fail_agree", SEEDS, |sim| async move {
        let servers = 3;
        let c = Cluster::new(&sim, "fail_agree", ClusterOptions::new(servers));
        c.one(command(101), servers, false).await;

        // Disconnect one follower; the rest keep agreeing.
        let leader = c.check_one_leader().await;
        c.disconnect((leader + 1) % servers);
        for cmd in 102..=105 {
            c.one(command(cmd), servers - 1, false).await;
        }
        c.sleep(ELECTION_TIMEOUT).await;
        c.one(command(106), servers - 1, false).await;
        c.one(command(107), servers - 1, false).await;

        // It rejoins and catches up.
        c.connect((leader + 1) % servers);
        c.one(command(108), servers, true).await;
        c.sleep(ELECTION_TIMEOUT).await;
        c.one(command(109), servers, true).await;
        c.end().await;
    });
}

#[test]
fn fail_no_agree() {
    run("fail_no_agree", SEEDS, |sim| async move {
        let servers = 5;
        let c = Cluster::new(&sim, "fail_no_agree", ClusterOptions::new(servers));
        c.one(command(10), servers, false).await;

        // Three of five disconnected: the leader accepts but nothing commits.
        let leader = c.check_one_leader().await;
        for k in 1..=3 {
            c.disconnect((leader + k) % servers);
        }
        let proposed = c
            .raft(leader)
            .expect("leader runs")
            .propose(command(20))
            .expect("leader rejected the proposal");
        c.sleep(2 * ELECTION_TIMEOUT).await;
        let (n, _) = c.n_committed(proposed.index);
        assert_eq!(n, 0, "{n} committed but no majority");

        // Repair: the log moves on.
        for k in 1..=3 {
            c.connect((leader + k) % servers);
        }
        let leader2 = c.check_one_leader().await;
        let proposed2 = c.raft(leader2).expect("leader runs").propose(command(30));
        assert!(
            proposed2.is_ok(),
            "leader2 rejected the proposal: {proposed2:?}"
        );
        c.one(command(1000), servers, true).await;
        c.end().await;
    });
}

#[test]
fn concurrent_proposals() {
    run("concurrent_proposals", SEEDS, |sim| async move {
        let servers = 3;
        let c = Cluster::new(&sim, "concurrent_proposals", ClusterOptions::new(servers));
        let mut success = false;
        'attempt: for attempt in 0..5 {
            if attempt > 0 {
                // Give the cluster a chance to settle.
                c.sleep(Duration::from_secs(3)).await;
            }
            let leader = c.check_one_leader().await;
            let raft = c.raft(leader).expect("leader runs");
            let Ok(first) = raft.propose(command(1)) else {
                continue;
            };
            // Five proposals at once, in one term.
            let proposals: Vec<_> = (0..5u64)
                .map(|i| (i, raft.propose(command(100 + i))))
                .collect();
            let mut indexes = Vec::new();
            for (i, p) in proposals {
                match p {
                    Ok(p) if p.term == first.term => indexes.push((i, p.index)),
                    _ => continue 'attempt,
                }
            }
            for i in 0..servers {
                if c.term(i) != Some(first.term) {
                    continue 'attempt; // the term moved on: cannot expect them all to commit
                }
            }
            for (i, index) in indexes {
                match c.wait(index, servers, Some(first.term)).await {
                    None => continue 'attempt,
                    Some(cmd) => assert_eq!(cmd, command(100 + i), "wrong value at {index}"),
                }
            }
            success = true;
            break;
        }
        assert!(success, "term changed too often");
        c.end().await;
    });
}

#[test]
fn rejoin() {
    run("rejoin", SEEDS, |sim| async move {
        let servers = 3;
        let c = Cluster::new(&sim, "rejoin", ClusterOptions::new(servers));
        c.one(command(101), servers, true).await;

        // The leader is partitioned away and accepts entries that cannot commit.
        let leader1 = c.check_one_leader().await;
        c.disconnect(leader1);
        let old = c.raft(leader1).expect("leader runs");
        for cmd in [102, 103, 104] {
            let _ = old.propose(command(cmd));
        }

        // The others elect a new leader and commit 103.
        c.one(command(103), 2, true).await;

        // The new leader is partitioned; the old one returns.
        let leader2 = c.check_one_leader().await;
        c.disconnect(leader2);
        c.connect(leader1);
        c.one(command(104), 2, true).await;

        // Everyone back: the old leader's uncommitted entries were overwritten.
        c.connect(leader2);
        c.one(command(105), servers, true).await;
        c.end().await;
    });
}

#[test]
fn backup() {
    run("backup", SEEDS, |sim| async move {
        let servers = 5;
        let c = Cluster::new(&sim, "backup", ClusterOptions::new(servers));
        c.one(c.random_command(), servers, true).await;

        // Put the leader and one follower in a partition; they accept 50 entries that cannot
        // commit.
        let leader1 = c.check_one_leader().await;
        for k in 2..=4 {
            c.disconnect((leader1 + k) % servers);
        }
        let raft1 = c.raft(leader1).expect("leader runs");
        for _ in 0..50 {
            let _ = raft1.propose(c.random_command());
        }
        c.sleep(ELECTION_TIMEOUT / 2).await;
        c.disconnect(leader1);
        c.disconnect((leader1 + 1) % servers);

        // The other partition commits 50 entries.
        for k in 2..=4 {
            c.connect((leader1 + k) % servers);
        }
        for _ in 0..50 {
            c.one(c.random_command(), 3, true).await;
        }

        // Its leader and all but one follower: 50 more uncommitted entries.
        let leader2 = c.check_one_leader().await;
        let mut other = (leader1 + 2) % servers;
        if leader2 == other {
            other = (leader2 + 1) % servers;
        }
        c.disconnect(other);
        let raft2 = c.raft(leader2).expect("leader runs");
        for _ in 0..50 {
            let _ = raft2.propose(c.random_command());
        }
        c.sleep(ELECTION_TIMEOUT / 2).await;

        // The original leader's partition plus `other` must back up their logs and commit.
        for i in 0..servers {
            c.disconnect(i);
        }
        c.connect(leader1);
        c.connect((leader1 + 1) % servers);
        c.connect(other);
        for _ in 0..50 {
            c.one(c.random_command(), 3, true).await;
        }

        // Everyone.
        for i in 0..servers {
            c.connect(i);
        }
        c.one(c.random_command(), servers, true).await;
        c.end().await;
    });
}

#[test]
fn rpc_count() {
    run("rpc_count", SEEDS, |sim| async move {
        let servers = 3;
        let c = Cluster::new(&sim, "rpc_count", ClusterOptions::new(servers));
        c.check_one_leader().await;
        let total1 = c.rpc_total();
        assert!(
            (1..=30).contains(&total1),
            "too many or too few RPCs ({total1}) to elect the initial leader"
        );

        let mut success = false;
        let mut total2 = 0;
        'attempt: for attempt in 0..5 {
            if attempt > 0 {
                c.sleep(Duration::from_secs(3)).await;
            }
            let leader = c.check_one_leader().await;
            let total1 = c.rpc_total();
            let raft = c.raft(leader).expect("leader runs");
            let iters = 10u64;
            let Ok(start) = raft.propose(command(1)) else {
                continue;
            };
            let mut cmds = Vec::new();
            for i in 1..=iters {
                let x = c.random_command();
                cmds.push(x.clone());
                match raft.propose(x) {
                    Ok(p) if p.term == start.term => {
                        assert_eq!(p.index, start.index + i, "proposal landed out of place");
                    }
                    _ => continue 'attempt,
                }
            }
            for i in 1..=iters {
                match c.wait(start.index + i, servers, Some(start.term)).await {
                    None => continue 'attempt,
                    Some(cmd) => assert_eq!(cmd, cmds[i as usize - 1], "wrong value"),
                }
            }
            for i in 0..servers {
                if c.term(i) != Some(start.term) {
                    continue 'attempt;
                }
            }
            total2 = c.rpc_total();
            let per_command_bound = (iters + 1 + 3) * 3;
            assert!(
                total2 - total1 <= per_command_bound,
                "too many RPCs ({}) for {iters} entries",
                total2 - total1
            );
            success = true;
            break;
        }
        assert!(success, "term changed too often");

        // An idle cluster sends heartbeats only.
        c.sleep(ELECTION_TIMEOUT).await;
        let total3 = c.rpc_total();
        assert!(
            total3 - total2 <= 3 * 20,
            "too many RPCs ({}) for 1 second of idleness",
            total3 - total2
        );
        c.end().await;
    });
}
