//! What `/v1/status` says, and the table `keel status` prints from every endpoint's answer.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::client::unreachable_reason;
use crate::error::ClientError;

/// One node's `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: u64,
    /// `leader`, `follower`, `candidate` or `pre_candidate`.
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
    /// Every member of the cluster, as this node knows them.
    pub members: Vec<MemberStatus>,
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

    /// The node's own client address, from its member list.
    pub fn client_addr(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.id == self.node_id)
            .and_then(|m| m.client_addr.as_deref())
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
}

/// What one endpoint answered to `/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint asked (`host:port`).
    pub endpoint: String,
    /// Its status, or why it did not give one.
    pub status: Result<NodeStatus, ClientError>,
}

/// Every endpoint's status, from [`Client::cluster_status`](crate::Client::cluster_status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// One entry per endpoint, in the client's endpoint order.
    pub endpoints: Vec<EndpointStatus>,
}

impl ClusterStatus {
    /// The endpoint and status of a node that reports itself leader (the one in the highest
    /// term, should two briefly both claim it).
    pub fn leader(&self) -> Option<(&str, &NodeStatus)> {
        self.endpoints
            .iter()
            .filter_map(|e| Some((e.endpoint.as_str(), e.status.as_ref().ok()?)))
            .filter(|(_, s)| s.is_leader())
            .max_by_key(|(_, s)| s.term)
    }

    /// The status as a table, one row per endpoint, ending with a newline:
    ///
    /// ```text
    /// ID  ADDRESS         ROLE         TERM  COMMIT  APPLIED  LAG  LEADER
    /// 1   127.0.0.1:8081  leader       2     17      17       0    1
    /// 2   127.0.0.1:8082  follower     2     17      16       1    1
    /// -   127.0.0.1:8083  unreachable  -     -       -        -    -       connection refused
    /// ```
    ///
    /// The address is the node's own client address (the endpoint asked, if it does not know
    /// it); an endpoint that did not answer shows `unreachable` and why.
    pub fn table(&self) -> String {
        const HEADER: [&str; 8] = [
            "ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "LEADER",
        ];
        // What a node says (its address, role, errors) is shown as data, never as terminal
        // control: a node, or whatever answers on its address, could otherwise rewrite the
        // operator's screen.
        let rows: Vec<([String; 8], Option<String>)> = self
            .endpoints
            .iter()
            .map(|e| match &e.status {
                Ok(s) => (
                    [
                        s.node_id.to_string(),
                        printable(s.client_addr().unwrap_or(&e.endpoint), 64),
                        printable(&s.role, 64),
                        s.term.to_string(),
                        s.commit_index.to_string(),
                        s.applied_index.to_string(),
                        s.apply_lag().to_string(),
                        s.leader_id.map_or("-".to_string(), |l| l.to_string()),
                    ],
                    None,
                ),
                Err(error) => (
                    [
                        "-".to_string(),
                        e.endpoint.clone(),
                        "unreachable".to_string(),
                        "-".to_string(),
                        "-".to_string(),
                        "-".to_string(),
                        "-".to_string(),
                        "-".to_string(),
                    ],
                    Some(printable(&unreachable_reason(error), 300)),
                ),
            })
            .collect();
        let mut widths = HEADER.map(str::len);
        for (cells, _) in &rows {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String], note: Option<&str>| {
            let mut text = String::new();
            for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(&format!("{cell:<width$}"));
            }
            if let Some(note) = note {
                text.push_str("  ");
                text.push_str(note);
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&HEADER.map(String::from), None);
        for (cells, note) in &rows {
            line(cells, note.as_deref());
        }
        out
    }
}

/// `text` with control characters shown as `?`, cut to `max` characters (marked with `…`).
fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, role: &str, commit: u64, applied: u64) -> NodeStatus {
        NodeStatus {
            node_id: id,
            role: role.into(),
            term: 2,
            leader_id: Some(1),
            leader_addr: Some("127.0.0.1:8081".into()),
            commit_index: commit,
            applied_index: applied,
            last_log_index: commit,
            snapshot_index: 0,
            members: vec![MemberStatus {
                id,
                peer_addr: None,
                client_addr: Some(format!("127.0.0.1:808{id}")),
                match_index: None,
                last_contact_ms: None,
            }],
        }
    }

    #[test]
    fn the_table_lines_up_and_names_unreachable_nodes() {
        let cluster = ClusterStatus {
            endpoints: vec![
                EndpointStatus {
                    endpoint: "127.0.0.1:8081".into(),
                    status: Ok(node(1, "leader", 17, 17)),
                },
                EndpointStatus {
                    endpoint: "127.0.0.1:8082".into(),
                    status: Ok(node(2, "follower", 17, 16)),
                },
                EndpointStatus {
                    endpoint: "127.0.0.1:8083".into(),
                    status: Err(ClientError::Unreachable {
                        endpoint: "127.0.0.1:8083".into(),
                        reason: "connection refused".into(),
                    }),
                },
            ],
        };
        let expected = "\
ID  ADDRESS         ROLE         TERM  COMMIT  APPLIED  LAG  LEADER
1   127.0.0.1:8081  leader       2     17      17       0    1
2   127.0.0.1:8082  follower     2     17      16       1    1
-   127.0.0.1:8083  unreachable  -     -       -        -    -       connection refused
";
        assert_eq!(cluster.table(), expected);
        assert_eq!(cluster.leader().map(|(e, _)| e), Some("127.0.0.1:8081"));
    }

    #[test]
    fn what_a_node_says_cannot_control_the_terminal_or_flood_it() {
        let mut hostile = node(1, "leader\x1b[2J\x1b]0;owned\x07", 1, 1);
        hostile.members[0].client_addr = Some(format!("{}\r\n", "x".repeat(500)));
        let cluster = ClusterStatus {
            endpoints: vec![
                EndpointStatus {
                    endpoint: "127.0.0.1:8081".into(),
                    status: Ok(hostile),
                },
                EndpointStatus {
                    endpoint: "127.0.0.1:8082".into(),
                    status: Err(ClientError::Unreachable {
                        endpoint: "127.0.0.1:8082".into(),
                        reason: "refused\x1b[31m".into(),
                    }),
                },
            ],
        };
        let table = cluster.table();
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(table.contains("leader?[2J?]0;owned?"), "{table}");
        assert!(table.contains(&format!("{}…", "x".repeat(64))), "{table}");
        assert!(table.lines().all(|l| l.chars().count() < 200), "{table}");
    }
}
