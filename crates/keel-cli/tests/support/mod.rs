//! What the process tests share: a cluster of `keel serve` processes on loopback, clients that
//! record a history for the linearizability check, and waiting with deadlines.

#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keel_check::{
    AppendOutcome, CheckResult, ClientAppends, KvInput, KvModel, KvOutput, Operation,
    RETURN_UNKNOWN, check, check_appends,
};
use keel_client::{Client, ClientError, Consistency};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

/// Nodes a cluster starts with (ids 1 to 3); more may join.
pub const NODES: u64 = 3;

/// Node processes; node `i` (from 0) has id `i + 1`.
pub struct Cluster {
    pub dir: PathBuf,
    pub peer_ports: Vec<u16>,
    pub client_ports: Vec<u16>,
    pub children: Vec<Option<Child>>,
    /// Each node's `--peer-secret-file`: the same file for all, unless a test says otherwise.
    pub secrets: Vec<PathBuf>,
    /// Each node's `--certs` directory (made by `keel certs`): the same CA for all, unless a
    /// test says otherwise. Members talk over mutual TLS, as in production.
    pub certs: Vec<PathBuf>,
}

/// Runs `keel certs` for cluster `processes-test` into `dir`, with certificates for nodes 1 to
/// `nodes`.
pub fn make_certs(dir: &std::path::Path, nodes: usize) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command
        .args(["certs", "--cluster", "processes-test", "--dir"])
        .arg(dir);
    for id in 1..=nodes {
        command.args(["--node", &format!("{id}=127.0.0.1,localhost")]);
    }
    let output = command.output().expect("run keel certs");
    assert!(
        output.status.success(),
        "keel certs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A port free now, for a node to listen on later. Taken below the kernel's range for
/// outgoing connections (32768 and up on Linux by default): a port from that range may be
/// given to a client's connection between this check and the node's bind, and the node then
/// fails to start. Each port is handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Start at a place that depends on the process, so test binaries run one after another
    // (or side by side) pick different ports.
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 500) as u16 * 20,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..1000 {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (port - 20_000) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000")
}

impl Cluster {
    /// `NODES` nodes and room for `joining` more, none started.
    pub fn new(name: &str) -> Cluster {
        Cluster::with_room(name, 0)
    }

    pub fn with_room(name: &str, joining: usize) -> Cluster {
        let dir = std::env::temp_dir().join(format!("keel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let secret = dir.join("peer-secret");
        std::fs::write(&secret, "a secret the test's members share\n").expect("secret file");
        let n = NODES as usize + joining;
        let certs = dir.join("certs");
        make_certs(&certs, n);
        Cluster {
            dir,
            peer_ports: (0..n).map(|_| free_port()).collect(),
            client_ports: (0..n).map(|_| free_port()).collect(),
            children: (0..n).map(|_| None).collect(),
            secrets: (0..n).map(|_| secret.clone()).collect(),
            certs: (0..n).map(|_| certs.clone()).collect(),
        }
    }

    /// Nodes this cluster has room for.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.client_ports[i])
    }

    /// Every node's client endpoint, those not started yet included.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Starts node `i` of the first `NODES` (a new cluster's member, or its restart).
    pub fn start(&mut self, i: usize) {
        self.start_with(i, &[]);
    }

    /// Starts node `i` of the first `NODES` with more flags.
    pub fn start_with(&mut self, i: usize, extra: &[&str]) {
        let peers: Vec<String> = (0..NODES as usize)
            .map(|j| format!("{}=127.0.0.1:{}", j + 1, self.peer_ports[j]))
            .collect();
        let peers = peers.join(",");
        let mut args = vec!["--peers", peers.as_str()];
        args.extend_from_slice(extra);
        self.spawn(i, &args);
    }

    /// Starts node `i` (past the first `NODES`) with `--join` to the first `NODES` (and
    /// `--join-as-voter` if asked).
    pub fn start_joining(&mut self, i: usize, as_voter: bool) {
        let endpoints: Vec<String> = (0..NODES as usize).map(|j| self.endpoint(j)).collect();
        let join = endpoints.join(",");
        let mut args = vec!["--join", join.as_str()];
        if as_voter {
            args.push("--join-as-voter");
        }
        self.spawn(i, &args);
    }

    fn spawn(&mut self, i: usize, extra: &[&str]) {
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
            .args(extra)
            .arg("--peer-secret-file")
            .arg(&self.secrets[i])
            .arg("--certs")
            .arg(&self.certs[i])
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "300"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start keel serve");
        self.children[i] = Some(child);
    }

    /// SIGKILL: no chance to flush anything, or to hand leadership over.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().expect("kill");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, and waits (up to 30 s) for the process to end.
    pub fn terminate(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            // SAFETY: kill(2) with a pid this process spawned; SIGTERM touches no memory here.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let until = Instant::now() + Duration::from_secs(30);
            while child.try_wait().expect("poll child").is_none() {
                if Instant::now() > until {
                    let _ = child.kill();
                    panic!("node {} did not stop within 30 s of SIGTERM", i + 1);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{}.log", i + 1))).unwrap_or_default()
    }

    /// The last lines of every node's log, for a failure message.
    pub fn logs(&self) -> String {
        (1..=self.len())
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
        for i in 0..self.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits until some node reports itself leader and returns its index.
pub async fn wait_for_leader(client: &Client, cluster: &Cluster, deadline: Duration) -> usize {
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

/// Every operation the clients made, for the linearizability check.
pub type History = Arc<Mutex<Vec<Operation<KvInput, KvOutput>>>>;

pub fn nanos(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// One client: appends unique tokens to its own key, puts and gets shared keys.
pub async fn client_loop(
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

pub async fn wait_until(done: impl Fn() -> bool, limit: Duration, what: &str) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the clients and checks what they did: every acknowledged append is in its key exactly
/// once and in order, the nodes of `live` converge on the same applied index, and the history
/// is linearizable. Returns how many operations the history holds.
pub async fn check_clients(
    admin: &Client,
    cluster: &Cluster,
    live: &[usize],
    stop: &AtomicBool,
    clients: Vec<JoinHandle<ClientAppends>>,
    history: &History,
) -> usize {
    stop.store(true, Ordering::Relaxed);
    let mut all_appends = Vec::new();
    for client in clients {
        all_appends.push(client.await.expect("client task"));
    }
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
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let mut applied = Vec::new();
        for &i in live {
            let status = admin.status(&cluster.endpoint(i)).await;
            applied.push(status.ok().map(|s| s.applied_index));
        }
        if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
            break;
        }
        assert!(
            Instant::now() < until,
            "nodes {live:?} did not converge: {applied:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let history = history.lock().clone();
    let operations = history.len();
    match check(&KvModel, &history, Duration::from_secs(60)) {
        CheckResult::Ok => operations,
        other => panic!("history of {operations} operations is not linearizable: {other}"),
    }
}
