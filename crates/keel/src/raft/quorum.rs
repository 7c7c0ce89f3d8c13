//! Quorum arithmetic: what a majority of the voters agrees on, for one set of voters and for the
//! joint configuration of the Raft paper (section 6), where a majority of the old voters *and* a
//! majority of the new ones must agree. Every commit, election, leadership check and read
//! confirmation is decided here, and nowhere else.
//!
//! Two shapes of question:
//! - **Indexes** (commit, read rounds): each voter has acknowledged up to some value; the answer
//!   is the highest value a majority has reached ([`committed_index`]).
//! - **Votes** (elections, "do I still hear from a quorum?"): each voter said yes, no, or
//!   nothing yet; the answer is won, lost, or pending ([`vote_result`]).
//!
//! A joint configuration is passed as its two voter sets; the answer is the stricter of the two
//! (the smaller index; won only if both are won, lost if either is lost).

use std::collections::BTreeSet;

use crate::types::NodeId;

/// Votes needed among `voters` voters: more than half.
pub(crate) fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest index that every one of the `voter_sets` has acknowledged by a majority: the
/// commit index they support. `acked` gives each voter's acknowledged index (0 if none).
///
/// With no voter sets, or an empty one, nothing is committed (0): a configuration without
/// voters decides nothing.
pub(crate) fn committed_index<'a>(
    voter_sets: impl IntoIterator<Item = &'a BTreeSet<NodeId>>,
    acked: impl Fn(NodeId) -> u64,
) -> u64 {
    let mut committed: Option<u64> = None;
    for voters in voter_sets {
        let index = majority_index(voters, &acked);
        committed = Some(committed.map_or(index, |c| c.min(index)));
    }
    committed.unwrap_or(0)
}

/// The highest index a majority of `voters` has acknowledged.
fn majority_index(voters: &BTreeSet<NodeId>, acked: &impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return 0;
    }
    // Clusters are small: sort a copy on the stack when it fits.
    let mut stack = [0u64; 16];
    let mut heap = Vec::new();
    let values: &mut [u64] = if voters.len() <= stack.len() {
        for (slot, &id) in stack.iter_mut().zip(voters) {
            *slot = acked(id);
        }
        &mut stack[..voters.len()]
    } else {
        heap.extend(voters.iter().map(|&id| acked(id)));
        &mut heap
    };
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[majority(values.len()) - 1]
}

/// The outcome of a vote, or of any yes/no question put to the voters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// A majority of every voter set said yes.
    Won,
    /// Some voter set can no longer reach a majority of yes.
    Lost,
    /// Neither yet.
    Pending,
}

/// Counts a vote among `voter_sets`: `vote` gives each voter's answer, `None` for none yet.
///
/// # Panics
///
/// If a voter set is empty or there is none: nobody can win or lose such a vote, and asking
/// means a configuration without voters got this far.
pub(crate) fn vote_result<'a>(
    voter_sets: impl IntoIterator<Item = &'a BTreeSet<NodeId>>,
    vote: impl Fn(NodeId) -> Option<bool>,
) -> VoteResult {
    let mut result = None;
    for voters in voter_sets {
        assert!(!voters.is_empty(), "a vote among no voters");
        let one = majority_vote(voters, &vote);
        result = Some(match (result, one) {
            (None, r) => r,
            (Some(VoteResult::Lost), _) | (_, VoteResult::Lost) => VoteResult::Lost,
            (Some(VoteResult::Won), VoteResult::Won) => VoteResult::Won,
            _ => VoteResult::Pending,
        });
    }
    result.expect("a vote among no voter sets")
}

fn majority_vote(voters: &BTreeSet<NodeId>, vote: &impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    let (mut yes, mut no) = (0, 0);
    for &id in voters {
        match vote(id) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    let needed = majority(voters.len());
    if yes >= needed {
        VoteResult::Won
    } else if voters.len() - no < needed {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn acked(pairs: &[(NodeId, u64)]) -> impl Fn(NodeId) -> u64 {
        let map: BTreeMap<NodeId, u64> = pairs.iter().copied().collect();
        move |id| map.get(&id).copied().unwrap_or(0)
    }

    #[test]
    fn majorities() {
        let table = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)];
        for (voters, needed) in table {
            assert_eq!(majority(voters), needed, "{voters} voters");
        }
    }

    #[test]
    fn committed_index_is_what_a_majority_has() {
        type Case<'a> = (&'a [NodeId], &'a [(NodeId, u64)], u64);
        let table: &[Case] = &[
            (&[1], &[(1, 4)], 4),
            (&[1, 2, 3], &[(1, 5), (2, 3), (3, 9)], 5),
            (&[1, 2, 3], &[(1, 1), (2, 3), (3, 9)], 3),
            (&[1, 2, 3, 4], &[(1, 10), (2, 8), (3, 2), (4, 1)], 2),
            (&[1, 2, 3, 4, 5], &[(1, 10), (2, 9), (3, 8), (5, 1)], 8),
            // Acknowledgements from non-voters (learners, removed members) count for nothing.
            (&[1, 2, 3], &[(1, 9), (4, 9), (5, 9)], 0),
            (&[], &[(1, 9)], 0),
        ];
        for (voters, acks, want) in table {
            assert_eq!(
                committed_index([&set(voters)], acked(acks)),
                *want,
                "voters {voters:?}, acks {acks:?}"
            );
        }
        let many: Vec<NodeId> = (0..20).collect();
        assert_eq!(committed_index([&set(&many)], |id| id), 9);
    }

    #[test]
    fn a_joint_commit_needs_both_majorities() {
        let old = set(&[1, 2, 3]);
        let new = set(&[3, 4, 5]);
        // The old voters have 10, the new ones only 3 and 4: the joint quorum is at 4.
        let acks = acked(&[(1, 10), (2, 10), (3, 4), (4, 3), (5, 0)]);
        assert_eq!(committed_index([&old], &acks), 10);
        assert_eq!(committed_index([&new], &acks), 3);
        assert_eq!(committed_index([&old, &new], &acks), 3);
        assert_eq!(committed_index([&new, &old], &acks), 3);
        assert_eq!(committed_index(std::iter::empty(), &acks), 0);
    }

    #[test]
    fn votes_are_won_lost_or_pending() {
        let voters = set(&[1, 2, 3, 4, 5]);
        let table: &[(&[(NodeId, bool)], VoteResult)] = &[
            (&[(1, true)], VoteResult::Pending),
            (&[(1, true), (2, true), (3, true)], VoteResult::Won),
            (&[(1, true), (2, false), (3, false)], VoteResult::Pending),
            (
                &[(1, true), (2, false), (3, false), (4, false)],
                VoteResult::Lost,
            ),
            // Only voters count.
            (&[(1, true), (6, true), (7, true)], VoteResult::Pending),
        ];
        for (votes, want) in table {
            let map: BTreeMap<NodeId, bool> = votes.iter().copied().collect();
            let result = vote_result([&voters], |id| map.get(&id).copied());
            assert_eq!(result, *want, "votes {votes:?}");
        }
    }

    #[test]
    fn a_joint_vote_needs_both_majorities() {
        let old = set(&[1, 2, 3]);
        let new = set(&[1, 4, 5]);
        let vote = |yes: &'static [NodeId], no: &'static [NodeId]| {
            move |id: NodeId| {
                if yes.contains(&id) {
                    Some(true)
                } else if no.contains(&id) {
                    Some(false)
                } else {
                    None
                }
            }
        };
        assert_eq!(
            vote_result([&old, &new], vote(&[1, 2], &[])),
            VoteResult::Pending
        );
        assert_eq!(
            vote_result([&old, &new], vote(&[1, 2, 4], &[])),
            VoteResult::Won
        );
        assert_eq!(
            vote_result([&old, &new], vote(&[1, 2], &[4, 5])),
            VoteResult::Lost
        );
        assert_eq!(
            vote_result([&old, &new], vote(&[4, 5], &[2, 3])),
            VoteResult::Lost
        );
    }

    #[test]
    #[should_panic(expected = "a vote among no voters")]
    fn a_vote_without_voters_is_a_bug() {
        vote_result([&BTreeSet::new()], |_| Some(true));
    }
}
