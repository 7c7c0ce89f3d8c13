//! The link task: one per peer, started by the first call to it (or by
//! `TcpTransport::connect_all`). It keeps one connection to the peer up, writes the queued
//! requests on it and hands replies to their callers.
//!
//! ```text
//!  Idle --first call or connect_all--> Connecting: dial and handshake, within handshake_timeout
//!                         | ok: backoff := backoff_min           | failed
//!                         v                                      v
//!                       Connected: write the queue,  --lost-->  Down: sleep backoff, double it
//!                       read the replies                        (<= backoff_max), then Connecting
//! ```
//!
//! Calls queue while Connecting, go out at once while Connected, and fail at once while Down.
//! Leaving Connected or a dial for Down fails every pending request with
//! `TransportError::Unreachable` and drops the frames still queued for them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use keel::TransportError;
use keel::codec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::NetConfig;
use crate::framed::{self, ConnError, FrameReader, ReadHalf};
use crate::handshake::{self, Connected};
use crate::peer::{LinkState, Peer};
use crate::wire::FrameKind;

pub(crate) async fn run_link(peer: Arc<Peer>, config: Arc<NetConfig>, cancel: CancellationToken) {
    let mut queue = peer.take_queue();
    let mut backoff = config.backoff_min;
    // Failed dials in a row: only the first of a run is logged as a warning, and any whose kind
    // differs from the one before (a peer that refused connections while it started, then
    // fails authentication, is misconfigured: that must not hide at debug level). Until the
    // link first connects, a refused dial is only news once it has lasted STARTING_PEER: the
    // members of a new cluster dial each other as they start, before all of them listen.
    let mut failures = 0u32;
    let mut last_failure = None;
    let mut warned = false;
    let mut ever_connected = false;
    let born = tokio::time::Instant::now();
    loop {
        let dialed = tokio::select! {
            _ = cancel.cancelled() => return,
            dialed = tokio::time::timeout(config.handshake_timeout, handshake::dial(&peer, &config)) => {
                dialed.unwrap_or(Err(ConnError::HandshakeTimeout))
            }
        };
        match dialed {
            Ok(connected) => {
                tracing::info!(
                    peer = peer.id,
                    "connected to node {} at {}",
                    peer.id,
                    shown(&peer)
                );
                failures = 0;
                last_failure = None;
                warned = false;
                ever_connected = true;
                backoff = config.backoff_min;
                peer.counters.connects.fetch_add(1, Ordering::Relaxed);
                peer.set_state(LinkState::Connected);
                let error = tokio::select! {
                    _ = cancel.cancelled() => return,
                    error = run_connection(&peer, connected, &mut queue) => error,
                };
                // In transition mode the peer may have been restarted with the secret since it
                // turned a proof away: offer one again first.
                peer.set_plain_hello(false);
                let message = format!(
                    "connection to node {} at {} lost: {error}",
                    peer.id,
                    shown(&peer)
                );
                match error {
                    ConnError::Closed => tracing::info!(peer = peer.id, "{message}"),
                    _ => tracing::warn!(peer = peer.id, "{message}"),
                }
            }
            Err(error) => {
                failures += 1;
                let kind = std::mem::discriminant(&error);
                let new_kind = last_failure.replace(kind) != Some(kind);
                let message = format!(
                    "dialing node {} at {} failed: {error}",
                    peer.id,
                    shown(&peer)
                );
                if handshake::says_removed(&error) {
                    // Final: a committed removal is never undone, and ids are never reused.
                    // Dial again only now and then, in case this node is wrong about itself.
                    if failures == 1 {
                        tracing::info!(
                            peer = peer.id,
                            "{message}; dialing it again only every {REMOVED_BACKOFF:?}"
                        );
                    }
                    backoff = REMOVED_BACKOFF;
                } else if (new_kind || !warned)
                    && (ever_connected || !is_refused(&error) || born.elapsed() >= STARTING_PEER)
                {
                    warned = true;
                    tracing::warn!(
                        peer = peer.id,
                        "{message} (retrying, further failures at debug level)"
                    );
                } else {
                    tracing::debug!(peer = peer.id, failures, "{message}");
                }
            }
        }
        peer.set_state(LinkState::Down);
        // Their callers were just failed; sending them later would only waste the peer's work.
        while queue.try_recv().is_ok() {}
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        if backoff < REMOVED_BACKOFF {
            backoff = (backoff * 2).min(config.backoff_max);
        }
        peer.set_state(LinkState::Connecting);
    }
}

/// How long a peer that was never reached may refuse connections before that is a warning.
const STARTING_PEER: std::time::Duration = std::time::Duration::from_secs(10);

/// A dial the peer's host refused: nothing listens there (yet).
fn is_refused(error: &ConnError) -> bool {
    matches!(error, ConnError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// How long a node that a peer says was removed from the cluster waits between dials of it.
const REMOVED_BACKOFF: std::time::Duration = std::time::Duration::from_secs(60);

/// A peer's address for log lines.
fn shown(peer: &Peer) -> String {
    peer.addr
        .map_or("an unknown address".into(), |a| a.to_string())
}

/// Runs one connection until it fails; returns why.
async fn run_connection(
    peer: &Peer,
    connected: Connected,
    queue: &mut mpsc::Receiver<Bytes>,
) -> ConnError {
    let Connected {
        mut reader,
        mut writer,
    } = connected;
    tokio::select! {
        error = read_replies(peer, &mut reader) => error,
        written = framed::write_frames(&mut writer, queue, &peer.counters.bytes_sent) => {
            written.err().unwrap_or(ConnError::Closed)
        }
    }
}

async fn read_replies(peer: &Peer, reader: &mut FrameReader<ReadHalf>) -> ConnError {
    loop {
        let frame = match reader.next_frame().await {
            Ok(frame) => frame,
            Err(error) => return error,
        };
        peer.counters
            .bytes_received
            .fetch_add(frame.wire_len() as u64, Ordering::Relaxed);
        match frame.kind {
            FrameKind::Response => match codec::decode_response(frame.body) {
                Ok(response) => peer.deliver(frame.request_id, Ok(response)),
                Err(error) => {
                    let reply = Err(TransportError::BadReply(error.to_string()));
                    peer.deliver(frame.request_id, reply);
                    return ConnError::Body {
                        kind: frame.kind,
                        error,
                    };
                }
            },
            FrameKind::Error => {
                tracing::debug!(
                    peer = peer.id,
                    "node {} did not answer request {}: {}",
                    peer.id,
                    frame.request_id,
                    crate::wire::decode_text(&frame.body)
                );
                peer.deliver(frame.request_id, Err(TransportError::Unreachable(peer.id)));
            }
            kind => return ConnError::Unexpected(kind),
        }
    }
}
