//! Histories generated from a reference KV store: linearizable by construction, so the checker
//! must accept them, and must reject them once one read is made impossible.

mod common;

use std::time::Duration;

use keel_check::{CheckResult, KvInput, KvModel, KvOutput, Operation, RETURN_UNKNOWN, check};
use proptest::prelude::*;

use common::{ReferenceKv, Workload};

type KvOperation = Operation<KvInput, KvOutput>;

/// Generated histories are small or well-behaved; a timeout here is a failure like any other.
const TIMEOUT: Duration = Duration::from_secs(20);

const KEYS: [&str; 3] = ["a", "b", "c"];

/// No generated request writes this, so no order can make a read return it.
const NEVER_WRITTEN: &str = "never written";

/// What a client learned about a request that lost its reply.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Replied,
    /// No reply, but it took effect.
    LostAfterEffect,
    /// No reply, and it never took effect.
    LostBeforeEffect,
}

/// One step of a sequential run, and how far its interval is widened around the instant it
/// took effect.
#[derive(Clone, Debug)]
struct Step {
    client_id: u64,
    input: KvInput,
    outcome: Outcome,
    call_earlier_by: u64,
    return_later_by: u64,
}

fn input_strategy() -> impl Strategy<Value = KvInput> {
    let key = prop::sample::select(KEYS.as_slice());
    let value = prop::sample::select(vec!["", "x", "y", "xy"]);
    prop_oneof![
        3 => key.clone().prop_map(KvInput::get),
        2 => (key.clone(), value.clone()).prop_map(|(k, v)| KvInput::put(k, v)),
        2 => (key.clone(), value.clone()).prop_map(|(k, v)| KvInput::append(k, v)),
        1 => key.clone().prop_map(KvInput::delete),
        1 => (key, prop::option::of(value.clone()), value)
            .prop_map(|(k, expected, new)| KvInput::cas(k, expected, new)),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let outcome = prop_oneof![
        18 => Just(Outcome::Replied),
        1 => Just(Outcome::LostAfterEffect),
        1 => Just(Outcome::LostBeforeEffect),
    ];
    (0..4u64, input_strategy(), outcome, 0..40u64, 0..40u64).prop_map(
        |(client_id, input, outcome, call_earlier_by, return_later_by)| Step {
            client_id,
            input,
            outcome,
            call_earlier_by,
            return_later_by,
        },
    )
}

/// Runs `steps` one after another against a reference store, step `i` taking effect at time
/// `10 * i + 50`, then widens each interval around that instant. The sequential order still
/// fits in every interval, so the history stays linearizable while operations overlap.
fn sequential_history(steps: &[Step]) -> Vec<KvOperation> {
    let mut store = ReferenceKv::default();
    let mut history = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let took_effect_at = 10 * i as u64 + 50;
        let call = took_effect_at - step.call_earlier_by;
        let (output, return_time) = match step.outcome {
            Outcome::Replied => (
                store.execute(&step.input),
                took_effect_at + step.return_later_by,
            ),
            Outcome::LostAfterEffect => {
                store.execute(&step.input);
                (KvOutput::Unknown, RETURN_UNKNOWN)
            }
            Outcome::LostBeforeEffect => (KvOutput::Unknown, RETURN_UNKNOWN),
        };
        history.push(Operation {
            client_id: step.client_id,
            input: step.input.clone(),
            call,
            output,
            return_time,
        });
    }
    history
}

/// The positions of gets whose reply is known.
fn replied_gets(history: &[KvOperation]) -> Vec<usize> {
    (0..history.len())
        .filter(|&i| {
            matches!(history[i].input, KvInput::Get { .. })
                && matches!(history[i].output, KvOutput::Value(_))
        })
        .collect()
}

/// Makes the get at `position` return a value no order can produce; returns its key.
fn make_read_impossible(history: &mut [KvOperation], position: usize) -> String {
    history[position].output = KvOutput::Value(Some(NEVER_WRITTEN.to_owned()));
    history[position].input.key().to_owned()
}

fn assert_rejected_on_key(history: &[KvOperation], key: &str) -> Result<(), TestCaseError> {
    match check(&KvModel, history, TIMEOUT) {
        CheckResult::Illegal(diagnostic) => {
            prop_assert_eq!(&diagnostic.partition, &format!("key {key:?}"));
            Ok(())
        }
        other => Err(TestCaseError::fail(format!(
            "expected a violation on key {key:?}, got: {other}"
        ))),
    }
}

proptest! {
    #[test]
    fn widened_sequential_histories_are_linearizable(
        steps in prop::collection::vec(step_strategy(), 0..60)
    ) {
        let history = sequential_history(&steps);
        let result = check(&KvModel, &history, TIMEOUT);
        prop_assert!(result.is_ok(), "{}", result);
    }

    #[test]
    fn sequential_history_with_one_impossible_read_is_illegal(
        steps in prop::collection::vec(step_strategy(), 1..60),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut history = sequential_history(&steps);
        let gets = replied_gets(&history);
        prop_assume!(!gets.is_empty());
        let key = make_read_impossible(&mut history, gets[pick.index(gets.len())]);
        assert_rejected_on_key(&history, &key)?;
    }

    #[test]
    fn concurrent_histories_are_linearizable(seed in any::<u64>(), unknown_per_mille in 0..150u64) {
        let workload = Workload {
            op_count: 200,
            client_count: 5,
            keys: &KEYS,
            distinct_values: Some(4),
            unknown_per_mille,
        };
        let history = common::concurrent_history(seed, &workload);
        let result = check(&KvModel, &history, TIMEOUT);
        prop_assert!(result.is_ok(), "seed {}: {}", seed, result);
    }

    #[test]
    fn concurrent_history_with_one_impossible_read_is_illegal(
        seed in any::<u64>(),
        pick in any::<prop::sample::Index>(),
    ) {
        let workload = Workload {
            op_count: 200,
            client_count: 5,
            keys: &KEYS,
            distinct_values: Some(4),
            unknown_per_mille: 50,
        };
        let mut history = common::concurrent_history(seed, &workload);
        let gets = replied_gets(&history);
        prop_assume!(!gets.is_empty());
        let key = make_read_impossible(&mut history, gets[pick.index(gets.len())]);
        assert_rejected_on_key(&history, &key)?;
    }
}

/// 2,000 operations of 10 clients on 5 keys with unique values; a few seconds at most in a
/// debug build.
#[test]
fn two_thousand_concurrent_operations_on_five_keys_are_linearizable() {
    for seed in 0..3 {
        let workload = Workload {
            op_count: 2_000,
            client_count: 10,
            keys: &["a", "b", "c", "d", "e"],
            distinct_values: None,
            unknown_per_mille: 20,
        };
        let history = common::concurrent_history(seed, &workload);
        let result = check(&KvModel, &history, TIMEOUT);
        assert!(result.is_ok(), "seed {seed}: {result}");
    }
}

/// The same on one key with few distinct values, so that reads are ambiguous.
#[test]
fn two_thousand_concurrent_operations_on_one_key_with_ambiguous_reads_are_linearizable() {
    for seed in 0..3 {
        let workload = Workload {
            op_count: 2_000,
            client_count: 10,
            keys: &["k"],
            distinct_values: Some(4),
            unknown_per_mille: 20,
        };
        let history = common::concurrent_history(seed, &workload);
        let result = check(&KvModel, &history, TIMEOUT);
        assert!(result.is_ok(), "seed {seed}: {result}");
    }
}
