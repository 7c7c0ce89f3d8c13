//! The sequential specification a history is checked against.

use std::fmt::Debug;
use std::hash::Hash;

use crate::Operation;

/// A sequential specification: the states an object can be in and the outputs each input may
/// produce from each state.
///
/// The checker asks whether the operations of a history can be put in one order, consistent
/// with real time, in which every output is the one `step` allows.
pub trait Model {
    /// What a client asks for.
    type Input: Debug;
    /// What a client observes.
    type Output: Debug;
    /// The object's state. The search memoizes on it, so it must compare and hash by value.
    type State: Clone + Eq + Hash + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` took effect in `state` and produced `output`, or `None` if
    /// `output` is impossible from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// Whether `input` with `output` leaves the state unchanged from every state `step`
    /// accepts it in, such as a read or a failed compare-and-swap. The search places such an
    /// operation as soon as it is legal and tries nothing else there, which prunes most of the
    /// backtracking on read-heavy histories; a wrong `true` can make the check report a
    /// violation that is not one. The default, `false`, is always correct.
    fn is_read_only(&self, input: &Self::Input, output: &Self::Output) -> bool {
        let _ = (input, output);
        false
    }

    /// Splits a history into parts that can be checked independently, such as the operations
    /// on each key of a KV store (a history is linearizable iff each part is: Herlihy & Wing's
    /// locality, which Lowe calls P-compositionality). Checking parts separately is what
    /// makes long histories tractable.
    ///
    /// The default keeps the whole history as one partition.
    fn partition<'h>(
        &self,
        history: &'h [Operation<Self::Input, Self::Output>],
    ) -> Vec<Partition<'h, Self::Input, Self::Output>> {
        vec![Partition {
            name: String::from("the whole history"),
            operations: history.iter().collect(),
        }]
    }

    /// How an operation is shown in a [`Diagnostic`](crate::Diagnostic).
    fn describe_operation(&self, input: &Self::Input, output: &Self::Output) -> String {
        format!("{input:?} -> {output:?}")
    }

    /// How a state is shown in a [`Diagnostic`](crate::Diagnostic).
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }
}

/// One independently checkable part of a history, as returned by [`Model::partition`].
#[derive(Debug)]
pub struct Partition<'h, I, O> {
    /// Names the part in diagnostics, such as `key "x"`.
    pub name: String,
    /// The part's operations, in any order.
    pub operations: Vec<&'h Operation<I, O>>,
}
