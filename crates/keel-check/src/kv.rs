//! A model of keel's replicated KV service, partitioned by key.
//!
//! Keys and values are `String`s: the service's clients and tests use text, and diagnostics
//! can then print them as they are. The state of one key is `Option<String>`, `None` meaning
//! absent, which is distinct from `Some("")`.

use std::collections::BTreeMap;
use std::fmt;

use crate::{Model, Operation, Partition};

/// Values longer than this are shortened in diagnostics (append-heavy tests build long ones).
const VALUE_SHOWN_MAX_CHARS: usize = 120;

/// A KV request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Reads the key. Expects [`KvOutput::Value`].
    Get {
        /// The key.
        key: String,
    },
    /// Sets the key. Expects [`KvOutput::Ok`].
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Concatenates `value` to the current value, an absent key counting as empty. Expects
    /// [`KvOutput::Ok`].
    Append {
        /// The key.
        key: String,
        /// What to concatenate.
        value: String,
    },
    /// Removes the key. Expects [`KvOutput::Ok`].
    Delete {
        /// The key.
        key: String,
    },
    /// Sets the key to `new` iff its current value is `expected` (`None`: iff it is absent).
    /// Expects [`KvOutput::Swapped`].
    Cas {
        /// The key.
        key: String,
        /// The value required for the swap, `None` for "absent".
        expected: Option<String>,
        /// The value after a successful swap.
        new: String,
    },
}

/// What a KV client observed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// A get's result: the value, or `None` if the key was absent.
    Value(Option<String>),
    /// A put, append or delete completed.
    Ok,
    /// Whether a compare-and-swap swapped.
    Swapped(bool),
    /// The client never learned the outcome. Matches any state, and the request's effect is
    /// applied. Record the operation with `return_time` = [`RETURN_UNKNOWN`](crate::RETURN_UNKNOWN)
    /// so that it may also be placed last, which models "never happened".
    Unknown,
}

impl KvInput {
    /// A get of `key`.
    pub fn get(key: impl Into<String>) -> Self {
        KvInput::Get { key: key.into() }
    }

    /// A put of `value` at `key`.
    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Self {
        KvInput::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// An append of `value` to `key`.
    pub fn append(key: impl Into<String>, value: impl Into<String>) -> Self {
        KvInput::Append {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A delete of `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        KvInput::Delete { key: key.into() }
    }

    /// A compare-and-swap of `key` from `expected` (`None`: absent) to `new`.
    pub fn cas(key: impl Into<String>, expected: Option<&str>, new: impl Into<String>) -> Self {
        KvInput::Cas {
            key: key.into(),
            expected: expected.map(String::from),
            new: new.into(),
        }
    }

    /// The key the request is about.
    pub fn key(&self) -> &str {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Append { key, .. }
            | KvInput::Delete { key }
            | KvInput::Cas { key, .. } => key,
        }
    }

    /// The request's sequential semantics: the key's next value and the output a client sees,
    /// given the key's current value.
    pub fn apply(&self, current: &Option<String>) -> (Option<String>, KvOutput) {
        match self {
            KvInput::Get { .. } => (current.clone(), KvOutput::Value(current.clone())),
            KvInput::Put { value, .. } => (Some(value.clone()), KvOutput::Ok),
            KvInput::Append { value, .. } => {
                let mut next = current.clone().unwrap_or_default();
                next.push_str(value);
                (Some(next), KvOutput::Ok)
            }
            KvInput::Delete { .. } => (None, KvOutput::Ok),
            KvInput::Cas { expected, new, .. } => {
                if current == expected {
                    (Some(new.clone()), KvOutput::Swapped(true))
                } else {
                    (current.clone(), KvOutput::Swapped(false))
                }
            }
        }
    }
}

/// The sequential specification of keel's KV service, checked key by key.
///
/// An output of the wrong kind for its request (a get answered with [`KvOutput::Ok`]) is
/// impossible from every state, so it shows up as a violation naming that operation.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    type Input = KvInput;
    type Output = KvOutput;
    type State = Option<String>;

    fn init(&self) -> Option<String> {
        None
    }

    fn step(
        &self,
        state: &Option<String>,
        input: &KvInput,
        output: &KvOutput,
    ) -> Option<Self::State> {
        let (next, observed) = input.apply(state);
        (*output == KvOutput::Unknown || *output == observed).then_some(next)
    }

    /// Gets and failed compare-and-swaps whose output is known change nothing.
    fn is_read_only(&self, input: &KvInput, output: &KvOutput) -> bool {
        matches!(
            (input, output),
            (KvInput::Get { .. }, KvOutput::Value(_))
                | (KvInput::Cas { .. }, KvOutput::Swapped(false))
        )
    }

    /// One partition per key, in key order. Gets with an unknown outcome are left out: they
    /// change nothing and observed nothing, so they cannot matter, and would only widen the
    /// search.
    fn partition<'h>(
        &self,
        history: &'h [Operation<KvInput, KvOutput>],
    ) -> Vec<Partition<'h, KvInput, KvOutput>> {
        let mut by_key: BTreeMap<&str, Vec<&Operation<KvInput, KvOutput>>> = BTreeMap::new();
        for op in history {
            let no_information =
                matches!(op.input, KvInput::Get { .. }) && op.output == KvOutput::Unknown;
            if !no_information {
                by_key.entry(op.input.key()).or_default().push(op);
            }
        }
        by_key
            .into_iter()
            .map(|(key, operations)| Partition {
                name: format!("key {}", Shown(key)),
                operations,
            })
            .collect()
    }

    fn describe_operation(&self, input: &KvInput, output: &KvOutput) -> String {
        format!("{input} -> {output}")
    }

    fn describe_state(&self, state: &Option<String>) -> String {
        match state {
            Some(value) => Shown(value).to_string(),
            None => String::from("absent"),
        }
    }
}

impl fmt::Display for KvInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvInput::Get { key } => write!(f, "get({})", Shown(key)),
            KvInput::Put { key, value } => write!(f, "put({}, {})", Shown(key), Shown(value)),
            KvInput::Append { key, value } => {
                write!(f, "append({}, {})", Shown(key), Shown(value))
            }
            KvInput::Delete { key } => write!(f, "delete({})", Shown(key)),
            KvInput::Cas { key, expected, new } => {
                let expected = expected
                    .as_deref()
                    .map_or(String::from("absent"), |v| Shown(v).to_string());
                write!(f, "cas({}, {expected} => {})", Shown(key), Shown(new))
            }
        }
    }
}

impl fmt::Display for KvOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOutput::Value(Some(value)) => Shown(value).fmt(f),
            KvOutput::Value(None) => f.write_str("absent"),
            KvOutput::Ok => f.write_str("ok"),
            KvOutput::Swapped(true) => f.write_str("swapped"),
            KvOutput::Swapped(false) => f.write_str("not swapped"),
            KvOutput::Unknown => f.write_str("unknown (no reply)"),
        }
    }
}

/// A key or value quoted for diagnostics; a long one keeps its two ends and its length.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars = self.0.chars().count();
        if chars <= VALUE_SHOWN_MAX_CHARS {
            return write!(f, "{:?}", self.0);
        }
        let half = VALUE_SHOWN_MAX_CHARS / 2;
        let head: String = self.0.chars().take(half).collect();
        let tail: String = self.0.chars().skip(chars - half).collect();
        write!(f, "{head:?}...{tail:?} ({chars} chars)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_shortened_keeping_both_ends() {
        let value = format!("start{}end", "x".repeat(500));
        let shown = Shown(&value).to_string();
        assert!(shown.starts_with("\"startxx"), "{shown}");
        assert!(shown.ends_with("xxend\" (508 chars)"), "{shown}");
        assert!(shown.len() < 200, "{shown}");
    }

    #[test]
    fn absent_and_empty_are_different_values() {
        let get = KvInput::get("k");
        assert_eq!(
            KvModel.step(&None, &get, &KvOutput::Value(Some(String::new()))),
            None
        );
        let append = KvInput::append("k", "");
        assert_eq!(
            KvModel.step(&None, &append, &KvOutput::Ok),
            Some(Some(String::new()))
        );
    }
}
