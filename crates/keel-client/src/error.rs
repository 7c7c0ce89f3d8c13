//! What can go wrong talking to a cluster, as one enum whose messages fit on one line.

use std::fmt;
use std::time::Duration;

/// Why a request did not succeed.
///
/// The `Display` text is one line meant for a person, e.g.
/// `no node answered within 10 s: 127.0.0.1:8081: connection refused; 127.0.0.1:8082: ...`.
/// [`ClientError::kind`] gives a short stable name for counting errors by kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `GET` of a key that does not exist (HTTP 404, code `not_found`).
    #[error("key {key:?} not found")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// The key or value exceeds the server's limit (HTTP 413).
    #[error("too large: {message}")]
    TooLarge {
        /// The server's explanation, with the size and the limit.
        message: String,
    },
    /// The server rejected the request as malformed (HTTP 400).
    #[error("bad request ({code}): {message}")]
    BadRequest {
        /// The server's error code, e.g. `bad_header`.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The request's sequence number is older than one the server already applied for this
    /// client id (HTTP 409). It means two writers share a client id.
    #[error("stale request: {message}")]
    Stale {
        /// The server's explanation.
        message: String,
    },
    /// The cluster refused a membership change or leadership transfer as things stand
    /// (HTTP 409: another change is in progress; 412: a learner has not caught up yet).
    #[error("refused ({code}): {message}")]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The server's error code, e.g. `change_in_progress`.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// An answer this client does not expect from a keel node (another status code, or a 404
    /// that is not about a key: the endpoint may not be a keel node).
    #[error("{endpoint} answered HTTP {status}: {message}")]
    Unexpected {
        /// The endpoint that answered.
        endpoint: String,
        /// The HTTP status code.
        status: u16,
        /// The server's message, or the start of the body.
        message: String,
    },
    /// A success answer whose body is not what the API documents.
    #[error("{endpoint} sent an answer this client cannot read: {message}")]
    BadAnswer {
        /// The endpoint that answered.
        endpoint: String,
        /// What was wrong with it.
        message: String,
    },
    /// One endpoint, asked once, did not answer (connection refused, timeout, ...).
    #[error("{endpoint}: {reason}")]
    Unreachable {
        /// The endpoint asked.
        endpoint: String,
        /// Why it did not answer.
        reason: String,
    },
    /// Every attempt failed with a connection error or a 503 until the deadline passed.
    #[error("no node answered within {}: {}", Secs(*waited), Failures(failures))]
    Unavailable {
        /// How long the client tried.
        waited: Duration,
        /// The last failure seen at each endpoint tried, in endpoint order.
        failures: Vec<Failure>,
    },
    /// The caller's input cannot be sent (empty key, non-UTF-8 compare-and-set value, no
    /// endpoints, ...).
    #[error("{0}")]
    InvalidInput(String),
}

impl ClientError {
    /// A short stable name of the error's kind, for counting (`not_found`, `too_large`,
    /// `bad_request`, `stale`, `refused`, `unexpected`, `bad_answer`, `unreachable`, `unavailable`,
    /// `invalid_input`).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::NotFound { .. } => "not_found",
            ClientError::TooLarge { .. } => "too_large",
            ClientError::BadRequest { .. } => "bad_request",
            ClientError::Stale { .. } => "stale",
            ClientError::Refused { .. } => "refused",
            ClientError::Unexpected { .. } => "unexpected",
            ClientError::BadAnswer { .. } => "bad_answer",
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Unavailable { .. } => "unavailable",
            ClientError::InvalidInput(_) => "invalid_input",
        }
    }
}

/// The last failure of one endpoint, in [`ClientError::Unavailable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The endpoint (`host:port`).
    pub endpoint: String,
    /// Why the attempt failed, e.g. `connection refused` or `503 no_leader: ...`.
    pub reason: String,
}

struct Failures<'a>(&'a [Failure]);

impl fmt::Display for Failures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no attempt was made");
        }
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", failure.endpoint, failure.reason)?;
        }
        Ok(())
    }
}

/// A duration as a person reads it: `10 s`, `1.5 s`, `300 ms`.
pub(crate) struct Secs(pub(crate) Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1000 {
            write!(f, "{ms} ms")
        } else if ms.is_multiple_of(1000) {
            write!(f, "{} s", ms / 1000)
        } else {
            write!(f, "{:.1} s", self.0.as_secs_f64())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_reads_as_one_line() {
        let e = ClientError::Unavailable {
            waited: Duration::from_secs(10),
            failures: vec![
                Failure {
                    endpoint: "127.0.0.1:8081".into(),
                    reason: "connection refused".into(),
                },
                Failure {
                    endpoint: "127.0.0.1:8082".into(),
                    reason: "503 no_leader: no leader".into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "no node answered within 10 s: 127.0.0.1:8081: connection refused; \
             127.0.0.1:8082: 503 no_leader: no leader"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(Secs(Duration::from_millis(300)).to_string(), "300 ms");
        assert_eq!(Secs(Duration::from_millis(1500)).to_string(), "1.5 s");
        assert_eq!(Secs(Duration::from_secs(10)).to_string(), "10 s");
    }
}
