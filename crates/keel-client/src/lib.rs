//! The client side of the `keel` command line: a [`Client`] of the KV service's HTTP API that
//! retries across nodes and makes writes exactly-once, the cluster [status table](ClusterStatus),
//! and a closed-loop [load generator](mod@bench).
//!
//! # Using the client
//!
//! ```
//! # mod cluster { include!("../tests/support/cluster.rs"); }
//! use keel_client::{Client, ClientError, ClientOptions, Consistency};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), ClientError> {
//! # let node = cluster::TestCluster::start(1, Default::default()).await;
//! # let endpoint = node.nodes[0].addr.clone();
//! // Any node serves any request: followers forward to the leader.
//! let client = Client::new(ClientOptions::with_endpoints([endpoint]))?;
//!
//! // The first write waits (retrying 503s) until the node has elected itself.
//! client.put("greeting", "hello").await?;
//! client.append("greeting", ", world").await?;
//! let value = client.get("greeting", Consistency::Linearizable).await?;
//! assert_eq!(value, "hello, world");
//!
//! let swap = client.cas("greeting", Some(b"hello, world"), b"bye").await?;
//! assert!(swap.succeeded);
//! client.delete("greeting").await?;
//! let gone = client.get("greeting", Consistency::Linearizable).await;
//! assert!(matches!(gone, Err(ClientError::NotFound { .. })));
//!
//! // One row per endpoint: id, address, role, term, commit, applied, lag, leader.
//! let cluster = client.cluster_status().await;
//! assert!(cluster.leader().is_some());
//! print!("{}", cluster.table());
//! # Ok(())
//! # }
//! ```
//!
//! # The `keel` subcommands
//!
//! | subcommand | call |
//! | --- | --- |
//! | `get KEY [--stale]` | [`Client::get`] with [`Consistency`]; print the bytes as they are |
//! | `put KEY VALUE` | [`Client::put`] → [`Written`] (the log index) |
//! | `append KEY SUFFIX` | [`Client::append`] → [`Written`] |
//! | `delete KEY` | [`Client::delete`] → [`Written`] |
//! | `cas KEY EXPECTED NEW` (no expected: key absent) | [`Client::cas`] → [`CasOutcome`] |
//! | `status` | [`Client::cluster_status`], print [`ClusterStatus::table`] |
//! | `member list` | [`Client::members`], print [`members_table`] |
//! | `member add ID --peer-addr A --client-addr B` | [`Client::add_member`] |
//! | `member promote ID` / `member remove ID` | [`Client::promote_member`] / [`Client::remove_member`] |
//! | `leader transfer [--to ID]` | [`Client::transfer_leader`] |
//! | `bench ...` | [`bench::run`] with [`bench::print_progress`], print the [`bench::BenchReport`] |
//!
//! Endpoints default to [`DEFAULT_ENDPOINTS`], the local dev cluster; [`parse_endpoints`] reads
//! an `--endpoints a:1,b:2` flag. Every error is a [`ClientError`] whose `Display` is one line
//! fit to print after `error: `.
//!
//! # How it is built
//!
//! [`client`] holds the request, retry and session logic, [`status`] the status view and its
//! table, [`bench`](mod@bench) the load generator, [`error`] the error type.

#![warn(missing_docs)]

pub mod bench;
pub mod client;
mod direct;
pub mod error;
pub mod status;
pub mod tls;

pub use bench::{BenchOptions, BenchReport, Workload};
pub use client::{
    BearerToken, CasOutcome, Client, ClientOptions, Consistency, DEFAULT_ENDPOINTS,
    MAX_VALUE_BYTES, Written, parse_endpoints,
};
pub use error::{ClientError, Failure};
pub use keel_api::{KeyEntry, KeyList, LeaderChanged, MAX_LIST_LIMIT, Member, Members};
pub use status::{ClusterStatus, EndpointStatus, MemberStatus, NodeStatus, members_table};
pub use tls::{ClientTls, TlsFiles};
