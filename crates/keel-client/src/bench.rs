//! A closed-loop load generator: `clients` tasks, each with its own [`Client`] session, each
//! sending one request at a time for a fixed duration.
//!
//! A request that fails with a connection error or a 503 is retried by the client (with its
//! backoff, to the next endpoint) and its latency includes the retries: killing the leader in
//! the middle of a run shows up as a latency spike, and the run goes on. Requests still in
//! flight when the run ends are dropped uncounted.
//!
//! Progress is reported once per second to a callback: [`print_progress`] writes it to stderr,
//! a test passes `|_| {}`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{BearerToken, Call, Client, ClientOptions, Consistency, is_retryable};
use crate::direct::Direct;
use crate::error::ClientError;

/// Which requests the clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Only `PUT`s.
    Put,
    /// Only `GET`s (keys are preloaded first).
    Get,
    /// `PUT`s with the given chance in percent, `GET`s otherwise.
    Mixed {
        /// Share of writes, 0 to 100.
        put_percent: u8,
    },
}

impl Workload {
    /// Whether the workload reads, so the keys must exist first.
    fn reads(self) -> bool {
        match self {
            Workload::Put => false,
            Workload::Get => true,
            Workload::Mixed { put_percent } => put_percent < 100,
        }
    }

    /// Whether the workload writes.
    fn writes(self) -> bool {
        match self {
            Workload::Put => true,
            Workload::Get => false,
            Workload::Mixed { put_percent } => put_percent > 0,
        }
    }
}

impl FromStr for Workload {
    type Err = ClientError;

    /// `put`, `get`, `mixed` (half writes) or `mixed:N` (N percent writes).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ClientError::InvalidInput(format!(
                "workload is put, get, mixed or mixed:N (N% writes), not {s:?}"
            ))
        };
        match s {
            "put" => Ok(Workload::Put),
            "get" => Ok(Workload::Get),
            "mixed" => Ok(Workload::Mixed { put_percent: 50 }),
            _ => {
                let percent = s.strip_prefix("mixed:").ok_or_else(bad)?;
                match percent.parse::<u8>() {
                    Ok(put_percent) if put_percent <= 100 => Ok(Workload::Mixed { put_percent }),
                    _ => Err(bad()),
                }
            }
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Put => f.write_str("put"),
            Workload::Get => f.write_str("get"),
            Workload::Mixed { put_percent } => write!(f, "mixed:{put_percent}"),
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// Endpoints, deadline and backoff of every client. Its `max_idle_connections` is raised
    /// to `clients` so each client keeps its connection.
    pub client: ClientOptions,
    /// Concurrent clients, each with one request in flight. Default 16.
    pub clients: usize,
    /// How long to measure, after the warmup. Default 10 s.
    pub duration: Duration,
    /// How long to send load before measuring. Default 2 s.
    pub warmup: Duration,
    /// Which requests to send. Default [`Workload::Put`].
    pub workload: Workload,
    /// Bytes per value written. Default 100.
    pub value_size: usize,
    /// Keys are `key-0` .. `key-{key_space - 1}`, picked uniformly. Default 10 000.
    pub key_space: u64,
    /// Write every key before the run. Always done when the workload reads.
    pub preload: bool,
    /// Send everything to the leader (found with `/v1/status`) instead of spreading the
    /// clients over the endpoints. The leader is looked up again once per second; after a
    /// leader change the clients go on through whichever node answered their retry (which
    /// forwards to the new leader) until that lookup points them at the new leader.
    pub leader_only: bool,
    /// Consistency of the reads.
    pub consistency: Consistency,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            client: ClientOptions::default(),
            clients: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            workload: Workload::Put,
            value_size: 100,
            key_space: 10_000,
            preload: false,
            leader_only: false,
            consistency: Consistency::Linearizable,
        }
    }
}

/// The part of a run that a [`Progress`] line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing every key before the run.
    Preload,
    /// Load before measuring.
    Warmup,
    /// Load that counts.
    Measure,
}

/// One second of a run, for a live progress line.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Which part of the run this is.
    pub phase: Phase,
    /// Time since the phase began (warmup and measurement count as one phase here).
    pub elapsed: Duration,
    /// Requests completed in the last second.
    pub ops_last_second: u64,
    /// Requests completed since the phase began.
    pub ops: u64,
    /// Requests failed (after all retries) since the phase began.
    pub errors: u64,
    /// During preload: the number of keys to write.
    pub keys: u64,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs();
        match self.phase {
            Phase::Preload => write!(
                f,
                "preload {secs:>3} s  {:>7} ops/s  {}/{} keys  {} errors",
                self.ops_last_second, self.ops, self.keys, self.errors
            ),
            Phase::Warmup | Phase::Measure => write!(
                f,
                "{:<7} {secs:>3} s  {:>7} ops/s  {} errors",
                if self.phase == Phase::Warmup {
                    "warmup"
                } else {
                    "bench"
                },
                self.ops_last_second,
                self.errors
            ),
        }
    }
}

/// Writes a progress line to stderr: the progress callback of the `keel bench` command.
pub fn print_progress(progress: &Progress) {
    eprintln!("{progress}");
}

/// Latency of the successful requests measured, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// The workload run.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// The endpoints the clients started at (one: the leader, with `leader_only`).
    pub targets: Vec<String>,
    /// Requests that succeeded during the measurement.
    pub ops: u64,
    /// The measurement's length.
    pub elapsed: Duration,
    /// `ops / elapsed`.
    pub ops_per_sec: f64,
    /// Latency of those requests, retries included.
    pub latency: Latency,
    /// Requests that failed after all retries, by [`ClientError::kind`].
    pub errors: BTreeMap<&'static str, u64>,
    /// Attempts that failed and were retried during the measurement.
    pub retries: u64,
    /// The longest time during the measurement in which no write completed (counted from
    /// the start of the measurement, and to its end), and when it began, from the start of
    /// the measurement: how long the cluster stopped taking writes, say while its leader
    /// changed. `None` for a workload without writes.
    pub longest_write_gap: Option<(Duration, Duration)>,
}

impl BenchReport {
    /// All failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl fmt::Display for BenchReport {
    /// A few lines for a person:
    ///
    /// ```text
    /// workload put, 16 clients -> 127.0.0.1:8081
    /// 51234 ops in 10.0 s: 5123 ops/s
    /// latency p50 2.81 ms  p99 7.02 ms  p99.9 12.4 ms  max 301 ms
    /// longest gap without a committed write: 14.2 ms (at 3.41 s)
    /// errors: none; retries: 3
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "workload {}, {} clients -> {}",
            self.workload,
            self.clients,
            self.targets.join(", ")
        )?;
        writeln!(
            f,
            "{} ops in {:.1} s: {:.0} ops/s",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec
        )?;
        writeln!(
            f,
            "latency p50 {}  p99 {}  p99.9 {}  max {}",
            Micros(self.latency.p50_us),
            Micros(self.latency.p99_us),
            Micros(self.latency.p999_us),
            Micros(self.latency.max_us)
        )?;
        if let Some((gap, at)) = self.longest_write_gap {
            writeln!(
                f,
                "longest gap without a committed write: {} (at {:.2} s)",
                Micros(u64::try_from(gap.as_micros()).unwrap_or(u64::MAX)),
                at.as_secs_f64()
            )?;
        }
        if self.errors.is_empty() {
            write!(f, "errors: none")?;
        } else {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            write!(f, "errors: {}", errors.join(", "))?;
        }
        writeln!(f, "; retries: {}", self.retries)
    }
}

/// Microseconds with three significant digits and a fitting unit.
struct Micros(u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0 as f64;
        let (value, unit) = match self.0 {
            0..1_000 => return write!(f, "{} µs", self.0),
            1_000..1_000_000 => (us / 1e3, "ms"),
            _ => (us / 1e6, "s"),
        };
        let decimals = if value < 10.0 {
            2
        } else if value < 100.0 {
            1
        } else {
            0
        };
        write!(f, "{value:.decimals$} {unit}")
    }
}

/// Runs the benchmark: preload if needed, warm up, measure. `progress` is called about once
/// per second.
///
/// Fails if the options are unusable, if `leader_only` finds no leader within the client
/// deadline, or if a preload write fails after its retries. Failed requests during the run
/// are counted in the report, not returned.
pub async fn run<P>(options: &BenchOptions, mut progress: P) -> Result<BenchReport, ClientError>
where
    P: FnMut(&Progress) + Send,
{
    if options.clients == 0 || options.key_space == 0 || options.duration.is_zero() {
        return Err(ClientError::InvalidInput(
            "a benchmark needs at least one client, one key and a nonzero duration".into(),
        ));
    }
    let mut client_options = options.client.clone();
    client_options.max_idle_connections = client_options.max_idle_connections.max(options.clients);
    let base = Client::new(client_options)?;
    let targets = if options.leader_only {
        let leader = base.find_leader().await?;
        base.prefer_endpoint(&leader);
        vec![leader]
    } else {
        base.endpoints().to_vec()
    };
    let sessions: Vec<Arc<Client>> = (0..options.clients)
        .map(|i| {
            let session = base.new_session();
            session.prefer_endpoint(&targets[i % targets.len()]);
            Arc::new(session)
        })
        .collect();
    let value = random_value(options.value_size);

    if options.preload || options.workload.reads() {
        preload(&sessions, options.key_space, &value, &mut progress).await?;
    }

    let started = Instant::now();
    let plan = Arc::new(Plan {
        workload: options.workload,
        consistency: options.consistency,
        key_space: options.key_space,
        value,
        measure_start: started + options.warmup,
        end: started + options.warmup + options.duration,
    });
    let counters = Arc::new(Counters::default());
    let mut workers = JoinSet::new();
    for session in &sessions {
        let seed = rand::rng().random::<u64>();
        workers.spawn(worker(
            session.clone(),
            plan.clone(),
            counters.clone(),
            seed,
        ));
    }
    let follower = options
        .leader_only
        .then(|| tokio::spawn(follow_leader(base, sessions, plan.end)));

    let mut last_ops = 0;
    let mut tick = started;
    loop {
        tick += Duration::from_secs(1);
        if tick > plan.end {
            break;
        }
        tokio::time::sleep_until(tick).await;
        let ops = counters.ops.load(Ordering::Relaxed);
        progress(&Progress {
            phase: if tick <= plan.measure_start {
                Phase::Warmup
            } else {
                Phase::Measure
            },
            elapsed: tick - started,
            ops_last_second: ops - last_ops,
            ops,
            errors: counters.errors.load(Ordering::Relaxed),
            keys: 0,
        });
        last_ops = ops;
    }

    if let Some(follower) = follower {
        follower.abort();
    }
    let mut histogram = new_histogram();
    let mut errors = BTreeMap::new();
    let mut ops = 0;
    let mut retries = 0;
    while let Some(joined) = workers.join_next().await {
        let result = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        histogram
            .add(&result.histogram)
            .expect("every histogram has the same bounds");
        for (kind, n) in result.errors {
            *errors.entry(kind).or_insert(0) += n;
        }
        ops += result.ops;
        retries += result.retries;
    }
    Ok(BenchReport {
        workload: options.workload,
        clients: options.clients,
        targets: if options.leader_only {
            targets
        } else {
            targets.into_iter().take(options.clients).collect()
        },
        ops,
        elapsed: options.duration,
        ops_per_sec: ops as f64 / options.duration.as_secs_f64(),
        latency: Latency {
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        },
        errors,
        retries,
        longest_write_gap: options
            .workload
            .writes()
            .then(|| counters.longest_write_gap(options.duration)),
    })
}

/// Writes `key-0` .. `key-{key_space - 1}`, each session taking the next unwritten key.
async fn preload<P>(
    sessions: &[Arc<Client>],
    key_space: u64,
    value: &Bytes,
    progress: &mut P,
) -> Result<(), ClientError>
where
    P: FnMut(&Progress) + Send,
{
    let next_key = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = JoinSet::new();
    for session in sessions {
        let session = session.new_session();
        let (next_key, written, value) = (next_key.clone(), written.clone(), value.clone());
        writers.spawn(async move {
            loop {
                let key = next_key.fetch_add(1, Ordering::Relaxed);
                if key >= key_space {
                    return Ok(());
                }
                session.put(&format!("key-{key}"), value.clone()).await?;
                written.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    let mut tick = started + Duration::from_secs(1);
    let mut last = 0;
    loop {
        tokio::select! {
            joined = writers.join_next() => match joined {
                None => return Ok(()),
                Some(Ok(Ok(()))) => {}
                // Returning drops `writers`, which aborts the other writers.
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            },
            () = tokio::time::sleep_until(tick) => {
                let ops = written.load(Ordering::Relaxed);
                progress(&Progress {
                    phase: Phase::Preload,
                    elapsed: tick - started,
                    ops_last_second: ops - last,
                    ops,
                    errors: 0,
                    keys: key_space,
                });
                last = ops;
                tick += Duration::from_secs(1);
            }
        }
    }
}

/// Points the sessions at the leader whenever a once-a-second lookup finds a new one, until
/// `end`.
async fn follow_leader(base: Client, sessions: Vec<Arc<Client>>, end: Instant) {
    let mut leader = base.current_endpoint().to_string();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if Instant::now() >= end {
            return;
        }
        let cluster = base.cluster_status().await;
        if let Some((endpoint, _)) = cluster.leader()
            && endpoint != leader
        {
            tracing::debug!(%endpoint, "new leader; moving the clients to it");
            for session in &sessions {
                session.prefer_endpoint(endpoint);
            }
            leader = endpoint.to_string();
        }
    }
}

/// What every worker shares.
struct Plan {
    workload: Workload,
    consistency: Consistency,
    key_space: u64,
    value: Bytes,
    measure_start: Instant,
    end: Instant,
}

/// Live totals for the progress line, warmup included, and the gaps between writes.
#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    errors: AtomicU64,
    /// When the last write completed, in µs from the start of the measurement.
    last_write_us: AtomicU64,
    /// The longest gap between two writes' completions so far, and where it ended.
    longest_gap_us: AtomicU64,
    longest_gap_end_us: AtomicU64,
}

impl Counters {
    /// A write completed `at_us` after the measurement started.
    fn write_completed(&self, at_us: u64) {
        // Completions race by nanoseconds at most; `fetch_max` keeps the last one from going
        // back.
        let previous = self.last_write_us.fetch_max(at_us, Ordering::Relaxed);
        let gap = at_us.saturating_sub(previous);
        if self.longest_gap_us.fetch_max(gap, Ordering::Relaxed) < gap {
            self.longest_gap_end_us.store(at_us, Ordering::Relaxed);
        }
    }

    /// The longest gap, the one up to the end of a measurement of `duration` included, and
    /// when it began.
    fn longest_write_gap(&self, duration: Duration) -> (Duration, Duration) {
        let end = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.write_completed(end);
        let gap = self.longest_gap_us.load(Ordering::Relaxed);
        let ended = self.longest_gap_end_us.load(Ordering::Relaxed);
        (
            Duration::from_micros(gap),
            Duration::from_micros(ended.saturating_sub(gap)),
        )
    }
}

/// One worker's measurement, merged at the end (no shared histogram to contend on).
struct WorkerResult {
    histogram: Histogram<u64>,
    errors: BTreeMap<&'static str, u64>,
    ops: u64,
    retries: u64,
}

async fn worker(
    client: Arc<Client>,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    seed: u64,
) -> WorkerResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut result = WorkerResult {
        histogram: new_histogram(),
        errors: BTreeMap::new(),
        ops: 0,
        retries: 0,
    };
    // HTTP/1.1 requests go out on a connection of the worker's own (see `direct`); HTTP/2 ones
    // through the client, whose one connection per node all workers share.
    let mut direct = (!client.options().http2).then(|| {
        let options = client.options();
        let authorization = options.token.as_ref().map(BearerToken::header);
        Direct::new(
            client.current_endpoint(),
            options.tls.clone(),
            authorization,
        )
    });
    // This worker's writes are this session's only ones, so it numbers them itself.
    let mut next_seq = 1;
    let mut retries_at_start = None;
    let mut direct_retries = 0;
    loop {
        let started = Instant::now();
        if started >= plan.end {
            break;
        }
        let measured = started >= plan.measure_start;
        if measured && retries_at_start.is_none() {
            retries_at_start = Some(client.retry_count() + direct_retries);
        }
        let key = format!("key-{}", rng.random_range(0..plan.key_space));
        let put = match plan.workload {
            Workload::Put => true,
            Workload::Get => false,
            Workload::Mixed { put_percent } => rng.random_range(0..100u8) < put_percent,
        };
        let call = if put {
            next_seq += 1;
            Call::put(&key, plan.value.clone(), (client.client_id(), next_seq - 1))
        } else {
            Call::get(&key, plan.consistency)
        };
        let request = async {
            let call = call?;
            if let Some(direct) = direct.as_mut() {
                // Follow the client to the node it now prefers (a new leader).
                direct.retarget(client.current_endpoint());
                let timeout = client.options().attempt_timeout;
                match direct.send(&call, timeout).await {
                    Ok(answer) if !is_retryable(answer.status) => {
                        return answer.into_result(&key).map(drop);
                    }
                    Ok(answer) => {
                        tracing::debug!(endpoint = %direct.endpoint(), status = %answer.status, "retrying");
                    }
                    Err(reason) => {
                        tracing::debug!(endpoint = %direct.endpoint(), %reason, "retrying");
                    }
                }
                direct_retries += 1;
            }
            // Retried by the client across nodes, with the same session and sequence number.
            client.send(&call).await?.into_result(&key).map(drop)
        };
        // A request still in flight at the end does not count.
        let Ok(outcome) = tokio::time::timeout_at(plan.end, request).await else {
            break;
        };
        match outcome {
            Ok(()) => {
                counters.ops.fetch_add(1, Ordering::Relaxed);
                if measured {
                    let now = Instant::now();
                    let micros = u64::try_from((now - started).as_micros()).unwrap_or(u64::MAX);
                    result.histogram.saturating_record(micros.max(1));
                    result.ops += 1;
                    if put {
                        let at = now.saturating_duration_since(plan.measure_start);
                        counters.write_completed(u64::try_from(at.as_micros()).unwrap_or(u64::MAX));
                    }
                }
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                if measured {
                    *result.errors.entry(e.kind()).or_insert(0) += 1;
                }
            }
        }
    }
    if let Some(at_start) = retries_at_start {
        result.retries = client.retry_count() + direct_retries - at_start;
    }
    result
}

/// Microseconds from 1 µs to an hour, three significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

fn random_value(size: usize) -> Bytes {
    let mut rng = rand::rng();
    (0..size)
        .map(|_| rng.random_range(b'a'..=b'z'))
        .collect::<Vec<u8>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_from_the_command_line() {
        assert_eq!("put".parse::<Workload>().unwrap(), Workload::Put);
        assert_eq!("get".parse::<Workload>().unwrap(), Workload::Get);
        assert_eq!(
            "mixed".parse::<Workload>().unwrap(),
            Workload::Mixed { put_percent: 50 }
        );
        assert_eq!(
            "mixed:10".parse::<Workload>().unwrap(),
            Workload::Mixed { put_percent: 10 }
        );
        for bad in ["mixed:101", "mixed:", "scan"] {
            assert!(bad.parse::<Workload>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Workload::Mixed { put_percent: 10 }.to_string(), "mixed:10");
    }

    #[test]
    fn latencies_print_in_fitting_units() {
        assert_eq!(Micros(812).to_string(), "812 µs");
        assert_eq!(Micros(2_810).to_string(), "2.81 ms");
        assert_eq!(Micros(12_400).to_string(), "12.4 ms");
        assert_eq!(Micros(301_000).to_string(), "301 ms");
        assert_eq!(Micros(1_200_000).to_string(), "1.20 s");
    }
}
