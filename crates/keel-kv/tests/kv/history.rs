//! The record of every operation the clerks issued: what was asked, what came back, and when,
//! in simulated nanoseconds. Checked for linearizability at the end of a scenario.

use std::sync::Arc;
use std::time::Duration;

use keel_check::{CheckResult, KvInput, KvModel, KvOutput, Operation, RETURN_UNKNOWN, check};
use parking_lot::Mutex;
use tokio::time::Instant;

/// Wall-clock time the linearizability check may take. Running out fails the scenario: a
/// history that was not shown linearizable is not accepted.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Every operation of a scenario's clerks. Cheap to clone; clones share the record.
#[derive(Clone)]
pub struct History {
    operations: Arc<Mutex<Vec<Operation<KvInput, KvOutput>>>>,
    /// Times are simulated nanoseconds since this instant.
    epoch: Instant,
}

/// Where an operation sits in the history, to record its return.
#[derive(Clone, Copy, Debug)]
pub struct Pending(usize);

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        History {
            operations: Arc::new(Mutex::new(Vec::new())),
            epoch: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Records that `client_id` issued `input` now. Until [`History::returned`] it stands as an
    /// operation whose outcome the client never learned, which is what it is if the client
    /// never hears back.
    pub fn called(&self, client_id: u64, input: KvInput) -> Pending {
        let call = self.now_ns();
        let mut operations = self.operations.lock();
        operations.push(Operation {
            client_id,
            input,
            call,
            output: KvOutput::Unknown,
            return_time: RETURN_UNKNOWN,
        });
        Pending(operations.len() - 1)
    }

    /// Records that the operation returned `output` now.
    pub fn returned(&self, pending: Pending, output: KvOutput) {
        let return_time = self.now_ns();
        let operation = &mut self.operations.lock()[pending.0];
        assert!(
            operation.outcome_unknown(),
            "operation {} returned twice",
            pending.0
        );
        operation.output = output;
        operation.return_time = return_time;
    }

    /// Number of operations recorded.
    pub fn len(&self) -> usize {
        self.operations.lock().len()
    }

    /// Checks that the history is linearizable; fails with the checker's diagnostic otherwise,
    /// including when the check times out.
    pub fn assert_linearizable(&self, scenario: &str, seed: u64) {
        let operations = self.operations.lock().clone();
        let result = check(&KvModel, &operations, CHECK_TIMEOUT);
        assert!(
            result == CheckResult::Ok,
            "{scenario}, seed {seed}: the history of {} operations is not shown linearizable:\n\
             {result}\nreplay with: KEEL_SEED={seed} cargo test -p keel-kv {scenario}",
            operations.len()
        );
    }
}
