//! Proposal throughput of a 3-node cluster in one process: in-memory storage, the in-process
//! network (no encoding, no faults), a normal multi-threaded runtime. This is the setup of
//! openraft's `benchmarks/minimal`, so the figures compare side by side.
//!
//! ```text
//! cargo bench -p keel --bench propose                       # 1, 64, 256 clients, 3 runs each
//! cargo bench -p keel --bench propose -- --clients 64 --seconds 10 --runs 5 --workers 2
//! ```
//!
//! Each client proposes a tiny command on the leader and waits until the leader's state machine
//! applied it, in a loop. Prints committed proposals per second and p50/p99 commit latency per
//! run, then the median run; and the process's resident memory at the start and end of the
//! measured part and its peak, which should stay flat (the state machines snapshot every
//! 100,000 entries, so the logs stay bounded): `--clients 256 --seconds 120 --runs 1` shows it
//! over a long run.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use keel::{
    Applied, ApplyStream, BoxFuture, Config, LocalNetwork, MemStorage, NodeId, Raft, Request,
    Response, Role, Transport, TransportError,
};
use parking_lot::Mutex;
use tokio::sync::oneshot;

const SNAPSHOT_EVERY: u64 = 100_000;

struct Args {
    clients: Vec<usize>,
    seconds: u64,
    runs: usize,
    workers: usize,
    inflight: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        clients: vec![1, 64, 256],
        seconds: 5,
        runs: 3,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        inflight: Config::default().max_inflight_appends,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => {
                args.clients = value()
                    .split(',')
                    .map(|c| c.parse().expect("--clients takes numbers like 1,64,256"))
                    .collect()
            }
            "--seconds" => args.seconds = value().parse().expect("--seconds takes a number"),
            "--runs" => args.runs = value().parse().expect("--runs takes a number"),
            "--workers" => args.workers = value().parse().expect("--workers takes a number"),
            "--inflight" => args.inflight = value().parse().expect("--inflight takes a number"),
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown flag {other}; see the file's doc comment"),
        }
    }
    args
}

/// Wakes clients when the leader's state machine applies their index.
#[derive(Default)]
struct Waiters {
    inner: Mutex<WaitersInner>,
}

#[derive(Default)]
struct WaitersInner {
    applied: u64,
    /// Sorted by index. Clients register in nearly increasing order, so an insert is a push at
    /// the back (a `BTreeMap` costs a visible share of this benchmark's time).
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Waiters {
    fn wait(&self, index: u64) -> Option<oneshot::Receiver<()>> {
        let mut inner = self.inner.lock();
        if inner.applied >= index {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let at = inner.waiting.partition_point(|(i, _)| *i < index);
        inner.waiting.insert(at, (index, tx));
        Some(rx)
    }

    fn applied(&self, index: u64) {
        let ready: Vec<_> = {
            let mut inner = self.inner.lock();
            inner.applied = index;
            let count = inner.waiting.partition_point(|(i, _)| *i <= index);
            inner.waiting.drain(..count).collect()
        };
        // Wake the clients outside the lock, which they take to register again.
        for (_, waiter) in ready {
            let _ = waiter.send(());
        }
    }
}

/// A state machine that holds nothing: it records the applied index, wakes waiters and
/// snapshots now and then so the log stays bounded.
async fn state_machine(raft: Raft, mut stream: ApplyStream, waiters: Arc<Waiters>) {
    let mut last_snapshot = 0;
    while let Some(batch) = stream.next_batch().await {
        let Some(last) = batch.last().map(Applied::index) else {
            continue;
        };
        waiters.applied(last);
        if last - last_snapshot >= SNAPSHOT_EVERY {
            last_snapshot = last;
            raft.snapshot(last, Bytes::new())
                .expect("snapshot of applied state");
        }
    }
}

struct RunResult {
    per_second: f64,
    leader: u64,
    p50_us: u64,
    p99_us: u64,
    entries_per_append: f64,
    rss_start_mib: f64,
    rss_end_mib: f64,
    rss_peak_mib: f64,
}

/// The in-process network, counting AppendEntries and the entries they carry (to show how well
/// proposals batch).
struct Counting {
    network: LocalNetwork,
    appends: AtomicU64,
    entries: AtomicU64,
}

impl Transport for Counting {
    fn call(
        &self,
        target: NodeId,
        request: Request,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        if let Request::AppendEntries(append) = &request
            && !append.entries.is_empty()
        {
            self.appends.fetch_add(1, Ordering::Relaxed);
            self.entries
                .fetch_add(append.entries.len() as u64, Ordering::Relaxed);
        }
        self.network.call(target, request)
    }
}

async fn run_once(clients: usize, seconds: u64, inflight: usize) -> RunResult {
    let network = LocalNetwork::new();
    let counting = Arc::new(Counting {
        network: network.clone(),
        appends: AtomicU64::new(0),
        entries: AtomicU64::new(0),
    });
    let members = vec![1, 2, 3];
    let mut nodes = Vec::new();
    for id in members.clone() {
        let storage = Arc::new(MemStorage::new());
        let config = Config {
            max_inflight_appends: inflight,
            ..Config::default()
        };
        let (raft, stream) = Raft::new(id, members.clone(), config, storage, counting.clone())
            .expect("valid configuration");
        network.register(raft.clone());
        let waiters = Arc::new(Waiters::default());
        tokio::spawn(state_machine(raft.clone(), stream, waiters.clone()));
        nodes.push((raft, waiters));
    }
    let (leader, waiters) = loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Some((raft, waiters)) = nodes.iter().find(|(r, _)| r.status().role == Role::Leader) {
            break (raft.clone(), waiters.clone());
        }
    };
    // Let the no-op commit before measuring.
    let _ = leader.read_index().await;

    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs(seconds);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let leader = leader.clone();
        let waiters = waiters.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = new_histogram();
            let mut count = 0u64;
            let command = Bytes::from_static(b"x");
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let proposed = match leader.propose(command.clone()) {
                    Ok(p) => p,
                    Err(_) => {
                        tokio::task::yield_now().await;
                        continue;
                    }
                };
                if let Some(rx) = waiters.wait(proposed.index) {
                    let _ = rx.await;
                }
                let now = Instant::now();
                if now.duration_since(start) >= warmup {
                    count += 1;
                    histogram.saturating_record(now.duration_since(t0).as_micros() as u64);
                }
            }
            (count, histogram)
        }));
    }
    // Resident memory once a second over the measured part: it should stay flat.
    tokio::time::sleep(warmup).await;
    let end = tokio::time::Instant::now() + measure;
    let mut rss = vec![rss_mib()];
    while tokio::time::Instant::now() < end {
        tokio::time::sleep_until(end.min(tokio::time::Instant::now() + Duration::from_secs(1)))
            .await;
        rss.push(rss_mib());
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut histogram = new_histogram();
    for task in tasks {
        let (count, h) = task.await.expect("client task");
        total += count;
        histogram.add(h).expect("same histogram bounds");
    }
    for (raft, _) in &nodes {
        raft.shutdown().await;
    }
    let appends = counting.appends.load(Ordering::Relaxed).max(1);
    RunResult {
        per_second: total as f64 / measure.as_secs_f64(),
        leader: leader.id(),
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
        entries_per_append: counting.entries.load(Ordering::Relaxed) as f64 / appends as f64,
        rss_start_mib: rss[0],
        rss_end_mib: rss[rss.len() - 1],
        rss_peak_mib: rss.iter().copied().fold(0.0, f64::max),
    }
}

/// Microseconds up to a minute with two significant digits (1% resolution): small enough that 256
/// clients' histograms stay in cache, so recording does not weigh on the figures.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant bounds are valid")
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "keel propose benchmark: 3 nodes, in-memory storage, in-process network, {} workers, {} s per run",
        args.workers, args.seconds
    );
    for &clients in &args.clients {
        let mut results = Vec::new();
        for run in 1..=args.runs {
            let r = runtime.block_on(run_once(clients, args.seconds, args.inflight));
            println!(
                "clients={clients:<4} run={run} proposals/s={:>10.0} p50={:>6}us p99={:>6}us \
                 entries/append={:>5.1} leader={} rss={:.1}->{:.1}MiB (peak {:.1})",
                r.per_second,
                r.p50_us,
                r.p99_us,
                r.entries_per_append,
                r.leader,
                r.rss_start_mib,
                r.rss_end_mib,
                r.rss_peak_mib
            );
            results.push(r);
        }
        results.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
        let median = &results[results.len() / 2];
        println!(
            "clients={clients:<4} median proposals/s={:>10.0} p50={:>6}us p99={:>6}us",
            median.per_second, median.p50_us, median.p99_us
        );
    }
}
