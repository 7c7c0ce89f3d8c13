//! The replicated state machine: the key-value map and the client sessions that make writes
//! exactly-once. Every replica applies the same commands in the same order and ends in the same
//! state; nothing here reads a clock, a configured limit or anything else local.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::command::{Command, InvalidCommand, MAX_FIELD_BYTES, Write, get_bytes, put_bytes};

/// Version byte of the snapshot encoding. Version 2 can record a refused append as a session's
/// reply; version 1, written before appends could be refused, is still read. Version 3 adds
/// each session's owner, and is written only when some session has one (so a cluster without
/// authentication writes nothing an older build cannot read).
const SNAPSHOT_VERSION: u8 = 2;
const SNAPSHOT_VERSION_WITHOUT_REFUSALS: u8 = 1;
const SNAPSHOT_VERSION_WITH_OWNERS: u8 = 3;

/// How a session's reply is tagged in a snapshot: a write that did not succeed (a
/// compare-and-set that found another value), one that did, or a refused append.
const REPLY_FAILED: u8 = 0;
const REPLY_SUCCEEDED: u8 = 1;
const REPLY_TOO_LARGE: u8 = 2;

/// Sessions are checked for expiry once per this many applied commands.
const EXPIRY_CHECK_EVERY: u64 = 1024;

/// The most one command moves the log's clock forward. The clock is the leaders' wall clocks
/// as their commands carry them; a leader whose clock is far ahead would otherwise expire every
/// idle session with its first command. Bounded, the log's clock trails real time after an
/// idle spell and catches up a second per command, so a session lives at least its TTL by any
/// correct clock; the session count stays bounded by `max_sessions` either way. (The first
/// command of a new store sets the clock wherever its time says.)
pub const MAX_CLOCK_STEP_MS: u64 = 1_000;

/// The result of a write, as the client sees it (and sees again if it retries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// Log index at which the write was applied.
    pub index: u64,
    /// For a compare-and-set, whether it set the value; true for every other write.
    pub succeeded: bool,
}

/// An append the state machine refused, leaving the store unchanged: it would have made the
/// value longer than the limit its command carries. A retry is answered with the same refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    /// Log index at which the append was refused.
    pub index: u64,
    /// Length the value would have had.
    pub size: u64,
    /// The limit it was held to.
    pub max: u64,
}

/// What the state machine answered a client's write: kept per session, for its retries.
type Reply = Result<WriteResult, TooLarge>;

/// What applying one log entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A no-op entry: nothing to answer.
    Noop,
    /// The write was applied now, or earlier (a retry), with this result.
    Written(WriteResult),
    /// The write was refused now, or earlier (a retry): nothing changed.
    TooLarge(TooLarge),
    /// The client already sent a newer request; this one is not applied.
    Stale {
        /// The newest sequence number applied for this client.
        last_seq: u64,
    },
    /// The entry is not a valid command; it is skipped on every replica.
    Invalid(InvalidCommand),
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        match reply {
            Ok(result) => Outcome::Written(result),
            Err(refused) => Outcome::TooLarge(refused),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    last_seq: u64,
    reply: Reply,
    last_seen_ms: u64,
}

/// Limits that every replica must share, since they decide which sessions the state keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session idle for longer than this (by the leaders' clocks recorded in the log) is
    /// forgotten; a retry after that may apply a write twice.
    pub ttl_ms: u64,
    /// Most sessions kept; beyond it the least recently seen are forgotten first.
    pub max_sessions: usize,
    /// Most sessions kept for one authenticated client (one owner, see [`Command::owner`]);
    /// beyond it that client's own least recently seen are forgotten first, so one client
    /// opening sessions without end evicts only its own. Anonymous clients share
    /// `max_sessions` alone.
    pub max_sessions_per_owner: usize,
}

/// A session's key: its owner (0 for anonymous clients) and the client id.
type SessionId = (u64, u64);

/// Client sessions by owner and id, indexed by when they were last seen, so that expiry and
/// eviction find the oldest without scanning them all (with 100,000 sessions kept, a scan per
/// new client made every write of a new client cost about as much as a thousand others); and
/// the same index per owner, for each owner's own cap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sessions {
    by_id: BTreeMap<SessionId, Session>,
    /// `(last_seen_ms, id)` of every session: oldest first, ties broken by id.
    by_age: BTreeSet<(u64, SessionId)>,
    /// `(owner, last_seen_ms, client_id)` of every owned session (owner not 0): each owner's
    /// oldest first.
    by_owner_age: BTreeSet<(u64, u64, u64)>,
    /// How many sessions each owner (not 0) has.
    per_owner: BTreeMap<u64, usize>,
}

impl Sessions {
    fn len(&self) -> usize {
        self.by_id.len()
    }

    /// How many sessions `owner` has.
    fn owned_by(&self, owner: u64) -> usize {
        self.per_owner.get(&owner).copied().unwrap_or(0)
    }

    fn index(&mut self, seen: u64, id: SessionId) {
        self.by_age.insert((seen, id));
        if id.0 != 0 {
            self.by_owner_age.insert((id.0, seen, id.1));
        }
    }

    fn unindex(&mut self, seen: u64, id: SessionId) {
        self.by_age.remove(&(seen, id));
        if id.0 != 0 {
            self.by_owner_age.remove(&(id.0, seen, id.1));
        }
    }

    /// Marks session `id` seen at `now` and returns it, if it exists.
    fn see(&mut self, id: SessionId, now: u64) -> Option<&Session> {
        let session = self.by_id.get_mut(&id)?;
        let seen = session.last_seen_ms;
        if seen != now {
            session.last_seen_ms = now;
            // The fields apart, as `index` and `unindex` do: `session` borrows `by_id`.
            self.by_age.remove(&(seen, id));
            self.by_age.insert((now, id));
            if id.0 != 0 {
                self.by_owner_age.remove(&(id.0, seen, id.1));
                self.by_owner_age.insert((id.0, now, id.1));
            }
        }
        Some(session)
    }

    /// Records `session` for `id`, replacing what was there. The age index changes only if the
    /// time it was seen did: a session just marked by `see` keeps its entry.
    fn insert(&mut self, id: SessionId, session: Session) {
        let seen = session.last_seen_ms;
        match self.by_id.insert(id, session) {
            Some(old) if old.last_seen_ms == seen => {}
            Some(old) => {
                self.unindex(old.last_seen_ms, id);
                self.index(seen, id);
            }
            None => {
                self.index(seen, id);
                if id.0 != 0 {
                    *self.per_owner.entry(id.0).or_default() += 1;
                }
            }
        }
    }

    fn remove(&mut self, id: SessionId) {
        let Some(session) = self.by_id.remove(&id) else {
            return;
        };
        self.unindex(session.last_seen_ms, id);
        if id.0 != 0 {
            let count = self
                .per_owner
                .get_mut(&id.0)
                .expect("an owned session is counted");
            *count -= 1;
            if *count == 0 {
                self.per_owner.remove(&id.0);
            }
        }
    }

    /// Forgets the least recently seen session (the lowest id among equals) other than
    /// `keep`: the session just written must survive, or its client's retry would apply the
    /// write again.
    fn evict_oldest_except(&mut self, keep: SessionId) {
        let oldest = self.by_age.iter().find(|(_, id)| *id != keep).copied();
        if let Some((_, id)) = oldest {
            self.remove(id);
        }
    }

    /// Forgets the least recently seen session of `keep`'s owner other than `keep`.
    fn evict_owners_oldest_except(&mut self, keep: SessionId) {
        let owner = keep.0;
        let oldest = self
            .by_owner_age
            .range((owner, 0, 0)..=(owner, u64::MAX, u64::MAX))
            .find(|(_, _, client)| (owner, *client) != keep)
            .copied();
        if let Some((owner, _, client)) = oldest {
            self.remove((owner, client));
        }
    }

    /// Forgets every session last seen more than `ttl_ms` before `now`.
    fn expire(&mut self, now: u64, ttl_ms: u64) {
        while let Some(&(seen, id)) = self.by_age.first() {
            if seen.saturating_add(ttl_ms) >= now {
                break;
            }
            self.remove(id);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&SessionId, &Session)> {
        self.by_id.iter()
    }

    /// Whether the indexes agree with the sessions (for tests).
    #[cfg(test)]
    fn consistent(&self) -> bool {
        let mut per_owner = BTreeMap::new();
        for ((owner, _), _) in self.iter() {
            if *owner != 0 {
                *per_owner.entry(*owner).or_insert(0) += 1;
            }
        }
        let owned = self.by_id.keys().filter(|(owner, _)| *owner != 0).count();
        self.by_age.len() == self.by_id.len()
            && self.by_owner_age.len() == owned
            && per_owner == self.per_owner
            && self
                .by_age
                .iter()
                .all(|(seen, id)| self.by_id.get(id).is_some_and(|s| s.last_seen_ms == *seen))
    }
}

/// The log's clock after a command stamped `time_ms`: never backwards, at most
/// [`MAX_CLOCK_STEP_MS`] forwards (but set outright by the first command).
fn advance_clock(log_time_ms: u64, time_ms: u64) -> u64 {
    if log_time_ms == 0 {
        return time_ms;
    }
    time_ms.clamp(log_time_ms, log_time_ms.saturating_add(MAX_CLOCK_STEP_MS))
}

/// The key-value map and the sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvState {
    data: BTreeMap<Bytes, Bytes>,
    sessions: Sessions,
    applied_index: u64,
    /// Latest leader time seen in the log: the state machine's notion of "now".
    log_time_ms: u64,
    applied_since_expiry: u64,
    policy: SessionPolicy,
}

impl KvState {
    /// An empty store.
    pub fn new(policy: SessionPolicy) -> Self {
        KvState {
            data: BTreeMap::new(),
            sessions: Sessions::default(),
            applied_index: 0,
            log_time_ms: 0,
            applied_since_expiry: 0,
            policy,
        }
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.data.get(key).cloned()
    }

    /// Up to `limit` keys that start with `prefix`, in byte order, each with the size of its
    /// value, beginning after `after` if given; and whether more keys with the prefix follow.
    pub fn list(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> (Vec<(Bytes, usize)>, bool) {
        use std::ops::Bound;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut keys = self
            .data
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix));
        let page = keys
            .by_ref()
            .take(limit)
            .map(|(key, value)| (key.clone(), value.len()))
            .collect();
        (page, keys.next().is_some())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the store has no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of client sessions kept.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Marks a no-op entry applied.
    pub fn apply_noop(&mut self, index: u64) -> Outcome {
        self.advance(index);
        Outcome::Noop
    }

    /// Applies the command at `index`.
    pub fn apply(&mut self, index: u64, payload: &Bytes) -> Outcome {
        self.advance(index);
        let command = match Command::decode(payload.clone()) {
            Ok(command) => command,
            Err(invalid) => return Outcome::Invalid(invalid),
        };
        self.log_time_ms = advance_clock(self.log_time_ms, command.time_ms);
        self.applied_since_expiry += 1;
        if self.applied_since_expiry >= EXPIRY_CHECK_EVERY {
            self.applied_since_expiry = 0;
            self.expire_sessions();
        }
        let id = (command.owner, command.client_id);
        if command.client_id != 0
            && let Some(session) = self.sessions.see(id, self.log_time_ms)
        {
            if command.seq == session.last_seq {
                return session.reply.into();
            }
            if command.seq < session.last_seq {
                return Outcome::Stale {
                    last_seq: session.last_seq,
                };
            }
        }
        let reply = self.execute(index, command.write, command.max_value_bytes);
        if command.client_id != 0 {
            self.sessions.insert(
                id,
                Session {
                    last_seq: command.seq,
                    reply,
                    last_seen_ms: self.log_time_ms,
                },
            );
            if command.owner != 0
                && self.sessions.owned_by(command.owner) > self.policy.max_sessions_per_owner
            {
                self.sessions.evict_owners_oldest_except(id);
            }
            if self.sessions.len() > self.policy.max_sessions {
                self.sessions.evict_oldest_except(id);
            }
        }
        reply.into()
    }

    /// The log's clock: the latest leader time seen, each command moving it at most
    /// [`MAX_CLOCK_STEP_MS`].
    pub fn log_time_ms(&self) -> u64 {
        self.log_time_ms
    }

    fn advance(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "entries apply in order: {index} after {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    /// Executes the write at `index`, with the value limit its command carries; keys and values
    /// are copied out of the log entry, so the map never pins a whole network frame in memory.
    fn execute(&mut self, index: u64, write: Write, max_value_bytes: Option<u64>) -> Reply {
        let succeeded = match write {
            Write::Put { key, value } => {
                self.data.insert(own(&key), own(&value));
                true
            }
            Write::Append { key, value } => {
                // The one write whose result can be longer than its command, so the service
                // cannot check it: checked here, where the value is known, against the limit in
                // the log, not this node's.
                let old = self.data.get(&key);
                let size = old.map_or(0, |old| old.len() as u64) + value.len() as u64;
                let max = append_limit(max_value_bytes);
                if size > max {
                    return Err(TooLarge { index, size, max });
                }
                let merged = match old {
                    Some(old) => {
                        let mut merged = BytesMut::with_capacity(old.len() + value.len());
                        merged.extend_from_slice(old);
                        merged.extend_from_slice(&value);
                        merged.freeze()
                    }
                    None => own(&value),
                };
                self.data.insert(own(&key), merged);
                true
            }
            Write::Delete { key } => {
                self.data.remove(&key);
                true
            }
            Write::Cas {
                key,
                expected,
                value,
            } => {
                if self.data.get(&key) == expected.as_ref() {
                    self.data.insert(own(&key), own(&value));
                    true
                } else {
                    false
                }
            }
        };
        Ok(WriteResult { index, succeeded })
    }

    fn expire_sessions(&mut self) {
        self.sessions.expire(self.log_time_ms, self.policy.ttl_ms);
    }

    /// Serializes the whole state for a Raft snapshot.
    ///
    /// Every key and value fits the encoding's `u32` lengths: each was decoded from a command,
    /// whose lengths are `u32`, or made by an append held to [`MAX_FIELD_BYTES`].
    pub fn encode(&self) -> Bytes {
        let data_bytes: usize = self.data.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = BytesMut::with_capacity(64 + data_bytes + self.sessions.len() * 65);
        let owners = !self.sessions.per_owner.is_empty();
        out.put_u8(if owners {
            SNAPSHOT_VERSION_WITH_OWNERS
        } else {
            SNAPSHOT_VERSION
        });
        out.put_u64_le(self.applied_index);
        out.put_u64_le(self.log_time_ms);
        out.put_u64_le(self.applied_since_expiry);
        out.put_u64_le(self.sessions.len() as u64);
        for ((owner, id), s) in self.sessions.iter() {
            if owners {
                out.put_u64_le(*owner);
            }
            out.put_u64_le(*id);
            out.put_u64_le(s.last_seq);
            out.put_u64_le(s.last_seen_ms);
            match s.reply {
                Ok(result) => {
                    out.put_u64_le(result.index);
                    out.put_u8(if result.succeeded {
                        REPLY_SUCCEEDED
                    } else {
                        REPLY_FAILED
                    });
                }
                Err(refused) => {
                    out.put_u64_le(refused.index);
                    out.put_u8(REPLY_TOO_LARGE);
                    out.put_u64_le(refused.size);
                    out.put_u64_le(refused.max);
                }
            }
        }
        out.put_u64_le(self.data.len() as u64);
        for (key, value) in &self.data {
            put_bytes(&mut out, key);
            put_bytes(&mut out, value);
        }
        out.freeze()
    }

    /// Restores a state serialized by [`KvState::encode`]. Keys and values are copied out of
    /// `input`, which may be a map of a snapshot file: the store lives in memory, and the
    /// snapshot is not pinned by what it held (one small value kept a whole snapshot alive).
    pub fn decode(mut input: Bytes, policy: SessionPolicy) -> Result<KvState, InvalidCommand> {
        let input = &mut input;
        let need = |input: &Bytes, n: usize| {
            if input.remaining() < n {
                Err(InvalidCommand("snapshot truncated"))
            } else {
                Ok(())
            }
        };
        need(input, 33)?;
        let (refusals, owners) = match input.get_u8() {
            SNAPSHOT_VERSION_WITH_OWNERS => (true, true),
            SNAPSHOT_VERSION => (true, false),
            SNAPSHOT_VERSION_WITHOUT_REFUSALS => (false, false),
            _ => return Err(InvalidCommand("unknown snapshot version")),
        };
        let mut state = KvState::new(policy);
        state.applied_index = input.get_u64_le();
        state.log_time_ms = input.get_u64_le();
        state.applied_since_expiry = input.get_u64_le();
        if state.applied_since_expiry >= EXPIRY_CHECK_EVERY {
            // Never written (the count restarts at the bound); adding to it would overflow.
            return Err(InvalidCommand("snapshot: expiry count out of range"));
        }
        let sessions = input.get_u64_le();
        for _ in 0..sessions {
            need(input, if owners { 41 } else { 33 })?;
            let owner = if owners { input.get_u64_le() } else { 0 };
            let id = input.get_u64_le();
            let last_seq = input.get_u64_le();
            let last_seen_ms = input.get_u64_le();
            let index = input.get_u64_le();
            let reply = match input.get_u8() {
                REPLY_FAILED => Ok(WriteResult {
                    index,
                    succeeded: false,
                }),
                REPLY_SUCCEEDED => Ok(WriteResult {
                    index,
                    succeeded: true,
                }),
                REPLY_TOO_LARGE if refusals => {
                    need(input, 16)?;
                    Err(TooLarge {
                        index,
                        size: input.get_u64_le(),
                        max: input.get_u64_le(),
                    })
                }
                _ => return Err(InvalidCommand("bad session flag")),
            };
            if state.sessions.by_id.contains_key(&(owner, id)) {
                return Err(InvalidCommand("snapshot: a session twice"));
            }
            state.sessions.insert(
                (owner, id),
                Session {
                    last_seq,
                    reply,
                    last_seen_ms,
                },
            );
        }
        need(input, 8)?;
        let keys = input.get_u64_le();
        for _ in 0..keys {
            let key = own(&get_bytes(input)?);
            let value = own(&get_bytes(input)?);
            state.data.insert(key, value);
        }
        if input.has_remaining() {
            return Err(InvalidCommand("trailing bytes in snapshot"));
        }
        Ok(state)
    }
}

/// The longest value an append may make: the limit its command carries, never more than a
/// snapshot can hold. A version 1 command carries no limit; its appends are held to that
/// ceiling alone, which no replica could pass before either without writing a snapshot that
/// does not decode.
fn append_limit(max_value_bytes: Option<u64>) -> u64 {
    let ceiling = MAX_FIELD_BYTES as u64;
    max_value_bytes.map_or(ceiling, |max| max.min(ceiling))
}

fn own(bytes: &Bytes) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: SessionPolicy = SessionPolicy {
        ttl_ms: 60_000,
        max_sessions: 3,
        max_sessions_per_owner: 2,
    };

    fn command(client_id: u64, seq: u64, time_ms: u64, write: Write) -> Bytes {
        owned(0, client_id, seq, time_ms, write)
    }

    /// A command from an authenticated client (`owner` not 0).
    fn owned(owner: u64, client_id: u64, seq: u64, time_ms: u64, write: Write) -> Bytes {
        Command {
            owner,
            client_id,
            seq,
            time_ms,
            max_value_bytes: Some(1 << 20),
            write,
        }
        .encode()
    }

    /// An append by `client_id`, proposed by a leader whose value limit was `max_value_bytes`.
    fn append(client_id: u64, seq: u64, max_value_bytes: Option<u64>, suffix: &str) -> Bytes {
        Command {
            owner: 0,
            client_id,
            seq,
            time_ms: 0,
            max_value_bytes,
            write: Write::Append {
                key: Bytes::from("k"),
                value: Bytes::from(suffix.to_string()),
            },
        }
        .encode()
    }

    fn put(key: &str, value: &str) -> Write {
        Write::Put {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.to_string()),
        }
    }

    #[test]
    fn a_retried_write_is_applied_once_and_answered_with_the_original_result() {
        let mut s = KvState::new(POLICY);
        let append = Write::Append {
            key: Bytes::from("k"),
            value: Bytes::from("x"),
        };
        let first = s.apply(1, &command(9, 1, 0, append.clone()));
        let retry = s.apply(2, &command(9, 1, 0, append.clone()));
        assert_eq!(first, retry);
        assert_eq!(
            first,
            Outcome::Written(WriteResult {
                index: 1,
                succeeded: true
            })
        );
        assert_eq!(s.get(b"k"), Some(Bytes::from("x")));
        let older = s.apply(3, &command(9, 0, 0, append));
        assert_eq!(older, Outcome::Stale { last_seq: 1 });
    }

    #[test]
    fn an_append_past_its_commands_limit_is_refused_and_so_is_its_retry() {
        let mut s = KvState::new(POLICY);
        let limit = Some(10);
        assert!(matches!(
            s.apply(1, &append(9, 1, limit, "hello")),
            Outcome::Written(_)
        ));

        let refused = Outcome::TooLarge(TooLarge {
            index: 2,
            size: 11,
            max: 10,
        });
        assert_eq!(s.apply(2, &append(9, 2, limit, "world!")), refused);
        assert_eq!(s.get(b"k"), Some(Bytes::from("hello")), "value unchanged");

        // The session records the refusal: a retry gets it again, here and on a replica
        // restored from a snapshot taken now, even once the append would fit.
        let mut restored = KvState::decode(s.encode(), POLICY).unwrap();
        assert_eq!(restored, s);
        s.apply(3, &command(8, 1, 0, put("k", "h")));
        assert_eq!(s.apply(4, &append(9, 2, limit, "world!")), refused);
        assert_eq!(s.get(b"k"), Some(Bytes::from("h")));
        assert_eq!(restored.apply(3, &append(9, 2, limit, "world!")), refused);
        assert_eq!(restored.get(b"k"), Some(Bytes::from("hello")));

        // A smaller append still works, up to the limit itself.
        assert_eq!(
            restored.apply(4, &append(9, 3, limit, "world")),
            Outcome::Written(WriteResult {
                index: 4,
                succeeded: true
            })
        );
        assert_eq!(restored.get(b"k"), Some(Bytes::from("helloworld")));
    }

    #[test]
    fn the_limit_comes_from_the_command_not_from_the_replica() {
        let mut s = KvState::new(POLICY);
        // No session: refused all the same, and an absent key stays absent.
        assert!(matches!(
            s.apply(1, &append(0, 0, Some(3), "four")),
            Outcome::TooLarge(TooLarge {
                size: 4,
                max: 3,
                ..
            })
        ));
        assert_eq!(s.get(b"k"), None);
        // Leaders with other limits proposed these: each is held to its own.
        assert!(matches!(
            s.apply(2, &append(0, 0, Some(4), "four")),
            Outcome::Written(_)
        ));
        assert!(matches!(
            s.apply(3, &append(0, 0, Some(5), "++")),
            Outcome::TooLarge(TooLarge {
                size: 6,
                max: 5,
                ..
            })
        ));
        assert!(matches!(
            s.apply(4, &append(0, 0, Some(6), "++")),
            Outcome::Written(_)
        ));
        // A version 1 command, from before limits were carried, is held only to what a
        // snapshot can encode.
        assert!(matches!(
            s.apply(5, &append(0, 0, None, "++")),
            Outcome::Written(_)
        ));
        assert_eq!(s.get(b"k"), Some(Bytes::from("four++++")));
        assert_eq!(append_limit(None), u32::MAX as u64);
        assert_eq!(append_limit(Some(u64::MAX)), u32::MAX as u64);
    }

    #[test]
    fn cas_sets_only_when_the_value_matches() {
        let mut s = KvState::new(POLICY);
        let cas = |expected: Option<&str>, value: &str| Write::Cas {
            key: Bytes::from("k"),
            expected: expected.map(|e| Bytes::from(e.to_string())),
            value: Bytes::from(value.to_string()),
        };
        let set = |o: Outcome| {
            matches!(
                o,
                Outcome::Written(WriteResult {
                    succeeded: true,
                    ..
                })
            )
        };
        assert!(set(s.apply(1, &command(0, 0, 0, cas(None, "a")))));
        assert!(!set(s.apply(2, &command(0, 0, 0, cas(None, "b")))));
        assert!(!set(s.apply(3, &command(0, 0, 0, cas(Some("x"), "b")))));
        assert!(set(s.apply(4, &command(0, 0, 0, cas(Some("a"), "b")))));
        assert_eq!(s.get(b"k"), Some(Bytes::from("b")));
    }

    #[test]
    fn sessions_expire_by_log_time_and_are_bounded() {
        let mut s = KvState::new(POLICY);
        s.apply(1, &command(1, 1, 1_000, put("a", "1")));
        // EXPIRY_CHECK_EVERY commands later, by the log's clock more than a TTL later.
        let mut index = 1;
        for i in 0..EXPIRY_CHECK_EVERY {
            index += 1;
            s.apply(
                index,
                &command(0, 0, 1_000 + (i + 1) * MAX_CLOCK_STEP_MS, put("b", "2")),
            );
        }
        assert!(s.log_time_ms() > 1_000 + POLICY.ttl_ms);
        assert_eq!(s.session_count(), 0, "idle session should have expired");
        for client in 10..20 {
            index += 1;
            s.apply(index, &command(client, 1, 3_700_000, put("c", "3")));
        }
        assert_eq!(s.session_count(), POLICY.max_sessions);
    }

    /// A leader whose clock is a year ahead moves the log's clock by a bounded step per
    /// command, so its commands do not expire every idle session at once; the clock never goes
    /// back for a leader whose clock is behind.
    #[test]
    fn a_leader_clock_far_ahead_cannot_expire_every_session_at_once() {
        let policy = SessionPolicy {
            ttl_ms: 3_600_000,
            max_sessions: 3,
            max_sessions_per_owner: 3,
        };
        let mut s = KvState::new(policy);
        s.apply(1, &command(1, 1, 1_000, put("a", "1")));
        s.apply(2, &command(2, 1, 1_500, put("a", "1")));
        let year = 365 * 24 * 3_600_000;
        let mut index = 2;
        for _ in 0..EXPIRY_CHECK_EVERY {
            index += 1;
            s.apply(index, &command(0, 0, year, put("b", "2")));
        }
        assert!(
            s.log_time_ms() <= 1_500 + EXPIRY_CHECK_EVERY * MAX_CLOCK_STEP_MS,
            "{}",
            s.log_time_ms()
        );
        let before = s.log_time_ms();
        index += 1;
        s.apply(index, &command(0, 0, 5, put("b", "2")));
        assert_eq!(s.log_time_ms(), before, "the clock went back");
        // Idle for less than the TTL by the bounded clock: both sessions are kept.
        assert!(before - 1_500 < policy.ttl_ms);
        assert_eq!(s.session_count(), 2);
    }

    /// With every session seen at the same moment, the one just written is still kept when
    /// the limit is passed: its client may retry and must get its reply back.
    #[test]
    fn the_session_just_written_is_never_the_one_evicted() {
        let mut s = KvState::new(POLICY);
        for (index, client) in [(1, 5), (2, 6), (3, 7)] {
            s.apply(index, &command(client, 1, 100, put("a", "1")));
        }
        // Client 1 has the lowest id, and the same time as everyone.
        let first = s.apply(4, &command(1, 1, 100, put("k", "v")));
        assert!(
            s.sessions.iter().any(|((_, id), _)| *id == 1),
            "evicted at once"
        );
        assert_eq!(s.session_count(), POLICY.max_sessions);
        let retry = s.apply(5, &command(1, 1, 100, put("k", "v")));
        assert_eq!(retry, first, "the retry was applied again");
    }

    #[test]
    fn the_least_recently_seen_session_is_evicted_first() {
        let mut s = KvState::new(POLICY);
        // Clients 3, 1 and 2 are seen at times 10, 20 and 20.
        s.apply(1, &command(3, 1, 10, put("a", "1")));
        s.apply(2, &command(1, 1, 20, put("a", "1")));
        s.apply(3, &command(2, 1, 20, put("a", "1")));
        // A retry from client 3 at time 30 makes it the most recently seen.
        s.apply(4, &command(3, 1, 30, put("a", "1")));
        // A fourth client: the oldest goes, and between 1 and 2 (both at 20) the lower id.
        s.apply(5, &command(4, 1, 40, put("a", "1")));
        let ids: Vec<u64> = s.sessions.iter().map(|((_, id), _)| *id).collect();
        assert_eq!(ids, vec![2, 3, 4]);
        s.apply(6, &command(5, 1, 50, put("a", "1")));
        let ids: Vec<u64> = s.sessions.iter().map(|((_, id), _)| *id).collect();
        assert_eq!(ids, vec![3, 4, 5]);
    }

    /// The session index against the obvious implementation (scan everything to expire or
    /// evict), over a long pseudo-random run of retries, stale requests, new clients of three
    /// owners (anonymous and two authenticated) and idle gaps: both keep the same sessions with
    /// the same contents after every command.
    #[test]
    fn session_bookkeeping_matches_a_scan_of_all_sessions() {
        const POLICY: SessionPolicy = SessionPolicy {
            ttl_ms: 5_000,
            max_sessions: 40,
            max_sessions_per_owner: 15,
        };
        let mut s = KvState::new(POLICY);
        // (owner, id) -> (last_seq, last_seen_ms)
        let mut model: BTreeMap<SessionId, (u64, u64)> = BTreeMap::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut time = 0;
        let mut clock = 0;
        for index in 1..=20_000u64 {
            let r = next();
            // Mostly small steps, sometimes a gap longer than the TTL (which the log's clock
            // takes a step at a time).
            time += if r % 500 == 0 { 6_000 } else { r % 7 };
            clock = if clock == 0 {
                time
            } else {
                time.clamp(clock, clock + MAX_CLOCK_STEP_MS)
            };
            let owner = [0, 0, 7, 9][((r >> 24) % 4) as usize];
            let id = (owner, 1 + (r >> 8) % 60);
            let known = model.get(&id).map_or(0, |m| m.0);
            let seq = match (r >> 16) % 4 {
                0 => known,                   // a retry
                1 => known.saturating_sub(1), // stale (or a retry of 0)
                _ => known + 1,               // the next request
            };
            s.apply(index, &owned(owner, id.1, seq, time, put("k", "v")));

            // The model: the state's rules, scanning everything.
            if index % EXPIRY_CHECK_EVERY == 0 {
                model.retain(|_, m| m.1.saturating_add(POLICY.ttl_ms) >= clock);
            }
            let applies = match model.get_mut(&id) {
                Some(m) => {
                    m.1 = clock;
                    seq > m.0
                }
                None => true,
            };
            if applies {
                model.insert(id, (seq, clock));
                let evict_oldest = |model: &mut BTreeMap<SessionId, (u64, u64)>, of_owner: bool| {
                    let oldest = *model
                        .iter()
                        .filter(|(other, _)| **other != id && (!of_owner || other.0 == owner))
                        .min_by_key(|(other, m)| (m.1, **other))
                        .unwrap()
                        .0;
                    model.remove(&oldest);
                };
                let owned = model.keys().filter(|other| other.0 == owner).count();
                if owner != 0 && owned > POLICY.max_sessions_per_owner {
                    evict_oldest(&mut model, true);
                }
                if model.len() > POLICY.max_sessions {
                    evict_oldest(&mut model, false);
                }
            }

            let kept: BTreeMap<SessionId, (u64, u64)> = s
                .sessions
                .iter()
                .map(|(id, session)| (*id, (session.last_seq, session.last_seen_ms)))
                .collect();
            assert_eq!(kept, model, "after command {index}");
            assert!(s.sessions.consistent(), "indexes after command {index}");
            for owner in [7, 9] {
                assert!(s.sessions.owned_by(owner) <= POLICY.max_sessions_per_owner);
            }
        }
        assert_eq!(KvState::decode(s.encode(), POLICY), Ok(s.clone()));
    }

    /// Sessions belong to their owner: the same client id under another owner is another
    /// session (neither can replay or block the other's sequence numbers), and one owner
    /// opening sessions past its cap evicts only its own.
    #[test]
    fn sessions_are_bound_to_their_owner_and_capped_per_owner() {
        let mut s = KvState::new(POLICY);
        let first = s.apply(1, &owned(7, 1, 5, 10, put("a", "1")));
        // Owner 9 with the same client id and a lower sequence number: not stale, its own.
        let other = s.apply(2, &owned(9, 1, 1, 10, put("b", "2")));
        assert!(matches!(other, Outcome::Written(_)), "{other:?}");
        // Owner 9 replaying owner 7's (client 1, seq 5) applies a new write of its own, and
        // does not get owner 7's reply.
        let replay = s.apply(3, &owned(9, 1, 5, 10, put("c", "3")));
        assert_ne!(replay, first);
        assert_eq!(s.get(b"c"), Some(Bytes::from("3")));
        // Owner 7's own retry still gets its reply.
        assert_eq!(s.apply(4, &owned(7, 1, 5, 10, put("a", "1"))), first);

        // Owner 9 opens more sessions than its cap (2): only its own are evicted.
        for (index, client) in [(5, 2), (6, 3), (7, 4)] {
            s.apply(index, &owned(9, client, 1, 20, put("d", "4")));
        }
        assert_eq!(s.sessions.owned_by(9), POLICY.max_sessions_per_owner);
        assert!(s.sessions.iter().any(|(id, _)| *id == (7, 1)));
        assert!(
            s.sessions.iter().any(|(id, _)| *id == (9, 4)),
            "just written"
        );
        assert!(s.sessions.consistent());
        // A snapshot keeps the owners.
        let restored = KvState::decode(s.encode(), POLICY).unwrap();
        assert_eq!(restored, s);
        assert_eq!(s.encode()[0], SNAPSHOT_VERSION_WITH_OWNERS);
    }

    /// Found by `cargo fuzz run kv`: a snapshot whose expiry count was u64::MAX decoded, and
    /// the next command overflowed adding one to it. No encoder writes one at the bound or past.
    #[test]
    fn a_snapshot_whose_expiry_count_is_out_of_range_is_refused() {
        let mut s = KvState::new(POLICY);
        s.apply(1, &command(5, 1, 10, put("a", "1")));
        let mut bytes = s.encode().to_vec();
        // version (1) | applied index (8) | log time (8) | expiry count (8) | ...
        bytes[17..25].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            KvState::decode(Bytes::from(bytes.clone()), POLICY),
            Err(InvalidCommand("snapshot: expiry count out of range"))
        );
        bytes[17..25].copy_from_slice(&(EXPIRY_CHECK_EVERY - 1).to_le_bytes());
        let mut restored = KvState::decode(Bytes::from(bytes), POLICY).expect("in range");
        restored.apply(2, &command(5, 2, 11, put("a", "2")));
        assert_eq!(restored.get(b"a"), Some(Bytes::from("2")));
    }

    #[test]
    fn snapshots_round_trip_and_corruption_is_refused() {
        let mut s = KvState::new(POLICY);
        s.apply(1, &command(5, 1, 10, put("a", "1")));
        s.apply(2, &command(0, 0, 11, put("b", "")));
        s.apply_noop(3);
        s.apply(4, &append(6, 1, Some(1), "too long"));
        let bytes = s.encode();
        assert_eq!(KvState::decode(bytes.clone(), POLICY), Ok(s));
        for len in 0..bytes.len() {
            assert!(
                KvState::decode(bytes.slice(..len), POLICY).is_err(),
                "prefix {len}"
            );
        }
    }

    /// Snapshots written before appends could be refused are version 1: the same layout,
    /// without refusals.
    #[test]
    fn a_version_1_snapshot_still_decodes() {
        let mut s = KvState::new(POLICY);
        s.apply(1, &command(5, 1, 10, put("a", "1")));
        s.apply(2, &append(6, 1, Some(1 << 20), "x"));
        let mut v1 = s.encode().to_vec();
        v1[0] = SNAPSHOT_VERSION_WITHOUT_REFUSALS;
        assert_eq!(KvState::decode(Bytes::from(v1), POLICY), Ok(s.clone()));

        s.apply(3, &append(7, 1, Some(1), "too long"));
        let mut v1 = s.encode().to_vec();
        v1[0] = SNAPSHOT_VERSION_WITHOUT_REFUSALS;
        assert!(
            KvState::decode(Bytes::from(v1), POLICY).is_err(),
            "version 1 has no refusals"
        );
    }

    #[test]
    fn invalid_entries_are_skipped() {
        let mut s = KvState::new(POLICY);
        // Version 1, then too short for a command.
        let Outcome::Invalid(invalid) = s.apply(1, &Bytes::from_static(&[1, 0, 0])) else {
            panic!("a truncated command applied")
        };
        assert!(!invalid.is_newer_version(), "{invalid}");
        assert_eq!(s.applied_index(), 1);
    }

    /// The service stops on a command of a version it does not know, rather than skip what
    /// newer replicas apply; the state machine tells the two kinds of invalid entry apart.
    #[test]
    fn a_command_of_an_unknown_version_is_told_from_a_malformed_one() {
        let mut s = KvState::new(POLICY);
        let Outcome::Invalid(invalid) = s.apply(1, &Bytes::from_static(b"junk")) else {
            panic!("junk applied")
        };
        assert!(invalid.is_newer_version(), "{invalid}");
    }

    #[test]
    fn keys_are_listed_by_prefix_in_pages() {
        let mut state = KvState::new(POLICY);
        for (i, key) in ["a", "ab", "abc", "abd", "b", "ba"].iter().enumerate() {
            let put = Write::Put {
                key: Bytes::from(*key),
                value: Bytes::from(vec![b'v'; i]),
            };
            state.apply(i as u64 + 1, &command(0, 0, 0, put));
        }
        let keys = |(page, more): (Vec<(Bytes, usize)>, bool)| {
            let keys: Vec<String> = page
                .iter()
                .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
                .collect();
            (keys, more)
        };
        assert_eq!(
            keys(state.list(b"", None, 100)).0,
            ["a", "ab", "abc", "abd", "b", "ba"]
        );
        assert_eq!(
            keys(state.list(b"ab", None, 2)),
            (vec!["ab".into(), "abc".into()], true)
        );
        assert_eq!(
            keys(state.list(b"ab", Some(b"abc"), 2)),
            (vec!["abd".into()], false)
        );
        // `after` before the prefix starts at the prefix; past it, nothing is left.
        assert_eq!(keys(state.list(b"b", Some(b"a"), 10)).0, ["b", "ba"]);
        assert_eq!(keys(state.list(b"ab", Some(b"b"), 10)), (vec![], false));
        assert_eq!(keys(state.list(b"c", None, 10)), (vec![], false));
        // Exactly `limit` left: no more.
        assert_eq!(
            keys(state.list(b"b", None, 2)),
            (vec!["b".into(), "ba".into()], false)
        );
        assert_eq!(state.list(b"abd", None, 1).0, vec![(Bytes::from("abd"), 3)]);
    }
}
