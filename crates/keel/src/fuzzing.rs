//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz run raft_codec`) and for the
//! corpus-replay test (`tests/fuzz_corpus.rs`), which feeds them every committed corpus input.
//! Not part of the API: each function takes arbitrary bytes and panics only on a bug.

use bytes::{Bytes, BytesMut};

use crate::codec::{self, MAX_INDEX, MAX_TERM};
use crate::message::{Request, Response};
use crate::types::Payload;

/// Decodes the input as a request and as a response ([`codec::decode_request`],
/// [`codec::decode_response`]). Whatever decodes must respect the codec's bounds, encode again
/// to bytes that decode to an equal value, and encode those to the same bytes again.
pub fn raft_codec(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    if let Ok(request) = codec::decode_request(input.clone()) {
        check_bounds(&request);
        let mut encoded = BytesMut::new();
        codec::encode_request(&request, &mut encoded);
        let encoded = encoded.freeze();
        let again = codec::decode_request(encoded.clone()).expect("a re-encoded request decodes");
        assert_eq!(again, request, "a request changed in a round trip");
        let mut twice = BytesMut::new();
        codec::encode_request(&again, &mut twice);
        assert_eq!(twice, encoded, "encoding a request is not deterministic");
    }
    if let Ok(response) = codec::decode_response(input) {
        let mut encoded = BytesMut::new();
        codec::encode_response(&response, &mut encoded);
        let encoded = encoded.freeze();
        let again = codec::decode_response(encoded.clone()).expect("a re-encoded response decodes");
        assert_eq!(again, response, "a response changed in a round trip");
        let mut twice = BytesMut::new();
        codec::encode_response(&again, &mut twice);
        assert_eq!(twice, encoded, "encoding a response is not deterministic");
    }
}

/// What the codec promises about a decoded request: terms and indexes in range, entries
/// numbered from `prev_log_index + 1`, no entry of term 0.
fn check_bounds(request: &Request) {
    match request {
        Request::Vote(r) => {
            assert!(r.term <= MAX_TERM && r.last_log_term <= MAX_TERM);
            assert!(r.last_log_index <= MAX_INDEX);
        }
        Request::AppendEntries(r) => {
            assert!(r.term <= MAX_TERM && r.prev_log_term <= MAX_TERM);
            assert!(r.prev_log_index <= MAX_INDEX && r.leader_commit <= MAX_INDEX);
            for (i, entry) in r.entries.iter().enumerate() {
                assert_eq!(entry.index, r.prev_log_index + 1 + i as u64);
                assert!(entry.index <= MAX_INDEX);
                assert!(entry.term != 0 && entry.term <= MAX_TERM);
                if let Payload::Config(membership) = &entry.payload {
                    let mut out = BytesMut::new();
                    codec::encode_membership(membership, &mut out);
                    assert_eq!(out.len(), membership.encoded_len());
                }
            }
        }
        Request::InstallSnapshot(r) => {
            assert!(r.term <= MAX_TERM && r.last_included_term <= MAX_TERM);
            assert!(r.last_included_index <= MAX_INDEX);
            let mut out = BytesMut::new();
            codec::encode_membership(&r.membership, &mut out);
            assert_eq!(out.len(), r.membership.encoded_len());
            let decoded = codec::decode_membership(out.freeze()).expect("a membership round trip");
            assert_eq!(decoded, r.membership);
        }
        Request::TimeoutNow(r) => assert!(r.term <= MAX_TERM),
    }
}

/// Valid inputs for [`raft_codec`], for seeding the fuzzer's corpus: every request and response
/// kind, encoded. Each is (name, input).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let (requests, responses) = sample_messages();
    let mut seeds = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let mut out = BytesMut::new();
        codec::encode_request(request, &mut out);
        seeds.push((format!("request_{i}"), out.to_vec()));
    }
    for (i, response) in responses.iter().enumerate() {
        let mut out = BytesMut::new();
        codec::encode_response(response, &mut out);
        seeds.push((format!("response_{i}"), out.to_vec()));
    }
    seeds
}

/// One or more valid messages of every request and response kind, for seeding fuzzers (this
/// crate's, and the transport's, which frames them).
pub fn sample_messages() -> (Vec<Request>, Vec<Response>) {
    use crate::message::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, TimeoutNowRequest, TimeoutNowResponse, VoteRequest, VoteResponse,
    };
    use crate::types::{Entry, Membership};

    let plain = Membership::new(
        [1, 2, 3],
        [4],
        [(4, Bytes::from_static(b"\x01\x0d\x0010.0.0.4:7081\x00\x00"))]
            .into_iter()
            .collect(),
    )
    .expect("a valid configuration");
    let joint = Membership::joint([1, 2, 5], [1, 2, 3], [], Default::default())
        .expect("a valid configuration");
    let requests = [
        Request::Vote(VoteRequest {
            term: 3,
            candidate_id: 1,
            last_log_index: 10,
            last_log_term: 2,
            pre_vote: true,
            transfer: true,
        }),
        Request::AppendEntries(AppendEntriesRequest {
            term: 7,
            leader_id: 2,
            prev_log_index: 40,
            prev_log_term: 6,
            entries: vec![
                Entry {
                    index: 41,
                    term: 7,
                    payload: Payload::Noop,
                },
                Entry {
                    index: 42,
                    term: 7,
                    payload: Payload::Command(Bytes::from_static(b"put x 1")),
                },
                Entry {
                    index: 43,
                    term: 7,
                    payload: Payload::Config(joint.clone()),
                },
            ],
            leader_commit: 39,
        }),
        Request::AppendEntries(AppendEntriesRequest {
            term: 1,
            leader_id: 1,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: Vec::new(),
            leader_commit: 0,
        }),
        Request::InstallSnapshot(InstallSnapshotRequest {
            term: 7,
            leader_id: 2,
            last_included_index: 40,
            last_included_term: 6,
            offset: 0,
            total_len: 5,
            membership: plain,
            data: Bytes::from_static(b"state"),
            done: true,
        }),
        Request::TimeoutNow(TimeoutNowRequest {
            term: 7,
            leader_id: 2,
        }),
    ];
    let responses = [
        Response::Vote(VoteResponse {
            term: 3,
            vote_granted: true,
        }),
        Response::AppendEntries(AppendEntriesResponse {
            term: 7,
            success: false,
            conflict_index: 12,
            conflict_term: Some(5),
        }),
        Response::InstallSnapshot(InstallSnapshotResponse {
            term: 7,
            next_offset: 5,
            done: false,
        }),
        Response::TimeoutNow(TimeoutNowResponse { term: 7 }),
    ];
    (requests.to_vec(), responses.to_vec())
}
