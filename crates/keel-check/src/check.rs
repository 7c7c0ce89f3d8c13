//! The entry point: validate a history, split it into partitions, search each one.

use std::fmt;
use std::time::{Duration, Instant};

use crate::diagnostic::{Candidate, Diagnostic, OperationSummary};
use crate::search::{SearchOutcome, Stuck, search};
use crate::{Model, Operation, Partition};

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Some order of the operations, consistent with real time, satisfies the model.
    Ok,
    /// No such order exists; the diagnostic shows how far the search got.
    Illegal(Diagnostic),
    /// The search ran out of time before deciding. Treat it as a failure: the history was
    /// not shown linearizable.
    Timeout,
    /// The history itself is inconsistent (an operation returns before its call), so there
    /// is nothing to check.
    Malformed(HistoryError),
}

impl CheckResult {
    /// Whether the history was shown linearizable. `false` for every other outcome,
    /// including [`CheckResult::Timeout`].
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => f.write_str("linearizable"),
            CheckResult::Illegal(diagnostic) => diagnostic.fmt(f),
            CheckResult::Timeout => {
                f.write_str("the linearizability check timed out before deciding")
            }
            CheckResult::Malformed(error) => write!(f, "malformed history: {error}"),
        }
    }
}

/// Why a history cannot be checked at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// An operation's `return_time` is before its `call`: the recorder mixed up clocks or
    /// fields.
    #[error(
        "operation {index} of the history (client {client_id}, {description}) returns at \
         {return_time}, before its call at {call}"
    )]
    ReturnBeforeCall {
        /// Position of the operation in the history.
        index: usize,
        /// The client that issued it.
        client_id: u64,
        /// Its input and output, as the model describes them.
        description: String,
        /// Its call time.
        call: u64,
        /// Its return time.
        return_time: u64,
    },
}

/// Checks whether `history` is linearizable with respect to `model`.
///
/// The history is split with [`Model::partition`] and each partition is searched in turn; the
/// first partition that is not linearizable is reported. `timeout` bounds the whole check
/// ([`Duration::MAX`] for none); running out of it gives [`CheckResult::Timeout`].
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    timeout: Duration,
) -> CheckResult {
    if let Err(error) = validate(model, history) {
        return CheckResult::Malformed(error);
    }
    let deadline = Instant::now().checked_add(timeout);
    for partition in model.partition(history) {
        match search(model, &partition.operations, deadline) {
            SearchOutcome::Linearizable => {}
            SearchOutcome::Stuck(stuck) => {
                return CheckResult::Illegal(diagnose(model, &partition, stuck));
            }
            SearchOutcome::TimedOut => return CheckResult::Timeout,
        }
    }
    CheckResult::Ok
}

fn validate<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
) -> Result<(), HistoryError> {
    match history
        .iter()
        .enumerate()
        .find(|(_, op)| op.return_time < op.call)
    {
        None => Ok(()),
        Some((index, op)) => Err(HistoryError::ReturnBeforeCall {
            index,
            client_id: op.client_id,
            description: model.describe_operation(&op.input, &op.output),
            call: op.call,
            return_time: op.return_time,
        }),
    }
}

fn diagnose<M: Model>(
    model: &M,
    partition: &Partition<'_, M::Input, M::Output>,
    stuck: Stuck<M::State>,
) -> Diagnostic {
    let ops = &partition.operations;
    let summary = |index: usize| {
        let op = ops[index];
        OperationSummary {
            client_id: op.client_id,
            call: op.call,
            return_time: op.return_time,
            description: model.describe_operation(&op.input, &op.output),
        }
    };
    Diagnostic {
        partition: partition.name.clone(),
        partition_len: ops.len(),
        prefix: stuck.prefix.iter().map(|&index| summary(index)).collect(),
        state_after_prefix: model.describe_state(&stuck.state),
        first_to_return: summary(stuck.first_to_return),
        candidates: stuck
            .candidates
            .iter()
            .map(|&index| Candidate {
                operation: summary(index),
                legal_next: model
                    .step(&stuck.state, &ops[index].input, &ops[index].output)
                    .is_some(),
            })
            .collect(),
    }
}
