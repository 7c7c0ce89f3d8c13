//! The commands the KV service puts in the Raft log, and their binary encoding.
//!
//! ```text
//! command = version:u8 op:u8 client_id:u64 seq:u64 time_ms:u64 key_len:u32 key
//!           [value_len:u32 value]                      (put, append, cas)
//!           [has_expected:u8 [expected_len:u32 expected]] (cas)
//! ```
//!
//! `time_ms` is the proposing leader's wall clock. The state machine uses it (never its own
//! clock) to expire idle client sessions, so every replica expires the same sessions at the
//! same log position.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;

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
    /// The client's id; 0 means no session (the write is not deduplicated).
    pub client_id: u64,
    /// The client's sequence number for this request, increasing by one per new request.
    pub seq: u64,
    /// The proposing leader's wall clock, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The write.
    pub write: Write,
}

/// A log entry that is not a valid command (it never is, unless something other than this
/// service proposed it). The state machine skips it, on every replica alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid command: {0}")]
pub struct InvalidCommand(pub &'static str);

impl Command {
    /// Encodes the command for the log.
    pub fn encode(&self) -> Bytes {
        let key = self.write.key();
        let mut out = BytesMut::with_capacity(39 + key.len() + self.write.value_len() * 2);
        let op = match &self.write {
            Write::Put { .. } => OP_PUT,
            Write::Append { .. } => OP_APPEND,
            Write::Delete { .. } => OP_DELETE,
            Write::Cas { .. } => OP_CAS,
        };
        out.put_u8(VERSION);
        out.put_u8(op);
        out.put_u64_le(self.client_id);
        out.put_u64_le(self.seq);
        out.put_u64_le(self.time_ms);
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
        if input.remaining() < 26 {
            return Err(InvalidCommand("too short"));
        }
        if input.get_u8() != VERSION {
            return Err(InvalidCommand("unknown version"));
        }
        let op = input.get_u8();
        let client_id = input.get_u64_le();
        let seq = input.get_u64_le();
        let time_ms = input.get_u64_le();
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
            client_id,
            seq,
            time_ms,
            write,
        })
    }
}

pub(crate) fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32_le(bytes.len() as u32);
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
            let command = Command {
                client_id: 7,
                seq: 3,
                time_ms: 1_700_000_000_000,
                write,
            };
            let bytes = command.encode();
            assert_eq!(Command::decode(bytes.clone()), Ok(command));
            for len in 0..bytes.len() {
                assert!(Command::decode(bytes.slice(..len)).is_err(), "prefix {len}");
            }
        }
    }
}
