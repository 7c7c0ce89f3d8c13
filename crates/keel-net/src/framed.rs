//! Frames over a socket: a reader that decodes many frames per read, and a writer that sends
//! everything queued with one write. Both sides of a connection use them.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use keel::codec::DecodeError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::wire::{self, Frame, FrameError};

/// Least free space a read offers the kernel, so that one read brings in many small frames.
const READ_MIN_BYTES: usize = 64 << 10;
/// Most buffer reserved ahead of data for one large frame: its memory grows with what actually
/// arrives, not with what its length field claims.
const READ_STEP_BYTES: usize = 1 << 20;
/// A batch of small frames is written once it reaches this size.
const BATCH_MAX_BYTES: usize = 1 << 20;
/// Frames from this size on are not copied into the batch buffer but written from their own
/// memory, in the same vectored write: copying them would cost more than the extra iovec.
const DIRECT_WRITE_BYTES: usize = 64 << 10;

/// The reading half of a connection, plain TCP or TLS.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection, plain TCP or TLS.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// The peer closed the connection between frames.
    #[error("closed by the peer")]
    Closed,
    /// The peer closed the connection inside a frame.
    #[error("connection closed inside a frame ({0} bytes of it received)")]
    Truncated(usize),
    /// A socket error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// Bytes that are not a frame.
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame whose body does not decode.
    #[error("malformed {kind} body: {error}")]
    Body {
        /// The frame kind.
        kind: wire::FrameKind,
        /// What was wrong.
        error: DecodeError,
    },
    /// A valid frame where the protocol does not allow one.
    #[error("unexpected {0} frame")]
    Unexpected(wire::FrameKind),
    /// The handshake took longer than `handshake_timeout`.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The acceptor refused the handshake.
    #[error("refused: {0}")]
    Refused(String),
    /// The acceptor did not prove it holds the peer secret.
    #[error("peer authentication failed: {0}")]
    Auth(String),
    /// The TLS handshake failed (no certificate, another CA, another node's name...).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// A newer connection from the same peer replaced it.
    #[error("replaced by a newer connection from the same peer")]
    Superseded,
    /// The peer was removed from the cluster (the removal committed).
    #[error("the peer was removed from the cluster")]
    Removed,
    /// This node is shutting down.
    #[error("this node is shutting down")]
    ShuttingDown,
}

/// Reads frames from one side of a socket.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R, max_frame_bytes: usize) -> Self {
        FrameReader {
            io,
            buf: BytesMut::new(),
            max_frame_bytes,
        }
    }

    /// Changes the largest frame accepted from now on (raised once a handshake completes).
    pub(crate) fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// The next frame. Frames already buffered cost no system call. Cancel-safe: a frame is
    /// taken off the buffer only when it is returned.
    pub(crate) async fn next_frame(&mut self) -> Result<Frame, ConnError> {
        loop {
            if let Some(frame) = wire::decode_frame(&mut self.buf, self.max_frame_bytes)? {
                return Ok(frame);
            }
            let missing = wire::missing_bytes(&self.buf);
            self.buf
                .reserve(missing.clamp(READ_MIN_BYTES, READ_STEP_BYTES));
            let read = match self.io.read_buf(&mut self.buf).await {
                // TLS reports a peer that closed without a close_notify (killed, say) this
                // way; frames carry their length, so between frames it is a plain close.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => 0,
                read => read?,
            };
            if read == 0 {
                return Err(match self.buf.len() {
                    0 => ConnError::Closed,
                    n => ConnError::Truncated(n),
                });
            }
        }
    }
}

/// Sends the frames queued on `queue` until it closes or a write fails. Each round takes
/// everything queued (up to a batch size) and writes it with one vectored write: requests go
/// out as soon as they are queued, and under load many share one system call.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    io: &mut W,
    queue: &mut mpsc::Receiver<Bytes>,
    bytes_sent: &AtomicU64,
) -> Result<(), ConnError> {
    let mut batch = BytesMut::with_capacity(READ_MIN_BYTES);
    while let Some(first) = queue.recv().await {
        // Let the tasks that are ready to queue frames (callers woken by the last replies,
        // handlers that just finished) run first, so that their frames join this write.
        tokio::task::yield_now().await;
        let mut next = Some(first);
        while let Some(frame) = next.take().or_else(|| queue.try_recv().ok()) {
            let len = frame.len();
            if len >= DIRECT_WRITE_BYTES {
                io.write_all_buf(&mut (&mut batch).chain(frame)).await?;
            } else {
                batch.extend_from_slice(&frame);
            }
            bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
            if batch.len() >= BATCH_MAX_BYTES {
                break;
            }
        }
        io.write_all_buf(&mut batch).await?;
        batch.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameKind;

    #[tokio::test]
    async fn the_writer_coalesces_queued_frames_and_the_reader_splits_them() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let (tx, mut rx) = mpsc::channel(16);
        let big = "x".repeat(DIRECT_WRITE_BYTES);
        for (id, text) in [(1, "a"), (2, big.as_str()), (3, "c")] {
            tx.try_send(wire::encode_error(id, text)).unwrap();
        }
        drop(tx);
        let sent = AtomicU64::new(0);
        write_frames(&mut client, &mut rx, &sent).await.unwrap();
        drop(client);

        let mut reader = FrameReader::new(server, 1 << 20);
        let mut total = 0;
        for (id, len) in [(1, 1), (2, DIRECT_WRITE_BYTES), (3, 1)] {
            let frame = reader.next_frame().await.unwrap();
            assert_eq!(
                (frame.kind, frame.request_id, frame.body.len()),
                (FrameKind::Error, id, len)
            );
            total += frame.wire_len();
        }
        assert!(matches!(reader.next_frame().await, Err(ConnError::Closed)));
        assert_eq!(sent.load(Ordering::Relaxed), total as u64);
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_truncation() {
        let frame = wire::encode_error(1, "hello");
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(&frame[..frame.len() - 1]).await.unwrap();
        drop(client);
        let mut reader = FrameReader::new(server, 1 << 20);
        assert!(
            matches!(reader.next_frame().await, Err(ConnError::Truncated(n)) if n == frame.len() - 1)
        );
    }
}
