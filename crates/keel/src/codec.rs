//! The binary encoding of RPCs, shared by every transport (the simulated network uses it too, so
//! its byte counts are real).
//!
//! Integers are little-endian and fixed width. An entry's index is not sent: entries of an
//! AppendEntries are consecutive from `prev_log_index + 1`. Decoding never panics and never
//! allocates more than the input can justify; any malformed input is a [`DecodeError`].
//! Terms and log indexes must be at most [`MAX_TERM`] and [`MAX_INDEX`] (2^63 - 1): a node only
//! ever adds one to them, so a peer sending `u64::MAX` must not get to make it overflow.
//!
//! ```text
//! request  = kind:u8 body          response = kind:u8 body
//! vote     = term candidate last_log_index last_log_term flags:u8   (1 pre-vote, 2 transfer)
//! append   = term leader prev_log_index prev_log_term leader_commit count:u32 entry*
//! entry    = term payload_kind:u8 len:u32 bytes   (0 no-op, no bytes; 1 command; 2 membership)
//! snapshot = term leader last_index last_term offset total_len done:u8
//!            membership_len:u32 membership len:u32 bytes
//! timeout_now = term leader
//! (responses: vote = term granted:u8; append = term success:u8 conflict_index conflict_term;
//!  snapshot = term next_offset done:u8; timeout_now = term)
//!
//! membership = version:u8 (1) ids(voters) ids(outgoing voters, when joint) ids(learners)
//!              count:u32 (id len:u32 bytes)*          (the service's information per member)
//! ids        = count:u32 id*                          (strictly increasing)
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use std::collections::{BTreeMap, BTreeSet};

use crate::message::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    Request, Response, TimeoutNowRequest, TimeoutNowResponse, VoteRequest, VoteResponse,
};
use crate::types::{Entry, Membership, NodeId, Payload};

/// The largest term a message may carry: room to count up forever, and far from overflow.
pub const MAX_TERM: u64 = i64::MAX as u64;
/// The largest log index a message may carry.
pub const MAX_INDEX: u64 = i64::MAX as u64;

const KIND_VOTE: u8 = 1;
const KIND_APPEND: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;
const KIND_TIMEOUT_NOW: u8 = 4;

const PAYLOAD_NOOP: u8 = 0;
const PAYLOAD_COMMAND: u8 = 1;
const PAYLOAD_CONFIG: u8 = 2;

const VOTE_PRE_VOTE: u8 = 1;
const VOTE_TRANSFER: u8 = 2;

const MEMBERSHIP_VERSION: u8 = 1;

/// Why bytes could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("message truncated: needed {needed} more bytes for {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A kind or flag byte had a value no version of the encoding uses.
    #[error("invalid {field} byte {value:#04x}")]
    InvalidTag {
        /// The field being read.
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    /// The message decoded but bytes were left over.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A field holds a value that breaks an invariant of the protocol.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
    /// A term or log index above [`MAX_TERM`] / [`MAX_INDEX`].
    #[error("{field} {value} is out of range (at most 2^63 - 1)")]
    OutOfRange {
        /// The field being read.
        field: &'static str,
        /// The value found.
        value: u64,
    },
}

/// Appends the encoding of `request` to `out`.
pub fn encode_request(request: &Request, out: &mut BytesMut) {
    match request {
        Request::Vote(r) => {
            out.reserve(34);
            out.put_u8(KIND_VOTE);
            out.put_u64_le(r.term);
            out.put_u64_le(r.candidate_id);
            out.put_u64_le(r.last_log_index);
            out.put_u64_le(r.last_log_term);
            let flags = if r.pre_vote { VOTE_PRE_VOTE } else { 0 }
                | if r.transfer { VOTE_TRANSFER } else { 0 };
            out.put_u8(flags);
        }
        Request::AppendEntries(r) => {
            let body: usize = r.entries.iter().map(Entry::encoded_len).sum();
            out.reserve(45 + body);
            out.put_u8(KIND_APPEND);
            out.put_u64_le(r.term);
            out.put_u64_le(r.leader_id);
            out.put_u64_le(r.prev_log_index);
            out.put_u64_le(r.prev_log_term);
            out.put_u64_le(r.leader_commit);
            out.put_u32_le(r.entries.len() as u32);
            for entry in &r.entries {
                encode_entry_body(entry, out);
            }
        }
        Request::InstallSnapshot(r) => {
            out.reserve(58 + r.membership.encoded_len() + r.data.len());
            out.put_u8(KIND_SNAPSHOT);
            out.put_u64_le(r.term);
            out.put_u64_le(r.leader_id);
            out.put_u64_le(r.last_included_index);
            out.put_u64_le(r.last_included_term);
            out.put_u64_le(r.offset);
            out.put_u64_le(r.total_len);
            out.put_u8(r.done as u8);
            out.put_u32_le(r.membership.encoded_len() as u32);
            encode_membership(&r.membership, out);
            out.put_u32_le(r.data.len() as u32);
            out.put_slice(&r.data);
        }
        Request::TimeoutNow(r) => {
            out.put_u8(KIND_TIMEOUT_NOW);
            out.put_u64_le(r.term);
            out.put_u64_le(r.leader_id);
        }
    }
}

/// Appends the encoding of `response` to `out`.
pub fn encode_response(response: &Response, out: &mut BytesMut) {
    match response {
        Response::Vote(r) => {
            out.put_u8(KIND_VOTE);
            out.put_u64_le(r.term);
            out.put_u8(r.vote_granted as u8);
        }
        Response::AppendEntries(r) => {
            out.put_u8(KIND_APPEND);
            out.put_u64_le(r.term);
            out.put_u8(r.success as u8);
            out.put_u64_le(r.conflict_index);
            // Term 0 never appears in a log (the first leader has term 1), so it means "none".
            out.put_u64_le(r.conflict_term.unwrap_or(0));
        }
        Response::InstallSnapshot(r) => {
            out.put_u8(KIND_SNAPSHOT);
            out.put_u64_le(r.term);
            out.put_u64_le(r.next_offset);
            out.put_u8(r.done as u8);
        }
        Response::TimeoutNow(r) => {
            out.put_u8(KIND_TIMEOUT_NOW);
            out.put_u64_le(r.term);
        }
    }
}

/// Appends the encoding of a configuration (the body of a membership entry, and what snapshots
/// carry), [`Membership::encoded_len`] bytes.
pub fn encode_membership(membership: &Membership, out: &mut BytesMut) {
    let empty = BTreeSet::new();
    out.reserve(membership.encoded_len());
    out.put_u8(MEMBERSHIP_VERSION);
    for ids in [
        membership.voters(),
        membership.outgoing_voters().unwrap_or(&empty),
        membership.learners(),
    ] {
        out.put_u32_le(ids.len() as u32);
        for &id in ids {
            out.put_u64_le(id);
        }
    }
    out.put_u32_le(membership.all_info().len() as u32);
    for (&id, info) in membership.all_info() {
        out.put_u64_le(id);
        out.put_u32_le(info.len() as u32);
        out.put_slice(info);
    }
}

/// Decodes a configuration written by [`encode_membership`]; the whole input must be it.
pub fn decode_membership(mut input: Bytes) -> Result<Membership, DecodeError> {
    let mut r = Reader(&mut input);
    let version = r.u8("membership version")?;
    if version != MEMBERSHIP_VERSION {
        return Err(DecodeError::InvalidTag {
            field: "membership version",
            value: version,
        });
    }
    let voters = r.ids("voters")?;
    let outgoing = r.ids("outgoing voters")?;
    let learners = r.ids("learners")?;
    let count = r.u32("member information count")? as usize;
    if count > r.0.remaining() / 12 {
        return Err(DecodeError::Invalid(
            "member information count exceeds its size",
        ));
    }
    let mut info = BTreeMap::new();
    let mut last = None;
    for _ in 0..count {
        let id = r.u64("member id")?;
        if last.is_some_and(|l| id <= l) {
            return Err(DecodeError::Invalid("member information out of order"));
        }
        last = Some(id);
        let len = r.u32("member information length")? as usize;
        info.insert(id, r.bytes("member information", len)?);
    }
    if input.has_remaining() {
        return Err(DecodeError::TrailingBytes(input.remaining()));
    }
    Membership::joint(voters, outgoing, learners, info)
        .map_err(|_| DecodeError::Invalid("membership breaks the rules of a configuration"))
}

/// Encodes the term, kind and data of an entry (not its index), as used in AppendEntries and by
/// storage implementations that want the same framing.
pub fn encode_entry_body(entry: &Entry, out: &mut BytesMut) {
    out.put_u64_le(entry.term);
    match &entry.payload {
        Payload::Noop => {
            out.put_u8(PAYLOAD_NOOP);
            out.put_u32_le(0);
        }
        Payload::Command(data) => {
            out.put_u8(PAYLOAD_COMMAND);
            out.put_u32_le(data.len() as u32);
            out.put_slice(data);
        }
        Payload::Config(membership) => {
            out.put_u8(PAYLOAD_CONFIG);
            out.put_u32_le(membership.encoded_len() as u32);
            encode_membership(membership, out);
        }
    }
}

/// Decodes an entry body written by [`encode_entry_body`], giving it `index`.
pub fn decode_entry_body(input: &mut Bytes, index: u64) -> Result<Entry, DecodeError> {
    let mut r = Reader(input);
    let term = r.term("entry term")?;
    let kind = r.u8("entry kind")?;
    let len = r.u32("entry length")? as usize;
    let payload = match kind {
        PAYLOAD_NOOP if len == 0 => Payload::Noop,
        PAYLOAD_NOOP => return Err(DecodeError::Invalid("no-op entry with data")),
        PAYLOAD_COMMAND => Payload::Command(r.bytes("entry data", len)?),
        PAYLOAD_CONFIG => Payload::Config(decode_membership(r.bytes("entry data", len)?)?),
        value => {
            return Err(DecodeError::InvalidTag {
                field: "entry kind",
                value,
            });
        }
    };
    if term == 0 {
        return Err(DecodeError::Invalid("entry with term 0"));
    }
    Ok(Entry {
        index,
        term,
        payload,
    })
}

/// Decodes one request; the whole input must be the request.
pub fn decode_request(mut input: Bytes) -> Result<Request, DecodeError> {
    let mut r = Reader(&mut input);
    let request = match r.u8("request kind")? {
        KIND_VOTE => VoteRequest {
            term: r.term("term")?,
            candidate_id: r.u64("candidate id")?,
            last_log_index: r.index("last log index")?,
            last_log_term: r.term("last log term")?,
            pre_vote: false,
            transfer: false,
        }
        .with_flags(r.u8("vote flags")?)?,
        KIND_APPEND => {
            let term = r.term("term")?;
            let leader_id = r.u64("leader id")?;
            let prev_log_index = r.index("prev log index")?;
            let prev_log_term = r.term("prev log term")?;
            let leader_commit = r.index("leader commit")?;
            let count = r.u32("entry count")? as usize;
            // Every entry takes at least 13 bytes: refuse counts the input cannot hold before
            // allocating for them.
            if count > r.0.remaining() / 13 {
                return Err(DecodeError::Invalid("entry count exceeds message size"));
            }
            let mut entries = Vec::with_capacity(count);
            for i in 0..count as u64 {
                let index = prev_log_index + i + 1; // both below 2^63: no overflow
                if index > MAX_INDEX {
                    return Err(DecodeError::OutOfRange {
                        field: "entry index",
                        value: index,
                    });
                }
                entries.push(decode_entry_body(r.0, index)?);
            }
            Request::AppendEntries(AppendEntriesRequest {
                term,
                leader_id,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            })
        }
        KIND_SNAPSHOT => {
            let term = r.term("term")?;
            let leader_id = r.u64("leader id")?;
            let last_included_index = r.index("last included index")?;
            let last_included_term = r.term("last included term")?;
            let offset = r.u64("offset")?;
            let total_len = r.u64("total length")?;
            let done = r.bool("done flag")?;
            let membership_len = r.u32("membership length")? as usize;
            let membership = decode_membership(r.bytes("membership", membership_len)?)?;
            let len = r.u32("chunk length")? as usize;
            let data = r.bytes("chunk data", len)?;
            Request::InstallSnapshot(InstallSnapshotRequest {
                term,
                leader_id,
                last_included_index,
                last_included_term,
                offset,
                total_len,
                membership,
                data,
                done,
            })
        }
        KIND_TIMEOUT_NOW => Request::TimeoutNow(TimeoutNowRequest {
            term: r.term("term")?,
            leader_id: r.u64("leader id")?,
        }),
        value => {
            return Err(DecodeError::InvalidTag {
                field: "request kind",
                value,
            });
        }
    };
    if input.has_remaining() {
        return Err(DecodeError::TrailingBytes(input.remaining()));
    }
    Ok(request)
}

/// Decodes one response; the whole input must be the response.
pub fn decode_response(mut input: Bytes) -> Result<Response, DecodeError> {
    let mut r = Reader(&mut input);
    let response = match r.u8("response kind")? {
        KIND_VOTE => Response::Vote(VoteResponse {
            term: r.term("term")?,
            vote_granted: r.bool("vote granted flag")?,
        }),
        KIND_APPEND => Response::AppendEntries(AppendEntriesResponse {
            term: r.term("term")?,
            success: r.bool("success flag")?,
            conflict_index: r.index("conflict index")?,
            conflict_term: Some(r.term("conflict term")?).filter(|t| *t != 0),
        }),
        KIND_SNAPSHOT => Response::InstallSnapshot(InstallSnapshotResponse {
            term: r.term("term")?,
            next_offset: r.u64("next offset")?,
            done: r.bool("done flag")?,
        }),
        KIND_TIMEOUT_NOW => Response::TimeoutNow(TimeoutNowResponse {
            term: r.term("term")?,
        }),
        value => {
            return Err(DecodeError::InvalidTag {
                field: "response kind",
                value,
            });
        }
    };
    if input.has_remaining() {
        return Err(DecodeError::TrailingBytes(input.remaining()));
    }
    Ok(response)
}

impl VoteRequest {
    /// Sets the flags a vote request's flag byte carries; other bits are an error.
    fn with_flags(self, flags: u8) -> Result<Request, DecodeError> {
        if flags & !(VOTE_PRE_VOTE | VOTE_TRANSFER) != 0 {
            return Err(DecodeError::InvalidTag {
                field: "vote flags",
                value: flags,
            });
        }
        Ok(Request::Vote(VoteRequest {
            pre_vote: flags & VOTE_PRE_VOTE != 0,
            transfer: flags & VOTE_TRANSFER != 0,
            ..self
        }))
    }
}

/// Bounds-checked reads over a `Bytes` (the `Buf` getters panic when short).
struct Reader<'a>(&'a mut Bytes);

impl Reader<'_> {
    fn need(&self, field: &'static str, len: usize) -> Result<(), DecodeError> {
        let have = self.0.remaining();
        if have < len {
            return Err(DecodeError::Truncated {
                field,
                needed: len - have,
            });
        }
        Ok(())
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(field, 1)?;
        Ok(self.0.get_u8())
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidTag { field, value }),
        }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(field, 4)?;
        Ok(self.0.get_u32_le())
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(field, 8)?;
        Ok(self.0.get_u64_le())
    }

    fn term(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.bounded(field, MAX_TERM)
    }

    fn index(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.bounded(field, MAX_INDEX)
    }

    fn bounded(&mut self, field: &'static str, max: u64) -> Result<u64, DecodeError> {
        let value = self.u64(field)?;
        if value > max {
            return Err(DecodeError::OutOfRange { field, value });
        }
        Ok(value)
    }

    fn bytes(&mut self, field: &'static str, len: usize) -> Result<Bytes, DecodeError> {
        self.need(field, len)?;
        Ok(self.0.split_to(len))
    }

    /// A count and that many strictly increasing node ids.
    fn ids(&mut self, field: &'static str) -> Result<BTreeSet<NodeId>, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > self.0.remaining() / 8 {
            return Err(DecodeError::Invalid("id count exceeds its size"));
        }
        let mut ids = BTreeSet::new();
        for _ in 0..count {
            let id = self.u64(field)?;
            if ids.last().is_some_and(|&last| id <= last) {
                return Err(DecodeError::Invalid("member ids out of order"));
            }
            ids.insert(id);
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(request: Request) {
        let mut buf = BytesMut::new();
        encode_request(&request, &mut buf);
        assert_eq!(decode_request(buf.freeze()).unwrap(), request);
    }

    fn sample_append() -> Request {
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
            ],
            leader_commit: 39,
        })
    }

    #[test]
    fn every_request_kind_round_trips() {
        round_trip_request(Request::Vote(VoteRequest {
            term: 3,
            candidate_id: 1,
            last_log_index: 10,
            last_log_term: 2,
            pre_vote: true,
            transfer: false,
        }));
        round_trip_request(sample_append());
        round_trip_request(Request::InstallSnapshot(InstallSnapshotRequest {
            term: 4,
            leader_id: 3,
            last_included_index: 100,
            last_included_term: 4,
            offset: 4096,
            total_len: 10_000,
            membership: Membership::with_voters([1, 2, 3]),
            data: Bytes::from(vec![9u8; 1000]),
            done: false,
        }));
    }

    #[test]
    fn every_response_kind_round_trips() {
        for response in [
            Response::Vote(VoteResponse {
                term: 5,
                vote_granted: true,
            }),
            Response::AppendEntries(AppendEntriesResponse {
                term: 5,
                success: false,
                conflict_index: 17,
                conflict_term: Some(3),
            }),
            Response::AppendEntries(AppendEntriesResponse {
                term: 5,
                success: false,
                conflict_index: 17,
                conflict_term: None,
            }),
            Response::InstallSnapshot(InstallSnapshotResponse {
                term: 5,
                next_offset: 8192,
                done: false,
            }),
        ] {
            let mut buf = BytesMut::new();
            encode_response(&response, &mut buf);
            assert_eq!(decode_response(buf.freeze()).unwrap(), response);
        }
    }

    #[test]
    fn every_truncation_of_a_request_is_an_error_not_a_panic() {
        let mut buf = BytesMut::new();
        encode_request(&sample_append(), &mut buf);
        let full = buf.freeze();
        for len in 0..full.len() {
            assert!(decode_request(full.slice(..len)).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn a_huge_entry_count_is_refused_before_allocating() {
        let mut buf = BytesMut::new();
        buf.put_u8(KIND_APPEND);
        for _ in 0..5 {
            buf.put_u64_le(1);
        }
        buf.put_u32_le(u32::MAX);
        assert_eq!(
            decode_request(buf.freeze()),
            Err(DecodeError::Invalid("entry count exceeds message size"))
        );
    }

    /// A peer that sends a term of `u64::MAX` would make the next election's `term + 1`
    /// overflow: wedging the cluster for good, since the term is persisted and spreads.
    #[test]
    fn terms_and_indexes_past_2_pow_63_are_refused() {
        let too_big = MAX_TERM + 1;
        let vote = |term, last_log_index, last_log_term| {
            Request::Vote(VoteRequest {
                term,
                candidate_id: 1,
                last_log_index,
                last_log_term,
                pre_vote: false,
                transfer: false,
            })
        };
        let append = |edit: &dyn Fn(&mut AppendEntriesRequest)| {
            let Request::AppendEntries(mut r) = sample_append() else {
                unreachable!()
            };
            edit(&mut r);
            Request::AppendEntries(r)
        };
        let snapshot = |term, last_included_index| {
            Request::InstallSnapshot(InstallSnapshotRequest {
                term,
                leader_id: 3,
                last_included_index,
                last_included_term: 1,
                offset: 0,
                total_len: 1,
                membership: Membership::with_voters([1]),
                data: Bytes::from_static(b"x"),
                done: true,
            })
        };
        let requests = [
            ("term", vote(u64::MAX, 1, 1)),
            ("last log index", vote(1, too_big, 1)),
            ("last log term", vote(1, 1, too_big)),
            ("term", append(&|r| r.term = too_big)),
            ("prev log term", append(&|r| r.prev_log_term = too_big)),
            ("leader commit", append(&|r| r.leader_commit = u64::MAX)),
            ("entry term", append(&|r| r.entries[1].term = u64::MAX)),
            (
                "entry index",
                append(&|r| {
                    r.prev_log_index = MAX_INDEX - 1;
                    for (i, e) in r.entries.iter_mut().enumerate() {
                        e.index = MAX_INDEX + i as u64;
                    }
                }),
            ),
            ("term", snapshot(too_big, 1)),
            ("last included index", snapshot(1, u64::MAX)),
        ];
        for (field, request) in requests {
            let mut buf = BytesMut::new();
            encode_request(&request, &mut buf);
            let decoded = decode_request(buf.freeze());
            assert!(
                matches!(decoded, Err(DecodeError::OutOfRange { field: f, .. }) if f == field),
                "{field}: {decoded:?}"
            );
        }
        let mut buf = BytesMut::new();
        encode_response(
            &Response::Vote(VoteResponse {
                term: u64::MAX,
                vote_granted: false,
            }),
            &mut buf,
        );
        assert!(matches!(
            decode_response(buf.freeze()),
            Err(DecodeError::OutOfRange { field: "term", .. })
        ));
        // The largest values allowed still round-trip.
        round_trip_request(vote(MAX_TERM, MAX_INDEX, MAX_TERM));
    }

    #[test]
    fn trailing_bytes_and_bad_tags_are_errors() {
        let mut buf = BytesMut::new();
        encode_request(&sample_append(), &mut buf);
        buf.put_u8(0);
        assert_eq!(
            decode_request(buf.freeze()),
            Err(DecodeError::TrailingBytes(1))
        );
        assert!(matches!(
            decode_request(Bytes::from_static(&[9])),
            Err(DecodeError::InvalidTag { .. })
        ));
    }
}
