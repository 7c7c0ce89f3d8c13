//! Small histories written by hand, each showing one rule of linearizability or of the KV
//! model.

use std::time::Duration;

use keel_check::{
    CheckResult, Diagnostic, HistoryError, KvInput, KvModel, KvOutput, Operation, RETURN_UNKNOWN,
    check,
};

type KvOperation = Operation<KvInput, KvOutput>;

const TIMEOUT: Duration = Duration::from_secs(10);

fn op(
    client_id: u64,
    call: u64,
    return_time: u64,
    input: KvInput,
    output: KvOutput,
) -> KvOperation {
    Operation {
        client_id,
        input,
        call,
        output,
        return_time,
    }
}

/// An operation whose client never got a reply.
fn lost(client_id: u64, call: u64, input: KvInput) -> KvOperation {
    op(client_id, call, RETURN_UNKNOWN, input, KvOutput::Unknown)
}

fn value(v: &str) -> KvOutput {
    KvOutput::Value(Some(v.to_owned()))
}

const ABSENT: KvOutput = KvOutput::Value(None);
const OK: KvOutput = KvOutput::Ok;

fn assert_linearizable(history: &[KvOperation]) {
    let result = check(&KvModel, history, TIMEOUT);
    assert!(result.is_ok(), "expected linearizable, got:\n{result}");
}

fn assert_illegal(history: &[KvOperation]) -> Diagnostic {
    match check(&KvModel, history, TIMEOUT) {
        CheckResult::Illegal(diagnostic) => {
            // Every diagnostic must render; print it so a failing test shows it.
            println!("{diagnostic}");
            diagnostic
        }
        other => panic!("expected a violation, got: {other}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        op(1, 0, 10, KvInput::get("x"), ABSENT),
        op(1, 20, 30, KvInput::put("x", "1"), OK),
        op(2, 40, 50, KvInput::get("x"), value("1")),
        op(2, 60, 70, KvInput::put("x", "2"), OK),
        op(1, 80, 90, KvInput::get("x"), value("2")),
    ]);
}

#[test]
fn read_concurrent_with_a_put_may_see_either_value() {
    for seen in [value("0"), value("1")] {
        assert_linearizable(&[
            op(1, 0, 10, KvInput::put("x", "0"), OK),
            op(1, 20, 40, KvInput::put("x", "1"), OK),
            op(2, 25, 35, KvInput::get("x"), seen),
        ]);
    }
}

#[test]
fn two_concurrent_puts_may_land_in_either_order() {
    for last in ["a", "b"] {
        assert_linearizable(&[
            op(1, 0, 20, KvInput::put("x", "a"), OK),
            op(2, 5, 25, KvInput::put("x", "b"), OK),
            op(3, 30, 40, KvInput::get("x"), value(last)),
        ]);
    }
}

#[test]
fn stale_read_after_a_completed_put_is_illegal() {
    let diagnostic = assert_illegal(&[
        op(1, 0, 10, KvInput::put("x", "1"), OK),
        op(1, 20, 30, KvInput::put("x", "2"), OK),
        op(2, 40, 50, KvInput::get("x"), value("1")),
    ]);
    assert_eq!(
        diagnostic.prefix.len(),
        2,
        "both puts fit; the read does not"
    );
    assert_eq!(diagnostic.state_after_prefix, r#""2""#);
    assert_eq!(diagnostic.first_to_return.description, r#"get("x") -> "1""#);
}

#[test]
fn reads_observing_two_puts_in_conflicting_orders_are_illegal() {
    // The puts overlap everything, so each alone could go anywhere; but client 3 sees a then
    // b, and client 4 sees b then a.
    assert_illegal(&[
        op(1, 0, 100, KvInput::put("x", "a"), OK),
        op(2, 0, 100, KvInput::put("x", "b"), OK),
        op(3, 10, 20, KvInput::get("x"), value("a")),
        op(3, 30, 40, KvInput::get("x"), value("b")),
        op(4, 10, 20, KvInput::get("x"), value("b")),
        op(4, 30, 40, KvInput::get("x"), value("a")),
    ]);
}

#[test]
fn operations_whose_intervals_touch_may_be_ordered_either_way() {
    // The read is called at the instant the put returns: the intervals share that instant.
    assert_linearizable(&[
        op(1, 0, 10, KvInput::put("x", "1"), OK),
        op(2, 10, 20, KvInput::get("x"), ABSENT),
    ]);
    // One unit later, the put is over and the read must see it.
    assert_illegal(&[
        op(1, 0, 10, KvInput::put("x", "1"), OK),
        op(2, 11, 20, KvInput::get("x"), ABSENT),
    ]);
}

#[test]
fn cas_swaps_only_when_the_current_value_is_the_expected_one() {
    assert_linearizable(&[
        op(
            1,
            0,
            10,
            KvInput::cas("x", None, "1"),
            KvOutput::Swapped(true),
        ),
        op(
            1,
            20,
            30,
            KvInput::cas("x", None, "2"),
            KvOutput::Swapped(false),
        ),
        op(
            1,
            40,
            50,
            KvInput::cas("x", Some("0"), "3"),
            KvOutput::Swapped(false),
        ),
        op(
            1,
            60,
            70,
            KvInput::cas("x", Some("1"), "4"),
            KvOutput::Swapped(true),
        ),
        op(2, 80, 90, KvInput::get("x"), value("4")),
    ]);
    // A swap claimed against the wrong value.
    assert_illegal(&[
        op(1, 0, 10, KvInput::put("x", "1"), OK),
        op(
            2,
            20,
            30,
            KvInput::cas("x", Some("0"), "2"),
            KvOutput::Swapped(true),
        ),
    ]);
    // A failed swap changes nothing.
    assert_illegal(&[
        op(
            1,
            0,
            10,
            KvInput::cas("x", Some("0"), "2"),
            KvOutput::Swapped(false),
        ),
        op(2, 20, 30, KvInput::get("x"), value("2")),
    ]);
}

#[test]
fn cas_expecting_absent_does_not_match_an_empty_value() {
    assert_illegal(&[
        op(1, 0, 10, KvInput::put("x", ""), OK),
        op(
            2,
            20,
            30,
            KvInput::cas("x", None, "1"),
            KvOutput::Swapped(true),
        ),
    ]);
}

#[test]
fn concurrent_cas_from_absent_lets_exactly_one_win() {
    assert_linearizable(&[
        op(
            1,
            0,
            20,
            KvInput::cas("x", None, "a"),
            KvOutput::Swapped(true),
        ),
        op(
            2,
            5,
            25,
            KvInput::cas("x", None, "b"),
            KvOutput::Swapped(false),
        ),
        op(3, 30, 40, KvInput::get("x"), value("a")),
    ]);
    assert_illegal(&[
        op(
            1,
            0,
            20,
            KvInput::cas("x", None, "a"),
            KvOutput::Swapped(true),
        ),
        op(
            2,
            5,
            25,
            KvInput::cas("x", None, "b"),
            KvOutput::Swapped(true),
        ),
    ]);
}

#[test]
fn appends_concatenate_starting_from_empty() {
    assert_linearizable(&[
        op(1, 0, 10, KvInput::append("x", "a"), OK),
        op(1, 20, 30, KvInput::append("x", "b"), OK),
        op(2, 40, 50, KvInput::get("x"), value("ab")),
    ]);
    // Sequential appends cannot land reversed...
    assert_illegal(&[
        op(1, 0, 10, KvInput::append("x", "a"), OK),
        op(1, 20, 30, KvInput::append("x", "b"), OK),
        op(2, 40, 50, KvInput::get("x"), value("ba")),
    ]);
    // ...but concurrent ones can.
    assert_linearizable(&[
        op(1, 0, 30, KvInput::append("x", "a"), OK),
        op(2, 10, 20, KvInput::append("x", "b"), OK),
        op(3, 40, 50, KvInput::get("x"), value("ba")),
    ]);
}

#[test]
fn append_after_put_extends_the_put_value() {
    assert_linearizable(&[
        op(1, 0, 10, KvInput::put("x", "p"), OK),
        op(1, 20, 30, KvInput::append("x", "a"), OK),
        op(2, 40, 50, KvInput::get("x"), value("pa")),
    ]);
}

#[test]
fn delete_makes_the_key_absent() {
    assert_linearizable(&[
        op(1, 0, 10, KvInput::put("x", "1"), OK),
        op(1, 20, 30, KvInput::delete("x"), OK),
        op(2, 40, 50, KvInput::get("x"), ABSENT),
        op(2, 60, 70, KvInput::append("x", "a"), OK),
        op(1, 80, 90, KvInput::get("x"), value("a")),
    ]);
    assert_illegal(&[
        op(1, 0, 10, KvInput::put("x", "1"), OK),
        op(1, 20, 30, KvInput::delete("x"), OK),
        op(2, 40, 50, KvInput::get("x"), value("1")),
    ]);
}

#[test]
fn lost_put_that_took_effect_explains_a_later_read() {
    assert_linearizable(&[
        lost(1, 0, KvInput::put("x", "1")),
        op(2, 50, 60, KvInput::get("x"), value("1")),
    ]);
}

#[test]
fn lost_put_that_never_happened_is_fine() {
    assert_linearizable(&[
        lost(1, 0, KvInput::put("x", "1")),
        op(2, 50, 60, KvInput::get("x"), ABSENT),
        op(2, 70, 80, KvInput::put("x", "2"), OK),
        op(2, 90, 95, KvInput::get("x"), value("2")),
    ]);
}

#[test]
fn lost_put_may_take_effect_long_after_its_call() {
    assert_linearizable(&[
        lost(1, 0, KvInput::put("x", "1")),
        op(2, 50, 60, KvInput::get("x"), ABSENT),
        op(2, 70, 80, KvInput::get("x"), value("1")),
    ]);
}

#[test]
fn lost_put_cannot_take_effect_before_its_call() {
    assert_illegal(&[
        op(2, 0, 10, KvInput::get("x"), value("1")),
        lost(1, 20, KvInput::put("x", "1")),
    ]);
}

#[test]
fn lost_put_takes_effect_at_most_once() {
    assert_illegal(&[
        lost(1, 0, KvInput::put("x", "1")),
        op(2, 10, 20, KvInput::get("x"), value("1")),
        op(2, 30, 40, KvInput::put("x", "2"), OK),
        op(2, 50, 60, KvInput::get("x"), value("1")),
    ]);
}

#[test]
fn lost_get_is_ignored() {
    assert_linearizable(&[
        lost(1, 0, KvInput::get("x")),
        op(2, 10, 20, KvInput::put("x", "1"), OK),
    ]);
}

#[test]
fn output_of_the_wrong_kind_is_illegal() {
    let diagnostic = assert_illegal(&[op(1, 0, 10, KvInput::get("x"), OK)]);
    assert!(diagnostic.prefix.is_empty());
    assert!(!diagnostic.candidates[0].legal_next);
}

#[test]
fn violation_on_one_key_is_found_and_named_while_other_keys_are_fine() {
    let mut history = Vec::new();
    for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let t = 100 * i as u64;
        history.push(op(1, t, t + 10, KvInput::put(key, "1"), OK));
        history.push(op(2, t + 20, t + 30, KvInput::get(key), value("1")));
    }
    // On "c" only, a read after the put misses it.
    history.push(op(3, 500, 510, KvInput::get("c"), ABSENT));

    let diagnostic = assert_illegal(&history);
    assert_eq!(diagnostic.partition, r#"key "c""#);
    assert_eq!(diagnostic.partition_len, 3);
    assert_eq!(
        diagnostic.first_to_return.description,
        r#"get("c") -> absent"#
    );
}

#[test]
fn diagnostic_shows_the_prefix_the_state_and_the_candidates() {
    let diagnostic = assert_illegal(&[
        op(1, 0, 10, KvInput::put("x", "1"), OK),
        op(2, 20, 60, KvInput::put("x", "2"), OK),
        op(3, 30, 40, KvInput::get("x"), value("0")),
    ]);
    let report = diagnostic.to_string();
    for expected in [
        r#"not linearizable: key "x" (3 operations)"#,
        "longest linearizable prefix: 2 of 3 operations",
        r#"client 1 [0, 10]   put("x", "1") -> ok"#,
        r#"client 2 [20, 60]  put("x", "2") -> ok"#,
        r#"state after that prefix: "2""#,
        "earliest remaining return (client 3 at 40)",
        r#"client 3 [30, 40]  get("x") -> "0"    <- impossible from that state"#,
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
}

#[test]
fn return_before_call_is_reported_as_malformed_not_a_panic() {
    let history = [
        op(1, 0, 10, KvInput::put("x", "1"), OK),
        op(2, 30, 20, KvInput::get("x"), value("1")),
    ];
    match check(&KvModel, &history, TIMEOUT) {
        CheckResult::Malformed(HistoryError::ReturnBeforeCall {
            index,
            client_id,
            call,
            return_time,
            ..
        }) => assert_eq!((index, client_id, call, return_time), (1, 2, 30, 20)),
        other => panic!("expected a malformed history, got: {other}"),
    }
}

#[test]
fn pathological_history_with_a_tiny_timeout_times_out() {
    // Twenty-four appends all concurrent, then a read no order explains: the search must try
    // every order of every subset before giving up, far more than a millisecond allows.
    let mut history: Vec<KvOperation> = (0..24)
        .map(|client| {
            op(
                client,
                0,
                100,
                KvInput::append("x", format!("<{client}>")),
                OK,
            )
        })
        .collect();
    history.push(op(99, 200, 210, KvInput::get("x"), value("none of those")));

    let result = check(&KvModel, &history, Duration::from_millis(1));
    assert_eq!(result, CheckResult::Timeout);
    assert!(!result.is_ok());
}
