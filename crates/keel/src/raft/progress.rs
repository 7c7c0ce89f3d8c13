//! A follower's replication progress as its leader sees it: Figure 2's `nextIndex` and
//! `matchIndex`, plus the flow control that decides how much to send it.
//!
//! Flow control follows etcd's raft. A follower whose log position is unknown is *probed* with
//! one AppendEntries at a time; once one succeeds it is *replicated* to, with up to
//! `max_inflight_appends` requests pipelined, each carrying everything from `next_index` up to
//! the batch limits; a follower that needs entries the leader compacted gets the *snapshot*.
//!
//! ```text
//!                       accepted
//!          +---------+ ---------> +-----------+
//!   new -->|  Probe  |            | Replicate |
//!          +---------+ <--------- +-----------+
//!            |    ^   rejected (a hint moves next_index back),
//!            |    |   or an append with entries lost
//!  next_index|    | snapshot done (installed: match_index = its index)
//!  <= the    v    |
//!  snapshot +----------+
//!  index    | Snapshot |  nothing else is sent meanwhile
//!           +----------+
//! ```
//!
//! `next_index` moves forward optimistically when entries are sent, and back only when the
//! follower says the logs diverge or a request carrying entries is lost; `match_index` only ever
//! moves forward (replies arrive in any order). This type is the only writer of both, and every
//! method checks that `match_index < next_index` still holds when it returns.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::types::NodeId;

/// How the leader currently sends to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationMode {
    /// The leader does not know where the follower's log matches: one AppendEntries at a time.
    Probe,
    /// The logs match up to `match_index`: up to `max_inflight_appends` requests pipelined.
    Replicate,
    /// The follower needs entries the leader compacted: a snapshot transfer is running.
    Snapshot,
}

/// The leader's view of one follower (Figure 2, "Volatile state on leaders", plus flow control).
#[derive(Debug)]
pub(crate) struct Progress {
    /// Tells this progress apart from earlier ones of the same follower: a reply counts only
    /// toward the progress its request was sent under. (A member removed and added back gets a
    /// new progress while requests sent under the old one may still be out.)
    generation: u64,
    /// Index of the next log entry to send to the follower.
    next_index: u64,
    /// Highest index known to be replicated on the follower.
    match_index: u64,
    mode: ReplicationMode,
    /// AppendEntries carrying entries that have not returned.
    inflight_appends: usize,
    /// RPCs of any kind that have not returned (a running snapshot transfer counts as one).
    inflight_rpcs: usize,
    /// When something was last sent to the follower (heartbeats are due an interval after).
    last_sent: Instant,
    /// When the follower last answered in this term (check-quorum, status).
    last_ack: Instant,
    /// Highest read-confirmation round carried by an RPC sent to this follower ...
    read_round_sent: u64,
    /// ... and answered by it.
    read_round_acked: u64,
}

impl Progress {
    /// A follower a new leader knows nothing about yet: probe from just past the leader's log.
    /// `generation` must differ from that of any earlier progress of this follower.
    #[inline]
    pub(crate) fn new(next_index: u64, now: Instant, generation: u64) -> Progress {
        assert!(next_index >= 1, "log indexes start at 1");
        Progress {
            generation,
            next_index,
            match_index: 0,
            mode: ReplicationMode::Probe,
            inflight_appends: 0,
            inflight_rpcs: 0,
            last_sent: now,
            last_ack: now,
            read_round_sent: 0,
            read_round_acked: 0,
        }
    }

    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    #[inline]
    pub(crate) fn next_index(&self) -> u64 {
        self.next_index
    }

    #[inline]
    pub(crate) fn match_index(&self) -> u64 {
        self.match_index
    }

    #[inline]
    pub(crate) fn mode(&self) -> ReplicationMode {
        self.mode
    }

    #[cfg(test)]
    pub(crate) fn inflight_appends(&self) -> usize {
        self.inflight_appends
    }

    #[inline]
    pub(crate) fn last_sent(&self) -> Instant {
        self.last_sent
    }

    #[inline]
    pub(crate) fn last_ack(&self) -> Instant {
        self.last_ack
    }

    #[inline]
    pub(crate) fn read_round_sent(&self) -> u64 {
        self.read_round_sent
    }

    #[inline]
    pub(crate) fn read_round_acked(&self) -> u64 {
        self.read_round_acked
    }

    /// Nothing may be sent: a snapshot transfer runs, or `max_inflight_rpcs` are out.
    #[inline]
    pub(crate) fn is_paused(&self, max_inflight_rpcs: usize) -> bool {
        self.mode == ReplicationMode::Snapshot || self.inflight_rpcs >= max_inflight_rpcs
    }

    /// The follower needs entries the leader's log no longer holds.
    #[inline]
    pub(crate) fn needs_snapshot(&self, snapshot_index: u64) -> bool {
        self.next_index <= snapshot_index
    }

    /// Whether an AppendEntries with entries may go out now: there are entries past
    /// `next_index`, and fewer than the window's worth are in flight. A probed follower gets
    /// one at a time; `new_entries_only` (a proposal, not a reply or tick, is looking) also
    /// allows one, so that under load replies, not proposals, carry the batches.
    #[inline]
    pub(crate) fn may_send_entries(
        &self,
        last_log_index: u64,
        new_entries_only: bool,
        max_inflight_appends: usize,
    ) -> bool {
        let window = match self.mode {
            ReplicationMode::Replicate if !new_entries_only => max_inflight_appends,
            _ => 1,
        };
        self.next_index <= last_log_index && self.inflight_appends < window
    }

    /// Sending more right after this request would pipeline (the follower is replicated to and
    /// the request carried entries).
    #[inline]
    pub(crate) fn pipelining(&self, entries: u64) -> bool {
        entries > 0 && self.mode == ReplicationMode::Replicate
    }

    /// An AppendEntries carrying `entries` entries from `next_index` (none: a heartbeat) and
    /// read round `read_round` goes out. `next_index` moves past them at once, so the next
    /// request carries what follows.
    #[inline]
    pub(crate) fn sent(&mut self, entries: u64, read_round: u64, now: Instant) {
        assert!(
            self.mode != ReplicationMode::Snapshot,
            "sent entries during a snapshot"
        );
        if entries > 0 {
            self.inflight_appends += 1;
            self.next_index += entries;
        }
        self.inflight_rpcs += 1;
        self.last_sent = now;
        self.read_round_sent = self.read_round_sent.max(read_round);
        self.check();
    }

    /// An AppendEntries sent under this term came back, with a reply or without; `carried_entries`
    /// says whether it counted toward `inflight_appends`.
    #[inline]
    pub(crate) fn returned(&mut self, carried_entries: bool) {
        self.inflight_rpcs = self
            .inflight_rpcs
            .checked_sub(1)
            .expect("an RPC returned that was never counted as sent");
        if carried_entries {
            self.inflight_appends = self
                .inflight_appends
                .checked_sub(1)
                .expect("an append returned that was never counted as sent");
        }
    }

    /// The follower answered (anything, in this term): it is alive, and it has seen the read
    /// round the request carried.
    #[inline]
    pub(crate) fn heard(&mut self, read_round: u64, now: Instant) {
        self.last_ack = now;
        self.read_round_acked = self.read_round_acked.max(read_round);
    }

    /// The follower's log now matches the leader's through `last_index` (the request's
    /// `prev_log_index` plus its entries). Returns whether `match_index` moved.
    #[inline]
    pub(crate) fn accepted(&mut self, last_index: u64) -> bool {
        let advanced = last_index > self.match_index;
        if advanced {
            self.match_index = last_index;
        }
        self.next_index = self.next_index.max(self.match_index + 1);
        if self.mode == ReplicationMode::Probe {
            self.mode = ReplicationMode::Replicate;
        }
        self.check();
        advanced
    }

    /// The follower found no entry matching `prev_log_index`; `hint` is where its answer says the
    /// logs may agree (see the conflict fields of the reply). A rejection at or below
    /// `match_index` is stale (reordered) and changes nothing.
    #[inline]
    pub(crate) fn rejected(&mut self, prev_log_index: u64, hint: u64) {
        if prev_log_index <= self.match_index || self.mode == ReplicationMode::Snapshot {
            return;
        }
        // Never before what is known to match, never past what was just refused.
        self.next_index = hint.clamp(self.match_index + 1, prev_log_index);
        self.mode = ReplicationMode::Probe;
        self.check();
    }

    /// A request carrying `entries` entries after `prev_log_index` got no reply: they may never
    /// have arrived. Probe again from there (on the next tick, not at once: a peer that fails fast
    /// would make that a busy loop).
    #[inline]
    pub(crate) fn lost(&mut self, prev_log_index: u64, entries: u64) {
        if entries > 0
            && self.mode != ReplicationMode::Snapshot
            && prev_log_index >= self.match_index
        {
            self.next_index = self.next_index.min(prev_log_index + 1);
            self.mode = ReplicationMode::Probe;
        }
        self.check();
    }

    /// A snapshot transfer to the follower starts; nothing else goes to it until it ends.
    #[inline]
    pub(crate) fn snapshot_started(&mut self) {
        assert!(
            self.mode != ReplicationMode::Snapshot,
            "two snapshot transfers"
        );
        self.mode = ReplicationMode::Snapshot;
        self.inflight_rpcs += 1;
    }

    /// The snapshot transfer ended; with `Some(index)` the follower holds everything through
    /// `index`. Either way the follower is probed next (on failure, from where it was: the next
    /// tick starts a new transfer, since `next_index` is still covered by the snapshot).
    #[inline]
    pub(crate) fn snapshot_done(&mut self, installed_through: Option<u64>) {
        assert_eq!(
            self.mode,
            ReplicationMode::Snapshot,
            "no snapshot transfer ran"
        );
        self.inflight_rpcs = self
            .inflight_rpcs
            .checked_sub(1)
            .expect("the transfer counts as an RPC in flight");
        self.mode = ReplicationMode::Probe;
        if let Some(index) = installed_through {
            self.match_index = self.match_index.max(index);
            self.next_index = self.match_index + 1;
        }
        self.check();
    }

    fn check(&self) {
        assert!(
            self.match_index < self.next_index,
            "match_index {} must stay below next_index {}",
            self.match_index,
            self.next_index
        );
    }
}

/// The progress of `peer` that an RPC sent under `generation` updates: none if the leader has
/// since dropped it, or replaced it (the member was removed and added back).
#[inline]
pub(crate) fn sent_under(
    progress: &mut BTreeMap<NodeId, Progress>,
    peer: NodeId,
    generation: u64,
) -> Option<&mut Progress> {
    progress
        .get_mut(&peer)
        .filter(|p| p.generation() == generation)
}

#[cfg(test)]
mod tests {
    use super::ReplicationMode::{Probe, Replicate, Snapshot};
    use super::*;

    fn at(next_index: u64, match_index: u64, mode: ReplicationMode) -> Progress {
        let mut p = Progress::new(next_index, Instant::now(), 1);
        p.match_index = match_index;
        p.mode = mode;
        p.check();
        p
    }

    fn state(p: &Progress) -> (u64, u64, ReplicationMode) {
        (p.next_index, p.match_index, p.mode)
    }

    #[test]
    fn accepted_moves_match_forward_only_and_starts_replicating() {
        // (next, match, mode), last index acknowledged => (next, match, mode), advanced
        let table = [
            ((5, 0, Probe), 4, (5, 4, Replicate), true),
            ((9, 4, Replicate), 8, (9, 8, Replicate), true),
            // A stale success (reordered) leaves match_index where it is.
            ((9, 8, Replicate), 6, (9, 8, Replicate), false),
            // A success past next_index (the follower had more) moves next_index too.
            ((3, 0, Probe), 7, (8, 7, Replicate), true),
            // During a snapshot transfer the mode stays.
            ((3, 0, Snapshot), 2, (3, 2, Snapshot), true),
        ];
        for (before, last, after, advanced) in table {
            let mut p = at(before.0, before.1, before.2);
            assert_eq!(p.accepted(last), advanced, "{before:?} accepted {last}");
            assert_eq!(state(&p), after, "{before:?} accepted {last}");
        }
    }

    #[test]
    fn rejected_moves_next_back_within_match_and_the_refused_index() {
        // (next, match, mode), prev_log_index refused, hint => (next, match, mode)
        let table = [
            ((11, 0, Replicate), 10, 4, (4, 0, Probe)),
            // A hint below match_index is clamped to just past it.
            ((11, 5, Replicate), 10, 2, (6, 5, Probe)),
            // A hint past the refused index is clamped to it.
            ((11, 5, Probe), 10, 40, (10, 5, Probe)),
            // Stale: refused at or below what is known to match.
            ((11, 5, Replicate), 5, 1, (11, 5, Replicate)),
            // A snapshot transfer decides where the follower resumes.
            ((3, 0, Snapshot), 2, 1, (3, 0, Snapshot)),
        ];
        for (before, prev, hint, after) in table {
            let mut p = at(before.0, before.1, before.2);
            p.rejected(prev, hint);
            assert_eq!(
                state(&p),
                after,
                "{before:?} rejected at {prev}, hint {hint}"
            );
        }
    }

    #[test]
    fn lost_entries_are_probed_again_from_where_they_started() {
        // (next, match, mode), prev_log_index, entries => (next, match, mode)
        let table = [
            ((21, 5, Replicate), 10, 10, (11, 5, Probe)),
            // A lost heartbeat carried nothing that could be missing.
            ((21, 5, Replicate), 20, 0, (21, 5, Replicate)),
            // Lost below match_index: those entries are known to have arrived.
            ((21, 15, Replicate), 10, 10, (21, 15, Replicate)),
            ((3, 0, Snapshot), 1, 1, (3, 0, Snapshot)),
        ];
        for (before, prev, entries, after) in table {
            let mut p = at(before.0, before.1, before.2);
            p.lost(prev, entries);
            assert_eq!(state(&p), after, "{before:?} lost {entries} after {prev}");
        }
    }

    #[test]
    fn sending_counts_and_windows() {
        let now = Instant::now();
        let mut p = at(5, 4, Replicate);
        assert!(p.may_send_entries(10, false, 2));
        p.sent(3, 1, now);
        assert_eq!(
            (p.next_index(), p.inflight_appends(), p.inflight_rpcs),
            (8, 1, 1)
        );
        // A proposal only starts a send when nothing is in flight; a reply fills the window.
        assert!(!p.may_send_entries(10, true, 2));
        assert!(p.may_send_entries(10, false, 2));
        p.sent(2, 1, now);
        assert!(!p.may_send_entries(20, false, 2), "window of 2 is full");
        assert!(!p.may_send_entries(9, false, 8), "nothing past next_index");
        p.sent(0, 2, now); // a heartbeat
        assert_eq!(
            (p.inflight_appends(), p.inflight_rpcs, p.read_round_sent()),
            (2, 3, 2)
        );
        assert!(p.is_paused(3));
        p.returned(false);
        p.returned(true);
        assert_eq!((p.inflight_appends(), p.inflight_rpcs), (1, 1));
        // A probed follower gets one append at a time.
        let p = at(5, 0, Probe);
        assert!(p.may_send_entries(10, false, 8));
        let mut p = p;
        p.sent(1, 0, now);
        assert!(!p.may_send_entries(10, false, 8));
    }

    #[test]
    fn snapshot_transfer_pauses_and_resumes_probing() {
        let mut p = at(3, 0, Probe);
        assert!(p.needs_snapshot(10));
        p.snapshot_started();
        assert!(p.is_paused(100));
        p.snapshot_done(Some(10));
        assert_eq!(state(&p), (11, 10, Probe));
        assert!(!p.needs_snapshot(10));
        p.snapshot_started();
        p.snapshot_done(None);
        assert_eq!(state(&p), (11, 10, Probe));
        assert!(!p.is_paused(1));
    }

    #[test]
    #[should_panic(expected = "never counted as sent")]
    fn returning_more_than_was_sent_is_a_bug() {
        let mut p = at(3, 0, Probe);
        p.returned(false);
    }

    #[test]
    #[should_panic(expected = "two snapshot transfers")]
    fn a_second_transfer_is_a_bug() {
        let mut p = at(3, 0, Probe);
        p.snapshot_started();
        p.snapshot_started();
    }
}
