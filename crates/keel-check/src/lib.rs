//! keel-check: a linearizability checker for client histories.
//!
//! A test records, for every client operation, what was asked, what came back, and when it was
//! called and returned. The history is *linearizable* if the operations can be put in one
//! order, in which each takes effect at an instant between its call and its return, such that
//! every output is the one the sequential specification (a [`Model`]) gives. That is what a
//! replicated service like keel's KV store promises its clients.
//!
//! # Checking a history
//!
//! ```
//! use std::time::Duration;
//! use keel_check::{CheckResult, KvInput, KvModel, KvOutput, Operation, check};
//!
//! // Client 1 puts "1" during [0, 10]; client 2 reads during [5, 15], concurrently, and
//! // sees nothing: fine, the read may have happened before the put.
//! let mut history = vec![
//!     Operation { client_id: 1, input: KvInput::put("x", "1"), call: 0,
//!                 output: KvOutput::Ok, return_time: 10 },
//!     Operation { client_id: 2, input: KvInput::get("x"), call: 5,
//!                 output: KvOutput::Value(None), return_time: 15 },
//! ];
//! assert!(check(&KvModel, &history, Duration::from_secs(1)).is_ok());
//!
//! // A read that starts after the put returned must see it.
//! history.push(Operation { client_id: 3, input: KvInput::get("x"), call: 20,
//!                          output: KvOutput::Value(None), return_time: 25 });
//! match check(&KvModel, &history, Duration::from_secs(1)) {
//!     CheckResult::Illegal(diagnostic) => {
//!         assert_eq!(diagnostic.partition, r#"key "x""#);
//!         println!("{diagnostic}"); // the longest linearizable prefix and where it got stuck
//!     }
//!     other => panic!("expected a violation, got {other}"),
//! }
//! ```
//!
//! # How it works
//!
//! The search is porcupine's (Anish Athalye's Go checker): Wing & Gong's backtracking over the
//! operations that may go next, with Lowe's memoization of the pair (set of operations
//! linearized so far, model state), so each pair is explored once. [`Model::partition`] splits
//! a history into parts checked independently, such as one per key; a history is linearizable
//! iff each part is, and small parts are what keep long histories fast.
//!
//! Operation intervals are closed: two operations whose times touch (`a.return_time ==
//! b.call`) may be ordered either way, so equal timestamps never produce a false violation.
//!
//! An operation whose outcome the client never learned is recorded with `return_time` =
//! [`RETURN_UNKNOWN`] and an output the model accepts from any state ([`KvOutput::Unknown`]):
//! it may take effect anywhere after its call, or never.
//!
//! The search is exponential in the worst case, so [`check`] takes a timeout and answers
//! [`CheckResult::Timeout`] when it runs out; a test must treat that as a failure. In practice
//! the cost grows with how many operations are in flight at once within one partition: 5,000
//! operations of 10 clients on one key check in about a tenth of a second in release mode, 20
//! clients on one key take seconds (`cargo bench -p keel-check` prints the figures). Spread a
//! test's load over several keys rather than many clients on one.
//!
//! For the "each append appears exactly once, in order" check of the course KV tests, which
//! needs no search, see [`check_appends`].

#![warn(missing_docs)]

mod appends;
mod bitset;
mod check;
mod diagnostic;
mod events;
mod kv;
mod model;
mod operation;
mod search;

pub use appends::{AppendError, AppendOutcome, ClientAppends, IssuedAppend, check_appends};
pub use check::{CheckResult, HistoryError, check};
pub use diagnostic::{Candidate, Diagnostic, OperationSummary};
pub use kv::{KvInput, KvModel, KvOutput};
pub use model::{Model, Partition};
pub use operation::{Operation, RETURN_UNKNOWN};
