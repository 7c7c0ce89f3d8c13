//! The call and return events of one partition, in the order the search walks them, kept in a
//! doubly linked list from which an operation's two events can be lifted and put back in O(1)
//! (the "dancing links" of porcupine's `checkSingle`).
//!
//! # Order of events at equal times
//!
//! An operation takes effect somewhere in the closed interval `[call, return_time]`. Operation
//! A must precede B only if A returned strictly before B was called; when `A.return_time ==
//! B.call` the two intervals share an instant and either order is allowed. So at equal times
//! every call comes before every return. (It also keeps an operation with `call ==
//! return_time` well formed: its call is before its return.) Equal timestamps therefore never
//! produce a false violation; at worst a clock too coarse to order two operations hides one.

const NIL: usize = usize::MAX;
/// A sentinel node before the first event, so that lifting never special-cases the front.
const HEAD: usize = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    // Declared first so that it sorts first at equal times (see the module docs).
    Call,
    Return,
}

/// The events of a partition. Node 0 is the head sentinel; nodes `1..=2n` are the events in
/// time order.
pub(crate) struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation and kind of each node (unused for the head).
    event: Vec<(usize, EventKind)>,
    /// The call and return node of each operation.
    nodes_of: Vec<(usize, usize)>,
}

impl EventList {
    /// The events of operations whose `(call, return_time)` intervals are given, operation `i`
    /// being the `i`-th interval. Every interval must have `call <= return_time`.
    pub(crate) fn new(intervals: impl ExactSizeIterator<Item = (u64, u64)>) -> Self {
        let op_count = intervals.len();
        let mut sorted = Vec::with_capacity(2 * op_count);
        for (op, (call, return_time)) in intervals.enumerate() {
            assert!(
                call <= return_time,
                "operation {op} returns before its call"
            );
            sorted.push((call, EventKind::Call, op));
            sorted.push((return_time, EventKind::Return, op));
        }
        // The operation index breaks the remaining ties, so the walk is deterministic.
        sorted.sort_unstable();

        let node_count = sorted.len() + 1;
        let mut list = EventList {
            next: (1..=node_count)
                .map(|n| if n == node_count { NIL } else { n })
                .collect(),
            prev: (0..node_count).map(|n| n.wrapping_sub(1)).collect(),
            event: Vec::with_capacity(node_count),
            nodes_of: vec![(NIL, NIL); op_count],
        };
        list.event.push((NIL, EventKind::Call));
        for (i, &(_, kind, op)) in sorted.iter().enumerate() {
            let node = i + 1;
            list.event.push((op, kind));
            match kind {
                EventKind::Call => list.nodes_of[op].0 = node,
                EventKind::Return => list.nodes_of[op].1 = node,
            }
        }
        list
    }

    /// The operations whose call comes before the first return still in the list (the only
    /// ones that may be linearized next), in call order, and the operation of that return.
    /// `None` once the list is empty.
    pub(crate) fn front(&self) -> Option<(Vec<usize>, usize)> {
        let mut calls = Vec::new();
        let mut cursor = self.next[HEAD];
        while cursor != NIL {
            match self.event[cursor] {
                (op, EventKind::Call) => calls.push(op),
                (op, EventKind::Return) => return Some((calls, op)),
            }
            cursor = self.next[cursor];
        }
        assert!(calls.is_empty(), "every call is followed by its return");
        None
    }

    /// Removes both events of `op` (it has been linearized).
    pub(crate) fn lift(&mut self, op: usize) {
        let (call, ret) = self.nodes_of[op];
        self.unlink(call);
        self.unlink(ret);
    }

    /// Puts back the events of `op`, which must be the operation lifted most recently.
    pub(crate) fn unlift(&mut self, op: usize) {
        let (call, ret) = self.nodes_of[op];
        self.relink(ret);
        self.relink(call);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    /// Undoes `unlink(node)`; `node` still holds its old neighbours.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EventKind, EventList};

    fn walk(list: &EventList) -> Vec<(usize, EventKind)> {
        let mut events = Vec::new();
        let mut cursor = list.next[super::HEAD];
        while cursor != super::NIL {
            events.push(list.event[cursor]);
            cursor = list.next[cursor];
        }
        events
    }

    #[test]
    fn calls_come_before_returns_at_equal_times() {
        use EventKind::{Call, Return};
        // Op 0 returns at 10, exactly when op 1 is called; op 2 is an instant at 10.
        let list = EventList::new([(0, 10), (10, 20), (10, 10)].into_iter());
        assert_eq!(
            walk(&list),
            vec![
                (0, Call),
                (1, Call),
                (2, Call),
                (0, Return),
                (2, Return),
                (1, Return)
            ]
        );
    }

    #[test]
    fn unlift_restores_what_lift_removed() {
        let mut list = EventList::new([(0, 5), (1, 3), (2, 9)].into_iter());
        let before = walk(&list);
        assert_eq!(list.front(), Some((vec![0, 1, 2], 1)));
        list.lift(1);
        list.lift(0);
        assert_eq!(list.front(), Some((vec![2], 2)));
        list.unlift(0);
        list.unlift(1);
        assert_eq!(walk(&list), before);
        list.lift(1);
        list.lift(0);
        list.lift(2);
        assert_eq!(list.front(), None);
    }
}
