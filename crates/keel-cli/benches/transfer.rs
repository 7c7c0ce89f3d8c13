//! How long a leadership transfer takes on three real `keel serve` processes on loopback, from
//! the `POST /v1/leader {"to": target}` to the target's first commit as leader. Prints
//! figures; asserts nothing but that each transfer ends.
//!
//! `cargo bench -p keel-cli --bench transfer` (builds the release-profile `keel`)
//!
//! The nodes run with keel's default timing (heartbeats every 100 ms, elections after 1 to
//! 2 s: no timing flag is given) and, like `keel dev`, one runtime thread each, since they
//! share the machine. One client writes in a loop meanwhile (`PUT`, 100-byte values, any
//! node), a light load. Then 20 times (`-- --runs N` for another count): find the leader, pick
//! the next voter, read its status, send the request (to the leader), and read the target's
//! `/v1/status` every millisecond. Per transfer it prints, in ms since the request was sent:
//!
//! - `leader`: the first status that shows the target leading in the next term;
//! - `past`: the first that also shows its commit index past the one read before the request
//!   (the end point the measurement was first specified with; it can be met as soon as the
//!   target leads, if the target learned of commits during the hand-over);
//! - `commit`: the first that shows its commit index at or past the last index of its log as
//!   first seen leading. That index is its no-op, or later if entries arrived before that
//!   status was read (a few, at most, under this load): an upper bound on the first commit,
//!   normally exact (the `entries` column says how many entries that last index is past the
//!   target's log as last seen before it led: 1 means the no-op alone, and `commit` exact).
//!   The figure to quote;
//! - `answer`: when the `POST` was answered (the old leader has stepped down and heard from
//!   the new one).
//!
//! Then the median, p90 and max of each. Status reads take a fraction of a millisecond on
//! loopback, which bounds the resolution. The nodes' logs stay in the temporary directory if a
//! transfer fails, or with `KEEL_KEEP=1`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keel_client::{Client, ClientOptions, NodeStatus};

/// Transfers measured unless `--runs` says otherwise.
const RUNS: usize = 20;

/// Nodes of the cluster; node `i` (from 0) has id `i + 1`.
const NODES: usize = 3;

/// How often the target's status is read.
const POLL: Duration = Duration::from_millis(1);

/// A transfer that has not ended by then is reported as failed: the server gives up on it
/// after an election timeout (at most 2 s by default) and answers within its request timeout.
const GIVE_UP: Duration = Duration::from_secs(10);

/// Pause between transfers, so that each starts from a steady cluster.
const BETWEEN: Duration = Duration::from_millis(500);

/// Starts the cluster, runs the transfers, prints the figures; the processes are killed
/// however it ends.
fn main() {
    let runs = runs_from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a runtime");
    let mut cluster = Cluster::new();
    for i in 0..NODES {
        cluster.start(i);
    }
    let outcome = runtime.block_on(bench(&cluster, runs));
    if let Err(e) = &outcome {
        // Keep the logs for a look.
        cluster.keep = true;
        eprintln!("{e}\n{}", cluster.logs());
    }
    if cluster.keep {
        eprintln!("node logs kept in {}", cluster.dir.display());
    }
    // Kills the processes: `exit` below would not run destructors.
    drop(cluster);
    if outcome.is_err() {
        std::process::exit(1);
    }
}

/// `--runs N`, or the default. (cargo passes `--bench` to every bench binary: ignored.)
fn runs_from_args() -> usize {
    let mut args = std::env::args().skip(1);
    let mut runs = RUNS;
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            runs = args
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .expect("--runs takes a positive number");
        }
    }
    runs
}

/// One transfer's figures, in time since the request was sent (see the module docs).
struct Timing {
    /// The target first seen leading in the next term.
    leader: Duration,
    /// ... with its commit index past the one read before the request.
    past: Duration,
    /// ... with its commit index at the last index of its log as first seen leading.
    commit: Duration,
    /// The `POST` answered.
    answer: Duration,
    /// The old leader.
    from: u64,
    /// The node asked to take over.
    to: u64,
    /// The old leader's term.
    term: u64,
    /// Entries in the new leader's log past the last index it held as a follower (from the
    /// last status read before it led): 1 when `commit` waited for the no-op alone.
    entries: u64,
}

/// Starts the load, measures `runs` transfers one after another and prints them, then the
/// median, p90, max and min of each figure.
async fn bench(cluster: &Cluster, runs: usize) -> Result<(), String> {
    let endpoints: Vec<String> = (0..NODES).map(|i| cluster.endpoint(i)).collect();
    let client =
        Client::new(ClientOptions::with_endpoints(endpoints.clone())).map_err(|e| e.to_string())?;
    wait_for_leader(&client, Duration::from_secs(30)).await?;

    let load = Load::start(&client);
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "leadership transfer on {NODES} keel serve processes (default timing, --threads 1), \
         one client writing in a loop; ms since POST /v1/leader was sent"
    );
    println!(
        "{:>3}  {:>7}  {:>7}  {:>7}  {:>7}  {:>7}  transfer",
        "run", "leader", "past", "commit", "answer", "entries"
    );
    let mut timings = Vec::new();
    for run in 1..=runs {
        let t = transfer_once(&client, &endpoints).await?;
        println!(
            "{run:>3}  {:>7.1}  {:>7.1}  {:>7.1}  {:>7.1}  {:>7}  {} -> {} (term {} -> {})",
            ms(t.leader),
            ms(t.past),
            ms(t.commit),
            ms(t.answer),
            t.entries,
            t.from,
            t.to,
            t.term,
            t.term + 1
        );
        timings.push(t);
        tokio::time::sleep(BETWEEN).await;
    }
    let (ok, failed) = load.stop().await;
    println!();
    for (name, pick) in [
        ("leader", (|t: &Timing| t.leader) as fn(&Timing) -> Duration),
        ("past", |t: &Timing| t.past),
        ("commit", |t: &Timing| t.commit),
        ("answer", |t: &Timing| t.answer),
    ] {
        let values: Vec<f64> = timings.iter().map(|t| ms(pick(t))).collect();
        println!("{name:>6}: {}", summary(&values));
    }
    println!("load: {ok} writes acknowledged, {failed} failed (after the client's retries)");
    Ok(())
}

/// Hands leadership from the current leader to the next node and times it.
async fn transfer_once(client: &Client, endpoints: &[String]) -> Result<Timing, String> {
    let (leader_endpoint, leader) = wait_for_leader(client, Duration::from_secs(10)).await?;
    let from = leader.node_id;
    let voters: Vec<u64> = leader
        .members
        .iter()
        // A status without roles (an older node) lists voters only.
        .filter(|m| m.role.as_deref().is_none_or(|role| role == "voter"))
        .map(|m| m.id)
        .collect();
    let to = voters
        .iter()
        .copied()
        .filter(|&id| id != from)
        .min_by_key(|&id| (id + NODES as u64 - from) % NODES as u64)
        .ok_or_else(|| format!("no other voter than {from} in {voters:?}"))?;
    let target = &endpoints[to as usize - 1];
    let before = client.status(target).await.map_err(|e| e.to_string())?;
    let term = leader.term;

    // The request goes to the leader itself, so no forwarding hop is timed.
    let admin =
        Client::new(ClientOptions::with_endpoints([leader_endpoint])).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let answer = tokio::spawn(async move {
        let outcome = admin.transfer_leader(Some(to)).await;
        (outcome, Instant::now())
    });

    let mut poll = tokio::time::interval(POLL);
    // A status read can take longer than the period; then read again at once, not in a burst.
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut leading, mut past, mut last_as_follower) = (None, None, before.last_log_index);
    let commit = loop {
        poll.tick().await;
        if started.elapsed() > GIVE_UP {
            return Err(format!(
                "node {to} did not lead and commit within {GIVE_UP:?} of the request"
            ));
        }
        // A read that fails (a busy node, say) is just a missed sample.
        let Ok(s) = client.status(target).await else {
            continue;
        };
        let now = started.elapsed();
        if !(s.is_leader() && s.term == term + 1) {
            last_as_follower = s.last_log_index;
            continue;
        }
        let (_, first_index) = *leading.get_or_insert((now, s.last_log_index));
        if s.commit_index > before.commit_index {
            past.get_or_insert(now);
        }
        if s.commit_index >= first_index {
            break now;
        }
    };
    let (leader_at, first_index) = leading.expect("seen leading before committing");
    let (outcome, answered) = answer.await.map_err(|e| e.to_string())?;
    match outcome {
        Ok(changed) if changed.leader == Some(to) => {}
        other => return Err(format!("transfer {from} -> {to} answered {other:?}")),
    }
    Ok(Timing {
        leader: leader_at,
        past: past.expect("past the old commit index once committing"),
        commit,
        answer: answered - started,
        from,
        to,
        term,
        entries: first_index.saturating_sub(last_as_follower),
    })
}

/// The leader's endpoint and status, once some node reports itself leader and every node is
/// in its term (so that a transfer starts from a settled cluster).
async fn wait_for_leader(client: &Client, limit: Duration) -> Result<(String, NodeStatus), String> {
    let until = Instant::now() + limit;
    loop {
        let status = client.cluster_status().await;
        if let Some((endpoint, leader)) = status.leader() {
            let settled = status.endpoints.iter().all(|e| {
                e.status
                    .as_ref()
                    .is_ok_and(|s| s.term == leader.term && s.leader_id == Some(leader.node_id))
            });
            if settled {
                return Ok((endpoint.to_string(), leader.clone()));
            }
        }
        if Instant::now() > until {
            return Err(format!(
                "no settled leader within {limit:?}:\n{}",
                status.table()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The background write load: one client, one write at a time.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Load {
    fn start(client: &Client) -> Load {
        let client = client.new_session();
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let task = tokio::spawn({
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            async move {
                let value = vec![b'v'; 100];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("load-{}", n % 1000);
                    match client.put(&key, value.clone()).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        });
        Load {
            stop,
            task,
            ok,
            failed,
        }
    }

    /// Stops writing; the counts of acknowledged and failed writes.
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The node processes, killed (and the temporary directory removed, unless `keep`) on drop,
/// a panic included.
struct Cluster {
    dir: PathBuf,
    peer_ports: Vec<u16>,
    client_ports: Vec<u16>,
    children: Vec<Option<Child>>,
    keep: bool,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = std::env::temp_dir().join(format!("keel-transfer-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        // Readable by this user only, or the nodes warn about it.
        let mut secret = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(&mut secret, 0o600);
        secret
            .write(true)
            .create_new(true)
            .open(dir.join("peer-secret"))
            .and_then(|mut f| f.write_all(b"the transfer bench's peer secret\n"))
            .expect("secret file");
        let mut ports = Ports::new();
        Cluster {
            peer_ports: (0..NODES).map(|_| ports.next()).collect(),
            client_ports: (0..NODES).map(|_| ports.next()).collect(),
            children: (0..NODES).map(|_| None).collect(),
            dir,
            keep: std::env::var_os("KEEL_KEEP").is_some_and(|v| v == "1"),
        }
    }

    fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.client_ports[i])
    }

    /// Starts node `i` as a member of the initial cluster.
    fn start(&mut self, i: usize) {
        let peers: Vec<String> = (0..NODES)
            .map(|j| format!("{}=127.0.0.1:{}", j + 1, self.peer_ports[j]))
            .collect();
        let log = std::fs::File::create(self.log_path(i)).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .arg("serve")
            .args(["--id", &(i + 1).to_string()])
            .args(["--cluster", "transfer-bench"])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{}", i + 1)))
            .args(["--peer-addr", &format!("127.0.0.1:{}", self.peer_ports[i])])
            .args(["--client-addr", &self.endpoint(i)])
            .args(["--peers", &peers.join(",")])
            .arg("--peer-secret-file")
            .arg(self.dir.join("peer-secret"))
            // As `keel dev` runs them: three nodes and the bench share a small machine.
            .args(["--threads", "1"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
        // which is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            // Should this process die without unwinding (SIGKILL, abort), the nodes die too.
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.children[i] = Some(command.spawn().expect("start keel serve"));
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{}.log", i + 1))
    }

    /// The last lines of every node's log.
    fn logs(&self) -> String {
        (0..NODES)
            .map(|i| {
                let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                format!("--- node {} (last lines)\n{}", i + 1, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.keep && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Hands out ports free now, for the nodes to listen on: below the kernel's range for outgoing
/// connections (32768 and up on Linux by default), from which a port could be given to some
/// connection between this check and the node's bind; and starting at a place that depends on
/// the process, so that runs side by side pick different ports.
struct Ports(u16);

impl Ports {
    fn new() -> Ports {
        Ports((std::process::id() % 600) as u16 * 20)
    }

    fn next(&mut self) -> u16 {
        for _ in 0..12_000 {
            let port = 20_000 + self.0 % 12_000;
            self.0 = self.0.wrapping_add(1);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
        panic!("no free port between 20000 and 32000")
    }
}

/// `d` in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `median .. ms  p90 .. ms  max .. ms  min .. ms  (n runs)`: the median of an even count is
/// the mean of the middle two; p90 is the nearest-rank value (the 18th of 20).
fn summary(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return "no runs".into();
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let p90 = v[(n * 9).div_ceil(10) - 1];
    format!(
        "median {median:.1} ms  p90 {p90:.1} ms  max {:.1} ms  min {:.1} ms  ({n} runs)",
        v[n - 1],
        v[0]
    )
}
