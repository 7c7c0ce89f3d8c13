//! The "appends appear exactly once and in order" check of the course KV tests.
//!
//! Each client appends unique tokens to one key; at the end the key's value must contain every
//! acknowledged token exactly once, every token whose outcome is unknown at most once, and each
//! client's tokens in the order that client issued them. This is weaker than linearizability
//! but cheap on any history size, and says precisely what went wrong.

use std::collections::HashMap;

/// Whether the client learned that an append took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The service acknowledged it: it must appear exactly once.
    Acknowledged,
    /// The client gave up waiting: it may appear once, or not at all.
    Unknown,
}

/// One append a client issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedAppend {
    /// The appended text, unique across the whole test.
    pub token: String,
    /// Whether it was acknowledged.
    pub outcome: AppendOutcome,
}

/// The appends of one client, in the order it issued them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientAppends {
    /// The client, for error messages.
    pub client_id: u64,
    /// Its appends, in issue order.
    pub appends: Vec<IssuedAppend>,
}

impl ClientAppends {
    /// A client that has issued nothing yet.
    pub fn new(client_id: u64) -> Self {
        ClientAppends {
            client_id,
            appends: Vec::new(),
        }
    }

    /// Records the next append the client issued.
    pub fn push(&mut self, token: impl Into<String>, outcome: AppendOutcome) {
        self.appends.push(IssuedAppend {
            token: token.into(),
            outcome,
        });
    }

    /// Builder form of [`push`](Self::push) for an acknowledged append.
    pub fn acknowledged(mut self, token: impl Into<String>) -> Self {
        self.push(token, AppendOutcome::Acknowledged);
        self
    }

    /// Builder form of [`push`](Self::push) for an append with unknown outcome.
    pub fn unknown(mut self, token: impl Into<String>) -> Self {
        self.push(token, AppendOutcome::Unknown);
        self
    }
}

/// The first violation [`check_appends`] found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// A token is empty, so it cannot be found.
    #[error("client {client_id} issued an empty token; tokens must be non-empty")]
    EmptyToken {
        /// The client.
        client_id: u64,
    },
    /// The same token was issued twice, so its occurrences cannot be attributed.
    #[error(
        "token {token:?} was issued twice (by client {first_client} and by client \
         {second_client}); every append needs a unique token"
    )]
    RepeatedToken {
        /// The token.
        token: String,
        /// The client that issued it first.
        first_client: u64,
        /// The client that issued it again.
        second_client: u64,
    },
    /// Occurrences of two tokens overlap in the final value, so they cannot be counted.
    #[error(
        "tokens {first:?} and {second:?} overlap at byte {position} of the final value, so \
         their occurrences cannot be counted; use self-delimiting tokens such as \"x 3 17 y\""
    )]
    OverlappingTokens {
        /// The token whose occurrence starts first.
        first: String,
        /// The token whose occurrence starts inside it.
        second: String,
        /// Where `second`'s occurrence starts.
        position: usize,
    },
    /// An acknowledged append is not in the final value: a lost write.
    #[error("client {client_id}'s acknowledged append {token:?} is missing from the final value")]
    Missing {
        /// The client.
        client_id: u64,
        /// The token.
        token: String,
    },
    /// An append took effect more than once: a duplicated write (a retry applied twice).
    #[error(
        "client {client_id}'s append {token:?} appears {} times in the final value (at bytes \
         {positions:?}); an append must take effect at most once",
        positions.len()
    )]
    Duplicated {
        /// The client.
        client_id: u64,
        /// The token.
        token: String,
        /// Where it appears.
        positions: Vec<usize>,
    },
    /// Two appends of one client took effect in the opposite order from the one it issued
    /// them in.
    #[error(
        "client {client_id} appended {earlier:?} before {later:?}, but the final value has \
         {later:?} at byte {later_position}, before {earlier:?} at byte {earlier_position}"
    )]
    OutOfOrder {
        /// The client.
        client_id: u64,
        /// The token it issued first.
        earlier: String,
        /// Where that token appears.
        earlier_position: usize,
        /// The token it issued afterwards.
        later: String,
        /// Where that token appears.
        later_position: usize,
    },
}

/// Checks that `final_value` holds each client's appends exactly once (acknowledged) or at
/// most once (unknown outcome), and each client's in the order it issued them.
///
/// Tokens are found by substring search, so they must be unique and must not overlap in the
/// value (make them self-delimiting, such as `"x {client} {n} y"`); both are checked. Text
/// between tokens is ignored. Clients are checked in the order given, each client's appends in
/// issue order, and the first violation is returned.
pub fn check_appends(final_value: &str, clients: &[ClientAppends]) -> Result<(), AppendError> {
    let mut issuer: HashMap<&str, u64> = HashMap::new();
    for client in clients {
        for append in &client.appends {
            if append.token.is_empty() {
                return Err(AppendError::EmptyToken {
                    client_id: client.client_id,
                });
            }
            if let Some(&first_client) = issuer.get(append.token.as_str()) {
                return Err(AppendError::RepeatedToken {
                    token: append.token.clone(),
                    first_client,
                    second_client: client.client_id,
                });
            }
            issuer.insert(&append.token, client.client_id);
        }
    }

    let positions: HashMap<&str, Vec<usize>> = issuer
        .keys()
        .map(|&token| {
            let found = final_value.match_indices(token).map(|(at, _)| at).collect();
            (token, found)
        })
        .collect();
    check_no_overlap(&positions)?;

    for client in clients {
        // The latest-issued token found so far, and where.
        let mut previous: Option<(&str, usize)> = None;
        for append in &client.appends {
            let token = append.token.as_str();
            let found = &positions[token];
            match (found.as_slice(), append.outcome) {
                ([], AppendOutcome::Acknowledged) => {
                    return Err(AppendError::Missing {
                        client_id: client.client_id,
                        token: token.to_owned(),
                    });
                }
                ([], AppendOutcome::Unknown) => {}
                (&[position], _) => {
                    if let Some((earlier, earlier_position)) = previous
                        && earlier_position > position
                    {
                        return Err(AppendError::OutOfOrder {
                            client_id: client.client_id,
                            earlier: earlier.to_owned(),
                            earlier_position,
                            later: token.to_owned(),
                            later_position: position,
                        });
                    }
                    previous = Some((token, position));
                }
                (many, _) => {
                    return Err(AppendError::Duplicated {
                        client_id: client.client_id,
                        token: token.to_owned(),
                        positions: many.to_vec(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Fails if an occurrence of one token starts inside an occurrence of another.
fn check_no_overlap(positions: &HashMap<&str, Vec<usize>>) -> Result<(), AppendError> {
    let mut occurrences: Vec<(usize, &str)> = positions
        .iter()
        .flat_map(|(&token, found)| found.iter().map(move |&at| (at, token)))
        .collect();
    occurrences.sort_unstable();
    // The occurrence reaching furthest so far: its token and its end.
    let mut reach: Option<(&str, usize)> = None;
    for (at, token) in occurrences {
        if let Some((first, end)) = reach
            && at < end
        {
            return Err(AppendError::OverlappingTokens {
                first: first.to_owned(),
                second: token.to_owned(),
                position: at,
            });
        }
        reach = Some((token, at + token.len()));
    }
    Ok(())
}
