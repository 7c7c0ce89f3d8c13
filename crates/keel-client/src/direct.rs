//! One HTTP/1.1 keep-alive connection to one node, written to directly: the load generator's hot
//! path.
//!
//! [`Client`](crate::Client) goes through reqwest, whose pool, URL handling and per-request
//! timers cost a client about as much CPU per request as the node spends serving it; on a
//! machine that runs the cluster and the load generator side by side, that CPU comes out of
//! the cluster's share. A benchmark worker instead keeps one connection of its own and sends
//! on it with hyper directly; any failure or retryable answer hands the request (with the same
//! session and sequence number, so a write still applies once) to the `Client`, which retries
//! across nodes.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;

use crate::client::{Answer, CLIENT_ID_HEADER, Call, MAX_ANSWER_BYTES, REQUEST_SEQ_HEADER};
use crate::tls::ClientTls;

/// A connection to `endpoint`, opened on first use and after a failure.
pub(crate) struct Direct {
    endpoint: String,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// HTTPS, with these settings.
    tls: Option<ClientTls>,
    /// The `Authorization` header sent with every request, if any.
    authorization: Option<HeaderValue>,
}

impl Direct {
    pub(crate) fn new(
        endpoint: &str,
        tls: Option<ClientTls>,
        authorization: Option<HeaderValue>,
    ) -> Direct {
        Direct {
            endpoint: endpoint.to_string(),
            host: HeaderValue::from_str(endpoint).unwrap_or(HeaderValue::from_static("keel")),
            sender: None,
            tls,
            authorization,
        }
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Points the connection at another node (closing the current one).
    pub(crate) fn retarget(&mut self, endpoint: &str) {
        if endpoint != self.endpoint {
            *self = Direct::new(endpoint, self.tls.take(), self.authorization.take());
        }
    }

    /// Sends `call` once, within `timeout`. `Err` is why it failed; the connection is then
    /// dropped, to be opened anew.
    pub(crate) async fn send(&mut self, call: &Call, timeout: Duration) -> Result<Answer, String> {
        match tokio::time::timeout(timeout, self.attempt(call)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(reason)) => {
                self.sender = None;
                Err(reason)
            }
            Err(_) => {
                self.sender = None;
                Err(format!("no answer within {} ms", timeout.as_millis()))
            }
        }
    }

    async fn attempt(&mut self, call: &Call) -> Result<Answer, String> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            self.sender = Some(self.connect().await?);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut request = hyper::Request::builder()
            .method(call.method.clone())
            .uri(call.path.as_str())
            .header(HOST, self.host.clone());
        if !call.body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/octet-stream");
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if let Some((client_id, seq)) = call.session {
            request = request
                .header(CLIENT_ID_HEADER, client_id)
                .header(REQUEST_SEQ_HEADER, seq);
        }
        let request = request
            .body(Full::new(call.body.clone()))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            endpoint: self.endpoint.clone(),
            status,
            body,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.endpoint)
            .await
            .map_err(|e| e.kind().to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        if let Some(tls) = &self.tls {
            let stream = tls.connect_http1(&self.endpoint, stream).await?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            return Ok(sender);
        }
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // Ends when the sender is dropped or the connection fails.
        tokio::spawn(connection);
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    // The tests' in-process cluster; these tests use only part of it.
    #[allow(dead_code)]
    mod cluster {
        include!("../tests/support/cluster.rs");
    }

    use std::time::Duration;

    use bytes::Bytes;

    use super::Direct;
    use crate::Consistency;
    use crate::client::Call;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resent_write_is_answered_once_and_reads_see_it() {
        let cluster = cluster::TestCluster::start(1, Default::default()).await;
        cluster.leader().await;
        let mut direct = Direct::new(&cluster.nodes[0].addr, None, None);
        let put = Call::put("k", Bytes::from_static(b"v1"), (7, 1)).unwrap();
        let first = direct.send(&put, TIMEOUT).await.expect("answered");
        assert!(first.status.is_success(), "{}", first.status);
        // A retry (same session and sequence number) gets the original answer: the session
        // headers went out with the request.
        let again = direct.send(&put, TIMEOUT).await.expect("answered");
        assert_eq!(again.body, first.body);
        let get = Call::get("k", Consistency::Linearizable).unwrap();
        let read = direct.send(&get, TIMEOUT).await.expect("answered");
        assert_eq!(read.into_result("k").unwrap(), "v1");
        let missing = Call::get("nope", Consistency::Linearizable).unwrap();
        let answer = direct.send(&missing, TIMEOUT).await.expect("answered");
        assert_eq!(answer.status.as_u16(), 404);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_endpoint_is_an_error_and_retargeting_reconnects() {
        let mut first = cluster::TestCluster::start(1, Default::default()).await;
        let second = cluster::TestCluster::start(1, Default::default()).await;
        first.leader().await;
        second.leader().await;
        let mut direct = Direct::new(&first.nodes[0].addr, None, None);
        let get = Call::get("k", Consistency::Stale).unwrap();
        direct.send(&get, TIMEOUT).await.expect("answered");
        first.kill(0).await;
        assert!(direct.send(&get, TIMEOUT).await.is_err());
        assert!(
            direct.send(&get, TIMEOUT).await.is_err(),
            "still nobody there"
        );
        direct.retarget(&second.nodes[0].addr);
        assert_eq!(direct.endpoint(), second.nodes[0].addr);
        let answer = direct.send(&get, TIMEOUT).await.expect("answered");
        assert_eq!(answer.status.as_u16(), 404, "a fresh store has no key k");
    }
}
