//! What `/v1/status` says, and the table `keel status` prints from every endpoint's answer.

use std::fmt;

use crate::client::unreachable_reason;
use crate::error::ClientError;

pub use keel_api::{MemberStatus, NodeStatus};

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

    /// The status as a table, one row per endpoint, then the configuration as the leader (or
    /// else the first node that answered) sees it, ending with a newline:
    ///
    /// ```text
    /// ID  ADDRESS         ROLE         MEMBER   TERM  COMMIT  APPLIED  LAG  LEADER
    /// 1   127.0.0.1:8081  leader       voter    2     17      17       0    1
    /// 2   127.0.0.1:8082  follower     voter    2     17      16       1    1
    /// 4   127.0.0.1:8084  follower     learner  2     17      17       0    1
    /// -   127.0.0.1:8083  unreachable  -        -     -       -        -    -       connection refused
    /// configuration (index 9): voters 1, 2, 3; learners 4
    /// ```
    ///
    /// The address is the node's own client address (the endpoint asked, if it does not know
    /// it); MEMBER is its part in the configuration it holds (`removed` if it is no member);
    /// an endpoint that did not answer shows `unreachable` and why.
    pub fn table(&self) -> String {
        const HEADER: [&str; 9] = [
            "ID", "ADDRESS", "ROLE", "MEMBER", "TERM", "COMMIT", "APPLIED", "LAG", "LEADER",
        ];
        // What a node says (its address, role, errors) is shown as data, never as terminal
        // control: a node, or whatever answers on its address, could otherwise rewrite the
        // operator's screen.
        let rows: Vec<([String; 9], Option<String>)> = self
            .endpoints
            .iter()
            .map(|e| match &e.status {
                Ok(s) => (
                    [
                        s.node_id.to_string(),
                        printable(s.client_addr().unwrap_or(&e.endpoint), 64),
                        printable(&s.role, 64),
                        match s.own_member() {
                            Some(m) => printable(m.role.as_deref().unwrap_or("voter"), 16),
                            None => "removed".to_string(),
                        },
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
        if let Some(config) = self.configuration() {
            out.push_str(&config);
            out.push('\n');
        }
        out
    }

    /// One line on the configuration, as the leader (or else the first node that answered)
    /// holds it: `configuration (index 9): voters 1, 2, 3; learners 4`, with `joint: a change
    /// is in progress` or `not committed yet` when so.
    pub fn configuration(&self) -> Option<String> {
        let status = self
            .leader()
            .map(|(_, s)| s)
            .or_else(|| self.endpoints.iter().find_map(|e| e.status.as_ref().ok()))?;
        let ids = |role: &str| {
            let ids: Vec<String> = status
                .members
                .iter()
                .filter(|m| m.role.as_deref().unwrap_or(keel_api::role::VOTER) == role)
                .map(|m| m.id.to_string())
                .collect();
            ids.join(", ")
        };
        let mut line = format!(
            "configuration (index {}): voters {}",
            status.membership_index,
            ids(keel_api::role::VOTER)
        );
        let learners = ids(keel_api::role::LEARNER);
        if !learners.is_empty() {
            line.push_str(&format!("; learners {learners}"));
        }
        if status.joint {
            line.push_str(" (joint: a membership change is in progress)");
        } else if !status.membership_committed {
            line.push_str(" (not committed yet)");
        }
        if let Some(to) = status.transfer_to {
            line.push_str(&format!("; handing leadership to node {to}"));
        }
        Some(line)
    }
}

/// The members of a configuration as a table, ending with a newline:
///
/// ```text
/// ID  ROLE     PEER ADDRESS    CLIENT ADDRESS
/// 1   voter    127.0.0.1:7081  127.0.0.1:8081
/// 4   learner  127.0.0.1:7084  127.0.0.1:8084
/// ```
///
/// and a last line `joint: a membership change is in progress` when it is.
pub fn members_table(members: &keel_api::Members) -> String {
    let rows: Vec<[String; 4]> = members
        .members
        .iter()
        .map(|m| {
            [
                m.id.to_string(),
                printable(&m.role, 16),
                printable(m.peer_addr.as_deref().unwrap_or("?"), 64),
                printable(m.client_addr.as_deref().unwrap_or("?"), 64),
            ]
        })
        .collect();
    let header = ["ID", "ROLE", "PEER ADDRESS", "CLIENT ADDRESS"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if members.joint {
        out.push_str("joint: a membership change is in progress\n");
    }
    out
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
            members: (1..=4)
                .map(|m| MemberStatus {
                    id: m,
                    peer_addr: None,
                    client_addr: Some(format!("127.0.0.1:808{m}")),
                    match_index: None,
                    last_contact_ms: None,
                    role: Some(if m == 4 { "learner" } else { "voter" }.into()),
                })
                .collect(),
            joint: false,
            membership_index: 9,
            membership_committed: true,
            transfer_to: None,
            stopped: None,
            storage_unavailable: None,
            disk_bytes: None,
        }
    }

    #[test]
    fn the_members_table_lines_up() {
        let member = |id, role: &str| keel_api::Member {
            id,
            role: role.into(),
            peer_addr: Some(format!("127.0.0.1:708{id}")),
            client_addr: Some(format!("127.0.0.1:808{id}")),
        };
        let members = keel_api::Members {
            members: vec![member(1, "voter"), member(4, "learner\x1b[1m")],
            joint: true,
        };
        let expected = "\
ID  ROLE         PEER ADDRESS    CLIENT ADDRESS
1   voter        127.0.0.1:7081  127.0.0.1:8081
4   learner?[1m  127.0.0.1:7084  127.0.0.1:8084
joint: a membership change is in progress
";
        assert_eq!(members_table(&members), expected);
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
ID  ADDRESS         ROLE         MEMBER  TERM  COMMIT  APPLIED  LAG  LEADER
1   127.0.0.1:8081  leader       voter   2     17      17       0    1
2   127.0.0.1:8082  follower     voter   2     17      16       1    1
-   127.0.0.1:8083  unreachable  -       -     -       -        -    -       connection refused
configuration (index 9): voters 1, 2, 3; learners 4
";
        assert_eq!(cluster.table(), expected);
        assert_eq!(cluster.leader().map(|(e, _)| e), Some("127.0.0.1:8081"));
    }

    #[test]
    fn what_a_node_says_cannot_control_the_terminal_or_flood_it() {
        let mut hostile = node(1, "leader\x1b[2J\x1b]0;owned\x07", 1, 1);
        hostile.members[0].role = Some("voter\x1b[2J".into());
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
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.contains("leader?[2J?]0;owned?"), "{table}");
        assert!(table.contains(&format!("{}…", "x".repeat(64))), "{table}");
        assert!(table.lines().all(|l| l.chars().count() < 200), "{table}");
    }
}
