//! A keel node as a server: the KV service's HTTP API ([`http`]), its metrics ([`metrics`]),
//! and the assembly of storage, transport, Raft and service into a running node.

#![warn(missing_docs)]

pub mod auth;
mod body;
pub mod console;
mod forward;
pub mod http;
mod join;
pub mod listener;
pub mod members;
pub mod metrics;
pub mod monitor;
pub mod node;
mod status;

pub use http::{Api, ApiOptions, Directory, StatusView, default_body_budget, router};
pub use keel_net::PeerSecret;
pub use metrics::{Metrics, PeerTraffic, TrafficSource};
pub use node::{DEFAULT_SEGMENT_SIZE_BYTES, Node, NodeConfig, NodeError, cluster_id};
