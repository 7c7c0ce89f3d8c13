//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz run kv`) and for the corpus-replay
//! test (`tests/fuzz_corpus.rs`), which feeds them every committed corpus input.
//! Not part of the API: each function takes arbitrary bytes and panics only on a bug.

use bytes::Bytes;

use crate::command::{Command, Write};
use crate::state::{KvState, SessionPolicy};

/// A small policy, so that a few commands reach the session limit.
const POLICY: SessionPolicy = SessionPolicy {
    ttl_ms: 5_000,
    max_sessions: 3,
    max_sessions_per_owner: 2,
};

/// Most commands applied per input.
const MAX_COMMANDS: usize = 64;

/// Decodes the input as a command ([`Command::decode`]) and as a snapshot ([`KvState::decode`]);
/// whatever decodes must encode to bytes that decode to an equal value.
///
/// Then reads the input as `snapshot_len:u16 snapshot (cmd_len:u16 command)*`: if the snapshot
/// decodes, applies the commands to it in order (each at the next index), as a replica restored
/// from that snapshot would, and checks that the state still encodes and decodes to itself.
pub fn kv(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    if let Ok(command) = Command::decode(input.clone()) {
        let encoded = command.encode();
        assert_eq!(
            Command::decode(encoded.clone()),
            Ok(command.clone()),
            "a command changed in a round trip"
        );
        assert_eq!(command.encode(), encoded, "encoding is not deterministic");
        check_write(&command.write);
    }
    if let Ok(state) = KvState::decode(input.clone(), POLICY) {
        round_trip(&state);
    }

    let mut parts = Parts(input);
    let Some(snapshot) = parts.next() else {
        return;
    };
    let Ok(mut state) = KvState::decode(snapshot, POLICY) else {
        return;
    };
    // A snapshot may hold more sessions than this policy allows (taken under another one);
    // from one within it, applying commands must stay within it.
    let bounded = state.session_count() <= POLICY.max_sessions;
    for payload in parts.take(MAX_COMMANDS) {
        let Some(index) = state.applied_index().checked_add(1) else {
            break;
        };
        if payload.is_empty() {
            state.apply_noop(index);
        } else {
            state.apply(index, &payload);
        }
        assert_eq!(state.applied_index(), index);
        assert!(
            !bounded || state.session_count() <= POLICY.max_sessions,
            "more sessions than the policy allows"
        );
    }
    round_trip(&state);
}

fn round_trip(state: &KvState) {
    let encoded = state.encode();
    let again = KvState::decode(encoded.clone(), POLICY).expect("an encoded state decodes");
    assert_eq!(&again, state, "a state changed in a round trip");
    assert_eq!(again.encode(), encoded, "encoding is not deterministic");
}

fn check_write(write: &Write) {
    let value_len = match write {
        Write::Put { value, .. } | Write::Append { value, .. } => value.len(),
        Write::Delete { .. } => 0,
        Write::Cas {
            expected, value, ..
        } => value.len().max(expected.as_ref().map_or(0, Bytes::len)),
    };
    assert_eq!(write.value_len(), value_len);
}

/// `len:u16` and that many bytes, until the input runs out.
struct Parts(Bytes);

impl Iterator for Parts {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.0.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([self.0[0], self.0[1]]));
        let len = len.min(self.0.len() - 2);
        let part = self.0.slice(2..2 + len);
        self.0 = self.0.slice(2 + len..);
        Some(part)
    }
}

/// Valid inputs for [`kv`], for seeding the fuzzer's corpus: commands of every kind and both
/// versions, snapshots of both versions, and a snapshot followed by commands. Each is
/// (name, input).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let key = || Bytes::from_static(b"k");
    let writes = [
        Write::Put {
            key: key(),
            value: Bytes::from_static(b"v"),
        },
        Write::Append {
            key: key(),
            value: Bytes::from_static(b"suffix"),
        },
        Write::Delete { key: key() },
        Write::Cas {
            key: key(),
            expected: None,
            value: Bytes::from_static(b"new"),
        },
        Write::Cas {
            key: key(),
            expected: Some(Bytes::from_static(b"v")),
            value: Bytes::from_static(b"newer"),
        },
    ];
    let mut seeds = Vec::new();
    let mut commands = Vec::new();
    for (i, write) in writes.iter().enumerate() {
        for (version, owner, max_value_bytes) in [(1, 0, None), (2, 0, Some(10)), (3, 5, Some(10))]
        {
            let command = Command {
                owner,
                client_id: 1 + i as u64 % 4,
                seq: 1 + i as u64,
                time_ms: 1_000 * i as u64,
                max_value_bytes,
                write: write.clone(),
            }
            .encode();
            seeds.push((format!("command_{i}_v{version}"), command.to_vec()));
            commands.push(command);
        }
    }

    let mut state = KvState::new(POLICY);
    for (i, command) in commands.iter().enumerate() {
        state.apply(i as u64 + 1, command);
    }
    state.apply_noop(commands.len() as u64 + 1);
    let snapshot = state.encode();
    seeds.push(("snapshot_v2".into(), snapshot.to_vec()));
    let mut old = KvState::new(POLICY);
    old.apply(1, &commands[0]);
    old.apply(2, &commands[3]);
    let mut v1 = old.encode().to_vec();
    v1[0] = 1;
    seeds.push(("snapshot_v1".into(), v1));

    let mut replay = Vec::new();
    replay.extend_from_slice(&(snapshot.len() as u16).to_le_bytes());
    replay.extend_from_slice(&snapshot);
    for command in commands.iter().rev() {
        replay.extend_from_slice(&(command.len() as u16).to_le_bytes());
        replay.extend_from_slice(command);
    }
    replay.extend_from_slice(&0u16.to_le_bytes());
    seeds.push(("snapshot_then_commands".into(), replay));
    seeds
}
