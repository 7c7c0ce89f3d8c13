//! The KV client: one call per API operation, each retried across the endpoints until a
//! deadline.
//!
//! # Retries
//!
//! A request that fails with a connection error, a timeout or a 502/503/504 is sent again to
//! the next endpoint after a pause that doubles from [`ClientOptions::backoff_min`] up to
//! [`ClientOptions::backoff_max`] (with jitter, so many clients do not retry in step), until
//! [`ClientOptions::deadline`] has passed since the call began. Any other answer ends the call at
//! once: 2xx is the result, 4xx a typed [`ClientError`]. The client remembers the endpoint that
//! last answered and starts the next call there.
//!
//! # Exactly-once writes
//!
//! Every `Client` is a session: a random nonzero client id, and a sequence number that grows by
//! one per write. A write keeps its sequence number across all its retries, and the server
//! applies a `(client id, seq)` once and answers a repeat with the first result, so a retried
//! write never applies twice. The server remembers only the newest sequence number of a client,
//! so a session has one write in flight at a time: concurrent writes on one `Client` wait for
//! each other. For parallel writers, give each task its own session with
//! [`Client::new_session`] (they share the connection pool).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::RngExt;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;

use keel_api::{AddMember, KeyList, LeaderChanged, Members, TransferLeader};

use crate::error::{ClientError, Failure, Secs};
use crate::status::{ClusterStatus, EndpointStatus, NodeStatus};
use crate::tls::ClientTls;

/// The local development cluster: where a client looks when given no endpoints.
pub const DEFAULT_ENDPOINTS: [&str; 3] = ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"];

/// Header carrying the client id of an exactly-once write.
pub(crate) const CLIENT_ID_HEADER: &str = keel_api::CLIENT_ID_HEADER;
/// Header carrying the sequence number of an exactly-once write.
pub(crate) const REQUEST_SEQ_HEADER: &str = keel_api::REQUEST_SEQ_HEADER;

/// The largest value a node may be configured to accept (`keel serve --max-value-bytes`), and
/// so the largest value this client reads.
pub const MAX_VALUE_BYTES: usize = 64 << 20;

/// Most bytes of an answer read; a KV answer is a value (1 MiB at most by default,
/// [`MAX_VALUE_BYTES`] at most at all) or a small JSON document.
pub(crate) const MAX_ANSWER_BYTES: usize = MAX_VALUE_BYTES + (64 << 10);

/// Reads an answer's body, refusing one longer than [`MAX_ANSWER_BYTES`].
async fn read_body(mut response: reqwest::Response, timeout: Duration) -> Result<Bytes, String> {
    let too_long = || format!("the answer is longer than {MAX_ANSWER_BYTES} bytes");
    if response
        .content_length()
        .is_some_and(|len| len > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_long());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e, timeout))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Bytes of a key sent as they are; everything else is percent-encoded, `/` included, so a
/// key is one path segment that URL normalisation leaves alone (`a/../b` stays a key).
const KEY_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How a [`Client`] finds and retries the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Nodes to talk to, as `host:port` (an `http://` prefix is accepted). Any node serves any
    /// request, since followers forward to the leader.
    pub endpoints: Vec<String>,
    /// Longest time one operation may take, all retries included. Default 10 s.
    pub deadline: Duration,
    /// Longest wait for one answer. Default 6 s: longer than the server's own request timeout
    /// (5 s by default), so a node without quorum answers 503 before the client gives up on it.
    pub attempt_timeout: Duration,
    /// Longest wait for a TCP connection. Default 1 s.
    pub connect_timeout: Duration,
    /// Longest wait for one node's `/v1/status`. Default 2 s.
    pub status_timeout: Duration,
    /// First pause between attempts. Default 20 ms.
    pub backoff_min: Duration,
    /// Longest pause between attempts. Default 1 s.
    pub backoff_max: Duration,
    /// Idle keep-alive connections kept per endpoint. Default 32; the benchmark raises it to
    /// its client count.
    pub max_idle_connections: usize,
    /// Speak HTTP/2 (cleartext, with prior knowledge) instead of HTTP/1.1: every request to an
    /// endpoint then shares one connection, so concurrent requests share system calls.
    /// Default false. (Over HTTPS, HTTP/2 is chosen by ALPN.)
    pub http2: bool,
    /// HTTPS to every node, with these settings; `None` for plain HTTP. Default `None`.
    pub tls: Option<ClientTls>,
    /// A bearer token (`keel token create`) sent with every request, for a cluster that
    /// authenticates clients by an access file. Default `None`.
    pub token: Option<BearerToken>,
}

/// A bearer token: sent as `Authorization: Bearer TOKEN`, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// A token as `keel token create` printed it (surrounding white space removed). Fails on
    /// an empty token or one that cannot go in a header.
    pub fn new(token: &str) -> Result<BearerToken, ClientError> {
        let token = token.trim();
        let valid = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(ClientError::InvalidInput(
                "the bearer token is empty or holds characters a header cannot carry".into(),
            ));
        }
        Ok(BearerToken(token.to_string()))
    }

    /// The `Authorization` header's value, marked sensitive (kept out of HTTP/2 header
    /// compression tables and logs).
    pub fn header(&self) -> reqwest::header::HeaderValue {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.0))
            .expect("checked by BearerToken::new");
        value.set_sensitive(true);
        value
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            endpoints: DEFAULT_ENDPOINTS.iter().map(|e| e.to_string()).collect(),
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(1),
            status_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_idle_connections: 32,
            http2: false,
            tls: None,
            token: None,
        }
    }
}

impl ClientOptions {
    /// The default options with these endpoints.
    pub fn with_endpoints<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..ClientOptions::default()
        }
    }
}

/// Splits a comma-separated endpoint list (`"a:1, b:2"`), as a `--endpoints` flag gives it.
pub fn parse_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// The read sees every write that completed before it began (confirmed with a quorum).
    #[default]
    Linearizable,
    /// The node answers from its own state, which may lag behind the leader.
    Stale,
}

impl Consistency {
    /// The name the API uses: `linearizable` or `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
        }
    }
}

impl FromStr for Consistency {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linearizable" => Ok(Consistency::Linearizable),
            "stale" => Ok(Consistency::Stale),
            other => Err(ClientError::InvalidInput(format!(
                "consistency is linearizable or stale, not {other:?}"
            ))),
        }
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A write that the cluster committed and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Written {
    /// The log index of the write.
    pub index: u64,
}

/// The result of a compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct CasOutcome {
    /// Whether the value matched and was replaced.
    pub succeeded: bool,
    /// The log index of the compare-and-set (committed either way).
    pub index: u64,
}

/// A client of a keel cluster. See the [module docs](self) for retries and sessions.
///
/// Cheap to create further sessions from ([`Client::new_session`]); all share one keep-alive
/// connection pool.
#[derive(Debug)]
pub struct Client {
    shared: Arc<Shared>,
    client_id: u64,
    /// The sequence number of the next write, locked for the whole of a write so a session has
    /// one write in flight.
    next_seq: tokio::sync::Mutex<u64>,
    /// Index of the endpoint to try first: the one that last answered.
    current: AtomicUsize,
    retries: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    http: reqwest::Client,
    endpoints: Vec<String>,
    options: ClientOptions,
    /// `http`, or `https` with [`ClientOptions::tls`].
    scheme: &'static str,
}

/// What one request is: everything needed to send it again.
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) body: Bytes,
    /// Client id and sequence number, for a write.
    pub(crate) session: Option<(u64, u64)>,
}

impl Call {
    /// A read of `key`.
    pub(crate) fn get(key: &str, consistency: Consistency) -> Result<Call, ClientError> {
        let query = match consistency {
            Consistency::Linearizable => "",
            Consistency::Stale => "?consistency=stale",
        };
        Ok(Call {
            method: Method::GET,
            path: kv_path(key, query)?,
            body: Bytes::new(),
            session: None,
        })
    }

    /// A put of `value` at `key` under `session` (client id, sequence number).
    pub(crate) fn put(key: &str, value: Bytes, session: (u64, u64)) -> Result<Call, ClientError> {
        Ok(Call {
            method: Method::PUT,
            path: kv_path(key, "")?,
            body: value,
            session: Some(session),
        })
    }
}

/// An answer that ends the call: a success or an error that retrying would not change.
pub(crate) struct Answer {
    pub(crate) endpoint: String,
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Answer {
    /// The answer as an operation's outcome: `Ok` for a success, else its typed error.
    pub(crate) fn into_result(self, key: &str) -> Result<Bytes, ClientError> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(answer_error(self, key))
        }
    }
}

impl Client {
    /// A client of the cluster at `options.endpoints`, with a fresh session.
    ///
    /// Fails on an empty endpoint list or an endpoint that is not `host:port`.
    pub fn new(options: ClientOptions) -> Result<Client, ClientError> {
        if options.endpoints.is_empty() {
            return Err(ClientError::InvalidInput(
                "no endpoints given; expected host:port[,host:port...]".into(),
            ));
        }
        for endpoint in &options.endpoints {
            if endpoint.trim().starts_with("https://") && options.tls.is_none() {
                return Err(ClientError::InvalidInput(format!(
                    "endpoint {endpoint:?} is HTTPS: give the CA that signed the nodes' \
                     certificates (--cacert)"
                )));
            }
        }
        let endpoints = options
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = reqwest::Client::builder();
        if let Some(tls) = &options.tls {
            builder = builder.tls_backend_preconfigured((*tls.config).clone());
        } else {
            builder = builder.tls_backend_preconfigured(crate::tls::plain_http_only());
            if options.http2 {
                builder = builder.http2_prior_knowledge();
            }
        }
        if let Some(token) = &options.token {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, token.header());
            builder = builder.default_headers(headers);
        }
        let http = builder
            .pool_max_idle_per_host(options.max_idle_connections)
            .tcp_nodelay(true)
            .connect_timeout(options.connect_timeout)
            // The cluster is reached directly; an HTTP_PROXY meant for the internet must not
            // swallow requests to it.
            .no_proxy()
            .build()
            .map_err(|e| ClientError::InvalidInput(format!("cannot build an HTTP client: {e}")))?;
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let shared = Arc::new(Shared {
            http,
            endpoints,
            options,
            scheme,
        });
        Ok(Client::with_shared(shared, 0))
    }

    fn with_shared(shared: Arc<Shared>, current: usize) -> Client {
        Client {
            shared,
            client_id: rand::rng().random_range(1..=u64::MAX),
            next_seq: tokio::sync::Mutex::new(1),
            current: AtomicUsize::new(current),
            retries: AtomicU64::new(0),
        }
    }

    /// Another session (new client id, its own write sequence) on the same endpoints and
    /// connection pool, starting at the endpoint this one last used.
    pub fn new_session(&self) -> Client {
        Client::with_shared(self.shared.clone(), self.current.load(Ordering::Relaxed))
    }

    /// This session's client id (random, nonzero).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The endpoints, normalized to `host:port`.
    pub fn endpoints(&self) -> &[String] {
        &self.shared.endpoints
    }

    /// The options the client was built with (endpoints as given, before normalizing).
    pub fn options(&self) -> &ClientOptions {
        &self.shared.options
    }

    /// The endpoint the next call will try first.
    pub fn current_endpoint(&self) -> &str {
        &self.shared.endpoints[self.current.load(Ordering::Relaxed) % self.shared.endpoints.len()]
    }

    /// Makes the next call start at `endpoint`, if it is one of [`Client::endpoints`].
    /// Returns whether it is.
    pub fn prefer_endpoint(&self, endpoint: &str) -> bool {
        let Ok(endpoint) = normalize_endpoint(endpoint) else {
            return false;
        };
        match self.shared.endpoints.iter().position(|e| *e == endpoint) {
            Some(i) => {
                self.current.store(i, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// How many attempts of this session failed with a connection error, a timeout or a 503
    /// (each followed by a retry unless the deadline had passed), since it was created.
    pub fn retry_count(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The value of `key`. A missing key is [`ClientError::NotFound`].
    pub async fn get(&self, key: &str, consistency: Consistency) -> Result<Bytes, ClientError> {
        let call = Call::get(key, consistency)?;
        self.send(&call).await?.into_result(key)
    }

    /// A page of at most `limit` keys (1 to [`keel_api::MAX_LIST_LIMIT`]) that start with
    /// `prefix`, after `after` if given, in byte order, each with its value's size
    /// (`GET /v1/kv`); `more` says whether more follow the last.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<KeyList, ClientError> {
        let mut path = format!(
            "/v1/kv?prefix={}&limit={limit}",
            utf8_percent_encode(prefix, KEY_SAFE)
        );
        if let Some(after) = after {
            path.push_str(&format!("&after={}", utf8_percent_encode(after, KEY_SAFE)));
        }
        if consistency == Consistency::Stale {
            path.push_str("&consistency=stale");
        }
        let call = Call {
            method: Method::GET,
            path,
            body: Bytes::new(),
            session: None,
        };
        let answer = self.send(&call).await?;
        if !answer.status.is_success() {
            return Err(answer_error(answer, prefix));
        }
        parse_json(&answer)
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<Written, ClientError> {
        let answer = self.write(Method::PUT, key, "", value.into()).await?;
        parse_json(&answer)
    }

    /// Appends `suffix` to the value of `key` (an absent key counts as empty).
    pub async fn append(
        &self,
        key: &str,
        suffix: impl Into<Bytes>,
    ) -> Result<Written, ClientError> {
        let answer = self
            .write(Method::POST, key, "?op=append", suffix.into())
            .await?;
        parse_json(&answer)
    }

    /// Deletes `key`; deleting an absent key succeeds too.
    pub async fn delete(&self, key: &str) -> Result<Written, ClientError> {
        let answer = self.write(Method::DELETE, key, "", Bytes::new()).await?;
        parse_json(&answer)
    }

    /// Sets `key` to `value` if its value is `expected` (`None`: if the key is absent).
    ///
    /// The API carries both values as JSON strings, so they must be UTF-8.
    pub async fn cas(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<CasOutcome, ClientError> {
        let utf8 = |bytes: &[u8], what: &str| {
            std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| {
                ClientError::InvalidInput(format!(
                    "the {what} value of a compare-and-set must be UTF-8 text"
                ))
            })
        };
        let request = serde_json::json!({
            "expected": expected.map(|e| utf8(e, "expected")).transpose()?,
            "value": utf8(value, "new")?,
        });
        let answer = self
            .write(
                Method::POST,
                key,
                "?op=cas",
                Bytes::from(request.to_string()),
            )
            .await?;
        parse_json(&answer)
    }

    /// The `/v1/status` of one node, asked once (no retries) with
    /// [`ClientOptions::status_timeout`]. `endpoint` need not be one of the client's.
    pub async fn status(&self, endpoint: &str) -> Result<NodeStatus, ClientError> {
        let endpoint = normalize_endpoint(endpoint)?;
        fetch_status(
            self.shared.http.clone(),
            self.shared.scheme,
            endpoint,
            self.shared.options.status_timeout,
        )
        .await
    }

    /// The status of every endpoint, asked concurrently, and of the members they name that are
    /// not among the endpoints (a member added since, say). Render it with
    /// [`ClusterStatus::table`].
    pub async fn cluster_status(&self) -> ClusterStatus {
        let mut endpoints = self.statuses(self.shared.endpoints.clone()).await;
        // Members the nodes know of, by client address, that were not asked; bounded, since a
        // node's answer is not to be trusted with the size of this work.
        let mut more: Vec<String> = Vec::new();
        for status in endpoints.iter().filter_map(|e| e.status.as_ref().ok()) {
            for member in &status.members {
                let Some(addr) = member
                    .client_addr
                    .as_deref()
                    .and_then(|a| normalize_endpoint(a).ok())
                else {
                    continue;
                };
                let asked = endpoints.iter().any(|e| e.endpoint == addr);
                if !asked && !more.contains(&addr) && more.len() < 16 {
                    more.push(addr);
                }
            }
        }
        if !more.is_empty() {
            endpoints.extend(self.statuses(more).await);
        }
        ClusterStatus { endpoints }
    }

    /// The status of each of `endpoints`, asked concurrently.
    async fn statuses(&self, endpoints: Vec<String>) -> Vec<EndpointStatus> {
        let timeout = self.shared.options.status_timeout;
        let tasks: Vec<_> = endpoints
            .iter()
            .map(|endpoint| {
                let http = self.shared.http.clone();
                let endpoint = endpoint.clone();
                tokio::spawn(fetch_status(http, self.shared.scheme, endpoint, timeout))
            })
            .collect();
        let mut answers = Vec::with_capacity(tasks.len());
        for (task, endpoint) in tasks.into_iter().zip(endpoints) {
            let status = task.await.unwrap_or_else(|e| {
                Err(ClientError::Unreachable {
                    endpoint: endpoint.clone(),
                    reason: format!("status request failed: {e}"),
                })
            });
            answers.push(EndpointStatus { endpoint, status });
        }
        answers
    }

    /// The endpoint of the node that reports itself leader, asking every endpoint until one
    /// does or [`ClientOptions::deadline`] passes.
    pub async fn find_leader(&self) -> Result<String, ClientError> {
        let started = Instant::now();
        let deadline = started + self.shared.options.deadline;
        let mut backoff = self.shared.options.backoff_min;
        loop {
            let cluster = self.cluster_status().await;
            if let Some((endpoint, _)) = cluster.leader() {
                return Ok(endpoint.to_string());
            }
            if Instant::now() >= deadline {
                let failures = cluster
                    .endpoints
                    .iter()
                    .map(|e| Failure {
                        endpoint: e.endpoint.clone(),
                        reason: match &e.status {
                            Ok(s) => format!(
                                "{} in term {}, leader {}",
                                s.role,
                                s.term,
                                s.leader_id.map_or("unknown".into(), |l| l.to_string())
                            ),
                            Err(e) => unreachable_reason(e),
                        },
                    })
                    .collect();
                return Err(ClientError::Unavailable {
                    waited: started.elapsed(),
                    failures,
                });
            }
            tokio::time::sleep_until(deadline.min(Instant::now() + backoff)).await;
            backoff = (backoff * 2).min(self.shared.options.backoff_max);
        }
    }

    /// The configuration in force on the leader (`GET /v1/members`).
    pub async fn members(&self) -> Result<Members, ClientError> {
        let answer = self
            .admin(Method::GET, "/v1/members".into(), Bytes::new())
            .await?;
        parse_json(&answer)
    }

    /// Adds node `id` as a learner (`POST /v1/members`); completes once the change is
    /// committed. Adding a node that is already a member at these addresses succeeds (a retry
    /// after a lost answer must not fail).
    pub async fn add_member(
        &self,
        id: u64,
        peer_addr: &str,
        client_addr: &str,
    ) -> Result<Members, ClientError> {
        let body = AddMember {
            id,
            peer_addr: peer_addr.to_string(),
            client_addr: client_addr.to_string(),
        };
        let body = serde_json::to_vec(&body).expect("a plain struct serializes");
        match self
            .admin(Method::POST, "/v1/members".into(), body.into())
            .await
        {
            Ok(answer) => parse_json(&answer),
            Err(ClientError::BadRequest { code, message }) if code == "already_member" => {
                let members = self.members().await?;
                let same = members.members.iter().any(|m| {
                    m.id == id
                        && m.peer_addr.as_deref() == Some(peer_addr)
                        && m.client_addr.as_deref() == Some(client_addr)
                });
                if same {
                    Ok(members)
                } else {
                    Err(ClientError::BadRequest { code, message })
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Makes learner `id` a voter (`POST /v1/members/{id}/promote`); completes once the
    /// change is committed. Refused ([`ClientError::Refused`], HTTP 412) while it lags.
    pub async fn promote_member(&self, id: u64) -> Result<Members, ClientError> {
        let path = format!("/v1/members/{id}/promote");
        let answer = self.admin(Method::POST, path, Bytes::new()).await?;
        parse_json(&answer)
    }

    /// Removes member `id` (`DELETE /v1/members/{id}`); completes once the change is committed.
    pub async fn remove_member(&self, id: u64) -> Result<Members, ClientError> {
        let path = format!("/v1/members/{id}");
        let answer = self.admin(Method::DELETE, path, Bytes::new()).await?;
        parse_json(&answer)
    }

    /// Hands leadership to `to`, or to the most up-to-date follower (`POST /v1/leader`).
    pub async fn transfer_leader(&self, to: Option<u64>) -> Result<LeaderChanged, ClientError> {
        let body = serde_json::to_vec(&TransferLeader { to }).expect("a plain struct serializes");
        let answer = self
            .admin(Method::POST, "/v1/leader".into(), body.into())
            .await?;
        parse_json(&answer)
    }

    /// Sends an administrative request (retried across endpoints like any request); a success
    /// answer, or its typed error.
    async fn admin(
        &self,
        method: Method,
        path: String,
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let call = Call {
            method,
            path,
            body,
            session: None,
        };
        let answer = self.send(&call).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(answer_error(answer, ""))
        }
    }

    /// Sends one write under this session's next sequence number, retried with that number.
    /// Returns the success answer.
    async fn write(
        &self,
        method: Method,
        key: &str,
        query: &str,
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let path = kv_path(key, query)?;
        // Held until the write ends: the server keeps only a session's newest seq, so a second
        // write in flight could make this one's retry look stale.
        let mut next_seq = self.next_seq.lock().await;
        let seq = *next_seq;
        *next_seq += 1;
        let call = Call {
            method,
            path,
            body,
            session: Some((self.client_id, seq)),
        };
        let answer = self.send(&call).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(answer_error(answer, key))
        }
    }

    /// Sends `call` until an endpoint gives an answer that retrying would not change, or the
    /// deadline passes.
    pub(crate) async fn send(&self, call: &Call) -> Result<Answer, ClientError> {
        let options = &self.shared.options;
        let endpoints = &self.shared.endpoints;
        let started = Instant::now();
        let deadline = started + options.deadline;
        // The last failure at each endpoint: bounded by the endpoint count.
        let mut failures: Vec<Option<String>> = vec![None; endpoints.len()];
        let mut backoff = options.backoff_min;
        let mut i = self.current.load(Ordering::Relaxed) % endpoints.len();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let failures = endpoints
                    .iter()
                    .zip(failures)
                    .filter_map(|(endpoint, reason)| {
                        reason.map(|reason| Failure {
                            endpoint: endpoint.clone(),
                            reason,
                        })
                    })
                    .collect();
                return Err(ClientError::Unavailable {
                    waited: started.elapsed(),
                    failures,
                });
            }
            let timeout = remaining.min(options.attempt_timeout);
            // An attempt the deadline cuts short says little about the endpoint when it fails.
            let cut_short = timeout < options.attempt_timeout;
            let reason = match self.attempt(&endpoints[i], call, timeout).await {
                Ok(answer) if !is_retryable(answer.status) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(answer) => {
                    let (code, message) = server_message(&answer.body);
                    Some(format!("{} {code}: {message}", answer.status.as_u16()))
                }
                // What the endpoint said before is the better report (a 503 rather than "no
                // answer within 0 ms" for the last attempt the deadline left no time for).
                Err(reason)
                    if cut_short && failures[i].is_some() && reason.starts_with(NO_ANSWER) =>
                {
                    None
                }
                Err(reason) => Some(reason),
            };
            tracing::debug!(endpoint = %endpoints[i], ?reason, "request failed; retrying");
            if let Some(reason) = reason {
                failures[i] = Some(reason);
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            i = (i + 1) % endpoints.len();
            self.current.store(i, Ordering::Relaxed);
            // Jitter in [backoff/2, backoff] keeps clients that failed together from retrying
            // together.
            let pause = rand::rng().random_range(backoff / 2..=backoff);
            tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
            backoff = (backoff * 2).min(options.backoff_max);
        }
    }

    /// One request to one endpoint. `Err` is a reason to try elsewhere.
    async fn attempt(
        &self,
        endpoint: &str,
        call: &Call,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let mut request = self
            .shared
            .http
            .request(
                call.method.clone(),
                format!("{}://{endpoint}{}", self.shared.scheme, call.path),
            )
            .timeout(timeout)
            .body(call.body.clone());
        if let Some((client_id, seq)) = call.session {
            request = request
                .header(CLIENT_ID_HEADER, client_id)
                .header(REQUEST_SEQ_HEADER, seq);
        }
        let response = request.send().await.map_err(|e| describe(&e, timeout))?;
        let status = response.status();
        let body = read_body(response, timeout).await?;
        Ok(Answer {
            endpoint: endpoint.to_string(),
            status,
            body,
        })
    }
}

/// `host:port` from `host:port`, `http://host:port` or `https://host:port/` (the scheme is
/// the client's: see [`ClientOptions::tls`]).
fn normalize_endpoint(endpoint: &str) -> Result<String, ClientError> {
    let trimmed = endpoint.trim();
    let bare = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .unwrap_or(trimmed);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    let bad = |why: &str| {
        ClientError::InvalidInput(format!(
            "endpoint {endpoint:?} {why}; expected host:port, e.g. 127.0.0.1:8081"
        ))
    };
    if bare.contains("://") {
        return Err(bad("has a scheme other than http or https"));
    }
    let Some((host, port)) = bare.rsplit_once(':') else {
        return Err(bad("has no port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() || bare.contains('/') {
        return Err(bad("is not host:port"));
    }
    if reqwest::Url::parse(&format!("http://{bare}/")).is_err() {
        return Err(bad("is not a valid address"));
    }
    Ok(bare.to_string())
}

/// `/v1/kv/{key}{query}` with the key percent-encoded.
fn kv_path(key: &str, query: &str) -> Result<String, ClientError> {
    if key.is_empty() {
        return Err(ClientError::InvalidInput("the key is empty".into()));
    }
    if key == "." || key == ".." {
        return Err(ClientError::InvalidInput(format!(
            "the key {key:?} cannot be sent: URLs read it as a path step"
        )));
    }
    Ok(format!(
        "/v1/kv/{}{query}",
        utf8_percent_encode(key, KEY_SAFE)
    ))
}

/// Answers worth sending again elsewhere: the node has no leader or quorum now, or a proxy in
/// between failed.
pub(crate) fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The `(code, message)` of a JSON error body, or the start of a body that is not one.
fn server_message(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
        code: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.code, e.error),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(200).collect();
            (String::new(), text.trim().to_string())
        }
    }
}

/// The typed error of a non-success answer that retrying would not change.
fn answer_error(answer: Answer, key: &str) -> ClientError {
    let (code, message) = server_message(&answer.body);
    match answer.status {
        StatusCode::BAD_REQUEST => ClientError::BadRequest { code, message },
        StatusCode::NOT_FOUND if code == "not_found" => ClientError::NotFound {
            key: key.to_string(),
        },
        StatusCode::CONFLICT if code == "stale_request" || code.is_empty() => {
            ClientError::Stale { message }
        }
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => ClientError::Refused {
            status: answer.status.as_u16(),
            code,
            message,
        },
        StatusCode::PAYLOAD_TOO_LARGE => ClientError::TooLarge { message },
        status => ClientError::Unexpected {
            endpoint: answer.endpoint,
            status: status.as_u16(),
            message: if code.is_empty() {
                message
            } else {
                format!("{code}: {message}")
            },
        },
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(answer: &Answer) -> Result<T, ClientError> {
    serde_json::from_slice(&answer.body).map_err(|e| ClientError::BadAnswer {
        endpoint: answer.endpoint.clone(),
        message: format!("{e} in {:?}", String::from_utf8_lossy(&answer.body)),
    })
}

/// How [`describe`] starts the reason for an attempt that timed out.
const NO_ANSWER: &str = "no answer within";

/// A transport failure as a short reason: `connection refused`, `no answer within 6 s`.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return if error.is_connect() {
            "connect timed out".to_string()
        } else {
            format!("{NO_ANSWER} {}", Secs(timeout))
        };
    }
    // The innermost cause says the most ("connection refused"), the outer ones only that a
    // request failed.
    let mut innermost = error.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return match io.kind() {
                ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected
                | BrokenPipe | TimedOut | UnexpectedEof | AddrNotAvailable => io.kind().to_string(),
                _ => io.to_string(),
            };
        }
        innermost = cause.to_string();
        source = cause.source();
    }
    innermost
}

/// The reason inside an error from asking one endpoint, without the endpoint.
pub(crate) fn unreachable_reason(error: &ClientError) -> String {
    match error {
        ClientError::Unreachable { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

async fn fetch_status(
    http: reqwest::Client,
    scheme: &'static str,
    endpoint: String,
    timeout: Duration,
) -> Result<NodeStatus, ClientError> {
    let unreachable = |reason| ClientError::Unreachable {
        endpoint: endpoint.clone(),
        reason,
    };
    let response = http
        .get(format!("{scheme}://{endpoint}/v1/status"))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| unreachable(describe(&e, timeout)))?;
    let status = response.status();
    let body = read_body(response, timeout).await.map_err(unreachable)?;
    if !status.is_success() {
        let answer = Answer {
            endpoint: endpoint.clone(),
            status,
            body,
        };
        return Err(answer_error(answer, ""));
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer {
        endpoint: endpoint.clone(),
        message: format!("the status is not keel's JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized_or_rejected() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:8081").unwrap(),
            "127.0.0.1:8081"
        );
        assert_eq!(
            normalize_endpoint(" http://localhost:1/ ").unwrap(),
            "localhost:1"
        );
        assert_eq!(normalize_endpoint("[::1]:8081").unwrap(), "[::1]:8081");
        // The scheme is the client's (ClientOptions::tls); https:// is accepted too.
        assert_eq!(normalize_endpoint("https://a:1").unwrap(), "a:1");
        for bad in ["", "localhost", "ftp://a:1", "a:port", "a:1/path", ":80"] {
            assert!(normalize_endpoint(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_endpoints("a:1, b:2,,"), vec!["a:1", "b:2"]);
    }

    #[test]
    fn keys_become_one_encoded_path_segment() {
        assert_eq!(kv_path("a/b c?d", "").unwrap(), "/v1/kv/a%2Fb%20c%3Fd");
        assert_eq!(
            kv_path("x.y-z_~", "?op=cas").unwrap(),
            "/v1/kv/x.y-z_~?op=cas"
        );
        assert!(kv_path("", "").is_err());
        assert!(kv_path("..", "").is_err());
    }

    #[test]
    fn error_answers_map_to_typed_errors() {
        let answer = |status: u16, body: &str| Answer {
            endpoint: "e:1".into(),
            status: StatusCode::from_u16(status).unwrap(),
            body: Bytes::from(body.to_string()),
        };
        let e = answer_error(
            answer(404, r#"{"error":"key not found","code":"not_found"}"#),
            "k",
        );
        assert_eq!(e, ClientError::NotFound { key: "k".into() });
        let e = answer_error(
            answer(404, r#"{"error":"no such endpoint","code":"no_route"}"#),
            "k",
        );
        assert_eq!(e.kind(), "unexpected");
        let e = answer_error(
            answer(413, r#"{"error":"value of 9 bytes","code":"x"}"#),
            "k",
        );
        assert_eq!(e.to_string(), "too large: value of 9 bytes");
        let e = answer_error(answer(500, "<html>oops</html>"), "k");
        assert_eq!(e.to_string(), "e:1 answered HTTP 500: <html>oops</html>");
    }
}
