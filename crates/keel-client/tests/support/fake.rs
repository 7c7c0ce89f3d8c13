//! Scripted stand-ins for a node, to make failures happen on cue: a node that answers from a
//! script and records what it was sent, and a proxy that loses the answers of a real node.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What a fake node was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub client_id: Option<String>,
    pub seq: Option<String>,
    pub body: Vec<u8>,
}

async fn record(request: Request) -> Recorded {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not text>").to_string())
    };
    Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or(String::new(), |p| p.to_string()),
        client_id: header("keel-client-id"),
        seq: header("keel-request-seq"),
        body: axum::body::to_bytes(body, usize::MAX)
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default(),
    }
}

pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("a bound address").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn json_answer(status: u16, body: &str) -> Response {
    (
        StatusCode::from_u16(status).expect("a valid status"),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A node that answers each request with the next scripted `(status, JSON body)`, and
/// `200 {"index": 1}` once the script is used up.
pub struct FakeNode {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

#[derive(Clone)]
struct FakeState {
    script: Arc<Mutex<VecDeque<(u16, String)>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeNode {
    pub async fn start(script: &[(u16, &str)]) -> FakeNode {
        let state = FakeState {
            script: Arc::new(Mutex::new(
                script.iter().map(|(s, b)| (*s, b.to_string())).collect(),
            )),
            requests: Arc::default(),
        };
        let requests = state.requests.clone();
        let app = Router::new()
            .fallback(
                |State(state): State<FakeState>, request: Request| async move {
                    let recorded = record(request).await;
                    state.requests.lock().unwrap().push(recorded);
                    let next = state.script.lock().unwrap().pop_front();
                    match next {
                        Some((status, body)) => json_answer(status, &body),
                        None => json_answer(200, r#"{"index": 1}"#),
                    }
                },
            )
            .with_state(state);
        FakeNode {
            addr: serve(app).await,
            requests,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// A proxy in front of a real node that forwards every request, but throws away the node's
/// answer to the first `lose` of them and answers 503 instead, as a connection that broke
/// after the write was applied would look to the client.
pub struct LossyProxy {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

#[derive(Clone)]
struct ProxyState {
    target: String,
    lose: Arc<Mutex<usize>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    http: reqwest::Client,
}

impl LossyProxy {
    pub async fn start(target: &str, lose: usize) -> LossyProxy {
        let state = ProxyState {
            target: target.to_string(),
            lose: Arc::new(Mutex::new(lose)),
            requests: Arc::default(),
            http: http_builder().no_proxy().build().expect("an HTTP client"),
        };
        let requests = state.requests.clone();
        let app = Router::new()
            .fallback(
                |State(state): State<ProxyState>, request: Request| async move {
                    let recorded = record(request).await;
                    state.requests.lock().unwrap().push(recorded.clone());
                    let method = reqwest::Method::from_bytes(recorded.method.as_bytes())
                        .expect("a method axum accepted");
                    let mut forward = state
                        .http
                        .request(method, format!("http://{}{}", state.target, recorded.path))
                        .body(recorded.body.clone());
                    if let (Some(id), Some(seq)) = (&recorded.client_id, &recorded.seq) {
                        forward = forward
                            .header("keel-client-id", id)
                            .header("keel-request-seq", seq);
                    }
                    let answer = match forward.send().await {
                        Ok(answer) => answer,
                        Err(e) => {
                            return json_answer(
                                502,
                                &format!(r#"{{"error":"{e}","code":"proxy"}}"#),
                            );
                        }
                    };
                    let status = answer.status().as_u16();
                    let body = answer.bytes().await.unwrap_or_default();
                    let lost = {
                        let mut lose = state.lose.lock().unwrap();
                        let lost = *lose > 0;
                        *lose = lose.saturating_sub(1);
                        lost
                    };
                    if lost {
                        json_answer(503, r#"{"error":"the answer was lost","code":"lost"}"#)
                    } else {
                        (
                            StatusCode::from_u16(status).expect("a valid status"),
                            Body::from(body),
                        )
                            .into_response()
                    }
                },
            )
            .with_state(state);
        LossyProxy {
            addr: serve(app).await,
            requests,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// reqwest is built with TLS but no process-wide crypto provider (keel picks its own per
/// client); the tests' plain clients take ring's.
pub fn http_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
