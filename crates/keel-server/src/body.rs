//! Request bodies: read only as far as their kind needs, within a deadline between parts, and
//! held in the node's body budget (a bound on the bytes of bodies and forwarded answers a node
//! holds at once) until their request is answered.

// Helpers return `Result<_, Response>` so an early answer can be `?`-propagated.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use http_body_util::BodyExt;

use crate::auth::Permission;
use crate::http::{Api, Incoming, KeyPath, error, key_of};

/// The bytes of request bodies (and forwarded answers) a node holds at once unless told
/// otherwise: 256 MiB, or the largest request the limits allow if that is more.
pub fn default_body_budget(max_value_bytes: usize) -> usize {
    (256usize << 20).max(cas_body_bound(max_value_bytes))
}

/// The slowest a request body may arrive on average, after a grace period of the request
/// timeout (see [`key_and_body`]).
pub const MIN_BODY_BYTES_PER_SEC: usize = 64 << 10;

/// What a request body carries, which bounds how much of it is read.
#[derive(Clone, Copy)]
pub(crate) enum BodyHolds {
    /// A value, raw (put, append).
    Value,
    /// Two values as JSON strings (compare-and-set), where an escape takes up to 6 bytes for
    /// one (`\u0001`).
    Cas,
}

/// The most of a compare-and-set body read: two values, escaped at worst, and the JSON around.
pub(crate) fn cas_body_bound(max_value_bytes: usize) -> usize {
    max_value_bytes.saturating_mul(12).saturating_add(1024)
}

/// Reads the key and the body, holding the body's bytes in the node's body budget (the permit
/// returned) until the caller drops it.
pub(crate) async fn key_and_body(
    api: &Api,
    path: KeyPath,
    incoming: &Incoming,
    body: Body,
    holds: BodyHolds,
) -> Result<(Bytes, Bytes, Held), Response> {
    let key = match key_of(api, path, incoming, Permission::Write) {
        Ok(key) => key,
        Err(response) => return Err(refuse(body, response).await),
    };
    // Past the value limit the KV service refuses the value with its exact size; the body is
    // read a little further so that it can, and no further.
    let value_max = api.kv.options().max_value_bytes;
    let max = match holds {
        BodyHolds::Value => value_max.saturating_add(1024),
        BodyHolds::Cas => cas_body_bound(value_max),
    };
    // A body of known length (most are) takes its bytes of the budget before any is read, or
    // is turned away at once; one of unknown length (chunked) takes them part by part.
    let mut held = Held::default();
    let known = axum::body::HttpBody::size_hint(&body).exact();
    if let Some(length) = known {
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if length > max {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "value_too_large",
                &format!(
                    "the request body of {length} bytes is longer than {max}; values may have \
                     at most {} bytes",
                    api.kv.options().max_value_bytes
                ),
            ));
        }
        held.take(api, length)?;
    }
    // The header timeout ends with the request head, and the request timeout starts after
    // the body: a client that announces a body and then stops sending would otherwise hold
    // its connection, and the budget its length took, for good. So the body must keep coming:
    // each part within the request timeout of the one before, and all of it at a minimum
    // average rate after a grace period (the request timeout): by `grace + received /
    // MIN_BODY_BYTES_PER_SEC` from the start, at every point. A slow drip (a byte every few
    // seconds of a megabyte declared) is cut after the grace period; holding budget costs a
    // client bandwidth in proportion to the time it holds it.
    let idle = api.kv.options().request_timeout;
    let started = tokio::time::Instant::now();
    let mut body = body;
    // Most bodies arrive in one part, kept as it is: no allocation, no copy.
    let mut first: Option<Bytes> = None;
    let mut more: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let earned = Duration::from_secs_f64(len as f64 / MIN_BODY_BYTES_PER_SEC as f64);
        let too_slow = started + idle + earned;
        let stalled = tokio::time::Instant::now() + idle;
        let frame = match tokio::time::timeout_at(too_slow.min(stalled), body.frame()).await {
            Err(_) if stalled <= too_slow => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    &format!("the request body stopped arriving for {idle:?}"),
                ));
            }
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    &format!(
                        "the request body arrived at less than {} KiB/s ({len} bytes in {:.1} s)",
                        MIN_BODY_BYTES_PER_SEC >> 10,
                        started.elapsed().as_secs_f64()
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(error(StatusCode::BAD_REQUEST, "bad_body", &e.to_string()));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            len += data.len();
            if len > max {
                // Reading stops here: the body's whole length is not known.
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "value_too_large",
                    &format!(
                        "the request body is longer than {max} bytes (read {len} before \
                         stopping); values may have at most {} bytes",
                        api.kv.options().max_value_bytes
                    ),
                ));
            }
            if known.is_none() {
                held.take(api, data.len())?;
            }
            match first {
                None => first = Some(data),
                Some(_) => more.push(data),
            }
        }
    }
    let value = match first {
        None => Bytes::new(),
        Some(first) if more.is_empty() => first,
        Some(first) => {
            let mut all = bytes::BytesMut::with_capacity(len);
            all.extend_from_slice(&first);
            more.iter().for_each(|part| all.extend_from_slice(part));
            all.freeze()
        }
    };
    Ok((key, value, held))
}

/// Bytes of the node's body budget that a request holds, given back when it is dropped.
#[derive(Default)]
pub(crate) struct Held(Option<tokio::sync::OwnedSemaphorePermit>);

impl Held {
    /// Takes `bytes` more of the budget, or fails at once (503) if it has no room: waiting
    /// would hold what was taken so far, and tokio's semaphore lets a waiter claim every
    /// permit that frees up, so waiters would starve everyone else.
    pub(crate) fn take(&mut self, api: &Api, bytes: usize) -> Result<(), Response> {
        if bytes == 0 {
            return Ok(());
        }
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|count| api.body_budget.clone().try_acquire_many_owned(count).ok())
            .ok_or_else(|| budget_exhausted(api))?;
        match &mut self.0 {
            Some(held) => held.merge(permit),
            None => self.0 = Some(permit),
        }
        Ok(())
    }
}

fn budget_exhausted(api: &Api) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        &format!(
            "request bodies in progress hold all {} bytes this node takes at once; retry later",
            api.body_budget_bytes
        ),
    )
}

/// The most of a refused request's body read (and dropped) before the refusal is sent.
const DRAINED_BODY_BYTES: usize = 64 << 10;
/// The longest wait for it.
const DRAIN_TIME: Duration = Duration::from_millis(500);

/// Answers `response` to a request refused before its body was read, having read a small body
/// first: answered before its body arrived, an HTTP/2 request is reset, and some clients (curl
/// among them) then report a framing error instead of the refusal. A large or slow body is not
/// waited for.
pub(crate) async fn refuse(body: Body, response: Response) -> Response {
    use http_body_util::BodyExt;
    let small = axum::body::HttpBody::size_hint(&body)
        .upper()
        .is_some_and(|n| n <= DRAINED_BODY_BYTES as u64);
    if small {
        let limited = http_body_util::Limited::new(body, DRAINED_BODY_BYTES);
        let _ = tokio::time::timeout(DRAIN_TIME, limited.collect()).await;
    }
    response
}
