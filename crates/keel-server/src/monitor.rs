//! What a node remembers of its recent past, for the console (`GET /v1/events`,
//! `GET /v1/history`, `GET /v1/cluster`): a bounded ring of events (elections, leaders,
//! membership changes, snapshots, followers lost and found) and one of per-second load samples,
//! both kept in memory by a task that looks at the node four times a second.
//!
//! Nothing here is persisted: a restarted node starts with empty rings (and a `started` event).
//! The console merges the members' events ([`merge_events`]), so the history survives any one
//! node's restart.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use keel::{Role, Status};
use keel_api::{Event, Sample};
use keel_kv::KvService;
use parking_lot::Mutex;

use crate::metrics::Metrics;

/// Events a node keeps.
pub const MAX_EVENTS: usize = 1000;
/// Samples a node keeps: 15 minutes, one a second.
pub const MAX_SAMPLES: usize = 900;
/// Time between samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the node is looked at for events.
const LOOK_INTERVAL: Duration = Duration::from_millis(250);
/// A follower the leader has not heard from for this long is reported unreachable.
const UNREACHABLE_AFTER_MS: u64 = 2000;

/// A queue that keeps the last `capacity` items pushed, oldest first.
#[derive(Debug)]
pub struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T: Clone> Ring<T> {
    /// An empty ring keeping at most `capacity` (at least 1) items.
    pub fn new(capacity: usize) -> Ring<T> {
        let capacity = capacity.max(1);
        Ring {
            items: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }

    /// Adds `item` as the newest, dropping the oldest if the ring is full.
    pub fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
        debug_assert!(self.items.len() <= self.capacity);
    }

    /// The items, oldest first.
    pub fn to_vec(&self) -> Vec<T> {
        self.items.iter().cloned().collect()
    }

    /// The newest item.
    pub fn last(&self) -> Option<&T> {
        self.items.back()
    }

    /// How many items it holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Latencies of the current second, counted in quarter-octave buckets of microseconds (each
/// about 19% wide): recording is one atomic increment, so the write path can afford it.
pub struct LatencyWindow {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

const LATENCY_BUCKETS: usize = 128;

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyWindow {
    /// Counts one latency.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The median and 99th percentile, in milliseconds, of what was recorded since the last
    /// call (which this empties); `None` if nothing was.
    pub fn take_quantiles(&self) -> Option<(f64, f64)> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let at = |q: f64| {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, &n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return bucket_middle_micros(i) / 1000.0;
                }
            }
            bucket_middle_micros(LATENCY_BUCKETS - 1) / 1000.0
        };
        Some((at(0.5), at(0.99)))
    }
}

/// The bucket of `micros` (at least 1): four per power of two.
fn bucket_of(micros: u64) -> usize {
    let octave = 63 - u64::from(micros.leading_zeros());
    let quarter = if octave >= 2 {
        (micros >> (octave - 2)) & 3
    } else {
        (micros << (2 - octave)) & 3
    };
    ((octave * 4 + quarter) as usize).min(LATENCY_BUCKETS - 1)
}

/// The middle of bucket `i`, in microseconds.
fn bucket_middle_micros(i: usize) -> f64 {
    let octave = (i / 4) as i32;
    let quarter = (i % 4) as f64;
    let low = (4.0 + quarter) * 2f64.powi(octave - 2);
    let high = (5.0 + quarter) * 2f64.powi(octave - 2);
    (low + high) / 2.0
}

/// A node's rings.
pub struct Monitor {
    node_id: u64,
    events: Mutex<Ring<Event>>,
    samples: Mutex<Ring<Sample>>,
}

impl Monitor {
    /// Empty rings for node `node_id`.
    pub fn new(node_id: u64) -> Arc<Monitor> {
        Arc::new(Monitor {
            node_id,
            events: Mutex::new(Ring::new(MAX_EVENTS)),
            samples: Mutex::new(Ring::new(MAX_SAMPLES)),
        })
    }

    /// The node's events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().to_vec()
    }

    /// The node's samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().to_vec()
    }

    /// The newest sample.
    pub fn last_sample(&self) -> Option<Sample> {
        self.samples.lock().last().cloned()
    }

    fn record(&self, kind: &str, term: u64, subject: Option<u64>, text: String) {
        tracing::debug!(kind, term, subject, %text, "event");
        self.events.lock().push(Event {
            time_ms: now_ms(),
            node: self.node_id,
            kind: kind.to_string(),
            term,
            subject,
            text,
        });
    }

    /// Looks at `kv`'s node four times a second, recording events and a sample a second (with
    /// the latencies `metrics` saw meanwhile), until `kv`'s node stops or the monitor is
    /// dropped.
    pub fn start(self: &Arc<Self>, kv: KvService, metrics: Arc<Metrics>) {
        let monitor = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut watch = Watch::default();
            let mut ticks = tokio::time::interval(LOOK_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let per_sample = (SAMPLE_INTERVAL.as_millis() / LOOK_INTERVAL.as_millis()) as u32;
            let mut tick = 0u32;
            loop {
                ticks.tick().await;
                let Some(monitor) = monitor.upgrade() else {
                    return;
                };
                let stopped = watch.look(&monitor, &kv);
                tick += 1;
                if tick.is_multiple_of(per_sample) {
                    watch.sample(&monitor, &kv, &metrics);
                }
                if stopped {
                    return;
                }
            }
        });
    }
}

/// What the monitoring task saw last, to tell what changed.
#[derive(Default)]
struct Watch {
    started: bool,
    role: Option<Role>,
    term: u64,
    leader: Option<u64>,
    membership_index: u64,
    snapshots_taken: u64,
    snapshots_installed: u64,
    /// Followers the leader reported unreachable.
    unreachable: std::collections::BTreeSet<u64>,
    /// The applied index and the reads counter at the last sample, and when it was taken.
    writes: u64,
    reads: u64,
    sampled_at: Option<std::time::Instant>,
}

impl Watch {
    /// Records what changed since the last look; returns whether the node has stopped.
    fn look(&mut self, monitor: &Monitor, kv: &KvService) -> bool {
        let status: Status = kv.raft().status();
        let term = status.current_term;
        let counters = kv.counters();
        let first_look = !self.started;
        if first_look {
            self.started = true;
            self.term = term;
            monitor.record("started", term, None, format!("node {} started", status.id));
            self.membership_index = status.membership.index;
            self.snapshots_taken = counters.snapshots_taken.load(Ordering::Relaxed);
            self.snapshots_installed = counters.snapshots_installed.load(Ordering::Relaxed);
        }
        if let Some(reason) = kv.stopped_reason() {
            monitor.record(
                "stopped",
                term,
                None,
                format!("node {} stopped: {reason}", status.id),
            );
            return true;
        }
        // A new term is an election (pre-votes do not change the term). Looked at four times a
        // second, a node is seldom seen as a candidate: the term tells.
        if !first_look && term > self.term {
            let text = if status.role == Role::Candidate {
                format!(
                    "election for term {term} (node {} is a candidate)",
                    status.id
                )
            } else {
                format!("election for term {term}")
            };
            monitor.record("election", term, None, text);
        }
        if let Some(leader) = status.leader_id
            && (self.leader != Some(leader) || term != self.term)
        {
            monitor.record(
                "leader",
                term,
                Some(leader),
                format!("node {leader} became leader in term {term}"),
            );
        }
        if status.membership.index != self.membership_index {
            self.membership_index = status.membership.index;
            let membership = &status.membership.membership;
            let text = if membership.is_joint() {
                format!(
                    "membership change under way (joint configuration at index {})",
                    status.membership.index
                )
            } else {
                format!(
                    "configuration at index {}: voters {:?}, learners {:?}",
                    status.membership.index,
                    membership.voters().iter().collect::<Vec<_>>(),
                    membership.learners().iter().collect::<Vec<_>>()
                )
            };
            monitor.record("membership", term, None, text);
        }
        let taken = counters.snapshots_taken.load(Ordering::Relaxed);
        if taken > self.snapshots_taken {
            self.snapshots_taken = taken;
            monitor.record(
                "snapshot_taken",
                term,
                None,
                format!(
                    "node {} took a snapshot through index {}",
                    status.id, status.snapshot_index
                ),
            );
        }
        let installed = counters.snapshots_installed.load(Ordering::Relaxed);
        if installed > self.snapshots_installed {
            self.snapshots_installed = installed;
            monitor.record(
                "snapshot_installed",
                term,
                None,
                format!(
                    "node {} installed a snapshot from the leader through index {}",
                    status.id, status.snapshot_index
                ),
            );
        }
        if status.role == Role::Leader {
            for follower in &status.followers {
                let lost = follower.last_contact_ms > UNREACHABLE_AFTER_MS;
                if lost && self.unreachable.insert(follower.id) {
                    monitor.record(
                        "unreachable",
                        term,
                        Some(follower.id),
                        format!(
                            "node {} has not answered the leader for {} ms",
                            follower.id, follower.last_contact_ms
                        ),
                    );
                } else if !lost && self.unreachable.remove(&follower.id) {
                    monitor.record(
                        "reachable",
                        term,
                        Some(follower.id),
                        format!("node {} answers the leader again", follower.id),
                    );
                }
            }
        } else {
            self.unreachable.clear();
        }
        self.role = Some(status.role);
        self.term = term;
        self.leader = status.leader_id;
        false
    }

    /// Records a sample of the load since the last one.
    fn sample(&mut self, monitor: &Monitor, kv: &KvService, metrics: &Metrics) {
        let now = std::time::Instant::now();
        let counters = kv.counters();
        // Entries applied: the cluster's write rate, the same on every member (this node's own
        // answered writes would show nothing on a follower, whose clients' writes the leader
        // commits).
        let writes = kv.applied_index();
        let reads = counters.reads.load(Ordering::Relaxed);
        let seconds = self
            .sampled_at
            .map_or(SAMPLE_INTERVAL.as_secs_f64(), |at| {
                now.duration_since(at).as_secs_f64()
            })
            .max(0.001);
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
        let (writes_per_s, reads_per_s) = if self.sampled_at.is_some() {
            (rate(writes, self.writes), rate(reads, self.reads))
        } else {
            (0.0, 0.0)
        };
        self.writes = writes;
        self.reads = reads;
        self.sampled_at = Some(now);
        let commit = metrics.commit_window.take_quantiles();
        let fsync = metrics.fsync_window.take_quantiles();
        let status = kv.raft().status();
        monitor.samples.lock().push(Sample {
            time_ms: now_ms(),
            writes_per_s,
            reads_per_s,
            commit_p50_ms: commit.map(|c| c.0),
            commit_p99_ms: commit.map(|c| c.1),
            fsync_p50_ms: fsync.map(|f| f.0),
            fsync_p99_ms: fsync.map(|f| f.1),
            apply_lag: status.commit_index.saturating_sub(kv.applied_index()),
        });
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Merges the event lists of several members into one timeline, oldest first, of at most
/// [`MAX_EVENTS`] (the newest). The same happening seen by several members (a new leader in a
/// term, a configuration) is kept once, as the first member to record it saw it.
pub fn merge_events(lists: impl IntoIterator<Item = Vec<Event>>) -> Vec<Event> {
    let mut all: Vec<Event> = lists.into_iter().flatten().collect();
    all.sort_by_key(|e| (e.time_ms, e.node));
    let mut seen = std::collections::HashSet::new();
    all.retain(|event| {
        // Events about the cluster as a whole are the same event whoever saw them; the rest
        // (a node's own election, start, snapshot) belong to the node that recorded them.
        let shared = matches!(event.kind.as_str(), "leader" | "membership" | "election");
        let key = if shared {
            // Every member sees a term begin; which of them stood is a detail of one.
            let text = match event.kind.as_str() {
                "election" => String::new(),
                _ => event.text.clone(),
            };
            (event.kind.clone(), event.term, event.subject, 0, text)
        } else {
            (
                event.kind.clone(),
                event.term,
                event.subject,
                event.node,
                format!("{}:{}", event.time_ms, event.text),
            )
        };
        seen.insert(key)
    });
    if all.len() > MAX_EVENTS {
        all.drain(..all.len() - MAX_EVENTS);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time_ms: u64, node: u64, kind: &str, term: u64, subject: Option<u64>) -> Event {
        Event {
            time_ms,
            node,
            kind: kind.into(),
            term,
            subject,
            text: format!("{kind} {term} {subject:?}"),
        }
    }

    #[test]
    fn a_ring_keeps_the_newest_in_order() {
        let mut ring = Ring::new(3);
        assert!(ring.is_empty());
        for i in 0..10 {
            ring.push(i);
            assert!(ring.len() <= 3);
        }
        assert_eq!(ring.to_vec(), [7, 8, 9]);
        assert_eq!(ring.last(), Some(&9));
        let mut one = Ring::new(0);
        one.push(1);
        one.push(2);
        assert_eq!(one.to_vec(), [2], "a ring holds at least one item");
    }

    #[test]
    fn merged_events_are_ordered_deduplicated_and_bounded() {
        let node1 = vec![
            event(100, 1, "started", 1, None),
            event(210, 1, "election", 2, None),
            event(300, 1, "leader", 2, Some(2)),
            event(500, 1, "membership", 2, None),
        ];
        let node2 = vec![
            event(200, 2, "election", 2, None),
            event(250, 2, "leader", 2, Some(2)),
            event(400, 2, "snapshot_taken", 2, None),
            event(510, 2, "membership", 2, None),
        ];
        let merged = merge_events([node1, node2]);
        let seen: Vec<(u64, &str)> = merged.iter().map(|e| (e.node, e.kind.as_str())).collect();
        assert_eq!(
            seen,
            [
                (1, "started"),
                (2, "election"),
                (2, "leader"),
                (2, "snapshot_taken"),
                (1, "membership"),
            ],
            "the election, the leader change and the configuration are kept once, as first seen"
        );
        assert!(merged.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));

        let many: Vec<Vec<Event>> = (0..3)
            .map(|node| {
                (0..MAX_EVENTS as u64)
                    .map(|t| event(t * 3 + node, node, "snapshot_taken", t, None))
                    .collect()
            })
            .collect();
        let merged = merge_events(many);
        assert_eq!(merged.len(), MAX_EVENTS);
        assert_eq!(
            merged.last().unwrap().time_ms,
            (MAX_EVENTS as u64 - 1) * 3 + 2
        );
        assert!(merged.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    }

    #[test]
    fn latency_quantiles_come_from_what_was_recorded_since_the_last_look() {
        let window = LatencyWindow::default();
        assert_eq!(window.take_quantiles(), None);
        for _ in 0..98 {
            window.record(Duration::from_micros(1000));
        }
        window.record(Duration::from_millis(40));
        window.record(Duration::from_millis(40));
        let (p50, p99) = window.take_quantiles().expect("recorded");
        assert!((0.8..1.25).contains(&p50), "p50 {p50} ms");
        assert!((32.0..50.0).contains(&p99), "p99 {p99} ms");
        assert_eq!(
            window.take_quantiles(),
            None,
            "each look empties the window"
        );
        // Extremes land in the first and last buckets rather than out of range.
        window.record(Duration::ZERO);
        window.record(Duration::from_secs(1 << 40));
        assert!(window.take_quantiles().is_some());
    }

    #[test]
    fn buckets_grow_by_quarter_octaves() {
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(4), 8);
        assert_eq!(bucket_of(5), 9);
        assert_eq!(bucket_of(7), 11);
        assert_eq!(bucket_of(8), 12);
        for micros in [1u64, 3, 10, 999, 1000, 65_000, 1 << 20] {
            let middle = bucket_middle_micros(bucket_of(micros));
            let ratio = middle / micros as f64;
            assert!((0.8..1.25).contains(&ratio), "{micros} us -> {middle}");
        }
    }
}
