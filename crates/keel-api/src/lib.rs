//! The HTTP contract of keel's KV service: the JSON documents and header names that the server
//! (`keel-server`) writes and its clients (`keel-client`, the `keel` command, other tools) read,
//! defined once so the two sides cannot drift apart. The README's API table lists the routes.
//!
//! Fields added after a document first shipped carry `#[serde(default)]`, so a newer client
//! reads an older server's answers.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// Header carrying the client's id for exactly-once writes.
pub const CLIENT_ID_HEADER: &str = "keel-client-id";
/// Header carrying the client's request sequence number.
pub const REQUEST_SEQ_HEADER: &str = "keel-request-seq";
/// Set on a request one node forwards to the leader, so it is never forwarded twice.
pub const FORWARDED_HEADER: &str = "keel-forwarded";

/// A member's role in the configuration, as `GET /v1/members` and `/v1/status` name it.
pub mod role {
    /// Votes and counts toward commits (in a joint configuration: in either half).
    pub const VOTER: &str = "voter";
    /// Receives the log, never votes.
    pub const LEARNER: &str = "learner";
}

/// Every error answer: `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// A short stable code, for programs (`not_found`, `change_in_progress`, ...).
    pub code: String,
}

/// `GET /v1/status`: one node's view of itself and of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `pre_candidate`, or `stopped` for a node that serves
    /// nothing any more (see `stopped`).
    pub role: String,
    /// The node's current term.
    pub term: u64,
    /// The leader it knows of, if any.
    pub leader_id: Option<u64>,
    /// That leader's client address, if known.
    pub leader_addr: Option<String>,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied to the store.
    pub applied_index: u64,
    /// Last index in the node's log.
    pub last_log_index: u64,
    /// Last index covered by the node's snapshot.
    pub snapshot_index: u64,
    /// Every member of the configuration in force on this node.
    pub members: Vec<MemberStatus>,
    /// Whether that configuration is the joint one of a membership change.
    #[serde(default)]
    pub joint: bool,
    /// Its log index (0: the configuration the cluster started with).
    #[serde(default)]
    pub membership_index: u64,
    /// Whether it is committed.
    #[serde(default)]
    pub membership_committed: bool,
    /// On a leader handing leadership over: the node taking over.
    #[serde(default)]
    pub transfer_to: Option<u64>,
    /// Why the node serves nothing any more, if so (its role is then `stopped`): data it cannot
    /// apply, which also shows in its log, or a shutdown.
    #[serde(default)]
    pub stopped: Option<String>,
    /// Why the node's storage cannot write just now, if so (a full disk, no file
    /// descriptors): it waits for the resource, a leader refuses writes meanwhile (503
    /// `storage_unavailable`), and both end by themselves once the resource is back.
    #[serde(default)]
    pub storage_unavailable: Option<String>,
    /// Bytes the node's log and snapshot take on disk, if its storage says.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
}

impl NodeStatus {
    /// Whether the node reports itself leader.
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }

    /// Committed entries not yet applied: `commit_index - applied_index`.
    pub fn apply_lag(&self) -> u64 {
        self.commit_index.saturating_sub(self.applied_index)
    }

    /// The node's own entry in its member list, if it is a member.
    pub fn own_member(&self) -> Option<&MemberStatus> {
        self.members.iter().find(|m| m.id == self.node_id)
    }

    /// The node's own client address, from its member list.
    pub fn client_addr(&self) -> Option<&str> {
        self.own_member().and_then(|m| m.client_addr.as_deref())
    }
}

/// One member in [`NodeStatus::members`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's id.
    pub id: u64,
    /// Where it serves Raft traffic.
    pub peer_addr: Option<String>,
    /// Where it serves the client API.
    pub client_addr: Option<String>,
    /// On the leader: highest log index known replicated on it.
    pub match_index: Option<u64>,
    /// On the leader: milliseconds since it last answered.
    pub last_contact_ms: Option<u64>,
    /// [`role::VOTER`] or [`role::LEARNER`].
    #[serde(default)]
    pub role: Option<String>,
}

/// `GET /v1/kv?prefix=P&after=K&limit=N`: a page of keys, in byte order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// The keys of the page, each with its value's size.
    pub keys: Vec<KeyEntry>,
    /// Whether more keys with the prefix follow the last one (ask again with `after` set to
    /// it).
    pub more: bool,
}

/// One key in [`KeyList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// The key.
    pub key: String,
    /// The size of its value in bytes.
    pub size: u64,
}

/// Most keys one `GET /v1/kv` answers with.
pub const MAX_LIST_LIMIT: usize = 1000;

/// `GET /v1/members` (and the answer to every membership change): the configuration in force
/// on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// Every member, by id.
    pub members: Vec<Member>,
    /// Whether the configuration is the joint one of a change in progress.
    pub joint: bool,
}

/// One member in [`Members`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's id.
    pub id: u64,
    /// [`role::VOTER`] or [`role::LEARNER`].
    pub role: String,
    /// Where it serves Raft traffic, if known.
    pub peer_addr: Option<String>,
    /// Where it serves the client API, if known.
    pub client_addr: Option<String>,
}

/// `POST /v1/members`: add a node as a learner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// The new node's id (positive, never used before in this cluster).
    pub id: u64,
    /// Where it listens for Raft traffic: IP:PORT.
    pub peer_addr: String,
    /// Where it serves clients: HOST:PORT.
    pub client_addr: String,
}

/// `POST /v1/leader`: hand leadership to `to`, or (absent) to the most up-to-date follower.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferLeader {
    /// The voter to take over.
    #[serde(default)]
    pub to: Option<u64>,
}

/// The answer to `POST /v1/leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderChanged {
    /// The new leader, if the old one has heard from it.
    pub leader: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_servers_status_still_reads() {
        let older = r#"{"node_id":1,"role":"leader","term":2,"leader_id":1,"leader_addr":null,
            "commit_index":5,"applied_index":5,"last_log_index":5,"snapshot_index":0,
            "members":[{"id":1,"peer_addr":null,"client_addr":"a:1","match_index":5,
            "last_contact_ms":0}]}"#;
        let status: NodeStatus = serde_json::from_str(older).unwrap();
        assert!(status.is_leader() && !status.joint);
        assert_eq!(status.client_addr(), Some("a:1"));
        assert_eq!(status.members[0].role, None);
    }

    #[test]
    fn requests_refuse_unknown_fields_and_transfer_takes_an_empty_object() {
        let add = r#"{"id":4,"peer_addr":"127.0.0.1:7084","client_addr":"127.0.0.1:8084"}"#;
        assert_eq!(serde_json::from_str::<AddMember>(add).unwrap().id, 4);
        let typo = r#"{"id":4,"peer":"127.0.0.1:7084","client_addr":"x"}"#;
        assert!(serde_json::from_str::<AddMember>(typo).is_err());
        let any: TransferLeader = serde_json::from_str("{}").unwrap();
        assert_eq!(any.to, None);
        let to: TransferLeader = serde_json::from_str(r#"{"to":3}"#).unwrap();
        assert_eq!(to.to, Some(3));
    }
}

/// Something that happened to a node, as it remembers it (`GET /v1/events`, and merged across
/// members in [`ClusterView`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, in milliseconds since the Unix epoch (the recording node's clock).
    pub time_ms: u64,
    /// The member that recorded it.
    pub node: u64,
    /// `started`, `election`, `leader`, `membership`, `snapshot_taken`, `snapshot_installed`,
    /// `unreachable`, `reachable` or `stopped`.
    pub kind: String,
    /// The term it happened in.
    pub term: u64,
    /// The node it is about, if another than `node` (the new leader, say).
    pub subject: Option<u64>,
    /// What happened, in words.
    pub text: String,
}

/// `GET /v1/events`: the events a node remembers, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    /// The node.
    pub node_id: u64,
    /// At most the last 1,000.
    pub events: Vec<Event>,
}

/// One second of a node's load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The end of the second, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Log entries applied per second: the cluster's write rate, the same on every member.
    pub writes_per_s: f64,
    /// Reads this node answered, per second.
    pub reads_per_s: f64,
    /// Commit latency (propose to applied) of this node's writes: median and 99th percentile,
    /// in milliseconds; `None` in a second without writes.
    pub commit_p50_ms: Option<f64>,
    /// See `commit_p50_ms`.
    pub commit_p99_ms: Option<f64>,
    /// Log fsync latency, as `commit_p50_ms`.
    pub fsync_p50_ms: Option<f64>,
    /// See `fsync_p50_ms`.
    pub fsync_p99_ms: Option<f64>,
    /// Committed entries not yet applied, at the end of the second.
    pub apply_lag: u64,
}

/// `GET /v1/history`: a node's load, a sample a second, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The node.
    pub node_id: u64,
    /// Time between samples.
    pub interval_ms: u64,
    /// At most the last 15 minutes.
    pub samples: Vec<Sample>,
}

/// One member in [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Its id.
    pub id: u64,
    /// Its client address, if known.
    pub client_addr: Option<String>,
    /// Its peer address, if known.
    pub peer_addr: Option<String>,
    /// `voter` or `learner`, by the configuration.
    pub configured_role: String,
    /// Whether its status could be fetched just now.
    pub reachable: bool,
    /// Why not, if not.
    pub error: Option<String>,
    /// Entries it is behind the leader's log, by the leader's count.
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard from it, by the leader.
    pub last_contact_ms: Option<u64>,
    /// Its own `GET /v1/status`.
    pub status: Option<NodeStatus>,
}

/// `GET /v1/cluster` (and each `cluster` event of `GET /v1/watch`): the cluster as one node
/// sees it, from every member's own status and events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node answering.
    pub node_id: u64,
    /// The leader, if known.
    pub leader_id: Option<u64>,
    /// The highest term a reachable member reports.
    pub term: u64,
    /// Whether a membership change is in progress.
    pub joint: bool,
    /// Voters in the configuration.
    pub voters: u64,
    /// How many more voters may fail with the cluster still able to commit (0 or less: none).
    pub tolerance: i64,
    /// Every member of the configuration, by id.
    pub members: Vec<ClusterMember>,
    /// The members' events, merged, oldest first (at most 1,000).
    pub events: Vec<Event>,
}
