//! The search for a linearization of one partition: Wing & Gong's backtracking over the
//! operations that may go next, with Lowe's memoization of (linearized set, state) pairs, as
//! in porcupine's `checkSingle`.
//!
//! The search builds a linearization one operation at a time. At each level, the candidates
//! for the next place are the operations called before the earliest return still pending (an
//! operation called after that return must come after that operation). Each candidate is tried
//! in turn: if the model accepts its output and the resulting (set, state) pair is new, the
//! search goes one level deeper; when every candidate of a level has failed, the level's own
//! placement is undone. A pair seen before has already been explored to a dead end, or the
//! search would have finished, so it is never explored twice.
//!
//! Candidates are tried in call order, as in porcupine (trying the earliest return first
//! measured no better). One addition: a read-only operation (see [`Model::is_read_only`])
//! that is legal at a level is that level's only candidate. If any linearization exists from
//! there, one exists with the read placed now: it is a candidate, so everything that returned
//! before its call is already placed, and it changes no state, so moving it earlier changes
//! no other output. On read-heavy histories this removes most of the backtracking.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::Instant;

use crate::bitset::Bitset;
use crate::events::EventList;
use crate::{Model, Operation};

/// Reading the clock costs more than a step of a cheap model; look at it this often.
const DEADLINE_CHECK_INTERVAL_STEPS: u64 = 256;

/// How the search of one partition ended.
pub(crate) enum SearchOutcome<S> {
    Linearizable,
    Stuck(Stuck<S>),
    TimedOut,
}

/// The deepest point the search reached before every order failed.
pub(crate) struct Stuck<S> {
    /// The longest linearizable prefix found, as operation indices in linearization order.
    pub(crate) prefix: Vec<usize>,
    /// The state after `prefix`.
    pub(crate) state: S,
    /// The earliest-returning operation not in `prefix`: it had to go before any operation
    /// called after its return.
    pub(crate) first_to_return: usize,
    /// The operations not in `prefix` called before `first_to_return` returned, in call
    /// order: the only ones that could go next. None of them leads to a full linearization.
    pub(crate) candidates: Vec<usize>,
}

/// Searches for a linearization of `ops`, whose intervals must all have `call <= return_time`.
pub(crate) fn search<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    deadline: Option<Instant>,
) -> SearchOutcome<M::State> {
    Search::new(model, ops).run(deadline)
}

/// One step of the linearization being built.
struct Level<S> {
    /// The operation placed to reach this level, and the state before it; `None` at the root.
    via: Option<(usize, S)>,
    /// The operations that may be placed next, in the order they are tried.
    candidates: Vec<usize>,
    /// How many of `candidates` have been tried.
    tried: usize,
}

struct Search<'a, M: Model> {
    model: &'a M,
    ops: &'a [&'a Operation<M::Input, M::Output>],
    /// `Model::is_read_only` of each operation.
    read_only: Vec<bool>,
    events: EventList,
    state: M::State,
    linearized: Bitset,
    explored: Memo<M::State>,
    deepest: Option<Stuck<M::State>>,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, ops: &'a [&'a Operation<M::Input, M::Output>]) -> Self {
        Search {
            model,
            ops,
            read_only: ops
                .iter()
                .map(|op| model.is_read_only(&op.input, &op.output))
                .collect(),
            events: EventList::new(ops.iter().map(|op| (op.call, op.return_time))),
            state: model.init(),
            linearized: Bitset::new(ops.len()),
            explored: Memo::default(),
            deepest: None,
        }
    }

    fn run(mut self, deadline: Option<Instant>) -> SearchOutcome<M::State> {
        let Some(root) = self.level(None) else {
            return SearchOutcome::Linearizable;
        };
        let mut levels = vec![root];
        let mut steps: u64 = 0;
        while let Some(level) = levels.last_mut() {
            steps += 1;
            if steps.is_multiple_of(DEADLINE_CHECK_INTERVAL_STEPS)
                && deadline.is_some_and(|deadline| Instant::now() >= deadline)
            {
                return SearchOutcome::TimedOut;
            }

            if let Some(&op) = level.candidates.get(level.tried) {
                level.tried += 1;
                if let Some(state_before) = self.place(op) {
                    match self.level(Some((op, state_before))) {
                        Some(deeper) => levels.push(deeper),
                        None => return SearchOutcome::Linearizable,
                    }
                }
            } else {
                // Every candidate failed: so does the placement that led here.
                let depth = levels.len() - 1;
                if self.deepest.as_ref().is_none_or(|d| depth > d.prefix.len()) {
                    let prefix = levels
                        .iter()
                        .filter_map(|l| l.via.as_ref())
                        .map(|&(op, _)| op);
                    self.deepest = Some(self.stuck_here(prefix.collect()));
                }
                let failed = levels.pop().expect("`level` is the last element");
                if let Some((op, state_before)) = failed.via {
                    self.unplace(op, state_before);
                }
            }
        }
        let deepest = self
            .deepest
            .expect("the root level failed, and a failing level records the deepest point");
        SearchOutcome::Stuck(deepest)
    }

    /// The level reached by `via` (the state and the event list already reflect it), or
    /// `None` if every operation has been placed.
    fn level(&self, via: Option<(usize, M::State)>) -> Option<Level<M::State>> {
        let (mut candidates, _) = self.events.front()?;
        let legal_read = candidates.iter().copied().find(|&op| {
            self.read_only[op]
                && self
                    .model
                    .step(&self.state, &self.ops[op].input, &self.ops[op].output)
                    .is_some()
        });
        if let Some(read) = legal_read {
            candidates = vec![read];
        }
        Some(Level {
            via,
            candidates,
            tried: 0,
        })
    }

    /// Places `op` next and returns the state before it. `None`, changing nothing, if the
    /// model rejects its output from the current state, or if the resulting (set, state) pair
    /// was explored before (and so led nowhere).
    fn place(&mut self, op: usize) -> Option<M::State> {
        let operation = self.ops[op];
        let next_state = self
            .model
            .step(&self.state, &operation.input, &operation.output)?;
        self.linearized.insert(op);
        if !self.explored.insert(&self.linearized, &next_state) {
            self.linearized.remove(op);
            return None;
        }
        self.events.lift(op);
        Some(std::mem::replace(&mut self.state, next_state))
    }

    /// Undoes `place(op)`, which must be the latest placement still in effect.
    fn unplace(&mut self, op: usize, state_before: M::State) {
        self.events.unlift(op);
        self.linearized.remove(op);
        self.state = state_before;
    }

    /// The current point, reached by placing `prefix`, where every candidate failed.
    fn stuck_here(&self, prefix: Vec<usize>) -> Stuck<M::State> {
        let (candidates, first_to_return) = self
            .events
            .front()
            .expect("a level with nothing left to place cannot fail");
        Stuck {
            prefix,
            state: self.state.clone(),
            first_to_return,
            candidates,
        }
    }
}

/// The (linearized set, state) pairs the search has entered.
struct Memo<S> {
    seen: HashMap<Bitset, HashSet<S>>,
}

impl<S> Default for Memo<S> {
    fn default() -> Self {
        Memo {
            seen: HashMap::new(),
        }
    }
}

impl<S: Clone + Eq + Hash> Memo<S> {
    /// Records the pair; false if it was already there. Clones only what it stores.
    fn insert(&mut self, linearized: &Bitset, state: &S) -> bool {
        match self.seen.get_mut(linearized) {
            Some(states) if states.contains(state) => false,
            Some(states) => states.insert(state.clone()),
            None => {
                self.seen
                    .insert(linearized.clone(), HashSet::from([state.clone()]));
                true
            }
        }
    }
}
