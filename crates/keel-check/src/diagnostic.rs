//! What a failed check reports: where the search got stuck, in terms a reader can follow.

use std::fmt;

use crate::RETURN_UNKNOWN;

/// The diagnostic shows at most this many operations of the linearizable prefix (its end).
const PREFIX_SHOWN_MAX: usize = 10;

/// Why a partition is not linearizable: the deepest point the search reached.
///
/// Every order of the partition's operations consistent with real time fails somewhere; the
/// diagnostic shows the order that got furthest. Its `Display` prints a readable report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The partition (for the KV model, `key "x"`).
    pub partition: String,
    /// How many operations the partition has.
    pub partition_len: usize,
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<OperationSummary>,
    /// The state after `prefix`.
    pub state_after_prefix: String,
    /// The earliest-returning operation not in `prefix`. It, or one of the `candidates`, had
    /// to go next.
    pub first_to_return: OperationSummary,
    /// The operations that could go next by real time (those called before
    /// `first_to_return` returned), including `first_to_return` itself.
    pub candidates: Vec<Candidate>,
}

/// One operation as shown in a [`Diagnostic`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationSummary {
    /// The client that issued it.
    pub client_id: u64,
    /// When it was called.
    pub call: u64,
    /// When it returned, or [`RETURN_UNKNOWN`].
    pub return_time: u64,
    /// Its input and output, as the model describes them.
    pub description: String,
}

/// An operation that could have gone next after the longest linearizable prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The operation.
    pub operation: OperationSummary,
    /// Whether the model accepts its output from the state after the prefix. If it does, the
    /// operation fits there but every continuation after it fails.
    pub legal_next: bool,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable: {} ({} operations)",
            self.partition, self.partition_len
        )?;
        let shown = &self.prefix[self.prefix.len().saturating_sub(PREFIX_SHOWN_MAX)..];
        write!(
            f,
            "longest linearizable prefix: {} of {} operations",
            self.prefix.len(),
            self.partition_len
        )?;
        if shown.len() < self.prefix.len() {
            write!(f, ", the last {} shown", shown.len())?;
        }
        writeln!(f, ", in linearization order:")?;
        let width = shown
            .iter()
            .chain(self.candidates.iter().map(|c| &c.operation))
            .map(|op| op.when().len())
            .max()
            .unwrap_or(0);
        for op in shown {
            writeln!(f, "  {}", op.row(width))?;
        }
        writeln!(f, "state after that prefix: {}", self.state_after_prefix)?;
        writeln!(
            f,
            "no operation can go next; those called before the earliest remaining return \
             (client {} at {}):",
            self.first_to_return.client_id,
            time(self.first_to_return.return_time)
        )?;
        for candidate in &self.candidates {
            let verdict = if candidate.legal_next {
                "legal from that state, but no order of the rest works after it"
            } else {
                "impossible from that state"
            };
            writeln!(f, "  {}    <- {verdict}", candidate.operation.row(width))?;
        }
        Ok(())
    }
}

impl OperationSummary {
    fn when(&self) -> String {
        format!(
            "client {} [{}, {}]",
            self.client_id,
            self.call,
            time(self.return_time)
        )
    }

    /// The operation as one line, its times padded to `width` so that columns line up.
    fn row(&self, width: usize) -> String {
        format!("{:<width$}  {}", self.when(), self.description)
    }
}

impl fmt::Display for OperationSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.row(0))
    }
}

fn time(t: u64) -> String {
    if t == RETURN_UNKNOWN {
        String::from("unknown")
    } else {
        t.to_string()
    }
}
