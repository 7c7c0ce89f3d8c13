//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz run frames`) and for the
//! corpus-replay test (`tests/fuzz_corpus.rs`), which feeds them every committed corpus input.
//! Not part of the API: each function takes arbitrary bytes and panics only on a bug.

use bytes::{Bytes, BytesMut};
use keel::codec;

use crate::MemberAddrs;
use crate::wire::{self, Challenge, Frame, FrameError, Hello, HelloAck, ProofFrame};

/// The frame limits the fuzzer picks from: tiny, small, the pre-handshake limit and the default.
const MAX_FRAME_BYTES: [usize; 4] = [16, 300, 8 << 10, 64 << 20];

/// Feeds a byte stream to [`wire::decode_frame`] in chunks, as a socket would deliver it, and
/// decodes every body that arrives with each body decoder.
///
/// Input: `control:u8`, then `2 * (control & 7)` bytes of cut points (`u16` each), then the
/// stream. Bits 3-4 of `control` pick the frame limit. Checks that nothing panics, that a
/// decoded frame respects the limit and is taken whole off the buffer, that "read more" leaves
/// the buffer as it was, that the stream decodes to the same frames however it is split, and
/// that every handshake body that decodes encodes back to itself.
pub fn frames(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let max = MAX_FRAME_BYTES[usize::from(control >> 3) & 3];
    let cut_count = usize::from(control & 7);
    let cut_bytes = (cut_count * 2).min(rest.len());
    let (cut_data, stream) = rest.split_at(cut_bytes);
    let mut cuts: Vec<usize> = cut_data
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.push(stream.len());
    cuts.sort_unstable();

    // The stream in chunks.
    let mut buf = BytesMut::new();
    let mut split = Vec::new();
    let mut split_end = None;
    let mut start = 0;
    'feed: for cut in cuts {
        buf.extend_from_slice(&stream[start..cut]);
        start = cut;
        loop {
            match next_frame(&mut buf, max) {
                Ok(Some(frame)) => split.push(frame),
                Ok(None) => break,
                Err(error) => {
                    split_end = Some(error);
                    break 'feed;
                }
            }
        }
    }

    // The stream at once: the same frames, and the same end.
    let mut whole_buf = BytesMut::from(stream);
    let mut whole = Vec::new();
    let whole_end = loop {
        match next_frame(&mut whole_buf, max) {
            Ok(Some(frame)) => whole.push(frame),
            Ok(None) => break None,
            Err(error) => break Some(error),
        }
    };
    assert_eq!(
        split, whole,
        "the frames depend on how the stream was split"
    );
    assert_eq!(
        split_end, whole_end,
        "the end depends on how the stream was split"
    );
    if whole_end.is_none() {
        assert_eq!(buf.len(), whole_buf.len(), "different bytes left over");
    }

    for frame in &whole {
        bodies(frame);
    }
}

/// One call of [`wire::decode_frame`], with the checks every call must pass.
fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    let before = buf.clone();
    let result = wire::decode_frame(buf, max);
    match &result {
        Ok(Some(frame)) => {
            assert!(frame.wire_len() - 4 <= max, "a frame longer than the limit");
            assert_eq!(buf.len(), before.len() - frame.wire_len(), "partial take");
            assert_eq!(
                &before[wire::HEADER_BYTES..frame.wire_len()],
                &frame.body[..]
            );
            assert_eq!(
                u64::from_le_bytes(before[6..14].try_into().expect("8 bytes")),
                frame.request_id
            );
        }
        Ok(None) => {
            assert_eq!(*buf, before, "\"read more\" changed the buffer");
            assert!(
                wire::missing_bytes(buf) > 0,
                "\"read more\" with nothing missing"
            );
        }
        Err(_) => {}
    }
    result
}

/// Every body decoder on `frame`'s body; whatever decodes must encode back to the same value.
fn bodies(frame: &Frame) {
    let body = &frame.body;
    if let Ok(hello) = Hello::decode(body.clone()) {
        assert_eq!(Hello::decode(reframe(&hello.encode()).body), Ok(hello));
    }
    if let Ok(ack) = HelloAck::decode(body.clone()) {
        assert_eq!(HelloAck::decode(reframe(&ack.encode()).body), Ok(ack));
    }
    if let Ok(challenge) = Challenge::decode(body.clone()) {
        let again = Challenge::decode(reframe(&challenge.encode()).body);
        assert_eq!(again, Ok(challenge));
    }
    if let Ok(proof) = ProofFrame::decode(body.clone()) {
        assert_eq!(ProofFrame::decode(reframe(&proof.encode()).body), Ok(proof));
    }
    if let Ok(addrs) = MemberAddrs::decode(body) {
        assert_eq!(MemberAddrs::decode(&addrs.encode()), Ok(addrs));
    }
    let text = wire::decode_text(body);
    if let Ok(utf8) = std::str::from_utf8(body) {
        assert_eq!(text, utf8);
    }
    if let Ok(request) = codec::decode_request(body.clone()) {
        let again = reframe(&wire::encode_request(frame.request_id, &request));
        assert_eq!(again.request_id, frame.request_id);
        assert_eq!(codec::decode_request(again.body), Ok(request));
    }
    if let Ok(response) = codec::decode_response(body.clone()) {
        let again = reframe(&wire::encode_response(frame.request_id, &response));
        assert_eq!(codec::decode_response(again.body), Ok(response));
    }
}

/// Decodes an encoded frame, which must be exactly one valid frame.
fn reframe(encoded: &Bytes) -> Frame {
    let mut buf = BytesMut::from(&encoded[..]);
    let frame = wire::decode_frame(&mut buf, usize::MAX)
        .expect("an encoded frame decodes")
        .expect("an encoded frame is whole");
    assert!(buf.is_empty(), "bytes after an encoded frame");
    frame
}

/// Valid inputs for [`frames`]: one of every frame kind, with bodies that decode, for seeding
/// the fuzzer's corpus. Each is (name, input).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let addrs = MemberAddrs {
        peer_addr: "10.0.0.4:7081".parse().expect("an address"),
        client_addr: "node4.example:8081".into(),
    };
    let (requests, responses) = keel::fuzzing::sample_messages();
    let hello = Hello {
        cluster_id: 7,
        from: 2,
        to: 1,
        client_addr: "127.0.0.1:8002".into(),
        nonce: None,
    };
    let mut frames: Vec<(&str, Bytes)> = vec![
        ("hello", hello.encode()),
        (
            "hello_nonce",
            Hello {
                nonce: Some([9; 32]),
                ..hello
            }
            .encode(),
        ),
        (
            "hello_ack",
            HelloAck {
                client_addr: "[::1]:8001".into(),
            }
            .encode(),
        ),
        ("reject", wire::encode_reject("cluster 7 is not cluster 3")),
        ("error", wire::encode_error(9, "shutting down")),
        (
            "challenge",
            Challenge {
                nonce: [1; 32],
                proof: [2; 32],
            }
            .encode(),
        ),
        ("proof", ProofFrame { proof: [3; 32] }.encode()),
    ];
    for (i, request) in requests.iter().enumerate() {
        frames.push(("request", wire::encode_request(i as u64 + 1, request)));
    }
    for (i, response) in responses.iter().enumerate() {
        frames.push(("response", wire::encode_response(i as u64 + 1, response)));
    }
    // A member-addresses body, framed as an error frame so that it reaches the decoders.
    let mut addrs_frame = wire::encode_error(0, "").to_vec();
    addrs_frame.extend_from_slice(&addrs.encode());
    let len = (addrs_frame.len() - 4) as u32;
    addrs_frame[..4].copy_from_slice(&len.to_le_bytes());
    frames.push(("member_addrs", Bytes::from(addrs_frame)));

    let mut seeds = Vec::new();
    let mut all = Vec::new();
    for (i, (name, frame)) in frames.iter().enumerate() {
        // Limit 64 MiB, no cuts; then the same frame cut in two.
        let mut input = vec![3 << 3];
        input.extend_from_slice(frame);
        seeds.push((format!("{i:02}_{name}"), input));
        let mut cut = vec![(3 << 3) | 1];
        cut.extend_from_slice(&((frame.len() / 2) as u16).to_le_bytes());
        cut.extend_from_slice(frame);
        seeds.push((format!("{i:02}_{name}_cut"), cut));
        all.extend_from_slice(frame);
    }
    // Every frame in one stream, cut at a few places.
    let mut stream = vec![(3 << 3) | 3];
    for cut in [1u16, 100, 300] {
        stream.extend_from_slice(&cut.to_le_bytes());
    }
    stream.extend_from_slice(&all);
    seeds.push(("stream".into(), stream));
    seeds
}
