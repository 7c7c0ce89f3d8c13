//! The commands the KV service puts in the Raft log, and their binary encoding.
//!
//! ```text
//! command = version:u8 op:u8 client_id:u64 seq:u64 time_ms:u64
//!           [max_value_bytes:u64]                      (versions 2 and 3)
//!           [owner:u64]                                (version 3)
//!           key_len:u32 key
//!           [value_len:u32 value]                      (put, append, cas)
//!           [has_expected:u8 [expected_len:u32 expected]] (cas)
//! ```
//!
//! `time_ms` is the proposing leader's wall clock. The state machine uses it (never its own
//! clock) to expire idle client sessions, so every replica expires the same sessions at the
//! same log position. Likewise `max_value_bytes` is the proposing leader's value limit: the
//! state machine refuses an append that would make a value longer than it, so every replica
//! refuses the same appends whatever limits the nodes were started with.
//!
//! `owner` names the authenticated client that sent the write (see [`Command::owner`]): its
//! session belongs to that client alone.
//!
//! Version 1 commands, written before the limit was carried, have no `max_value_bytes`; existing
//! logs may still hold them, so they stay decodable. New commands are version 2, or version 3
//! when they have an owner (so a cluster without authentication writes nothing an older build
//! cannot read, and can be upgraded one node at a time).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Commands without a value limit, as written before it was carried.
const VERSION_UNLIMITED: u8 = 1;
/// Commands carrying the proposing leader's value limit.
const VERSION_LIMITED: u8 = 2;
/// Commands carrying the value limit and the owner of their session.
const VERSION_OWNED: u8 = 3;

/// Longest key or value a command or a snapshot can hold: both encode lengths as `u32`.
pub const MAX_FIELD_BYTES: usize = u32::MAX as usize;

const OP_PUT: u8 = 1;
const OP_APPEND: u8 = 2;
const OP_DELETE: u8 = 3;
const OP_CAS: u8 = 4;

/// A write to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Append `value` to the current value of `key` (an absent key counts as empty).
    Append {
        /// The key.
        key: Bytes,
        /// The suffix.
        value: Bytes,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Set `key` to `value` only if its current value equals `expected` (`None`: only if the key
    /// is absent).
    Cas {
        /// The key.
        key: Bytes,
        /// The value the key must hold, or `None` for "absent".
        expected: Option<Bytes>,
        /// The new value.
        value: Bytes,
    },
}

impl Write {
    /// The key written.
    pub fn key(&self) -> &Bytes {
        match self {
            Write::Put { key, .. }
            | Write::Append { key, .. }
            | Write::Delete { key }
            | Write::Cas { key, .. } => key,
        }
    }

    /// The largest value-like field (value or expected), for size limits.
    pub fn value_len(&self) -> usize {
        match self {
            Write::Put { value, .. } | Write::Append { value, .. } => value.len(),
            Write::Delete { .. } => 0,
            Write::Cas {
                expected, value, ..
            } => value.len().max(expected.as_ref().map_or(0, Bytes::len)),
        }
    }
}

/// A write with the session that makes it exactly-once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Who sent the write, as authenticated by the node that took it (a hash of the client's
    /// name); 0 for an anonymous client. Sessions are kept per owner and client id, so an
    /// authenticated client can neither replay nor block another's sequence numbers, and each
    /// owner's sessions are capped apart from everyone else's.
    pub owner: u64,
    /// The client's id; 0 means no session (the write is not deduplicated).
    pub client_id: u64,
    /// The client's sequence number for this request, increasing by one per new request.
    pub seq: u64,
    /// The proposing leader's wall clock, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The proposing leader's value limit: an append that would make the value longer is
    /// refused by the state machine (a put's or compare-and-set's value is checked against the
    /// same limit by the service before it proposes). `None` only for a version 1 command,
    /// proposed before the limit was carried, which is encoded again in that layout.
    pub max_value_bytes: Option<u64>,
    /// The write.
    pub write: Write,
}

/// A log entry that is not a valid command (it never is, unless something other than this
/// service proposed it). The state machine skips it, on every replica alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid command: {0}")]
pub struct InvalidCommand(pub &'static str);

impl InvalidCommand {
    /// A command of a version this build does not know: a newer build proposed it. Unlike a
    /// malformed command, it must not be skipped: the newer replicas apply it, so a replica
    /// that skipped it would silently hold different data. The service stops instead.
    pub const NEWER_VERSION: InvalidCommand =
        InvalidCommand("a command version this build does not know (from a newer keel?)");

    /// True if the command came from a newer build (see [`InvalidCommand::NEWER_VERSION`]).
    pub fn is_newer_version(&self) -> bool {
        *self == InvalidCommand::NEWER_VERSION
    }
}

impl Command {
    /// Encodes the command for the log.
    ///
    /// # Panics
    ///
    /// If the key or a value is longer than [`MAX_FIELD_BYTES`]. [`crate::KvService`] never
    /// proposes such a write: it keeps its key and value limits within that.
    pub fn encode(&self) -> Bytes {
        let key = self.write.key();
        let mut out = BytesMut::with_capacity(47 + key.len() + self.write.value_len() * 2);
        let op = match &self.write {
            Write::Put { .. } => OP_PUT,
            Write::Append { .. } => OP_APPEND,
            Write::Delete { .. } => OP_DELETE,
            Write::Cas { .. } => OP_CAS,
        };
        assert!(
            self.owner == 0 || self.max_value_bytes.is_some(),
            "a command with an owner carries a value limit (version 3)"
        );
        out.put_u8(match self.max_value_bytes {
            None => VERSION_UNLIMITED,
            Some(_) if self.owner != 0 => VERSION_OWNED,
            Some(_) => VERSION_LIMITED,
        });
        out.put_u8(op);
        out.put_u64_le(self.client_id);
        out.put_u64_le(self.seq);
        out.put_u64_le(self.time_ms);
        if let Some(max) = self.max_value_bytes {
            out.put_u64_le(max);
        }
        if self.owner != 0 {
            out.put_u64_le(self.owner);
        }
        put_bytes(&mut out, key);
        match &self.write {
            Write::Put { value, .. } | Write::Append { value, .. } => put_bytes(&mut out, value),
            Write::Delete { .. } => {}
            Write::Cas {
                expected, value, ..
            } => {
                put_bytes(&mut out, value);
                match expected {
                    None => out.put_u8(0),
                    Some(expected) => {
                        out.put_u8(1);
                        put_bytes(&mut out, expected);
                    }
                }
            }
        }
        out.freeze()
    }

    /// Decodes a command; key and values are slices of `input`.
    pub fn decode(mut input: Bytes) -> Result<Command, InvalidCommand> {
        let input = &mut input;
        if !input.has_remaining() {
            return Err(InvalidCommand("too short"));
        }
        let (limited, owned) = match input.get_u8() {
            VERSION_UNLIMITED => (false, false),
            VERSION_LIMITED => (true, false),
            VERSION_OWNED => (true, true),
            _ => return Err(InvalidCommand::NEWER_VERSION),
        };
        // op, client_id, seq, time_ms, then max_value_bytes (versions 2, 3) and owner (3).
        let header = 25 + if limited { 8 } else { 0 } + if owned { 8 } else { 0 };
        if input.remaining() < header {
            return Err(InvalidCommand("too short"));
        }
        let op = input.get_u8();
        let client_id = input.get_u64_le();
        let seq = input.get_u64_le();
        let time_ms = input.get_u64_le();
        let max_value_bytes = limited.then(|| input.get_u64_le());
        let owner = if owned { input.get_u64_le() } else { 0 };
        if owned && owner == 0 {
            return Err(InvalidCommand("a version 3 command names no owner"));
        }
        let key = get_bytes(input)?;
        let write = match op {
            OP_PUT => Write::Put {
                key,
                value: get_bytes(input)?,
            },
            OP_APPEND => Write::Append {
                key,
                value: get_bytes(input)?,
            },
            OP_DELETE => Write::Delete { key },
            OP_CAS => {
                let value = get_bytes(input)?;
                let expected = match input.has_remaining().then(|| input.get_u8()) {
                    Some(0) => None,
                    Some(1) => Some(get_bytes(input)?),
                    _ => return Err(InvalidCommand("bad expected flag")),
                };
                Write::Cas {
                    key,
                    expected,
                    value,
                }
            }
            _ => return Err(InvalidCommand("unknown operation")),
        };
        if input.has_remaining() {
            return Err(InvalidCommand("trailing bytes"));
        }
        Ok(Command {
            owner,
            client_id,
            seq,
            time_ms,
            max_value_bytes,
            write,
        })
    }
}

/// Writes `bytes` after its length.
///
/// # Panics
///
/// If `bytes` is longer than [`MAX_FIELD_BYTES`]: callers keep every key and value within it,
/// and a truncated length would write bytes that do not decode.
pub(crate) fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    let Ok(len) = u32::try_from(bytes.len()) else {
        panic!(
            "a field of {} bytes is longer than the {MAX_FIELD_BYTES} an encoding holds",
            bytes.len()
        );
    };
    out.put_u32_le(len);
    out.put_slice(bytes);
}

pub(crate) fn get_bytes(input: &mut Bytes) -> Result<Bytes, InvalidCommand> {
    if input.remaining() < 4 {
        return Err(InvalidCommand("truncated length"));
    }
    let len = input.get_u32_le() as usize;
    if input.remaining() < len {
        return Err(InvalidCommand("truncated bytes"));
    }
    Ok(input.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_round_trips_and_every_truncation_is_refused() {
        let writes = [
            Write::Put {
                key: Bytes::from("k"),
                value: Bytes::from("v"),
            },
            Write::Append {
                key: Bytes::from("k"),
                value: Bytes::from("suffix"),
            },
            Write::Delete {
                key: Bytes::from("k"),
            },
            Write::Cas {
                key: Bytes::from("k"),
                expected: None,
                value: Bytes::from("new"),
            },
            Write::Cas {
                key: Bytes::from("k"),
                expected: Some(Bytes::new()),
                value: Bytes::from("new"),
            },
        ];
        for write in writes {
            for (owner, max_value_bytes) in [(0, None), (0, Some(1 << 20)), (42, Some(1 << 20))] {
                let command = Command {
                    owner,
                    client_id: 7,
                    seq: 3,
                    time_ms: 1_700_000_000_000,
                    max_value_bytes,
                    write: write.clone(),
                };
                let bytes = command.encode();
                assert_eq!(Command::decode(bytes.clone()), Ok(command));
                for len in 0..bytes.len() {
                    assert!(Command::decode(bytes.slice(..len)).is_err(), "prefix {len}");
                }
            }
        }
    }

    /// Logs written before commands carried a value limit hold version 1 commands: they
    /// decode, without a limit.
    #[test]
    fn a_version_1_command_still_decodes_without_a_limit() {
        let mut v1 = vec![1, OP_APPEND];
        v1.extend_from_slice(&7u64.to_le_bytes()); // client_id
        v1.extend_from_slice(&3u64.to_le_bytes()); // seq
        v1.extend_from_slice(&1_000u64.to_le_bytes()); // time_ms
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(b"k");
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.extend_from_slice(b"xy");
        let command = Command {
            owner: 0,
            client_id: 7,
            seq: 3,
            time_ms: 1_000,
            max_value_bytes: None,
            write: Write::Append {
                key: Bytes::from("k"),
                value: Bytes::from("xy"),
            },
        };
        assert_eq!(
            Command::decode(Bytes::from(v1.clone())),
            Ok(command.clone())
        );
        assert_eq!(command.encode(), v1, "version 1 is encoded again as it was");
    }
}
