//! RPC throughput and latency of the TCP transport over loopback, with a handler that answers at
//! once (so the figures are the transport's, not Raft's). Prints figures; asserts nothing.
//!
//! `cargo bench -p keel-net --bench rpc [plain|tls]`: over plain TCP, then over mutual TLS 1.3.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::message::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use keel::{BoxFuture, Entry, Payload, RaftError, Request, Response, Transport};
use keel_net::{ClusterCa, NetConfig, PeerTls, RpcHandler, TcpServer, TcpTransport, TlsFiles};

/// Answers every request at once.
struct Instant_;

impl RpcHandler for Instant_ {
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Response, RaftError>> {
        let response = match request {
            Request::Vote(v) => Response::Vote(VoteResponse {
                term: v.term,
                vote_granted: true,
            }),
            Request::AppendEntries(a) => Response::AppendEntries(AppendEntriesResponse {
                term: a.term,
                success: true,
                conflict_index: 0,
                conflict_term: None,
            }),
            Request::InstallSnapshot(_) | Request::TimeoutNow(_) => unreachable!("not benchmarked"),
        };
        Box::pin(std::future::ready(Ok(response)))
    }
}

fn vote() -> Request {
    Request::Vote(VoteRequest {
        term: 1,
        candidate_id: 2,
        last_log_index: 0,
        last_log_term: 0,
        pre_vote: true,
        transfer: false,
    })
}

/// An AppendEntries carrying `count` commands of `size` bytes.
fn append(count: usize, size: usize) -> Request {
    let command = Bytes::from(vec![7u8; size]);
    Request::AppendEntries(AppendEntriesRequest {
        term: 1,
        leader_id: 2,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: (1..=count as u64)
            .map(|index| Entry {
                index,
                term: 1,
                payload: Payload::Command(command.clone()),
            })
            .collect(),
        leader_commit: 0,
    })
}

/// Runs `total` calls of `request` from `callers` concurrent callers; returns calls per second.
async fn run(client: &Arc<TcpTransport>, request: Request, callers: usize, total: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let client = client.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / callers {
                client.call(1, request.clone()).await.expect("reply");
            }
        }));
    }
    for task in tasks {
        task.await.expect("caller");
    }
    (total / callers * callers) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // `rpc plain` or `rpc tls` runs one of the two; no argument runs both.
    let only = std::env::args()
        .skip(1)
        .find(|a| a == "plain" || a == "tls");
    runtime.block_on(async {
        if only.as_deref() != Some("tls") {
            println!("plain TCP");
            bench(None::<fn(u64) -> Arc<PeerTls>>).await;
        }
        if only.as_deref() != Some("plain") {
            let dir = std::env::temp_dir().join(format!("keel-rpc-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let ca = ClusterCa::generate("bench").expect("a CA");
            std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write");
            for id in [1, 2] {
                let issued = ca.node(id, &[]).expect("a certificate");
                std::fs::write(dir.join(format!("{id}.pem")), issued.cert_pem).expect("write");
                std::fs::write(dir.join(format!("{id}.key")), issued.key_pem).expect("write");
            }
            let tls = |id: u64| {
                let files = TlsFiles {
                    ca: dir.join("ca.pem"),
                    cert: dir.join(format!("{id}.pem")),
                    key: dir.join(format!("{id}.key")),
                };
                Arc::new(PeerTls::load(files, keel_net::cluster_id("bench"), id).expect("certs"))
            };
            println!("mutual TLS 1.3");
            bench(Some(tls)).await;
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
}

async fn bench(tls: Option<impl Fn(u64) -> Arc<PeerTls>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peers = BTreeMap::from([
        (1, listener.local_addr().expect("bound")),
        (2, "127.0.0.1:1".parse().expect("addr")),
    ]);
    let config = |id| {
        let mut config = NetConfig::new(
            keel_net::cluster_id("bench"),
            id,
            peers[&id],
            "",
            peers.clone(),
        );
        config.tls = tls.as_ref().map(|tls| tls(id));
        config
    };
    let server_transport = TcpTransport::new(config(1)).expect("config");
    let server = TcpServer::from_listener(listener, &server_transport).expect("listen");
    server.serve(Instant_);
    let client = TcpTransport::new(config(2)).expect("config");
    run(&client, vote(), 1, 1000).await; // connect and warm up

    let rate = run(&client, vote(), 1, 20_000).await;
    println!(
        "vote, 1 caller:        {rate:>9.0} calls/s ({:.1} µs per round trip)",
        1e6 / rate
    );
    for callers in [8, 64, 256] {
        let rate = run(&client, vote(), callers, 200_000).await;
        println!("vote, {callers:>3} callers:    {rate:>9.0} calls/s");
    }
    for (count, size, callers, total) in [(64, 100, 8, 50_000), (16, 64 << 10, 8, 2_000)] {
        let request = append(count, size);
        let rate = run(&client, request, callers, total).await;
        let mib = rate * (count * size) as f64 / (1 << 20) as f64;
        println!(
            "append {count} x {size} B, {callers} callers: {rate:>9.0} calls/s ({mib:.0} MiB/s of entries)"
        );
    }
    let stats = &client.stats()[0];
    println!(
        "sent {} RPCs, {} MiB; {} connection(s)",
        stats.rpcs_sent,
        stats.bytes_sent >> 20,
        stats.connects
    );
    client.shutdown().await;
    server.shutdown().await;
    server_transport.shutdown().await;
    tokio::time::sleep(Duration::ZERO).await;
}
