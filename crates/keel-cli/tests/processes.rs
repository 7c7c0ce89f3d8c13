//! Three `keel serve` processes on loopback with disk storage: concurrent clients over HTTP
//! while the leader and then a follower are killed with SIGKILL and restarted. The recorded
//! history must be linearizable and no acknowledged write may be lost.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keel_check::{
    AppendOutcome, CheckResult, ClientAppends, KvInput, KvModel, KvOutput, Operation,
    RETURN_UNKNOWN, check, check_appends,
};
use keel_client::{Client, ClientError, ClientOptions, Consistency};
use parking_lot::Mutex;

const NODES: u64 = 3;

struct Cluster {
    dir: PathBuf,
    peer_ports: Vec<u16>,
    client_ports: Vec<u16>,
    children: Vec<Option<Child>>,
    /// Each node's `--peer-secret-file`: the same file for all, unless a test says otherwise.
    secrets: Vec<PathBuf>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("keel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let secret = dir.join("peer-secret");
        std::fs::write(&secret, "a secret the test's members share\n").expect("secret file");
        Cluster {
            dir,
            peer_ports: (0..NODES).map(|_| free_port()).collect(),
            client_ports: (0..NODES).map(|_| free_port()).collect(),
            children: (0..NODES).map(|_| None).collect(),
            secrets: (0..NODES).map(|_| secret.clone()).collect(),
        }
    }

    fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.client_ports[i])
    }

    fn endpoints(&self) -> Vec<String> {
        (0..NODES as usize).map(|i| self.endpoint(i)).collect()
    }

    fn start(&mut self, i: usize) {
        let peers: Vec<String> = (0..NODES as usize)
            .map(|j| format!("{}=127.0.0.1:{}", j + 1, self.peer_ports[j]))
            .collect();
        let log =
            std::fs::File::create(self.dir.join(format!("node{}.log", i + 1))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("serve")
            .args(["--id", &(i + 1).to_string()])
            .args(["--cluster", "processes-test"])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{}", i + 1)))
            .args(["--peer-addr", &format!("127.0.0.1:{}", self.peer_ports[i])])
            .args(["--client-addr", &self.endpoint(i)])
            .args(["--peers", &peers.join(",")])
            .arg("--peer-secret-file")
            .arg(&self.secrets[i])
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "300"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start keel serve");
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            // Child::kill sends SIGKILL: no chance to flush anything.
            child.kill().expect("kill");
            child.wait().expect("reap");
        }
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{}.log", i + 1))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        (1..=NODES)
            .map(|i| {
                let path = self.dir.join(format!("node{i}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} (last lines)\n{}", path.display(), tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..NODES as usize {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits until some node reports itself leader and returns its index.
async fn wait_for_leader(client: &Client, cluster: &Cluster, deadline: Duration) -> usize {
    let until = Instant::now() + deadline;
    loop {
        let status = client.cluster_status().await;
        if let Some((endpoint, _)) = status.leader()
            && let Some(i) = cluster.endpoints().iter().position(|e| e == endpoint)
        {
            return i;
        }
        assert!(
            Instant::now() < until,
            "no leader within {deadline:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type History = Arc<Mutex<Vec<Operation<KvInput, KvOutput>>>>;

fn nanos(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// One client: appends unique tokens to its own key, puts and gets shared keys.
async fn client_loop(
    id: u64,
    client: Client,
    start: Instant,
    history: History,
    stop: Arc<AtomicBool>,
) -> ClientAppends {
    let own_key = format!("log-{id}");
    let mut appends = ClientAppends::new(id);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let shared_key = format!("shared-{}", n % 3);
        let call = nanos(start);
        let (input, output) = match n % 3 {
            0 => {
                let token = format!("[{id}.{n}]");
                let result = client.append(&own_key, token.clone()).await;
                let outcome = match result {
                    Ok(_) => AppendOutcome::Acknowledged,
                    Err(_) => AppendOutcome::Unknown,
                };
                appends.push(token.clone(), outcome);
                let output = if result.is_ok() {
                    KvOutput::Ok
                } else {
                    KvOutput::Unknown
                };
                (KvInput::append(&own_key, &token), output)
            }
            1 => {
                let value = format!("{id}.{n}");
                let result = client.put(&shared_key, value.clone()).await;
                let output = if result.is_ok() {
                    KvOutput::Ok
                } else {
                    KvOutput::Unknown
                };
                (KvInput::put(&shared_key, &value), output)
            }
            _ => {
                let result = client.get(&shared_key, Consistency::Linearizable).await;
                let output = match result {
                    Ok(bytes) => {
                        KvOutput::Value(Some(String::from_utf8_lossy(&bytes).into_owned()))
                    }
                    Err(ClientError::NotFound { .. }) => KvOutput::Value(None),
                    Err(_) => KvOutput::Unknown,
                };
                (KvInput::get(&shared_key), output)
            }
        };
        let return_time = if output == KvOutput::Unknown {
            RETURN_UNKNOWN
        } else {
            nanos(start)
        };
        history.lock().push(Operation {
            client_id: id,
            input,
            call,
            output,
            return_time,
        });
    }
    appends
}

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

    stop.store(true, Ordering::Relaxed);
    let mut all_appends = Vec::new();
    for client in clients {
        all_appends.push(client.await.expect("client task"));
    }

    // Every acknowledged append is in its key exactly once, in order.
    for appends in &all_appends {
        let key = format!("log-{}", appends.client_id);
        let value = match admin.get(&key, Consistency::Linearizable).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(ClientError::NotFound { .. }) => String::new(),
            Err(e) => panic!("final read of {key}: {e}\n{}", cluster.logs()),
        };
        if let Err(e) = check_appends(&value, std::slice::from_ref(appends)) {
            panic!("{key}: {e}");
        }
    }
    // The restarted nodes caught up: every node applies the same index.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let status = admin.cluster_status().await;
        let applied: Vec<Option<u64>> = status
            .endpoints
            .iter()
            .map(|e| e.status.as_ref().ok().map(|s| s.applied_index))
            .collect();
        if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
            break;
        }
        assert!(
            Instant::now() < until,
            "nodes did not converge: {applied:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let history = history.lock().clone();
    let operations = history.len();
    match check(&KvModel, &history, Duration::from_secs(60)) {
        CheckResult::Ok => {}
        other => panic!("history of {operations} operations is not linearizable: {other}"),
    }
    println!(
        "{operations} operations, linearizable; logs under {}",
        cluster.dir.display()
    );
}

/// A process started with another peer secret cannot take part: the two members that share
/// one elect a leader and commit without it, it never learns of a leader or a committed entry,
/// and both sides log why.
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

async fn wait_until(done: impl Fn() -> bool, limit: Duration, what: &str) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
