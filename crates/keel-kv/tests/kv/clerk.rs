//! A clerk as in the course's KV labs: it sends each request to one server at a time, starting
//! with the last one that answered, moves on when that server is unreachable, does not lead or
//! cannot answer in time, and retries until some server answers. Writes carry the clerk's
//! client id and a sequence number that stays the same across retries, so the service applies
//! each write once. Every operation goes into the scenario's [`History`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use keel::{NodeId, Raft};
use keel_check::{KvInput, KvOutput};
use keel_kv::{Consistency, KvError, KvService, Write};
use keel_sim::{Sim, SimNet};

use crate::cluster::Services;
use crate::history::History;

/// How long a clerk waits for one server before trying the next. Longer than the servers'
/// request timeout, so it only matters when a server cannot answer at all (it crashed with the
/// request in hand).
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// Pause after a whole round of servers failed, so a clerk waiting out an election does not
/// spin (answers from followers take no simulated time).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Bytes of the fixed part of a request or reply, for the network's byte counters.
const HEADER_BYTES: usize = 32;

/// One client of the KV service.
pub struct Clerk {
    sim: Sim,
    net: SimNet,
    services: Services,
    history: History,
    /// This clerk's endpoint on the network.
    endpoint: NodeId,
    /// The session id that makes this clerk's writes exactly-once; also its id in the history.
    client_id: u64,
    /// Sequence number of the newest write.
    seq: u64,
    servers: usize,
    /// The server to try first: the last that answered, or the leader one pointed at.
    leader: usize,
}

impl Clerk {
    /// A clerk with its own endpoint (already linked to the servers it may reach).
    pub fn new(
        sim: Sim,
        net: SimNet,
        services: Services,
        history: History,
        endpoint: NodeId,
        servers: usize,
    ) -> Self {
        Clerk {
            sim,
            net,
            services,
            history,
            endpoint,
            // Unique per clerk and never 0, which would mean "no session".
            client_id: endpoint,
            seq: 0,
            servers,
            leader: 0,
        }
    }

    /// The clerk's network endpoint, to change which servers it reaches.
    pub fn endpoint(&self) -> NodeId {
        self.endpoint
    }

    /// The clerk's client id, as the history records it.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// A linearizable read of `key`; `None` if the key is absent.
    pub async fn get(&mut self, key: &str) -> Option<String> {
        let pending = self.history.called(self.client_id, KvInput::get(key));
        let key_bytes = Bytes::copy_from_slice(key.as_bytes());
        let value = self
            .until_answered("kv get", HEADER_BYTES + key.len(), move |service| {
                let key = key_bytes.clone();
                async move {
                    let result = service.read(&key, Consistency::Linearizable).await;
                    let value_len = result
                        .as_ref()
                        .map_or(0, |v| v.as_ref().map_or(0, Bytes::len));
                    (result, HEADER_BYTES + value_len)
                }
            })
            .await
            .map(|bytes| String::from_utf8(bytes.to_vec()).expect("the clerks write only text"));
        self.history
            .returned(pending, KvOutput::Value(value.clone()));
        value
    }

    /// Sets `key` to `value`.
    pub async fn put(&mut self, key: &str, value: &str) {
        let write = Write::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        self.write(KvInput::put(key, value), write).await;
    }

    /// Appends `value` to `key`.
    pub async fn append(&mut self, key: &str, value: &str) {
        let write = Write::Append {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        self.write(KvInput::append(key, value), write).await;
    }

    async fn write(&mut self, input: KvInput, write: Write) {
        let pending = self.history.called(self.client_id, input);
        self.seq += 1;
        let session = Some((self.client_id, self.seq));
        let request_len = HEADER_BYTES + write.key().len() + write.value_len();
        self.until_answered("kv write", request_len, move |service| {
            let write = write.clone();
            async move { (service.write(session, write).await, HEADER_BYTES) }
        })
        .await;
        self.history.returned(pending, KvOutput::Ok);
    }

    /// Sends the request that `serve` makes of a server's service, to one server after another,
    /// until one answers it; returns the answer.
    async fn until_answered<T, F, Fut>(
        &mut self,
        label: &'static str,
        request_len: usize,
        serve: F,
    ) -> T
    where
        T: Send + 'static,
        F: Fn(KvService) -> Fut,
        Fut: Future<Output = (Result<T, KvError>, usize)> + Send + 'static,
    {
        let mut failed_attempts: u64 = 0;
        loop {
            let server = self.leader;
            let call = self.net.call_with(
                self.endpoint,
                server as NodeId,
                label,
                request_len,
                |raft: Raft| {
                    let work = self.services.get(raft.id()).map(&serve);
                    async move {
                        match work {
                            Some(work) => Some(work.await),
                            None => None,
                        }
                    }
                },
            );
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(Ok(answer))) => return answer,
                Ok(Ok(Err(KvError::NotLeader {
                    leader_hint: Some(hint),
                }))) if hint != server as NodeId && (hint as usize) < self.servers => {
                    self.leader = hint as usize;
                }
                Ok(Ok(Err(error))) if !error.is_retryable() => {
                    // A clerk has one request outstanding and retries it with the same
                    // sequence number, so no server may call it stale; and its requests are
                    // small.
                    self.sim.fail(format!(
                        "client {}: server {server} refused {label} (seq {}): {error}",
                        self.client_id, self.seq
                    ));
                    return std::future::pending().await;
                }
                // Unreachable, lost, not the leader, timed out, leadership lost, overloaded:
                // try the next server.
                _ => self.leader = (server + 1) % self.servers,
            }
            failed_attempts += 1;
            if failed_attempts.is_multiple_of(self.servers as u64) {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
