//! `keel dev`: a local cluster on loopback, each node its own `keel serve` process, so that
//! killing one shows a real failover.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::CliError;
use crate::serve::wait_for_signal;

/// The local cluster's name.
const CLUSTER: &str = "keel-dev";

/// Flags of `keel dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the nodes keep their data (one subdirectory per node). Running again resumes it.
    #[arg(long, default_value = "keel-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Number of nodes (1 to 7).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Node i serves its HTTP API on this port + i - 1.
    #[arg(long, default_value_t = 8081)]
    pub client_port: u16,
    /// Node i listens for peers on this port + i - 1.
    #[arg(long, default_value_t = 7081)]
    pub peer_port: u16,
    /// Do not restart a node process that exits (say, after you kill it).
    #[arg(long)]
    pub no_restart: bool,
    /// Serve the HTTP API over HTTPS and admit only clients with a certificate of the
    /// cluster's CA (the CLI finds keel-data/certs by itself for https:// endpoints).
    #[arg(long)]
    pub tls: bool,
}

struct NodeProcess {
    id: u64,
    client: String,
    peer: String,
    data_dir: PathBuf,
    child: Option<Child>,
    /// Removed from the cluster: stopped, and not restarted.
    removed: bool,
}

type Status = keel_client::NodeStatus;

/// Runs the cluster until Ctrl-C.
pub async fn dev(args: DevArgs) -> Result<(), CliError> {
    if args.nodes == 0 || args.nodes > 7 {
        return Err(CliError::Config("--nodes must be between 1 and 7".into()));
    }
    for (flag, first) in [
        ("--client-port", args.client_port),
        ("--peer-port", args.peer_port),
    ] {
        let last = u64::from(first) + args.nodes - 1;
        if first == 0 || last > u64::from(u16::MAX) {
            return Err(CliError::Config(format!(
                "{flag} {first} does not leave room for {} nodes: ports run from it to {last}, \
                 which must be between 1 and 65535",
                args.nodes
            )));
        }
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Start(format!("cannot find the keel executable: {e}")))?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| CliError::Start(format!("cannot create {}: {e}", args.data_dir.display())))?;
    let certs = dev_certs(&args.data_dir)?;
    let mut nodes: Vec<NodeProcess> = (1..=args.nodes)
        .map(|id| NodeProcess {
            id,
            client: format!("127.0.0.1:{}", args.client_port as u64 + id - 1),
            peer: format!("127.0.0.1:{}", args.peer_port as u64 + id - 1),
            data_dir: args.data_dir.join(format!("node{id}")),
            child: None,
            removed: false,
        })
        .collect();
    let peers: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.peer))
        .collect();
    let peers = peers.join(",");
    let (exited_tx, mut exited) = mpsc::channel::<(u64, String)>(16);
    for node in &mut nodes {
        spawn_node(&exe, node, &peers, &certs, args.tls, exited_tx.clone())?;
    }

    let http = status_client(&certs, args.tls)?;
    let leader = wait_for_leader(&http, &nodes, Duration::from_secs(30)).await;
    print_banner(&nodes, leader, args.tls.then_some(certs.as_path()));

    let mut last_leader = leader;
    let mut last_configuration: Option<String> = None;
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    let signal = wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            Some((id, how)) = exited.recv() => {
                let node = nodes.iter_mut().find(|n| n.id == id).expect("known node");
                node.child = None;
                if node.removed {
                    eprintln!("[dev] node {id} stopped ({how}); it was removed, so it stays down");
                } else if args.no_restart {
                    eprintln!("[dev] node {id} exited ({how}); not restarting (--no-restart)");
                } else {
                    eprintln!("[dev] node {id} exited ({how}); restarting it in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    spawn_node(&exe, node, &peers, &certs, args.tls, exited_tx.clone())?;
                }
            }
            _ = poll.tick() => {
                let statuses = statuses(&http, &nodes).await;
                stop_removed(&mut nodes, &statuses);
                if let Some(configuration) = configuration_line(&statuses)
                    && last_configuration.as_ref() != Some(&configuration)
                {
                    if last_configuration.is_some() {
                        eprintln!("[dev] {configuration}");
                    }
                    last_configuration = Some(configuration);
                }
                let now = leader_of(&statuses);
                if let Some((id, term)) = now
                    && now != last_leader
                {
                    let pid = nodes.iter().find(|n| n.id == id).and_then(|n| n.child.as_ref()?.id());
                    eprintln!(
                        "[dev] leader is now node {id} (term {term}, pid {})",
                        pid.map_or("?".into(), |p| p.to_string())
                    );
                    last_leader = now;
                }
            }
        }
    }
    eprintln!("[dev] stopping the cluster");
    // The leader first: it hands leadership to a follower before it exits, and so on, so the
    // cluster never waits an election timeout on the way down.
    if let Some((leader, _)) = current_leader(&http, &nodes).await
        && let Some(node) = nodes.iter_mut().find(|n| n.id == leader)
    {
        terminate(node);
        if let Some(mut child) = node.child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
    for node in &mut nodes {
        terminate(node);
    }
    for node in &mut nodes {
        if let Some(mut child) = node.child.take() {
            match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!("[dev] node {} did not stop in 10 s; killing it", node.id);
                    let _ = child.kill().await;
                }
            }
        }
    }
    eprintln!("[dev] stopped; data kept in {}", args.data_dir.display());
    Ok(())
}

/// Sends SIGTERM to a node's process, if it runs.
fn terminate(node: &NodeProcess) {
    if let Some(child) = &node.child
        && let Some(pid) = child.id()
    {
        // SAFETY: kill(2) with a pid this process spawned and SIGTERM has no memory effects.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
}

/// Stops the nodes that were removed from the cluster, and marks them not to be restarted.
/// A node is out once any node reports a committed configuration without it. Its own report
/// is not enough: a removed follower gets the entry that removes it but is never told that it
/// committed, since the leader stops sending to it then.
fn stop_removed(nodes: &mut [NodeProcess], statuses: &[(u64, Option<Status>)]) {
    let committed: Vec<&Status> = statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .filter(|s| s.membership_committed && !s.joint)
        .collect();
    for (id, _) in statuses {
        let out = committed
            .iter()
            .any(|s| s.members.iter().all(|m| m.id != *id));
        let Some(node) = nodes.iter_mut().find(|n| n.id == *id) else {
            continue;
        };
        if out && !node.removed {
            eprintln!("[dev] node {id} was removed from the cluster; stopping it");
            node.removed = true;
            terminate(node);
        }
    }
}

/// The configuration as the leader (or else any node) sees it, in one line.
fn configuration_line(statuses: &[(u64, Option<Status>)]) -> Option<String> {
    let answered = statuses.iter().filter_map(|(_, s)| s.as_ref());
    let status = answered
        .clone()
        .filter(|s| s.is_leader())
        .max_by_key(|s| s.term)
        .or_else(|| answered.clone().next())?;
    let ids = |role: &str| {
        let ids: Vec<String> = status
            .members
            .iter()
            .filter(|m| m.role.as_deref() == Some(role))
            .map(|m| m.id.to_string())
            .collect();
        ids.join(", ")
    };
    let mut line = format!("members: voters {}", ids("voter"));
    let learners = ids("learner");
    if !learners.is_empty() {
        line.push_str(&format!(", learners {learners}"));
    }
    if status.joint {
        line.push_str(" (joint: changing)");
    }
    Some(line)
}

/// The cluster's certificates: `DIR/certs`, made by `keel certs` on the first run (a throwaway
/// CA, and certificates for nodes 1 to 9, so that nodes added by hand have theirs, and for a
/// client called `keel-dev`), so that even a local cluster's members talk over mutual TLS and
/// take no traffic from other processes.
fn dev_certs(data_dir: &Path) -> Result<PathBuf, CliError> {
    let dir = data_dir.join("certs");
    let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let nodes: Vec<(u64, Vec<String>)> = (1..=9).map(|id| (id, hosts.clone())).collect();
    crate::certs::ensure(&dir, CLUSTER, &nodes, &["keel-dev".to_string()], false)?;
    Ok(dir)
}

fn spawn_node(
    exe: &std::path::Path,
    node: &mut NodeProcess,
    peers: &str,
    certs: &Path,
    tls: bool,
    exited: mpsc::Sender<(u64, String)>,
) -> Result<(), CliError> {
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .args(["--id", &node.id.to_string()])
        .args(["--cluster", CLUSTER])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .args(["--peer-addr", &node.peer])
        .args(["--client-addr", &node.client])
        .args(["--peers", peers])
        .arg("--certs")
        .arg(certs)
        .args(if tls {
            &["--https", "--require-client-cert"][..]
        } else {
            &[]
        })
        // The nodes share this machine: one runtime thread each keeps them from contending.
        .args(["--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        // Leader changes are reported by `keel dev` itself; nodes say only what goes wrong.
        command.env("RUST_LOG", "warn");
    }
    let mut child = command
        .spawn()
        .map_err(|e| CliError::Start(format!("cannot start node {}: {e}", node.id)))?;
    let id = node.id;
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[node {id}] {line}");
            }
        });
    }
    // Watch for the process to end without holding the Child: keep it for kill/wait.
    let pid = child.id();
    node.child = Some(child);
    tokio::spawn(async move {
        let Some(pid) = pid else {
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // SAFETY: kill(pid, 0) only checks that the process exists.
            let alive = unsafe { libc::kill(pid as i32, 0) } == 0 && !is_zombie(pid);
            if !alive {
                let _ = exited.send((id, format!("pid {pid}"))).await;
                return;
            }
        }
    });
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Polls the nodes' `/v1/status`, over HTTPS with the `keel dev` client certificate when the
/// nodes serve HTTPS.
struct StatusClient(keel_client::Client);

fn status_client(certs: &Path, tls: bool) -> Result<StatusClient, CliError> {
    let mut options = keel_client::ClientOptions {
        status_timeout: Duration::from_millis(500),
        ..keel_client::ClientOptions::default()
    };
    if tls {
        let files = keel_client::TlsFiles {
            ca: certs.join("ca.pem"),
            cert: Some(certs.join("client-keel-dev.pem")),
            key: Some(certs.join("client-keel-dev-key.pem")),
        };
        let tls =
            keel_client::ClientTls::load(&files).map_err(|e| CliError::Start(e.to_string()))?;
        options.tls = Some(tls);
    }
    let client = keel_client::Client::new(options).map_err(|e| CliError::Start(e.to_string()))?;
    Ok(StatusClient(client))
}

impl StatusClient {
    async fn status(&self, addr: &str) -> Option<Status> {
        self.0.status(addr).await.ok()
    }
}

/// Every node's status (`None` for one that did not answer).
async fn statuses(http: &StatusClient, nodes: &[NodeProcess]) -> Vec<(u64, Option<Status>)> {
    let mut all = Vec::with_capacity(nodes.len());
    for node in nodes {
        all.push((node.id, http.status(&node.client).await));
    }
    all
}

/// The leader and its term, among the nodes' statuses.
fn leader_of(statuses: &[(u64, Option<Status>)]) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    for (id, status) in statuses {
        if let Some(status) = status
            && status.is_leader()
            && best.is_none_or(|(_, term)| status.term > term)
        {
            best = Some((status.leader_id.unwrap_or(*id), status.term));
        }
    }
    best
}

async fn current_leader(http: &StatusClient, nodes: &[NodeProcess]) -> Option<(u64, u64)> {
    leader_of(&statuses(http, nodes).await)
}

async fn wait_for_leader(
    http: &StatusClient,
    nodes: &[NodeProcess],
    limit: Duration,
) -> Option<(u64, u64)> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Some(leader) = current_leader(http, nodes).await {
            return Some(leader);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("[dev] no leader after {limit:?}; the nodes' logs above may say why");
    None
}

/// `tls`: the nodes serve HTTPS, with the certificates in this directory.
fn print_banner(nodes: &[NodeProcess], leader: Option<(u64, u64)>, tls: Option<&Path>) {
    let first = &nodes[0].client;
    let second = nodes.get(1).map_or(first, |n| &n.client);
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("keel dev: {} nodes on loopback", nodes.len());
    for node in nodes {
        let pid = node
            .child
            .as_ref()
            .and_then(Child::id)
            .map_or("?".into(), |p| p.to_string());
        let role = match leader {
            Some((id, _)) if id == node.id => "  <- leader",
            _ => "",
        };
        println!(
            "  node {}  {scheme}://{}  peers {}  pid {:<7} data {}{}",
            node.id,
            node.client,
            node.peer,
            pid,
            node.data_dir.display(),
            role
        );
    }
    let endpoints: Vec<String> = if tls.is_some() {
        nodes
            .iter()
            .map(|n| format!("https://{}", n.client))
            .collect()
    } else {
        nodes.iter().map(|n| n.client.clone()).collect()
    };
    let endpoints = endpoints.join(",");
    let custom = endpoints != "127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083";
    let flag = if custom && tls.is_none() {
        format!(" --endpoints {endpoints}")
    } else {
        String::new()
    };
    let curl = match tls {
        Some(certs) => {
            let file = |name: &str| certs.join(name).display().to_string();
            format!(
                "curl --cacert {} --cert {} \\\n      --key {}",
                file("ca.pem"),
                file("client-keel-dev.pem"),
                file("client-keel-dev-key.pem")
            )
        }
        None => "curl".to_string(),
    };
    println!();
    match tls {
        None => println!("Console (live cluster view, in a browser): http://{first}/ui/"),
        Some(_) => println!(
            "Console: https://{first}/ui/ (the nodes ask for a client certificate: import \
             client-keel-dev.pem into the browser, or run keel dev without --tls)"
        ),
    }
    println!();
    println!("Try, in another terminal:");
    if let Some(certs) = tls {
        println!("  export KEEL_ENDPOINTS={endpoints}");
        if certs != Path::new("keel-data/certs") {
            let file = |name: &str| certs.join(name).display().to_string();
            println!(
                "  export KEEL_CACERT={} KEEL_CERT={} KEEL_KEY={}",
                file("ca.pem"),
                file("client-keel-dev.pem"),
                file("client-keel-dev-key.pem")
            );
        }
    }
    println!("  keel{flag} put greeting hello");
    println!("  keel{flag} get greeting");
    println!("  {curl} -X PUT --data-binary hello {scheme}://{first}/v1/kv/greeting");
    println!("  {curl} {scheme}://{second}/v1/kv/greeting");
    println!("  keel{flag} status");
    println!("  keel{flag} bench --clients 64 --duration 10");
    println!(
        "  kill -9 <pid of the leader>   # a new leader is elected; keel dev restarts the node"
    );
    println!();
    println!(
        "(`keel` is target/release/keel after `cargo build --release`.) Ctrl-C stops the cluster."
    );
}
