//! One client operation as the checker sees it: what was asked, what came back, and the
//! interval of time between the two.

/// The `return_time` of an operation whose outcome the client never learned (it timed out, or
/// the process crashed). Such an operation may have taken effect at any moment after its call,
/// or never; the checker considers both.
pub const RETURN_UNKNOWN: u64 = u64::MAX;

/// One operation of a client history.
///
/// Times are in any monotonic unit shared by all clients of the history (nanoseconds since the
/// start of the test, simulated ticks, ...). The operation took effect, atomically, at some
/// instant of the closed interval `[call, return_time]`.
///
/// An operation whose outcome is unknown is recorded with `return_time` = [`RETURN_UNKNOWN`]
/// and an output the model accepts whatever the state (such as
/// [`KvOutput::Unknown`](crate::KvOutput::Unknown)): the search may then place it anywhere
/// after its call, and placing it last models "it never happened".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued the operation; used in diagnostics only.
    pub client_id: u64,
    /// What the client asked for.
    pub input: I,
    /// When the client issued the request.
    pub call: u64,
    /// What the client observed.
    pub output: O,
    /// When the client received the response, or [`RETURN_UNKNOWN`].
    pub return_time: u64,
}

impl<I, O> Operation<I, O> {
    /// Whether the client never learned the outcome (`return_time` is [`RETURN_UNKNOWN`]).
    pub fn outcome_unknown(&self) -> bool {
        self.return_time == RETURN_UNKNOWN
    }
}
