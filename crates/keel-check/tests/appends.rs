//! The "each append appears exactly once, in order" check of the course KV tests.

use keel_check::{AppendError, AppendOutcome, ClientAppends, check_appends};

/// The course tests' self-delimiting token for client `client`'s `n`-th append.
fn token(client: u64, n: u64) -> String {
    format!("x {client} {n} y")
}

#[test]
fn interleaved_clients_each_in_order_pass() {
    let value = [
        token(0, 0),
        token(1, 0),
        token(0, 1),
        token(1, 1),
        token(0, 2),
    ]
    .concat();
    let clients = [
        ClientAppends::new(0)
            .acknowledged(token(0, 0))
            .acknowledged(token(0, 1))
            .acknowledged(token(0, 2)),
        ClientAppends::new(1)
            .acknowledged(token(1, 0))
            .acknowledged(token(1, 1)),
    ];
    assert_eq!(check_appends(&value, &clients), Ok(()));
}

#[test]
fn missing_acknowledged_append_is_a_lost_write() {
    let value = [token(0, 0), token(0, 2)].concat();
    let clients = [ClientAppends::new(0)
        .acknowledged(token(0, 0))
        .acknowledged(token(0, 1))
        .acknowledged(token(0, 2))];
    let error = check_appends(&value, &clients).unwrap_err();
    assert_eq!(
        error,
        AppendError::Missing {
            client_id: 0,
            token: token(0, 1)
        }
    );
    assert_eq!(
        error.to_string(),
        r#"client 0's acknowledged append "x 0 1 y" is missing from the final value"#
    );
}

#[test]
fn append_applied_twice_is_a_duplicate() {
    let value = [token(3, 0), token(3, 1), token(3, 1)].concat();
    let clients = [ClientAppends::new(3)
        .acknowledged(token(3, 0))
        .acknowledged(token(3, 1))];
    assert_eq!(
        check_appends(&value, &clients),
        Err(AppendError::Duplicated {
            client_id: 3,
            token: token(3, 1),
            positions: vec![7, 14],
        })
    );
}

#[test]
fn one_clients_appends_in_the_wrong_order_are_reported() {
    let value = [token(0, 1), token(0, 0)].concat();
    let clients = [ClientAppends::new(0)
        .acknowledged(token(0, 0))
        .acknowledged(token(0, 1))];
    let error = check_appends(&value, &clients).unwrap_err();
    assert_eq!(
        error,
        AppendError::OutOfOrder {
            client_id: 0,
            earlier: token(0, 0),
            earlier_position: 7,
            later: token(0, 1),
            later_position: 0,
        }
    );
    assert!(
        error
            .to_string()
            .contains(r#"appended "x 0 0 y" before "x 0 1 y""#),
        "{error}"
    );
}

#[test]
fn unknown_outcome_appends_may_be_absent_or_present_once() {
    let value = [token(0, 0), token(0, 2)].concat();
    let clients = [ClientAppends::new(0)
        .acknowledged(token(0, 0))
        .unknown(token(0, 1))
        .unknown(token(0, 2))];
    assert_eq!(check_appends(&value, &clients), Ok(()));
}

#[test]
fn unknown_outcome_append_present_twice_is_a_duplicate() {
    let value = [token(0, 0), token(0, 0)].concat();
    let clients = [ClientAppends::new(0).unknown(token(0, 0))];
    assert!(matches!(
        check_appends(&value, &clients),
        Err(AppendError::Duplicated { client_id: 0, .. })
    ));
}

#[test]
fn unknown_outcome_append_must_still_be_in_order() {
    let value = [token(0, 1), token(0, 0)].concat();
    let clients = [ClientAppends::new(0)
        .unknown(token(0, 0))
        .acknowledged(token(0, 1))];
    assert!(matches!(
        check_appends(&value, &clients),
        Err(AppendError::OutOfOrder { client_id: 0, .. })
    ));
}

#[test]
fn tokens_that_overlap_in_the_value_are_refused_as_ambiguous() {
    let mut client = ClientAppends::new(0);
    client.push("1", AppendOutcome::Acknowledged);
    client.push("11", AppendOutcome::Acknowledged);
    let error = check_appends("111", &[client]).unwrap_err();
    assert!(
        matches!(error, AppendError::OverlappingTokens { .. }),
        "{error}"
    );
}

#[test]
fn the_same_token_issued_twice_is_refused() {
    let clients = [
        ClientAppends::new(0).acknowledged("t"),
        ClientAppends::new(1).acknowledged("t"),
    ];
    assert_eq!(
        check_appends("t", &clients),
        Err(AppendError::RepeatedToken {
            token: "t".to_owned(),
            first_client: 0,
            second_client: 1,
        })
    );
}

#[test]
fn an_empty_token_is_refused() {
    let clients = [ClientAppends::new(4).acknowledged("")];
    assert_eq!(
        check_appends("", &clients),
        Err(AppendError::EmptyToken { client_id: 4 })
    );
}

#[test]
fn text_between_tokens_is_ignored() {
    let value = format!("prefix {} junk {}", token(0, 0), token(0, 1));
    let clients = [ClientAppends::new(0)
        .acknowledged(token(0, 0))
        .acknowledged(token(0, 1))];
    assert_eq!(check_appends(&value, &clients), Ok(()));
}
