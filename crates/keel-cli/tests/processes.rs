//! Three `keel serve` processes on loopback with disk storage: concurrent clients over HTTP
//! while the leader and then a follower are killed with SIGKILL and restarted. The recorded
//! history must be linearizable and no acknowledged write may be lost.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use keel_client::{Client, ClientOptions};
use support::{
    Cluster, History, NODES, check_clients, client_loop, free_port, wait_for_leader, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_and_a_follower_loses_no_acknowledged_write() {
    let mut cluster = Cluster::new("processes");
    for i in 0..NODES as usize {
        cluster.start(i);
    }
    let options = ClientOptions {
        deadline: Duration::from_secs(20),
        ..ClientOptions::with_endpoints(cluster.endpoints())
    };
    let admin = Client::new(options.clone()).expect("client");
    let leader = wait_for_leader(&admin, &cluster, Duration::from_secs(30)).await;
    every_node_shows_every_members_client_address(&admin, &cluster).await;

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

    // Some load, then kill the leader; a new one must take over while clients keep going.
    wait_until(
        || progress(&history) >= 200,
        Duration::from_secs(30),
        "initial load",
    )
    .await;
    cluster.kill(leader);
    let new_leader = wait_for_leader(&admin, &cluster, Duration::from_secs(30)).await;
    assert_ne!(new_leader, leader, "the killed leader cannot lead");
    let before = progress(&history);
    wait_until(
        || progress(&history) >= before + 200,
        Duration::from_secs(30),
        "load after failover",
    )
    .await;
    cluster.start(leader);

    // Kill a follower, then bring it back.
    let follower = (0..NODES as usize)
        .find(|&i| i != new_leader)
        .expect("a follower");
    cluster.kill(follower);
    let before = progress(&history);
    wait_until(
        || progress(&history) >= before + 200,
        Duration::from_secs(30),
        "load without a follower",
    )
    .await;
    cluster.start(follower);
    let before = progress(&history);
    wait_until(
        || progress(&history) >= before + 200,
        Duration::from_secs(30),
        "load after restart",
    )
    .await;

    // The restarted nodes caught up: every node applies the same index.
    let all: Vec<usize> = (0..NODES as usize).collect();
    let operations = check_clients(&admin, &cluster, &all, &stop, clients, &history).await;
    println!(
        "{operations} operations, linearizable; logs under {}",
        cluster.dir.display()
    );
}

/// A process started with another peer secret cannot take part: the two members that share
/// one elect a leader and commit without it, it never learns of a leader or a committed entry,
/// and both sides log why.
/// A cluster started with `--peers` has no addresses in its configuration, and under a steady
/// leader two followers never call each other: each node still shows every member's client
/// address in `/v1/status` (from the handshakes every node makes with every peer at start).
async fn every_node_shows_every_members_client_address(client: &Client, cluster: &Cluster) {
    let expected: Vec<_> = (0..NODES as usize)
        .map(|j| (j as u64 + 1, Some(cluster.endpoint(j))))
        .collect();
    for i in 0..NODES as usize {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let shown: Option<Vec<_>> = client.status(&cluster.endpoint(i)).await.ok().map(|s| {
                s.members
                    .iter()
                    .map(|m| (m.id, m.client_addr.clone()))
                    .collect()
            });
            if shown.as_ref() == Some(&expected) {
                break;
            }
            assert!(
                Instant::now() < until,
                "node {}'s status shows the members' client addresses as {shown:?}\n{}",
                i + 1,
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_peer_secret_takes_no_part_in_the_cluster() {
    let mut cluster = Cluster::new("secrets");
    let other = cluster.dir.join("other-secret");
    std::fs::write(&other, "not the secret the others hold").expect("secret file");
    cluster.secrets[2] = other;
    for i in 0..NODES as usize {
        cluster.start(i);
    }
    let options = ClientOptions {
        deadline: Duration::from_secs(20),
        ..ClientOptions::with_endpoints(cluster.endpoints()[..2].to_vec())
    };
    let client = Client::new(options).expect("client");
    let leader = wait_for_leader(&client, &cluster, Duration::from_secs(30)).await;
    assert!(leader < 2, "node 3 cannot lead without its peers' votes");
    let index = client
        .put("k", b"v".to_vec())
        .await
        .expect("two of three members commit")
        .index;
    assert!(index >= 2, "index {index}");

    let stranger = cluster.endpoint(2);
    // Each side, dialing the other, finds the other's proof wrong; accepting, it sees the
    // dialer hang up on its own proof.
    let refused = "failed to prove it holds this node's peer secret: their secrets differ";
    let hung_up =
        "a dialer claiming to be node 3 hung up instead of proving it holds the peer secret";
    wait_until(
        || {
            cluster.log(2).contains(refused)
                && cluster.log(leader).contains(refused)
                && cluster.log(leader).contains(hung_up)
        },
        Duration::from_secs(30),
        "both sides to log the refused handshakes",
    )
    .await;
    let status = client.status(&stranger).await.expect("node 3 answers");
    assert_eq!(status.leader_id, None, "node 3 learned of a leader");
    assert_eq!(status.commit_index, 0, "node 3 learned of a commit");
    let member = client
        .status(&cluster.endpoint(leader))
        .await
        .expect("status");
    assert!(member.commit_index >= index);
}

/// A node whose certificates come from another CA (a stranger who copied the cluster's name
/// and a member's id) cannot connect to the members, nor they to it: both sides log the failed
/// TLS handshake, and it learns nothing of the cluster's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_certificates_of_another_ca_takes_no_part_in_the_cluster() {
    let mut cluster = Cluster::new("foreign-ca");
    let other = cluster.dir.join("other-ca");
    support::make_certs(&other, NODES as usize);
    cluster.certs[2] = other;
    for i in 0..NODES as usize {
        cluster.start(i);
    }
    let options = ClientOptions {
        deadline: Duration::from_secs(20),
        ..ClientOptions::with_endpoints(cluster.endpoints()[..2].to_vec())
    };
    let client = Client::new(options).expect("client");
    let leader = wait_for_leader(&client, &cluster, Duration::from_secs(30)).await;
    assert!(leader < 2, "node 3 cannot lead without its peers' votes");
    let index = client
        .put("k", b"v".to_vec())
        .await
        .expect("two of three members commit")
        .index;
    wait_until(
        || {
            cluster.log(2).contains("TLS handshake failed")
                && cluster.log(leader).contains("failed the TLS handshake")
        },
        Duration::from_secs(30),
        "both sides to log the failed TLS handshakes",
    )
    .await;
    let status = client
        .status(&cluster.endpoint(2))
        .await
        .expect("node 3 answers");
    assert_eq!(status.leader_id, None, "node 3 learned of a leader");
    assert_eq!(status.commit_index, 0, "node 3 learned of a commit");
    let member = client
        .status(&cluster.endpoint(leader))
        .await
        .expect("status");
    assert!(member.commit_index >= index);
}

#[test]
fn a_node_refuses_the_data_dir_of_another_cluster() {
    let dir = std::env::temp_dir().join(format!("keel-foreign-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let serve = |cluster: &str, id: &str, port_a: u16, port_b: u16| {
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("serve")
            .args(["--id", id, "--cluster", cluster])
            .arg("--data-dir")
            .arg(&data)
            .args(["--peer-addr", &format!("127.0.0.1:{port_a}")])
            .args(["--client-addr", &format!("127.0.0.1:{port_b}")])
            .args(["--peers", &format!("1=127.0.0.1:{port_a},2=127.0.0.1:1")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keel serve")
    };
    // Create the data dir as node 1 of cluster "a"; stop it once it serves.
    let client_port = free_port();
    let mut first = serve("a", "1", free_port(), client_port);
    wait_for_http(client_port, Duration::from_secs(60));
    let _ = first.kill();
    let _ = first.wait();

    for (cluster, id, expect) in [("b", "1", "cluster"), ("a", "2", "node")] {
        let mut child = serve(cluster, id, free_port(), free_port());
        let until = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("poll child").is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                panic!("keel serve kept running on the data dir of another {expect}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("keel serve ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "a foreign data dir was accepted");
        assert!(
            stderr.to_lowercase().contains(expect),
            "the error should say which {expect} the data dir belongs to:\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node started with a low soft limit on open files raises it to the hard limit; one whose
/// hard limit is low too caps its client connections to fit, and says so.
#[test]
fn a_node_raises_its_open_file_limit_and_fits_its_connections_in_it() {
    use std::os::unix::process::CommandExt;
    let dir = std::env::temp_dir().join(format!("keel-nofile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let serve = |name: &str, soft: u64, hard: Option<u64>| {
        let (peer, client) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .arg("serve")
            .args(["--id", "1"])
            .arg("--data-dir")
            .arg(dir.join(name))
            .args(["--peer-addr", &format!("127.0.0.1:{peer}")])
            .args(["--client-addr", &format!("127.0.0.1:{client}")])
            .args(["--peers", &format!("1=127.0.0.1:{peer}")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // SAFETY: between fork and exec only getrlimit/setrlimit run, which are
        // async-signal-safe and touch only the struct on this stack.
        unsafe {
            command.pre_exec(move || {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                limit.rlim_cur = soft;
                if let Some(hard) = hard {
                    limit.rlim_max = hard;
                }
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start keel serve");
        (child, client)
    };
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log =
        |name: &str| std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    for (name, soft, hard, expect) in [
        (
            "raised",
            700,
            None,
            "raised the open-file limit from 700 to",
        ),
        ("capped", 700, Some(700), "client connections capped at 141"),
    ] {
        let (mut child, client) = serve(name, soft, hard);
        wait_for_http(client, Duration::from_secs(60));
        let until = Instant::now() + Duration::from_secs(30);
        while !log(name).contains(expect) {
            if Instant::now() > until {
                let _ = child.kill();
                panic!("{name}: expected {expect:?} in the log:\n{}", log(name));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until an HTTP server answers `GET /v1/status` on `port`.
fn wait_for_http(port: u16, limit: Duration) {
    use std::io::{Read, Write};
    let until = Instant::now() + limit;
    loop {
        let answered = std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut stream| {
                stream.write_all(
                    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )?;
                let mut response = String::new();
                stream.read_to_string(&mut response)?;
                Ok(response.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false);
        if answered {
            return;
        }
        assert!(
            Instant::now() < until,
            "no HTTP answer on port {port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A valid `keel serve` command line (its ports are never listened on), with `extra` flags.
fn serve_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "serve",
        "--id",
        "1",
        "--data-dir",
        "/tmp/x",
        "--peer-addr",
        "127.0.0.1:1",
        "--client-addr",
        "127.0.0.1:2",
        "--peers",
        "1=127.0.0.1:1",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn config_errors_exit_with_code_2_and_one_line() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .output()
            .expect("run keel");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["serve", "--id", "1"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr.trim(),
        "keel: missing --data-dir (or `data_dir` in the config file)"
    );
    let (code, stderr) = run(&[
        "serve",
        "--id",
        "1",
        "--data-dir",
        "/tmp/x",
        "--peer-addr",
        "nowhere",
        "--client-addr",
        "127.0.0.1:1",
        "--peers",
        "1=127.0.0.1:2",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("keel: bad --peer-addr address \"nowhere\""),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let (code, stderr) = run(&serve_with(&[
        "--peer-secret-file",
        "/nonexistent/keel-secret",
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("keel: cannot read peer secret /nonexistent/keel-secret: "),
        "{stderr}"
    );
    let (code, _) = run(&["serve", "--frobnicate"]);
    assert_eq!(code, Some(2), "clap's unknown-flag error exits with 2");
    let (code, stderr) = run(&serve_with(&[
        "--election-timeout-ms",
        "18446744073709551615",
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("keel: --election-timeout-ms 18446744073709551615 is too long"),
        "{stderr}"
    );
    // A peer port beyond loopback without TLS or a peer secret is refused, and says how to
    // fix it (before the data dir is touched).
    let exposed = [
        "serve",
        "--id",
        "1",
        "--data-dir",
        "/nonexistent/keel-data",
        "--peer-addr",
        "0.0.0.0:1",
        "--client-addr",
        "127.0.0.1:2",
        "--peers",
        "1=127.0.0.1:1",
    ];
    let (code, stderr) = run(&exposed);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("peers are not authenticated") && stderr.contains("--insecure"),
        "{stderr}"
    );
    let (code, stderr) = run(&serve_with(&["--peer-cert", "/x.pem"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--peer-ca, --peer-cert and --peer-key together"),
        "{stderr}"
    );
    let (code, stderr) = run(&serve_with(&["--certs", "/nonexistent/certs"]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("keel: peer TLS: /nonexistent/certs/ca.pem: cannot read it"),
        "{stderr}"
    );
    let (code, stderr) = run(&["dev", "--client-port", "65535"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("keel: --client-port 65535 does not leave room for 3 nodes"),
        "{stderr}"
    );
    // Times too long to add to a clock are refused, not a panic.
    for (args, flag) in [
        (&["get", "k", "--timeout", "1e20"][..], "--timeout"),
        (&["bench", "--duration", "1e20"][..], "--duration"),
        (&["bench", "--warmup=-1"][..], "--warmup"),
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("keel: {flag} must be a number of seconds")),
            "{args:?}: {stderr}"
        );
    }
}
