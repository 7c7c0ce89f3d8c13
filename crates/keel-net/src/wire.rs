//! The wire format: frames, and the bodies of the handshake frames.
//!
//! Integers are little-endian, as in [`keel::codec`].
//!
//! ```text
//! frame  = len:u32 version:u8 kind:u8 request_id:u64 body        len counts the bytes after itself
//!
//! kind   body                                                     request_id
//! 1 hello         magic:"KEEL" cluster_id:u64 from:u64 to:u64     0
//!                 client_addr_len:u16 client_addr (UTF-8)
//!                 [nonce:32 bytes, if the dialer has a peer secret]
//! 2 hello_ack     client_addr_len:u16 client_addr (UTF-8)         0
//! 3 hello_reject  reason (UTF-8, the rest of the body)            0
//! 4 request       keel::codec::encode_request                     chosen by the caller
//! 5 response      keel::codec::encode_response                    the request's
//! 6 error         reason (UTF-8, the rest of the body)            the request's
//! 7 challenge     nonce:32 bytes proof:32 bytes                   0
//! 8 proof         proof:32 bytes                                  0
//! ```
//!
//! A handshake is hello, then hello_ack or hello_reject. With a peer secret (see
//! [`crate::auth`]) it is hello (with the dialer's nonce), challenge (the acceptor's nonce and
//! proof), proof (the dialer's), then hello_ack or hello_reject.
//!
//! [`decode_frame`] is the only way bytes from a socket become a [`Frame`]: it checks the length
//! field against the maximum before anything is read or allocated for the frame, and the version
//! and kind as soon as their bytes arrive.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keel::codec::{self, DecodeError};
use keel::{NodeId, Request, Response};

use crate::auth::{Nonce, Proof};

/// The version of the frame format this crate speaks. A frame with another version closes the
/// connection (or, as the first frame, is refused with a reason the dialer logs).
pub const VERSION: u8 = 1;

/// The first bytes of a hello body: what tells a keel peer from anything else that connects.
pub const MAGIC: [u8; 4] = *b"KEEL";

/// Bytes of a frame before its body: `len`, `version`, `kind` and `request_id`.
pub const HEADER_BYTES: usize = 14;

/// Bytes the length field counts besides the body (`version`, `kind`, `request_id`).
const LEN_OVERHEAD: usize = HEADER_BYTES - 4;

/// Frames smaller than this are copied out of the read buffer rather than sliced from it. A
/// slice keeps its whole buffer (64 KiB or more) alive, and the entries an AppendEntries carries
/// stay in the log until the next snapshot: at one small entry per frame a follower held about
/// 8 KiB of resident memory (and 64 KiB of address space) per entry. Copying a small frame is
/// cheaper than the fresh buffer each slice made the reader allocate.
const COPY_BELOW_BYTES: usize = 64 << 10;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The dialer introduces itself ([`Hello`]).
    Hello = 1,
    /// The acceptor takes the connection ([`HelloAck`]).
    HelloAck = 2,
    /// The acceptor refuses the connection, with a reason, and closes it.
    HelloReject = 3,
    /// An RPC from the dialer.
    Request = 4,
    /// The reply to the request with the same id.
    Response = 5,
    /// The request with the same id gets no reply (the node is shutting down, or failed); the
    /// body says why.
    Error = 6,
    /// The acceptor's nonce and proof of the peer secret ([`Challenge`]).
    Challenge = 7,
    /// The dialer's proof of the peer secret ([`ProofFrame`]).
    Proof = 8,
}

impl FrameKind {
    fn from_u8(value: u8) -> Option<FrameKind> {
        Some(match value {
            1 => FrameKind::Hello,
            2 => FrameKind::HelloAck,
            3 => FrameKind::HelloReject,
            4 => FrameKind::Request,
            5 => FrameKind::Response,
            6 => FrameKind::Error,
            7 => FrameKind::Challenge,
            8 => FrameKind::Proof,
            _ => return None,
        })
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameKind::Hello => "hello",
            FrameKind::HelloAck => "hello_ack",
            FrameKind::HelloReject => "hello_reject",
            FrameKind::Request => "request",
            FrameKind::Response => "response",
            FrameKind::Error => "error",
            FrameKind::Challenge => "challenge",
            FrameKind::Proof => "proof",
        })
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the body holds.
    pub kind: FrameKind,
    /// Pairs a response or error with its request; 0 in handshake frames.
    pub request_id: u64,
    /// The bytes after the header.
    pub body: Bytes,
}

impl Frame {
    /// Bytes the frame took on the wire, header included.
    pub fn wire_len(&self) -> usize {
        HEADER_BYTES + self.body.len()
    }
}

/// Why bytes are not a frame. Any of these closes the connection they came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field exceeds the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The length field.
        len: u32,
        /// `NetConfig::max_frame_bytes`.
        max: usize,
    },
    /// The length field cannot even hold the header.
    #[error("frame length {0} is shorter than the {LEN_OVERHEAD} header bytes it must cover")]
    TooShort(u32),
    /// The peer speaks another version of the format.
    #[error("unsupported frame version {0} (this node speaks version {VERSION})")]
    Version(u8),
    /// A kind byte no version of the format uses.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
}

/// Takes one whole frame off the front of `buf`, if `buf` holds one; `Ok(None)` means "read
/// more". A small frame is copied out, so `buf` can be reused for the next read; a large one
/// (from 64 KiB) shares `buf`'s memory, of which it is most.
pub fn decode_frame(
    buf: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<Option<Frame>, FrameError> {
    let Some(len_bytes) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*len_bytes);
    if len as usize > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    if (len as usize) < LEN_OVERHEAD {
        return Err(FrameError::TooShort(len));
    }
    // Check version and kind as soon as they arrive, not after a whole (large) frame did.
    if let Some(&version) = buf.get(4)
        && version != VERSION
    {
        return Err(FrameError::Version(version));
    }
    let kind = match buf.get(5) {
        None => return Ok(None),
        Some(&byte) => FrameKind::from_u8(byte).ok_or(FrameError::UnknownKind(byte))?,
    };
    if buf.len() < 4 + len as usize {
        return Ok(None);
    }
    let total = 4 + len as usize;
    let mut frame = if total < COPY_BELOW_BYTES {
        let frame = Bytes::copy_from_slice(&buf[..total]);
        buf.advance(total);
        frame
    } else {
        buf.split_to(total).freeze()
    };
    frame.advance(6);
    let request_id = frame.get_u64_le();
    Ok(Some(Frame {
        kind,
        request_id,
        body: frame,
    }))
}

/// How many more bytes `buf` needs before [`decode_frame`] can return its first frame. Only
/// meaningful after `decode_frame` returned `Ok(None)` for `buf`.
pub(crate) fn missing_bytes(buf: &[u8]) -> usize {
    match buf.first_chunk::<4>() {
        None => 4 - buf.len(),
        Some(len) => (4 + u32::from_le_bytes(*len) as usize).saturating_sub(buf.len()),
    }
}

/// Encodes a frame whose body `write_body` appends. The caller checks the result against the
/// peer's maximum ([`frame_len`]) before sending it.
fn encode(kind: FrameKind, request_id: u64, write_body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_u32_le(0); // patched below, once the body's length is known
    out.put_u8(VERSION);
    out.put_u8(kind as u8);
    out.put_u64_le(request_id);
    write_body(&mut out);
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out.freeze()
}

/// What the length field of an encoded frame should hold (what the receiver compares with its
/// maximum). A frame whose value exceeds `u32::MAX` has a wrong length field and must not be sent;
/// senders check this against `max_frame_bytes`, which is at most `u32::MAX`.
pub fn frame_len(frame: &[u8]) -> usize {
    frame.len().saturating_sub(4)
}

/// Encodes a request frame.
pub fn encode_request(request_id: u64, request: &Request) -> Bytes {
    encode(FrameKind::Request, request_id, |out| {
        codec::encode_request(request, out)
    })
}

/// Encodes a response frame.
pub fn encode_response(request_id: u64, response: &Response) -> Bytes {
    encode(FrameKind::Response, request_id, |out| {
        codec::encode_response(response, out)
    })
}

/// Encodes an error frame: the request gets no reply, for `reason`.
pub fn encode_error(request_id: u64, reason: &str) -> Bytes {
    encode(FrameKind::Error, request_id, |out| {
        out.put_slice(reason.as_bytes())
    })
}

/// Encodes a hello_reject frame.
pub fn encode_reject(reason: &str) -> Bytes {
    encode(FrameKind::HelloReject, 0, |out| {
        out.put_slice(reason.as_bytes())
    })
}

/// The text body of a hello_reject or error frame (invalid UTF-8 is replaced, not refused: the
/// text is only logged).
pub fn decode_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The dialer's introduction: the first frame on every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The cluster the dialer belongs to.
    pub cluster_id: u64,
    /// The dialer's node id.
    pub from: NodeId,
    /// The node id the dialer believes it is calling.
    pub to: NodeId,
    /// Where the dialer serves clients, so that peers can forward client requests to it.
    pub client_addr: String,
    /// The dialer's nonce, when it has a peer secret and expects a [`Challenge`].
    pub nonce: Option<Nonce>,
}

impl Hello {
    /// Encodes the hello frame.
    ///
    /// # Panics
    ///
    /// If `client_addr` is longer than 65535 bytes (`NetConfig::validate` allows 1024).
    pub fn encode(&self) -> Bytes {
        encode(FrameKind::Hello, 0, |out| {
            out.put_slice(&MAGIC);
            out.put_u64_le(self.cluster_id);
            out.put_u64_le(self.from);
            out.put_u64_le(self.to);
            put_string(out, &self.client_addr);
            if let Some(nonce) = &self.nonce {
                out.put_slice(nonce);
            }
        })
    }

    /// Decodes a hello body.
    pub fn decode(mut body: Bytes) -> Result<Hello, DecodeError> {
        let magic = take(&mut body, "magic", 4)?;
        if magic[..] != MAGIC {
            return Err(DecodeError::Invalid(
                "bad magic: the dialer is not a keel node",
            ));
        }
        let hello = Hello {
            cluster_id: take_u64(&mut body, "cluster id")?,
            from: take_u64(&mut body, "node id")?,
            to: take_u64(&mut body, "target node id")?,
            client_addr: take_client_addr(&mut body)?,
            nonce: match body.len() {
                0 => None,
                _ => Some(take_array(&mut body, "nonce")?),
            },
        };
        finish(&body)?;
        Ok(hello)
    }
}

/// The acceptor's answer to a valid [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloAck {
    /// Where the acceptor serves clients.
    pub client_addr: String,
}

impl HelloAck {
    /// Encodes the hello_ack frame.
    ///
    /// # Panics
    ///
    /// If `client_addr` is longer than 65535 bytes (`NetConfig::validate` allows 1024).
    pub fn encode(&self) -> Bytes {
        encode(FrameKind::HelloAck, 0, |out| {
            put_string(out, &self.client_addr)
        })
    }

    /// Decodes a hello_ack body.
    pub fn decode(mut body: Bytes) -> Result<HelloAck, DecodeError> {
        let ack = HelloAck {
            client_addr: take_client_addr(&mut body)?,
        };
        finish(&body)?;
        Ok(ack)
    }
}

/// The acceptor's answer to a hello with a nonce, when it has a peer secret: its own nonce, and
/// its proof of the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The acceptor's nonce.
    pub nonce: Nonce,
    /// The acceptor's proof.
    pub proof: Proof,
}

impl Challenge {
    /// Encodes the challenge frame.
    pub fn encode(&self) -> Bytes {
        encode(FrameKind::Challenge, 0, |out| {
            out.put_slice(&self.nonce);
            out.put_slice(&self.proof);
        })
    }

    /// Decodes a challenge body.
    pub fn decode(mut body: Bytes) -> Result<Challenge, DecodeError> {
        let challenge = Challenge {
            nonce: take_array(&mut body, "nonce")?,
            proof: take_array(&mut body, "proof")?,
        };
        finish(&body)?;
        Ok(challenge)
    }
}

/// The dialer's answer to a [`Challenge`]: its proof of the peer secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofFrame {
    /// The dialer's proof.
    pub proof: Proof,
}

impl ProofFrame {
    /// Encodes the proof frame.
    pub fn encode(&self) -> Bytes {
        encode(FrameKind::Proof, 0, |out| out.put_slice(&self.proof))
    }

    /// Decodes a proof body.
    pub fn decode(mut body: Bytes) -> Result<ProofFrame, DecodeError> {
        let frame = ProofFrame {
            proof: take_array(&mut body, "proof")?,
        };
        finish(&body)?;
        Ok(frame)
    }
}

/// Writes `s` with a u16 length.
fn put_string(out: &mut BytesMut, s: &str) {
    let len = u16::try_from(s.len()).expect("client address length is validated to fit a u16");
    out.put_u16_le(len);
    out.put_slice(s.as_bytes());
}

fn take(body: &mut Bytes, field: &'static str, len: usize) -> Result<Bytes, DecodeError> {
    if body.len() < len {
        return Err(DecodeError::Truncated {
            field,
            needed: len - body.len(),
        });
    }
    Ok(body.split_to(len))
}

fn take_array<const N: usize>(
    body: &mut Bytes,
    field: &'static str,
) -> Result<[u8; N], DecodeError> {
    let mut array = [0u8; N];
    array.copy_from_slice(&take(body, field, N)?);
    Ok(array)
}

fn take_u64(body: &mut Bytes, field: &'static str) -> Result<u64, DecodeError> {
    Ok(take(body, field, 8)?.get_u64_le())
}

fn take_string(body: &mut Bytes, field: &'static str) -> Result<String, DecodeError> {
    let len = take(body, field, 2)?.get_u16_le() as usize;
    let bytes = take(body, field, len)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| DecodeError::Invalid("client address is not UTF-8"))
}

/// A client address: empty (the node serves no clients) or `HOST:PORT`, checked by
/// [`crate::is_client_addr`] before anything uses it.
fn take_client_addr(body: &mut Bytes) -> Result<String, DecodeError> {
    let addr = take_string(body, "client address")?;
    if !addr.is_empty() && !crate::is_client_addr(&addr) {
        return Err(DecodeError::Invalid("client address is not HOST:PORT"));
    }
    Ok(addr)
}

fn finish(body: &Bytes) -> Result<(), DecodeError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes(body.len()))
    }
}

#[cfg(test)]
mod tests {
    use keel::message::{VoteRequest, VoteResponse};
    use proptest::prelude::*;

    use super::*;

    const MAX: usize = 1 << 20;

    fn vote() -> Request {
        Request::Vote(VoteRequest {
            term: 3,
            candidate_id: 1,
            last_log_index: 10,
            last_log_term: 2,
            pre_vote: false,
            transfer: false,
        })
    }

    #[test]
    fn the_header_layout_is_pinned() {
        let frame = encode_error(0x0102_0304_0506_0708, "no");
        assert_eq!(
            &frame[..],
            &[12, 0, 0, 0, VERSION, 6, 8, 7, 6, 5, 4, 3, 2, 1, b'n', b'o']
        );
        let hello = Hello {
            cluster_id: 7,
            from: 2,
            to: 1,
            client_addr: "h:1".into(),
            nonce: None,
        }
        .encode();
        let mut expected = vec![43, 0, 0, 0, VERSION, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(b"KEEL");
        for n in [7u64, 2, 1] {
            expected.extend_from_slice(&n.to_le_bytes());
        }
        expected.extend_from_slice(&[3, 0, b'h', b':', b'1']);
        assert_eq!(&hello[..], &expected[..]);
    }

    /// A frame of `body_bytes` zeros, of the kind a vote request has.
    fn raw_frame(body_bytes: usize) -> Vec<u8> {
        let kind = encode_request(1, &vote())[5];
        let mut frame = ((LEN_OVERHEAD + body_bytes) as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&[VERSION, kind]);
        frame.extend_from_slice(&7u64.to_le_bytes());
        frame.resize(frame.len() + body_bytes, 0);
        frame
    }

    #[test]
    fn small_frames_do_not_keep_the_read_buffer_alive() {
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.extend_from_slice(&raw_frame(300));
        buf.extend_from_slice(&raw_frame(300));
        buf.extend_from_slice(&raw_frame(100 << 10));
        let start = buf.as_ptr() as usize;
        let within = |body: &Bytes| (start..start + (1 << 20)).contains(&(body.as_ptr() as usize));
        for _ in 0..2 {
            let frame = decode_frame(&mut buf, MAX).unwrap().expect("a whole frame");
            assert_eq!(frame.body.len(), 300);
            assert!(!within(&frame.body), "a small frame is a copy");
        }
        let large = decode_frame(&mut buf, MAX).unwrap().expect("a whole frame");
        assert_eq!(large.body.len(), 100 << 10);
        assert!(within(&large.body), "a large frame is not copied");
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_round_trip_one_byte_at_a_time() {
        let response = Response::Vote(VoteResponse {
            term: 4,
            vote_granted: true,
        });
        let mut stream = Vec::new();
        stream.extend_from_slice(&encode_request(9, &vote()));
        stream.extend_from_slice(&encode_response(9, &response));
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in stream {
            buf.put_u8(byte);
            if let Some(frame) = decode_frame(&mut buf, MAX).unwrap() {
                frames.push(frame);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(frames.len(), 2);
        assert_eq!(
            (frames[0].kind, frames[0].request_id),
            (FrameKind::Request, 9)
        );
        assert_eq!(
            codec::decode_request(frames[0].body.clone()).unwrap(),
            vote()
        );
        assert_eq!(frames[1].kind, FrameKind::Response);
        assert_eq!(
            codec::decode_response(frames[1].body.clone()).unwrap(),
            response
        );
    }

    #[test]
    fn a_bad_length_version_or_kind_is_refused_before_the_body_arrives() {
        let mut huge = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        assert_eq!(
            decode_frame(&mut huge, MAX),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: MAX
            })
        );
        let mut short = BytesMut::from(&[3, 0, 0, 0][..]);
        assert_eq!(decode_frame(&mut short, MAX), Err(FrameError::TooShort(3)));
        let mut version = BytesMut::from(&[100, 0, 0, 0, 9][..]);
        assert_eq!(decode_frame(&mut version, MAX), Err(FrameError::Version(9)));
        let mut kind = BytesMut::from(&[100, 0, 0, 0, VERSION, 0x42][..]);
        assert_eq!(
            decode_frame(&mut kind, MAX),
            Err(FrameError::UnknownKind(0x42))
        );
    }

    #[test]
    fn handshake_bodies_round_trip_and_reject_garbage() {
        let hello = Hello {
            cluster_id: u64::MAX,
            from: 3,
            to: 1,
            client_addr: "10.0.0.3:8080".into(),
            nonce: None,
        };
        let mut buf = BytesMut::from(&hello.encode()[..]);
        let frame = decode_frame(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(Hello::decode(frame.body).unwrap(), hello);
        let with_nonce = Hello {
            nonce: Some([9; 32]),
            ..hello.clone()
        };
        let encoded = with_nonce.encode();
        assert_eq!(encoded.len(), hello.encode().len() + 32);
        let mut buf = BytesMut::from(&encoded[..]);
        let frame = decode_frame(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(Hello::decode(frame.body.clone()).unwrap(), with_nonce);
        // A nonce cut short is refused, not padded.
        let cut = frame.body.slice(..frame.body.len() - 1);
        assert!(matches!(
            Hello::decode(cut),
            Err(DecodeError::Truncated { field: "nonce", .. })
        ));

        let challenge = Challenge {
            nonce: [1; 32],
            proof: [2; 32],
        };
        let mut buf = BytesMut::from(&challenge.encode()[..]);
        let frame = decode_frame(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Challenge);
        assert_eq!(Challenge::decode(frame.body.clone()).unwrap(), challenge);
        assert!(Challenge::decode(frame.body.slice(..63)).is_err());
        let proof = ProofFrame { proof: [3; 32] };
        let mut buf = BytesMut::from(&proof.encode()[..]);
        let frame = decode_frame(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Proof);
        assert_eq!(ProofFrame::decode(frame.body.clone()).unwrap(), proof);
        let mut long = frame.body.to_vec();
        long.push(0);
        assert!(matches!(
            ProofFrame::decode(Bytes::from(long)),
            Err(DecodeError::TrailingBytes(1))
        ));

        let ack = HelloAck {
            client_addr: String::new(),
        };
        let mut buf = BytesMut::from(&ack.encode()[..]);
        let frame = decode_frame(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(HelloAck::decode(frame.body).unwrap(), ack);

        assert!(matches!(
            Hello::decode(Bytes::from_static(b"HTTP/1.1 200 OK")),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            HelloAck::decode(Bytes::from_static(&[5, 0, b'a'])),
            Err(DecodeError::Truncated { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever arrives, decoding returns frames, "need more" or an error: it never panics,
        /// never returns a frame longer than the maximum and never consumes a partial frame.
        #[test]
        fn random_bytes_never_panic_the_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            max in 10usize..300,
        ) {
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                let before = buf.len();
                match decode_frame(&mut buf, max) {
                    Ok(Some(frame)) => {
                        prop_assert!(frame.wire_len() - 4 <= max);
                        prop_assert_eq!(buf.len(), before - frame.wire_len());
                        let _ = Hello::decode(frame.body.clone());
                        let _ = HelloAck::decode(frame.body.clone());
                        let _ = Challenge::decode(frame.body.clone());
                        let _ = ProofFrame::decode(frame.body.clone());
                        let _ = codec::decode_request(frame.body.clone());
                        let _ = codec::decode_response(frame.body);
                    }
                    Ok(None) => {
                        prop_assert_eq!(buf.len(), before);
                        prop_assert!(missing_bytes(&buf) > 0);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        /// Valid frames split at arbitrary points decode to the same frames.
        #[test]
        fn frames_decode_the_same_however_the_stream_is_split(
            ids in proptest::collection::vec(any::<u64>(), 1..8),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let mut stream = Vec::new();
            for &id in &ids {
                stream.extend_from_slice(&encode_request(id, &vote()));
            }
            let mut cuts = cuts;
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut buf = BytesMut::new();
            let mut seen = Vec::new();
            let mut start = 0;
            for cut in cuts {
                let cut = cut.min(stream.len());
                buf.extend_from_slice(&stream[start..cut.max(start)]);
                start = cut.max(start);
                while let Some(frame) = decode_frame(&mut buf, MAX).unwrap() {
                    prop_assert_eq!(codec::decode_request(frame.body).unwrap(), vote());
                    seen.push(frame.request_id);
                }
            }
            prop_assert_eq!(seen, ids);
        }
    }
}
