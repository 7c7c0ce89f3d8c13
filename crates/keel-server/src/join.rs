//! Joining a running cluster (`keel serve --join`): a node started with no configuration asks
//! the cluster, through any member's HTTP API, to add it as a learner, then catches up from the
//! leader like any follower; with `--join-as-voter` it then asks to be promoted, which the
//! leader grants once its log is close enough to the leader's.
//!
//! Every step is safe to repeat: a node restarted with `--join` that is a member already asks
//! nothing more (or, with `--join-as-voter`, only the promotion it lacks), and an add whose
//! answer was lost is found done on the next look at the configuration.

use std::net::SocketAddr;
use std::time::Duration;

use keel::{MemberRole, NodeId, Raft};
use keel_api::{AddMember, ErrorBody};

/// What a joining node asks for.
pub(crate) struct JoinRequest {
    pub id: NodeId,
    pub peer_addr: SocketAddr,
    pub client_addr: String,
    /// Members' client endpoints, tried in turn.
    pub endpoints: Vec<String>,
    pub as_voter: bool,
    /// The members serve HTTPS: ask over it, trusting the cluster's CA and presenting this
    /// node's certificate.
    pub tls: Option<std::sync::Arc<keel_net::PeerTls>>,
}

/// Waits between attempts: from this, doubling, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Asks until this node is a learner (and, if asked for, a voter); runs until then or until the
/// node stops (its task is aborted).
pub(crate) async fn join(raft: Raft, request: JoinRequest) {
    let builder = reqwest::Client::builder().tls_backend_preconfigured(match &request.tls {
        Some(tls) => (*tls.forward_config()).clone(),
        None => keel_net::tls::plain_http_only(),
    });
    let http = match builder.no_proxy().timeout(Duration::from_secs(30)).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot make an HTTP client to join the cluster");
            return;
        }
    };
    let id = request.id;
    let role = |raft: &Raft| raft.status().membership.membership.role(id);
    if role(&raft).is_none() {
        tracing::info!(
            node = id,
            "asking the cluster at {} to add node {id} as a learner",
            request.endpoints.join(", ")
        );
        let body = serde_json::to_vec(&AddMember {
            id,
            peer_addr: request.peer_addr.to_string(),
            client_addr: request.client_addr.clone(),
        })
        .expect("a plain struct serializes");
        let asked = ask_until(
            &http,
            &request,
            "/v1/members",
            body,
            |code| {
                // Added already (an earlier attempt whose answer was lost, or an operator): the
                // configuration this node receives will say so.
                code == "already_member"
            },
            || role(&raft).is_some(),
        )
        .await;
        if !asked {
            return;
        }
        tracing::info!(node = id, "node {id} was added as a learner; catching up");
    }
    if !request.as_voter || role(&raft) == Some(MemberRole::Voter) {
        return;
    }
    // The leader refuses the promotion (412) until this node's log is close to its own.
    let path = format!("/v1/members/{id}/promote");
    let done = ask_until(
        &http,
        &request,
        &path,
        Vec::new(),
        |code| code == "invalid_change",
        || role(&raft) == Some(MemberRole::Voter),
    )
    .await;
    if done {
        tracing::info!(node = id, "node {id} is a voter");
    }
}

/// POSTs `body` to `path` at the endpoints in turn until one answers 200, or an error whose
/// code `settled` accepts, or `done()` holds; gives up (false) on an error that retrying cannot
/// change, with a log line saying why.
async fn ask_until(
    http: &reqwest::Client,
    request: &JoinRequest,
    path: &str,
    body: Vec<u8>,
    settled: impl Fn(&str) -> bool,
    done: impl Fn() -> bool,
) -> bool {
    let mut pause = FIRST_PAUSE;
    let mut attempt = 0u64;
    loop {
        if done() {
            return true;
        }
        let endpoint = &request.endpoints[(attempt as usize) % request.endpoints.len()];
        attempt += 1;
        let base = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .unwrap_or(endpoint);
        let scheme = if request.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let answer = http
            .post(format!("{scheme}://{base}{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let reason = match answer {
            Ok(answer) if answer.status().is_success() => return true,
            Ok(answer) => {
                let status = answer.status();
                let text = answer.bytes().await.unwrap_or_default();
                let (code, message) = match serde_json::from_slice::<ErrorBody>(&text) {
                    Ok(e) => (e.code, e.error),
                    Err(_) => (String::new(), String::from_utf8_lossy(&text).into_owned()),
                };
                if settled(&code) {
                    return true;
                }
                let retry = matches!(status.as_u16(), 409 | 412 | 502 | 503 | 504);
                if !retry {
                    tracing::error!(
                        node = request.id,
                        "{endpoint} refused {path} ({} {code}): {message}; not asking again",
                        status.as_u16()
                    );
                    return false;
                }
                format!("{} {code}: {message}", status.as_u16())
            }
            Err(error) => error.to_string(),
        };
        // Say it once in a while, not at every attempt.
        if attempt == 1 || attempt.is_multiple_of(30) {
            tracing::warn!(
                node = request.id,
                "{path} at {endpoint}: {reason}; retrying"
            );
        } else {
            tracing::debug!(
                node = request.id,
                "{path} at {endpoint}: {reason}; retrying"
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
