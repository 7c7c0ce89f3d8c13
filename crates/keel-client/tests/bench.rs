//! Short benchmark runs against real in-process clusters, silent.

mod support;

use std::time::Duration;

use keel_client::bench::{self, BenchOptions, Phase, Workload};
use keel_client::{Client, ClientOptions, Consistency};
use keel_kv::KvOptions;
use support::cluster::TestCluster;

fn assert_sane(report: &bench::BenchReport) {
    let l = &report.latency;
    assert!(report.ops > 0, "no ops:\n{report}");
    assert!(
        0 < l.p50_us && l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us,
        "percentiles out of order:\n{report}"
    );
    assert!(l.max_us < 60_000_000, "a request took a minute:\n{report}");
    assert!(report.ops_per_sec > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_against_the_leader_reports_ops_and_percentiles() {
    let cluster = TestCluster::start(3, KvOptions::default()).await;
    let leader = cluster.leader().await;
    let options = BenchOptions {
        client: ClientOptions::with_endpoints(cluster.endpoints()),
        clients: 4,
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(300),
        workload: Workload::Mixed { put_percent: 50 },
        value_size: 64,
        key_space: 50,
        preload: false,
        leader_only: true,
        consistency: Consistency::Linearizable,
    };
    let mut ticks = Vec::new();
    let report = bench::run(&options, |p| ticks.push(p.clone()))
        .await
        .expect("the bench runs");
    assert_sane(&report);
    assert_eq!(report.error_count(), 0, "{report}");
    assert_eq!(report.targets, [cluster.nodes[leader].addr.clone()]);
    assert!(
        ticks
            .iter()
            .any(|t| t.phase == Phase::Measure && t.ops_last_second > 0),
        "{ticks:?}"
    );

    // Mixed reads need the keys: every one was preloaded.
    let client = Client::new(ClientOptions::with_endpoints(cluster.endpoints())).unwrap();
    for key in ["key-0", "key-49"] {
        let value = client.get(key, Consistency::Stale).await.unwrap();
        assert_eq!(value.len(), 64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_run_spread_over_the_endpoints_preloads_and_reads() {
    let cluster = TestCluster::start(3, KvOptions::default()).await;
    cluster.leader().await;
    let options = BenchOptions {
        client: ClientOptions::with_endpoints(cluster.endpoints()),
        clients: 3,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        workload: Workload::Get,
        key_space: 20,
        ..BenchOptions::default()
    };
    let report = bench::run(&options, |_| {}).await.expect("the bench runs");
    assert_sane(&report);
    assert_eq!(report.error_count(), 0, "{report}");
    assert_eq!(report.targets, cluster.endpoints());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_run_goes_on_through_a_leader_crash() {
    let mut cluster = TestCluster::start(3, KvOptions::default()).await;
    let leader = cluster.leader().await;
    let options = BenchOptions {
        client: ClientOptions::with_endpoints(cluster.endpoints()),
        clients: 4,
        duration: Duration::from_secs(4),
        warmup: Duration::ZERO,
        workload: Workload::Put,
        key_space: 100,
        leader_only: true,
        ..BenchOptions::default()
    };
    // The progress callback tells when the run is a second in, and the test kills the leader.
    let (second_in, mut crash) = tokio::sync::mpsc::unbounded_channel();
    let mut per_second = Vec::new();
    let bench = tokio::spawn(async move {
        let report = bench::run(&options, |p| {
            let _ = second_in.send(());
            per_second.push(p.ops_last_second);
        })
        .await;
        (report, per_second)
    });
    crash.recv().await.expect("a progress tick");
    cluster.kill(leader).await;
    let (report, per_second) = bench.await.unwrap();
    let report = report.expect("the bench runs");
    println!("{report}ops per second: {per_second:?}");
    assert_sane(&report);
    assert_eq!(report.error_count(), 0, "{report}");
    assert!(report.retries > 0, "the crash cost retries:\n{report}");
    assert!(
        per_second.last().copied().unwrap_or(0) > 0,
        "ops went on after the crash: {per_second:?}\n{report}"
    );
}
